"""The apply's outcomes folded into the contacts' pushed states (:class:`StateFold`): a contact's state once its
last operation of the run answered, as :class:`~sync.model.PushedState` objects or as the ledger's own rows
(:meth:`StateFold.rows`, for :meth:`sync.ledger.Ledger.save_rows`). Recorded by :class:`sync.outcomes.OutcomeWriter`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .ledger.state_rows import StateRow, tags_json
from .model import CallResults, ContactChange, ItemResult, PushedState

_NO_TAGS: frozenset[str] = frozenset()
#: the error of an operation the destination's client returned without reporting on (:meth:`StateFold.unanswered`)
NO_OUTCOME = "no outcome: the destination's client ended without reporting on it (not done: planned again)"
_new, _set = object.__new__, object.__setattr__


def _pushed_state(key: str, customer_id: str | None, tags: frozenset[str], fields: Mapping[str, Any],
                  exists: bool, fields_text: str | None = None) -> PushedState:
    """``PushedState(key, customer_id, tags, fields, exists, fields_text)``, the same object made at half the cost:
    a frozen dataclass's ``__init__`` sets each field with its own ``object.__setattr__`` call (0.7 of the fold's
    1.35 µs a contact); this sets the instance's ``__dict__`` in one (tested equal to the constructor's)."""
    state = _new(PushedState)
    _set(state, "__dict__", {"key": key, "customer_id": customer_id, "tags": tags, "fields": fields,
                             "exists": exists, "fields_text": fields_text})
    return state


def _operations(c: ContactChange) -> int:
    """How many operations a change makes: its upsert (when it needs one) and one a tag."""
    return (1 if c.create or c.set_fields else 0) + len(c.add_tags) + len(c.remove_tags)


class StateFold:
    """Folds an apply's item results into the pushed state of its contacts; gives each contact's new state
    once the last of its operations in this apply has an outcome.

    The states are what :func:`sync.planning.plan.apply_results_to_state` gives (tested against it), at the cost
    a million contacts can afford: a contact's state is worked on in its slot and built once, when it is released,
    so its upsert and its tag calls (which answer close together: the Mailchimp apply starts a tag call as soon
    as its contacts' upserts answered) become one ledger row, not one per operation; an unchanged fields
    mapping is shared, not copied, and so is an update that holds every field pushed before (merged, it would
    be itself: the ledger then stores the plan's text of it); tag sets are looked up among the few distinct
    ones. A call's results given as :class:`~sync.model.CallResults` are folded a column at a time: one loop
    per operation over its keys, no item object read.

    ``fold(results)`` gives the states to write now; :meth:`rest` the ones still held (the apply writes them
    when it ends, however it ends). A process killed meanwhile loses the held states: the next run plans those
    contacts again, and every operation rfmsync makes is idempotent (a create of a contact that exists leaves
    it as it is and writes its fields; Unisender's ``subscribe``, which is not, reads the contact first). Failures are not held: the caller records them at once.

    :attr:`done`: contacts done so far (each of their operations has an outcome, or one of them failed: the
    rest are not attempted), for the progress display."""

    def __init__(self, state: Mapping[str, PushedState], changes: Mapping[str, ContactChange]) -> None:
        """``state``: the pushed state of the contacts before the apply (read, never changed: the states the
        fold gives are the new ones)."""
        self.state = state
        self._changes = changes
        # one slot per contact, the only large dict an operation's outcome looks up (a million contacts' dicts
        # are read from memory, not cache): [operations left, its change, customer_id, tags, fields, exists,
        # phase]; phase 0: not touched (the values are read from ``state`` when it is), 1: held, 2: released.
        # A slot is made at its contact's first outcome (:meth:`_slot`), while the calls are out: building a
        # million of them here (~0.5 s) held back the apply's first call.
        self._slots: dict[str, list] = {}
        self._tag_sets: dict[tuple[frozenset[str], str], frozenset[str]] = {}
        self._tag_texts: dict[frozenset[str], str] = {}  # the ledger's text of each tag set (:meth:`rows`)
        self._failed: set[str] = set()  # contacts with a failed operation (done at their first failure)
        self._held = 0  # slots in phase 1 (held): :meth:`rest` has nothing to look for when there are none
        self.done = sum(1 for c in changes.values()  # _operations(c) == 0, inline (a million changes)
                        if not (c.create or c.set_fields or c.add_tags or c.remove_tags))

    def _tags(self, tags: frozenset[str], op: str) -> frozenset[str]:
        found = self._tag_sets.get((tags, op))
        if found is None:
            found = self._tag_sets[(tags, op)] = tags | {op[4:]} if op[3] == "+" else tags - {op[4:]}
        return found

    def _slot(self, key: str) -> list:
        """The slot of a contact at its first outcome (a contact the plan does not hold: its results still
        count)."""
        c = self._changes.get(key)
        slot = self._slots[key] = [0, None, None, None, None, False, 0] if c is None else \
            [_operations(c), c, None, None, None, False, 0]
        return slot

    def _hold(self, key: str, slot: list) -> None:
        self._held += 1
        if not slot[6]:
            prev = self.state.get(key)
            c = slot[1]
            slot[2:6] = [c.customer_id if c else None, _NO_TAGS, {}, False] if prev is None else \
                [prev.customer_id, prev.tags, prev.fields, prev.exists]
        slot[6] = 1

    def _ready(self, results: Iterable[ItemResult]) -> list[tuple[str, list]]:
        """Folds ``results``; gives the slots they touched (those whose operations all answered are released)."""
        ready: list[tuple[str, list]] = []
        if isinstance(results, CallResults):
            for op, keys in results.ok:
                self._fold_ok(op, keys, ready)
            self._fold(results.other, ready)
        else:
            self._fold(results, ready)
        return ready

    def __call__(self, results: Iterable[ItemResult]) -> list[PushedState]:
        released = []
        for key, slot in self._ready(results):  # :meth:`_release`, inlined: a million contacts pass here
            if slot[6] == 1 and not slot[0]:
                slot[6] = 2
                c, fields = slot[1], slot[4]
                state = _new(PushedState)
                _set(state, "__dict__", {"key": key, "customer_id": slot[2] or None, "tags": slot[3], "fields": fields,
                                         "exists": slot[5], "fields_text": c.fields_text if c is not None and
                                         fields is c.set_fields else None})
                released.append(state)
        self._held -= len(released)
        return released

    def rows(self, results: Iterable[ItemResult]) -> dict[str, StateRow]:
        """What :meth:`__call__` gives, as the ledger's rows by key (``PushedStates.save_rows``): the tags' text, the
        plan's text of the fields (their mapping where there is none), 1 or 0; no state object for a contact."""
        rows, texts = {}, self._tag_texts
        for key, slot in self._ready(results):  # as in __call__, the row built instead of the state
            if slot[6] == 1 and not slot[0]:
                slot[6] = 2
                c, tags, fields = slot[1], slot[3], slot[4]
                text = c.fields_text if c is not None and fields is c.set_fields else None
                rows[key] = (key, slot[2] or None, texts.get(tags) or texts.setdefault(tags, tags_json(tags)),
                             fields if text is None else text, 1 if slot[5] else 0)
        self._held -= len(rows)
        return rows

    def _fold_ok(self, op: str, keys: Iterable[str], ready: list[tuple[str, list]]) -> None:
        """Successes of one operation: the loop of :meth:`_fold` with what ``op`` decides taken out of it, and a
        contact's first outcome (no slot yet: the usual case of its upsert) made into its slot at once, held."""
        slots, failed, changes, state = self._slots, self._failed, self._changes, self.state
        upsert, add, remove = op == "upsert", op.startswith("tag+"), op.startswith("tag-")
        tags = self._tags(_NO_TAGS, op) if add or remove else _NO_TAGS  # the usual tag set after ``op``
        done = held = 0
        try:  # counted however the loop ends (an error, a Ctrl-C): rest() looks for held slots only when
            # the count says some are left
            for key in keys:
                slot = slots.get(key)
                if slot is None:
                    c = changes.get(key)
                    if c is not None:  # what _slot, _hold and the loop below do to a new slot, in one go
                        n = (1 if c.create or c.set_fields else 0) + len(c.add_tags) + len(c.remove_tags)
                        if n:
                            n -= 1
                            if not n:  # a key without a slot has no failure yet
                                done += 1
                        prev = state.get(key)
                        if prev is None:
                            tagged, fields, exists = _NO_TAGS, {}, False
                        else:
                            tagged, fields, exists = prev.tags, prev.fields, prev.exists
                        if upsert:
                            new = c.set_fields
                            if new:
                                fields = {**fields, **new} if fields and not fields.keys() <= new.keys() else new
                            exists = True
                        elif add or remove:
                            tagged = tags if tagged is _NO_TAGS else self._tags(tagged, op)
                            if add:
                                exists = True
                        held += 1  # before the slot: a count too high only makes rest() look
                        slot = slots[key] = [n, c, c.customer_id, tagged, fields, exists, 1]
                        if not n:
                            ready.append((key, slot))
                        continue
                    slot = self._slot(key)
                n = slot[0]
                if n:
                    slot[0] = n = n - 1
                    if not n and (not failed or key not in failed):
                        done += 1
                if not n:
                    ready.append((key, slot))
                if slot[6] != 1:
                    self._hold(key, slot)
                c = slot[1]
                if upsert:
                    if c is not None:
                        new = c.set_fields
                        if new:  # merged into the fields pushed before, unless the update holds all their keys
                            old = slot[4]
                            slot[4] = {**old, **new} if old and not old.keys() <= new.keys() else new  # shared
                        slot[5] = True
                elif add or remove:
                    slot[3] = tags if slot[3] is _NO_TAGS else self._tags(slot[3], op)
                    if add:
                        slot[5] = True
                if c is not None:
                    slot[2] = c.customer_id
        finally:
            self.done += done
            self._held += held

    def _fold(self, results: Iterable[ItemResult], ready: list[tuple[str, list]]) -> None:
        slots, failed = self._slots, self._failed
        for r in results:
            key = r.key
            slot = slots.get(key) or self._slot(key)
            ready.append((key, slot))
            n = slot[0]
            if n:
                slot[0] = n - 1
                if key not in failed and (n == 1 or not r.ok):
                    self.done += 1
            if not r.ok:
                failed.add(key)
                if r.missing and (slot[6] or key in self.state):  # the ESP does not hold it: forgotten,
                    if slot[6] != 1:  # so the next plan creates it again
                        self._hold(key, slot)
                    slot[3:6] = [_NO_TAGS, {}, False]
                continue
            if slot[6] != 1:
                self._hold(key, slot)
            c = slot[1]
            op = r.op
            if op == "upsert":
                if c is not None:
                    new = c.set_fields
                    if new:  # as in _fold_ok
                        old = slot[4]
                        slot[4] = {**old, **new} if old and not old.keys() <= new.keys() else new
                    slot[5] = True
            elif op.startswith("tag+"):
                slot[3], slot[5] = self._tags(slot[3], op), True
            elif op.startswith("tag-"):
                slot[3] = self._tags(slot[3], op)
            if r.missing:  # done, and the ESP does not hold it (a removal for a contact deleted there): forgotten
                slot[3:6] = [_NO_TAGS, {}, False]
            if c is not None:
                slot[2] = c.customer_id

    def _release(self, key: str, slot: list) -> PushedState:
        slot[6] = 2
        c, fields = slot[1], slot[4]
        # the plan's text of the fields only where they are that change's own mapping (the upsert answered, and
        # nothing was pushed before or the update holds every key pushed before: the merge would be the update
        # itself): not merged with other older fields, not the old ones kept after a failure
        text = c.fields_text if c is not None and fields is c.set_fields else None
        return _pushed_state(key, slot[2] or None, slot[3], fields, slot[5], text)

    def unanswered(self) -> list[ItemResult]:
        """A failure for each planned operation that has no outcome (a client that returned without reporting on
        a batch): never counted as done. A held contact's answered operations are read off its slot (the tags it
        now holds; its upsert is what is left of its count after its tags)."""
        out: list[ItemResult] = []
        for key, c in self._changes.items():
            slot = self._slots.get(key)
            if key in self._failed or (slot is not None and not slot[0]) or not _operations(c):
                continue
            tags = slot[3] if slot is not None and slot[6] == 1 else None  # None: nothing answered
            ops = [f"tag+{t}" for t in c.add_tags if tags is None or t not in tags] + \
                  [f"tag-{t}" for t in c.remove_tags if tags is None or t in tags]
            if (c.create or c.set_fields) and (slot is None or slot[0] > len(ops)):
                ops.insert(0, "upsert")
            out += [ItemResult(key, op, False, NO_OUTCOME) for op in ops]
        return out

    def rest(self) -> list[PushedState]:
        """The states still held (a contact with operations that have no outcome yet)."""
        if not self._held:  # the usual end of an apply: not a look at each of a million slots
            return []
        rest = [self._release(key, slot) for key, slot in self._slots.items() if slot[6] == 1]
        self._held = 0
        return rest

    def close(self) -> None:
        """The apply is over (its rest written): each contact's slot let go now. An apply holds the cyclic collector
        off (:mod:`sync.gc_pause`); a million slots still alive when it resumes are one more walk of its young
        generation (~0.12 CPU s at 1 M contacts, after the last call). :attr:`done` stays."""
        self._slots = {}
        self._held = 0

    def rest_rows(self) -> dict[str, StateRow]:
        """:meth:`rest` as the ledger's rows by key (:meth:`rows`)."""
        texts = self._tag_texts
        return {s.key: (s.key, s.customer_id, texts.get(s.tags) or texts.setdefault(s.tags, tags_json(s.tags)),
                        s.fields if s.fields_text is None else s.fields_text, int(s.exists)) for s in self.rest()}
