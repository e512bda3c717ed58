"""A flat export's returns kept beside their sale (``ID~return``, ``ID~return2`` …, :mod:`connectors.file_repeats`),
noted by their sale's id (``file_returns``: ``order_id``, ``sale_id``; one short row per return stored).

A webhook's or a CRM pull's version of an order id is the whole order: an incremental merge deletes the file's
returns of the orders it merges with the file's row of them (:func:`delete_returns`), however many there are. Only
a file source's full refresh stores such returns, so it notes them again each time (:func:`note_returns`: the
orders it left in the store); a store that holds none (any API source's) pays one read of an empty table per merge.
The notes are stamped with the store's generation (:mod:`.generation`, which every write of ``orders`` moves on,
an older rfmsync's too) after each merge: a merge that finds another generation (a store written before the table,
or by an older rfmsync since: a downgrade, then an upgrade) notes them again, by a scan of the orders, first.
"""

from __future__ import annotations

import duckdb

from connectors.file_result import FilePullResult
from connectors.source import PullResult

from .connection import store_tables
from .generation import generation

RETURNS_TABLE = "file_returns"
#: the store's generation the notes were last known true at (one row; none: never)
STAMP_TABLE = "file_returns_generation"
#: an order id :mod:`connectors.file_repeats` made for a return (``contains`` first: it skips the regex on the rest)
_MADE = "contains(order_id, '~return') AND regexp_matches(order_id, '~return[0-9]*$')"
#: the sale's id of such a return
_SALE = "regexp_replace(order_id, '~return[0-9]*$', '')"


def returns_of(ids: str) -> str:
    """The condition on ``order_id`` of the returns of the orders ``ids`` (a subquery of ``order_id``) among
    staged rows (a full refresh's, not noted yet)."""
    return f"{_MADE} AND {_SALE} IN (SELECT order_id FROM {ids})"


def create_returns_table(con: duckdb.DuckDBPyConnection) -> None:
    """``file_returns``, created if need be, its returns noted again (a scan of the orders) unless its stamp is the
    store's generation: a store written before it, or by an older rfmsync since, holds returns it has not noted."""
    made = {RETURNS_TABLE, STAMP_TABLE} - store_tables(con, RETURNS_TABLE, STAMP_TABLE)
    if RETURNS_TABLE in made:
        con.execute(f"CREATE TABLE {RETURNS_TABLE} (order_id VARCHAR NOT NULL, sale_id VARCHAR NOT NULL)")
    if STAMP_TABLE in made:
        con.execute(f"CREATE TABLE {STAMP_TABLE} (generation BIGINT NOT NULL)")
    if not made and con.execute(f"SELECT 1 FROM {STAMP_TABLE} WHERE generation = ?", [generation(con)]).fetchall():
        return
    note_returns(con)
    stamp_returns(con)


def stamp_returns(con: duckdb.DuckDBPyConnection) -> None:
    """Stamp the notes true at the store's generation now (after a merge's writes moved it on, in its transaction)."""
    con.execute(f"DELETE FROM {STAMP_TABLE}")
    con.execute(f"INSERT INTO {STAMP_TABLE} VALUES (?)", [generation(con)])


def note_returns(con: duckdb.DuckDBPyConnection, pull: PullResult | None = None) -> None:
    """Note the returns the store's orders hold now (after a full refresh wrote them), and those only; ``pull``: the
    full refresh's, a file staging's that repeated no order id made none (its orders are not read)."""
    con.execute(f"DELETE FROM {RETURNS_TABLE}")
    if isinstance(pull, FilePullResult) and not pull.duplicate_orders:
        return
    con.execute(f"INSERT INTO {RETURNS_TABLE} SELECT order_id, {_SALE} FROM orders WHERE {_MADE}")


def delete_returns(con: duckdb.DuckDBPyConnection, returning: str = "") -> list[tuple]:
    """Delete the file's returns of the staged orders (``staged_orders``) from ``orders`` and from the notes;
    returns the deleted orders' ``returning`` columns (``RETURNING …``; none without it)."""
    if not con.execute(f"SELECT 1 FROM {RETURNS_TABLE} LIMIT 1").fetchall():
        return []  # no return stored (an API source's store: always)
    gone = [r[0] for r in con.execute(f"DELETE FROM {RETURNS_TABLE} WHERE sale_id IN "
                                      "(SELECT order_id FROM staged_orders) RETURNING order_id").fetchall()]
    if not gone:
        return []
    deleted = con.execute(f"DELETE FROM orders WHERE order_id IN (SELECT unnest(?::VARCHAR[])){returning}", [gone])
    return deleted.fetchall() if returning else []


__all__ = ["RETURNS_TABLE", "STAMP_TABLE", "create_returns_table", "delete_returns", "note_returns", "returns_of",
           "stamp_returns"]
