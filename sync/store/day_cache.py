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

Only a prediction run builds it, and only what it reads: the totals always (a run without the boundary,
``segments --customers`` or ``predict``, computes them in the one pass over the orders it made anyway, grouped
by customer alone (:data:`segmentation.purchase_days.CUSTOMER_TOTALS_SQL`: no table of the days; the same grouping
gives the customers' checks and, when they are stale too, the store's RFM totals (:mod:`.rfm_totals`):
:func:`build_totals_and_checks`), and keeps nothing else: the holdout counts the lists of each customer's days the
totals keep); the day table when the boundary needs it.
The totals' and the checks' customer ids are stored uncompressed (:func:`_create_kept`). A cache of another time zone is replaced.
The refunds the spend model nets are kept under the same key (:func:`segmentation.refunds.create_refunds`, built by
the first run that reads them). :func:`drop_cache` also forgets them and the model fits the store keeps
(:mod:`.fit_cache`). When the orders moved, only the customers whose orders changed get their rows again
(:func:`_update_changed`): found from the customers' checks, or, when every write since noted whose orders it
changed (:mod:`.appends`: a file appended the lean way, an API or webhook merge), from those notes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date

import duckdb

from segmentation import lifecycle, purchase_days, refunds
from segmentation.localtime import check_timezone, local_day_sql
from segmentation.purchase_days import ALL_DAYS, PurchaseDays, build_purchase_days, purchase_days_query

from . import rfm_totals
from .appends import MAX_CHANGED_SHARE, Changes, changed_since
from .connection import store_tables
from .day_cache_build import (_CHECK_AGGREGATES, CHECK_TABLE, GROUPED, GROUPED_TOTALS, TOTALS_TABLE, KeptBuild,
                              _create_kept, build_totals_and_checks, group_orders, write_grouped)
from .facts import OrderFacts, current_facts
from .fit_cache import drop_fits
from .generation import generation
from .merge import unordered

log = logging.getLogger(__name__)

DAYS_TABLE = "cache_purchase_days"
KEY_TABLE = "cache_purchase_days_key"
THEIR_ORDERS = "_rfmsync_their_orders"  # an update's changed customers' orders (TEMP, dropped after)
_CHECK_SQL = f"SELECT customer_id, {_CHECK_AGGREGATES} FROM orders GROUP BY customer_id"
#: the definition the cache was built by: a change in it is a new key
_DEFINITION = hashlib.blake2b((purchase_days.SELECT_SQL + lifecycle.customer_totals_sql("{days}")
                               + purchase_days.CUSTOMER_TOTALS_SQL).encode(),
                              digest_size=8).hexdigest()


def cache_key(con: duckdb.DuckDBPyConnection, timezone: str, check: str | None = None,
              facts: OrderFacts | None = None) -> str:
    """What the cached table depends on, as one string (one scan of four columns of ``orders``). ``check``: a
    table of :data:`_CHECK_SQL` just built from the same snapshot of the orders: the key is summed from its
    per-customer counts and checksums (the same integers) instead of scanning the orders again. ``facts``: the
    run's scan of the orders (:mod:`.facts`, shared with the RFM totals' check), used when still current."""
    if check:
        rows, checksum = con.execute(f"SELECT coalesce(sum(n), 0), sum(h) FROM {check}").fetchall()[0]
    else:
        now = current_facts(con, facts, days=True)
        rows, checksum = now.rows, now.day_checksum
    return json.dumps([_DEFINITION, duckdb.__version__, timezone, rows, str(checksum), generation(con)])


def _stored(con: duckdb.DuckDBPyConnection) -> tuple[str, str, date | None, bool] | None:
    """(key, local-day expression, last purchase day, whether the day table is kept) of the cache, or None."""
    present = store_tables(con, DAYS_TABLE, TOTALS_TABLE, KEY_TABLE)
    if not {TOTALS_TABLE, KEY_TABLE} <= present:
        return None
    rows = con.execute(f"SELECT key, day_sql, last_day, days FROM {KEY_TABLE}").fetchall()
    if len(rows) != 1 or (rows[0][3] and DAYS_TABLE not in present):
        return None
    return rows[0]


def stored_key(con: duckdb.DuckDBPyConnection) -> str | None:
    """The key of the cache as it is (after :func:`cached_purchase_days`: that of the orders now), or None."""
    stored = _stored(con)
    return stored[0] if stored is not None else None


def _days(con: duckdb.DuckDBPyConnection, timezone: str, day_sql: str, last_day: date | None,
          has_days: bool, key: str | None) -> PurchaseDays:
    if has_days:
        return PurchaseDays(DAYS_TABLE, ALL_DAYS, timezone, "orders", day_sql, totals=TOTALS_TABLE,
                            last_day=last_day, key=key)
    # the totals alone are kept: an earlier as-of reads the days as a subquery of the orders (one pass)
    return replace(purchase_days_query(con, ALL_DAYS, timezone, day_sql=day_sql), totals=TOTALS_TABLE,
                   last_day=last_day, key=key)


def valid_purchase_days(con: duckdb.DuckDBPyConnection, timezone: str, *, day_table: bool = False,
                        facts: OrderFacts | None = None) -> PurchaseDays | None:
    """The store's purchase days when they are those of the orders as they are now, in ``timezone``; else None
    (``day_table``: None too when only the totals are kept). Nothing is built."""
    check_timezone(timezone)
    stored = _stored(con)
    if stored is None or (day_table and not stored[3]) or stored[0] != cache_key(con, timezone, facts=facts):
        return None
    return _days(con, timezone, stored[1], stored[2], stored[3], stored[0])


def cached_purchase_days(con: duckdb.DuckDBPyConnection, timezone: str, *, days: bool = True,
                         on_orders_moved: Callable[[], object] | None = None,
                         facts: OrderFacts | None = None) -> PurchaseDays:
    """The store's purchase days of its orders in ``timezone``, (re)built first when they are not those of the
    orders as they are now. ``days``: keep the table of every day too (the boundary reads it, and the holdout
    when it is kept); without, only the per-customer totals are built (from one pass over the orders, nothing
    else written), and ``table`` is a subquery. ``on_orders_moved``: called before the totals are brought up to
    date (the orders are not those of the cache, so no fit of an earlier run will match: the caller may start
    what a fit needs while DuckDB works). ``facts``: the run's scan of the orders (:func:`cache_key`). A full
    build of the totals alone also writes the store's RFM totals when they are not those of the orders now (one
    grouping of the orders for both: the run reads those next)."""
    return _cached(con, timezone, days, on_orders_moved, facts, defer=False).days


@contextmanager
def building_purchase_days(con: duckdb.DuckDBPyConnection, timezone: str, *, days: bool = True,
                           on_orders_moved: Callable[[], object] | None = None,
                           facts: OrderFacts | None = None) -> Iterator[KeptBuild]:
    """:func:`cached_purchase_days`, except that a cold build of the totals alone (the orders moved, no update
    possible: ``segments --customers`` and ``predict`` after a new export) groups the orders and computes the
    totals into TEMP tables and leaves the kept tables' writes (checks, totals, RFM totals, key: ~1 CPU s of
    DuckDB on a 10 M-order store) in its open transaction for :meth:`KeptBuild.write`, which the caller may run
    beside other work (the BG/NBD fit on the summary read from those TEMP totals: BENCHMARKS.md, branch
    perf30p); they are the same rows. On leaving: written if the caller did not, rolled back on an exception
    (Ctrl-C included) before they were. Once written, the TEMP totals are a TEMP VIEW of the kept ones (the run's
    views over them read the same rows, the memory is freed)."""
    build = _cached(con, timezone, days, on_orders_moved, facts, defer=not days)
    try:
        yield build
        build.write()
    except BaseException:
        # a safeguard no test observes: the CLI's process ends with its connection, and DuckDB discards the open
        # transaction then; a caller that keeps the connection (sync.api's) gets it rolled back here
        build.abandon()
        raise


def _cached(con: duckdb.DuckDBPyConnection, timezone: str, days: bool, on_orders_moved: Callable[[], object] | None,
            facts: OrderFacts | None, *, defer: bool) -> KeptBuild:
    check_timezone(timezone)
    key = cache_key(con, timezone, facts=facts)
    stored = _stored(con)
    if stored is not None and stored[0] == key and (stored[3] or not days):
        log.debug("purchase days: the order store's are current")
        return KeptBuild(_days(con, timezone, stored[1], stored[2], stored[3], key), key)
    current = stored is not None and stored[0] == key  # the totals are, the day table is wanted now
    if not current and on_orders_moved is not None:
        on_orders_moved()
    if not current and stored is not None and (stored[3] or not days) and _same_basis(stored[0], key):
        found = _update_changed(con, timezone, stored[0], stored[3], facts)
        if found is not None:
            now = stored_key(con)
            return KeptBuild(_days(con, timezone, *found, stored[3], now), now)
    if defer and not current:
        return _deferred_totals(con, timezone, facts)
    with unordered(con):  # full row groups, written in any order (nothing reads their physical order)
        con.execute("BEGIN TRANSACTION")
        try:  # the key, the local-day expression and the rows: all of this transaction's snapshot of the orders
            day_sql = stored[1] if current else local_day_sql(con, "ordered_at", timezone)
            if current:
                key = cache_key(con, timezone)
            elif days:  # the customers' checks first: the key is their sum
                _create_kept(con, CHECK_TABLE, _CHECK_SQL)
                key = cache_key(con, timezone, check=CHECK_TABLE)
            else:  # new orders, the totals alone: with the checks, from one grouping of the orders by customer (no
                # table of the days; the old day table goes with the old totals)
                con.execute(f"DROP TABLE IF EXISTS {DAYS_TABLE}")
                build_totals_and_checks(con, day_sql, rfm_totals.stale_key(con, timezone, facts))
                key = cache_key(con, timezone, check=CHECK_TABLE)
            if days:
                built = build_purchase_days(con, ALL_DAYS, timezone, table=DAYS_TABLE, temp=False, day_sql=day_sql)
                if not current:
                    _create_kept(con, TOTALS_TABLE, lifecycle.customer_totals_sql(built.table), {"as_of": built.as_of})
            last_day = _write_key(con, key, day_sql, days)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    log.info("purchase days: built the order store's %s", "day table" if current else
             "day table and totals" if days else "totals")
    return KeptBuild(_days(con, timezone, day_sql, last_day, days, key), key)


def _deferred_totals(con: duckdb.DuckDBPyConnection, timezone: str, facts: OrderFacts | None) -> KeptBuild:
    """:func:`build_totals_and_checks`' grouping and totals into TEMP tables, in a transaction left open; the
    kept tables' writes, the key and the commit in the returned build's ``write``."""
    with unordered(con):  # (reset with the transaction still open: the run's own queries come next)
        con.execute("BEGIN TRANSACTION")
        try:
            day_sql = local_day_sql(con, "ordered_at", timezone)
            con.execute(f"DROP TABLE IF EXISTS {DAYS_TABLE}")
            rfm = rfm_totals.stale_key(con, timezone, facts)
            group_orders(con, day_sql, rfm)
            con.execute(f"DROP VIEW IF EXISTS temp.{GROUPED_TOTALS}")  # (an earlier run's on this connection)
            totals = purchase_days.TOTALS_OF_GROUPED_SQL.format(grouped=f"temp.{GROUPED}", day=day_sql, orders="orders")
            con.execute(f"CREATE OR REPLACE TEMP TABLE {GROUPED_TOTALS} AS {totals}", {"as_of": ALL_DAYS})
            key = cache_key(con, timezone, check=f"temp.{GROUPED}")  # (the checks' sums: the same integers)
            last_day = con.execute(f"SELECT max(last_day) FROM temp.{GROUPED_TOTALS}").fetchall()[0][0]
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def write() -> None:
        with unordered(con):
            try:
                write_grouped(con, rfm, f"SELECT * FROM temp.{GROUPED_TOTALS}")
                _write_key(con, key, day_sql, False)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")  # (the same safeguard as building_purchase_days')
                raise
        con.execute(f"DROP TABLE temp.{GROUPED_TOTALS}")
        con.execute(f"CREATE TEMP VIEW {GROUPED_TOTALS} AS SELECT * FROM {TOTALS_TABLE}")
        log.info("purchase days: built the order store's totals")

    days = replace(purchase_days_query(con, ALL_DAYS, timezone, day_sql=day_sql), totals=f"temp.{GROUPED_TOTALS}",
                   last_day=last_day, key=key)
    return KeptBuild(days, key, write, lambda: con.execute("ROLLBACK"))


def _write_key(con: duckdb.DuckDBPyConnection, key: str, day_sql: str, days: bool) -> date | None:
    """Note what the cache now holds (inside the transaction that wrote it); returns its last purchase day."""
    last_day = con.execute(f"SELECT max(last_day) FROM {TOTALS_TABLE}").fetchall()[0][0]
    con.execute(f"CREATE OR REPLACE TABLE {KEY_TABLE} (key VARCHAR, day_sql VARCHAR, last_day DATE, days BOOLEAN)")
    con.execute(f"INSERT INTO {KEY_TABLE} VALUES (?, ?, ?, ?)", [key, day_sql, last_day, days])
    return last_day


def _same_basis(old: str, new: str) -> bool:
    """Both keys are of one definition, DuckDB version and time zone (only the orders differ)."""
    return json.loads(old)[:3] == json.loads(new)[:3]


def _update_changed(con: duckdb.DuckDBPyConnection, timezone: str, stored_key: str, has_days: bool,
                    facts: OrderFacts | None = None) -> tuple[str, date | None] | None:
    """Replace the cached rows of the customers whose orders changed (a new daily file touches a few): their
    count or checksum over all their orders differs from the one noted when their rows were computed (a customer
    whose orders all went: noted, not counted now). A customer's days and totals depend on their own orders
    alone, so the result is what a rebuild gives. None when there is no note or too many changed (the caller
    rebuilds); else the new local-day expression and last purchase day.

    When every write since the cache's key noted what it changed (:mod:`.appends`: files appended, merges) and
    that is all that changed (the key's count and checksum plus what they noted are the orders' now), the customers
    that changed are those they noted: only their orders are counted, instead of grouping every order by
    customer."""
    if not store_tables(con, CHECK_TABLE):
        return None
    mine = "customer_id IN (SELECT customer_id FROM temp._rfmsync_changed)"
    with unordered(con):
        con.execute("BEGIN TRANSACTION")  # the key, the checks and the rows of one snapshot of the orders
        try:
            noted = _noted_changes(con, stored_key, facts)
            if noted is not None:
                con.execute("CREATE OR REPLACE TEMP TABLE _rfmsync_changed AS SELECT DISTINCT customer_id "
                            f"FROM ({noted.customers_sql()})")
                key = cache_key(con, timezone, facts=facts)
                everyone = con.execute(f"SELECT count(*) FROM {CHECK_TABLE}").fetchall()[0][0]
            else:
                con.execute(f"CREATE OR REPLACE TEMP TABLE _rfmsync_check_now AS {_CHECK_SQL}")
                key = cache_key(con, timezone, check="temp._rfmsync_check_now")
                con.execute(f"""CREATE OR REPLACE TEMP TABLE _rfmsync_changed AS
                                SELECT customer_id FROM _rfmsync_check_now a FULL JOIN {CHECK_TABLE} b USING (customer_id)
                                WHERE a.n IS DISTINCT FROM b.n OR a.h IS DISTINCT FROM b.h""")
                everyone = con.execute("SELECT count(*) FROM _rfmsync_check_now").fetchall()[0][0]
            changed = con.execute("SELECT count(*) FROM _rfmsync_changed").fetchall()[0][0]
            if changed > MAX_CHANGED_SHARE * max(everyone, 1):
                con.execute("ROLLBACK")
                return None
            _their_orders(con, mine)  # only now: too many changed customers rebuild everything instead
            if noted is not None:
                con.execute("CREATE OR REPLACE TEMP TABLE _rfmsync_check_now AS "
                            + _CHECK_SQL.replace("FROM orders", f"FROM temp.{THEIR_ORDERS}"))
            day_sql = local_day_sql(con, "ordered_at", timezone)  # the range may have grown: the others' stay right
            for table in (DAYS_TABLE, TOTALS_TABLE, CHECK_TABLE) if has_days else (TOTALS_TABLE, CHECK_TABLE):
                con.execute(f"DELETE FROM {table} WHERE {mine}")
            own = purchase_days.SELECT_SQL.format(day=day_sql, orders=f"temp.{THEIR_ORDERS}", sample="")
            if has_days:
                con.execute(f"INSERT INTO {DAYS_TABLE} BY NAME {own}", {"as_of": ALL_DAYS})
                own = f"SELECT * FROM {DAYS_TABLE} WHERE {mine}"
            con.execute(f"INSERT INTO {TOTALS_TABLE} BY NAME " + lifecycle.customer_totals_sql(f"({own})"),
                        {"as_of": ALL_DAYS})
            con.execute(f"INSERT INTO {CHECK_TABLE} BY NAME SELECT * FROM temp._rfmsync_check_now WHERE {mine}")
            last_day = _write_key(con, key, day_sql, has_days)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.execute("DROP TABLE IF EXISTS temp._rfmsync_check_now")
            con.execute("DROP TABLE IF EXISTS temp._rfmsync_changed")
            con.execute(f"DROP TABLE IF EXISTS temp.{THEIR_ORDERS}")
    log.info("purchase days: replaced the rows of %d of %d customers in the order store's%s", changed, everyone,
             f" (the customers noted by the writes since: {noted})" if noted is not None else "")
    return day_sql, last_day


def _their_orders(con: duckdb.DuckDBPyConnection, mine: str) -> None:
    """The changed customers' orders (the columns their checks and days read), in one pass over the orders for
    both."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {THEIR_ORDERS} AS SELECT customer_id, ordered_at, amount, discount, "
                f"status FROM orders WHERE {mine}")


def _noted_changes(con: duckdb.DuckDBPyConnection, stored_key: str, facts: OrderFacts | None) -> Changes | None:
    """What the writes since the cache's key changed when every one of them noted it
    (:func:`.appends.changed_since`) and the key's count and checksum plus what they noted are the orders' now (an
    order edited in place meanwhile, or anything else, fails this); else None."""
    _, _, _, rows, checksum, since = json.loads(stored_key)
    now = current_facts(con, facts, days=True)
    changes = changed_since(con, since, now.generation)
    if changes is None:
        return None
    added, added_sum = changes.added(con, days=True)
    before = 0 if checksum == "None" else int(checksum)
    if rows + added != now.rows or before + added_sum != int(now.day_checksum or 0):
        return None
    return changes


def drop_cache(con: duckdb.DuckDBPyConnection) -> None:
    """Forget the cached tables and the model fits (the next prediction run computes them again)."""
    for table in (KEY_TABLE, TOTALS_TABLE, DAYS_TABLE, CHECK_TABLE, refunds.KEPT_KEY, refunds.KEPT):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    drop_fits(con)
