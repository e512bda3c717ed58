"""The holdout check's numbers: the calibration summary and what the customers bought after it, in one pass.

:func:`segmentation.predictive.predict_customers` refits BG/NBD on the orders up to ``calibration_end`` (=
``as_of`` − ``holdout_days``) and compares the purchase days it predicts in the window after with the actual ones.
Both come from the one pass per customer over the run's purchase-day table that also gives the lifecycle fields
(:func:`segmentation.lifecycle.create_lifecycle_table` with ``calibration_end``): per customer with a purchase day
up to ``calibration_end``, the BTYD summary as of that day and the purchase days after it. Here they are counted
per distinct (summary, days after); the model is evaluated once per distinct summary, and every total is a
weighted sum: the check's totals and correlation, and the customers grouped by their calibration repeat purchases
(the report's holdout chart, which used to redo the summary and the expectation itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from .btyd import SummaryCounts, TimeUnit
from .triples import distinct_triples

#: calibration repeat purchases of the holdout groups: 0, 1, … and the last one open (6+)
HOLDOUT_GROUPS = 6

CALIBRATION_SQL = """
    SELECT cal_x AS x, cal_recency_days AS recency_days, cal_t_days AS t_days, cal_later AS later,
           count(*) AS customers
    FROM customer_lifecycle WHERE cal_t_days >= 0
    GROUP BY ALL ORDER BY ALL
"""


@dataclass(frozen=True, eq=False)
class Calibration:
    """Per distinct (calibration summary, purchase days after): ``summary`` (its distinct summaries, weighted by
    customers), ``row`` (each row's index into them), ``later`` and ``customers`` per row."""

    summary: SummaryCounts
    row: np.ndarray
    later: np.ndarray
    customers: np.ndarray


def calibration(con: duckdb.DuckDBPyConnection, time_unit: TimeUnit) -> Calibration:
    """The calibration rows of ``customer_lifecycle`` (created with a ``calibration_end``)."""
    got = con.execute(CALIBRATION_SQL).fetchnumpy()
    n = got["customers"].astype(np.float64)
    ux, urec, ut, row = distinct_triples(got["x"].astype(np.int64), got["recency_days"].astype(np.int64),
                                         got["t_days"].astype(np.int64))
    weights = np.bincount(row, weights=n, minlength=len(ux))
    return Calibration(SummaryCounts.from_arrays(ux, urec, ut, weights, time_unit), row,
                       got["later"].astype(np.float64), n)


def compare(cal: Calibration, predicted: np.ndarray) -> tuple[dict[str, Any], tuple[dict[str, Any], ...]]:
    """The check's totals and the groups by calibration repeat purchases, from ``predicted`` (expected purchase
    days in the window, per distinct summary of ``cal``; non-finite ones are left out of the predicted sums)."""
    pred = predicted[cal.row]
    n, later = cal.customers, cal.later
    ok = np.isfinite(pred)
    corr = None
    if n[ok].sum() > 2 and _varies(later[ok]) and _varies(pred[ok]):
        w, p, a = n[ok], pred[ok], later[ok]
        dp, da = p - np.average(p, weights=w), a - np.average(a, weights=w)
        corr = float(np.sum(w * dp * da) / np.sqrt(np.sum(w * dp * dp) * np.sum(w * da * da)))
    totals = {"customers": int(n.sum()), "predicted_purchases": float(np.sum(n[ok] * pred[ok])),
              "actual_purchases": int(np.sum(n * later)), "correlation": corr}
    group = np.minimum(cal.summary.x[cal.row], HOLDOUT_GROUPS)
    groups = tuple({"repeat_purchases": int(g), "customers": int(n[group == g].sum()),
                    "predicted": float(np.sum((n * np.where(ok, pred, 0.0))[group == g])),
                    "actual": int(np.sum((n * later)[group == g]))}
                   for g in np.unique(group))
    return totals, groups


def _varies(values: np.ndarray) -> bool:
    return bool(len(values)) and bool(values.max() > values.min())
