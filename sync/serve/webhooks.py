"""The webhook intake of ``rfmsync serve``: verify a delivery, parse it, queue its records in the ledger.

``POST /webhooks/{source}`` (``/webhooks/{source}/{token}`` for CRMs that authenticate with a path token)
checks the delivery's authenticity, parses it into canonical records and writes one event per order and
per contact to the ledger queue *before* answering 202, so an accepted delivery survives a crash. The resync
worker (:mod:`sync.serve.worker`) does the rest. :class:`Intake` raises :class:`BadRequest` with the reply:
400 malformed (the message names the problem), 401 bad signature, 404 unknown source.

Sources: the generic format (:mod:`sync.serve.generic`, ``generic`` or its alias ``file``), and the
configured CRM source when it has a parser in :mod:`connectors.webhooks`' registry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from connectors.contacts import PhoneRegion
from connectors.counts import counted
from connectors.errors import RecordError
from connectors.records import Contact, Order
from connectors.webhooks import WEBHOOK_SOURCES, ReplayGuard, WebhookParser, webhook_parser

from ..config import Config
from ..errors import ConfigError
from ..ledger import Ledger
from ..ledger.writer import EventWriter
from ..settings import Settings, secret
from .generic import BadRequest, parse_generic, verify_generic
from .metrics import Metrics
from ..ledger.codec import encode_records
from ..ledger.queue import PULL

log = logging.getLogger(__name__)

GENERIC = ("generic", "file")
INLINE_PARSE_BYTES = 16_384  # deliveries up to this size are verified and parsed on the event loop
#: ``[source]`` keys every API source shares (connectors.identity): not part of a vendor's config model
SHARED_SOURCE_KEYS = ("max_identity_group",)


def events_for(orders: list[Order], contacts: list[Contact], pairs: list[tuple[Order, Contact | None]] = ()
               ) -> list[tuple[str, str, int]]:
    """(dedupe key, payload, record) per order and per contact; ``record`` numbers the delivery's records (an order
    and the contact it carries are one).

    The key names the record (``order:<id>``, ``contact:<id>``): the queue drops a delivery whose payload is that of
    the record's latest event (a sender's retry) and queues any other, a changed order (refunded, corrected) or an
    earlier state that came back (:meth:`sync.ledger.queue.EventQueue.enqueue_events`). The contact an order carries
    is an event of its own: its state is checked against the contact's latest event, whatever order carried that
    (consent no with order 1, yes with order 2, no with order 1 again: a withdrawal, not order 1's retry). The order's
    event still carries its contact too, so a worker's batch that ends between the two applies the order with the
    consent it came with (a withdrawal and an order in one delivery: no tag pushed on the old consent first).
    """
    out = []
    for n, (order, contact) in enumerate([*pairs, *((o, None) for o in orders)]):
        out.append((f"order:{order.order_id}", encode_records([order], [contact] if contact else []), n))
        if contact is not None:
            out.append((f"contact:{contact.customer_id}", encode_records(contacts=[contact]), n))
    first = len(pairs) + len(orders)
    out.extend((f"contact:{c.customer_id}", encode_records(contacts=[c]), first + n) for n, c in enumerate(contacts))
    return out


#: a stale delivery's WARNING is told once per delivery per this many seconds, and for at most
#: :data:`STALE_WARNINGS` deliveries in it (:class:`StaleLog`)
STALE_WINDOW = 600.0
STALE_WARNINGS = 10


class StaleLog:
    """The WARNING of authentic deliveries refused for their time, rate-limited: a captured delivery replayed (by an
    attacker, or by a sender's retry storm) is told once per window (by its body's digest), and at most ``limit``
    deliveries are told per window (a delivery not told then is not taken for told: it is told in a later window).
    How many were not told in a window is a line of its own at the first refusal after that window ended (no timer
    runs: the count of a storm's last window waits for the next refusal, and the line says when that window began).
    Thread-safe and bounded (:class:`connectors.webhooks.ReplayGuard`)."""

    def __init__(self, window: float = STALE_WINDOW, limit: int = STALE_WARNINGS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.limit, self.clock = window, limit, clock
        self._told_of = ReplayGuard(ttl=window, max_size=10_000, clock=clock)
        self._lock = threading.Lock()
        self._start: float | None = None
        self._told = self._untold = 0

    def warn(self, kind: str, body: bytes, late: str) -> None:
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            now = self.clock()
            untold, began = 0, self._start
            if self._start is None or now - self._start >= self.window:
                self._start, self._told, untold, self._untold = now, 0, self._untold, 0
            tell = self._told < self.limit and self._told_of.first_time(digest)  # (marked told only when told)
            self._told += tell
            self._untold += not tell
        if untold and began is not None:
            log.warning("%s webhook: %s not logged in the %g min from %.0f min ago (a delivery is logged once per "
                        "%g min, at most %s per %g min)", kind, counted(
                            untold, "more authentic delivery refused for its time was",
                            "more authentic deliveries refused for their time were"), self.window / 60,
                        (now - began) / 60, self.window / 60, counted(self.limit, "delivery"), self.window / 60)
        if tell:
            log.warning("%s webhook: an authentic delivery refused: %s", kind, late)


@dataclass(frozen=True)
class CrmWebhooks:
    """The deliveries of one CRM source on this server: its registered parser, its webhook secret (``key``) and,
    for parsers that take it, the validated ``[source]`` (``conf``). Made once per server by :meth:`build`."""

    kind: str
    parser: WebhookParser
    key: str | None = field(repr=False)  # the webhook secret: never in a repr
    conf: Any = None
    stale_log: StaleLog = field(default_factory=StaleLog, repr=False, compare=False)

    @classmethod
    def build(cls, kind: str, cfg: Config, settings: Settings) -> CrmWebhooks:
        """Reading the vendor's secrets reads the environment (~3 ms): done once per source."""
        from connectors.registry import SOURCES, secrets_for

        parser = webhook_parser(kind)
        key = secret(getattr(secrets_for(kind, settings), parser.secret_field, None))
        conf = None
        if parser.needs_config:
            section = {k: v for k, v in cfg.source.items() if k not in SHARED_SOURCE_KEYS}
            conf = SOURCES[kind][0].model_validate(section)
        return cls(kind, parser, key, conf)

    def _stale(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """Why a delivery ``verify`` refused was refused, when it is authentic but of the wrong time (None: forged)."""
        try:
            return self.parser.stale(headers, body, self.key) if self.parser.stale and self.key else None
        except Exception:  # (as a verifier: garbage is never a 500)
            return None

    def events(self, headers: Mapping[str, str], body: bytes, path_token: str | None) -> list[tuple[str, str, int]]:
        """Verify and parse one delivery into queue events; raises :class:`BadRequest` (401, 400)."""
        kind, parser = self.kind, self.parser
        if not self.key:
            raise BadRequest(401, f"the {kind} webhook secret is not set on this server "
                                  "(see docs/sources/common.md)")
        try:
            ok = parser.verify(headers, body, self.key, path_token)
        except Exception:  # a verifier must never turn garbage into a 500
            ok = False
        if not ok:
            late = self._stale(headers, body)
            if late:  # authentic, refused for its time: a clock or a late delivery, not a wrong secret
                self.stale_log.warn(kind, body, late)
                raise BadRequest(401, f"{kind} webhook: refused, though authentic: {late}")
            raise BadRequest(401, f"{kind} webhook: authentication failed")
        try:
            args = (self.conf,) if parser.needs_config else ()
            orders, contacts = parser.parse(headers, body, *args)
            events = events_for(list(orders), list(contacts))
            pull_key = parser.pull_key(body) if parser.pull_key is not None else None
            if pull_key is not None:  # a delivery with ids only: queue one incremental pull
                events.append((PULL + pull_key, encode_records(pull=True),
                               1 + max((n for *_, n in events), default=-1)))
            return events
        except (RecordError, ValueError, TypeError, KeyError, RecursionError) as exc:
            raise BadRequest(400, f"{kind} webhook: {exc}") from None
        except Exception as exc:  # a parser bug must not read as "queue unavailable" (503) nor crash: the input is bad
            log.warning("%s webhook: the parser failed on a delivery (%s: %s)", kind, type(exc).__name__, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            raise BadRequest(400, f"{kind} webhook: the delivery cannot be parsed ({type(exc).__name__}: "
                                  f"{str(exc)[:200]})") from None


@dataclass
class Intake:
    """Everything the endpoints need; built by :func:`sync.serve.service.build_service`."""

    cfg: Config
    ledger: Ledger
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    on_queued: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time
    writer: EventWriter | None = None
    crm: dict[str, CrmWebhooks] = field(default_factory=dict, repr=False)  # per CRM source, made once
    #: the default country of a generic contact's phone: ``[source] phone_region``, validated as a source validates
    #: it (a bad one stops the server at its start, not a delivery)
    phone_region: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        try:
            self.phone_region = TypeAdapter(PhoneRegion).validate_python(self.cfg.source.get("phone_region"))
        except ValidationError as exc:
            raise ConfigError(f"[source] phone_region: {exc.errors()[0]['msg']}") from None

    def sources(self) -> list[str]:
        kind = str(self.cfg.source.get("type", "file"))
        return list(GENERIC) + ([kind] if kind in WEBHOOK_SOURCES else [])

    def event_writer(self) -> EventWriter:
        """The group-commit writer of this intake (created on first use)."""
        if self.writer is None:
            self.writer = EventWriter(self.ledger)
        return self.writer

    def prepare(self, source: str, headers: Mapping[str, str], body: bytes, path_token: str | None = None
                ) -> tuple[str, list[tuple[str, str, int]]]:
        """Verify and parse one delivery: (queue source name, [(dedupe key, payload, record)]) (:func:`events_for`);
        raises BadRequest."""
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
            return "generic", events_for([], [], parse_generic(body, self.cfg.timezone, self.phone_region))
        if source not in self.crm:
            self.crm[source] = CrmWebhooks.build(source, self.cfg, self.settings)
        return source, self.crm[source].events(headers, body, path_token)

    def _reply(self, events: list[tuple[str, str, int]], new_flags: list[bool]) -> dict[str, Any]:
        """Counted by record: an order is queued when it or the contact it carries is new work."""
        records = {n for _, _, n in events}
        new = len({n for (_, _, n), fresh in zip(events, new_flags) if fresh})
        if new:
            self.on_queued()
        return {"accepted": len(records), "queued": new, "duplicates": len(records) - new}

    async def accept_async(self, source: str, headers: Mapping[str, str], body: bytes,
                           path_token: str | None = None) -> dict[str, Any]:
        """Verify, parse and queue one delivery (committed when this returns); raises BadRequest.
        Small bodies are parsed inline (cheaper than a thread hop),
        large ones in the thread pool; the ledger write is group-committed and awaited."""
        if len(body) <= INLINE_PARSE_BYTES:
            queue_name, events = self.prepare(source, headers, body, path_token)
        else:
            queue_name, events = await run_in_threadpool(self.prepare, source, headers, body, path_token)
        fut = self.event_writer().submit([(queue_name, k, p) for k, p, _ in events])
        return self._reply(events, await asyncio.wrap_future(fut))
