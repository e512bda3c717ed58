"""The Mailchimp API seam: one call through the retry layer, its status table, the SDK's quirks (the documented
answer shapes are :mod:`sync.destinations.mailchimp_answers`).

Errors: :data:`STATUS_ACTIONS` (data, one table) maps HTTP statuses to an :class:`~sync.destinations.base.Action`.
``retry`` becomes :class:`connectors.errors.TransientError` (with ``retry_after``), which the one retry layer
(:class:`connectors.retry.RetryPolicy`) retries; once it gives up that is a :class:`DestinationError`.
SDK quirks handled here: errors are ``ApiClientError`` whose ``.text`` is the raw problem+json string (the SDK
only parses ``application/json``) and which carries no headers; empty-body answers (a body-less 429/403, a
204) come back as a bare ``requests.Response`` instead of an exception. The API key lives only inside the
SDK client: it is never logged, never put in an error, never shown in a repr.

Answers are validated before they are believed (:mod:`sync.destinations.answers`): a 2xx body is re-read from
the raw response and checked against the documented shape (:mod:`sync.destinations.mailchimp_answers`).
"""

from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import requests
from requests.auth import HTTPBasicAuth
from requests.cookies import RequestsCookieJar
from requests.structures import CaseInsensitiveDict
from pydantic import TypeAdapter
from mailchimp_marketing.api.lists_api import ListsApi
from mailchimp_marketing.api_client import ApiClient, ApiClientError

from connectors.errors import TransientError
from connectors.secrets import mask, remember_secrets
from connectors.retry import RetryPolicy, retry_after_from
from connectors.runstart import server_date

from ..errors import DestinationConfigError, DestinationError
from .base import Action
from .answers import BadAnswer, Shape, decode_json, parse_answer, validate
from .mailchimp_answers import problem_document

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # `count` maximum on GET collections

#: HTTP status -> what the caller does: retry (transient), config (fix settings), item (this batch's items
#: failed, carry on), fatal (stop). Other 5xx retry, other 4xx are fatal.
STATUS_ACTIONS: Mapping[int, Action] = MappingProxyType({
    400: Action.RECORD, 401: Action.CONFIG, 403: Action.CONFIG, 404: Action.CONFIG, 405: Action.FATAL,
    408: Action.RETRY, 422: Action.RECORD, 429: Action.RETRY, 500: Action.RETRY, 502: Action.RETRY,
    503: Action.RETRY, 504: Action.RETRY,
})
#: "At exceptionally high volumes, you may receive an HTTP 429 or 403 without a JSON body": a body-less
#: 403 is throttling, not a rejected key.
EMPTY_BODY_ACTIONS: Mapping[int, Action] = MappingProxyType({403: Action.RETRY, 429: Action.RETRY})

#: an error text meaning "this address is not in the audience" (tag calls; the update pass without a status)
NOT_A_MEMBER = re.compile(r"not (?:a )?(?:list )?member|does not exist|doesn't exist|not found|status is required",
                           re.I)


def action_for(status: int, empty_body: bool = False) -> Action:
    """Look up :data:`STATUS_ACTIONS` (and :data:`EMPTY_BODY_ACTIONS` for body-less answers)."""
    if empty_body and status in EMPTY_BODY_ACTIONS:
        return EMPTY_BODY_ACTIONS[status]
    return STATUS_ACTIONS.get(status, Action.RETRY if status >= 500 else Action.FATAL)



def may_have_landed(status: int | None) -> bool:
    """Whether a call retried after this status may have been carried out all the same: its answer lost on the way
    (a timeout, a connection dropped, an answer cut off mid-body: no status), or a gateway's or server's error (5xx,
    408) given after the work or in its middle. A 429 or a body-less 403 (throttling) turned it away before any
    work."""
    return status is None or status >= 500 or status == 408


@dataclass
class Sent:
    """What :meth:`MailchimpApi.call` learnt of a write call's attempts: when the first attempt whose answer was
    lost (:func:`may_have_landed`) was sent (``lost_at``, the host's monotonic clock; None: none was), when the
    answer finally read arrived (``answered``, the same clock; ``at``: the host's wall clock then) and the ``Date``
    it carried (``date``: the vendor's clock, whole seconds; None: no such header). Read after a lost answer, or
    whenever ``dated``: a call sending creates an earlier run may have carried out
    (:mod:`~sync.destinations.mailchimp_resent`)."""

    lost_at: float | None = None
    answered: float | None = None
    date: datetime | None = None
    dated: bool = False
    at: datetime | None = None


class BatchRejected(DestinationError):
    """The API refused one whole call as invalid (400): its items are reported failed, the sync goes on."""


from .mailchimp_bodies import JsonText, _encode_body


class _ApiClient(ApiClient):
    """The SDK's client plus two seams: keep this thread's last raw response (``ApiClientError`` drops headers),
    and send every call through one pooled :class:`requests.Session`'s adapter (the SDK calls ``requests.post``
    & co., which open a new connection, and on the real API a new TLS handshake, for every call), the request
    prepared as the session would (:meth:`prepare`).

    The session reads the environment (proxies, ``no_proxy``, ``REQUESTS_CA_BUNDLE``) once, for the API's host,
    instead of scanning ``os.environ`` at every call; and a body is read in one piece rather than in requests'
    10 kB chunks: a batch answer (500 full member objects) took a dozen socket reads, and each gives up and
    waits to re-take the interpreter lock, which while other threads work costs up to the switch interval
    (5 ms) each time: that, not the vendor's latency, bounded the apply."""

    def __init__(self, config: dict[str, Any], host: str, connections: int = 10) -> None:
        super().__init__(config)
        self.host = host
        self.last = threading.local()
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=connections)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        env = self.session.merge_environment_settings(host, {}, None, None, None)
        self.session.proxies.update(env["proxies"])
        self.session.verify = env["verify"]
        self.session.trust_env = False  # read above, once (no .netrc either: the key is the only credential)
        self.session.cookies.set_policy(_NO_COOKIES)
        self._urls: dict[str, str] = {}  # a URL without a query -> as prepared
        self._authorization: tuple[Any, str] = (None, "")  # the API key -> its basic-auth header

    def prepare(self, method: str, url: str, query_params: Any = None, headers: Any = None, data: Any = None
                ) -> requests.PreparedRequest:
        """The request :meth:`requests.Session.request` would prepare on this session (tested: the same URL,
        headers and body): its default headers under the call's, the URL with its query, the body, basic auth,
        and no cookies (the session keeps none: :data:`_NO_COOKIES`). Made by the
        :class:`~requests.PreparedRequest`'s own steps, without the session's merging of settings and cookie
        jars, whose checks against ``requests``' runtime protocols took about a tenth of a batch call's CPU; a
        URL without a query is prepared once, the key's ``Authorization`` header once."""
        merged = CaseInsensitiveDict(self.session.headers)
        merged.update(headers or {})
        for key in [k for k, v in merged.items() if v is None]:
            del merged[key]
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        if query_params:
            prepared.prepare_url(url, query_params)
        else:
            prepared.url = self._urls.get(url) or self._prepared_url(url)
        prepared.prepare_headers(merged)
        prepared.prepare_body(data, None)
        if self.is_basic_auth:
            if self._authorization[0] != self.api_key:
                self._authorization = (self.api_key, HTTPBasicAuth("user", self.api_key)(prepared).headers[
                    "Authorization"])
            prepared.headers["Authorization"] = self._authorization[1]
        prepared.prepare_hooks(None)
        return prepared

    def _prepared_url(self, url: str) -> str:
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        if len(self._urls) < 1000:  # the audience's few batch URLs
            self._urls[url] = prepared.url
        return prepared.url

    def request(self, method: str, url: str, query_params: Any = None, headers: Any = None, body: Any = None
                ) -> requests.Response:
        """What the SDK's ``ApiClient.request`` sends (same method, URL, query, headers, JSON body (compact; a
        :class:`JsonText` body as it is), basic auth and timeout), on the pooled session's adapter; a redirect
        is followed as the session follows it."""
        self.last.response = None
        if method not in ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"):
            raise ValueError("http method must be `GET`, `HEAD`, `OPTIONS`, `POST`, `PATCH`, `PUT` or `DELETE`.")
        data = None if method not in ("POST", "PUT", "PATCH") else body if type(body) is JsonText else \
            _encode_body(body)
        prepared = self.prepare(method, url, query_params, headers, data)
        session = self.session
        options = {"stream": True, "timeout": self.timeout, "verify": session.verify, "cert": session.cert,
                   "proxies": session.proxies}
        response = session.get_adapter(prepared.url).send(prepared, **options)
        if response.is_redirect:  # as :meth:`requests.Session.send` (the API does not redirect)
            prepared._cookies = RequestsCookieJar(_NO_COOKIES)  # what redirects fill: nothing
            history = [response, *session.resolve_redirects(response, prepared, **options)]
            response = history.pop()
            response.history = history
        # the whole body in one read (requests' own read errors: iter_content maps urllib3's exceptions)
        response._content = b"".join(response.iter_content(None))
        # The SDK would decode a JSON body into dicts here, only for :meth:`MailchimpApi.call` to throw them
        # away and read the raw body against the documented shape: it gets a placeholder instead, and the
        # body is decoded once, by the caller (a batch answer carries 500 full member objects).
        response.json = _unread  # type: ignore[method-assign]
        self.last.response = response
        return response


#: the session's cookie policy: none kept, none sent. The API authenticates every call by its key (the SDK's
#: own ``requests.post`` per call kept no cookies either), and :meth:`_ApiClient.request` sends no jar.
_NO_COOKIES = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])


class _Unread:
    """What the SDK gets for a JSON body it would have decoded: read the raw response instead."""

    def __bool__(self) -> bool:
        return True  # the SDK returns (2xx) or raises with (otherwise) a truthy body


UNREAD = _Unread()


def _unread(**_: Any) -> _Unread:
    return UNREAD



class MailchimpApi:
    """One audience's API: the SDK's ``ListsApi`` (:attr:`lists`) called through :meth:`call` and :meth:`paged`."""

    def __init__(self, name: str, audience: str, key: str, api_url: str, retry: RetryPolicy,
                 timeout: float, connections: int = 10) -> None:
        self.name, self.audience, self.timeout, self._retry = name, audience, timeout, retry
        # server "" turns off the SDK's url.replace('server', dc) on every URL; the host is set in full instead.
        self._api = _ApiClient({"api_key": key, "server": "", "timeout": timeout}, api_url, connections)
        # masked in the raw answers errors keep (a page echoing the request's headers: basic auth is user:key)
        self._secrets = (key, base64.b64encode(f"user:{key}".encode()).decode())
        remember_secrets(*self._secrets)  # and in every DEBUG line of the HTTP stack (-vv) and at the CLI's edge
        self.lists = ListsApi(self._api)

    def __repr__(self) -> str:
        return f"MailchimpApi(name={self.name!r}, audience={self.audience!r})"

    def paged(self, what: str, fn: Callable[..., Any], args: tuple[Any, ...], key: str, need: tuple[str, ...],
               attempts: int | None = None, **params: Any) -> Iterator[dict[str, Any]]:
        offset, previous = 0, None
        while True:
            label = f"{what} offset={offset}"
            page = self.call(label, fn, *args, count=PAGE_SIZE, offset=offset, attempts=attempts, **params)
            items = page.get(key, [])
            bad = not isinstance(items, list) or any(
                not isinstance(i, dict) or any(i.get(n) is None for n in need) for i in items)
            if bad or not isinstance(page.get("total_items", 0), int):
                raise BadAnswer(f"Mailchimp {label}", f"{key}[] items need {', '.join(need)}", page, self._secrets)
            if items and items == previous:
                raise DestinationError(f"Mailchimp {what}: the same page came back twice at offset {offset}; "
                                       "stopping instead of looping")
            yield from items
            offset += len(items)
            total = page.get("total_items")
            if len(items) < PAGE_SIZE or (total is not None and offset >= total):
                return
            previous = items

    def call(self, what: str, fn: Callable[..., Any], *args: Any,
             shape: type[Shape] | TypeAdapter[Any] | None = None, sent: Sent | None = None,
             attempts: int | None = None, **kwargs: Any) -> Any:
        """One API call through the retry layer. The 2xx body is read from the raw response and validated:
        ``shape`` (a model instance comes back; a dict for a TypedDict shape's adapter) or, without one, any JSON
        object (a dict comes back); anything else is :class:`BadAnswer` (not retried here: the items it covers
        fail and the next run retries them). ``sent``: told of its attempts (:class:`Sent`). ``attempts``: at most
        this many (a check that may give up early: :mod:`~sync.destinations.mailchimp_resent`), within the policy's."""

        def once() -> Any:
            started = time.monotonic()
            try:
                try:
                    result = fn(*args, **kwargs)
                except ApiClientError as exc:
                    response = getattr(self._api.last, "response", None)
                    text = response.text if exc.text is UNREAD and response is not None else exc.text
                    raise self.error(what, exc.status_code, text, response) from None
                response = getattr(self._api.last, "response", None)
                if isinstance(result, requests.Response):  # SDK quirk: empty body -> raw response, no exception
                    response = result
                    if not result.ok:
                        raise self.error(what, result.status_code, result.text, result)
            except TransientError as exc:
                if sent is not None and sent.lost_at is None and may_have_landed(exc.status):
                    sent.lost_at = started
                raise
            if sent is not None and (sent.lost_at is not None or sent.dated):  # (else its Date is not read)
                sent.answered, sent.at = time.monotonic(), datetime.now(timezone.utc)
                sent.date = server_date(response.headers.get("Date")) if response is not None else None
            log.debug("mailchimp %s: %s answered in %.2fs", self.name, what, time.monotonic() - started)
            label = f"Mailchimp {what}"
            raw = response.content if response is not None else result
            secrets = self._secrets
            if shape is not None:  # the raw body, validated in one pass (only the shape's fields are read)
                return parse_answer(shape, raw, label, secrets) if isinstance(raw, (bytes, str)) else \
                    validate(shape, raw, label, secrets=secrets)
            payload = decode_json(raw, label, secrets) if isinstance(raw, (bytes, str)) else raw
            if not isinstance(payload, dict):
                raise BadAnswer(label, "not a JSON object", raw, secrets)
            return payload

        policy = self._retry if attempts is None else replace(self._retry, attempts=min(attempts, self._retry.attempts))
        try:
            return policy.call(once, what=f"mailchimp {what}", vendor="Mailchimp")
        except TransientError as exc:
            raise DestinationError(f"Mailchimp {what} (audience {self.audience!r}) still failing: "
                                   f"{exc}", status=exc.status, body=exc.body, retry_after=exc.retry_after,
                                   transient=True) from None

    def error(self, what: str, status: int | None, text: Any,
               response: requests.Response | None) -> Exception:
        if status is None:  # transport failure: the SDK wraps the requests exception
            if isinstance(text, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
                if isinstance(text, requests.Timeout):
                    return TransientError(f"Mailchimp {what}: timed out after {self.timeout:g} s")
                if isinstance(text, requests.exceptions.ChunkedEncodingError):  # sent, its answer cut off: as a
                    return TransientError(f"Mailchimp {what}: the answer was cut off")  # read timeout (lost)
                return TransientError(f"Mailchimp {what}: cannot connect ({type(text).__name__})")
            return DestinationError(f"Mailchimp {what}: {type(text).__name__}: {text}")
        body = text if isinstance(text, str) else json.dumps(text) if isinstance(text, (dict, list)) else ""
        # an answer may echo the request (the key, its basic-auth form): masked in the body the error keeps (each
        # member a 400 names is failed with its message) and in the message (JSON escapes hid it from the first)
        body = mask(body, self._secrets)
        problem = problem_document(body)
        title = problem.get("title") or ("empty body" if not body.strip() else "error")
        detail = problem.get("detail") or ""
        field_errors = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in problem.get("errors") or []
                                 if isinstance(e, dict))
        message = mask(f"Mailchimp {what}: HTTP {status} {title}" + (f": {detail}" if detail else "") + (
            f" ({field_errors})" if field_errors else ""), self._secrets)
        action = action_for(status, empty_body=not body.strip())
        if action is Action.RETRY:
            retry_after = retry_after_from(response.headers, "Retry-After") if response is not None else None
            return TransientError(message, status=status, body=body, retry_after=retry_after)
        if action is Action.CONFIG:
            hint = (f"; audience {self.audience!r} (or a tag deleted since prepare) not found" if status == 404 else
                    f"; the API key was refused for audience {self.audience!r}: check MAILCHIMP_API_KEY "
                    "(and its data centre) and the key's permissions")
            return DestinationConfigError(f"destination {self.name!r}: {message}{hint}", status=status, body=body)
        if action is Action.RECORD:
            return BatchRejected(message, status=status, body=body)
        return DestinationError(message, status=status, body=body)


def subscriber_hash(email: str) -> str:
    """Mailchimp's id of a list member in a path (``/lists/{id}/members/{subscriber_hash}``): the MD5 of the
    lower-cased address."""
    return hashlib.md5(email.lower().encode()).hexdigest()
