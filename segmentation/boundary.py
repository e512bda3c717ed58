"""The falling-asleep boundary: after how many silent days customers rarely come back.

Method (survival analysis, Linoff & Berry ch. 10): every gap between two consecutive purchase days of a customer is
an observed spell; the silence since each customer's last purchase up to ``as_of`` is a right-censored spell.
Kaplan–Meier gives S(d) = P(no purchase within d days). The probability of buying again within a window H after
d silent days is ``p(d) = 1 − S(d + H) / S(d)``. The **boundary** is the first d where p(d) falls below the
threshold (default: 10 % within 90 days); the **knee** is the point of the curve farthest below its chord
(Kneedle). The suggested reminder day is ``boundary − reminder_lead_days``. Inter-purchase gap percentiles are
reported alongside. When the history is too thin, ``days`` is null and ``reason`` says why. Shops with more
than ``sample_customers`` customers are estimated on a deterministic sample of them (every k-th by a hash of the
customer id; ``sampled_every`` says k): the curve is a population statistic and the sample keeps it cheap.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import duckdb

from .config import BoundaryConfig
from .purchase_days import PurchaseDays, build_purchase_days, sample_filter

if TYPE_CHECKING:
    import numpy as np

PERCENTILES = (25, 50, 75, 80, 90, 95)
#: the fewest repeat purchases, and the fewest customers they come from, a boundary is read from
MIN_REPEATS = 30


def km_curve(durations: np.ndarray, events: np.ndarray, censored: np.ndarray):
    """Kaplan–Meier survival at each distinct duration; also the number at risk there."""
    import numpy as np

    at_risk = (events + censored)[::-1].cumsum()[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1.0 - events / at_risk, 1.0)
    return np.cumprod(factor), at_risk


def _spells(con: duckdb.DuckDBPyConnection, days: PurchaseDays, as_of: date, every: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, dict[str, int]]:
    """Per distinct spell length d: (durations, observed gaps, censored silences, customers whose longest spell
    is d), the customers with a repeat purchase and the gap percentiles.

    Every customer's purchase days (of every ``every``-th customer by hash) give one spell per gap to the next
    purchase day (an event: the next day's ``gap``) and one up to ``as_of`` after the last (censored). A customer
    is still observed at d while one of his spells lasts d or more: his longest spell says until when.
    """
    import numpy as np

    where = f"WHERE day <= $as_of {sample_filter(every) if days.sampled_every != every else ''}"
    spells = con.execute(f"""
        WITH spells AS (
            SELECT customer_id, gap AS d, true AS event FROM {days.table} {where} AND gap IS NOT NULL
            UNION ALL
            SELECT customer_id, CAST($as_of AS DATE) - max(day) AS d, false AS event
            FROM {days.table} {where} GROUP BY customer_id
        ), by_length AS (
            SELECT d, count(*) FILTER (WHERE event) AS events, count(*) FILTER (WHERE NOT event) AS censored
            FROM spells GROUP BY d
        ), longest AS (
            SELECT d, count(*) AS customers FROM (SELECT max(d) AS d FROM spells GROUP BY customer_id) GROUP BY d
        )
        SELECT d, events, censored, coalesce(customers, 0) AS longest
        FROM by_length LEFT JOIN longest USING (d) ORDER BY d
    """, {"as_of": as_of}).fetchnumpy()
    durations = spells["d"].astype(np.int64)
    events = spells["events"].astype(np.float64)
    censored = spells["censored"].astype(np.float64)
    longest = spells["longest"].astype(np.float64)
    percentiles: dict[str, int] = {}
    repeaters = 0
    if events.sum():
        qs = ", ".join(f"quantile_disc(gap, {p / 100})" for p in PERCENTILES)
        repeaters, *vals = con.execute(f"SELECT count(DISTINCT customer_id), {qs} FROM {days.table} {where} "
                                       "AND gap IS NOT NULL", {"as_of": as_of}).fetchall()[0]
        percentiles = {f"p{p}": int(v) for p, v in zip(PERCENTILES, vals)}
    return durations, events, censored, longest, int(repeaters), percentiles


def return_curve(durations: np.ndarray, events: np.ndarray, censored: np.ndarray, longest: np.ndarray,
                 cfg: BoundaryConfig) -> tuple[np.ndarray, np.ndarray]:
    """(d, p(d)): P(purchase within ``window_days`` after d silent days), for every d up to ``max_days`` where
    at least ``min_at_risk`` customers (not spells: one regular's many gaps are one customer) are still observed
    at d + window; ``longest``: per duration, the customers whose longest spell it is."""
    import numpy as np

    surv, _ = km_curve(durations, events, censored)
    at_risk = longest[::-1].cumsum()[::-1]  # customers with a spell of d or more

    def s_at(d: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(durations, d, side="right") - 1
        return np.where(idx >= 0, surv[np.clip(idx, 0, None)], 1.0)

    def risk_at(d: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(durations, d, side="left")
        return np.where(idx < len(at_risk), at_risk[np.clip(idx, 0, len(at_risk) - 1)], 0)

    H = cfg.window_days
    d = np.arange(0, cfg.max_days + 1)
    d = d[risk_at(d + H) >= cfg.min_at_risk]
    s_d, s_dh = s_at(d), s_at(d + H)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(s_d > 0, 1.0 - s_dh / s_d, 0.0)
    return d, p


def knee(d: np.ndarray, p: np.ndarray) -> int | None:
    """The d farthest below the chord of the (normalised) curve p(d) (Kneedle); None for a flat curve."""
    import numpy as np

    x = (d - d[0]) / max(1, d[-1] - d[0])
    span = p.max() - p.min()
    y = (p - p.min()) / span if span > 0 else np.zeros_like(p)
    chord = y[0] + (y[-1] - y[0]) * x
    return int(d[int(np.argmax(chord - y))]) if span > 0 else None


def falling_asleep_boundary(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str = "UTC",
                            cfg: BoundaryConfig | None = None, reminder_lead_days: int = 14,
                            orders: str = "orders", customers: int | None = None,
                            days: PurchaseDays | None = None) -> dict:
    """The boundary curve; ``customers`` (if known) lets large shops be estimated on a deterministic sample.

    ``days``: the run's purchase-day table (:mod:`segmentation.purchase_days`) when the predictions built one;
    without it (or when it does not cover ``as_of``) the boundary builds its own of the sampled customers."""
    import numpy as np  # here, not at the top: `segments --customers` has no boundary and needs no numpy

    cfg = cfg or BoundaryConfig()
    every = max(1, -(-int(customers or 0) // cfg.sample_customers)) if cfg.sample_customers else 1
    if days is None or not days.covers(as_of, timezone, orders):
        # no shared table (no predictions this run): build one of the sampled customers alone, cheaper
        days = build_purchase_days(con, as_of, timezone, orders, sampled_every=every, table="_rfmsync_boundary_days")
        try:
            spells = _spells(con, days, as_of, every)
        finally:
            con.execute(f"DROP TABLE IF EXISTS {days.table}")
    else:
        spells = _spells(con, days, as_of, every)
    durations, events, censored, longest, repeaters, percentiles = spells
    gaps = int(events.sum())
    result: dict = {
        "days": None, "reminder_day": None, "knee_days": None,
        "window_days": cfg.window_days, "return_probability": cfg.return_probability,
        "method": "kaplan-meier", "gaps": gaps, "repeat_customers": repeaters, "sampled_every": every,
        "gap_percentiles": percentiles, "curve": [], "reason": None,
    }
    if gaps < MIN_REPEATS or repeaters < MIN_REPEATS:
        result["reason"] = (f"only {gaps} repeat purchases in the history; at least {MIN_REPEATS} are needed"
                            if gaps < MIN_REPEATS else
                            f"the {gaps} repeat purchases come from {repeaters} customer{'' if repeaters == 1 else 's'}"
                            f"; at least {MIN_REPEATS} repeat customers are needed")
        return result
    d, p = return_curve(durations, events, censored, longest, cfg)
    if len(d) < 2:
        result["reason"] = "the history is too short to follow customers through a whole window"
        return result
    step = 1 if len(d) <= 120 else 7
    result["curve"] = [{"days": int(x), "p_return": round(float(y), 4)} for x, y in zip(d[::step], p[::step])]
    result["knee_days"] = knee(d, p)
    below = np.nonzero(p < cfg.return_probability)[0]
    if len(below):
        result["days"] = int(d[below[0]])
    else:
        result["reason"] = (f"P(return within {cfg.window_days} days) stays above {cfg.return_probability:.0%} "
                            f"(its lowest: {float(p.min()):.0%}) over the observed {int(d[-1])} days; the knee is "
                            "given instead")
        result["days"] = result["knee_days"]
        result["method"] = "knee"
    if result["days"] is not None:
        result["reminder_day"] = max(1, result["days"] - reminder_lead_days)
    return result
