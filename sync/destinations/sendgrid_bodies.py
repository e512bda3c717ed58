"""SendGrid's upsert bodies: a contact's ``PUT /v3/marketing/contacts`` item (its custom fields by id, each value
as the field's type takes it) and the batches they are sent in ("up to 30,000 contacts, or 6MB")."""

from __future__ import annotations

import json
from typing import Any, Container, Iterator, Mapping, Sequence

from ..errors import DestinationConfigError
from ..model import ContactChange, FieldValue
from .base import uncleared_field
from .specs import SENDGRID

field_key = SENDGRID.field_key  # a field name as SendGrid compares them (case folded), as the planner does


def contact_body(ch: ContactChange, fields: Mapping[str, str], kinds: Mapping[str, str], name: str) -> dict[str, Any]:
    """The upsert item of ``ch``: ``fields``/``kinds``: the account's custom field ids and types by name as
    :func:`field_key` spells it (``prepare`` made them); ``name``: the destination's, for the error of a field that
    does not exist."""
    custom: dict[str, Any] = {}
    for fname, value in ch.set_fields.items():
        fid = fields.get(field_key(fname))
        if fid is None and value is None:
            continue  # a field the account no longer has (retire_fields after its deletion): nothing to clear
        if fid is None:
            raise DestinationConfigError(f"SendGrid destination {name!r}: custom field {fname!r} does "
                                         "not exist (run prepare with it)")
        kind = kinds.get(field_key(fname), "Text")
        if value is None and kind != "Text":
            continue  # SendGrid cannot clear Number/Date fields through an upsert
        custom[fid] = _custom_value(value, kind)
    return {"email": ch.email, **({"custom_fields": custom} if custom else {})}


def check_clearable(changes: Sequence[ContactChange], mapped: Container[str], kinds: Mapping[str, str],
                    name: str) -> None:
    """DestinationConfigError, before any write, for a field a change clears (``retire_fields``: a None of a field
    the mapping does not name) that is a Number or Date custom field of the account: SendGrid refuses null there
    ("custom field cannot be null") and has no other empty value, so :func:`contact_body` would leave it out and
    the ledger would believe it cleared. Deleting the field in SendGrid takes its values with it."""
    for ch in changes:
        for fname, value in ch.set_fields.items():
            kind = kinds.get(field_key(fname))
            if value is None and kind not in (None, "Text") and field_key(fname) not in mapped:
                raise uncleared_field("SendGrid", name, f"{fname!r} is a {kind} custom field", "delete the field "
                                      "in SendGrid (its values go with it) and sync again")


def upsert_batches(members: list[tuple[ContactChange, dict[str, Any]]], list_ids: tuple[str, ...], batch_size: int,
                   max_bytes: int) -> Iterator[list[tuple[ContactChange, dict[str, Any]]]]:
    """``members`` (a change and its upsert item) in batches of at most ``batch_size`` items and ``max_bytes`` of
    JSON with the list ids."""
    overhead = len(json.dumps({"list_ids": list(list_ids), "contacts": []}))
    batch: list[tuple[ContactChange, dict[str, Any]]] = []
    size = overhead
    for ch, body in members:
        item = len(json.dumps(body)) + 2
        if batch and (len(batch) >= batch_size or size + item > max_bytes):
            yield batch
            batch, size = [], overhead
        batch.append((ch, body))
        size += item
    if batch:
        yield batch


def _custom_value(value: FieldValue, kind: str) -> Any:
    """A value as the field's actual type takes it: booleans are 1/0 in a Number field, yes/no elsewhere."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value) if kind == "Number" else ("yes" if value else "no")
    return value
