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
from typing import Any, Collection, Iterable, Mapping, Protocol, Sequence

from .ledger.kept_out import BY_KEY_LIMIT
from .ledger.state_rows import StateRow
from .model import CallResults, ContactChange, ItemResult, PushedState, kept_out_results, ok_pairs
from .state_fold import StateFold, _pushed_state  # noqa: F401  (imported from here before)

log = logging.getLogger(__name__)


class OutcomeLedger(Protocol):
    def save_states(self, destination: str, run_id: int | None, states: Iterable[PushedState],
                    subscribed: tuple[Sequence[str], Sequence[str]] = ((), ())) -> int: ...

    def save_rows(self, destination: str, run_id: int | None, rows: Mapping[str, StateRow],
                  subscribed: tuple[Sequence[str], Sequence[str]] = ((), ())) -> int: ...

    def record_results(self, destination: str, run_id: int | None, results: Iterable[ItemResult]) -> None: ...

    def refused_lost(self, destination: str, pairs: Iterable[tuple[str, str]]) -> int: ...

    def record_kept_out(self, destination: str, run_id: int | None, results: Iterable[ItemResult]) -> int: ...

    def has_kept_out(self, destination: str) -> bool: ...
    def kept_out_ops(self, destination: str, keys: Iterable[str] | None = None) -> Mapping[str, frozenset[str]]: ...
    def forget_kept_out(self, destination: str, keys_ops: Iterable[tuple[str, str]]) -> int: ...
    def record_subscribed(self, destination: str, run_id: int | None, keys: Iterable[str]) -> int: ...
    def forget_subscribed(self, destination: str, keys: Iterable[str]) -> int: ...
    def has_subscribed(self, destination: str) -> bool: ...


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
                 linger_share: float | None = LINGER_SHARE, rows: bool = False,
                 changes: Mapping[str, ContactChange] | None = None) -> None:
        """``linger``: a group of fewer than ``min_rows`` results waits up to this long (from its first
        outcome) for more before it is written (fewer, larger transactions; ``close`` ends the wait), and at most
        ``linger_share`` of the time since this writer started (None: no such bound). ``rows``: ``submit`` takes
        the ledger's rows by key (:meth:`StateFold.rows`), not states, and ``save_rows`` writes them.
        ``changes``: the plan's changes by key: a create whose upsert succeeded is recorded as rfmsync's
        subscribing him when its status is ``subscribed`` (``subscribed_by_us``), else forgotten there."""
        self._ledger, self._destination, self._run_id = ledger, destination, run_id
        self._max_rows, self._linger, self._min_rows = max_rows, linger, min_rows
        self._share, self._started, self._rows = linger_share, time.monotonic(), rows
        self._changes = changes or {}
        self._any_subscribed: bool | None = None  # any contact recorded created subscribed (asked once)
        #: created subscribed, his row not written yet: recorded on it when it is (his create answers a write group
        #: or more before his tag call releases his row), in the table at the end for any left (:meth:`_carry`)
        self._carried: set[str] = set()
        # (states, results, the creates among them: :meth:`_created`), or None: closed
        self._pending: queue.SimpleQueue[tuple[Any, Sequence[ItemResult], tuple[list[str], list[str]]] | None] = \
            queue.SimpleQueue()
        self._error: BaseException | None = None
        self.busy_seconds = self.cpu_seconds = self.wait_seconds = 0.0
        self.transactions = 0
        self._kept: bool | None = None  # any operation kept out of the destination (asked at the first success)
        self._all_kept: dict[str, set[str]] | None = None
        self._thread = threading.Thread(target=self._run, name=f"rfmsync-outcomes-{destination}", daemon=True)
        self._thread.start()

    def submit(self, states: Sequence[PushedState] | Mapping[str, StateRow], results: Sequence[ItemResult]) -> None:
        if self._error is not None:
            raise self._error
        # which creates to record is worked out here, in the caller's thread: the writer's is the ledger's writes
        self._pending.put((states, results, self._created(results)))

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
            if item is None:  # closed while idle
                self._end()
                return
            states: dict[str, Any] = {}  # PushedStates, or rows (``rows``), by key
            ok: list[tuple[str, Sequence[str]]] = []  # the results in columns (sync.model.CallResults)
            other: list[ItemResult] = []
            yes: list[str] = []  # creates made subscribed, and made under another status (:meth:`_created`)
            no: list[str] = []
            rows = 0
            stop = False
            now = time.monotonic()
            deadline = now + (self._linger if self._share is None else
                              min(self._linger, (now - self._started) * self._share))
            while True:
                states.update(item[0] if self._rows else ((s.key, s) for s in item[0]))  # a contact's last wins
                got = item[1]
                yes += item[2][0]
                no += item[2][1]
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
                self._write(states, CallResults(ok, other), yes, no)
            if stop:
                self._end()
                return

    def _end(self) -> None:
        """The apply closed the writer: the records carried whose row never came, in the table (:meth:`_carry`)."""
        if self._carried and self._error is None:
            self._write({}, CallResults([], []), [], [], final=True)

    def _write(self, states: dict[str, Any], results: CallResults, yes: list[str], no: list[str],
               final: bool = False) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            gone = self._forgotten(yes, no)  # written with the states (one transaction) when there are any
            yes = self._carry(yes, states, final)
            mine = {"subscribed": (yes, gone)} if yes or gone else {}
            if states and self._rows:
                self._ledger.save_rows(self._destination, self._run_id, states, **mine)
            elif states:
                self._ledger.save_states(self._destination, self._run_id, states.values(), **mine)
            elif yes or gone:
                if yes:  # (the end's: in the table)
                    self._ledger.record_subscribed(self._destination, self._run_id, yes)
                    self._carried.clear()
                if gone:
                    self._ledger.forget_subscribed(self._destination, gone)
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

    def _carry(self, yes: list[str], states: Mapping[str, Any], final: bool) -> Collection[str]:
        """The records this group writes: those carried (``yes`` now, and earlier groups') whose row it writes, all
        of them on those rows (no second table's insert apiece: :mod:`sync.ledger.subscribed`); the others are
        carried on to their row's group. The ``final`` group (no rows) writes all that are left, in the table. A
        process killed meanwhile loses them with their rows, not their creates: those are in doubt (the run's
        ``in_flight`` row), the next run creates them again and records them (SendGrid and Unisender record every
        create that succeeds; Mailchimp answers "already a member" and the next apply checks whether the killed
        run's send created him: :func:`sync.planning.doubt.earlier_sends`)."""
        carried = self._carried
        if yes:
            carried.update(yes)
        if not carried:
            return []
        if final:
            return list(carried)
        if not states:
            return []
        mine = carried.intersection(states)
        carried.difference_update(mine)
        return mine  # (a set: the save meets it with its rows' keys from its side, not theirs)

    def _created(self, results: Sequence[ItemResult]) -> tuple[list[str], list[str]]:
        """The creates that succeeded in ``results``: to record as rfmsync's subscribing him (status ``subscribed``),
        and made under another status (a contact the ESP lost and rfmsync created again: :meth:`_forgotten`)."""
        if not isinstance(results, CallResults):
            results = CallResults([], list(results))
        yes: list[str] = []
        other: list[str] = []
        # a create that found him already there (Mailchimp says so): his status is his own, neither recorded nor
        # forgotten (SendGrid and Unisender cannot tell: docs/sync.md)
        existed = {r.key for r in results.other if r.existed and r.ok and r.op == "upsert"}
        get = self._changes.get
        # only the upserts' keys (a first sync's tag groups are as many again), by column: no (key, op) pair each
        upserts = [keys for op, keys in results.ok if op == "upsert"]
        upserts.append([r.key for r in results.other if r.ok and r.op == "upsert"])
        for keys in upserts:
            for c in map(get, keys):
                if c is not None and c.create and c.key not in existed:
                    (yes if c.status_if_new == "subscribed" else other).append(c.key)
        return yes, other

    def _forgotten(self, yes: list[str], other: list[str]) -> list[str]:
        """Of the creates made under another status, those to forget as rfmsync's subscribing them: all of them once
        any contact is recorded (asked of the ledger once; usually none to forget: a first sync's creates ask
        nothing)."""
        if yes:
            self._any_subscribed = True
        if other and self._any_subscribed is None:
            self._any_subscribed = self._ledger.has_subscribed(self._destination)
        return other if other and self._any_subscribed else []

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


__all__ = ["OutcomeWriter", "StateFold"]
