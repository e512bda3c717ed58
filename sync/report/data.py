"""The report's numbers, from a segments run: aggregates only (no per-customer rows), computed in DuckDB."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..pipeline import SegmentsRun


def header(run: SegmentsRun) -> dict[str, Any]:
    res = run.result
    total = next(r for r in res.summary if r["segment"] == "Total")
    # the customers' completed orders (the segments' frequency) and their first and last order days
    first, last = run.con.execute(
        "SELECT min(first_order_at)::DATE, max(last_order_at)::DATE FROM customer_metrics").fetchone()
    orders = run.con.execute(f"SELECT coalesce(sum(frequency), 0) FROM {res.table}").fetchone()[0]
    reasons: dict[str, int] = {}
    for bad in run.bad_rows:
        key = str(getattr(bad, "reason", bad))
        reasons[key] = reasons.get(key, 0) + 1
    return {
        "as_of": res.as_of.isoformat(), "preset": res.preset, "method": res.method, "levels": res.levels,
        "first_order": first.isoformat() if first else None, "last_order": last.isoformat() if last else None,
        "orders": int(orders), "customers": res.customers, "revenue": total["revenue"],
        "bad_rows": run.bad_row_count,
        "bad_row_reasons": sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:5],
        "warnings": list(run.warnings),
    }


def rfm_grid(run: SegmentsRun) -> dict[str, Any]:
    """R × F cells: customers, average monetary and the segment most of the cell's customers are in."""
    res = run.result
    rows = run.con.execute(f"""
        SELECT r, f, count(*) AS customers, avg(monetary)::DOUBLE AS avg_monetary, mode(segment) AS segment
        FROM {res.table} GROUP BY r, f ORDER BY r DESC, f
    """).fetchall()
    cells = [{"r": int(r), "f": int(f), "customers": int(n), "avg_monetary": round(float(m), 2), "segment": s}
             for r, f, n, m, s in rows]
    ranges = {axis: [{"score": int(sc), "min": float(lo), "max": float(hi)} for sc, lo, hi in run.con.execute(
        f"SELECT {axis}, min({col}), max({col}) FROM {res.table} GROUP BY {axis} ORDER BY {axis}").fetchall()]
        for axis, col in (("r", "recency_days"), ("f", "frequency"))}
    return {"levels": res.levels, "method": res.method, "cells": cells, "ranges": ranges,
            "cut_points": res.cut_points.model_dump()}


def boundary(run: SegmentsRun) -> dict[str, Any]:
    """The return curve, the boundary and reminder days, gap percentiles and who is in the reminder window."""
    b = dict(run.result.boundary or {})
    in_window = None
    if b.get("days") is not None and b.get("reminder_day") is not None:
        in_window = run.con.execute(
            f"SELECT count(*) FROM {run.result.table} WHERE recency_days BETWEEN ? AND ?",
            [b["reminder_day"], b["days"]]).fetchone()[0]
    return {"curve": b.get("curve", []), "days": b.get("days"), "reminder_day": b.get("reminder_day"),
            "gap_percentiles": b.get("gap_percentiles"), "reason": b.get("reason"),
            "in_reminder_window": in_window}


def predictions(run: SegmentsRun) -> dict[str, Any]:
    """Churn risk counts, mean CLV and expected orders per segment (when the models were fitted)."""
    names = {r[0] for r in run.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if run.predictions is None or "customer_predictions" not in names:
        return {"fitted": False, "reason": "predictions were not computed for this report", "segments": []}
    rows = run.con.execute(f"""
        SELECT s.segment,
               count(*) FILTER (WHERE p.churn_risk = 'low'), count(*) FILTER (WHERE p.churn_risk = 'medium'),
               count(*) FILTER (WHERE p.churn_risk = 'high'), count(*) FILTER (WHERE p.churn_risk IS NULL),
               avg(p.clv)::DOUBLE, sum(p.expected_purchases)::DOUBLE
        FROM {run.result.table} s JOIN customer_predictions p USING (customer_id) GROUP BY s.segment
    """).fetchall()
    by = {r[0]: r for r in rows}
    order = [r["segment"] for r in run.result.summary if r["segment"] in by]
    segs = [{"segment": s, "low": by[s][1], "medium": by[s][2], "high": by[s][3], "unknown": by[s][4],
             "avg_clv": None if by[s][5] is None else round(by[s][5], 2),
             "expected_orders": None if by[s][6] is None else round(by[s][6], 1)} for s in order]
    if not any(s["low"] + s["medium"] + s["high"] for s in segs):
        reason = "; ".join(run.warnings) or "the models could not be fitted"
        return {"fitted": False, "reason": reason, "segments": []}
    return {"fitted": True, "reason": None, "segments": segs}


def destinations(ledger, dests: list) -> list[dict[str, Any]]:
    """Each configured destination's last run in the ledger (None when it never ran) and its mapped segments
    with the contacts the ledger holds as tagged for them."""
    from ..planning.plan import managed_tags

    recent = ledger.recent_runs(limit=200) if ledger is not None else []
    out = []
    for dest in dests:
        last = next((r for r in recent if r["destination"] == dest.name), None)
        held: Counter[str] = Counter()
        if ledger is not None:
            for state in ledger.load_state(dest.name).values():
                if state.exists:
                    held.update(state.tags)
        mapped = [{"segment": seg, "tags": tags, "members": max((held[t] for t in tags), default=0)}
                  for seg, tags in managed_tags(dest).items()]
        out.append({"name": dest.name, "mapped": mapped, "last_run": None if last is None else {
            "when": str(last["finished_at"] or last["started_at"]), "status": last["status"],
            "changes": {k: v for k, v in (last["counts"] or {}).items() if isinstance(v, int)},
            "error": last["error"]}})
    return out


def build_report_data(run: SegmentsRun, ledger=None) -> dict[str, Any]:
    """Everything the page shows, as plain dicts."""
    segs = [r for r in run.result.summary if r["segment"] != "Total"]
    return {"header": header(run), "segments": segs, "grid": rfm_grid(run), "boundary": boundary(run),
            "predictions": predictions(run),
            "destinations": destinations(ledger, run.config.destinations)}
