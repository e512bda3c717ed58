"""The BTYD ("buy 'til you die") customer summary, computed in DuckDB.

One definition of the purchase days everywhere, the literature's (Fader, Hardie & Lee 2005; lifetimes'
``summary_data_from_transaction_data(freq="D", freq_multiplier=7)``):

* only ``completed`` orders make purchase days, and only those on or before ``as_of`` (a
  local calendar day in the shop's time zone, inclusive; refunds enter the lifecycle's mean
  spend alone, below);
* orders are collapsed per customer and **local day** (``ordered_at AT TIME ZONE tz``);
  a day's amounts are summed (the run's purchase-day table, :mod:`segmentation.purchase_days`);
* ``frequency`` = purchase days − 1 (repeat purchase days);
* ``recency``   = last purchase day − first purchase day;
* ``T``         = ``as_of`` − first purchase day;
* ``monetary``  = mean of the repeat days' totals (the first day is excluded; 0 when
  ``frequency`` is 0), gross: :func:`btyd_summary` reads the completed amounts alone, while the
  lifecycle's mean spend (``customer_lifecycle.monetary``, the spend model's input) is net of the refunds
  of those days (:mod:`segmentation.refunds`).

Times are counted in whole days in SQL and reported in the model's time unit
(``"weeks"`` = days / 7, the paper's convention, or ``"days"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa

from .triples import distinct_triples
from .purchase_days import PurchaseDays, purchase_days_for

TimeUnit = Literal["days", "weeks"]
DAYS_PER_UNIT: dict[str, float] = {"days": 1.0, "weeks": 7.0}

# Per customer from the run's purchase-day table (segmentation.purchase_days), days up to $as_of only.
SUMMARY_SQL = """
    SELECT customer_id,
           count(*) - 1                                AS frequency,
           date_diff('day', min(day), max(day))        AS recency_days,
           date_diff('day', min(day), $as_of::DATE)    AS t_days,
           CASE WHEN count(*) > 1
                THEN CAST((sum(day_amount) - arg_min(day_amount, day)) / (count(*) - 1) AS DOUBLE)
                ELSE 0.0 END                           AS monetary
    FROM {days}
    WHERE day <= $as_of
    GROUP BY customer_id
    ORDER BY customer_id
"""


@dataclass(frozen=True, eq=False)
class BtydSummary:
    """Per-customer BTYD summary as aligned numpy arrays (sorted by customer_id).

    ``recency`` and ``T`` are in ``time_unit``; ``recency_days``/``t_days`` are whole days.
    """

    customer_id: pa.Array
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    monetary: np.ndarray
    recency_days: np.ndarray
    t_days: np.ndarray
    as_of: date
    time_unit: TimeUnit

    def __len__(self) -> int:
        return len(self.frequency)

    @property
    def repeat_customers(self) -> int:
        return int(np.count_nonzero(self.frequency > 0))

    @cached_property
    def triples(self) -> Triples:
        """The distinct (frequency, recency, T) rows, how many customers share each, and each customer's row:
        the BG/NBD fit and its per-customer quantities depend on these alone."""
        return Triples(*distinct_triples(self.frequency, self.recency, self.T))


@dataclass(frozen=True, eq=False)
class Triples:
    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    index: np.ndarray  # per customer: its row here

    @cached_property
    def weights(self) -> np.ndarray:
        return np.bincount(self.index, minlength=len(self.x)).astype(np.float64)


@dataclass(frozen=True, eq=False)
class SummaryCounts:
    """The distinct (frequency, recency, T) rows of a BTYD summary, sorted, and how many customers share each.

    The BG/NBD fit and its per-customer numbers depend on these alone; a large shop has far fewer distinct rows
    than customers (every one-time buyer of a day shares one). Built in SQL (a GROUP BY over the per-customer
    table), so no per-customer array leaves DuckDB."""

    x: np.ndarray             # frequency (repeat purchase days), int64
    recency_days: np.ndarray  # int64
    t_days: np.ndarray        # int64
    weights: np.ndarray       # customers per row, float64
    time_unit: TimeUnit

    @classmethod
    def from_arrays(cls, x, recency_days, t_days, weights, time_unit: TimeUnit) -> SummaryCounts:
        return cls(np.asarray(x, dtype=np.int64), np.asarray(recency_days, dtype=np.int64),
                   np.asarray(t_days, dtype=np.int64), np.asarray(weights, dtype=np.float64), time_unit)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def t_x(self) -> np.ndarray:
        return self.recency_days / DAYS_PER_UNIT[self.time_unit]

    @property
    def T(self) -> np.ndarray:
        return self.t_days / DAYS_PER_UNIT[self.time_unit]

    @property
    def customers(self) -> int:
        return int(self.weights.sum())

    @property
    def repeat_customers(self) -> int:
        return int(self.weights[self.x > 0].sum())

    @property
    def history_days(self) -> int:
        return int(self.t_days.max()) if len(self) else 0


def btyd_summary(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str = "UTC",
                 time_unit: TimeUnit = "weeks", days: PurchaseDays | None = None) -> BtydSummary:
    """Summarise the canonical ``orders`` table as of the local day ``as_of`` (inclusive).

    ``days``: the run's purchase-day table, if built (it must cover ``as_of``); else one is built here."""
    if time_unit not in DAYS_PER_UNIT:
        raise ValueError(f"time_unit must be 'days' or 'weeks', got {time_unit!r}")
    days = purchase_days_for(con, as_of, timezone, days)
    tbl = con.sql(SUMMARY_SQL.format(days=days.table), params={"as_of": as_of}).to_arrow_table()
    per_unit = DAYS_PER_UNIT[time_unit]
    rec_days = tbl.column("recency_days").to_numpy().astype(np.int64)
    t_days = tbl.column("t_days").to_numpy().astype(np.int64)
    return BtydSummary(
        customer_id=tbl.column("customer_id").combine_chunks(),
        frequency=tbl.column("frequency").to_numpy().astype(np.int64),
        recency=rec_days / per_unit,
        T=t_days / per_unit,
        monetary=tbl.column("monetary").to_numpy().astype(np.float64),
        recency_days=rec_days,
        t_days=t_days,
        as_of=as_of,
        time_unit=time_unit,
    )


def simulate_bgnbd(r: float, alpha: float, a: float, b: float, T: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw (frequency, recency) for customers of age ``T`` from the BG/NBD process.

    Rates λ ~ Gamma(r, 1/α), dropout p ~ Beta(a, b); purchases arrive as a Poisson
    process and after each repeat purchase the customer drops out with probability p.
    Vectorised over customers (the loop runs over purchase number). For tests and benches.
    """
    T = np.asarray(T, dtype=np.float64)
    n = T.size
    lam, p = rng.gamma(r, 1.0 / alpha, n), rng.beta(a, b, n)
    x, t, t_x = np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
    idx = np.arange(n)
    while idx.size:
        t[idx] += rng.exponential(1.0, idx.size) / lam[idx]
        idx = idx[t[idx] <= T[idx]]
        x[idx] += 1
        t_x[idx] = t[idx]
        idx = idx[rng.random(idx.size) >= p[idx]]
    return x, t_x
