"""Local calendar days of UTC instants in SQL: exact, without a time-zone lookup per row.

``(ordered_at AT TIME ZONE tz)::DATE`` asks ICU for the offset of every row: about 1.4 s per pass over 10 M
orders. Between two of the zone's transitions the offset is a constant, so :func:`local_day_sql` finds the
transitions within the column's own range once and adds the right constant: a ``CASE`` with one arm per
transition (none for a zone without daylight saving). The transitions are read from DuckDB's own ICU, hour by
hour and then second by second around each change, so the result is ICU's by construction even where Python's
tz database is of another version.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb

MAX_SPANS = 16  # more transitions than this in the data's range (decades of daylight saving): let ICU do it


def check_timezone(timezone: str) -> str:
    """Return ``timezone`` if it names an IANA zone, else raise ``ValueError``."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {timezone!r}: use an IANA name such as 'Europe/Berlin'") from None
    return timezone


def _lit(tz: str) -> str:
    return "'" + tz.replace("'", "''") + "'"


def utc_offset_spans(con: duckdb.DuckDBPyConnection, tz: str, start: datetime, end: datetime
                     ) -> list[tuple[datetime, int]]:
    """``[(from, offset seconds), ...]``: ICU's UTC offset for ``tz`` from each ``from`` until the next one,
    covering ``start``..``end``. The first span starts before ``start``. Both grids sit on whole seconds, as
    the tz data's transitions do, so each ``from`` is the transition's exact instant."""
    off = f"(epoch_us(timezone({_lit(tz)}, ts)) - epoch_us(ts)) // 1000000"
    hours = con.execute(f"""
        SELECT ts, off, prev FROM (
            SELECT ts, off, lag(off) OVER (ORDER BY ts) AS prev
            FROM (SELECT ts, {off} AS off FROM generate_series(date_trunc('hour', ?::TIMESTAMPTZ) - INTERVAL 1 HOUR,
                                                               ?::TIMESTAMPTZ + INTERVAL 1 HOUR, INTERVAL 1 HOUR) g(ts)))
        WHERE prev IS NULL OR off <> prev ORDER BY ts""", [start, end]).fetchall()
    spans = [(hours[0][0], int(hours[0][1]))]
    for hour, new, prev in hours[1:]:  # the change happened within the hour before ``hour``: find its second
        since = con.execute(f"""
            SELECT min(ts) FROM generate_series(date_trunc('second', ?::TIMESTAMPTZ) - INTERVAL 1 HOUR, ?::TIMESTAMPTZ,
                                                INTERVAL 1 SECOND) g(ts)
            WHERE {off} <> ?""", [hour, hour, prev]).fetchall()[0][0]
        spans.append((since, int(new)))
    return spans


def local_day_sql(con: duckdb.DuckDBPyConnection, col: str, tz: str, table: str = "orders") -> str:
    """A SQL expression: the local calendar DATE in ``tz`` of the TIMESTAMPTZ ``col`` of ``table``
    (equal to ``(col AT TIME ZONE tz)::DATE`` for every row of the table as it is now)."""
    icu = f"CAST(({col} AT TIME ZONE {_lit(tz)}) AS DATE)"
    # ICU when there are no rows, instants before the epoch (where // rounds the other way), a range beyond
    # 20 years or 2200 (a typo such as 31.12.9999, an 'infinity'), whose transitions would cost more to find
    # than they save. Checked in SQL first: such timestamps do not even convert to Python datetimes.
    # One scan: the range comes back only when usable (NULLs otherwise), so nothing out of range is fetched.
    lo, hi = con.execute(f"""SELECT CASE WHEN ok THEN lo END, CASE WHEN ok THEN hi END FROM (
                                 SELECT lo, hi, CASE WHEN isfinite(lo) AND isfinite(hi) THEN lo >= TIMESTAMPTZ '1971-01-01'
                                        AND hi < TIMESTAMPTZ '2200-01-01' AND hi < lo + INTERVAL 7320 DAY END AS ok
                                 FROM (SELECT min({col}) AS lo, max({col}) AS hi FROM {table}))""").fetchall()[0]
    if lo is None:
        return icu
    spans = utc_offset_spans(con, tz, lo, hi)
    if len(spans) > MAX_SPANS:
        return icu
    if len(spans) == 1:
        offset = str(spans[0][1])
    else:
        arms = " ".join(f"WHEN {col} < TIMESTAMPTZ '{since.isoformat()}' THEN {prev}"
                        for (since, _), (_, prev) in zip(spans[1:], spans[:-1]))
        offset = f"CASE {arms} ELSE {spans[-1][1]} END"
    return f"(DATE '1970-01-01' + CAST((epoch_us({col}) + CAST({offset} AS BIGINT) * 1000000) // 86400000000 AS INTEGER))"
