"""One e-mail address, two customers (a family account): the ESP contact is the customer the full plan picks (the
more valuable one), and a webhook resync of the other one does not take it over until the next full sync gives
it back, a flap per order (tags and fields written twice, an ESP automation on "tag added" started each time)."""

from __future__ import annotations

import logging

from connectors.records import Contact
from sync.model import DesiredContact, PushedState
from sync.planning.plan import leave_shared_to_full_sync
from sync.config import load_config
from sync.ledger import open_ledger
from sync.serve.resync import resync
from sync.serve.scheduler import run_full_sync
from sync.settings import load_settings

from tests.test_serve_resync import AS_OF, DEST, orders_for, synced_shop


def test_a_resync_of_the_other_customer_of_a_shared_address_leaves_it_to_the_full_sync(
        tmp_path, mailchimp_fake, monkeypatch, caplog):
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=120)
    cfg, settings = load_config(path), load_settings()
    caplog.set_level(logging.INFO, logger="sync.serve.resync")
    with open_ledger(cfg, settings) as ledger:
        state = ledger.load_state(DEST)
        shared, owner = next((k, s.customer_id) for k, s in sorted(state.items()) if s.tags == {"VIP"})
        old, other = next((k, s.customer_id) for k, s in sorted(state.items()) if s.tags == {"Winback"})
        # the churned customer now gives the VIP's address (the CRM's contact of a family member)
        report = resync(cfg, ledger, settings, contacts=[Contact(other, email=shared.upper())], as_of=AS_OF)
        assert report.customers == 1
        assert mailchimp_fake.tags_of(shared) == {"VIP"}  # still the VIP's segment ...
        assert ledger.load_state(DEST)[shared].customer_id == owner  # ... and his contact
        assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "sync.serve.resync"
                and "left to the full sync" in r.getMessage()] == [
            ("INFO", f"webhook resync of {DEST}: {shared} is customer {owner}'s contact and also customer {other}'s "
                     "address: left to the full sync, which picks the more valuable one")]
        assert mailchimp_fake.tags_of(old) == set()  # the other's old address lost rfmsync's tags (it left)
        # a small order of the other one: a resync again, still no take-over
        resync(cfg, ledger, settings, orders_for([other], "FAM", amount="100"), as_of=AS_OF)
        assert mailchimp_fake.tags_of(shared) == {"VIP"}
        fields = dict(mailchimp_fake.lists["aud1"].members[shared]["merge_fields"])
        assert fields["RFM_SEG"] == "Best active"
        # the full sync agrees: nothing to write for the shared address
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        assert mailchimp_fake.tags_of(shared) == {"VIP"}
        assert ledger.load_state(DEST)[shared].customer_id == owner
        # the VIP's e-mail changes: the address he left is the other's contact now, its tags are not taken off
        resync(cfg, ledger, settings, contacts=[Contact(owner, email="moved-" + shared)], as_of=AS_OF)
        assert mailchimp_fake.tags_of("moved-" + shared) == {"VIP"}
        assert mailchimp_fake.tags_of(shared) == {"VIP"}
        # the other's next resync takes the contact: the ledger's owner no longer gives the address
        resync(cfg, ledger, settings, orders_for([other], "FAM2", amount="100"), as_of=AS_OF)
        taken = ledger.load_state(DEST)[shared]
        assert taken.customer_id == other and mailchimp_fake.tags_of(shared) == set(taken.tags) != {"VIP"}
        # and the full sync agrees: the other's contact, nothing moves back
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        assert mailchimp_fake.tags_of(shared) == set(taken.tags)
        assert ledger.load_state(DEST)[shared].customer_id == other


def test_the_partial_plan_notes_the_address_it_leaves_and_takes_it_when_its_owner_is_resynced_too():
    want = [DesiredContact(key="fam@x.ru", customer_id="B", email="fam@x.ru", consent="yes", segment="Churn",
                           tags=frozenset({"Winback"}), fields={}),
            DesiredContact(key="b@x.ru", customer_id="C", email="b@x.ru", consent="yes", segment="Churn",
                           tags=frozenset({"Winback"}), fields={})]
    last = {"fam@x.ru": PushedState("fam@x.ru", "A", frozenset({"VIP"}), {}, True),
            "b@x.ru": PushedState("b@x.ru", None, frozenset(), {}, True)}  # no owner recorded: planned as before
    asked = []

    def store(keys, among):
        asked.append((keys, among))
        return {"fam@x.ru": {"A"}}

    kept, rest, notes = leave_shared_to_full_sync(want, last, {"B", "C"}, store)
    assert [d.key for d in kept] == ["b@x.ru"] and list(rest) == ["b@x.ru"]
    assert notes == ["fam@x.ru is customer A's contact and also customer B's address: left to the full sync, "
                     "which picks the more valuable one"]
    assert asked == [({"fam@x.ru"}, {"A"})]  # by id: is A still giving it?
    assert leave_shared_to_full_sync(want, last, {"A", "B", "C"}, store) == (want, last, [])
    assert len(asked) == 1  # nobody else named, nothing left: the store is not asked


def _want(key, customer, tags):
    return DesiredContact(key=key, customer_id=customer, email=key, consent="yes", segment="Churn",
                          tags=frozenset(tags), fields={})


def test_an_owner_the_store_no_longer_gives_the_address_to_does_not_hold_it():
    """The ledger's owner is the last customer written, not the full plan's pick: A moved to a new address, or
    was deleted, or was a guest id since merged into B. B's resync takes the contact (before, it was left "to
    the full sync" at every resync, naming A, and a full sync with nothing to write never changed the owner)."""
    last = {"fam@x.ru": PushedState("fam@x.ru", "A", frozenset({"VIP"}), {}, True)}
    want = [_want("fam@x.ru", "B", {"Winback"})]
    assert leave_shared_to_full_sync(want, last, {"B"}, lambda keys, among: {}) == (want, last, [])


def test_an_address_a_customer_left_keeps_its_tags_while_another_customer_gives_it():
    """A's resync after his e-mail changed: fam@x.ru, which B still gives, is B's contact now, not an address
    that left (whose managed tags the plan would take off): it is left to the full sync; an address nobody gives
    any more is still planned as one that left."""
    last = {"fam@x.ru": PushedState("fam@x.ru", "A", frozenset({"VIP"}), {}, True),
            "old@x.ru": PushedState("old@x.ru", "A", frozenset({"VIP"}), {}, True)}
    want = [_want("a@new.ru", "A", {"VIP"})]
    asked = []

    def store(keys, among):
        asked.append((keys, among))
        return {"fam@x.ru": {"B"}}

    kept, rest, notes = leave_shared_to_full_sync(want, last, {"A"}, store)
    assert asked == [({"fam@x.ru", "old@x.ru"}, None)]  # by address, among everyone
    assert kept == want and list(rest) == ["old@x.ru"]
    assert notes == ["fam@x.ru is no longer customer A's address but still customer B's: left to the full sync"]


def test_an_address_left_long_ago_does_not_ask_the_store_again():
    """An address a customer left, whose tags the plan already took off (no tags in the ledger): nothing to
    decide, so the store is not scanned for it at every later resync of that customer."""
    last = {"old@x.ru": PushedState("old@x.ru", "A", frozenset(), {"SEG": "VIP"}, True)}
    want = [_want("a@new.ru", "A", {"VIP"})]

    def store(keys, among):
        raise AssertionError(f"the store was asked about {keys}")

    assert leave_shared_to_full_sync(want, last, {"A"}, store) == (want, last, [])


def test_a_full_plan_says_which_addresses_several_customers_share(tmp_path):
    """The full plan keeps the first customer of an address in planning order (the more valuable); the others'
    segments never reach the ESP, and the plan says so instead of dropping them without a word."""
    from sync.config import Config
    from sync.ledger import Ledger
    from sync.planning.planner import plan_one

    cfg = Config(destinations=[{"name": "mc", "type": "mailchimp", "audience": "a", "segments": {"Churn": "W"}}])
    rows = [{"customer_id": "A", "email": "fam@x.ru", "segment": "Best active", "marketing_consent": "yes"},
            {"customer_id": "B", "email": "solo@x.ru", "segment": "Churn", "marketing_consent": "yes"},
            {"customer_id": "C", "email": " FAM@x.ru", "segment": "Churn", "marketing_consent": "yes"},
            {"customer_id": "D", "email": "two@x.ru", "segment": "Churn", "marketing_consent": "yes"},
            {"customer_id": "E", "email": "Two@X.ru", "segment": "Churn", "marketing_consent": "yes"}]
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        plan = plan_one(cfg, cfg.destinations[0], rows, ledger, None, None, full_refresh=False,
                        reconcile=False).plan
        alone = plan_one(cfg, cfg.destinations[0], rows[:2], ledger, None, None, full_refresh=False,
                         reconcile=False).plan
    finally:
        ledger.close()
    assert sorted(c.key for c in plan.changes) == ["fam@x.ru", "solo@x.ru", "two@x.ru"]
    assert ("2 addresses are each shared by several customers (fam@x.ru: customers A, C; two@x.ru: customers D, E):"
            " each is one contact, synced as the first of its customers (the most valuable); the others' segments"
            " and fields are not synced") in plan.notes
    assert not any("shared" in n for n in alone.notes)
