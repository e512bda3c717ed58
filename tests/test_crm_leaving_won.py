"""A purchase that stops being one leaves the RFM history even when the CRM no longer says enough to map it (its
contact unlinked, its customer gone), on every CRM's pull and webhook path (docs/sources/common.md)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from connectors import retailcrm, shopify
from sync.store import merge_staged, open_store

from . import test_amocrm, test_bitrix24, test_retailcrm, test_shopify
from .test_amocrm import T0

rsps = test_amocrm.rsps
LATER = T0 + timedelta(days=1, hours=2)


def stored(con) -> list[tuple]:
    return con.execute("SELECT order_id, status, amount FROM orders ORDER BY 1").fetchall()


def pulled_twice(fake, make_source, change) -> list[tuple]:
    """The store after a first pull, ``change(fake)`` at the vendor, and an incremental pull."""
    with open_store(None) as con:
        first = make_source().pull(con)
        merge_staged(con, first, origin="pull")
        assert stored(con)[0][1] == "completed"
        change(fake)
        second = make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, first.cursor)
        assert second.bad_row_count == 0
        merge_staged(con, second, origin="pull")
        return stored(con)


def test_amocrm_lead_moved_to_lost_with_its_contact_unlinked_leaves_the_history(rsps):
    fake = test_amocrm.FakeAmo(rsps)
    fake.put_contact(10, "ann@example.com", at=T0)
    fake.put_order(1, 10, "15000", at=T0)

    def lost_and_unlinked(fake):
        fake.put_order(1, 10, "15000", at=LATER, status_id=143)
        fake.leads[1]["_embedded"]["contacts"] = []

    assert pulled_twice(fake, test_amocrm.make_source, lost_and_unlinked) == [("1", "cancelled", Decimal("0.00"))]


def test_amocrm_lead_moved_to_lost_with_its_price_cleared_leaves_the_history_on_a_full_pull_too(rsps):
    fake = test_amocrm.FakeAmo(rsps)
    fake.put_contact(10, "ann@example.com", at=T0)
    fake.put_order(1, 10, "15000", at=T0)
    with open_store(None) as con:
        merge_staged(con, test_amocrm.make_source().pull(con), origin="pull")
        fake.put_order(1, 10, "15000", at=LATER, status_id=143)
        fake.leads[1]["price"] = None
        merge_staged(con, test_amocrm.make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, None), origin="pull")
        assert stored(con) == [("1", "cancelled", Decimal("0.00"))]
        assert con.execute("SELECT customer_id FROM orders").fetchall() == [("10",)]  # still the same customer's


def test_bitrix24_deal_moved_to_lost_with_its_contact_removed_leaves_the_history():
    with test_bitrix24.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_bitrix24.FakeBitrix24(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "15000", at=T0)

        def lost_and_unlinked(fake):
            fake.put_order(1, 10, "15000", at=LATER, semantic="F")
            fake.deals[1]["CONTACT_ID"] = None

        assert pulled_twice(fake, test_bitrix24.make_source, lost_and_unlinked) == [("1", "cancelled", Decimal("0.00"))]


def test_shopify_order_cancelled_with_its_customer_gone_leaves_the_history_on_the_pull_and_the_webhook():
    with test_shopify.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_shopify.FakeShopify(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "150.00", at=T0)

        def cancelled_and_anonymous(fake):
            fake.put_order(1, 10, "150.00", at=LATER, financial_status="voided", customer=None, email=None)

        assert pulled_twice(fake, test_shopify.make_source, cancelled_and_anonymous) == [
            ("1", "cancelled", Decimal("0.00"))]
    payload = json.loads(test_shopify.ORDER_BODY) | {"financial_status": "voided", "customer": None, "email": None,
                                                     "updated_at": "2026-01-11T11:00:00Z"}
    (order,), _ = shopify.parse_webhook({"X-Shopify-Topic": "orders/updated"}, json.dumps(payload).encode())
    assert (order.order_id, order.status.value, order.amount, order.updated_at) == (
        "820982911946154508", "cancelled", Decimal(0), LATER)


def test_retailcrm_order_cancelled_with_its_customer_gone_leaves_the_history_on_the_pull_and_the_webhook():
    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_retailcrm.FakeRetailCrm(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "150", at=T0)

        def cancelled_and_anonymous(fake):
            fake.put_order(1, 10, "150", at=LATER, status="cancel-other")
            fake.orders[1].update(customer=None, email=None)

        assert pulled_twice(fake, test_retailcrm.make_source, cancelled_and_anonymous) == [
            ("1", "cancelled", Decimal("0.00"))]
    body = json.dumps({"order": {"id": 7, "status": "cancel-other", "createdAt": "2026-01-10 12:00:00"}}).encode()
    (order,), _ = retailcrm.parse_webhook({}, body)
    assert (order.order_id, order.status.value, order.amount, order.customer_id) == ("7", "cancelled", Decimal(0), "")


@pytest.mark.parametrize("won", [True, False])
def test_a_purchase_that_cannot_be_mapped_is_still_a_bad_row_and_a_non_purchase_a_tombstone(won):
    lead = {"id": 5, "status_id": 142 if won else 143, "price": 10, "updated_at": int(T0.timestamp()),
            "_embedded": {"contacts": []}}
    from connectors.amocrm import AmoCrmConfig, map_lead
    from connectors.non_purchase import NoCustomer

    if won:  # (a sale of nobody: counted by the pull, not a bad row)
        with pytest.raises(NoCustomer, match="no linked contact"):
            map_lead(lead, AmoCrmConfig())
    else:
        order = map_lead(lead, AmoCrmConfig())
        assert (order.order_id, order.customer_id, order.amount, order.ordered_at) == ("5", "", Decimal(0), T0)


def staged_after_change(fake, make_source, change) -> list[tuple]:
    """The second pull's staged orders (order id, customer id, date) after a first pull and ``change(fake)``."""
    with open_store(None) as con:
        first = make_source().pull(con)
        merge_staged(con, first, origin="pull")
        change(fake)
        make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, first.cursor)
        return con.execute("SELECT order_id, customer_id, ordered_at FROM staged_orders ORDER BY 1").fetchall()


def test_a_tombstone_keeps_the_customer_the_record_still_names(rsps):
    """An amoCRM lead lost with its price cleared still names its contact; a RetailCRM deletion's snapshot without
    its total still names its customer: the tombstone keeps that customer (it is not left to the store to guess),
    and a deletion is dated by its history entry, as before."""
    fake = test_amocrm.FakeAmo(rsps)
    fake.put_contact(10, "ann@example.com", at=T0)
    fake.put_order(1, 10, "15000", at=T0)

    def lost_price_cleared(fake):
        fake.put_order(1, 10, "15000", at=LATER, status_id=143)
        fake.leads[1]["price"] = None

    assert [r[:2] for r in staged_after_change(fake, test_amocrm.make_source, lost_price_cleared)] == [("1", "10")]

    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_retailcrm.FakeRetailCrm(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "100", at=T0)

        def deleted_without_total(fake):
            del fake.orders[1]["totalSumm"]
            fake.delete_order(1, at=LATER)

        staged = staged_after_change(fake, test_retailcrm.make_source, deleted_without_total)
        assert [r[:2] for r in staged] == [("1", "10")]
        assert staged[0][2] == LATER  # dated by the deletion's history entry, not the order's createdAt
