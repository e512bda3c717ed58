"""Two destinations that would manage one tag or list of one audience are refused when the config loads (each
sync would undo the other's while both ledgers say all is well); disjoint tags on one audience, the same tag on two
audiences, and one tag given by two segments of one destination (a union: no fight) are fine."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.config import DestinationConfig, load_config
from sync.model import PushedState
from sync.planning.columnar import plan_columnar, stage_pushed
from sync.planning.plan import desired_contacts, plan_destination
from sync.planning.rows import stage_dicts
from tests.builders import config_error, scratch_con
from tests.test_plan_columnar import arrow_state


def config(tmp_path: Path, *dests: str) -> Path:
    path = tmp_path / "rfmsync.toml"
    body = "".join(f'\n[[destinations]]\nname = "d{i}"\n{d}\n' for i, d in enumerate(dests, 1))
    path.write_text(f'[segmentation]\npreset = "tracks"\n{body}', encoding="utf-8")
    return path


def mc(audience: str, mapping: str, prefix: str = "") -> str:
    return (f'type = "mailchimp"\naudience = "{audience}"\ntag_prefix = "{prefix}"\n'
            f'[destinations.segments]\n{mapping}')


VIP = '"Best active" = "vip"'


@pytest.mark.parametrize("dests, names", [
    # same audience, same tag from different segments (each removes what the other adds)
    ((mc("aud1", VIP, "rfm:"), mc("aud1", '"Churn" = "vip"', "rfm:")), "tag/list 'rfm:vip' in Mailchimp audience 'aud1'"),
    # another prefix making the same name; another case of it
    ((mc("aud1", VIP, "rfm:"), mc("aud1", '"Best active" = "rfm:vip"')), "tag/list 'rfm:vip' in Mailchimp audience"),
    ((mc("aud1", VIP), mc("aud1", '"Churn" = "VIP"')), "tag/list 'vip' and 'VIP' (one name whatever the case)"),
    # a transition tag of one, a segment tag of the other
    ((mc("aud1", VIP), 'type = "mailchimp"\naudience = "aud1"\n[destinations.transitions]\n"* -> Churn" = "vip"'),
     "tag/list 'vip' in Mailchimp audience 'aud1'"),
    # SendGrid lists and Unisender lists live in the account of the type's one API key
    (('type = "sendgrid"\n[destinations.segments]\n' + VIP, 'type = "sendgrid"\n[destinations.segments]\n' + VIP),
     "tag/list 'vip' in the SendGrid account (SENDGRID_API_KEY)"),
    (('type = "unisender"\n[destinations.segments]\n' + VIP, 'type = "unisender"\n[destinations.segments]\n"Churn" = "vip"'),
     "tag/list 'list:vip' in the Unisender account (UNISENDER_API_KEY)"),
    (('type = "unisender"\n[destinations.tags]\n' + VIP, 'type = "unisender"\n[destinations.tags]\n' + VIP),
     "tag/list 'tag:vip' in the Unisender account"),
])
def test_two_destinations_managing_one_tag_of_one_audience_are_a_config_error(tmp_path, dests, names):
    path = config(tmp_path, *dests)
    error, out = config_error(path)  # `rfmsync check` exits 2, as for every config error
    assert error.startswith(f"{path}: ")
    assert f"destinations 'd1' and 'd2' both manage the {names}" in error
    assert "each sync would undo the other's" in error
    assert "destinations 'd1' and 'd2' both manage" in out


@pytest.mark.parametrize("dests", [
    (mc("aud1", VIP, "a:"), mc("aud1", VIP, "b:")),  # one audience, disjoint tags
    (mc("aud1", VIP), mc("aud2", VIP)),  # the same tag in two audiences
    (mc("aud1", VIP), 'type = "sendgrid"\n[destinations.segments]\n' + VIP),  # two vendors
    (mc("aud1", VIP), mc("aud1", '"Churn" = "winback"'), mc("aud1", '"Beginners" = "new"')),
    (mc("aud1", '"Best active" = "vip"\n"Churn" = "vip"'),),  # one destination: a union, see below
    ('type = "unisender"\n[destinations.segments]\n' + VIP + '\n[destinations.tags]\n' + VIP,),  # list:vip, tag:vip
])
def test_destinations_with_disjoint_tags_or_audiences_load(tmp_path, dests):
    assert len(load_config(config(tmp_path, *dests)).destinations) == len(dests)


def sg(prefix: str, fields: str) -> str:
    return f'type = "sendgrid"\nlist_prefix = "{prefix}"\n[destinations.fields]\n{fields}'


def test_two_destinations_writing_one_field_with_different_values_are_a_config_error(tmp_path):
    """hunt28b #2: sg-a ``rfm_seg = "segment"`` and sg-b ``RFM_SEG = "rfm"`` (one SendGrid field: it folds case)
    loaded; each sync wrote its value over the other's and each ledger believed its own, never repaired."""
    error, out = config_error(config(tmp_path, sg("A ", 'rfm_seg = "segment"'), sg("B ", 'RFM_SEG = "rfm"')))
    assert ("destinations 'd1' and 'd2' both write the field 'RFM_SEG' (as 'rfm_seg' there: one field) in the "
            "SendGrid account (SENDGRID_API_KEY), with different values ('segment' and 'rfm')") in error
    assert "both write the field" in out
    error, _ = config_error(config(tmp_path, mc("aud1", VIP, "a:") + '\n[destinations.fields]\nRFM = "segment"',
                                   mc("aud1", VIP, "b:") + '\n[destinations.fields]\nRFM = "r"'))
    assert "both write the field 'RFM' in Mailchimp audience 'aud1'" in error


@pytest.mark.parametrize("dests", [
    (sg("A ", 'rfm_seg = "segment"'), sg("B ", 'RFM_SEG = "segment"')),  # one value: they agree
    (mc("aud1", VIP, "a:") + '\n[destinations.fields]\nRFM = "segment"',  # two audiences
     mc("aud2", VIP, "b:") + '\n[destinations.fields]\nRFM = "r"'),
    ('type = "unisender"\n[destinations.fields]\nrfm = "segment"',  # Unisender's names are case-sensitive
     'type = "unisender"\n[destinations.fields]\nRFM = "r"'),
])
def test_one_field_in_two_destinations_with_one_value_or_two_places_loads(tmp_path, dests):
    assert len(load_config(config(tmp_path, *dests)).destinations) == len(dests)


UNION = DestinationConfig(name="mc", type="mailchimp", audience="a1", segments={"Best active": "vip", "Churn": "vip"})


def test_one_tag_given_by_two_segments_of_one_destination_is_a_union_in_both_planners():
    """A contact moving between two segments mapped to one tag keeps it (nothing to add or remove); one leaving
    both loses it: the row planner and the columnar one agree, so one destination never fights itself."""
    rows = [{"customer_id": "1", "email": "a@shop.uz", "segment": "Churn", "marketing_consent": "yes"},
            {"customer_id": "2", "email": "b@shop.uz", "segment": "Other", "marketing_consent": "yes"}]
    last = {k: PushedState(k, cid, frozenset({"vip"}), {}, True) for k, cid in (("a@shop.uz", "1"), ("b@shop.uz", "2"))}
    desired, _ = desired_contacts(rows, UNION)
    for plan in (plan_destination(UNION, desired, last), columnar_plan(rows, last, UNION)):
        assert [(c.key, sorted(c.add_tags), sorted(c.remove_tags)) for c in plan.changes] == [
            ("b@shop.uz", [], ["vip"])]


def columnar_plan(rows, last, dest):
    """The columnar planner's plan of ``rows`` against the pushed state ``last``, as a sync makes it."""
    with scratch_con() as con:
        staged = stage_dicts(rows, con)
        stage_pushed(staged.con, arrow_state(last))
        return plan_columnar(staged, dest)
