"""A tombstone the vendor gave no date (an unmappable cancelled order without one, a delete without a time) is
dated by the stored order it cancels, else by the store's oldest order: never the store's newest order (it hid the
stale-data warning of a store whose last order is months old) and the same on every read (the store's caches are
keyed by the orders' dates; it was "now", another date at every read)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import urlencode

import duckdb
import pytest

from connectors import amocrm, bitrix24, retailcrm, shopify
from connectors.non_purchase import tombstone
from connectors.records import UNDATED, Order, OrderStatus
from connectors.source import PullResult
from connectors.tables import ORDERS_COLUMNS, stage_records
from sync.pipeline import stale_warning
from sync.store import merge_staged, open_store

from . import test_retailcrm
from .test_amocrm import T0

LATER = T0 + timedelta(days=1, hours=2)


def _undated_cancel(fake) -> None:
    fake.put_order(2, 10, "50", at=LATER, status="cancel-other")
    del fake.orders[2]["createdAt"]
    fake.orders[2].pop("statusUpdatedAt", None)


def test_a_retailcrm_undated_cancellation_keeps_the_order_s_date_on_every_read_and_the_stale_warning():
    today = date.today()
    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_retailcrm.FakeRetailCrm(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "100", at=T0)
        fake.put_order(2, 10, "50", at=T0 + timedelta(hours=1))
        with open_store(None) as con:
            first = test_retailcrm.make_source().pull(con)
            merge_staged(con, first, origin="pull")
            _undated_cancel(fake)
            dates = []
            cursor = first.cursor
            for day in (2, 3):  # the cancellation read by two pulls
                pull = test_retailcrm.make_source(clock=lambda d=day: T0 + timedelta(days=d)).pull(con, cursor)
                merge_staged(con, pull, origin="pull")
                cursor = pull.cursor
                dates.append(con.execute("SELECT status, ordered_at FROM orders WHERE order_id = '2'").fetchall())
            warning = stale_warning(con, today, "UTC", 30, today)
    assert dates == [[("cancelled", T0 + timedelta(hours=1))]] * 2
    assert warning is not None and "stale data" in warning and f"({T0.date()})" in warning


def _retailcrm_cancel(oid: str) -> Order:
    body = json.dumps({"order": {"id": int(oid), "status": "cancel-other", "customer": {"id": 1}, "totalSumm": 5}})
    return retailcrm.parse_webhook({}, body.encode())[0][0]


def _amocrm_delete(oid: str) -> Order:
    return amocrm.parse_webhook({}, urlencode({"leads[delete][0][id]": oid, "account[id]": "29062"}).encode())[0][0]


def _bitrix24_delete(oid: str) -> Order:
    body = urlencode({"event": "ONCRMDEALDELETE", "data[FIELDS][ID]": oid, "auth[application_token]": "t"})
    return bitrix24.parse_webhook({}, body.encode())[0][0]


def _shopify_delete(oid: str) -> Order:  # without X-Shopify-Triggered-At
    return shopify.parse_webhook({"X-Shopify-Topic": "orders/delete"}, json.dumps({"id": int(oid)}).encode())[0][0]


@pytest.mark.parametrize("parse", [_retailcrm_cancel, _amocrm_delete, _bitrix24_delete, _shopify_delete])
def test_an_undated_tombstone_of_a_webhook_is_dated_by_the_order_it_cancels_else_the_oldest(parse):
    old, newest = datetime(2025, 3, 1, tzinfo=timezone.utc), datetime(2025, 6, 1, tzinfo=timezone.utc)
    assert parse("7").ordered_at == UNDATED
    with open_store(None) as con:
        stage_records(con, [Order("1", "c1", old, Decimal(10)), Order("7", "c1", newest, Decimal(20))])
        merge_staged(con, PullResult(), origin="pull")
        stage_records(con, [parse("7"), parse("8")])  # 7 is stored, 8 never was
        staged = dict(con.execute("SELECT order_id, ordered_at FROM staged_orders").fetchall())
    assert staged == {"7": newest, "8": old}


def test_an_undated_tombstone_staged_into_an_empty_store_takes_the_oldest_dated_order_staged_with_it():
    at = datetime(2025, 3, 1, tzinfo=timezone.utc)
    with open_store(None) as con:
        stage_records(con, [tombstone("9", UNDATED), Order("1", "c1", at, Decimal(10))])
        staged = dict(con.execute("SELECT order_id, ordered_at FROM staged_orders").fetchall())
    assert staged == {"9": at, "1": at}


def test_an_order_of_the_epoch_that_is_no_tombstone_keeps_its_date():
    """(A generic webhook's purchase may say 1970-01-01T00:00Z: it is not re-dated.)"""
    with open_store(None) as con:
        stage_records(con, [Order("1", "c1", UNDATED, Decimal(10))])
        assert con.execute("SELECT ordered_at FROM staged_orders").fetchall() == [(UNDATED,)]


def test_an_order_created_and_cancelled_in_one_batch_is_dated_by_its_own_staged_version():
    """Created then deleted before the store saw it (one pull or webhook batch): its undated tombstone takes the
    order's own date, not the store's oldest (the session's re-read: 2019 for an order of 2024)."""
    con = duckdb.connect()
    con.execute(f"CREATE TABLE orders ({ORDERS_COLUMNS})")
    con.execute("INSERT INTO orders VALUES ('o1','c1','2019-01-01 00:00+00',10,'EUR','completed',0)")
    day = datetime(2024, 6, 1, tzinfo=timezone.utc)
    stage_records(con, [Order(order_id="o9", customer_id="c2", ordered_at=day, amount=Decimal(5), currency="EUR",
                              status=OrderStatus.COMPLETED)])
    stage_records(con, [tombstone("o9", UNDATED, "c2")])
    dates = {row[0] for row in con.execute("SELECT ordered_at FROM staged_orders WHERE order_id = 'o9'").fetchall()}
    assert dates == {day}
