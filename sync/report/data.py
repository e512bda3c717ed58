"""The report's numbers, from a segments run: aggregates only (no per-customer rows), computed in DuckDB."""

from __future__ import annotations

from collections import Counter
from typing import Any

from segmentation.scoring import score_band

from ..pipeline import SegmentsRun
from ..store.history import HISTORY, LINES, RECORDS, has_history
from .forecast import predictions


def header(run: SegmentsRun) -> dict[str, Any]:
    res = run.result
    total = next(r for r in res.summary if r["segment"] == "Total")
    # the customers' completed orders (the segments' frequency) and their first and last order days
    first, last = run.con.execute(
        "SELECT min(first_order_at)::DATE, max(last_order_at)::DATE FROM customer_metrics").fetchone()
    orders = run.con.execute(f"SELECT coalesce(sum(frequency), 0) FROM {res.table}").fetchone()[0]
    # none counted: what the store holds instead (every order refunded or cancelled, or all after the as-of)
    held, completed = run.con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'completed') FROM orders"
                                      ).fetchone() if not orders else (0, 0)
    reasons: dict[str, int] = {}
    for bad in run.bad_rows:
        key = str(getattr(bad, "reason", bad))
        reasons[key] = reasons.get(key, 0) + 1
    return {
        "as_of": res.as_of.isoformat(), "preset": res.preset, "method": res.method, "levels": res.levels,
        "first_order": first.isoformat() if first else None, "last_order": last.isoformat() if last else None,
        "orders": int(orders), "orders_held": int(held), "orders_held_completed": int(completed),
        "customers": res.customers, "revenue": total["revenue"],
        "bad_rows": run.bad_row_count,
        "bad_row_reasons": sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:5],
        "warnings": list(run.warnings),
    }


def rfm_grid(run: SegmentsRun) -> dict[str, Any]:
    """R × F cells: customers, average monetary and the segment most of the cell's customers are in; per score
    its observed value range and its rule (the configured cut points under threshold scoring, the cut points the
    quantiles came to otherwise), and the axis labels: the rules under threshold scoring, the ranges under
    quantile scoring."""
    res = run.result
    rows = run.con.execute(f"""
        SELECT r, f, count(*) AS customers, avg(monetary)::DOUBLE AS avg_monetary, mode(segment) AS segment
        FROM {res.table} GROUP BY r, f ORDER BY r DESC, f
    """).fetchall()
    cells = [{"r": int(r), "f": int(f), "customers": int(n), "avg_monetary": round(float(m), 2), "segment": s}
             for r, f, n, m, s in rows]
    ranges = {axis: [{"score": int(sc), "min": float(lo), "max": float(hi)} for sc, lo, hi in run.con.execute(
        f"SELECT {axis}, min({col}), max({col}) FROM {res.table} GROUP BY {axis} ORDER BY {axis}").fetchall()]
        for axis, col in AXES}
    thresholds = res.method == "thresholds" and run.config.segmentation.thresholds
    cuts = (thresholds or res.cut_points).model_dump()
    rules = {axis: [score_band(col, sc, cuts[col], res.levels)["rule"] if cuts[col] else "—"  # nobody scored
                    for sc in range(1, res.levels + 1)] for axis, col in AXES}
    labels = {axis: [_axis_label(col, sc, cuts[col], res.levels) if thresholds
                     else _range_label(ranges[axis], sc) for sc in range(1, res.levels + 1)] for axis, col in AXES}
    return {"levels": res.levels, "method": res.method, "cells": cells, "ranges": ranges, "rules": rules,
            "axis_labels": labels, "cut_points": res.cut_points.model_dump(), "scored_by_cut_points": bool(thresholds)}


AXES = (("r", "recency_days"), ("f", "frequency"), ("m", "monetary"))


def _range_label(ranges: list[dict], score: int) -> str:
    """``min–max`` of the customers with ``score`` (quantile scoring), ``—`` when nobody has it."""
    row = next((x for x in ranges if x["score"] == score), None)
    if row is None:
        return "—"
    lo, hi = (f"{v:,.0f}" if v >= 1000 else f"{v:g}" for v in (row["min"], row["max"]))
    return lo if lo == hi else f"{lo}–{hi}"


def _axis_label(metric: str, score: int, cuts: list[float], levels: int) -> str:
    """The score's band under threshold scoring as a short axis label (``≤ 30``, ``31–90``, ``≥ 4``: whole days
    and orders; ``< 50000``, ``50000–<250000``: money), or its rule when a cut point is fractional."""
    band = score_band(metric, score, cuts, levels)
    low, high = band["low"], band["high"]
    if any(v is not None and not float(v).is_integer() for v in (low, high)):
        return band["rule"]
    if metric == "monetary":  # low <= x < high, in money (49 999.50 is below 50 000: no "≤ 49999")
        low, high = (None if v is None else int(v) for v in (low, high))
        return (("any" if high is None else f"< {high}") if low is None else f"≥ {low}" if high is None
                else f"{low}–<{high}")
    if metric == "recency_days":  # low < x <= high
        low = None if low is None else int(low) + 1
    else:  # low <= x < high
        high = None if high is None else int(high) - 1
    if low is None:
        return f"≤ {high}" if high is not None else "any"
    if high is None:
        return f"≥ {low}"
    return str(low) if low == high else f"{low}–{high}"


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
            "in_reminder_window": in_window, "method": b.get("method"), "window_days": b.get("window_days"),
            "return_probability": b.get("return_probability")}


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


#: the newest recorded runs the movement section shows at most
MOVEMENT_RUNS = 60


def movement(run: SegmentsRun) -> dict[str, Any] | None:
    """Segment sizes at each recorded run of the current history line (the newest :data:`MOVEMENT_RUNS` up to the
    page's as-of date) and the from → to matrix between the last two; None with fewer than two records."""
    con = run.con  # every run segments the order store, where the history is recorded
    if not has_history(con):
        return None
    line = con.execute(f"SELECT max(line) FROM {LINES}").fetchone()[0]
    if line is None:
        return None
    preset = con.execute(f"SELECT preset FROM {LINES} WHERE line = ?", [line]).fetchone()[0]
    dates = [r[0] for r in con.execute(f"""
        SELECT as_of FROM {RECORDS} WHERE line = $line AND as_of <= $as_of
        ORDER BY as_of DESC LIMIT {MOVEMENT_RUNS}""", {"line": line, "as_of": run.result.as_of}).fetchall()][::-1]
    if len(dates) < 2:
        return None
    # sizes from the rows' starts and ends (+1 at valid_from, -1 at valid_to): one pass over the history
    sizes = con.execute(f"""
        WITH h AS (SELECT segment, valid_from, valid_to FROM {HISTORY} WHERE line = $line),
        ev AS (SELECT segment, valid_from AS d, 1 AS delta FROM h
               UNION ALL SELECT segment, valid_to, -1 FROM h WHERE valid_to IS NOT NULL),
        cum AS (SELECT segment, d, sum(sum(delta)) OVER (PARTITION BY segment ORDER BY d) AS n
                FROM ev GROUP BY segment, d),
        grid AS (SELECT unnest($dates::DATE[]) AS as_of, segment FROM (SELECT DISTINCT segment FROM h))
        SELECT g.as_of, g.segment, coalesce(c.n, 0)::BIGINT FROM grid g
        ASOF LEFT JOIN cum c ON g.segment = c.segment AND g.as_of >= c.d
    """, {"line": line, "dates": dates}).fetchall()
    at = "valid_from <= ${d} AND (valid_to IS NULL OR valid_to > ${d})"
    matrix = con.execute(f"""
        WITH a AS (SELECT customer_id, segment FROM {HISTORY} WHERE line = $line AND {at.format(d='d1')}),
             b AS (SELECT customer_id, segment FROM {HISTORY} WHERE line = $line AND {at.format(d='d2')})
        SELECT a.segment, b.segment, count(*) FROM a FULL JOIN b USING (customer_id) GROUP BY ALL
    """, {"line": line, "d1": dates[-2], "d2": dates[-1]}).fetchall()
    order = _segment_order(run, {seg for _, seg, _ in sizes})
    by_day: dict[Any, dict[str, int]] = {}
    for day, seg, n in sizes:
        by_day.setdefault(day, {})[seg] = int(n)
    return {"line": line, "preset": preset, "segments": order, "from": dates[-2].isoformat(),
            "to": dates[-1].isoformat(),
            "sizes": [{"as_of": d.isoformat(), **{s: by_day.get(d, {}).get(s, 0) for s in order}} for d in dates],
            "matrix": sorted(({"from": a, "to": b, "customers": int(n)} for a, b, n in matrix),
                             key=lambda r: (_rank(order, r["from"]), _rank(order, r["to"]))),
            "moved": sum(int(n) for a, b, n in matrix if a is not None and b is not None and a != b),
            "new": sum(int(n) for a, _, n in matrix if a is None), "gone": sum(int(n) for _, b, n in matrix if b is None)}


def _segment_order(run: SegmentsRun, names: set[str]) -> list[str]:
    """``names`` in the preset's rule order, the ones it no longer has after them (alphabetically)."""
    ruled = [r["segment"] for r in run.result.summary if r["segment"] in names]
    return ruled + sorted(names - set(ruled))


def _rank(order: list[str], name: str | None) -> tuple[int, int]:
    return (1, 0) if name is None else (0, order.index(name) if name in order else len(order))


def build_report_data(run: SegmentsRun, ledger=None) -> dict[str, Any]:
    """Everything the page shows, as plain dicts."""
    segs = [r for r in run.result.summary if r["segment"] != "Total"]
    return {"header": header(run), "segments": segs, "grid": rfm_grid(run), "boundary": boundary(run),
            "predictions": predictions(run),
            "destinations": destinations(ledger, run.config.destinations), "movement": movement(run)}
