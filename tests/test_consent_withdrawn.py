"""A consent withdrawn in the source, under ``new_contacts = "skip"``: the contact carries no managed tag or list
any more, and no later segment move gives him one (a SendGrid or Unisender list is what campaigns are sent to).

End to end against the stateful fake of every ESP on 127.0.0.1 (the contract battery's rig); the planner rule
itself (Python and columnar alike) in one table below."""

from __future__ import annotations

import pytest

from sync.config import DestinationConfig
from sync.model import PushedState
from sync.planning.plan import desired_contacts, plan_destination
from tests import test_destination_contract as contract

AS_OF, LATER = contract.AS_OF, contract.LATER
esp, make_rig, runs, shop = contract.esp, contract.make_rig, contract.runs, contract.shop


def _dest(new_contacts: str) -> DestinationConfig:
    return DestinationConfig(name="sg", type="sendgrid", new_contacts=new_contacts,
                             segments={"Best active": "VIP", "Churn": "Winback"}, fields={"SEG": "segment"})


@pytest.mark.parametrize("new_contacts, consent, add, remove", [
    ("skip", "no", set(), {"VIP"}),  # withdrawn: his list comes off, the new one is not added
    ("skip", "unknown", {"Winback"}, {"VIP"}),  # the source does not say: a contact the ESP holds stays managed
    ("skip", "yes", {"Winback"}, {"VIP"}),
    ("transactional", "no", {"Winback"}, {"VIP"}),  # asked for: contacts without consent get tags and lists
])
def test_a_known_contact_who_says_no_carries_no_managed_list_under_skip(new_contacts, consent, add, remove):
    dest = _dest(new_contacts)
    desired, _ = desired_contacts([{"customer_id": "1", "email": "a@shop.uz", "marketing_consent": consent,
                                    "segment": "Churn"}], dest)
    last = {"a@shop.uz": PushedState("a@shop.uz", "1", frozenset({"VIP"}), {"SEG": "Best active"})}
    plan = plan_destination(dest, desired, last)
    (change,) = plan.changes
    assert (change.add_tags, change.remove_tags, change.create) == (add, remove, False)
    assert change.set_fields == {"SEG": "Churn"}


def test_a_consent_withdrawn_in_the_source_takes_the_managed_lists_off_and_none_is_added(esp, make_rig, runs):
    rig = make_rig(new_contacts="skip")
    rig.converge(AS_OF)
    planned, _ = rig.plan(AS_OF)
    managed = set(planned.plan.managed_tags)
    held = {k: s.tags & managed for k, s in rig.ledger.load_state(rig.dest.name).items() if s.tags & managed}
    later = {c["key"]: set(c["add_tags"]) for c in rig.plan(LATER)[1]["changes"]}
    movers = sorted(k for k in held if later.get(k, set()) - held[k])  # a later segment gives them another
    victims = movers[:3] + sorted(set(held) - set(movers))[:3]
    assert len(victims) == 6 and len(movers) >= 3
    assert all(esp.managed_of(k, managed) == held[k] for k in victims)
    for run in runs.values():
        run.con.execute("UPDATE contacts SET marketing_consent = 'no' WHERE lower(trim(email)) IN "
                        f"({', '.join('?' * len(victims))})", victims)
    try:
        plan, _, report = rig.sync(AS_OF)
        assert report.status == "succeeded", report.errors
        assert {c.key: (c.add_tags, c.remove_tags) for c in plan.changes} == {
            k: (frozenset(), held[k]) for k in victims}
        assert all(esp.managed_of(k, managed) == set() and esp.exists(k) for k in victims)
        plan, _, report = rig.sync(LATER)  # the movers' segments change: still nothing added to them
        assert report.status == "succeeded", report.errors
        assert not {c.key for c in plan.changes if c.add_tags} & set(victims)
        assert all(esp.managed_of(k, managed) == set() for k in victims)
        assert all(not rig.ledger.load_state(rig.dest.name)[k].tags & managed for k in victims)
        contract.assert_ledger_matches_esp(esp, rig, managed)
    finally:
        for run in runs.values():
            run.con.execute("UPDATE contacts SET marketing_consent = 'yes' WHERE lower(trim(email)) IN "
                            f"({', '.join('?' * len(victims))})", victims)
