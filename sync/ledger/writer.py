"""Group commit for the webhook intake: concurrent deliveries share one ledger transaction."""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Protocol, Sequence, runtime_checkable

from .queue import EventIntake

log = logging.getLogger(__name__)


@runtime_checkable
class SiblingIntake(EventIntake, Protocol):
    """An intake that can open its own connections to the same database (the :class:`sync.ledger.Ledger`)."""

    @property
    def dialect(self) -> str: ...

    def sibling(self, *, autocheckpoint: bool = True) -> SiblingIntake: ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


class EventWriter:
    """Group commit for the webhook intake: concurrent deliveries share one ledger transaction.

    ``submit(items)`` returns a future that resolves (to :meth:`EventIntake.enqueue_events`'s result)
    only after the transaction holding ``items`` has committed, so a 202 still means "durably queued".
    One daemon thread writes: it takes everything submitted while the previous commit ran (up to
    ``max_batch`` deliveries) and commits it at once. Under load that turns N commits, each waiting for
    the ledger's write lock, into one; with a single request in flight it adds no wait at all.
    """

    def __init__(self, ledger: EventIntake, max_batch: int = 256, checkpoint_seconds: float = 0.5) -> None:
        # SQLite: own connections that never checkpoint on commit (an fsync in a request's path); a
        # separate thread checkpoints instead, PASSIVE, so it blocks no writer.
        self._ledger: EventIntake = ledger.sibling(autocheckpoint=False) \
            if isinstance(ledger, SiblingIntake) and ledger.dialect == "sqlite" else ledger
        self._owns_ledger = self._ledger is not ledger
        self._checkpoint_seconds = checkpoint_seconds
        self._dirty = threading.Event()
        self._max_batch = max_batch
        self._pending: queue.SimpleQueue[tuple[Sequence[tuple[str, str, str]], Future[list[bool]]] | None] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    def submit(self, items: Sequence[tuple[str, str, str]]) -> Future[list[bool]]:
        if self._closed:
            raise RuntimeError("the event writer is closed")
        fut: Future[list[bool]] = Future()
        self._ensure_thread()
        self._pending.put((list(items), fut))
        return fut

    def write(self, items: Sequence[tuple[str, str, str]], timeout: float | None = 60.0) -> list[bool]:
        """Blocking form of :meth:`submit`."""
        return self.submit(items).result(timeout)

    def close(self) -> None:
        """Write what was submitted, then stop the threads (and checkpoint a last time)."""
        self._closed = True
        if self._thread is not None:
            self._pending.put(None)
            self._thread.join(30)
        if self._owns_ledger:
            self._dirty.set()
            if self._checkpointer is not None:
                self._checkpointer.join(30)
            self._checkpoint()
            if isinstance(self._ledger, SiblingIntake):
                self._ledger.close()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="rfmsync-event-writer", daemon=True)
                    self._thread.start()
                    if self._owns_ledger:
                        self._checkpointer = threading.Thread(target=self._checkpoint_loop, daemon=True,
                                                              name="rfmsync-event-checkpoint")
                        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        while not self._closed:
            self._dirty.wait()
            if self._closed:
                return
            self._dirty.clear()
            self._checkpoint()
            time.sleep(self._checkpoint_seconds)

    def _checkpoint(self) -> None:
        try:
            if isinstance(self._ledger, SiblingIntake):
                self._ledger.checkpoint()
        except Exception as exc:  # noqa: BLE001 - the next one catches up; the WAL just grows meanwhile
            log.debug("event writer: checkpoint failed: %s", exc)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._pending.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._pending.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)

    def _commit(self, batch: list[tuple[Sequence[tuple[str, str, str]], Future[list[bool]]]]) -> None:
        flat = [item for items, _ in batch for item in items]
        try:
            results = self._ledger.enqueue_events(flat)
        except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error (→ 503)
            log.debug("event writer: commit of %d deliveries failed: %s", len(batch), exc)
            for _, fut in batch:
                fut.set_exception(exc)
            return
        self._dirty.set()
        start = 0
        for items, fut in batch:
            fut.set_result(results[start:start + len(items)])
            start += len(items)
