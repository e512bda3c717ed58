"""The benchmark's same-work pandas reference (bench/pandas_checked.py) must do what rfmsync does on a messy
export: the same bad rows (row, field, raw value), repeated ids, customers, scores and summary. Otherwise the
ratio the segments benchmark reports would compare different work."""

from __future__ import annotations

import csv
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

pytest.importorskip("pandas")

from bench.pandas_checked import LAST_RUN, pandas_checked_segments  # noqa: E402
from sync.config import load_config  # noqa: E402
from sync.pipeline import compute_segments, write_customers  # noqa: E402

AS_OF = date(2026, 1, 1)
NBSP = "\u00a0"


def messy_rows(rng: random.Random, n: int) -> list[list[str]]:
    """Orders with every quirk both sides read alike: padded, zero-led, huge, alphanumeric and repeated ids,
    missing and space-only customers, bad dates and amounts, unknown and synonym statuses, negative sales."""
    rows = []
    for _ in range(n):
        oid, cust = str(rng.randint(1, n)), f"C{rng.randint(1, n // 5)}"  # ids repeat by chance
        ts = (datetime(2024, 1, 1) + timedelta(minutes=rng.randint(0, 800_000))).strftime("%Y-%m-%d %H:%M:%S")
        amount = f"{rng.randint(-5_000, 50_000) / 100:.2f}" if rng.random() < 0.1 else f"{rng.randint(1, 50_000) / 100:.2f}"
        status = rng.choice(["completed", "completed", "completed", "refunded", "cancelled", ""])
        if rng.random() < 0.4:
            quirk = rng.randrange(12)
            oid = ["000" + oid, f" {oid} ", "", "9" * 25, "A" + oid][quirk] if quirk < 5 else oid
            cust = {5: "", 6: "  ", 7: cust + NBSP, 8: "\t" + cust}.get(quirk, cust)
            ts = rng.choice(["2025-13-01 00:00:00", "garbage", ""]) if quirk == 9 else ts
            amount = rng.choice(["", "abc", "inf", "-1.00", "1,5x"]) if quirk == 10 else amount
            status = rng.choice(["weird", " Completed ", "REFUNDED", "возврат", "Продажа", f"{NBSP}paid"]) \
                if quirk == 11 else status
        rows.append([oid, cust, ts, amount, status])
    return rows


@pytest.mark.parametrize("seed", [1, 2])
def test_pandas_checked_does_the_same_work_as_rfmsync(tmp_path: Path, seed: int) -> None:
    orders = tmp_path / "orders.csv"
    with open(orders, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["order_id", "customer_id", "ordered_at", "amount", "status"])
        w.writerows(messy_rows(random.Random(seed), 1500))
    (tmp_path / "rfmsync.toml").write_text(
        '[source]\ntype = "file"\norders = "orders.csv"\ntimezone = "UTC"\ncurrency = "UZS"\n[source.columns]\n'
        + "".join(f'{c} = "{c}"\n' for c in ("order_id", "customer_id", "ordered_at", "amount", "status"))
        + '[segmentation]\npreset = "tracks"\n', encoding="utf-8")
    run = compute_segments(load_config(tmp_path / "rfmsync.toml"), AS_OF, boundary=False)
    try:
        write_customers(run, tmp_path / "rfmsync.parquet")
        ours = [(b.row, b.field, b.value) for b in run.pull.bad_rows]
        ours_count, ours_dups, ours_summary = run.bad_row_count, run.pull.duplicate_orders, run.result.summary
    finally:
        run.close()
    counts, bad = pandas_checked_segments(orders, tmp_path / "pandas.parquet", AS_OF, "tracks")

    assert ours_count > 100 and ours_dups > 10  # the file really is messy
    assert bad == ours_count
    assert [(row, fld, value) for row, fld, _, value in LAST_RUN["bad_rows"]] == ours
    assert LAST_RUN["duplicates"] == ours_dups
    differ = duckdb.connect().execute(f"""
        SELECT count(*) FROM read_parquet('{tmp_path}/rfmsync.parquet') x
        FULL OUTER JOIN read_parquet('{tmp_path}/pandas.parquet') y USING (customer_id)
        WHERE x.customer_id IS NULL OR y.customer_id IS NULL OR x.rfm <> y.rfm OR x.segment <> y.segment
           OR x.frequency <> y.frequency OR x.monetary <> y.monetary OR x.recency_days <> y.recency_days
    """).fetchall()[0][0]
    assert differ == 0
    assert [(r["segment"], r["customers"], round(float(r["revenue"]), 2)) for r in LAST_RUN["summary"]] == \
        [(r["segment"], r["customers"], round(float(r["revenue"]), 2)) for r in ours_summary]
    assert counts == {r["segment"]: r["customers"] for r in ours_summary if r["segment"] != "Total" and r["customers"]}
