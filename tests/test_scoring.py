"""Scores: tie-aware quantiles, thresholds, derived cut points, metrics; property tests."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from connectors.records import Order, OrderStatus
from segmentation import SegmentationConfig, run_segmentation

from .builders import AS_OF, con_with, con_with_customers, customer_orders

from tests.profiles import examples


def scores(con):
    return {cid: (r, f, m) for cid, r, f, m in con.execute("SELECT customer_id, r, f, m FROM customer_segments").fetchall()}


def test_one_time_buyers_all_get_f1_not_spread_by_row_order():
    spec = {f"once{i}": (i + 1, 1, 100 + i) for i in range(60)}
    spec |= {f"rep{i}": (i + 1, 2 + i % 5, 300 + i) for i in range(40)}
    con = con_with_customers(spec)
    run_segmentation(con, SegmentationConfig(preset="classic-5"), AS_OF, with_boundary=False)
    s = scores(con)
    assert {s[f"once{i}"][1] for i in range(60)} == {1}
    assert all(s[f"rep{i}"][1] > 1 for i in range(40))


def test_distinct_values_give_equal_groups():
    spec = {f"c{i:03d}": (i + 1, 1 + i, 10.0 * (i + 1)) for i in range(100)}
    con = con_with_customers(spec)
    run_segmentation(con, SegmentationConfig(preset="classic-5"), AS_OF, with_boundary=False)
    counts = dict(con.execute("SELECT f, count(*) FROM customer_segments GROUP BY f").fetchall())
    assert counts == {1: 20, 2: 20, 3: 20, 4: 20, 5: 20}
    # the most recent customer has the best R, the longest-silent the worst
    s = scores(con)
    assert s["c000"][0] == 5 and s["c099"][0] == 1


def test_metrics_net_refunds_ignore_cancellations_and_future_orders():
    t = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
    orders = [
        Order("a1", "a", t, Decimal("100.00")),
        Order("a2", "a", t.replace(day=10), Decimal("50.00")),
        Order("a3", "a", t.replace(day=11), Decimal("-30.00"), status=OrderStatus.REFUNDED),
        Order("a4", "a", t.replace(day=12), Decimal("999.00"), status=OrderStatus.CANCELLED),
        Order("a5", "a", datetime(2025, 7, 5, tzinfo=timezone.utc), Decimal("70.00")),  # after as_of
        Order("b1", "b", t, Decimal("10.00"), status=OrderStatus.REFUNDED),  # refund only: not scored
    ]
    con = con_with(orders)
    res = run_segmentation(con, SegmentationConfig(), AS_OF, with_boundary=False)
    row = con.execute("SELECT frequency, monetary, recency_days, avg_check FROM customer_segments").fetchall()
    assert row == [(2, Decimal("120.00"), 20, Decimal("60.00"))]
    assert res.customers == 1


def test_local_date_uses_the_shop_time_zone():
    # 20:00 UTC on 29 June is 01:00 on 30 June in Tashkent (UTC+5)
    con = con_with([Order("x", "x", datetime(2025, 6, 29, 20, tzinfo=timezone.utc), Decimal("5"))])
    run_segmentation(con, SegmentationConfig(), AS_OF, "Asia/Tashkent", with_boundary=False)
    assert con.execute("SELECT recency_days FROM customer_segments").fetchone()[0] == 0
    run_segmentation(con, SegmentationConfig(), AS_OF, "UTC", with_boundary=False)
    assert con.execute("SELECT recency_days FROM customer_segments").fetchone()[0] == 1


customer = st.tuples(st.integers(0, 400), st.integers(1, 12), st.integers(1, 5000))


@settings(max_examples=examples(25), deadline=None)
@given(st.lists(customer, min_size=1, max_size=40), st.sampled_from(["tracks", "crm-4", "classic-5"]),
       st.randoms(use_true_random=False))
def test_properties_range_one_segment_order_independent_and_cut_points(custs, preset, rnd):
    spec = {f"c{i}": c for i, c in enumerate(custs)}
    orders = [o for cid, (r, f, m) in spec.items() for o in customer_orders(cid, r, f, m)]
    con = con_with(orders)
    res = run_segmentation(con, SegmentationConfig(preset=preset), AS_OF, with_boundary=False)
    first = con.execute("SELECT customer_id, r, f, m, segment FROM customer_segments ORDER BY 1").fetchall()
    n = res.levels
    assert all(1 <= v <= n for row in first for v in row[1:4])
    assert len(first) == len(spec) and len({r[0] for r in first}) == len(spec)
    assert sum(r["customers"] for r in res.summary if r["segment"] != "Total") == len(spec)
    # monotone: a strictly better frequency never gets a lower F
    by_id = {r[0]: r for r in first}
    for a, (ra, fa, ma) in spec.items():
        for b, (rb, fb, mb) in spec.items():
            if fa > fb:
                assert by_id[a][2] >= by_id[b][2]
            if ra < rb:
                assert by_id[a][1] >= by_id[b][1]
    # exactly the documented rule: 1 + floor(N × w / n), w = customers with a strictly worse value
    metrics = con.execute("SELECT customer_id, recency_days, frequency, monetary FROM customer_segments").fetchall()
    for cid, rec, freq, mon in metrics:
        worse = (sum(x[1] > rec for x in metrics), sum(x[2] < freq for x in metrics), sum(x[3] < mon for x in metrics))
        assert by_id[cid][1:4] == tuple(min(n, 1 + n * w // len(metrics)) for w in worse)
    # the same orders inserted in another order give the same result
    shuffled = list(orders)
    rnd.shuffle(shuffled)
    con2 = con_with(shuffled)
    run_segmentation(con2, SegmentationConfig(preset=preset), AS_OF, with_boundary=False)
    assert con2.execute("SELECT customer_id, r, f, m, segment FROM customer_segments ORDER BY 1").fetchall() == first
    # the derived cut points, applied as thresholds, reproduce the quantile scores
    run_segmentation(con2, SegmentationConfig(preset=preset), AS_OF, cut_points=res.cut_points, with_boundary=False)
    assert con2.execute("SELECT customer_id, r, f, m, segment FROM customer_segments ORDER BY 1").fetchall() == first


def test_a_quantile_step_of_another_type_is_refused_not_rounded():
    from segmentation.scoring import _literal

    assert (_literal(Decimal("12.50")), _literal(7)) == ("12.50", "7")
    with pytest.raises(TypeError, match="quantile step 1.5"):  # int() would have made it a step at 1
        _literal(1.5)


def test_revenue_shares_of_a_total_below_zero_are_zero_not_flipped():
    """A shop whose refunds outweigh its sales (every sale at 0, refunds of older sales): a segment's share of a
    negative total was positive for a loss and -0.0 for nothing; they are 0 (and the JSON never says -0.0)."""
    orders = customer_orders("a", 5, 3, 0) + customer_orders("b", 300, 1, 0) + [
        Order(order_id="r", customer_id="b", ordered_at=customer_orders("b", 200, 1, 0)[0].ordered_at,
              amount=Decimal("50"), status=OrderStatus.REFUNDED)]
    res = run_segmentation(con_with(orders), SegmentationConfig(), AS_OF, with_boundary=False)
    rows = {r["segment"]: r for r in res.summary}
    assert rows["Total"]["revenue"] == -50.0
    assert sorted((r["revenue"], r["revenue_pct"]) for s, r in rows.items() if r["customers"] and s != "Total") == [
        (-50.0, 0.0), (0.0, 0.0)]
    assert "-0.0" not in json.dumps(res.summary)


@pytest.mark.parametrize("big", [1e15, 2e15, 9e15], ids=["1e15", "2e15", "9e15"])
def test_cut_points_of_collapsed_levels_stay_ascending_at_any_magnitude(big):
    """Seven customers at 100 000 and three at 1e15: the empty monetary levels collapse onto the top one and were
    nudged down by 1e-6, a step lost above ~1.7e10, so two equal cut points failed validation (exit 70). The
    nudge is one float step there: the cut points stay strictly ascending and reproduce these scores. An empty
    top level's cut point was 1e15 + k, below the amounts of 2e15: re-scored with the cut points, the top
    customers moved M4 → M5 (and the ESP sync would have moved them too); it is now above the column's max.
    (One float step is 0.125–1 at these magnitudes, coarser than cents: a customer a cent or two below a collapsed
    cut point can still move; amounts that large are not a shop's, see the 16-digit limit.)"""
    spec = {f"c{i}": (i + 1, 1, 100_000 if i < 7 else big) for i in range(10)}
    con = con_with_customers(spec)
    res = run_segmentation(con, SegmentationConfig(preset="classic-5"), AS_OF, with_boundary=False)
    mon = res.cut_points.monetary
    assert all(a < b for a, b in zip(mon, mon[1:])) and big in mon and mon[-1] > big
    first = con.execute("SELECT customer_id, r, f, m, segment FROM customer_segments ORDER BY 1").fetchall()
    run_segmentation(con, SegmentationConfig(preset="classic-5"), AS_OF, cut_points=res.cut_points,
                     with_boundary=False)
    assert con.execute("SELECT customer_id, r, f, m, segment FROM customer_segments ORDER BY 1").fetchall() == first


def test_a_run_that_scores_nobody_has_no_cut_points_and_they_score_nobody_again():
    """hunt31b F7: every order refunded or cancelled: no placeholder cut points (``recency_days: [-1.0,
    -0.999999]``, shown as real ones); and a webhook resync scoring against that run's (none) does not fail."""
    t = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
    con = con_with([Order("a1", "a", t, Decimal("100.00"), status=OrderStatus.REFUNDED),
                    Order("b1", "b", t, Decimal("50.00"), status=OrderStatus.CANCELLED)])
    res = run_segmentation(con, SegmentationConfig(), AS_OF, with_boundary=False)
    assert res.customers == 0
    assert res.to_json()["cut_points"] == {"recency_days": [], "frequency": [], "monetary": []}
    again = run_segmentation(con, SegmentationConfig(), AS_OF, cut_points=res.cut_points, with_boundary=False)
    assert again.customers == 0 and again.method == "thresholds"
