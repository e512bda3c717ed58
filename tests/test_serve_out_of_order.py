"""Webhook deliveries that arrive out of order, end to end: the HTTP intake (uvicorn on loopback), the ledger's
queue, the worker, the order store and the fake Mailchimp. A delivery the vendor made before the version the store
(or the batch) holds, by the payload's ``updated_at``, is left out however late rfmsync accepted it: a refunded
order does not go back to paid, a withdrawn consent does not come back (nobody is subscribed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import requests

from sync.config import load_config
from sync.ledger import open_ledger
from sync.pipeline import store_path
from sync.serve.app import create_app
from sync.serve.generic import sign_generic
from sync.serve.metrics import Metrics
from sync.serve.webhooks import Intake
from sync.serve.worker import Worker
from sync.settings import load_settings
from sync.store import open_store
from tests.test_webhooks_generic import live_server
from tests.test_worker import AS_OF, churned_contact, make_shop
from sync.serve.scheduler import run_full_sync

SECRET = "whsec-test"  # RFMSYNC_WEBHOOK_SECRET, set by make_shop
SHOPIFY_SECRET = "shp-secret"


@pytest.fixture
def skip_shop(tmp_path, mailchimp_fake, monkeypatch):
    """The demo shop synced once to the fake Mailchimp, its destination creating only contacts who consented
    (``new_contacts = "skip"``): a contact whose consent is ``no`` is not in the audience at all."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    path.write_text(path.read_text(encoding="utf-8").replace('new_contacts = "transactional"',
                                                              'new_contacts = "skip"'), encoding="utf-8")
    monkeypatch.setenv("SHOPIFY_WEBHOOK_SECRET", SHOPIFY_SECRET)
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
    return path


def _generic(base: str, order: dict) -> requests.Response:
    body = json.dumps(order).encode()
    headers = {"Content-Type": "application/json", **sign_generic(SECRET, body, int(time.time()))}
    return requests.post(f"{base}/webhooks/generic", data=body, headers=headers, timeout=10)


def _shopify(base: str, topic: str, payload: dict) -> requests.Response:
    body = json.dumps(payload).encode()
    sig = base64.b64encode(hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    return requests.post(f"{base}/webhooks/shopify", data=body, timeout=10,
                         headers={"Content-Type": "application/json", "X-Shopify-Topic": topic,
                                  "X-Shopify-Hmac-Sha256": sig})


def _new_customer_order(consent: str, contact_updated: str | None, order_id: str = "OOO-1") -> dict:
    contact = {"email": "late.news@example.com", "marketing_consent": consent}
    if contact_updated is not None:
        contact["updated_at"] = contact_updated
    return {"order_id": order_id, "customer_id": "NEW-7", "ordered_at": "2025-06-29T12:00:00+05:00",
            "amount": "990000", "contact": contact}


def _consent(cfg, customer_id: str) -> str:
    with open_store(store_path(cfg)) as con:
        return con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = ?",
                           [customer_id]).fetchone()[0]


@pytest.mark.parametrize("one_batch", [False, True], ids=["apart", "one-batch"])
def test_an_older_consent_yes_delivered_after_the_withdrawal_subscribes_nobody(skip_shop, mailchimp_fake,
                                                                               one_batch):
    """The sender's consent "no" of 10:05 goes through; its 10:00 "yes", retried, is accepted after it (processed
    in a later batch, or in the same one). It is stale: the store keeps "no", the contact is not created in the
    audience (``skip``: only those who consented are), and the stale version is counted."""
    cfg, settings = load_config(skip_shop), load_settings()
    metrics = Metrics()
    with open_ledger(cfg, settings) as ledger:
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF, metrics=metrics)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            withdrawn = _generic(base, _new_customer_order("no", "2025-06-29T10:05:00+00:00"))
            assert withdrawn.status_code == 202 and withdrawn.json()["queued"] == 1, withdrawn.text
            if not one_batch:
                assert worker.drain() == 2  # the order and its contact: an event each
            late_yes = _generic(base, _new_customer_order("yes", "2025-06-29T10:00:00+00:00"))
            assert late_yes.status_code == 202 and late_yes.json()["queued"] == 1, late_yes.text
            assert worker.drain() == (2 if not one_batch else 4)  # the order again (its contact changed), the contact
        assert ledger.event_counts()["done"] == 4  # the stale delivery is done, not failed nor retried
    assert _consent(cfg, "NEW-7") == "no"
    assert "late.news@example.com" not in mailchimp_fake.lists["aud1"].members  # nobody subscribed
    assert metrics.snapshot()["stale"]["contact"] == (1 if not one_batch else 2)  # one batch: twice


def test_the_generic_payload_without_updated_at_keeps_the_acceptance_order(skip_shop, mailchimp_fake):
    """Without ``updated_at`` (or with it on one version only) the delivery accepted last wins, as before: the
    sender's "no" then "yes" leaves "yes"; then a "no" carrying a time older than the "yes"'s acceptance but no
    stored vendor time to compare with wins too (nothing is left out on a guess)."""
    cfg, settings = load_config(skip_shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            assert _generic(base, _new_customer_order("no", None)).status_code == 202
            assert worker.drain() == 2  # the order and its contact: an event each
            assert _generic(base, _new_customer_order("yes", None)).status_code == 202
            assert worker.drain() == 2  # the order again (it carries its contact, changed) and the contact
            assert _consent(cfg, "NEW-7") == "yes"
            assert mailchimp_fake.lists["aud1"].members["late.news@example.com"]["status"] == "subscribed"
            assert _generic(base, _new_customer_order("no", "2025-06-29T09:00:00+00:00", "OOO-2")).status_code == 202
            assert worker.drain() == 2
    assert _consent(cfg, "NEW-7") == "no"


def _shopify_order(order_id: int, customer_id: str, financial_status: str, updated_at: str) -> dict:
    return {"id": order_id, "created_at": "2025-06-29T10:00:00+00:00", "processed_at": "2025-06-29T10:00:00+00:00",
            "updated_at": updated_at, "total_price": "990000.00", "current_total_price":
                "0.00" if financial_status == "refunded" else "990000.00",
            "financial_status": financial_status, "customer": {"id": customer_id},
            "line_items": []}


@pytest.mark.parametrize("one_batch", [False, True], ids=["apart", "one-batch"])
def test_a_shopify_order_refunded_then_its_older_paid_delivery_stays_refunded(skip_shop, mailchimp_fake, one_batch):
    """Shopify's ``orders/updated`` of the refund (``updated_at`` 10:05) is processed; the 10:00 ``orders/paid``
    delivery, retried, is accepted after it. The order stays refunded: its customer, churned, stays in Churn
    (tag ``Winback``) instead of moving for a purchase that was refunded."""
    cfg = load_config(skip_shop)
    cfg = cfg.model_copy(update={"source": {"type": "shopify", "shop": "demo"}})  # the shop's Shopify webhooks
    settings = load_settings()
    metrics = Metrics()
    with open_ledger(cfg, settings) as ledger:
        email, cid = churned_contact(ledger)
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF, metrics=metrics)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            refund = _shopify(base, "orders/updated", _shopify_order(9001, cid, "refunded", "2025-06-29T10:05:00Z"))
            assert refund.status_code == 202 and refund.json()["queued"] == 1, refund.text
            if not one_batch:
                assert worker.drain() == 1
            paid = _shopify(base, "orders/paid", _shopify_order(9001, cid, "paid", "2025-06-29T10:00:00Z"))
            assert paid.status_code == 202 and paid.json()["queued"] == 1, paid.text
            assert worker.drain() == (1 if not one_batch else 2)
        assert ledger.event_counts()["done"] == 2
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT status, amount FROM orders WHERE order_id = '9001'").fetchall() == [
            ("cancelled", 0)]  # (wholly refunded: no purchase, docs/sources/shopify.md)
    assert mailchimp_fake.tags_of(email) == {"Winback"}
    assert metrics.snapshot()["stale"]["order"] == 1
    assert 'rfmsync_webhook_stale_versions_total{kind="order"} 1' in metrics.render()


def _customer(consent: str | None, updated_at: str, **fields) -> dict:
    payload = {"id": 7700, "email": "late.news@example.com", "updated_at": updated_at, **fields}
    if consent is not None:
        payload["email_marketing_consent"] = {"state": consent, "consent_updated_at": updated_at}
    return payload


def test_a_withdrawal_delivered_after_a_newer_edit_without_consent_takes_the_tags_off_in_that_resync(
        skip_shop, mailchimp_fake):
    """A Shopify customer: subscribed at 10:00 (created and tagged), a name edit at 10:03 that says nothing of
    consent, and the unsubscription of 10:02, retried, accepted last. It is stale by Shopify's times, yet it
    withdraws (a later edit without consent does not hide it), and the same resync takes the managed tags off in the
    ESP: before (the review of fix52), the store said "no" but the resync planned nobody (the delivery's only record
    was left out), and the ESP kept him tagged until the next full sync."""
    cfg = load_config(skip_shop).model_copy(update={"source": {"type": "shopify", "shop": "demo"}})
    settings, email = load_settings(), "late.news@example.com"
    with open_ledger(cfg, settings) as ledger:
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            assert _shopify(base, "orders/paid", _shopify_order(9100, "7700", "paid", "2025-06-29T10:00:00Z")
                            ).status_code == 202
            assert _shopify(base, "customers/update", _customer("subscribed", "2025-06-29T10:00:00Z")
                            ).status_code == 202
            assert worker.drain() == 2 and mailchimp_fake.tags_of(email), "subscribed and tagged first"
            assert _shopify(base, "customers/update", _customer(None, "2025-06-29T10:03:00Z", first_name="Late")
                            ).status_code == 202
            assert worker.drain() == 1
            assert _shopify(base, "customers/update", _customer("unsubscribed", "2025-06-29T10:02:00Z")
                            ).status_code == 202
            assert worker.drain() == 1
    assert _consent(cfg, "7700") == "no"
    assert mailchimp_fake.tags_of(email) == set()  # the managed tags taken off by that resync


def test_in_one_batch_a_withdrawal_then_an_edit_without_consent_stays_a_withdrawal(skip_shop, mailchimp_fake):
    """Stored "yes"; one batch holds the withdrawal (10:02) and a later edit that says nothing of consent (10:03):
    the edit keeps the batch's withdrawal as the store keeps a stored value (before: it took the stored "yes")."""
    cfg, settings = load_config(skip_shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            assert _generic(base, _new_customer_order("yes", "2025-06-29T10:00:00+00:00")).status_code == 202
            assert worker.drain() == 2  # the order and its contact: an event each
            edit = _new_customer_order("yes", "2025-06-29T10:03:00+00:00")
            del edit["contact"]["marketing_consent"]
            assert _generic(base, _new_customer_order("no", "2025-06-29T10:02:00+00:00")).status_code == 202
            assert _generic(base, edit).status_code == 202
            assert worker.drain() == 4  # each delivery's order (carrying its contact) and its contact
    assert _consent(cfg, "NEW-7") == "no"
    assert mailchimp_fake.tags_of("late.news@example.com") == set()
