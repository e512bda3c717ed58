"""Receipt lines (a file mapping ``sku``, ``product``, ``quantity`` or ``price``) staged as orders and line items.

The lines of one receipt number and customer are one order: its amount the lines' sum (a receipt of sale and return
lines, an exchange at the till, is their net), its date the earliest line's, its status and currency the last
line's; a number more than one customer's lines carry is each customer's receipt (:func:`split_receipts`). A
receipt's total repeated on each of its lines is counted once (:data:`_TOTALS`), a receipt's lines a later file
writes again are read once (:data:`_AGAIN`), and a line without a price gets its amount's (:data:`_PRICE`). A
receipt whose lines each fit but sum past the amount column is bad rows (its lines), checked only when a sum did
not fit.
"""

from __future__ import annotations

import duckdb

from .counts import counted
from .file_repeats import named_ids, split_receipts
from .records import BadRow


#: a receipt's lines at one time and status (``{rows}``) as one row each, ``_tot``: their ``amount`` is the same on
#: every line while their quantity × price differ and it is more than each line's quantity × price (an export of one
#: row per item that repeats the receipt's total on each row: a total of two lines or more is larger than any one of
#: them; line amounts that happen to be equal, a promotion's "all at 99" or "3 for 100", weighed goods, are not):
#: that amount once (and the discount once, when it is the same on every line too), else their sums
_TOTALS = """CREATE OR REPLACE TEMP VIEW _fs_groups AS
    SELECT * EXCLUDE (_sum, _dsum, _dsame) REPLACE (CASE WHEN _tot THEN amount ELSE _sum END AS amount,
                                                    CASE WHEN _tot AND _dsame THEN discount ELSE _dsum END AS discount)
    FROM (SELECT oid, key, status, ordered_at, min(amount) AS amount, sum(amount) AS _sum, min(discount) AS discount,
                 sum(discount) AS _dsum, arg_max(currency, _ord) AS currency, arg_max(_file, _ord) AS _file,
                 min(_file) AS _lo, max(_ord) AS _ord, min(_ord) AS _first,
                 count(*) > 1 AND min(amount) = max(amount) AND count(price) = count(*)
                 AND min(abs(price::DOUBLE * coalesce(quantity, 1))) < max(abs(price::DOUBLE * coalesce(quantity, 1)))
                 AND abs(min(amount)::DOUBLE) > max(abs(price::DOUBLE * coalesce(quantity, 1))) + 0.01 AS _tot,
                 coalesce(min(discount) = max(discount) AND count(discount) = count(*), count(discount) = 0) AS _dsame
          FROM {rows} GROUP BY oid, key, status, ordered_at)"""


#: a line's unit price: its own, else (no price column, or its cell blank) its amount ÷ |quantity| (a receipt's total
#: repeated on each line has its prices: :data:`_TOTALS`), so that the favourites weigh the line by what it cost
_PRICE = ("coalesce(price, CASE WHEN coalesce(quantity, 1) <> 0 THEN "
          "TRY_CAST(round(amount / abs(coalesce(quantity, 1)), 2) AS DECIMAL(18,2)) END)")


#: a receipt's lines at one time (number, customer, ``ordered_at``) in an earlier file that the last file holding that
#: receipt and time writes again, the same lines (each line's fields, as many times, and no other line: export
#: periods that overlap hold the whole receipt in both): superseded by the last file's. Lines the two files share
#: out (a receipt cut between them by rows, also between two equal lines: milk scanned twice) are kept.
#: Run on the receipts the receipts' own grouping found in several files (``staged_orders._multi``) only, or (their
#: insert failed: :data:`_IN_FILES`) on those the lines say are.
_AGAIN = """CREATE OR REPLACE TEMP TABLE _fs_again AS
    WITH m AS (FROM {rows} SEMI JOIN ({multi}) USING (oid, key)),
    r AS (SELECT oid, key, ordered_at, max(_file) AS _last FROM m GROUP BY oid, key, ordered_at
          HAVING min(_file) < max(_file)),
    s AS (SELECT oid, key, ordered_at, _file, hash(sku, product, category, brand, quantity, price, amount, status,
                 discount, currency) AS _sig, count(*) AS _n
          FROM m SEMI JOIN r USING (oid, key, ordered_at) GROUP BY ALL),
    t AS (SELECT oid, key, ordered_at, _file, sum(_n) AS _all FROM s GROUP BY ALL)
    SELECT e.oid, e.key, e.ordered_at, e._file FROM s e JOIN r USING (oid, key, ordered_at)
    JOIN t ON t.oid = e.oid AND t.key = e.key AND t.ordered_at = e.ordered_at AND t._file = r._last
    LEFT JOIN s l ON l.oid = e.oid AND l.key = e.key AND l.ordered_at = e.ordered_at AND l._file = r._last
                     AND l._sig = e._sig
    WHERE e._file < r._last GROUP BY ALL HAVING bool_and(coalesce(l._n, 0) = e._n) AND sum(e._n) = any_value(t._all)"""

#: the receipts staged from several files (:data:`_AGAIN`'s candidates)
_MULTI = "SELECT order_id AS oid, customer_id AS key FROM staged_orders WHERE _multi"
#: the receipts whose lines ``{rows}`` are in several files, when none was staged (a sum did not fit)
_IN_FILES = "SELECT oid, key FROM {rows} GROUP BY oid, key HAVING min(_file) < max(_file)"


def stage_receipts(con: duckdb.DuckDBPyConnection, fid: str, paths: list[str], items: bool, limit: int,
                   said: list[str], totals: bool = False, files: int = 1) -> tuple[list[BadRow], int]:
    """Stage the valid rows of ``_fs_valid`` (receipt lines) into ``staged_orders`` and, when item columns are
    mapped (``items``), ``staged_line_items``; ``fid``: the extra select column of the file id (or ``""``);
    ``totals``: both ``amount`` and ``price`` are mapped, so a receipt's total repeated on each of its lines can be
    told from line amounts (:data:`_TOTALS`; counted once, warned of); ``files``: how many orders files were read
    (with more than one, a receipt's lines written again by a later file are read once: :data:`_AGAIN`). Returns the
    lines of receipts too large to store (bad rows, at most ``limit`` listed) and their count; the warning lines
    (totals counted once, lines written again, a number of several customers' lines) are appended to ``said``."""
    valid, over, over_count = "_fs_valid", [], 0  # the lines (``_fs_once``, ``_fs_fit``: fewer)
    sums = "_fs_groups" if totals else valid  # what the receipts sum: the lines, or their groups (_TOTALS)
    if totals:
        con.execute(_TOTALS.format(rows=valid))
    multi = files > 1  # each receipt: are its lines in several files (min(_file) < max(_file), nearly free here)

    def lines(rows: str) -> None:  # the receipts are staged from the lines ``rows`` from now on
        nonlocal valid, sums
        valid = rows
        if totals:
            con.execute(_TOTALS.format(rows=rows))
        else:
            sums = rows

    def receipts(only: str = "") -> None:
        # a receipt of sale and return lines (an exchange at the till) is their net: completed, or refunded
        # when the returns are more; otherwise its lines' sum and its last line's status
        net = "sum(CASE status WHEN 'completed' THEN amount WHEN 'refunded' THEN -amount END)"
        mixed = "bool_or(status = 'completed') AND bool_or(status = 'refunded')"
        more = (", bool_or(_tot)" if totals else "") + (f", min({'_lo' if totals else '_file'}) < max(_file)"
                                                         if multi else "")
        con.execute(f"""INSERT INTO staged_orders SELECT oid, key, min(ordered_at),
                       CASE WHEN {mixed} THEN abs({net}) ELSE sum(amount) END, arg_max(currency, _ord),
                       CASE WHEN NOT ({mixed}) THEN arg_max(status, _ord) WHEN {net} >= 0 THEN 'completed'
                            ELSE 'refunded' END, sum(discount){fid and ', arg_max(' + fid[2:] + ', _ord)'},
                       min({'_first' if totals else '_ord'}){more} FROM {sums}{only} GROUP BY oid, key""")
    con.execute("ALTER TABLE staged_orders ADD COLUMN _first BIGINT")  # each receipt's first line (split_receipts)
    for column, wanted in (("_tot", totals), ("_multi", multi)):
        if wanted:
            con.execute(f"ALTER TABLE staged_orders ADD COLUMN {column} BOOLEAN")
    again = False  # the lines a later file writes again were dropped before the receipts were staged
    try:
        receipts()
    except duckdb.ConversionException:  # (the statement stored nothing) checked only when a sum did not fit,
        # and on the lines read once: a receipt whose lines two files hold is not too large for being summed twice
        again = multi and _written_again(con, paths, valid, said, _IN_FILES.format(rows=valid))
        if again:
            lines("_fs_once")
        over, over_count = _too_large_receipts(con, paths, limit, sums, valid)
        if over_count:
            lines("_fs_fit")
        elif not again:
            raise
        receipts()
    if multi:
        if not again and _written_again(con, paths, valid, said):  # staged again from their lines read once
            lines("_fs_once")
            con.execute("DELETE FROM staged_orders WHERE (order_id, customer_id) IN (SELECT oid, key FROM _fs_again)")
            receipts(" SEMI JOIN (SELECT DISTINCT oid, key FROM _fs_again) USING (oid, key)")
        con.execute("ALTER TABLE staged_orders DROP COLUMN _multi")
    if totals:
        _totals_warning(con, valid, paths, said)
    oid = "coalesce(_id, oid)" if split_receipts(con, valid, paths, said) else "oid"  # another customer's: ID~2
    if items:
        con.execute(f"""INSERT INTO staged_line_items SELECT {oid}, row_number() OVER (PARTITION BY {oid}
                       ORDER BY _ord), sku, product, category, brand, CASE WHEN status = 'refunded' THEN
                       -abs(coalesce(quantity, 1)) ELSE quantity END, {_PRICE} FROM {valid}"""  # returned: < 0
                    + (" LEFT JOIN _fs_rsplit USING (oid, key)" if oid != "oid" else ""))
    return over, over_count


def _too_large_receipts(con: duckdb.DuckDBPyConnection, paths: list[str], limit: int, sums: str = "_fs_valid",
                        rows: str = "_fs_valid") -> tuple[list[BadRow], int]:
    """The receipts whose lines (or discounts) each fit but sum past DECIMAL(18,2) (a price or quantity column of
    ids or phones): their lines as bad rows (listed up to ``limit``, counted) naming the receipt and
    its total (summed over ``sums``: the lines, or their groups with a repeated total once); ``_fs_fit`` is the
    lines (``rows``) without them. Run only after the receipts' insert failed."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _fs_over AS SELECT oid, sum(amount) AS total, sum(discount) AS disc
                    FROM {sums} GROUP BY oid HAVING abs(sum(amount)) >= 1e16 OR abs(sum(discount)) >= 1e16""")
    con.execute(f"CREATE OR REPLACE TEMP VIEW _fs_fit AS SELECT * FROM {rows} "
                "WHERE oid NOT IN (SELECT oid FROM _fs_over)")
    lines = f"FROM {rows} v JOIN _fs_over o USING (oid)"
    (count,) = con.execute(f"SELECT count(*) {lines}").fetchone()
    bad = []
    for f, row, oid, total, disc, amount, discount in con.execute(
            f"SELECT v._file, v._row, oid, o.total, o.disc, v.amount, v.discount {lines} ORDER BY v._file, v._row "
            f"LIMIT {limit}").fetchall():
        fld, value, what = (("amount", amount, f"its lines add up to {total}") if abs(total or 0) >= 10 ** 16
                            else ("discount", discount, f"its lines' discounts add up to {disc}"))
        bad.append(BadRow(source=paths[f], row=row, field=fld, value=None if value is None else str(value),
                          reason=f"receipt {oid!r}: {what}, more than 16 digits before the point (is the price, "
                                 "quantity or discount column an id or a phone number?); the receipt is skipped"))
    return bad, count


def _written_again(con: duckdb.DuckDBPyConnection, paths: list[str], rows: str, said: list[str],
                   multi: str = _MULTI) -> bool:
    """Whether a later file writes a receipt's lines at one time again (:data:`_AGAIN`, on the lines ``rows`` of the
    receipts ``multi`` selects: those staged from several files, by default): then ``_fs_once`` is ``rows`` without
    the earlier files' copies, and a warning line appended to ``said`` names the first receipts with their files and
    rows."""
    if multi == _MULTI and not con.execute("SELECT 1 FROM staged_orders WHERE _multi LIMIT 1").fetchall():
        return False
    con.execute(_AGAIN.format(rows=rows, multi=multi))
    if not con.execute("SELECT 1 FROM _fs_again LIMIT 1").fetchall():
        return False
    con.execute(f"CREATE OR REPLACE TEMP VIEW _fs_once AS SELECT * FROM {rows} "
                "ANTI JOIN _fs_again USING (oid, key, ordered_at, _file)")
    n, named = named_ids(con, paths, "(oid, key, ordered_at) IN (SELECT (oid, key, ordered_at) FROM _fs_again)",
                         rows)
    what = counted(n, "receipt's lines are", "receipts' lines are")
    said.append(f"{what} written again by a later file (the same lines at the same time: export periods that "
                f"overlap): the last file's lines kept: {named}")
    return True


def _totals_warning(con: duckdb.DuckDBPyConnection, valid: str, paths: list[str], said: list[str]) -> None:
    """Warn (a line appended to ``said``) of the receipts staged with a total repeated on each line counted once
    (``staged_orders._tot``, dropped here), naming the first :data:`~connectors.file_repeats.NAMED` with their files
    and rows (``valid``: the lines)."""
    if con.execute("SELECT 1 FROM staged_orders WHERE _tot LIMIT 1").fetchall():
        n, named = named_ids(con, paths, "(oid, key) IN (SELECT (order_id, customer_id) FROM staged_orders WHERE _tot)",
                             valid)
        said.append(f"{counted(n, 'receipt has', 'receipts have')} the same amount on every line while the lines' "
                    f"quantity × price differ: the amount is the receipt's total repeated on each line, counted once: "
                    f"{named}")
    con.execute("ALTER TABLE staged_orders DROP COLUMN _tot")


__all__ = ["stage_receipts"]
