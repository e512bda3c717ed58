"""Which customers each incremental merge moved, by the store generation it made (:mod:`.generation`).

A full sync reads the store once and applies its destinations one by one, each under its lock. A merge after that
read (a webhook resync's, an API pull's, another sync's) moved some customers on: the sync's rows of them are
older. A webhook resync pushes its customers from its own, later read, under the same lock (before the sync's
apply or after it; it planned nothing when the ledger already held their new state: no ledger revision moved to
tell the sync); a pull's customers wait for the next sync. Either way the sync's rows of them are not its to push.
Every incremental merge (:func:`.merge.merge_staged`) notes here, in its own transaction, the customers it moved
(:func:`note_moved`: its orders' customers, before and after, both ids of every customer identity resolution
re-keyed, its contacts' customers; an empty merge notes nobody), and a file appended the lean way is noted by
:func:`.appends.note_appended` (its orders' customers). A merge of more than :data:`~.appends.NOTED_ROWS` staged
orders or contacts (a big webhook batch, a backfill) gathers them set-based in the store (:func:`moved_by`): no
Python set of them. A full refresh (a file export read again: a new or changed file, a contacts file) and a lean
file swap (a changed or removed file) note the customers whose rows differ (:func:`rows_before`): each
customer's orders, contacts and receipt lines as a count and a sum of row hashes, before the write and after it,
compared (the file id aside: a changed file's unchanged rows moved nobody; the rows after a full refresh are kept,
:data:`KEPT_ROWS`, and are the next one's rows before it while no other write came between; the first read of an
empty store notes nobody; with no full sync's read outstanding, :mod:`.reads`, a full refresh compares nothing and
notes nothing: nobody asks, and a sync whose read lapsed holds). Under each destination's lock the sync
asks :func:`moved_since` which customers the store's writes after its read moved, and leaves them out
(:func:`sync.store_moved.left_to_resyncs`). A write that moved more than :data:`~.appends.NOTED_CUSTOMERS`
customers (the bound on the notes, and on what one merge gathers) notes nobody, as does any other write: it
answers None, whom it moved is not known. The notes of the latest :data:`~.appends.KEEP` generations are kept,
and at most :data:`~.appends.NOTED_CUSTOMERS` noted customers (the older generations' notes go: a question about
them answers None).
"""

from __future__ import annotations

from typing import Collection

import duckdb

from connectors.tables import TABLES

from .appends import KEEP, NOTED_CUSTOMERS, NOTED_ROWS, TABLE as APPENDS
from .connection import store_tables
from .generation import generation
from .reads import reads_outstanding
from .webhooks import LATE_WITHDRAWALS

TABLE = "store_moved_customers"
BEFORE = "_moved_before"  # temp: each customer's rows (count, hash sum) before a full refresh or a file swap
MOVED = "_moved"  # temp: whom a large merge, a full refresh or a file swap moved, noted once its generation is made
#: each customer's rows (count, hash sum) as the last full refresh left them, and the generation it made: the next
#: full refresh's rows before it while no write came between (one grouped scan of the store less)
KEPT_ROWS, KEPT_AT = "store_customer_rows", "store_customer_rows_at"


def note_moved(con: duckdb.DuckDBPyConnection, customers: str | Collection[str]) -> None:
    """Note that the store's generation now (just made by an incremental merge, inside its transaction) moved
    ``customers`` alone: their ids, or an SQL query of one column ``customer_id`` (a row of NULL notes the
    generation itself, also when it moved nobody)."""
    now = generation(con)
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (generation BIGINT NOT NULL, customer_id VARCHAR)")
    if isinstance(customers, str):
        con.execute(f"INSERT INTO {TABLE} SELECT ?, customer_id FROM ({customers}) "
                    "UNION ALL SELECT ?, NULL", [now, now])
        con.execute(f"DROP TABLE IF EXISTS {MOVED}")
    else:
        con.execute(f"INSERT INTO {TABLE} SELECT ?, unnest(?::VARCHAR[]) UNION ALL SELECT ?, NULL",
                    [now, sorted(customers), now])
    con.execute(f"DELETE FROM {TABLE} WHERE generation <= ?", [now - KEEP])
    if con.execute(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0] > NOTED_CUSTOMERS:
        con.execute(f"DELETE FROM {TABLE} WHERE generation < ?", [now])  # this one's stays: a read before it asks


def _columns(name: str) -> str:
    """Table ``name``'s canonical columns (:data:`connectors.tables.TABLES`: no ``file_id``), ``o.``-qualified."""
    return ", ".join(f"o.{line.split()[0]}" for line in TABLES[name].strip().splitlines())


#: each customer's rows: a count and a sum of row hashes over its orders, contacts and receipt lines
_ROWS = f"""SELECT customer_id, sum(n) AS n, sum(h) AS h FROM (
    SELECT customer_id, count(*) AS n, sum(hash('o', {_columns("orders")})::HUGEINT) AS h FROM orders o GROUP BY ALL
    UNION ALL SELECT customer_id, count(*), sum(hash('c', {_columns("contacts")})::HUGEINT) FROM contacts o GROUP BY ALL
    UNION ALL SELECT r.customer_id, count(*), sum(hash('l', {_columns("line_items")})::HUGEINT)
              FROM line_items o JOIN orders r USING (order_id) GROUP BY ALL) GROUP BY ALL"""


def before_write(con: duckdb.DuckDBPyConnection, present: Collection[str], full_refresh: bool,
                 empty: bool = False) -> None:
    """Note, before a merge writes (inside its transaction), what :func:`moved_by` compares with after it: a full
    refresh's each customer's rows (none when the store is empty: it notes nobody, :func:`moved_by`; none when no
    full sync's read is outstanding, :func:`.reads.reads_outstanding`: it notes nothing, the kept rows go); a large
    incremental merge's (more than :data:`~.appends.NOTED_ROWS` staged orders: no note of its own) the customers of
    the stored orders it replaces (and of their returns, ``ID~return…``). An ``empty`` merge (nothing new: no
    generation, no note, no :func:`moved_by`) notes nothing."""
    con.execute(f"DROP TABLE IF EXISTS {BEFORE}")
    if empty:
        return
    if full_refresh and "staged_orders" in present:  # every stored order goes: a file read again keeps its id
        note_dropped_appends(con, "file_id NOT IN (SELECT file_id FROM staged_orders WHERE file_id IS NOT NULL)"
                             if "file_id" in _temp(con, "staged_orders") else "true")
    if full_refresh and not con.execute("SELECT EXISTS (FROM orders) OR EXISTS (FROM contacts)").fetchall()[0][0]:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {BEFORE} (first BOOLEAN)")  # the store's first read: see moved_by
    elif full_refresh and not reads_outstanding(con):  # no sync's read to answer: no comparison (see moved_by)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {BEFORE} (unread BOOLEAN)")
        forget_kept_rows(con)  # true of this generation alone, which is going
    elif full_refresh:
        kept = store_tables(con, KEPT_ROWS, KEPT_AT) == {KEPT_ROWS, KEPT_AT} and con.execute(
            f"SELECT count(*) = 1 AND min(generation) = ? FROM {KEPT_AT}", [generation(con)]).fetchall()[0][0]
        con.execute(f"CREATE OR REPLACE TEMP TABLE {BEFORE} AS {f'FROM {KEPT_ROWS}' if kept else _ROWS}")
    elif "staged_orders" in present and con.execute(
            "SELECT count(*) > ? FROM staged_orders", [NOTED_ROWS]).fetchall()[0][0]:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {BEFORE} AS SELECT DISTINCT customer_id FROM orders WHERE "
                    "order_id IN (SELECT order_id FROM staged_orders) OR contains(order_id, '~return') AND "
                    "regexp_replace(order_id, '~return[0-9]*$', '') IN (SELECT order_id FROM staged_orders)")


def forget_kept_rows(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the rows the last full refresh kept (:data:`KEPT_ROWS`): a write that changes the store's rows without
    moving its generation (the stored e-mails normalised, :func:`.lookup.normalise_emails`) makes them untrue, and
    the next full refresh, comparing with them, would note customers nothing moved."""
    con.execute(f"DROP TABLE IF EXISTS {KEPT_ROWS}")
    con.execute(f"DROP TABLE IF EXISTS {KEPT_AT}")


def moved_by(con: duckdb.DuckDBPyConnection, present: Collection[str], customers: set[str] | None,
             identity: Collection[str] = ()) -> str | set[str] | None:
    """Whom a merge moved, for :func:`note_moved` (called after its writes, its ``staged_*`` tables still there).
    A small incremental merge: ``customers`` (its orders' customers, before and after, and both ids of every link)
    and its contacts' customers. After a full refresh's :func:`before_write`: the customers whose rows differ now;
    nobody after the first read of an empty store (a sync reading nothing stops at the ``min_orders`` guard, and
    noting its every customer cost a scan and, beyond :data:`~.appends.NOTED_CUSTOMERS`, noted nobody anyway); None
    (nothing noted) when no full sync's read was outstanding (its two grouped scans saved: nobody asks).
    Else (a large merge) gathered in the store: :func:`before_write`'s, ``customers``, ``identity``'s ids and the
    staged orders' and contacts' customers. The last two as a query of :data:`MOVED`; None (nobody noted) beyond
    :data:`~.appends.NOTED_CUSTOMERS` customers."""
    # the contacts' customers: those staged, and those a stale version's withdrawal wrote (its row left out)
    contacts = ["SELECT customer_id FROM staged_contacts"] * ("staged_contacts" in present)
    if _temp(con, LATE_WITHDRAWALS):
        contacts.append(f"SELECT customer_id FROM {LATE_WITHDRAWALS}")
    staged = ["SELECT customer_id FROM staged_orders"] * ("staged_orders" in present) + contacts
    if customers is not None and not ("staged_contacts" in present and con.execute(
            "SELECT count(*) > ? FROM staged_contacts", [NOTED_ROWS]).fetchall()[0][0]):
        return customers | {r[0] for q in contacts
                            for r in con.execute(f"SELECT DISTINCT customer_id FROM ({q})").fetchall()}
    before = _temp(con, BEFORE)
    if "first" in before or "unread" in before:
        con.execute(f"DROP TABLE {BEFORE}")
        # a full refresh of an empty store (its first read): no sync read anything before it; with no sync's read
        # outstanding (sync.store.reads): nobody asks, and a read that lapsed is held by its generation left unnoted
        return set() if "first" in before else None
    if before and "n" in before:  # each customer's rows before the write (a full refresh), kept for the next one
        con.execute(f"CREATE OR REPLACE TABLE {KEPT_ROWS} AS {_ROWS}")
        con.execute(f"CREATE OR REPLACE TABLE {KEPT_AT} AS SELECT ? + 1 AS generation", [generation(con)])
        query = (f"SELECT customer_id FROM {BEFORE} b FULL JOIN {KEPT_ROWS} a USING (customer_id) "
                 "WHERE b.n IS DISTINCT FROM a.n OR b.h IS DISTINCT FROM a.h")
    else:
        query = " UNION ALL ".join(["SELECT unnest(?::VARCHAR[]) AS customer_id", *staged,
                                    *([f"SELECT customer_id FROM {BEFORE}"] if before else [])])
    con.execute(f"CREATE OR REPLACE TEMP TABLE {MOVED} AS SELECT DISTINCT customer_id FROM ({query})",
                [] if before and "n" in before else [sorted({*(customers or ()), *identity})])
    con.execute(f"DROP TABLE IF EXISTS {BEFORE}")
    return _bounded(con)


def swapped_files(con: duckdb.DuckDBPyConnection, dropped: Collection[int], staged: bool) -> str | None:
    """Whom a lean file swap moves (:func:`.file_lean.commit_lean`: the ``dropped`` files' orders deleted, the
    ``staged`` ones, if any, inserted; called before it writes): the customers whose orders in one and in the other
    differ, the file id aside (the lean path has no contacts, no receipt lines and no order id in two files), as
    a count and a sum of row hashes per customer (a multiset difference of the rows took 4-5 times as long). A
    query of :data:`MOVED` for :func:`note_moved`, or None beyond :data:`~.appends.NOTED_CUSTOMERS` customers."""
    sums = (f"SELECT customer_id, count(*) AS n, sum(hash({_columns('orders')})::HUGEINT) AS h "
            "FROM {rows} GROUP BY ALL")
    old = sums.format(rows="orders o WHERE file_id IN (SELECT unnest(?::BIGINT[]))")
    new = sums.format(rows="staged_orders o" if staged else "orders o WHERE false")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {MOVED} AS SELECT customer_id FROM ({old}) a FULL JOIN ({new}) b "
                "USING (customer_id) WHERE a.n IS DISTINCT FROM b.n OR a.h IS DISTINCT FROM b.h", [sorted(dropped)])
    return _bounded(con)


def _bounded(con: duckdb.DuckDBPyConnection) -> str | None:
    """The query of :data:`MOVED` for :func:`note_moved`; None (the table dropped: nobody noted) beyond
    :data:`~.appends.NOTED_CUSTOMERS` customers."""
    if con.execute(f"SELECT count(*) FROM {MOVED}").fetchall()[0][0] > NOTED_CUSTOMERS:
        con.execute(f"DROP TABLE {MOVED}")
        return None
    return f"SELECT customer_id FROM {MOVED}"


def note_dropped_appends(con: duckdb.DuckDBPyConnection, dropped: str) -> None:
    """Before a write deletes the orders of the files ``dropped`` (an SQL condition on ``file_id``; a lean swap's
    changed or removed files, a full refresh's files read again): a lean append of one of them (within
    :data:`~.appends.KEEP`) noted its file ids, whose customers :func:`moved_since` finds by the orders' file ids,
    gone with them (a changed or renamed file gets a new id). Its note becomes its customers (inside the write's
    transaction): their ids under its generation here, its appends note gone (a kept table asking across it asks
    across this write too, which noted no appends). Beyond :data:`~.appends.NOTED_CUSTOMERS` customers its
    generation is left without a note: whom it moved is then not known."""
    if APPENDS not in store_tables(con, APPENDS):
        return
    since = generation(con) + 1 - KEEP  # this write's generation keeps the notes after that (:func:`note_moved`)
    rows = con.execute(f"SELECT generation, file_id FROM {APPENDS} WHERE generation > ? AND generation IN "
                       f"(SELECT generation FROM {APPENDS} WHERE {dropped})", [since]).fetchall()
    files: dict[int, list[int]] = {}
    for gen, file_id in rows:
        files.setdefault(gen, []).append(file_id)
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (generation BIGINT NOT NULL, customer_id VARCHAR)")
    for gen, ids in sorted(files.items()):
        customers = "SELECT DISTINCT customer_id FROM orders WHERE file_id IN (SELECT unnest(?::BIGINT[]))"
        if con.execute(f"SELECT count(*) <= ? FROM ({customers})", [NOTED_CUSTOMERS, ids]).fetchall()[0][0]:
            con.execute(f"INSERT INTO {TABLE} SELECT ?, customer_id FROM ({customers}) UNION ALL SELECT ?, NULL",
                        [gen, ids, gen])
        con.execute(f"DELETE FROM {APPENDS} WHERE generation = ?", [gen])


def _temp(con: duckdb.DuckDBPyConnection, name: str) -> set[str]:
    """The columns of the temp table ``name`` (none: no such table)."""
    return {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND "
                                      "database_name = 'temp'", [name]).fetchall()}


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


__all__ = ["TABLE", "before_write", "forget_kept_rows", "moved_by", "moved_since", "note_dropped_appends", "note_moved",
           "swapped_files"]
