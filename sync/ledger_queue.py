"""The webhook event queue of the ledger (mixed into :class:`sync.ledger.Ledger`).

Deliveries are deduplicated by (source, dedupe_key) and kept after processing so a
repeat delivery stays recognisable. Workers claim batches oldest first; PostgreSQL uses
``SELECT .. FOR UPDATE SKIP LOCKED``, SQLite runs the claim under ``BEGIN IMMEDIATE``.
A ``processing`` event whose claim is older than ``stale_after`` is claimable again
(its worker crashed); ``attempts`` counts claims, so a poison event ends ``failed``.
"""

from __future__ import annotations

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

EVENT_STATUSES = ("queued", "processing", "done", "failed")
MAX_ERROR_CHARS = 2000
T = TypeVar("T")


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

    def claim_events(self, worker: str, limit: int = 100, stale_after: float = 300) -> list[Event]:
        """Claim up to ``limit`` queued events (oldest first) for ``worker`` and mark them processing.

        Events left ``processing`` for longer than ``stale_after`` seconds (a crashed worker)
        are claimable again. PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: the whole claim
        runs under ``BEGIN IMMEDIATE``. Two workers never receive the same event at once.
        """
        now = self._clock()
        t = events
        claimable = or_(t.c.status == "queued",
                        and_(t.c.status == "processing", t.c.locked_at < now - timedelta(seconds=stale_after)))
        with self._write() as conn:
            ids = conn.execute(select(t.c.id).where(claimable).order_by(t.c.id).limit(limit)
                               .with_for_update(skip_locked=True)).scalars().all()
            if not ids:
                return []
            conn.execute(update(t).where(t.c.id.in_(ids)).values(
                status="processing", locked_by=worker, locked_at=now, attempts=t.c.attempts + 1))
            rows = conn.execute(select(t.c.id, t.c.source, t.c.dedupe_key, t.c.payload, t.c.received_at,
                                       t.c.attempts).where(t.c.id.in_(ids)).order_by(t.c.id)).all()
        return [Event(*row) for row in rows]

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
