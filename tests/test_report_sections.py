"""The report's predictions, grid axes and movement sections: their numbers against `segments`, `predict` and the
segment-history tables, and what the page shows when a section has nothing to show."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest

from sync import api
from sync.config import load_config
from sync.demodata import generate_shop
from sync.pipeline import store_path
from sync.report import build_report_data
from sync.report.data import movement
from tests.test_report import (AS_OF, HISTORY_DATES, _cli, _copy_shop, data, record_history,  # noqa: F401
                               record_shop_history, shop)


@pytest.fixture(scope="module")
def customers(shop, tmp_path_factory) -> list[dict]:
    """`segments --customers` with the predictive fields: one row per customer."""
    out = tmp_path_factory.mktemp("customers") / "customers.csv"
    _cli("segments", "--config", str(shop), "--as-of", AS_OF.isoformat(), "--customers", "-o", str(out))
    with out.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _page(cfg: Path, tmp_path: Path, *args: str) -> str:
    out = tmp_path / "r.html"
    _cli("report", "--config", str(cfg), "--as-of", AS_OF.isoformat(), "-o", str(out), *args)
    return out.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ predictions


def test_clv_distribution_expected_orders_and_due_reorders_equal_the_customers_file(shop, data, customers):
    pred = data["predictions"]
    remind = load_config(shop).predict_config().remind_days_before
    for c in customers:  # reorder_due = as_of >= next_order_date - remind_days_before (docs/predictions.md)
        nxt = c["next_order_date"] and date.fromisoformat(c["next_order_date"])
        c["reorder_due"] = bool(nxt) and AS_OF >= nxt - timedelta(days=remind)
    by_seg: dict[str, list[dict]] = defaultdict(list)
    for c in customers:
        by_seg[c["segment"]].append(c)
    assert [r["segment"] for r in pred["clv"]] == [s["segment"] for s in data["segments"] if s["segment"] in by_seg]
    for row in pred["clv"]:
        clv = np.array([float(c["clv"]) for c in by_seg[row["segment"]] if c["clv"]])
        assert row["customers"] == len(clv)
        expected = dict(zip(("p10", "q1", "median", "q3", "p90"), np.quantile(clv, [0.1, 0.25, 0.5, 0.75, 0.9])))
        expected |= {"min": clv.min(), "max": clv.max(), "mean": clv.mean()}
        assert {k: row[k] for k in expected} == pytest.approx(expected, abs=0.01)

    assert pred["horizon_days"] == 90 and pred["clv_horizon_days"] == 365
    assert pred["expected_orders"] == pytest.approx(sum(float(c["expected_purchases"]) for c in customers), abs=0.05)
    for s in pred["segments"]:
        members = by_seg[s["segment"]]
        assert s["expected_orders"] == pytest.approx(sum(float(c["expected_purchases"]) for c in members), abs=0.05)
        assert s["reorder_due"] == sum(c["reorder_due"] for c in members)

    due = [c for c in customers if c["reorder_due"]]
    late = Counter()
    for c in due:
        d = (AS_OF - date.fromisoformat(c["next_order_date"])).days
        late["upcoming" if d < 0 else "0-7" if d <= 7 else "8-30" if d <= 30 else "31-90" if d <= 90 else "90+"] += 1
    assert pred["reorders_due"]["customers"] == len(due) > 0
    assert pred["reorders_due"]["by_days_overdue"] == {g: late[g] for g in ("upcoming", "0-7", "8-30", "31-90", "90+")}


def test_the_holdout_groups_add_up_to_the_predict_commands_check(shop, data):
    check = json.loads(_cli("predict", "--config", str(shop), "--as-of", AS_OF.isoformat(),
                            "--format", "json"))["holdout"]
    shown = data["predictions"]["holdout"]
    for key in ("calibration_end", "holdout_days", "customers", "actual_purchases", "correlation"):
        assert shown[key] == check[key], key
    assert shown["predicted_purchases"] == pytest.approx(check["predicted_purchases"], rel=1e-9)
    groups = shown["groups"]
    assert [g["repeat_purchases"] for g in groups] == ["0", "1", "2", "3", "4", "5", "6+"]
    assert sum(g["customers"] for g in groups) == check["customers"]
    assert sum(g["actual"] for g in groups) == check["actual_purchases"]
    assert sum(g["predicted"] for g in groups) == pytest.approx(check["predicted_purchases"], abs=0.5)
    for g in groups:
        assert g["actual_per_customer"] == pytest.approx(g["actual"] / g["customers"], abs=0.001)


def test_the_page_shows_the_new_prediction_charts_and_tables(shop, data, tmp_path):
    html = _page(_copy_shop(shop, tmp_path), tmp_path)
    pred = data["predictions"]
    assert html.count('<svg class="chart clv"') == 1 and html.count('<g class="box">') == len(pred["clv"])
    assert html.count('<svg class="chart holdout"') == 1
    assert html.count('<rect class="hb"') == 2 * len(pred["holdout"]["groups"])
    assert len(re.findall(r'<tr class="clv">', html)) == len(pred["clv"])
    assert len(re.findall(r'<tr class="hgroup">', html)) == 7
    assert f"Expected orders in the next 90 days: {pred['expected_orders']:,}" in html
    assert f"{pred['reorders_due']['customers']} customers are due to reorder now" in html


def test_unfitted_models_leave_one_line_saying_why(tmp_path):
    cfg = generate_shop(tmp_path / "tiny", customers=30, seed=3, as_of=AS_OF)
    run = api.segments(load_config(cfg), AS_OF, predict=True, holdout=True)
    try:
        pred = build_report_data(run)["predictions"]
    finally:
        run.close()
    assert pred["fitted"] is False and "customers" in pred["reason"]
    html = _page(cfg, tmp_path)
    section = html[html.index('<section id="predictions">'):html.index('<section id="destinations">')]
    assert "Not fitted: " in section and "<svg" not in section and "<table" not in section


# ------------------------------------------------------------------------------------------ the grid's axes


def test_quantile_scoring_labels_each_score_with_its_value_range(shop, data, tmp_path):
    grid = data["grid"]
    assert grid["scored_by_cut_points"] is False
    for axis in ("r", "f"):
        expected = []
        for x in grid["ranges"][axis]:
            lo, hi = f"{x['min']:g}", f"{x['max']:g}"
            expected.append(lo if lo == hi else f"{lo}–{hi}")
        assert grid["axis_labels"][axis] == expected
    svg = re.search(r'<svg class="chart heatmap".*?</svg>', _page(_copy_shop(shop, tmp_path), tmp_path)).group(0)
    for label in grid["axis_labels"]["r"] + grid["axis_labels"]["f"]:
        assert f'class="ax range">{label}</text>' in svg


def test_threshold_scoring_puts_the_cut_points_on_the_axes(shop, customers, tmp_path):
    cfg = _copy_shop(shop, tmp_path)
    text = cfg.read_text(encoding="utf-8").replace('preset = "tracks"', '''preset = "tracks"
method = "thresholds"

[segmentation.thresholds]
recency_days = [60, 180]
frequency = [2, 4]
monetary = [500000, 1500000.5]''')
    cfg.write_text(text, encoding="utf-8")
    run = api.segments(load_config(cfg), AS_OF)
    try:
        grid = build_report_data(run)["grid"]
    finally:
        run.close()
    assert grid["scored_by_cut_points"] is True
    assert grid["axis_labels"]["r"] == ["≥ 181", "61–180", "≤ 60"]  # R1, R2, R3
    assert grid["axis_labels"]["f"] == ["≤ 1", "2–3", "≥ 4"]
    assert grid["axis_labels"]["m"][2] == "monetary >= 1500000.5"  # a fractional cut point: the rule itself
    assert grid["axis_labels"]["m"][0] == "< 500000"  # money has cents: 499 999.50 is in it (not "≤ 499999")
    for axis, col, bands in (("r", "recency_days", [(181, 10**6), (61, 180), (0, 60)]),
                             ("f", "frequency", [(0, 1), (2, 3), (4, 10**6)])):
        for x in grid["ranges"][axis]:  # every customer's value lies in the band its score's label says
            lo, hi = bands[x["score"] - 1]
            assert lo <= x["min"] <= x["max"] <= hi, (axis, x)
    html = _page(cfg, tmp_path)
    svg = re.search(r'<svg class="chart heatmap".*?</svg>', html).group(0)
    for label in ("≥ 181", "61–180", "≤ 60", "≤ 1", "2–3", "≥ 4"):
        assert f'class="ax range">{label}</text>' in svg
    assert "Under each score: its cut points ([segmentation.thresholds])." in html
    assert "rule: 60 &lt; recency_days &lt;= 180" in html


# ------------------------------------------------------------------------------------------ movement


def _segments_at(cfg, day: date) -> dict[str, str]:
    run = api.segments(cfg, day, boundary=False)
    try:
        return dict(run.con.execute(f"SELECT customer_id, segment FROM {run.result.table}").fetchall())
    finally:
        run.close()


def test_movement_of_recorded_runs_equals_the_segments_of_each_run(shop, tmp_path):
    cfg_path = _copy_shop(shop, tmp_path)
    record_shop_history(cfg_path, HISTORY_DATES)
    cfg = load_config(cfg_path)
    run = api.segments(cfg, AS_OF)
    try:
        move = build_report_data(run)["movement"]
    finally:
        run.close()
    assert [r["as_of"] for r in move["sizes"]] == [d.isoformat() for d in HISTORY_DATES]
    for row, day in zip(move["sizes"], HISTORY_DATES):
        sizes = Counter(_segments_at(cfg, day).values())
        assert {s: row[s] for s in move["segments"]} == {s: sizes.get(s, 0) for s in move["segments"]}, day
    before, after = _segments_at(cfg, HISTORY_DATES[-2]), _segments_at(cfg, HISTORY_DATES[-1])
    pairs = Counter((before.get(c), after.get(c)) for c in before.keys() | after.keys())
    assert {(m["from"], m["to"]): m["customers"] for m in move["matrix"]} == dict(pairs)
    assert (move["from"], move["to"]) == (HISTORY_DATES[-2].isoformat(), HISTORY_DATES[-1].isoformat())
    assert move["moved"] == sum(n for (a, b), n in pairs.items() if a and b and a != b) > 0
    assert move["new"] == sum(n for (a, _), n in pairs.items() if a is None) > 0

    html = _page(cfg_path, tmp_path)
    section = html[html.index('<section id="movement">'):html.index("<footer")]
    assert section.count('<svg class="chart sizes"') == 1 and section.count('<svg class="chart matrix"') == 1
    assert len(re.findall(r'<tr class="size">', section)) == len(HISTORY_DATES)
    n = len(move["segments"])  # plus a row of new customers, and a column of gone ones only when there are any
    assert len(re.findall(r'<rect class="mcell"', section)) == (n + 1) * (n + bool(move["gone"]))


def test_movement_follows_the_contract_current_line_dates_and_validity(shop, tmp_path):
    cfg_path = _copy_shop(shop, tmp_path)
    d1, d2, d3, later = date(2026, 5, 1), date(2026, 5, 15), AS_OF, date(2026, 7, 1)
    with duckdb.connect(str(store_path(load_config(cfg_path)))) as con:
        record_history(con, d1, [("a", "VIP"), ("b", "Lost")], line=1, preset="crm-4")  # an older line: ignored
        record_history(con, d2, [("a", "Lost"), ("b", "Lost")], line=1, preset="crm-4")
        record_history(con, d1, [("a", "Best active"), ("b", "Churn"), ("c", "Beginners"), ("e", "Falling asleep")],
                       line=2)
        record_history(con, d2, [("a", "Falling asleep"), ("b", "Churn"), ("e", "Falling asleep")], line=2)
        record_history(con, d3, [("a", "Falling asleep"), ("b", "Churn"), ("d", "Beginners"), ("e", "Churn")], line=2)
        record_history(con, later, [("a", "Churn")], line=2)  # after the page's as-of date: not shown
    run = api.segments(load_config(cfg_path), AS_OF)
    try:
        move = build_report_data(run)["movement"]
    finally:
        run.close()
    assert (move["line"], move["preset"], move["from"], move["to"]) == (2, "tracks", d2.isoformat(), d3.isoformat())
    assert move["segments"] == ["Best active", "Falling asleep", "Churn", "Beginners"]  # the preset's rule order
    assert move["sizes"] == [
        {"as_of": "2026-05-01", "Best active": 1, "Falling asleep": 1, "Churn": 1, "Beginners": 1},
        {"as_of": "2026-05-15", "Best active": 0, "Falling asleep": 2, "Churn": 1, "Beginners": 0},
        {"as_of": "2026-06-01", "Best active": 0, "Falling asleep": 1, "Churn": 2, "Beginners": 1}]
    assert move["matrix"] == [{"from": "Falling asleep", "to": "Falling asleep", "customers": 1},
                              {"from": "Falling asleep", "to": "Churn", "customers": 1},
                              {"from": "Churn", "to": "Churn", "customers": 1},
                              {"from": None, "to": "Beginners", "customers": 1}]
    assert (move["moved"], move["new"], move["gone"]) == (1, 1, 0)


def test_no_movement_section_without_two_records(shop, tmp_path):
    cfg_path = _copy_shop(shop, tmp_path)
    page = _page(cfg_path, tmp_path)  # no history recorded (the page names the tmp path: this test's name)
    assert 'id="movement"' not in page and 'href="#movement"' not in page
    with duckdb.connect(str(store_path(load_config(cfg_path)))) as con:
        record_history(con, AS_OF - timedelta(days=7), [("a", "Churn")])
    assert 'id="movement"' not in _page(cfg_path, tmp_path)  # one record
    with duckdb.connect(str(store_path(load_config(cfg_path)))) as con:
        record_history(con, AS_OF, [("a", "Churn"), ("b", "Beginners")])
    assert 'id="movement"' in _page(cfg_path, tmp_path)


def test_history_tables_in_the_runs_own_store_are_read_there(shop):
    """An API source segments the order store itself: the history tables are in the run's own database."""
    run = api.segments(load_config(shop), AS_OF)
    try:
        assert movement(run) is None
        record_history(run.con, AS_OF - timedelta(days=1), [("a", "Churn")])
        record_history(run.con, AS_OF, [("a", "Beginners")])
        move = movement(run)
    finally:
        run.close()
    assert move["matrix"] == [{"from": "Churn", "to": "Beginners", "customers": 1}] and move["moved"] == 1
