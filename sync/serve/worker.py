"""The resync worker: drains the ledger's webhook queue with a debounce window.

Any number of workers (threads, processes, hosts) may share one ledger: ``claim_events`` hands each event to
exactly one of them (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite ``BEGIN IMMEDIATE``). A worker waits
``debounce_seconds`` after it first sees queued events, so a burst becomes one resync, then claims everything
queued and hands it to :func:`sync.serve.resync.resync`. Events are marked done only after the resync succeeded; on
an error of their own they go back to the queue (up to ``max_attempts`` claims, then ``failed``), the batch split
in halves until the event at fault is alone (:mod:`sync.serve.isolate`, at most ``2·⌈log2 n⌉ + 2`` resyncs a
claim; an event that failed alone before is resynced apart, :mod:`sync.serve.apart`); an outage (:func:`retry_later`: the ESP, the source or the ledger failing the transient way, the disk full)
spends no attempt, and the worker backs off (:data:`BACKOFF_BASE` doubling up to :data:`BACKOFF_MAX`, or the
vendor's Retry-After when longer, up to :data:`RETRY_AFTER_MAX`; one destination rate limited while there are
others pauses that destination's work alone, :mod:`sync.serve.pauses`; a 5xx after :data:`PROBE_AFTER` in a row is
bisected too: one event may cause it; the event failing 5xx alone waits uncounted, resynced apart with a back-off
of its own); a batch that waited in vain for another run (:class:`~sync.errors.LockBusyError`: a destination or the
order store busy) goes back without counting the claim, up to ``give_up_waiting_after`` (6 h) after its oldest
event was accepted: a lock that never frees (a paused ``rfmsync sync``, a duckdb shell left open on the store)
would otherwise have it released every minute or two for ever, unseen; it is then marked ``failed`` (kept,
``requeue_failed_events`` replays it), with an ERROR naming what it waited for, and a WARNING every
:data:`RELEASE_WARNING_EVERY` releases before that. A claim is a lease of ``stale_after`` seconds that the working
worker renews by heartbeat (the events not settled yet): events of a killed worker on another host become claimable
when the lease lapses, those of a killed process on this host at once; queued events simply wait for the next
worker, so nothing accepted is lost across a restart.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from datetime import datetime, timezone
from typing import Callable

from connectors.secrets import redact, remember_secrets

from ..config import Config
from ..errors import DestinationError, GuardRefusedError, LockBusyError
from ..ledger import Ledger, default_owner
from ..ledger.codec import decode_records
from ..settings import Settings
from .batches import (CONFIG_ERRORS, PROBE_AFTER, Batch, ResyncFn, _batch, _Later, _Part, _text, count_stale,
                      given_up, not_believed, retry_later)
from .apart import Apart
from .isolate import Bisection
from .metrics import Metrics
from .pauses import Pauses
from .resync import ResyncReport, resync
from .suspects import Suspects

log = logging.getLogger(__name__)
__all__ = ["BACKOFF_BASE", "BACKOFF_MAX", "CONFIG_ERRORS", "PROBE_AFTER", "RETRY_AFTER_MAX", "Batch", "ResyncFn",
           "Worker", "retry_later"]
RELEASE_WARNING_EVERY = 10  # a batch released this many times (10–20 minutes of waiting) is logged as a WARNING
BACKOFF_BASE = 5.0  # seconds: the first wait after a transient failure, doubled with each one in a row
BACKOFF_MAX = 300.0  # seconds: the longest of our own (a vendor's Retry-After is honoured up to RETRY_AFTER_MAX)
#: seconds: the longest wait a vendor's Retry-After gets: a resync is every destination's and the CRM's, so one
#: ESP's day-long 429 must not hold them all into the give-up (the claim after it tries again)
RETRY_AFTER_MAX = 1800.0
CONFIG_WAIT = "the config to be fixed"  # what a batch failing with a config error waits for (logged as an ERROR)


class Worker(Bisection, Apart, Suspects, Pauses):
    """Drains the queue. ``run_forever(stop)`` in a thread, or ``drain()`` once (tests, cron-style use).

    ``process`` defaults to the incremental resync of ``cfg``; pass another callable to observe batches.
    """

    processed_keep = 10_000  # how many of the latest completed event ids :attr:`processed_ids` keeps

    def __init__(self, cfg: Config, ledger: Ledger, settings: Settings, *, name: str | None = None,
                 debounce_seconds: float | None = None, poll_seconds: float = 0.5, batch_limit: int = 1000,
                 max_attempts: int = 5, stale_after: float = 30.0, metrics: Metrics | None = None,
                 process: ResyncFn | None = None, as_of: Callable[[], object] | None = None,
                 clock: Callable[[], float] = time.monotonic, give_up_waiting_after: float = 6 * 3600,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 rng: random.Random | None = None) -> None:
        self.cfg, self.ledger, self.settings = cfg, ledger, settings
        remember_secrets(*(settings.secret_values() if settings is not None else ()))  # masked in every error text
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
        self._outages = 0  # transient failures in a row (the back-off doubles with each)
        self._synced = 0  # events whose resync went through in the claim being bisected (:meth:`_isolate`)
        self._went_at: float | None = None  # (clock) this worker's last resync that went through
        self._leased: set[int] = set()  # the claimed events not settled yet, whose lease the heartbeat renews
        #: suspects: events a bisection found failing 5xx alone while the others went through, resynced apart
        self._poisons: set[int] = set()
        self._suspect_fails = 0  # suspects' 5xx in a row (their own back-off doubles with each)
        self._suspects_at = 0.0  # (clock) suspects are not resynced before this
        self.idle = False  # the last claim held only suspects within their back-off: released with no call
        self._rng = rng or random.Random()  # the back-off's jitter
        self.retry_at: float | None = None  # (clock) no claim before this after a transient failure
        self._init_pauses()  # destinations rate limited: their work alone waits (:mod:`sync.serve.pauses`)
        self._wake = threading.Event()
        #: the latest events this worker completed (observability, tests): the last :attr:`processed_keep` only, a
        #: worker runs for months; ``completed`` counts them all
        self.processed_ids: deque[int] = deque(maxlen=self.processed_keep)
        self.completed = 0
        #: set when the worker stops (``run_forever``'s stop): a batch being bisected leaves the rest to the queue
        self.stopping = threading.Event()

    def wake(self) -> None:
        """New events were queued in this process: look now instead of at the next poll."""
        self._wake.set()

    def _resync(self, batch: Batch) -> ResyncReport:
        as_of = self._as_of() if self._as_of else None
        return count_stale(batch, resync(self.cfg, self.ledger, self.settings, batch.orders, batch.contacts,
                                         pull=batch.pull, as_of=as_of, received_at=batch.ages,
                                         now=self._now, destinations=batch.destinations,  # now: a pull's start
                                         restored=batch.restored, senders=batch.senders))

    # -- one batch -----------------------------------------------------------------------

    def process_batch(self) -> int:
        """Claim every queued event (up to ``batch_limit``) and resync them together; returns the events completed
        (marked done: not those resynced without a paused destination, released to wait for it)."""
        completed = self.completed
        events = self.ledger.claim_events(self.name, limit=self.batch_limit, stale_after=self.stale_after)
        if not events:
            return 0
        parts = []
        for ev in events:
            try:
                parts.append((ev, *decode_records(ev.payload)))
            except ValueError as exc:
                log.error("event %d from %s cannot be decoded, marking it failed: %s", ev.id, ev.source, exc)
                self.ledger.fail_events([ev.id], str(exc), max_attempts=1, worker=self.name)
                self.metrics.event_outcome("failed")
        self.idle = bool(parts) and all(p[0].id in self._poisons for p in parts) and self.suspects_back_off() > 0
        if not parts:
            return 0
        self._claim_destinations()
        beating = threading.Event()
        self._leased = {p[0].id for p in parts}
        heart = threading.Thread(target=self._heartbeat, args=(beating,),
                                 name=f"{self.name}-lease", daemon=True)
        heart.start()
        try:
            suspects = [p for p in parts if p[0].id in self._poisons]
            rest = [p for p in parts if p[0].id not in self._poisons]
            later = self._settle(rest) if rest else None
            if later is not None and all(p[0].id in self._poisons for p in later[0]):  # found now: no outage
                self._suspects_wait(later[0], later[1])
                later = None
            self._suspects(suspects, later)
            if later is not None:  # a transient failure: these events wait, the claim not counted
                self._failed(_batch(later[0]), later[1])
            return self.completed - completed
        finally:
            beating.set()
            heart.join()

    def _settle(self, parts: list[_Part]) -> _Later:
        """Resync ``parts`` (:meth:`_isolate` the events at fault when that fails). Returns, after a transient
        failure, the events not settled (they wait, uncounted) with it; None when nothing waits for one."""
        self._synced = 0
        known = [p for p in parts if p[0].fails]  # failed alone before: resynced apart (:mod:`.apart`)
        parts = [p for p in parts if not p[0].fails]
        failure = self._try(parts) if parts else None
        while failure is not None and self._pause(failure):  # one destination rate limited: the others' now
            failure = self._try(parts)
        return None if failure is None and not known else self._isolate(parts, failure, known)

    def _try(self, parts: list[_Part]) -> Exception | None:
        """One resync of these events: done on success; else the failure (its metrics recorded)."""
        batch = _batch(parts)
        batch.destinations = self.only
        ids = [ev.id for ev in batch.events]
        started = self._clock()
        try:
            report = self._process(batch)
        except Exception as exc:  # any failure: the caller sends the events back to the queue
            self.metrics.resync_done(self._clock() - started, None, _text(exc))
            if isinstance(exc, DestinationError):
                self.metrics.esp_error(getattr(exc, "destination", None) or "unknown")
            return exc
        self._synced += len(ids)
        self._went_at, self._last_single = self._clock(), None  # (a lone failure after it: its own again)
        if batch.destinations is None:  # (a paused destination left out says nothing of its 5xx, its outage)
            self._poisons.difference_update(ids)
            self._outages = 0
            self.metrics.config_fixed()  # (a config wait, if any, is over: every worker's of this process)
        self.metrics.resync_done(self._clock() - started, report)
        if self._went_through(batch, ids):  # done for the destinations not paused: they wait for the others
            return None
        self._forget_releases(ids)
        self.ledger.complete_events(ids, worker=self.name)
        self.processed_ids.extend(ids)
        self.completed += len(ids)
        self.metrics.event_outcome("done", len(ids))
        return None

    def _failed(self, batch: Batch, failure: Exception) -> None:
        """The batch's events go back to the queue: uncounted when the failure was not theirs
        (:func:`retry_later`: the worker backs off first), else counted (a guard's refusal: failed at once)."""
        ids = [ev.id for ev in batch.events]
        error = _text(failure)
        if isinstance(failure, LockBusyError):
            self._waited(batch, ids, error)
            return
        if self._pause(failure):  # one destination rate limited: the next claim resyncs for the others
            self._waited(batch, ids, error, "the other destinations (one rate limited)")
            return
        if retry_later(failure):
            wait = self._back_off(failure)
            not_believed(failure, self.metrics, self.name, self._now().timestamp())
            told = getattr(failure, "retry_after", None)
            asked = "" if told is None else (f"{getattr(failure, 'destination', None) or 'the vendor'} asked to wait "
                                              f"{float(told):.0f} s (at most {RETRY_AFTER_MAX:.0f} s waited); ")
            config = isinstance(failure, CONFIG_ERRORS)
            if config:  # shown by GET /healthz and the metrics until a resync goes through; logged, kept as the
                # events' last error: the settings' secrets masked in all (a vendor's message may quote the key)
                error = redact(error, self.settings.secret_values() if self.settings is not None else [])
                self.metrics.config_wait(self.name, error, self._now().timestamp())
            self._waited(batch, ids, f"{error} ({asked}looking again in {wait:.0f} s)",
                         CONFIG_WAIT if config else "the outage to end")
            return
        if isinstance(failure, GuardRefusedError):
            # the records are in the order store already; retrying gives the same answer: the next full
            # sync (with --allow-mass-change if the change is wanted) pushes them
            self.metrics.guard_refused(failure.destinations)
            self._forget_releases(ids)
            self.ledger.fail_events(ids, error, max_attempts=1, worker=self.name)
            self.metrics.event_outcome("failed", len(ids))
            log.error("resync of %d events refused by a guard (%s): %s", len(ids),
                      "only consent withdrawals written" if failure.applied else "nothing written", error)
            return
        self._counted(batch, failure)

    def _counted(self, batch: Batch, failure: Exception, wait: float | None = None, quiet: bool = False) -> int:
        """The batch's events failed for a reason of their own: each spends an attempt (failed at the last, at
        once after a guard's refusal); ``wait``: seconds nobody claims those still queued (the worker's
        back-off after a claim that made no progress, :meth:`Bisection._claim_end`). ``quiet``: the caller logs.
        Returns the events given up."""
        if isinstance(failure, GuardRefusedError):
            self._failed(batch, failure)
            return len(batch.events)
        ids = [ev.id for ev in batch.events]
        error = _text(failure)
        self._forget_releases(ids)
        self.ledger.fail_events(ids, error, max_attempts=self.max_attempts, worker=self.name, wait_seconds=wait)
        exhausted = sum(ev.attempts >= self.max_attempts for ev in batch.events)
        self._poisons.difference_update(ev.id for ev in batch.events if ev.attempts >= self.max_attempts)
        self.metrics.event_outcome("failed", exhausted)
        self.metrics.event_outcome("retried", len(ids) - exhausted)
        if not quiet:
            log.warning("resync of %d events failed (they stay queued, %d given up): %s", len(ids), exhausted, error)
        return exhausted

    def _back_off(self, failure: BaseException) -> float:
        """Wait before the next claim after a failure of the ESP, the source or the ledger: an exponential back-off
        with jitter from :data:`BACKOFF_BASE` up to :data:`BACKOFF_MAX`, or the vendor's ``Retry-After`` when it is
        longer (parsed by the retry layer, :func:`connectors.retry.retry_after_seconds`), up to
        :data:`RETRY_AFTER_MAX` (a resync is every destination's: one ESP's day-long wait must not run the others'
        events into the give-up; the call after it is one 429 more). A "retry now" (0, a date gone by) waits the
        back-off, as the retry layer's does: a vendor saying it again and again is not asked every 5 s. The seconds."""
        self._outages += 1
        wait = self._wait_for(failure, self._outages)
        self.retry_at = self._clock() + wait
        return wait

    def _wait_for(self, failure: BaseException, in_a_row: int) -> float:
        """The seconds to wait after the ``in_a_row``-th such failure (:meth:`_back_off`)."""
        ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (in_a_row - 1))
        own = self._rng.uniform(ceiling / 2, ceiling)
        told = getattr(failure, "retry_after", None)  # "retry now" (0, a date gone by) never waits less than our own
        return own if told is None else min(max(float(told), own), RETRY_AFTER_MAX)

    def backing_off(self) -> float:
        """Seconds left before this worker claims again after a transient failure (0: none)."""
        return max(0.0, self.retry_at - self._clock()) if self.retry_at is not None else 0.0

    def _waited(self, batch: Batch, ids: list[int], error: str, why: str = "another run",
                wait: float | None = None) -> None:
        """Another run holds the destination (a long cron sync) or the order store, or (``why``) the ESP, the
        source or the ledger failed the transient way: the batch waits its turn, and the claim does not count
        towards max_attempts (it would be given up during a long sync or an outage). ``wait``: seconds nobody
        claims them (a back-off of their own, the worker's not touched: no claim, release and log line at every
        debounce while it lasts). An event that waited ``give_up_waiting_after`` since it was accepted (a lock
        that never frees) is given up, failed and kept, with the batch's events that hold one of its records
        (replayed later on its own, it would undo their newer version); the batch's other events (a batch is
        formed again at each claim) wait on."""
        now = self._now()
        waited = {ev.id: (now - ev.received_at).total_seconds() for ev in batch.events}
        gone = given_up(batch, ids, waited, self.give_up_waiting_after)
        old = [i for i in ids if i in gone]
        if old:
            self._forget_releases(old)
            longest = max(waited[i] for i in old)
            self.ledger.fail_events(old, f"gave up waiting for {why} after {longest / 3600:.1f} h: {error}",
                                    max_attempts=1, worker=self.name)
            self.metrics.event_outcome("failed", len(old))
            log.error("resync of %d events given up (marked failed, kept): they waited %.1f h for %s in vain: "
                      "%s; Ledger.requeue_failed_events() replays them", len(old), longest / 3600, why, error)
        rest = [i for i in ids if i not in gone]
        if not rest:
            if not self.ledger.claimable_count(self.stale_after):  # nothing left to wait: /healthz shows no wait
                self.metrics.waits_over(self.name)
            return
        self.ledger.release_events(rest, error, worker=self.name, wait_seconds=wait)
        self._leased.difference_update(rest)
        self._releases.update(rest)
        self.metrics.event_outcome("retried", len(rest))
        times = max(self._releases[i] for i in rest)
        level = logging.ERROR if why == CONFIG_WAIT else \
            logging.WARNING if times % RELEASE_WARNING_EVERY == 0 else logging.INFO
        log.log(level, "resync of %d events waits for %s (they stay queued; released %d times, %.0f min "
                "since accepted, given up after %.1f h): %s", len(rest), why, times, max(waited[i] for i in rest) / 60,
                self.give_up_waiting_after / 3600, error)

    def _forget_releases(self, ids: list[int]) -> None:
        """These events are settled (done, failed): no release counted, no lease renewed any more."""
        self._leased.difference_update(ids)
        for i in ids:
            self._releases.pop(i, None)

    def _heartbeat(self, done: threading.Event) -> None:
        """Renew the lease on the events of the batch in hand not settled yet (:attr:`_leased`, which shrinks
        as a bisection settles them) until ``done`` (the batch finished)."""
        while not done.wait(self.heartbeat_seconds):
            ids = list(self._leased)
            try:
                kept = self.ledger.renew_claims(self.name, ids)
            except Exception as exc:  # ledger briefly unreachable: try again at the next beat
                log.warning("worker %s: cannot renew the lease on %d events: %s", self.name, len(ids), exc)
                continue
            lost = len(self._leased.intersection(ids)) - kept  # (those settled meanwhile were not renewed)
            if lost > 0:
                log.warning("worker %s: %d of %d events were taken over by another worker (lease expired)",
                            self.name, lost, len(ids))

    # -- loop ------------------------------------------------------------------------------

    def drain(self) -> int:
        """Process until nothing is queued (no debounce) or a transient failure makes the worker back off;
        returns the events completed (marked done)."""
        done = 0
        while not self.backing_off() and self.ledger.claimable_count(self.stale_after):
            done += self.process_batch()
            if self.idle:  # only suspects queued, within their back-off
                break
        return done

    def run_forever(self, stop: threading.Event) -> None:
        """Poll the queue until ``stop`` is set; debounce from the moment queued events are first seen."""
        pending_since: float | None = None
        self.stopping = stop
        log.info("worker %s: draining the queue (debounce %.1fs)", self.name, self.debounce)
        while not stop.is_set():
            wait = self.backing_off()
            if wait:  # an outage (the ESP, the source, the ledger): nobody claims until it is over
                stop.wait(wait)
                continue
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
                if retry_later(exc):  # the claim itself failed (the disk full, the ledger gone): back off
                    log.warning("worker %s: cannot claim or settle events: %s; looking again in %.0fs", self.name,
                                exc, self._back_off(exc))
                    continue
                log.exception("worker %s: batch failed: %s", self.name, exc)
                stop.wait(self.poll)
        log.info("worker %s: stopped", self.name)
