"""The falling-asleep boundary (Kaplan–Meier) and the summary rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np

from connectors.records import Order
from segmentation import SegmentationConfig, run_segmentation
from segmentation.boundary import km_curve

from .builders import AS_OF, con_with, con_with_customers


def test_km_matches_a_hand_computed_example():
    # durations 1,2,3 with 2 events at 1, 1 censored at 2, 1 event at 3 (n = 4)
    surv, at_risk = km_curve(np.array([1, 2, 3]), np.array([2.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]))
    assert list(at_risk) == [4, 2, 1]
    assert np.allclose(surv, [0.5, 0.5, 0.0])


def test_boundary_found_where_customers_stop_returning():
    end = datetime(2025, 6, 30, 12, tzinfo=timezone.utc)
    orders = []
    rng = np.random.default_rng(7)
    for c in range(300):
        # loyal buyers every ~20 days for a while, then silence of 200-500 days
        silence = int(rng.integers(200, 500))
        n = int(rng.integers(2, 8))
        for k in range(n):
            t = end - timedelta(days=silence + 20 * k + int(rng.integers(0, 5)))
            orders.append(Order(f"{c}-{k}", f"c{c}", t, Decimal("10")))
    con = con_with(orders)
    res = run_segmentation(con, SegmentationConfig(), AS_OF)
    b = res.boundary
    assert b["method"] == "kaplan-meier"
    assert 20 <= b["days"] <= 120, b
    assert b["reminder_day"] == b["days"] - 14
    assert 15 <= b["gap_percentiles"]["p50"] <= 25
    p = [pt["p_return"] for pt in b["curve"]]
    assert p[0] > 0.5 and p[-1] < 0.1


def test_thin_history_leaves_the_boundary_empty_with_a_reason():
    con = con_with_customers({"a": (5, 2, 10), "b": (50, 1, 10)})
    b = run_segmentation(con, SegmentationConfig(), AS_OF).boundary
    assert b["days"] is None and b["reminder_day"] is None
    assert "at least 30" in b["reason"]


def test_summary_numbers_and_totals():
    con = con_with_customers({"a": (5, 3, 300), "b": (6, 1, 100), "c": (400, 1, 50)})
    res = run_segmentation(con, SegmentationConfig(preset="tracks"), AS_OF, with_boundary=False)
    rows = {r["segment"]: r for r in res.summary}
    total = rows["Total"]
    assert total["customers"] == 3 and total["revenue"] == 450.0 and total["avg_check"] == 90.0
    assert abs(total["avg_repeat_purchases"] - 2 / 3) < 1e-3
    assert sum(r["customers"] for s, r in rows.items() if s != "Total") == 3
    assert abs(sum(r["revenue_pct"] for s, r in rows.items() if s != "Total") - 100) < 0.05


def test_large_shops_are_estimated_on_a_deterministic_sample():
    end = datetime(2025, 6, 30, 12, tzinfo=timezone.utc)
    rng = np.random.default_rng(11)
    orders = [Order(f"{c}-{k}", f"c{c}", end - timedelta(days=int(rng.integers(150, 400)) + 20 * k), Decimal("5"))
              for c in range(600) for k in range(int(rng.integers(2, 7)))]
    con = con_with(orders)
    full = run_segmentation(con, SegmentationConfig(), AS_OF).boundary
    sampled_cfg = SegmentationConfig(boundary={"sample_customers": 200})
    sampled = run_segmentation(con, sampled_cfg, AS_OF).boundary
    again = run_segmentation(con, sampled_cfg, AS_OF).boundary
    assert full["sampled_every"] == 1 and sampled["sampled_every"] == 3
    assert sampled == again  # deterministic
    assert sampled["gaps"] < full["gaps"]
    assert abs(sampled["days"] - full["days"]) <= 0.3 * full["days"]


def test_one_regular_customers_many_gaps_are_not_a_boundary():
    """One customer with 60 purchases 3 days apart and 30 one-time buyers: 60 repeat purchases passed the
    minimum and his spells passed ``min_at_risk``, so the shop's boundary was "3 days" from one person. The
    minimum counts the customers the repeats come from, and the curve the customers still observed."""
    end = datetime(2025, 6, 20, 10, tzinfo=timezone.utc)
    orders = [Order(f"w{j}", "whale", end - timedelta(days=3 * j), Decimal("10")) for j in range(61)]
    orders += [Order(f"o{i}", f"c{i}", end - timedelta(days=150 + 4 * i), Decimal("10")) for i in range(30)]
    b = run_segmentation(con_with(orders), SegmentationConfig(), AS_OF).boundary
    assert (b["gaps"], b["repeat_customers"]) == (60, 1)
    assert b["days"] is None and b["curve"] == []
    assert b["reason"] == ("the 60 repeat purchases come from 1 customer; at least 30 repeat customers "
                           "are needed")


def test_the_curve_stops_where_fewer_than_min_at_risk_customers_remain():
    """Thirty customers buying every 100 days, and three who come back every 400 days for twenty years: their
    sixty long spells kept the curve going to day 310, where only three customers were still observed (spells
    were counted against ``min_at_risk``, not customers)."""
    end = datetime(2025, 6, 28, 10, tzinfo=timezone.utc)
    orders = [Order(f"{c}-{k}", f"c{c}", end - timedelta(days=100 * k + c % 5), Decimal("10"))
              for c in range(30) for k in range(5)]
    orders += [Order(f"s{c}-{k}", f"s{c}", end - timedelta(days=400 * k + c), Decimal("10"))
               for c in range(3) for k in range(21)]
    b = run_segmentation(con_with(orders), SegmentationConfig(), AS_OF).boundary
    assert (b["gaps"], b["repeat_customers"]) == (180, 33)
    assert b["curve"][-1]["days"] + b["window_days"] <= 110, b["curve"][-1]
