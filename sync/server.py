"""``rfmsync serve``: the webhook intake (FastAPI), health, runs and metrics endpoints.

``POST /webhooks/{source}`` (``/webhooks/{source}/{token}`` for CRMs that authenticate with a path token)
checks the delivery's authenticity, parses it into canonical records and writes one event per order (or
contact) to the ledger queue *before* answering 202, so an accepted delivery survives a crash. The
resync worker (:mod:`sync.worker`) does the rest. Replies: 202 accepted (duplicates included), 400 malformed
(the message names the problem), 401 bad signature, 404 unknown source, 413 body over
``[serve] max_body_bytes``, 503 ledger unavailable. Nothing a client sends can crash the server.

Generic (``file``/``generic``) deliveries are signed with ``RFMSYNC_WEBHOOK_SECRET``:
``X-Rfmsync-Signature: sha256=<hex HMAC-SHA256 of the raw body>``; with ``X-Rfmsync-Timestamp: <unix
seconds>`` the signed message is ``<timestamp>.<body>`` and the timestamp must be within
``[serve] replay_window_seconds`` of the server's clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from decimal import Decimal
from typing import Any, Callable, Literal, Mapping
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from starlette.concurrency import run_in_threadpool

from connectors.errors import RecordError
from connectors.records import Consent, Contact, LineItem, Order, OrderStatus

from .config import Config
from .ledger import Ledger
from .ledger.codec import encode_records
from .ledger.writer import EventWriter
from .resync import CRM_SOURCES
from .settings import Settings, secret
from .worker import Metrics, Worker

log = logging.getLogger(__name__)

GENERIC = ("generic", "file")
SIGNATURE_HEADER = "X-Rfmsync-Signature"
TIMESTAMP_HEADER = "X-Rfmsync-Timestamp"
MAX_ORDERS_PER_DELIVERY = 1000
INLINE_PARSE_BYTES = 16_384  # deliveries up to this size are verified and parsed on the event loop


class BadRequest(Exception):
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
        if not ts.isdigit() or len(ts) > 12:
            return f"{TIMESTAMP_HEADER} must be Unix seconds"
        if abs(now - int(ts)) > replay_window:
            return f"{TIMESTAMP_HEADER} is outside the replay window of {replay_window:g}s"
        msg = ts.encode() + b"." + body
    expected = hmac.new(secret_.encode(), msg, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given[7:].strip().lower().encode("ascii", "replace")):
        return "signature does not match"
    return None


# ------------------------------------------------------------------------------ generic payload


_Money = Field(default=None, max_digits=18, decimal_places=2, allow_inf_nan=False)


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True,
                              str_max_length=1000)


class ItemIn(_In):
    sku: str | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    quantity: Decimal = Field(default=Decimal(1), max_digits=18, decimal_places=3, allow_inf_nan=False)
    price: Decimal | None = _Money


class ContactIn(_In):
    customer_id: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=50)
    first_name: str | None = None
    last_name: str | None = None
    marketing_consent: Literal["yes", "no", "unknown"] = "unknown"
    created_at: datetime | None = None

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
    amount: Decimal = Field(max_digits=18, decimal_places=2, allow_inf_nan=False)
    currency: str | None = Field(default=None, max_length=10)
    status: Literal["completed", "refunded", "cancelled"] = "completed"
    discount: Decimal | None = _Money
    items: list[ItemIn] = Field(default_factory=list, max_length=1000)
    contact: ContactIn | None = None

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


def parse_generic(body: bytes, tz: str = "UTC") -> list[tuple[Order, Contact | None]]:
    """A generic delivery: one order object or a list of them, each optionally with its ``contact``.

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
        order = Order(order_id=o.order_id, customer_id=o.customer_id,
                      ordered_at=_aware(o.ordered_at, tz, f"{where}: ordered_at"), amount=o.amount,
                      currency=o.currency, status=OrderStatus(o.status), discount=o.discount,
                      items=tuple(LineItem(sku=it.sku, name=it.name, category=it.category, brand=it.brand,
                                           quantity=it.quantity, price=it.price) for it in o.items))
        contact = None
        if o.contact is not None:
            c = o.contact
            contact = Contact(customer_id=o.customer_id, email=c.email or None, phone=c.phone or None,
                              first_name=c.first_name or None, last_name=c.last_name or None,
                              marketing_consent=Consent(c.marketing_consent),
                              created_at=_aware(c.created_at, tz, f"{where}: contact.created_at")
                              if c.created_at else None)
        out.append((order, contact))
    return out


# ------------------------------------------------------------------------------ queue events


def _digest(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def events_for(orders: list[Order], contacts: list[Contact], pairs: list[tuple[Order, Contact | None]] = ()
               ) -> list[tuple[str, str]]:
    """(dedupe key, payload) per order (with its contact) and per lone contact.

    The key is the record's id plus a hash of its canonical content: the same order delivered twice is
    queued once, while a changed order (refunded, corrected) is queued again.
    """
    out = []
    for order, contact in [*pairs, *((o, None) for o in orders)]:
        payload = encode_records([order], [contact] if contact else [])
        out.append((f"order:{order.order_id}:{_digest(payload)}", payload))
    for contact in contacts:
        payload = encode_records(contacts=[contact])
        out.append((f"contact:{contact.customer_id}:{_digest(payload)}", payload))
    return out


# ------------------------------------------------------------------------------ CRM sources


def _crm_secret(kind: str, settings: Settings) -> str | None:
    from connectors.registry import secrets_for

    s = secrets_for(kind, settings)
    name = {"shopify": "webhook_secret", "retailcrm": "webhook_token", "amocrm": "webhook_token",
            "bitrix24": "app_token"}[kind]
    return secret(getattr(s, name, None))


def _source_config(kind: str, cfg: Config) -> Any:
    """The validated ``[source]`` for the parsers that take it (Shopify, RetailCRM), else None."""
    if kind not in ("shopify", "retailcrm", "amocrm"):
        return None
    from connectors.registry import SOURCES

    return SOURCES[kind][0].model_validate(dict(cfg.source))


def _crm_events(kind: str, conf: Any, headers: Mapping[str, str], body: bytes, path_token: str | None,
                key: str | None) -> list[tuple[str, str]]:
    """``conf``: the validated ``[source]`` (its parser needs it for Shopify and RetailCRM); ``key``: the vendor's
    webhook secret. Both are made once per server by :meth:`Intake.prepare`."""
    import importlib

    mod = importlib.import_module(f"connectors.{kind}")
    if not key:
        raise BadRequest(401, f"the {kind} webhook secret is not set on this server (see 'CRM and shop connectors' in README.md)")
    try:
        ok = mod.verify_webhook(headers, body, key, path_token)
    except Exception:  # a verifier must never turn garbage into a 500
        ok = False
    if not ok:
        raise BadRequest(401, f"{kind} webhook: authentication failed")
    try:
        if kind in ("shopify", "retailcrm"):
            orders, contacts = mod.parse_webhook(headers, body, conf)
            return events_for(list(orders), list(contacts))
        orders, contacts = mod.parse_webhook(headers, body, *([conf] if conf is not None else []))
        events = events_for(list(orders), list(contacts))
        refs = mod.webhook_refs(body)
        if kind == "bitrix24" or any(entity == "leads" for entity, _, _ in refs):
            ref_key = refs[0][2] if kind == "bitrix24" else _digest(body.decode("utf-8", "replace"))
            events.append((f"pull:{ref_key}", encode_records(pull=True)))
        return events
    except BadRequest:
        raise
    except (RecordError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise BadRequest(400, f"{kind} webhook: {exc}") from None
    except Exception as exc:  # a parser bug must not read as "queue unavailable" (503) nor crash: the input is bad
        log.warning("%s webhook: the parser failed on a delivery (%s: %s)", kind, type(exc).__name__, exc,
                    exc_info=log.isEnabledFor(logging.DEBUG))
        raise BadRequest(400, f"{kind} webhook: the delivery cannot be parsed ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None


# ------------------------------------------------------------------------------ the app


@dataclass
class Intake:
    """Everything the endpoints need; built by :func:`build_service`."""

    cfg: Config
    ledger: Ledger
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    on_queued: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time
    writer: EventWriter | None = None
    _keys: dict[str, str | None] = field(default_factory=dict, repr=False)  # CRM webhook secrets, read once
    _confs: dict[str, Any] = field(default_factory=dict, repr=False)  # validated [source] per CRM, made once

    def sources(self) -> list[str]:
        kind = str(self.cfg.source.get("type", "file"))
        return list(GENERIC) + ([kind] if kind in CRM_SOURCES else [])

    def event_writer(self) -> EventWriter:
        """The group-commit writer of this intake (created on first use)."""
        if self.writer is None:
            self.writer = EventWriter(self.ledger)
        return self.writer

    def prepare(self, source: str, headers: Mapping[str, str], body: bytes, path_token: str | None = None
                ) -> tuple[str, list[tuple[str, str]]]:
        """Verify and parse one delivery: (queue source name, [(dedupe key, payload)]); raises BadRequest."""
        if source not in self.sources():
            raise BadRequest(404, f"unknown webhook source {source[:40]!r}; this server accepts "
                                  f"{', '.join(self.sources())}")
        if source in GENERIC:
            if path_token is not None:
                raise BadRequest(404, "generic webhooks take no path token: POST /webhooks/generic")
            problem = verify_generic(headers, body, secret(self.settings.rfmsync_webhook_secret), now=self.clock(),
                                     replay_window=self.cfg.serve.replay_window_seconds)
            if problem:
                raise BadRequest(401, problem)
            return "generic", events_for([], [], parse_generic(body, self.cfg.timezone))
        if source not in self._keys:  # building the vendor's secrets reads the environment: ~3 ms, once
            self._keys[source] = _crm_secret(source, self.settings)
            self._confs[source] = _source_config(source, self.cfg)
        return source, _crm_events(source, self._confs[source], headers, body, path_token, self._keys[source])

    def _reply(self, events: list[tuple[str, str]], new_flags: list[bool]) -> dict[str, Any]:
        new = sum(new_flags)
        if new:
            self.on_queued()
        return {"accepted": len(events), "queued": new, "duplicates": len(events) - new}

    async def accept_async(self, source: str, headers: Mapping[str, str], body: bytes,
                           path_token: str | None = None) -> dict[str, Any]:
        """Verify, parse and queue one delivery (committed when this returns); raises BadRequest.
        Small bodies are parsed inline (cheaper than a thread hop),
        large ones in the thread pool; the ledger write is group-committed and awaited."""
        if len(body) <= INLINE_PARSE_BYTES:
            queue_name, events = self.prepare(source, headers, body, path_token)
        else:
            queue_name, events = await run_in_threadpool(self.prepare, source, headers, body, path_token)
        fut = self.event_writer().submit([(queue_name, k, p) for k, p in events])
        return self._reply(events, await asyncio.wrap_future(fut))


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def create_app(intake: Intake) -> FastAPI:
    """The FastAPI application (OpenAPI at ``/openapi.json``, docs at ``/docs``)."""
    app = FastAPI(title="rfmsync", summary="Webhook-triggered RFM resync, health, runs and metrics.",
                  version="1")
    limit = intake.cfg.serve.max_body_bytes

    async def _read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, f"body is larger than [serve] max_body_bytes = {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, f"body is larger than [serve] max_body_bytes = {limit}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _webhook(source: str, request: Request, token: str | None) -> JSONResponse:
        status, reply = 202, {}
        try:
            body = await _read_body(request)
            headers = {k.lower(): v for k, v in request.headers.items()}
            reply = await intake.accept_async(source, headers, body, token)
        except BadRequest as exc:
            status, reply = exc.status, {"error": str(exc)}
        except Exception as exc:  # the ledger is down or a bug: never crash, never leak details
            log.error("webhook %s: cannot queue the delivery: %s", source[:40], exc)
            status, reply = 503, {"error": "the event queue is unavailable; retry later"}
        intake.metrics.webhook(source[:40] if source in intake.sources() else "(unknown)", status)
        return JSONResponse(reply, status_code=status)

    @app.post("/webhooks/{source}", status_code=202, summary="Receive a webhook delivery",
              responses={400: {"description": "Malformed body"}, 401: {"description": "Bad signature"},
                         404: {"description": "Unknown source"}, 413: {"description": "Body too large"}})
    async def webhook(source: str, request: Request) -> JSONResponse:
        """Verify the delivery, queue its orders/contacts in the ledger, answer 202."""
        return await _webhook(source, request, None)

    @app.post("/webhooks/{source}/{token}", status_code=202, summary="Receive a path-token webhook delivery")
    async def webhook_with_token(source: str, token: str, request: Request) -> JSONResponse:
        """For RetailCRM and amoCRM, which authenticate with a secret token in the URL path."""
        return await _webhook(source, request, token)

    @app.get("/healthz", summary="Liveness and queue depth")
    def healthz() -> JSONResponse:
        try:
            counts = intake.ledger.event_counts()
        except Exception as exc:
            log.warning("healthz: ledger unavailable: %s", exc)
            return JSONResponse({"status": "error", "error": "ledger unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "queue_depth": counts["queued"] + counts["processing"],
                             "events": counts})

    @app.get("/runs", summary="Recent runs (sync, webhook, scheduled), newest first")
    def runs(limit: int = 20) -> JSONResponse:
        rows = intake.ledger.recent_runs(max(1, min(limit, 500)))
        return JSONResponse([{k: _jsonable(v) for k, v in r.items()} for r in rows])

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        try:
            counts = intake.ledger.event_counts()
        except Exception:
            counts = None
        return PlainTextResponse(intake.metrics.render(counts), media_type="text/plain; version=0.0.4")

    return app


# ------------------------------------------------------------------------------ the service


class Service:
    """The app plus its background threads: ``workers`` resync workers and the scheduler."""

    def __init__(self, cfg: Config, settings: Settings, ledger: Ledger, *, workers: int | None = None,
                 schedule: bool = True, **worker_kwargs: Any) -> None:
        from .schedule import Scheduler

        self.cfg, self.settings, self.ledger = cfg, settings, ledger
        self.metrics = Metrics()
        n = cfg.serve.workers if workers is None else workers
        self.workers = [Worker(cfg, ledger, settings, metrics=self.metrics, **worker_kwargs) for _ in range(n)]
        self.scheduler = Scheduler(cfg, ledger, settings, metrics=self.metrics) if schedule else None
        self.intake = Intake(cfg, ledger, settings, self.metrics, on_queued=self._wake)
        self.app = create_app(self.intake)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def wake(self) -> None:
        """New events were queued: workers of this process look now instead of at their next poll."""
        for w in self.workers:
            w.wake()

    _wake = wake

    def start(self) -> Service:
        try:  # runs a killed earlier process left "running" (kill -9, OOM) show as abandoned from now on
            self.ledger.abandon_dead_runs()
        except Exception as exc:  # never keep the server from starting
            log.warning("cannot check the ledger for abandoned runs: %s", exc)
        loops = [w.run_forever for w in self.workers]
        if self.scheduler is not None and self.scheduler.schedule.enabled:
            loops.append(self.scheduler.run_forever)
        for i, loop in enumerate(loops):
            t = threading.Thread(target=loop, args=(self._stop,), name=f"rfmsync-bg-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background threads (a batch in progress finishes first)."""
        self._stop.set()
        self._wake()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def close(self) -> None:
        self.stop()
        if self.intake.writer is not None:
            self.intake.writer.close()
        self.ledger.close()


def build_service(cfg: Config, settings: Settings, **kwargs: Any) -> Service:
    """Open the ledger and build the service; warns when the generic webhook secret is missing."""
    from .ledger import open_ledger

    if not settings.rfmsync_webhook_secret:
        log.warning("RFMSYNC_WEBHOOK_SECRET is not set: generic webhooks will be refused (401)")
    return Service(cfg, settings, open_ledger(cfg, settings), **kwargs)
