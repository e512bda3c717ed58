"""A contact record keyed by a customer's e-mail (a webhook's, an export's, a guest order's: one shape) withdraws his
consent: its "no" lands on him, its "yes" only fills an unknown consent, its name only fills his gaps, its e-mail and
phone never become his; its age is noted under his id, and a webhook batch that only withdrew him pushes him at once.
guest32 made every such record fill only the customer's unknown consent: the merged main's CI found the withdrawal
lost (tests/test_store_webhook_age.py) and guest32 was reverted; guest33 brings it back with this rule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from connectors.identity import link_staged
from connectors.records import Consent, Contact
from connectors.tables import stage_records
from sync.config import load_config
from sync.ledger import open_ledger
from sync.pipeline import store_path
from sync.serve.app import create_app
from sync.serve.webhooks import Intake
from sync.serve.worker import Worker
from sync.settings import load_settings
from sync.store import open_store, webhook_records
from sync.store.webhooks import add_late_withdrawals
from tests.test_guest_registers_later import _con, _merge, _order, _state
from tests.test_serve_out_of_order import (_customer as _shopify_customer, _generic, _new_customer_order, _shopify,
                                           skip_shop)  # noqa: F401  (fixture)
from tests.test_store_webhook_age import _ingest, _shop, _webhook
from tests.test_webhooks_generic import live_server
from tests.test_worker import AS_OF

UTC = timezone.utc
ANNA = "anna@x.com"


def _customer(consent: Consent, **fields) -> Contact:
    return Contact("c9", email=ANNA, marketing_consent=consent, **fields)


def _contacts(con) -> list[tuple]:
    return con.execute("SELECT customer_id, email, phone, first_name, last_name, marketing_consent FROM contacts "
                       "ORDER BY 1").fetchall()


@pytest.mark.parametrize("batch", ["stored-customer", "same-batch"])
def test_a_record_keyed_by_his_e_mail_withdraws_his_yes_and_fills_only_his_gaps(batch):
    """Anna said yes; a record keyed by her e-mail (a form, a guest checkout) says no, with another first name, a last
    name she has not given and a phone: she is "no" now, keeps her first name, gets the last name (a gap) and never
    the phone (a guest's phone may be the shop's)."""
    con = _con()
    record = Contact(ANNA, email=ANNA, first_name="Anya", last_name="Guest", phone="+998901112233",
                     marketing_consent=Consent.NO)
    customer = ([_order("c1", "c9")], [_customer(Consent.YES, first_name="Anna")])
    if batch == "same-batch":
        _merge(con, customer[0] + [_order("g1", ANNA, 2)], customer[1] + [record])
    else:
        _merge(con, *customer)
        _merge(con, [_order("g1", ANNA, 2)], [record])
    assert _state(con)[0] == {"c1": "c9", "g1": "c9"}
    assert _contacts(con) == [("c9", ANNA, None, "Anna", "Guest", "no")]


def test_a_records_no_lands_while_its_yes_never_overrides_a_no_whatever_came_first():
    """The rule both ways, with the customer stored first: a no over a yes lands, a yes over a no does not, and
    over an unknown consent each word is taken."""
    for customer, word, expected in ((Consent.YES, Consent.NO, "no"), (Consent.NO, Consent.YES, "no"),
                                     (Consent.UNKNOWN, Consent.NO, "no"), (Consent.UNKNOWN, Consent.YES, "yes"),
                                     (Consent.YES, Consent.UNKNOWN, "yes")):
        con = _con()
        _merge(con, [_order("c1", "c9")], [_customer(customer)])
        _merge(con, [], [Contact(ANNA, email=ANNA, marketing_consent=word)])  # a contact record alone
        assert _contacts(con) == [("c9", ANNA, None, None, None, expected)], (customer, word)


@pytest.mark.parametrize("registers_with", [Consent.YES, Consent.UNKNOWN])
def test_a_stored_guests_no_does_not_override_the_consent_the_customer_registers_with(registers_with):
    """A guest said no at checkout; later Anna registers with that e-mail: her record is the newer word, so her
    "yes" stands; registering without a word on consent, the guest's "no" is hers."""
    con = _con()
    _merge(con, [_order("g1", ANNA)], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)])
    _merge(con, [_order("c1", "c9", 2)], [_customer(registers_with)])
    assert _state(con) == ({"g1": "c9", "c1": "c9"},
                           [("c9", ANNA, None, "yes" if registers_with == Consent.YES else "no")])


@pytest.mark.parametrize("email", [None, "other@x.com"], ids=["phone-only", "another-address"])
def test_a_no_given_without_his_e_mail_is_no_word_on_his_e_mail(email):
    """A guest joined by the customer's phone whose record has no e-mail (an SMS opt-out) or another address: its "no"
    was given for no address of his, and his "yes" stays."""
    con = _con()
    _merge(con, [_order("c1", "c9")], [_customer(Consent.YES, phone="+998901112233")])
    _merge(con, [_order("g1", "+998901112233", 2)],
           [Contact("+998901112233", email=email, phone="+998901112233", marketing_consent=Consent.NO)])
    assert _state(con) == ({"c1": "c9", "g1": "c9"}, [("c9", ANNA, "+998901112233", "yes")])


@pytest.mark.parametrize("customer, word, expected", [(Consent.YES, Consent.NO, "no"), (Consent.NO, Consent.YES, "no"),
                                                     (Consent.UNKNOWN, Consent.YES, "yes")])
def test_an_exports_guest_row_of_a_linked_e_mail_withdraws_on_the_full_refresh(customer, word, expected):
    """A file's full refresh (apply_links): the export keys a guest of Anna's e-mail, linked to her before, by that
    e-mail again, its contact row saying no: she is "no"; its "yes" fills only her unknown consent."""
    con = _con()
    _merge(con, [_order("c1", "c9")], [_customer(customer)])
    _merge(con, [_order("g0", ANNA, 2)], [])  # a webhook's guest order: linked (the store remembers it)
    _merge(con, [_order("g0", ANNA, 2), _order("g1", ANNA, 3)], [Contact(ANNA, email=ANNA, marketing_consent=word)],
           origin="pull", full=True)
    assert _state(con) == ({"c1": "c9", "g0": "c9", "g1": "c9"}, [("c9", ANNA, None, expected)])


def test_a_webhook_withdrawal_keyed_by_his_e_mail_is_noted_under_him_and_pushed_at_once():
    """The customer came by a pull (no webhook record); a webhook batch holds only a contact record keyed by his
    e-mail saying no: the store notes its age (not its vendor time: another object of the vendor's) under his id, and
    the batch's resync set (the server's affected customers) names him, though no staged row of his is left."""
    con = _con()
    _merge(con, [_order("c1", "c9")], [_customer(Consent.YES)], origin="pull")
    own = datetime.now(UTC) - timedelta(hours=1)
    _merge(con, [], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)],
           received_at={("contact", ANNA): own}, versions={("contact", ANNA): own - timedelta(days=3)})
    con.execute("CREATE TEMP TABLE _affected (customer_id VARCHAR)")
    add_late_withdrawals(con, "_affected")
    assert con.execute("SELECT customer_id FROM _affected").fetchall() == [("c9",)]
    assert con.execute("SELECT kind, id, received_at, updated_at FROM webhook_records").fetchall() == [
        ("contact", "c9", own, None)]
    assert _contacts(con) == [("c9", ANNA, None, None, None, "no")]


def test_a_withdrawal_folded_by_a_link_made_outside_a_merge_is_not_noted_by_the_next_merge():
    """link_staged called alone (a tool, a bench) folds a withdrawal into c9; the next webhook merge (another
    customer's record, nothing linked) notes no age under c9: only a merge's own batch is noted."""
    con = _con()
    _merge(con, [_order("c1", "c9")], [_customer(Consent.YES)], origin="pull")
    stage_records(con, [], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)])
    assert link_staged(con).merged_customers == 1
    con.execute("DROP TABLE IF EXISTS staged_contacts")
    _merge(con, [], [Contact("c8", email="bob@x.com")])
    assert con.execute("SELECT kind, id FROM webhook_records").fetchall() == [("contact", "c8")]


def test_a_withdrawal_keyed_by_his_e_mail_survives_a_new_daily_contacts_file(tmp_path):
    """Contacts in daily files (``clients*.csv``): a webhook record keyed by a customer's e-mail says no; the next
    day's file without him, then one with his row saying nothing of consent, re-stage every file (a full refresh):
    his "no" stays, as a withdrawal by his own id does (tests/test_store_webhook_age.py)."""
    folder = tmp_path / "shop"
    cfg_path = _shop(folder)
    cfg_path.write_text(cfg_path.read_text(encoding="utf-8").replace('contacts = "clients.csv"',
                                                                     'contacts = "clients*.csv"'), encoding="utf-8")
    cfg = load_config(cfg_path)
    _ingest(cfg)
    with open_store(store_path(cfg)) as con:
        cid, email = con.execute("SELECT customer_id, email FROM contacts WHERE marketing_consent = 'yes' AND email "
                                 "IS NOT NULL ORDER BY customer_id LIMIT 1").fetchone()
    header, *rows = (folder / "clients.csv").read_text(encoding="utf-8-sig").splitlines()
    row = next(r for r in rows if r.startswith(cid + ";"))
    _webhook(cfg, [], [Contact(email, email=email, marketing_consent=Consent.NO)])

    def consent() -> str:
        with open_store(store_path(cfg)) as con:
            assert webhook_records(con)["contact"] == {cid}
            return con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = ?", [cid]).fetchone()[0]

    assert consent() == "no"
    other = next(r for r in rows if not r.startswith(cid + ";"))
    (folder / "clients_2025-06-30.csv").write_text("\n".join([header, other.replace(other.split(";")[0], "C09999", 1)])
                                                   + "\n", encoding="utf-8-sig")
    _ingest(cfg)
    assert consent() == "no"
    fields = row.split(";")
    fields[5] = ""
    (folder / "clients_2025-07-01.csv").write_text("\n".join([header, ";".join(fields)]) + "\n", encoding="utf-8-sig")
    _ingest(cfg)
    assert consent() == "no"


@pytest.mark.parametrize("email_field", [True, False], ids=["with-its-email", "without-an-email-field"])
def test_a_guest_order_of_his_e_mail_saying_no_takes_his_tags_off_end_to_end(skip_shop, mailchimp_fake,  # noqa: F811
                                                                             email_field):
    """rfmsync serve: NEW-7 bought and said yes (created and tagged in the ESP); then an order keyed by his e-mail (a
    generic sender's guest checkout) says no: the order is his, his consent "no", and the same resync takes his
    managed tags off — also when its contact gives only ``marketing_consent: no``, no e-mail field
    (review-guest33 MUST 2: that "no" was dropped)."""
    cfg, settings, email = load_config(skip_shop), load_settings(), "late.news@example.com"
    with open_ledger(cfg, settings) as ledger:
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            assert _generic(base, _new_customer_order("yes", None)).status_code == 202
            assert worker.drain() == 2 and mailchimp_fake.tags_of(email), "subscribed and tagged first"
            guest = {**_new_customer_order("no", None, order_id="OOO-2"), "customer_id": email}
            if not email_field:
                del guest["contact"]["email"]
            assert _generic(base, guest).status_code == 202
            assert worker.drain() == 2
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT customer_id FROM orders WHERE order_id = 'OOO-2'").fetchall() == [("NEW-7",)]
        assert con.execute("SELECT customer_id, marketing_consent FROM contacts WHERE customer_id IN ('NEW-7', ?)",
                           [email]).fetchall() == [("NEW-7", "no")]
    assert mailchimp_fake.tags_of(email) == set()


def test_the_worker_notes_who_sent_each_version_with_its_vendor_time(skip_shop, mailchimp_fake):  # noqa: F811
    """rfmsync serve on a Shopify shop: a generic delivery and a Shopify one, both dated, in one batch: the store
    notes each contact's vendor time with its sender (the event's source), so that a stored guest's version and his
    contact's are ordered by their times only when one clock dated both (sync.store.ordering.stored_newer)."""
    cfg = load_config(skip_shop).model_copy(update={"source": {"type": "shopify", "shop": "demo"}})
    settings = load_settings()
    with open_ledger(cfg, settings) as ledger:
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            assert _generic(base, _new_customer_order("no", "2025-06-29T10:05:00+00:00")).status_code == 202
            assert _shopify(base, "customers/update", _shopify_customer("subscribed", "2025-06-29T10:00:00Z")
                            ).status_code == 202
            assert worker.drain() == 3
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT id, updated_at, sender FROM webhook_records WHERE kind = 'contact' ORDER BY id"
                           ).fetchall() == [("7700", datetime(2025, 6, 29, 10, tzinfo=UTC), "shopify"),
                                            ("NEW-7", datetime(2025, 6, 29, 10, 5, tzinfo=UTC), "generic")]
