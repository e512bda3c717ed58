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

Only the run that needs it builds it (a prediction run); a cache of another time zone is replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import date

import duckdb

from segmentation import lifecycle, purchase_days
from segmentation.localtime import check_timezone, local_day_sql
from segmentation.purchase_days import ALL_DAYS, PurchaseDays, build_purchase_days

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


def _stored(con: duckdb.DuckDBPyConnection) -> tuple[str, str, date | None] | None:
    present = {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
        f"AND table_name IN ('{DAYS_TABLE}', '{TOTALS_TABLE}', '{KEY_TABLE}')").fetchall()}
    if len(present) < 3:
        return None
    rows = con.execute(f"SELECT key, day_sql, last_day FROM {KEY_TABLE}").fetchall()
    return rows[0] if len(rows) == 1 else None


def _days(timezone: str, day_sql: str, last_day: date | None) -> PurchaseDays:
    return PurchaseDays(DAYS_TABLE, ALL_DAYS, timezone, "orders", day_sql, totals=TOTALS_TABLE, last_day=last_day)


def valid_purchase_days(con: duckdb.DuckDBPyConnection, timezone: str) -> PurchaseDays | None:
    """The store's purchase-day table when it is that of the orders as they are now, in ``timezone``; else None."""
    check_timezone(timezone)
    stored = _stored(con)
    if stored is None or stored[0] != cache_key(con, timezone):
        return None
    return _days(timezone, stored[1], stored[2])


def cached_purchase_days(con: duckdb.DuckDBPyConnection, timezone: str) -> PurchaseDays:
    """The store's purchase-day table of its orders in ``timezone``, built (or rebuilt) first when it is not
    that of the orders as they are now."""
    check_timezone(timezone)
    key = cache_key(con, timezone)
    stored = _stored(con)
    if stored is not None and stored[0] == key:
        log.debug("purchase days: the order store's table is current")
        return _days(timezone, stored[1], stored[2])
    day_sql = local_day_sql(con, "ordered_at", timezone)
    with unordered(con):  # full row groups, written in any order (nothing reads their physical order)
        con.execute("BEGIN TRANSACTION")
        try:
            days = build_purchase_days(con, ALL_DAYS, timezone, table=DAYS_TABLE, temp=False, day_sql=day_sql)
            lifecycle.create_customer_totals(con, days, TOTALS_TABLE, temp=False)
            last_day = con.execute(f"SELECT max(last_day) FROM {TOTALS_TABLE}").fetchall()[0][0]
            con.execute(f"CREATE OR REPLACE TABLE {KEY_TABLE} (key VARCHAR, day_sql VARCHAR, last_day DATE)")
            con.execute(f"INSERT INTO {KEY_TABLE} VALUES (?, ?, ?)", [key, day_sql, last_day])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    log.info("purchase days: built the order store's table (%s)", "replaced" if stored else "new")
    return _days(timezone, day_sql, last_day)


def drop_cache(con: duckdb.DuckDBPyConnection) -> None:
    """Forget the cached table (the next prediction run builds it again)."""
    for table in (KEY_TABLE, TOTALS_TABLE, DAYS_TABLE):
        con.execute(f"DROP TABLE IF EXISTS {table}")
