"""What the CRM mappers say of a record that is not (or may not be) a purchase, written once:

* :func:`tombstone`: a deleted (lost, out of scope) order, a cancelled row of amount 0 that retires the stored order
  of its id, and only that: the store keeps nothing of a tombstone of an order it never stored;
* :func:`undecided`: the bad row of a record without the field that tells whether it is a purchase (taken for no
  purchase, it would take a stored purchase out of the history without a word);
* :class:`NoCustomer`: a purchase with no customer, e-mail or phone (a walk-in sale at a till, a won deal with no
  contact): nobody to segment, so neither stored nor a bad row; the pull counts it (``PullResult.anonymous_orders``), a webhook accepts it;
* :func:`unmapped`: the tombstone of a non-purchase that cannot be mapped (its contact unlinked, its amount cleared):
  it still leaves the history (:func:`tombstone`), keeping its customer when known, dated by the
  record, else by the stored order it cancels (:data:`~connectors.records.UNDATED`), never now.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Mapping

from .http import FieldError, get_field, parse_dt
from .records import UNDATED, Order, OrderStatus


def tombstone(order_id: str, at: datetime, customer_id: str | None = None, *, final: bool = False) -> Order:
    """A deleted order as a ``cancelled`` row with amount 0.

    The order store replaces orders by ``order_id``, so staging this makes a deleted order leave the
    RFM history. ``customer_id`` is ``""`` when the vendor no longer says whose order it was. It only retires a
    stored order (:attr:`~connectors.records.Order.if_stored`): the merge leaves it out when the store holds no
    order of its id, and a version of the order staged before it in the same pull or batch goes with it
    (:data:`connectors.tables.STAGED_TOMBSTONES`); a lost deal never stored adds no row. ``final``: the
    vendor's delete is final (the order never comes back, its id is never reused: Shopify's): the tombstone is
    :attr:`~connectors.records.OrderStatus.DELETED`, stored as ``cancelled`` whether the order was stored or not
    (its note leaves out a version delivered after the delete), and the store leaves out any later version of the
    order (a delivery retried after the delete, a page read before it: :mod:`sync.store.deletes`).
    A delete that can be undone or is not known to be final (amoCRM's trash, Bitrix24, a lead out of scope) is not.
    """
    return Order(order_id=order_id, customer_id=customer_id or "", ordered_at=at, amount=Decimal(0),
                 status=OrderStatus.DELETED if final else OrderStatus.CANCELLED, if_stored=not final)


def undecided(field: str, what: str, also: str = "") -> FieldError:
    """``<field>: missing<also>: whether the <what> is a purchase cannot be told`` (``what``: lead, deal, order)."""
    return FieldError(field, f"missing{also}: whether the {what} is a purchase cannot be told")


class NoCustomer(FieldError):
    """A purchase that names no customer, e-mail or phone (a POS walk-in sale, a guest who left neither, a won amoCRM
    lead or Bitrix24 deal with no contact): "guests with neither key are counted in the shop totals but not
    segmented" (docs/sources/common.md). Not a bad row
    (:func:`connectors.incremental.map_page` counts it apart): a shop with a till would trip ``max_bad_rows_pct``.
    A FieldError still, for a caller that knows no better (a non-purchase of no customer is :func:`unmapped`)."""

    def __init__(self, field: str = "customer.id", reason: str = "order has no customer, email or phone") -> None:
        super().__init__(field, reason)


def unmapped(order_id: str, raw: Mapping[str, Any], customer_id: str | None, dated_by: tuple[str, ...],
             parse: Callable[[Any], datetime] = parse_dt) -> Order:
    """The tombstone of a non-purchase that cannot be mapped, keeping ``customer_id`` when known, dated by the first
    of ``dated_by`` the record has (a FieldError naming it when it is not a date), else :data:`UNDATED` (staging
    dates it by the order it cancels: :func:`connectors.tables.stage_records`): no date is needed to be no
    purchase."""
    for name in dated_by:
        if raw.get(name) not in (None, ""):
            return tombstone(order_id, get_field(raw, name, parse), customer_id)
    return tombstone(order_id, UNDATED, customer_id)


__all__ = ["tombstone", "undecided", "NoCustomer", "unmapped"]
