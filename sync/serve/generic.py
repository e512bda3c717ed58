"""The generic webhook format (``POST /webhooks/generic``, alias ``/webhooks/file``): signature and payload.

Generic deliveries are signed with ``RFMSYNC_WEBHOOK_SECRET``: ``X-Rfmsync-Signature: sha256=<hex HMAC-SHA256 of
the raw body>``; with ``X-Rfmsync-Timestamp: <unix seconds>`` the signed message is ``<timestamp>.<body>`` and the
timestamp must be within ``[serve] replay_window_seconds`` of the server's clock. The body is one order object or
a list of them, each optionally with its ``contact`` (:func:`parse_generic`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime, timezone as dt_timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal, Mapping
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from connectors.contacts import clean_contact
from connectors.digits import digits
from connectors.records import Consent, Contact, LineItem, Order, OrderStatus
from connectors.webhooks import FUTURE_MARGIN, too_far_ahead

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Rfmsync-Signature"
TIMESTAMP_HEADER = "X-Rfmsync-Timestamp"
MAX_ORDERS_PER_DELIVERY = 1000


class BadRequest(Exception):
    """A delivery the intake refuses: ``status`` is the HTTP reply (400, 401, 404, 413), the message its body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------ generic signature


def sign_generic(secret_: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers a sender adds to a generic delivery (used by tests, the benchmark and the docs)."""
    msg = body if timestamp is None else f"{timestamp}.".encode() + body
    headers = {SIGNATURE_HEADER: "sha256=" + hmac.new(secret_.encode(), msg, hashlib.sha256).hexdigest()}
    if timestamp is not None:
        headers[TIMESTAMP_HEADER] = str(timestamp)
    return headers


def verify_generic(headers: Mapping[str, str], body: bytes, secret_: str | None, *, now: float,
                   replay_window: float) -> str | None:
    """None when authentic, else the reason (for the 401 body: it never contains the secret)."""
    if not secret_:
        return "RFMSYNC_WEBHOOK_SECRET is not set on this server"
    given = headers.get(SIGNATURE_HEADER.lower(), "")
    if not given.startswith("sha256="):
        return f"missing or malformed {SIGNATURE_HEADER} header (expected sha256=<hex>)"
    ts = headers.get(TIMESTAMP_HEADER.lower())
    msg = body
    if ts is not None:
        if not digits(ts) or len(ts) > 12:
            return f"{TIMESTAMP_HEADER} must be Unix seconds"
        if abs(now - int(ts)) > replay_window:
            return f"{TIMESTAMP_HEADER} is outside the replay window of {replay_window:g}s"
        msg = ts.encode() + b"." + body
    expected = hmac.new(secret_.encode(), msg, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given[7:].strip().lower().encode("ascii", "replace")):
        return "signature does not match"
    return None


# ------------------------------------------------------------------------------ generic payload


def _to_column(places: int) -> AfterValidator:
    """Round to the stored column's ``places`` (half away from zero, as :func:`connectors.tables.stage_records`
    rounds an API page's values and the file reader a file's: a JavaScript total ``19.990000000000002`` is
    ``19.99``, not a refused delivery); a value the ``DECIMAL(18, places)`` column cannot hold is an error."""
    digits = 18 - places
    quantum = Decimal(1).scaleb(-places)

    def fit(value: Decimal) -> Decimal:
        if value.is_zero() or value.adjusted() < digits:
            value = value.quantize(quantum, ROUND_HALF_UP)
        if abs(value) >= Decimal(10) ** digits:
            raise ValueError(f"out of range (at most {digits} digits before the point)")
        return value

    return AfterValidator(fit)


Money = Annotated[Decimal, Field(allow_inf_nan=False), _to_column(2)]
Quantity = Annotated[Decimal, Field(allow_inf_nan=False), _to_column(3)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True,
                              str_max_length=1000)


class ItemIn(_In):
    sku: str | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    quantity: Quantity = Decimal(1)
    price: Money | None = None


class ContactIn(_In):
    customer_id: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=50)
    first_name: str | None = None
    last_name: str | None = None
    marketing_consent: Literal["yes", "no", "unknown"] = "unknown"
    created_at: datetime | None = None
    updated_at: datetime | None = None  # when the sender's system last changed the contact (orders its versions)

    @field_validator("marketing_consent", mode="before")
    @classmethod
    def _consent(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return "yes" if v else "no"
        return v.strip().lower() if isinstance(v, str) else v


class OrderIn(_In):
    order_id: str = Field(min_length=1, max_length=200)
    customer_id: str = Field(min_length=1, max_length=200)
    ordered_at: datetime
    amount: Money
    currency: str | None = Field(default=None, max_length=10)
    status: Literal["completed", "refunded", "cancelled"] = "completed"
    discount: Money | None = None
    items: list[ItemIn] = Field(default_factory=list, max_length=1000)
    contact: ContactIn | None = None
    updated_at: datetime | None = None  # when the sender's system last changed the order (orders its versions)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v


def _aware(value: datetime, tz: str, where: str) -> datetime:
    value = value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(tz))
    try:
        in_range = 1970 <= value.astimezone(dt_timezone.utc).year <= 2200
    except (OverflowError, ValueError):
        in_range = False
    if not in_range:
        raise BadRequest(400, f"{where}: date {value.isoformat()} is out of range (1970-2200)")
    return value


def _version(value: datetime | None, tz: str, where: str) -> datetime | None:
    """An ``updated_at`` (the sender's modification time), refused when later than now by more than
    :data:`connectors.webhooks.FUTURE_MARGIN` (a wrong clock or offset: it would hold back every later version)."""
    if value is None:
        return None
    at = _aware(value, tz, where)
    if too_far_ahead(at):
        raise BadRequest(400, f"{where}: {at.isoformat()} is in the future (more than "
                              f"{int(FUTURE_MARGIN.total_seconds() // 60)} minutes ahead of this server's clock): "
                              "check the sender's clock and time zone offset")
    return at


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number rfmsync accepts")


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest(400, "body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"body is not valid JSON: {exc}") from None


def _where(index: int | None, raw: Any) -> str:
    oid = raw.get("order_id") if isinstance(raw, dict) else None
    base = "order" if index is None else f"order [{index}]"
    return base + (f" (order_id {str(oid)[:60]!r})" if isinstance(oid, (str, int)) else "")


def parse_generic(body: bytes, tz: str = "UTC", phone_region: str | None = None) -> list[tuple[Order, Contact | None]]:
    """A generic delivery: one order object or a list of them, each optionally with its ``contact``.

    A contact's e-mail and phone are normalised as every source's are (:func:`connectors.contacts.clean_contact`,
    ``phone_region`` the default country): an invalid one is dropped from the contact and logged.
    Raises :class:`BadRequest` (400) naming the order and the field when anything is wrong.
    """
    data = _loads(body)
    if isinstance(data, dict):
        items, indexed = [data], False
    elif isinstance(data, list):
        items, indexed = data, True
    else:
        raise BadRequest(400, "body must be a JSON object (one order) or a JSON array of orders")
    if not items:
        raise BadRequest(400, "body is an empty list: nothing to queue")
    if len(items) > MAX_ORDERS_PER_DELIVERY:
        raise BadRequest(400, f"at most {MAX_ORDERS_PER_DELIVERY} orders per delivery, got {len(items)}")
    out = []
    for i, raw in enumerate(items):
        where = _where(i if indexed else None, raw)
        if not isinstance(raw, dict):
            raise BadRequest(400, f"{where}: must be a JSON object")
        try:
            o = OrderIn.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'order'}: {e['msg']}"
                                 for e in exc.errors()[:5])
            raise BadRequest(400, f"{where}: {problems}") from None
        if o.contact and o.contact.customer_id not in (None, o.customer_id):
            raise BadRequest(400, f"{where}: contact.customer_id {o.contact.customer_id!r} differs from the "
                                  f"order's customer_id {o.customer_id!r}")
        if o.amount < 0 and o.status != "refunded":  # as a file row: a refund written negative is a refund
            raise BadRequest(400, f"{where}: amount: negative amount without a refund status (a return is status "
                                  "'refunded')")
        order = Order(order_id=o.order_id, customer_id=o.customer_id,
                      ordered_at=_aware(o.ordered_at, tz, f"{where}: ordered_at"), amount=abs(o.amount),
                      currency=o.currency, status=OrderStatus(o.status), discount=o.discount,
                      items=tuple(LineItem(sku=it.sku, name=it.name, category=it.category, brand=it.brand,
                                           quantity=it.quantity, price=it.price) for it in o.items),
                      updated_at=_version(o.updated_at, tz, f"{where}: updated_at"))
        contact = None
        if o.contact is not None:
            c = o.contact
            contact, issues = clean_contact(Contact(
                customer_id=o.customer_id, email=c.email or None, phone=c.phone or None,
                first_name=c.first_name or None, last_name=c.last_name or None,
                marketing_consent=Consent(c.marketing_consent),
                created_at=_aware(c.created_at, tz, f"{where}: contact.created_at") if c.created_at else None,
                updated_at=_version(c.updated_at, tz, f"{where}: contact.updated_at")),
                phone_region, "generic:webhook")
            for issue in issues:
                log.warning("generic webhook: %s", issue)
        out.append((order, contact))
    return out
