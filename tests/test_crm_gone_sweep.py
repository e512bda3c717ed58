"""The full pull's sweep (sync/store/gone.py) never empties a live customer: a row the contact list served counts
as listed even when it is a bad row; only the contacts this very source's pulls stored are swept (another source's
numeric ids are not); an amoCRM company's webhook contact is its ``company-<id>`` customer; a list short of more
contacts than the guards allow empties nobody unless ``--allow-mass-change``; and only a CRM's parser, never a
generic delivery's ``attributes``, marks a contact deleted (docs/sources/common.md#deleted-contacts)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import responses

from connectors.amocrm import parse_webhook as amo_parse
from sync.ledger.codec import decode_records, encode_records
from sync.serve.generic import parse_generic
from tests.fakes.mailchimp import FakeMailchimp
from tests.test_amocrm import SUB, FakeAmo
from tests.test_crm_gone_contacts import amo_pulled, amo_synced, amo_two, contacts, esp_tags, mailchimp, merge_webhook, run, shop
from tests.test_retailcrm import FakeRetailCrm


def row(tmp_path, cid: str) -> tuple | None:
    return next((c for c in contacts(tmp_path) if c[0] == cid), None)


def amo_22(fake) -> None:
    """ann, bob and 20 more contacts with an order each (a shop big enough for one bad row to pass the guards)."""
    amo_two(fake)
    then = datetime.now(timezone.utc) - timedelta(days=10)
    for i in range(20, 40):
        fake.put_contact(i, f"c{i}@example.com", at=then - timedelta(days=i))
        fake.put_order(100 + i, i, "100", at=then - timedelta(days=i))


def resync_contacts(config, cards) -> None:
    """What ``rfmsync serve`` does with a delivery's contacts (through the queue's JSON, as the worker reads them)."""
    from sync.config import load_config
    from sync.ledger import open_ledger
    from sync.serve.resync import resync
    from sync.settings import load_settings

    _, cards, _ = decode_records(encode_records((), cards))
    cfg, settings = load_config(config), load_settings()
    with open_ledger(cfg, settings) as ledger:
        resync(cfg, ledger, settings, [], cards, pull=False)


def test_a_live_contact_whose_row_the_full_sync_cannot_map_keeps_his_address_and_tags(tmp_path, monkeypatch):
    with amo_synced(tmp_path, monkeypatch, amo_22) as (config, mc, fake):
        before, bob = esp_tags(mc), row(tmp_path, "11")
        assert before["bob@example.com"]
        fake.contacts[11]["created_at"] = "soon"  # a row amoCRM answers oddly: a bad row of the pull
        r = run("sync", "--full", "--config", config)
        assert r.exit_code == 0, r.output
        assert "no longer in amocrm's contact list" not in r.output
        assert row(tmp_path, "11") == bob and esp_tags(mc) == before
        # the CRM's own edit of the contact, through the server, finds him as he was
        now = int(datetime.now(timezone.utc).timestamp())
        fake.contacts[11].update(created_at=now - 100, updated_at=now)
        body = urlencode({"contacts[update][0][id]": "11", "contacts[update][0][name]": "Bob",
                          "contacts[update][0][updated_at]": str(now),
                          "contacts[update][0][custom_fields][0][code]": "EMAIL",
                          "contacts[update][0][custom_fields][0][values][0][value]": "bob@example.com",
                          "account[subdomain]": SUB}).encode()
        resync_contacts(config, amo_parse({}, body)[1])
        assert row(tmp_path, "11")[1:] == ("bob@example.com", bob[2], "Bob", bob[4], None)
        assert esp_tags(mc)["bob@example.com"] == before["bob@example.com"]


def test_a_bad_contact_row_naming_no_contact_empties_nobody(tmp_path, monkeypatch):
    with amo_pulled(tmp_path, monkeypatch, amo_22) as (config, fake):
        stored = contacts(tmp_path)
        del fake.contacts[10]  # deleted in amoCRM, but the list also serves a row with no id
        fake.contacts[99] = {**fake.contacts[11], "id": None, "updated_at": fake.contacts[11]["updated_at"] + 7}
        r = run("pull", "--full", "--config", config)
        assert r.exit_code == 0, r.output
        assert "amocrm's contact list had a bad row naming no contact: no stored contact was emptied" in r.output
        assert contacts(tmp_path) == stored
        del fake.contacts[99]
        r = run("pull", "--full", "--config", config)
        assert "1 stored contact no longer in amocrm's contact list" in r.output, r.output
        assert row(tmp_path, "10")[1:] == (None, None, None, "no", "true")


def test_a_switched_source_never_empties_the_previous_sources_contacts(tmp_path, monkeypatch):
    config = shop(tmp_path, monkeypatch, "amocrm")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        amo_two(FakeAmo(rsps))
        assert run("pull", "--config", config).exit_code == 0
    ann, bob = row(tmp_path, "10"), row(tmp_path, "11")
    config = shop(tmp_path, monkeypatch, "retailcrm")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fr = FakeRetailCrm(rsps)
        then = datetime.now(timezone.utc) - timedelta(days=5)
        fr.put_contact(500, "zed@example.com", at=then)
        fr.put_order(900, 500, "100", at=then)
        fr.put_contact(501, "yan@example.com", at=then)
        for args in (("pull",), ("pull", "--full")):  # its first pull, then a full one: amoCRM's ids are not its own
            r = run(*args, "--config", config)
            assert r.exit_code == 0, r.output
            assert "no longer in retailcrm's contact list" not in r.output
            assert (row(tmp_path, "10"), row(tmp_path, "11")) == (ann, bob)
        del fr.customers[500]  # (its own contacts are still swept)
        r = run("pull", "--full", "--config", config)
        assert "1 stored contact no longer in retailcrm's contact list" in r.output, r.output
        assert row(tmp_path, "500")[1:] == (None, None, None, "no", "true")
        assert (row(tmp_path, "10"), row(tmp_path, "11")) == (ann, bob)


def test_an_amocrm_companys_webhook_contact_is_its_company_customer_and_a_full_pull_keeps_it(tmp_path, monkeypatch):
    config = shop(tmp_path, monkeypatch, "amocrm")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        amo_two(FakeAmo(rsps))
        assert run("pull", "--config", config).exit_code == 0
        body = urlencode({"contacts[add][0][id]": "20", "contacts[add][0][type]": "company",
                          "contacts[add][0][name]": "ACME",
                          "contacts[add][0][custom_fields][0][code]": "EMAIL",
                          "contacts[add][0][custom_fields][0][values][0][value]": "office@acme.example",
                          "account[subdomain]": SUB}).encode()
        merge_webhook(tmp_path, amo_parse({}, body))
        assert row(tmp_path, "20") is None and row(tmp_path, "company-20")[1] == "office@acme.example"
        r = run("pull", "--full", "--config", config)
        assert r.exit_code == 0 and "no longer in amocrm's contact list" not in r.output, r.output
        assert row(tmp_path, "company-20")[1] == "office@acme.example"
        delete = urlencode({"contacts[delete][0][id]": "20", "contacts[delete][0][type]": "company"}).encode()
        merge_webhook(tmp_path, amo_parse({}, delete))
        assert row(tmp_path, "company-20")[1:] == (None, None, None, "no", "true")


def test_a_list_short_of_more_contacts_than_the_guards_allow_empties_nobody_unless_forced(tmp_path, monkeypatch):
    with amo_synced(tmp_path, monkeypatch, amo_22) as (config, mc, fake):
        before, stored = esp_tags(mc), contacts(tmp_path)
        hidden = {i: fake.contacts.pop(i) for i in range(20, 26)}  # a token with narrower rights: 16 of 22 listed
        r = run("sync", "--full", "--config", config)
        assert r.exit_code == 0, r.output
        assert ("6 stored contacts of 22 no longer in amocrm's contact list: more than the guards allow "
                "(min_mass_change, max_removal_pct), so none was emptied") in " ".join(r.output.split())
        assert contacts(tmp_path) == stored and esp_tags(mc) == before
        fake.contacts.update(dict(list(hidden.items())[1:]))  # one of them deleted: within the guards
        r = run("pull", "--full", "--config", config)
        assert "1 stored contact no longer in amocrm's contact list" in r.output, r.output
        assert row(tmp_path, "20")[1:] == (None, None, None, "no", "true")
        for i in range(21, 26):
            del fake.contacts[i]
        r = run("pull", "--full", "--allow-mass-change", "--config", config)
        assert r.exit_code == 0 and "5 stored contacts no longer in amocrm's contact list" in r.output, r.output
        assert [row(tmp_path, str(i))[1] for i in range(20, 26)] == [None] * 6


def test_only_a_crms_delete_empties_through_the_server_never_a_deleted_attribute(tmp_path, monkeypatch):
    """The server keeps a delivery's missing fields from the store unless a CRM's parser said the contact is gone
    (and says so through the queue's JSON); an attribute ``deleted`` (a generic delivery carries no attributes; a
    field a CRM or a sender named so) is an attribute, not a deletion."""
    from connectors.records import Contact

    config = shop(tmp_path, monkeypatch, "amocrm")
    with FakeMailchimp() as mc, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mailchimp(mc, monkeypatch, rsps)
        amo_two(FakeAmo(rsps))
        assert run("sync", "--config", config, "--allow-mass-change").exit_code == 0
        ann = row(tmp_path, "10")
        body = json.dumps({"order_id": "g1", "customer_id": "10", "ordered_at": "2026-12-01T10:00:00+00:00",
                           "amount": "5", "contact": {"first_name": "Ann", "attributes": {"deleted": "true"}}}).encode()
        [(_, card)] = parse_generic(body)
        resync_contacts(config, [card, Contact(customer_id="11", attributes={"deleted": "true"})])
        assert row(tmp_path, "10")[1:5] == ann[1:5]  # the stored address and consent kept
        assert row(tmp_path, "11")[1] == "bob@example.com"
        delete = urlencode({"contacts[delete][0][id]": "10", "contacts[delete][0][type]": "contact"}).encode()
        resync_contacts(config, amo_parse({}, delete)[1])
        assert row(tmp_path, "10")[1:] == (None, None, None, "no", "true")


def test_a_guest_orders_contact_is_no_row_of_an_empty_contact_list(tmp_path, monkeypatch):
    """A contact the pull stages from elsewhere than the contact list (a guest order's: its e-mail key and phone, as
    guest32 staged them) must not count as the list having listed someone, else a customers list answering nothing
    (a token that lost access to customers) empties every stored customer (the re-read of merged main, crossing 1).
    It failed without the fix with guest32 merged; guest32 was reverted, so on this main no such contact is staged
    and it guards the re-merge (the closing note of session 47)."""
    config = shop(tmp_path, monkeypatch, "retailcrm")
    then = datetime.now(timezone.utc) - timedelta(days=10)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeRetailCrm(rsps)
        for cid in range(10, 15):
            fake.put_contact(cid, f"c{cid}@example.com", at=then)
            fake.put_order(cid * 10, cid, "100", at=then)
        fake.put_order(500, 0, "50", at=then)  # a guest's order: no customer, an e-mail and a phone
        del fake.orders[500]["customer"]
        fake.orders[500].update(email="guest@x.com", phone="+77019998877")
        assert run("pull", "--config", config).exit_code == 0
        fake.customers.clear()  # the customers list answers nothing
        result = run("pull", "--config", config, "--full")
    assert result.exit_code == 0, result.output
    assert "listed no contact at all: the stored contacts were kept" in result.output
    assert [r[1] for r in contacts(tmp_path) if r[0] in {str(c) for c in range(10, 15)}] == [
        f"c{c}@example.com" for c in range(10, 15)]
