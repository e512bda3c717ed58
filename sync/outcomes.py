"""Recording an apply's outcomes off the apply's thread: group commit into the ledger.

The apply reports each call's item results as the call completes; :class:`OutcomeWriter` takes them (the folded
pushed states and the results) and one writer thread commits everything that arrived while its previous
transaction ran, in one transaction (bulk ``executemany`` / ``INSERT .. SELECT``). Under load the groups grow,
so a million contacts are a few dozen transactions rather than thousands, and the ESP calls never wait for the
ledger; a process killed mid-run loses at most the group being written (the next run plans those items again:
every ESP operation rfmsync makes is idempotent).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Iterable, Mapping, Protocol, Sequence

from .model import ContactChange, ItemResult, PushedState

log = logging.getLogger(__name__)


class OutcomeLedger(Protocol):
    def save_states(self, destination: str, run_id: int | None, states: Iterable[PushedState]) -> int: ...

    def record_results(self, destination: str, run_id: int | None, results: Iterable[ItemResult]) -> None: ...


class OutcomeWriter:
    """``submit(states, results)`` from the apply; ``close()`` writes what is left and re-raises a write error.

    ``busy_seconds``: time spent writing; ``wait_seconds``: time :meth:`close` waited for the last writes (what
    the ledger added to the apply's wall time)."""

    def __init__(self, ledger: OutcomeLedger, destination: str, run_id: int | None, max_rows: int = 100_000
                 ) -> None:
        self._ledger, self._destination, self._run_id = ledger, destination, run_id
        self._max_rows = max_rows
        self._pending: queue.SimpleQueue[tuple[Sequence[PushedState], Sequence[ItemResult]] | None] = \
            queue.SimpleQueue()
        self._error: BaseException | None = None
        self.busy_seconds = self.wait_seconds = 0.0
        self.transactions = 0
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
            results: list[ItemResult] = []
            stop = False
            while True:
                for s in item[0]:
                    states[s.key] = s  # a later outcome of the same contact supersedes the earlier one
                results.extend(item[1])
                if len(results) >= self._max_rows:
                    break
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
            if self._error is None:
                self._write(states, results)
            if stop:
                return

    def _write(self, states: dict[str, PushedState], results: list[ItemResult]) -> None:
        t0 = time.perf_counter()
        try:
            if states:
                self._ledger.save_states(self._destination, self._run_id, states.values())
            self._ledger.record_results(self._destination, self._run_id, results)
            self.transactions += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the apply's thread at its next submit or close
            log.debug("outcomes of %s: write failed: %s", self._destination, exc)
            self._error = exc
        finally:
            self.busy_seconds += time.perf_counter() - t0


_NO_TAGS: frozenset[str] = frozenset()


class StateFold:
    """Folds item results into the pushed state of the plan's contacts, as they arrive; returns the new states.

    What :func:`sync.planning.plan.apply_results_to_state` does (same states out, tested against it), at the
    cost a million contacts can afford: an unchanged fields mapping is shared, not copied; a contact's tag set
    is looked up among the few distinct ones (``tags + one tag``) instead of rebuilt; one pass, no copies of
    the previous state."""

    def __init__(self, state: dict[str, PushedState], changes: Mapping[str, ContactChange]) -> None:
        self.state, self._changes = state, changes
        self._tag_sets: dict[tuple[frozenset[str], str], frozenset[str]] = {}

    def _tags(self, tags: frozenset[str], op: str) -> frozenset[str]:
        found = self._tag_sets.get((tags, op))
        if found is None:
            found = self._tag_sets[(tags, op)] = tags | {op[4:]} if op[3] == "+" else tags - {op[4:]}
        return found

    def __call__(self, results: Iterable[ItemResult]) -> list[PushedState]:
        state, changes = self.state, self._changes
        touched: dict[str, PushedState] = {}
        for r in results:
            key, prev = r.key, state.get(r.key)
            if not r.ok:
                if r.missing and prev is not None:  # the ESP does not hold it: forgotten, the next plan creates it
                    state[key] = touched[key] = PushedState(key, prev.customer_id, _NO_TAGS, {}, False)
                continue
            c = changes.get(key)
            if prev is None:
                customer_id, tags, fields, exists = (c.customer_id if c else None), _NO_TAGS, {}, False
            else:
                customer_id, tags, fields, exists = prev.customer_id, prev.tags, prev.fields, prev.exists
            op = r.op
            if op == "upsert":
                if c is not None:
                    if c.set_fields:
                        fields = {**fields, **c.set_fields} if fields else dict(c.set_fields)
                    exists = True
            elif op.startswith("tag+"):
                tags, exists = self._tags(tags, op), True
            elif op.startswith("tag-"):
                tags = self._tags(tags, op)
            state[key] = touched[key] = PushedState(key, (c.customer_id if c else customer_id) or None, tags,
                                                    fields, exists)
        return list(touched.values())


class LastOutcome:
    """Holds a contact's folded state back until the last of its operations in this apply has an outcome, so a
    contact is written once (its upsert and its tag calls answer close together: the Mailchimp apply starts a
    tag call as soon as its contacts' upserts answered) instead of once per operation.

    ``__call__(results, states)`` gives the states to write now; :meth:`rest` the ones still held (the apply
    writes them when it ends, however it ends). A process killed meanwhile loses the held states: the next run
    plans those contacts again, and every operation rfmsync makes is idempotent (a create of a contact that
    exists leaves it as it is and writes its fields). Failed items are recorded at once, never held."""

    def __init__(self, changes: Iterable[ContactChange]) -> None:
        self._left = {c.key: int(c.needs_upsert) + len(c.add_tags) + len(c.remove_tags) for c in changes}
        self._held: dict[str, PushedState] = {}

    def __call__(self, results: Sequence[ItemResult], states: Iterable[PushedState]) -> list[PushedState]:
        left, held = self._left, self._held
        for r in results:
            n = left.get(r.key)
            if n:
                left[r.key] = n - 1
        for s in states:
            held[s.key] = s
        return [held.pop(key) for key in {r.key: None for r in results} if key in held and not left.get(key)]

    def rest(self) -> list[PushedState]:
        out = list(self._held.values())
        self._held.clear()
        return out


__all__ = ["LastOutcome", "OutcomeWriter", "StateFold"]
