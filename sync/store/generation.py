"""The order store's generation: a number every write to ``orders`` moves on, in the write's own transaction.

What the store derives from its orders and keeps between runs (the purchase-day cache, :mod:`.day_cache`) is
keyed by it, next to a checksum of the columns it reads: a change the checksum cannot see (a customer id
rewritten by identity resolution, nothing else touched) still moves the generation.
"""

from __future__ import annotations

import duckdb

from .connection import store_tables

TABLE = "store_generation"


def bump_generation(con: duckdb.DuckDBPyConnection) -> None:
    """Move the generation on (call it inside the transaction that writes ``orders``)."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (n BIGINT NOT NULL)")
    con.execute(f"INSERT INTO {TABLE} SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM {TABLE})")
    con.execute(f"UPDATE {TABLE} SET n = n + 1")


def generation(con: duckdb.DuckDBPyConnection) -> int:
    """The current generation (0 for a store that was never written by a merge)."""
    if not store_tables(con, TABLE):
        return 0
    rows = con.execute(f"SELECT n FROM {TABLE}").fetchall()
    return int(rows[0][0]) if rows else 0
