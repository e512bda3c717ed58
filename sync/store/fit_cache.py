"""The model fits kept in the order store between runs (:class:`segmentation.fit_cache.FitStore`).

One row per fit: its key (a hash of everything the fit depends on, :func:`segmentation.fit_cache.fit_key`) and
its parameters. Only the latest :data:`KEEP` are kept; :func:`sync.store.day_cache.drop_cache` drops them with
the purchase days (a cold run pays for its fits too).
"""

from __future__ import annotations

import duckdb

from .connection import store_tables

TABLE = "cache_model_fits"
KEEP = 16


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


def drop_fits(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"DROP TABLE IF EXISTS {TABLE}")
