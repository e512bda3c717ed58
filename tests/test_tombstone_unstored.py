"""A tombstone retires a stored order and is nothing else: a deal or order the CRM reports deleted, lost or out of
scope that rfmsync never stored is not stored (it was a cancelled row with customer ``''``, one per lost deal: a CRM
with many lost deals grew the store by one row each, and the blank customer met every per-customer read). A tombstone
of an order staged before it in the same pull or batch still wins: nothing of that order is stored."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import responses

from connectors.incremental import Stager
from connectors.non_purchase import tombstone
from connectors.records import Order
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.store import merge_staged, open_store

from .test_amocrm import FakeAmo, T0, make_source

AT = datetime(2025, 3, 1, tzinfo=timezone.utc)


def _orders(con) -> list[tuple]:
    return con.execute("SELECT order_id, customer_id, status, amount FROM orders ORDER BY order_id").fetchall()


def test_a_pull_of_n_deleted_or_lost_leads_never_stored_adds_no_row():
    n = 30
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = FakeAmo(mock)
        fake.put_contact(10, "a@example.com", at=T0)
        fake.put_order(1, 10, "15000", at=T0)
        first = make_source().pull(con)
        merge_staged(con, first, origin="pull")
        later = T0 + timedelta(days=1, hours=1)
        for oid in range(100, 100 + n):  # lost leads of no contact (unmappable: tombstones), and deleted ones
            fake.put_order(oid, 10, "5", at=later, status_id=143)
            fake.leads[oid]["_embedded"]["contacts"] = []
        for oid in range(200, 200 + n):
            fake.put_order(oid, 10, "5", at=later)
            fake.delete_order(oid, at=later)
        fake.delete_order(1, at=later)  # a stored lead deleted: its tombstone replaces it
        second = make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, first.cursor)
        assert second.orders == 2 * n + 1  # (staged: the merge tells which retire a stored order)
        merge_staged(con, second, origin="pull")
        assert _orders(con) == [("1", "10", "cancelled", Decimal("0.00"))]
        assert con.execute("SELECT count(*) FROM orders WHERE customer_id = ''").fetchall() == [(0,)]


def test_a_tombstone_staged_after_the_order_in_the_same_pull_wins_and_a_later_version_wins_over_it():
    with open_store(None) as con:
        stage_records(con, [Order("9", "c9", AT, Decimal(10))])
        merge_staged(con, PullResult(), origin="pull")
        stager = Stager(con, "test")
        stager.stage([Order("1", "c1", AT, Decimal(10)), Order("2", "c2", AT, Decimal(20))])
        stager.stage([tombstone("1", AT), tombstone("2", AT), tombstone("3", AT), tombstone("9", AT)])
        stager.stage([Order("2", "c2", AT, Decimal(21))])  # 2 read again: restored
        merge_staged(con, stager.result("{}"), origin="pull")
        assert _orders(con) == [("2", "c2", "completed", Decimal("21.00")), ("9", "c9", "cancelled", Decimal("0.00"))]


def test_a_webhook_batch_s_tombstone_of_an_order_never_stored_adds_no_row():
    with open_store(None) as con:
        stage_records(con, [Order("9", "c9", AT, Decimal(10))])
        merge_staged(con, PullResult(), origin="pull")
        stage_records(con, [tombstone("7", AT), tombstone("9", AT)])
        merge_staged(con, PullResult(), origin="webhook")
        assert _orders(con) == [("9", "c9", "cancelled", Decimal("0.00"))]


def test_a_queued_tombstone_keeps_what_it_retires_and_nothing_else_carries_the_flag():
    from sync.ledger.codec import decode_records, encode_records

    orders, _, _ = decode_records(encode_records([tombstone("7", AT, "c7"), tombstone("8", AT, final=True),
                                                  Order("9", "c9", AT, Decimal(0), status="cancelled")]))
    assert [o.if_stored for o in orders] == [True, False, False]


def test_a_webhook_s_tombstones_staged_beside_a_pull_of_the_resync_keep_what_they_retire(tmp_path, monkeypatch):
    """amoCRM's ``leads[delete]`` of a stored lead and of one never stored, resynced with a pull (the webhook's
    records set aside while the pull stages, then staged again): the stored lead is retired, the other adds no
    row; a lead the pull reads deleted is no row either."""
    from urllib.parse import urlencode

    from connectors.amocrm import parse_webhook
    from sync.pipeline import store_path
    from sync.serve.resync import resync

    from .test_store_pulled_versions import crm_shop, _pull
    from .test_worker import AS_OF

    with crm_shop(tmp_path, monkeypatch, "amocrm") as (cfg, settings, ledger, fake):
        fake.put_contact(10, "a@example.com", at=T0)
        fake.put_order(1, 10, "100", at=T0)
        fake.put_order(2, 10, "100", at=T0)
        _pull(cfg, ledger, settings)
        fake.put_order(300, 10, "5", at=T0 + timedelta(hours=1))
        fake.delete_order(300, at=T0 + timedelta(hours=1))  # created and deleted before any pull read it
        fake.delete_order(1, at=T0 + timedelta(hours=1))
        body = urlencode({"leads[delete][0][id]": "1", "leads[delete][1][id]": "999", "account[id]": "29062"})
        orders, _ = parse_webhook({}, body.encode())
        resync(cfg, ledger, settings, orders, pull=True, as_of=AS_OF)
        with open_store(store_path(cfg)) as con:
            assert _orders(con) == [("1", "10", "cancelled", Decimal("0.00")), ("2", "10", "completed",
                                                                               Decimal("100.00"))]


R1, R2 = AT + timedelta(hours=1), AT + timedelta(hours=2)


def _merged_out_of_order(con) -> dict[str, int]:
    """A never-stored order's newer webhook version (cancelled, unmappable: a tombstone; accepted R2, vendor time
    10:30) merged before its older one (the purchase; accepted R1, vendor time 10:10)."""
    stage_records(con, [tombstone("X", AT + timedelta(minutes=30), "cX")])
    merge_staged(con, PullResult(), origin="webhook", received_at=R2,
                 versions={("order", "X"): AT + timedelta(minutes=30)})
    stage_records(con, [Order("X", "cX", AT, Decimal(100))])
    return merge_staged(con, PullResult(), origin="webhook", received_at=R1,
                        versions={("order", "X"): AT + timedelta(minutes=10)})


def test_a_dropped_webhook_tombstone_still_orders_an_older_copy_merged_after_it():
    """The tombstone adds no row, but its version is noted: the older purchase merged after it is stale (it was
    stored as a completed purchase of an order the vendor had cancelled)."""
    with open_store(None) as con:
        stage_records(con, [Order("1", "c1", AT, Decimal(5))])
        merge_staged(con, PullResult(), origin="pull")
        assert _merged_out_of_order(con)["stale_orders"] == 1
        assert _orders(con) == [("1", "c1", "completed", Decimal("5.00"))]
        stage_records(con, [Order("X", "cX", AT, Decimal(120))])  # a newer version (restored): stored
        merge_staged(con, PullResult(), origin="webhook", received_at=R2 + timedelta(hours=1),
                     versions={("order", "X"): AT + timedelta(hours=2)})
        assert _orders(con)[-1] == ("X", "cX", "completed", Decimal("120.00"))


def test_a_file_full_refresh_tolerates_a_noted_order_the_store_holds_no_row_of():
    """The note of a dropped tombstone (a webhook record with no ``orders`` row) is kept across a full refresh that
    does not hold the order, and yields to one that does."""
    with open_store(None) as con:
        stage_records(con, [Order("1", "c1", AT, Decimal(5))])
        merge_staged(con, PullResult(), origin="pull")
        _merged_out_of_order(con)
        stage_records(con, [Order("1", "c1", AT, Decimal(6))])
        merge_staged(con, PullResult(full_refresh=True), origin="pull")
        assert _orders(con) == [("1", "c1", "completed", Decimal("6.00"))]
        stage_records(con, [Order("1", "c1", AT, Decimal(6)), Order("X", "cX", AT, Decimal(100))])
        merge_staged(con, PullResult(full_refresh=True), origin="pull")
        assert _orders(con)[-1] == ("X", "cX", "completed", Decimal("100.00"))


def _shopify_cancelled_never_stored(tmp_path, monkeypatch, pulled: bool):
    """Shopify order 78, never stored, cancelled with its customer gone (a tombstone) at 10:05 — read by a webhook
    or by a pull — then its ``orders/create`` of 10:00/10:01 delivered late (Shopify retries for hours)."""
    import copy

    from sync.pipeline import store_path
    from sync.serve.resync import resync

    from . import test_shopify
    from .test_store_pulled_versions import S, T0 as T, _pull, _shopify, crm_shop
    from .test_worker import AS_OF

    with crm_shop(tmp_path, monkeypatch, "shopify") as (cfg, settings, ledger, fake):
        fake.put_contact(7, "ann@example.com", at=T)
        fake.put_order(77, 7, "50.00", at=T)
        _pull(cfg, ledger, settings)
        fake.put_order(78, 7, "100.00", at=T + 60 * S)
        created = copy.deepcopy(fake.orders[78])
        gone = {"cancelled_at": test_shopify.z(T + 300 * S), "customer": None, "email": None,
                "updated_at": test_shopify.z(T + 300 * S)}
        if pulled:
            fake.orders[78].update(gone)
            _pull(cfg, ledger, settings)
        else:
            del fake.orders[78]
            resync(cfg, ledger, settings, _shopify("orders/cancelled", {**created, **gone}, cfg)[0], as_of=AS_OF)
        report = resync(cfg, ledger, settings, _shopify("orders/create", created, cfg)[0], as_of=AS_OF)
        with open_store(store_path(cfg)) as con:
            return report.stale, _orders(con)


def test_shopify_s_create_retried_after_the_cancel_webhook_of_an_order_never_stored_is_stale(tmp_path, monkeypatch):
    stale, orders = _shopify_cancelled_never_stored(tmp_path, monkeypatch, pulled=False)
    assert stale["order"] == 1 and [o[0] for o in orders] == ["77"]


def test_a_late_webhook_older_than_the_pull_that_read_the_order_cancelled_is_stale(tmp_path, monkeypatch):
    stale, orders = _shopify_cancelled_never_stored(tmp_path, monkeypatch, pulled=True)
    assert stale["order"] == 1 and [o[0] for o in orders] == ["77"]


def test_tombstone_is_still_importable_from_connectors_http():
    """It moved to connectors.non_purchase: a third-party connector importing it from connectors.http still works."""
    import connectors.http
    from connectors.http import tombstone as old  # noqa: F401 (the import is the test)

    assert old is tombstone and old("5", AT).if_stored
    with __import__("pytest").raises(AttributeError):
        connectors.http.not_there  # noqa: B018
