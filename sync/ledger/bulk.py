"""The bulk read of a destination's pushed state into Arrow, with no Python object per row.

The columnar planner reads a million contacts' state on every plan. Fetching rows through a DBAPI cursor costs
five Python objects per row (and an Arrow array built from them), a second or more per million; so the database
does the concatenating and Arrow's multi-threaded CSV reader does the parsing:

* SQLite: one ``SELECT`` per page of 200 k rowids (the table in its own order, about twice as fast as pages by
  key) that ``group_concat``-s the page into a single text blob, one line per row, columns separated by the unit
  separator (``\\x1f``), parsed on a second thread while the next page is read. Keys are normalised addresses
  and tags/fields are JSON (whose text never holds a control character), so only ``customer_id`` (source data:
  anything) is written as a JSON string literal and decoded back in DuckDB. A page whose blob does not parse as
  exactly its rows of five columns (a key holding a line break or the separator) is read again row by row.
* PostgreSQL: pages of 200 k keys, each ``string_agg``-ed into one ``bytea`` (``COPY … TO STDOUT`` hands
  psycopg one message per row: a Python call each).

Given a revision, either reads only the rows saved after it (``pushed_state.revision``): the plan's cached
copy's changes (:mod:`sync.ledger.statecache`). Both give the table
:meth:`sync.ledger.state.PushedStates.state_table` documents.
"""

from __future__ import annotations

import hashlib
import io
from typing import TYPE_CHECKING, Any, Mapping

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


def select_state_sqlite(conn: Connection, destination: str, page_size: int = PAGE, since: int | None = None,
                        ahead: "Mapping[int, tuple[pa.Table, Any]] | None" = None) -> "pa.Table":
    """``destination``'s pushed state from SQLite (only the rows written after revision ``since`` when given),
    in pages of ``page_size`` rowids: the table is scanned in its own order (``+destination`` keeps SQLite off
    the primary-key index, whose order costs a lookup per row), about twice as fast as pages by key. ``ahead``:
    pages read before this read's snapshot (:mod:`sync.ledger.readahead`: page start -> its rows and the
    :func:`page_mark` read with them), each used only when :func:`page_unchanged` shows it holds this snapshot's
    rows."""
    cursor = conn.connection.driver_connection.cursor()  # the DBAPI cursor: one blob per page, no row objects
    kept = {lo: table for lo, (table, mark) in (ahead or {}).items()
            if since is None and page_unchanged(cursor, destination, lo, page_size, mark)}
    pages = [(lo, *_page_where(destination, lo, page_size, since)) for lo in page_starts(cursor, page_size)
             if lo not in kept]
    read = dict(zip([lo for lo, *_ in pages], _read_pages(cursor, [p[1:] for p in pages], _BLOB_SQLITE,
                                                          _COLUMNS_SQLITE)))
    return _finish([kept.get(lo) if lo in kept else read[lo] for lo in sorted({*kept, *read})])


_CID_SQLITE = "json_quote(customer_id)"
_BLOB_SQLITE = "CAST(group_concat({}, char(10)) AS BLOB)".format(
    " || char(31) || ".join(("key", _CID_SQLITE, "tags", "fields", "in_destination")))
_COLUMNS_SQLITE = f"key, {_CID_SQLITE}, tags, fields, in_destination"


def page_starts(cursor: Any, page_size: int) -> list[int]:
    """The first rowid of each page of ``page_size`` rowids holding a row (any destination's), pages aligned on
    multiples of ``page_size`` (so a page read earlier is the same page now)."""
    # each bound in a query of its own: SQLite finds a lone min() or max() at the B-tree's edge, but scans the
    # whole table for both in one SELECT (~50 ms at 1 M rows)
    low, high = cursor.execute("SELECT (SELECT min(rowid) FROM pushed_state), (SELECT max(rowid) FROM pushed_state)"
                               ).fetchone()
    return [] if low is None else list(range(low - low % page_size, high + 1, page_size))


def _page_where(destination: str, lo: int, page_size: int, since: int | None = None) -> tuple[str, tuple[Any, ...]]:
    changed = "" if since is None else f" AND revision > {int(since)}"
    return f"+destination = ? AND rowid >= ? AND rowid < ?{changed}", (destination, lo, lo + page_size)


def read_page_sqlite(cursor: Any, destination: str, lo: int, page_size: int) -> "pa.Table":
    """One page of ``destination``'s rows as :func:`select_state_sqlite` reads it (before ``_finish``)."""
    tables = _read_pages(cursor, [_page_where(destination, lo, page_size)], _BLOB_SQLITE, _COLUMNS_SQLITE)
    return tables[0] if tables else state_schema().empty_table()


def page_mark(cursor: Any, destination: str, lo: int, page_size: int) -> tuple[int, int | None, bytes | None]:
    """What proves ``destination``'s rows in the page at ``lo`` the same rows later (:func:`page_unchanged`): how
    many, the latest revision stamped on one, and a digest of their keys in rowid order (None when a key holds a
    line break, the keys' separator: such a page proves nothing). Every save stamps its rows with its new
    revision; a forgotten row leaves one fewer; a ledger reloaded from a dump (a logical restore) or vacuumed may
    hold other rows in the page (the same count, none stamped later): other keys. A row's key and its revision,
    in a history the ledger still holds (the caller checks that revision's token), are its content."""
    where, params = _page_where(destination, lo, page_size)
    # the keys alone: ~0.3 CPU s a million rows, against ~0.8 s with each row's rowid and key's length beside it
    count, last, keys, broken = cursor.execute(
        "SELECT count(*), max(revision), CAST(group_concat(key, char(10)) AS BLOB), max(instr(key, char(10))) "
        f"FROM pushed_state WHERE {where}", params).fetchone()
    return count, last, None if broken else hashlib.blake2b(keys or b"", digest_size=16).digest()


def page_unchanged(cursor: Any, destination: str, lo: int, page_size: int,
                   mark: tuple[int, int | None, bytes | None]) -> bool:
    """Whether ``destination``'s rows in the page at ``lo`` are the rows read there when it gave ``mark``
    (:func:`page_mark`): the same keys in the same order, none written since."""
    return mark[2] is not None and page_mark(cursor, destination, lo, page_size) == mark


def select_state_pg(conn: Connection, destination: str, page_size: int = PAGE, since: int | None = None,
                    ahead: "Mapping[int, tuple[pa.Table, Any]] | None" = None) -> "pa.Table":
    """``destination``'s pushed state from PostgreSQL (only the rows written after revision ``since`` when
    given), a page of ``page_size`` keys per blob (one ``bytea`` built by ``string_agg``: the rows of a ``COPY``
    would each cost a Python call), parsed while the server builds the next. ``ahead`` is SQLite's (pages of
    rowids; there is no read-ahead on PostgreSQL): not used."""
    cid = "coalesce(to_json(customer_id)::text, 'null')"
    line = f"concat_ws(E'\\x1f', key, {cid}, tags, fields, in_destination::int)"
    blob_sql = f"convert_to(string_agg({line}, E'\\n'), 'UTF8')"
    columns = f"key, {cid}, tags, fields, in_destination::int"
    changed = "" if since is None else f" AND revision > {int(since)}"
    cursor = conn.connection.driver_connection.cursor()
    from concurrent.futures import Future, ThreadPoolExecutor

    parsed: list[tuple[Future[pa.Table | None], str, tuple[Any, ...]]] = []
    last: str | None = None
    # each page is parsed on a second thread while the server builds the next one (Arrow and psycopg's wait
    # for the server both let go of the interpreter lock)
    with ThreadPoolExecutor(max_workers=1) as parser:
        while True:
            where = f"destination = %s{changed}" + ("" if last is None else " AND key > %s")
            params = (destination,) if last is None else (destination, last)
            page = f"SELECT * FROM pushed_state WHERE {where} ORDER BY key LIMIT {int(page_size)}"
            cursor.execute(f"SELECT {blob_sql}, count(*), max(key) FROM ({page}) AS page", params)
            blob, count, last = cursor.fetchone()
            if not count:
                break
            parsed.append((parser.submit(_parse_page, bytes(blob), count),
                           f"SELECT {columns} FROM ({page}) AS page", params))
            if count < page_size:
                break
        tables = [(future.result(), rows_sql, params) for future, rows_sql, params in parsed]
    batches = []
    for table, rows_sql, params in tables:
        if table is None:  # a key with a line break or the separator: this page row by row
            cursor.execute(rows_sql, params)
            table = _rows_table(cursor.fetchall())
        batches.append(table)
    return _finish(batches)


def _read_pages(cursor: Any, pages: list[tuple[str, tuple[Any, ...]]], blob_sql: str, columns: str
                ) -> list["pa.Table"]:
    """Each page (a WHERE clause and its parameters) as one blob (``blob_sql``) parsed by Arrow on a second
    thread while the database builds the next one (both let go of the interpreter lock); a table per page (an
    empty one for a page without rows)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    parsed: list[Future[pa.Table | None] | None] = []
    fallbacks: dict[int, tuple[str, tuple[Any, ...]]] = {}
    with ThreadPoolExecutor(max_workers=1) as parser:
        for where, params in pages:
            cursor.execute(f"SELECT {blob_sql}, count(*) FROM pushed_state WHERE {where}", params)
            blob, count = cursor.fetchone()
            if count:
                fallbacks[len(parsed)] = (f"SELECT {columns} FROM pushed_state WHERE {where}", params)
            parsed.append(parser.submit(_parse_page, bytes(blob), count) if count else None)
        tables = [f.result() if f is not None else state_schema().empty_table() for f in parsed]
    return [table if table is not None else _rows_table(cursor.execute(*fallbacks[i]).fetchall())
            for i, table in enumerate(tables)]  # a key with a line break or the separator: row by row


def _finish(batches: list["pa.Table"]) -> "pa.Table":
    import pyarrow as pa

    batches = [b for b in batches if b.num_rows]
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
