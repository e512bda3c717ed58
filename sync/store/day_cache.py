"""The purchase-day table kept in the order store between runs, so that predictions cost what the RFM step does.

Every prediction run starts from the completed orders collapsed per customer and local day
(:mod:`segmentation.purchase_days`): a ``GROUP BY`` of every order and a window over every customer's days, more
than the whole RFM step on a large shop. The store keeps that table of *every* purchase day
(``cache_purchase_days``) and the lifecycle's per-customer totals of it (``cache_customer_totals``):

* any as-of is a filter of it (``WHERE day <= as_of``: every cut-off is a prefix of each customer's days, the
  ``gap`` column included), never a new table; a run as of the latest purchase day or later reads the totals
  instead of grouping the days (the usual run: as of today);
* it is used only when it was built from exactly the orders the store holds now, in the same time zone, by the
  same definition: its key (``cache_purchase_days_key``) holds the time zone, a hash of the SQL that builds it,
  the DuckDB version (whose ICU gives the local days), the number of orders, a checksum of the columns it reads
  (``ordered_at``, ``amount``, ``discount``, ``status``) and the store's generation
  (:mod:`sync.store.generation`: every merge and every file change moves it on, in its own transaction, so a
  rewritten customer id is seen too). Any difference rebuilds it, in one transaction with its key.

Only a prediction run builds it, and only what it reads: the totals always (a run without holdout or boundary,
``segments --customers``, computes them in the one pass over the orders it made anyway and writes nothing else);
the day table when the holdout or the boundary needs it. A cache of another time zone is replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from datetime import date

import duckdb

from segmentation import lifecycle, purchase_days
from segmentation.localtime import check_timezone, local_day_sql
from segmentation.purchase_days import ALL_DAYS, PurchaseDays, build_purchase_days, purchase_days_query

from .generation import generation
from .merge import unordered

log = logging.getLogger(__name__)

DAYS_TABLE = "cache_purchase_days"
TOTALS_TABLE = "cache_customer_totals"
KEY_TABLE = "cache_purchase_days_key"
#: the definition the cache was built by: a change in it is a new key
_DEFINITION = hashlib.blake2b((purchase_days.SELECT_SQL + lifecycle.PER_CUSTOMER_SQL).encode(),
                              digest_size=8).hexdigest()


def cache_key(con: duckdb.DuckDBPyConnection, timezone: str) -> str:
    """What the cached table depends on, as one string (one scan of four columns of ``orders``)."""
    rows, checksum = con.execute("SELECT count(*), sum(hash(ordered_at, amount, discount, status)) FROM orders"
                                 ).fetchall()[0]
    return json.dumps([_DEFINITION, duckdb.__version__, timezone, rows, str(checksum), generation(con)])


def _stored(con: duckdb.DuckDBPyConnection) -> tuple[str, str, date | None, bool] | None:
    """(key, local-day expression, last purchase day, whether the day table is kept) of the cache, or None."""
    present = {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
        f"AND table_name IN ('{DAYS_TABLE}', '{TOTALS_TABLE}', '{KEY_TABLE}')").fetchall()}
    if not {TOTALS_TABLE, KEY_TABLE} <= present:
        return None
    rows = con.execute(f"SELECT key, day_sql, last_day, days FROM {KEY_TABLE}").fetchall()
    if len(rows) != 1 or (rows[0][3] and DAYS_TABLE not in present):
        return None
    return rows[0]


def _days(con: duckdb.DuckDBPyConnection, timezone: str, day_sql: str, last_day: date | None,
          has_days: bool) -> PurchaseDays:
    if has_days:
        return PurchaseDays(DAYS_TABLE, ALL_DAYS, timezone, "orders", day_sql, totals=TOTALS_TABLE,
                            last_day=last_day)
    # the totals alone are kept: an earlier as-of reads the days as a subquery of the orders (one pass)
    return replace(purchase_days_query(con, ALL_DAYS, timezone, day_sql=day_sql), totals=TOTALS_TABLE,
                   last_day=last_day)


def valid_purchase_days(con: duckdb.DuckDBPyConnection, timezone: str, *,
                        day_table: bool = False) -> PurchaseDays | None:
    """The store's purchase days when they are those of the orders as they are now, in ``timezone``; else None
    (``day_table``: None too when only the totals are kept). Nothing is built."""
    check_timezone(timezone)
    stored = _stored(con)
    if stored is None or (day_table and not stored[3]) or stored[0] != cache_key(con, timezone):
        return None
    return _days(con, timezone, stored[1], stored[2], stored[3])


def cached_purchase_days(con: duckdb.DuckDBPyConnection, timezone: str, *, days: bool = True) -> PurchaseDays:
    """The store's purchase days of its orders in ``timezone``, (re)built first when they are not those of the
    orders as they are now. ``days``: keep the table of every day too (the holdout and the boundary read it);
    without, only the per-customer totals are built (from one pass over the orders, nothing else written), and
    ``table`` is a subquery."""
    check_timezone(timezone)
    key = cache_key(con, timezone)
    stored = _stored(con)
    if stored is not None and stored[0] == key and (stored[3] or not days):
        log.debug("purchase days: the order store's are current")
        return _days(con, timezone, stored[1], stored[2], stored[3])
    current = stored is not None and stored[0] == key  # the totals are, the day table is wanted now
    day_sql = stored[1] if current else local_day_sql(con, "ordered_at", timezone)
    with unordered(con):  # full row groups, written in any order (nothing reads their physical order)
        con.execute("BEGIN TRANSACTION")
        try:
            built = (build_purchase_days(con, ALL_DAYS, timezone, table=DAYS_TABLE, temp=False, day_sql=day_sql)
                     if days else purchase_days_query(con, ALL_DAYS, timezone, day_sql=day_sql))
            if not current:  # new orders: the old day table goes with the old totals
                if not days:
                    con.execute(f"DROP TABLE IF EXISTS {DAYS_TABLE}")
                lifecycle.create_customer_totals(con, built, TOTALS_TABLE, temp=False)
            last_day = con.execute(f"SELECT max(last_day) FROM {TOTALS_TABLE}").fetchall()[0][0]
            con.execute(f"CREATE OR REPLACE TABLE {KEY_TABLE} (key VARCHAR, day_sql VARCHAR, last_day DATE, "
                        "days BOOLEAN)")
            con.execute(f"INSERT INTO {KEY_TABLE} VALUES (?, ?, ?, ?)", [key, day_sql, last_day, days])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    log.info("purchase days: built the order store's %s", "day table" if current else
             "day table and totals" if days else "totals")
    return _days(con, timezone, day_sql, last_day, days)


def drop_cache(con: duckdb.DuckDBPyConnection) -> None:
    """Forget the cached table (the next prediction run builds it again)."""
    for table in (KEY_TABLE, TOTALS_TABLE, DAYS_TABLE):
        con.execute(f"DROP TABLE IF EXISTS {table}")
