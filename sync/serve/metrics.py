"""The counters of ``rfmsync serve`` and their ``GET /metrics`` page (Prometheus text format 0.0.4).

:class:`Metrics` counts in plain dicts under one lock (cheap on the hot path, and a snapshot is plain JSON that
the worker process sends to its intake process once a second: :meth:`Metrics.snapshot` /
:meth:`Metrics.set_remote`). ``prometheus-client`` renders them: each :class:`Metrics` has its own
:class:`~prometheus_client.CollectorRegistry` (never the library's global one, so tests and several servers in one
process do not collide) holding one custom collector that reads the local counters merged with the remote
snapshots at scrape time; :func:`exposition` writes the page.

The families (their names, types and labels are public: dashboards and alerts use them):

======================================================  ==========  =======================================
``rfmsync_queue_depth``                                 gauge       events queued or processing
``rfmsync_queue_events{status}``                        gauge       events per status
``rfmsync_webhooks_received_total{source,code}``        counter     deliveries by source and reply code
``rfmsync_events_processed_total{outcome}``             counter     ``done``, ``retried``, ``failed``
``rfmsync_resyncs_total{outcome}``                      counter     ``ok``, ``error``
``rfmsync_resync_seconds``                              histogram   time of one incremental resync
``rfmsync_resync_rows_read_total{part}``                counter     rows resyncs read: ``store``, ``ledger``
``rfmsync_webhook_stale_versions_total{kind}``          counter     ``order``/``contact`` versions left out:
                                                                    the store or the batch held a newer one
``rfmsync_esp_operations_total{destination,outcome}``   counter     contact changes pushed, ``ok``/``failed``
``rfmsync_esp_errors_total{destination}``               counter     resyncs and scheduled syncs it failed
``rfmsync_scheduled_syncs_total{outcome}``              counter     ``ok``, ``error``, ``skipped``, ``refused``, ``killed``,
                                                                    ``scheduler_error`` (a tick failed)
``rfmsync_guard_refusals_total{destination}``           counter     runs a guard refused (nothing written)
``rfmsync_config_wait_since_seconds``                   gauge       Unix time since when the worker waits for
                                                                    the config to be fixed (0: it does not)
======================================================  ==========  =======================================
"""

from __future__ import annotations

import bisect
import json
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from .resync import ResyncReport

#: The media type of :meth:`Metrics.render` (the classic text format, which is what it writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CONFIG_ERROR_CHARS = 500  # the longest config error /healthz shows
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Counters with one label (snapshot key → family, help, label), before and after the ESP families.
_RESYNC_COUNTERS = {
    "events": ("rfmsync_events_processed", "Queued events finished by this process.", "outcome"),
    "resyncs": ("rfmsync_resyncs", "Incremental resyncs by outcome.", "outcome"),
    "rows_read": ("rfmsync_resync_rows_read",
                  "Rows incremental resyncs read: order store rows scanned, ledger rows read.", "part"),
    "stale": ("rfmsync_webhook_stale_versions",
              "Webhook versions of an order or contact left out as older than the version held, or deleted for good.",
              "kind"),
}
_RUN_COUNTERS = {
    "esp_errors": ("rfmsync_esp_errors", "Resyncs and scheduled syncs a destination failed (after retries).",
                   "destination"),
    "scheduled": ("rfmsync_scheduled_syncs", "Scheduled full syncs by outcome.", "outcome"),
    "refused": ("rfmsync_guard_refusals",
                "Runs a guard refused before any ESP write (scheduled syncs, webhook resyncs) by destination.",
                "destination"),
}
_DICTS = ("events", "resyncs", "rows_read", "stale", "esp_errors", "scheduled", "refused")


class Metrics:
    """Thread-safe counters of one process, plus the latest snapshots of this server's other processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.webhooks: dict[tuple[str, int], int] = {}  # (source, status code) → deliveries
        self.events: dict[str, int] = {"done": 0, "retried": 0, "failed": 0}
        self.resyncs: dict[str, int] = {"ok": 0, "error": 0}
        self.rows_read: dict[str, int] = {"store": 0, "ledger": 0}
        self.stale: dict[str, int] = {"order": 0, "contact": 0}  # kind → versions left out as stale
        self.esp_ops: dict[tuple[str, str], int] = {}  # (destination, ok|failed) → operations
        self.esp_errors: dict[str, int] = {}  # destination → resyncs that failed at the ESP
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.scheduled: dict[str, int] = {"ok": 0, "error": 0, "skipped": 0, "refused": 0}
        self.refused: dict[str, int] = {}  # destination → runs a guard refused (scheduled, webhook)
        #: worker → [error (secrets masked), since (Unix time)]: workers waiting for the config to be fixed
        self.config_waits: dict[str, list] = {}
        #: worker → [error, since]: workers whose batch waits on an ESP's 2xx answer not believed (a proxy's page)
        self.not_believed: dict[str, list] = {}
        #: "scheduler" → [error (secrets masked), since (Unix time), ticks failed in a row]: a scheduler failing
        self.scheduler_failing: dict[str, list] = {}
        self._remote: list[dict] = []  # snapshots of other processes of this server (the worker process)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CountersCollector(self))

    # -- the snapshots the worker process sends --------------------------------------------

    def snapshot(self) -> dict:
        """This process's counters as plain JSON (sent by a worker process to its intake process)."""
        with self._lock:
            return json.loads(json.dumps(self._snapshot_unlocked()))

    def set_remote(self, snapshots: list[dict]) -> None:
        """The latest snapshots of this server's other processes, added in :meth:`render`."""
        with self._lock:
            self._remote = list(snapshots)

    def merged(self) -> dict:
        """The local counters plus the remote snapshots, as one snapshot (the shape of :meth:`snapshot`)."""
        with self._lock:
            snaps = [self._snapshot_unlocked(), *self._remote]
            out: dict[str, Any] = {"webhooks": {}, "esp_ops": {}, **{name: {} for name in _DICTS},
                                   "latency_counts": [0] * len(self.latency_counts), "latency_sum": 0.0,
                                   "config_waits": {}, "not_believed": {}, "scheduler_failing": {}}
            for snap in snaps:
                for key in ("config_waits", "not_believed", "scheduler_failing"):
                    out[key].update(snap.get(key, {}))  # (workers' names are unique)
                for key in ("webhooks", "esp_ops"):
                    for a, b, n in snap.get(key, ()):
                        out[key][(a, b)] = out[key].get((a, b), 0) + n
                for name in _DICTS:
                    for k, n in snap.get(name, {}).items():
                        out[name][k] = out[name].get(k, 0) + n
                for i, n in enumerate(snap.get("latency_counts", ())[:len(out["latency_counts"])]):
                    out["latency_counts"][i] += n
                out["latency_sum"] += snap.get("latency_sum", 0.0)
        return out

    def _snapshot_unlocked(self) -> dict:
        return {"webhooks": [[s, c, n] for (s, c), n in self.webhooks.items()], "events": self.events,
                "resyncs": self.resyncs, "rows_read": self.rows_read, "stale": self.stale, "esp_ops": [[d, o, n] for (d, o), n in self.esp_ops.items()],
                "esp_errors": self.esp_errors, "latency_counts": self.latency_counts,
                "latency_sum": self.latency_sum, "scheduled": self.scheduled, "refused": self.refused,
                "config_waits": self.config_waits, "not_believed": self.not_believed,
                "scheduler_failing": self.scheduler_failing}

    # -- counting ------------------------------------------------------------------------------

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
            if report is not None:
                self.rows_read["store"] += report.store_rows_read
                self.rows_read["ledger"] += report.ledger_rows_read
                for kind, n in report.stale.items():
                    self.stale[kind] = self.stale.get(kind, 0) + n
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

    def config_wait(self, worker: str, error: str, since: float, *, waits: str = "config_waits") -> bool:
        """``worker`` waits for the config to be fixed (``error``: its secrets masked by the caller, clipped here),
        since ``since`` (Unix time) or since its first such wait in a row. ``waits="not_believed"``: for an ESP's
        answers to be believed again (:meth:`waiting_for_config` of that kind). Whether it is that first wait."""
        with self._lock:
            first = getattr(self, waits).get(worker)
            getattr(self, waits)[worker] = [error[:CONFIG_ERROR_CHARS], first[1] if first else since]
            return first is None

    def waits_over(self, worker: str) -> None:
        """``worker`` has nothing left to resync (the give-up failed what waited): it waits for no answer to be
        believed any more. A config wait stays (the config is still wrong: an alert on it must not clear)."""
        with self._lock:
            self.not_believed.pop(worker, None)

    def config_fixed(self) -> None:
        """A resync of a worker of this process went through: the config (the process's one) is fixed, none of its
        workers waits for it any more (another one that met the error would otherwise show a wait until its own
        next resync went through, for as long as it made none)."""
        with self._lock:
            self.config_waits.clear()
            self.not_believed.clear()

    def waiting_for_config(self, waits: str = "config_waits") -> dict[str, Any] | None:
        """This server's longest wait for the config to be fixed (its workers here and in the worker process):
        ``{"since": ISO 8601, "error": text, "workers": n}``, or None when no worker waits. ``waits=
        "not_believed"``: its longest wait for an ESP's answers to be believed again, the same way."""
        waits = self.merged()[waits]
        if not waits:
            return None
        error, since = min(waits.values(), key=lambda w: w[1])
        return {"since": datetime.fromtimestamp(since, timezone.utc).isoformat(), "error": error,
                "workers": len(waits)}

    def scheduler_failed(self, error: str, since: float, failed: int) -> None:
        """A scheduler's tick failed (``error``: its secrets masked by the caller, clipped here) at ``since`` (Unix
        time), the ``failed``-th in a row (the first one's time is kept)."""
        with self._lock:
            first = self.scheduler_failing.get("scheduler")
            self.scheduler_failing["scheduler"] = [error[:CONFIG_ERROR_CHARS], first[1] if first else since, failed]

    def scheduler_ok(self) -> None:
        """A scheduler's tick went through: it is not failing (any more)."""
        with self._lock:
            self.scheduler_failing.clear()

    def scheduler_failure(self) -> dict[str, Any] | None:
        """``{"since": ISO 8601, "error": the last failure, "failed_ticks": n}`` while this server's scheduler (here
        or in the worker process) fails its ticks in a row, else None."""
        failing = self.merged()["scheduler_failing"].get("scheduler")
        if not failing:
            return None
        error, since, failed = failing
        return {"since": datetime.fromtimestamp(since, timezone.utc).isoformat(), "error": error,
                "failed_ticks": failed}

    def scheduled_run(self, outcome: str) -> None:
        with self._lock:
            self.scheduled[outcome] = self.scheduled.get(outcome, 0) + 1

    # -- the page --------------------------------------------------------------------------------

    def render(self, queue: Mapping[str, int] | None = None) -> str:
        """The Prometheus text of the ledger's queue (``queue``: event counts by status, None when the ledger
        cannot be read), then of this process's counters plus those of :meth:`set_remote`."""
        collectors: list[Collector] = [QueueCollector(queue)] if queue is not None else []
        return exposition([*collectors, self.registry])


def exposition(collectors: Iterable[Collector]) -> str:
    """The text format 0.0.4 of the collectors' families, as :func:`prometheus_client.generate_latest` writes it
    except for one thing: label names keep the order their family declares. ``generate_latest`` sorts them, which
    would turn the published ``{source="…",code="…"}`` into ``{code="…",source="…"}`` (the same series for
    Prometheus, but not for the scripts and tests that read the page as text)."""
    out: list[str] = []
    for collector in collectors:
        for family in collector.collect():
            name = family.name + "_total" if family.type == "counter" else family.name
            help_ = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {name} {help_}\n# TYPE {name} {family.type}\n")
            for sample in family.samples:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
                out.append(f"{sample.name}{{{labels}}} " if labels else f"{sample.name} ")
                out.append(floatToGoString(sample.value) + "\n")
    return "".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r'\"').replace("\n", r"\n")


class CountersCollector(Collector):
    """The counter and histogram families of one :class:`Metrics`, read at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self.metrics.merged()
        hooks = CounterMetricFamily("rfmsync_webhooks_received", "Webhook deliveries by source and HTTP status.",
                                    labels=["source", "code"])
        for (source, code), n in sorted(snap["webhooks"].items()):
            hooks.add_metric([source, str(code)], n)
        yield hooks
        for key, (name, help_, label) in _RESYNC_COUNTERS.items():
            yield _by_label(name, help_, label, snap[key])
        yield _latency(snap["latency_counts"], snap["latency_sum"])
        ops = CounterMetricFamily(
            "rfmsync_esp_operations",
            "Contact changes pushed to the ESP (webhook resyncs, scheduled syncs) by destination and outcome.",
            labels=["destination", "outcome"])
        for (destination, outcome), n in sorted(snap["esp_ops"].items()):
            ops.add_metric([destination, outcome], n)
        yield ops
        for key, (name, help_, label) in _RUN_COUNTERS.items():
            yield _by_label(name, help_, label, snap[key])
        yield GaugeMetricFamily("rfmsync_config_wait_since_seconds",
                                "Unix time since when a webhook worker waits for the config to be fixed (a key "
                                "rejected, an audience missing); 0 when none does.",
                                value=min((w[1] for w in snap["config_waits"].values()), default=0))


class QueueCollector(Collector):
    """The two queue gauges for one reading of the ledger's event counts."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        depth = self.counts.get("queued", 0) + self.counts.get("processing", 0)
        yield GaugeMetricFamily("rfmsync_queue_depth", "Webhook events not processed yet (queued or processing).",
                                value=depth)
        events = GaugeMetricFamily("rfmsync_queue_events", "Webhook events in the ledger by status.",
                                   labels=["status"])
        for status, n in sorted(self.counts.items()):
            events.add_metric([status], n)
        yield events


def _by_label(name: str, help_: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_, labels=[label])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family


def _latency(counts: Sequence[int], total_seconds: float) -> HistogramMetricFamily:
    cum, buckets = 0, []
    for bound, n in zip(LATENCY_BUCKETS, counts):
        cum += n
        buckets.append((f"{bound:g}", cum))
    buckets.append(("+Inf", cum + counts[-1]))
    return HistogramMetricFamily("rfmsync_resync_seconds",
                                 "Time of one incremental resync (store, segment, plan, apply).",
                                 buckets=buckets, sum_value=total_seconds)
