"""A deleted Shopify order stays deleted, end to end: Shopify's deliveries through the HTTP intake (uvicorn on
loopback), the ledger's queue, the worker, the order store and the fake Mailchimp; and Shopify's pulls (its REST
API faked by ``responses``). An ``orders/updated`` made before the delete but retried by Shopify after it, in a
later batch or in the same one, does not bring the order back (its customer's segment stays where the delete put
it), nor does a pull whose list still shows the order."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import pytest
import requests

from sync.config import load_config
from sync.ingest import segments_from_store
from sync.ledger import open_ledger
from sync.pipeline import store_path
from sync.serve.app import create_app
from sync.serve.metrics import Metrics
from sync.serve.resync import resync
from sync.serve.webhooks import Intake
from sync.serve.worker import Worker
from sync.settings import load_settings
from sync.store import open_store
from tests import test_shopify
from tests.test_serve_out_of_order import (SHOPIFY_SECRET, _generic, _shopify_order,  # noqa: F401 (a fixture)
                                           skip_shop)
from tests.test_store_pulled_versions import S, T0, _pull, _row, _shopify, crm_shop
from tests.test_webhooks_generic import live_server
from tests.test_worker import AS_OF, churned_contact


def _post(base: str, topic: str, payload: dict, triggered: datetime | None = None) -> requests.Response:
    """A signed Shopify delivery; ``triggered``: its X-Shopify-Triggered-At (none: a proxy stripped it)."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-Shopify-Topic": topic,
               "X-Shopify-Hmac-Sha256": base64.b64encode(hmac.new(SHOPIFY_SECRET.encode(), body,
                                                                  hashlib.sha256).digest()).decode()}
    if triggered is not None:
        headers["X-Shopify-Triggered-At"] = triggered.isoformat()
    reply = requests.post(f"{base}/webhooks/shopify", data=body, headers=headers, timeout=10)
    assert reply.status_code == 202 and reply.json()["queued"] == 1, reply.text
    return reply


@pytest.mark.parametrize("triggered, one_batch", [(False, False), (True, False), (False, True)],
                         ids=["untimed-delete", "timed-delete", "one-batch"])
def test_an_update_retried_after_the_delete_does_not_bring_the_order_back(skip_shop, mailchimp_fake, triggered,
                                                                          one_batch):
    """A churned customer's order is paid (he leaves Churn), then deleted (he is back in Churn, tag Winback). The
    orders/updated Shopify made before the delete, retried after it, is left out and counted: the order stays
    deleted, he stays in Churn. Before: applied (ordered by acceptance: the delete untimed, or the edit made in the
    delete's second; in one batch the later update replaced the delete), the order counted again, the tags moved."""
    cfg = load_config(skip_shop).model_copy(update={"source": {"type": "shopify", "shop": "demo"}})
    settings, metrics, now = load_settings(), Metrics(), datetime.now(timezone.utc).replace(microsecond=0)
    with open_ledger(cfg, settings) as ledger:
        email, cid = churned_contact(ledger)
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF, metrics=metrics)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            paid = _shopify_order(9001, cid, "paid", (now - timedelta(minutes=30)).isoformat())
            _post(base, "orders/paid", paid)
            assert worker.drain() == 1
            assert mailchimp_fake.tags_of(email) != {"Winback"}, "the purchase moved him"
            deleted_at = now - timedelta(minutes=10)
            _post(base, "orders/delete", {"id": 9001}, deleted_at if triggered else None)
            if not one_batch:
                assert worker.drain() == 1
                assert mailchimp_fake.tags_of(email) == {"Winback"}
            # an edit made before the delete (its delivery failed), retried by Shopify after it; with a timed delete,
            # one made in the delete's second (Shopify's updated_at has whole seconds: equal times, before ordered
            # by acceptance)
            edited = deleted_at if triggered else now - timedelta(minutes=20)
            _post(base, "orders/updated", {**paid, "updated_at": edited.isoformat()})
            assert worker.drain() == (2 if one_batch else 1)
        assert ledger.event_counts()["done"] == 3
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT status, amount FROM orders WHERE order_id = '9001'").fetchall() == [
            ("cancelled", 0)]
    assert mailchimp_fake.tags_of(email) == {"Winback"}
    assert metrics.snapshot()["stale"]["order"] == 1


def test_a_shopify_pull_still_listing_a_deleted_order_does_not_bring_it_back(tmp_path, monkeypatch, caplog):
    """The pull stored orders 77 and 78; the orders/delete of 77 (untimed) is merged; the next pull's list still
    shows 77 (lagging behind the delete, with its last edit of 10:05), and so does a backfill: left out of both
    and logged, 77 stays deleted, 78 is updated."""
    caplog.set_level("INFO", logger="sync.store")
    with crm_shop(tmp_path, monkeypatch, "shopify") as (cfg, settings, ledger, fake):
        fake.put_contact(7, "ann@example.com", at=T0)
        fake.put_order(77, 7, "100.00", at=T0)
        fake.put_order(78, 7, "50.00", at=T0)
        _pull(cfg, ledger, settings)
        assert resync(cfg, ledger, settings, _shopify("orders/delete", {"id": 77}, cfg)[0], as_of=AS_OF).stale == {
            "order": 0, "contact": 0}
        assert _row(cfg, "SELECT status, amount FROM orders WHERE order_id = '77'") == ("cancelled", 0)
        fake.put_order(77, 7, "100.00", at=T0, updated_at=test_shopify.z(T0 + 300 * S))
        fake.put_order(78, 7, "60.00", at=T0, updated_at=test_shopify.z(T0 + 300 * S))
        _pull(cfg, ledger, settings)
        assert _row(cfg, "SELECT status, amount FROM orders WHERE order_id = '77'") == ("cancelled", 0)
        assert "pull merge: 1 orders left out as stale (e.g. 77): the order was deleted for good" in caplog.text
        segments_from_store(cfg, ledger, settings, as_of=AS_OF, pull=True, full=True).con.close()  # a backfill
        assert _row(cfg, "SELECT status, amount FROM orders WHERE order_id = '77'") == ("cancelled", 0)
        assert _row(cfg, "SELECT status, amount FROM orders WHERE order_id = '78'") == ("completed", 60)


def test_in_a_batch_a_delete_is_the_orders_last_version_whatever_the_times():
    """The worker's batch orders an order's versions as the store does: a delete earlier by its time than the update
    accepted before it (two of Shopify's clocks) is kept, not left out as older; any version after a delete is
    left out and counted. A contact's versions are ordered as before."""
    from dataclasses import replace

    from connectors.records import Order, OrderStatus
    from sync.ledger.queue import Event
    from sync.serve.batches import _batch

    def part(n: int, *orders: Order) -> tuple:
        return Event(n, "shopify", f"k{n}", "{}", T0 + n * S, 1), list(orders), [], False

    update = _shopify("orders/updated", _shopify_order(77, "7", "paid", test_shopify.z(T0 + 600 * S)), None)[0]
    [gone] = _shopify("orders/delete", {"id": 77}, None)[0]
    for delete in (gone, replace(gone, updated_at=T0 + 590 * S)):
        batch = _batch([part(1, *update), part(2, delete)])
        assert [(o.status, batch.stale) for o in batch.orders] == [(OrderStatus.DELETED, {})]
        batch = _batch([part(1, delete), part(2, *update), part(3, Order("77", "7", T0, gone.amount))])
        assert [(o.status, batch.stale) for o in batch.orders] == [(OrderStatus.DELETED, {"order": 2})]


def test_a_batch_logs_why_it_left_a_version_out_a_delete_for_good_or_a_newer_time(caplog):
    """One batch: an order's delete (timed, at 10:09:50), then its orders/updated retried after it (updated_at
    10:10, later than the delete: not older by any time), and a contact's delivery older by its updated_at than the
    batch's other one. Each reason is logged with its own count; both are counted as stale. Before: the order's line
    said "the batch holds a newer one (by the vendor's updated_at)", which the delete (older by its time) is not."""
    from connectors.shopify import parse_webhook
    from sync.ledger.queue import Event
    from sync.serve.batches import _batch, count_stale
    from sync.serve.resync import ResyncReport

    def part(n: int, orders: list, contacts: list) -> tuple:
        return Event(n, "shopify", f"k{n}", "{}", T0 + n * S, 1), orders, contacts, False

    caplog.set_level("INFO", logger="sync.serve.batches")
    update = _shopify("orders/updated", _shopify_order(77, "7", "paid", test_shopify.z(T0 + 600 * S)), None)[0]
    gone, _ = parse_webhook({"X-Shopify-Topic": "orders/delete",
                             "X-Shopify-Triggered-At": test_shopify.z(T0 + 590 * S)}, b'{"id": 77}')
    _, newer = _shopify("customers/update", {"id": 7, "updated_at": test_shopify.z(T0 + 600 * S)}, None)
    _, older = _shopify("customers/update", {"id": 7, "updated_at": test_shopify.z(T0 + 500 * S)}, None)
    batch = _batch([part(1, gone, newer), part(2, update, older)])
    report = count_stale(batch, ResyncReport())
    assert report.stale == {"order": 1, "contact": 1}
    lines = sorted(r.getMessage() for r in caplog.records)
    assert lines == ["webhook batch: 1 contact versions left out as stale: the batch holds a newer one (by the "
                     "vendor's updated_at)",
                     "webhook batch: 1 order versions left out as stale: the order was deleted for good"]
    assert ("# HELP rfmsync_webhook_stale_versions_total Webhook versions of an order or contact left out as older "
            "than the version held, or deleted for good.") in Metrics().render()  # what the counter counts


def test_a_generic_order_reusing_a_deleted_shopify_orders_id_is_left_out_as_deleted(skip_shop, mailchimp_fake, caplog):
    """The store keys orders by order_id alone (docs/serve.md, Generic webhooks): after Shopify's delete of 9001, a
    generic delivery of an order 9001 (accepted later) is left out as deleted and counted, the order stays cancelled."""
    caplog.set_level("INFO", logger="sync.store")
    cfg = load_config(skip_shop).model_copy(update={"source": {"type": "shopify", "shop": "demo"}})
    settings, metrics = load_settings(), Metrics()
    with open_ledger(cfg, settings) as ledger:
        _, cid = churned_contact(ledger)
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF, metrics=metrics)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            _post(base, "orders/delete", {"id": 9001})
            assert worker.drain() == 1
            reply = _generic(base, {"order_id": "9001", "customer_id": cid, "amount": "500",
                                    "ordered_at": datetime.now(timezone.utc).isoformat()})
            assert reply.status_code == 202, reply.text
            assert worker.drain() == 1
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT status, amount FROM orders WHERE order_id = '9001'").fetchall() == [
            ("cancelled", 0)]
    assert "webhook merge: 1 orders left out as stale (e.g. 9001): the order was deleted for good" in caplog.text
    assert metrics.snapshot()["stale"]["order"] == 1
