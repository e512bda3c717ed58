"""The page of a 1 M-customer shop holds aggregates only: under 2 MB, and no bigger than a 1 000-customer shop's
page but for longer numbers. The per-customer tables (segments, predictions, a 60-run segment history) are made
by DuckDB's ``range`` in about a second; the report's own queries then run over them as on a real shop. The
whole pipeline on a real 1 M-customer shop (orders → segments → models → page) is ``bench/report_size.py``."""

from __future__ import annotations

import time
from datetime import date

import duckdb

from segmentation.predictive import PredictReport
from segmentation.engine import SegmentationResult
from segmentation.rules import PRESETS
from segmentation.scoring import derive_cut_points
from segmentation.summary import summarise
from sync.config import Config
from sync.pipeline import SegmentsRun
from sync.report import report_html
from tests.test_report import HISTORY_DDL

AS_OF = date(2026, 6, 1)
LIMIT = 2_000_000
RUNS = 60


def synthetic_run(customers: int) -> SegmentsRun:
    """A classic-5 run (11 segments, 5 levels: the largest grid and navigator) of ``customers`` customers, with
    predictions and a recorded history of :data:`RUNS` runs in which every tenth customer moved once."""
    names = [name for name, _ in PRESETS["classic-5"].rules] + ["Other"]
    con = duckdb.connect()
    segs = "[" + ", ".join("'" + n.replace("'", "''") + "'" for n in names) + "]"
    con.execute(f"""
        CREATE TEMP TABLE customer_segments AS
        SELECT 'c' || i AS customer_id, CAST(hash(i) % 730 AS INTEGER) AS recency_days,
               1 + CAST(hash(i * 3) % 40 AS INTEGER) AS frequency,
               CAST((hash(i * 7) % 100000000) / 100 AS DECIMAL(18, 2)) AS monetary,
               1 + CAST(hash(i * 11) % 5 AS INTEGER) AS r, 1 + CAST(hash(i * 13) % 5 AS INTEGER) AS f,
               1 + CAST(hash(i * 17) % 5 AS INTEGER) AS m, {segs}[1 + CAST(hash(i * 19) % 11 AS INTEGER)] AS segment,
               TIMESTAMPTZ '2024-06-01 10:00:00+00' AS first_order_at,
               TIMESTAMPTZ '2026-06-01 10:00:00+00' - to_days(CAST(hash(i) % 730 AS INTEGER)) AS last_order_at
        FROM range({customers}) t(i);
        CREATE TEMP VIEW customer_metrics AS SELECT * FROM customer_segments;
        CREATE TEMP TABLE customer_predictions AS
        SELECT customer_id, ['low', 'medium', 'high', NULL][1 + CAST(hash(customer_id) % 4 AS INTEGER)] AS churn_risk,
               CAST(monetary * 1.3 AS DECIMAL(18, 2)) AS clv, frequency / 7.0 AS expected_purchases,
               DATE '2026-06-01' + CAST(hash(customer_id) % 400 AS INTEGER) - 300 AS next_order_date,
               hash(customer_id) % 400 < 302 AS reorder_due
        FROM customer_segments;
        {HISTORY_DDL}
        INSERT INTO segment_history_lines VALUES (1, 'classic-5', 'rules', DATE '2026-04-02');
        INSERT INTO segment_history_records
        SELECT 1, DATE '2026-04-02' + CAST(k AS INTEGER), 'sync', {customers}, now() FROM range({RUNS}) t(k);
        INSERT INTO segment_history
        SELECT 1, customer_id, segment, DATE '2026-04-02',
               CASE WHEN hash(customer_id) % 10 = 0 THEN DATE '2026-04-03' + CAST(hash(customer_id) % 59 AS INTEGER) END
        FROM customer_segments;
        INSERT INTO segment_history
        SELECT 1, customer_id, {segs}[1 + CAST(hash(customer_id || 'x') % 11 AS INTEGER)],
               DATE '2026-04-03' + CAST(hash(customer_id) % 59 AS INTEGER), NULL
        FROM customer_segments WHERE hash(customer_id) % 10 = 0;
    """)
    result = SegmentationResult(
        as_of=AS_OF, preset="classic-5", method="quantile", levels=5, customers=customers,
        segment_names=tuple(names[:-1]), summary=summarise(con, "customer_segments", tuple(names[:-1])),
        cut_points=derive_cut_points(con, "customer_segments", 5),
        boundary={"curve": [{"days": 7 * k, "p_return": round(0.9 ** k, 4)} for k in range(120)], "days": 112,
                  "reminder_day": 98, "gap_percentiles": {"p25": 20, "p50": 45, "p75": 90, "p90": 160}})
    report = PredictReport(as_of=AS_OF, customers=customers, repeat_customers=customers // 2, horizon_days=90,
                           clv_horizon_days=365, time_unit="weeks", churn_risk_cut_points=(0.33, 0.66),
                           holdout={"reason": "disabled (holdout_days = 0)"})
    return SegmentsRun(con=con, result=result, pull=None, config=Config(segmentation={"preset": "classic-5"}, report={"title": "shop"}),
                       predictions=report)


def page(customers: int) -> str:
    run = synthetic_run(customers)
    try:
        return report_html(run.config, run)
    finally:
        run.close()


def test_a_million_customers_page_stays_under_2_mb_and_does_not_grow_with_customers():
    started = time.monotonic()
    big = page(1_000_000)
    elapsed = time.monotonic() - started
    small = page(1_000)
    assert 'id="movement"' in big and big.count('<tr class="size">') == RUNS
    assert big.count('<tr class="segment">') == 11 and big.count('<tr class="cell">') == 25
    assert len(big.encode()) < LIMIT
    assert len(big.encode()) < 1.25 * len(small.encode())  # only the numbers got longer
    assert "'c1'" not in big and ">c1<" not in big  # no customer id
    assert elapsed < 30  # about 2 s alone; the bound only catches a per-customer loop
