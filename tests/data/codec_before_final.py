"""The queue decoder of the rfmsync before final deletes (main's sync/ledger/codec.py at 1ac9a67, its
``decode_records`` and helpers verbatim) with that version's ``OrderStatus`` (three values, no ``deleted``): what a
worker of the version before reads of an event a newer intake queued, while servers of both versions share a ledger.
Frozen here, not read from git, so the test holds without the repository's history."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from connectors.records import Consent, Contact, LineItem, Order


class OrderStatus(StrEnum):
    COMPLETED = "completed"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


def _opt_dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def _opt_dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def decode_records(payload: str) -> tuple[list[Order], list[Contact], bool]:
    """Inverse of :func:`encode_records`: (orders, contacts, pull requested). ValueError when it is not one."""
    try:
        doc = json.loads(payload)
        orders = [Order(order_id=o["order_id"], customer_id=o["customer_id"],
                        ordered_at=datetime.fromisoformat(o["ordered_at"]), amount=Decimal(o["amount"]),
                        currency=o.get("currency"), status=OrderStatus(o.get("status", "completed")),
                        discount=_opt_dec(o.get("discount")),
                        items=tuple(LineItem(sku=i.get("sku"), name=i.get("name"), category=i.get("category"),
                                             brand=i.get("brand"), quantity=Decimal(i.get("quantity") or 1),
                                             price=_opt_dec(i.get("price"))) for i in o.get("items", ())),
                        updated_at=_opt_dt(o.get("updated_at")))
                  for o in doc.get("orders", ())]
        contacts = [Contact(customer_id=c["customer_id"], email=c.get("email"), phone=c.get("phone"),
                            first_name=c.get("first_name"), last_name=c.get("last_name"),
                            marketing_consent=Consent(c.get("marketing_consent", "unknown")),
                            created_at=_opt_dt(c.get("created_at")), attributes=dict(c.get("attributes") or {}),
                            updated_at=_opt_dt(c.get("updated_at")))
                    for c in doc.get("contacts", ())]
        return orders, contacts, bool(doc.get("pull"))
    except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as exc:
        raise ValueError(f"queued event is not an rfmsync record batch: {type(exc).__name__}: {exc}") from None
