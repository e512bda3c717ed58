"""The plan guards on small lists and on saved plans (docs/safety.md): the floor ``min_mass_change`` never lets
most of the managed contacts through, withdrawals and other removals are also judged together, and ``apply``
believes a saved plan's ``withdrawn`` only as far as the plan's changes bear it out. Through `rfmsync` against the
fake Mailchimp, and the rules as table tests."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from sync.config import GuardsConfig
from sync.guards import PlanStats, plan_lines, saved_withdrawals
from sync.planning.plan import Plan, plan_destination
from tests.profiles import examples
from tests.test_guards import run_cli, runs_of
from tests.test_guards_withdrawal import (MANAGED, managed_contacts, more_guards, plan_doc,  # noqa: F401
                                          set_consent, small_shop)
from tests.test_plan import DEST, desired_st, state_st
from tests.test_worker import AS_OF, audience

WITHDRAWN_4_OF_7 = ("guard max_withdrawal_pct: 4 of 7 managed contacts (57.1 %) would lose their tags for a "
                    "marketing consent the source says is no; limit 25 %")


def together(both: int, managed: int, share: str, withdrawn: int, removed: int, limit: str = "25",
             key: str = "max_withdrawal_pct") -> str:
    return (f"guard {key} (withdrawals and removals together): {both} of {managed} managed contacts "
            f"({share} %) would lose their tags, {withdrawn} for a marketing consent the source says is no and "
            f"{removed} for other reasons; limit {limit} %")


# ------------------------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("stats, expected", [
    # every tag off 4 of 4 contacts: under min_mass_change (5), but all of them (the changes, contacts who keep
    # managed tags in general, only from min_mass_change on)
    (PlanStats(managed=4, removed=4, changed=4),
     ["guard max_removal_pct: 4 of 4 managed contacts (100 %) would lose their tags; limit 10 %"]),
    (PlanStats(managed=1, removed=1, changed=1),  # the floor at all of the managed contacts: one of one
     ["guard max_removal_pct: 1 of 1 managed contacts (100 %) would lose their tags; limit 10 %"]),
    (PlanStats(managed=1, removed=0, changed=0, withdrawn=1), []),  # the one person asking: never held back
    # a small shop's quantile segments reshuffle on one order: 3 of 4 moving keep managed tags, under the floor
    (PlanStats(managed=4, removed=0, changed=3), []),
    (PlanStats(managed=5, removed=0, changed=5),
     ["guard max_change_pct: 5 of 5 managed contacts (100 %) would change; limit 50 %"]),
    # 4 of 7 saying no (a mis-mapped consent column in a small shop): most of the list
    (PlanStats(managed=7, removed=0, changed=0, withdrawn=4),
     [WITHDRAWN_4_OF_7 + ": is [source] marketing_consent mapped to the consent column?"]),
    (PlanStats(managed=2, removed=0, changed=0, withdrawn=1), []),  # half is not most: one of two withdrawing
    (PlanStats(managed=8, removed=4, changed=4), []),  # 4 of 8: not most, under the floor
])
def test_the_floor_lifts_a_guard_only_for_a_minority_of_the_managed_contacts(stats, expected):
    assert plan_lines(GuardsConfig(), stats) == expected


def test_a_large_floor_still_refuses_most_of_the_list():
    g = GuardsConfig(min_mass_change=100)
    assert plan_lines(g, PlanStats(managed=1000, removed=99, changed=0)) == []
    assert plan_lines(g, PlanStats(managed=150, removed=76, changed=0)) == [
        "guard max_removal_pct: 76 of 150 managed contacts (50.7 %) would lose their tags; limit 10 %"]


@pytest.mark.parametrize("guards, stats, expected", [
    # 20 % withdrawn + 8 % removed: neither alone, 28 % together
    ({}, PlanStats(managed=100, removed=8, changed=8, withdrawn=20), [together(28, 100, "28", 20, 8)]),
    # every managed contact of a small shop emptied, each count under the floor (4 of 6)
    ({}, PlanStats(managed=6, removed=3, changed=3, withdrawn=3), [together(6, 6, "100", 3, 3)]),
    ({}, PlanStats(managed=100, removed=11, changed=11, withdrawn=20),
     ["guard max_removal_pct: 11 of 100 managed contacts (11 %) would lose their tags; limit 10 %",
      together(31, 100, "31", 20, 11)]),
    ({}, PlanStats(managed=100, removed=5, changed=5, withdrawn=20), []),  # 25 %: the limit itself passes
    # a removal limit set above the withdrawals' is the limit of the two together: one withdrawal does not tip it
    ({"max_removal_pct": 40}, PlanStats(managed=100, removed=30, changed=30, withdrawn=1), []),
    ({"max_removal_pct": 40}, PlanStats(managed=100, removed=30, changed=30, withdrawn=11),
     [together(41, 100, "41", 11, 30, "40", key="max_removal_pct")]),  # the line names the limit's key
])
def test_withdrawals_and_removals_are_also_judged_together(guards, stats, expected):
    assert plan_lines(GuardsConfig(**guards), stats) == expected


def test_emptying_every_managed_contact_always_trips():
    """… but for the one person of a list of one withdrawing (he asked; nothing else moved)."""
    for managed in range(1, 41):
        for withdrawn in range(managed + 1):
            removed = managed - withdrawn
            stats = PlanStats(managed=managed, removed=removed, changed=removed, withdrawn=withdrawn)
            assert bool(plan_lines(GuardsConfig(), stats)) is (stats != PlanStats(1, 0, 0, withdrawn=1)), stats


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(desired_st(), max_size=10, unique_by=lambda d: d.key),
       st.lists(state_st(), max_size=10, unique_by=lambda s: s.key), st.booleans())
def test_apply_believes_the_withdrawals_the_planner_makes_and_no_other_change(desired, last, full_refresh):
    """``saved_withdrawals`` (apply's test) keeps every withdrawal the planner lists under ``skip``, none under
    another mode, and takes no other change of a contact whose consent the source gives (yes or no: a contact of
    unknown consent leaving every segment looks like a withdrawal to a saved plan; it is judged with the
    removals by the rule of the two together) for one, nor a contact who left the customer base."""
    desired = [replace(d, tags=frozenset()) if d.consent == "no" else d for d in desired]  # as desired_contacts
    plan = plan_destination(DEST.model_copy(update={"new_contacts": "skip"}), desired, {s.key: s for s in last},
                            full_refresh=full_refresh)
    assert saved_withdrawals(plan, "skip") == plan.withdrawn
    assert saved_withdrawals(plan, "transactional") == ()
    unknown = {d.key for d in desired if d.consent == "unknown"}
    every = replace(plan, withdrawn=tuple(c.key for c in plan.changes))
    assert set(saved_withdrawals(every, "skip")) - unknown == set(plan.withdrawn)


# ------------------------------------------------------------------------------------------- end to end


def drop_customers(path: Path, customers: set[str]) -> None:
    """Take ``customers``' orders out of the shop's export (they left the customer base)."""
    orders = path.parent / "orders.csv"
    header, *rows = orders.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    orders.write_text("\ufeff" + header + "".join(r for r in rows if not any(f";{c};" in r for c in customers)),
                      encoding="utf-8")


def test_most_of_a_small_list_saying_no_is_refused(small_shop, mailchimp_fake):
    """4 of 7 managed contacts say no (under min_mass_change, but most of the list): refused, nothing written."""
    set_consent(small_shop, "нет", set(list(managed_contacts(small_shop).values())[:4]))
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    refused = run_cli("sync", "--config", str(small_shop), "--as-of", AS_OF.isoformat(), code=6)
    assert WITHDRAWN_4_OF_7 in refused.output
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes
    assert len(managed_contacts(small_shop)) == 7


def test_a_small_list_emptied_by_withdrawals_and_removals_is_refused_but_its_few_withdrawals_go_out(
        small_shop, mailchimp_fake):
    """3 withdrawals and 2 customers deleted of 7: each under the floor (4), together 5 of 7: refused. The 3
    withdrawals, fewer than the withdrawal rule's own floor, go out alone (a few never hold a sync back); the
    removals wait."""
    managed = managed_contacts(small_shop)
    customers = list(managed.values())
    set_consent(small_shop, "нет", set(customers[:3]))
    drop_customers(small_shop, set(customers[3:5]))
    guard = plan_doc(small_shop)["plans"][0]["guard"]
    assert (guard["managed"], guard["withdrawn"], guard["removed"]) == (7, 3, 2) and guard["changed"] < 4
    before = audience(mailchimp_fake)
    refused = run_cli("sync", "--config", str(small_shop), "--as-of", AS_OF.isoformat(), code=6)
    assert together(5, 7, "71.4", 3, 2) in refused.output
    assert refused.output.count("guard ") == 1  # neither count alone (3, 2: under the floor of 4) trips
    assert "3 consent withdrawals went out alone" in refused.output
    assert [r["status"] for r in runs_of(small_shop)[:2]] == ["refused", "succeeded"]
    after = audience(mailchimp_fake)
    moved = {e for e in set(before) | set(after) if before.get(e) != after.get(e)}
    assert moved == {e for e, c in managed.items() if c in customers[:3]}  # the deleted customers keep theirs


def saved_plan(path: Path, to: Path) -> dict:
    run_cli("plan", "--config", str(path), "--as-of", AS_OF.isoformat(), "-o", str(to))
    return json.loads(to.read_text(encoding="utf-8"))


def edit(to: Path, doc: dict, **plan) -> None:
    doc["plans"][0].update(plan)
    to.write_text(json.dumps(doc), encoding="utf-8")


REMOVAL_1_OF_7 = "guard max_removal_pct: 1 of 7 managed contacts (14.3 %) would lose their tags; limit 10 %"


def test_apply_counts_a_removal_listed_as_withdrawn_by_hand_as_a_removal(small_shop, mailchimp_fake, tmp_path):
    """A customer deleted (1 of 7, over max_removal_pct with the floor at 1) is refused; his key added to the
    saved plan's ``withdrawn`` does not make it a withdrawal (judged at 25 %): his change is no consent's."""
    more_guards(small_shop, min_mass_change=1)
    (gone, gone_id), *_ = managed_contacts(small_shop).items()
    drop_customers(small_shop, {gone_id})
    to = tmp_path / "plan.json"
    doc = saved_plan(small_shop, to)
    assert doc["plans"][0]["withdrawn"] == [] and any(REMOVAL_1_OF_7 in w for w in doc["warnings"])
    edit(to, doc, withdrawn=[gone])
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    assert REMOVAL_1_OF_7 in run_cli("apply", "--config", str(small_shop), str(to), code=6).output
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes


def test_apply_believes_a_withdrawal_only_while_the_destination_skips(small_shop, mailchimp_fake, tmp_path):
    """A real withdrawal (1 of 7) in a saved plan: what the planners list, apply believes, and applies; the same
    plan applied after the destination switched away from ``skip`` is judged as a removal, and refused."""
    more_guards(small_shop, min_mass_change=1)
    (key, cid), *_ = managed_contacts(small_shop).items()
    set_consent(small_shop, "нет", {cid})
    to = tmp_path / "plan.json"
    doc = saved_plan(small_shop, to)
    plan = Plan.from_json(doc["plans"][0])
    assert plan.withdrawn == (key,) and saved_withdrawals(plan, "skip") == (key,)  # the planners' own test
    assert saved_withdrawals(plan, "transactional") == ()

    config = small_shop.read_text(encoding="utf-8")
    small_shop.write_text(config.replace('new_contacts = "skip"', 'new_contacts = "transactional"'), encoding="utf-8")
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    assert REMOVAL_1_OF_7 in run_cli("apply", "--config", str(small_shop), str(to), code=6).output
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes

    small_shop.write_text(config, encoding="utf-8")
    run_cli("apply", "--config", str(small_shop), str(to))
    assert not mailchimp_fake.tags_of(key) & MANAGED and key not in managed_contacts(small_shop)


def test_an_old_saved_plan_counts_its_withdrawals_as_removals(small_shop, mailchimp_fake, tmp_path):
    """A plan saved by an rfmsync without ``withdrawn``: its withdrawal is judged as a removal (docs/safety.md)."""
    more_guards(small_shop, min_mass_change=1)
    (key, cid), *_ = managed_contacts(small_shop).items()
    set_consent(small_shop, "нет", {cid})
    to = tmp_path / "plan.json"
    doc = saved_plan(small_shop, to)
    del doc["plans"][0]["withdrawn"], doc["plans"][0]["guard"]
    to.write_text(json.dumps(doc), encoding="utf-8")
    assert REMOVAL_1_OF_7 in run_cli("apply", "--config", str(small_shop), str(to), code=6).output
    assert mailchimp_fake.tags_of(key) & MANAGED


@pytest.mark.parametrize("withdrawn", ["a@example.com", [1, 2], {"a@example.com": True}])
def test_a_saved_plan_whose_withdrawn_is_not_a_list_of_keys_is_an_error(small_shop, mailchimp_fake, tmp_path,
                                                                         withdrawn):
    to = tmp_path / "plan.json"
    edit(to, saved_plan(small_shop, to), withdrawn=withdrawn)
    out = run_cli("apply", "--config", str(small_shop), str(to), code=2).output
    assert str(to) in out and '"withdrawn" of destination \'mailchimp-demo\' (a list of contact keys)' in out, out


@pytest.mark.parametrize("entry", [1, "mailchimp-demo", None, [1]])
def test_a_saved_plan_whose_entry_is_not_an_object_is_an_error_naming_the_file(small_shop, mailchimp_fake, tmp_path,
                                                                              entry):
    """A plan entry that is not a JSON object is a clear error naming the plan file (exit 2), not a traceback."""
    to = tmp_path / "plan.json"
    doc = saved_plan(small_shop, to)
    doc["plans"] = [entry]
    to.write_text(json.dumps(doc), encoding="utf-8")
    out = run_cli("apply", "--config", str(small_shop), str(to), code=2).output
    assert str(to) in out and "not an rfmsync plan file" in out, out
