"""The plan is pure: plan(x, x) is empty; applying plan(a, b) to a gives b; consent and managed-tag rules."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from sync.config import DestinationConfig
from sync.model import DesiredContact, ItemResult, PushedState
from sync.planning.plan import apply_results_to_state, desired_contacts, plan_destination, status_for_new

from tests.profiles import examples

DEST = DestinationConfig(name="mc", type="mailchimp", audience="a1", tag_prefix="rfm:",
                         segments={"Best active": "VIP", "Churn": "Winback"}, fields={"SEG": "segment", "R": "r"})
MANAGED = {"rfm:VIP", "rfm:Winback"}

emails = st.sampled_from([f"u{i}@shop.uz" for i in range(12)])
tags = st.frozensets(st.sampled_from(["rfm:VIP", "rfm:Winback", "hand-added"]), max_size=2)
fields = st.fixed_dictionaries({"SEG": st.sampled_from(["Best active", "Churn", "Other"]), "R": st.integers(1, 3)})


def desired_st():
    return st.builds(lambda k, seg, r, consent: DesiredContact(
        key=k, customer_id=k.split("@")[0], email=k, consent=consent, segment=seg,
        tags=frozenset({"Best active": {"rfm:VIP"}, "Churn": {"rfm:Winback"}}.get(seg, set())),
        fields={"SEG": seg, "R": r}), emails, st.sampled_from(["Best active", "Churn", "Other"]),
        st.integers(1, 3), st.sampled_from(["yes", "no", "unknown"]))


def state_st():
    return st.builds(lambda k, t, f, e: PushedState(key=k, customer_id=None, tags=t, fields=f, exists=e),
                     emails, tags, fields, st.booleans())


def all_ok(plan):
    res = []
    for c in plan.changes:
        if c.needs_upsert:
            res.append(ItemResult(c.key, "upsert", True))
        res += [ItemResult(c.key, f"tag+{t}", True) for t in c.add_tags]
        res += [ItemResult(c.key, f"tag-{t}", True) for t in c.remove_tags]
    return res


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(desired_st(), max_size=10, unique_by=lambda d: d.key),
       st.lists(state_st(), max_size=10, unique_by=lambda s: s.key),
       st.sampled_from(["skip", "transactional", "pending", "subscribed"]))
def test_applying_the_plan_reaches_the_desired_state_and_replanning_is_empty(desired, last, mode):
    dest = DEST.model_copy(update={"new_contacts": mode})
    last = {s.key: s for s in last}
    plan = plan_destination(dest, desired, last)
    # never touch an unmanaged tag, never create without a status, never subscribe without consent
    for c in plan.changes:
        assert not (c.add_tags | c.remove_tags) - MANAGED
        if c.create:
            assert c.status_if_new in ("subscribed", "pending", "transactional")
            d = next(x for x in desired if x.key == c.key)
            if c.status_if_new == "subscribed":
                assert d.consent == "yes"
    state = dict(last)
    apply_results_to_state(state, {c.key: c for c in plan.changes}, all_ok(plan))
    skipped = {s.key for s in plan.skipped}
    for d in desired:
        if d.key in skipped:
            assert d.key not in state or state[d.key] == last.get(d.key)
            continue
        assert state[d.key].tags & MANAGED == d.tags
        assert {k: state[d.key].fields[k] for k in d.fields} == dict(d.fields)
        assert state[d.key].tags - MANAGED == (last[d.key].tags - MANAGED if d.key in last else frozenset())
    assert plan_destination(dest, desired, state).changes == ()


def test_status_for_new_contacts_table():
    assert [status_for_new(c, m) for c in ("yes", "no", "unknown")
            for m in ("skip", "transactional", "pending", "subscribed")] == [
        "subscribed", "subscribed", "pending", "subscribed",
        None, "transactional", "pending", "transactional",
        None, "transactional", "pending", "transactional"]


def test_desired_contacts_normalise_emails_and_report_invalid_ones():
    rows = [{"customer_id": "1", "email": "  Ann@Shop.UZ ", "segment": "Churn", "r": 1, "marketing_consent": "yes"},
            {"customer_id": "2", "email": "not-an-email", "segment": "Churn", "r": 1},
            {"customer_id": "3", "email": None, "segment": "Churn", "r": 1}]
    desired, skipped = desired_contacts(rows, DEST)
    assert [(d.key, d.tags, dict(d.fields)) for d in desired] == [
        ("ann@shop.uz", frozenset({"rfm:Winback"}), {"SEG": "Churn", "R": 1})]
    assert [(s.customer_id, s.reason) for s in skipped] == [("2", "invalid email")]


def test_contacts_leaving_the_base_lose_only_managed_tags():
    last = {"gone@x.uz": PushedState("gone@x.uz", "9", frozenset({"rfm:VIP", "hand-added"}), {"SEG": "x"})}
    plan = plan_destination(DEST, [], last)
    assert [(c.key, c.remove_tags, c.set_fields, c.create) for c in plan.changes] == [
        ("gone@x.uz", frozenset({"rfm:VIP"}), {}, False)]


def test_plan_json_round_trip():
    from sync.planning.plan import Plan

    desired, _ = desired_contacts([{"customer_id": "1", "email": "a@b.uz", "segment": "Best active", "r": 3}], DEST)
    plan = plan_destination(DEST, desired, {}, revision=7)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert plan.totals() == {"added": 1, "removed": 0, "updated": 0, "new": 1, "skipped": 0}


@settings(max_examples=examples(300), deadline=None)
@given(st.from_regex(r"[a-z0-9._+-]{1,12}@[a-z0-9.-]{1,12}\.[a-z]{1,5}", fullmatch=True))
def test_email_fast_path_never_accepts_what_email_validator_rejects(value):
    from email_validator import EmailNotValidError, validate_email

    from connectors.email_phone import is_plain_email

    if is_plain_email(value):
        try:
            assert validate_email(value, check_deliverability=False).normalized.lower() == value
        except EmailNotValidError as exc:  # pragma: no cover - the assertion message
            raise AssertionError(f"fast path accepted {value!r}: {exc}") from None
