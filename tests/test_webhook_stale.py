"""An authentic CRM delivery refused for its time (Shopify's ``X-Shopify-Triggered-At`` ahead of this host's clock,
a Bitrix24 event held back for hours) is told apart from a forgery: its answer and a WARNING name the clock
difference (never the secret); a forgery stays a bare 401 "authentication failed"."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest

from connectors.bitrix24 import verify_webhook as b24_verify
from connectors.shopify import verify_webhook as shopify_verify
from connectors.webhooks import hmac_sha256_base64, webhook_parser
from sync.serve.generic import BadRequest
from sync.serve.webhooks import CrmWebhooks

SECRET = "shpss_test_secret_value"
B24_TOKEN = "b24appToken_secret"
BODY = b'{"id": 5, "email": "a@example.com", "updated_at": "2026-01-10T09:00:00Z"}'


def refused(kind: str, key: str, headers: dict, body: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as err:
        CrmWebhooks(kind, webhook_parser(kind), key, None).events(headers, body, None)
    return err.value


def shopify_headers(signature: str, triggered: datetime) -> dict[str, str]:
    return {"X-Shopify-Topic": "customers/update", "X-Shopify-Hmac-Sha256": signature,
            "X-Shopify-Triggered-At": triggered.isoformat().replace("+00:00", "Z")}


def b24_event(token: str, age: timedelta) -> bytes:
    return urlencode({"event": "ONCRMDEALDELETE", "data[FIELDS][ID]": "7", "ts": int(time.time() - age.total_seconds()),
                      "auth[application_token]": token}).encode()


def test_a_signed_shopify_delivery_ahead_of_this_host_is_refused_naming_the_clock(caplog):
    ahead = datetime.now(timezone.utc) + timedelta(minutes=6)
    headers = shopify_headers(hmac_sha256_base64(SECRET, BODY), ahead)
    assert not shopify_verify(headers, BODY, SECRET)  # (the verifier's answer is unchanged: refused)
    with caplog.at_level(logging.WARNING, logger="sync.serve.webhooks"):
        err = refused("shopify", SECRET, headers, BODY)
    assert err.status == 401 and "authentication failed" not in str(err)
    assert "authentic" in str(err) and "ahead of this host's clock" in str(err) and "X-Shopify-Triggered-At" in str(err)
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "ahead of this host's clock" in caplog.text
    assert SECRET not in caplog.text and SECRET not in str(err)


def test_a_bitrix24_event_six_hours_old_with_the_right_token_is_refused_naming_its_age(caplog):
    body = b24_event(B24_TOKEN, timedelta(hours=6))
    assert not b24_verify({}, body, B24_TOKEN)
    with caplog.at_level(logging.WARNING, logger="sync.serve.webhooks"):
        err = refused("bitrix24", B24_TOKEN, {}, body)
    assert err.status == 401 and "6 h old" in str(err) and "older than 5 h are refused" in str(err)
    assert "6 h old" in caplog.text and B24_TOKEN not in caplog.text and B24_TOKEN not in str(err)


def test_forgeries_stay_authentication_failed_whatever_their_time(caplog):
    ahead = datetime.now(timezone.utc) + timedelta(minutes=6)
    with caplog.at_level(logging.WARNING, logger="sync.serve.webhooks"):
        for err in (refused("shopify", SECRET, shopify_headers("forged", ahead), BODY),
                    refused("shopify", SECRET, shopify_headers(hmac_sha256_base64("other", BODY), ahead), BODY),
                    refused("bitrix24", B24_TOKEN, {}, b24_event("wrong", timedelta(hours=6)))):
            assert (err.status, str(err).split(": ", 1)[1]) == (401, "authentication failed")
    assert caplog.records == []


def test_a_fresh_authentic_delivery_is_accepted():
    now = datetime.now(timezone.utc)
    events = CrmWebhooks("shopify", webhook_parser("shopify"), SECRET, None).events(
        shopify_headers(hmac_sha256_base64(SECRET, BODY), now), BODY, None)
    assert [k.split(":")[0] for k, *_ in events] == ["contact"]
    assert CrmWebhooks("bitrix24", webhook_parser("bitrix24"), B24_TOKEN, None).events(
        {}, b24_event(B24_TOKEN, timedelta(minutes=1)), None)


def test_replays_of_a_stale_delivery_are_each_refused_and_logged_once_per_window(caplog):
    """A captured delivery replayed (or retried in a storm) floods no log: each replay is a 401, the WARNING is told
    once per delivery per window and for at most ``limit`` deliveries; the next window's first line says how many
    were not told."""
    from sync.serve.webhooks import StaleLog

    now = [0.0]
    hooks = CrmWebhooks("bitrix24", webhook_parser("bitrix24"), B24_TOKEN, None,
                        StaleLog(window=600, limit=3, clock=lambda: now[0]))
    replayed = b24_event(B24_TOKEN, timedelta(hours=6))
    others = [b24_event(B24_TOKEN, timedelta(hours=6, minutes=i)) for i in range(1, 6)]

    def deliver(body: bytes) -> int:
        with pytest.raises(BadRequest) as err:
            hooks.events({}, body, None)
        return err.value.status

    with caplog.at_level(logging.WARNING, logger="sync.serve.webhooks"):
        assert {deliver(replayed) for _ in range(100)} == {401}
        assert len(caplog.records) == 1 and "6 h old" in caplog.text
        assert {deliver(body) for body in others} == {401}  # 2 more told (the limit, 3), 3 not
        assert len(caplog.records) == 3
        now[0] = 601.0  # the next window: the count not told, then the replayed delivery told again
        assert deliver(replayed) == 401
    assert len(caplog.records) == 5 and "6 h old" in caplog.records[-1].message
    assert "102 more authentic deliveries refused for their time were not logged in the 10 min from 10 min ago" in (
        caplog.records[-2].message)


def test_a_delivery_not_logged_for_the_limit_is_logged_in_the_next_window(caplog):
    """Over the limit, a delivery is not taken for logged: it was, for its replays' window after that, never."""
    from sync.serve.webhooks import StaleLog

    now = [0.0]
    stale = StaleLog(window=600, limit=1, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="sync.serve.webhooks"):
        stale.warn("bitrix24", b"A", "late A")
        now[0] = 300.0
        stale.warn("bitrix24", b"B", "late B")  # over the limit
        now[0] = 601.0
        stale.warn("bitrix24", b"B", "late B")
    assert [r.message.rsplit(": ", 1)[-1] for r in caplog.records][::2] == ["late A", "late B"]
    # (one delivery: singular; it said "1 more authentic deliveries ... were", "at most 1 deliveries")
    assert "1 more authentic delivery refused for its time was not logged" in caplog.records[1].message
    assert "at most 1 delivery per 10 min" in caplog.records[1].message


def test_the_count_of_a_storm_s_window_is_logged_by_the_next_refusal_even_one_not_logged(caplog):
    """The first refusal after a window logs that window's count, also when it is a replay not logged itself (the
    count waited for a delivery logged, and a storm of replays that ended kept it for good)."""
    from sync.serve.webhooks import StaleLog

    now = [0.0]
    stale = StaleLog(window=600, limit=2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="sync.serve.webhooks"):
        stale.warn("amocrm", b"X", "late X")
        now[0] = 500.0
        stale.warn("amocrm", b"A", "late A")
        for _ in range(5):
            stale.warn("amocrm", b"A", "late A")  # replays
        now[0] = 700.0
        stale.warn("amocrm", b"A", "late A")  # a replay of A, logged at 500: not logged again
    assert len(caplog.records) == 3
    assert "5 more authentic deliveries refused for their time were not logged in the 10 min from 12 min ago" in (
        caplog.records[-1].message)
