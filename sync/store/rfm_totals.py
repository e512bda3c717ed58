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
  the orders it had to make anyway; a prediction run whose purchase-day totals are rebuilt too has them written
  by that build, from its own grouping of the orders (:func:`.day_cache.build_totals_and_checks`, with
  :data:`GROUPED_AGGREGATES`), whatever its as-of;
* a file added the lean way (:mod:`.file_lean`: its rows inserted, nothing deleted) adds its orders' totals in
  the transaction that inserts them (counts and sums add up, first and last sale are the least and greatest: its
  customers' rows are replaced, the others not touched) and its orders' count, newest order and checksum to the
  key, so the next run finds them current: a daily file costs its own rows. It does so only when the totals were
  kept at the generation before the insert (an order edited in place since is still caught by the checksum at
  the next run). Any other write leaves the key behind;
* a run that finds the key behind replaces only the rows of the customers the writes since noted
  (:mod:`.appends`: files appended, API and webhook merges) when every write since noted what it changed, the
  key's count and checksum plus the notes are the orders' now (an order edited in place fails this) and they
  are at most a quarter of the kept customers (:func:`_update_noted`); else it rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import date, datetime

import duckdb

from segmentation.metrics import TOTALS_SQL, local_cutoff, local_times_sql

from .appends import MAX_CHANGED_SHARE, changed_since
from .connection import store_tables, store_transaction
from .facts import TOTALS_FACTS_SQL, OrderFacts, current_facts
from .generation import generation

log = logging.getLogger(__name__)

TABLE = "cache_rfm_totals"
KEY_TABLE = "cache_rfm_totals_key"
_FILE = "_rfm_totals_file"  # a new file's totals (TEMP, dropped after)
_ADDED = "_rfm_totals_added"  # its customers' totals after it (TEMP, dropped after)
_CHANGED = "_rfm_totals_changed"  # the customers the writes since the key noted (TEMP, dropped after)
#: :data:`~segmentation.metrics.TOTALS_SQL`'s aggregates as more aggregates of a grouping of *every* order by customer
#: (the day cache's cold build groups them once for its own tables and these, :func:`.day_cache.cached_purchase_days`):
#: the same sale times and signed amounts, over the completed and refunded orders alone; ``rfm_orders`` = 0: a
#: customer with neither, who has no row here
GROUPED_AGGREGATES = """
    min(sale_at) AS first_at, max(sale_at) AS last_at, count(sale_at) AS frequency, coalesce(sum(net), 0) AS monetary,
    count(net) - count(sale_at) AS refunds, count(net) AS rfm_orders"""
#: the orders with the sale time and signed amount :data:`GROUPED_AGGREGATES` read (NULL for the other statuses)
GROUPED_ORDERS = """(SELECT *, CASE WHEN status = 'completed' THEN ordered_at END AS sale_at,
    CASE WHEN status = 'completed' THEN amount WHEN status = 'refunded' THEN -abs(amount) END AS net FROM orders)"""
_DEFINITION = hashlib.blake2b((TOTALS_SQL + local_times_sql("{tz}") + GROUPED_AGGREGATES + GROUPED_ORDERS).encode(),
                              digest_size=8).hexdigest()
#: stored uncompressed: writing the million rows of a 10 M-order store then costs 0.18 CPU s instead of 0.32 (the
#: cold run writes them), reading them costs the same, and they take 68 MB instead of 41 MB
_COLUMNS = ", ".join(f"{col} USING COMPRESSION uncompressed" for col in (
    "customer_id VARCHAR", "first_at TIMESTAMPTZ", "last_at TIMESTAMPTZ", "frequency BIGINT", "monetary DECIMAL(38, 2)",
    "refunds BIGINT", "first_order_at TIMESTAMP", "last_order_at TIMESTAMP"))


@dataclass(frozen=True)
class Key:
    timezone: str
    generation: int
    rows: int
    newest: datetime | None
    checksum: int
    definition: str = _DEFINITION
    version: str = duckdb.__version__

    def to_json(self) -> str:
        return json.dumps([self.timezone, self.generation, self.rows, self.newest and self.newest.isoformat(),
                           self.checksum, self.definition, self.version])

    @classmethod
    def from_json(cls, text: str) -> Key:
        tz, gen, rows, newest, checksum, definition, version = json.loads(text)
        return cls(tz, gen, rows, newest and datetime.fromisoformat(newest), checksum, definition, version)


def _orders_key(con: duckdb.DuckDBPyConnection, timezone: str, where: str = "",
                facts: OrderFacts | None = None) -> Key:
    """The key of the orders (``where``: of those rows) as they are now. ``facts``: the run's scan of all the
    orders (:mod:`.facts`, shared with the purchase days' check), used when still current."""
    if not where:
        now = current_facts(con, facts)
        return Key(timezone, now.generation, now.rows, now.newest, int(now.checksum or 0))
    rows, newest, checksum = con.execute(TOTALS_FACTS_SQL + where).fetchall()[0]
    return Key(timezone, generation(con), rows, newest, int(checksum or 0))


def _stored(con: duckdb.DuckDBPyConnection) -> Key | None:
    """The key of the kept totals, or None."""
    if len(store_tables(con, TABLE, KEY_TABLE)) != 2:
        return None
    rows = con.execute(f"SELECT key FROM {KEY_TABLE}").fetchall()
    try:
        return Key.from_json(rows[0][0]) if len(rows) == 1 else None
    except (ValueError, TypeError):  # a key of another shape (another rfmsync): rebuilt
        return None


def _save_key(con: duckdb.DuckDBPyConnection, key: Key) -> None:
    con.execute(f"CREATE OR REPLACE TABLE {KEY_TABLE} (key VARCHAR NOT NULL)")
    con.execute(f"INSERT INTO {KEY_TABLE} VALUES (?)", [key.to_json()])


def rfm_totals(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str,
               facts: OrderFacts | None = None) -> str | None:
    """The table of the store's totals for a run as of ``as_of`` in ``timezone`` (built first when missing or
    stale), or None when the cut-off leaves orders out (or there is none): the run then reads the orders.
    ``facts``: the run's scan of the orders (:mod:`.facts`), used when still current."""
    key = _orders_key(con, timezone, facts=facts)
    if key.newest is None or key.newest >= local_cutoff(as_of, timezone):
        return None
    stored = _stored(con)
    if stored == key:
        log.debug("rfm totals: the order store's are current")
        return TABLE
    with store_transaction(con):
        if stored is not None and _update_noted(con, stored, key):
            return TABLE
        write_totals(con, key, f"({TOTALS_SQL.format(orders='orders', where='true')})")
    log.debug("rfm totals: rebuilt from the orders")
    return TABLE


def _update_noted(con: duckdb.DuckDBPyConnection, stored: Key, key: Key) -> bool:
    """Replace the kept rows of the customers the writes since ``stored`` noted (:func:`.appends.changed_since`:
    files appended, API and webhook merges) and move the key on to ``key`` (the orders' now), inside the caller's
    transaction, when every write since noted what it changed and that is all that changed (``stored``'s count
    and checksum plus what they noted are ``key``'s: an order edited in place fails this) and they are at most
    :data:`~.appends.MAX_CHANGED_SHARE` of the kept customers. False (nothing written) otherwise: rebuild."""
    if (stored.timezone, stored.definition, stored.version) != (key.timezone, key.definition, key.version):
        return False
    changes = changed_since(con, stored.generation, key.generation)
    if changes is None:
        return False
    rows, checksum = changes.added(con, days=False)
    if (stored.rows + rows, stored.checksum + checksum) != (key.rows, key.checksum):
        return False
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_CHANGED} AS SELECT DISTINCT customer_id "
                f"FROM ({changes.customers_sql()})")
    changed, everyone = con.execute(f"SELECT (SELECT count(*) FROM {_CHANGED}), (SELECT count(*) FROM {TABLE})"
                                    ).fetchall()[0]
    if changed > MAX_CHANGED_SHARE * max(everyone, 1):
        con.execute(f"DROP TABLE {_CHANGED}")
        return False
    mine = f"customer_id IN (SELECT customer_id FROM temp.{_CHANGED})"
    con.execute(f"DELETE FROM {TABLE} WHERE {mine}")
    own = TOTALS_SQL.format(orders=f"(SELECT * FROM orders WHERE {mine})", where="true")
    con.execute(f"INSERT INTO {TABLE} SELECT *, {local_times_sql(key.timezone)} FROM ({own})")
    con.execute(f"DROP TABLE {_CHANGED}")
    _save_key(con, key)
    log.info("rfm totals: replaced the rows of %d of %d customers (noted by the writes since: %s)", changed,
             everyone, changes)
    return True


def stale_key(con: duckdb.DuckDBPyConnection, timezone: str, facts: OrderFacts | None = None) -> Key | None:
    """The key of the orders as they are now when the kept totals in ``timezone`` are not theirs (to write with
    :func:`write_totals`), else None. ``facts``: the run's scan of the orders, used when still current."""
    key = _orders_key(con, timezone, facts=facts)
    return None if _stored(con) == key else key


def write_totals(con: duckdb.DuckDBPyConnection, key: Key, totals: str, where: str = "") -> None:
    """(Re)create the kept totals from ``totals``, a relation with :data:`~segmentation.metrics.TOTALS_SQL`'s
    columns (``where``: its rows to keep), under ``key``, inside the caller's transaction."""
    con.execute(f"CREATE OR REPLACE TABLE {TABLE} ({_COLUMNS})")
    con.execute(f"INSERT INTO {TABLE} SELECT customer_id, first_at, last_at, frequency, monetary, refunds, "
                f"{local_times_sql(key.timezone)} FROM {totals} {where}")
    _save_key(con, key)


def current_totals(con: duckdb.DuckDBPyConnection) -> str | None:
    """The time zone of the kept totals when they are those of the orders as they are now, else None."""
    stored = _stored(con)
    return stored.timezone if stored is not None and stored == _orders_key(con, stored.timezone) else None


def kept_at(con: duckdb.DuckDBPyConnection) -> Key | None:
    """The key of the kept totals when they were kept at the store's generation now (call it before a write to
    ``orders``, then :func:`add_totals` after it); the checksum is not read (the next run's check sees it)."""
    stored = _stored(con)
    current = Key(stored.timezone, generation(con), stored.rows, stored.newest, stored.checksum) if stored else None
    return stored if stored is not None and stored == current else None


def add_totals(con: duckdb.DuckDBPyConnection, kept: Key, file_ids: list[int]) -> None:
    """Add the totals of the orders of ``file_ids`` (just inserted into ``orders``, nothing deleted) to the kept
    totals of key ``kept`` and move the key on (inside the caller's transaction, after the generation moved):
    their customers' rows are replaced by their sums."""
    where = f" WHERE file_id IN ({', '.join(str(int(i)) for i in file_ids)})"
    added = _orders_key(con, kept.timezone, where)
    # the file's totals first: a table of known size, so the join builds on it and only probes the kept rows
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_FILE} AS "
                f"{TOTALS_SQL.format(orders=f'(SELECT * FROM orders{where})', where='true')}")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {_ADDED} AS
        SELECT t.rowid AS kept_row, customer_id, least(t.first_at, a.first_at) AS first_at,
               greatest(t.last_at, a.last_at) AS last_at,
               coalesce(t.frequency, 0) + a.frequency AS frequency, coalesce(t.monetary, 0) + a.monetary AS monetary,
               coalesce(t.refunds, 0) + a.refunds AS refunds
        FROM {_FILE} a LEFT JOIN {TABLE} t USING (customer_id)""")
    con.execute(f"DROP TABLE {_FILE}")
    con.execute(f"DELETE FROM {TABLE} WHERE rowid IN (SELECT kept_row FROM {_ADDED} WHERE kept_row IS NOT NULL)")
    con.execute(f"INSERT INTO {TABLE} SELECT * EXCLUDE (kept_row), {local_times_sql(kept.timezone)} FROM {_ADDED}")
    con.execute(f"DROP TABLE {_ADDED}")
    newest = max((t for t in (kept.newest, added.newest) if t is not None), default=None)
    _save_key(con, Key(kept.timezone, added.generation, kept.rows + added.rows, newest,
                        kept.checksum + added.checksum))
