"""The webhook event queue of the ledger (mixed into :class:`sync.ledger.Ledger`).

Deliveries are deduplicated by (source, dedupe_key) and kept after processing so a
repeat delivery stays recognisable. Workers claim batches oldest first; PostgreSQL uses
``SELECT .. FOR UPDATE SKIP LOCKED``, SQLite runs the claim under ``BEGIN IMMEDIATE``.

A claim is a *lease*: the worker renews it (:meth:`EventQueueMixin.renew_claims`) while it
works, and a ``processing`` event whose lease was not renewed for ``stale_after`` seconds
is claimable again (its worker died, or its host did). A claimer on *this* host whose
process no longer exists (``host:pid:token`` names, see :func:`owner_process_gone`) loses
its events at once. ``attempts`` counts claims, so a poison event ends ``failed``.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.schema import Table
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from .ledger_schema import events

log = logging.getLogger(__name__)

EVENT_STATUSES = ("queued", "processing", "done", "failed")
MAX_ERROR_CHARS = 2000
T = TypeVar("T")


def owner_process_gone(owner: str | None) -> bool:
    """True when ``owner`` (``host:pid:token``, see :func:`sync.ledger.default_owner`) names a process on
    this host that no longer exists. Other hosts, other formats and unknown cases: False (wait for expiry)."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) <= 0:
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    """A killed process nobody has reaped yet still answers kill(pid, 0) (Linux: state Z in /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def chunks(items: Sequence[T], size: int = 5000) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def clip(error: str | None) -> str | None:
    return None if error is None else error[:MAX_ERROR_CHARS]


@dataclass(frozen=True)
class Event:
    """A queued webhook delivery. ``attempts`` counts claims, this one included."""

    id: int
    source: str
    dedupe_key: str
    payload: str
    received_at: datetime
    attempts: int


class EventQueueMixin:
    """Webhook queue operations; the host class provides the transactions and the clock."""

    _clock: Callable[[], datetime]
    _write: Callable[[], AbstractContextManager[Connection]]
    _read: Callable[[], AbstractContextManager[Connection]]
    _insert: Callable[[Table], sqlite_dialect.Insert | pg_dialect.Insert]

    def enqueue_event(self, source: str, dedupe_key: str, payload: str) -> bool:
        """Queue a delivery; False if (source, dedupe_key) was already queued or processed."""
        if not isinstance(payload, str):
            raise TypeError(f"event payload must be a str, not {type(payload).__name__}")
        ins = self._insert(events).values(source=source, dedupe_key=dedupe_key, payload=payload,
                                          status="queued", received_at=self._clock(), attempts=0)
        with self._write() as conn:
            new_id = conn.execute(ins.on_conflict_do_nothing(
                index_elements=[events.c.source, events.c.dedupe_key]).returning(events.c.id)).scalar()
        return new_id is not None

    def enqueue_events(self, items: Sequence[tuple[str, str, str]]) -> list[bool]:
        """Queue several (source, dedupe_key, payload) deliveries in ONE transaction; per item, True
        when it is new (False: already queued or processed, including earlier in ``items``)."""
        for _, _, payload in items:
            if not isinstance(payload, str):
                raise TypeError(f"event payload must be a str, not {type(payload).__name__}")
        if not items:
            return []
        now = self._clock()
        stmt = self._insert(events).on_conflict_do_nothing(
            index_elements=[events.c.source, events.c.dedupe_key]).returning(events.c.id)
        with self._write() as conn:
            return [conn.execute(stmt, {"source": source, "dedupe_key": key, "payload": payload,
                                        "status": "queued", "received_at": now, "attempts": 0}).scalar() is not None
                    for source, key, payload in items]

    def claim_events(self, worker: str, limit: int = 100, stale_after: float = 300) -> list[Event]:
        """Claim up to ``limit`` queued events (oldest first) for ``worker`` and mark them processing.

        Events whose lease was not renewed for ``stale_after`` seconds, and events claimed by a process
        of this host that no longer exists, are claimable again. PostgreSQL: ``FOR UPDATE SKIP LOCKED``;
        SQLite: the whole claim runs under ``BEGIN IMMEDIATE``. Two workers never receive the same event
        at once.
        """
        now = self._clock()
        t = events
        dead = self._dead_claimers()
        claimable = or_(t.c.status == "queued",
                        and_(t.c.status == "processing", t.c.locked_at < now - timedelta(seconds=stale_after)))
        if dead:
            claimable = or_(claimable, and_(t.c.status == "processing", t.c.locked_by.in_(dead)))
        with self._write() as conn:
            ids = conn.execute(select(t.c.id).where(claimable).order_by(t.c.id).limit(limit)
                               .with_for_update(skip_locked=True)).scalars().all()
            if not ids:
                return []
            conn.execute(update(t).where(t.c.id.in_(ids)).values(
                status="processing", locked_by=worker, locked_at=now, attempts=t.c.attempts + 1))
        # the payloads are read after the commit: the write lock (SQLite: the whole database, webhook
        # intake included) is held only for the claim itself
        with self._read() as conn:
            rows = conn.execute(select(t.c.id, t.c.source, t.c.dedupe_key, t.c.payload, t.c.received_at,
                                       t.c.attempts).where(t.c.id.in_(ids), t.c.locked_by == worker)
                                .order_by(t.c.id)).all()
        return [Event(*row) for row in rows]

    def claimable_count(self, stale_after: float = 300) -> int:
        """Events :meth:`claim_events` would hand out now: queued ones plus processing ones whose lease
        lapsed or whose claimer (on this host) was killed. Cheap when nothing is processing."""
        with self._read() as conn:  # the unfinished events only (indexed by status), not the whole history
            counts = dict(conn.execute(select(events.c.status, func.count()).where(
                events.c.status.in_(("queued", "processing"))).group_by(events.c.status)).all())
        if not counts.get("processing"):
            return counts.get("queued", 0)
        t = events
        lapsed = t.c.locked_at < self._clock() - timedelta(seconds=stale_after)
        dead = self._dead_claimers()
        if dead:
            lapsed = or_(lapsed, t.c.locked_by.in_(dead))
        with self._read() as conn:
            stale = conn.execute(select(func.count()).select_from(t).where(t.c.status == "processing", lapsed)
                                 ).scalar_one()
        return counts.get("queued", 0) + int(stale)

    def _dead_claimers(self) -> list[str]:
        """Claimers of processing events that were processes of this host and are gone (killed)."""
        with self._read() as conn:
            owners = conn.execute(select(events.c.locked_by).where(events.c.status == "processing")
                                  .distinct()).scalars().all()
        return [o for o in owners if owner_process_gone(o)]

    def renew_claims(self, worker: str, ids: Iterable[int]) -> int:
        """Extend ``worker``'s lease on these processing events (its heartbeat); returns how many are
        still its own (fewer: the lease had expired and another worker took them over)."""
        ids = list(ids)
        renewed = 0
        with self._write() as conn:
            for chunk in chunks(ids, 1000):
                renewed += conn.execute(update(events).where(
                    events.c.id.in_(chunk), events.c.status == "processing", events.c.locked_by == worker)
                    .values(locked_at=self._clock())).rowcount
        return renewed

    def complete_events(self, ids: Iterable[int]) -> int:
        """Mark processing events done (kept for dedupe); returns how many."""
        return self._finish_events(list(ids), {"status": "done", "finished_at": self._clock()})

    def fail_events(self, ids: Iterable[int], error: str, max_attempts: int = 5) -> int:
        """Put processing events back in the queue, or mark them failed once they have been
        claimed ``max_attempts`` times; returns how many were updated."""
        exhausted = events.c.attempts >= max_attempts
        return self._finish_events(list(ids), {
            "status": case((exhausted, "failed"), else_="queued"),
            "finished_at": case((exhausted, self._clock()), else_=None),
            "last_error": clip(error)})

    def _finish_events(self, ids: list[int], values: dict[str, Any]) -> int:
        t = events
        values = {**values, "locked_by": None, "locked_at": None}
        changed = 0
        with self._write() as conn:
            for chunk in chunks(ids, 1000):
                changed += conn.execute(update(t).where(t.c.id.in_(chunk), t.c.status == "processing")
                                        .values(**values)).rowcount
        return changed

    def requeue_failed_events(self, source: str | None = None) -> int:
        """Give events that exhausted their attempts another round (attempts reset)."""
        query = update(events).where(events.c.status == "failed")
        if source is not None:
            query = query.where(events.c.source == source)
        with self._write() as conn:
            return conn.execute(query.values(status="queued", attempts=0, finished_at=None)).rowcount

    def purge_events(self, older_than: timedelta) -> int:
        """Delete done events finished before now - ``older_than`` (their dedupe keys are forgotten)."""
        cutoff = self._clock() - older_than
        with self._write() as conn:
            return conn.execute(delete(events).where(events.c.status == "done",
                                                     events.c.finished_at < cutoff)).rowcount

    def queue_depth(self) -> int:
        """Events not finished yet (queued or processing)."""
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(events).where(
                events.c.status.in_(("queued", "processing")))).scalar_one())

    def event_counts(self) -> dict[str, int]:
        """Events per status: queued, processing, done, failed (zeros included)."""
        counts = dict.fromkeys(EVENT_STATUSES, 0)
        with self._read() as conn:
            for status, n in conn.execute(select(events.c.status, func.count()).group_by(events.c.status)):
                counts[status] = int(n)
        return counts


class EventWriter:
    """Group commit for the webhook intake: concurrent deliveries share one ledger transaction.

    ``submit(items)`` returns a future that resolves (to :meth:`EventQueueMixin.enqueue_events`'s result)
    only after the transaction holding ``items`` has committed, so a 202 still means "durably queued".
    One daemon thread writes: it takes everything submitted while the previous commit ran (up to
    ``max_batch`` deliveries) and commits it at once. Under load that turns N commits, each waiting for
    the ledger's write lock, into one; with a single request in flight it adds no wait at all.
    """

    def __init__(self, ledger: EventQueueMixin, max_batch: int = 256, checkpoint_seconds: float = 0.5) -> None:
        # SQLite: own connections that never checkpoint on commit (an fsync in a request's path); a
        # separate thread checkpoints instead, PASSIVE, so it blocks no writer.
        sibling = getattr(ledger, "sibling", None)
        self._ledger = sibling(autocheckpoint=False) if sibling is not None and \
            getattr(ledger, "dialect", "") == "sqlite" else ledger
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
            self._ledger.close()  # type: ignore[attr-defined]

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
            self._ledger.checkpoint()  # type: ignore[attr-defined]
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
