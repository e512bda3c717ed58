"""Segment history in the order store: each customer's segment over time, as changes only (type-2).

Tables (the shared contract, docs/history-contract): ``segment_history_lines`` (one row per history *line*: a
line starts when the preset or the rules change, so a new map never shows up as a flood of fake moves),
``segment_history_records`` (one row per recorded date of a line) and ``segment_history`` (customer, segment,
``[valid_from, valid_to)``; ``valid_to`` NULL = still current). A customer's segment on day D of a line is the
row with ``valid_from <= D AND (valid_to IS NULL OR valid_to > D)``; the current line is ``max(line)``.

Recording rules (:func:`record`):

* a record for the same as-of date *replaces* that day: the day's changes are undone first, so recording a day
  twice leaves exactly what recording it once (with the second snapshot) leaves;
* a date earlier than the last recorded date is refused (:class:`HistoryOrderError`, exit 3): history only moves
  forward, so it never has to split rows between two records;
* an unchanged day adds no history row at all (only its row in ``segment_history_records``);
* a full record (``sync``, ``segments``) closes the rows of customers who are no longer segmented; a
  ``webhook`` record is *partial*: it touches only the customers in its table, never starts a line, and is
  skipped when the config's rules are not those of the current line (the next full sync starts the new line);
  it reads and writes those customers' rows by key (:mod:`sync.store.history_partial`), so its cost does not
  grow with the history;
* a full record of a snapshot taken before a webhook recorded the same day (``mark``: a sync records after its
  apply) leaves that webhook's customers as the webhook recorded them: their data is newer than the snapshot.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timezone

import duckdb

from segmentation import SegmentationConfig

from ..errors import DataError
from .history_partial import drop_marks_before, marked_since, record_partial
from .lookup import BULK_ROWS, drop_lookup_indexes

SOURCES = ("sync", "segments", "webhook")
LINES, RECORDS, HISTORY = "segment_history_lines", "segment_history_records", "segment_history"
_SNAPSHOT, _KEPT = "_history_snapshot", "_history_kept"


class HistoryOrderError(DataError):
    """A record for a date earlier than the last recorded one (history only moves forward)."""


@dataclass(frozen=True)
class RecordResult:
    moves: int  # customers whose segment changed at this record (new and gone customers are not moves)
    line: int | None  # the line recorded on (None: nothing recorded, see ``skipped``)
    new_line: bool  # this record started a new line (the preset or the rules changed, or the first record)
    customers: int = 0  # customers with a segment on the line at this date
    skipped: str | None = None  # why nothing was recorded (a partial record without a matching line)


def create_history_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""CREATE TABLE IF NOT EXISTS {LINES} (line INTEGER PRIMARY KEY, preset VARCHAR NOT NULL,
                    rules_hash VARCHAR NOT NULL, started_on DATE NOT NULL)""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {RECORDS} (line INTEGER NOT NULL, as_of DATE NOT NULL,
                    source VARCHAR NOT NULL, customers BIGINT NOT NULL, recorded_at TIMESTAMPTZ NOT NULL,
                    PRIMARY KEY (line, as_of))""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {HISTORY} (line INTEGER NOT NULL, customer_id VARCHAR NOT NULL,
                    segment VARCHAR NOT NULL, valid_from DATE NOT NULL, valid_to DATE)""")


def has_history(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con`` sees the history tables (the store, or a reader's copy of them)."""
    names = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    return {LINES, RECORDS, HISTORY} <= names


def rules_hash(seg: SegmentationConfig) -> str:
    """A short hash of the effective rules (custom rules, then the preset's; default segment, levels, method,
    fixed thresholds): the same hash means the same map from scores to segments."""
    from segmentation.engine import configured_rules

    rules, default, levels = configured_rules(seg)
    doc = {"rules": [[n, list(p)] for n, p in rules], "default": default, "levels": levels, "method": seg.method,
           "thresholds": seg.thresholds.model_dump() if seg.thresholds else None}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def current_line(con: duckdb.DuckDBPyConnection) -> dict | None:
    """The current line (``line``, ``preset``, ``rules_hash``, ``started_on``), or None before any record."""
    if not has_history(con):
        return None
    found = con.execute(f"SELECT line, preset, rules_hash, started_on FROM {LINES} ORDER BY line DESC LIMIT 1"
                        ).fetchall()
    return dict(zip(("line", "preset", "rules_hash", "started_on"), found[0])) if found else None


def lines(con: duckdb.DuckDBPyConnection) -> list[dict]:
    if not has_history(con):
        return []
    rows = con.execute(f"SELECT line, preset, rules_hash, started_on FROM {LINES} ORDER BY line").fetchall()
    return [dict(zip(("line", "preset", "rules_hash", "started_on"), r)) for r in rows]


def record(con: duckdb.DuckDBPyConnection, segments_table: str, *, as_of: date, preset: str, rules_hash: str,
           source: str, mark: int | None = None) -> RecordResult:
    """Record each customer's segment in ``segments_table`` (customer_id, segment) as of ``as_of``.

    One transaction. See the module docstring for the rules (replace the day, refuse an earlier date,
    partial ``webhook`` records). ``mark``: a full record of a snapshot taken when the latest partial record
    was ``mark`` (:func:`~sync.store.history_partial.current_mark`) leaves the customers a webhook recorded
    for ``as_of`` since then as the webhook recorded them (their data is newer than the snapshot)."""
    if source not in SOURCES:
        raise ValueError(f"record: source must be one of {SOURCES}, not {source!r}")
    partial = source == "webhook"
    create_history_tables(con)
    con.execute("BEGIN TRANSACTION")
    try:
        result = _record(con, segments_table, as_of, preset, rules_hash, source, partial, mark)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_SNAPSHOT}")
        con.execute(f"DROP TABLE IF EXISTS {_KEPT}")
    return result


def _record(con, segments_table: str, as_of: date, preset: str, rules: str, source: str,
            partial: bool, mark: int | None) -> RecordResult:
    cur = current_line(con)
    last = con.execute(f"SELECT max(as_of) FROM {RECORDS}").fetchall()[0][0]
    if last is not None and as_of < last:
        raise HistoryOrderError(f"segment history: {as_of} is earlier than the last recorded date {last}; history "
                                f"is recorded in date order (record {last} or later)")
    new_line = cur is None or (cur["preset"], cur["rules_hash"]) != (preset, rules)
    if new_line and partial:
        why = "no history yet" if cur is None else "the rules changed since the last full record"
        return RecordResult(0, None, False, skipped=f"{why}: the next sync starts the history line")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_SNAPSHOT} AS SELECT DISTINCT CAST(customer_id AS VARCHAR) "
                f"AS customer_id, CAST(segment AS VARCHAR) AS segment FROM {segments_table}")
    day = {"d": as_of}
    line = (cur["line"] + 1) if new_line and cur else 1 if new_line else cur["line"]
    again = not new_line and con.execute(f"SELECT count(*) FROM {RECORDS} WHERE line = {line} AND as_of = $d",
                                         day).fetchall()[0][0] > 0
    if partial:  # by key: the affected customers' rows only (sync.store.history_partial)
        moves, customers = record_partial(con, _SNAPSHOT, line, as_of, again, HISTORY, RECORDS)
    else:
        moves = _record_full(con, line, as_of, new_line, again, preset, rules, mark)
        customers = con.execute(f"SELECT count(*) FROM {HISTORY} WHERE line = {line} AND {_valid('$d')}", day
                                ).fetchall()[0][0]
    con.execute(f"""INSERT INTO {RECORDS} VALUES (?, ?, ?, ?, ?) ON CONFLICT (line, as_of) DO UPDATE SET
                    customers = excluded.customers, recorded_at = excluded.recorded_at,
                    source = CASE WHEN excluded.source = 'webhook' THEN {RECORDS}.source ELSE excluded.source END""",
                [line, as_of, source, customers, datetime.now(timezone.utc)])
    return RecordResult(moves, line, new_line, customers)


def _record_full(con, line: int, as_of: date, new_line: bool, again: bool, preset: str, rules: str,
                 mark: int | None) -> int:
    """A full record (a scan of the line: it holds every customer anyway); returns the moves."""
    day = {"d": as_of}
    if new_line:
        _bulk(con, f"SELECT count(*) FROM {_SNAPSHOT}")
        con.execute(f"INSERT INTO {LINES} VALUES (?, ?, ?, ?)", [line, preset, rules, as_of])
        con.execute(f"INSERT INTO {HISTORY} SELECT {line}, customer_id, segment, $d, NULL FROM {_SNAPSHOT}", day)
        drop_marks_before(con, as_of)
        return 0
    kept = ""  # customers a webhook recorded for this day after the snapshot was taken keep the webhook's rows
    if mark is not None and marked_since(con, mark, as_of, _KEPT):
        con.execute(f"DELETE FROM {_SNAPSHOT} WHERE customer_id IN (SELECT customer_id FROM {_KEPT})")
        kept = f"AND customer_id NOT IN (SELECT customer_id FROM {_KEPT})"
    if again:  # the same day again: undo what this day changed
        _bulk(con, f"SELECT count(*) FROM {HISTORY} WHERE line = {line} AND valid_from = $d", day)
        con.execute(f"DELETE FROM {HISTORY} WHERE line = {line} AND valid_from = $d {kept}", day)
        con.execute(f"UPDATE {HISTORY} SET valid_to = NULL WHERE line = {line} AND valid_to = $d {kept}", day)
    # one join: who changed (old → new); a full record also closes the customers it no longer holds
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _history_diff AS
        SELECT coalesce(s.customer_id, h.customer_id) AS customer_id, h.segment AS old, s.segment AS new
        FROM {_SNAPSHOT} s FULL OUTER JOIN (SELECT customer_id, segment FROM {HISTORY}
                                           WHERE line = {line} AND valid_to IS NULL {kept}) h USING (customer_id)
        WHERE h.segment IS DISTINCT FROM s.segment""")
    moves = con.execute("SELECT count(*) FROM _history_diff WHERE old IS NOT NULL AND new IS NOT NULL"
                        ).fetchall()[0][0]
    _bulk(con, "SELECT count(*) FROM _history_diff")
    con.execute(f"""UPDATE {HISTORY} AS h SET valid_to = $d FROM _history_diff c
                    WHERE h.line = {line} AND h.valid_to IS NULL AND h.customer_id = c.customer_id
                      AND c.old IS NOT NULL""", day)
    con.execute(f"INSERT INTO {HISTORY} SELECT {line}, customer_id, new, $d, NULL FROM _history_diff "
                f"WHERE new IS NOT NULL", day)
    con.execute("DROP TABLE _history_diff")
    drop_marks_before(con, as_of)
    return moves


def _bulk(con, count_sql: str, params: dict | None = None) -> None:
    """Before writing more than ``BULK_ROWS`` history rows, drop the history's lookup index: DuckDB maintains
    it row by row, which costs more than the next webhook resync building it again."""
    if con.execute(count_sql, params or {}).fetchall()[0][0] > BULK_ROWS:
        drop_lookup_indexes(con, only=HISTORY)


def _valid(day: str, alias: str = "") -> str:
    """The SQL condition "this row is the customer's segment on ``day``" (a SQL date expression)."""
    a = f"{alias}." if alias else ""
    return f"{a}valid_from <= {day} AND ({a}valid_to IS NULL OR {a}valid_to > {day})"


def recorded_dates(con: duckdb.DuckDBPyConnection, line: int | None = None) -> list[date]:
    """The recorded dates of ``line`` (the current line when None), oldest first."""
    if not has_history(con):
        return []
    which = str(int(line)) if line is not None else f"(SELECT max(line) FROM {LINES})"
    return [r[0] for r in con.execute(f"SELECT as_of FROM {RECORDS} WHERE line = {which} ORDER BY as_of"
                                      ).fetchall()]


def records(con: duckdb.DuckDBPyConnection, since: date | None = None) -> list[dict]:
    """Every recorded run (``line``, ``as_of``, ``source``, ``customers``), oldest first."""
    if not has_history(con):
        return []
    rows = con.execute(f"SELECT line, as_of, source, customers FROM {RECORDS} WHERE $since IS NULL OR as_of >= "
                       f"$since ORDER BY as_of, line", {"since": since}).fetchall()
    return [dict(zip(("line", "as_of", "source", "customers"), r)) for r in rows]


def sizes(con: duckdb.DuckDBPyConnection, since: date | None = None) -> list[dict]:
    """Segment sizes at each recorded date (of its line) from ``since`` on: rows {as_of, line, segment,
    customers}, by date then segment."""
    if not has_history(con):
        return []
    rows = con.execute(f"""
        SELECT r.as_of, r.line, h.segment, count(*) FROM {RECORDS} r JOIN {HISTORY} h
          ON h.line = r.line AND {_valid('r.as_of', 'h')}
        WHERE $since IS NULL OR r.as_of >= $since
        GROUP BY ALL ORDER BY r.as_of, r.line, h.segment""", {"since": since}).fetchall()
    return [{"as_of": a, "line": ln, "segment": s, "customers": n} for a, ln, s, n in rows]


def line_on(con: duckdb.DuckDBPyConnection, day: date) -> int | None:
    """The line that holds ``day``: the latest line started on or before it."""
    if not has_history(con):
        return None
    return con.execute(f"SELECT max(line) FROM {LINES} WHERE started_on <= ?", [day]).fetchall()[0][0]


def transition_matrix(con: duckdb.DuckDBPyConnection, date_from: date, date_to: date) -> list[dict]:
    """Customers by (segment on ``date_from``, segment on ``date_to``), moved and stayed: rows {from, to,
    customers}. Both dates must be on one history line (a DataError says where the line changed)."""
    if date_from > date_to:
        raise DataError(f"history: --from {date_from} is after --to {date_to}")
    line = line_on(con, date_to)
    if line is None:
        raise DataError(f"history: nothing recorded on or before {date_to}")
    started = con.execute(f"SELECT started_on FROM {LINES} WHERE line = ?", [line]).fetchall()[0][0]
    if date_from < started:
        raise DataError(f"history: {date_from} and {date_to} are on different history lines (the preset or the "
                        f"rules changed on {started}); compare dates from {started} on")
    rows = con.execute(f"""
        WITH a AS (SELECT customer_id, segment FROM {HISTORY} WHERE line = $line AND {_valid('$f')}),
             b AS (SELECT customer_id, segment FROM {HISTORY} WHERE line = $line AND {_valid('$t')})
        SELECT a.segment, b.segment, count(*) FROM a JOIN b USING (customer_id) GROUP BY ALL ORDER BY ALL""",
                       {"line": line, "f": date_from, "t": date_to}).fetchall()
    return [{"from": f, "to": t, "customers": n} for f, t, n in rows]


def customer_history(con: duckdb.DuckDBPyConnection, customer_id: str) -> list[dict]:
    """One customer's rows, oldest first: {line, segment, valid_from, valid_to}."""
    if not has_history(con):
        return []
    rows = con.execute(f"SELECT line, segment, valid_from, valid_to FROM {HISTORY} WHERE customer_id = ? "
                       f"ORDER BY line, valid_from", [customer_id]).fetchall()
    return [dict(zip(("line", "segment", "valid_from", "valid_to"), r)) for r in rows]


def prune_before(con: duckdb.DuckDBPyConnection, day: date) -> dict[str, int]:
    """Drop what lies wholly before ``day``: rows that ended on or before it, records dated before it, and
    older lines left empty. Rows still valid on ``day`` keep their start date. Returns rows/records deleted."""
    if not has_history(con):
        return {"rows": 0, "records": 0, "lines": 0}
    con.execute("BEGIN TRANSACTION")
    try:
        _bulk(con, f"SELECT count(*) FROM {HISTORY} WHERE valid_to <= $d", {"d": day})
        rows = con.execute(f"DELETE FROM {HISTORY} WHERE valid_to <= ?", [day]).fetchall()[0][0]
        recs = con.execute(f"DELETE FROM {RECORDS} WHERE as_of < ?", [day]).fetchall()[0][0]
        gone = con.execute(f"""DELETE FROM {LINES} l WHERE line < (SELECT max(line) FROM {LINES})
                               AND NOT EXISTS (SELECT 1 FROM {RECORDS} r WHERE r.line = l.line)
                               AND NOT EXISTS (SELECT 1 FROM {HISTORY} h WHERE h.line = l.line)""").fetchall()[0][0]
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return {"rows": rows, "records": recs, "lines": gone}


def recent_moves_sql(as_of: date, days: int, *, segments_table: str | None = None, line: int | None = None,
                     keyed: bool = False) -> str:
    """A SELECT of (customer_id, from_segment, to_segment, moved_on): each customer's latest move on the line
    (the current one when ``line`` is None) as of ``as_of``, when ``moved_on > as_of - days``; one row per
    customer at most. A customer who first appears (or comes back after a gap) has not moved.

    ``segments_table`` (customer_id, segment): this run's segments, not recorded yet, count as the record of
    ``as_of`` (what the history will say once the run records), so a plan sees today's moves before the sync
    that makes them records them. Recorded or not, the answer is the same.

    ``keyed`` (with ``segments_table``, a few customers: a webhook resync): the history rows of those customers
    are fetched first by a join on ``customer_id`` alone, which the store's lookup index answers (any other
    filter on that scan would make DuckDB scan the whole history), and filtered afterwards."""
    d, days = f"DATE '{as_of.isoformat()}'", int(days)
    ln = str(int(line)) if line is not None else f"(SELECT max(line) FROM {LINES})"
    h = f"(SELECT customer_id, segment, valid_from, valid_to FROM {HISTORY} WHERE line = {ln})"
    if keyed and segments_table is not None:
        # any filter beside the keyed join makes DuckDB scan the whole history, and it pushes into a CTE the
        # disjunction of its references' filters: OFFSET 0 keeps them out
        p = f"(SELECT line, customer_id, segment, valid_from, valid_to FROM _history_keyed WHERE line = {ln})"
        return f"""WITH _history_keyed AS MATERIALIZED (SELECT h.* FROM {HISTORY} h
                                           JOIN (SELECT DISTINCT customer_id FROM {segments_table}) k
                                           USING (customer_id) OFFSET 0)
            {_moves_of(p, '_history_keyed', segments_table, d, days)}"""
    if segments_table is None:
        return f"""SELECT c.customer_id, p.segment AS from_segment, c.segment AS to_segment, c.valid_from AS moved_on
            FROM {h} c JOIN {h} p ON p.customer_id = c.customer_id AND p.valid_to = c.valid_from
            WHERE {_valid(d, 'c')} AND c.valid_from > {d} - {days}"""
    h = f"(SELECT line, customer_id, segment, valid_from, valid_to FROM {HISTORY} WHERE line = {ln})"
    return _moves_of(h, h, segments_table, d, days)


def _moves_of(p: str, q: str, segments_table: str, d: str, days: int) -> str:
    """Today's moves (``p``: the line's rows, against the run's segments) and the earlier moves still within
    ``days`` (``q``: the row each of those follows, on the same line)."""
    return f"""SELECT p.customer_id, p.segment AS from_segment, s.segment AS to_segment, {d} AS moved_on
            FROM {p} p JOIN {segments_table} s ON s.customer_id = p.customer_id
            WHERE {_valid(f'({d} - 1)', 'p')} AND s.segment <> p.segment
        UNION ALL
        SELECT p.customer_id, q.segment, p.segment, p.valid_from
            FROM {p} p JOIN {segments_table} s ON s.customer_id = p.customer_id AND s.segment = p.segment
            JOIN {q} q ON q.customer_id = p.customer_id AND q.line = p.line AND q.valid_to = p.valid_from
            WHERE {_valid(f'({d} - 1)', 'p')} AND p.valid_from > {d} - {days}"""


__all__ = ["HistoryOrderError", "RecordResult", "create_history_tables", "current_line", "customer_history",
           "has_history", "line_on", "lines", "prune_before", "recent_moves_sql", "record", "recorded_dates",
           "records", "rules_hash", "sizes", "transition_matrix"]
