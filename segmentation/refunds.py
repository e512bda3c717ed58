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
it read before (no table, the same figures). The table is small (a row per customer with refunds, listing them),
built from the refund rows and the sales their ids name (kept in the order store under its purchase-day cache's
key: :func:`create_refunds`; a warm run filters the kept list to its as-of); which of them are of repeat days is
decided where the customer's first and second purchase days are (``first_day``, ``second_day`` of the lifecycle's
per-customer aggregates, kept with the order store's totals: :mod:`sync.store.day_cache`), so that no customer's
orders are read again and the store's kept tables, of the completed orders alone, serve any as-of.
"""

from __future__ import annotations

import hashlib
from datetime import date

import duckdb

#: TEMP table of the last :func:`create_refunds`: customer_id, refunds (a list of his refunds up to the as-of:
#: ``day``, the refund's own local day, ``sale_day`` and ``sale``, its sale's day and order id when found by id,
#: and ``amount``)
TABLE = "_rfmsync_refunds"

#: per customer of ``{orders}`` with refunds up to $as_of, the list of them (``{day}``: the local day of
#: ``ordered_at``): each with its sale's day when the customer has a completed order of the refund's id without its
#: ``~return`` suffix (looked up by id, only for such refunds: one probe of the order ids, none without them)
REFUNDS_SQL = """
    WITH refunds AS (
        SELECT * FROM (SELECT customer_id, order_id, regexp_replace(order_id, '~return[0-9]*$', '') AS sale_id,
                              abs(amount) AS amount, {day} AS day
                       FROM {orders} WHERE status = 'refunded')
        WHERE day <= $as_of),
    sales AS (
        SELECT customer_id, order_id, {day} AS day FROM {orders}
        WHERE status = 'completed' AND order_id IN (SELECT sale_id FROM refunds WHERE sale_id <> order_id))
    SELECT r.customer_id, list({{'day': r.day, 'sale_day': s.day, 'sale': s.order_id, 'amount': r.amount}}) AS refunds
    FROM refunds r LEFT JOIN sales s ON s.customer_id = r.customer_id AND s.order_id = r.sale_id
    GROUP BY r.customer_id
"""


def net_monetary_sql(d: str = "d", r: str = "r") -> str:
    """The mean spend of the repeat purchase days less their refunds, 0 at the least, as SQL: ``d`` a relation of
    the customer's ``monetary`` (the BTYD mean spend, a DOUBLE), ``purchase_days``, ``first_day`` and
    ``second_day`` (NULL with one purchase day), ``r`` his row of :data:`TABLE` (NULL: no refund). A refund is of a
    repeat day when its sale's day is after the first purchase day, or, no sale found, when a purchase day after the
    first is on or before the refund's own day (the latest purchase day on or before it is then a repeat day).
    Without refunds it is ``monetary`` itself."""
    repeat = (f"list_sum(list_transform(list_filter({r}.refunds, lambda one: coalesce(one.sale_day > {d}.first_day, "
              f"one.day >= {d}.second_day)), lambda one: one.amount))")
    return (f"CASE WHEN {r}.refunds IS NULL OR {d}.purchase_days < 2 THEN {d}.monetary "
            f"ELSE greatest({d}.monetary - CAST(coalesce({repeat}, 0) AS DOUBLE) / ({d}.purchase_days - 1), 0.0) END")


#: the order store's kept list of every refund (:data:`REFUNDS_SQL` with no as-of: it depends on the as-of only
#: through each refund's ``day``), and its key: the purchase-day cache's (the orders and local days it is of, the
#: store's generation included: every merge and file change moves it on) and this module's definition
KEPT = "cache_refunds"
KEPT_KEY = "cache_refunds_key"
_DEFINITION = hashlib.blake2b(REFUNDS_SQL.encode(), digest_size=8).hexdigest()


def create_refunds(con: duckdb.DuckDBPyConnection, as_of: date, orders: str, day_sql: str,
                   kept: str | None = None) -> bool:
    """(Re)create TEMP table :data:`TABLE` of the customers' refunds up to ``as_of``; False (and no table) when
    ``orders`` hold no refund at all: the spend model reads the completed amounts then. ``kept``: the key of the
    order store's purchase-day cache, when ``orders`` are the store's and the cache is theirs: the list of every
    refund is kept in the store under it (:data:`KEPT`, built when its key is another), and a run reads its
    refunds up to ``as_of`` from there (a warm run reads neither the refund rows nor the sales by id again)."""
    con.execute(f"DROP TABLE IF EXISTS temp.main.{TABLE}")
    if kept is None:
        if not con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {orders} WHERE status = 'refunded' LIMIT 1)"
                           ).fetchall()[0][0]:
            return False
        con.execute(f"CREATE TEMP TABLE {TABLE} AS {REFUNDS_SQL.format(orders=orders, day=day_sql)}",
                    {"as_of": as_of})
        return True
    key = f"{kept} {_DEFINITION}"
    if [(key,)] != (con.execute(f"SELECT key FROM {KEPT_KEY}").fetchall() if has_table(con, KEPT_KEY) else None):
        con.execute(f"CREATE OR REPLACE TABLE {KEPT} AS {REFUNDS_SQL.format(orders=orders, day=day_sql)}",
                    {"as_of": date.max})
        con.execute(f"CREATE OR REPLACE TABLE {KEPT_KEY} AS SELECT CAST(? AS VARCHAR) AS key", [key])
    if not con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {KEPT} LIMIT 1)").fetchall()[0][0]:
        return False
    con.execute(f"CREATE TEMP TABLE {TABLE} AS SELECT * FROM (SELECT customer_id, "
                f"list_filter(refunds, lambda one: one.day <= $as_of) AS refunds FROM {KEPT}) WHERE len(refunds) > 0",
                {"as_of": as_of})
    return True


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """The open database (not its TEMP tables) holds table ``name`` in schema ``main``."""
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                            "AND schema_name = 'main' AND table_name = ?", [name]).fetchall()[0][0])
