"""The model fits kept in the order store between runs (:class:`segmentation.fit_cache.FitStore`).

One row per fit: its key (a hash of everything the fit depends on, :func:`segmentation.fit_cache.fit_key`) and
its parameters. Only the latest :data:`KEEP` are kept; :func:`sync.store.day_cache.drop_cache` drops them with
the purchase days (a cold run pays for its fits too).

:class:`StoreNumbers` keeps whole runs' model numbers the same way (:class:`segmentation.fit_cache.NumberStore`):
per key, the report's figures as JSON (``cache_model_numbers``) and the numbers per distinct summary
(``cache_model_rows``, by the entry's ``seq``); the latest :data:`KEEP_NUMBERS` (``segments`` and ``predict``
on the same orders differ by the holdout: both find theirs; a new day's run has other orders and another
as-of). ``basis`` is the purchase-day cache's key (:func:`sync.store.day_cache.stored_key`): the orders the kept
totals are of.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa

from .connection import store_tables, store_transaction

TABLE = "cache_model_fits"
KEEP = 16
NUMBERS_TABLE = "cache_model_numbers"
ROWS_TABLE = "cache_model_rows"
KEEP_NUMBERS = 2


class StoreFits:
    """:class:`segmentation.fit_cache.FitStore` over the order store's table."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def _present(self) -> bool:
        return bool(store_tables(self.con, TABLE))

    def get(self, key: str) -> tuple[float, ...] | None:
        if not self._present():
            return None
        rows = self.con.execute(f"SELECT params FROM {TABLE} WHERE key = ?", [key]).fetchall()
        return tuple(rows[0][0]) if rows else None

    def put(self, key: str, params: tuple[float, ...]) -> None:
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (seq BIGINT, key VARCHAR, params DOUBLE[])")
        self.con.execute(f"DELETE FROM {TABLE} WHERE key = ?", [key])
        self.con.execute(f"INSERT INTO {TABLE} SELECT coalesce(max(seq), 0) + 1, ?, ? FROM {TABLE}",
                         [key, list(params)])
        self.con.execute(f"DELETE FROM {TABLE} WHERE seq <= (SELECT max(seq) FROM {TABLE}) - {KEEP}")


class StoreNumbers:
    """:class:`segmentation.fit_cache.NumberStore` over the order store's tables."""

    def __init__(self, con: duckdb.DuckDBPyConnection, basis: str | None) -> None:
        self.con = con
        self.basis = basis

    def get(self, key: str, into: str) -> dict[str, Any] | None:
        if len(store_tables(self.con, NUMBERS_TABLE, ROWS_TABLE)) < 2:
            return None
        found = self.con.execute(f"SELECT seq, figures FROM {NUMBERS_TABLE} WHERE key = ?", [key]).fetchall()
        if not found:
            return None
        seq, figures = found[0]
        if not into.isidentifier():
            raise ValueError(f"table name must be an identifier, got {into!r}")
        # straight into the run's TEMP table (through Arrow, as the computed table comes, it cost twice as much)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {into} AS SELECT * EXCLUDE (seq) FROM {ROWS_TABLE} "
                         f"WHERE seq = {int(seq)}")
        return json.loads(figures)

    def put(self, key: str, figures: dict[str, Any], table: pa.Table) -> None:
        """Add this key's figures and table (one transaction), and forget all but the latest entries."""
        con = self.con
        con.register("_rfmsync_numbers", table)
        try:
            with store_transaction(con):
                if store_tables(con, ROWS_TABLE):  # kept by other code, of other columns: forgotten
                    kept = [r[0] for r in con.execute(f"DESCRIBE {ROWS_TABLE}").fetchall()]
                    if kept != ["seq", *table.schema.names]:
                        con.execute(f"DROP TABLE {ROWS_TABLE}")
                        con.execute(f"DROP TABLE IF EXISTS {NUMBERS_TABLE}")
                con.execute(f"CREATE TABLE IF NOT EXISTS {NUMBERS_TABLE} (seq BIGINT, key VARCHAR, figures VARCHAR)")
                con.execute(f"CREATE TABLE IF NOT EXISTS {ROWS_TABLE} ({_columns(table.schema)})")
                # a new seq in both tables (rows left without their entry, e.g. by a dropped entries table, too)
                seq = con.execute(f"SELECT coalesce(max(seq), 0) + 1 FROM (SELECT seq FROM {NUMBERS_TABLE} "
                                  f"UNION ALL SELECT seq FROM {ROWS_TABLE})").fetchall()[0][0]
                con.execute(f"INSERT INTO {ROWS_TABLE} SELECT {int(seq)}, * FROM _rfmsync_numbers")
                con.execute(f"DELETE FROM {NUMBERS_TABLE} WHERE key = ?", [key])
                con.execute(f"INSERT INTO {NUMBERS_TABLE} VALUES (?, ?, ?)", [seq, key, json.dumps(figures)])
                con.execute(f"DELETE FROM {NUMBERS_TABLE} WHERE seq <= ? - {KEEP_NUMBERS}", [seq])
                con.execute(f"DELETE FROM {ROWS_TABLE} WHERE seq NOT IN (SELECT seq FROM {NUMBERS_TABLE})")
        finally:
            con.unregister("_rfmsync_numbers")


#: the numbers' column types (the keys are integers, the numbers doubles)
_TYPES = {pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}


def _columns(schema: pa.Schema) -> str:
    """The rows table's columns: ``seq`` and the numbers', stored uncompressed (writing the 391 k rows of the
    bench shop cost 0.06 CPU s instead of 0.10, reading them 0.02 instead of 0.03)."""
    return ", ".join(f"{name} {kind} USING COMPRESSION uncompressed"
                     for name, kind in [("seq", "BIGINT")] + [(f.name, _TYPES[f.type]) for f in schema])


def drop_fits(con: duckdb.DuckDBPyConnection) -> None:
    """Forget the kept fits and model numbers."""
    for table in (TABLE, NUMBERS_TABLE, ROWS_TABLE):
        con.execute(f"DROP TABLE IF EXISTS {table}")
