"""Domain records of the sync engine: desired state, pushed state, changes, outcomes.

Shared by planning, the destinations and the ledger (the Destination Protocol is in
:mod:`sync.destinations.base`).

Keys: a contact is identified per destination by its normalised (lower-cased) email.
Tags are the destination's own names (prefix applied). Field values are strings,
numbers or None; they are compared as their JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

FieldValue = str | int | float | bool | None


@dataclass(frozen=True)
class DesiredContact:
    key: str  # normalised email
    customer_id: str
    email: str
    consent: str  # yes | no | unknown
    segment: str
    tags: frozenset[str]  # managed tags this contact should carry (0 or 1 today)
    fields: Mapping[str, FieldValue] = field(default_factory=dict)


@dataclass(frozen=True)
class PushedState:
    key: str
    customer_id: str | None
    tags: frozenset[str]
    fields: Mapping[str, FieldValue]
    exists: bool = True  # the ESP holds this contact (we created or saw it)


@dataclass(frozen=True, slots=True)  # a full plan holds a million of these: no per-object __dict__
class ContactChange:
    key: str
    email: str
    customer_id: str
    segment: str
    create: bool  # contact not known to exist in the ESP: upsert creates it if absent
    status_if_new: str | None  # ESP status for a new contact: subscribed | pending | transactional
    add_tags: frozenset[str] = frozenset()
    remove_tags: frozenset[str] = frozenset()
    set_fields: Mapping[str, FieldValue] = field(default_factory=dict)  # only changed fields

    @property
    def needs_upsert(self) -> bool:
        return self.create or bool(self.set_fields)


@dataclass(frozen=True)
class Skip:
    key: str
    customer_id: str
    segment: str
    reason: str  # "no consent (new_contacts = skip)", "invalid email", ...


@dataclass(frozen=True)
class ItemResult:
    """Outcome of one operation on one contact: op is "upsert", "tag+<name>" or "tag-<name>"."""

    key: str
    op: str
    ok: bool
    error: str | None = None
    #: the ESP said it does not hold this contact (e.g. "not a list member" on a tag call): the ledger marks it
    #: not-existing so the next plan creates it again (consent rules apply) instead of failing forever
    missing: bool = False


OnResults = Callable[[Sequence[ItemResult]], None]
