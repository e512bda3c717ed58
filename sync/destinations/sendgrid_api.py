"""The SendGrid API seam: one call through the retry layer (official ``sendgrid`` client, ``host`` override),
the status → action table, job polling, and the documented answer shapes.

Every HTTP status maps to one action in :data:`STATUS_ACTIONS`; retries happen only in
:class:`connectors.retry.RetryPolicy` (429 waits for ``X-RateLimit-Reset``). Answers are validated before they
are believed (:mod:`sync.destinations.answers`).
"""

from __future__ import annotations

import csv
import gzip
import http.client
import io
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
import zlib
from typing import Any, Callable, Literal, Mapping, Sequence

import requests
from pydantic import Field
from python_http_client import exceptions as phc_errors
from sendgrid import SendGridAPIClient

from connectors.errors import TransientError
from connectors.http import strips_credentials
from connectors.secrets import RedactSecrets, mask, remember_secrets
from connectors.retry import RetryPolicy, retry_after_from

from ..errors import DestinationConfigError, DestinationError
from .base import Action
from .answers import Shape, excerpt, parse_answer

log = logging.getLogger(__name__)




STATUS_ACTIONS: Mapping[int, Action] = {
    400: Action.RECORD, 401: Action.CONFIG, 403: Action.CONFIG, 404: Action.FATAL, 405: Action.FATAL,
    408: Action.RETRY, 413: Action.RECORD, 415: Action.FATAL, 429: Action.RETRY,
    500: Action.RETRY, 502: Action.RETRY, 503: Action.RETRY, 504: Action.RETRY,
}


def action_for_status(status: int) -> Action:
    """The one status → action rule: the table, else 5xx retry, else fatal."""
    return STATUS_ACTIONS.get(status, Action.RETRY if status >= 500 else Action.FATAL)



class Refused(Exception):
    """A 400/413 on a content-bearing call: handled per contact by the caller."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.errors = status, errors


def decode_body(raw: bytes | str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def error_text(payload: Any, limit: int = 300) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("errors"), list):
        msgs = [str(e.get("message", "")) + (f" ({e['field']})" if e.get("field") else "")
                for e in payload["errors"] if isinstance(e, dict)]
        return "; ".join(msgs)[:limit]
    return json.dumps(payload)[:limit] if payload is not None else ""


class JobId(Shape):
    job_id: str


class Id(Shape):
    id: str


class JobResults(Shape):
    requested_count: int | None = None  # absent while pending; a finished job must say how many it took
    # what became of the contacts, by kind: which kinds a job reports depends on its type, and nothing says
    # they add up to requested_count (a contact sent unchanged is neither created nor updated): not checked
    created_count: int | None = None
    updated_count: int | None = None
    unmodified_count: int | None = None
    deleted_count: int | None = None
    errored_count: int = 0
    errors_url: str | None = None


class ImportJob(Shape):
    """``GET /v3/marketing/contacts/imports/{id}``."""

    status: Literal["pending", "completed", "errored", "failed"]
    results: JobResults | None = None


class ExportJob(Shape):
    status: str
    urls: list[str] | None = None
    message: str | None = None


class ListItem(Shape):
    id: str
    name: str
    contact_count: int | None = None


class ListsPage(Shape):
    result: list[ListItem]
    metadata: dict[str, Any] | None = Field(default=None, alias="_metadata")


class FieldDef(Shape):
    id: str
    name: str
    field_type: str = "Text"


class Reserved(Shape):
    name: str


class FieldDefinitions(Shape):
    custom_fields: list[FieldDef]
    reserved_fields: list[Reserved] = []


class Search(Shape):
    result: dict[str, Any]


class _RedactAuthorization(RedactSecrets):
    """python_http_client logs request headers at DEBUG, Authorization included, and answers (a job's pre-signed
    ``errors_url``): mask both."""

    _PATTERN = re.compile(r"(['\"]?Authorization['\"]?\s*:\s*['\"]?)Bearer [^'\",}]+", re.I)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "uthorization" in msg:
            record.msg, record.args = self._PATTERN.sub(r"\1Bearer ***", msg), None
        return super().filter(record)


_phc_logger = logging.getLogger("python_http_client.client")
if not any(isinstance(f, _RedactAuthorization) for f in _phc_logger.filters):
    _phc_logger.addFilter(_RedactAuthorization())



class _KeyStaysHome(urllib.request.HTTPRedirectHandler):
    """urllib follows a redirect with every header but the content ones, ``Authorization`` included, to any URL:
    only where requests would keep it (same host, scheme and port; http → https allowed)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and strips_credentials(req.full_url, newurl):  # another host, scheme or port
            new.headers.pop("Authorization", None)
            new.unredirected_hdrs.pop("Authorization", None)
        return new



class SendGridApi:
    """One account's API: :meth:`request`, :meth:`download` (pre-signed job files) and :meth:`poll` (jobs)."""

    def __init__(self, name: str, key: str, api_url: str, retry: RetryPolicy, timeout: float,
                 sleep: Callable[[float], None], poll_interval: float, job_timeout: float) -> None:
        self.name, self.retry, self.timeout, self._sleep = name, retry, timeout, sleep
        self.poll_interval, self.job_timeout = poll_interval, job_timeout
        self._sg = SendGridAPIClient(api_key=key, host=api_url)
        self.secrets = (key,)  # masked in the raw answers errors keep (a page echoing the request's headers)
        remember_secrets(key)  # and in python_http_client's DEBUG lines (-vv), which print error answers
        self._sg.client.timeout = timeout

    def __repr__(self) -> str:
        return f"SendGridApi(name={self.name!r})"

    def request(self, method: str, parts: Sequence[str], body: Any = None, query: Mapping[str, Any] | None = None,
                 *, what: str, idempotent: bool = True, ok_404: bool = False,
                 shape: type[Shape] | None = None) -> tuple[int, Any]:
        """One call through the retry layer: (status, answer). With ``shape`` a 2xx body is validated and comes
        back as that model (:class:`BadAnswer` otherwise, not retried here); without one, decoded JSON or None."""
        def once() -> tuple[int, Any]:
            node = self._sg.client
            for part in parts:
                node = node._(part)
            make_request = node._make_request  # the client's own opener follows a redirect with the key
            node._make_request = lambda _opener, request, timeout=None: make_request(
                urllib.request.build_opener(_KeyStaysHome), request, timeout)  # (as the client: one per call)
            try:
                resp = getattr(node, method)(request_body=body, query_params=dict(query) if query else None,
                                             timeout=self.timeout)
            except phc_errors.HTTPError as exc:
                return self._on_http_error(exc.status_code, exc.body, exc.headers, what, idempotent, ok_404)
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                timed_out = isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
                msg = (f"SendGrid {what}: timed out after {self.timeout:g} s" if timed_out
                       else f"SendGrid {what}: connection failed ({type(exc).__name__})")
                if idempotent:
                    raise TransientError(msg) from None
                # not retried here (it may have been done), but a later sync re-reads and plans again
                raise DestinationError(msg, transient=True) from None
            log.debug("SendGrid %s %s -> %s", method.upper(), "/".join(parts), resp.status_code)
            if shape is not None:
                return resp.status_code, parse_answer(shape, resp.body, f"SendGrid {what}", self.secrets)
            return resp.status_code, decode_body(resp.body)

        try:
            return self.retry.call(once, what=f"SendGrid {what}")
        except TransientError as exc:
            raise DestinationError(str(exc), status=exc.status, body=exc.body,  # "...; gave up after N attempts"
                                   retry_after=exc.retry_after, transient=True) from None

    def _on_http_error(self, status: int, raw: bytes, headers: Any, what: str, idempotent: bool,
                       ok_404: bool) -> tuple[int, Any]:
        # an answer echoing the request (its Authorization header) keeps no secret in any error made of it
        text = raw if isinstance(raw, str) else bytes(raw or b"").decode("utf-8", "replace")
        payload = decode_body(mask(text, self.secrets))
        text = error_text(payload)
        if status == 404 and ok_404:
            return status, payload
        action = action_for_status(status)
        msg = f"SendGrid {what}: HTTP {status}" + (f": {text}" if text else "")
        if action is Action.RETRY and (idempotent or status == 429):
            wait = retry_after_from(headers, "X-RateLimit-Reset", "Retry-After") if status == 429 else None
            raise TransientError(msg, status=status, body=text, retry_after=wait)
        if action is Action.CONFIG:
            raise DestinationConfigError(f"SendGrid destination {self.name!r}: the API key was rejected or lacks "
                                         f"the Marketing scopes ({what}: HTTP {status})", status=status, body=text)
        if action is Action.RECORD:
            errors = payload.get("errors") if isinstance(payload, dict) else None
            raise Refused(status, errors if isinstance(errors, list) else [{"message": text or f"HTTP {status}"}])
        raise DestinationError(msg, status=status, body=text, transient=action is Action.RETRY)

    def download(self, url: str, what: str) -> bytes:
        """Fetch a job's errors/export file: a pre-signed URL, fetched WITHOUT the API key.

        Every failure is a :class:`DestinationError` naming ``what`` (the job's file), never the URL (its
        signature reads the file without any key): a connection error, a timeout, a body cut short or a 429/5xx
        retried, then transient; an expired link (the storage host's 403, its body XML), a 404 or another 4xx;
        a gzip file that does not decompress (truncated). Never an internal error: the caller fails the
        contacts the file was to tell about (kept as failures, sent again next run) or stops its read."""
        def once() -> bytes:
            try:
                resp = requests.get(url, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:
                raise TransientError(f"SendGrid {what}: download failed ({type(exc).__name__})") from None
            except requests.RequestException as exc:  # an unusable URL, too many redirects: the URL not shown
                raise DestinationError(f"SendGrid {what}: download failed ({type(exc).__name__})") from None
            status = resp.status_code
            if status == 429 or status >= 500:
                raise TransientError(f"SendGrid {what}: download HTTP {status}", status=status)
            if status >= 400:
                why = {403: "the pre-signed link expired or was refused", 404: "no such file"}.get(status, "refused")
                raise DestinationError(f"SendGrid {what}: download HTTP {status} ({why})", status=status)
            data = resp.content
            if data[:2] != b"\x1f\x8b":
                return data
            try:
                return gzip.decompress(data)
            except (OSError, EOFError, zlib.error):  # BadGzipFile is an OSError; a cut stream an EOFError
                raise DestinationError(f"SendGrid {what}: the gzip file does not decompress (truncated or "
                                       f"damaged, {len(data)} bytes)") from None

        try:
            return self.retry.call(once, what=f"SendGrid {what}")
        except TransientError as exc:
            raise DestinationError(str(exc), status=exc.status, transient=True) from None

    def poll(self, parts: Sequence[str], done: Callable[[Any], bool], what: str, shape: type[Shape]) -> Any:
        waited, interval, misses = 0.0, self.poll_interval, 0
        while True:
            status, payload = self.request("get", parts, what=what, ok_404=True, shape=shape)
            if status == 404:  # a fresh job may not be visible yet
                misses += 1
                if misses > 5:
                    raise DestinationError(f"SendGrid {what}: job not found", status=404)
            elif done(payload):
                return payload
            if waited >= self.job_timeout:
                raise DestinationError(f"SendGrid {what}: still pending after {waited:.0f}s", transient=True)
            self._sleep(interval)
            waited += interval
            interval = min(interval * 2, 10.0)

    # ---------------------------------------------------------------- lists and fields

def page_token(next_url: str | None) -> str | None:
    if not next_url:
        return None
    from urllib.parse import parse_qs, urlsplit

    return (parse_qs(urlsplit(next_url).query).get("page_token") or [None])[0] or None


_INDEXED = re.compile(r"contacts\[(\d+)\]")


def indexed_errors(errors: Sequence[dict[str, Any]]) -> dict[int, str]:
    out: dict[int, str] = {}
    for err in errors:
        m = _INDEXED.search(str(err.get("field") or ""))
        if m:
            out[int(m.group(1))] = f"SendGrid rejected the contact: {err.get('message', 'invalid')}"
    return out


def _rows(data: bytes, what: str) -> list[dict[str, str]]:
    """A job file's CSV rows (lower-cased column names); :class:`DestinationError` when it is not a CSV with an
    e-mail column (an HTML or XML page in its place: believed, it would name nobody, or an empty list)."""
    text = data.decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    try:
        columns = {(k or "").strip().lower() for k in reader.fieldnames or ()}
        if not columns & {"email", "e-mail"}:
            raise DestinationError(f"SendGrid {what}: not a CSV file with an e-mail column (it starts "
                                   f"{excerpt(text, limit=40)!r})")
        return [{(k or "").strip().lower(): (v or "") for k, v in row.items()} for row in reader]
    except csv.Error as exc:
        raise DestinationError(f"SendGrid {what}: not a readable CSV file ({exc})") from None


def parse_errors_csv(data: bytes, what: str = "import errors file") -> dict[str, str]:
    """The import errors file (format unpublished): any e-mail column plus an error/errors/message column."""
    out: dict[str, str] = {}
    for row in _rows(data, what):
        email = row.get("email") or row.get("e-mail") or ""
        msg = row.get("errors") or row.get("error") or row.get("message") or "rejected"
        if email:
            out[email.strip().lower()] = f"SendGrid rejected the contact: {msg}"
    return out


def emails_from_csv(data: bytes, what: str = "export file") -> set[str]:
    return {(r.get("email") or r.get("e-mail") or "").strip().lower() for r in _rows(data, what)} - {""}


