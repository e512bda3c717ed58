"""The bulk read of a destination's pushed state into Arrow, with no Python object per row.

The columnar planner reads a million contacts' state on every plan. Fetching rows through a DBAPI cursor costs
five Python objects per row (and an Arrow array built from them), a second or more per million; so the database
does the concatenating and Arrow's multi-threaded CSV reader does the parsing:

* SQLite: one ``SELECT`` per page of 200 k keys (on the primary key) that ``group_concat``-s the page into a
  single text blob, one line per row, columns separated by the unit separator (``\\x1f``). Keys are normalised
  addresses and tags/fields are JSON (whose text never holds a control character), so only ``customer_id``
  (source data: anything) is written as a JSON string literal and decoded back in DuckDB. A page whose blob
  does not parse as exactly its rows of five columns (a key holding a line break or the separator) is read
  again row by row.
* PostgreSQL: the same pages, ``string_agg``-ed into one ``bytea`` each (``COPY … TO STDOUT`` hands psycopg
  one message per row: a Python call each).

Both give the table :meth:`sync.ledger.state.PushedStates.state_table` documents.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    import pyarrow as pa

STATE_COLUMNS = ("key", "customer_id", "tags", "fields", "in_destination")
PAGE = 200_000
_SEP = "\x1f"


def state_schema() -> "pa.Schema":
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("customer_id", pa.string()), ("tags", pa.string()),
                      ("fields", pa.string()), ("in_destination", pa.bool_())])


def select_state_sqlite(conn: Connection, destination: str, page_size: int = PAGE) -> "pa.Table":
    """``destination``'s pushed state from SQLite, a page of ``page_size`` keys per blob."""
    cid = "json_quote(customer_id)"
    line = " || char(31) || ".join(("key", cid, "tags", "fields", "in_destination"))
    return _paged(conn, destination, page_size, "?", f"CAST(group_concat({line}, char(10)) AS BLOB)",
                  f"key, {cid}, tags, fields, in_destination")


def select_state_pg(conn: Connection, destination: str, page_size: int = PAGE) -> "pa.Table":
    """``destination``'s pushed state from PostgreSQL, a page of ``page_size`` keys per blob (one ``bytea``
    built by ``string_agg``: the rows of a ``COPY`` would each cost a Python call)."""
    cid = "coalesce(to_json(customer_id)::text, 'null')"
    line = f"concat_ws(E'\\x1f', key, {cid}, tags, fields, in_destination::int)"
    return _paged(conn, destination, page_size, "%s", f"convert_to(string_agg({line}, E'\\n'), 'UTF8')",
                  f"key, {cid}, tags, fields, in_destination::int")


def _paged(conn: Connection, destination: str, page_size: int, mark: str, blob_sql: str, columns: str
           ) -> "pa.Table":
    """The pages of ``destination``'s rows by key: each one blob (``blob_sql`` over the page) parsed by Arrow,
    or, when it does not parse, the page's ``columns`` fetched row by row."""
    import pyarrow as pa

    cursor = conn.connection.driver_connection.cursor()  # the DBAPI cursor: one blob per page, no row objects
    batches: list[pa.Table] = []
    last: str | None = None
    while True:
        where = f"destination = {mark}" + ("" if last is None else f" AND key > {mark}")
        params = (destination,) if last is None else (destination, last)
        page = f"SELECT * FROM pushed_state WHERE {where} ORDER BY key LIMIT {int(page_size)}"
        cursor.execute(f"SELECT {blob_sql}, count(*), max(key) FROM ({page}) AS page", params)
        blob, count, last = cursor.fetchone()
        if not count:
            break
        table = _parse_page(bytes(blob), count)
        if table is None:  # a key with a line break or the separator: this page row by row
            cursor.execute(f"SELECT {columns} FROM pushed_state WHERE {where} ORDER BY key LIMIT {int(page_size)}",
                           params)
            table = _rows_table(cursor.fetchall())
        batches.append(table)
        if count < page_size:
            break
    if not batches:
        return state_schema().empty_table()
    return _decode_customer_ids(pa.concat_tables(batches))


def _parse_page(blob: bytes, count: int) -> "pa.Table | None":
    import pyarrow as pa
    from pyarrow import csv

    try:
        table = csv.read_csv(
            io.BytesIO(blob),
            read_options=csv.ReadOptions(column_names=list(STATE_COLUMNS), block_size=1 << 24),
            parse_options=csv.ParseOptions(delimiter=_SEP, quote_char=False, escape_char=False,
                                           ignore_empty_lines=False),
            convert_options=csv.ConvertOptions(column_types={
                "key": pa.string(), "customer_id": pa.string(), "tags": pa.string(), "fields": pa.string(),
                "in_destination": pa.int8()}, strings_can_be_null=False))
    except pa.ArrowInvalid:  # a line without its five columns: a key held a line break or the separator
        return None
    if table.num_rows != count:  # a key that starts with a line break (an empty line is a row here)
        return None
    return table.set_column(4, "in_destination", table.column(4).cast(pa.bool_()))


def _rows_table(rows: list[Any]) -> "pa.Table":
    import pyarrow as pa

    columns = list(zip(*rows))
    arrays = [pa.array(col, type=pa.string()) for col in columns[:4]]
    arrays.append(pa.array(columns[4], type=pa.int8()).cast(pa.bool_()))  # booleans as 0/1
    return pa.table(arrays, schema=state_schema())


def _decode_customer_ids(table: "pa.Table") -> "pa.Table":
    """``customer_id`` from its JSON string literal (``null`` → NULL) back to text: the quotes stripped when no
    literal holds an escape (a backslash), else decoded in DuckDB."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column("customer_id")
    if not pc.any(pc.match_substring(column, "\\")).as_py():
        text = pc.if_else(pc.equal(column, "null"), pa.scalar(None, pa.string()),
                          pc.utf8_slice_codeunits(column, 1, -1))
        return table.set_column(1, "customer_id", text)
    import duckdb

    con = duckdb.connect()
    try:
        con.register("_state_pages", table)
        return con.sql("SELECT * REPLACE (json_extract_string(customer_id, '$') AS customer_id) FROM _state_pages"
                       ).to_arrow_table().cast(state_schema())
    finally:
        con.close()


__all__ = ["PAGE", "STATE_COLUMNS", "select_state_pg", "select_state_sqlite", "state_schema"]
