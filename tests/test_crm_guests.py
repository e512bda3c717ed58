"""Guest orders (no customer of the vendor) keyed by the rules every contact's e-mail and phone are read by
(connectors/guests.py): one person typing a number two ways is one customer; a value the rules refuse is an issue
when the other keys the order (the order kept, ``cleaned_values``), a bad row only when nothing does."""

from __future__ import annotations

import json
import logging

from sync.store import open_store

from . import test_retailcrm, test_shopify


def _retailcrm_guests(*guests: tuple[str | None, str | None], **cfg):
    """Pull one RetailCRM guest order per (email, phone): (result, {order id: staged customer key})."""
    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = test_retailcrm.FakeRetailCrm(mock)
        fake.put_contact(10, "ann@example.com", at=test_retailcrm.T0)
        for oid, (email, phone) in enumerate(guests, 1):
            fake.put_order(oid, 10, "100", at=test_retailcrm.T0)
            del fake.orders[oid]["customer"]
            fake.orders[oid].update(email=email, phone=phone)
        result = test_retailcrm.make_source(**cfg).pull(con)
        keys = dict(con.execute("SELECT order_id, customer_id FROM staged_orders").fetchall())
    return result, keys


def test_a_guest_sale_with_a_usable_email_keeps_its_order_and_its_bad_phone_is_an_issue():
    """A guest's phone the rules refuse was a bad row (the order lost) while a contact's was an issue: one rule."""
    result, keys = _retailcrm_guests(("Anna@Example.com", "12-34"), ("vera@", "8 (701) 123-45-67"), phone_region="KZ")
    assert keys == {"1": "anna@example.com", "2": "+77011234567"}
    assert (result.orders, result.bad_row_count, result.issue_count) == (2, 0, 2)
    assert sorted(str(i) for i in result.issues) == [
        "retailcrm:orders, row 1: phone: invalid phone; the guest order is kept, keyed by its e-mail ('12-34')",
        "retailcrm:orders, row 2: email: invalid email; the guest order is kept, keyed by its phone ('vera@')"]


def test_a_guest_sale_with_nothing_usable_stays_a_bad_row_and_a_bad_email_is_no_key():
    """``anna@`` was lower-cased and became a customer of its own: a value typed but refused is a bad row naming it,
    never a key (and never a walk-in either: someone typed it)."""
    result, keys = _retailcrm_guests(("anna@", None), (None, "12-34"), ("anna@", "12-34"), (None, None))
    assert keys == {}
    assert (result.bad_row_count, result.anonymous_orders, result.issue_count) == (3, 1, 0)
    assert sorted((b.row, b.field, b.value) for b in result.bad_rows) == [
        ("1", "email", "anna@"), ("2", "phone", "12-34"), ("3", "email", "anna@")]


def test_shopify_guests_are_keyed_by_the_phone_in_e164_and_the_email_validated():
    """``+998 90 123-45-67`` and ``998901234567`` (phone_region UZ) were two customers, the second taken for a vendor
    id (no ``+``: identity never joined it to the contact with that phone)."""
    with test_shopify.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = test_shopify.FakeShopify(mock)
        fake.put_contact(1, "ann@example.com", at=test_shopify.T0)
        fake.put_order(1, 1, "10.00", at=test_shopify.T0)
        for oid, email, phone in ((2, None, "+998 90 123-45-67"), (3, None, "998901234567"),
                                  (4, "ＡＮＮＡ@Example.com", "12"), (5, "anna@", None)):
            fake.put_order(oid, 0, "35.00", at=test_shopify.T0, customer=None, email=email, phone=phone)
        result = test_shopify.make_source(phone_region="UZ").pull(con)
        keys = dict(con.execute("SELECT order_id, customer_id FROM staged_orders").fetchall())
    assert keys == {"1": "1", "2": "+998901234567", "3": "+998901234567", "4": "anna@example.com"}
    assert [(b.row, b.field) for b in result.bad_rows] == [("5", "email")]
    assert [(i.row, i.field, i.value) for i in result.issues] == [("4", "phone", "12")]


def test_a_guest_order_webhook_keeps_the_order_and_logs_the_value_dropped(caplog):
    from connectors.retailcrm import parse_webhook as retailcrm_webhook
    from connectors.shopify import parse_webhook as shopify_webhook

    caplog.set_level(logging.WARNING)
    body = json.dumps({"id": 9, "financial_status": "paid", "total_price": "35.00", "customer": None,
                       "email": "Guest@Example.com", "phone": "12", "created_at": "2026-01-10T14:00:00Z"}).encode()
    orders, _ = shopify_webhook(test_shopify.signed(body), body)
    assert [o.customer_id for o in orders] == ["guest@example.com"]
    order = {"id": 7, "status": "complete", "createdAt": "2026-01-10 12:00:00", "totalSumm": 100, "currency": "KZT",
             "email": "vera@", "phone": "+7 701 123 45 67"}
    orders, _ = retailcrm_webhook({}, json.dumps({"order": order}).encode())
    assert [o.customer_id for o in orders] == ["+77011234567"]
    assert "shopify:webhook orders/create, row 9: phone: invalid phone; the guest order is kept" in caplog.text
    assert "retailcrm:webhook, row 7: email: invalid email; the guest order is kept, keyed by its phone" in caplog.text


# ------------------------------------------------------------------ amoCRM / Bitrix24: a won deal without a contact


def test_won_amocrm_leads_and_bitrix24_deals_without_a_contact_are_counted_as_sales_of_nobody():
    """Each was a bad row on every pull (a shop selling over the phone had hundreds, and ``max_bad_rows_pct``
    refused its syncs); the reference counts guests with neither key in the totals, unsegmented: as Shopify's and
    RetailCRM's walk-in sales. A contact linked later moves the deal's time: the next pull stores it."""
    from . import test_amocrm, test_bitrix24
    with test_amocrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        amo = test_amocrm.FakeAmo(mock)
        amo.put_contact(10, "ann@example.com", at=test_amocrm.T0)
        for oid in (1, 2, 3):
            amo.put_order(oid, 10, "100", at=test_amocrm.T0)
        amo.leads[2]["_embedded"]["contacts"] = []
        amo.leads[3]["_embedded"].pop("contacts")
        amo_result = test_amocrm.make_source().pull(con)
    with test_bitrix24.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        b24 = test_bitrix24.FakeBitrix24(mock)
        b24.put_contact(10, "ann@example.com", at=test_bitrix24.T0)
        for oid in (1, 2, 3):
            b24.put_order(oid, 10, "100", at=test_bitrix24.T0)
        b24.deals[2]["CONTACT_ID"], b24.deals[3]["CONTACT_ID"] = None, "0"
        b24_result = test_bitrix24.make_source().pull(con)
        staged = con.execute("SELECT order_id FROM staged_orders").fetchall()
    for result in (amo_result, b24_result):
        assert (result.orders, result.bad_row_count, result.anonymous_orders) == (1, 0, 2), result.bad_rows
    assert staged == [("1",)]


def test_won_amocrm_leads_and_bitrix24_deals_of_a_company_without_a_contact_are_the_company_s_not_walk_ins():
    """A B2B sale with no contact person was counted as a walk-in (Bitrix24 did not read ``COMPANY_ID``, amoCRM
    ignored ``_embedded.companies``): keyed ``company-<id>`` as RetailCRM's ``corporate-<id>``, a customer of its own;
    the contact, when linked, still comes first."""
    from . import test_amocrm, test_bitrix24
    with test_amocrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        amo = test_amocrm.FakeAmo(mock)
        amo.put_contact(10, "ann@example.com", at=test_amocrm.T0)
        for oid in (1, 2):
            amo.put_order(oid, 10, "100", at=test_amocrm.T0)
            amo.leads[oid]["_embedded"]["companies"] = [{"id": 77}]
        amo.leads[2]["_embedded"]["contacts"] = []
        amo_result = test_amocrm.make_source().pull(con)
        amo_keys = con.execute("SELECT order_id, customer_id FROM staged_orders ORDER BY 1").fetchall()
    with test_bitrix24.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        b24 = test_bitrix24.FakeBitrix24(mock)
        b24.put_contact(10, "ann@example.com", at=test_bitrix24.T0)
        for oid in (1, 2, 3):
            b24.put_order(oid, 10, "100", at=test_bitrix24.T0)
            b24.deals[oid]["COMPANY_ID"] = "55"
        b24.deals[2]["CONTACT_ID"], b24.deals[3]["CONTACT_ID"] = None, "0"
        b24_result = test_bitrix24.make_source().pull(con)
        b24_keys = con.execute("SELECT order_id, customer_id FROM staged_orders ORDER BY 1").fetchall()
    assert amo_keys == [("1", "10"), ("2", "company-77")]
    assert b24_keys == [("1", "10"), ("2", "company-55"), ("3", "company-55")]
    for result in (amo_result, b24_result):
        assert (result.bad_row_count, result.anonymous_orders) == (0, 0), result.bad_rows


def test_a_deleted_guest_order_s_refused_value_is_an_issue_as_the_order_s_own_read():
    """A RetailCRM deletion's snapshot was mapped with no list for the values the rules refuse: the guest's phone
    went into a throwaway list, said nowhere, while the same order read alive named it (``dropped`` now required)."""
    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = test_retailcrm.FakeRetailCrm(mock)
        fake.put_contact(10, "ann@example.com", at=test_retailcrm.T0)
        fake.put_order(1, 10, "100", at=test_retailcrm.T0)
        del fake.orders[1]["customer"]
        fake.orders[1].update(email="Anna@Example.com", phone="12-34")
        first = test_retailcrm.make_source().pull(con)
        fake.delete_order(1, at=test_retailcrm.T0 + test_retailcrm.timedelta(days=1, hours=1))
        second = test_retailcrm.make_source(clock=lambda: test_retailcrm.T0 + test_retailcrm.timedelta(days=2)
                                            ).pull(con, first.cursor)
        staged = con.execute("SELECT order_id, customer_id, status FROM staged_orders").fetchall()
    assert staged == [("1", "anna@example.com", "cancelled")]
    assert [str(i) for i in second.issues] == [
        "retailcrm:orders, row 1: phone: invalid phone; the guest order is kept, keyed by its e-mail ('12-34')"]
