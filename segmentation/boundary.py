"""The falling-asleep boundary: after how many silent days customers rarely come back.

Method (survival analysis, Linoff & Berry ch. 10): every gap between two consecutive purchase days of a customer is
an observed spell; the silence since each customer's last purchase up to ``as_of`` is a right-censored spell.
Kaplan–Meier gives S(d) = P(no purchase within d days). The probability of buying again within a window H after
d silent days is ``p(d) = 1 − S(d + H) / S(d)``. The **boundary** is the first d where p(d) falls below the
threshold (default: 10 % within 90 days); the **knee** is the point of the curve farthest below its chord
(Kneedle). The suggested reminder day is ``boundary − reminder_lead_days``. Inter-purchase gap percentiles are
reported alongside. When the history is too thin, ``days`` is null and ``reason`` says why.
"""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np

from .config import BoundaryConfig

PERCENTILES = (25, 50, 75, 80, 90, 95)


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def km_curve(durations: np.ndarray, events: np.ndarray, censored: np.ndarray):
    """Kaplan–Meier survival at each distinct duration; also the number at risk there."""
    at_risk = (events + censored)[::-1].cumsum()[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1.0 - events / at_risk, 1.0)
    return np.cumprod(factor), at_risk


def falling_asleep_boundary(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str = "UTC",
                            cfg: BoundaryConfig | None = None, reminder_lead_days: int = 14,
                            orders: str = "orders") -> dict:
    cfg = cfg or BoundaryConfig()
    spells = con.execute(f"""
        WITH days AS (
            SELECT DISTINCT customer_id, CAST(timezone({_q(timezone)}, ordered_at) AS DATE) AS day
            FROM {orders}
            WHERE status = 'completed'
              AND CAST(timezone({_q(timezone)}, ordered_at) AS DATE) <= DATE {_q(as_of.isoformat())}
        ), spells AS (
            SELECT coalesce(lead(day) OVER w, DATE {_q(as_of.isoformat())}) - day AS d,
                   lead(day) OVER w IS NOT NULL AS event
            FROM days WINDOW w AS (PARTITION BY customer_id ORDER BY day)
        )
        SELECT d, count(*) FILTER (WHERE event) AS events, count(*) FILTER (WHERE NOT event) AS censored
        FROM spells GROUP BY d ORDER BY d
    """).fetchnumpy()
    durations = spells["d"].astype(np.int64)
    events = spells["events"].astype(np.float64)
    censored = spells["censored"].astype(np.float64)
    gaps = int(events.sum())
    result: dict = {
        "days": None, "reminder_day": None, "knee_days": None,
        "window_days": cfg.window_days, "return_probability": cfg.return_probability,
        "method": "kaplan-meier", "gaps": gaps,
        "gap_percentiles": {}, "curve": [], "reason": None,
    }
    if gaps:
        qs = ", ".join(f"quantile_disc(d, {p / 100})" for p in PERCENTILES)
        vals = con.execute(f"""
            WITH days AS (
                SELECT DISTINCT customer_id, CAST(timezone({_q(timezone)}, ordered_at) AS DATE) AS day
                FROM {orders} WHERE status = 'completed'
                  AND CAST(timezone({_q(timezone)}, ordered_at) AS DATE) <= DATE {_q(as_of.isoformat())}
            ), g AS (SELECT day - lag(day) OVER (PARTITION BY customer_id ORDER BY day) AS d FROM days)
            SELECT {qs} FROM g WHERE d IS NOT NULL
        """).fetchall()[0]
        result["gap_percentiles"] = {f"p{p}": int(v) for p, v in zip(PERCENTILES, vals)}
    if gaps < 30:
        result["reason"] = f"only {gaps} repeat purchases in the history; at least 30 are needed"
        return result

    surv, at_risk = km_curve(durations, events, censored)

    def s_at(d: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(durations, d, side="right") - 1
        return np.where(idx >= 0, surv[np.clip(idx, 0, None)], 1.0)

    def risk_at(d: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(durations, d, side="left")
        return np.where(idx < len(at_risk), at_risk[np.clip(idx, 0, len(at_risk) - 1)], 0)

    H = cfg.window_days
    d = np.arange(0, cfg.max_days + 1)
    ok = risk_at(d + H) >= cfg.min_at_risk
    d = d[ok]
    if len(d) < 2:
        result["reason"] = "the history is too short to follow customers through a whole window"
        return result
    s_d, s_dh = s_at(d), s_at(d + H)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(s_d > 0, 1.0 - s_dh / s_d, 0.0)
    step = 1 if len(d) <= 120 else 7
    result["curve"] = [{"days": int(x), "p_return": round(float(y), 4)} for x, y in zip(d[::step], p[::step])]
    below = np.nonzero(p < cfg.return_probability)[0]
    # knee: the point farthest below the chord of the (normalised) curve
    x = (d - d[0]) / max(1, d[-1] - d[0])
    span = p.max() - p.min()
    y = (p - p.min()) / span if span > 0 else np.zeros_like(p)
    chord = y[0] + (y[-1] - y[0]) * x
    result["knee_days"] = int(d[int(np.argmax(chord - y))]) if span > 0 else None
    if len(below):
        result["days"] = int(d[below[0]])
    else:
        result["reason"] = (f"P(return within {H} days) stays above {cfg.return_probability:.0%} over the "
                            f"observed {int(d[-1])} days; the knee is given instead")
        result["days"] = result["knee_days"]
        result["method"] = "knee"
    if result["days"] is not None:
        result["reminder_day"] = max(1, result["days"] - reminder_lead_days)
    return result
