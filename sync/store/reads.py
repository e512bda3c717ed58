"""The full syncs' reads of the order store still outstanding: what a file export's full refresh asks before it pays
for noting whom it moved (:func:`sync.store.resynced.before_write`).

A full sync reads the store once and applies its destinations after it, each under its lock, asking then whom the
store's writes since its read moved (:mod:`sync.store_moved`). A full refresh (a file export read again) answers
that by comparing each customer's rows before and after it: two grouped scans of the store, seconds at a million
contacts (BENCHMARKS.md, resync30). It pays them only while a sync's read is outstanding: the sync registers its
read here (:func:`take_read`, in the same connection and under the same hold of the store as its read of the
generation, so no write comes between), renews it under each destination's lock (:func:`renew_read`) and takes it
back when its applies are done (:func:`release_read`). A read a crashed sync left behind lapses :data:`LEASE`
after its last renewal: a refresh then compares nothing and notes nothing, its generation says nobody knows whom it
moved, and a sync whose read lapsed while it still ran is held by it (exit 5, retried), as before resync29: the
lease bounds a cost, never what a sync pushes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import duckdb

from .connection import store_tables, store_transaction

TABLE = "store_reads"
#: how long a registered read holds the full refreshes' comparison on after it was taken or last renewed (a
#: destination's apply between two renewals: a million contacts take well under an hour)
LEASE = timedelta(hours=6)


def _now(at: datetime | None) -> datetime:
    return at if at is not None else datetime.now(timezone.utc)


def _hold(con: duckdb.DuckDBPyConnection, read_id: str, now: datetime) -> None:
    """Hold ``read_id`` until :data:`LEASE` after ``now``."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (read_id VARCHAR NOT NULL, expires_at TIMESTAMPTZ NOT NULL)")
    with store_transaction(con):  # all or nothing: a failed insert must not leave the read deleted
        con.execute(f"DELETE FROM {TABLE} WHERE read_id = ? OR expires_at <= ?", [read_id, now])
        con.execute(f"INSERT INTO {TABLE} VALUES (?, ?)", [read_id, now + LEASE])


def take_read(con: duckdb.DuckDBPyConnection, at: datetime | None = None) -> str:
    """Register a full sync's read of the store (call it where the sync reads the generation, before the store is
    let go); returns its id. Lapsed reads are forgotten here."""
    read_id = uuid.uuid4().hex
    _hold(con, read_id, _now(at))
    return read_id


def renew_read(con: duckdb.DuckDBPyConnection, read_id: str, at: datetime | None = None) -> None:
    """Hold the read ``read_id`` for another :data:`LEASE` (registered again if it lapsed and was forgotten: the
    writes meanwhile noted nobody, which the sync's check finds). Lapsed reads are forgotten here too."""
    _hold(con, read_id, _now(at))


def release_read(con: duckdb.DuckDBPyConnection, read_id: str) -> None:
    """The sync that registered ``read_id`` is done with the store as it read it."""
    if store_tables(con, TABLE):
        con.execute(f"DELETE FROM {TABLE} WHERE read_id = ?", [read_id])


def reads_outstanding(con: duckdb.DuckDBPyConnection, at: datetime | None = None) -> bool:
    """Whether a full sync's read of the store is registered and has not lapsed."""
    return bool(store_tables(con, TABLE)) and con.execute(
        f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE expires_at > ?)", [_now(at)]).fetchall()[0][0]


__all__ = ["LEASE", "TABLE", "release_read", "renew_read", "reads_outstanding", "take_read"]
