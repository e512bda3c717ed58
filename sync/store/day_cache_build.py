"""The order store's kept per-customer tables from one grouping of every order by customer (a cold build of the
purchase-day cache's totals alone, :mod:`.day_cache`): the customers' checks, the totals and, when stale, the RFM
totals (:mod:`.rfm_totals`); and :class:`KeptBuild`, a build whose writes its caller runs (beside the BG/NBD fit:
:func:`.day_cache.building_purchase_days`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from segmentation import purchase_days
from segmentation.purchase_days import ALL_DAYS, PurchaseDays

from . import rfm_totals
from .facts import DAY_HASH

TOTALS_TABLE = "cache_customer_totals"
CHECK_TABLE = "cache_customer_check"  # per customer: orders and checksum, to find whose orders changed
_CHECK_AGGREGATES = f"count(*) AS n, sum({DAY_HASH}) AS h"  # over all of a customer's orders
GROUPED = "_rfmsync_grouped"  # a cold build's one grouping of the orders by customer (TEMP, dropped after)
GROUPED_TOTALS = "_rfmsync_grouped_totals"  # a deferred cold build's totals (TEMP, until the run's predictions end)


@dataclass
class KeptBuild:
    """The purchase days of :func:`building_purchase_days`, and the kept tables' writes still to do (none unless a
    cold build of the totals alone deferred them: its transaction is open until :meth:`write` commits it)."""

    days: PurchaseDays
    key: str | None  # the cache's key once written (the kept model numbers' basis)
    _write: Callable[[], None] | None = None
    _abandon: Callable[[], None] | None = None

    @property
    def writes(self) -> Callable[[], None] | None:
        """:meth:`write` while there is something to write, else None."""
        return self.write if self._write is not None else None

    def write(self) -> None:
        """Write the kept tables and the key and commit (once; nothing when nothing was deferred)."""
        write, self._write = self._write, None
        if write is not None:
            write()

    def abandon(self) -> None:
        """Roll the deferred build back (nothing kept) unless it was written."""
        if self._write is not None:
            self._write = None
            self._abandon()


def build_totals_and_checks(con: duckdb.DuckDBPyConnection, day_sql: str, rfm: rfm_totals.Key | None = None) -> None:
    """(Re)create the kept totals of every purchase day and the customers' checks (:data:`_CHECK_SQL`) from one
    grouping of every order by customer (:data:`segmentation.purchase_days.GROUPED_SQL`, the checks' aggregates
    added: a customer's checks count all their orders, the totals their completed ones), each table written from
    it: the same tables as :data:`_CHECK_SQL` and :func:`segmentation.purchase_days.build_customer_totals` give
    (one grouping of 10 M orders by customer id fewer). ``rfm``: the key of the orders when the store's RFM totals
    (:mod:`.rfm_totals`) are not theirs: they are written from the same grouping too (the run reads them next).
    Inside the caller's transaction."""
    group_orders(con, day_sql, rfm)
    write_grouped(con, rfm, purchase_days.TOTALS_OF_GROUPED_SQL.format(grouped=f"temp.{GROUPED}", day=day_sql,
                                                                       orders="orders"))


def group_orders(con: duckdb.DuckDBPyConnection, day_sql: str, rfm: rfm_totals.Key | None) -> None:
    """TEMP table :data:`GROUPED`: :func:`build_totals_and_checks`' one grouping of every order by customer."""
    extra = f", {_CHECK_AGGREGATES}" + (f", {rfm_totals.GROUPED_AGGREGATES}" if rfm is not None else "")
    grouped = purchase_days.GROUPED_SQL.format(extra=extra, where="", day=day_sql,
                                               orders="orders" if rfm is None else rfm_totals.GROUPED_ORDERS)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {GROUPED} AS {grouped}", {"as_of": ALL_DAYS})


def write_grouped(con: duckdb.DuckDBPyConnection, rfm: rfm_totals.Key | None, totals: str) -> None:
    """The kept checks (and RFM totals, ``rfm``) from :data:`GROUPED`, the kept totals from ``totals`` (a query);
    TEMP table :data:`GROUPED` dropped after. Inside the caller's transaction."""
    _create_kept(con, CHECK_TABLE, f"SELECT customer_id, n, h FROM temp.{GROUPED}")
    _create_kept(con, TOTALS_TABLE, totals, {"as_of": ALL_DAYS} if "$as_of" in totals else None)
    if rfm is not None:
        rfm_totals.write_totals(con, rfm, f"temp.{GROUPED}", "WHERE rfm_orders > 0")
    con.execute(f"DROP TABLE temp.{GROUPED}")  # (a failure: the caller's rollback drops it)


def _create_kept(con: duckdb.DuckDBPyConnection, table: str, select: str, params: dict | None = None) -> None:
    """(Re)create ``table`` from ``select``: the columns and types ``CREATE TABLE AS`` gives, its ``customer_id``
    stored uncompressed. Compressing a million distinct short customer ids (DuckDB analyses each column for its
    best compression) was most of what writing the kept totals and checks of a 10 M-order store cost: without it a
    cold build spends ~0.46 CPU s less, for ~14 MB more of store file (every column uncompressed saved ~0.2 s more
    for ~97 MB more: BENCHMARKS.md, branch dense11). Reading them costs the same."""
    columns = con.execute(f"DESCRIBE {select}", params).fetchall()
    spec = ", ".join(f'"{name}" {kind}' + (" USING COMPRESSION uncompressed" if name == "customer_id" else "")
                     for name, kind, *_ in columns)
    con.execute(f"CREATE OR REPLACE TABLE {table} ({spec})")
    con.execute(f"INSERT INTO {table} {select}", params)
