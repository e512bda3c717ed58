"""Domain records of the sync engine: desired state, pushed state, changes, outcomes.

Shared by planning, the destinations and the ledger (the Destination Protocol is in
:mod:`sync.destinations.base`).

Keys: a contact is identified per destination by its normalised (lower-cased) email.
Tags are the destination's own names (prefix applied). Field values are strings,
numbers or None; they are compared as their JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence

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
    #: another customer whose card's *no* makes the address's consent *no* (this card's own is not), named by a
    #: skip's reason (:func:`sync.planning.consent.no_consent_reason`); None: the consent is this card's own
    refused_by: str | None = None


@dataclass(frozen=True)
class PushedState:
    key: str
    customer_id: str | None
    tags: frozenset[str]
    fields: Mapping[str, FieldValue]
    exists: bool = True  # the ESP holds this contact (we created or saw it)
    #: the ledger's text of exactly ``fields`` (:func:`sync.ledger.state_rows.fields_json`) when it is known, else None:
    #: the apply's fold sets it from the plan's (``ContactChange.fields_text``) where the stored fields are that
    #: change's own mapping, and the ledger then stores it instead of encoding the fields again
    fields_text: str | None = field(default=None, compare=False, repr=False)

    def without(self, fields: Iterable[str], tags: Iterable[str]) -> PushedState:
        """This state without these field keys and tags (itself when it holds none of them): what the ledger
        keeps once the ESP lost them (:meth:`sync.ledger.state.PushedStates.forget_lost`)."""
        lost_fields = [k for k in fields if k in self.fields]
        lost_tags = self.tags.intersection(tags)
        if not lost_fields and not lost_tags:
            return self
        return PushedState(self.key, self.customer_id, self.tags - lost_tags,
                           {k: v for k, v in self.fields.items() if k not in lost_fields}, self.exists)


@dataclass(frozen=True, slots=True)  # a full plan holds a million of these: no per-object __dict__
class ContactChange:
    key: str
    email: str
    customer_id: str
    segment: str
    create: bool  # contact not known to exist in the ESP: upsert creates it if absent
    #: ESP status if the contact has to be created: subscribed | pending | transactional; set for contacts the
    #: ledger knows too (None there: it must not be created again, e.g. found deleted in the ESP since)
    status_if_new: str | None
    add_tags: frozenset[str] = frozenset()
    remove_tags: frozenset[str] = frozenset()
    set_fields: Mapping[str, FieldValue] = field(default_factory=dict)  # only changed fields
    #: the ledger's text of exactly ``set_fields`` where the columnar plan spelled it in SQL (every field written,
    #: :mod:`sync.planning.canonical`), else None; ``set_fields`` is then never changed (read-only, shared)
    fields_text: str | None = field(default=None, compare=False, repr=False)

    @property
    def needs_upsert(self) -> bool:
        return self.create or bool(self.set_fields)

    @property
    def clears_only(self) -> bool:
        """Nothing but fields emptied on a contact the ledger holds (``retire_fields``' clear): never a reason to
        create him, so a destination whose upsert creates any address it lacks sends it only where he is
        (Unisender, with no bulk lookup: only where its import could create him without consent)."""
        return (not self.create and not self.add_tags and bool(self.set_fields)
                and all(v is None for v in self.set_fields.values()))


@dataclass(frozen=True, slots=True)
class OwnerChange:
    """A contact whose customer id changes from ``was`` to ``customer_id``: a shared address (a family account)
    whose first customer in planning order is another, or a customer merged into another id or renumbered.
    Recorded in the ledger before any ESP call (the webhook resync asks it whose the address is); when the
    plan has nothing else for the contact (its tags and fields are those pushed, or it is skipped), that is
    all the apply does for it (no ESP call)."""

    key: str
    customer_id: str
    was: str


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
    #: not-existing (no tags, no fields) so the next plan creates it again (consent rules apply) instead of failing
    #: forever. Also on a success: a removal for a contact deleted in the ESP is done (he carries nothing) and he
    #: is forgotten all the same, not kept as a member holding what was pushed before
    missing: bool = False
    #: a failure the ESP gave for THIS contact, naming him, that the next run will meet again (he unsubscribed or
    #: awaits confirmation, his row or address rejected): a lost tag's re-add it refuses ends the contact's wait
    #: (Ledger.refused_lost). Set only where the ESP names the contact (an add skipped because the ESP refused his
    #: upsert or row by name too); any other failure (a timeout, an answer that could not be read or believed, a
    #: whole call refused, an add skipped because the upsert failed so) leaves it False: the outcome is unknown or
    #: not his, and he keeps waiting for the tag
    refused: bool = False
    #: not done, and never to be done by rfmsync: the contact's own choice in the ESP keeps him out (he unsubscribed
    #: from the list or from all mailings, the ESP blocked his address, Mailchimp holds it in a compliance state).
    #: Not a failure (not counted, not in ``failures``, the run not ``partial``): the ledger records it
    #: (:class:`sync.ledger.kept_out.KeptOutLog`) and the next plans leave that operation out, whatever the source
    #: says of his consent later (rfmsync never resubscribes). Set with ``ok=False`` (and ``refused``)
    kept_out: bool = False
    #: a create (``upsert`` of a change with ``create``) that found the contact already in the destination, left
    #: alone (Mailchimp: ``ERROR_CONTACT_EXISTS``, or not listed in ``new_members``): his status is his own, so he
    #: is not recorded as subscribed by rfmsync (``subscribed_by_us``). Set with ``ok=True``; only where the ESP
    #: says so (SendGrid's and Unisender's answers cannot tell). Not set for a create Mailchimp answered
    #: ``ERROR_CONTACT_EXISTS`` after the retry sent it again because an earlier attempt's answer was lost, when the
    #: members' read shows that attempt created him (:mod:`sync.destinations.mailchimp_resent`): created, recorded
    existed: bool = False


class CallResults(Sequence[ItemResult]):
    """One API call's item results in columns: ``ok`` holds ``(op, keys)`` groups of operations that succeeded
    (one key list per operation name, no object per item), ``other`` the rest as :class:`ItemResult`.

    It is a ``Sequence[ItemResult]`` like any list of results (iterating builds them: the groups first, then
    ``other``), so every consumer works unchanged; the apply's own consumers (the state fold, the outcome
    writer, the counts) read the columns instead (:func:`failed_results`, :func:`ok_pairs`). A destination
    answers a call that did everything with one of these: a million contacts are a few thousand objects, not
    two million."""

    __slots__ = ("ok", "other", "_n")

    def __init__(self, ok: Sequence[tuple[str, Sequence[str]]] = (), other: Sequence[ItemResult] = ()) -> None:
        self.ok, self.other = ok, other
        self._n = sum(len(keys) for _, keys in ok) + len(other)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[ItemResult]:
        for op, keys in self.ok:
            for key in keys:
                yield ItemResult(key, op, True)
        yield from self.other

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        return list(self)[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"CallResults({list(self)!r})"

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.other if not r.ok and not r.kept_out]


def failed_results(results: Iterable[ItemResult]) -> list[ItemResult]:
    """The results that are failures (a :class:`CallResults` answers from its ``other`` column alone); an operation
    the contact's own choice keeps out (:attr:`ItemResult.kept_out`) is none."""
    if isinstance(results, CallResults):
        return results.failed
    return [r for r in results if not r.ok and not r.kept_out]


def kept_out_results(results: Iterable[ItemResult]) -> list[ItemResult]:
    """The results the contact's own choice in the ESP keeps out (:attr:`ItemResult.kept_out`)."""
    return [r for r in (results.other if isinstance(results, CallResults) else results) if r.kept_out]


def ok_pairs(results: Iterable[ItemResult]) -> Iterator[tuple[str, str]]:
    """``(key, op)`` of the results that succeeded."""
    if isinstance(results, CallResults):
        for op, keys in results.ok:
            for key in keys:
                yield key, op
        results = results.other
    for r in results:
        if r.ok:
            yield r.key, r.op


OnResults = Callable[[Sequence[ItemResult]], None]


def fold(name: str) -> str:
    """A tag/list or field name as rfmsync compares names (an ESP that folds case holds ``VIP`` and ``vip `` as
    one): spaces around it stripped, case folded."""
    return name.strip().casefold()
