"""Recording an apply's outcomes off the apply's thread: group commit into the ledger.

The apply reports each call's item results as the call completes; :class:`StateFold` folds them into the
contacts' pushed states (a contact's state once its last operation of the run answered), and
:class:`OutcomeWriter` takes the states and the results: one writer thread commits everything that arrived while
its previous write ran, in bulk statements (SQLite: ``INSERT .. SELECT`` over multi-row ``VALUES``; PostgreSQL:
``COPY`` into a temporary table, then one ``INSERT .. SELECT``). Under load the groups grow, so a million
contacts are a few dozen writes rather than thousands, and the ESP calls never wait for the ledger; a process
killed mid-run loses at most the group being written and the states still held (the next run plans those items
again: every ESP operation rfmsync makes is idempotent, or checked first where it is not: Unisender's
``subscribe`` reads the contact and does not invite him again if he is already on the lists).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Iterable, Mapping, Protocol, Sequence

from .ledger.kept_out import BY_KEY_LIMIT
from .model import CallResults, ContactChange, ItemResult, PushedState, kept_out_results, ok_pairs

log = logging.getLogger(__name__)


class OutcomeLedger(Protocol):
    def save_states(self, destination: str, run_id: int | None, states: Iterable[PushedState]) -> int: ...

    def record_results(self, destination: str, run_id: int | None, results: Iterable[ItemResult]) -> None: ...

    def refused_lost(self, destination: str, pairs: Iterable[tuple[str, str]]) -> int: ...

    def record_kept_out(self, destination: str, run_id: int | None, results: Iterable[ItemResult]) -> int: ...

    def has_kept_out(self, destination: str) -> bool: ...
    def kept_out_ops(self, destination: str, keys: Iterable[str] | None = None) -> Mapping[str, frozenset[str]]: ...
    def forget_kept_out(self, destination: str, keys_ops: Iterable[tuple[str, str]]) -> int: ...


#: a small group waits this long for more outcomes before it is written: each transaction has a fixed cost (the
#: BEGIN and revision, the commit, the failures check: ~2.8 ms of the writer's CPU in a busy apply), and a writer
#: that keeps up writes a transaction per call (226 for 200 k contacts; ~85 with a 50 ms wait, ~20 with 250 ms:
#: 15 % less writer CPU a row). A process killed meanwhile loses the outcomes of that long (re-planned: every
#: operation is idempotent or checked first, see the module docstring); the apply's end does not wait it out (``close`` writes at once), but it waits for
#: the outcomes held back, so a group waits at most LINGER_SHARE of the time the writer has run: a short apply
#: (a 1 %-moved sync, a webhook's resync) writes as it goes and is not left with its last quarter second to write
LINGER_SECONDS = 0.25
LINGER_ROWS = 25_000
LINGER_SHARE = 0.1


class OutcomeWriter:
    """``submit(states, results)`` from the apply; ``close()`` writes what is left and re-raises a write error.

    ``busy_seconds``: wall time spent writing (on a busy interpreter it includes waiting for the interpreter
    lock while the calls' threads run, so it overstates what the ledger costs); ``cpu_seconds``: the writer
    thread's CPU time in those writes (the ledger's own work, the database's included); ``wait_seconds``: time
    :meth:`close` waited for the last writes (what the ledger added to the apply's wall time)."""

    def __init__(self, ledger: OutcomeLedger, destination: str, run_id: int | None, max_rows: int = 100_000,
                 linger: float = LINGER_SECONDS, min_rows: int = LINGER_ROWS,
                 linger_share: float | None = LINGER_SHARE) -> None:
        """``linger``: a group of fewer than ``min_rows`` results waits up to this long (from its first
        outcome) for more before it is written (fewer, larger transactions; ``close`` ends the wait), and at most
        ``linger_share`` of the time since this writer started (None: no such bound)."""
        self._ledger, self._destination, self._run_id = ledger, destination, run_id
        self._max_rows, self._linger, self._min_rows = max_rows, linger, min_rows
        self._share, self._started = linger_share, time.monotonic()
        self._pending: queue.SimpleQueue[tuple[Sequence[PushedState], Sequence[ItemResult]] | None] = \
            queue.SimpleQueue()
        self._error: BaseException | None = None
        self.busy_seconds = self.cpu_seconds = self.wait_seconds = 0.0
        self.transactions = 0
        self._kept: bool | None = None  # any operation kept out of the destination (asked at the first success)
        self._all_kept: dict[str, set[str]] | None = None
        self._thread = threading.Thread(target=self._run, name=f"rfmsync-outcomes-{destination}", daemon=True)
        self._thread.start()

    def submit(self, states: Sequence[PushedState], results: Sequence[ItemResult]) -> None:
        if self._error is not None:
            raise self._error
        self._pending.put((states, results))

    def close(self) -> None:
        t0 = time.perf_counter()
        self._pending.put(None)
        self._thread.join()
        self.wait_seconds = time.perf_counter() - t0
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            states: dict[str, PushedState] = {}
            ok: list[tuple[str, Sequence[str]]] = []  # the results in columns (sync.model.CallResults)
            other: list[ItemResult] = []
            rows = 0
            stop = False
            now = time.monotonic()
            deadline = now + (self._linger if self._share is None else
                              min(self._linger, (now - self._started) * self._share))
            while True:
                for s in item[0]:
                    states[s.key] = s  # a later outcome of the same contact supersedes the earlier one
                got = item[1]
                if isinstance(got, CallResults):
                    ok += got.ok
                    other += got.other
                else:
                    other += got
                rows += len(got)
                if rows >= self._max_rows:
                    break
                wait = deadline - time.monotonic() if rows < self._min_rows else 0.0
                try:
                    item = self._pending.get(timeout=wait) if wait > 0 else self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
            if self._error is None:
                self._write(states, CallResults(ok, other))
            if stop:
                return

    def _write(self, states: dict[str, PushedState], results: CallResults) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            if states:
                self._ledger.save_states(self._destination, self._run_id, states.values())
            self._ledger.record_results(self._destination, self._run_id, results)
            self._forget_kept_out(results)
            kept = kept_out_results(results)
            if kept:  # his own choice in the ESP: recorded, not a failure; the next plans leave it out
                self._ledger.record_kept_out(self._destination, self._run_id, kept)
            refused = refused_adds(results)
            if refused:  # a tag the ESP lost that it refuses to take back: the contact waits no longer
                self._ledger.refused_lost(self._destination, refused)
            self.transactions += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the apply's thread at its next submit or close
            log.debug("outcomes of %s: write failed: %s", self._destination, exc)
            self._error = exc
        finally:
            self.busy_seconds += time.perf_counter() - t0
            self.cpu_seconds += time.thread_time() - c0

    def _forget_kept_out(self, results: CallResults) -> None:
        """Delete the ``kept_out`` rows of the operations that succeeded here (he came back himself), so a later add
        is planned again. Usually none: one look-up per apply; else by key (a large apply: all, read once)."""
        if self._kept is None:
            self._kept = self._ledger.has_kept_out(self._destination)
        if not self._kept:
            return
        pairs = list(ok_pairs(results))
        keys = {k for k, _ in pairs}
        if self._all_kept is None and len(keys) > BY_KEY_LIMIT:
            self._all_kept = {k: set(ops) for k, ops in self._ledger.kept_out_ops(self._destination).items()}
        kept = self._all_kept if self._all_kept is not None else self._ledger.kept_out_ops(self._destination, keys)
        done = [(k, op) for k, op in pairs if op in kept.get(k, ())]
        self._ledger.forget_kept_out(self._destination, done)  # (a cached one forgotten twice deletes nothing)

def refused_adds(results: CallResults) -> list[tuple[str, str]]:
    """``(key, tag)`` of the tag adds the ESP refused that contact for good (:attr:`~sync.model.ItemResult.refused`);
    any other failed add keeps the contact waiting. An add his own choice keeps out (not a failure) is one."""
    return [(r.key, r.op[4:]) for r in [*results.failed, *kept_out_results(results)]
            if r.op.startswith("tag+") and (r.refused or r.kept_out)]


_NO_TAGS: frozenset[str] = frozenset()
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

    def __call__(self, results: Iterable[ItemResult]) -> list[PushedState]:
        if isinstance(results, CallResults):
            ready: list[tuple[str, list]] = []
            for op, keys in results.ok:
                self._fold_ok(op, keys, ready)
            self._fold(results.other, ready)
        else:
            ready = []
            self._fold(results, ready)
        released = []
        for key, slot in ready:  # :meth:`_release`, inlined: a million contacts pass here
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

    def rest(self) -> list[PushedState]:
        """The states still held (a contact with operations that have no outcome yet)."""
        if not self._held:  # the usual end of an apply: not a look at each of a million slots
            return []
        rest = [self._release(key, slot) for key, slot in self._slots.items() if slot[6] == 1]
        self._held = 0
        return rest


__all__ = ["OutcomeWriter", "StateFold"]
