"""One e-mail address, two customers (a family account): the ESP contact is the customer the full plan picks (the
more valuable one), and a webhook resync of the other one does not take it over until the next full sync gives
it back, a flap per order (tags and fields written twice, an ESP automation on "tag added" started each time)."""

from __future__ import annotations

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
        tmp_path, mailchimp_fake, monkeypatch):
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=120)
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        state = ledger.load_state(DEST)
        shared, owner = next((k, s.customer_id) for k, s in sorted(state.items()) if s.tags == {"VIP"})
        old, other = next((k, s.customer_id) for k, s in sorted(state.items()) if s.tags == {"Winback"})
        # the churned customer now gives the VIP's address (the CRM's contact of a family member)
        report = resync(cfg, ledger, settings, contacts=[Contact(other, email=shared.upper())], as_of=AS_OF)
        assert report.customers == 1
        assert mailchimp_fake.tags_of(shared) == {"VIP"}  # still the VIP's segment ...
        assert ledger.load_state(DEST)[shared].customer_id == owner  # ... and his contact
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


def test_the_partial_plan_notes_the_address_it_leaves_and_takes_it_when_its_owner_is_resynced_too():
    want = [DesiredContact(key="fam@x.ru", customer_id="B", email="fam@x.ru", consent="yes", segment="Churn",
                           tags=frozenset({"Winback"}), fields={}),
            DesiredContact(key="b@x.ru", customer_id="C", email="b@x.ru", consent="yes", segment="Churn",
                           tags=frozenset({"Winback"}), fields={})]
    last = {"fam@x.ru": PushedState("fam@x.ru", "A", frozenset({"VIP"}), {}, True),
            "b@x.ru": PushedState("b@x.ru", None, frozenset(), {}, True)}  # no owner recorded: planned as before
    kept, rest, notes = leave_shared_to_full_sync(want, last, {"B", "C"})
    assert [d.key for d in kept] == ["b@x.ru"] and list(rest) == ["b@x.ru"]
    assert notes == ["fam@x.ru is customer A's contact and also customer B's address: left to the full sync, "
                     "which picks the more valuable one"]
    assert leave_shared_to_full_sync(want, last, {"A", "B", "C"}) == (want, last, [])
