"""Shared plumbing for the API connectors: one HTTP client, vendor field parsing (``tombstone``, once here, is
re-exported lazily from :mod:`connectors.non_purchase`).

* :class:`HttpClient` wraps a ``requests.Session`` with explicit timeouts, a leaky-bucket
  :class:`Throttle`, the status → action table :data:`STATUS_ACTIONS` (data, tested
  table-driven), the mapping to :mod:`connectors.errors`, retries through the one
  :class:`connectors.retry.RetryPolicy` (idempotent calls only) and secret redaction
  (:mod:`connectors.secrets`) in every log line and error message.
* :class:`FieldError`, :func:`get_field` and the value parsers map vendor JSON fields, naming the
  field that cannot be mapped.

Cursors, pagination guards and staging (the incremental read) live in :mod:`connectors.incremental`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import requests

from .digits import digits
from .errors import AuthError, ConfigError, FatalError, TransientError
from .records import BadRow
from .retry import RetryPolicy, retry_after_from
from .secrets import masked_start, redact, redact_logger, remember_secrets
from .tables import MAX_DECIMAL

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds


class Action(Enum):
    OK = "ok"
    RETRY = "retry"  # TransientError: 429, 5xx, request timeout
    AUTH = "auth"  # AuthError: credentials rejected
    CONFIG = "config"  # ConfigError: wrong URL / account / plan
    FATAL = "fatal"  # FatalError: we sent something the vendor refuses; retrying won't help


#: HTTP status → what the caller must do. Statuses not listed: 2xx OK, other 5xx RETRY,
#: other 4xx FATAL. Vendors pass overrides (e.g. amoCRM 402 "account unpaid").
STATUS_ACTIONS: dict[int, Action] = {
    401: Action.AUTH,
    403: Action.AUTH,
    402: Action.CONFIG,
    404: Action.CONFIG,
    408: Action.RETRY,
    425: Action.RETRY,
    429: Action.RETRY,
    500: Action.RETRY,
    502: Action.RETRY,
    503: Action.RETRY,
    504: Action.RETRY,
}


def action_for(status: int, table: Mapping[int, Action] = STATUS_ACTIONS) -> Action:
    if status in table:
        return table[status]
    if 200 <= status < 300:
        return Action.OK
    if status >= 500:
        return Action.RETRY
    return Action.FATAL


#: loggers of the HTTP stack under rfmsync's clients that write URLs (urllib3's own)
REDACTED_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "urllib3.poolmanager")
for _name in REDACTED_LOGGERS:
    redact_logger(_name)

_REDIRECT_RULE = requests.sessions.SessionRedirectMixin()


def strips_credentials(old_url: str, new_url: str) -> bool:
    """requests' rule for a redirect from ``old_url`` to ``new_url``: credentials stay only on the same host,
    scheme and port (http → https on the default ports allowed)."""
    return _REDIRECT_RULE.should_strip_auth(old_url, new_url)


class Throttle:
    """Leaky bucket: ``burst`` calls at once, refilled at ``rate`` per second.

    ``pause(seconds)`` lets a client push the next call back when the vendor says its
    bucket is nearly full (Shopify's call-limit header).
    """

    def __init__(self, rate: float, burst: int = 1, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.sleep, self.clock = rate, burst, sleep, clock
        self._tokens = float(burst)
        self._last = clock()
        self._not_before = 0.0

    def pause(self, seconds: float) -> None:
        self._not_before = max(self._not_before, self.clock() + seconds)

    def acquire(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        wait = max(0.0, self._not_before - now)
        if self._tokens < 1:
            wait = max(wait, (1 - self._tokens) / self.rate)
        if wait > 0:
            self.sleep(wait)
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        self._tokens = max(0.0, self._tokens - 1)


class CredentialSession(requests.Session):
    """A session that drops every credential header on a redirect to another host: requests drops only
    ``Authorization`` and keeps the rest (RetailCRM's ``X-API-KEY``, Shopify's ``X-Shopify-Access-Token``)."""

    credential_headers: tuple[str, ...] = ()

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if self.should_strip_auth(response.request.url, prepared_request.url):
            for name in self.credential_headers:
                prepared_request.headers.pop(name, None)


@dataclass(repr=False)
class HttpClient:
    """One vendor's HTTP access. Errors name ``auth_env`` / ``url_env``, never a secret."""

    base_url: str
    vendor: str
    auth_env: str
    url_env: str
    headers: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    throttle: Throttle | None = None
    status_actions: Mapping[int, Action] = field(default_factory=dict)  # overrides of STATUS_ACTIONS
    #: called with every response; may return an Action to override the status table
    #: (vendors that signal errors inside a 200 body, or rate-limit headers)
    inspect: Callable[[requests.Response], Action | None] | None = None
    #: what to set so that calls go to ``target`` (``scheme://host[:port]``), a redirect to another host's advice;
    #: default: point ``url_env`` there (a variable holding a URL)
    redirect_advice: Callable[[str], str] | None = None
    session: requests.Session = field(default_factory=CredentialSession)
    #: called with the ``Date`` header of every answer the status checks accept and that is JSON or empty: the vendor's
    #: clock (:class:`connectors.runstart.RunStart`)
    on_date: Callable[[str | None], None] | None = None
    #: said after "check <auth_env>" when the credentials are refused: why a working one stops, what to do
    auth_advice: str = ""

    def __post_init__(self) -> None:
        if self.retry.timeout is not None and self.timeout == DEFAULT_TIMEOUT:  # [http] timeout_seconds
            self.timeout = (min(DEFAULT_TIMEOUT[0], self.retry.timeout), self.retry.timeout)
        self.status_actions = {**STATUS_ACTIONS, **self.status_actions}  # vendor overrides on top
        remember_secrets(*self.secrets)
        self.session.headers.update(self.headers)
        if isinstance(self.session, CredentialSession):  # the headers given are the credentials
            self.session.credential_headers = tuple(self.headers)

    def __repr__(self) -> str:  # never the headers, secrets or a secret-bearing URL
        return f"HttpClient(vendor={self.vendor!r}, base_url={self.safe(self.base_url)!r})"

    def safe(self, text: str) -> str:
        return redact(text, self.secrets)

    def get(self, path: str, params: Any = None) -> Any:
        return self.request("GET", path, params=params)

    def request(self, method: str, path: str, *, params: Any = None, json_body: Any = None,
                data: Any = None, idempotent: bool | None = None) -> Any:
        """Send one call and return its decoded JSON (``None`` for an empty body).

        Reads (GET, or ``idempotent=True`` for read-only POSTs) are retried on
        TransientError; anything else is sent once.
        """
        return self.fetch(method, path, params=params, json_body=json_body, data=data, idempotent=idempotent)[0]

    def fetch(self, method: str, path: str, *, params: Any = None, json_body: Any = None,
              data: Any = None, idempotent: bool | None = None) -> tuple[Any, requests.Response]:
        """Like :meth:`request`, also returning the response (headers, ``links``)."""
        url = path if path.startswith("http") else self.base_url.rstrip("/") + "/" + path.lstrip("/")
        what = f"{self.vendor} {method} {self.safe(url)}"

        def once() -> Any:
            return self._once(method, url, what, params=params, json_body=json_body, data=data)

        if idempotent if idempotent is not None else method == "GET":
            return self.retrying(once, what=what)
        return once()

    def retrying(self, fn: Callable[[], Any], *, what: str) -> Any:
        """``fn`` through the shared :class:`RetryPolicy` (whose last error says how many attempts it made;
        messages are already redacted)."""
        return self.retry.call(fn, what=what)

    def _check_redirects(self, resp: requests.Response, what: str) -> None:
        """A redirect to another host was followed without the credential headers (:class:`CredentialSession`):
        its answer (a 401, or data nobody authorised) is not the account's. Say where it went and what to set."""
        if not resp.history or not self.headers:
            return
        urls = [r.request.url or "" for r in resp.history] + [resp.request.url or resp.url]
        for old, new in zip(urls, urls[1:]):
            if strips_credentials(old, new):
                parts = urlsplit(new)
                target = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
                advice = self.redirect_advice(target) if self.redirect_advice else f"point {self.url_env} there"
                raise ConfigError(f"{what}: redirected to {self.safe(target)}; {self.safe(advice)} "
                                  "(credentials are not sent to another host)", status=resp.status_code)

    def _once(self, method: str, url: str, what: str, **kw: Any) -> Any:
        if self.throttle is not None:
            self.throttle.acquire()
        started = time.monotonic()
        try:
            resp = self.session.request(method, url, params=kw["params"], json=kw["json_body"],
                                        data=kw["data"], timeout=self.timeout)
        except requests.Timeout:
            raise TransientError(f"{what}: timed out after {self.timeout[1]:g} s") from None
        except (requests.exceptions.InvalidHeader, UnicodeEncodeError):  # no retry makes it pass
            raise AuthError(f"{self.vendor}: {self.auth_env} holds a line break, another control character or a "
                            "character outside latin-1 (a trailing newline from a file? a typographic quote?); a "
                            "header cannot carry it") from None
        except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL):
            raise ConfigError(f"{what}: not a URL like https://host (never retried); check {self.url_env}") from None
        except requests.RequestException as exc:
            raise TransientError(f"{what}: cannot connect ({type(exc).__name__}); check {self.url_env}") from None
        log.debug("%s -> %s in %.2fs", what, resp.status_code, time.monotonic() - started)
        self._check_redirects(resp, what)
        action = (self.inspect(resp) if self.inspect else None) or action_for(resp.status_code, self.status_actions)
        status = resp.status_code
        body = "" if action is Action.OK else self._excerpt(resp)  # (a page of data is not masked: it has no use)
        if action is Action.RETRY:
            after = retry_after_from(resp.headers, "Retry-After", "X-RateLimit-Reset")
            raise TransientError(f"{what}: HTTP {status}", status=status, body=body, retry_after=after)
        if action is Action.AUTH:
            raise AuthError(f"{self.vendor} rejected the credentials (HTTP {status}); check {self.auth_env}"
                            + (f": {self.auth_advice}" if self.auth_advice else ""),
                            status=status, body=body)
        if action is Action.CONFIG:
            raise ConfigError(f"{what}: HTTP {status}; check {self.url_env} and the account settings",
                              status=status, body=body)
        if action is Action.FATAL:
            raise FatalError(f"{what}: HTTP {status}: {body[:200]}", status=status, body=body)
        try:
            data = resp.json() if resp.content else None
        except ValueError:
            raise FatalError(f"{what}: answered something that is not JSON", status=status,
                             body=self._excerpt(resp)) from None
        if self.on_date is not None:  # (only now: a proxy's 504 or an HTML page dates its own clock, not the vendor's)
            self.on_date(resp.headers.get("Date"))
        return data, resp

    def _excerpt(self, resp: requests.Response, limit: int = 500) -> str:
        """The start of an answer an error keeps, masked, then cut (a secret across the cut leaves none of it):
        built only for an error, of the start only (a 1.4 MB page's redact() took 13 times its json.loads)."""
        return self.safe(masked_start(resp.text, limit, self.secrets))


def set_advice(setting: str, value: str, *, in_config: bool, env_prefix: str) -> str:
    """``set [source] <setting> = "<value>"`` when the config file holds it (it wins over the variable), else
    ``set <PREFIX><SETTING>=<value>``: a redirect's advice for a setting that is not a URL."""
    return (f'set [source] {setting} = "{value}"' if in_config
            else f"set {env_prefix}{setting.upper()}={value}")


def with_sleep(retry: RetryPolicy | None, sleep: Callable[[float], None] | None) -> RetryPolicy:
    """A copy of ``retry`` (default policy when None) using the injected ``sleep``."""
    retry = retry or RetryPolicy()
    return dataclasses.replace(retry, sleep=sleep) if sleep is not None else retry


def json_shape(value: Any) -> str:
    """What a decoded answer is, for an error saying it is not what was expected: ``an empty body``,
    ``a JSON list``, ``a JSON object with keys 'errors'``..."""
    if value is None:
        return "an empty body (or JSON null)"
    if isinstance(value, Mapping):
        keys = ", ".join(repr(str(k)[:40]) for k in list(value)[:5])
        return f"a JSON object with keys {keys}" if keys else "an empty JSON object"
    kind = {list: "list", str: "string", bool: "boolean"}.get(type(value), "number")
    return f"a JSON {kind}"


def answer_object(data: Any, what: str) -> Mapping[str, Any]:
    """A decoded answer that must be a JSON object (an account, a shop): else one :class:`FatalError` naming
    ``what`` and what came back (an HTML page, nothing, a list)."""
    if not isinstance(data, Mapping):
        raise FatalError(f"{what} answered {json_shape(data)}, not a JSON object")
    return data


# ---------------------------------------------------------------- value parsing


class FieldError(ValueError):
    """A vendor record field cannot be mapped; becomes a BadRow naming the record id."""

    def __init__(self, field: str, reason: str, value: Any = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason
        self.value = None if value is None else str(value)[:100]

    def bad_row(self, source: str, record_id: Any) -> BadRow:
        return BadRow(source=source, row=None if record_id in (None, "") else str(record_id), reason=self.reason,
                      field=self.field, value=self.value)


def get_field(raw: Mapping[str, Any], name: str, parse: Callable[[Any], Any], label: str | None = None) -> Any:
    """``parse(raw[name])`` or a FieldError naming the field (an OverflowError too: ``int(Infinity)``, which
    requests' JSON decoder accepts)."""
    value = raw.get(name) if isinstance(raw, Mapping) else None
    try:
        return parse(value)
    except (ValueError, TypeError, OverflowError) as exc:  # (no value: "missing", never Python's own text about None)
        raise FieldError(label or name, "missing" if value is None or value == "" else str(exc), value) from None


def get_object(raw: Mapping[str, Any], name: str, label: str | None = None) -> Mapping[str, Any]:
    """``raw[name]`` when it is an object, ``{}`` when it is absent or empty; a FieldError naming the field when
    the vendor sent something else (a string, a list, a number where its docs show an object)."""
    value = raw.get(name) if isinstance(raw, Mapping) else None
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise FieldError(label or name, "must be an object", value)
    return value


def get_list(raw: Mapping[str, Any], name: str, label: str | None = None) -> list[Any]:
    """``raw[name]`` when it is a list, ``[]`` when it is absent or empty; a FieldError naming the field else."""
    value = raw.get(name) if isinstance(raw, Mapping) else None
    if not value:
        return []
    if not isinstance(value, list):
        raise FieldError(label or name, "must be a list", value)
    return value


def parse_dt(value: Any, tz: str | ZoneInfo = "UTC") -> datetime:
    """ISO 8601, ``Y-m-d H:i:s`` (in ``tz`` when naive) or Unix seconds → aware UTC datetime."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError("missing date")
    if isinstance(value, (int, float)) or digits(value):
        try:
            return datetime.fromtimestamp(int(value), tz=timezone.utc)
        except (OverflowError, OSError):  # past the platform's clock: a ValueError as every other bad date
            raise ValueError(f"not a date: Unix time {str(value)[:40]} is out of range") from None
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone)
    return dt.astimezone(timezone.utc)


def to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError("missing amount")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    if abs(number) >= MAX_DECIMAL:  # (no stored column holds it: the record is reported, its page goes on)
        raise ValueError(f"out of range (at most 15 digits before the point): {value!r}")
    return number


def clean(value: Any) -> str | None:
    """A stripped string or None."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None



def __getattr__(name: str) -> Any:
    """``tombstone`` lived here before :mod:`connectors.non_purchase` (which imports this module): still importable
    from here, lazily, for code written against it."""
    if name == "tombstone":
        from .non_purchase import tombstone

        return tombstone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
