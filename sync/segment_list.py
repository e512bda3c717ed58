"""``rfmsync segments --segment NAME``: the customers of one segment, and the per-customer file's extra writers.

Everything is computed in DuckDB over the run's per-customer relation (:func:`sync.pipeline.customers_relation`);
Python only formats the (limited) rows it gets back.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from connectors.suggest import did_you_mean

from .errors import ConfigError
from .pipeline import SegmentsRun, customers_relation

#: ``--sort`` → ORDER BY (ties broken by customer id so the order is stable)
SORTS = {
    "monetary": "c.monetary DESC NULLS LAST",
    "recency": "c.recency_days ASC NULLS LAST",
    "clv": "c.clv DESC NULLS LAST",
}

#: the columns of ``segments --segment`` (JSON keys and CSV header), in order
SEGMENT_COLUMNS = ["customer_id", "name", "email", "phone", "r", "f", "m", "monetary", "last_order",
                   "churn_risk", "next_order_date"]


def segment_names(run: SegmentsRun) -> list[str]:
    return [s["segment"] for s in run.result.summary if s["segment"] != "Total"]


def segment_customers(run: SegmentsRun, segment: str, *, limit: int = 20, sort: str = "monetary") -> list[dict]:
    """The customers in ``segment`` (``limit`` of them, by ``sort``); an unknown segment is a ConfigError with
    the closest name."""
    names = segment_names(run)
    if segment not in names:
        raise ConfigError(f"--segment: unknown segment {segment!r}{did_you_mean(segment, names)}; "
                          f"segments: {', '.join(names)}")
    if sort not in SORTS:
        raise ConfigError(f"--sort: unknown order {sort!r}; use {', '.join(SORTS)}")
    rel = customers_relation(run)
    cols = set(rel.columns)
    if sort == "clv" and "clv" not in cols:
        raise ConfigError("--sort clv needs the predictive fields (drop --no-predict)")
    con = run.con
    con.register("_segment_customers", rel)
    try:
        opt = {c: (f"c.{c}" if c in cols else "NULL") for c in ("churn_risk", "next_order_date", "clv")}
        rows = con.execute(f"""
            SELECT c.customer_id,
                   nullif(trim(concat_ws(' ', c.first_name, c.last_name)), '') AS name,
                   c.email, c.phone, c.r, c.f, c.m, CAST(c.monetary AS DOUBLE) AS monetary,
                   CAST(CAST(m.last_order_at AS DATE) AS VARCHAR) AS last_order,
                   {opt['churn_risk']} AS churn_risk,
                   CAST({opt['next_order_date']} AS VARCHAR) AS next_order_date
            FROM _segment_customers c
            LEFT JOIN {run.result.table} m USING (customer_id)
            WHERE c.segment = ?
            ORDER BY {SORTS[sort]}, c.customer_id
            LIMIT ?
        """, [segment, limit]).fetchall()
    finally:
        con.unregister("_segment_customers")
    return [dict(zip(SEGMENT_COLUMNS, r)) for r in rows]


def rows_csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _batches(run: SegmentsRun):
    """The per-customer table's column names, then its rows in batches (one query, read as it goes)."""
    rel = customers_relation(run)
    run.con.register("_customers_out", rel)
    try:
        cur = run.con.execute("SELECT * FROM _customers_out")
        yield [d[0] for d in cur.description]
        while batch := cur.fetchmany(10_000):
            yield batch
    finally:
        run.con.unregister("_customers_out")


def write_customers_stdout(run: SegmentsRun) -> int:
    """``segments --customers -o -``: the per-customer table as CSV on stdout; returns the number of rows."""
    batches = _batches(run)
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(next(batches))
    n = 0
    for batch in batches:
        w.writerows(batch)
        n += len(batch)
    sys.stdout.flush()
    return n


def write_customers_xlsx(run: SegmentsRun, path: str | Path) -> int:
    """``segments --customers -o FILE.xlsx``: one sheet, a header row and one row per customer."""
    from openpyxl import Workbook

    batches = _batches(run)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("customers")
    ws.append(next(batches))
    n = 0
    for batch in batches:
        for row in batch:
            ws.append([float(v) if _is_decimal(v) else v for v in row])
        n += len(batch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return n


def _is_decimal(v) -> bool:
    from decimal import Decimal

    return isinstance(v, Decimal)
