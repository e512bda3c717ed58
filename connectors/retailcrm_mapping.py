"""RetailCRM (Simla) records: vendor JSON → :class:`~connectors.records.Order` / ``Contact``.

Pure functions shared by the pull (:mod:`connectors.retailcrm`) and its trigger webhooks:

* :func:`map_order`: orders whose ``status`` is in ``completed_statuses`` are purchases, every other status
  (open, cancelled, ``refunded_statuses``: the order wholly refunded, it nets 0; the setting is kept for
  compatibility and changes nothing) → cancelled; line items
  (``offer.article`` → sku, ``initialPrice`` → price) and the discount (manual + Σ item discounts × quantity);
* :func:`map_customer`: contact fields and e-mail consent (``emailMarketingUnsubscribedAt``,
  ``customerSubscriptions``, ``subscribed``);
* :func:`deleted_customer`: a deleted or merged-away customer as an emptied contact;
* :func:`in_scope`: a record of another store than ``site`` is never stored.

API dates have no offset: they are read in the account's ``timezone``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Mapping

from .contacts import gone_contact
from .email_phone import lower_like_sql
from .guests import guest_key
from .diagnose import order_dt
from .http import FieldError, clean, get_field, get_list, get_object, parse_dt, to_decimal
from .non_purchase import undecided, unmapped
from .records import Consent, Contact, LineItem, Order, OrderStatus
from .shapes import vendor_id

if TYPE_CHECKING:
    from .retailcrm import RetailCrmConfig

log = logging.getLogger(__name__)


def map_order(raw: Mapping[str, Any], cfg: RetailCrmConfig, *, dropped: list[FieldError],
              deleted: bool = False) -> Order | None:
    """A RetailCRM order → Order; a non-purchase that cannot be mapped (no customer, no total) → a tombstone that
    keeps the customer when known, so a purchase that leaves "complete" leaves the history (None for a deletion's
    snapshot: the caller's tombstone keeps its customer and is dated by the history entry). A guest's e-mail or
    phone the rules refuse while the other keys the order is appended to ``dropped`` (:mod:`connectors.guests`)."""
    oid = get_field(raw, "id", lambda v: str(int(v)))
    status = clean(raw.get("status"))
    if deleted:
        kind = OrderStatus.CANCELLED
    elif status is None:  # (staged cancelled, a stored purchase would leave the history unsaid)
        raise undecided("status", "order")
    elif status in cfg.completed_statuses:
        kind = OrderStatus.COMPLETED
    else:  # open, cancelled, refunded_statuses (the sale wholly refunded: no purchase, nothing taken off)
        kind = OrderStatus.CANCELLED
    customer_id = None  # (kept by the tombstone when known)
    try:
        customer_id = customer_key(raw, cfg.phone_region, dropped)  # (NoCustomer: a walk-in sale, counted)
        items = tuple(_item(it) for it in get_list(raw, "items"))
        discount = get_field(raw, "discountManualAmount", lambda v: to_decimal(v or 0))
        discount += sum((_item_discount(it) for it in get_list(raw, "items")), Decimal(0))
        return Order(
            order_id=oid, customer_id=customer_id,
            ordered_at=get_field(raw, "createdAt", lambda v: order_dt(v, cfg.timezone)),
            amount=get_field(raw, "totalSumm", to_decimal),
            currency=clean(raw.get("currency")) or cfg.currency, status=kind,
            discount=discount or None, items=items)
    except FieldError:
        if kind is not OrderStatus.CANCELLED:
            raise
        # no purchase (any more) and not mappable (its customer gone): it still leaves the history, dated when it
        # was made; a deletion's snapshot is the caller's (it dates it by the history entry)
        if deleted:
            return None
        return unmapped(oid, raw, customer_id, ("createdAt", "statusUpdatedAt"), lambda v: order_dt(v, cfg.timezone))


def customer_key(raw: Mapping[str, Any], region: str | None, dropped: list[FieldError]) -> str:
    """Whose order: ``customer.id`` (a private customer, as ``/api/v5/customers`` lists them). A B2B order's
    ``customer`` is a corporate customer (``type = customer_corporate``: ``/api/v5/customers-corporate``, ids of
    their own, never pulled), whose id would be taken for the private customer of the same number: it is the order
    of its contact person (``contact.id``, a private customer), else ``corporate-<id>``. A guest order (no
    customer) is keyed by its ``email``, else its ``phone``, by the contacts' rules
    (:func:`connectors.guests.guest_key`, ``region`` the contacts' ``phone_region``: one guest typing two cases,
    fullwidth letters or two ways of one number is one customer, and joins the customer with that e-mail or phone;
    a value the rules refuse is dropped into ``dropped`` when the other keys it, a FieldError when nothing does:
    never a key of junk); NoCustomer when it has neither (a walk-in sale)."""
    customer, contact = get_object(raw, "customer"), get_object(raw, "contact")
    customer_id = get_field(customer, "id", vendor_id, "customer.id")  # (an object, a list: a FieldError, no key)
    contact_id = get_field(contact, "id", vendor_id, "contact.id")
    if clean(customer.get("type")) == "customer_corporate":
        key = contact_id or (f"corporate-{customer_id}" if customer_id else None)
    else:
        key = customer_id or contact_id
    return key or guest_key(raw.get("email"), raw.get("phone"), region, dropped)


def _item(raw: Any) -> LineItem:
    if not isinstance(raw, Mapping):
        raise FieldError("items", "each item must be an object", raw)
    offer = get_object(raw, "offer", "items.offer")
    return LineItem(sku=clean(offer.get("article")) or clean(offer.get("externalId")),
                    name=clean(raw.get("productName")) or clean(offer.get("name")),
                    quantity=get_field(raw, "quantity", lambda v: to_decimal(v if v is not None else 1), "items.quantity"),
                    price=get_field(raw, "initialPrice", lambda v: None if v is None else to_decimal(v),
                                    "items.initialPrice"))


def _item_discount(raw: Mapping[str, Any]) -> Decimal:
    per_unit = get_field(raw, "discountTotal", lambda v: to_decimal(v or 0), "items.discountTotal")
    return per_unit * get_field(raw, "quantity", lambda v: to_decimal(v if v is not None else 1), "items.quantity")


def map_customer(raw: Mapping[str, Any], cfg: RetailCrmConfig, dropped: list[FieldError] | None = None,
                 seen: CodeSeen | None = None) -> Contact:
    """A RetailCRM customer → Contact; a subscription value read as no (not true or false) goes to ``dropped``
    (an issue naming the customer), ``seen`` counts ``marketing_subscription``'s code (:class:`CodeSeen`)."""
    cid = get_field(raw, "id", lambda v: str(int(v)))
    phones = get_list(raw, "phones")
    created = raw.get("createdAt")
    attrs = {
        "city": clean(get_object(raw, "address").get("city")),
        "source": clean(get_object(raw, "source").get("source")),
        "tags": ",".join(filter(None, (clean(t.get("name")) if isinstance(t, Mapping) else clean(t)
                                       for t in get_list(raw, "tags")))) or None,
        "external_id": clean(raw.get("externalId")),
    }
    return Contact(
        customer_id=cid, email=lower_like_sql(clean(raw.get("email")) or "") or None,
        phone=clean(phones[0].get("number")) if phones and isinstance(phones[0], dict) else None,
        first_name=clean(raw.get("firstName")), last_name=clean(raw.get("lastName")),
        marketing_consent=_consent(raw, cfg.marketing_subscription, dropped, seen),
        created_at=get_field(raw, "createdAt", lambda v: parse_dt(v, cfg.timezone)) if created else None,
        attributes={k: v for k, v in attrs.items() if v})


def in_scope(raw: Mapping[str, Any], cfg: RetailCrmConfig) -> bool:
    """False for a record of another store than ``site`` (the API may ignore ``filter[sites][]``)."""
    if cfg.site is None or raw.get("site") == cfg.site:
        return True
    log.debug("retailcrm: %s of site %r is outside site %r: not stored", raw.get("id"), raw.get("site"), cfg.site)
    return False


def deleted_customer(raw: Mapping[str, Any], combined_to: Mapping[str, Any] | None = None) -> Contact:
    """A deleted (or merged-away) customer as an emptied contact that can never be mailed
    (:func:`connectors.contacts.gone_contact`: attributes ``deleted`` and ``combined_to``)."""
    cid = get_field(raw, "id", lambda v: str(int(v)), "customer.id")
    survivor = clean((combined_to or {}).get("id")) if isinstance(combined_to, Mapping) else None
    return gone_contact(cid, survivor)


class CodeSeen:
    """One pull's reading of ``marketing_subscription`` (``code``): the customers read, those listing that code,
    and the other e-mail codes seen. :meth:`warn`: a pull none of whose customers listed the code (a typo, a code
    renamed in the CRM) says so once: each was read by the rule without the setting."""

    def __init__(self, code: str | None) -> None:
        self.code, self.customers, self.carried, self.others = code, 0, 0, set[str]()

    def warn(self) -> None:
        if self.code is not None and self.customers and not self.carried:
            seen = ", ".join(sorted(self.others)[:5]) or "none"
            log.warning("retailcrm: marketing_subscription = %r: none of the %d customers pulled lists an e-mail "
                        "subscription of that code (e-mail codes seen: %s); their consent was read from all their "
                        "e-mail subscriptions (any one false: no), else `subscribed`", self.code, self.customers, seen)


def _consent(raw: Mapping[str, Any], code: str | None = None, dropped: list[FieldError] | None = None,
             seen: CodeSeen | None = None) -> Consent:
    """``emailMarketingUnsubscribedAt`` (no), else the e-mail ``customerSubscriptions``, else ``subscribed``.

    The e-mail subscriptions are read in any order: with ``code`` (``marketing_subscription``) the one of that
    code decides; without it, or for a customer who does not list it, any one saying ``subscribed: false`` is a
    no, and a yes needs every one to say true. A ``subscribed`` that is not true or false reads as false (never a
    yes by accident), with an issue in ``dropped`` naming the field. ``seen`` counts the customers and the code.
    """
    if seen is not None:
        seen.customers += 1
    if raw.get("emailMarketingUnsubscribedAt"):
        return Consent.NO
    said, coded = [], []
    for sub in get_list(raw, "customerSubscriptions"):
        if not isinstance(sub, Mapping):
            raise FieldError("customerSubscriptions", "each subscription must be an object", sub)
        kind = get_object(sub, "subscription", "customerSubscriptions.subscription")
        if kind.get("channel") == "email" and "subscribed" in sub:
            yes = sub["subscribed"] is True
            if not isinstance(sub["subscribed"], bool) and dropped is not None:
                dropped.append(FieldError("customerSubscriptions.subscribed", "not true or false: read as no "
                                          "consent", sub["subscribed"]))
            said.append(yes)
            if code is not None and kind.get("code") == code:
                coded.append(yes)
            elif seen is not None and isinstance(kind.get("code"), str):
                seen.others.add(kind["code"])
    if coded and seen is not None:
        seen.carried += 1
    if coded or said:
        return Consent.YES if all(coded or said) else Consent.NO
    if isinstance(raw.get("subscribed"), bool):
        return Consent.YES if raw["subscribed"] else Consent.NO
    return Consent.UNKNOWN


def created_at(raw: Any, tz: str) -> datetime | None:
    """A row's ``createdAt`` (None when it has none that reads)."""
    try:
        return parse_dt(raw.get("createdAt"), tz) if isinstance(raw, Mapping) and raw.get("createdAt") else None
    except (ValueError, TypeError, OverflowError):
        return None


def snapshot(entry: Mapping[str, Any], entity: str) -> Mapping[str, Any]:
    """The record snapshot a history entry holds under ``entity`` (``{}`` when it holds none)."""
    snap = entry.get(entity) or {}
    return snap if isinstance(snap, Mapping) else {}


__all__ = ["CodeSeen", "map_order", "customer_key", "map_customer", "deleted_customer", "in_scope", "created_at",
           "snapshot"]
