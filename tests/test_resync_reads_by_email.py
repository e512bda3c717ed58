"""What a contact webhook's resync reads of the store's contacts by e-mail (issue 17 §4: the resync touches only the
affected customers): who else the store gives an address (``store_holders``: a changed e-mail whose old address
the ledger still tags; another card's *no*), and whom a contact's e-mail or phone links to (identity linking),
are read through the store's index on the e-mail (and the phone) and counted in ``rows_read``; they were one scan
of every contact each, and the first was not counted."""

from __future__ import annotations

from connectors.records import Consent, Contact
from connectors.source import PullResult
from connectors.tables import create_staging
from sync.config import load_config
from sync.ledger import open_ledger
from sync.pipeline import store_path
from sync.serve.resync import resync
from sync.serve.resync_scope import store_holders
from sync.settings import load_settings
from sync.store import open_store
from sync.store.lookup import PHONE_INDEX
from sync.store.merge import merge_staged
from tests.test_serve_resync import AS_OF, orders_for

CUSTOMERS = 20_000
OTHERS = 100  # other cards giving one address


def _store(tmp_path, mailchimp_fake, monkeypatch):
    from bench.serve_load import big_store

    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    return big_store(tmp_path / "big", CUSTOMERS, 0.2, pool=10, fake=mailchimp_fake)


def test_who_else_the_store_gives_an_address_is_read_by_e__mail_and_counted(tmp_path, mailchimp_fake, monkeypatch):
    """A hundred other cards give a's address (each saying *no*). a's contact webhook changes his e-mail, the old one
    still tagged: who else the store gives it is read, those hundred rows are counted in the resync's
    ``store_rows_read`` (b's same webhook, whose old address no other card gives, reads them not), and nothing
    more is (not the 20 000 contacts). Before, that read scanned every contact and counted none of it."""
    path, churned = _store(tmp_path, mailchimp_fake, monkeypatch)
    cfg, settings = load_config(path), load_settings()
    ids = list(churned.items())
    (a, a_email), (b, b_email) = ids[1], ids[2]
    others = {f"X{i}" for i in range(OTHERS)}
    with open_store(store_path(cfg)) as con:  # every write path stores an e-mail normalised
        con.executemany("INSERT INTO contacts (customer_id, email, marketing_consent) VALUES (?, ?, 'no')",
                        [[x, a_email] for x in sorted(others)])
    assert store_holders(cfg, {a_email, b_email}, None) == {a_email: {a, *others}, b_email: {b}}
    # refusing cards without a segment (no completed order) count in neither planner (consent27's rule)
    assert store_holders(cfg, {a_email, b_email}, None, refused=True) == {}
    assert store_holders(cfg, {a_email}, {a, "X1"}) == {a_email: {a, "X1"}}  # by customer
    with open_ledger(cfg, settings) as ledger:
        resync(cfg, ledger, settings, orders_for([ids[0][0]], "WARM"), as_of=AS_OF)  # counts the managed contacts
        read = {c: resync(cfg, ledger, settings, contacts=[Contact(c, email=f"new-{e}", marketing_consent=Consent.YES)],
                          as_of=AS_OF).store_rows_read for c, e in ((b, b_email), (a, a_email))}
    # their rows (read once or twice; the two customers' own rows differ by a few), not the contacts
    assert OTHERS - 10 <= read[a] - read[b] <= 3 * OTHERS, read


def test_a_contact_webhook_reads_its_address_s_contacts_not_every_contact(tmp_path, mailchimp_fake, monkeypatch):
    """A contact's changed e-mail (its old address still tagged: who else gives it) and identity linking by its new
    one read those addresses' contacts: the resync reads fewer rows than the orders and contacts together (before:
    the contacts twice over, one of them not counted). (Identity linking's look for store rows keyed by an
    e-mail or phone still scans the orders' and contacts' ids: see docs/serve.md.)"""
    path, churned = _store(tmp_path, mailchimp_fake, monkeypatch)
    cfg, settings = load_config(path), load_settings()
    ids = list(churned.items())
    with open_store(store_path(cfg)) as con:
        orders, contacts = (con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("orders", "contacts"))
    with open_ledger(cfg, settings) as ledger:
        resync(cfg, ledger, settings, orders_for([ids[0][0]], "WARM"), as_of=AS_OF)  # counts the managed contacts
        customer, email = ids[1]
        report = resync(cfg, ledger, settings, contacts=[Contact(customer, email=f"new-{email}",
                                                                 marketing_consent=Consent.YES)], as_of=AS_OF)
        assert report.customers == 1 and report.reports[0].counts["ok"] >= 1
    assert report.store_rows_read < orders + contacts + 500, (report.store_rows_read, orders, contacts)


def test_a_phone_keyed_order_joins_the_customer_with_that_phone(tmp_path, mailchimp_fake, monkeypatch):
    """An order keyed by a phone (no customer id of its own) joins the customer with that phone, read by a filter
    on the phone column beside the e-mails read through their index (before race28: the whole contacts table read
    into the join). The first batch with a phone-keyed record builds the phone index, and the phones are read
    through it: the phone-keyed resync reads about the rows the e-mail-keyed one reads (before resync29: a scan of
    every contact's phone more; the speed is bench/phone_index.py's, BENCHMARKS.md). A full refresh drops it with
    the other lookup indexes (a bulk write maintains none), and the next phone-keyed batch builds it again."""
    path, churned = _store(tmp_path, mailchimp_fake, monkeypatch)
    cfg, settings = load_config(path), load_settings()
    (warm, _), (a, a_email), (b, _) = list(churned.items())[:3]
    phone = "+998901234567"
    with open_store(store_path(cfg)) as con:
        con.execute("UPDATE contacts SET phone = ? WHERE customer_id = ?", [phone, b])
    with open_ledger(cfg, settings) as ledger:
        resync(cfg, ledger, settings, orders_for([warm], "WARM"), as_of=AS_OF)  # the indexes built
        reports, indexed = {}, []
        for name, key in (("email", a_email), ("phone", phone)):
            report = reports[name] = resync(cfg, ledger, settings, orders_for([key], f"BY-{name}"), as_of=AS_OF)
            assert report.customers == 1, (name, report)
            with open_store(store_path(cfg)) as con:
                indexed.append(con.execute("SELECT count(*) FROM duckdb_indexes() WHERE index_name = ?",
                                           [PHONE_INDEX]).fetchall()[0][0])
    assert indexed == [0, 1]  # built by the first batch holding a phone-keyed record
    read = {name: r.store_rows_read for name, r in reports.items()}
    assert read["phone"] < read["email"] + CUSTOMERS // 2, read
    with open_store(store_path(cfg)) as con:
        owners = dict(con.execute("SELECT order_id, customer_id FROM orders WHERE order_id LIKE 'BY-%'").fetchall())
    assert owners == {"BY-email-0": a, "BY-phone-0": b}

    def phone_index() -> int:
        with open_store(store_path(cfg)) as con:
            return con.execute("SELECT count(*) FROM duckdb_indexes() WHERE index_name = ?", [PHONE_INDEX]
                               ).fetchall()[0][0]

    with open_store(store_path(cfg)) as con:  # a full refresh (the store's rows read again): the indexes go first
        create_staging(con)
        for name in ("orders", "contacts", "line_items"):
            con.execute(f"INSERT INTO staged_{name} BY NAME SELECT COLUMNS(lambda c: c != 'file_id') FROM {name}")
        merge_staged(con, PullResult(full_refresh=True), origin="pull")
    assert phone_index() == 0
    with open_ledger(cfg, settings) as ledger:  # the next phone-keyed batch builds it again, and links through it
        assert resync(cfg, ledger, settings, orders_for([phone], "AGAIN"), as_of=AS_OF).customers == 1
    assert phone_index() == 1
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT customer_id FROM orders WHERE order_id LIKE 'AGAIN-%'").fetchall() == [(b,)]
