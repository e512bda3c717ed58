"""An order's further rows that carry only its line items (Shopify's orders export), in DuckDB SQL.

Some exports write an order as one row per line item and fill the order's own columns (its total, status,
consent, cancellation) on its first row only: the rows below it repeat the order id (and maybe the e-mail and
date) and give one more item each. Read as receipt lines, those rows would be bad rows (no amount) or orders of
their own. With a preset whose :class:`~connectors.presets.Reading` says ``line_rows``, :func:`follow_heads` reads
them as what they are:

* a **line row** is a row with an order id that is not the first row of that order id in its file and leaves
  ``amount`` and ``status`` (and ``cancelled_at``, when mapped) empty; such a row that is the first of its order id
  in its file is one too when another file holds a full head of that order id (an export split mid-order: it
  belongs to the last such head, never replaces it); a line row whose own e-mail or date differs from its head's
  is a bad row (:data:`CLASH`);
* every other row with an order id is a **head**; a line row belongs to the nearest head above it in its file,
  and takes its head's customer (id, e-mail, phone), date, status, cancellation and currency, and adds
  0 to the order's amount (NULL when the head has no amount: then it is a bad row with its head, never an order
  of line rows alone); its own line columns (item, sku, quantity, price) stay its own;
* so a head that is a bad row (no total, an unreadable date, no customer) makes its line rows bad rows too,
  and :func:`line_reasons` names the head in their reason; a line row's own bad quantity is its own;
* an order id with heads in several places (two overlapping exports, or one export pasted twice) is the last
  one's (files in their reading order, then rows): the rows before it are ``_gone``, as the last row of a
  repeated order id wins in a flat export.

``_seq`` orders the rows by order date (then file and row) so that a contact's latest value is that of the
customer's latest order whatever order the export lists them in (Shopify's is newest first). Consent takes the
safe side where the dates cannot tell: of rows on the same date a "no" comes last (it wins over a "yes"), and a
row without a readable date that says "no" comes after every other row (a withdrawal is never overridden by a
"yes" that only looks later).
"""

from __future__ import annotations

import duckdb

from . import normalize as nz
from .records import BadRow

#: the columns a line row takes from its head (:data:`CANCELLED` too, when mapped)
HEAD_COLUMNS = ("cust", "email_raw", "phone_raw", "ordered_at", "ordered_at_raw", "status_raw", "currency")
#: the cancellation's columns: its date, and its text when not a date (a bad row)
CANCELLED = ("cancelled_at", "cancelled_raw")


def row_key() -> str:
    """SQL: a read row's file and row (``_file``, ``_row``) as one BIGINT, in file, then row order; the one
    spelling of that key (follow_heads' positions, :mod:`connectors.file_staging`'s row order)."""
    return "(_file::BIGINT * 4294967296 + _row)"


def follow_heads(con: duckdb.DuckDBPyConnection, rows: str, out: str, cancelled: bool, paths: list[str]) -> int:
    """``out`` (a view over the temp table ``<out>_t``): the rows of the view ``rows`` with ``_line`` (a line row),
    ``_head`` and ``_head_file`` (its head's row and file), ``_seq`` and ``_gone``, each line row given its head's
    order columns (see above); ``paths``: the files' paths (by ``_file``), for the head's place in :data:`CLASH`'s
    values. Returns how many heads are ``_gone``: an order id's rows before its last head (in file, then row order;
    two exports holding the same order) are replaced by the last one's, as a repeated order id is."""
    own = CANCELLED if cancelled else ()
    taken = (*HEAD_COLUMNS, "amount_raw", *own)
    empty = " AND ".join(f"{c} IS NULL" for c in ("amount", "amount_raw", "status_raw", *own))
    # Set-based, by position (row_key): one window over each file's rows of an order id gives a bare row below the
    # order's first row in its file (a line), the last full head at or above it there (_full) and the file's first
    # row of the order id (_first); one aggregate per order id over all files its last full head (_hs) and its last
    # head (_lw). A bare row that is the first of its order id in its file is a line too when a file holds a full
    # head (an export split mid-order: it never replaces it). A line's head (_hp): the full head above it in its
    # file, else the order's last full head, else the bare first row; its columns come in one join over the heads.
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {out}_x AS
        WITH r AS (SELECT *, _bare AND row_number() OVER w > 1 AS _line,
                          max(CASE WHEN NOT _bare THEN _pos END) OVER w AS _full, min(_pos) OVER w AS _first
                   FROM (SELECT *, COALESCE(order_id IS NOT NULL AND {empty}, false) AS _bare, {row_key()} AS _pos
                         FROM {rows})
                   WINDOW w AS (PARTITION BY _file, order_id ORDER BY _row)),
             o AS (SELECT order_id, max(_pos) FILTER (WHERE NOT _bare) AS _hs, max(_pos) FILTER (WHERE NOT _line) AS _lw
                   FROM r WHERE order_id IS NOT NULL GROUP BY order_id)
        SELECT r.* EXCLUDE (_full, _first) REPLACE (_bare AND (_line OR o._hs IS NOT NULL) AS _line),
               CASE WHEN _bare AND (_line OR o._hs IS NOT NULL) THEN COALESCE(_full, o._hs, _first) END AS _hp,
               COALESCE(o._hs, o._lw) AS _last
        FROM r LEFT JOIN o ON r.order_id = o.order_id""")
    fill = ", ".join(f"CASE WHEN _line THEN h.{c} ELSE r.{c} END AS {c}" for c in taken)
    day = "(CASE WHEN _line THEN h.ordered_at ELSE r.ordered_at END)"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {out}_t AS
        SELECT r.* EXCLUDE (_hp, _last) REPLACE ({fill},
               CASE WHEN _line THEN CASE WHEN h.amount IS NOT NULL THEN 0 END ELSE r.amount END AS amount),
               h._row AS _head, h._file AS _head_file, COALESCE(COALESCE(_hp, r._pos) < _last, false) AS _gone,
               {_clash_sql(paths)} AS _clash,
               row_number() OVER (ORDER BY {day} IS NULL AND consent = 'no', {day} NULLS FIRST, consent = 'no',
                                  r._file, r._row) AS _seq
        FROM {out}_x r LEFT JOIN (SELECT _pos, _file, _row, amount, {', '.join(taken)} FROM {out}_x
                                  WHERE _hp IS NULL AND order_id IS NOT NULL) h ON h._pos = r._hp""")
    con.execute(f"DROP TABLE {out}_x")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {out} AS SELECT * FROM {out}_t")
    return con.execute(f"SELECT count(*) FROM {out}_t WHERE _gone AND NOT _line").fetchall()[0][0]


#: the reason of a line row whose own e-mail or date is not its order's (:func:`_clash_sql`)
CLASH = ("a further row of its order (the same order id, no total nor status) whose own e-mail or date differs"
         " from the order's first row: a row of another order given the same id?")


def _head_at(row: int, head_file: int, file: int, paths: list[str]) -> str:
    """Where a line row's head is, for a message: ``row 13``, or ``row 13 of <its file>`` when that is not the line
    row's own file (an export split mid-order)."""
    return f"row {row}" if head_file == file else f"row {row} of {paths[head_file]}"


def _clash_sql(paths: list[str]) -> str:
    """A line row's (``r``) own non-empty e-mail or date that differs from its head's (``h``), as text naming where
    the head is (:func:`_head_at`), else NULL."""
    files = "[" + ", ".join(nz.lit(p) for p in paths) + "]"
    at = (f"' (row ' || h._row || CASE WHEN h._file = r._file THEN '' ELSE ' of ' || ({files})[h._file + 1] END"
          " || ')'")
    return ("CASE WHEN NOT _line OR h._pos IS NULL THEN NULL"
            " WHEN r.email_raw IS NOT NULL AND lower(r.email_raw) IS DISTINCT FROM lower(h.email_raw) THEN"
            " r.order_id || ': e-mail ' || r.email_raw || CASE WHEN h.email_raw IS NULL THEN ', where the order''s"
            " first row has none' ELSE ', not ' || h.email_raw END || " + at +
            " WHEN (r.ordered_at IS NOT NULL OR r.ordered_at_raw IS NOT NULL) AND (r.ordered_at IS DISTINCT FROM"
            " h.ordered_at OR r.ordered_at_raw IS DISTINCT FROM h.ordered_at_raw) THEN r.order_id || ': date '"
            " || coalesce(r.ordered_at_raw, r.ordered_at::VARCHAR) || ', not ' || coalesce(h.ordered_at_raw,"
            " h.ordered_at::VARCHAR, 'none') || " + at + " END")


def line_reasons(con: duckdb.DuckDBPyConnection, rows: str, bad: list[BadRow], paths: list[str]) -> list[BadRow]:
    """``bad`` (the listed bad rows) with each line row's order-level reason naming its order and head: a line row
    is bad because its head is (its own ``quantity``, and an e-mail or date not its order's, aside)."""
    at = {(paths.index(b.source), b.row): i for i, b in enumerate(bad) if b.field != "quantity" and b.reason != CLASH}
    if not at:
        return bad
    listed = ", ".join(f"({f}, {r})" for f, r in at)
    found = con.execute(f"SELECT _file, _row, order_id, _head, _head_file FROM {rows} JOIN (VALUES {listed}) v(f, r)"
                        f" ON _file = v.f AND _row = v.r WHERE _line").fetchall()
    out = list(bad)
    for f, r, oid, head, head_file in found:
        b = out[at[(f, r)]]
        out[at[(f, r)]] = BadRow(source=b.source, row=r, field=b.field, value=b.value,
                                 reason=f"a line item of order {oid!r}, whose first row"
                                        f" ({_head_at(head, head_file, f, paths)}) is a bad row: {b.reason}")
    return out
