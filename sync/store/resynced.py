"""Which customers each webhook resync merged, by the store generation its merge made (:mod:`.generation`).

A full sync reads the store once and applies its destinations one by one, each under its lock. A webhook resync
that merged after that read pushes its customers from its own, later read, under the same lock: before the sync's
apply, or after it (then planned again from the ledger the sync wrote). Either way the sync's rows of those
customers are older and theirs are not its to push: the resync planned nothing when the ledger already held their
new state (no ledger revision moved to tell the sync). Each resync's merge notes its affected customers here, in
its own transaction (:func:`note_resynced`); under each destination's lock the sync asks :func:`moved_since` which
customers the store's writes after its read moved, and leaves them to the resyncs (:func:`sync.left_to_resyncs`).
A write this table does not cover (a pull's or another sync's merge, a file added) answers None: which customers
it moved is not known here. The notes of the latest :data:`~.appends.KEEP` generations are kept.
"""

from __future__ import annotations

from typing import Collection

import duckdb

from .appends import KEEP, TOUCHED
from .connection import store_tables
from .generation import generation

TABLE = "store_resynced"


def note_resynced(con: duckdb.DuckDBPyConnection, customers: str | Collection[str]) -> None:
    """Note that the store's generation now (just made by a webhook resync's merge, inside its transaction) moved
    ``customers`` alone: their ids, or an SQL query of one column ``customer_id`` (a row of NULL notes none)."""
    now = generation(con)
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (generation BIGINT NOT NULL, customer_id VARCHAR)")
    if isinstance(customers, str):
        con.execute(f"INSERT INTO {TABLE} SELECT ?, customer_id FROM ({customers}) "
                    "UNION ALL SELECT ?, NULL", [now, now])
    else:
        con.execute(f"INSERT INTO {TABLE} SELECT ?, unnest(?::VARCHAR[]) UNION ALL SELECT ?, NULL",
                    [now, sorted(customers), now])
    con.execute(f"DELETE FROM {TABLE} WHERE generation <= ?", [now - KEEP])


def moved_since(con: duckdb.DuckDBPyConnection, since: int) -> tuple[int, set[str] | None]:
    """(the generation now, the customers the resyncs' merges after generation ``since`` moved: their affected
    customers, and the orders' customers each merge noted, :func:`.appends.note_merged`, both ids of a customer
    identity resolution re-keyed among them); None instead of the customers when a write since is not a noted
    resync's (which customers it moved is not known)."""
    now = generation(con)
    if now <= since:
        return now, set()
    if not store_tables(con, TABLE):
        return now, None
    rows = con.execute(f"SELECT generation, customer_id FROM {TABLE} WHERE generation > ? AND generation <= ?",
                       [since, now]).fetchall()
    if {g for g, _ in rows} != set(range(since + 1, now + 1)):
        return now, None
    if store_tables(con, TOUCHED):  # and both ids of a customer re-keyed (a guest's orders linked to a card)
        rows += con.execute(f"SELECT generation, customer_id FROM {TOUCHED} WHERE generation > ? AND generation <= ?",
                            [since, now]).fetchall()
    return now, {c for _, c in rows if c is not None}


__all__ = ["TABLE", "moved_since", "note_resynced"]
