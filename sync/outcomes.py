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
from typing import Iterable, Protocol, Sequence

from .model import ItemResult, PushedState

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


__all__ = ["OutcomeWriter"]
