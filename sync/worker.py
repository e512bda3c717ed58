"""The resync worker: drains the ledger's webhook queue with a debounce window.

Any number of workers (threads, processes, hosts) may share one ledger: ``claim_events`` hands each event to
exactly one of them (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite ``BEGIN IMMEDIATE``). A worker waits
``debounce_seconds`` after it first sees queued events, so a burst becomes one resync, then claims everything
queued and hands it to :func:`sync.resync.resync`. Events are marked done only after the resync succeeded;
on an error they go back to the queue (up to ``max_attempts`` claims, then ``failed``). A claim is a lease of
``stale_after`` seconds that the working worker renews by heartbeat: events of a killed worker on another host
become claimable when the lease lapses, those of a killed process on this host at once; queued events simply
wait for the next worker, so nothing accepted is lost across a restart.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from connectors.records import Contact, Order

from .config import Config
from .ledger import Event, Ledger, default_owner
from .ledger.codec import decode_records
from .resync import ResyncReport, resync
from .settings import Settings

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Thread-safe counters of one process, rendered in the Prometheus text format (version 0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.webhooks: dict[tuple[str, int], int] = {}  # (source, status code) → deliveries
        self.events: dict[str, int] = {"done": 0, "retried": 0, "failed": 0}
        self.resyncs: dict[str, int] = {"ok": 0, "error": 0}
        self.esp_ops: dict[tuple[str, str], int] = {}  # (destination, ok|failed) → operations
        self.esp_errors: dict[str, int] = {}  # destination → resyncs that failed at the ESP
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.scheduled: dict[str, int] = {"ok": 0, "error": 0, "skipped": 0, "refused": 0}
        self.refused: dict[str, int] = {}  # destination → runs a guard refused (scheduled, webhook)
        self._remote: list[dict] = []  # snapshots of other processes of this server (the worker process)

    def snapshot(self) -> dict:
        """This process's counters as plain JSON (sent by a worker process to its intake process)."""
        with self._lock:
            return json.loads(json.dumps(self._snapshot_unlocked()))

    def set_remote(self, snapshots: list[dict]) -> None:
        """The latest snapshots of this server's other processes, added in :meth:`render`."""
        with self._lock:
            self._remote = list(snapshots)

    def _merged(self) -> Metrics:
        """Local counters plus the remote snapshots (called with the lock held)."""
        out = Metrics()
        for snap in [self._snapshot_unlocked()] + self._remote:
            for s, c, n in snap.get("webhooks", ()):
                out.webhooks[(s, c)] = out.webhooks.get((s, c), 0) + n
            for d, o, n in snap.get("esp_ops", ()):
                out.esp_ops[(d, o)] = out.esp_ops.get((d, o), 0) + n
            for name in ("events", "resyncs", "esp_errors", "scheduled", "refused"):
                target = getattr(out, name)
                for k, n in snap.get(name, {}).items():
                    target[k] = target.get(k, 0) + n
            for i, n in enumerate(snap.get("latency_counts", ())[:len(out.latency_counts)]):
                out.latency_counts[i] += n
            out.latency_sum += snap.get("latency_sum", 0.0)
        return out

    def _snapshot_unlocked(self) -> dict:
        return {"webhooks": [[s, c, n] for (s, c), n in self.webhooks.items()], "events": self.events,
                "resyncs": self.resyncs, "esp_ops": [[d, o, n] for (d, o), n in self.esp_ops.items()],
                "esp_errors": self.esp_errors, "latency_counts": self.latency_counts,
                "latency_sum": self.latency_sum, "scheduled": self.scheduled, "refused": self.refused}

    def webhook(self, source: str, status: int) -> None:
        with self._lock:
            self.webhooks[(source, status)] = self.webhooks.get((source, status), 0) + 1

    def event_outcome(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.events[outcome] = self.events.get(outcome, 0) + n

    def resync_done(self, seconds: float, report: ResyncReport | None, error: str | None = None) -> None:
        with self._lock:
            self.resyncs["error" if error else "ok"] += 1
            self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum += seconds
            self._add_reports(report.reports if report else ())

    def sync_reports(self, reports: Sequence[Any]) -> None:
        """The apply reports of a scheduled full sync: their contact changes and failed destinations."""
        with self._lock:
            self._add_reports(reports)
            for r in reports:
                if r.status == "failed":
                    self.esp_errors[r.destination] = self.esp_errors.get(r.destination, 0) + 1

    def _add_reports(self, reports: Sequence[Any]) -> None:  # the caller holds the lock
        for r in reports:
            for outcome in ("ok", "failed"):
                key = (r.destination, outcome)
                self.esp_ops[key] = self.esp_ops.get(key, 0) + int(r.counts.get(outcome, 0))

    def esp_error(self, destination: str) -> None:
        with self._lock:
            self.esp_errors[destination] = self.esp_errors.get(destination, 0) + 1

    def guard_refused(self, destinations: Sequence[str]) -> None:
        """A guard refused a run (nothing written): one count per destination it was recorded for."""
        with self._lock:
            for d in destinations or ("(none)",):
                self.refused[d] = self.refused.get(d, 0) + 1

    def scheduled_run(self, outcome: str) -> None:
        with self._lock:
            self.scheduled[outcome] = self.scheduled.get(outcome, 0) + 1

    def render(self, queue: dict[str, int] | None = None) -> str:
        """The Prometheus text of this process's counters plus those of :meth:`set_remote`."""
        with self._lock:
            merged = self._merged() if self._remote else self
        return merged._render(queue)

    def _render(self, queue: dict[str, int] | None) -> str:
        def esc(v: str) -> str:
            return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: Sequence[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
                       for labels, value in samples)

        with self._lock:
            if queue is not None:
                metric("rfmsync_queue_depth", "gauge", "Webhook events not processed yet (queued or processing).",
                       [("", queue.get("queued", 0) + queue.get("processing", 0))])
                metric("rfmsync_queue_events", "gauge", "Webhook events in the ledger by status.",
                       [(f'{{status="{s}"}}', n) for s, n in sorted(queue.items())])
            metric("rfmsync_webhooks_received_total", "counter", "Webhook deliveries by source and HTTP status.",
                   [(f'{{source="{esc(s)}",code="{c}"}}', n) for (s, c), n in sorted(self.webhooks.items())])
            metric("rfmsync_events_processed_total", "counter", "Queued events finished by this process.",
                   [(f'{{outcome="{o}"}}', n) for o, n in sorted(self.events.items())])
            metric("rfmsync_resyncs_total", "counter", "Incremental resyncs by outcome.",
                   [(f'{{outcome="{o}"}}', n) for o, n in sorted(self.resyncs.items())])
            cum, samples = 0, []
            for bound, n in zip(LATENCY_BUCKETS, self.latency_counts):
                cum += n
                samples.append((f'_bucket{{le="{bound:g}"}}', cum))
            total = cum + self.latency_counts[-1]
            samples += [('_bucket{le="+Inf"}', total), ("_sum", float(self.latency_sum)), ("_count", total)]
            metric("rfmsync_resync_seconds", "histogram",
                   "Time of one incremental resync (store, segment, plan, apply).", samples)
            metric("rfmsync_esp_operations_total", "counter",
                   "Contact changes pushed to the ESP (webhook resyncs, scheduled syncs) by destination and outcome.",
                   [(f'{{destination="{esc(d)}",outcome="{o}"}}', n) for (d, o), n in sorted(self.esp_ops.items())])
            metric("rfmsync_esp_errors_total", "counter",
                   "Resyncs and scheduled syncs a destination failed (after retries).",
                   [(f'{{destination="{esc(d)}"}}', n) for d, n in sorted(self.esp_errors.items())])
            metric("rfmsync_scheduled_syncs_total", "counter", "Scheduled full syncs by outcome.",
                   [(f'{{outcome="{o}"}}', n) for o, n in sorted(self.scheduled.items())])
            metric("rfmsync_guard_refusals_total", "counter",
                   "Runs a guard refused before any ESP write (scheduled syncs, webhook resyncs) by destination.",
                   [(f'{{destination="{esc(d)}"}}', n) for d, n in sorted(self.refused.items())])
        return "\n".join(out) + "\n"


@dataclass
class Batch:
    """Decoded events handed to the resync function."""

    events: list[Event]
    orders: list[Order] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)
    pull: bool = False


ResyncFn = Callable[[Batch], ResyncReport | None]


class Worker:
    """Drains the queue. ``run_forever(stop)`` in a thread, or ``drain()`` once (tests, cron-style use).

    ``process`` defaults to the incremental resync of ``cfg``; pass another callable to observe batches.
    """

    def __init__(self, cfg: Config, ledger: Ledger, settings: Settings, *, name: str | None = None,
                 debounce_seconds: float | None = None, poll_seconds: float = 0.5, batch_limit: int = 1000,
                 max_attempts: int = 5, stale_after: float = 30.0, metrics: Metrics | None = None,
                 process: ResyncFn | None = None, as_of: Callable[[], object] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
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
        self._wake = threading.Event()
        self.processed_ids: list[int] = []  # events this worker completed (observability, tests)

    def wake(self) -> None:
        """New events were queued in this process: look now instead of at the next poll."""
        self._wake.set()

    def _resync(self, batch: Batch) -> ResyncReport:
        as_of = self._as_of() if self._as_of else None
        return resync(self.cfg, self.ledger, self.settings, batch.orders, batch.contacts, pull=batch.pull,
                      as_of=as_of)  # type: ignore[arg-type]

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
                self.ledger.fail_events([ev.id], str(exc), max_attempts=1)
                self.metrics.event_outcome("failed")
                continue
            batch.events.append(ev)
            batch.orders += orders
            batch.contacts += contacts
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
            error = f"{type(failure).__name__}: {failure}"
            self.metrics.resync_done(self._clock() - started, None, error)
            from .errors import DestinationError, GuardRefusedError

            if isinstance(failure, DestinationError):
                self.metrics.esp_error(getattr(failure, "destination", None) or "unknown")
            if isinstance(failure, GuardRefusedError):
                # the records are in the order store already; retrying gives the same answer: the next full
                # sync (with --allow-mass-change if the change is wanted) pushes them
                self.metrics.guard_refused(failure.destinations)
                self.ledger.fail_events(ids, error, max_attempts=1)
                self.metrics.event_outcome("failed", len(ids))
                log.error("resync of %d events refused by a guard (nothing written): %s", len(ids), error)
                return 0
            self.ledger.fail_events(ids, error, max_attempts=self.max_attempts)
            exhausted = sum(ev.attempts >= self.max_attempts for ev in batch.events)
            self.metrics.event_outcome("failed", exhausted)
            self.metrics.event_outcome("retried", len(ids) - exhausted)
            log.warning("resync of %d events failed (they stay queued, %d given up): %s", len(ids), exhausted,
                        error)
            return 0
        self.ledger.complete_events(ids)
        self.processed_ids += ids
        self.metrics.resync_done(self._clock() - started, report)
        self.metrics.event_outcome("done", len(ids))
        return len(ids)

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
