"""`GET /metrics`: a page Prometheus' own parser reads, with every documented family, type and label."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sync.engine import ApplyReport
from sync.serve.metrics import Metrics
from sync.serve.resync import ResyncReport

ROOT = Path(__file__).resolve().parents[1]

#: every family of the page: name as written → (type, label names of its samples)
FAMILIES = {
    "rfmsync_queue_depth": ("gauge", set()),
    "rfmsync_queue_events": ("gauge", {"status"}),
    "rfmsync_webhooks_received_total": ("counter", {"source", "code"}),
    "rfmsync_events_processed_total": ("counter", {"outcome"}),
    "rfmsync_resyncs_total": ("counter", {"outcome"}),
    "rfmsync_resync_rows_read_total": ("counter", {"part"}),
    "rfmsync_webhook_stale_versions_total": ("counter", {"kind"}),
    "rfmsync_resync_seconds": ("histogram", set()),
    "rfmsync_esp_operations_total": ("counter", {"destination", "outcome"}),
    "rfmsync_esp_errors_total": ("counter", {"destination"}),
    "rfmsync_scheduled_syncs_total": ("counter", {"outcome"}),
    "rfmsync_guard_refusals_total": ("counter", {"destination"}),
    "rfmsync_config_wait_since_seconds": ("gauge", set()),
}
ODD = 'we"ird\\dest\nname'  # a destination name that needs every escape of the text format


def documented_names() -> set[str]:
    """The metric names of the docs' tables (README.md and docs/, wherever the serve page lives)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return {name for page in pages if page.exists()
            for name in re.findall(r"^\|\s*`(rfmsync_[a-z_]+)", page.read_text(encoding="utf-8"), re.M)}


def busy_metrics() -> Metrics:
    """Counters of an intake process plus the snapshot of its worker process, every family non-empty."""
    intake, worker = Metrics(), Metrics()
    intake.webhook("generic", 202)
    intake.webhook("(unknown)", 404)
    worker.event_outcome("done", 3)
    worker.event_outcome("retried")
    report = ResyncReport(reports=[ApplyReport("mc", 1, "ok", {"planned": 2, "ok": 2, "failed": 0})])
    worker.resync_done(0.3, report)
    worker.resync_done(75.0, None, error="DestinationError: 503")
    worker.esp_error(ODD)
    worker.sync_reports([ApplyReport(ODD, 2, "failed", {"planned": 1, "ok": 0, "failed": 1})])
    worker.scheduled_run("refused")
    worker.guard_refused(["mc"])
    worker.config_wait("host:1:w", "DestinationConfigError: Mailchimp: audience 'aud9' not found", 1_750_000_000.0)
    intake.set_remote([worker.snapshot()])
    return intake


def test_the_page_parses_and_keeps_every_family_type_and_label():
    text = busy_metrics().render({"queued": 2, "processing": 1, "done": 7, "failed": 0})
    parsed = {f.name + ("_total" if f.type == "counter" else ""): f for f in text_string_to_metric_families(text)}
    assert {name: f.type for name, f in parsed.items()} == {name: kind for name, (kind, _) in FAMILIES.items()}
    for name, (kind, labels) in FAMILIES.items():
        samples = parsed[name].samples
        assert samples, name
        if kind == "histogram":
            assert {s.name for s in samples} == {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
            assert all(set(s.labels) == ({"le"} if s.name.endswith("_bucket") else set()) for s in samples)
        else:
            assert all(set(s.labels) == labels for s in samples), name

    def value(name: str, **labels: str) -> float:
        return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == name and s.labels == labels)

    assert value("rfmsync_queue_depth") == 3
    assert value("rfmsync_webhooks_received_total", source="generic", code="202") == 1
    assert value("rfmsync_events_processed_total", outcome="done") == 3  # from the worker process's snapshot
    assert value("rfmsync_resync_seconds_bucket", le="0.5") == 1 and value("rfmsync_resync_seconds_count") == 2
    assert value("rfmsync_resync_seconds_bucket", le="+Inf") == 2 and value("rfmsync_resync_seconds_sum") == 75.3
    assert value("rfmsync_esp_operations_total", destination="mc", outcome="ok") == 2
    assert value("rfmsync_esp_operations_total", destination=ODD, outcome="failed") == 1
    assert value("rfmsync_esp_errors_total", destination=ODD) == 2  # the resync's and the scheduled sync's
    assert value("rfmsync_scheduled_syncs_total", outcome="refused") == 1
    assert value("rfmsync_guard_refusals_total", destination="mc") == 1
    assert value("rfmsync_config_wait_since_seconds") == 1_750_000_000.0


def test_every_metric_the_docs_list_is_on_the_page():
    documented = documented_names()
    assert len(documented) >= 9, documented  # the docs' metrics table was found
    assert documented <= set(FAMILIES)


def test_each_metrics_counts_alone_and_never_in_the_global_registry():
    busy = busy_metrics()
    assert 'rfmsync_webhooks_received_total{source="generic",code="202"} 1.0' in busy.render()
    fresh = {s.name: s.value for f in text_string_to_metric_families(Metrics().render()) for s in f.samples}
    assert fresh["rfmsync_resync_seconds_count"] == 0 and "rfmsync_webhooks_received_total" not in fresh
    assert "rfmsync_" not in generate_latest(REGISTRY).decode()
