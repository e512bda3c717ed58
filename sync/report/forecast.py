"""The predictions section's numbers: churn risk, CLV distribution, expected orders and due reorders per segment,
and the holdout check as predicted vs actual purchases. Aggregates only, computed in DuckDB over the run's
``customer_predictions`` joined to its segments table."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from ..pipeline import SegmentsRun

#: calibration repeat purchases of the holdout chart's groups: 0, 1, … and the last one open (6+)
HOLDOUT_GROUPS = 6
#: the due reorders' groups by days past the next-order date ("upcoming": not reached, within remind_days_before)
OVERDUE_GROUPS = ("upcoming", "0-7", "8-30", "31-90", "90+")


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def per_segment(run: SegmentsRun) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """In one pass, per segment (rule order): churn risk counts, average CLV, expected orders and due reorders;
    and the CLV distribution (customers with a CLV, p10, quartiles, p90, min, max, mean)."""
    rows = run.con.execute(f"""
        SELECT s.segment,
               count(*) FILTER (WHERE p.churn_risk = 'low'), count(*) FILTER (WHERE p.churn_risk = 'medium'),
               count(*) FILTER (WHERE p.churn_risk = 'high'), count(*) FILTER (WHERE p.churn_risk IS NULL),
               avg(p.clv)::DOUBLE, sum(p.expected_purchases)::DOUBLE, count(*) FILTER (WHERE p.reorder_due),
               count(p.clv), min(p.clv)::DOUBLE, quantile_cont(p.clv::DOUBLE, [0.1, 0.25, 0.5, 0.75, 0.9]),
               max(p.clv)::DOUBLE
        FROM {run.result.table} s JOIN customer_predictions p USING (customer_id) GROUP BY s.segment
    """).fetchall()
    by = {r[0]: r for r in rows}
    order = [r["segment"] for r in run.result.summary if r["segment"] != "Total" and r["segment"] in by]
    risk = [{"segment": s, "low": by[s][1], "medium": by[s][2], "high": by[s][3], "unknown": by[s][4],
             "avg_clv": _round(by[s][5]), "expected_orders": _round(by[s][6], 1), "reorder_due": by[s][7]}
            for s in order]
    clv = []
    for seg in order:
        *_, mean, _, _, n, lo, qs, hi = by[seg]
        if n:
            clv.append({"segment": seg, "customers": n, "min": _round(lo), "p10": _round(qs[0]), "q1": _round(qs[1]),
                        "median": _round(qs[2]), "q3": _round(qs[3]), "p90": _round(qs[4]), "max": _round(hi),
                        "mean": _round(mean)})
    return risk, clv


def reorders_due(run: SegmentsRun) -> dict[str, Any]:
    """Customers whose reorder is due today (``reorder_due``), grouped by the days since their next-order date
    (``upcoming``: the date is within ``remind_days_before`` ahead)."""
    rows = dict(run.con.execute("""
        SELECT CASE WHEN d < 0 THEN 'upcoming' WHEN d <= 7 THEN '0-7' WHEN d <= 30 THEN '8-30'
                    WHEN d <= 90 THEN '31-90' ELSE '90+' END, count(*)
        FROM (SELECT ($as_of::DATE - next_order_date) AS d FROM customer_predictions WHERE reorder_due)
        GROUP BY ALL
    """, {"as_of": run.result.as_of}).fetchall())
    return {"customers": sum(rows.values()), "by_days_overdue": {g: rows.get(g, 0) for g in OVERDUE_GROUPS}}


def holdout_check(run: SegmentsRun) -> dict[str, Any]:
    """The holdout check of ``rfmsync predict`` (BG/NBD refitted on the orders up to ``calibration_end``) and, for
    its chart, the customers grouped by their repeat purchases before ``calibration_end``: predicted and actual
    purchase days in the holdout window per group (the groups add up to the check's totals)."""
    from segmentation.btyd import DAYS_PER_UNIT, btyd_summary
    from segmentation.btyd_models import BgNbdParams, expected_purchases
    from segmentation.purchase_days import build_purchase_days

    rep = run.predictions
    check = dict(rep.holdout or {})
    out = {k: check.get(k) for k in ("calibration_end", "holdout_days", "customers", "predicted_purchases",
                                     "actual_purchases", "correlation", "reason")}
    if out["predicted_purchases"] is None or "bgnbd" not in check:
        out["reason"] = out["reason"] or "not computed"
        return out | {"groups": []}
    cal_end, tz = date.fromisoformat(check["calibration_end"]), run.config.timezone
    bg = BgNbdParams(**{k: check["bgnbd"][k] for k in ("r", "alpha", "a", "b")})
    days = rep.purchase_days  # the run's purchase-day table (kept for the boundary), or a new one
    if days is None or not days.covers(run.result.as_of, tz):
        days = build_purchase_days(run.con, run.result.as_of, tz, table="_report_days")
    cal = btyd_summary(run.con, cal_end, tz, rep.time_unit, days=days)
    with np.errstate(all="ignore"):
        predicted = expected_purchases(bg, check["holdout_days"] / DAYS_PER_UNIT[rep.time_unit], cal.frequency,
                                       cal.recency, cal.T)
    later = run.con.sql(f"SELECT customer_id, count(*) AS purchase_days FROM {days.table} WHERE day > $cal_end "
                        "AND day <= $as_of GROUP BY customer_id",
                        params={"cal_end": cal_end, "as_of": run.result.as_of}).to_arrow_table()
    run.con.register("_report_cal", pa.table({"customer_id": cal.customer_id, "x": cal.frequency,
                                              "predicted": predicted}))
    run.con.register("_report_later", later)
    try:
        rows = run.con.execute(f"""
            SELECT least(c.x, {HOLDOUT_GROUPS}) AS g, count(*), sum(c.predicted) FILTER (WHERE isfinite(c.predicted)),
                   coalesce(sum(l.purchase_days), 0)
            FROM _report_cal c LEFT JOIN _report_later l USING (customer_id) GROUP BY g ORDER BY g
        """).fetchall()
    finally:
        run.con.unregister("_report_cal")
        run.con.unregister("_report_later")
    groups = [{"repeat_purchases": f"{g}+" if g == HOLDOUT_GROUPS else str(g), "customers": n,
               "predicted": _round(p or 0.0, 1), "actual": int(a),
               "predicted_per_customer": _round((p or 0.0) / n, 3), "actual_per_customer": _round(a / n, 3)}
              for g, n, p, a in rows]
    return out | {"groups": groups}


def predictions(run: SegmentsRun) -> dict[str, Any]:
    """Everything the predictions section shows, or ``fitted: False`` with the reason in one line."""
    names = {r[0] for r in run.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if run.predictions is None or "customer_predictions" not in names:
        return {"fitted": False, "reason": "predictions were not computed for this report", "segments": []}
    segs, clv = per_segment(run)
    if not any(s["low"] + s["medium"] + s["high"] for s in segs):
        reason = run.predictions.reason or "; ".join(run.warnings) or "the models could not be fitted"
        return {"fitted": False, "reason": reason, "segments": []}
    expected = run.con.execute("SELECT sum(expected_purchases)::DOUBLE FROM customer_predictions").fetchone()[0]
    return {"fitted": True, "reason": None, "segments": segs, "horizon_days": run.predictions.horizon_days,
            "clv_horizon_days": run.predictions.clv_horizon_days, "expected_orders": _round(expected, 1),
            "clv": clv, "reorders_due": reorders_due(run), "holdout": holdout_check(run)}
