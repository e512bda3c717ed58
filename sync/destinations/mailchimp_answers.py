"""Mailchimp's documented answer shapes (what a 2xx must be to be believed, :mod:`sync.destinations.answers`),
the counts they carry, and the texts of a refused member: the data side of :mod:`sync.destinations.mailchimp_api`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from pydantic import TypeAdapter, with_config
from typing_extensions import NotRequired, Required, TypedDict

from .answers import STRICT, Shape


# The two batch answers carry 500 member objects each: their shapes are TypedDicts (validated into plain dicts,
# about half the cost of a model instance per member); the small answers are Shape models.
@with_config(STRICT)
class Member(TypedDict):
    email_address: str


@with_config(STRICT)
class MemberError(TypedDict, total=False):
    email_address: Required[str]
    error: str | None
    error_code: str | None
    field: str | None
    field_message: str | None


@with_config(STRICT)
class _BatchAnswer(TypedDict):
    new_members: list[Member]
    updated_members: list[Member]
    errors: list[MemberError]
    total_created: NotRequired[int]
    total_updated: NotRequired[int]
    error_count: NotRequired[int]


@with_config(STRICT)
class SegmentError(TypedDict, total=False):
    email_addresses: Required[list[str]]
    error: str | None


@with_config(STRICT)
class _SegmentAnswer(TypedDict):
    members_added: list[Member]
    members_removed: list[Member]
    errors: list[SegmentError]
    total_added: NotRequired[int]
    total_removed: NotRequired[int]


#: ``POST /lists/{id}`` (batch subscribe), 200
BatchAnswer: TypeAdapter[_BatchAnswer] = TypeAdapter(_BatchAnswer)
#: ``POST /lists/{id}/segments/{seg}`` (members_to_add / members_to_remove), 200
SegmentAnswer: TypeAdapter[_SegmentAnswer] = TypeAdapter(_SegmentAnswer)


#: the counts of a batch (subscribe, tag call) answer and the lists they count
BATCH_COUNTS = (("total_created", "new_members"), ("total_updated", "updated_members"), ("error_count", "errors"))
SEGMENT_COUNTS = (("total_added", "members_added"), ("total_removed", "members_removed"))


def count_mismatches(answer: Mapping[str, Any], counts: tuple[tuple[str, str], ...]) -> list[str]:
    """Where a count the answer gives says otherwise than the list it counts. The spec does not say the counts
    equal the lists' lengths (``error_count`` may count several errors for one member; a count may leave out
    members that did not change): the per-address lists are what is believed, a mismatch is only reported."""
    return [f"{count} {answer[count]} for {len(answer[key])} {key}" for count, key in counts
            if answer.get(count) is not None and answer[count] != len(answer[key])]


class MemberInfo(Shape):
    """``GET /lists/{id}/members/{subscriber_hash}``, 200: a member, whatever its status (archived included)."""

    email_address: str
    status: str


class ListInfo(Shape):
    id: str
    name: str


class Created(Shape):
    id: int


class MergeField(Shape):
    """``POST /lists/{id}/merge-fields``, 200: the Merge Field made."""

    merge_id: int
    tag: str


def problem_document(body: str) -> dict[str, Any]:
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}



def member_error(error: MemberError) -> str:
    text = f"{error.get('error_code') or 'ERROR'}: {error.get('error') or 'rejected'}"
    if error.get("field"):
        text += f" ({error.get('field')}: {error.get('field_message') or 'invalid'})"
    return text


#: Mailchimp's words for an address it will not take, whatever is sent (lower case, found anywhere in the error): an
#: error about one member that says one of these, naming no field of :data:`OTHER_FIELDS`, refuses him for
#: good (:attr:`~sync.model.ItemResult.refused`: a lost tag's wait ends). Any other text (merge fields, a limit or
#: throttle such as "signed up to a lot of lists very recently", an unknown ``ERROR_GENERIC``) fails him only: he
#: is sent again next run. Listed in docs/destinations/mailchimp.md.
MEMBER_REFUSALS = (
    "compliance state",  # "… is in a compliance state due to unsubscribe, bounce, or compliance review …"
    "permanently deleted",  # a forgotten address: "… was permanently deleted and cannot be re-imported …"
    "forgotten email",  # the same, by its title ("Forgotten Email Not Subscribed")
    "looks fake or invalid",  # "… looks fake or invalid, please enter a real email address."
    "valid email address",  # "Please provide a valid email address."
)


#: the member fields of a batch subscribe other than ``email_address`` (the spec's member body): an error naming one
#: of these (or a part of it: ``merge_fields.SEGMENT``) is about that field, not his address. A field Mailchimp
#: gives that is not one of these (none is documented for ``errors[]``) does not stop his refusal.
OTHER_FIELDS = ("merge_fields", "interests", "status", "email_type", "language", "vip", "location",
                "marketing_permissions", "ip_signup", "timestamp_signup", "ip_opt", "timestamp_opt", "tags")
_OTHER_FIELD = re.compile(rf"^(?:{'|'.join(OTHER_FIELDS)})(?:$|[.\[])", re.I)


def refuses_member(text: str | None, field: str | None = None) -> bool:
    """Whether an error about one member is his refusal for good: a :data:`MEMBER_REFUSALS` text, about no
    field of :data:`OTHER_FIELDS`."""
    low = (text or "").lower()
    return not _OTHER_FIELD.match((field or "").strip()) and any(words in low for words in MEMBER_REFUSALS)


#: of :data:`MEMBER_REFUSALS`, the words of an address kept out by the contact's own choice (he unsubscribed or
#: bounced before he left the audience, or asked to be forgotten): a create refused so is kept out
#: (:attr:`~sync.model.ItemResult.kept_out`: not a failure, not planned again), as Unisender's unsubscribed
CONTACTS_CHOICE = ("compliance state", "permanently deleted", "forgotten email")


def his_choice(text: str | None, field: str | None = None) -> bool:
    """Whether an error about one member is his refusal for good by his own choice (:data:`CONTACTS_CHOICE`)."""
    low = (text or "").lower()
    return refuses_member(text, field) and any(words in low for words in CONTACTS_CHOICE)


def call_wide(errors: Mapping[str, str], sent: int) -> bool:
    """Whether the errors (lower-cased address -> text) are one error given to every member of a call of two or
    more: the same text for each, naming none of them ("Please provide a valid email address." for all): about
    the call, never a member's refusal. Texts that name each one's address ("x was permanently deleted …") are
    each member's own, even when every member of the call has one."""
    if sent < 2 or len(errors) < sent:
        return False
    texts = {text.lower() for text in errors.values()}
    return len(texts) == 1 and not any(email.lower() in text for text in texts for email in errors)


_MEMBER_FIELD = re.compile(r"^members(?:\.|\[)(\d+)(.*)")  # the place, then the member's field (if any)


def named_members(body: str | None, n: int) -> dict[int, tuple[str, str, bool]]:
    """Index -> (field and message, message, whether it refuses him: :func:`refuses_member`) of the members (of ``n`` sent) a 400's
    ``errors[{field, message}]`` names by their place (``members.3.email_address``, ``members[3]``); that array
    is not in the spec's problem document, so an answer without it names nobody."""
    named: dict[int, tuple[str, str, bool]] = {}
    for e in problem_document(body or "").get("errors") or []:
        m = _MEMBER_FIELD.match(str(e.get("field") or "")) if isinstance(e, dict) else None
        if m and int(m.group(1)) < n:
            message = str(e.get("message") or "invalid")
            named[int(m.group(1))] = (f"{e.get('field')}: {message}", message,
                                      refuses_member(message, m.group(2).lstrip('].')))
    return named
