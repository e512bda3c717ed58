"""A webhook resync reads the doubts of the contacts it plans (sync.planning.doubt), by key: a tag whose add's
answer was lost (the ESP did it) comes off a contact who no longer gets it as soon as a webhook moves him, not at
the next full sync; the failure is settled. Against the Mailchimp fake."""

from __future__ import annotations

from sync.config import load_config
from sync.ledger import open_ledger
from sync.model import ItemResult
from sync.serve.resync import resync
from sync.settings import load_settings
from tests.test_serve_resync import AS_OF, DEST, orders_for
from tests.test_worker import churned_contact, shop  # noqa: F401

DOUBTED = "Winback soft"  # "Falling asleep": not a customer's who just ordered


def test_a_webhook_resync_takes_a_doubted_tag_off_a_contact_who_no_longer_gets_it(shop, mailchimp_fake):  # noqa: F811
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        email, cid = churned_contact(ledger)
        # an add of DOUBTED whose answer was lost: the ESP did it, the ledger holds it as a pending failure only
        segment = next(s for s in mailchimp_fake.lists["aud1"].segments.values() if s["name"] == DOUBTED)
        segment["members"].add(email)
        ledger.record_failures(DEST, None, [ItemResult(email, f"tag+{DOUBTED}", False, "HTTP 200: an HTML page")])
        assert DOUBTED not in ledger.load_state(DEST)[email].tags
        report = resync(cfg, ledger, settings, orders_for([cid], "W"), as_of=AS_OF)  # he orders: no longer asleep
        assert report.customers == 1
        assert DOUBTED not in mailchimp_fake.tags_of(email)
        assert ledger.pending_failures(DEST) == []  # the removal settled the doubted add


def test_the_doubts_are_read_by_key(shop):  # noqa: F811
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        ledger.record_failures(DEST, None, [ItemResult(k, "tag+VIP", False, "lost") for k in ("a@x.uz", "b@x.uz")])
        assert ledger.doubted_ops(DEST, ["b@x.uz", "c@x.uz"]) == [("b@x.uz", "tag+VIP")]
