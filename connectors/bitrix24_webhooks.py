"""Bitrix24 outgoing events (webhooks): verify (``auth[application_token]``, a fresh ``ts``) and parse. Events carry
ids only: ``ONCRMDEALDELETE`` becomes a tombstone, ``ONCRMCONTACTDELETE`` an emptied contact (a pull cannot see
either any more), every other ``ONCRM*`` event asks for an incremental pull.
Registered by :mod:`connectors.bitrix24`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Mapping

from .contacts import gone_contact
from .http import clean, parse_dt
from .non_purchase import tombstone
from .records import UNDATED, Contact, Order
from .webhooks import DEFAULT_MAX_AGE, parse_php_form, stale_reason, tokens_equal


def _event(body: bytes) -> dict[str, Any]:
    text = body.lstrip()
    if text.startswith(b"{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("bitrix24 event: body is not valid JSON") from None
        return data if isinstance(data, dict) else {}
    return parse_php_form(body)


def _authentic(body: bytes, secret: str) -> dict[str, Any] | None:
    """The event when its ``auth[application_token]`` equals the stored token (constant time), else None."""
    try:
        event = _event(body)
    except ValueError:
        return None
    auth = event.get("auth") if isinstance(event.get("auth"), dict) else {}
    return event if tokens_equal(auth.get("application_token"), secret) else None


def _time_problem(event: Mapping[str, Any], now: datetime | None, max_age: timedelta) -> str | None:
    """Why the event's ``ts`` is refused (None: fresh, or absent)."""
    ts = event.get("ts")
    if ts is None:
        return None
    try:
        return stale_reason(parse_dt(ts), "ts", now, max_age)
    except ValueError:
        return f"ts {str(ts)[:40]!r} is not a date"


def verify_webhook(headers: Mapping[str, str], body: bytes, secret: str, path_token: str | None = None, *,
                   now: datetime | None = None, max_age: timedelta = DEFAULT_MAX_AGE) -> bool:
    """``auth[application_token]`` must equal the stored token (constant time); ``ts`` must be fresh."""
    event = _authentic(body, secret)
    return event is not None and _time_problem(event, now, max_age) is None


def webhook_stale_reason(headers: Mapping[str, str], body: bytes, secret: str, *, now: datetime | None = None,
                         max_age: timedelta = DEFAULT_MAX_AGE) -> str | None:
    """For an event :func:`verify_webhook` refused: why, when its token is right and its ``ts`` is what was refused
    (an event Bitrix24 held back for hours, or a clock wrong); None for a forgery."""
    event = _authentic(body, secret)
    return None if event is None else _time_problem(event, now, max_age)


def webhook_refs(body: bytes) -> list[tuple[str, str, str]]:
    """``(event, id, delivery key)``: events carry only the id, so re-pull (the lookback catches it)."""
    event = _event(body)
    name = clean(event.get("event"))
    fields = ((event.get("data") or {}).get("FIELDS") or {}) if isinstance(event.get("data"), dict) else {}
    rid = clean(fields.get("ID")) if isinstance(fields, dict) else None
    if not name or not rid:
        raise ValueError("bitrix24 event: missing event name or data[FIELDS][ID]")
    return [(name, rid, f"{event.get('event_handler_id', '')}:{event.get('ts', '')}:{rid}")]


def parse_webhook(headers: Mapping[str, str], body: bytes) -> tuple[list[Order], list[Contact]]:
    """Bitrix24 events hold ids only, never a full deal or contact.

    ``ONCRMDEALDELETE`` → one cancelled tombstone (amount 0, customer unknown) so the deleted deal leaves
    the history: a pull cannot see it any more; ``ONCRMCONTACTDELETE`` → the contact emptied
    (:func:`connectors.contacts.gone_contact`). Every other ``ONCRM*`` event → ``([], [])`` (re-pull,
    see :func:`webhook_refs`). ValueError for anything else.
    """
    refs = webhook_refs(body)
    name, rid, _ = refs[0]
    if not name.upper().startswith("ONCRM"):
        raise ValueError(f"bitrix24 event: unsupported event {name!r}")
    if name.upper() == "ONCRMCONTACTDELETE":  # gone from crm.contact.list: emptied now (no pull can say it)
        try:
            return [], [gone_contact(str(int(rid)))]
        except ValueError:
            raise ValueError(f"bitrix24 event: data[FIELDS][ID] is not a contact id: {rid[:40]!r}") from None
    if name.upper() == "ONCRMDEALDELETE":
        ts = _event(body).get("ts")
        try:
            at = parse_dt(ts) if ts not in (None, "") else UNDATED
        except ValueError:
            raise ValueError(f"bitrix24 event: ts is not a Unix time: {str(ts)[:40]!r}") from None
        try:
            oid = str(int(rid))
        except ValueError:
            raise ValueError(f"bitrix24 event: data[FIELDS][ID] is not a deal id: {rid[:40]!r}") from None
        return [tombstone(oid, at)], []
    return [], []


def webhook_pull_key(body: bytes) -> str:
    """Every event carries ids only: each delivery asks the server for an incremental pull, keyed by delivery."""
    return webhook_refs(body)[0][2]


__all__ = ["verify_webhook", "webhook_stale_reason", "webhook_refs", "parse_webhook", "webhook_pull_key"]
