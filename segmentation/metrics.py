"""Per-customer RFM metrics from the canonical ``orders`` table, in DuckDB.

As of a date (inclusive, in the shop's time zone):

* ``frequency``: completed orders (refunds and cancellations excluded);
* ``monetary``: net revenue = completed amounts − refunded amounts (refund rows count by absolute value);
* ``recency_days``: days from the last completed order's local date to ``as_of``;
* first and last completed order, ``avg_check`` = monetary / frequency.

Customers with no completed order up to ``as_of`` are not scored.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import duckdb


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def local_cutoff(as_of: date, timezone: str) -> datetime:
    """The instant the day after ``as_of`` starts in the shop's time zone (orders before it count)."""
    return datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=ZoneInfo(timezone))


def build_customer_metrics(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str = "UTC",
                           orders: str = "orders", table: str = "customer_metrics",
                           customers: str | None = None) -> int:
    """Create TEMP table ``table``; returns the number of scored customers.

    Orders are filtered by one precomputed instant and aggregated in UTC; only the per-customer first and last
    order are converted to local time (one conversion per customer, not per order). Each order becomes a sale
    time (NULL for a refund) and a signed amount, so five plain aggregates do the work (FILTER clauses cost
    about a fifth more on 10 M orders).
    ``customers``: optional name of a table with a ``customer_id`` column to restrict the computation to.
    """
    restrict = f"AND customer_id IN (SELECT customer_id FROM {customers})" if customers else ""
    cutoff = local_cutoff(as_of, timezone).isoformat()
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        WITH agg AS (
            SELECT customer_id, min(sale_at) AS first_at, max(sale_at) AS last_at, count(sale_at) AS frequency,
                   CAST(coalesce(sum(net), 0) AS DECIMAL(18, 2)) AS monetary, count(*) - count(sale_at) AS refunds
            FROM (SELECT customer_id, CASE WHEN status = 'completed' THEN ordered_at END AS sale_at,
                         CASE WHEN status = 'completed' THEN amount ELSE -abs(amount) END AS net
                  FROM {orders}
                  WHERE ordered_at < TIMESTAMPTZ {_q(cutoff)}
                    AND status IN ('completed', 'refunded') {restrict})
            GROUP BY customer_id
            HAVING count(sale_at) > 0
        )
        SELECT customer_id,
               DATE {_q(as_of.isoformat())} - CAST(timezone({_q(timezone)}, last_at) AS DATE) AS recency_days,
               frequency, monetary,
               CAST(monetary / frequency AS DECIMAL(18, 2)) AS avg_check,
               refunds,
               timezone({_q(timezone)}, first_at) AS first_order_at,
               timezone({_q(timezone)}, last_at) AS last_order_at
        FROM agg
    """)
    return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
