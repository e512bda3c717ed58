"""The queue codec between servers of two versions sharing a ledger (an upgrade under way): a Shopify
``orders/delete`` that this intake queues as a final delete is read by the worker of the version before
(``tests/data/codec_before_final.py``: its decoder and its three order statuses) as the plain cancel it queued
itself, and by this worker as a delete for good; what the version before queued reads here as it did."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connectors.records import Order, OrderStatus
from connectors.shopify import parse_webhook
from sync.ledger.codec import decode_records, encode_records
from tests.data import codec_before_final as older
from tests.test_webhooks_generic import ledger, make_client, post  # noqa: F401 (fixtures)

#: a minute ago, to the second: the intake refuses a Shopify delivery triggered over 5 hours before it arrives (a fixed
#: time here failed the test 5 hours after it was written)
TRIGGERED = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)


def _delete(triggered: datetime | None) -> Order:
    headers = {"X-Shopify-Topic": "orders/delete"}
    if triggered is not None:
        headers["X-Shopify-Triggered-At"] = triggered.isoformat()
    [gone], _ = parse_webhook(headers, b'{"id": 77}')
    return gone


@pytest.mark.parametrize("triggered", [None, TRIGGERED], ids=["untimed", "timed"])
def test_an_older_worker_reads_a_final_delete_as_the_plain_cancel_it_was(triggered):
    """Before: ``"status": "deleted"``, which the older decoder refuses (ValueError: the event failed for good, the
    delete lost)."""
    gone = _delete(triggered)
    assert gone.status is OrderStatus.DELETED
    payload = encode_records([gone])
    [theirs], [], pull = older.decode_records(payload)
    assert (theirs.order_id, theirs.status, theirs.amount, theirs.updated_at, pull) == (
        "77", "cancelled", Decimal(0), triggered, False)
    [ours], [], _ = decode_records(payload)
    assert ours == gone  # a delete for good here, every field as it was


def test_a_plain_cancel_reads_as_before_in_both_directions():
    """Only a delete for good carries the flag: any other order's payload (and so its dedupe key) is unchanged, and
    a cancel an older intake queued (a Shopify delete included: it had no flag) stays a plain cancel here."""
    cancel = Order("77", "7", TRIGGERED, Decimal(0), status=OrderStatus.CANCELLED)
    payload = encode_records([cancel])
    assert "final" not in json.loads(payload)["orders"][0]
    assert decode_records(payload)[0] == [cancel] == older.decode_records(payload)[0]


@pytest.mark.parametrize("order, wrong", [({"status": "completed", "final": True}, "final=True status=completed"),
                                          ({"status": "cancelled", "final": "yes"}, "final='yes'")])
def test_a_final_flag_that_is_not_a_cancels_true_is_refused_by_name(order, wrong):
    payload = json.dumps({"orders": [{"order_id": "77", "customer_id": "", "ordered_at": TRIGGERED.isoformat(),
                                      "amount": "0", **order}]})
    with pytest.raises(ValueError, match=f"not an rfmsync record batch: ValueError: order '77': final must be true "
                                         f"and only on a cancelled order, got {wrong}"):
        decode_records(payload)


def test_a_delete_delivered_to_this_intake_is_queued_so_an_older_worker_can_merge_it(ledger, make_client):
    """Shopify's delivery through the HTTP intake: the queued event's payload, claimed as a worker would."""
    client, _ = make_client(None, source={"type": "shopify", "shop": "demo"}, shopify_webhook_secret="shp-secret")
    body = b'{"id": 77}'
    sig = base64.b64encode(hmac.new(b"shp-secret", body, hashlib.sha256).digest()).decode()
    reply = post(client, body, {"X-Shopify-Hmac-Sha256": sig, "X-Shopify-Topic": "orders/delete",
                                "X-Shopify-Triggered-At": TRIGGERED.isoformat()}, "/webhooks/shopify")
    assert reply.status_code == 202 and reply.json()["queued"] == 1, reply.text
    [event] = ledger.claim_events("older-worker")
    [theirs], _, _ = older.decode_records(event.payload)
    assert (theirs.order_id, theirs.status, theirs.updated_at) == ("77", "cancelled", TRIGGERED)
    [ours], _, _ = decode_records(event.payload)
    assert (ours.order_id, ours.status, ours.updated_at) == ("77", OrderStatus.DELETED, TRIGGERED)
