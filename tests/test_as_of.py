"""An as-of that does not fit the orders: before every completed order it is a warning naming the as-of and the
first order's day (a table of zeros was printed without a word); in the future it is a warning (customers look
less recent than they are); orders after the as-of never count, so no recency is negative."""

from __future__ import annotations

import csv
import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from sync.cli import main
from sync.pipeline import today_in
from tests.test_warnings import NEWEST, mailchimp, warning_lines, write_shop

FIRST = NEWEST - timedelta(days=3 * 59 + 80)  # write_shop's first order: customer 59's, 80 days before his last


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


@pytest.mark.parametrize("command", [["segments"], ["segments", "--format", "json"], ["predict"],
                                     ["segments", "--customers", "-o", "{tmp}/c.csv"], ["plan"],
                                     ["report", "-o", "{tmp}/r.html"]])
def test_an_as_of_before_every_order_warns_naming_the_first_orders_day(tmp_path, command):
    """A warning, not an error: a webhook resync or a scheduled sync as of today goes on with nobody to score."""
    cfg = write_shop(tmp_path / "shop", destination=mailchimp())
    before = FIRST - timedelta(days=1)
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    result = run(*args, "--config", str(cfg), "--as-of", before.isoformat())
    line = (f"warning: the as-of {before} is before every completed order: the first is of {FIRST} (the orders run "
            f"to {NEWEST}, days in UTC), so no customer has bought by then and every segment is empty; compute as "
            f"of {FIRST} or later (or leave --as-of out: today)")
    assert line in warning_lines(result)
    if "json" in command:
        assert line.removeprefix("warning: ") in json.loads(result.stdout)["warnings"]
    on_the_day = run("segments", "--config", str(cfg), "--as-of", FIRST.isoformat(), "--format", "json")
    doc = json.loads(on_the_day.stdout)
    assert doc["customers"] == 1 and not any("before every completed order" in w for w in doc["warnings"])


def test_the_first_orders_day_is_the_shops_local_day(tmp_path):
    """An order at 22:00 UTC is the next day in Tashkent (UTC+5): an as-of of the UTC day is before it there."""
    cfg = write_shop(tmp_path / "shop", extra='timezone = "Asia/Tashkent"')
    orders = tmp_path / "shop" / "orders.csv"
    rows = list(csv.reader(orders.open(encoding="utf-8")))
    rows.append(["early", "2023-01-09T22:00:00Z", "c0", "c0@example.org", "10.00"])
    with orders.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    result = run("segments", "--config", str(cfg), "--as-of", "2023-01-09")
    assert "the as-of 2023-01-09 is before every completed order: the first is of 2023-01-10" in result.stderr
    assert "days in Asia/Tashkent" in result.stderr
    assert json.loads(run("segments", "--config", str(cfg), "--as-of", "2023-01-10", "--format",
                          "json").stdout)["customers"] == 1


def test_an_as_of_in_the_future_warns_instead_of_calling_the_data_stale(tmp_path):
    cfg = write_shop(tmp_path / "shop", newest=today_in("UTC") - timedelta(days=2))
    ahead = today_in("UTC") + timedelta(days=400)
    result = run("segments", "--config", str(cfg), "--as-of", ahead.isoformat(), "--format", "json")
    [line] = warning_lines(result)
    today = ahead - timedelta(days=400)  # (the test's today: the command's, unless it ran across midnight)
    assert line == (f"warning: the as-of {ahead} is in the future: today is {today} in UTC, 400 days before it, and "
                    "no order is that recent, so every customer looks at least 400 days less recent than today "
                    "(recency, R score, segment, and the predictions count from the as-of); leave --as-of out to "
                    "compute as of today")
    assert json.loads(result.stdout)["warnings"] == [line.removeprefix("warning: ")]
    # today itself, or an old as-of, is not in the future
    assert warning_lines(run("segments", "--config", str(cfg), "--as-of", today.isoformat())) == []
    assert warning_lines(run("segments", "--config", str(cfg))) == []


def test_an_old_export_run_as_of_tomorrow_still_says_the_data_are_stale(tmp_path):
    """An export 100 days old run with --as-of tomorrow (a cron in a zone ahead of the config's) said only that
    customers look "at least 1 day less recent": the stale line, about the 100 days, was hidden by it."""
    today = today_in("UTC")
    newest = today - timedelta(days=100)
    cfg = write_shop(tmp_path / "shop", newest=newest)
    tomorrow = today + timedelta(days=1)
    result = run("segments", "--config", str(cfg), "--as-of", tomorrow.isoformat(), "--format", "json")
    future, stale = warning_lines(result)
    assert future.startswith(f"warning: the as-of {tomorrow} is in the future: today is {today} in UTC, 1 day ")
    assert stale == (f"warning: stale data: the newest order is 100 days old ({newest}) but the segments are computed "
                     f"as of {tomorrow}, so every customer looks 101 days less recent than they are; if this is an old "
                     f"export, run with --as-of {newest} ([guards] stale_days = 30)")
    assert json.loads(result.stdout)["warnings"] == [future.removeprefix("warning: "), stale.removeprefix("warning: ")]
    # as of today: the same stale line, 100 days
    [line] = warning_lines(run("segments", "--config", str(cfg), "--as-of", today.isoformat()))
    assert line.startswith(f"warning: stale data: the newest order is 100 days old ({newest}) but the segments are "
                           f"computed as of {today}, so every customer looks 100 days less recent")


def test_no_recency_is_negative_orders_after_the_as_of_do_not_count(tmp_path):
    cfg = write_shop(tmp_path / "shop")
    mid = NEWEST - timedelta(days=60)
    out = tmp_path / "c.csv"
    run("segments", "--config", str(cfg), "--as-of", mid.isoformat(), "--customers", "--no-predict", "-o", str(out))
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 60 - 0 and min(int(r["recency_days"]) for r in rows) == 0  # customer 20 bought that day
    assert {r["customer_id"]: int(r["frequency"]) for r in rows}["c0"] == 1  # c0's later orders do not count


def test_an_as_of_in_the_future_with_orders_after_today_does_not_say_no_order_is_that_recent(tmp_path):
    """Orders after today (a CRM clock ahead of the host's, pre-orders) made "no order is that recent, so every
    customer looks at least N days less recent" false: the line names how far the orders run instead."""
    today = today_in("UTC")
    newest = today + timedelta(days=3)
    cfg = write_shop(tmp_path / "shop", newest=newest, extra="max_days_ahead = 30")  # pre-orders are no bad rows
    ahead = today + timedelta(days=10)
    result = run("segments", "--config", str(cfg), "--as-of", ahead.isoformat(), "--format", "json")
    line = f"warning: the as-of {ahead} is in the future: today is {today} in UTC, 10 days before it, "
    assert [w for w in warning_lines(result) if w.startswith(line)] == [
        line + f"but the orders run to {newest}, after today (a CRM clock ahead of this host's, or pre-orders?): "
        "those up to the as-of count, and recency, R score, segment and the predictions count from the as-of; leave "
        "--as-of out to compute as of today"]
