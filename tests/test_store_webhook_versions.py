"""The vendor's ``updated_at`` orders a record's webhook versions (when both have one), against each other, against a
CRM pull's version and in an order store written before the times were kept; the codec and parsers carry it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pytest

from connectors.records import Contact, Order, OrderStatus
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.ingest import segments_from_store
from sync.ledger.codec import decode_records, encode_records
from sync.pipeline import store_path
from sync.serve.generic import BadRequest, parse_generic
from sync.serve.resync import resync
from sync.serve.webhooks import events_for
from sync.store import merge_staged, open_store
from tests.test_worker import AS_OF, bitrix_shop

T = datetime(2025, 6, 29, 10, 0, tzinfo=timezone.utc)
DAY = datetime(2025, 6, 1, tzinfo=timezone.utc)


def _merge(con, orders=(), contacts=(), *, accepted: datetime) -> dict[str, int]:
    stage_records(con, orders, contacts)
    versions = {("order", o.order_id): o.updated_at for o in orders if o.updated_at} | {
        ("contact", c.customer_id): c.updated_at for c in contacts if c.updated_at}
    keys = [("order", o.order_id) for o in orders] + [("contact", c.customer_id) for c in contacts]
    return merge_staged(con, PullResult(), origin="webhook", received_at=dict.fromkeys(keys, accepted),
                        versions=versions)


def _order(status: OrderStatus, updated_at: datetime | None) -> Order:
    return Order("O-1", "C-1", DAY, Decimal("0" if status is OrderStatus.REFUNDED else "100"), status=status,
                 updated_at=updated_at)


def _status(con) -> str:
    return con.execute("SELECT status FROM orders WHERE order_id = 'O-1'").fetchone()[0]


def test_a_version_the_vendor_made_later_wins_whatever_the_order_rfmsync_accepted_them_in():
    """Vendor times both ways: a refund (10:05) accepted before a retried paid delivery (10:00, accepted later) stays
    refunded; a refund accepted *earlier* than the stored paid version but made later by the vendor (merged after it:
    a batch retried) is applied. The stored times are the latest merged, so a version without a vendor time is
    compared by acceptance against the latest one accepted."""
    with open_store(None) as con:
        _merge(con, [_order(OrderStatus.REFUNDED, T + timedelta(minutes=5))], accepted=T + timedelta(minutes=5))
        left = _merge(con, [_order(OrderStatus.COMPLETED, T)], accepted=T + timedelta(minutes=7))
        assert _status(con) == "refunded" and left["stale_orders"] == 1

    with open_store(None) as con:
        _merge(con, [_order(OrderStatus.COMPLETED, T)], accepted=T + timedelta(minutes=7))
        left = _merge(con, [_order(OrderStatus.REFUNDED, T + timedelta(minutes=5))], accepted=T + timedelta(minutes=5))
        assert _status(con) == "refunded" and "stale_orders" not in left
        assert con.execute("SELECT received_at, updated_at FROM webhook_records").fetchall() == [
            (T + timedelta(minutes=7), T + timedelta(minutes=5))]
        # no vendor time: by acceptance, against the latest accepted (10:07)
        _merge(con, [_order(OrderStatus.COMPLETED, None)], accepted=T + timedelta(minutes=6))
        assert _status(con) == "refunded"
        _merge(con, [_order(OrderStatus.COMPLETED, None)], accepted=T + timedelta(minutes=8))
        assert _status(con) == "completed"
        # that version replaced the vendor's 10:05 one, so it is newer: a 10:00 delivery is still older
        left = _merge(con, [_order(OrderStatus.REFUNDED, T)], accepted=T + timedelta(minutes=9))
        assert _status(con) == "completed" and left["stale_orders"] == 1


def test_equal_vendor_times_keep_the_acceptance_order():
    """(A contact's withdrawal against another consent at an equal time: tests/test_store_vendor_clocks.py.)"""
    with open_store(None) as con:
        _merge(con, [_order(OrderStatus.COMPLETED, T)], accepted=T)
        left = _merge(con, [_order(OrderStatus.REFUNDED, T)],
                      accepted=T - timedelta(seconds=1))  # accepted before the stored one: left out
        assert left["stale_orders"] == 1 and _status(con) == "completed"
        _merge(con, [_order(OrderStatus.REFUNDED, T)], accepted=T + timedelta(seconds=1))  # accepted after it: applied
        assert _status(con) == "refunded"


def test_an_order_store_written_before_the_vendor_times_were_kept_gets_the_column(tmp_path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:  # the table as released before
        con.execute("CREATE TABLE webhook_records (kind VARCHAR NOT NULL, id VARCHAR NOT NULL, "
                    "received_at TIMESTAMPTZ DEFAULT now(), PRIMARY KEY (kind, id))")
        con.execute("INSERT INTO webhook_records VALUES ('order', 'O-1', ?)", [T])
    with open_store(path) as con:
        _merge(con, [_order(OrderStatus.COMPLETED, T)], accepted=T - timedelta(minutes=1))  # older: left out
        assert con.execute("SELECT count(*) FROM orders").fetchall() == [(0,)]
        _merge(con, [_order(OrderStatus.REFUNDED, T)], accepted=T + timedelta(minutes=1))
        assert con.execute("SELECT id, received_at, updated_at FROM webhook_records").fetchall() == [
            ("O-1", T + timedelta(minutes=1), T)]


def test_a_crm_pull_leaves_no_vendor_time_acceptance_orders_the_next_version(tmp_path, monkeypatch):
    """A webhook version (the vendor's 10 minutes ago) is stored, then the scheduled sync pulls the CRM, which holds
    the deal changed since. The pull's start (this host's clock) is not a vendor time: the stored one is cleared, and
    a delivery accepted after the pull is applied whatever its vendor time (acceptance order), as one accepted
    before the pull and merged after it is left out."""
    from tests.test_bitrix24 import T0

    with bitrix_shop(tmp_path, monkeypatch) as (cfg, settings, ledger, fake):
        now = datetime.now(timezone.utc)
        early = Order("78", "5", T0, Decimal("50.00"), updated_at=now - timedelta(minutes=10))
        resync(cfg, ledger, settings, [early], as_of=AS_OF, received_at={("order", "78"): now - timedelta(minutes=9)})
        fake.put_order(78, 5, "70.00", at=T0)  # changed on the portal since
        segments_from_store(cfg, ledger, settings, as_of=AS_OF, pull=True).con.close()  # the scheduled pull
        with open_store(store_path(cfg)) as con:
            assert con.execute("SELECT updated_at FROM webhook_records WHERE id = '78'").fetchall() == [(None,)]
        held = Order("78", "5", T0, Decimal("55.00"), updated_at=now - timedelta(minutes=1))
        report = resync(cfg, ledger, settings, [held], as_of=AS_OF, received_at={("order", "78"): now})
        assert report.stale == {"order": 1, "contact": 0}  # accepted before the pull: older by acceptance
        late = datetime.now(timezone.utc) + timedelta(seconds=1)
        retried = Order("78", "5", T0, Decimal("60.00"), updated_at=now - timedelta(minutes=5))
        report = resync(cfg, ledger, settings, [retried], as_of=AS_OF, received_at={("order", "78"): late})
        assert report.stale == {"order": 0, "contact": 0}
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT amount FROM orders WHERE order_id = '78'").fetchall() == [(60,)]


def test_the_codec_carries_updated_at_and_leaves_the_payload_of_a_record_without_one_as_it_was():
    plain = Order("O-1", "C-1", DAY, Decimal("100"))
    assert "updated_at" not in json.loads(encode_records([plain]))["orders"][0]  # the same payload as before
    timed = Order("O-1", "C-1", DAY, Decimal("100"), updated_at=T)
    contact = Contact("C-1", updated_at=T)
    orders, contacts, _ = decode_records(encode_records([timed], [contact]))
    assert orders == [timed] and contacts == [contact]
    (key, old, _), (same, new, _) = events_for([plain], []) + events_for([timed], [])
    assert key == same == "order:O-1" and old != new  # another version of the record: queued again


def test_the_generic_payload_reads_updated_at_for_the_order_and_its_contact_and_names_a_bad_one():
    body = {"order_id": "O-1", "customer_id": "C-1", "ordered_at": "2025-06-01T10:00:00", "amount": "10",
            "updated_at": "2025-06-29T15:00:00", "contact": {"marketing_consent": "no",
                                                            "updated_at": "2025-06-29T15:05:00+05:00"}}
    [(order, contact)] = parse_generic(json.dumps(body).encode(), "Asia/Tashkent")
    assert order.updated_at == datetime(2025, 6, 29, 10, tzinfo=timezone.utc)  # naive: the config's timezone
    assert contact.updated_at == datetime(2025, 6, 29, 10, 5, tzinfo=timezone.utc)
    with pytest.raises(BadRequest, match="updated_at") as bad:
        parse_generic(json.dumps({**body, "updated_at": "yesterday"}).encode())
    assert bad.value.status == 400


def test_shopify_and_amocrm_deliveries_carry_the_vendors_modification_time():
    from connectors.amocrm import parse_webhook as amocrm_parse
    from connectors.errors import RecordError
    from connectors.shopify import parse_webhook as shopify_parse

    order = {"id": 9001, "processed_at": "2025-06-29T10:00:00Z", "updated_at": "2025-06-29T15:05:00+05:00",
             "total_price": "10.00", "financial_status": "paid", "customer": {"id": 7}, "line_items": []}
    [parsed], _ = shopify_parse({"X-Shopify-Topic": "orders/updated"}, json.dumps(order).encode())
    assert parsed.updated_at == datetime(2025, 6, 29, 10, 5, tzinfo=timezone.utc)
    _, [customer] = shopify_parse({"X-Shopify-Topic": "customers/update"},
                                  json.dumps({"id": 7, "updated_at": "2025-06-29T10:06:00Z"}).encode())
    assert customer.updated_at == datetime(2025, 6, 29, 10, 6, tzinfo=timezone.utc)
    [gone], _ = shopify_parse({"X-Shopify-Topic": "orders/delete", "X-Shopify-Triggered-At": "2025-06-29T10:07:00Z"},
                              b'{"id": 9001}')
    assert gone.updated_at == datetime(2025, 6, 29, 10, 7, tzinfo=timezone.utc)  # deleted when triggered
    with pytest.raises(RecordError, match="updated_at"):
        shopify_parse({"X-Shopify-Topic": "orders/updated"}, json.dumps({**order, "updated_at": "soon"}).encode())
    form = f"contacts[update][0][id]=5&contacts[update][0][name]=Ann&contacts[update][0][updated_at]={int(T.timestamp())}"
    _, [contact] = amocrm_parse({}, form.encode())
    assert contact.updated_at == T
