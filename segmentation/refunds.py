"""Refunds in the spend model: each customer's mean spend is of what he kept.

``monetary`` (:mod:`segmentation.metrics`) is net revenue: a refund row takes its amount off. The spend model
(Gamma-Gamma: ``expected_aov`` and ``clv``) reads another figure, the BTYD mean spend of the customer's repeat
purchase days (``customer_lifecycle.monetary``, :mod:`segmentation.lifecycle`), summed from the completed orders of
the purchase-day table (:mod:`segmentation.purchase_days`). Without the refunds, a customer who bought five times
1 000 and returned everything had net revenue 0 and the shop's highest CLV. So each refund up to the as-of is
taken off the spend of the purchase day it refunds:

* its sale's day: the customer's completed order whose id is the refund's without a ``~return`` suffix (a file's
  return booked under its sale's receipt number is stored as ``ID~return``, ``ID~return2``: docs/sources/files.md);
* else (a return on a receipt of its own, a generic webhook's refund under an id of its own) the customer's latest
  purchase day on or before the refund's own day: the purchase it most likely takes back;
* none (a refund before the customer's first purchase day: of a sale the data does not hold): not in the spend
  model (his net revenue has it, and the refunds-exceed-sales warning names him when it is below zero).

Only the refunds of repeat purchase days change the mean (the first day's spend is in no mean), so a customer's
mean spend is (his repeat days' completed amounts − their refunds) / his repeat days, and 0 if that is below 0 (a
refund larger than what it refunds). A purchase day wholly refunded counts as a day of spend 0; it stays a purchase
day: BG/NBD counts the days the customer bought on (``x``, recency, T, the lifecycle's gaps and the boundary are
as without refunds), and CLV = expected purchase days × expected net spend of one, a returned purchase counting 0.

A refund counts as of the as-of when its own local day is on or before it (a later refund is not known yet): a run
as of a past day reads what a run on that day read, whatever came after. A shop without refunds reads exactly what
it read before (no table, the same SQL). The relation is small (a row per customer with refunds of repeat days),
computed per run from the refunds and their customers' orders: the store's kept purchase days and totals are of
the completed orders alone, for every as-of.
"""

from __future__ import annotations

from datetime import date

import duckdb

#: TEMP table of the last :func:`create_repeat_refunds`: customer_id, refunds (DECIMAL: of his repeat purchase days)
TABLE = "_rfmsync_repeat_refunds"

#: per customer of ``{orders}`` with a purchase day up to $as_of, his refunds up to $as_of of his repeat purchase
#: days (``{day}``: the local day of ``ordered_at``); customers without such refunds have no row
REPEAT_REFUNDS_SQL = """
    WITH refunds AS (
        SELECT * FROM (SELECT customer_id, regexp_replace(order_id, '~return[0-9]*$', '') AS sale_id,
                              abs(amount) AS amount, {day} AS day
                       FROM {orders} WHERE status = 'refunded')
        WHERE day <= $as_of),
    sales AS (
        SELECT * FROM (SELECT customer_id, order_id, {day} AS day FROM {orders}
                       WHERE status = 'completed' AND customer_id IN (SELECT customer_id FROM refunds))
        WHERE day <= $as_of),
    days AS (SELECT customer_id, day, min(day) OVER (PARTITION BY customer_id) AS first_day
             FROM sales GROUP BY customer_id, day)
    SELECT r.customer_id, sum(r.amount) AS refunds
    FROM refunds r
    LEFT JOIN sales s ON s.customer_id = r.customer_id AND s.order_id = r.sale_id
    ASOF JOIN days d ON d.customer_id = r.customer_id AND r.day >= d.day
    WHERE coalesce(s.day, d.day) > d.first_day
    GROUP BY r.customer_id
"""


def net_monetary_sql(monetary: str, purchase_days: str, refunds: str) -> str:
    """The mean spend of the repeat purchase days less their refunds, 0 at the least: ``monetary`` (the BTYD mean
    spend, a DOUBLE), ``purchase_days`` (the customer's purchase days) and ``refunds`` (of his repeat days, NULL:
    none) are SQL expressions. Without refunds it is ``monetary`` itself."""
    return (f"CASE WHEN {refunds} IS NULL THEN {monetary} "
            f"ELSE greatest({monetary} - CAST({refunds} AS DOUBLE) / ({purchase_days} - 1), 0.0) END")


def repeat_refunds_sql(orders: str, day_sql: str) -> str:
    """:data:`REPEAT_REFUNDS_SQL` over ``orders`` (a table or a parenthesised subquery; binds ``$as_of``)."""
    return REPEAT_REFUNDS_SQL.format(orders=orders, day=day_sql)


def create_repeat_refunds(con: duckdb.DuckDBPyConnection, as_of: date, orders: str, day_sql: str) -> bool:
    """(Re)create TEMP table :data:`TABLE` of the customers' refunds of repeat purchase days up to ``as_of``; False
    (and no table) when ``orders`` hold no refund at all: the spend model reads the completed amounts then."""
    con.execute(f"DROP TABLE IF EXISTS temp.main.{TABLE}")
    if not con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {orders} WHERE status = 'refunded' LIMIT 1)"
                       ).fetchall()[0][0]:
        return False
    con.execute(f"CREATE TEMP TABLE {TABLE} AS {repeat_refunds_sql(orders, day_sql)}", {"as_of": as_of})
    return True
