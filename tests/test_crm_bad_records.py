"""A CRM record missing what decides "purchase or not", or its id, is a bad row that says so (never a silent
"cancelled" that takes a stored purchase out of the history, never Python's own error text)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from connectors import retailcrm, shopify
from connectors.errors import RecordError
from sync.store import merge_staged, open_store

from . import test_amocrm, test_bitrix24, test_retailcrm, test_shopify
from .test_amocrm import T0

rsps = test_amocrm.rsps
LATER = T0 + timedelta(days=1, hours=2)


def second_pull(fake, make_source, change) -> tuple[list[tuple], list[tuple]]:
    """(the store's orders, the bad rows (id, field, reason)) after a pull, ``change(fake)`` and the next pull."""
    with open_store(None) as con:
        first = make_source().pull(con)
        merge_staged(con, first, origin="pull")
        change(fake)
        second = make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, first.cursor)
        merge_staged(con, second, origin="pull")
        bad = [(b.row, b.field, b.reason) for b in second.bad_rows]
        return con.execute("SELECT order_id, status FROM orders ORDER BY 1").fetchall(), bad


WHETHER = "missing: whether the {} is a purchase cannot be told"


def test_amocrm_lead_without_status_id_is_a_bad_row_and_the_purchase_stays(rsps):
    fake = test_amocrm.FakeAmo(rsps)
    fake.put_contact(10, "ann@example.com", at=T0)
    fake.put_order(1, 10, "100", at=T0)

    def no_status(fake):
        fake.put_order(1, 10, "100", at=LATER)
        del fake.leads[1]["status_id"]

    assert second_pull(fake, test_amocrm.make_source, no_status) == (
        [("1", "completed")], [("1", "status_id", WHETHER.format("lead"))])


def test_bitrix24_deal_without_its_stage_is_a_bad_row_and_the_purchase_stays():
    with test_bitrix24.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_bitrix24.FakeBitrix24(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "100", at=T0)

        def no_stage(fake):
            fake.put_order(1, 10, "100", at=LATER)
            del fake.deals[1]["STAGE_SEMANTIC_ID"], fake.deals[1]["STAGE_ID"]

        assert second_pull(fake, test_bitrix24.make_source, no_stage) == (
            [("1", "completed")], [("1", "STAGE_SEMANTIC_ID", "missing (and STAGE_ID): " + WHETHER[9:].format("deal"))])


@pytest.mark.parametrize(("semantic", "stage", "won_stage_ids", "status"), [
    (None, "C2:WON", ["C2:WON"], "completed"),  # the stage alone tells: a purchase
    (None, "NEW", [], "cancelled"),  # no semantics asked for: the stage alone tells
    ("F", None, [], "cancelled"),
])
def test_bitrix24_a_deal_told_by_the_one_field_it_has_is_mapped(semantic, stage, won_stage_ids, status):
    from connectors.bitrix24 import Bitrix24Config, map_deal

    deal = {"ID": "3", "CONTACT_ID": "30", "OPPORTUNITY": "70", "DATE_CREATE": "2026-01-10T09:00:00+03:00",
            "STAGE_SEMANTIC_ID": semantic, "STAGE_ID": stage}
    cfg = Bitrix24Config(won_stage_ids=won_stage_ids, **({} if won_stage_ids or semantic else {"won_semantics": []}))
    assert map_deal(deal, cfg).status.value == status


def test_shopify_order_without_financial_status_is_a_bad_row_on_the_pull_and_the_webhook():
    with test_shopify.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_shopify.FakeShopify(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "100.00", at=T0)

        def no_financial_status(fake):
            fake.put_order(1, 10, "100.00", at=LATER)
            del fake.orders[1]["financial_status"]

        assert second_pull(fake, test_shopify.make_source, no_financial_status) == (
            [("1", "completed")], [("1", "financial_status", WHETHER.format("order"))])
    body = json.dumps({k: v for k, v in json.loads(test_shopify.ORDER_BODY).items() if k != "financial_status"})
    with pytest.raises(RecordError, match="financial_status: missing"):
        shopify.parse_webhook({"X-Shopify-Topic": "orders/updated"}, body.encode())
    cancelled = json.loads(body) | {"cancelled_at": "2026-01-11T10:00:00Z"}  # cancelled: nothing more to tell
    (order,), _ = shopify.parse_webhook({"X-Shopify-Topic": "orders/cancelled"}, json.dumps(cancelled).encode())
    assert order.status.value == "cancelled"


def test_retailcrm_order_without_status_is_a_bad_row_on_the_pull_and_the_webhook():
    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_retailcrm.FakeRetailCrm(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "100", at=T0)

        def no_status(fake):
            fake.put_order(1, 10, "100", at=LATER)
            del fake.orders[1]["status"]

        assert second_pull(fake, test_retailcrm.make_source, no_status) == (
            [("1", "completed")], [("1", "status", WHETHER.format("order"))])
    body = json.dumps({"order": {"id": 7, "createdAt": "2026-01-10 12:00:00", "customer": {"id": 1}, "totalSumm": 5}})
    with pytest.raises(RecordError, match="status: missing"):
        retailcrm.parse_webhook({}, body.encode())


def test_a_record_without_its_id_is_a_bad_row_saying_missing_on_the_pull_and_the_webhook(rsps):
    fake = test_amocrm.FakeAmo(rsps)
    fake.put_contact(10, "ann@example.com", at=T0)
    fake.put_order(1, 10, "100", at=T0 + timedelta(hours=1))  # (lead 2, older, is not read again by the pass after)
    fake.put_order(2, 10, "100", at=T0)
    fake.leads[2]["id"] = None
    with open_store(None) as con:
        result = test_amocrm.make_source().pull(con)
    assert [(b.row, b.field, b.reason) for b in result.bad_rows] == [(None, "id", "missing")]
    for topic, body in (("orders/updated", {"financial_status": "paid", "total_price": "1"}),
                        ("customers/update", {"email": "a@example.com"}), ("orders/delete", {})):
        with pytest.raises(RecordError) as err:
            shopify.parse_webhook({"X-Shopify-Topic": topic}, json.dumps(body).encode())
        assert (err.value.bad_row.field, err.value.bad_row.reason) == ("id", "missing")


def test_a_bitrix24_deal_with_an_empty_id_is_a_bad_row_saying_missing():
    from connectors.bitrix24 import Bitrix24Config, map_deal
    from connectors.http import FieldError

    with pytest.raises(FieldError) as err:
        map_deal({"ID": "", "STAGE_SEMANTIC_ID": "S"}, Bitrix24Config())
    assert str(err.value.bad_row("bitrix24:orders", "")) == "bitrix24:orders: ID: missing ('')"


def test_records_without_their_id_are_each_a_bad_row():
    """Three orders without an id are three bad rows (``max_bad_rows_pct`` counts them all), though they read alike;
    a record with an id read twice (the pass after the backfill) is still one."""
    with test_shopify.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_shopify.FakeShopify(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        for i in range(1, 7):
            fake.put_order(i, 10, "100", at=T0 + i * timedelta(hours=1))
        for i in (1, 2, 3):
            fake.orders[i]["id"] = None
        del fake.orders[6]["financial_status"]  # the newest: read by the backfill and the pass after it
        with open_store(None) as con:
            result = test_shopify.make_source(page_size=50).pull(con)
    assert result.bad_row_count == 4
    assert sorted((str(b.row), b.field) for b in result.bad_rows) == [
        ("6", "financial_status"), ("None", "id"), ("None", "id"), ("None", "id")]


@pytest.mark.parametrize(("stage", "won_semantics", "status"), [
    ("WON", ["S"], "completed"),  # the main pipeline's success stage: a purchase
    ("C3:WON", ["S"], "completed"),
    ("LOSE", ["S"], "cancelled"),
    ("C3:LOSE", ["S"], "cancelled"),
    ("C3:UC_X1Y2Z3", ["S"], "cancelled"),  # not the success stage: not a purchase
    ("C3:LOSE", ["S", "F"], "completed"),  # (what semantics count is the user's)
])
def test_a_bitrix24_deal_with_only_its_stage_id_is_told_by_it(stage, won_semantics, status):
    """Without ``STAGE_SEMANTIC_ID``, the system stages carry it: a pipeline's one success stage is ``WON``
    (``C<n>:WON``), its system failure stage ``LOSE``."""
    with test_bitrix24.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_bitrix24.FakeBitrix24(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "100", at=T0)
        del fake.deals[1]["STAGE_SEMANTIC_ID"]
        fake.deals[1]["STAGE_ID"] = stage
        with open_store(None) as con:
            result = test_bitrix24.make_source(won_semantics=won_semantics, line_items=False).pull(con)
            staged = con.execute("SELECT order_id, status FROM staged_orders").fetchall()
    assert (staged, result.bad_rows) == ([("1", status)], [])


def test_a_bitrix24_deal_with_only_a_stage_that_cannot_tell_is_a_bad_row_when_other_semantics_count():
    with test_bitrix24.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_bitrix24.FakeBitrix24(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "100", at=T0)
        del fake.deals[1]["STAGE_SEMANTIC_ID"]
        fake.deals[1]["STAGE_ID"] = "C3:PREPARATION"  # in progress, or a failure stage the portal added
        with open_store(None) as con:
            result = test_bitrix24.make_source(won_semantics=["S", "P"], line_items=False).pull(con)
    assert [(b.row, b.field, b.reason) for b in result.bad_rows] == [
        ("1", "STAGE_SEMANTIC_ID", WHETHER.format("deal"))]


def test_a_retailcrm_non_purchase_without_created_at_leaves_the_history_not_a_bad_row():
    """A cancelled order needs no date to be no purchase: the stored purchase it cancels is taken out of the history
    (a tombstone dated when it took its status, ``statusUpdatedAt``), on the pull and on a webhook."""
    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_retailcrm.FakeRetailCrm(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "100", at=T0)

        def cancelled_undated(fake):
            fake.put_order(1, 10, "100", at=LATER, status="cancel-other")
            del fake.orders[1]["createdAt"]
            fake.orders[1]["statusUpdatedAt"] = "2026-01-11 12:00:00"

        assert second_pull(fake, test_retailcrm.make_source, cancelled_undated) == ([("1", "cancelled")], [])
    body = json.dumps({"order": {"id": 7, "status": "cancel-other", "customer": {"id": 1}, "totalSumm": 5}})
    (order,), _ = retailcrm.parse_webhook({}, body.encode())
    assert (order.order_id, order.status.value, order.customer_id) == ("7", "cancelled", "1")
