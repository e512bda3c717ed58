"""The predictions section's numbers: churn risk, CLV distribution, expected orders and due reorders per segment,
and the holdout check as predicted vs actual purchases. Aggregates only, computed in DuckDB over the run's
``customer_predictions`` joined to its segments table."""

from __future__ import annotations

from typing import Any

from segmentation.holdout import HOLDOUT_GROUPS
from segmentation.lifecycle import has_relation

from ..pipeline import SegmentsRun
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
    purchase days in the holdout window per group (the groups add up to the check's totals). Both were computed
    with the check itself (:mod:`segmentation.holdout`); nothing is recomputed here."""
    rep = run.predictions
    check = dict(rep.holdout or {})
    out = {k: check.get(k) for k in ("calibration_end", "holdout_days", "customers", "predicted_purchases",
                                     "actual_purchases", "correlation", "reason")}
    if out["predicted_purchases"] is None or "bgnbd" not in check:
        out["reason"] = out["reason"] or "not computed"
        return out | {"groups": []}
    groups = [{"repeat_purchases": f"{g['repeat_purchases']}+" if g["repeat_purchases"] == HOLDOUT_GROUPS
               else str(g["repeat_purchases"]), "customers": g["customers"],
               "predicted": _round(g["predicted"], 1), "actual": g["actual"],
               "predicted_per_customer": _round(g["predicted"] / g["customers"], 3),
               "actual_per_customer": _round(g["actual"] / g["customers"], 3)}
              for g in rep.holdout_groups]
    return out | {"groups": groups}


def predictions(run: SegmentsRun) -> dict[str, Any]:
    """Everything the predictions section shows, or ``fitted: False`` with the reason in one line."""
    if run.predictions is None or not has_relation(run.con, "customer_predictions"):  # a table or a view
        return {"fitted": False, "reason": "predictions were not computed for this report", "segments": []}
    segs, clv = per_segment(run)
    if not any(s["low"] + s["medium"] + s["high"] for s in segs):
        reason = run.predictions.reason or "; ".join(run.warnings) or "the models could not be fitted"
        return {"fitted": False, "reason": reason, "segments": []}
    expected = run.con.execute("SELECT sum(expected_purchases)::DOUBLE FROM customer_predictions").fetchone()[0]
    return {"fitted": True, "reason": None, "segments": segs, "horizon_days": run.predictions.horizon_days,
            "clv_horizon_days": run.predictions.clv_horizon_days, "expected_orders": _round(expected, 1),
            "clv": clv, "reorders_due": reorders_due(run), "holdout": holdout_check(run)}
