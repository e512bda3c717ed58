"""A contact deleted in the CRM, then restored there (amoCRM's trash, a Bitrix24 recycle bin, a RetailCRM customer
edited with the same id), comes back with what the CRM now says of him: the server's resync of the CRM's update
takes nothing of the emptied row (its consent ``no`` and attribute ``deleted``), nor does a worker batch holding the
deletion then the update; his consent is the update's own, ``unknown`` when it says none, never the one from before
his deletion; the next pull, incremental or ``--full``, keeps him. Shopify restores no deleted customer: an update
retried after the delete stays out (docs/sources/common.md#restored-contacts)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest
import requests
import responses

from connectors.amocrm import parse_webhook as amo_parse
from connectors.contacts import gone_contact
from connectors.bitrix24_webhooks import parse_webhook as b24_parse
from connectors.retailcrm_webhooks import parse_webhook as retail_parse
from tests.fakes.mailchimp import FakeMailchimp
from tests.test_amocrm import SUB, FakeAmo
from tests.test_bitrix24 import HOOK, FakeBitrix24
from tests.test_crm_gone_contacts import ANN_GONE, amo_synced, amo_two, esp_tags, mailchimp, run, shop
from tests.test_crm_gone_sweep import resync_contacts, row
from tests.test_retailcrm import FakeRetailCrm


def amo_contact(action: str, cid: str, at: int, **fields: str) -> bytes:
    """A ``contacts[<action>]`` delivery as amoCRM sends it (form data), ``fields`` its own (name, email)."""
    form = {f"contacts[{action}][0][id]": cid, f"contacts[{action}][0][updated_at]": str(at),
            "account[subdomain]": SUB}
    if "name" in fields:
        form[f"contacts[{action}][0][name]"] = fields["name"]
    if "email" in fields:
        form.update({f"contacts[{action}][0][custom_fields][0][code]": "EMAIL",
                     f"contacts[{action}][0][custom_fields][0][values][0][value]": fields["email"]})
    return urlencode(form).encode()


def test_an_amocrm_contact_restored_after_its_deletion_comes_back_through_the_server_and_the_next_pulls(
        tmp_path, monkeypatch):
    with amo_synced(tmp_path, monkeypatch, amo_two) as (config, mc, fake):
        before, ann = esp_tags(mc), row(tmp_path, "10")
        assert before["ann@example.com"]
        deleted_at = int(datetime.now(timezone.utc).timestamp()) - 60
        kept = fake.contacts.pop(10)  # in the trash: no list shows it
        resync_contacts(config, amo_parse({}, amo_contact("delete", "10", deleted_at))[1])
        assert row(tmp_path, "10") == ANN_GONE and esp_tags(mc)["ann@example.com"] == []
        # restored from the trash a minute later: amoCRM sends the contact's update
        restored_at = deleted_at + 60
        fake.contacts[10] = {**kept, "updated_at": restored_at}
        body = amo_contact("update", "10", restored_at, name="Ann", email="ann@example.com")
        resync_contacts(config, amo_parse({}, body)[1])
        # what the update says (no phone in it), consent unknown as amoCRM's always is: not the deletion's no
        assert row(tmp_path, "10") == ("10", "ann@example.com", None, "Ann", "unknown", None)
        assert esp_tags(mc) == before
        # the next incremental pull reads him whole (the update's time: it was left out against a stored "no")
        r = run("pull", "--config", config)
        assert r.exit_code == 0, r.output
        assert row(tmp_path, "10") == ann
        r = run("pull", "--full", "--config", config)
        assert r.exit_code == 0 and "no longer in amocrm's contact list" not in r.output, r.output
        assert row(tmp_path, "10") == ann


@pytest.mark.parametrize("one_batch", [False, True], ids=["two-batches", "one-batch"])
def test_an_amocrm_delete_then_restore_through_the_servers_intake_and_worker(tmp_path, monkeypatch, one_batch):
    """``rfmsync serve`` end to end: both deliveries posted to the HTTP intake, the worker resyncing them (in two
    batches, or in one that holds the deletion then the restore)."""
    from sync.config import load_config
    from sync.ledger import open_ledger
    from sync.serve.app import create_app
    from sync.serve.webhooks import Intake
    from sync.serve.worker import Worker
    from sync.settings import load_settings
    from tests.test_webhooks_generic import live_server

    config = shop(tmp_path, monkeypatch, "amocrm")
    monkeypatch.setenv("AMOCRM_WEBHOOK_TOKEN", "amo-t")
    with FakeMailchimp() as mc, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mailchimp(mc, monkeypatch, rsps)
        fake = FakeAmo(rsps)
        amo_two(fake)
        assert run("sync", "--config", config, "--allow-mass-change").exit_code == 0
        before = esp_tags(mc)
        cfg, settings = load_config(config), load_settings()
        at = int(datetime.now(timezone.utc).timestamp()) - 60
        with open_ledger(cfg, settings) as ledger, live_server(create_app(Intake(cfg, ledger, settings))) as base:
            worker = Worker(cfg, ledger, settings)

            def post(body: bytes) -> None:
                reply = requests.post(f"{base}/webhooks/amocrm/amo-t", data=body, timeout=10,
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
                assert reply.status_code == 202 and reply.json()["queued"] == 1, reply.text

            post(amo_contact("delete", "10", at))
            if not one_batch:
                assert worker.drain() == 1
                assert row(tmp_path, "10") == ANN_GONE and esp_tags(mc)["ann@example.com"] == []
            post(amo_contact("update", "10", at + 60, name="Ann", email="ann@example.com"))
            assert worker.drain() == (2 if one_batch else 1)
        assert row(tmp_path, "10") == ("10", "ann@example.com", None, "Ann", "unknown", None)
        assert esp_tags(mc) == before


def test_a_deletion_then_the_restore_in_one_worker_batch_is_the_restored_contact_never_a_consent_from_before():
    """The worker folds a contact's versions of one batch: an edit keeps what an earlier version said and it leaves
    out, but nothing is kept across a deletion: not the deletion's ``no`` and ``deleted``, nor the ``yes`` an edit
    before the deletion said (a generic delivery's: an amoCRM contact never says one), nor, in the resync, the
    stored row of before the deletion."""
    from connectors.records import Consent, Contact
    from sync.ledger.queue import Event
    from sync.serve.batches import _batch

    now = datetime.now(timezone.utc)
    t = int(now.timestamp())
    said_yes = ([], [Contact(customer_id="10", email="ann@example.com", marketing_consent=Consent.YES,
                             attributes={"tags": "vip"})])
    parts = [(Event(n, "amocrm", f"k{n}", "{}", now, 1), *records, False)
             for n, records in enumerate((said_yes, amo_parse({}, amo_contact("delete", "10", t - 60)),
                                          amo_parse({}, amo_contact("update", "10", t, name="Ann",
                                                                    email="ann@example.com"))), 1)]
    batch = _batch(parts)
    [kept] = batch.contacts
    assert (kept.customer_id, kept.email, kept.first_name, kept.marketing_consent, dict(kept.attributes),
            kept.gone) == ("10", "ann@example.com", "Ann", "unknown", {}, False)
    assert batch.restored == {"10"}  # nor is anything kept of the stored row (the resync's ``restored``)


def test_a_shopify_update_retried_after_the_customers_delete_stays_out_of_the_batch():
    """Shopify restores no deleted customer: a ``customers/update`` made before the delete (its ``updated_at``) and
    retried after it is an older version, left out; the delete is what the batch keeps."""
    from connectors.shopify import parse_webhook as shopify_parse
    from sync.ledger.queue import Event
    from sync.serve.batches import _batch

    now = datetime.now(timezone.utc)
    delete = shopify_parse({"X-Shopify-Topic": "customers/delete", "X-Shopify-Triggered-At": "2026-12-01T10:05:00Z"},
                           b'{"id": 7001}')
    update = shopify_parse({"X-Shopify-Topic": "customers/update"}, json.dumps({
        "id": 7001, "email": "ann@example.com", "updated_at": "2026-12-01T10:00:00Z",
        "email_marketing_consent": {"state": "subscribed"}}).encode())
    batch = _batch([(Event(n, "shopify", f"k{n}", "{}", now, 1), *records, False)
                    for n, records in enumerate((delete, update), 1)])
    [kept] = batch.contacts
    assert (kept.gone, kept.email, kept.marketing_consent, batch.stale) == (True, None, "no", {"contact": 1})


def retail_customer(cid: int, subscribed: bool | None) -> bytes:
    customer = {"id": cid, "email": f"c{cid}@example.com", "firstName": "Ann", "lastName": f"C{cid}",
                "createdAt": "2026-10-01 10:00:00", "site": "shop-main"}
    if subscribed is not None:
        customer["customerSubscriptions"] = [{"subscription": {"channel": "email", "code": "news"},
                                              "subscribed": subscribed}]
    return json.dumps({"customer": customer}).encode()


def test_a_retailcrm_customer_edited_after_his_deletion_has_the_triggers_consent_or_none(tmp_path, monkeypatch):
    config = shop(tmp_path, monkeypatch, "retailcrm")
    with FakeMailchimp() as mc, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mailchimp(mc, monkeypatch, rsps)
        fake = FakeRetailCrm(rsps)
        then = datetime.now(timezone.utc) - timedelta(days=5)
        for cid in (10, 11, 12):
            fake.put_contact(cid, f"c{cid}@example.com", at=then, customerSubscriptions=[
                {"subscription": {"channel": "email", "code": "news"}, "subscribed": True}])
            fake.put_order(cid - 9, cid, "100", at=then - timedelta(days=60 * (cid - 10)))
        assert run("sync", "--config", config, "--allow-mass-change").exit_code == 0
        assert row(tmp_path, "10")[4] == "yes"
        # deleted (the history feed tells the next pull), then the same id edited again: a trigger saying no
        # subscription (10), one saying yes (11)
        for cid, subscribed, consent in ((10, None, "unknown"), (11, True, "yes")):
            fake.delete_customer(cid, at=datetime.now(timezone.utc) - timedelta(minutes=2))
            assert run("pull", "--config", config).exit_code == 0
            assert row(tmp_path, str(cid))[1:] == (None, None, None, "no", "true")
            resync_contacts(config, retail_parse({}, retail_customer(cid, subscribed))[1])
            # not the "yes" he had before his deletion, nor its "no"
            assert row(tmp_path, str(cid))[1:] == (f"c{cid}@example.com", None, "Ann", consent, None)
        # deleted and edited again in one resync (a library caller's list: the deletion, then the version): the
        # stored "yes" of before is not the edit's consent either
        assert row(tmp_path, "12")[4] == "yes"
        resync_contacts(config, [gone_contact("12")] + retail_parse({}, retail_customer(12, None))[1])
        assert row(tmp_path, "12")[1:] == ("c12@example.com", None, "Ann", "unknown", None)


def test_a_bitrix24_contact_restored_from_the_recycle_bin_comes_back_with_the_servers_pull(tmp_path, monkeypatch):
    """Bitrix24's events carry ids only: the contact's update is a pull of it, which replaces the emptied row."""
    from sync.config import load_config
    from sync.ledger import open_ledger
    from sync.serve.resync import resync
    from sync.settings import load_settings

    config = shop(tmp_path, monkeypatch, "bitrix24")
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", HOOK)
    with FakeMailchimp() as mc, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mailchimp(mc, monkeypatch, rsps)
        fake = FakeBitrix24(rsps)
        then = datetime.now(timezone.utc) - timedelta(days=3)
        fake.put_contact(10, "ann@example.com", at=then)
        fake.put_order(1, 10, "100", at=then)
        fake.put_contact(11, "bob@example.com", at=then - timedelta(days=60))
        fake.put_order(2, 11, "300", at=then - timedelta(days=60))  # (another day: the recency scores do not collapse)
        assert run("sync", "--config", config, "--allow-mass-change").exit_code == 0
        before, ann = esp_tags(mc), row(tmp_path, "10")
        kept = fake.contacts.pop(10)
        event = {"data[FIELDS][ID]": "10", "ts": str(int(datetime.now(timezone.utc).timestamp())),
                 "event_handler_id": "7", "auth[application_token]": "tok"}
        cfg, settings = load_config(config), load_settings()
        with open_ledger(cfg, settings) as ledger:
            resync(cfg, ledger, settings, *b24_parse({}, urlencode({"event": "ONCRMCONTACTDELETE", **event}).encode()),
                   pull=False)
            assert row(tmp_path, "10") == ANN_GONE and esp_tags(mc)["ann@example.com"] == []
            fake.contacts[10] = {**kept, "DATE_MODIFY": datetime.now(timezone.utc).isoformat()}
            assert b24_parse({}, urlencode({"event": "ONCRMCONTACTUPDATE", **event}).encode()) == ([], [])
            resync(cfg, ledger, settings, [], [], pull=True)
        assert row(tmp_path, "10") == ann and esp_tags(mc) == before


def test_a_deletion_retried_after_the_restore_withdraws_nothing(tmp_path, monkeypatch):
    """reread33 crossing 2: amoCRM delivers the deletion again (a retry, dated before the restore) after the
    contact was restored: it is older than the restore, so it is left out — and its "no" (the deletion's, not his
    word) no longer withdraws the restored contact, which no later pull mended (the same vendor time kept it)."""
    with amo_synced(tmp_path, monkeypatch) as (config, mc, fake):
        at = int(datetime.now(timezone.utc).timestamp()) - 120
        kept = fake.contacts.pop(10)
        resync_contacts(config, amo_parse({}, amo_contact("delete", "10", at))[1])
        fake.contacts[10] = {**kept, "updated_at": at + 60}
        resync_contacts(config, amo_parse({}, amo_contact("update", "10", at + 60, name="Ann",
                                                          email="ann@example.com"))[1])
        restored = row(tmp_path, "10")
        assert restored[1] == "ann@example.com" and restored[4] == "unknown"
        resync_contacts(config, amo_parse({}, amo_contact("delete", "10", at))[1])  # the deletion, retried
        assert row(tmp_path, "10") == restored
        for args in (["pull"], ["pull", "--full"]):  # (they read his whole contact: his phone comes back too)
            assert run(*args, "--config", config).exit_code == 0
            assert (row(tmp_path, "10")[1], row(tmp_path, "10")[4:]) == ("ann@example.com", ("unknown", None))


def test_a_deletion_retried_after_the_restore_in_one_worker_batch_withdraws_nothing():
    """The same in one worker batch: the deletion, a restore saying yes, the deletion again (older): the batch
    keeps the restore with its yes (the stale deletion's "no" withdrew it)."""
    from connectors.records import Consent, Contact
    from sync.ledger.queue import Event
    from sync.serve.batches import _batch

    now = datetime.now(timezone.utc)
    deleted = amo_parse({}, amo_contact("delete", "10", int(now.timestamp()) - 120))
    restore = ([], [Contact(customer_id="10", email="ann@example.com", marketing_consent=Consent.YES, updated_at=now)])
    parts = [(Event(n, "amocrm", f"k{n}", "{}", now, 1), *records, False)
             for n, records in enumerate((deleted, restore, deleted), 1)]
    batch = _batch(parts)
    [kept] = batch.contacts
    assert (kept.email, kept.marketing_consent, kept.gone) == ("ann@example.com", Consent.YES, False)
    assert batch.restored == {"10"}
