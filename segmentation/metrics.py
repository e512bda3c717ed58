"""Per-customer RFM metrics from the canonical ``orders`` table, in DuckDB.

As of a date (inclusive, in the shop's time zone):

* ``frequency``: completed orders (refunds and cancellations excluded);
* ``monetary``: net revenue = completed amounts − refunded amounts (refund rows count by absolute value);
* ``recency_days``: days from the last completed order's local date to ``as_of``;
* first and last completed order, ``avg_check`` = monetary / frequency.

Customers with no completed order up to ``as_of`` are not scored.
"""

from __future__ import annotations

from datetime import date

import duckdb


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def build_customer_metrics(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str = "UTC",
                           orders: str = "orders", table: str = "customer_metrics",
                           customers: str | None = None) -> int:
    """Create TEMP table ``table``; returns the number of scored customers.

    ``customers``: optional name of a table with a ``customer_id`` column to restrict the computation to.
    """
    restrict = f"AND customer_id IN (SELECT customer_id FROM {customers})" if customers else ""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        WITH o AS (
            SELECT customer_id, status, amount, timezone({_q(timezone)}, ordered_at) AS local_at
            FROM {orders}
            WHERE timezone({_q(timezone)}, ordered_at) < DATE {_q(as_of.isoformat())} + INTERVAL 1 DAY
              AND status IN ('completed', 'refunded') {restrict}
        )
        SELECT customer_id,
               min(local_at) FILTER (WHERE status = 'completed') AS first_order_at,
               max(local_at) FILTER (WHERE status = 'completed') AS last_order_at,
               count(*) FILTER (WHERE status = 'completed') AS frequency,
               CAST(coalesce(sum(amount) FILTER (WHERE status = 'completed'), 0)
                    - coalesce(sum(abs(amount)) FILTER (WHERE status = 'refunded'), 0) AS DECIMAL(18, 2)) AS monetary,
               count(*) FILTER (WHERE status = 'refunded') AS refunds
        FROM o
        GROUP BY customer_id
        HAVING count(*) FILTER (WHERE status = 'completed') > 0
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT customer_id,
               DATE {_q(as_of.isoformat())} - CAST(last_order_at AS DATE) AS recency_days,
               frequency, monetary,
               CAST(monetary / frequency AS DECIMAL(18, 2)) AS avg_check,
               refunds, first_order_at, last_order_at
        FROM {table}
    """)
    return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
