"""The nightly case of :mod:`sync.store.files`: new export files added after the others, nothing changed.

Staging every file's rows again gives the fresh read's result in every case. When the new files can only
*add* orders, staging them alone and appending gives the same result, in time proportional to the new files:

* nothing changed or gone, and every new file sorts after every file read before (a row's place decides
  which version of a repeated order id or contact field wins);
* orders files only, and no file maps a contact field, attribute or receipt-line field (no contact rows to
  merge, no receipts to group across files);
* every row of every file has a customer id (no identity resolution, which looks at every row), every new row
  an order id (a synthetic id depends on the file's place), and no new file is empty;
* no webhook records in the store; no order id of the new files repeats among them or in the store.

Anything else (or any doubt) returns ``None`` and the caller stages every file.
"""

from __future__ import annotations

from dataclasses import replace

import duckdb

from connectors.file_staging import CONTACT_FIELDS, LINE_FIELDS, MAX_BAD_ROWS, FilePullResult, LoadedFile
from connectors.files import FileSource

from .webhooks import WEBHOOK_TABLE, create_webhook_table

_FIELDS = set(CONTACT_FIELDS) | set(LINE_FIELDS)


def file_counts(con: duckdb.DuckDBPyConnection, lf: LoadedFile) -> tuple[int, int, int]:
    """(rows, rows without a customer id, rows without an order id) of a file read."""
    return con.execute(f"SELECT count(*), count(*) FILTER (WHERE cust IS NULL),"
                       f" count(*) FILTER (WHERE order_id IS NULL) FROM {lf.table}").fetchall()[0]


def can_append(source: FileSource, kept: list[tuple[LoadedFile, int | None]], new: list[LoadedFile],
               counts: dict[str, tuple[int, int, int]], all_kept: bool, last: bool) -> bool:
    """The conditions above that need no query: ``kept`` are the unchanged files (with their rows without a
    customer id), ``all_kept`` that no file changed or went, ``last`` that the new files sort after the kept."""
    if not (all_kept and last and kept and new) or source.cfg.contacts:
        return False
    cols = [set(lf.cols) for lf, _ in kept] + [set(lf.cols) for lf in new]
    if any(c & _FIELDS or any(f.startswith("attr:") for f in c) for c in cols):
        return False
    if any(no_cust is None or no_cust for _, no_cust in kept):
        return False
    return all(counts[lf.path][0] and not counts[lf.path][1] and not counts[lf.path][2] for lf in new)


def stage_appended(con: duckdb.DuckDBPyConnection, source: FileSource, new: list[LoadedFile],
                   before: FilePullResult) -> FilePullResult | None:
    """Stage the new files alone; the whole pull's result (the last one's plus theirs), or ``None`` when an
    order id repeats (among them or in the store) or the store holds webhook records."""
    create_webhook_table(con)
    if con.execute(f"SELECT count(*) FROM {WEBHOOK_TABLE}").fetchall()[0][0]:
        return None
    added = source.stage(con, new, [])
    if added.duplicate_orders or added.contacts or con.execute(
            "SELECT count(*) FROM staged_orders s SEMI JOIN orders o USING (order_id)").fetchall()[0][0]:
        return None
    return replace(before, orders=before.orders + added.orders,
                   bad_rows=(before.bad_rows + added.bad_rows)[:MAX_BAD_ROWS],
                   bad_row_count=before.bad_row_count + added.bad_row_count,
                   fast_path=before.fast_path and added.fast_path, gone_files=[])


def append_staged(con: duckdb.DuckDBPyConnection) -> None:
    """Add the staged orders to the store (inside the caller's transaction)."""
    con.execute("INSERT INTO orders SELECT * FROM staged_orders")
