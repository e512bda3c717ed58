"""The queue codec: the canonical JSON form of orders and contacts in a webhook event's payload.

The intake encodes what a delivery carried (:func:`encode_records`, also compared for dedupe); a worker decodes
it (:func:`decode_records`) after claiming the event. Decimals and datetimes travel as strings, exactly.

Servers of two versions may share a ledger (an upgrade under way), so a payload stays readable by the decoder
before it: a field is added only where it says something (``updated_at``, ``final``, ``if_stored``: a tombstone
that only retires a stored order, merged by an older worker as the plain cancel it was) and a value an older decoder
refuses is never written. An order deleted for good (:attr:`OrderStatus.DELETED`: a Shopify ``orders/delete``)
travels as the ``cancelled`` tombstone it was before, with ``"final": true``: an older worker merges it as that
plain cancel (it ignores the flag), this one as a final delete (:mod:`sync.store.deletes`).

The encoding is what the queue compares a delivery with (the payload of its record's latest event, keyed
``order:<id>``: :meth:`sync.ledger.queue.EventQueue.enqueue_events`; before, its hash was part of the dedupe key), so
a field added makes the records it is written on differ from their events queued before. ``if_stored`` did so
once, for every tombstone that is not final (a lost or deleted deal, an unmappable cancel): a delivery of one made
before the upgrade and retried by the vendor after it is queued a second time. Harmless: the two copies are the
same tombstone, merged by version (the second is at most a no-op or left out as stale).
A payload queued before the upgrade has no flag: its tombstone is merged as it was then, a cancelled row even for
an order never stored (docs/sources/common.md).
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable

from connectors.records import Consent, Contact, LineItem, Order, OrderStatus


def _dt(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dec(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def _version(doc: dict[str, Any], updated_at: datetime | None) -> dict[str, Any]:
    """``doc`` with the vendor's modification time, when the record has one (a record without one encodes as it
    did before the field existed: its payload, which the queue's dedupe compares, is unchanged)."""
    if updated_at is not None:
        doc["updated_at"] = updated_at.isoformat()
    return doc


def order_json(o: Order) -> dict[str, Any]:
    final = o.status is OrderStatus.DELETED  # a cancel with a flag: what an older decoder reads (see the module)
    doc = _version({"order_id": o.order_id, "customer_id": o.customer_id, "ordered_at": _dt(o.ordered_at),
                    "amount": _dec(o.amount), "currency": o.currency,
                    "status": str(OrderStatus.CANCELLED if final else o.status), "discount": _dec(o.discount),
                    "items": [{"sku": i.sku, "name": i.name, "category": i.category, "brand": i.brand,
                               "quantity": _dec(i.quantity), "price": _dec(i.price)} for i in o.items]}, o.updated_at)
    if final:
        doc["final"] = True
    if o.if_stored:  # a tombstone that only retires a stored order (an older decoder ignores it: stored as before)
        doc["if_stored"] = True
    return doc


def contact_json(c: Contact) -> dict[str, Any]:
    doc = _version({"customer_id": c.customer_id, "email": c.email, "phone": c.phone, "first_name": c.first_name,
                    "last_name": c.last_name, "marketing_consent": str(c.marketing_consent),
                    "created_at": _dt(c.created_at), "attributes": dict(c.attributes)}, c.updated_at)
    if c.gone:  # a CRM's deleted contact (only when set: the queue's earlier events read the same)
        doc["gone"] = True
    return doc


def encode_records(orders: Iterable[Order] = (), contacts: Iterable[Contact] = (), *, pull: bool = False) -> str:
    """The canonical, deterministic JSON of records for the queue (also compared for dedupe)."""
    doc: dict[str, Any] = {"orders": [order_json(o) for o in orders], "contacts": [contact_json(c) for c in contacts]}
    if pull:
        doc["pull"] = True
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _opt_dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def _opt_dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _status(o: dict[str, Any]) -> OrderStatus:
    """An order's status; ``"final": true`` on a ``cancelled`` one: deleted for good (:func:`order_json`)."""
    status = OrderStatus(o.get("status", "completed"))
    final = o.get("final", False)
    if final is False:
        return status
    if final is not True or status is not OrderStatus.CANCELLED:
        raise ValueError(f"order {o.get('order_id')!r}: final must be true and only on a cancelled order, got "
                         f"final={final!r} status={status}")
    return OrderStatus.DELETED


def _if_stored(o: dict[str, Any]) -> bool:
    """``"if_stored": true`` on a cancelled order of amount 0: a tombstone that only retires a stored order."""
    flag = o.get("if_stored", False)
    if flag is not False and (flag is not True or o.get("status") != str(OrderStatus.CANCELLED)
                              or o.get("final", False) is not False or Decimal(o.get("amount", "1")) != 0):
        raise ValueError(f"order {o.get('order_id')!r}: if_stored must be true and only on a cancelled order of "
                         f"amount 0, got if_stored={flag!r}")
    return flag


def decode_records(payload: str) -> tuple[list[Order], list[Contact], bool]:
    """Inverse of :func:`encode_records`: (orders, contacts, pull requested). ValueError when it is not one."""
    try:
        doc = json.loads(payload)
        orders = [Order(order_id=o["order_id"], customer_id=o["customer_id"],
                        ordered_at=datetime.fromisoformat(o["ordered_at"]), amount=Decimal(o["amount"]),
                        currency=o.get("currency"), status=_status(o),
                        discount=_opt_dec(o.get("discount")),
                        items=tuple(LineItem(sku=i.get("sku"), name=i.get("name"), category=i.get("category"),
                                             brand=i.get("brand"), quantity=Decimal(i.get("quantity") or 1),
                                             price=_opt_dec(i.get("price"))) for i in o.get("items", ())),
                        updated_at=_opt_dt(o.get("updated_at")), if_stored=_if_stored(o))
                  for o in doc.get("orders", ())]
        contacts = [Contact(customer_id=c["customer_id"], email=c.get("email"), phone=c.get("phone"),
                            first_name=c.get("first_name"), last_name=c.get("last_name"),
                            marketing_consent=Consent(c.get("marketing_consent", "unknown")),
                            created_at=_opt_dt(c.get("created_at")), attributes=dict(c.get("attributes") or {}),
                            updated_at=_opt_dt(c.get("updated_at")), gone=c.get("gone") is True)
                    for c in doc.get("contacts", ())]
        return orders, contacts, bool(doc.get("pull"))
    except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as exc:
        raise ValueError(f"queued event is not an rfmsync record batch: {type(exc).__name__}: {exc}") from None
