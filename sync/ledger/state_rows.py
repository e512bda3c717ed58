"""The rows of the ``pushed_state`` table as they are written: each contact's fields as their stored JSON text
(:func:`fields_json`, or the plan's own text of them) and the bulk upserts of a group of rows on SQLite (multi-row
``VALUES``) and PostgreSQL (``COPY`` into a temporary table); and read back into pushed states (:func:`read_states`).
:class:`sync.ledger.state.PushedStates` calls them.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from itertools import chain
from typing import AbstractSet, Any, Iterable, Iterator, Mapping

from sqlalchemy.engine import Connection

from ..errors import LedgerError
from ..model import PushedState
from .schema import pushed_state

_STATE_UPDATE_COLUMNS = ("customer_id", "tags", "fields", "in_destination", "pushed_at", "run_id", "revision")
#: an upsert's subscribed: 1 recorded; a row written without it (NULL) keeps what it has
_KEEP_SUBSCRIBED = ", subscribed = coalesce(excluded.subscribed, pushed_state.subscribed)"


def _json_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} value {value!r} is not a str, int, float, bool or None")


# the fields as UTF-8 text (``ensure_ascii=False``): DuckDB's ``to_json`` writes a string so, which lets the plan
# spell a contact's fields as the ledger stores them (:mod:`sync.planning.canonical`) for text in any script
_encode_fields = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                  default=_json_default).encode
_encode_fields_ascii = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_json_default).encode
def fields_json(fields: Mapping[str, Any]) -> str:
    """The text the ledger stores for a contact's fields: a JSON object, keys sorted, compact, UTF-8 (a
    :class:`~sync.model.PushedState` may carry this text, made by the plan: the ledger stores it as it is).
    A string with a lone surrogate (no UTF-8 for it; only a caller's own Python string can hold one) is written
    with ``\\u`` escapes instead. Ledgers written before 2026-12 hold every non-ASCII character so escaped: the
    same values, another spelling (the plan compares them in full, :mod:`sync.planning.canonical`)."""
    text = _encode_fields(fields if type(fields) is dict else dict(fields))
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return _encode_fields_ascii(fields if type(fields) is dict else dict(fields))
    return text


#: a ``pushed_state`` row as it is written: key, customer_id, the tags' text (:func:`tags_json`), the fields' text
#: (:func:`fields_json`; their mapping where a caller has no text: encoded before the write), in_destination 1 or 0
StateRow = tuple[str, "str | None", str, "str | Mapping[str, Any]", int]

_encode_tags = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


def tags_json(tags: Iterable[str]) -> str:
    """The text the ledger stores for a contact's tags: a JSON array, sorted, compact, ASCII (``\\u`` escapes)."""
    return _encode_tags(sorted(tags))


def read_states(rows: Iterable[Any], destination: str) -> dict[str, PushedState]:
    """Ledger rows (key, customer_id, tags JSON, fields JSON, in_destination) → pushed states by key; a row whose
    text is not JSON is a :class:`~sync.errors.LedgerError` naming the destination and the contact."""
    tag_sets: dict[str, frozenset[str]] = {}  # frozensets are immutable: share equal ones
    state: dict[str, PushedState] = {}
    key = None
    try:
        for key, customer_id, tags, fields, present in rows:
            tag_set = tag_sets.get(tags)
            if tag_set is None:
                tag_set = tag_sets[tags] = frozenset(_decode(tags))
            state[key] = PushedState(key, customer_id, tag_set, _decode(fields), bool(present))
    except ValueError as exc:  # edited by hand, a damaged file or restore: say whose row, and what to do
        raise unreadable_row(destination, key, exc) from None
    return state


def unreadable_row(destination: str, key: str | None, exc: ValueError) -> LedgerError:
    """The error of a pushed-state row whose tags or fields text is not the JSON the ledger writes (edited by hand,
    a damaged file or a bad restore): naming the destination, the contact and what to do."""
    return LedgerError(f"ledger: destination {destination!r}: the pushed state of contact {key!r} is not readable "
                       f"(its tags or fields are not JSON: {str(exc)[:120]}); restore the ledger from a backup, or "
                       f"delete that row of pushed_state (destination {destination!r}, key {key!r}): the next sync "
                       f"then plans him as a contact rfmsync never pushed to (created again under the consent rules)")


def dump_fields(key: str, fields: Mapping[str, Any]) -> str:
    """:func:`fields_json` of the pushed state of ``key``; a value JSON has no text for is a ``ValueError``."""
    try:
        return fields_json(fields)
    except TypeError as exc:
        raise ValueError(f"pushed state for {key!r}: cannot store fields: {exc}") from None


# Bulk paths: pushed_at is the one typed value and the same on every row, so it is
# converted once and the driver gets plain rows (SQLAlchemy's per-row processing
# would triple the time of a 100k-contact save). A row: key, customer_id, tags and fields as their stored JSON
# text, in_destination.


#: rows per statement at most (5 parameters a row; SQLite before 3.32 allows 999 parameters, later 32 766)
VALUES_ROWS = 1000
#: a group of at least this many rows is written with a page cache of GROUP_CACHE_KIB (then the connection's own
#: size again): see save_rows_sqlite
LARGE_GROUP = 5000
GROUP_CACHE_KIB = 64 * 1024


def save_rows_sqlite(conn: Connection, destination: str, run_id: int | None,
                    now: datetime, revision: int, rows: list[tuple[Any, ...]], mine: AbstractSet[str] = frozenset()
                    ) -> None:
    # One INSERT .. SELECT over a multi-row VALUES list of up to VALUES_ROWS rows: SQLite runs it in one step, so
    # the writer thread releases and re-takes the interpreter lock once per statement instead of once per row
    # (``executemany``, which under load, the apply's calls running meanwhile, waited for the lock at every row),
    # and the rows reach SQLite as bound values: no JSON document for SQLite to take apart (json_each and ->>
    # parsed each row's text again: half of the writer's CPU in SQLite 3.40). Each row's fields travel as their
    # stored text: the plan's (PushedState.fields_text), else encoded by save_states. The rows of ``mine`` (created
    # subscribed by this apply: sync.ledger.subscribed) get subscribed = 1, a statement's one value (parts()): an
    # integer SQLite stores in no bytes of the row (a time in each cost a first sync's writer ~0.2 CPU s a million).
    to_db = pushed_state.c.pushed_at.type.bind_processor(conn.dialect)
    db_now = to_db(now) if to_db else now
    raw = conn.connection.driver_connection
    cursor = raw.cursor()  # the DBAPI cursor: no per-row processing
    limit = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per = max(1, min(VALUES_ROWS, (limit - 5) // 5))
    with group_cache(cursor, len(rows)):
        for part, subscribed in parts(rows, mine):
            _upsert_part(cursor, part, per, [destination, db_now, run_id, revision, subscribed])


def parts(rows: list[tuple[Any, ...]], mine: AbstractSet[str]) -> list[tuple[list[tuple[Any, ...]], int | None]]:
    """``rows`` as the parts an upsert writes with one ``subscribed`` each: the rows of ``mine`` (1: created
    subscribed now), and the others (None: a row keeps what it has), in their order.
    A first sync's groups are all of ``mine``, a later sync's none: one part."""
    if not mine:
        return [(rows, None)]
    if len(mine) >= len(rows):  # (``mine`` holds keys of ``rows`` only: save_rows)
        return [(rows, 1)]
    yes = [r for r in rows if r[0] in mine]
    return [(yes, 1), ([r for r in rows if r[0] not in mine], None)]


def _upsert_part(cursor: Any, rows: list[tuple[Any, ...]], per: int, fixed: list[Any]) -> None:
    """``rows`` upserted in statements of ``per`` rows at most (:func:`blocks`), each with the ``fixed`` values first
    (destination, pushed_at, run_id, revision, subscribed)."""
    for start, end in blocks(len(rows), per):
        block = rows[start:end]
        params = [*fixed, *chain.from_iterable(block)]
        same, moved = _upsert_sql(len(block))
        # First the new rows and the rows whose customer is unchanged (nearly all), with customer_id left out
        # of the SET list: SQLite then leaves ix_pushed_state_customer alone (it rewrites an index whenever its
        # column is set, whatever the value), ~40 % less work and WAL per updated row. Then, only when rows
        # are left (their customer_id changed), the full update of those.
        if cursor.execute(same, params).rowcount < len(block):
            cursor.execute(moved, params)


@contextmanager
def group_cache(cursor: Any, rows: int) -> Iterator[None]:
    """Within it, a SQLite connection's page cache is GROUP_CACHE_KIB when a write group has at least LARGE_GROUP
    rows (then the connection's own size again). A large group's rows land all over the table's indexes when their
    keys are not in customer order (real addresses): 25 000 of them dirty more pages than SQLite's default 2 MiB
    cache holds, which then writes pages to the WAL mid-transaction and reads them back for the next row. 64 MiB
    for the group holds a 1 M-row ledger's touched pages: ~20 % less writer CPU on keys in random order; readers
    stay small. ``subscribed_by_us``'s rows, written after the state's in the same transaction, take a third (keys
    in order) to half (random) less CPU with it (bench/sync.py's harness at 200 k contacts)."""
    cache = cursor.execute("PRAGMA cache_size").fetchone()[0] if rows >= LARGE_GROUP else None
    if cache is not None:
        cursor.execute(f"PRAGMA cache_size = {-GROUP_CACHE_KIB}")
    try:
        yield
    finally:
        if cache is not None:
            cursor.execute(f"PRAGMA cache_size = {int(cache)}")


def blocks(rows: int, per: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the statements writing ``rows`` rows: blocks of ``per``, then the rest in blocks of a
    power of two each (437 rows: 256, 128, 32, 16, 4, 1), largest first. The statements are prepared once per
    connection and kept by the driver's statement cache (keyed by their text, which only the row count changes):
    a rest of any size would be a new statement for nearly every group of an apply, whose preparing costs about
    what writing its rows does (~1.5 ms for 400 rows on SQLite 3.40; ~5 ms for 1 000)."""
    out = [(start, start + per) for start in range(0, rows - rows % per, per)]
    start, size = rows - rows % per, 1 << max(per.bit_length() - 1, 0)
    while start < rows:
        while start + size > rows:
            size >>= 1
        out.append((start, start + size))
        start += size
    return out


@lru_cache(maxsize=64)
def _upsert_sql(rows: int) -> tuple[str, str]:
    """The upsert of ``rows`` rows given as parameters (destination, pushed_at, run_id, revision, subscribed,
    then each row's key, customer_id, tags, fields, in_destination): for the rows whose customer is unchanged (and
    new ones), and for the rows whose customer changed."""
    sql = ("INSERT INTO pushed_state (destination, key, customer_id, tags, fields, in_destination, pushed_at,"
           " run_id, revision, subscribed) SELECT ?, column1, column2, column3, column4, column5, ?, ?, ?, ? FROM"
           " (VALUES " + ",".join(["(?,?,?,?,?)"] * rows) + ") WHERE true ON CONFLICT (destination, key) DO UPDATE SET ")
    return (sql + ", ".join(f"{c} = excluded.{c}" for c in _STATE_UPDATE_COLUMNS[1:]) + _KEEP_SUBSCRIBED
            + " WHERE pushed_state.customer_id IS excluded.customer_id",
            sql + ", ".join(f"{c} = excluded.{c}" for c in _STATE_UPDATE_COLUMNS) + _KEEP_SUBSCRIBED
            + " WHERE pushed_state.customer_id IS NOT excluded.customer_id")


def save_rows_pg(conn: Connection, destination: str, run_id: int | None, now: datetime, revision: int,
                 rows: list[tuple[Any, ...]], mine: AbstractSet[str] = frozenset()) -> None:
    # The rows go through COPY into a temporary table (dropped at commit), then one INSERT .. SELECT upserts
    # them all: no per-row statement, no JSON for the server to take apart. A part per subscribed (parts()).
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE rfmsync_pushed_rows (key text, customer_id text, tags text,"
                    " fields text, in_destination boolean) ON COMMIT DROP")
        for i, (part, subscribed) in enumerate(parts(rows, mine)):
            if i:
                cur.execute("TRUNCATE rfmsync_pushed_rows")
            with cur.copy("COPY rfmsync_pushed_rows (key, customer_id, tags, fields, in_destination) FROM STDIN"
                          ) as copy:
                for row in part:
                    copy.write_row(row)
            cur.execute("INSERT INTO pushed_state (destination, key, customer_id, tags, fields, in_destination,"
                        " pushed_at, run_id, revision, subscribed) SELECT %s, key, customer_id, tags, fields,"
                        " in_destination, %s, %s, %s, %s::integer FROM rfmsync_pushed_rows ON CONFLICT"
                        " (destination, key) DO UPDATE SET "
                        + ", ".join(f"{c} = EXCLUDED.{c}" for c in _STATE_UPDATE_COLUMNS)
                        + _KEEP_SUBSCRIBED.replace("excluded.", "EXCLUDED."),
                        (destination, now, run_id, revision, subscribed))
