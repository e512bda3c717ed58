"""The webhook event queue of the ledger (part of the :class:`sync.ledger.Ledger` facade).

Deliveries are deduplicated by (source, dedupe_key), the records they are about, against the latest event of
that key (a sender's retry: its payload again), and kept after processing so a repeat delivery stays
recognisable; an earlier state that comes back is queued again (:meth:`EventQueue.enqueue_events`). Workers
claim batches oldest first; PostgreSQL uses ``SELECT .. FOR UPDATE SKIP LOCKED``, SQLite runs the claim under
``BEGIN IMMEDIATE``.

A claim is a *lease*: the worker renews it (:meth:`EventQueue.renew_claims`) while it
works, and a ``processing`` event whose lease was not renewed for ``stale_after`` seconds
is claimable again (its worker died, or its host did). A claimer on *this* host whose
process no longer exists (``host:pid:token`` names, see :func:`sync.ledger.owners.owner_process_gone`) loses
its events at once. ``attempts`` counts claims, so a poison event ends ``failed`` (even one that kills its
worker); ``fails`` counts only the failures :meth:`EventQueue.fail_events` recorded (a worker killed mid-claim
leaves ``attempts`` one higher, ``fails`` as it was). An event released with a wait
(:meth:`EventQueue.release_events`) is not claimed before its ``not_before``.
"""

from __future__ import annotations

import logging
import threading
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Protocol, Sequence

from sqlalchemy import String, and_, case, cast, func, literal, or_, select, text, update

from .content_keys import queued_after
from .db import LedgerDB, chunks, clip
from .owners import owner_process_gone
from .retention import BATCH, purge_done
from .schema import EVENT_STATUSES, events

log = logging.getLogger(__name__)

#: the start of the key an event is kept under once a later state of its records took its own key (an event's key
#: names its records, ``order:<id>``: see :meth:`EventQueue.enqueue_events`); then the key it had and ``@<its id>``
SUPERSEDED = "superseded:"
#: the start of the key of the one incremental pull a delivery naming records without their state queues (then the
#: delivery's own key: :mod:`sync.serve.webhooks`); each delivery is a key of its own, never superseded
PULL = "pull:"
#: PostgreSQL: the first key of the advisory locks intakes take per (source, key) (the 2-int space: the migrations'
#: lock is a bigint one)
_SUBJECT_LOCKS = 0x72666D65
#: PostgreSQL: the (source, key)s are hashed into this many advisory locks, so a transaction holds at most this many
#: whatever its size (one per record overflowed ``max_locks_per_transaction``: "out of shared memory", every delivery
#: of the group answered 503, again at each retry); two intakes whose records share a bucket only take turns
LOCK_BUCKETS = 64


def _lock_key(source: str, key: str) -> int:
    """A (source, key)'s advisory lock: the bucket of its CRC-32 (:data:`LOCK_BUCKETS`)."""
    return zlib.crc32(f"{source}\0{key}".encode()) % LOCK_BUCKETS


#: a failed event accepted longer ago than this no longer holds the order store's prune of the file versions'
#: ages (:func:`sync.serve.resync_staging.prune_file_won_ages`): one failed event would keep them for ever
REQUEUE_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class Event:
    """A queued webhook delivery. ``attempts`` counts claims, this one included; ``fails`` the failures of its
    own recorded before this claim (:meth:`EventQueue.fail_events`: not a claim its worker never settled)."""

    id: int
    source: str
    dedupe_key: str
    payload: str
    received_at: datetime
    attempts: int
    fails: int = 0


class EventIntake(Protocol):
    """Where webhook deliveries are queued (the server's intake, :class:`sync.ledger.writer.EventWriter`)."""

    def enqueue_events(self, items: Sequence[tuple[str, str, str]]) -> list[bool]: ...


class EventClaims(Protocol):
    """A worker's side of the queue: claim a batch, keep the lease, see whether anything is claimable."""

    def claim_events(self, worker: str, limit: int = 100, stale_after: float = 300) -> list[Event]: ...

    def renew_claims(self, worker: str, ids: Iterable[int]) -> int: ...

    def claimable_count(self, stale_after: float = 300) -> int: ...


class EventOutcomes(Protocol):
    """How a worker finishes the events it claimed."""

    def complete_events(self, ids: Iterable[int], *, worker: str) -> int: ...

    def fail_events(self, ids: Iterable[int], error: str, max_attempts: int = 5, *, worker: str,
                    wait_seconds: float | None = None) -> int: ...

    def release_events(self, ids: Iterable[int], reason: str, *, worker: str,
                       wait_seconds: float | None = None) -> int: ...


class QueueStats(Protocol):
    """What health checks and metrics read."""

    def queue_depth(self) -> int: ...

    def event_counts(self) -> dict[str, int]: ...


def _due(now: datetime) -> Any:
    """A queued event whose wait (if it was released with one) is over."""
    return or_(events.c.not_before.is_(None), events.c.not_before <= now)


class EventQueue:
    """The ``events`` table: deduplicated deliveries, leased claims, outcomes and counts."""

    def __init__(self, db: LedgerDB) -> None:
        self._db = db

    def enqueue_event(self, source: str, dedupe_key: str, payload: str) -> bool:
        """Queue a delivery; False if it repeats the latest event of (source, dedupe_key) (:meth:`enqueue_events`)."""
        return self.enqueue_events([(source, dedupe_key, payload)])[0]

    def enqueue_events(self, items: Sequence[tuple[str, str, str]]) -> list[bool]:
        """Queue several (source, dedupe_key, payload) deliveries in ONE transaction; per item, True when it is new.

        ``dedupe_key`` names what the delivery is about (``order:<id>``): an item is a repeat (False) only when its
        payload is that of the latest event of its (source, key), queued, processed or failed, earlier in ``items``
        included (a sender's retry). A state that comes back after another (consent no → yes → no) is queued
        again: the latest event is kept under a key of its own (:data:`SUPERSEDED`), the new one takes the key.
        PostgreSQL: concurrent intakes take turns per key (advisory locks of :data:`LOCK_BUCKETS` buckets of the
        keys, taken in sorted order).

        An older rfmsync's intake sharing the ledger during an upgrade queues under content keys
        (:mod:`sync.ledger.content_keys`), which the latest event of a key does not see: a state it queued after
        that event (a consent yes after this intake's no) would make the no delivered again a "repeat" of the no
        before it, and drop it. So a payload equal to its key's latest event is a repeat only when no older intake
        queued another state of its record after that event (:func:`~sync.ledger.content_keys.queued_after`, asked
        per such record); else it is queued (processed once more at worst). One committed after this check was
        accepted after the repeat: the accepted last wins."""
        for _, _, payload in items:
            if not isinstance(payload, str):
                raise TypeError(f"event payload must be a str, not {type(payload).__name__}")
        if not items:
            return []
        now = self._db.clock()
        t = events
        stmt = self._db.insert(t).on_conflict_do_nothing(index_elements=[t.c.source, t.c.dedupe_key]
                                                         ).returning(t.c.id)
        subjects = {(source, key) for source, key, _ in items}
        with self._db.write() as conn:
            if self._db.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:space, k) FROM unnest(CAST(:keys AS int[])) AS k"),
                             {"space": _SUBJECT_LOCKS, "keys": sorted({_lock_key(*s) for s in subjects})})
            latest = self._latest(conn, subjects)  # (source, key) → (id, payload) of its latest event
            # a repeat only if no older intake queued another state of its record after its latest event (asked
            # only for the records whose payload repeats their latest one's)
            later = queued_after(conn, [(s, k, latest[(s, k)][0], p) for s, k, p in items
                                        if latest.get((s, k), (0, None))[1] == p])

            def repeats(held: tuple[int, str] | None, payload: str, subject: tuple[str, str]) -> bool:
                return held is not None and held[1] == payload and subject not in later

            gone = {latest[(s, k)][0] for s, k, p in items
                    if (s, k) in latest and not repeats(latest[(s, k)], p, (s, k))}
            self._supersede(conn, sorted(gone))  # the stored latest events a new state takes the keys of
            new: list[bool] = []
            for source, key, payload in items:
                held = latest.get((source, key))
                if repeats(held, payload, (source, key)):
                    new.append(False)
                    continue
                if held is not None and held[0] not in gone:  # queued by an item earlier in this group
                    self._supersede(conn, [held[0]])
                new_id = conn.execute(stmt, {"source": source, "dedupe_key": key, "payload": payload,
                                             "status": "queued", "received_at": now, "attempts": 0}).scalar()
                new.append(new_id is not None)
                if new_id is not None:
                    latest[(source, key)] = (new_id, payload)
                    later.discard((source, key))  # its next repeat in this group repeats this event
            return new

    @staticmethod
    def _latest(conn: Any, subjects: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, str]]:
        """The latest event of each (source, key): the one holding the key (its earlier ones were superseded)."""
        by_source: dict[str, list[str]] = {}
        for source, key in subjects:
            by_source.setdefault(source, []).append(key)
        found = {}
        for source, keys in by_source.items():
            for chunk in chunks(sorted(keys), 500):
                found.update(((source, k), (i, p)) for i, k, p in conn.execute(
                    select(events.c.id, events.c.dedupe_key, events.c.payload).where(
                        events.c.source == source, events.c.dedupe_key.in_(chunk))))
        return found

    @staticmethod
    def _supersede(conn: Any, ids: list[int]) -> None:
        """Move these events off their keys (:data:`SUPERSEDED`): a later state of their records took them."""
        for chunk in chunks(ids, 1000):
            conn.execute(update(events).where(events.c.id.in_(chunk)).values(
                dedupe_key=literal(SUPERSEDED) + events.c.dedupe_key + literal("@") + cast(events.c.id, String)))

    def claim_events(self, worker: str, limit: int = 100, stale_after: float = 300) -> list[Event]:
        """Claim up to ``limit`` queued events (oldest first) for ``worker`` and mark them processing.

        Events whose lease was not renewed for ``stale_after`` seconds, and events claimed by a process
        of this host that no longer exists, are claimable again. PostgreSQL: ``FOR UPDATE SKIP LOCKED``;
        SQLite: the whole claim runs under ``BEGIN IMMEDIATE``. Two workers never receive the same event
        at once.
        """
        now = self._db.clock()
        t = events
        dead = self._dead_claimers()
        claimable = or_(and_(t.c.status == "queued", _due(now)),
                        and_(t.c.status == "processing", t.c.locked_at < now - timedelta(seconds=stale_after)))
        if dead:
            claimable = or_(claimable, and_(t.c.status == "processing", t.c.locked_by.in_(dead)))
        with self._db.write() as conn:
            ids = conn.execute(select(t.c.id).where(claimable).order_by(t.c.id).limit(limit)
                               .with_for_update(skip_locked=True)).scalars().all()
            if not ids:
                return []
            conn.execute(update(t).where(t.c.id.in_(ids)).values(
                status="processing", locked_by=worker, locked_at=now, attempts=t.c.attempts + 1))
        # the payloads are read after the commit: the write lock (SQLite: the whole database, webhook
        # intake included) is held only for the claim itself
        with self._db.read() as conn:
            rows = conn.execute(select(t.c.id, t.c.source, t.c.dedupe_key, t.c.payload, t.c.received_at,
                                       t.c.attempts, t.c.fails).where(t.c.id.in_(ids), t.c.locked_by == worker)
                                .order_by(t.c.id)).all()
        return [Event(*row) for row in rows]

    def claimable_count(self, stale_after: float = 300) -> int:
        """Events :meth:`claim_events` would hand out now: queued ones (their wait over) plus processing ones
        whose lease lapsed or whose claimer (on this host) was killed. Cheap when nothing is processing."""
        due = _due(self._db.clock())
        with self._db.read() as conn:  # the unfinished events only (indexed by status), not the whole history
            counts = dict(conn.execute(select(events.c.status, func.count()).where(
                or_(and_(events.c.status == "queued", due), events.c.status == "processing"))
                .group_by(events.c.status)).all())
        if not counts.get("processing"):
            return counts.get("queued", 0)
        t = events
        lapsed = t.c.locked_at < self._db.clock() - timedelta(seconds=stale_after)
        dead = self._dead_claimers()
        if dead:
            lapsed = or_(lapsed, t.c.locked_by.in_(dead))
        with self._db.read() as conn:
            stale = conn.execute(select(func.count()).select_from(t).where(t.c.status == "processing", lapsed)
                                 ).scalar_one()
        return counts.get("queued", 0) + int(stale)

    def _dead_claimers(self) -> list[str]:
        """Claimers of processing events that were processes of this host and are gone (killed)."""
        with self._db.read() as conn:
            owners = conn.execute(select(events.c.locked_by).where(events.c.status == "processing")
                                  .distinct()).scalars().all()
        return [o for o in owners if owner_process_gone(o)]

    def renew_claims(self, worker: str, ids: Iterable[int]) -> int:
        """Extend ``worker``'s lease on these processing events (its heartbeat); returns how many are
        still its own (fewer: the lease had expired and another worker took them over)."""
        ids = list(ids)
        renewed = 0
        with self._db.write() as conn:
            for chunk in chunks(ids, 1000):
                renewed += conn.execute(update(events).where(
                    events.c.id.in_(chunk), events.c.status == "processing", events.c.locked_by == worker)
                    .values(locked_at=self._db.clock())).rowcount
        return renewed

    def complete_events(self, ids: Iterable[int], *, worker: str) -> int:
        """Mark ``worker``'s processing events done (kept for dedupe); returns how many."""
        return self._finish_events(list(ids), worker, {"status": "done", "finished_at": self._db.clock()})

    def fail_events(self, ids: Iterable[int], error: str, max_attempts: int = 5, *, worker: str,
                    wait_seconds: float | None = None) -> int:
        """Put ``worker``'s processing events back in the queue, or mark them failed once they have been
        claimed ``max_attempts`` times; returns how many were updated. Each spends a failure (``fails``: known bad
        for the next claim). ``wait_seconds``: those put back are not claimed before that many seconds from now
        (as :meth:`release_events`)."""
        exhausted = events.c.attempts >= max_attempts
        return self._finish_events(list(ids), worker, {"fails": events.c.fails + 1,
            "status": case((exhausted, "failed"), else_="queued"), "not_before": self._not_before(wait_seconds),
            "finished_at": case((exhausted, self._db.clock()), else_=None),
            "last_error": clip(error)})

    def release_events(self, ids: Iterable[int], reason: str, *, worker: str,
                       wait_seconds: float | None = None) -> int:
        """Put ``worker``'s processing events back in the queue without counting this claim (they waited for
        another run: a busy destination or order store is no fault of theirs); with ``wait_seconds``, nobody
        claims them before that many seconds from now (a back-off of their own: no claim and release of them at
        every debounce while it lasts). Returns how many were updated."""
        return self._finish_events(list(ids), worker, {"status": "queued", "attempts": events.c.attempts - 1,
                                                       "last_error": clip(reason),
                                                       "not_before": self._not_before(wait_seconds)})

    def _not_before(self, wait_seconds: float | None) -> datetime | None:
        """When events put back with a wait of ``wait_seconds`` may be claimed again (None: at once)."""
        return None if not wait_seconds else self._db.clock() + timedelta(seconds=wait_seconds)

    def _finish_events(self, ids: list[int], worker: str, values: dict[str, Any]) -> int:
        """Only events still claimed by ``worker``: one whose lease lapsed and was taken over by another
        worker is that worker's now (a stalled worker must not release, fail or complete its batch)."""
        t = events
        values = {**values, "locked_by": None, "locked_at": None}
        changed = 0
        with self._db.write() as conn:
            for chunk in chunks(ids, 1000):
                changed += conn.execute(update(t).where(t.c.id.in_(chunk), t.c.status == "processing",
                                                       t.c.locked_by == worker).values(**values)).rowcount
        return changed

    def requeue_failed_events(self, source: str | None = None, *, force: bool = False) -> int:
        """Give events that exhausted their attempts another round (attempts reset). Refused (``ValueError``, none
        requeued) when some were accepted longer than :data:`REQUEUE_WINDOW` ago, unless ``force``: they no
        longer held the order store's prune, so an export file read since may hold a newer version of their
        records that their replay would overwrite (a WARNING names them when forced; run a full sync after)."""
        query = update(events).where(events.c.status == "failed")
        old = select(func.count()).select_from(events).where(
            events.c.status == "failed", events.c.received_at < self._db.clock() - REQUEUE_WINDOW)
        if source is not None:
            query = query.where(events.c.source == source)
            old = old.where(events.c.source == source)
        why = (f"accepted more than {REQUEUE_WINDOW.days} days ago (the requeue window): an export file read since "
               "then may hold a newer version of their records, which their replay overwrites")
        with self._db.write() as conn:
            stale = int(conn.execute(old).scalar_one())
            if stale and not force:
                raise ValueError(f"{stale} failed events were {why}; nothing requeued. requeue_failed_events("
                                 "force=True) replays them anyway (then run a full sync)")
            requeued = conn.execute(query.values(status="queued", attempts=0, fails=0, finished_at=None,
                                                 not_before=None)
                                    ).rowcount
        if stale:
            log.warning("%d of the %d failed events replayed (forced) were %s; check them, or run a full sync after",
                        stale, requeued, why)
        return requeued

    def oldest_unsettled(self) -> datetime | None:
        """When the oldest event that may still be merged was accepted (queued, processing, or failed within
        :data:`REQUEUE_WINDOW`: :meth:`requeue_failed_events` replays those), or None when there is none."""
        replayable = and_(events.c.status == "failed", events.c.received_at >= self._db.clock() - REQUEUE_WINDOW)
        with self._db.read() as conn:
            return conn.execute(select(func.min(events.c.received_at)).where(
                or_(events.c.status.in_(("queued", "processing")), replayable))).scalar()

    def purge_events(self, older_than: timedelta, *, batch: int = BATCH, stop: threading.Event | None = None
                     ) -> int:
        """Delete the done events a later state of their records superseded, and the done pulls deliveries queued
        (:data:`PULL`), finished before now - ``older_than``, in transactions of ``batch`` (:mod:`sync.ledger.retention`:
        what the dedupe reads is kept); returns how many."""
        return purge_done(self._db, (SUPERSEDED, PULL), older_than, batch=batch, stop=stop)

    def queue_depth(self) -> int:
        """Events not finished yet (queued or processing)."""
        with self._db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(events).where(
                events.c.status.in_(("queued", "processing")))).scalar_one())

    def event_counts(self) -> dict[str, int]:
        """Events per status: queued, processing, done, failed (zeros included)."""
        counts = dict.fromkeys(EVENT_STATUSES, 0)
        with self._db.read() as conn:
            for status, n in conn.execute(select(events.c.status, func.count()).group_by(events.c.status)):
                counts[status] = int(n)
        return counts
