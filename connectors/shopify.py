"""Shopify Admin API source (REST ``orders.json`` / ``customers.json``) and webhooks.

* Pull: ``GET /admin/api/{version}/{orders,customers}.json?limit=250&since_id=0&updated_at_min=…``
  (orders with ``status=any``), next pages through the ``Link: <…page_info=…>; rel="next"``
  header; a repeated ``page_info`` is fatal. ``since_id`` makes Shopify list in ascending id order (without it,
  newest first), so a full page without that link (an exactly full last page, or a header lost on the way) is
  followed by one request from its highest id (``since_id``, with the same filters) and nothing is skipped. The REST resource shape is the same one webhooks
  deliver, so one mapper serves both.
* Backfill: the same read without ``updated_at_min``. ``page_info`` is Shopify's opaque keyset cursor
  (it holds the last id served and the filters), not a page number: edits and deletions made while
  the backfill runs shift nothing. Right after it, the same read runs again from the backfill's start −
  ``lookback_minutes`` to catch what changed meanwhile. A deletion is only ever told by the
  ``orders/delete`` webhook (below).
* Contacts (pulls and webhooks) go through :func:`connectors.contacts.clean_contact` with
  ``phone_region``. Shopify has no scope setting: one shop is one source.
* Cursor: ``{"orders": ISO updated_at, "contacts": ISO updated_at}``; next pull asks for
  ``updated_at_min = cursor − lookback``; new bookmark = min(max updated_at seen, run start).
* Purchases: ``financial_status`` in ``paid_statuses``; ``refunded`` (``refunded_statuses``: the order wholly
  refunded, it nets 0), cancelled (``cancelled_at``), test, pending, authorized and voided orders → cancelled.
* Limits: REST leaky bucket 40 calls refilled 2/s (Standard). ``X-Shopify-Shop-Api-Call-Limit:
  used/size`` is read on every answer and the client pauses when fewer than
  ``call_limit_headroom`` calls remain; 429 honours ``Retry-After``.
* Only the last 60 days of orders are readable without the ``read_all_orders`` scope: once per pull the token's
  scopes are read, and a pull wanting older orders without it carries a warning (:mod:`connectors.shopify_scopes`).
* Deleted orders never come back from ``orders.json``; the ``orders/delete`` webhook is turned into a
  final tombstone (:func:`parse_webhook`): stored cancelled, no later version of the order is applied. Refunds
  need no row of their own: the order's ``current_total_price`` is already net of them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import duckdb
import requests

from .contacts import clean_contact, gone_contact
from .digits import digits
from .email_phone import lower_like_sql
from .guests import guest_contact, guest_contacts, guest_key
from .errors import ConfigError, FatalError, RecordError
from .identity import DEFAULT_MAX_GROUP
from .http import (Action, FieldError, HttpClient, Throttle, answer_object, clean, get_field, get_list, get_object,
                   json_shape, parse_dt, set_advice, to_decimal, with_sleep)
from .incremental import (HighWater, PageGuard, Progress, RunStart, Stager, iso, load_cursor, map_page,
                          parse_time_cursor, pull_by_time, utc_now)
from .non_purchase import NoCustomer, tombstone, undecided, unmapped
from .records import UNDATED, Consent, Contact, LineItem, Order, OrderStatus
from .rekey import rekeyed
from .retry import RetryPolicy
from .shapes import vendor_id
from .source import Account, PullResult
from .shopify_scopes import SCOPES_PATH, granted_scopes, window_warning
from .shopify_config import ShopifyConfig, ShopifySecrets, configured_shop  # (ShopifyConfig, …: re-exported)
from .shopify_verify import verify_webhook, webhook_stale_reason  # noqa: F401 (re-exported)
from .webhooks import WebhookParser, body_digest, header, json_object, register_webhook_parser, versioned
from .zones import same_rules

log = logging.getLogger(__name__)
NAME = "shopify"
LEAK_PER_SECOND = 2.0  # REST bucket refill, Standard plans


def map_order(raw: Mapping[str, Any], cfg: ShopifyConfig, dropped: list[FieldError]) -> Order | None:
    """A REST order resource → Order; a tombstone for a non-purchase that cannot be mapped (it leaves the history).
    A guest order (no ``customer``) is keyed by its ``email``, else its ``phone``, by the contacts' rules
    (:func:`connectors.guests.guest_key`: a value refused while the other keys it goes to ``dropped``)."""
    oid = get_field(raw, "id", lambda v: str(int(v)))
    financial = clean(raw.get("financial_status"))
    if raw.get("cancelled_at") or (raw.get("test") and not cfg.include_test_orders):
        kind = OrderStatus.CANCELLED
    elif financial is None:  # (staged cancelled, a stored purchase would leave the history unsaid)
        raise undecided("financial_status", "order")
    elif financial in cfg.refunded_statuses:  # the sale itself, wholly refunded: no purchase, nothing taken off
        kind = OrderStatus.CANCELLED  # (a file's refunded row is a return beside its sale: docs/sources/files.md)
    elif financial in cfg.paid_statuses:
        kind = OrderStatus.COMPLETED
    else:
        kind = OrderStatus.CANCELLED
    customer_id = None  # (kept by the tombstone when known)
    try:
        customer = get_object(raw, "customer")
        customer_id = get_field(customer, "id", vendor_id, "customer.id") or guest_key(  # (NoCustomer: a walk-in)
            raw.get("email"), raw.get("phone"), cfg.phone_region, dropped)
        total = "current_total_price" if raw.get("current_total_price") is not None else "total_price"
        disc = "current_total_discounts" if raw.get("current_total_discounts") is not None else "total_discounts"
        return Order(
            order_id=oid, customer_id=customer_id,
            ordered_at=get_field(raw, "processed_at" if raw.get("processed_at") else "created_at", parse_dt),
            amount=get_field(raw, total, to_decimal),
            currency=clean(raw.get("currency")) or cfg.currency, status=kind,
            discount=get_field(raw, disc, lambda v: None if v in (None, "") else to_decimal(v)),
            items=tuple(_item(it) for it in get_list(raw, "line_items")))
    except FieldError:
        if kind is not OrderStatus.CANCELLED:
            raise
        # no purchase (any more) and not mappable (no customer left): it still leaves the history
        return unmapped(oid, raw, customer_id, ("updated_at",))


def _item(raw: Any) -> LineItem:
    if not isinstance(raw, Mapping):
        raise FieldError("line_items", "each line item must be an object", raw)
    return LineItem(sku=clean(raw.get("sku")), name=clean(raw.get("title")) or clean(raw.get("name")),
                    brand=clean(raw.get("vendor")),
                    quantity=get_field(raw, "quantity", to_decimal, "line_items.quantity"),
                    price=get_field(raw, "price", lambda v: None if v is None else to_decimal(v), "line_items.price"))


def _customer_version(contact: Contact, payload: Mapping[str, Any], what: str = "webhook") -> Contact:
    """``contact`` with its version's time: the later of the customer's ``updated_at`` and its
    ``email_marketing_consent.consent_updated_at`` (either may be missing or null); a delivery's or a pulled
    row's alike (``what``: the log's prefix)."""
    timed = versioned(contact, payload, what=what)
    consent = payload.get("email_marketing_consent")
    if not isinstance(consent, Mapping):
        return timed
    by_consent = versioned(replace(contact, updated_at=None), consent, "consent_updated_at", what)
    if by_consent.updated_at is not None and (timed.updated_at is None or by_consent.updated_at > timed.updated_at):
        return by_consent
    return timed


def map_customer(raw: Mapping[str, Any]) -> Contact:
    cid = get_field(raw, "id", lambda v: str(int(v)))
    consent = get_object(raw, "email_marketing_consent").get("state")
    if not isinstance(consent, (str, type(None))):
        raise FieldError("email_marketing_consent.state", "must be a string", consent)
    if consent is None and isinstance(raw.get("accepts_marketing"), bool):  # older API versions
        consent = "subscribed" if raw["accepts_marketing"] else "not_subscribed"
    address = get_object(raw, "default_address")
    attrs = {"city": clean(address.get("city")), "country": clean(address.get("country_code")),
             "tags": clean(raw.get("tags")), "state": clean(raw.get("state"))}
    return Contact(
        customer_id=cid, email=lower_like_sql(clean(raw.get("email")) or "") or None, phone=clean(raw.get("phone")),
        first_name=clean(raw.get("first_name")), last_name=clean(raw.get("last_name")),
        marketing_consent={"subscribed": Consent.YES, "not_subscribed": Consent.NO, "unsubscribed": Consent.NO,
                           "redacted": Consent.NO}.get(consent or "", Consent.UNKNOWN),
        created_at=get_field(raw, "created_at", parse_dt) if raw.get("created_at") else None,
        attributes={k: v for k, v in attrs.items() if v})


_OBJECTS = {"contacts": "customers", "orders": "orders"}


class ShopifySource:
    name = NAME
    max_identity_group = DEFAULT_MAX_GROUP  # [source] max_identity_group, set by connectors.registry

    def __init__(self, config: ShopifyConfig, secrets: ShopifySecrets | None = None, *,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        secrets = secrets or ShopifySecrets()
        host, shop_setting = configured_shop(config, secrets)
        if not host and not secrets.api_url:
            raise ConfigError("shopify: no shop; set SHOPIFY_SHOP (e.g. my-shop or my-shop.myshopify.com)")
        if not secrets.token:
            raise ConfigError("shopify: no Admin API access token; set SHOPIFY_TOKEN")
        base = (secrets.api_url or f"https://{host}").rstrip("/") + f"/admin/api/{config.api_version}"
        self.config, self.host = config, host or urlsplit(secrets.api_url or "").netloc
        self.scopes_url = (secrets.api_url or f"https://{host}").rstrip("/") + SCOPES_PATH
        self.clock = clock or utc_now
        retry = with_sleep(retry, sleep)
        token = secrets.token.get_secret_value()
        self.throttle = Throttle(config.requests_per_second, 1, sleep=retry.sleep)
        self.http = HttpClient(base, vendor="Shopify", auth_env="SHOPIFY_TOKEN",
                               url_env="SHOPIFY_API_URL" if secrets.api_url else shop_setting,
                               headers={"X-Shopify-Access-Token": token}, secrets=(token,), retry=retry,
                               throttle=self.throttle, inspect=self._call_limit,
                               status_actions={402: Action.CONFIG, 423: Action.CONFIG},
                               auth_advice="a token stops working once the app is uninstalled or its token rotated, "
                               "and needs the read_customers and read_orders scopes: set the app's current Admin API "
                               "access token",
                               redirect_advice=None if secrets.api_url else self._redirect_advice)

    def _redirect_advice(self, target: str) -> str:
        """SHOPIFY_SHOP is a host (``my-shop.myshopify.com``), not the URL the redirect went to."""
        return set_advice("shop", urlsplit(target).netloc, in_config=bool(self.config.shop), env_prefix="SHOPIFY_")

    def _call_limit(self, resp: requests.Response) -> Action | None:
        """Pause when the REST bucket is nearly full (``X-Shopify-Shop-Api-Call-Limit: 38/40``)."""
        value = resp.headers.get("X-Shopify-Shop-Api-Call-Limit", "")
        used, _, size = value.partition("/")
        if digits(used) and digits(size):
            over = int(used) - (int(size) - self.config.call_limit_headroom)
            if over >= 0:
                log.debug("shopify call limit %s: pausing", value)
                self.throttle.pause((over + 1) / LEAK_PER_SECOND)
        return None

    def check(self) -> Account:
        """The shop's name and domain; a warning when the shop's own time zone (``iana_timezone``) is not
        ``[source] timezone``: the setting is kept (days are counted in it), the user decides."""
        shop = answer_object(answer_object(self.http.get("shop.json"), "Shopify shop.json").get("shop"),
                             "Shopify shop.json's shop")
        name = f"{shop.get('name') or self.host} ({shop.get('myshopify_domain') or self.host})"
        return Account(name, zone_warnings(clean(shop.get("iana_timezone")), self.config.timezone))

    def pull(self, con: duckdb.DuckDBPyConnection, cursor: str | None = None,
             progress: Progress = None) -> PullResult:
        lookback = timedelta(minutes=self.config.lookback_minutes)
        saved = load_cursor(cursor, NAME).get("orders")
        since = parse_time_cursor(NAME, "orders", saved) - lookback if saved else None  # None: a backfill
        scopes: list[tuple[set[str] | None, str]] = []  # (60 days of orders only without read_all_orders)

        def read(obj: str, since: datetime | None, stager: Stager) -> datetime | None:
            if obj == "orders" and not scopes:  # once, inside the pull (a 401 is its credentials error)
                scopes.append(granted_scopes(self.http, self.scopes_url))
            return self._read(obj, since, stager)

        with RunStart.of(self.http, self.clock, NAME) as run_start:
            result = pull_by_time(con, NAME, cursor, progress, run_start=run_start, lookback=lookback, read=read)
        warning = window_warning(*scopes[0], since, self.clock())
        if warning:  # (INFO: the CLI prints the pull's warnings; a WARNING record would print it twice)
            log.info("%s", warning)
            result.warnings.append(warning)
        return rekeyed(con, NAME, cursor, result, self.config.phone_region)  # guests keyed as typed before: told

    def _read(self, obj: str, since: datetime | None, stager: Stager) -> datetime | None:
        resource = _OBJECTS[obj]
        # since_id=0: in id order from the first request (without it Shopify lists newest first), so a full page
        # without a next link goes on from its highest id and skips nothing
        params: dict[str, Any] | None = {"limit": self.config.page_size, "since_id": 0}
        if obj == "orders":
            params["status"] = "any"
        if since is not None:
            params["updated_at_min"] = iso(since)
        guard, high = PageGuard(f"Shopify {resource}.json"), HighWater(stager)
        url, first = f"{resource}.json", params
        while True:
            data, resp = self.http.fetch("GET", url, params=params)
            rows = data.get(resource) if isinstance(data, Mapping) else None
            if not isinstance(rows, list):
                raise FatalError(f"Shopify {resource}.json: answered {json_shape(data)}, not a {resource!r} list")
            self._stage(obj, rows, stager, high)
            nxt = resp.links.get("next", {}).get("url")
            if nxt:  # (an empty page that names a next one is not the end: the guard stops a loop)
                url, params, token = nxt, None, requests.utils.urlparse(nxt).query
            elif len(rows) >= self.config.page_size:  # the end, or a Link header lost on the way: one request says
                last = _last_id(rows, resource)  # (read in id order: since_id goes on after this page)
                url, params, token = f"{resource}.json", {**first, "since_id": last}, f"since_id={last}"
            else:
                return high.value
            guard.next(token)

    def _stage(self, obj: str, rows: list[Any], stager: Stager, high: HighWater) -> None:
        def one(raw: Any) -> Order | Contact | None:
            if raw.get("updated_at"):
                high.see(get_field(raw, "updated_at", parse_dt))
            return map_order(raw, self.config, stager.dropped) if obj == "orders" else map_customer(raw)

        def keep(record: Order | Contact, raw: Any) -> Order | Contact:
            # the version's time, as its webhook's (a later delivery older than it is left out by the store)
            if isinstance(record, Order):
                return versioned(record, raw, what=f"{NAME} pull")
            return stager.contact(_customer_version(record, raw, f"{NAME} pull"), self.config.phone_region)

        orders, contacts = map_page(stager, f"{NAME}:{obj}", rows, one, keep=keep)
        contacts += guest_contacts(orders, rows, self.config.phone_region)  # (a guest's phone: who registers later)
        stager.stage(orders, contacts)


def _last_id(rows: list[Any], resource: str) -> int:
    """The highest id of a page (read in id order, :meth:`ShopifySource._read`): a keyset to go on from
    (``since_id``)."""
    try:
        return max(int(row["id"]) for row in rows)
    except (KeyError, TypeError, ValueError):
        raise FatalError(f"Shopify {resource}.json: a full page without usable ids and no next link") from None


def zone_warnings(shop_zone: str | None, configured: str) -> tuple[str, ...]:
    """One line when the shop's ``iana_timezone`` and ``[source] timezone`` count different days (none when
    Shopify did not say, nor for two names of one zone such as ``Europe/Kiev`` and ``Europe/Kyiv``)."""
    if not shop_zone or same_rules(shop_zone, configured):
        return ()
    return (f"the shop's time zone is {shop_zone} but [source] timezone is {configured!r}: purchase days and "
            f"the as-of date are counted in {configured}; set timezone = {shop_zone!r} to count them in the "
            "shop's days",)


# ---------------------------------------------------------------- webhooks


#: topics whose payload is no order or customer resource, topic → (the object holding the id, or "", the id's key):
#: ``orders/edited`` (``{"order_edit": {"order_id", …}}``: the changes, not the order) and the consent topic
#: (``{"customer_id", "email_address", "email_marketing_consent"}``: no name, phone or address, and a contact is
#: replaced whole). Each queues an incremental pull, which reads the whole order or customer.
PULL_TOPICS = {"orders/edited": ("order_edit", "order_id"),
               "customers_email_marketing_consent/update": ("", "customer_id")}


def webhook_pull_key(body: bytes) -> str | None:
    """A delivery of :data:`PULL_TOPICS` (known by its payload: the server passes no headers) asks for a pull."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    shaped = isinstance(payload, dict) and ("order_edit" in payload or (
        "customer_id" in payload and "email_marketing_consent" in payload and "id" not in payload))
    return body_digest(body) if shaped else None


def _payload_id(payload: Mapping[str, Any], key: str, topic: str) -> str:
    try:
        return get_field(payload, key, lambda v: str(int(v)))
    except FieldError as exc:
        raise RecordError(exc.bad_row(f"{NAME}:webhook {topic}", payload.get(key))) from None


def _when_triggered(contact: Contact, headers: Mapping[str, str], topic: str) -> Contact:
    """A deleted customer's emptied contact dated ``X-Shopify-Triggered-At`` (untimed without it)."""
    triggered = header(headers, "X-Shopify-Triggered-At")
    try:
        return replace(contact, updated_at=parse_dt(triggered)) if triggered else contact
    except ValueError:
        raise ValueError(f"shopify webhook {topic}: X-Shopify-Triggered-At is not a date") from None


def parse_webhook(headers: Mapping[str, str], body: bytes,
                  config: ShopifyConfig | None = None) -> tuple[list[Order], list[Contact]]:
    """Map an ``orders/*`` or ``customers/*`` delivery (REST resource JSON) to records.

    * ``orders/delete`` carries only ``{"id": …}``: it becomes a final tombstone (amount 0, customer
      unknown, dated ``X-Shopify-Triggered-At``), which replaces the stored order so it leaves the
      history. Deleted orders are invisible to a pull, so this delivery is the only way to learn of one. Shopify
      never brings a deleted order back nor reuses its id, so the delete is final: the store leaves out any later
      version of the order, whatever its time (:func:`connectors.non_purchase.tombstone`).
    * ``refunds/create`` carries the refund (``order_id``, ``transactions``, ``refund_line_items``) but not
      the order's customer or its total, and the order row already holds the net amount
      (``current_total_price``) that Shopify updates with every refund: a refund row would count it
      twice. It is checked (an ``order_id`` must be present) and maps to nothing; the order's own
      ``orders/updated`` delivery or the next pull (the refund moves the order's ``updated_at``) brings
      the new net amount and ``financial_status``.
    * ``customers/delete`` (a customer deleted, or the loser of a ``customerMerge``, whose orders Shopify moved to
      the survivor first) → the contact emptied (:func:`connectors.contacts.gone_contact`), dated
      ``X-Shopify-Triggered-At``.
    * An order's or customer's ``updated_at`` (a tombstone: ``X-Shopify-Triggered-At``, none without that header;
      a customer: the later of it and ``email_marketing_consent.consent_updated_at``) is the version's time
      (:func:`connectors.webhooks.versioned`): Shopify retries a failed delivery for hours, after newer ones.
    """
    topic = header(headers, "X-Shopify-Topic") or ""
    payload = json_object(body, f"shopify webhook {topic or '?'}: body")
    kind, _, action = topic.partition("/")
    if kind == "orders" and action == "delete":
        oid = _payload_id(payload, "id", topic)
        triggered = header(headers, "X-Shopify-Triggered-At")
        # final: a deleted Shopify order never comes back and its id is never reused (the store keeps it deleted)
        if not triggered:  # untimed: this host's clock is never a version's time (none is needed: it is final)
            return [tombstone(oid, UNDATED, final=True)], []
        try:
            at = parse_dt(triggered)
        except ValueError:
            raise ValueError(f"shopify webhook {topic}: X-Shopify-Triggered-At is not a date") from None
        return [replace(tombstone(oid, at, final=True), updated_at=at)], []  # deleted when it was triggered
    if kind == "refunds":
        _payload_id(payload, "order_id", topic)
        return [], []
    if topic in PULL_TOPICS:  # no order or customer resource: checked, then an incremental pull (webhook_pull_key)
        what, key = PULL_TOPICS[topic]
        try:
            _payload_id(get_object(payload, what, what) if what else payload, key, topic)
        except FieldError as exc:
            raise RecordError(exc.bad_row(f"{NAME}:webhook {topic}", None)) from None
        return [], []
    if kind == "customers" and action == "delete":  # deleted, or a customerMerge's loser (orders moved first)
        return [], [_when_triggered(gone_contact(_payload_id(payload, "id", topic)), headers, topic)]
    if action == "delete":
        return [], []
    try:
        if kind == "orders":
            order = map_order(payload, config or ShopifyConfig(), dropped := [])
            for exc in dropped:  # (a guest's e-mail or phone refused, the other keying the order)
                log.warning("shopify webhook: %s", exc.bad_row(f"{NAME}:webhook {topic}", payload.get("id")))
            guest = guest_contact(order, payload, (config or ShopifyConfig()).phone_region)  # (its phone)
            return ([versioned(order, payload)] if order else []), [guest] if guest else []
        if kind == "customers":
            contact, issues = clean_contact(map_customer(payload), (config or ShopifyConfig()).phone_region,
                                            f"{NAME}:webhook {topic}")
            for issue in issues:
                log.warning("shopify webhook: %s", issue)
            return [], [_customer_version(contact, payload)]
    except NoCustomer:  # a walk-in sale: accepted, nobody to segment (the pull counts it)
        log.info("shopify webhook %s: order %s has no customer, email or phone: not stored", topic, payload.get("id"))
        return [], []
    except FieldError as exc:
        raise RecordError(exc.bad_row(f"{NAME}:webhook {topic}", payload.get("id"))) from None
    raise ValueError(f"shopify webhook: unsupported topic {topic!r}")


register_webhook_parser(NAME, WebhookParser(verify=verify_webhook, parse=parse_webhook, secret_field="webhook_secret",
                                            needs_config=True, pull_key=webhook_pull_key, stale=webhook_stale_reason))
