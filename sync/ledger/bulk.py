"""The bulk read of a destination's pushed state into Arrow, with no Python object per row.

The columnar planner reads a million contacts' state on every plan. Fetching rows through a DBAPI cursor costs
five Python objects per row (and an Arrow array built from them), a second or more per million; so the database
does the concatenating and Arrow's multi-threaded CSV reader does the parsing:

* SQLite: one ``SELECT`` per page of 200 k keys (on the primary key) that ``group_concat``\\ s the page into a
  single text blob, one line per row, columns separated by the unit separator (``\\x1f``). Keys are normalised
  addresses and tags/fields are JSON (whose text never holds a control character), so only ``customer_id``
  (source data: anything) is written as a JSON string literal and decoded back in DuckDB. A page whose blob
  does not parse as exactly its rows of five columns (a key holding a line break or the separator) is read
  again row by row.
* PostgreSQL: ``COPY … TO STDOUT (FORMAT csv)``, parsed by the same reader.

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
    import pyarrow as pa

    cursor = conn.connection.driver_connection.cursor()  # the DBAPI cursor: one blob per page, no row objects
    line = " || char(31) || ".join(("key", "json_quote(customer_id)", "tags", "fields", "in_destination"))
    page = (f"SELECT {line} AS line, key FROM pushed_state WHERE destination = ?{{after}} ORDER BY key "
            f"LIMIT {int(page_size)}")
    batches: list[pa.Table] = []
    last: str | None = None
    while True:
        after = "" if last is None else " AND key > ?"
        params = (destination,) if last is None else (destination, last)
        blob, count, last = cursor.execute(
            f"SELECT CAST(group_concat(line, char(10)) AS BLOB), count(*), max(key) FROM ({page.format(after=after)})",
            params).fetchone()
        if not count:
            break
        table = _parse_page(blob, count)
        if table is None:  # a key with a control character: this page row by row
            table = _fetch_page(cursor, params, after, page_size)
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
        table = csv.read_csv(io.BytesIO(blob), read_options=csv.ReadOptions(
            column_names=list(STATE_COLUMNS), block_size=1 << 24), parse_options=csv.ParseOptions(
            delimiter=_SEP, quote_char=False, escape_char=False, ignore_empty_lines=False), convert_options=csv.ConvertOptions(
            column_types={"key": pa.string(), "customer_id": pa.string(), "tags": pa.string(),
                          "fields": pa.string(), "in_destination": pa.int8()},
            strings_can_be_null=False))
    except pa.ArrowInvalid:  # a line without its five columns: a key held a line break or the separator
        return None
    if table.num_rows != count:  # a key that starts with a line break (an empty line is a row here)
        return None
    return table.set_column(4, "in_destination", table.column(4).cast(pa.bool_()))


def _fetch_page(cursor: Any, params: tuple, after: str, page_size: int) -> "pa.Table":
    import pyarrow as pa

    cursor.execute(f"SELECT key, json_quote(customer_id), tags, fields, in_destination FROM pushed_state "
                   f"WHERE destination = ?{after} ORDER BY key LIMIT {int(page_size)}", params)
    columns = list(zip(*cursor.fetchall()))
    schema = state_schema()
    arrays = [pa.array(col, type=pa.string()) for col in columns[:4]]
    arrays.append(pa.array(columns[4]).cast(pa.bool_()))  # SQLite stores booleans as 0/1
    return pa.table(arrays, schema=schema)


def _decode_customer_ids(table: "pa.Table") -> "pa.Table":
    """``customer_id`` from its JSON string literal (``null`` → NULL) back to text, in DuckDB."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("_state_pages", table)
        return con.sql("SELECT * REPLACE (json_extract_string(customer_id, '$') AS customer_id) FROM _state_pages"
                       ).to_arrow_table().cast(state_schema())
    finally:
        con.close()


def copy_state_pg(conn: Connection, destination: str) -> "pa.Table":
    """``destination``'s pushed state from PostgreSQL through ``COPY … TO STDOUT``."""
    import pyarrow as pa
    from pyarrow import csv

    raw = conn.connection.driver_connection
    buf = io.BytesIO()
    with raw.cursor() as cur, cur.copy(
            f"COPY (SELECT {', '.join(STATE_COLUMNS)} FROM pushed_state WHERE destination = %s) "
            "TO STDOUT (FORMAT csv)", (destination,)) as copy:
        for block in copy:
            buf.write(block)
    schema = state_schema()
    if not buf.tell():
        return schema.empty_table()
    buf.seek(0)
    return csv.read_csv(buf, read_options=csv.ReadOptions(column_names=list(STATE_COLUMNS)),
                        parse_options=csv.ParseOptions(newlines_in_values=True),
                        convert_options=csv.ConvertOptions(
                            column_types=dict(zip(schema.names, schema.types)), null_values=[""],
                            strings_can_be_null=True, quoted_strings_can_be_null=False,
                            true_values=["t"], false_values=["f"])).cast(pa.schema(schema))


__all__ = ["STATE_COLUMNS", "copy_state_pg", "select_state_sqlite", "state_schema"]
