"""The resync worker: drains the ledger's webhook queue with a debounce window.

Any number of workers (threads, processes, hosts) may share one ledger: ``claim_events`` hands each event to
exactly one of them (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite ``BEGIN IMMEDIATE``). A worker waits
``debounce_seconds`` after it first sees queued events, so a burst becomes one resync, then claims everything
queued and hands it to :func:`sync.serve.resync.resync`. Events are marked done only after the resync succeeded;
on an error they go back to the queue (up to ``max_attempts`` claims, then ``failed``); a batch that waited in vain
for another run (:class:`~sync.errors.LockBusyError`: a destination or the order store busy) goes back without
counting the claim, up to ``give_up_waiting_after`` (6 h) after its oldest event was accepted: a lock that never
frees (a paused ``rfmsync sync``, a duckdb shell left open on the store) would otherwise have it released every
minute or two for ever, unseen; it is then marked ``failed`` (kept, ``requeue_failed_events`` replays it), with an
ERROR naming what it waited for, and a WARNING every :data:`RELEASE_WARNING_EVERY` releases before that. A claim
is a lease of
``stale_after`` seconds that the working worker renews by heartbeat: events of a killed worker on another host
become claimable when the lease lapses, those of a killed process on this host at once; queued events simply
wait for the next worker, so nothing accepted is lost across a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from connectors.records import Contact, Order

from ..config import Config
from ..errors import DestinationError, GuardRefusedError, LockBusyError
from ..ledger import Event, Ledger, default_owner
from ..settings import Settings
from .metrics import Metrics
from ..ledger.codec import decode_records
from .resync import ResyncReport, resync

log = logging.getLogger(__name__)
RELEASE_WARNING_EVERY = 10  # a batch released this many times (10–20 minutes of waiting) is logged as a WARNING

@dataclass
class Batch:
    """Decoded events handed to the resync function."""

    events: list[Event]
    orders: list[Order] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)
    pull: bool = False
    #: when the ledger accepted each record: ``(kind, id)`` → its event's time (:data:`sync.store.merge.Ages`)
    ages: dict[tuple[str, str], datetime] = field(default_factory=dict)
    #: event id → the records it holds (events holding one record are given up together)
    keys: dict[int, set[tuple[str, str]]] = field(default_factory=dict)


ResyncFn = Callable[[Batch], ResyncReport | None]


class Worker:
    """Drains the queue. ``run_forever(stop)`` in a thread, or ``drain()`` once (tests, cron-style use).

    ``process`` defaults to the incremental resync of ``cfg``; pass another callable to observe batches.
    """

    def __init__(self, cfg: Config, ledger: Ledger, settings: Settings, *, name: str | None = None,
                 debounce_seconds: float | None = None, poll_seconds: float = 0.5, batch_limit: int = 1000,
                 max_attempts: int = 5, stale_after: float = 30.0, metrics: Metrics | None = None,
                 process: ResyncFn | None = None, as_of: Callable[[], object] | None = None,
                 clock: Callable[[], float] = time.monotonic, give_up_waiting_after: float = 6 * 3600,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.cfg, self.ledger, self.settings = cfg, ledger, settings
        self.name = name or default_owner()
        self.debounce = cfg.serve.debounce_seconds if debounce_seconds is None else debounce_seconds
        self.poll = poll_seconds
        self.batch_limit, self.max_attempts, self.stale_after = batch_limit, max_attempts, stale_after
        self.heartbeat_seconds = stale_after / 3
        self.metrics = metrics or Metrics()
        self._process = process or self._resync
        self._as_of = as_of
        self._clock = clock
        self.give_up_waiting_after = give_up_waiting_after  # seconds since the batch's oldest event was accepted
        self._now = now  # the wall clock the ledger stamps events.received_at with
        self._releases: Counter[int] = Counter()  # event id → times this worker released it (waiting for a lock)
        self._wake = threading.Event()
        self.processed_ids: list[int] = []  # events this worker completed (observability, tests)

    def wake(self) -> None:
        """New events were queued in this process: look now instead of at the next poll."""
        self._wake.set()

    def _resync(self, batch: Batch) -> ResyncReport:
        as_of = self._as_of() if self._as_of else None
        return resync(self.cfg, self.ledger, self.settings, batch.orders, batch.contacts, pull=batch.pull,
                      as_of=as_of, received_at=batch.ages)  # rows pulled for the batch: the pull's start

    # -- one batch -----------------------------------------------------------------------

    def process_batch(self) -> int:
        """Claim every queued event (up to ``batch_limit``) and resync them together; returns events done."""
        events = self.ledger.claim_events(self.name, limit=self.batch_limit, stale_after=self.stale_after)
        if not events:
            return 0
        batch = Batch(events=[])
        for ev in events:
            try:
                orders, contacts, pull = decode_records(ev.payload)
            except ValueError as exc:
                log.error("event %d from %s cannot be decoded, marking it failed: %s", ev.id, ev.source, exc)
                self.ledger.fail_events([ev.id], str(exc), max_attempts=1, worker=self.name)
                self.metrics.event_outcome("failed")
                continue
            batch.events.append(ev)
            batch.orders += orders
            batch.contacts += contacts
            # a record's age is its own event's (the last one holding it: its version is the one staged)
            keys = [("order", o.order_id) for o in orders] + [("contact", c.customer_id) for c in contacts]
            batch.ages.update(dict.fromkeys(keys, ev.received_at))
            batch.keys[ev.id] = set(keys)
            batch.pull = batch.pull or pull
        if not batch.events:
            return 0
        ids = [ev.id for ev in batch.events]
        started = self._clock()
        beating = threading.Event()
        heart = threading.Thread(target=self._heartbeat, args=(ids, beating), name=f"{self.name}-lease",
                                 daemon=True)
        heart.start()
        try:
            report = self._process(batch)
        except Exception as exc:  # any failure: the events go back to the queue
            failure: Exception | None = exc
        else:
            failure = None
        finally:
            beating.set()
            heart.join()
        if failure is not None:
            self._failed(batch, failure, self._clock() - started)
            return 0
        self._forget_releases(ids)
        self.ledger.complete_events(ids, worker=self.name)
        self.processed_ids += ids
        self.metrics.resync_done(self._clock() - started, report)
        self.metrics.event_outcome("done", len(ids))
        return len(ids)

    def _failed(self, batch: Batch, failure: Exception, seconds: float) -> None:
        """The batch's events go back to the queue (a guard's refusal: they are failed at once)."""
        ids = [ev.id for ev in batch.events]
        error = f"{type(failure).__name__}: {failure}"
        self.metrics.resync_done(seconds, None, error)
        if isinstance(failure, DestinationError):
            self.metrics.esp_error(getattr(failure, "destination", None) or "unknown")
        if isinstance(failure, LockBusyError):
            self._waited(batch, ids, error)
            return
        if isinstance(failure, GuardRefusedError):
            # the records are in the order store already; retrying gives the same answer: the next full
            # sync (with --allow-mass-change if the change is wanted) pushes them
            self.metrics.guard_refused(failure.destinations)
            self._forget_releases(ids)
            self.ledger.fail_events(ids, error, max_attempts=1, worker=self.name)
            self.metrics.event_outcome("failed", len(ids))
            log.error("resync of %d events refused by a guard (nothing written): %s", len(ids), error)
            return
        self._forget_releases(ids)
        self.ledger.fail_events(ids, error, max_attempts=self.max_attempts, worker=self.name)
        exhausted = sum(ev.attempts >= self.max_attempts for ev in batch.events)
        self.metrics.event_outcome("failed", exhausted)
        self.metrics.event_outcome("retried", len(ids) - exhausted)
        log.warning("resync of %d events failed (they stay queued, %d given up): %s", len(ids), exhausted, error)

    def _waited(self, batch: Batch, ids: list[int], error: str) -> None:
        """Another run holds the destination (a long cron sync) or the order store: the batch waits its turn, and
        the claim does not count towards max_attempts (it would be given up during a long sync). An event that
        waited ``give_up_waiting_after`` since it was accepted (a lock that never frees) is given up, failed and
        kept, with the batch's events that hold one of its records (replayed later on its own, it would undo their
        newer version); the batch's other events (a batch is formed again at each claim) wait on."""
        now = self._now()
        waited = {ev.id: (now - ev.received_at).total_seconds() for ev in batch.events}
        old = {i for i in ids if waited[i] >= self.give_up_waiting_after}
        # with them, every event holding one of their records: replayed later on its own, an old event would be
        # merged after a newer version of its record and undo it (an upsert: the last one merged wins)
        grown = True
        while old and grown:
            held = set().union(*(batch.keys.get(i, set()) for i in old))
            more = {i for i in ids if i not in old and batch.keys.get(i, set()) & held}
            old, grown = old | more, bool(more)
        gone = old
        old = [i for i in ids if i in gone]
        if old:
            self._forget_releases(old)
            longest = max(waited[i] for i in old)
            self.ledger.fail_events(old, f"gave up waiting for another run after {longest / 3600:.1f} h: {error}",
                                    max_attempts=1, worker=self.name)
            self.metrics.event_outcome("failed", len(old))
            log.error("resync of %d events given up (marked failed, kept): they waited %.1f h for another run that "
                      "did not end: %s; Ledger.requeue_failed_events() replays them", len(old), longest / 3600,
                      error)
        rest = [i for i in ids if i not in gone]
        if not rest:
            return
        self.ledger.release_events(rest, error, worker=self.name)
        self._releases.update(rest)
        self.metrics.event_outcome("retried", len(rest))
        times = max(self._releases[i] for i in rest)
        level = logging.WARNING if times % RELEASE_WARNING_EVERY == 0 else logging.INFO
        log.log(level, "resync of %d events waits for another run (they stay queued; released %d times, %.0f min "
                "since accepted, given up after %.1f h): %s", len(rest), times, max(waited[i] for i in rest) / 60,
                self.give_up_waiting_after / 3600, error)

    def _forget_releases(self, ids: list[int]) -> None:
        for i in ids:
            self._releases.pop(i, None)

    def _heartbeat(self, ids: list[int], done: threading.Event) -> None:
        """Renew the lease on a batch's events until ``done`` (the batch finished)."""
        while not done.wait(self.heartbeat_seconds):
            try:
                kept = self.ledger.renew_claims(self.name, ids)
            except Exception as exc:  # ledger briefly unreachable: try again at the next beat
                log.warning("worker %s: cannot renew the lease on %d events: %s", self.name, len(ids), exc)
                continue
            if kept < len(ids):
                log.warning("worker %s: %d of %d events were taken over by another worker (lease expired)",
                            self.name, len(ids) - kept, len(ids))

    # -- loop ------------------------------------------------------------------------------

    def drain(self) -> int:
        """Process until nothing is queued (no debounce); returns events done."""
        done = 0
        while self.ledger.claimable_count(self.stale_after):
            done += self.process_batch()
        return done

    def run_forever(self, stop: threading.Event) -> None:
        """Poll the queue until ``stop`` is set; debounce from the moment queued events are first seen."""
        pending_since: float | None = None
        log.info("worker %s: draining the queue (debounce %.1fs)", self.name, self.debounce)
        while not stop.is_set():
            try:
                queued = self.ledger.claimable_count(self.stale_after)  # + events of dead claimers
            except Exception as exc:  # ledger unreachable for a moment: keep the worker alive
                log.warning("worker %s: cannot read the queue: %s", self.name, exc)
                stop.wait(max(self.poll, 1.0))
                continue
            if not queued:
                pending_since = None
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            now = self._clock()
            if pending_since is None:
                pending_since = now
            remaining = pending_since + self.debounce - now
            if remaining > 0:
                stop.wait(remaining)
                continue
            pending_since = None
            try:
                if self.process_batch() >= self.batch_limit:
                    pending_since = float("-inf")  # a backlog: no new debounce before the next batch
            except Exception as exc:  # never let one bad batch end the worker
                log.exception("worker %s: batch failed: %s", self.name, exc)
                stop.wait(self.poll)
        log.info("worker %s: stopped", self.name)
