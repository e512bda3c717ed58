"""RetailCRM trigger webhooks (the trigger's "HTTP request" action): a body ``{"order": {…}}`` or
``{"customer": {…}}`` mapped as the pull maps its records (:mod:`connectors.retailcrm_mapping`); registered with
the webhook parsers by :mod:`connectors.retailcrm`."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Mapping

from .contacts import clean_contact
from .errors import RecordError
from .http import FieldError
from .non_purchase import NoCustomer
from .guests import guest_contact
from .records import Contact, Order
from .retailcrm_mapping import in_scope, map_customer, map_order
from .webhooks import json_object, tokens_equal

if TYPE_CHECKING:
    from .retailcrm import RetailCrmConfig

log = logging.getLogger("connectors.retailcrm")  # as before the move: the webhook's warnings keep their logger
NAME = "retailcrm"


def verify_webhook(headers: Mapping[str, str], body: bytes, secret: str, path_token: str | None) -> bool:
    """RetailCRM triggers sign nothing: the secret is a token in the trigger URL's path."""
    return tokens_equal(path_token, secret)


def parse_webhook(headers: Mapping[str, str], body: bytes,
                  config: RetailCrmConfig | None = None) -> tuple[list[Order], list[Contact]]:
    """A trigger body ``{"order": {…}}`` / ``{"customer": {…}}`` (JSON, or form fields holding JSON).

    Raises RecordError (bad record, with its id) or ValueError (not a RetailCRM payload).
    """
    if config is None:
        from .retailcrm import RetailCrmConfig  # the module that imports this one
        config = RetailCrmConfig()
    cfg = config
    payload = _decode(body)
    orders, contacts = [], []
    for key in ("order", "customer"):
        raw = payload.get(key)
        if raw is None:
            continue
        if isinstance(raw, str):  # a form field holding JSON
            raw = json_object(raw, f"retailcrm webhook: field {key!r}")
        if not isinstance(raw, dict):
            raise ValueError(f"retailcrm webhook: field {key!r} is not a JSON object")
        if not in_scope(raw, cfg):
            continue
        try:
            if key == "order":
                order = map_order(raw, cfg, dropped=(dropped := []))
                if order is not None:
                    orders.append(order)
                    contacts += [c for c in [guest_contact(order, raw, cfg.phone_region)] if c]  # (its phone)
                for exc in dropped:  # (a guest's e-mail or phone refused, the other keying the order)
                    log.warning("retailcrm webhook: %s", exc.bad_row(f"{NAME}:webhook", raw.get("id")))
            else:
                contact, issues = clean_contact(map_customer(raw, cfg, dropped := []), cfg.phone_region,
                                                f"{NAME}:webhook")
                contacts.append(contact)
                for issue in [*(exc.bad_row(f"{NAME}:webhook", raw.get("id")) for exc in dropped), *issues]:
                    log.warning("retailcrm webhook: %s", issue)
        except NoCustomer:  # a walk-in sale: accepted, nobody to segment (the pull counts it)
            log.info("retailcrm webhook: order %s has no customer, email or phone: not stored", raw.get("id"))
        except FieldError as exc:
            raise RecordError(exc.bad_row(f"{NAME}:webhook", raw.get("id"))) from None
    if not orders and not contacts and "order" not in payload and "customer" not in payload:
        raise ValueError("retailcrm webhook: body has neither 'order' nor 'customer'")
    return orders, contacts


def _decode(body: bytes) -> dict[str, Any]:
    from urllib.parse import parse_qsl

    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("retailcrm webhook: body is not valid JSON") from None
        return data if isinstance(data, dict) else {}
    return dict(parse_qsl(text, keep_blank_values=True))
