"""segmentation.localtime: the local day by constant offsets between transitions equals ICU's, row for row."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from segmentation.localtime import MAX_SPANS, local_day_sql, utc_offset_spans

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tashkent", "Australia/Lord_Howe", "Asia/Kolkata",
         "America/St_Johns", "Europe/Moscow", "Pacific/Apia", "America/Sao_Paulo", "America/Vancouver",
         "Europe/Chisinau", "Africa/Casablanca", "Europe/Dublin", "Africa/Monrovia"]


def _table(values: list[datetime]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (ts TIMESTAMPTZ)")
    if values:
        con.executemany("INSERT INTO t VALUES (?)", [[v] for v in values])
    return con


@pytest.mark.parametrize("start", [datetime(1971, 6, 1), datetime(2012, 1, 1), datetime(2025, 6, 1)])
@pytest.mark.parametrize("tz", ZONES)
def test_local_day_equals_icu_also_next_to_every_transition(tz, start):
    """Also where Python's tz database and DuckDB's ICU disagree (2026 rules of some zones, say): the spans
    come from ICU, so the result is ICU's."""
    rng = random.Random(tz)
    base = start.replace(tzinfo=timezone.utc)
    values = [base + timedelta(seconds=rng.randint(0, 2 * 365 * 86400), microseconds=rng.randint(0, 999_999))
              for _ in range(400)]
    spans = utc_offset_spans(duckdb.connect(), tz, min(values), max(values))
    for since, _ in spans[1:]:  # the last microsecond before a transition, the transition, just after
        values += [since - timedelta(microseconds=1), since, since + timedelta(microseconds=1)]
    con = _table(values)
    expr = local_day_sql(con, "ts", tz, "t")
    assert "AT TIME ZONE" not in expr  # two years of any zone: the constant-offset form
    differ = con.execute(f"SELECT count(*) FROM t WHERE {expr} <> CAST((ts AT TIME ZONE '{tz}') AS DATE)").fetchall()
    assert differ[0][0] == 0


def test_long_daylight_saving_histories_and_old_instants_fall_back_to_icu():
    decades = [datetime(1995, 1, 1, tzinfo=timezone.utc), datetime(2020, 1, 1, tzinfo=timezone.utc)]
    assert len(utc_offset_spans(duckdb.connect(), "Europe/Berlin", *decades)) > MAX_SPANS
    assert "AT TIME ZONE" in local_day_sql(_table(decades), "ts", "Europe/Berlin", "t")
    old = [datetime(1900, 1, 1, tzinfo=timezone.utc), datetime(2020, 1, 1, tzinfo=timezone.utc)]
    assert "AT TIME ZONE" in local_day_sql(_table(old), "ts", "Asia/Tashkent", "t")
    assert "AT TIME ZONE" in local_day_sql(_table([]), "ts", "UTC", "t")  # no rows: nothing to measure


@pytest.mark.parametrize("far", ["12000-01-01 10:00:00+00", "9999-12-31 00:00:00+00", "infinity"])
def test_a_typo_date_far_in_the_future_falls_back_to_icu_at_once(far):
    con = _table([datetime(2025, 1, 1, tzinfo=timezone.utc)])
    con.execute(f"INSERT INTO t VALUES ('{far}')")
    expr = local_day_sql(con, "ts", "Asia/Tashkent", "t")
    assert "AT TIME ZONE" in expr
    assert con.execute(f"SELECT count(*) FROM t WHERE {expr} IS NOT NULL OR ts = 'infinity'").fetchall()[0][0] == 2
