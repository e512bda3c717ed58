"""Hand-checked examples: every segment of every preset is reached by the customer we built for it."""

from __future__ import annotations

import pytest

from segmentation import SegmentationConfig, Thresholds, run_segmentation
from segmentation.errors import RuleError
from segmentation.rules import PRESETS, compile_pattern

from .builders import AS_OF, con_with_customers, segments_of

# Cut points per level count: recency ≤ c → best score; frequency/monetary ≥ c → higher score.
CUTS = {
    3: Thresholds(recency_days=[30, 90], frequency=[2, 5], monetary=[100, 1000]),
    4: Thresholds(recency_days=[30, 60, 90], frequency=[2, 5, 10], monetary=[50000, 250000, 500000]),
    5: Thresholds(recency_days=[30, 60, 90, 180], frequency=[2, 3, 5, 8], monetary=[100, 200, 400, 800]),
}
# a metric value that lands on each score, per level count: (recency, frequency, monetary)
VALUE = {
    3: {"r": {3: 10, 2: 60, 1: 200}, "f": {1: 1, 2: 3, 3: 6}, "m": {1: 50, 2: 500, 3: 5000}},
    4: {"r": {4: 10, 3: 45, 2: 75, 1: 200}, "f": {1: 1, 2: 3, 3: 6, 4: 12},
        "m": {1: 1000, 2: 100000, 3: 300000, 4: 600000}},
    5: {"r": {5: 10, 4: 45, 3: 75, 2: 120, 1: 400}, "f": {1: 1, 2: 2, 3: 4, 4: 6, 5: 9},
        "m": {1: 50, 2: 150, 3: 300, 4: 500, 5: 1000}},
}


def spec_for(codes: dict[str, str], levels: int) -> dict[str, tuple[int, int, float]]:
    v = VALUE[levels]
    return {cid: (v["r"][int(c[0])], v["f"][int(c[1])], v["m"][int(c[2])]) for cid, c in codes.items()}


def run(preset: str, codes: dict[str, str]):
    levels = PRESETS[preset].levels
    con = con_with_customers(spec_for(codes, levels))
    res = run_segmentation(con, SegmentationConfig(preset=preset, method="thresholds", thresholds=CUTS[levels]),
                           AS_OF, with_boundary=False)
    return res, segments_of(con)


def test_thresholds_follow_the_documented_cut_rules():
    # the example: recency [30,60,90] ≤30 → 4; frequency [2,5,10] 1 → 1, 2–4 → 2; monetary ≥500k → 4
    con = con_with_customers({"a": (30, 1, 49999.99), "b": (31, 2, 50000), "c": (60, 4, 249999), "d": (61, 5, 250000),
                              "e": (90, 9, 499999), "f": (91, 10, 500000)})
    run_segmentation(con, SegmentationConfig(preset="crm-4", method="thresholds", thresholds=CUTS[4]), AS_OF,
                     with_boundary=False)
    got = {cid: rfm for cid, (rfm, _) in segments_of(con).items()}
    assert got == {"a": "411", "b": "322", "c": "322", "d": "233", "e": "233", "f": "144"}


def test_tracks_every_segment_reached():
    res, seg = run("tracks", {"best": "333", "best2": "233", "asleep": "232", "asleep2": "221", "churn": "133",
                              "churn2": "111", "beginner": "311", "beginner2": "323", "other": "331"})
    assert {k: v[1] for k, v in seg.items()} == {
        "best": "Best active", "best2": "Best active", "asleep": "Falling asleep", "asleep2": "Falling asleep",
        "churn": "Churn", "churn2": "Churn", "beginner": "Beginners", "beginner2": "Beginners", "other": "Other"}
    assert [r["segment"] for r in res.summary] == ["Best active", "Falling asleep", "Churn", "Beginners", "Other",
                                                   "Total"]


def test_crm4_every_segment_reached_in_rule_order():
    res, seg = run("crm-4", {"vip": "444", "vip2": "434", "newcomer": "414", "loyal": "441", "whale": "144",
                             "lost": "121", "attention": "211", "attention2": "333", "other": "133"})
    assert {k: v[1] for k, v in seg.items()} == {
        "vip": "VIP", "vip2": "VIP", "newcomer": "Newcomers with potential", "loyal": "Loyal",
        "whale": "Sleeping whales", "lost": "Lost", "attention": "Need attention", "attention2": "Need attention",
        "other": "Other"}


CLASSIC = {  # R, FM cell → segment (FM = round half up of (F+M)/2)
    "Champions": "555", "Loyal customers": "533", "Potential loyalist": "512", "New customers": "511",
    "Promising": "311", "Need attention": "223", "About to sleep": "211", "At risk": "124",
    "Can't lose them": "155", "Hibernating": "121", "Lost": "111",
}


def test_classic5_every_segment_reached():
    res, seg = run("classic-5", {name: code for name, code in CLASSIC.items()})
    assert {k: v[1] for k, v in seg.items()} == {name: name for name in CLASSIC}
    assert [r["customers"] for r in res.summary if r["segment"] in CLASSIC] == [1] * len(CLASSIC)


def test_fm_rounds_half_up():
    _, seg = run("classic-5", {"x": "534", "y": "523"})
    # x: FM = round((3+4)/2) = round(3.5) = 4 → R5FM4 → Champions; y: FM = round(2.5) = 3 → Loyal customers
    assert seg["x"][1] == "Champions"
    assert seg["y"][1] == "Loyal customers"


@pytest.mark.parametrize("pattern, levels, message", [
    ("R6", 5, "outside 1..5"), ("4X", 4, "not an RFM code"), ("R2-1", 4, "reversed"), ("R1R2", 4, "twice"),
    ("bogus_field", 4, "unknown field"), ("555", 4, "outside 1..4"),
])
def test_bad_patterns_name_the_rule_and_pattern(pattern, levels, message):
    with pytest.raises(RuleError, match=message) as exc:
        compile_pattern(pattern, levels, {"reorder_due"}, where="segment 'X'")
    assert "segment 'X'" in str(exc.value) and pattern in str(exc.value)


def test_custom_rules_come_first_and_may_use_fields():
    con = con_with_customers({"a": (10, 6, 5000), "b": (200, 1, 10)})
    cfg = SegmentationConfig(preset="tracks", method="thresholds", thresholds=CUTS[3],
                             rules=[{"name": "Big spenders", "match": ["monetary >= 5000 & R3"]}])
    res = run_segmentation(con, cfg, AS_OF, with_boundary=False)
    assert segments_of(con)["a"][1] == "Big spenders"
    assert segments_of(con)["b"][1] == "Churn"
    assert res.segment_names[0] == "Big spenders"


def test_unknown_preset_and_wrong_levels_are_config_errors():
    con = con_with_customers({"a": (10, 1, 10)})
    with pytest.raises(RuleError, match="unknown segmentation preset"):
        run_segmentation(con, SegmentationConfig(preset="nope"), AS_OF)
    with pytest.raises(RuleError, match="defined on 3 levels"):
        run_segmentation(con, SegmentationConfig(preset="tracks", levels=5), AS_OF)
