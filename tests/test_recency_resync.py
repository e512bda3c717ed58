"""A webhook resync rescoring against the cut points of a full run whose recency scores collapsed
(docs/safety.md, guard ``recency_scores``): refused, the run recorded ``refused``, nothing written. The collapse is
saved with the cut points in the store; the resync's own first full segmentation (no full run yet) is judged too.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pytest

from connectors.records import Order
from segmentation import Thresholds
from sync.config import load_config
from sync.errors import GuardRefusedError
from sync.ingest import load_last_full_run
from sync.ledger import open_ledger
from sync.serve.resync import resync
from sync.settings import load_settings

from .test_recency_collapse import AS_OF, GUARD, SHOP_AS_OF, cli, fake, write_orders, young  # noqa: F401

ONE_ORDER = [Order(order_id="hook-1", customer_id="c3", amount=Decimal("99.00"),
                   ordered_at=datetime(2025, 6, 30, 12, tzinfo=timezone.utc))]


def resync_refused(cfg_path) -> str:
    cfg, settings = load_config(cfg_path), load_settings()
    with open_ledger(cfg, settings) as ledger, pytest.raises(GuardRefusedError) as refused:
        resync(cfg, ledger, settings, ONE_ORDER, as_of=AS_OF)
    return str(refused.value)


def webhook_runs(cfg_path) -> list[dict]:
    return [r for r in json.loads(cli("runs", "--config", str(cfg_path), "--format", "json").output)
            if r["kind"] == "webhook"]


def test_a_resync_after_a_refused_first_sync_is_refused_too(tmp_path, fake):
    cfg = write_orders(tmp_path / "young", young)
    assert GUARD in cli("sync", "--config", str(cfg), "--as-of", SHOP_AS_OF, code=6).output
    error = resync_refused(cfg)
    assert GUARD in error and "webhook resyncs wait for a full sync" in error
    assert fake.write_calls == 0 and not fake.lists["aud1"].members, "the resync tagged the newest buyer as lost"
    [run] = webhook_runs(cfg)
    assert run["status"] == "refused" and run["destination"] == "mc" and GUARD in run["error"]


def test_a_resync_after_a_sync_let_through_stays_refused(tmp_path, fake):
    # --allow-mass-change lifts the guard for that run only; the webhook path never overrides a guard
    cfg = write_orders(tmp_path / "young", young)
    cli("sync", "--config", str(cfg), "--as-of", SHOP_AS_OF, "--allow-mass-change")
    writes = fake.write_calls
    assert GUARD in resync_refused(cfg)
    assert fake.write_calls == writes


def test_the_resyncs_own_first_full_segmentation_is_judged(tmp_path, fake):
    cfg = write_orders(tmp_path / "young", young)
    cli("pull", "--config", str(cfg))  # the store holds the shop; no full run has saved cut points
    assert GUARD in resync_refused(cfg)
    assert fake.write_calls == 0 and not fake.lists["aud1"].members


def test_a_resync_of_a_normal_shop_goes_through(tmp_path, fake):
    cfg = write_orders(tmp_path / "shop", lambda i: [i, i + 40, i + 80])
    cli("sync", "--config", str(cfg), "--as-of", SHOP_AS_OF)
    cfg_, settings = load_config(cfg), load_settings()
    with open_ledger(cfg_, settings) as ledger:
        report = resync(cfg_, ledger, settings, ONE_ORDER, as_of=AS_OF)
    assert report.customers == 1 and [r.counts.get("failed", 0) for r in report.reports] == [0]
    assert [r["status"] for r in webhook_runs(cfg)] == ["succeeded"]


def test_a_store_saved_by_an_older_version_loads_with_no_collapse(tmp_path):
    # segmentation_runs without the recency_collapse column: its cut points load, the column is added on save
    con = duckdb.connect(str(tmp_path / "store.duckdb"))
    con.execute("CREATE TABLE segmentation_runs (as_of DATE, preset VARCHAR, levels INTEGER, cut_points JSON, "
                "customers BIGINT, created_at TIMESTAMPTZ DEFAULT now())")
    cuts = Thresholds(recency_days=[30, 90], frequency=[2, 3], monetary=[12, 14])
    con.execute("INSERT INTO segmentation_runs (as_of, preset, levels, cut_points, customers) VALUES "
                "('2025-06-30', 'tracks', 3, ?, 10)", [json.dumps(cuts.model_dump())])
    assert load_last_full_run(con) == (cuts, None)
    from types import SimpleNamespace

    from segmentation.scoring import RecencyCollapse
    from sync.ingest import save_cut_points

    collapse = RecencyCollapse(customers=9, total=10, days=0, score=1, levels=3)
    save_cut_points(con, SimpleNamespace(result=SimpleNamespace(as_of=AS_OF, preset="tracks", levels=3, customers=10,
                                                                cut_points=cuts, recency_collapse=collapse)))
    assert load_last_full_run(con) == (cuts, collapse)


def _with_won_back(cfg_path):
    cfg_path.write_text(cfg_path.read_text() + '\n[destinations.transitions]\n"Churn -> *" = "won-back"\n')
    return cfg_path


def test_a_refused_resync_records_no_segment_history_and_no_transition_follows(tmp_path, fake):
    # the refused resync's scores are the collapsed ones (c3 in Churn): recorded, the next sync would read a
    # "Churn -> ..." move of a buyer who never churned and push it "won-back"
    cfg = _with_won_back(write_orders(tmp_path / "shop", lambda i: [i, i + 40, i + 80]))
    cli("sync", "--config", str(cfg), "--as-of", (AS_OF - timedelta(days=1)).isoformat())
    _with_won_back(write_orders(tmp_path / "shop", lambda i: [0, 0, 0]))  # the export date in the date column
    cli("sync", "--config", str(cfg), "--as-of", SHOP_AS_OF, code=6)  # refused; its cut points saved collapsed
    assert GUARD.split(":")[0] in resync_refused(cfg)
    con = duckdb.connect(str(tmp_path / "shop" / "rfmsync.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT segment, valid_from FROM segment_history WHERE customer_id = 'c3'").fetchall()
        records = con.execute("SELECT source FROM segment_history_records").fetchall()
    finally:
        con.close()
    assert len(rows) == 1 and records == [("sync",)], f"the refused resync recorded c3's scores: {rows}, {records}"
    _with_won_back(write_orders(tmp_path / "shop", lambda i: [i, i + 40, i + 80]))  # the export fixed
    cli("sync", "--config", str(cfg), "--as-of", (AS_OF + timedelta(days=1)).isoformat())
    assert fake.tags_of("c3@example.org") and "won-back" not in fake.tags_of("c3@example.org")


def test_an_applied_resync_records_its_customers_in_the_segment_history(tmp_path, fake):
    cfg = write_orders(tmp_path / "shop", lambda i: [i, i + 40, i + 80])
    cli("sync", "--config", str(cfg), "--as-of", (AS_OF - timedelta(days=1)).isoformat())
    cfg_, settings = load_config(cfg), load_settings()
    with open_ledger(cfg_, settings) as ledger:
        resync(cfg_, ledger, settings, ONE_ORDER, as_of=AS_OF)
    con = duckdb.connect(str(tmp_path / "shop" / "rfmsync.duckdb"), read_only=True)
    try:
        records = con.execute("SELECT as_of, source, customers FROM segment_history_records ORDER BY as_of").fetchall()
    finally:
        con.close()
    assert records[-1][:2] == (AS_OF, "webhook")
