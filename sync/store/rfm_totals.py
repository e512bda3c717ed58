"""The per-customer RFM totals kept in the order store between runs: a warm run scores without reading the orders.

A run's RFM metrics (:func:`segmentation.metrics.build_customer_metrics`) are a projection of per-customer
totals of the orders before its cut-off (:data:`~segmentation.metrics.TOTALS_SQL`: first and last sale, completed
orders, net revenue, refunds). When the cut-off is after the newest order (the usual run: as of today), those are
the totals of *every* order, whatever the as-of: the store keeps them in ``cache_rfm_totals`` (with the first and
last sale in local time) under a key in ``cache_rfm_totals_key``: the definition (a hash of the SQL), the DuckDB
version (whose ICU gives local times), the time zone, the store's generation (:mod:`.generation`: every write to
``orders`` moves it on, in its own transaction), the number of orders, the newest order and a checksum of the
orders' times, amounts and statuses (an order edited in place, without a merge: the purchase-day cache's rule).

* a run uses them when the key is that of the store as it is now and its cut-off is after the newest order; a run
  as of an earlier day reads the orders (nothing is kept for it);
* a run that finds them missing or stale rebuilds them, in one transaction with the key, from the one pass over
  the orders it had to make anyway;
* a file added the lean way (:mod:`.file_lean`: its rows inserted, nothing deleted) adds its orders' totals in
  the transaction that inserts them (counts and sums add up, first and last sale are the least and greatest), so
  the next run finds them current: a daily file costs its own rows. Any other write leaves the key behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import date

import duckdb

from segmentation.metrics import TOTALS_SQL, local_cutoff, local_times_sql

from .generation import generation

log = logging.getLogger(__name__)

TABLE = "cache_rfm_totals"
KEY_TABLE = "cache_rfm_totals_key"
_ADDED = "_rfm_totals_added"  # a new file's totals (TEMP, dropped after)
_DEFINITION = hashlib.blake2b((TOTALS_SQL + local_times_sql("{tz}")).encode(), digest_size=8).hexdigest()
#: customer ids are near-unique strings: stored uncompressed (as in ``orders``, :data:`connectors.tables.UNCOMPRESSED`)
_COLUMNS = ("customer_id VARCHAR USING COMPRESSION uncompressed, first_at TIMESTAMPTZ, last_at TIMESTAMPTZ, "
            "frequency BIGINT, monetary DECIMAL(38, 2), refunds BIGINT, first_order_at TIMESTAMP, "
            "last_order_at TIMESTAMP")


def _orders_key(con: duckdb.DuckDBPyConnection, timezone: str) -> tuple[str, object]:
    """(the key of the orders as they are now, their newest order): one scan of the three columns the totals
    read besides the customer id (an order edited in place, without a merge, changes the checksum)."""
    rows, newest, checksum = con.execute("SELECT count(*), max(ordered_at), sum(hash(ordered_at, amount, status)) "
                                         "FROM orders").fetchall()[0]
    return json.dumps([_DEFINITION, duckdb.__version__, timezone, generation(con), rows, str(newest),
                       str(checksum)]), newest


def _stored(con: duckdb.DuckDBPyConnection) -> tuple[str, str] | None:
    """(key, time zone) of the kept totals, or None."""
    present = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND "
                          f"schema_name = 'main' AND table_name IN ('{TABLE}', '{KEY_TABLE}')").fetchall()[0][0]
    if present != 2:
        return None
    rows = con.execute(f"SELECT key, timezone FROM {KEY_TABLE}").fetchall()
    return rows[0] if len(rows) == 1 else None


def _save_key(con: duckdb.DuckDBPyConnection, timezone: str) -> None:
    con.execute(f"CREATE TABLE IF NOT EXISTS {KEY_TABLE} (key VARCHAR NOT NULL, timezone VARCHAR NOT NULL)")
    con.execute(f"DELETE FROM {KEY_TABLE}")
    con.execute(f"INSERT INTO {KEY_TABLE} VALUES (?, ?)", [_orders_key(con, timezone)[0], timezone])


def rfm_totals(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str) -> str | None:
    """The table of the store's totals for a run as of ``as_of`` in ``timezone`` (built first when missing or
    stale), or None when the cut-off leaves orders out (or there is none): the run then reads the orders."""
    key, newest = _orders_key(con, timezone)
    if newest is None or newest >= local_cutoff(as_of, timezone):
        return None
    stored = _stored(con)
    if stored is not None and stored[0] == key:
        log.debug("rfm totals: the order store's are current")
        return TABLE
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE OR REPLACE TABLE {TABLE} ({_COLUMNS})")
        con.execute(f"INSERT INTO {TABLE} SELECT *, {local_times_sql(timezone)} "
                    f"FROM ({TOTALS_SQL.format(orders='orders', where='true')})")
        _save_key(con, timezone)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    log.debug("rfm totals: rebuilt from the orders")
    return TABLE


def current_totals(con: duckdb.DuckDBPyConnection) -> str | None:
    """The time zone of the kept totals when they are those of the orders as they are now, else None (call it
    before a write to ``orders``, then :func:`add_totals` after it)."""
    stored = _stored(con)
    return stored[1] if stored is not None and stored[0] == _orders_key(con, stored[1])[0] else None


def add_totals(con: duckdb.DuckDBPyConnection, added: str, timezone: str) -> None:
    """Add the totals of the orders in ``added`` (just inserted into ``orders``, nothing deleted) to the kept
    totals of ``timezone`` and move their key on (inside the caller's transaction, after the generation moved)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_ADDED} AS {TOTALS_SQL.format(orders=added, where='true')}")
    tz = "'" + timezone.replace("'", "''") + "'"
    con.execute(f"""UPDATE {TABLE} AS t SET first_at = least(t.first_at, a.first_at),
                        last_at = greatest(t.last_at, a.last_at), frequency = t.frequency + a.frequency,
                        monetary = t.monetary + a.monetary, refunds = t.refunds + a.refunds,
                        first_order_at = timezone({tz}, least(t.first_at, a.first_at)),
                        last_order_at = timezone({tz}, greatest(t.last_at, a.last_at))
                    FROM {_ADDED} a WHERE t.customer_id = a.customer_id""")
    con.execute(f"INSERT INTO {TABLE} SELECT *, {local_times_sql(timezone)} FROM {_ADDED} a "
                f"WHERE a.customer_id NOT IN (SELECT customer_id FROM {TABLE})")
    con.execute(f"DROP TABLE {_ADDED}")
    _save_key(con, timezone)
