"""The report page of a large shop, end to end: an orders export → segments → models and holdout check → a
recorded segment history → page. Prints the time of each step and the page's size, and fails (exit 1) when the
page reaches 2 MB: it must hold aggregates only, whatever the number of customers (issue 15).

The export is bench/segments.py's synthetic CSV (``sync.demodata.generate_orders_csv``, made once under
``--workdir``, then reused), read as a file source:

    python bench/report_size.py                      # 1M customers, 3M orders
    python bench/report_size.py --customers 200k --orders 600k
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, even when PYTHONPATH names it: bench/sync.py must not hide the package
    sys.path.insert(0, str(ROOT))

from bench.common import parse_size, size_label  # noqa: E402
from bench.segments import write_config  # noqa: E402
from sync.config import load_config  # noqa: E402
from sync.demodata import generate_orders_csv  # noqa: E402
from sync.report import report_html, report_run  # noqa: E402

AS_OF = date(2026, 6, 1)
LIMIT = 2_000_000
HISTORY_DDL = """
CREATE TABLE segment_history_lines (line INTEGER PRIMARY KEY, preset VARCHAR NOT NULL, rules_hash VARCHAR NOT NULL,
    started_on DATE NOT NULL);
CREATE TABLE segment_history_records (line INTEGER NOT NULL, as_of DATE NOT NULL, source VARCHAR NOT NULL,
    customers BIGINT NOT NULL, recorded_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (line, as_of));
CREATE TABLE segment_history (line INTEGER NOT NULL, customer_id VARCHAR NOT NULL, segment VARCHAR NOT NULL,
    valid_from DATE NOT NULL, valid_to DATE);
"""


def history(con: duckdb.DuckDBPyConnection, table: str, customers: int, runs: int = 30) -> None:
    """A recorded history of ``runs`` daily runs ending at AS_OF in which every tenth customer moved once."""
    con.execute(HISTORY_DDL)
    con.execute(f"""
        INSERT INTO segment_history_lines VALUES (1, 'classic-5', 'rules', DATE '{AS_OF}' - {runs - 1});
        INSERT INTO segment_history_records
        SELECT 1, DATE '{AS_OF}' - CAST(k AS INTEGER), 'sync', {customers}, now() FROM range({runs}) t(k);
        CREATE TEMP TABLE _moves AS
        SELECT customer_id, segment, DATE '{AS_OF}' - CAST(1 + hash(customer_id) % {runs - 1} AS INTEGER) AS day,
               (SELECT list(DISTINCT segment) FROM {table}) AS names
        FROM {table};
        INSERT INTO segment_history
        SELECT 1, customer_id, CASE WHEN hash(customer_id) % 10 = 0
                                    THEN names[1 + CAST(hash(customer_id || 'x') % len(names) AS INTEGER)]
                                    ELSE segment END,
               DATE '{AS_OF}' - {runs - 1}, CASE WHEN hash(customer_id) % 10 = 0 THEN day END FROM _moves;
        INSERT INTO segment_history SELECT 1, customer_id, segment, day, NULL FROM _moves
        WHERE hash(customer_id) % 10 = 0;
    """)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=parse_size, default=1_000_000)
    ap.add_argument("--orders", type=parse_size, default=3_000_000)
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args(argv)
    if args.orders < args.customers:
        ap.error("--orders must be at least --customers")

    steps: list[tuple[str, float]] = []
    csv = args.workdir / f"report-{size_label(args.customers)}-{size_label(args.orders)}.csv"
    if not csv.exists():
        args.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        generate_orders_csv(csv, orders=args.orders, customers=args.customers, as_of=AS_OF)
        steps.append(("the export (generated once)", time.perf_counter() - t0))
    cfg = load_config(write_config(csv, "classic-5"))
    t0 = time.perf_counter()
    run = report_run(cfg, AS_OF)
    steps.append(("read, segments, models, holdout check", time.perf_counter() - t0))
    try:
        t0 = time.perf_counter()
        history(run.con, run.result.table, run.result.customers)
        steps.append(("segment history (30 runs)", time.perf_counter() - t0))
        t0 = time.perf_counter()
        html = report_html(cfg, run)
        steps.append(("the page (queries, charts, template)", time.perf_counter() - t0))
        customers = run.result.customers
    finally:
        run.close()

    size = len(html.encode())
    print(f"{customers:,} customers, {args.orders:,} orders")
    for name, seconds in steps:
        print(f"  {name:<40} {seconds:7.2f} s")
    shown = {"movement section": 'id="movement"' in html, "holdout chart": "chart holdout" in html}
    print(f"page: {size:,} bytes ({size / LIMIT:.1%} of the 2 MB limit); "
          + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in shown.items()))
    return 0 if size < LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
