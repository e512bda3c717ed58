"""Quantile recency scores that collapse (docs/segments.md, docs/safety.md): when most customers share the best
recency (a shop with a day or two of history, an export whose date column is the export's date) the documented
rule scores the newest buyers R = 1, and every one of them lands in Churn. `segments` warns, `plan` warns with the
guard line, `sync` and `apply` refuse (exit 6, run `refused`, nothing written) unless `--allow-mass-change`.
"""

from __future__ import annotations

import csv
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from segmentation import SegmentationConfig, run_segmentation
from segmentation.scoring import RecencyCollapse
from sync.cli import main
from sync.data_guards import recency_collapse_text

from .builders import con_with_customers
from .test_warnings import mailchimp, warning_lines

AS_OF = date(2025, 6, 30)
SHOP_AS_OF = AS_OF.isoformat()
YOUNG_WARNING = ("warning: recency scores collapsed: 160 of 200 customers (80 %) share the best recency (0 days) "
                 "yet score R = 1 of 3, the score of the least recent customers")
GUARD = "guard recency_scores: 160 of 200 customers (80 %) share the best recency (0 days) yet score R = 1 of 3"


# ------------------------------------------------------------------------------------------- the rule


def collapse_of(spec: dict[str, tuple[int, int, float]], preset: str = "classic-5"):
    con = con_with_customers(spec)
    return run_segmentation(con, SegmentationConfig(preset=preset), AS_OF, with_boundary=False).recency_collapse


@pytest.mark.parametrize("best, expected_r", [
    (61, 2),  # 61 of 100 share the best recency: 1 + floor(5 × 39 / 100) = 2 of 5, the lower half
    (81, 1),  # 1 + floor(5 × 19 / 100) = 1: the worst recency's score
    (100, 1),  # everyone the same day: the single-date export
])
def test_a_shared_best_recency_scored_in_the_lower_half_is_a_collapse(best, expected_r):
    spec = {f"c{i:03d}": (1 if i < best else i + 1, 1 + i % 3, 10.0 + i) for i in range(100)}
    c = collapse_of(spec)
    assert (c.customers, c.total, c.days, c.score, c.levels) == (best, 100, 1, expected_r, 5)


@pytest.mark.parametrize("best", [1, 40, 60])
def test_a_best_recency_scored_in_the_upper_half_is_not(best):
    # 60 of 100: 1 + floor(5 × 40 / 100) = 3 of 5, the middle; fewer share it: higher
    spec = {f"c{i:03d}": (1 if i < best else i + 1, 1 + i % 3, 10.0 + i) for i in range(100)}
    assert collapse_of(spec) is None


def test_three_levels_collapse_only_at_r1():
    # 3 levels: R = 2 is the middle score, not the lower half; 67 of 100 give 1 + floor(3 × 33 / 100) = 1
    assert collapse_of({f"c{i:03d}": (1 if i < 60 else i + 1, 1, 10.0) for i in range(100)}, "tracks") is None
    assert collapse_of({f"c{i:03d}": (1 if i < 67 else i + 1, 1, 10.0) for i in range(100)}, "tracks").score == 1


def test_one_time_buyers_and_one_spend_do_not_trip_it():
    # F = 1 and M = 1 for everyone (each bought once, for the same amount): right, and not the recency's tie
    assert collapse_of({f"c{i:03d}": (i + 1, 1, 10.0) for i in range(100)}) is None


def two_day_shop(best: int) -> dict[str, tuple[int, int, float]]:
    """100 customers: ``best`` bought today, the rest yesterday."""
    return {f"c{i:03d}": (0 if i < best else 1, 1, 10.0) for i in range(100)}


@pytest.mark.parametrize("preset, best", [("tracks", 50), ("tracks", 55), ("tracks", 66), ("crm-4", 50),
                                          ("classic-5", 55), ("classic-5", 60)])
def test_a_two_day_shop_whose_best_recency_scores_high_still_collapses(preset, best):
    # today's buyers score in the upper half, yesterday's R = 1: the buyers of the last week scored as lost
    c = collapse_of(two_day_shop(best), preset)
    assert (c.customers, c.total, c.days, c.score, c.within) == (100 - best, 100, 1, 1, 7)


@pytest.mark.parametrize("days", [30, 90, 365])
@pytest.mark.parametrize("preset", ["tracks", "crm-4", "classic-5"])
def test_a_shop_of_a_month_or_more_of_history_does_not_collapse(days, preset):
    # last orders spread over the shop's history: R = 1 starts at two thirds of it or later
    assert collapse_of({f"c{i:03d}": (i * days // 100, 1 + i % 2, 10.0 + i) for i in range(100)}, preset) is None


def test_the_demo_shop_does_not_collapse(tmp_path):
    from sync import api
    from sync.cli.demo import _demo_as_of
    from sync.config import load_config
    from sync.demodata import generate_shop

    cfg = load_config(generate_shop(tmp_path / "demo", customers=3000, seed=42))
    run = api.segments(cfg, _demo_as_of(cfg))
    try:
        assert run.result.customers > 1000 and run.result.recency_collapse is None
        assert not [w for w in run.warnings if "recency" in w]
    finally:
        run.close()


# ------------------------------------------------------------------------------------------- end to end


def write_orders(folder: Path, back_days, *, method: str = "") -> Path:
    """A CSV shop of 200 customers with consent, customer i's orders ``back_days(i)`` days before AS_OF."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [["order_id", "ordered_at", "customer_id", "email", "amount", "consent"]]
    for i in range(200):
        for k, back in enumerate(back_days(i)):
            rows.append([f"o{i}-{k}", (AS_OF - timedelta(days=back)).isoformat(), f"c{i}", f"c{i}@example.org",
                         f"{10 + i % 7}.50", "yes"])
    with (folder / "orders.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    mapping = "\n".join(f'{c} = "{c}"' for c in rows[0] if c != "consent") + '\nmarketing_consent = "consent"'
    segmentation = f"[segmentation]\n{method}\n" if method else ""
    cfg = folder / "rfmsync.toml"
    cfg.write_text(f'[source]\ntype = "file"\norders = "orders.csv"\n[source.columns]\n{mapping}\n{segmentation}'
                   f'{mailchimp(name="mc", new_contacts="subscribed")}', encoding="utf-8")
    return cfg


def young(i: int) -> list[int]:
    """Two days of history: a fifth of the customers bought yesterday, the rest today."""
    return [1 if i % 5 == 0 else 0]


def cli(*args: str, code: int = 0):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


@pytest.fixture
def fake(mailchimp_fake, monkeypatch):
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    return mailchimp_fake


def runs(cfg: Path) -> list[dict]:
    """The sync and apply runs, newest first (a file source's pull is a run of its own)."""
    return [r for r in json.loads(cli("runs", "--config", str(cfg), "--format", "json").output)
            if r["kind"] in ("sync", "apply")]


def test_a_young_shop_warns_and_its_first_sync_is_refused_unless_allowed(tmp_path, fake):
    cfg = write_orders(tmp_path / "young", young)
    seg = cli("segments", "--config", str(cfg), "--as-of", SHOP_AS_OF, "--format", "json")
    [line] = warning_lines(seg)
    assert line.startswith(YOUNG_WARNING) and 'method = "thresholds"' in line and "ordered_at" in line
    doc = json.loads(seg.stdout)
    assert doc["warnings"] == [line.removeprefix("warning: ")]
    assert {s["segment"]: s["customers"] for s in doc["segments"]}["Churn"] == 200  # what the guard stops
    plan = cli("plan", "--config", str(cfg), "--as-of", SHOP_AS_OF, "--format", "json")
    assert any(w.startswith(GUARD) for w in json.loads(plan.stdout)["warnings"])

    refused = cli("sync", "--config", str(cfg), "--as-of", SHOP_AS_OF, code=6)
    assert GUARD in refused.output and "--allow-mass-change" in refused.output
    documented = (Path(__file__).resolve().parents[1] / "docs" / "safety.md").read_text(encoding="utf-8")
    [error] = [line for line in refused.output.splitlines() if line.startswith("error: ")]
    assert f"      {error}\n" in documented  # the line docs/safety.md shows
    assert fake.write_calls == 0 and not fake.lists["aud1"].members, "a refused first sync wrote to the ESP"
    [run] = runs(cfg)
    assert run["status"] == "refused" and run["destination"] == "mc" and GUARD in run["error"]

    cli("sync", "--config", str(cfg), "--as-of", SHOP_AS_OF, "--allow-mass-change")
    assert len(fake.lists["aud1"].members) == 200
    assert runs(cfg)[0]["status"] == "succeeded"
    assert runs(cfg)[0]["counts"]["recency_best_customers"] == 160  # what it was let through with


def test_a_single_date_export_is_refused_and_a_saved_plan_of_it_too(tmp_path, fake):
    cfg = write_orders(tmp_path / "single", lambda i: [0, 0] if i % 4 == 0 else [0])  # every order on one day
    guard = "guard recency_scores: 200 of 200 customers (100 %) share the best recency (0 days) yet score R = 1 of 3"
    assert warning_lines(cli("segments", "--config", str(cfg), "--as-of", SHOP_AS_OF))[0].startswith(
        "warning: recency scores collapsed: 200 of 200 customers (100 %)")
    assert guard in cli("sync", "--config", str(cfg), "--as-of", SHOP_AS_OF, code=6).output
    saved = tmp_path / "plan.json"
    cli("plan", "--config", str(cfg), "--as-of", SHOP_AS_OF, "-o", str(saved))
    assert guard in cli("apply", "--config", str(cfg), str(saved), code=6).output
    assert fake.write_calls == 0
    assert [r["status"] for r in runs(cfg)] == ["refused", "refused"]
    cli("apply", "--config", str(cfg), str(saved), "--allow-mass-change")
    assert len(fake.lists["aud1"].members) == 200


@pytest.mark.parametrize("back_days", [
    pytest.param(lambda i: [i, i + 40, i + 80], id="normal shop"),
    pytest.param(lambda i: [(7 * i) % 365], id="one-time buyers"),
])
def test_a_normal_shop_and_one_time_buyers_sync_without_a_word(tmp_path, fake, back_days):
    cfg = write_orders(tmp_path / "shop", back_days)
    assert not [w for w in warning_lines(cli("segments", "--config", str(cfg), "--as-of", SHOP_AS_OF))
                if "recency" in w]
    cli("sync", "--config", str(cfg), "--as-of", SHOP_AS_OF)
    assert len(fake.lists["aud1"].members) == 200


def test_thresholds_scoring_of_a_young_shop_is_not_a_collapse(tmp_path, fake):
    method = ('method = "thresholds"\n[segmentation.thresholds]\nrecency_days = [30, 90]\nfrequency = [2, 3]\n'
              "monetary = [12, 14]")
    cfg = write_orders(tmp_path / "young", young, method=method)
    seg = cli("segments", "--config", str(cfg), "--as-of", SHOP_AS_OF, "--format", "json")
    assert warning_lines(seg) == []
    assert {s["segment"]: s["customers"] for s in json.loads(seg.stdout)["segments"]}["Churn"] == 0
    cli("sync", "--config", str(cfg), "--as-of", SHOP_AS_OF)
    assert len(fake.lists["aud1"].members) == 200


def test_a_two_day_shop_split_55_45_is_refused(tmp_path, fake):
    cfg = write_orders(tmp_path / "split", lambda i: [0] if i % 20 < 11 else [1])
    collapse = ("90 of 200 customers (45 %) bought within the last 7 days (the newest 1 day ago) yet score R = 1 "
                "of 3, the score of the least recent customers")
    seg = cli("segments", "--config", str(cfg), "--as-of", SHOP_AS_OF, "--format", "json")
    assert warning_lines(seg)[0].startswith(f"warning: recency scores collapsed: {collapse}")
    assert {s["segment"]: s["customers"] for s in json.loads(seg.stdout)["segments"]}["Churn"] == 90
    assert f"guard recency_scores: {collapse}" in cli("sync", "--config", str(cfg), "--as-of", SHOP_AS_OF,
                                                      code=6).output
    assert fake.write_calls == 0
    saved = tmp_path / "plan.json"
    cli("plan", "--config", str(cfg), "--as-of", SHOP_AS_OF, "-o", str(saved))
    assert json.loads(saved.read_text())["data"]["recency_within_days"] == 7
    assert f"guard recency_scores: {collapse}" in cli("apply", "--config", str(cfg), str(saved), code=6).output


def test_an_established_shop_of_weekly_buyers_is_refused_and_pointed_to_thresholds_for_good(tmp_path, fake):
    """A subscription shop: 85 % of its customers order every week (20 weeks of history), 15 % lapsed months ago.
    Quantiles rank last week's buyers last (R = 1: Churn); waiting never helps, thresholds do."""
    weekly = write_orders(tmp_path / "weekly", lambda i: [i % 7 + 7 * k for k in range(20)] if i < 170
                          else [90 + i, 200 + i])
    seg = cli("segments", "--config", str(weekly), "--as-of", SHOP_AS_OF, "--format", "json")
    [warning] = [w for w in warning_lines(seg) if "recency" in w]
    assert "bought within the last 7 days" in warning
    advice = "for good in a shop whose customers buy every week, by subscription or regular reorders"
    assert advice in warning and "in a young shop, wait for more history" in warning
    assert advice in cli("sync", "--config", str(weekly), "--as-of", SHOP_AS_OF, code=6).output
    method = ('method = "thresholds"\n[segmentation.thresholds]\nrecency_days = [14, 60]\nfrequency = [2, 10]\n'
              "monetary = [50, 150]")
    write_orders(tmp_path / "weekly", lambda i: [i % 7 + 7 * k for k in range(20)] if i < 170 else [90 + i, 200 + i],
                 method=method)
    cli("sync", "--config", str(weekly), "--as-of", SHOP_AS_OF)
    assert len(fake.lists["aud1"].members) == 200


@pytest.mark.parametrize(("collapse", "text"), [
    (RecencyCollapse(customers=1, total=1, days=30, score=1, levels=3),
     "1 of 1 customer (100 %) shares the best recency (30 days) yet scores R = 1 of 3"),
    (RecencyCollapse(customers=1, total=2, days=1, score=1, levels=3, within=1),
     "1 of 2 customers (50 %) bought within the last 1 day (the newest 1 day ago) yet scores R = 1 of 3"),
    (RecencyCollapse(customers=3, total=4, days=0, score=1, levels=3),
     "3 of 4 customers (75 %) share the best recency (0 days) yet score R = 1 of 3")])
def test_the_collapse_counts_in_the_number_they_take(collapse, text):
    """hunt30b F8: a one-customer shop read "1 of 1 customers (100 %) share the best recency", and a collapse
    "within the last 1 days (the newest 1 days ago)"."""
    assert recency_collapse_text(collapse).startswith(text)
