"""``ItemResult.missing`` on a success: the operation is done *and* the ESP does not hold the contact (a removal for
a contact deleted in the ESP since: he carries nothing, so the removal is done). The ledger must then forget
him as it does for a failure flagged missing (no tags, no fields, not existing), so the next plan creates him
again under the consent rules, instead of keeping him as a member holding the fields rfmsync once pushed."""

from __future__ import annotations

import random

import pytest

from connectors.retry import RetryPolicy
from sync.destinations.unisender import UnisenderDestination
from sync.engine import execute_plan
from sync.ledger import Ledger
from sync.model import ContactChange, ItemResult, PushedState
from sync.outcomes import StateFold
from sync.planning.plan import Plan, apply_results_to_state

KEY = "a@x.io"
KNOWN = PushedState(KEY, "A", frozenset({"rfm:A", "rfm:B"}), {"R": 3}, True)


def removal(*tags: str) -> ContactChange:
    return ContactChange(KEY, KEY, "A", "seg", False, None, remove_tags=frozenset(tags))


@pytest.mark.parametrize("results", [
    [ItemResult(KEY, "tag-rfm:A", True, missing=True)],
    [ItemResult(KEY, "tag-rfm:A", True, missing=True), ItemResult(KEY, "tag-rfm:B", True)],
    [ItemResult(KEY, "tag-rfm:B", True), ItemResult(KEY, "tag-rfm:A", True, missing=True)],
])
def test_a_success_flagged_missing_forgets_the_contact_in_both_folds(results):
    changes = {KEY: removal("rfm:A", "rfm:B") if len(results) == 2 else removal("rfm:A")}
    forgotten = PushedState(KEY, "A", frozenset(), {}, False)
    state = {KEY: KNOWN}
    assert apply_results_to_state(state, changes, results) == {KEY}
    assert state[KEY] == forgotten
    fold = StateFold({KEY: KNOWN}, changes)
    assert [*fold(results), *fold.rest()] == [forgotten]


def test_a_removal_for_a_contact_deleted_in_unisender_leaves_him_forgotten_in_the_ledger(unisender_fake, tmp_path):
    """End to end: the ledger knows him on a list with fields; he was erased in Unisender; the plan only takes him
    off the list. The removal is done (he carries nothing) and the ledger no longer says he is there."""
    unisender_fake.add_list("Champions")
    key = "gone@x.com"
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        ledger.save_states("uni", None, [PushedState(key, "gone", frozenset({"list:Champions"}), {"R": 3})])
        client = UnisenderDestination("uni", unisender_fake.api_key, api_url=unisender_fake.api_url, timeout=5,
                                      retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))
        change = ContactChange(key, key, "gone", "x", False, "pending", remove_tags=frozenset({"list:Champions"}))
        report = execute_plan(Plan("uni", "unisender", (change,), (), ("list:Champions",), {}, 0), client, ledger)
        assert report.counts["failed"] == 0
        assert key not in unisender_fake.contacts
        assert ledger.load_state("uni")[key] == PushedState(key, "gone", frozenset(), {}, False)
    finally:
        ledger.close()


def test_a_tag_removal_mailchimp_refuses_as_not_a_member_forgets_him_in_the_ledger(mailchimp_fake, tmp_path):
    """Mailchimp: the ledger knows him tagged; he was deleted from the audience; the plan only takes the tag off.
    The tag call refuses the removal ("does not exist on this list"): the removal is done (he carries no tag)
    and, as a tag add refused the same way already does, the ledger forgets him."""
    from sync.destinations.mailchimp import MailchimpDestination

    key = "gone@example.com"
    mailchimp_fake.add_member(key, merge_fields={"SEGMENT": "B"}, tags=["rfm:B"])
    mailchimp_fake.forget(key)
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        ledger.save_states("mc", None, [PushedState(key, "G", frozenset({"rfm:B"}), {"SEGMENT": "B"})])
        client = MailchimpDestination("mc", "aud1", mailchimp_fake.api_key, api_url=mailchimp_fake.url, timeout=5,
                                      retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))
        change = ContactChange(key, key, "G", "C", False, "transactional", remove_tags=frozenset({"rfm:B"}))
        report = execute_plan(Plan("mc", "mailchimp", (change,), (), ("rfm:B",), {}, 0), client, ledger)
        assert report.counts["failed"] == 0 and mailchimp_fake.violations == []
        assert key not in mailchimp_fake.lists["aud1"].members
        assert ledger.load_state("mc")[key] == PushedState(key, "G", frozenset(), {}, False)
    finally:
        ledger.close()
