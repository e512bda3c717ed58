"""``ItemResult.missing`` on a success: the operation is done *and* the ESP does not hold the contact (a removal for
a contact deleted in the ESP since: he carries nothing, so the removal is done). The ledger must then forget
him as it does for a failure flagged missing (no tags, no fields, not existing), so the next plan creates him
again under the consent rules, instead of keeping him as a member holding the fields rfmsync once pushed."""

from __future__ import annotations

import hashlib
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


@pytest.mark.parametrize("case", ["deleted", "subscribed", "archived", "read fails"])
def test_a_tag_removal_mailchimp_refuses_as_not_a_member_is_checked_before_the_ledger_forgets_him(
        mailchimp_fake, tmp_path, case):
    """Mailchimp: the ledger knows him tagged; the plan only takes one tag off; the tag call refuses the removal
    with a text that reads like "not a member" ("does not exist on this list", "not found", ...). That is believed
    only when the member read (``GET /lists/{id}/members/{md5 of the address}``) answers 404: then the removal is
    done (he carries no tag) and the ledger forgets him. A member still there (any status, archived too) or a
    read that fails: the removal failed, the ledger keeps him with his tags and fields (cleaned up next run)."""
    from sync.destinations.mailchimp import MailchimpDestination

    key = "Gone@Example.com".lower()
    known = PushedState(key, "G", frozenset({"rfm:A", "rfm:B"}), {"SEGMENT": "B"})
    mailchimp_fake.add_member(key, status="archived" if case == "archived" else "subscribed",
                              merge_fields={"SEGMENT": "B"}, tags=["rfm:A", "rfm:B"])
    if case == "deleted":
        mailchimp_fake.forget(key)
    else:
        mailchimp_fake.member_errors[key] = "Member not found in static segment"
    member_path = f"/lists/aud1/members/{hashlib.md5(key.encode()).hexdigest()}"
    if case == "read fails":
        mailchimp_fake.fail(503, times=2, method="GET", path=member_path + "$")
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        ledger.save_states("mc", None, [known])
        client = MailchimpDestination("mc", "aud1", mailchimp_fake.api_key, api_url=mailchimp_fake.url, timeout=5,
                                      retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))
        change = ContactChange(key, key, "G", "C", False, "transactional", remove_tags=frozenset({"rfm:B"}))
        report = execute_plan(Plan("mc", "mailchimp", (change,), (), ("rfm:A", "rfm:B"), {}, 0), client, ledger)
        assert mailchimp_fake.count("GET", member_path) == (2 if case == "read fails" else 1)
        assert mailchimp_fake.violations == []
        if case == "deleted":
            assert report.counts["failed"] == 0
            assert ledger.load_state("mc")[key] == PushedState(key, "G", frozenset(), {}, False)
            return
        assert report.counts["failed"] == 1
        assert mailchimp_fake.tags_of(key) == {"rfm:A", "rfm:B"}
        assert ledger.load_state("mc")[key] == known
        [failure] = ledger.pending_failures("mc")
        error = failure["last_error"]
        assert failure["op"] == "tag-rfm:B" and "refused the removal of" in error and (
            "failed: " in error if case == "read fails" else f"is a member (status {case})" in error)
    finally:
        ledger.close()
