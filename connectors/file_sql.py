"""The SQL that reads one export file into a table of normalised rows (:meth:`connectors.files.FileSource.read_file`).

One pass over the file: every mapped field trimmed, parsed (numbers, dates in the configured time zone, names) and
kept as raw text only where parsing failed (for the bad-row report). Only computed columns are stored; a view over
them adds the unmapped fields as constants and the spreadsheet row number ``_srow``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

import duckdb

from . import amounts, normalize as nz
from .consent_words import consent_word_sql
from .file_decimal import column_decimals
from .file_readers import EXCEL_EPOCH, MERGED_COLUMN, NUMERIC_TYPES, refuse_int96
from .file_staging import LoadedFile

if TYPE_CHECKING:
    from .files import FileSourceConfig

NUMBER_FIELDS = {"amount": 2, "price": 2, "discount": 2, "quantity": 3}


def load_table(con: duckdb.DuckDBPyConnection, lf: LoadedFile, src: str, kind: str, cfg: FileSourceConfig,
               typed: dict[str, str] | None = None, excel_epoch: str = EXCEL_EPOCH, merged: bool = False
               ) -> LoadedFile:
    """One pass over the file: CREATE TEMP TABLE with every field normalised, and the raw text
    kept only where parsing failed (for the bad-row report). Each nested SELECT is one step.
    ``typed`` fields (the CSV fast path) arrive as TIMESTAMP / DECIMAL and skip text parsing; an XLSX's serial day
    numbers count from ``excel_epoch`` (its workbook's date system: :func:`connectors.file_readers.excel_epoch`);
    ``merged``: an XLSX table names the rows whose amount lies in a merged cell above (``amount_merged``, for the
    bad-row report: :data:`~connectors.file_readers.MERGED_COLUMN`)."""
    typed = typed or {}
    if kind == "parquet":
        refuse_int96(con, lf.path, lf.cols)
    col = {f: f"CAST({nz.ident(h)} AS VARCHAR)" for f, h in lf.cols.items()}
    a = {f: f"a{i}" for i, f in enumerate(f for f in lf.cols if f.startswith("attr:"))}
    sql = _normalised_select(con, lf, src, kind, cfg, typed, col, a, excel_epoch, merged)
    return _store(con, lf, sql, _output_columns(con, src, cfg, typed, col, a, merged), typed)


def _normalised_select(con: duckdb.DuckDBPyConnection, lf: LoadedFile, src: str, kind: str, cfg: FileSourceConfig,
                       typed: dict[str, str], col: dict[str, str], a: dict[str, str], epoch: str,
                       merged: bool = False) -> str:
    """The nested SELECT over ``src``: step 0 trims the text (or takes the typed value), step 1 parses numbers,
    dates and names, step 2 puts the dates in the configured time zone."""
    has = set(col)
    text_nums = [f for f in NUMBER_FIELDS if f in has and f not in typed]
    exact = _number_columns(con, src, lf.cols, text_nums) if kind == "parquet" else []
    voted = [f for f in text_nums if f not in exact]
    dec = {f: cfg.decimal for f in voted} if cfg.decimal else column_decimals(con, lf.path, src, col, lf.cols, voted)
    dec |= {f: "." for f in exact}  # a number's text (150.000) has the point as its mark, whatever the text's
    nums, dates = [f for f in NUMBER_FIELDS if f in has], [f for f in ("ordered_at", "created_at", "cancelled_at")
                                                                 if f in has]

    def step0_of(f: str) -> str:  # step 0: trimmed text, or the typed value
        if typed.get(f) == "number":
            return f"CAST({nz.ident(lf.cols[f])} AS DECIMAL(18,{NUMBER_FIELDS[f]})) AS d_{f}"
        if typed.get(f) == "timestamp":
            return f"CAST({nz.ident(lf.cols[f])} AS TIMESTAMP) AS n_{f}"
        return f"{nz.text_sql(col[f])} AS {a.get(f, 't_' + f)}"

    step0 = ", ".join([*(["_srow"] if lf.row_sql == "_srow" else []), *([MERGED_COLUMN] if merged else []),
                       *(step0_of(f) for f in col)])
    step1 = [f"{amounts.amount_sql('t_' + f, dec[f], NUMBER_FIELDS[f])} AS d_{f}" for f in nums if f not in typed]
    serial = kind == "xlsx"
    step1 += [nz.naive_timestamp_sql("t_" + f, excel_serial=serial, date_format=cfg.date_format, excel_epoch=epoch)
              + f" AS n_{f}" for f in dates if f not in typed]
    step1 += [f"{nz.name_words_sql('t_name')} AS w_name"] if "name" in has else []
    step1 += [f"{consent_word_sql('t_marketing_consent')} AS c_consent"] if "marketing_consent" in has else []
    step2 = [f"{nz.local_to_utc_sql('n_' + f, cfg.timezone)} AS z_{f}" if f in typed else
             f"{nz.zoned_timestamp_sql('t_' + f, 'n_' + f, cfg.timezone, cfg.date_format)} AS z_{f}" for f in dates]
    sql = f"SELECT {step0} FROM {src}"
    for step in (step1, step2):
        if step:
            sql = f"SELECT *, {', '.join(step)} FROM ({sql})"
    return sql


def _number_columns(con: duckdb.DuckDBPyConnection, src: str, cols: dict[str, str], fields: list[str]) -> list[str]:
    """The ``fields`` a Parquet file stores as numbers (DECIMAL, DOUBLE, INTEGER, …): their text (``150.000``, a
    DECIMAL(18,3)) is read with ``.`` as the decimal mark, not voted on as a locale's text (where ``150.000`` alone
    groups thousands: 150 000, silently, and ``[source] decimal = ","`` read it so too)."""
    types = {name: str(typ) for name, typ, *_ in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    return [f for f in fields if types.get(cols[f], "").startswith(NUMERIC_TYPES)]


def _output_columns(con: duckdb.DuckDBPyConnection, src: str, cfg: FileSourceConfig, typed: dict[str, str],
                    col: dict[str, str], a: dict[str, str], merged: bool = False) -> list[tuple[str, str]]:
    """(name, SQL expression over the normalised select) of every column a loaded table has."""
    has, attrs = set(col), list(a)

    def get(prefix: str, f: str, typ: str = "VARCHAR") -> str:
        if prefix == "t" and f in typed:  # the raw text of a typed value: its number (a NULL came from empty)
            return f"CAST(d_{f} AS VARCHAR)" if typed[f] == "number" else "CAST(NULL AS VARCHAR)"
        return f"{prefix}_{f}" if f in has else f"CAST(NULL AS {typ})"

    amount, amount_raw = get("d", "amount", "DECIMAL(18,2)"), get("t", "amount")
    if "amount" not in has and "price" in has:  # receipt lines without a line total: price × quantity
        # multiplied wide (DECIMAL(18,2) × DECIMAL(18,3) overflows past 1e13 and failed the whole file), rounded to
        # the amount's column; a line total with no room there is NULL: a bad row, like any amount
        wide = "d_price::DECIMAL(38,2) * COALESCE(d_quantity, 1)::DECIMAL(38,3)"
        amount = f"TRY_CAST({wide} AS DECIMAL(18,2))"
        # a bad row's: the total (as the amount column would show it), or the price
        amount_raw = f"COALESCE(CAST(CAST({wide} AS DECIMAL(38,2)) AS VARCHAR), {get('t', 'price')})"
    if "currency" in has:
        currency = nz.currency_code_sql("t_currency")  # one code per currency: RUB, руб and ₽ are one
    elif cfg.currency:
        currency = nz.lit(nz.currency_code(cfg.currency))
    elif "amount" in has and "amount" not in typed and any(nz.currency_of(v) for (v,) in con.execute(
            f"SELECT {col['amount']} FROM {src} LIMIT 2000").fetchall()):
        currency = nz.currency_sql("t_amount")  # symbols/words in the amounts (₸, сум, $…)
    else:
        currency = "CAST(NULL AS VARCHAR)"
    first, last = get("t", "first_name"), get("t", "last_name")
    if "name" in has:
        nf, nl = nz.name_parts_from_words_sql("w_name")
        first, last = f"COALESCE({first}, {nf})", f"COALESCE({last}, {nl})"
    attr_sql = ("NULLIF(to_json(map_from_entries(list_filter([" +
                ", ".join(f"{{'k': {nz.lit(f[5:])}, 'v': {a[f]}}}" for f in attrs) +
                "], lambda x: x.v IS NOT NULL))), '{}')") if attrs else "CAST(NULL AS VARCHAR)"
    # a consent cell not read as yes, no or empty is no (consent_words.consent_sql), its text kept for the report (file_consent)
    consent, consent_raw = (("coalesce(c_consent, 'no')", "CASE WHEN c_consent IS NULL THEN t_marketing_consent END")
                            if "marketing_consent" in has else ("'unknown'", "CAST(NULL AS VARCHAR)"))
    ordered_raw = get('t', 'ordered_at')
    if not _is_constant(ordered_raw):
        ordered_raw = f"CASE WHEN {get('z', 'ordered_at', 'TIMESTAMPTZ')} IS NULL THEN {ordered_raw} END"
    # a cancellation date's text when it is neither a date nor "no value" (empty, NULL, a zero date): a bad row
    cancelled_raw = (f"CASE WHEN z_cancelled_at IS NULL AND NOT {nz.no_value_sql(get('t', 'cancelled_at'))} THEN"
                     f" {get('t', 'cancelled_at')} END" if "cancelled_at" in has else "CAST(NULL AS VARCHAR)")
    oid_int = f"TRY_CAST({get('t', 'order_id')} AS BIGINT)" if "order_id" in has else "CAST(NULL AS BIGINT)"
    out = [
        ("order_id", get('t', 'order_id')), ("_oid_int", oid_int), ("cust", get('t', 'customer_id')),
        ("email_raw", get('t', 'email')), ("phone_raw", get('t', 'phone')),
        ("ordered_at", get('z', 'ordered_at', 'TIMESTAMPTZ')), ("ordered_at_raw", ordered_raw),
        ("amount", amount), ("amount_raw", f"CASE WHEN {amount} IS NULL OR {amount} < 0 THEN {amount_raw} END"),
        ("status_raw", get('t', 'status')), ("cancelled_at", get('z', 'cancelled_at', 'TIMESTAMPTZ')),
        ("cancelled_raw", cancelled_raw), ("currency", currency),
        ("discount", get('d', 'discount', 'DECIMAL(18,2)')), ("sku", get('t', 'sku')),
        ("product", get('t', 'product')), ("category", get('t', 'category')), ("brand", get('t', 'brand')),
        ("quantity", get('d', 'quantity', 'DECIMAL(18,3)')), ("price", get('d', 'price', 'DECIMAL(18,2)')),
        # the text of a quantity or discount given but not a number (a bad row, not a quantity of 1 or no discount);
        # a constant NULL (not stored) when the column is unmapped, or typed (read as numbers by DuckDB itself)
        *((f"{f}_raw", f"CASE WHEN d_{f} IS NULL THEN t_{f} END" if f in has and f not in typed
           else "CAST(NULL AS VARCHAR)") for f in ("quantity", "discount")),
        ("first_name", first), ("last_name", last), ("consent", consent), ("consent_raw", consent_raw),
        ("created_at", get('z', 'created_at', 'TIMESTAMPTZ')), ("attributes", attr_sql),
        # an XLSX row without an amount whose amount cell lies in a merged range above (``Sheet!D2:D4``)
        ("amount_merged", f"CASE WHEN {amount} IS NULL THEN {MERGED_COLUMN} END" if merged
         else "CAST(NULL AS VARCHAR)"),
    ]
    return out


def _store(con: duckdb.DuckDBPyConnection, lf: LoadedFile, sql: str, out: list[tuple[str, str]],
           typed: dict[str, str]) -> LoadedFile:
    """Write ``<table>_data`` (the computed columns) and the view ``<table>`` over it."""
    # Only the computed columns are stored; unmapped fields (constants) are added by a view over the
    # stored rows, so a narrow export does not pay for writing 10 M NULLs per unmapped field.
    # The view also numbers the rows: ``_srow`` is the spreadsheet row (header = 1).
    # A typed amount's raw text is the amount itself: the view derives it rather than store a column.
    # ``_oid_int`` is the order id as a whole number (NULL when it is not one), for the repeated-ids check.
    derived = {"amount_raw": "CASE WHEN amount IS NULL OR amount < 0 THEN CAST(amount AS VARCHAR) END"} \
        if typed.get("amount") == "number" else {}
    stored = [f"{e} AS {n}" for n, e in out if not _is_constant(e) and n not in derived]
    srow = "_srow" if lf.row_sql == "_srow" else f"rowid + {lf.first_line}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {lf.table}_data AS SELECT "
                f"{'_srow, ' if lf.row_sql == '_srow' else ''}{', '.join(stored)} FROM ({sql})")
    view = ", ".join(f"{derived.get(n, e)} AS {n}" if _is_constant(e) or n in derived else n for n, e in out)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {lf.table} AS SELECT ({srow})::BIGINT AS _srow, {view} "
                f"FROM {lf.table}_data")
    return replace(lf, row_sql="_srow", view=view)


def _is_constant(expr: str) -> bool:
    """A select expression that is the same for every row (a NULL of some type or a string literal)."""
    return bool(_CONSTANT.fullmatch(expr))


_CONSTANT = re.compile(r"CAST\(NULL AS [A-Z]+(\(\d+,\d+\))?\)|'(?:[^']|'')*'")


def persist_loaded(con: duckdb.DuckDBPyConnection, lf: LoadedFile, table: str) -> LoadedFile:
    """Copy a file read into temp tables (``lf``) into real tables of the connection's database: ``<table>_data``
    (the stored columns and the row number ``_srow``, so the copy may be written in any order) and the view
    ``<table>`` over it; the temp ones are dropped."""
    data = f"temp.{lf.table}_data"
    numbered = "_srow" in {r[0] for r in con.execute(f"DESCRIBE {data}").fetchall()}  # XLSX: its sheet rows
    row = "" if numbered else f"(rowid + {lf.first_line})::BIGINT AS _srow, "
    con.execute(f"CREATE OR REPLACE TABLE {table}_data AS SELECT {row}* FROM {data}")
    con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT _srow::BIGINT AS _srow, {lf.view} FROM {table}_data")
    con.execute(f"DROP VIEW IF EXISTS temp.{lf.table}")
    con.execute(f"DROP TABLE IF EXISTS temp.{lf.table}_data")
    return replace(lf, table=table, row_sql="_srow")
