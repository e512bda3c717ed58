"""Shopify webhook authentication: the signature (``X-Shopify-Hmac-Sha256``), the delivery's age
(``X-Shopify-Triggered-At``) and, with a guard, replays; and why an authentic delivery was refused for its time
(:func:`webhook_stale_reason`: a clock or a late delivery, told apart from a forgery). Re-exported by :mod:`connectors.shopify`,
which registers them with its parser."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Mapping

from .http import parse_dt
from .webhooks import DEFAULT_MAX_AGE, ReplayGuard, header, hmac_sha256_base64, tokens_equal
from .webhooks import stale_reason as _time_refusal

TRIGGERED = "X-Shopify-Triggered-At"


def _signed(headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """``X-Shopify-Hmac-Sha256`` = base64(HMAC-SHA256(app secret, raw body)), compared in constant time."""
    return bool(secret) and tokens_equal(header(headers, "X-Shopify-Hmac-Sha256"), hmac_sha256_base64(secret, body))


def _time_problem(headers: Mapping[str, str], now: datetime | None, max_age: timedelta) -> str | None:
    """Why the delivery's ``X-Shopify-Triggered-At`` is refused (None: fresh, or absent)."""
    triggered = header(headers, TRIGGERED)
    if triggered is None:
        return None
    try:
        sent_at = parse_dt(triggered)
    except ValueError:
        return f"{TRIGGERED} {triggered[:40]!r} is not a date"
    return _time_refusal(sent_at, TRIGGERED, now, max_age)


def verify_webhook(headers: Mapping[str, str], body: bytes, secret: str, path_token: str | None = None, *,
                   now: datetime | None = None, max_age: timedelta = DEFAULT_MAX_AGE,
                   replay_guard: ReplayGuard | None = None) -> bool:
    """``X-Shopify-Hmac-Sha256`` = base64(HMAC-SHA256(app secret, raw body)), compared in constant time.

    A delivery whose ``X-Shopify-Triggered-At`` is older than ``max_age`` (or ahead of this host's clock by more than
    :data:`connectors.webhooks.FUTURE_MARGIN`) is refused, and with a ``replay_guard`` a repeated
    ``X-Shopify-Webhook-Id`` is refused too.
    """
    if not _signed(headers, body, secret) or _time_problem(headers, now, max_age) is not None:
        return False
    delivery = header(headers, "X-Shopify-Webhook-Id")
    if replay_guard is not None and (not delivery or not replay_guard.first_time(delivery)):
        return False
    return True


def webhook_stale_reason(headers: Mapping[str, str], body: bytes, secret: str, *, now: datetime | None = None,
                         max_age: timedelta = DEFAULT_MAX_AGE) -> str | None:
    """For a delivery :func:`verify_webhook` refused: why, when its signature is right and its time is what was
    refused (too old, ahead of this host's clock, not a date); None for a forgery (or a delivery not refused)."""
    return _time_problem(headers, now, max_age) if _signed(headers, body, secret) else None


__all__ = ["verify_webhook", "webhook_stale_reason"]
