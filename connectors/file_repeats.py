"""A flat export's repeated order ids (one row per order): which repeat is the same order and which is another.

An order id written again is one of four things, told apart by the rows themselves, in this order:

* **the same order again** at the same time (``ordered_at``), whatever its customer or status (a status update, a
  refund reversed, a customer merge in the CRM, export periods that overlap): the last row wins; but when that last
  row is a return (below), the last file's refunded rows of its customer at that time are the returns (two items
  returned at once, booked as two rows: each counts), and an earlier file's rows there are superseded by them (the
  same returns in export periods that overlap, or a return's amount corrected in a re-export);
* **another customer's order** (receipt numbers that restart in the next monthly file, two tills numbering alike):
  every customer's rows under that id are an order of their own; the first customer's (in file, then row order)
  keeps the id, the next ones are stored as ``ID~2``, ``ID~3`` …;
* **a sale's return** (a row of status ``refunded`` under the id of the same customer's ``completed`` sale, later
  than the sale: a return booked under its sale's receipt number): kept beside the sale as an order of its own,
  ``ID~return`` (a second return ``ID~return2`` …), so the sale still counts and the customer's net
  revenue is the sale minus the returns;
* **the same customer's order again** at another time (a sale's row again, a return's again, a cancellation): the
  last row wins.

Each kind is counted and told (a warning line of the staging's result, which every run reading the store's copy of
the file says again) with the first few order ids and their files and rows (:func:`stage_repeats`). An id
made (``ID~2``, ``ID~return``) that the export also holds as an order id of its own is an error naming both.
Only the repeated ids go through the windows: the other rows are staged as they are.
"""

from __future__ import annotations

import duckdb

from .counts import agrees, counted
from .errors import BadFileError

#: the order ids (with their files and rows) a warning names; the rest are counted
NAMED = 3

_IDS = "CREATE OR REPLACE TEMP TABLE _fs_rid AS SELECT oid FROM {valid} GROUP BY oid HAVING count(*) > 1"

_REPEATS = """CREATE OR REPLACE TEMP TABLE _fs_rep AS
    WITH v AS (SELECT oid, key, ordered_at, amount, currency, status, discount, _ord, _file, _row,
                      row_number() OVER (PARTITION BY oid, ordered_at ORDER BY _ord DESC) AS _same0,
                      first_value(status) OVER (PARTITION BY oid, ordered_at ORDER BY _ord DESC) AS _lst,
                      first_value(key) OVER (PARTITION BY oid, ordered_at ORDER BY _ord DESC) AS _lkey,
                      first_value(_file) OVER (PARTITION BY oid, ordered_at ORDER BY _ord DESC) AS _lfile
               FROM {valid} SEMI JOIN _fs_rid USING (oid)),
    s AS (SELECT *, coalesce(status = 'refunded' AND _lst = 'refunded' AND key = _lkey AND ordered_at >
                             min(ordered_at) FILTER (WHERE status = 'completed' AND _same0 = 1)
                             OVER (PARTITION BY oid, key), false) AS _rc FROM v),
    r AS (SELECT * EXCLUDE (_same0, _lst, _lkey, _lfile, _rc),
                 CASE WHEN NOT bool_or(_rc) OVER (PARTITION BY oid, ordered_at) THEN _same0
                      WHEN _rc AND _file = _lfile THEN 1 ELSE 2  -- the last file's returns; earlier ones superseded
                 END AS _same FROM s),
    o AS (SELECT *, min(_ord) OVER (PARTITION BY oid, key) AS _first,
                 min(ordered_at) FILTER (WHERE status = 'completed') OVER (PARTITION BY oid, key) AS _sold
          FROM r WHERE _same = 1),
    k AS (SELECT * EXCLUDE (_sold), dense_rank() OVER (PARTITION BY oid ORDER BY _first, key) AS _nth,
                 coalesce(status = 'refunded' AND ordered_at > _sold, false) AS _ret FROM o),
    n AS (SELECT *, oid || CASE WHEN _nth > 1 THEN '~' || _nth ELSE '' END || CASE WHEN NOT _ret THEN '' ELSE
                 '~return' || CASE WHEN row_number() OVER (PARTITION BY oid, key, _ret ORDER BY ordered_at, _ord) > 1
                 THEN (row_number() OVER (PARTITION BY oid, key, _ret ORDER BY ordered_at, _ord))::VARCHAR ELSE ''
                 END END AS _id
          FROM k)
    SELECT *, row_number() OVER (PARTITION BY _id ORDER BY _ord DESC) AS _last FROM n
    UNION ALL BY NAME SELECT * FROM r WHERE _same > 1"""


def stage_repeats(con: duckdb.DuckDBPyConnection, valid: str, fid: str, paths: list[str],
                  said: list[str]) -> tuple[int, int]:
    """Stage the valid rows of ``valid`` (``oid``, ``key``, ``status``, ``_ord``, ``_file``, ``_row`` …) into
    ``staged_orders``, one order per id as the module says; ``fid``: the extra select column of the file id (or
    ``""``). Returns (orders staged, rows repeating an earlier row's order id); each kind of repeat's warning line is
    appended to ``said`` (the staging's warnings: ``PullResult.warnings``)."""
    con.execute(_IDS.format(valid=valid))
    con.execute(_REPEATS.format(valid=valid))
    _check_made_ids(con, valid, paths)
    columns = f"key, ordered_at, amount, currency, status, discount{fid}"
    con.execute(f"INSERT INTO staged_orders SELECT oid, {columns} FROM {valid} ANTI JOIN _fs_rid USING (oid)")
    con.execute(f"INSERT INTO staged_orders SELECT _id, {columns} FROM _fs_rep WHERE _last = 1")
    staged = con.execute("SELECT count(*) FROM staged_orders").fetchone()[0]
    repeats = con.execute("SELECT count(*) - count(DISTINCT oid) FROM _fs_rep").fetchone()[0]
    if repeats:
        said.extend(_report(con, paths))
    return staged, repeats


#: receipt lines grouped by receipt number and customer (``staged_orders._first``: each one's first line): the
#: numbers more than one customer's lines carry, the next customers' ids made (``ID~2`` …)
_SPLIT = """CREATE OR REPLACE TEMP TABLE _fs_rsplit AS SELECT * FROM (
    SELECT order_id AS oid, customer_id AS key, dense_rank() OVER (PARTITION BY order_id ORDER BY _first, customer_id)
           AS _nth FROM staged_orders
    WHERE order_id IN (SELECT order_id FROM staged_orders GROUP BY order_id HAVING count(*) > 1))
    WHERE _nth > 1"""


def split_receipts(con: duckdb.DuckDBPyConnection, valid: str, paths: list[str], said: list[str]) -> bool:
    """Receipt lines staged one order per receipt number and customer (``staged_orders`` with ``_first``, dropped
    here): a number that more than one customer's lines carry (a second till's numbering, the next file's) is each
    customer's receipt, as a flat export's order id is: the first customer's (in file, then row order) keeps the
    number, the next ones are ``ID~2``, ``ID~3`` …; a warning line naming the first numbers with their files and
    rows appended to ``said``.
    Returns whether any was split (``_fs_rsplit``: ``oid``, ``key``, ``_id``; the line items take ``_id``)."""
    con.execute(_SPLIT)
    split = bool(con.execute("SELECT 1 FROM _fs_rsplit LIMIT 1").fetchall())
    if split:
        con.execute("ALTER TABLE _fs_rsplit ADD COLUMN _id VARCHAR")
        con.execute("UPDATE _fs_rsplit SET _id = oid || '~' || _nth")
        made = con.execute("SELECT r._id, r.oid, r.key FROM _fs_rsplit r JOIN staged_orders s ON s.order_id = r._id "
                           "ORDER BY r._id LIMIT 1").fetchall()
        if made:
            made_id, oid, key = made[0]
            (file, row), (vfile, vrow) = (con.execute(f"SELECT _file, _row FROM {valid} WHERE {where} ORDER BY _ord "
                                                      "LIMIT 1", args).fetchall()[0] for where, args in (
                ("oid = ? AND key = ?", [oid, key]), ("oid = ?", [made_id])))
            raise BadFileError(f"{paths[file]} row {row}: its receipt number is another customer's too and would be "
                               f"stored as {made_id!r}, an order id of its own in {paths[vfile]} row {vrow}: rename "
                               "one of them")
        con.execute("UPDATE staged_orders AS s SET order_id = r._id FROM _fs_rsplit AS r "
                    "WHERE s.order_id = r.oid AND s.customer_id = r.key")
        n, named = named_ids(con, paths, "oid IN (SELECT oid FROM _fs_rsplit)", valid)
        said.append(f"{counted(n, 'receipt number is', 'receipt numbers are')} written for more than one customer's "
                    "receipt lines: each customer's lines are a receipt of their own, the next customers' stored as "
                    f"ID~2, ID~3 … (receipt numbers restarting in another file, or another till's?): {named}")
    con.execute("ALTER TABLE staged_orders DROP COLUMN _first")
    return split


def _check_made_ids(con: duckdb.DuckDBPyConnection, valid: str, paths: list[str]) -> None:
    """An id made for a repeat (``5~2``) that the export holds as an order id of its own: an error naming both."""
    made = con.execute(f"""SELECT m._id, m._file, m._row, v._file, v._row FROM _fs_rep AS m
                           JOIN {valid} AS v ON v.oid = m._id WHERE m._id <> m.oid ORDER BY m._ord, v._ord
                           LIMIT 1""").fetchall()
    if made:
        made_id, file, row, vfile, vrow = made[0]
        raise BadFileError(f"{paths[file]} row {row}: its order id repeats an earlier one and would be stored as "
                           f"{made_id!r}, an order id of its own in {paths[vfile]} row {vrow}: rename one of them")


def named_ids(con: duckdb.DuckDBPyConnection, paths: list[str], rows: str, table: str = "_fs_rep"
              ) -> tuple[int, str]:
    """How many order ids ``rows`` (a condition on ``table``'s rows) picks, and the first :data:`NAMED` of them with
    each one's rows: ``'5' (orders-01.csv rows 2, 4)``."""
    found = con.execute(f"""SELECT oid, list(_file ORDER BY _ord), list(_row ORDER BY _ord), count(*) OVER ()
                            FROM {table} WHERE oid IN (SELECT oid FROM {table} WHERE {rows})
                            GROUP BY oid ORDER BY min(_ord) LIMIT {NAMED}""").fetchall()
    named = []
    for oid, files, lines, _ in found:
        places = []
        for f in dict.fromkeys(files):
            at = [str(r) for g, r in zip(files, lines) if g == f]
            places.append(f"{paths[f]} {'row' if len(at) == 1 else 'rows'} {', '.join(at)}")
        named.append(f"{oid!r} ({'; '.join(places)})")
    total = found[0][3] if found else 0
    return total, ", ".join(named) + (", …" if total > len(named) else "")


def _report(con: duckdb.DuckDBPyConnection, paths: list[str]) -> list[str]:
    """One warning line per kind of repeat found (the module's), naming the first order ids, files and rows."""
    lines = []
    n, named = named_ids(con, paths, "_nth > 1")
    if n:
        lines.append(f"{counted(n, 'order id')} {agrees(n, 'is', 'are')} written for more than one customer: each "
                     "customer's rows are an order of their own, the next customers' stored as ID~2, ID~3 … (receipt "
                     f"numbers restarting in another file?): {named}")
    n, named = named_ids(con, paths, "_ret")
    if n:
        lines.append(f"{counted(n, 'order id holds', 'order ids hold')} a sale and its return (a later refunded row "
                     "of the same customer): the return kept beside the sale as ID~return (the sale counts, the "
                     f"customer's net revenue is the sale minus the return): {named}")
    n, named = named_ids(con, paths, "_same > 1 OR _last > 1")
    if n:
        lines.append(f"{counted(n, 'order is written', 'orders are written')} again (at the same time, or for the "
                     "same customer: a status update, a customer merge, or export periods that overlap): the last "
                     f"row of each kept: {named}")
    return lines


__all__ = ["stage_repeats", "split_receipts", "named_ids", "NAMED"]
