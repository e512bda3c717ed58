"""Shopify topics whose payload is no order or customer resource (``orders/edited``, the e-mail marketing consent
topic) are accepted and queue an incremental pull; answered 400 before, Shopify retried them for 4 h and then
deleted the subscription."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from connectors.shopify import ShopifyConfig, parse_webhook
from connectors.webhooks import webhook_parser
from sync.serve.generic import BadRequest
from sync.serve.webhooks import CrmWebhooks

from .test_shopify import SECRET, signed

ORDER_EDITED = {"order_edit": {
    "id": 78912328, "app_id": None, "created_at": "2026-12-06T10:00:00-05:00", "notify_customer": False,
    "order_id": 450789469, "staff_note": "", "user_id": None, "line_items": {"additions": [], "removals": []},
    "discounts": {"line_item": {"additions": [], "removals": []}}, "shipping_lines": {"additions": [], "removals": []}}}
CONSENT = {"customer_id": 706405506930370084, "email_address": "bob@example.com",
           "email_marketing_consent": {"state": "unsubscribed", "opt_in_level": None,
                                       "consent_updated_at": "2026-12-06T10:00:00-05:00"}}


def intake_events(topic: str, payload: dict) -> list[tuple[str, str, int]]:
    """The queue events the server's intake makes of a delivery signed now."""
    body = json.dumps(payload).encode()
    headers = {**signed(body, at=datetime.now(timezone.utc)), "X-Shopify-Topic": topic}
    return CrmWebhooks("shopify", webhook_parser("shopify"), SECRET, ShopifyConfig()).events(headers, body, None)


@pytest.mark.parametrize(("topic", "payload"), [("orders/edited", ORDER_EDITED),
                                                ("customers_email_marketing_consent/update", CONSENT)])
def test_a_topic_without_a_resource_is_accepted_and_queues_a_pull(topic, payload):
    events = intake_events(topic, payload)
    assert [key.split(":")[0] for key, *_ in events] == ["pull"]
    assert parse_webhook({"X-Shopify-Topic": topic}, json.dumps(payload).encode()) == ([], [])


def test_such_a_topic_without_its_id_is_still_a_bad_request():
    with pytest.raises(BadRequest) as err:
        intake_events("orders/edited", {"order_edit": {"id": 1}})
    assert err.value.status == 400 and "order_id: missing" in str(err.value)
    with pytest.raises(BadRequest) as err:
        intake_events("customers_email_marketing_consent/update", {"email_address": "bob@example.com"})
    assert err.value.status == 400 and "customer_id: missing" in str(err.value)


def test_an_order_or_customer_resource_queues_no_pull():
    customer = {"id": 7, "email": "bob@example.com", "email_marketing_consent": {"state": "subscribed"}}
    assert [key.split(":")[0] for key, *_ in intake_events("customers/update", customer)] == ["contact"]
