"""Canonical records every source produces.

Plain frozen dataclasses: datetimes are timezone-aware, money is ``Decimal``.
Bulk paths (file exports) never build these per row; they write the same columns
straight into DuckDB (see :mod:`connectors.tables`). API connectors and webhooks
build records and stage them with :func:`connectors.tables.stage_records`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Mapping


class OrderStatus(StrEnum):
    COMPLETED = "completed"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    #: an order the vendor deleted for good (it never comes back, its id is never reused: a Shopify order): only a
    #: tombstone is staged so (:func:`connectors.non_purchase.tombstone`); the order store keeps it as ``cancelled``
    #: and leaves out any later version of the order (:mod:`sync.store.deletes`)
    DELETED = "deleted"


#: the date of a tombstone whose vendor gave no time (an unmappable cancelled order without a date, a delete
#: without one): a mark, never stored. Staging dates it by the stored order it cancels, else by the store's oldest
#: order (:func:`connectors.tables.stage_records`): never the newest order (it would hide the stale-data warning),
#: and the same on every read (the store's caches are keyed by the orders' dates). Not "now".
UNDATED = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Consent(StrEnum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class LineItem:
    sku: str | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    quantity: Decimal = Decimal(1)
    price: Decimal | None = None


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    ordered_at: datetime
    amount: Decimal
    currency: str | None = None
    status: OrderStatus = OrderStatus.COMPLETED
    discount: Decimal | None = None
    items: tuple[LineItem, ...] = ()
    #: when the vendor last modified this version (a webhook payload's own ``updated_at``): orders a webhook's
    #: versions of the order delivered out of order (:func:`sync.store.merge.merge_staged`); not stored
    updated_at: datetime | None = None
    #: a tombstone that only retires a stored order (:func:`connectors.non_purchase.tombstone`): the store leaves it
    #: out when it holds no order of its id (:func:`sync.store.merge.merge_staged`); not stored
    if_stored: bool = False

    def __post_init__(self) -> None:
        if self.ordered_at.tzinfo is None:
            raise ValueError(f"order {self.order_id}: ordered_at must be timezone-aware")
        if self.updated_at is not None and self.updated_at.tzinfo is None:
            raise ValueError(f"order {self.order_id}: updated_at must be timezone-aware")
        if not isinstance(self.amount, Decimal):
            raise TypeError(f"order {self.order_id}: amount must be Decimal, got {type(self.amount).__name__}")


@dataclass(frozen=True)
class Contact:
    customer_id: str
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    marketing_consent: Consent = Consent.UNKNOWN
    created_at: datetime | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    #: when the vendor last modified this version, as :attr:`Order.updated_at`
    updated_at: datetime | None = None
    #: deleted (or merged away) in the CRM: set by the CRM parsers only (:func:`connectors.contacts.gone_contact`),
    #: never by a generic delivery (its ``attributes`` are the sender's): the webhook merge keeps nothing stored
    gone: bool = False

    def __post_init__(self) -> None:
        if self.updated_at is not None and self.updated_at.tzinfo is None:
            raise ValueError(f"contact {self.customer_id}: updated_at must be timezone-aware")


@dataclass(frozen=True)
class BadRow:
    """A record that could not be used, with where it came from and why."""

    source: str  # file path, or "<vendor>:<object>"
    row: int | str | None  # 1-based data row number in a file, or the record id
    reason: str
    field: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}" + (f", row {self.row}" if self.row is not None else "")
        what = f"{self.field}: " if self.field else ""
        val = f" ({self.value!r})" if self.value is not None else ""
        return f"{where}: {what}{self.reason}{val}"
