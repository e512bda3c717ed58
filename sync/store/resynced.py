"""Which customers each incremental merge moved, by the store generation it made (:mod:`.generation`).

A full sync reads the store once and applies its destinations one by one, each under its lock. A merge after that
read (a webhook resync's, an API pull's, another sync's) moved some customers on: the sync's rows of them are
older. A webhook resync pushes its customers from its own, later read, under the same lock (before the sync's
apply or after it; it planned nothing when the ledger already held their new state: no ledger revision moved to
tell the sync); a pull's customers wait for the next sync. Either way the sync's rows of them are not its to push.
Every incremental merge (:func:`.merge.merge_staged`) notes here, in its own transaction, the customers it moved
(:func:`note_moved`: its orders' customers, before and after, both ids of every customer identity resolution
re-keyed, its contacts' customers; an empty merge notes nobody), and a file appended the lean way is noted by
:func:`.appends.note_appended` (its orders' customers). Under each destination's lock the sync asks
:func:`moved_since` which customers the store's writes after its read moved, and leaves them out
(:func:`sync.store_moved.left_to_resyncs`). A write neither covers (a full refresh, a replaced or removed file,
a merge of more than :data:`~.appends.NOTED_ROWS` orders or contacts) answers None: whom it moved is not known.
The notes of the latest :data:`~.appends.KEEP` generations are kept, and at most
:data:`~.appends.NOTED_CUSTOMERS` noted customers (the older generations' notes go: a question about them
answers None).
"""

from __future__ import annotations

from typing import Collection

import duckdb

from .appends import KEEP, NOTED_CUSTOMERS, TABLE as APPENDS
from .connection import store_tables
from .generation import generation

TABLE = "store_moved_customers"


def note_moved(con: duckdb.DuckDBPyConnection, customers: str | Collection[str]) -> None:
    """Note that the store's generation now (just made by an incremental merge, inside its transaction) moved
    ``customers`` alone: their ids, or an SQL query of one column ``customer_id`` (a row of NULL notes the
    generation itself, also when it moved nobody)."""
    now = generation(con)
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (generation BIGINT NOT NULL, customer_id VARCHAR)")
    if isinstance(customers, str):
        con.execute(f"INSERT INTO {TABLE} SELECT ?, customer_id FROM ({customers}) "
                    "UNION ALL SELECT ?, NULL", [now, now])
    else:
        con.execute(f"INSERT INTO {TABLE} SELECT ?, unnest(?::VARCHAR[]) UNION ALL SELECT ?, NULL",
                    [now, sorted(customers), now])
    con.execute(f"DELETE FROM {TABLE} WHERE generation <= ?", [now - KEEP])
    if con.execute(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0] > NOTED_CUSTOMERS:
        con.execute(f"DELETE FROM {TABLE} WHERE generation < ?", [now])  # this one's stays: a read before it asks


def moved_since(con: duckdb.DuckDBPyConnection, since: int) -> tuple[int, set[str] | None]:
    """(the generation now, the customers the writes after generation ``since`` moved: those each merge noted,
    :func:`note_moved`, and those of each file appended the lean way); None instead of the customers when a write
    since noted neither, or its note is gone (whom it moved is not known)."""
    now = generation(con)
    if now <= since:
        return now, set()
    present = store_tables(con, TABLE, APPENDS)
    between = "WHERE generation > ? AND generation <= ?"
    rows = con.execute(f"SELECT generation, customer_id FROM {TABLE} {between}",
                       [since, now]).fetchall() if TABLE in present else []
    files = con.execute(f"SELECT generation, file_id FROM {APPENDS} {between}",
                        [since, now]).fetchall() if APPENDS in present else []
    if {g for g, _ in rows} | {g for g, _ in files} != set(range(since + 1, now + 1)):
        return now, None
    moved = {c for _, c in rows if c is not None}
    if files:  # appended orders only: no contact, no identity rewritten (:mod:`.file_lean`)
        moved |= {r[0] for r in con.execute("SELECT DISTINCT customer_id FROM orders WHERE file_id IN "
                                            "(SELECT unnest(?::BIGINT[]))", [sorted({f for _, f in files})]).fetchall()}
    return now, moved


__all__ = ["TABLE", "moved_since", "note_moved"]
