"""A webhook's *partial* history record, read and written by key: its cost follows the customers it re-scored,
not the history of the shop (the rules are in :mod:`sync.store.history`).

The store's lookup index on ``segment_history(customer_id)`` (:mod:`sync.store.lookup`) answers a join on
``customer_id`` alone; any other filter on the same scan (``line = ...``, ``valid_to IS NULL``) makes DuckDB scan
the table instead. So a partial record

1. copies every history row of its customers into a temporary table (one keyed join, no other filter);
2. works out their new rows there (undo the same day, close the moved customers' rows, open the new ones);
3. replaces the rows of the customers whose rows changed: a keyed ``DELETE`` and an ``INSERT``;
4. keeps the line's customer count from the previous record of the line (plus those that appear), instead of
   counting the history.

It also *marks* its customers (:data:`MARKS`: a sequence number per record, the customers, the date), so that a
full record whose snapshot was taken before this record can leave them as the webhook recorded them
(:func:`marked_since`). The numbers come from a sequence in the store (:data:`SEQUENCE`: they only grow, and
reading the latest is a catalog lookup); marks of earlier days are dropped by the first record of a new day, so
the table holds one day's webhook customers at most.
"""

from __future__ import annotations

from datetime import date

import duckdb

MARKS = "segment_history_marks"
SEQUENCE = "segment_history_seq"
_MINE, _NEW = "_history_mine", "_history_new"


def create_marks(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE TABLE IF NOT EXISTS {MARKS} (seq BIGINT NOT NULL, as_of DATE NOT NULL, "
                f"customer_id VARCHAR NOT NULL)")
    con.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE}")


def _has_marks(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [MARKS]).fetchall()[0][0])


def current_mark(con: duckdb.DuckDBPyConnection) -> int:
    """The sequence number of the latest partial record (0 before any): a full run notes it with its
    snapshot, and its record later leaves alone the customers marked after it (:func:`marked_since`)."""
    found = con.execute("SELECT last_value FROM duckdb_sequences() WHERE sequence_name = ?", [SEQUENCE]).fetchall()
    return int(found[0][0] or 0) if found else 0


def drop_marks_before(con: duckdb.DuckDBPyConnection, as_of: date) -> None:
    """Forget the marks of days before ``as_of`` (a record of ``as_of`` never looks at them)."""
    if _has_marks(con):
        con.execute(f"DELETE FROM {MARKS} WHERE as_of < ?", [as_of])


def marked_since(con: duckdb.DuckDBPyConnection, mark: int, as_of: date, table: str) -> int:
    """Create temp ``table`` (customer_id) of the customers a partial record for ``as_of`` recorded after
    ``mark``; returns how many."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (customer_id VARCHAR)")
    if _has_marks(con):
        con.execute(f"INSERT INTO {table} SELECT DISTINCT customer_id FROM {MARKS} WHERE seq > ? AND as_of = ?",
                    [mark, as_of])
    return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def record_partial(con: duckdb.DuckDBPyConnection, snapshot: str, line: int, as_of: date, again: bool,
                   history: str, records: str) -> tuple[int, int]:
    """Record ``snapshot`` (customer_id, segment; distinct) on ``line`` as of ``as_of`` by key, inside the
    caller's transaction; ``again``: ``as_of`` is recorded on the line already. Returns (moves, customers on the
    line at ``as_of``)."""
    day = {"d": as_of}
    # 1. every row of these customers (all lines): the join on customer_id alone is what the index answers
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_MINE} AS SELECT h.line, h.customer_id, h.segment, h.valid_from, "
                f"h.valid_to FROM {snapshot} s JOIN {history} h USING (customer_id)")
    present = con.execute(f"SELECT count(DISTINCT customer_id) FROM {_MINE} WHERE line = {line} AND "
                          f"valid_from <= $d AND (valid_to IS NULL OR valid_to > $d)", day).fetchall()[0][0]
    # 2. their rows after this record: the same day undone first (rows it opened go, rows it closed reopen) ...
    undo = "AND valid_from <> $d" if again else ""
    reopen = "CASE WHEN valid_to = $d THEN NULL ELSE valid_to END" if again else "valid_to"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {_NEW} AS
        SELECT line, customer_id, segment, valid_from, CASE WHEN line = {line} THEN {reopen} ELSE valid_to END
               AS valid_to
        FROM {_MINE} WHERE line <> {line} OR (TRUE {undo})""", day if again else {})
    # ... then who moved (old → new), their open row closed and a new one opened
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _history_diff AS
        SELECT s.customer_id, h.segment AS old, s.segment AS new
        FROM {snapshot} s LEFT JOIN (SELECT customer_id, segment FROM {_NEW} WHERE line = {line}
                                      AND valid_to IS NULL) h USING (customer_id)
        WHERE h.segment IS DISTINCT FROM s.segment""")
    moves = con.execute("SELECT count(*) FROM _history_diff WHERE old IS NOT NULL").fetchall()[0][0]
    con.execute(f"""UPDATE {_NEW} AS h SET valid_to = $d FROM _history_diff c
                    WHERE h.line = {line} AND h.valid_to IS NULL AND h.customer_id = c.customer_id
                      AND c.old IS NOT NULL""", day)
    con.execute(f"INSERT INTO {_NEW} SELECT {line}, customer_id, new, $d, NULL FROM _history_diff", day)
    # 3. replace the rows of the customers whose rows changed (a keyed delete, then their new rows)
    # (who moved, and on a day recorded again, whose rows that day had opened or closed)
    undone = (f" UNION SELECT customer_id FROM {_MINE} WHERE line = {line} AND (valid_from = $d OR valid_to = $d)"
              if again else "")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _history_changed AS SELECT customer_id FROM _history_diff{undone}",
                day if again else {})
    if con.execute("SELECT count(*) FROM _history_changed").fetchall()[0][0]:
        con.execute(f"DELETE FROM {history} WHERE customer_id IN (SELECT customer_id FROM _history_changed)")
        con.execute(f"INSERT INTO {history} SELECT * FROM {_NEW} WHERE customer_id IN "
                    f"(SELECT customer_id FROM _history_changed)")
    # 4. the line's count at as_of: the count before this record, less these customers as they were, plus all
    #    of them (a partial record gives every customer it holds a segment)
    before = _count_before(con, line, as_of, records, history)
    n = con.execute(f"SELECT count(*) FROM {snapshot}").fetchall()[0][0]
    _mark(con, snapshot, as_of, first_of_day=not again)
    for table in (_MINE, _NEW, "_history_diff", "_history_changed"):
        con.execute(f"DROP TABLE {table}")
    return moves, before - present + n


def _count_before(con: duckdb.DuckDBPyConnection, line: int, as_of: date, records: str, history: str) -> int:
    """Customers on ``line`` at ``as_of`` before this record: that day's record, else the line's latest
    (nothing changes between recorded days); counted only when the records were pruned away."""
    found = con.execute(f"SELECT customers FROM {records} WHERE line = {line} AND as_of <= ? "
                        f"ORDER BY as_of DESC LIMIT 1", [as_of]).fetchall()
    if found:
        return found[0][0]
    return con.execute(f"SELECT count(*) FROM {history} WHERE line = {line} AND valid_from <= $d AND "
                       f"(valid_to IS NULL OR valid_to > $d)", {"d": as_of}).fetchall()[0][0]


def _mark(con: duckdb.DuckDBPyConnection, snapshot: str, as_of: date, first_of_day: bool) -> None:
    """Mark this record's customers with the next sequence number; the first record of a day drops the marks
    of earlier days."""
    create_marks(con)
    if first_of_day:
        drop_marks_before(con, as_of)
    seq = con.execute(f"SELECT nextval('{SEQUENCE}')").fetchall()[0][0]
    con.execute(f"INSERT INTO {MARKS} SELECT ?, ?, customer_id FROM {snapshot}", [seq, as_of])


__all__ = ["MARKS", "SEQUENCE", "create_marks", "current_mark", "drop_marks_before", "marked_since",
           "record_partial"]
