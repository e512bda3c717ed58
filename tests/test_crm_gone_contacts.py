"""A contact deleted (or merged away) in the CRM leaves the store's addresses and the ESP's managed state: amoCRM's
``contacts[delete]``, Bitrix24's ``ONCRMCONTACTDELETE`` and Shopify's ``customers/delete`` empty the contact, as
RetailCRM's history does; a ``pull --full`` empties the stored contacts the whole contact list no longer shows (only
on a pull that ended); a RetailCRM merge's survivor gets the loser's orders (docs/sources/common.md)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import duckdb
import responses
from click.testing import CliRunner

from connectors.amocrm import parse_webhook as amo_parse
from connectors.bitrix24_webhooks import parse_webhook as b24_parse
from connectors.shopify import parse_webhook as shopify_parse
from connectors.tables import stage_records
from connectors.source import PullResult
from sync.cli import main
from sync.store import merge_staged, open_store
from tests.fakes.mailchimp import FakeMailchimp
from tests.test_amocrm import SUB, TOKEN, FakeAmo
from tests.test_retailcrm import BASE, KEY, FakeRetailCrm

DEST = '''
[[destinations]]
name = "mc"
type = "mailchimp"
audience = "aud1"
new_contacts = "transactional"
[destinations.segments]
"Best active" = "VIP"
"Falling asleep" = "Winback soft"
"Churn" = "Winback"
"Beginners" = "Welcome"
'''


def run(*args):
    return CliRunner().invoke(main, list(args))


def contacts(tmp_path) -> list[tuple]:
    con = duckdb.connect(str(tmp_path / "rfmsync.duckdb"), read_only=True)
    try:
        return con.execute("SELECT customer_id, email, phone, first_name, marketing_consent, attributes->>'deleted' "
                           "FROM contacts ORDER BY 1").fetchall()
    finally:
        con.close()


def shop(tmp_path, monkeypatch, source: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RFMSYNC_STORE_URL", raising=False)
    monkeypatch.setenv("AMOCRM_SUBDOMAIN", SUB)
    monkeypatch.setenv("AMOCRM_TOKEN", TOKEN)
    monkeypatch.setenv("RETAILCRM_URL", BASE)
    monkeypatch.setenv("RETAILCRM_API_KEY", KEY)
    path = tmp_path / "rfmsync.toml"
    path.write_text(f'[source]\ntype = "{source}"\n[segmentation]\npreset = "tracks"\n' + DEST, encoding="utf-8")
    return str(path)


def mailchimp(mc, monkeypatch, rsps) -> None:
    """The fake Mailchimp on 127.0.0.1 as the ESP, beside the CRM's `responses` mock."""
    rsps.add_passthru("http://127.0.0.1")
    monkeypatch.setenv("MAILCHIMP_API_KEY", mc.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mc.url)


def esp_tags(mc) -> dict[str, list[str]]:
    lst = mc.lists["aud1"]
    tags: dict[str, set[str]] = {}
    for seg in lst.segments.values():
        for member in seg["members"]:
            tags.setdefault(member, set()).add(seg["name"])
    return {email: sorted(tags.get(email, ())) for email in lst.members}


def amo_two(fake) -> None:
    then = datetime.now(timezone.utc) - timedelta(days=3)
    fake.put_contact(10, "ann@example.com", at=then)
    fake.put_order(1, 10, "100", at=then)
    fake.put_contact(11, "bob@example.com", at=then - timedelta(days=60))
    fake.put_order(2, 11, "300", at=then - timedelta(days=60))  # (another day: the recency scores do not collapse)


@contextmanager
def amo_pulled(tmp_path, monkeypatch, fill=amo_two):
    """An amoCRM shop (``fill`` puts its contacts and orders in the fake CRM) pulled once, no ESP: yields (config
    path, the fake amoCRM) while the fake answers."""
    config = shop(tmp_path, monkeypatch, "amocrm")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeAmo(rsps)
        fill(fake)
        assert run("pull", "--config", config).exit_code == 0
        yield config, fake


@contextmanager
def amo_synced(tmp_path, monkeypatch, fill=amo_two):
    """An amoCRM shop (``fill`` puts its contacts and orders in the fake CRM) synced once to the fake Mailchimp:
    yields (config path, the fake Mailchimp, the fake amoCRM) while both fakes run."""
    config = shop(tmp_path, monkeypatch, "amocrm")
    with FakeMailchimp() as mc, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mailchimp(mc, monkeypatch, rsps)
        fake = FakeAmo(rsps)
        fill(fake)
        assert run("sync", "--config", config, "--allow-mass-change").exit_code == 0
        yield config, mc, fake


ANN_GONE = ("10", None, None, None, "no", "true")
BOB = ("11", "bob@example.com", "+77011234567", "Ann", "unknown", None)


def merge_webhook(tmp_path, parsed) -> None:
    """What the server's worker does with a parsed delivery: stage it and merge it into the store."""
    orders, cards = parsed
    with open_store(tmp_path / "rfmsync.duckdb") as con:
        stage_records(con, orders, cards)
        keys = [("contact", c.customer_id) for c in cards]
        merge_staged(con, PullResult(), origin="webhook",
                     received_at=dict.fromkeys(keys, datetime.now(timezone.utc)))


def test_an_amocrm_contact_deleted_by_webhook_leaves_the_store_and_its_managed_tags_come_off(tmp_path, monkeypatch):
    config = shop(tmp_path, monkeypatch, "amocrm")
    with FakeMailchimp() as mc, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mailchimp(mc, monkeypatch, rsps)
        fake = FakeAmo(rsps)
        amo_two(fake)
        r = run("sync", "--config", config, "--allow-mass-change")
        assert r.exit_code == 0, r.output
        before = esp_tags(mc)
        assert before["ann@example.com"] and before["bob@example.com"]
        # deleted in amoCRM: the delivery amoCRM sends, and the contact gone from the list
        body = urlencode({"contacts[delete][0][id]": "10", "contacts[delete][0][type]": "contact",
                          "account[subdomain]": SUB, "account[id]": "29062"}).encode()
        merge_webhook(tmp_path, amo_parse({}, body))
        del fake.contacts[10]
        assert contacts(tmp_path) == [ANN_GONE, BOB]
        r = run("sync", "--config", config, "--allow-mass-change")
        assert r.exit_code == 0, r.output
        after = esp_tags(mc)
        assert after["ann@example.com"] == [] and after["bob@example.com"] == before["bob@example.com"]
        assert contacts(tmp_path) == [ANN_GONE, BOB]  # the incremental pull brought nothing of it back


def test_a_deleted_amocrm_company_empties_its_company_customer_never_the_contact_of_its_number():
    body = urlencode({"contacts[delete][0][id]": "10", "contacts[delete][0][type]": "company",
                      "account[subdomain]": SUB}).encode()
    _, [gone] = amo_parse({}, body)
    assert (gone.customer_id, gone.email, gone.marketing_consent, dict(gone.attributes)) == (
        "company-10", None, "no", {"deleted": "true"})


def test_bitrix24s_contact_delete_event_empties_the_contact():
    body = urlencode({"event": "ONCRMCONTACTDELETE", "data[FIELDS][ID]": "10", "ts": "1765100000",
                      "event_handler_id": "7", "auth[application_token]": "tok"}).encode()
    orders, [gone] = b24_parse({}, body)
    assert orders == [] and (gone.customer_id, gone.email, gone.phone, gone.marketing_consent) == (
        "10", None, None, "no") and gone.attributes["deleted"] == "true"


def test_shopifys_customers_delete_empties_the_contact_dated_when_it_was_triggered():
    [], [gone] = shopify_parse({"X-Shopify-Topic": "customers/delete",
                                "X-Shopify-Triggered-At": "2025-06-29T10:07:00Z"}, b'{"id": 7001}')
    assert (gone.customer_id, gone.email, gone.marketing_consent, gone.attributes["deleted"]) == (
        "7001", None, "no", "true")
    assert gone.updated_at == datetime(2025, 6, 29, 10, 7, tzinfo=timezone.utc)


def test_a_full_pull_empties_the_stored_contacts_the_crm_no_longer_lists(tmp_path, monkeypatch):
    with amo_pulled(tmp_path, monkeypatch, amo_two) as (config, fake):
        with open_store(tmp_path / "rfmsync.duckdb") as con:  # a guest keyed by his e-mail: in no contact list
            con.execute("INSERT INTO contacts (customer_id, email, marketing_consent) "
                        "VALUES ('eve@example.com', 'eve@example.com', 'unknown')")
        del fake.contacts[10]  # deleted in amoCRM, its delivery lost
        assert run("pull", "--config", config).exit_code == 0
        assert contacts(tmp_path)[0][:2] == ("10", "ann@example.com")  # an incremental pull cannot see it
        r = run("pull", "--full", "--config", config)
        assert r.exit_code == 0, r.output
        assert "1 stored contact no longer in amocrm's contact list" in r.output
        assert contacts(tmp_path) == [ANN_GONE, BOB, ("eve@example.com", "eve@example.com", None, None,
                                                      "unknown", None)]


def test_a_full_pull_that_stops_half_way_or_lists_no_contact_empties_nobody(tmp_path, monkeypatch):
    with amo_pulled(tmp_path, monkeypatch, amo_two) as (config, fake):
        stored = contacts(tmp_path)
        del fake.contacts[10]
        # the contact list read whole, then the token refused while the leads are read
        fake.between_pages = lambda: fake.failures.append((401, {}))
        r = run("pull", "--full", "--config", config)
        assert r.exit_code != 0 and "nothing this pull read was kept" in r.output, r.output
        assert contacts(tmp_path) == stored
        fake.contacts.clear()  # a token that lost access to contacts may read an empty list
        r = run("pull", "--full", "--config", config)
        assert r.exit_code == 0, r.output
        assert "amocrm listed no contact at all: the stored contacts were kept" in r.output
        assert contacts(tmp_path) == stored


def test_a_retailcrm_merge_gives_the_losers_orders_to_the_survivor(tmp_path, monkeypatch):
    config = shop(tmp_path, monkeypatch, "retailcrm")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeRetailCrm(rsps)
        then = datetime.now(timezone.utc) - timedelta(days=40)
        fake.put_contact(10, "ann.old@example.com", at=then)
        fake.put_contact(11, "ann@example.com", at=then)
        fake.put_order(1, 10, "1000", at=then)
        fake.put_order(2, 11, "50", at=then + timedelta(days=20))
        assert run("pull", "--config", config).exit_code == 0
        # the combine: RetailCRM moves the loser's orders to the survivor (no orders-history entry) and deletes him
        fake.orders[1]["customer"] = {"type": "customer", "id": 11}
        fake.delete_customer(10, at=datetime.now(timezone.utc) - timedelta(minutes=1), combined_to=11)
        r = run("pull", "--config", config)
        assert r.exit_code == 0, r.output
        assert ("filter[customerId]", "11") in [q for query in fake.list_queries for q in query]
        con = duckdb.connect(str(tmp_path / "rfmsync.duckdb"), read_only=True)
        try:
            assert con.execute("SELECT order_id, customer_id FROM orders ORDER BY 1").fetchall() == [
                ("1", "11"), ("2", "11")]
            assert con.execute("SELECT customer_id, email, attributes->>'combined_to' FROM contacts "
                               "ORDER BY 1").fetchall() == [("10", None, "11"), ("11", "ann@example.com", None)]
        finally:
            con.close()
        r = run("explain", "--config", config, "11")
        assert "2 completed (1 050.00)" in r.output, r.output


def test_the_servers_resync_of_a_contacts_delete_delivery_takes_its_managed_tags_off(tmp_path, monkeypatch):
    """The path ``rfmsync serve`` takes: the delivery's emptied contact resynced alone (its incremental pull too)."""
    from sync.config import load_config
    from sync.ledger import open_ledger
    from sync.serve.resync import resync
    from sync.settings import load_settings

    with amo_synced(tmp_path, monkeypatch, amo_two) as (config, mc, fake):
        before = esp_tags(mc)
        body = urlencode({"contacts[delete][0][id]": "10", "contacts[delete][0][type]": "contact"}).encode()
        orders, cards = amo_parse({}, body)
        del fake.contacts[10]
        cfg, settings = load_config(config), load_settings()
        with open_ledger(cfg, settings) as ledger:
            resync(cfg, ledger, settings, orders, cards, pull=True)
        assert esp_tags(mc) == {**before, "ann@example.com": []}
        assert contacts(tmp_path) == [ANN_GONE, BOB]


def test_a_contact_deleted_after_an_edit_in_one_worker_batch_keeps_no_address_of_the_edit():
    """The worker folds one contact's versions of a batch as the store does; a deletion keeps nothing of the edit
    before it (an edit keeps an earlier version's fields it leaves empty)."""
    from sync.ledger.queue import Event
    from sync.serve.batches import _batch

    now = datetime.now(timezone.utc)
    edit = urlencode({"contacts[update][0][id]": "10", "contacts[update][0][name]": "Ann",
                      "contacts[update][0][custom_fields][0][code]": "EMAIL",
                      "contacts[update][0][custom_fields][0][values][0][value]": "ann@example.com"}).encode()
    delete = urlencode({"contacts[delete][0][id]": "10", "contacts[delete][0][type]": "contact"}).encode()
    parts = [(Event(n, "amocrm", f"k{n}", "{}", now, 1), *amo_parse({}, body), False)
             for n, body in enumerate((edit, delete), 1)]
    assert parts[0][2][0].email == "ann@example.com"
    [kept] = _batch(parts).contacts
    assert (kept.customer_id, kept.email, kept.first_name, kept.marketing_consent) == ("10", None, None, "no")
