"""Orders the vendor deleted for good (``deleted_orders``): no later version of one is merged.

A deleted Shopify order never comes back and its id is never reused, so its ``orders/delete`` delivery is a final
tombstone (:attr:`connectors.records.OrderStatus.DELETED`, :func:`connectors.non_purchase.tombstone`). The merge
stores it as a ``cancelled`` row, as any tombstone, and notes its id here in the same transaction
(:func:`note_deleted`); unlike a tombstone that is not final, even for an order the store never held
(:func:`leave_out_unstored_tombstones`, which stores no row for a non-final one but still notes its version): the
note must outlive it.
From then on a staged version of that order that is not a delete is left out of every incremental merge, whatever
its vendor time or its acceptance, counted and logged as a stale version (:func:`leave_out_deleted`): an
``orders/updated`` made before the delete and retried after it (Shopify retries for hours with the original
payload, timed or not), an ``orders/create`` accepted after a delete that came first, a pull's page read before the
delete (a list lagging behind it). A delete staged with a later version of the order (one batch) leaves that version
out too; and a delete is never left out as older than a version the store holds (:data:`FINAL_STAGED`): nothing of
the order can be newer. No clock is compared with another.

A delete that can be undone, or is not known to be final (an amoCRM lead in the trash can be restored; a Bitrix24
deal; a lead or deal moved out of scope) stays a ``cancelled`` tombstone, ordered as any version. A file's full
refresh (files have no deletes) is as before: a webhook record whose file version it takes takes its note with it
(:func:`forget_deleted`). A store written by an older rfmsync has no notes: its tombstones are ordered as before
(no re-read could note them: a pull never lists a deleted order). Its size: one short row per order deleted for good,
each id once and only while the store keeps its cancelled row (``tests/test_store_bounds.py``): never more rows than
those tombstones, and not pruned (Shopify never reuses an id, so a note is never wrong; a delivery retried for hours
or an event requeued days later still meets it).
"""

from __future__ import annotations

import duckdb

import logging

from connectors.records import OrderStatus
from connectors.tables import STAGED_TOMBSTONES, STAGED_VERSIONS

from .webhooks import PULLED_TABLE, leave_out

log = logging.getLogger(__name__)

DELETED_TABLE = "deleted_orders"
#: the staged orders' ids a final tombstone is staged for: never left out as older than a stored version
FINAL_STAGED = f"SELECT order_id FROM staged_orders WHERE status = '{OrderStatus.DELETED}'"
#: the orders deleted for good: noted before, or by a final tombstone staged now
DELETED_OR_FINAL = f"SELECT order_id FROM {DELETED_TABLE} UNION ALL {FINAL_STAGED}"
#: the orders (``order_id``) whose never-stored tombstone a merge left out (:func:`leave_out_unstored_tombstones`):
#: noted as versions, not stored
UNSTORED = "_unstored_orders"


def create_deleted_table(con: duckdb.DuckDBPyConnection) -> None:
    """``deleted_orders`` (``order_id``, one row each; no index: a merge reads it whole), created in a store written
    before it."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {DELETED_TABLE} (order_id VARCHAR NOT NULL)")


def leave_out_deleted(con: duckdb.DuckDBPyConnection, present: set[str], what: str) -> int:
    """Leave out of an incremental merge the staged versions (with their line items) of the orders deleted for good,
    noted before or by a final tombstone staged with them, and the vendor times a pull staged of them (they are not
    noted: :mod:`.pulled`); logged as stale (``what``: the merge's origin). Returns how many orders."""
    if "staged_orders" not in present or not con.execute(
            f"SELECT 1 FROM ({DELETED_OR_FINAL}) LIMIT 1").fetchall():
        return 0  # nothing deleted for good (the common case: one short scan)
    con.execute("CREATE OR REPLACE TEMP TABLE _older_deleted AS SELECT DISTINCT order_id AS id FROM staged_orders "
                f"WHERE status <> '{OrderStatus.DELETED}' AND order_id IN ({DELETED_OR_FINAL})")
    if con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND temporary", [STAGED_VERSIONS]).fetchall():
        con.execute(f"DELETE FROM {STAGED_VERSIONS} WHERE kind = 'order' AND id IN (SELECT id FROM _older_deleted)")
    return leave_out(con, "orders", present, "_older_deleted", what, f"AND status <> '{OrderStatus.DELETED}'",
                     "the order was deleted for good")


#: the staged orders whose last version is a tombstone of an order the store holds no row of
_UNSTORED_IDS = (f"SELECT DISTINCT t.order_id FROM {STAGED_TOMBSTONES} t WHERE t.order_id IN "
                 "(SELECT order_id FROM staged_orders) AND NOT EXISTS "
                 "(SELECT 1 FROM orders o WHERE o.order_id = t.order_id)")


def _tombstones_staged(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND temporary",
                            [STAGED_TOMBSTONES]).fetchall()) and bool(
        con.execute(f"SELECT 1 FROM {STAGED_TOMBSTONES} LIMIT 1").fetchall())


def unstored_tombstones(con: duckdb.DuckDBPyConnection) -> int:
    """How many of a staged pull's order records are tombstones the merge will not store (of orders the store never
    held, :func:`leave_out_unstored_tombstones`): read, not pulled into the store (a pull's count leaves them out)."""
    if not _tombstones_staged(con) or not con.execute(
            "SELECT 1 FROM duckdb_tables() WHERE table_name = 'staged_orders'").fetchall():
        return 0
    return con.execute(f"SELECT count(*) FROM staged_orders WHERE order_id IN ({_UNSTORED_IDS})").fetchall()[0][0]


def leave_out_unstored_tombstones(con: duckdb.DuckDBPyConnection, present: set[str]) -> int:
    """Leave out of an incremental merge every staged version (with its line items) of the orders whose last staged
    version is a tombstone that only retires a stored order (:data:`STAGED_TOMBSTONES`) and that the store holds no
    order of: a deal lost or deleted before rfmsync stored it (or created and deleted within the pull) adds no
    cancelled row of a blank customer. Its version is still noted (:data:`UNSTORED`, kept for the merge: a webhook's
    acceptance and vendor time in ``webhook_records``, a timed pull's vendor time in ``pulled_versions``, its
    staged time kept), so an older copy of the order merged after it (a create retried after the cancel, a late
    webhook older than the pull that read it cancelled) is left out as stale, not stored as a purchase. Called after
    the older versions are left out (an older tombstone notes nothing). Returns how many orders (logged)."""
    if "staged_orders" not in present or not _tombstones_staged(con):
        return 0  # no such tombstone staged (the common case: the orders are not read)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {UNSTORED} AS {_UNSTORED_IDS}")
    n = con.execute(f"SELECT count(*) FROM {UNSTORED}").fetchall()[0][0]
    if n:
        for table in ("staged_orders", "staged_line_items"):
            if table in present:
                con.execute(f"DELETE FROM {table} WHERE order_id IN (SELECT order_id FROM {UNSTORED})")
        log.info("%d deleted or lost orders never stored: nothing to retire, not stored (their version noted)", n)
    return n


def note_deleted(con: duckdb.DuckDBPyConnection, present: set[str]) -> None:
    """Note the orders a final tombstone is staged for (once each), forget their pulled vendor times (the delete
    orders what comes next alone), and stage those tombstones as ``cancelled``, the status every tombstone is stored
    with."""
    if "staged_orders" not in present or not con.execute(f"{FINAL_STAGED} LIMIT 1").fetchall():
        return
    con.execute(f"INSERT INTO {DELETED_TABLE} SELECT DISTINCT order_id FROM ({FINAL_STAGED}) "
                f"EXCEPT SELECT order_id FROM {DELETED_TABLE}")
    con.execute(f"DELETE FROM {PULLED_TABLE} WHERE kind = 'order' AND id IN ({FINAL_STAGED})")
    con.execute(f"UPDATE staged_orders SET status = '{OrderStatus.CANCELLED}' WHERE status = '{OrderStatus.DELETED}'")


def forget_deleted(con: duckdb.DuckDBPyConnection, kept: bool) -> None:
    """A full refresh (a file source's): forget the deletes of the orders it replaced (all but the webhook records
    it keeps, ``_kept_orders`` when ``kept``): the file's version is the store's now (files have no deletes)."""
    con.execute(f"DELETE FROM {DELETED_TABLE}" + (" WHERE order_id NOT IN (SELECT id FROM _kept_orders)" if kept
                                                  else ""))
