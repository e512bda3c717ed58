"""The lean path of :mod:`sync.store.files`: a file's rows live once, in ``orders``, tagged with its file id.

Staging every file's rows together gives the fresh read's result in every case, but needs every file's rows as
read (bad ones included), so those are kept in a table per file: a second copy of the export. When no rule
crosses files, nothing needs them, and a file's valid rows are exactly its orders (``orders.file_id``):

* orders files only, and no file maps a contact field, attribute or receipt-line field (no contact rows to
  merge, no receipts to group across files);
* every row of every file has a customer id (no identity resolution, which looks at every row) and an order
  id (a synthetic id depends on the file's place), and no order id repeats among the files' valid rows;
* every order in the store came from a file (no webhook or API records).

No warning of the staging arises there but codes without their leading zeros (``000123`` beside ``123``: a repeated
order id, a discount not a number, a contact or a receipt line each keeps a shop off the lean path): that one is
decided over every file's customer ids (the store's orders of the unchanged files and the new rows,
:func:`_zeros`), so that a day added says what a fresh read says; a summary without warnings (an older
rfmsync's) is never taken for the files' word.

Then new and changed files are read into temp tables, staged alone (:func:`stage_lean`) and, in one
transaction, their old rows and the removed files' rows are deleted by file id and the new rows inserted
(:func:`commit_lean`): the cold run writes the export once, a daily file costs its own rows. Anything else (or any
doubt) returns ``None``, and the caller keeps a table per file and stages them all (a file read the lean way is
then read again, once, to get its table).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from connectors.file_staging import CONTACT_FIELDS, LINE_FIELDS, MAX_BAD_ROWS, FilePullResult, LoadedFile, zeros_lost
from connectors.files import FileSource
from connectors.identity import IdentityReport

from .appends import note_appended
from .generation import bump_generation, generation
from .lookup import BULK_ROWS, drop_lookup_indexes
from .resynced import note_dropped_appends, note_moved, swapped_files
from .rfm_totals import add_totals, kept_at
from .webhooks import WEBHOOK_TABLE, create_webhook_table

_FIELDS = set(CONTACT_FIELDS) | set(LINE_FIELDS)


def file_counts(con: duckdb.DuckDBPyConnection, lf: LoadedFile) -> tuple[int, int, int]:
    """(rows, rows without a customer id, rows without an order id) of a file read."""
    return con.execute(f"SELECT count(*), count(*) FILTER (WHERE cust IS NULL),"
                       f" count(*) FILTER (WHERE order_id IS NULL) FROM {lf.table}").fetchall()[0]


def lean_source(source: FileSource) -> bool:
    """Whether the ``[source]`` table allows the lean path at all: no contacts file, no contact, receipt-line or
    attribute field mapped (a preset's optional fields count)."""
    fields = source.mapped_fields()
    return not source.cfg.contacts and not (fields & _FIELDS) and not any(f.startswith("attr:") for f in fields)


def lean_store(con: duckdb.DuckDBPyConnection, kept: list[dict], summary: dict | None) -> bool:
    """Whether the store's rows allow it: the unchanged files (catalogue rows) have ids on every row, the last
    staging found no repeated order id, contact or cleaned value, every order came from a file, and the store holds no
    contact or receipt line (the lean path leaves those tables alone). Its warnings do not count: the only one left
    possible, codes without their zeros, is decided again by :func:`stage_lean`."""
    if summary is None and kept:
        return False
    if summary is not None and (summary["duplicate_orders"] or summary["issue_count"] or summary["contacts"]):
        return False
    if any(row["no_cust"] is None or row["no_cust"] or row["no_oid"] is None or row["no_oid"] for row in kept):
        return False
    create_webhook_table(con)  # and no contact or receipt line left by another [source] table (read before)
    return not con.execute(f"SELECT (SELECT count(*) FROM {WEBHOOK_TABLE}) + (SELECT count(*) FROM contacts) + "
                           "(SELECT count(*) FROM line_items) + (SELECT count(*) FROM orders WHERE file_id IS NULL)"
                           ).fetchall()[0][0]


@dataclass
class LeanChange:
    """What the lean path changes: the files read (``new``: their file ids and counts), the files whose rows go
    (replaced or removed: ``dropped`` file ids and paths), and every orders file's place in the source's order."""

    new: list[LoadedFile]
    new_ids: list[int]
    counts: list[tuple[int, int, int]]
    dropped: list[int]
    dropped_paths: set[str]
    place: dict[str, int]
    kept_places: dict[int, int]  # the unchanged orders files': file id → place
    said: list[str] | None  # the warnings the store's summary keeps (None: none saved, or by an older rfmsync)
    kept_fast: bool  # every unchanged orders file was read by the typed CSV fast path
    kept_rows: int  # the unchanged files' rows as read (bad ones included)
    staged: bool = False  # set by stage_lean: staged_orders holds rows to insert


def stage_lean(con: duckdb.DuckDBPyConnection, source: FileSource, change: LeanChange,
               before: FilePullResult | None) -> FilePullResult | None:
    """Stage the new files alone into ``staged_orders`` (with their file ids); the whole pull's result (the
    last one's minus the dropped files', plus theirs: ``orders`` is what the store will hold, as the data guards
    of ``before_merge`` expect), or ``None`` when a condition above fails."""
    if any(no_cust or no_oid for _, no_cust, no_oid in change.counts):
        return None  # a row without a customer or an order id
    rows = [(lf, i) for lf, i, (n, _, _) in zip(change.new, change.new_ids, change.counts) if n]
    if rows:  # files without a data row (a day without sales) add nothing
        added = source.stage(con, [lf for lf, _ in rows], [], in_place=True, file_ids=[i for _, i in rows],
                             zeros=False)
        change.staged = True
    else:  # nothing to stage; the fresh read would still need a data row somewhere
        if before is None or not change.kept_rows:
            return None
        added = FilePullResult(orders=0, contacts=0, full_refresh=True, fast_path=True)
    if added.duplicate_orders or added.contacts or added.issue_count or added.warnings:
        return None  # (no other warning arises without these; codes without their zeros: _zeros, below)
    if rows and before is not None and con.execute(
            f"SELECT count(*) FROM staged_orders SEMI JOIN (SELECT order_id FROM orders o{_kept(change)})"
            " USING (order_id)").fetchall()[0][0]:
        return None  # an order id of the new files is in another file
    report = _bad_rows(change, before, added)
    if report is None:
        return None
    bad_rows, bad_count = report
    gone = con.execute(f"SELECT count(*) FROM orders WHERE file_id IN ({_ids(change.dropped)})").fetchall()[0][0] \
        if change.dropped else 0
    return FilePullResult(orders=(before.orders if before else 0) - gone + added.orders, contacts=0, bad_rows=bad_rows,
                          bad_row_count=bad_count, full_refresh=True, identity=IdentityReport(),
                          fast_path=added.fast_path and change.kept_fast and all(lf.fast for lf in change.new),
                          future=added.future, warnings=_zeros(con, change))


def _zeros(con: duckdb.DuckDBPyConnection, change: LeanChange) -> list[str]:
    """The warning of codes without their leading zeros (:func:`~connectors.file_staging.zeros_lost`) over every
    file's customer ids, as a fresh read finds it: the unchanged files' orders in the store (a lean file's rows are
    its orders) and the new files' rows, each file at its place in the source's order. When no file went and no
    new row's id starts with a digit, no pair can have come or gone: the saved warning stands (the store unread)."""
    parts = [f"SELECT {change.place[str(lf.path)]} AS _file, cust FROM {lf.table}" for lf in change.new]
    if change.said is not None and not change.dropped and not (parts and con.execute(
            f"SELECT count(*) FROM (SELECT cust FROM ({' UNION ALL '.join(parts)}) WHERE cust >= '0' AND cust < ':'"
            " LIMIT 1)").fetchall()[0][0]):
        return list(change.said)  # no file gone and no new id of digits: no pair made or lost, nothing to scan
    if change.kept_places:
        places = ", ".join(f"({int(i)}, {int(p)})" for i, p in change.kept_places.items())
        parts.append(f"SELECT k._file, o.customer_id AS cust FROM orders o JOIN (VALUES {places}) k(file_id, _file)"
                     " USING (file_id)")
    if not parts:
        return []
    con.execute(f"CREATE OR REPLACE TEMP VIEW _fs_zeros AS {' UNION ALL '.join(parts)}")
    return zeros_lost(con, ["_fs_zeros"], sorted(change.place, key=change.place.__getitem__))


def _bad_rows(change: LeanChange, before: FilePullResult | None, added: FilePullResult) -> tuple[list, int] | None:
    """The bad-row report of the fresh read: the kept files' bad rows and the new ones, in file and row order.
    A report cut at ``MAX_BAD_ROWS`` can only be extended at its end (new files after the others, none dropped)."""
    old = before.bad_rows if before else []
    old_count = before.bad_row_count if before else 0
    complete = old_count == len(old) and added.bad_row_count == len(added.bad_rows)
    if complete:
        rows = sorted([b for b in old if b.source not in change.dropped_paths] + added.bad_rows,
                      key=lambda b: (change.place[b.source], b.row))
        return rows[:MAX_BAD_ROWS], len(rows)
    if change.dropped:
        return None
    kept_places = [change.place[b.source] for b in old]
    new_places = [change.place[lf.path] for lf in change.new]
    if kept_places and new_places and min(new_places) < max(kept_places):
        return None
    return (old + added.bad_rows)[:MAX_BAD_ROWS], old_count + added.bad_row_count


def commit_lean(con: duckdb.DuckDBPyConnection, change: LeanChange) -> None:
    """Delete the dropped files' orders and insert the staged ones (inside the caller's transaction). Only new
    rows: the store's per-customer totals, when current, add theirs (:mod:`.rfm_totals`)."""
    kept = kept_at(con) if change.staged and not change.dropped else None
    moved = None
    if change.dropped:  # a swap (a changed or removed file): whom it moved, for a sync that read before (.resynced)
        moved = swapped_files(con, change.dropped, change.staged)
        note_dropped_appends(con, f"file_id IN ({_ids(change.dropped)})")  # an appended file's customers stay noted
        con.execute(f"DELETE FROM orders WHERE file_id IN ({_ids(change.dropped)})")
    if change.staged:
        con.execute("INSERT INTO orders BY NAME SELECT * FROM staged_orders")
    if change.dropped or change.staged:
        bump_generation(con)
    if change.staged and not change.dropped:  # an append: a kept table catches up with these files' customers
        note_appended(con, generation(con), change.new_ids)
    if moved is not None:
        note_moved(con, moved)
    if kept is not None:
        add_totals(con, kept, change.new_ids)


def drop_lean_indexes(con: duckdb.DuckDBPyConnection, change: LeanChange) -> None:
    """The lookup indexes go before a bulk change (:func:`sync.store.merge.merge_staged` does the same)."""
    if sum(rows for rows, _, _ in change.counts) > BULK_ROWS or change.dropped:
        drop_lookup_indexes(con)


def drop_staged_view(con: duckdb.DuckDBPyConnection) -> None:
    """``staged_orders`` is a view over the rows read (``in_place``): drop it with them."""
    kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'staged_orders'"
                       " AND table_catalog = 'temp'").fetchall()
    if kind:
        con.execute(f"DROP {'VIEW' if kind[0][0] == 'VIEW' else 'TABLE'} temp.staged_orders")


def _ids(ids: list[int]) -> str:
    return ", ".join(str(int(i)) for i in ids)


def _kept(change: LeanChange) -> str:
    """A filter on ``orders o``: the rows of the files that stay."""
    return f" WHERE o.file_id NOT IN ({_ids(change.dropped)})" if change.dropped else ""
