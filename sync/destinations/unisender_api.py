"""The Unisender API seam: ``POST {api_url}/{method}?format=json`` through the retry layer, the envelope's
code → action table, the token bucket that paces calls, and the documented answer shapes.

The key travels in the form body (never the URL, never a log line). Answers are decoded from the
``{"result"}`` / ``{"error", "code"}`` envelope whatever the HTTP status, and sorted by :data:`CODE_ACTIONS`.
"""

from __future__ import annotations

import html
import logging
import time
import urllib.parse
from typing import Any, Callable, Mapping, Sequence

import requests

from connectors.digits import digits
from connectors.errors import TransientError
from connectors.secrets import mask, remember_secrets
from connectors.retry import RetryPolicy

from ..errors import DestinationConfigError, DestinationError
from .base import Action
from .answers import BadAnswer, Shape, excerpt, validate

log = logging.getLogger(__name__)




CODE_ACTIONS: Mapping[str, Action] = {
    "retry_later": Action.RETRY,
    "api_call_limit_exceeded_for_api_key": Action.RETRY,
    "api_call_limit_exceeded_for_ip": Action.RETRY,
    "invalid_api_key": Action.CONFIG,
    "access_denied": Action.CONFIG,
    "not_enough_money": Action.FATAL,
    "unknown_method": Action.FATAL,
    "invalid_arg": Action.RECORD,
    "unspecified": Action.RECORD,
}


def action_for(code: str | None, http_status: int = 200) -> Action:
    """The one rule: an envelope ``code`` decides (unknown codes are per-item); without one, 429/5xx retry."""
    if code:
        return CODE_ACTIONS.get(code, Action.RECORD)
    return Action.RETRY if http_status == 429 or http_status >= 500 else Action.FATAL



class LogEntry(Shape):
    index: int | str
    code: str | None = None
    message: str | None = None


class ImportResult(Shape):
    """``importContacts`` result (reference §3.3): every row sent is counted in ``total``; the rows it did not
    import in ``invalid``, each named by index (from 0) in ``log``; the others in ``inserted``, ``updated`` or
    ``deleted`` (``new_emails``: the new addresses among them, not another outcome). Whether a row sent unchanged
    is counted in any of those three is not documented (SendGrid counts its like as neither created nor updated),
    so only ``invalid`` says a row was not imported. Counts may come as text."""

    total: int | str
    inserted: int | str | None = None
    updated: int | str | None = None
    deleted: int | str | None = None
    new_emails: int | str | None = None
    invalid: int | str | None = None
    log: list[LogEntry] = []

    def judged(self, sent: int, raw: Any, secrets: Sequence[str], name: str) -> tuple[dict[int, str], set[int]]:
        """Row index → error, and the indexes its ``log`` names (refused for good), of ``sent`` rows: a
        ``total`` that is not ``sent``, a log index out of range or a count that is not a whole number:
        :class:`BadAnswer`. When ``invalid`` says more rows were not imported than the log names, which of the
        others it took is unknown: they fail as not believed. ``total`` less ``inserted`` + ``updated`` +
        ``deleted`` more than the log names (a row sent unchanged counted in none) is one warning, no failure."""
        label, indexes = "Unisender importContacts", [str(e.index) for e in self.log]
        if str(self.total) != str(sent) or not all(digits(i) and int(i) < sent for i in indexes):
            raise BadAnswer(label, f"total {self.total} / log indexes {indexes[:5]} for {sent} rows sent", raw,
                            secrets=secrets)
        try:
            invalid = _count("invalid", self.invalid) or 0
            taken = [_count(kind, getattr(self, kind)) for kind in ("inserted", "updated", "deleted")]
        except ValueError as exc:
            raise BadAnswer(label, str(exc), raw, secrets=secrets) from None
        errors = {int(e.index): f"Unisender rejected the row: {_text(e, secrets)}".strip() for e in self.log}
        named = set(errors)
        if invalid > len(named):
            why = (f"{label}: {invalid} of {sent} rows not imported (invalid), its log names {len(named)}; "
                   "the others' outcome cannot be believed")
            return {i: why for i in range(sent)} | errors, named
        unaccounted = sent - sum(n or 0 for n in taken) if any(n is not None for n in taken) else 0
        if unaccounted > len(named):
            log.warning("Unisender %s: importContacts counts %d of %d rows as neither inserted, updated nor "
                        "deleted (its log names %d, invalid %d): rows sent unchanged, taken as imported", name,
                        unaccounted, sent, len(named), invalid)
        return errors, named


def _text(entry: LogEntry, secrets: Sequence[str]) -> str:
    """A log entry's text: the vendor's, masked and cut (it may echo the request)."""
    return excerpt(f"{entry.code or ''} {entry.message or ''}".strip(), secrets)


def _count(name: str, value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if not digits(value.strip()):
        raise ValueError(f"{name} {value!r} is not a count")
    return int(value)


class ListItem(Shape):
    id: int | str
    title: str


class FieldItem(Shape):
    name: str


class Created(Shape):
    id: int | str


class Subscribed(Shape):
    person_id: int | str


class UnisenderError(DestinationError):
    """An envelope error; ``code`` is Unisender's string code, ``text`` its (unescaped) ``error`` message."""

    def __init__(self, message: str, *, code: str | None, status: int | None = None, text: str = "") -> None:
        super().__init__(message, status=status)
        self.code = code
        self.text = text

    @property
    def fatal(self) -> bool:
        """An account-wide refusal (:data:`CODE_ACTIONS` says fatal: ``not_enough_money``, ``unknown_method``)."""
        return CODE_ACTIONS.get(self.code or "") is Action.FATAL


class TokenBucket:
    """At most ``per_minute`` acquisitions in any 60 s window: burst ``per_minute/12``, steady refill after."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.burst = max(1, per_minute // 12)
        self.rate = max(per_minute - self.burst, 1) / 60.0
        self.clock, self.sleep = clock, sleep
        self.tokens, self.stamp = float(self.burst), clock()

    def acquire(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            wait = (1 - self.tokens) / self.rate
            self.sleep(wait)
            self.tokens, self.stamp = 1.0, max(self.clock(), now + wait)
        self.tokens -= 1



class UnisenderApi:
    """One account's API: :meth:`call` a method, :meth:`result` checks its answer against a shape."""

    def __init__(self, name: str, key: str, api_url: str, retry: RetryPolicy, timeout: float, bucket: TokenBucket,
                 session: requests.Session) -> None:
        self.name, self._key, self.api_url, self.retry, self.timeout = name, key, api_url, retry, timeout
        self.bucket, self._session = bucket, session
        remember_secrets(key)  # masked in the HTTP libraries' DEBUG lines (-vv) too

    def __repr__(self) -> str:
        return f"UnisenderApi(name={self.name!r}, api_url={self.api_url!r})"

    def call(self, method: str, params: Sequence[tuple[str, Any]] = (), *, idempotent: bool = True) -> Any:
        """One API method; returns ``result``. Retries transient answers (creates: only rate-limit codes)."""
        def once() -> Any:
            self.bucket.acquire()
            try:
                # never redirected: a 307 would post the form, its api_key, again wherever it pointed
                resp = self._session.post(f"{self.api_url}/{method}", params={"format": "json"},
                                          data=[("api_key", self._key), *params], timeout=self.timeout,
                                          allow_redirects=False)
            except (requests.ConnectionError, requests.Timeout) as exc:
                msg = (f"Unisender {method}: timed out after {self.timeout:g} s" if isinstance(exc, requests.Timeout)
                       else f"Unisender {method}: connection failed ({type(exc).__name__})")
                if idempotent:
                    raise TransientError(msg) from None
                # not retried here (it may have been done), but a later sync re-reads and plans again
                raise DestinationError(msg, transient=True) from None
            return self._decode(method, resp, idempotent)

        try:
            return self.retry.call(once, what=f"Unisender {method}")
        except TransientError as exc:
            # "...; gave up after N attempts"
            err = DestinationError(str(exc), status=exc.status, transient=True)
            err.exhausted = True  # type: ignore[attr-defined]  # the retries outlasted (not a lone unretried call)
            raise err from None

    def _decode(self, method: str, resp: requests.Response, idempotent: bool) -> Any:
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        log.debug("Unisender %s -> HTTP %s", method, resp.status_code)
        if isinstance(payload, dict) and (payload.get("error") or payload.get("code")):
            code = str(payload.get("code") or "unspecified")
            text = mask(html.unescape(str(payload.get("error") or "")), (self._key,))[:300]
            action = action_for(code, resp.status_code)
            msg = f"Unisender {method}: {code}: {text}"
            if action is Action.RETRY:  # a refusal: nothing was done, so even creates may retry
                raise TransientError(msg, status=resp.status_code, body=text)
            if action is Action.CONFIG:
                raise DestinationConfigError(f"Unisender destination {self.name!r}: the API key was rejected or "
                                             f"lacks rights ({code}) on {method}", status=resp.status_code)
            raise UnisenderError(msg, code=code, status=resp.status_code, text=text)
        if isinstance(payload, dict) and "result" in payload and resp.status_code < 400:
            for w in payload.get("warnings") or []:
                log.debug("Unisender %s warning: %s", method, mask(str(w), (self._key,)))
            return payload["result"]
        if 300 <= resp.status_code < 400 and resp.headers.get("Location"):  # not followed (see call)
            where = urllib.parse.urlsplit(urllib.parse.urljoin(resp.url, resp.headers["Location"]))
            raise DestinationConfigError(
                f"Unisender destination {self.name!r}: {method} was redirected (HTTP {resp.status_code}) to "
                f"{where.scheme}://{where.netloc.rpartition('@')[2]}; set UNISENDER_API_URL to that API "
                "(calls are not redirected: the key is in the posted form)", status=resp.status_code)
        action = action_for(None, resp.status_code)
        msg = f"Unisender {method}: HTTP {resp.status_code} without a JSON envelope"
        if action is Action.RETRY and (idempotent or resp.status_code == 429):
            raise TransientError(msg, status=resp.status_code)
        if resp.status_code < 300:  # a 2xx that is not the envelope: nothing in it can be believed
            reason = "no {result} or {error, code} envelope" if payload is not None else "not JSON"
            raise BadAnswer(f"Unisender {method}", reason, resp.content, secrets=(self._key,))
        raise DestinationError(f"{msg}: {excerpt(resp.content, (self._key,))!r}", status=resp.status_code,
                               transient=action is Action.RETRY)

    def result(self, method: str, shape: type[Shape], result: Any) -> Any:
        """``result`` checked against its documented shape (a list of items when ``result`` is a list)."""
        label = f"Unisender {method}"
        if shape in (ListItem, FieldItem):
            if not isinstance(result, list):
                raise BadAnswer(label, "result is not a list", result, secrets=(self._key,))
            return [validate(shape, item, label, result, secrets=(self._key,)) for item in result]
        return validate(shape, result, label, secrets=(self._key,))

