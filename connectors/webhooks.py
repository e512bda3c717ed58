"""Webhook parsers of the CRM sources, and the helpers they share.

The registry: each CRM module describes how ``rfmsync serve`` handles its deliveries with one
:class:`WebhookParser` (how to verify, how to parse, which secret, whether parsing needs the validated
``[source]`` table, whether an ids-only delivery asks for an incremental pull) and registers it with
:func:`register_webhook_parser`. The server looks a source up with :func:`webhook_parser`.

The helpers: constant-time token/HMAC checks, freshness, replay guard, PHP form parser. Per-vendor
``verify_webhook`` / ``parse_webhook`` live in the vendor modules and build on these. Every comparison of a
secret goes through :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, TypeVar
from urllib.parse import parse_qsl

from .digits import digits
from .records import Contact, Order

R = TypeVar("R", Order, Contact)
log = logging.getLogger(__name__)

#: how far a vendor's modification time may be ahead of when the delivery was accepted (hosts' clocks disagree a
#: little); a later one is a wrong clock or offset, not the version's time: taken, it would make every later
#: version of the record (a withdrawal included) look older, until that time came
FUTURE_MARGIN = timedelta(minutes=5)


def too_far_ahead(at: datetime, accepted: datetime | None = None) -> bool:
    """Whether the vendor time ``at`` is later than ``accepted`` (default: now) plus :data:`FUTURE_MARGIN`."""
    return at > (accepted or datetime.now(timezone.utc)) + FUTURE_MARGIN

#: Deliveries older than this are refused as stale (Shopify retries for 4 h).
DEFAULT_MAX_AGE = timedelta(hours=5)

#: The sources whose webhooks ``rfmsync serve`` accepts; each one's module registers its parser on import.
WEBHOOK_SOURCES = ("shopify", "retailcrm", "amocrm", "bitrix24")


# ---------------------------------------------------------------- the parser registry


@dataclass(frozen=True)
class WebhookParser:
    """How the server handles one source's deliveries.

    * ``verify(headers, body, secret, path_token) -> bool``: authentic or not (never raises on garbage:
      the server treats an exception as "not authentic");
    * ``parse(headers, body, config)`` (``needs_config``) or ``parse(headers, body)``: the delivery's
      ``(orders, contacts)``; raises ValueError / RecordError for a bad delivery;
    * ``secret_field``: the field of the source's secrets class holding the webhook secret or token;
    * ``pull_key(body)``: for deliveries that carry ids only, the dedupe key of the incremental pull the
      server queues (None: no pull); absent when the source's deliveries are always complete records;
    * ``stale(headers, body, secret)``: for a delivery ``verify`` refused, why, when it is authentic but refused for
      its time (:func:`stale_reason`); None for a forgery. Absent when deliveries carry no time.
    """

    verify: Callable[[Mapping[str, str], bytes, str, str | None], bool]
    parse: Callable[..., tuple[Iterable[Order], Iterable[Contact]]]
    secret_field: str
    needs_config: bool = False
    pull_key: Callable[[bytes], str | None] | None = None
    stale: Callable[[Mapping[str, str], bytes, str], str | None] | None = None


WEBHOOK_PARSERS: dict[str, WebhookParser] = {}


def register_webhook_parser(kind: str, parser: WebhookParser) -> WebhookParser:
    """Called once by each source module listed in :data:`WEBHOOK_SOURCES`."""
    WEBHOOK_PARSERS[kind] = parser
    return parser


def webhook_parser(kind: str) -> WebhookParser:
    """The parser of ``kind`` (its module is imported on first use); KeyError for a source without webhooks."""
    if kind not in WEBHOOK_PARSERS and kind in WEBHOOK_SOURCES:
        importlib.import_module(f".{kind}", __package__)  # registers its parser
    return WEBHOOK_PARSERS[kind]


def body_digest(body: bytes) -> str:
    """A short content hash of a delivery (a pull key for deliveries that carry no delivery id)."""
    return hashlib.sha256(body.decode("utf-8", "replace").encode()).hexdigest()[:32]


# ---------------------------------------------------------------- helpers


def tokens_equal(given: str | bytes | None, expected: str | bytes | None) -> bool:
    """Constant-time equality; False when either side is missing or empty."""
    if not given or not expected:
        return False
    a = given.encode() if isinstance(given, str) else given
    b = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


def hmac_sha256_base64(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


def json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """``text`` decoded as a JSON object; else ValueError: ``{what} is not valid JSON`` / ``is not a JSON object``."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} is not a JSON object")
    return data


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup over any mapping."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def is_fresh(sent_at: datetime | None, now: datetime | None = None, max_age: timedelta = DEFAULT_MAX_AGE) -> bool:
    """True when ``sent_at`` is known and not older than ``max_age`` (nor ahead by more than :data:`FUTURE_MARGIN`)."""
    return sent_at is not None and not stale_reason(sent_at, "it", now, max_age)


def stale_reason(sent_at: datetime, what: str, now: datetime | None = None,
                 max_age: timedelta = DEFAULT_MAX_AGE) -> str | None:
    """Why a delivery stamped ``sent_at`` (by its ``what``, e.g. a header) is refused as not fresh, naming the clock
    difference; None when it is fresh. An authentic delivery refused so is a clock or a late delivery, not a forgery."""
    now = now or datetime.now(timezone.utc)
    age = now - sent_at
    if age > max_age:
        return (f"{what} ({sent_at.isoformat()}) is {_span(age)} old, and deliveries older than {_span(max_age)} are "
                "refused (a replay, a delivery held back, or this host's clock ahead)")
    if -age > FUTURE_MARGIN:
        return (f"{what} ({sent_at.isoformat()}) is {_span(-age)} ahead of this host's clock (at most "
                f"{_span(FUTURE_MARGIN)} is accepted): check this host's clock and the sender's")
    return None


def _span(delta: timedelta) -> str:
    """``6 h``, ``6 h 5 min``, ``5 min 59 s`` (whole seconds; the seconds only under an hour)."""
    seconds = int(delta.total_seconds())
    parts = [(seconds // 3600, "h"), (seconds % 3600 // 60, "min"), (0 if seconds >= 3600 else seconds % 60, "s")]
    return " ".join(f"{n} {unit}" for n, unit in parts if n) or "0 s"


class ReplayGuard:
    """Remembers delivery ids for ``ttl`` seconds; ``first_time(id)`` is False for a replay.

    Thread-safe and bounded (oldest ids are forgotten first). Use one per process for the
    webhook endpoint, keyed by the vendor's delivery id (``X-Shopify-Webhook-Id``, Bitrix24
    ``event_handler_id + ts + ID``).
    """

    def __init__(self, ttl: float = DEFAULT_MAX_AGE.total_seconds(), max_size: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.max_size, self.clock = ttl, max_size, clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str) -> bool:
        now = self.clock()
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now - self.ttl
                                  or len(self._seen) >= self.max_size):
                self._seen.popitem(last=False)
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True


def parse_php_form(body: bytes) -> dict[str, Any]:
    """``leads[add][0][id]=5&account[subdomain]=x`` → nested dicts (numeric keys stay strings).

    Raises ValueError naming the key when the body is not form data or keys conflict.
    """
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"webhook body is not form-encoded data: {exc}") from None
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        path = [head] + ([p for p in rest.rstrip("]").split("][")] if rest else [])
        node = root
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"webhook field {'.'.join(path[:i + 1])} is both a value and a group")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise ValueError(f"webhook field {key} is both a value and a group")
        node[path[-1]] = value
    return root


def versioned(record: R, payload: Mapping[str, Any], key: str = "updated_at", what: str = "webhook") -> R:
    """``record`` with the vendor's modification time of this version (the payload's ``key``: ISO 8601 or Unix
    seconds), when the payload has one: the server then orders the record's versions by it, not by when it accepted
    each delivery (a delivery retried after a newer one is stale). Raises :class:`~connectors.http.FieldError`
    naming the field when it is there but not a date. A time later than now by more than :data:`FUTURE_MARGIN` (the
    vendor's clock or offset wrong) is not taken: the version is untimed (ordered by acceptance), and it is logged;
    the delivery is not refused for it. A CRM pull stamps its records the same way (``what``: the log's prefix):
    the store then leaves out a later delivery older than the pulled version (:mod:`sync.store`)."""
    from .http import get_field, parse_dt  # here: the store imports this module, and a scoring run no HTTP client

    if payload.get(key) in (None, ""):
        return record
    at = get_field(payload, key, parse_dt)
    if too_far_ahead(at):
        log.warning("%s: %s's %s %s is in the future: ignored (the version is ordered by acceptance); "
                    "check the vendor's clock or time zone", what,
                    f"order {record.order_id}" if isinstance(record, Order) else "a contact", key, at.isoformat())
        return record
    return replace(record, updated_at=at)


def as_list(node: Any) -> list[Any]:
    """A PHP-style ``{"0": …, "1": …}`` group (or a list, or one item) as a list in index order."""
    if node is None:
        return []
    if isinstance(node, list):
        return node
    if isinstance(node, dict) and node and all(digits(k) for k in node):  # ("²" is no index: int() refuses it)
        return [node[k] for k in sorted(node, key=int)]
    return [node]
