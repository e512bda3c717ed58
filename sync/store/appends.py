"""Which writes to ``orders`` were appends of whole files: what a kept table needs to catch up with them.

A file added the lean way (:mod:`.file_lean`: its rows inserted, nothing deleted, no identity rewritten) moves the
store's generation on (:mod:`.generation`) and notes here, in the same transaction, the generation it made and its
file ids. A table kept under a key of an earlier generation (the purchase-day cache, :mod:`.day_cache`) asks
:func:`appended_since`: when every generation since its key is such an append, the orders that changed are exactly
those files' rows, and only their customers need their rows again; any other write (a merge, a replaced or
removed file) leaves a generation without a note, and the answer is None. Only the latest :data:`KEEP` notes are
kept: a key further behind gets None too.
"""

from __future__ import annotations

import duckdb

from .connection import store_tables

TABLE = "store_appends"
KEEP = 64


def note_appended(con: duckdb.DuckDBPyConnection, generation: int, file_ids: list[int]) -> None:
    """Note that ``generation`` (just made, inside the transaction that inserted them) added the orders of
    ``file_ids`` and nothing else."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (generation BIGINT NOT NULL, file_id BIGINT NOT NULL)")
    con.execute(f"INSERT INTO {TABLE} SELECT ?, unnest(?::BIGINT[])", [generation, [int(i) for i in file_ids]])
    con.execute(f"DELETE FROM {TABLE} WHERE generation <= ?", [generation - KEEP])


def appended_since(con: duckdb.DuckDBPyConnection, since: int, now: int) -> list[int] | None:
    """The files appended by the generations after ``since`` up to ``now``, when each of them was an append
    (noted by :func:`note_appended`); None when one was not, or nothing moved."""
    if now <= since or not store_tables(con, TABLE):
        return None
    rows = con.execute(f"SELECT generation, file_id FROM {TABLE} WHERE generation > ? AND generation <= ?",
                       [since, now]).fetchall()
    if {g for g, _ in rows} != set(range(since + 1, now + 1)):
        return None
    return sorted({f for _, f in rows})
