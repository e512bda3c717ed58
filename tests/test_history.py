"""Segment history (issue 16 §1): type-2 storage, changes only; the same day replaces; a new line when the
rules change; ``rfmsync history`` (sizes, matrix, prune) and ``segments --record`` through the CLI."""

from __future__ import annotations

import json
from datetime import date, timedelta

import duckdb
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from sync.errors import DataError
from sync.store import history
from tests.builders import run_cli
from tests.profiles import examples

D0 = date(2025, 6, 30)


def snap(con, segments: dict[str, str], table: str = "snap") -> str:
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (customer_id VARCHAR, segment VARCHAR)")
    if segments:
        con.executemany(f"INSERT INTO {table} VALUES (?, ?)", list(segments.items()))
    return table


def rec(con, day: date, segments: dict[str, str], *, preset: str = "tracks", rules: str = "h1",
        source: str = "sync") -> history.RecordResult:
    return history.record(con, snap(con, segments), as_of=day, preset=preset, rules_hash=rules, source=source)


def rows(con) -> list[tuple]:
    return con.execute("SELECT line, customer_id, segment, valid_from, valid_to FROM segment_history "
                       "ORDER BY ALL").fetchall()


def expected_rows(days: list[tuple[date, dict[str, str]]], line: int = 1) -> list[tuple]:
    """The naive model: each customer's runs of one segment over the recorded days (last snapshot of a day)."""
    by_day: dict[date, dict[str, str]] = {}
    for d, s in days:
        by_day[d] = s
    out: list[tuple] = []
    open_: dict[str, tuple[str, date]] = {}
    for d in sorted(by_day):
        s = by_day[d]
        for cid, (seg, start) in list(open_.items()):
            if s.get(cid) != seg:
                out.append((line, cid, seg, start, d))
                del open_[cid]
        for cid, seg in s.items():
            if cid not in open_:
                open_[cid] = (seg, d)
    out += [(line, cid, seg, start, None) for cid, (seg, start) in open_.items()]
    return sorted(out, key=lambda r: (r[0], r[1], r[2], r[3], r[4] or date.max))


snapshots = st.dictionaries(st.sampled_from("abcde"), st.sampled_from(["A", "B", "C"]), max_size=5)


@hsettings(max_examples=examples(15), deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), snapshots), min_size=1, max_size=6))
def test_recording_days_with_reruns_equals_recording_each_day_once_in_order(steps):
    """A re-run for the same as-of replaces that day: any sequence of records (days repeated) leaves what the
    day-by-day model of the last snapshot per day leaves."""
    con = duckdb.connect()
    day, days = D0, []
    for gap, s in steps:
        day = day + timedelta(days=gap)
        rec(con, day, s)
        days.append((day, s))
    assert sorted(rows(con), key=lambda r: (r[0], r[1], r[2], r[3], r[4] or date.max)) == expected_rows(days)
    once = duckdb.connect()
    by_day = dict(days)
    for d in sorted(by_day):
        rec(once, d, by_day[d])
    assert rows(con) == rows(once)


def test_an_unchanged_day_adds_no_history_row_and_a_move_adds_one():
    con = duckdb.connect()
    first = rec(con, D0, {"a": "A", "b": "B"})
    assert (first.line, first.new_line, first.moves, first.customers) == (1, True, 0, 2)
    before = len(rows(con))
    same = rec(con, D0 + timedelta(days=1), {"a": "A", "b": "B"})
    assert (same.moves, same.new_line) == (0, False)
    assert len(rows(con)) == before  # changes only: nothing new for an unchanged day
    assert history.recorded_dates(con) == [D0, D0 + timedelta(days=1)]
    moved = rec(con, D0 + timedelta(days=2), {"a": "B", "b": "B"})
    assert moved.moves == 1 and len(rows(con)) == before + 1


def test_an_earlier_date_than_the_last_record_is_refused_with_a_clear_message():
    con = duckdb.connect()
    rec(con, D0, {"a": "A"})
    with pytest.raises(history.HistoryOrderError, match=r"2025-06-29 is earlier than the last recorded date "
                                                         r"2025-06-30"):
        rec(con, D0 - timedelta(days=1), {"a": "B"})
    assert rows(con) == [(1, "a", "A", D0, None)]  # nothing changed (one transaction)


def test_a_new_preset_or_new_rules_start_a_new_line_without_fake_moves():
    con = duckdb.connect()
    rec(con, D0, {"a": "Best active", "b": "Churn"})
    other = rec(con, D0 + timedelta(days=1), {"a": "VIP", "b": "Lost"}, preset="crm-4", rules="h2")
    assert (other.line, other.new_line, other.moves) == (2, True, 0)
    rules = rec(con, D0 + timedelta(days=2), {"a": "Mine", "b": "Lost"}, preset="crm-4", rules="h3")
    assert (rules.line, rules.new_line, rules.moves) == (3, True, 0)
    day = D0 + timedelta(days=2)
    assert con.sql(history.recent_moves_sql(day, 7)).fetchall() == []  # nobody moved on the new line
    with pytest.raises(DataError, match="different history lines"):
        history.transition_matrix(con, D0, day)
    assert [ln["preset"] for ln in history.lines(con)] == ["tracks", "crm-4", "crm-4"]


def test_a_webhook_record_touches_only_its_customers_and_never_starts_a_line():
    con = duckdb.connect()
    assert rec(con, D0, {"a": "A"}, source="webhook").skipped  # no line yet: the next sync starts it
    assert rows(con) == []
    rec(con, D0, {"a": "A", "b": "B", "c": "C"})
    done = rec(con, D0 + timedelta(days=1), {"b": "C"}, source="webhook")
    assert done.moves == 1 and done.customers == 3
    assert rows(con) == [(1, "a", "A", D0, None), (1, "b", "B", D0, D0 + timedelta(days=1)),
                         (1, "b", "C", D0 + timedelta(days=1), None), (1, "c", "C", D0, None)]
    assert rec(con, D0 + timedelta(days=1), {"b": "C"}, source="webhook", rules="other").skipped
    # a full record for the same day replaces the webhook's changes too and keeps source = sync
    rec(con, D0 + timedelta(days=1), {"a": "A", "b": "B", "c": "C"})
    assert [r["source"] for r in history.records(con)] == ["sync", "sync"]
    assert len(rows(con)) == 3


def test_sizes_matrix_moves_and_prune():
    con = duckdb.connect()
    d1, d2 = D0 + timedelta(days=1), D0 + timedelta(days=2)
    rec(con, D0, {"a": "A", "b": "A", "c": "B"})
    rec(con, d1, {"a": "B", "b": "A", "c": "B"})
    rec(con, d2, {"a": "B", "b": "C"})  # c is gone
    assert history.sizes(con, since=d2) == [{"as_of": d2, "line": 1, "segment": "B", "customers": 1},
                                            {"as_of": d2, "line": 1, "segment": "C", "customers": 1}]
    assert history.transition_matrix(con, D0, d2) == [{"from": "A", "to": "B", "customers": 1},
                                                      {"from": "A", "to": "C", "customers": 1}]
    assert sorted(con.sql(history.recent_moves_sql(d2, 7)).fetchall()) == [("a", "A", "B", d1), ("b", "A", "C", d2)]
    assert con.sql(history.recent_moves_sql(d2, 1)).fetchall() == [("b", "A", "C", d2)]
    assert history.customer_history(con, "a")[-1] == {"line": 1, "segment": "B", "valid_from": d1, "valid_to": None}
    done = history.prune_before(con, d2)
    assert done == {"rows": 3, "records": 2, "lines": 0}
    assert history.recorded_dates(con) == [d2] and history.sizes(con)[0]["customers"] == 1


def test_pending_moves_of_an_unrecorded_run_equal_the_moves_once_recorded():
    con = duckdb.connect()
    d1, d2, d3 = (D0 + timedelta(days=i) for i in (1, 2, 3))
    rec(con, D0, {"a": "A", "b": "A", "c": "B"})
    rec(con, d1, {"a": "B", "b": "A", "c": "B"})
    today = snap(con, {"a": "B", "b": "C", "c": "B"}, "today")
    pending = sorted(con.sql(history.recent_moves_sql(d3, 7, segments_table=today)).fetchall())
    rec(con, d3, {"a": "B", "b": "C", "c": "B"})
    assert pending == sorted(con.sql(history.recent_moves_sql(d3, 7)).fetchall())
    assert pending == [("a", "A", "B", d1), ("b", "A", "C", d3)]
    # again for the same day (already recorded): the same answer
    assert sorted(con.sql(history.recent_moves_sql(d3, 7, segments_table=today)).fetchall()) == pending
    del d2


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def shop(tmp_path):
    from sync.demodata import generate_shop

    return generate_shop(tmp_path / "shop", customers=120, seed=4, as_of=D0)


def add_order(shop, customer: str, day: date, amount: str = "900 000,00", number: int = 990001) -> None:
    orders = shop.parent / "orders.csv"
    with orders.open("a", encoding="utf-8") as f:
        f.write(f"{number};{day:%d.%m.%Y} 12:00;{customer};;;{amount};;Продажа\n")


def segment_of(shop, customer: str, day: date) -> str:
    import csv
    import io

    text = run_cli("segments", "--config", str(shop), "--as-of", str(day), "--customers", "--no-predict", "-o",
                   "-").stdout
    return next(r["segment"] for r in csv.DictReader(io.StringIO(text)) if r["customer_id"] == customer)


def test_history_cli_sizes_matrix_and_the_new_line_note(shop):
    assert "No segment history yet" in run_cli("history", "--config", str(shop)).output
    assert "nothing recorded yet" in run_cli("history", "--config", str(shop), "--matrix", code=3).output
    run_cli("segments", "--config", str(shop), "--as-of", str(D0), "--record")
    assert "fewer than two recorded dates" in run_cli("history", "--config", str(shop), "--matrix", code=3).output
    churned = json.loads(run_cli("segments", "--config", str(shop), "--as-of", str(D0), "--segment", "Churn",
                                 "--format", "json").stdout)["customers"][0]["customer_id"]
    d1 = D0 + timedelta(days=1)
    add_order(shop, churned, d1)
    recorded = run_cli("segments", "--config", str(shop), "--as-of", str(d1), "--record")
    assert "recorded the segments as of 2025-07-01" in recorded.output
    moved_to = segment_of(shop, churned, d1)
    assert moved_to != "Churn"
    explained = json.loads(run_cli("explain", churned, "--config", str(shop), "--as-of", str(d1), "--format",
                                   "json").stdout)
    assert [(h["segment"], h["valid_from"], h["valid_to"]) for h in explained["history"]] == [
        ("Churn", str(D0), str(d1)), (moved_to, str(d1), None)]

    matrix = json.loads(run_cli("history", "--config", str(shop), "--matrix", "--format", "json").stdout)
    assert (matrix["from"], matrix["to"]) == (str(D0), str(d1))
    assert {"from": "Churn", "to": moved_to, "customers": 1} in [m for m in matrix["matrix"] if m["from"] != m["to"]]
    table = run_cli("history", "--config", str(shop), "--from", str(D0), "--to", str(d1)).output
    assert "Segment moves 2025-06-30 → 2025-07-01" in table and "customers moved" in table
    sizes = run_cli("history", "--config", str(shop), "--format", "csv").stdout.splitlines()
    assert sizes[0] == "as_of,line,segment,customers" and any(r.startswith("2025-07-01,1,Churn,") for r in sizes)
    assert "History line 1: preset tracks" in run_cli("history", "--config", str(shop)).output

    # a new preset: a new line, said so, and no fake moves
    cfg = shop.read_text(encoding="utf-8").replace('preset = "tracks"', 'preset = "crm-4"')
    shop.write_text(cfg.split("[[destinations]]")[0], encoding="utf-8")
    out = run_cli("segments", "--config", str(shop), "--as-of", str(d1 + timedelta(days=1)), "--record").output
    assert "0 moved, a new history line 2: the preset or the rules changed" in out
    table = run_cli("history", "--config", str(shop)).output
    assert "History line 2: preset crm-4" in table and "a new line: the preset or the rules changed" in table
    assert "different history lines" in run_cli("history", "--config", str(shop), "--from", str(D0), code=3).output
    # an earlier date is refused, clearly (exit 3)
    late = run_cli("segments", "--config", str(shop), "--as-of", str(D0), "--record", code=3).output
    assert "is earlier than the last recorded date" in late

    pruned = json.loads(run_cli("history", "--config", str(shop), "--prune-before", str(d1), "--format",
                                "json").stdout)
    assert pruned["records"] == 1
    assert run_cli("history", "--config", str(shop), "--prune-before", str(d1), "--matrix", code=2)
    assert "--since is for the sizes" in run_cli("history", "--config", str(shop), "--since", str(d1), "--matrix",
                                                 code=2).output


def test_segments_record_refuses_a_preset_override(shop):
    out = run_cli("segments", "--config", str(shop), "--record", "--preset", "crm-4", code=2).output
    assert "drop --preset" in out
