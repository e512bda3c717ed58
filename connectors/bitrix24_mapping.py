"""Bitrix24 records: vendor JSON → :class:`~connectors.records.Order` / ``Contact`` / ``LineItem``, pure functions
(the pull is :mod:`connectors.bitrix24`; events carry ids only: :mod:`connectors.bitrix24_webhooks`).

* :func:`map_deal`: a won deal (``STAGE_SEMANTIC_ID`` in ``won_semantics``, else told by its ``STAGE_ID``:
  :func:`stage_semantic`; or ``STAGE_ID`` in ``won_stage_ids``) in scope (:func:`in_scope`) is a purchase, any other
  deal is cancelled (a tombstone when it cannot be mapped); the customer is the contact, else the company
  (``company-<id>``); a won deal with neither is a sale of nobody (:class:`~connectors.non_purchase.NoCustomer`:
  counted, not a bad row);
* :func:`map_contact`: the first ``EMAIL`` and ``PHONE`` of the multifields;
* :func:`map_product_row`, :func:`with_product_rows`: ``crm.deal.productrows.get`` rows → line items and discount.

A field of another shape than the vendor documents (an object where an id is, a list where an object is) is a
FieldError naming it, a bad row; the source's pull runs the mappers under :mod:`connectors.shapes`'s net too.
"""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from typing import Any, Mapping

from .bitrix24_config import Bitrix24Config
from .email_phone import lower_like_sql
from .http import FieldError, clean, get_field, get_list, parse_dt, to_decimal
from .non_purchase import NoCustomer, undecided, unmapped
from .records import Consent, Contact, LineItem, Order, OrderStatus
from .shapes import vendor_id
from .zones import day_at_noon

#: the key prefix of a company's deals without a contact (``company-55``): ids of their own, never a contact's
COMPANY = "company-"


def in_scope(raw: Mapping[str, Any], cfg: Bitrix24Config) -> bool:
    """False for a deal outside ``category_ids`` (when set); a FieldError naming ``CATEGORY_ID`` when it is no
    pipeline id (a list, an object, a word): taken for another pipeline's, the deal was retired from the history
    without a word. (It matters for a won deal only: :func:`map_deal` makes it a bad row then, and retires any other
    deal as one whose ``CONTACT_ID`` is unreadable.)"""
    return not cfg.category_ids or get_field(raw, "CATEGORY_ID", lambda v: int(vendor_id(v) or 0)) in cfg.category_ids


def stage_semantic(stage: str | None) -> str | None:
    """The ``STAGE_SEMANTIC_ID`` a ``STAGE_ID`` carries by itself: a pipeline's one success stage is the system stage
    ``WON`` (``C<n>:WON`` in pipeline n), ``S``; its system failure stage ``LOSE`` (``C<n>:LOSE``), ``F``; None for
    any other stage (in progress, or a failure stage the portal added: only the portal's stage list tells)."""
    final = re.fullmatch(r"(?:C\d+:)?(WON|LOSE)", stage or "")
    return None if final is None else {"WON": "S", "LOSE": "F"}[final.group(1)]


def _customer(raw: Mapping[str, Any]) -> str | None:
    """Whose deal: its contact (``CONTACT_ID``), else its company's customer ``company-<COMPANY_ID>`` (a B2B sale
    with no contact person, as RetailCRM's ``corporate-<id>``: a customer of its own, segmented, mailed by no
    destination); None with neither (``0`` is none)."""
    contact = get_field(raw, "CONTACT_ID", vendor_id)
    if contact not in (None, "0"):
        return contact
    company = get_field(raw, "COMPANY_ID", vendor_id)
    return None if company in (None, "0") else f"{COMPANY}{company}"


def map_deal(raw: Mapping[str, Any], cfg: Bitrix24Config) -> Order | None:
    oid = get_field(raw, "ID", lambda v: str(int(v)))
    semantic, stage = clean(raw.get("STAGE_SEMANTIC_ID")), clean(raw.get("STAGE_ID"))
    # no semantic: its stage's own (WON, LOSE); another stage is not a success, so no purchase unless the
    # semantics asked for count in-progress or failed deals (then it cannot be told)
    semantic = semantic or stage_semantic(stage)
    if semantic is None and (stage is None or (set(cfg.won_semantics) - {"S"} and stage not in cfg.won_stage_ids)):
        raise undecided("STAGE_SEMANTIC_ID", "deal", " (and STAGE_ID)" if stage is None else "")
    counts = semantic in cfg.won_semantics or stage in cfg.won_stage_ids
    customer = won = None  # (the customer kept by the tombstone when known)
    try:
        customer = _customer(raw)  # (an object or a list: a FieldError, never a key)
        won = counts and in_scope(raw, cfg)  # (a pipeline unreadable: a FieldError, a bad row only for a purchase)
        if customer is None:  # a sale of nobody, as a walk-in: counted, not segmented, no bad row (won: raised)
            raise NoCustomer("CONTACT_ID", "deal has no contact nor company")
        return Order(order_id=oid, customer_id=customer,
                     ordered_at=get_field(raw, "CLOSEDATE", lambda v: day_at_noon(v, cfg.timezone))
                     if raw.get("CLOSEDATE") else get_field(raw, "DATE_CREATE", parse_dt),
                     amount=get_field(raw, "OPPORTUNITY", to_decimal),
                     currency=clean(raw.get("CURRENCY_ID")) or cfg.currency,
                     status=OrderStatus.COMPLETED if won else OrderStatus.CANCELLED)
    except FieldError:
        if won or (won is None and counts):  # a purchase, or a won deal of a pipeline unreadable: a bad row
            raise
        # no purchase (any more) and not mappable (its contact removed, its pipeline unreadable): it still leaves
        # the history
        return unmapped(oid, raw, customer, ("DATE_MODIFY",))


def _first(raw: Mapping[str, Any], key: str) -> str | None:
    for item in get_list(raw, key):
        if isinstance(item, dict) and clean(item.get("VALUE")):
            return clean(item["VALUE"])
    return None


def map_contact(raw: Mapping[str, Any]) -> Contact:
    cid = get_field(raw, "ID", lambda v: str(int(v)))
    attrs = {"city": clean(raw.get("ADDRESS_CITY")), "source": clean(raw.get("SOURCE_ID")),
             "type": clean(raw.get("TYPE_ID"))}
    return Contact(customer_id=cid, email=lower_like_sql(_first(raw, "EMAIL") or "") or None, phone=_first(raw, "PHONE"),
                   first_name=clean(raw.get("NAME")), last_name=clean(raw.get("LAST_NAME")),
                   marketing_consent=Consent.UNKNOWN,
                   created_at=get_field(raw, "DATE_CREATE", parse_dt) if raw.get("DATE_CREATE") else None,
                   attributes={k: v for k, v in attrs.items() if v})


def map_product_row(raw: Mapping[str, Any]) -> LineItem:
    """One ``crm.deal.productrows.get`` row → LineItem (unit price = ``PRICE``, after discount and tax)."""
    if not isinstance(raw, Mapping):
        raise FieldError("productrows", "a product row is not an object", raw)
    product = clean(raw.get("PRODUCT_ID"))
    return LineItem(sku=product if product not in (None, "0") else None,
                    name=clean(raw.get("PRODUCT_NAME")) or clean(raw.get("ORIGINAL_PRODUCT_NAME")),
                    quantity=get_field(raw, "QUANTITY", to_decimal, "productrows.QUANTITY"),
                    price=get_field(raw, "PRICE", lambda v: None if v is None else to_decimal(v), "productrows.PRICE"))


def with_product_rows(order: Order, rows: list[Any]) -> Order:
    """The order with its line items and discount (Σ ``DISCOUNT_SUM`` × ``QUANTITY``, when any)."""
    items = tuple(map_product_row(r) for r in rows)
    discount = sum((get_field(r, "DISCOUNT_SUM", lambda v: to_decimal(v or 0), "productrows.DISCOUNT_SUM")
                    * it.quantity for r, it in zip(rows, items)), Decimal(0))
    return dataclasses.replace(order, items=items, discount=discount if discount else order.discount)


__all__ = ["in_scope", "stage_semantic", "map_deal", "map_contact", "map_product_row", "with_product_rows"]
