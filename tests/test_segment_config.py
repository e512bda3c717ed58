"""A segment map that would put customers in a wrong segment without a word is a config error naming the key, at
``rfmsync check`` as at every command: thresholds missing, short or not numbers, two segment names equal but for
case, a custom rule no customer can reach, a mapped segment the custom rules took over."""

from __future__ import annotations

from pathlib import Path

import pytest

from segmentation import SegmentationConfig, run_segmentation
from segmentation.errors import RuleError
from segmentation.rules import PRESETS, unreachable
from sync.config import load_config

from .builders import AS_OF, con_with_customers, config_error, segments_of
from .test_segmentation_presets import CUTS

MC = '[[destinations]]\nname = "mc"\ntype = "mailchimp"\naudience = "aud1"\n[destinations.segments]\n'


def config(tmp_path: Path, segmentation: str, dest: str = "") -> Path:
    path = tmp_path / "rfmsync.toml"
    path.write_text(f'[segmentation]\n{segmentation}\n{dest}', encoding="utf-8")
    return path


THRESHOLDS = '[segmentation.thresholds]\nrecency_days = {r}\nfrequency = [2, 5]\nmonetary = [100, 1000]\n'


@pytest.mark.parametrize("segmentation, message", [
    ('method = "thresholds"', '[segmentation] method = "thresholds" needs a [segmentation.thresholds] table: 2 '
                              'ascending cut points for each of recency_days, frequency and monetary (3 levels)'),
    ('method = "thresholds"\n' + THRESHOLDS.format(r="[30]"),
     "[segmentation] segmentation.thresholds.recency_days: 3 levels need 2 cut points, got 1 ([30.0])"),
    ('preset = "crm-4"\nmethod = "thresholds"\n' + THRESHOLDS.format(r="[30, 60, 90]"),
     "segmentation.thresholds.frequency: 4 levels need 3 cut points, got 2 ([2.0, 5.0])"),
    ('method = "thresholds"\n' + THRESHOLDS.format(r="[30, nan]"),
     "segmentation.thresholds.recency_days must be finite numbers, got [30.0, nan]"),
    ('method = "thresholds"\n' + THRESHOLDS.format(r="[30, inf]"),
     "segmentation.thresholds.recency_days must be finite numbers, got [30.0, inf]"),
])
def test_thresholds_that_cannot_score_are_a_config_error_at_check(tmp_path, segmentation, message):
    """Before: `check` said ok, and `segments` failed as an internal error (exit 70), for nan with DuckDB's
    'Referenced column "nan" not found'."""
    path = config(tmp_path, segmentation)
    error, out = config_error(path)
    assert error.startswith(f"{path}: ") and message in error
    assert message in out


@pytest.mark.parametrize("segmentation, message", [
    ('[[segmentation.rules]]\nname = "churn"\nmatch = ["R1F3"]',
     "[segmentation] segment names 'churn' and 'Churn' differ only in case: they are two segments"),
    ('[[segmentation.rules]]\nname = "VIP"\nmatch = ["333"]\n[[segmentation.rules]]\nname = "vip"\nmatch = ["332"]',
     "segment names 'VIP' and 'vip' differ only in case"),
    ('default_segment = "other"\n[[segmentation.rules]]\nname = "Other"\nmatch = ["R3F3M1"]',
     "segment names 'Other' and 'other' differ only in case"),
    ('[[segmentation.rules]]\nname = " Churn"\nmatch = ["R1F3"]',
     "[segmentation] segment name ' Churn' is empty or has spaces around it"),
    ('[[segmentation.rules]]\nname = ""\nmatch = ["R1F3"]', "segment name '' is empty or has spaces around it"),
    ('[[segmentation.rules]]\nname = "Everyone"\nmatch = ["XXX"]\n'
     '[[segmentation.rules]]\nname = "Whales"\nmatch = ["R3F3M3"]',
     "[segmentation] segment 'Whales' can never be given: every score its patterns match is taken first by "
     "'Everyone' (the first matching rule wins); put its rule before theirs, narrow theirs, or drop it"),
    ('[[segmentation.rules]]\nname = "Lapsed"\nmatch = ["R1", "R2F1"]\n'
     '[[segmentation.rules]]\nname = "Lapsed big"\nmatch = ["R1M3", "R2F1M3 & discount_hunter"]',
     "segment 'Lapsed big' can never be given: every score its patterns match is taken first by 'Lapsed'"),
    ('[[segmentation.rules]]\nname = "Nobody"\nmatch = ["R1 & R2"]',
     "[segmentation] segment 'Nobody' can never be given: its patterns match no score (R, F, M) at all; fix its "
     "patterns or drop it"),
])
def test_segment_names_and_rules_that_give_a_wrong_segment_are_a_config_error_at_check(
        tmp_path, segmentation, message):
    """Before: `check` said ok; 'churn' was a segment of its own (no tag, its customers out of the preset's
    'Churn'), and a rule behind a catch-all was an empty segment forever."""
    path = config(tmp_path, 'preset = "tracks"\n' + segmentation)
    error, out = config_error(path)
    assert error.startswith(f"{path}: ") and message in error
    assert message.split(":")[0].removeprefix("[segmentation] ") in out


def test_a_mapped_segment_custom_rules_took_over_is_a_config_error_naming_the_key(tmp_path):
    """A preset segment every score of which a custom rule takes first is a rename when nothing maps it; mapped,
    its managed tag would be taken off everyone who holds it."""
    rules = '[[segmentation.rules]]\nname = "Gone"\nmatch = ["R1"]'
    path = config(tmp_path, rules, MC + '"Churn" = "Winback"\n')
    error, out = config_error(path)
    message = ("destination 'mc': [destinations.segments] 'Churn': segment 'Churn' can never be given: every score "
               "its patterns match is taken first by 'Gone'")
    assert message in error and message in out
    assert load_config(config(tmp_path, rules, MC + '"Gone" = "Winback"\n')).destinations[0].segments == {
        "Gone": "Winback"}


def test_a_rule_with_a_condition_takes_no_score_for_sure():
    """Only a score pattern takes a score for sure: a rule behind one with a field condition, or behind
    narrower score patterns, is reachable and gets its customers."""
    rules = [("Reorder", ("R1 & reorder_due",)), ("Low", ("R1F1",)), ("Lapsed", ("R1",))]
    assert unreachable(rules, 3) == {}
    con = con_with_customers({"a": (10, 6, 5000), "b": (400, 1, 10), "c": (400, 6, 5000)})
    cfg = SegmentationConfig(preset="tracks", method="thresholds", thresholds=CUTS[3],
                             rules=[{"name": "Low", "match": ["R1F1"]}, {"name": "Lapsed", "match": ["R1"]}])
    run_segmentation(con, cfg, AS_OF, with_boundary=False)
    assert {k: v[1] for k, v in segments_of(con).items()} == {"a": "Best active", "b": "Low", "c": "Lapsed"}


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "none"])
def test_every_segment_of_every_preset_can_be_reached(preset):
    assert unreachable(list(PRESETS[preset].rules), PRESETS[preset].levels) == {}


def test_the_library_refuses_them_too():
    con = con_with_customers({"a": (10, 1, 10)})
    with pytest.raises(RuleError, match="3 levels need 2 cut points"):
        run_segmentation(con, SegmentationConfig(method="thresholds", thresholds={
            "recency_days": [30], "frequency": [2, 5], "monetary": [1, 2]}), AS_OF)
    with pytest.raises(RuleError, match="'churn' and 'Churn' differ only in case"):
        run_segmentation(con, SegmentationConfig(rules=[{"name": "churn", "match": ["R1F3"]}]), AS_OF)
