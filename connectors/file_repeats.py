"""A flat export's repeated order ids (one row per order): which repeat is the same order and which is another.

An order id written again is one of three things, told apart by the rows themselves:

* **another customer's order** (receipt numbers that restart in the next monthly file, two tills numbering alike):
  every customer's rows under that id are an order of their own; the first customer's (in file, then row order)
  keeps the id, the next ones are stored as ``ID~2``, ``ID~3`` …;
* **a sale's return** (a row of status ``refunded`` under the id of a sale of the same customer: a return booked
  under its sale's receipt number): kept beside the sale as an order of its own, ``ID~return``, so the sale still
  counts and the customer's net revenue is the sale minus the return;
* **the same order again** (the same customer, a sale's row again or a return's again: a status update, an
  export period that overlaps the previous one): the last row wins.

Each kind is counted and logged with the first few order ids and their files and rows (:func:`stage_repeats`).
"""

from __future__ import annotations

import logging
import duckdb

from .counts import agrees, counted

log = logging.getLogger(__name__)

#: the order ids (with their files and rows) a warning names; the rest are counted
NAMED = 3

_REPEATS = """CREATE OR REPLACE TEMP TABLE _fs_rep AS
    SELECT *, row_number() OVER (PARTITION BY _id ORDER BY _ord DESC) AS _last
    FROM (SELECT * EXCLUDE (_first, _sale), oid || CASE WHEN _nth > 1 THEN '~' || _nth ELSE '' END
                 || CASE WHEN status = 'refunded' AND _sale THEN '~return' ELSE '' END AS _id
          FROM (SELECT *, dense_rank() OVER (PARTITION BY oid ORDER BY _first, key) AS _nth
                FROM (SELECT *, min(_ord) OVER (PARTITION BY oid, key) AS _first,
                             bool_or(status <> 'refunded') OVER (PARTITION BY oid, key) AS _sale,
                             count(*) OVER (PARTITION BY oid) AS _rows
                      FROM (SELECT oid, key, ordered_at, amount, currency, status, discount, _ord, _file, _row
                            FROM {valid}))))"""


def stage_repeats(con: duckdb.DuckDBPyConnection, valid: str, fid: str, paths: list[str]) -> tuple[int, int]:
    """Stage the valid rows of ``valid`` (``oid``, ``key``, ``status``, ``_ord``, ``_file``, ``_row`` …) into
    ``staged_orders``, one order per id as the module says; ``fid``: the extra select column of the file id (or
    ``""``). Returns (orders staged, rows repeating an earlier row's order id), and logs each kind of repeat."""
    con.execute(_REPEATS.format(valid=valid))
    con.execute(f"""INSERT INTO staged_orders SELECT _id, key, ordered_at, amount, currency, status, discount{fid}
                    FROM _fs_rep WHERE _last = 1""")
    staged, repeats = con.execute("SELECT count(*) FILTER (WHERE _last = 1), count(*) FILTER (WHERE _rows > 1)"
                                  " - count(DISTINCT oid) FILTER (WHERE _rows > 1) FROM _fs_rep").fetchone()
    if repeats:
        _report(con, paths)
    return staged, repeats


def _where(con: duckdb.DuckDBPyConnection, paths: list[str], rows: str) -> tuple[int, str]:
    """How many order ids ``rows`` (a condition on ``_fs_rep``) picks, and the first :data:`NAMED` of them with
    each one's rows: ``'5' (orders-01.csv rows 2, 4)``."""
    found = con.execute(f"""SELECT oid, list(_file ORDER BY _ord), list(_row ORDER BY _ord), count(*) OVER ()
                            FROM _fs_rep WHERE oid IN (SELECT oid FROM _fs_rep WHERE {rows})
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


def _report(con: duckdb.DuckDBPyConnection, paths: list[str]) -> None:
    """One warning per kind of repeat found (the module's three), naming the first order ids, files and rows."""
    n, named = _where(con, paths, "_nth > 1")
    if n:
        log.warning("%s %s written for more than one customer: each customer's rows are an order of their own, the "
                    "next customers' stored as ID~2, ID~3 … (receipt numbers restarting in another file?): %s",
                    counted(n, "order id"), agrees(n, "is", "are"), named)
    n, named = _where(con, paths, "_id LIKE '%~return'")
    if n:
        log.warning("%s a sale and its return (a refunded row of the same customer): the return kept beside the "
                    "sale as ID~return (the sale counts, the customer's net revenue is the sale minus the return): %s",
                    counted(n, "order id holds", "order ids hold"), named)
    n, named = _where(con, paths, "_last > 1")
    if n:
        log.warning("%s again for the same customer (a status update, or export periods that overlap): the last "
                    "row of each kept: %s", counted(n, "order is written", "orders are written"), named)


__all__ = ["stage_repeats", "NAMED"]
