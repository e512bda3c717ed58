"""Mailchimp destination: one audience (list); managed tags are static segments, RFM values are merge fields.

Calls, through the official SDK ``mailchimp_marketing`` 3.0.80 (``requests`` underneath)::

    prepare          GET /lists/{id}; GET+POST /lists/{id}/merge-fields; GET+POST /lists/{id}/segments
    apply            POST /lists/{id}                 batch subscribe, <= 500 members a call
                     POST /lists/{id}/segments/{seg}  <= 500 members_to_add and <= 500 members_to_remove
    existing_members GET /lists/{id}/members          count=1000 pages
    read_managed     GET /lists/{id}/segments/{seg}/members
    (a refused removal) GET /lists/{id}/members/{hash}  is the address still a member?
    (a create re-sent)  GET /lists/{id}/members?since_timestamp_opt=  did the lost send create them? (mailchimp_resent)

Consent. The batch-subscribe member object (spec 3.0.55) has ``status`` but no ``status_if_new``, and
``update_existing`` decides whether a batch may change existing members. So an upsert is done as:

1. contacts to create (``change.create`` with a ``status_if_new``): ``update_existing=false`` and
   ``status = status_if_new``. New addresses are created with that status; addresses already on the list are
   left untouched and answered ``ERROR_CONTACT_EXISTS``, and go on to step 2.
2. field updates (and the ``ERROR_CONTACT_EXISTS`` spill-over): ``update_existing=true`` with
   ``merge_fields`` and **no status at all**, so subscribed, unsubscribed, cleaned, pending and transactional
   members all keep their status.

Both steps are idempotent, so both are retried (an answer cut off mid-body too, as a timeout). A create whose
answer was lost and that the retry sent again is answered ``ERROR_CONTACT_EXISTS`` for the members the lost send
created: those of a ``subscribed`` create are looked for in one bounded list read and reported created (no field
update: the lost send carried the fields) when Mailchimp's times say the lost send made them
(:mod:`sync.destinations.mailchimp_resent`). A new contact's tags come after its upsert (a tag call starts
as soon as the upserts of its new contacts answered: :mod:`sync.destinations.mailchimp_apply`); a new contact
whose upsert failed gets no tag call this run (its tag ops are reported failed and the engine retries them next
run). A contact the ledger knows is in the audience gets its tags without waiting for its field update: a tag
call never creates a member nor changes a status, and reports a member gone since as ``missing`` itself.

Answers are validated before they are believed (:mod:`sync.destinations.answers`): a 2xx body is read from the
raw response (the SDK's own decoding is skipped; it returns raw text for HTML, a bare ``requests.Response`` for
an empty body) in one pass, decoding only the fields rfmsync reads, and checked against the documented shape
(batch subscribe: ``new_members``, ``updated_members``, ``errors[{email_address, error, error_code}]``; tag
call: ``members_added``, ``members_removed``, ``errors[{email_addresses, error}]``; their counts,
``total_created``/``total_updated``/``error_count``/``total_added``/``total_removed``, are not documented to
equal the lists' lengths: the lists are believed, a count that differs is a warning (one per apply); a merge
field or tag create: the field (``merge_id``, the ``tag`` asked for) or segment (``id``) made, else it is read
back, and not there is an error naming it), and every submitted address must be accounted for. Anything else fails the call's items with the raw answer (cut to 200 characters). A tag
add that Mailchimp ignores or refuses because the address is not a list member reports the item ``missing``:
the ledger forgets the contact, and the next run creates it again (consent rules apply). A removal refused so
(the error text is matched loosely) is checked first with ``GET /lists/{id}/members/{subscriber hash}``: a 404
makes it done and ``missing``; a member there (any status, archived too) or a read that fails makes it a
failed removal, and the ledger keeps the contact.

Errors, retries and SDK quirks live in :mod:`sync.destinations.mailchimp_api`, the check and ``prepare`` (merge
fields, segments) in :mod:`sync.destinations.mailchimp_audience`, the answer shapes in
:mod:`sync.destinations.mailchimp_answers`, the request bodies in :mod:`sync.destinations.mailchimp_bodies`.
Merge field types come from the field vocabulary's kinds (:data:`FIELD_TYPES`); a merge field that
already exists keeps its type (a warning names the difference).
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime
from typing import Any, Collection, Iterable, Mapping, Sequence

from pydantic import SecretStr

from connectors.retry import RetryPolicy

from ..errors import DestinationConfigError, DestinationError
from ..model import CallResults, ContactChange, ItemResult, OnResults, failed_results
from .answers import BadAnswer, excerpt, unaccounted
from . import specs
from .base import ClientOptions, Dispatching
from .mailchimp_apply import Pipeline
from .mailchimp_audience import FIELD_TYPES, AudienceSetup, merge_field_type
from .mailchimp_answers import (BATCH_COUNTS, SEGMENT_COUNTS, BatchAnswer, MemberInfo, SegmentAnswer,
                                call_wide, count_mismatches, his_choice, member_error, named_members,
                                refuses_member)
from .mailchimp_api import NOT_A_MEMBER, BatchRejected, MailchimpApi, Sent, subscriber_hash
from .mailchimp_bodies import batch_body, segment_body, tag_ops
from .mailchimp_resent import landed, unread
from .mailchimp_window import Window, prefetch

log = logging.getLogger(__name__)

__all__ = ["FIELD_TYPES", "MAX_BATCH", "MAX_CONNECTIONS", "SPEC", "MailchimpDestination", "data_centre",
           "merge_field_type"]

MAX_BATCH = specs.MAILCHIMP_MAX_BATCH  # members per batch subscribe; members_to_add / _remove per segment call
MAX_CONNECTIONS = 10  # Mailchimp's concurrent-connection limit per API key

_DATA_CENTRE = re.compile(r"[a-z]+[0-9]+")


def data_centre(api_key: str) -> str | None:
    """``…-us21`` -> ``us21``; None when the key has no (valid) suffix."""
    parts = api_key.split("-")
    return parts[1] if len(parts) == 2 and _DATA_CENTRE.fullmatch(parts[1]) else None


class MailchimpDestination(AudienceSetup):
    """One Mailchimp audience as a :class:`sync.destinations.base.Destination`."""

    reads_existing_members = True
    reports_dispatch = True  # apply's dispatching: each upsert and tag call, before it goes
    checks_earlier_creates = True  # apply's earlier: a create answered exists is checked (mailchimp_resent)
    reconciles = True

    def __init__(self, name: str, audience: str, api_key: str | SecretStr, api_url: str | None = None,
                 retry: RetryPolicy | None = None, timeout: float = 30, max_connections: int = 5,
                 batch_size: int | None = None) -> None:
        self.name = name
        self.audience = audience
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else (api_key or "")
        if not key:
            raise DestinationConfigError(f"destination {name!r}: MAILCHIMP_API_KEY is not set")
        dc = data_centre(key)
        api_url = (api_url or "").strip() or None  # a blank URL is unset, as a blank MAILCHIMP_API_URL is
        if api_url is None and dc is None:
            raise DestinationConfigError(
                f"destination {name!r}: the Mailchimp API key has no data-centre suffix (like '-us21'); "
                "use the full key from Account > Extras > API keys, or set MAILCHIMP_API_URL")
        self.api_url = (api_url or f"https://{dc}.api.mailchimp.com/3.0").rstrip("/")
        self.timeout = timeout
        self.max_connections = max(1, min(int(max_connections), MAX_CONNECTIONS))
        self.batch_size = max(1, min(batch_size or MAX_BATCH, MAX_BATCH))
        self._http = MailchimpApi(name, audience, key, self.api_url, retry or RetryPolicy(), timeout,
                                  self.max_connections)
        self._call, self._paged, self._lists = self._http.call, self._http.paged, self._http.lists
        self._segments: dict[str, int] | None = None  # tag name -> static segment id
        self._field_tags: dict[str, str] = {}  # config field name (or value name) -> merge tag
        self._merge_known: dict[str, bool] | None = None  # merge tag -> required, as prepare read them
        self._lock = threading.Lock()
        self._counts_warned = False  # an answer's counts differed from its lists in this apply (one warning)
        # this apply's creates an earlier run may have carried out (key -> the host's time since when), and those
        # found so whose fields go in the update pass (created by rfmsync all the same: mailchimp_resent)
        self._earlier: Mapping[str, datetime] = {}
        self._created_earlier: set[str] = set()
        self._window: Window | None = None

    def __repr__(self) -> str:
        return f"MailchimpDestination(name={self.name!r}, audience={self.audience!r}, api_url={self.api_url!r})"

    # ------------------------------------------------------------------ Destination protocol
    def existing_members(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """Normalised email -> Mailchimp status for the audience's members (only ``keys`` when given)."""
        wanted = None if keys is None else {k.lower() for k in keys}
        if wanted is not None and not wanted:
            return {}
        out: dict[str, str] = {}
        for m in self._paged("GET members", self._lists.get_list_members_info, (self.audience,), "members",
                             ("email_address", "status"),
                             fields=["members.email_address", "members.status", "total_items"]):
            key = m["email_address"].lower()
            if wanted is None or key in wanted:
                out[key] = m["status"]
        return out

    def read_managed(self, managed_tags: Sequence[str]) -> dict[str, set[str]]:
        """Normalised emails carrying each managed tag, whatever their status."""
        ids = self._segment_ids(managed_tags, create=False)
        out: dict[str, set[str]] = {}
        for tag in managed_tags:
            sid = ids.get(tag)
            out[tag] = set() if sid is None else {
                m["email_address"].lower() for m in self._paged(
                    f"GET segment {tag!r} members", self._lists.get_segment_members_list,
                    (self.audience, str(sid)), "members", ("email_address",),
                    fields=["members.email_address", "total_items"],
                    include_cleaned="true", include_transactional="true", include_unsubscribed="true")}
        return out

    def apply(self, changes: Sequence[ContactChange], on_results: OnResults,
              dispatching: Dispatching | None = None, earlier: Mapping[str, datetime] | None = None) -> None:
        """Upsert (create, then update) and tag in batches; ``on_results`` after each API call, ``dispatching``
        before it. A tag call starts once its new contacts' upserts have answered
        (:mod:`sync.destinations.mailchimp_apply`). ``earlier``: the creates an earlier run may have carried out,
        by key, with the host's time since when (:data:`~sync.destinations.base.Earlier`)."""
        stats = {"calls": 0, "items": 0, "failed": 0}
        self._counts_warned = False
        self._earlier, self._created_earlier = earlier or {}, set()
        # many creates in doubt: their window read once, the caller asked between its pages (a stop, a lock lost)
        self._window = prefetch(self, self._earlier, lambda: on_results([]))

        def report(results: Sequence[ItemResult]) -> None:
            stats["calls"] += 1
            stats["items"] += len(results)
            stats["failed"] += len(failed_results(results))
            on_results(results)

        changes = self._retired_checked(changes, on_results)
        Pipeline(self, changes, report, on_results, dispatching).run()
        log.info("mailchimp %s: %d changes -> %d item results (%d failed) in %d calls", self.name, len(changes),
                 stats["items"], stats["failed"], stats["calls"])

    # ------------------------------------------------------------------ apply internals
    def _chunks(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        return [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]

    def _subscribe(self, chunk: Sequence[ContactChange], create: bool, resend: bool = True,
                   lost_at: float | None = None) -> tuple[list[ItemResult], list[Any]]:
        body = batch_body(chunk, create, self._field_tags)  # the members as JSON text, sent as it is
        what = f"POST /lists/{self.audience} ({len(chunk)} {'new' if create else 'existing'} members)"
        # an attempt whose answer was lost (this call's, or the call it sends again); its Date read for creates an
        # earlier run may have carried out
        sent = Sent(lost_at, dated=create and bool(self._earlier) and any(c.key in self._earlier for c in chunk))
        try:
            answer = self._call(what, self._lists.batch_list_members, self.audience, body, shape=BatchAnswer,
                                sent=sent)
            self._check_counts(answer, BATCH_COUNTS, what)
        except (BatchRejected, BadAnswer) as exc:
            named = named_members(exc.body, len(chunk)) if resend and isinstance(exc, BatchRejected) else {}
            if not named:
                if create and isinstance(exc, BadAnswer):  # the work may be done: the next run cannot tell
                    unread(self, what, [c for c in chunk if c.status_if_new == "subscribed"])
                return [ItemResult(c.key, "upsert", False, str(exc)) for c in chunk], []
            # a 400 naming members: they fail (refused for good if it says so of him alone, as in an answer's
            # errors), the others are sent again without them
            wide = call_wide({chunk[i].email: message for i, (_, message, _) in named.items()}, len(chunk))
            secrets = self._http._secrets
            refused = [ItemResult(chunk[i].key, "upsert", False, excerpt(f"Mailchimp {what}: HTTP 400 refused "
                                                                          f"{chunk[i].email} ({text})", secrets),
                                  refused=his and not wide, kept_out=his and not wide and create and his_choice(text))
                       for i, (text, _, his) in sorted(named.items())]
            if len(named) == len(chunk):  # every member named: nobody left to send again
                return refused, []
            results, spill = self._subscribe([c for i, c in enumerate(chunk) if i not in named], create, False,
                                             sent.lost_at)
            if isinstance(results, CallResults):
                return CallResults(results.ok, [*results.other, *refused]), spill
            return [*results, *refused], spill
        members = [m["email_address"] for m in [*answer["new_members"], *answer["updated_members"]]]
        # a create listed among updated_members (update_existing=false: not expected) was there before: not ours
        usual = not answer["errors"] and not (create and answer["updated_members"])
        if usual and (members == [c.email for c in chunk] or  # the usual answer, in order
                      {m.lower() for m in members}.issuperset([c.key for c in chunk])):
            return existed_apart(chunk, create, self._created_earlier), []  # every contact done (in columns)
        new = {m["email_address"].lower() for m in answer["new_members"]} if create else set()
        errors = {e["email_address"].lower(): e for e in answer["errors"]}
        wide = call_wide({email: member_error(e) for email, e in errors.items()}, len(chunk))
        # an earlier attempt's answer lost (or an earlier run's): the members it created answer "exists" now
        mine = landed(self, [c for c in chunk if c.status_if_new == "subscribed" and exists(errors, c)], sent, what,
                      self._earlier) if create and (sent.lost_at is not None or sent.dated) else set()
        done = {m.lower() for m in members}
        results: list[ItemResult] = []
        spill: list[ContactChange] = []
        for c in chunk:
            error = errors.get(c.email.lower()) or errors.get(c.key)
            if error is None:
                ok = c.email.lower() in done or c.key in done
                existed = ok and ((create and not (c.email.lower() in new or c.key in new))
                                  or spilled(c, create, self._created_earlier))
                results.append(ItemResult(c.key, "upsert", ok, None if ok else
                                          f"Mailchimp {what}: the answer does not mention {c.email}",
                                          existed=existed))
            elif create and c.key in mine and c.key in self._earlier and c.set_fields:  # an earlier run's send:
                self._created_earlier.add(c.key)  # rfmsync's, its fields that run's plan's: written again
                spill.append(c)
            elif create and c.key in mine:  # created by the lost attempt, with this call's fields: rfmsync's
                results.append(ItemResult(c.key, "upsert", True))
            elif create and error.get("error_code") == "ERROR_CONTACT_EXISTS":
                if c.set_fields:  # already on the list, status untouched: its fields go in the update pass
                    spill.append(c)
                else:  # already on the list: done, and not created by rfmsync
                    results.append(ItemResult(c.key, "upsert", True, existed=True))
            else:
                missing = not create and (error.get("field") == "status"
                                           or bool(NOT_A_MEMBER.search(error.get("error") or "")))
                # refused for good (his tag adds too: Pipeline) when the text says so of him alone
                refused = not missing and not wide and refuses_member(error.get("error"), error.get("field"))
                if missing and c.clears_only:  # a clear for an address no longer on the list: done, forgotten
                    results.append(ItemResult(c.key, "upsert", True, missing=True))
                    continue
                # a create his own choice refuses (compliance state, forgotten): kept out, not a failure
                kept = refused and create and his_choice(error.get("error"), error.get("field"))
                results.append(ItemResult(c.key, "upsert", False, excerpt(member_error(error), self._http._secrets),
                                          missing=missing, refused=refused, kept_out=kept))
        return results, spill

    def _tag_call(self, tag: str, sid: int, add: Sequence[ContactChange],
                  remove: Sequence[ContactChange]) -> tuple[list[ItemResult], list[Any]]:
        body = segment_body(add, remove)  # JSON text, sent as it is
        what = f"POST /lists/{self.audience}/segments/{sid} ({tag!r} +{len(add)} -{len(remove)})"
        try:
            answer = self._call(what, self._lists.batch_segment_members, body, self.audience, str(sid),
                                shape=SegmentAnswer)
            self._check_counts(answer, SEGMENT_COUNTS, what)
        except (BatchRejected, BadAnswer) as exc:
            # an answer not read (BadAnswer): whether it was done is unknown, the next run sends it again
            return [ItemResult(c.key, op, False, str(exc)) for c, op in tag_ops(tag, add, remove)], []
        if not answer["errors"]:  # the usual answer: every add made (keys are the lower-cased addresses)
            added = [m["email_address"] for m in answer["members_added"]]
            keys = [c.key for c in add]
            if added == [c.email for c in add] or {m.lower() for m in added}.issuperset(keys):
                # and every removal done or moot: the results in columns
                return CallResults(((f"tag+{tag}", keys), (f"tag-{tag}", [c.key for c in remove]))), []
        secrets = self._http._secrets
        refused = {email.lower(): excerpt(e.get("error") or "refused", secrets)
                   for e in answer["errors"] for email in e["email_addresses"]}
        wide = call_wide(refused, len(add) + len(remove))
        ignored = set(unaccounted([c.email.lower() for c in add],
                                  (m["email_address"] for m in answer["members_added"]), refused))
        results = []
        for c, op in tag_ops(tag, add, remove):
            email = c.email.lower()
            if email in refused and op.startswith("tag-") and NOT_A_MEMBER.search(refused[email]):
                results.append(self._removal_refused(c, op, refused[email], what))
            elif email in refused:  # the ESP named him: refused for good if the text says so of him alone
                missing = bool(NOT_A_MEMBER.search(refused[email]))
                results.append(ItemResult(c.key, op, False, refused[email], missing=missing,
                                          refused=not missing and not wide and refuses_member(refused[email])))
            elif op.startswith("tag+") and email in ignored:  # "emails not on the list are ignored"
                results.append(ItemResult(c.key, op, False, f"{c.email} is not a list member (Mailchimp ignored "
                                          "the tag); it will be created again next run", missing=True))
            else:  # a removal Mailchimp does not mention: the address does not carry the tag either way
                results.append(ItemResult(c.key, op, True))
        return results, []

    def _check_counts(self, answer: Mapping[str, Any], counts: tuple[tuple[str, str], ...], what: str) -> None:
        """A count that says otherwise than its list: the lists are believed (each address sent is accounted for
        in them, or fails by itself); the first such answer of an apply is a warning, the others debug lines."""
        mismatches = count_mismatches(answer, counts)
        if mismatches:
            level = logging.DEBUG if self._counts_warned else logging.WARNING
            self._counts_warned = True
            log.log(level, "mailchimp %s: %s answered counts that differ from its lists (%s); the lists are "
                    "believed", self.name, what, "; ".join(mismatches))

    def _removal_refused(self, c: ContactChange, op: str, error: str, what: str) -> ItemResult:
        """A tag removal refused with an error that reads like "not a member" (a loose match): believed only when
        the member read answers 404. Then the address carries no tag (done) and the ledger forgets it
        (``missing``); a member there (any status, archived too) or a read that fails: the removal failed."""
        subscriber = subscriber_hash(c.email)
        read = f"GET /lists/{self.audience}/members/{subscriber}"
        try:
            member = self._call(read, self._lists.get_list_member, self.audience, subscriber,
                                fields=["email_address", "status"], shape=MemberInfo)
        except DestinationError as exc:
            if exc.status == 404:
                return ItemResult(c.key, op, True, missing=True)
            return ItemResult(c.key, op, False, f"Mailchimp {what} refused the removal of {c.email} ({error}) and "
                              f"the read to confirm it is not a member failed: {exc}")
        return ItemResult(c.key, op, False, f"Mailchimp {what} refused the removal of {c.email} ({error}), yet it "
                          f"is a member (status {member.status}); sent again next run")



def exists(errors: Mapping[str, Any], c: ContactChange) -> bool:
    """Whether the answer's ``errors`` (by lower-cased address) say ``c`` is already a list member."""
    error = errors.get(c.email.lower()) or errors.get(c.key)
    return error is not None and error.get("error_code") == "ERROR_CONTACT_EXISTS"


def spilled(c: ContactChange, create: bool, created: Collection[str] = ()) -> bool:
    """Whether ``c``, sent in an update pass, is a create Mailchimp answered ``ERROR_CONTACT_EXISTS`` for (the
    spill-over: only creates with a status go to the create pass): already on the list, so not created by rfmsync;
    unless among ``created`` (an earlier run's send created him: :mod:`~sync.destinations.mailchimp_resent`)."""
    return not create and c.create and bool(c.status_if_new) and c.key not in created


def existed_apart(chunk: Sequence[ContactChange], create: bool, created: Collection[str] = ()) -> CallResults:
    """A call whose every contact succeeded: the keys in columns, but the spilled creates (:func:`spilled`) apart,
    as results flagged ``existed`` (the outcome writer does not record them as subscribed by rfmsync)."""
    if create or not any(spilled(c, create, created) for c in chunk):
        return CallResults((("upsert", [c.key for c in chunk]),))
    return CallResults((("upsert", [c.key for c in chunk if not spilled(c, create, created)]),),
                       [ItemResult(c.key, "upsert", True, existed=True) for c in chunk if spilled(c, create, created)])


def _build(dest: Any, key: Any, options: ClientOptions) -> MailchimpDestination:
    return MailchimpDestination(dest.name, dest.audience or "", key, api_url=options.api_url,
                                batch_size=dest.batch_size, retry=options.retry, timeout=options.timeout,
                                max_connections=options.concurrency)


SPEC = specs.MAILCHIMP  # the rules as data, in sync.destinations.specs (no client import)
