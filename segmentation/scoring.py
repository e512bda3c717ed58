"""R, F and M scores on 1..N, by tie-aware quantiles or explicit thresholds, in DuckDB.

**Quantile rule.** A customer's score is ``1 + floor(N × w / n)`` (at most N), where ``n`` is the number of
scored customers and ``w`` the number of customers with a strictly *worse* value (larger recency, smaller
frequency or monetary). So customers with the same value always get the same score, scores never decrease as the
value improves, the worst value always scores 1, and nothing depends on row order. With all values distinct it
gives N equal groups. Frequency is heavily tied (often half the customers buy once): they all get F = 1 instead of
being spread over F = 1..3 by row order (the ``rank(method="first")`` bug).

**Thresholds rule.** Explicit ascending cut points, N−1 per metric (see :class:`~segmentation.config.Thresholds`).

**Its one wrong answer.** The best value scores ``1 + floor(N × w / n)`` too, ``w`` being everyone else: when most
customers share the best *recency* (a shop with a day or two of history; a date column holding the export's
date) the most recent buyers score R = 1, the worst recency's score, and land in the lost segments.
:func:`recency_collapse` tells such a run, and one that scores buyers of the last week R = 1 (a two-day shop split
55/45: the best recency's score is in the upper half, yet yesterday's buyers are "lost"). Frequency's big tie is its *worst* value (one-time buyers, F = 1: right);
monetary's best value is rarely shared, and when everybody spends the same, M = 1 for all says "no difference",
which no recency-driven segment (Churn, lost, win-back) reads as lost.

Every quantile run also yields the equivalent cut points (:func:`derive_cut_points`); applying them as thresholds
reproduces the same scores. Incremental re-scoring of a few customers uses them so that one new order does not
reshuffle everybody's quantiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
import math

import duckdb

from .config import Thresholds

METRICS = ("recency_days", "frequency", "monetary")


def _value_scores_sql(table: str, col: str, levels: int, worse_is_larger: bool, n: int) -> str:
    """A subquery (v, s): every distinct value of ``col`` with its tie-aware quantile score.

    ``w`` (customers with a strictly worse value) is a running sum over the distinct values, so the sort is
    over distinct values (a few hundred recencies, a few hundred thousand amounts), not over every customer."""
    order = "DESC" if worse_is_larger else "ASC"
    return (f"(SELECT v, least({levels}, 1 + (coalesce(sum(c) OVER (ORDER BY v {order} ROWS BETWEEN UNBOUNDED "
            f"PRECEDING AND 1 PRECEDING), 0) * {levels}) // {max(1, n)}) AS s "
            f"FROM (SELECT {col} AS v, count(*) AS c FROM {table} GROUP BY {col}))")


def _quantile_exprs(con: duckdb.DuckDBPyConnection, table: str, alias: str, levels: int,
                    n: int) -> tuple[str, str, str]:
    """Each metric's score as comparisons with the values where it steps up (no join of the customers).

    A value's quantile score never falls as the value improves, so it is 1 + the number of steps k (2..N) whose
    first value (the smallest frequency or monetary, the largest recency, scoring k or more) it reaches: one
    query over the distinct values finds the N−1 steps of the three metrics, and every customer is scored by
    N−1 comparisons each instead of being joined three times to its values' scores."""
    specs = (("recency_days", True), ("frequency", False), ("monetary", False))
    def firsts(col: str, worse: bool) -> str:
        agg = "max" if worse else "min"
        return (f"(SELECT [{', '.join(f'{agg}(v) FILTER (WHERE s >= {k})' for k in range(2, levels + 1))}] "
                f"FROM {_value_scores_sql(table, col, levels, worse, n)})")

    steps = ", ".join(firsts(col, worse) for col, worse in specs)
    found = con.execute(f"SELECT {steps}").fetchall()[0]
    exprs = []
    for (col, worse), firsts in zip(specs, found):
        terms = [f"CAST({alias}.{col} {'<=' if worse else '>='} {_literal(v)} AS INTEGER)" for v in firsts
                 if v is not None]
        exprs.append("1 + " + " + ".join(terms) if terms else "1")
    return exprs[0], exprs[1], exprs[2]


def _literal(value: object) -> str:
    """A metric's value as an exact SQL literal (integers, DECIMAL in fixed notation); any other type is refused
    rather than rounded to a step that would move customers."""
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"quantile step {value!r}: a metric must be an integer or a DECIMAL, not {type(value).__name__}")


#: a customer who bought within this many days is a recent buyer: scored R = 1, he is a collapse of the scores
RECENT_DAYS = 7


@dataclass(frozen=True)
class RecencyCollapse:
    """A quantile run that scored recent buyers among the lost: ``customers`` of ``total`` share the best recency
    (``days``) and all score R = ``score`` of ``levels``; or, with ``within`` set (:data:`RECENT_DAYS`),
    ``customers`` of ``total`` bought within ``within`` days (the newest ``days`` days ago) yet score R = 1."""

    customers: int
    total: int
    days: int
    score: int
    levels: int
    within: int | None = None


def recency_collapse(con: duckdb.DuckDBPyConnection, table: str, levels: int) -> RecencyCollapse | None:
    """The collapse of a quantile run's recency scores in ``table`` (recency_days, r), or None. Two ways:

    * the customers with the best recency rank first, so their score should be the top one; the rule gives them
      ``1 + floor(N × (n − b) / n)`` when ``b`` of ``n`` share it, which is in the lower half (2 × R ≤ N: R = 1 or 2
      of 4 or 5, R = 1 of 3) once ``b`` passes 1 − 2/N of the customers (60 % of 5 levels, 50 % of 4, 67 % of 3);
    * customers who bought within :data:`RECENT_DAYS` days score R = 1, the lost customers' score: the rule puts a
      customer at R = 1 when fewer than n/N customers bought longer ago than he did, so this happens only when
      more than 1 − 1/N of the customers (80 % of 5 levels, 75 % of 4, 67 % of 3) bought within the window: a
      shop of a week or two (a two-day shop split 55/45 puts yesterday's buyers in Churn); never a shop with a
      month of customers behind it, nor one of one-time buyers spread over the year."""
    row = con.execute(f"SELECT recency_days, max(r), count(*), sum(count(*)) OVER () FROM {table} "
                      f"GROUP BY recency_days ORDER BY recency_days LIMIT 1").fetchall()
    if not row:
        return None
    days, score, customers, total = row[0]
    if 2 * score <= levels:
        return RecencyCollapse(customers=customers, total=int(total), days=int(days), score=score, levels=levels)
    recent = con.execute(f"SELECT count(*), min(recency_days) FROM {table} "
                         f"WHERE r = 1 AND recency_days <= {RECENT_DAYS}").fetchall()[0]
    if not recent[0]:
        return None
    return RecencyCollapse(customers=recent[0], total=int(total), days=int(recent[1]), score=1, levels=levels,
                           within=RECENT_DAYS)


def _threshold_sql(col: str, cuts: list[float], levels: int, lower_is_better: bool) -> str:
    if not cuts:  # the cut points of a run that scored nobody (:func:`derive_cut_points`): none to score against
        return "NULL"
    if len(cuts) != levels - 1:
        raise ValueError(f"{col}: {levels} levels need {levels - 1} cut points, got {len(cuts)}")
    if lower_is_better:
        return f"{levels} - (" + " + ".join(f"CAST({col} > {c!r} AS INTEGER)" for c in cuts) + ")"
    return "1 + (" + " + ".join(f"CAST({col} >= {c!r} AS INTEGER)" for c in cuts) + ")"


def score_sql(con: duckdb.DuckDBPyConnection, method: str, levels: int, thresholds: Thresholds | None,
              table: str, alias: str, n: int) -> tuple[str, str, str]:
    """The SQL expressions of r, f and m over ``table AS alias`` (``n`` rows with recency_days, frequency,
    monetary); a quantile run first reads where each score steps up."""
    if method == "quantile":
        return _quantile_exprs(con, table, alias, levels, n)
    if thresholds is None:
        raise ValueError("method = \"thresholds\" needs a [segmentation.thresholds] table")
    return (_threshold_sql("recency_days", thresholds.recency_days, levels, True),
            _threshold_sql("frequency", thresholds.frequency, levels, False),
            _threshold_sql("monetary", thresholds.monetary, levels, False))


def derive_cut_points(con: duckdb.DuckDBPyConnection, table: str, levels: int) -> Thresholds:
    """Cut points that reproduce the scores in ``table`` (columns r, f, m and the metrics) as thresholds (up to a
    float step's resolution for monetary values above ~7e13: see :func:`_nudge`). Empty lists when the table is
    empty: a run that scored nobody has no cut points (placeholders such as ``recency_days > -1`` were shown
    as real ones), and none is saved for the webhook resync (:func:`sync.ingest.save_cut_points`)."""
    rec: list[float] = []
    freq: list[float] = []
    mon: list[float] = []
    # one pass over the table: per k, recency: R = N - #(x > c) → c_k = max recency among R ≥ N-k+1;
    # frequency and monetary: c_k = min value among F (M) ≥ k+1
    aggs = [f"max(recency_days) FILTER (WHERE r >= {levels - k + 1}), min(frequency) FILTER (WHERE f >= {k + 1}), "
            f"min(monetary) FILTER (WHERE m >= {k + 1})" for k in range(1, levels)]
    *found, top_f, top_m, n = con.execute(f"SELECT {', '.join(aggs)}, max(frequency), max(monetary), count(*) "
                                          f"FROM {table}").fetchall()[0]
    if not n:
        return Thresholds(recency_days=rec, frequency=freq, monetary=mon)
    for k in range(1, levels):
        hi, *los = found[3 * (k - 1):3 * k]
        rec.append(float(hi) if hi is not None else (rec[-1] if rec else -1.0))
        for lo, out, top in zip(los, (freq, mon), (top_f, top_m)):
            # an empty (top) level: a cut point above every value, one up from the column's max or the last one
            out.append(float(lo) if lo is not None else _step_up(max([float(top or 0), *out[-1:]])))
    # keep them strictly ascending; an empty level collapses onto its neighbour without moving anyone:
    # recency cut points move up (x > c is unchanged for whole days), frequency/monetary ones move down.
    for i in range(1, len(rec)):
        if rec[i] <= rec[i - 1]:
            rec[i] = _nudge(rec[i - 1], 1)
    for seq in (freq, mon):
        for i in range(len(seq) - 2, -1, -1):
            if seq[i] >= seq[i + 1]:
                seq[i] = _nudge(seq[i + 1], -1)
    return Thresholds(recency_days=rec, frequency=freq, monetary=mon)


def _step_up(value: float) -> float:
    """The next whole number above ``value`` (shown as such by :func:`score_band`), or one float step up where
    the whole numbers are sparser than 1 (above 2⁵³ ≈ 9·10¹⁵)."""
    up = float(math.floor(value) + 1)
    return up if up > value else _nudge(value, 1)


def _nudge(value: float, direction: int) -> float:
    """``value`` moved by 1e-6 in ``direction`` (±1), or by one float step where 1e-6 is lost in the value's
    magnitude (above ~1e10 ``value + 1e-6 == value``): the result is always strictly beyond ``value``. The limit:
    a float step is coarser than a cent above ~7e13 (0.125 at 1e15), so there a customer whose monetary sits within
    that step below a collapsed cut point can score one level higher under the derived cut points."""
    moved = value + direction * 1e-6
    return moved if moved != value else math.nextafter(value, direction * math.inf)


def score_band(metric: str, score: int, cuts: list[float], levels: int) -> dict:
    """The range of ``metric`` that gives ``score`` under ascending ``cuts`` (the thresholds, or the cut points a
    quantile run derived): ``{"score", "low", "high", "rule"}``, ``low``/``high`` None when open-ended. Recency
    (lower is better): ``low < x <= high``; frequency and monetary: ``low <= x < high`` (pure)."""
    cuts = [_nice(c) for c in cuts]
    if metric == "recency_days":  # score = levels - #(x > c)
        k = levels - score  # how many cut points x is above
        low, high, ops = (cuts[k - 1] if k >= 1 else None), (cuts[k] if k < len(cuts) else None), ("<", "<=")
    else:  # score = 1 + #(x >= c)
        low, high = (cuts[score - 2] if score >= 2 else None), (cuts[score - 1] if score - 1 < len(cuts) else None)
        ops = ("<=", "<")
    rule = _band_rule(metric, low, high, *ops)
    return {"score": score, "low": low, "high": high, "rule": rule}


def _band_rule(metric: str, low, high, low_op: str, high_op: str) -> str:
    """``low <op> metric <op> high`` with open ends written as one comparison (``metric > low``)."""
    if low is not None and high is not None:
        return f"{low} {low_op} {metric} {high_op} {high}"
    if low is not None:
        return f"{metric} {'>' if low_op == '<' else '>='} {low}"
    return f"{metric} {high_op} {high}" if high is not None else "any value"


def _nice(value: float) -> float | int:
    """A cut point as shown: whole numbers without ``.0``; the tiny nudges that keep cut points ascending gone."""
    rounded = round(value, 2)
    return int(rounded) if rounded == int(rounded) else rounded
