"""One row per customer and local purchase day: the table the predictive steps and the boundary share.

The BG/NBD summary (:mod:`segmentation.btyd`), the lifecycle fields (:mod:`segmentation.lifecycle`), the holdout
check (:mod:`segmentation.predictive`) and the falling-asleep boundary (:mod:`segmentation.boundary`) all start
from the same thing: the completed orders up to ``as_of``, collapsed per customer and local calendar day. A run
builds it once (:func:`build_purchase_days`), with the local-day expression of :mod:`segmentation.localtime`
found once, and each step aggregates the table instead of re-reading the orders:

* ``customer_id``, ``day`` (local DATE, ≤ ``as_of``);
* ``day_amount`` (the day's completed amounts), ``orders`` and ``discounted`` (orders with ``discount > 0``);
* ``gap``: days since the customer's previous purchase day (NULL on the first one).

Any earlier cut-off (the holdout's calibration end) is a prefix of every customer's days, so ``WHERE day <= d``
on this table gives exactly what a table built as of ``d`` would, ``gap`` included. A table of every day
(``as_of`` = :data:`ALL_DAYS`) therefore serves any as-of: the order store keeps one between runs
(:mod:`sync.store.day_cache`), with ``totals``, the lifecycle's per-customer aggregates of all of it
(:func:`segmentation.lifecycle.create_customer_totals`), which a run as of ``last_day`` or later reads instead
of grouping the days again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from .localtime import check_timezone, local_day_sql

TABLE = "_rfmsync_purchase_days"
#: the ``as_of`` of a table of every purchase day (no cut-off): it covers any as-of
ALL_DAYS = date(9999, 12, 31)

#: the rows without their gaps (finding those sorts every customer's days): :data:`SELECT_SQL` adds them
DAY_ROWS_SQL = """
    SELECT customer_id, day, sum(amount) AS day_amount, CAST(count(*) AS INTEGER) AS orders,
           CAST(count(*) FILTER (WHERE discount > 0) AS INTEGER) AS discounted
    FROM (SELECT customer_id, amount, discount, {day} AS day FROM {orders}
          WHERE status = 'completed' {sample})
    WHERE day <= $as_of
    GROUP BY customer_id, day
"""
SELECT_SQL = """
    SELECT customer_id, day, day_amount, orders, discounted,
           CAST(day - lag(day) OVER (PARTITION BY customer_id ORDER BY day) AS INTEGER) AS gap
    FROM (""" + DAY_ROWS_SQL + """)
"""
BUILD_SQL = "CREATE OR REPLACE {temp}TABLE {table} AS {select}"
#: each order with its local ``day`` and ``keep``: whether it counts for the totals (completed, on or before $as_of)
ORDER_DAYS_SQL = """
    SELECT *, status = 'completed' AND day <= $as_of AS keep FROM (SELECT *, {day} AS day FROM {orders})"""
#: one row per customer of :data:`ORDER_DAYS_SQL`: the aggregates the totals read (``sorted``: the kept orders'
#: days, sorted, repeats included), over the rows ``{where}`` leaves; ``{extra}``: more aggregates of the same
#: grouping (the order store adds the customers' checks of every order: :mod:`sync.store.day_cache`). A customer
#: without kept orders has ``orders`` = 0 (and is no row of the totals).
GROUPED_SQL = """
    SELECT customer_id{extra}, list_sort(list(day) FILTER (WHERE keep)) AS sorted,
           count(*) FILTER (WHERE keep) AS orders, count(*) FILTER (WHERE keep AND discount > 0) AS discounted,
           sum(amount) FILTER (WHERE keep) AS amount
    FROM (""" + ORDER_DAYS_SQL + """) {where} GROUP BY customer_id"""
#: the per-customer totals the order store keeps (:func:`segmentation.lifecycle.customer_totals_sql` over the
#: day rows of :data:`SELECT_SQL`: the same rows, columns and types) from ``{grouped}``, a relation of
#: :data:`GROUPED_SQL`: one grouping of the orders by customer instead of one by customer and day (about as many
#: groups as orders) and another of those rows by customer. Each customer's days are their sorted list of days
#: with the repeats dropped (first and last day, ``gaps`` and the median gap from it: a list to take the median
#: of only from three days on); ``monetary`` needs the amount of the first purchase day, summed from the orders
#: of that day alone (a join with the repeat buyers' first days). Every sum is of DECIMALs, so the result is
#: exact, whatever the grouping.
TOTALS_OF_GROUPED_SQL = """
    WITH per AS (
        SELECT customer_id, orders, discounted, amount, days, days[1] AS first_day, days[-1] AS last_day
        FROM (SELECT *, list_filter(sorted, lambda d, i: i = 1 OR d <> sorted[i - 1]) AS days
              FROM {grouped} WHERE orders > 0)),
    first_amount AS (
        SELECT customer_id, sum(amount) AS amount FROM (""" + ORDER_DAYS_SQL + """) o
        SEMI JOIN (SELECT customer_id, first_day FROM per WHERE len(days) > 1) f
             ON o.customer_id = f.customer_id AND o.day = f.first_day
        WHERE keep GROUP BY customer_id)
    SELECT customer_id, first_day, days[2] AS second_day, last_day, len(days) AS purchase_days, len(days) - 1 AS gaps,
           CASE WHEN len(days) > 2 THEN list_median([days[i + 1] - days[i] FOR i IN range(1, len(days))])
                WHEN len(days) = 2 THEN CAST(days[2] - days[1] AS DOUBLE) END AS median_gap_days,
           orders, discounted / orders AS discount_share,
           CASE WHEN len(days) > 1 THEN CAST((p.amount - f.amount) / (len(days) - 1) AS DOUBLE) ELSE 0.0 END
               AS monetary,
           days AS day_list
    FROM per p LEFT JOIN first_amount f USING (customer_id)
"""
#: :data:`TOTALS_OF_GROUPED_SQL` straight from the orders (``{day}``, ``{orders}``): the kept orders alone grouped
CUSTOMER_TOTALS_SQL = TOTALS_OF_GROUPED_SQL.replace(
    "{grouped}", "(" + GROUPED_SQL.replace("{extra}", "").replace("{where}", "WHERE keep") + ")")


@dataclass(frozen=True)
class PurchaseDays:
    """A built purchase-day table and what it was built from.

    ``day_sql`` is the local-day expression over ``orders.ordered_at`` (for the one step that needs single
    orders: the lifecycle's favourite category and brand). ``table`` is a table name, or a parenthesised
    subquery (:func:`purchase_days_query`; it reads ``$as_of``, which its readers bind). ``sampled_every`` > 1: only every k-th customer by
    hash of the id (the boundary's sample of a large shop). ``totals``: a table of the lifecycle's per-customer
    aggregates over every row of ``table`` (:func:`segmentation.lifecycle.create_customer_totals`), equal to
    those as of any day from ``last_day`` (the table's latest purchase day) on. ``key``: the order store's
    purchase-day cache key when these are its days, of its orders as they are (what the refunds the store keeps
    beside them are of: :func:`segmentation.refunds.create_refunds`).
    """

    table: str
    as_of: date
    timezone: str
    orders: str
    day_sql: str
    sampled_every: int = 1
    totals: str | None = None
    last_day: date | None = None
    key: str | None = None

    @property
    def materialized(self) -> bool:
        """True for a table, False for a subquery of the orders (:func:`purchase_days_query`)."""
        return not self.table.startswith("(")

    def totals_for(self, as_of: date) -> str | None:
        """``totals`` when they are the aggregates as of ``as_of`` (no purchase day after it), else None."""
        return self.totals if self.totals and (self.last_day is None or as_of >= self.last_day) else None

    def covers(self, as_of: date, timezone: str, orders: str = "orders") -> bool:
        """True when this table holds every customer's days up to ``as_of`` (or a later day) of ``orders``."""
        return self.sampled_every == 1 and self.timezone == timezone and self.orders == orders and as_of <= self.as_of


def sample_filter(every: int) -> str:
    """The SQL condition keeping every ``every``-th customer by hash of the id ('' for all)."""
    return f"AND hash(customer_id) % {every} = 0" if every > 1 else ""


def build_purchase_days(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str = "UTC",
                        orders: str = "orders", *, sampled_every: int = 1, table: str = TABLE,
                        temp: bool = True, day_sql: str | None = None) -> PurchaseDays:
    """(Re)create TEMP table ``table`` from the completed orders of ``orders`` up to the local day ``as_of``
    (:data:`ALL_DAYS`: every day). ``temp=False``: a table of the database (the order store's cache);
    ``day_sql``: the local-day expression, when already found for these orders."""
    check_timezone(timezone)
    if not (table.isidentifier() and orders.replace(".", "_").isidentifier()):
        raise ValueError(f"table names must be identifiers, got {table!r} and {orders!r}")
    day = day_sql or local_day_sql(con, "ordered_at", timezone, orders)
    select = SELECT_SQL.format(day=day, orders=orders, sample=sample_filter(sampled_every))
    con.execute(BUILD_SQL.format(temp="TEMP " if temp else "", table=table, select=select), {"as_of": as_of})
    return PurchaseDays(table, as_of, timezone, orders, day, sampled_every)


def build_customer_totals(con: duckdb.DuckDBPyConnection, table: str, as_of: date, timezone: str = "UTC",
                          orders: str = "orders", *, temp: bool = True, day_sql: str | None = None) -> None:
    """(Re)create ``table``: the per-customer totals of the completed orders of ``orders`` up to the local day
    ``as_of`` (:data:`CUSTOMER_TOTALS_SQL`: what :func:`segmentation.lifecycle.create_customer_totals` gives over
    :func:`build_purchase_days`, without a table of the days). ``temp=False``: a table of the database."""
    check_timezone(timezone)
    if not (table.isidentifier() and orders.replace(".", "_").isidentifier()):
        raise ValueError(f"table names must be identifiers, got {table!r} and {orders!r}")
    day = day_sql or local_day_sql(con, "ordered_at", timezone, orders)
    con.execute(BUILD_SQL.format(temp="TEMP " if temp else "", table=table,
                                 select=CUSTOMER_TOTALS_SQL.format(day=day, orders=orders)), {"as_of": as_of})


def purchase_days_query(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str = "UTC",
                        orders: str = "orders", *, day_sql: str | None = None) -> PurchaseDays:
    """The same rows as :func:`build_purchase_days`, as a subquery that is not materialized: for a run with one
    reader (``rfmsync segments --customers``: the lifecycle's single pass), writing the table (a row per customer
    and day) costs more than it saves, and never holds its memory. The reader binds ``$as_of`` (≤ ``as_of``).
    ``day_sql``: the local-day expression, when already found for these orders."""
    check_timezone(timezone)
    if not orders.replace(".", "_").isidentifier():
        raise ValueError(f"table names must be identifiers, got {orders!r}")
    day = day_sql or local_day_sql(con, "ordered_at", timezone, orders)
    return PurchaseDays(f"({SELECT_SQL.format(day=day, orders=orders, sample='')})", as_of, timezone, orders, day)


def purchase_days_for(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str,
                      days: PurchaseDays | None = None) -> PurchaseDays:
    """``days`` when it covers ``as_of`` of ``orders`` in ``timezone``; a new table when None; else ValueError."""
    if days is None:
        return build_purchase_days(con, as_of, timezone)
    if not days.covers(as_of, timezone):
        raise ValueError(f"the purchase-day table ({days.orders} in {days.timezone} up to {days.as_of}"
                         f"{', sampled' if days.sampled_every > 1 else ''}) does not cover {as_of} in {timezone}")
    return days
