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


class EncodedFields(dict):
    """A fields mapping that carries its own text as the ledger stores it (``text``: the JSON object with sorted
    keys, compact, UTF-8; :func:`sync.ledger.state.fields_json`), so the ledger writes that text instead of
    encoding the fields again. The columnar plan spells it in DuckDB (:mod:`sync.planning.canonical`) for the
    contacts whose every field is written.

    The text belongs to exactly this value: the mapping is read-only, and anything made from it (a merge with
    the fields pushed before, ``dict(...)``, a copy) is a plain dict, which the ledger encodes as before. One
    made without a text (``dataclasses.asdict`` of a change rebuilds its mappings from their items) has ``text``
    None, and the ledger encodes it too."""

    __slots__ = ("text",)

    def __init__(self, items: Iterable[tuple[str, FieldValue]] = (), text: str | None = None) -> None:
        dict.__init__(self, items)
        self.text = text

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("EncodedFields is read-only: its text must stay the text of its values")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore

    def __reduce__(self) -> tuple[object, ...]:
        return EncodedFields, (list(self.items()), self.text)

    def copy(self) -> dict[str, FieldValue]:  # type: ignore[override]
        return dict(self)


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
        return [r for r in self.other if not r.ok]


def failed_results(results: Iterable[ItemResult]) -> list[ItemResult]:
    """The results that are failures (a :class:`CallResults` answers from its ``other`` column alone)."""
    if isinstance(results, CallResults):
        return results.failed
    return [r for r in results if not r.ok]


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
