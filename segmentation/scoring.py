"""R, F and M scores on 1..N, by tie-aware quantiles or explicit thresholds, in DuckDB.

**Quantile rule.** A customer's score is ``1 + floor(N × w / n)`` (at most N), where ``n`` is the number of
scored customers and ``w`` the number of customers with a strictly *worse* value (larger recency, smaller
frequency or monetary). So customers with the same value always get the same score, scores never decrease as the
value improves, the worst value always scores 1, and nothing depends on row order. With all values distinct it
gives N equal groups. Frequency is heavily tied (often half the customers buy once): they all get F = 1 instead of
being spread over F = 1..3 by row order (the ``rank(method="first")`` bug).

**Thresholds rule.** Explicit ascending cut points, N−1 per metric (see :class:`~segmentation.config.Thresholds`).

Every quantile run also yields the equivalent cut points (:func:`derive_cut_points`); applying them as thresholds
reproduces the same scores. Incremental re-scoring of a few customers uses them so that one new order does not
reshuffle everybody's quantiles.
"""

from __future__ import annotations

import duckdb

from .config import Thresholds

METRICS = ("recency_days", "frequency", "monetary")
_BIG = 1e15


def _quantile_sql(col: str, levels: int, worse_is_larger: bool, n: int | None = None) -> str:
    order = "DESC" if worse_is_larger else "ASC"
    total = str(max(1, n)) if n is not None else "count(*) OVER ()"  # a known count spares a window
    return f"least({levels}, 1 + ((rank() OVER (ORDER BY {col} {order}) - 1) * {levels}) // {total})"


def _threshold_sql(col: str, cuts: list[float], levels: int, lower_is_better: bool) -> str:
    if len(cuts) != levels - 1:
        raise ValueError(f"{col}: {levels} levels need {levels - 1} cut points, got {len(cuts)}")
    if lower_is_better:
        return f"{levels} - (" + " + ".join(f"CAST({col} > {c!r} AS INTEGER)" for c in cuts) + ")"
    return "1 + (" + " + ".join(f"CAST({col} >= {c!r} AS INTEGER)" for c in cuts) + ")"


def score_sql(method: str, levels: int, thresholds: Thresholds | None,
              n: int | None = None) -> tuple[str, str, str]:
    """SQL expressions for r, f, m over a table with recency_days, frequency, monetary (``n`` rows, if known)."""
    if method == "quantile":
        return (_quantile_sql("recency_days", levels, True, n), _quantile_sql("frequency", levels, False, n),
                _quantile_sql("monetary", levels, False, n))
    if thresholds is None:
        raise ValueError("method = \"thresholds\" needs a [segmentation.thresholds] table")
    return (_threshold_sql("recency_days", thresholds.recency_days, levels, True),
            _threshold_sql("frequency", thresholds.frequency, levels, False),
            _threshold_sql("monetary", thresholds.monetary, levels, False))


def derive_cut_points(con: duckdb.DuckDBPyConnection, table: str, levels: int) -> Thresholds:
    """Cut points that reproduce the scores in ``table`` (columns r, f, m and the metrics) as thresholds."""
    rec, freq, mon = [], [], []
    for k in range(1, levels):
        # recency: R = N - #(x > c) → c_k = max recency among R ≥ N-k+1
        hi = con.execute(f"SELECT max(recency_days) FROM {table} WHERE r >= {levels - k + 1}").fetchall()[0][0]
        rec.append(float(hi) if hi is not None else (rec[-1] if rec else -1.0))
        for col, s, out in (("frequency", "f", freq), ("monetary", "m", mon)):
            lo = con.execute(f"SELECT min({col}) FROM {table} WHERE {s} >= {k + 1}").fetchall()[0][0]
            out.append(float(lo) if lo is not None else _BIG + k)
    # keep them strictly ascending; an empty level collapses onto its neighbour without moving anyone:
    # recency cut points move up (x > c is unchanged for whole days), frequency/monetary ones move down.
    tiny = 1e-6
    for i in range(1, len(rec)):
        if rec[i] <= rec[i - 1]:
            rec[i] = rec[i - 1] + tiny
    for seq in (freq, mon):
        for i in range(len(seq) - 2, -1, -1):
            if seq[i] >= seq[i + 1]:
                seq[i] = seq[i + 1] - tiny
    return Thresholds(recency_days=rec, frequency=freq, monetary=mon)
