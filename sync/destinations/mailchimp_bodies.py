"""Mailchimp request bodies written as JSON text by rfmsync (the SDK sends a :class:`JsonText` body as it is):
a batch-subscribe body (member by member, or column by column when every member has the same fields) and a
static segment's members to add and remove. Each is byte for byte what :data:`_encode_body` writes for the
documented dict (tested). Also the merge tags a body may name (:data:`MERGE_TAG`, the config's field name →
merge tag) and a tag call's operations."""

from __future__ import annotations

import json
import math
from itertools import chain, repeat
from typing import Any, Iterable, Mapping, Sequence

from ..errors import DestinationConfigError
from ..model import ContactChange, FieldValue
from .specs import MAILCHIMP_MERGE_TAG

#: a merge tag Mailchimp takes: 1-10 characters, upper-case letters, digits or _
MERGE_TAG = MAILCHIMP_MERGE_TAG


#: a request body as JSON, compact and without the check for reference cycles (rfmsync builds every body; a
#: batch of 500 members: ~27 % less CPU than ``json.dumps`` under the interpreter lock, ~15 % fewer bytes)
_encode_body = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode
#: a str as the encoder above writes it (ASCII, escaped, quoted): the C function it calls
_encode_str = json.encoder.encode_basestring_ascii


class JsonText(str):
    """A request body rfmsync has already written as JSON text: :meth:`_ApiClient.request` sends it as it is
    (the SDK passes a body through untouched)."""

    __slots__ = ()


def merge_value(value: FieldValue) -> Any:
    """A field value as Mailchimp gets it: None and NaN clear the merge field (""), booleans are yes/no."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""  # clears the merge field
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def batch_body(changes: Sequence[ContactChange], create: bool, tags: Mapping[str, str]) -> JsonText:
    """The batch-subscribe body for ``changes``: ``{"members": [...], "update_existing": not create}``, each
    member ``email_address``, ``status`` (``status_if_new``, creates only) and ``merge_fields`` (``set_fields``
    keyed by merge tag: ``tags``, values by :func:`merge_value`; left out when empty).

    The text is what :data:`_encode_body` writes for that dict (tested byte for byte), written straight from
    the changes: no dict per member. In the usual batch every member has the same fields (a full sync writes
    them all) and each field's values are all text or all whole numbers: the members are then written column
    by column, each column by one C function over its values (``map``), into one template per batch (a batch
    of 500: about half the CPU of writing member by member, which any other batch does)."""
    names = [tuple(c.set_fields) for c in changes]
    if names and names.count(names[0]) == len(names):
        body = _columns_body(changes, create, tags, names[0])
        if body is not None:
            return body
    return _members_body(changes, create, tags)


def segment_body(add: Sequence[ContactChange], remove: Sequence[ContactChange]) -> JsonText:
    """The body of a tag call (``POST /lists/{id}/segments/{seg}``): ``members_to_add`` and
    ``members_to_remove`` (each only when there are some), the addresses as :data:`_encode_body` writes them."""
    parts = [f'"{key}":[' + ",".join(map(_encode_str, [c.email for c in changes])) + "]"
             for key, changes in (("members_to_add", add), ("members_to_remove", remove)) if changes]
    return JsonText("{" + ",".join(parts) + "}")


def _body(members: Iterable[str], create: bool) -> JsonText:
    return JsonText('{"members":[' + ",".join(members) + '],"update_existing":' + ("false" if create else "true")
                    + "}")


def _merge_heads(names: tuple[str, ...], tags: Mapping[str, str]) -> list[str] | None:
    """'"TAG":' for each of ``names`` (merge tags by :data:`tags`), or None when two name one merge tag (the
    dict keeps the last value) or a tag is not text."""
    tags_ = [tags.get(k, k.upper()) for k in names]
    if len(set(tags_)) < len(tags_) or any(type(t) is not str for t in tags_):
        return None
    return [_encode_str(t) + ":" for t in tags_]


def _column_text(values: Sequence[Any]) -> Iterable[str] | None:
    """JSON text of a column of values, by one C function: all text, or all whole numbers (not bool)."""
    kinds = set(map(type, values))
    if kinds == {str}:
        return map(_encode_str, values)
    if kinds == {int}:
        return map(int.__repr__, values)
    return None


def _columns_body(changes: Sequence[ContactChange], create: bool, tags: Mapping[str, str],
                  names: tuple[str, ...]) -> JsonText | None:
    """:func:`batch_body` column by column, for changes that all have the fields ``names``; None when a column
    (the statuses, a field) is not all text or all whole numbers, or two names share a merge tag.

    The members' text is one join over the columns interleaved with the constant text between them (each
    member ``'{"email_address":' e ',"status":' s ... '}'``, then ``,``): about half the CPU of formatting
    each member with a ``%`` template."""
    if not changes:
        return _body((), create)
    emails = _column_text([c.email for c in changes])
    if emails is None:
        return None
    parts: list[Any] = [repeat('{"email_address":'), emails]
    if create:
        statuses = _column_text([c.status_if_new for c in changes])
        if statuses is None:
            return None
        parts += [repeat(',"status":'), statuses]
    if names:
        heads = _merge_heads(names, tags)
        if heads is None:
            return None
        for i, (head, values) in enumerate(zip(heads, zip(*[c.set_fields.values() for c in changes]))):
            text = _column_text(values)
            if text is None:
                return None
            parts += [repeat((',"merge_fields":{' if i == 0 else ",") + head), text]
        parts.append(repeat("}},"))
    else:
        parts.append(repeat("},"))
    members = "".join(chain.from_iterable(zip(*parts)))[:-1]  # the last member's "," taken off
    return JsonText('{"members":[' + members + '],"update_existing":' + ("false" if create else "true") + "}")


def _members_body(changes: Sequence[ContactChange], create: bool, tags: Mapping[str, str]) -> JsonText:
    """:func:`batch_body` member by member: any fields, any values."""
    keys: dict[tuple[str, ...], list[str] | None] = {}  # set_fields' keys -> '"TAG":' of each, once per key set
    parts = []
    for c in changes:
        text = '{"email_address":' + _encode_str(c.email)
        if create:
            text += ',"status":' + (_encode_str(c.status_if_new) if type(c.status_if_new) is str
                                    else _encode_body(c.status_if_new))
        fields = c.set_fields
        if fields:
            names = tuple(fields)
            heads = keys.get(names, False)
            if heads is False:
                heads = keys[names] = _merge_heads(names, tags)
            if heads is None:  # two keys for one merge tag (the dict keeps the last value): as a dict
                text += ',"merge_fields":' + _encode_body({tags.get(k, k.upper()): merge_value(v)
                                                           for k, v in fields.items()})
            else:
                text += ',"merge_fields":{' + ",".join(
                    [h + (_encode_str(v) if type(v) is str else int.__repr__(v) if type(v) is int
                          else _encode_body(merge_value(v))) for h, v in zip(heads, fields.values())]) + "}"
        parts.append(text + "}")
    return _body(parts, create)


def check_merge_tags(name: str, fields: Mapping[str, str]) -> None:
    for tag in fields:
        if not MERGE_TAG.fullmatch(tag.upper()):
            raise DestinationConfigError(f"destination {name!r}: merge tag {tag!r} in `fields` must be "
                                         "1-10 characters, letters, digits or _ (e.g. RECENCY)")


def field_tags(fields: Mapping[str, str]) -> dict[str, str]:
    """set_fields are keyed by the config's field name, whatever its case ("Recency" -> RECENCY)."""
    return {**{value: tag.upper() for tag, value in fields.items()}, **{tag: tag.upper() for tag in fields}}


def tag_ops(tag: str, add: Sequence[ContactChange], remove: Sequence[ContactChange]
            ) -> list[tuple[ContactChange, str]]:
    """A tag call's operations, as its results name them (``tag+T`` adds, ``tag-T`` removals)."""
    return [(c, f"tag+{tag}") for c in add] + [(c, f"tag-{tag}") for c in remove]
