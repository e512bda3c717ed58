"""Bitrix24 REST source (inbound webhook URL): won deals become orders, CRM contacts become contacts.

* Pull: ``POST {webhook}/crm.deal.list.json`` and ``crm.contact.list.json`` with ``filter{">=DATE_MODIFY": cursor −
  lookback, ">ID": last id}`` (the time in the portal's offset: :mod:`connectors.bitrix24_pace`),
  ``order{"ID": "ASC"}``, ``start=-1`` (the vendor's ID-keyset recipe for large pulls: no
  ``total`` count); pages are at most 50 rows; the list ends at an empty page (a short page is read on from its
  last ID: one request more per read, and a list cut short mid-way skips nothing); an ID that does not advance is
  fatal. A row whose ID is unreadable is a bad row named once; a short page of such rows only ends the list (the
  vendor's end-of-list rule: they cannot be paged past by ID), a full one is fatal (:func:`_keyset`).
* What counts: deals whose ``STAGE_SEMANTIC_ID`` is in ``won_semantics`` (default ``S`` = success) or whose
  ``STAGE_ID`` is in ``won_stage_ids`` (without a semantic, ``STAGE_ID`` tells it: :func:`stage_semantic`), optionally
  only in ``category_ids`` (pipelines); other deals are staged as
  cancelled when they can be mapped. Amount = ``OPPORTUNITY`` in ``CURRENCY_ID``; date = ``CLOSEDATE`` (else
  ``DATE_CREATE``); customer = ``CONTACT_ID``, else ``company-<COMPANY_ID>`` (neither: a sale of nobody).
  ``CLOSEDATE`` is a date field, written as an instant (the vendor's
  example: ``2024-09-09T02:00:00+02:00``): its calendar day is stored at noon in ``timezone`` (:func:`day_at_noon`).
* Line items: for the won deals of each page, ``crm.deal.productrows.get`` runs inside one ``batch`` call (up to 50
  sub-calls, counted as one request against the 2/s bucket): ``PRODUCT_ID`` → sku (none for a free-form row, id 0),
  ``PRODUCT_NAME`` → name, ``QUANTITY``, ``PRICE`` (the final unit price after discount and tax) → price; the deal's
  discount is Σ ``DISCOUNT_SUM`` × ``QUANTITY``. A sub-call that fails for one deal (``Access denied``, ``Not found``,
  a row that cannot be mapped) keeps the deal without items and reports a bad row naming it; ``QUERY_LIMIT_EXCEEDED``
  inside the batch retries the whole (read-only) batch; an auth error in it is the credentials error.
* Backfill: the same ID keyset from ID 0. It cannot skip or repeat a record while the portal changes: a deal edited
  after its page was read keeps its ID and is read again by the pass that follows the backfill (the same read with
  ``>=DATE_MODIFY`` = the backfill's start − ``lookback_minutes``); a new deal has a higher ID; a deletion shifts
  nothing.
* Scope: a deal outside ``category_ids`` (when set) is never stored: it is staged only as a tombstone (id, no
  customer, amount 0) so that a deal moved to another pipeline leaves the history. Contacts go through
  :func:`connectors.contacts.clean_contact` with ``phone_region``.
* Deletions: deals the portal deleted are not listed any more; the ``ONCRMDEALDELETE`` event is parsed into a
  cancelled tombstone (see :func:`connectors.bitrix24_webhooks.parse_webhook`).
* Cursor: ``{"orders": ISO, "contacts": ISO}`` of the highest ``DATE_MODIFY`` seen (capped at the run start). Limits:
  leaky bucket 2 requests/s, burst 50; 503 ``QUERY_LIMIT_EXCEEDED`` is retried, and so is such an error answered
  with HTTP 200. A method's operating time (more than 480 s of execution within 10 minutes blocks it 10 minutes) is
  paced: near the limit the pull waits for the window (:mod:`connectors.bitrix24_pace`). A block met all the same
  (HTTP 429 ``OPERATION_TIME_LIMIT``) is not waited for: the pull stops keeping nothing (the saved cursor stays)
  with a :class:`RetryLaterError` naming the method and its ``operating_reset_at`` (:func:`blocked`).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

import duckdb
import requests

from .bitrix24_config import Bitrix24Config, Bitrix24Secrets
from .bitrix24_mapping import (in_scope, map_contact, map_deal, map_product_row, stage_semantic,  # noqa: F401
                               with_product_rows)  # (re-exported: the mappers were defined here)
from .bitrix24_pace import OperatingPace, batch_timing
from .errors import AuthError, ConfigError, FatalError, RetryLaterError, TransientError
from .identity import DEFAULT_MAX_GROUP
from .http import Action, FieldError, HttpClient, Throttle, clean, get_field, json_shape, parse_dt, with_sleep
from .incremental import HighWater, PageGuard, Progress, RunStart, Stager, map_page, pull_by_time, utc_now
from .non_purchase import tombstone
from .records import UNDATED, BadRow, Contact, Order, OrderStatus
from .retry import RetryPolicy, retry_after_from
from .secrets import BITRIX24_CODE
from .shapes import vendor_id
from .source import PullResult
from .bitrix24_webhooks import (parse_webhook, verify_webhook, webhook_pull_key, webhook_refs,  # noqa: F401 (re-exported)
                                webhook_stale_reason)
from .webhooks import WebhookParser, register_webhook_parser

log = logging.getLogger(__name__)
NAME = "bitrix24"
BATCH_MAX = 50  # sub-calls per batch (ERROR_BATCH_LENGTH_EXCEEDED beyond)
PAGE_SIZE = 50  # rows of a list page ("always static")
_AUTH_ERRORS = {"NO_AUTH_FOUND", "INVALID_CREDENTIALS", "expired_token", "invalid_token", "insufficient_scope",
                "ACCESS_DENIED", "WRONG_AUTH_TYPE"}
_RETRY_ERRORS = {"QUERY_LIMIT_EXCEEDED", "INTERNAL_SERVER_ERROR"}
BLOCKED = "OPERATION_TIME_LIMIT"  # a method blocked for 10 minutes (HTTP 429): :func:`blocked`
BLOCK_SECONDS = 600.0  # how long a block lasts when the answer does not say (no ``operating_reset_at``)


_METHODS = {
    "contacts": ("crm.contact.list", ["ID", "NAME", "LAST_NAME", "EMAIL", "PHONE", "DATE_CREATE", "DATE_MODIFY",
                                      "ADDRESS_CITY", "SOURCE_ID", "TYPE_ID"]),
    "orders": ("crm.deal.list", ["ID", "CONTACT_ID", "COMPANY_ID", "OPPORTUNITY", "CURRENCY_ID", "DATE_CREATE",
                                 "DATE_MODIFY", "CLOSEDATE", "CLOSED", "STAGE_ID", "STAGE_SEMANTIC_ID", "CATEGORY_ID"]),
}


def blocked(method: str, data: Any = None, headers: Mapping[str, str] | None = None) -> RetryLaterError:
    """The error of a method Bitrix24 blocked for its operating time: it names the method and when the block ends
    (``time.operating_reset_at``, Unix seconds, measured by the answer's ``Date`` when believable; else
    :data:`BLOCK_SECONDS` from now), to run again then: a run never sleeps through it."""
    timing = data.get("time") if isinstance(data, Mapping) else None
    reset = (timing.get("operating_reset_at") if isinstance(timing, Mapping) else None) or (
        data.get("operating_reset_at") if isinstance(data, Mapping) else None)
    key = "X-Operating-Reset-At"  # (read as an epoch header, by the one parser of vendors' retry asks)
    wait = retry_after_from({**(headers or {}), key: str(reset)}, key) if reset is not None else None
    told = wait is not None
    wait = wait if told else BLOCK_SECONDS
    until = (datetime.now(timezone.utc) + timedelta(seconds=wait)).replace(microsecond=0)
    return RetryLaterError(
        f"Bitrix24 blocked {method} for this portal until {until.isoformat()}"
        + ("" if told else " (about; the answer gave no operating_reset_at)")
        + ": its operating-time limit (more than 480 s of execution within 10 minutes blocks a method for 10 "
        "minutes); run the pull again after that time (rfmsync serve's scheduler does)", status=429,
        retry_after=wait)


def _method(resp: requests.Response) -> str:
    """The method a call went to (``crm.deal.list``): the URL's last segment (the webhook's code is another)."""
    return urlsplit(resp.url or "").path.rsplit("/", 1)[-1].removesuffix(".json") or "a method"


def _inspect(resp: requests.Response) -> Action | None:
    """Bitrix24 names the problem in ``{"error": …}``; map it whatever the HTTP status (a method block,
    ``OPERATION_TIME_LIMIT``, raises :func:`blocked`; a 429 without it is retried as any other)."""
    if resp.status_code < 400:
        return None
    try:
        data = resp.json()
        code = str(data.get("error", ""))
    except (ValueError, AttributeError):
        data, code = None, ""
    if code == BLOCKED:
        raise blocked(_method(resp), data, resp.headers)
    if code in _RETRY_ERRORS:
        return Action.RETRY
    if code in _AUTH_ERRORS:
        return Action.AUTH
    return None


#: What to do when Bitrix24 refuses the inbound webhook, an HTTP error or an auth code answered with 200 alike
AUTH_ADVICE = ("an inbound webhook stops working once past its expiry date (when it was given one), deleted or its "
               "user deactivated, and needs the crm scope: make a new one and set BITRIX24_WEBHOOK_URL")


def _raise_for_codes(codes: set[str], what: str, refused: str, method: str) -> None:
    """Error codes answered with HTTP 200 (a batch's sub-calls, a method's): a rate limit retries, a blocked
    ``method`` stops the run (:func:`blocked`), auth stops."""
    if BLOCKED in codes:
        raise blocked(method)
    if codes & _RETRY_ERRORS:
        raise TransientError(f"{what}: {sorted(codes & _RETRY_ERRORS)[0]}")
    if codes & _AUTH_ERRORS:
        raise AuthError(f"Bitrix24 refused {refused} ({sorted(codes & _AUTH_ERRORS)[0]}); check "
                        f"BITRIX24_WEBHOOK_URL: {AUTH_ADVICE}")


def _keyset(rows: list[Any], method: str) -> tuple[int | None, list[Any]]:
    """Where a page leaves the ``>ID`` keyset: (the highest readable ID, None to end the list; the rows after the last
    row with one). A row without one (not an object, an ID that is no number: a bad row
    :func:`~connectors.incremental.map_page` names) cannot be paged past by its ID, yet the portal filters ``>ID``
    on the number it stores: such a row after the page's last readable ID comes again at the head of the next page
    (the caller stages it once: :func:`_unseen`). A page none of whose rows has a readable ID is the end of the list
    when it is short (fewer than :data:`PAGE_SIZE` rows, the vendor's own end-of-list rule; the newest deal
    unreadable stopped every pull); a full one is fatal: the rows past it cannot be reached."""
    at = [i for i, row in enumerate(rows) if _id(row) is not None]
    if not at and len(rows) >= PAGE_SIZE:
        raise FatalError(f"Bitrix24 {method}: a page of {len(rows)} rows none of which has a usable ID (the bad "
                         "rows above): the list cannot be read past it")
    return (max(_id(rows[i]) for i in at) if at else None), rows[at[-1] + 1 if at else 0:]


def _id(row: Any) -> int | None:
    try:
        return int(vendor_id(row["ID"]) or "")
    except (KeyError, TypeError, ValueError):
        return None


def _unseen(rows: list[Any], seen: list[Any]) -> list[Any]:
    """``rows`` without its head rows the page before ended with unreadable (``seen``, staged then)."""
    n = 0
    while n < min(len(seen), len(rows)) and rows[n] == seen[n]:
        n += 1
    return rows[n:]


class Bitrix24Source:
    name = NAME
    max_identity_group = DEFAULT_MAX_GROUP  # [source] max_identity_group, set by connectors.registry

    def __init__(self, config: Bitrix24Config, secrets: Bitrix24Secrets | None = None, *,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        secrets = secrets or Bitrix24Secrets()
        if not secrets.webhook_url:
            raise ConfigError("bitrix24: no inbound webhook; set BITRIX24_WEBHOOK_URL "
                              "(https://<portal>/rest/<user>/<code>/)")
        url = secrets.webhook_url.get_secret_value().strip()
        parts = urlsplit(url)
        code = BITRIX24_CODE.search(parts.path)  # the secret (a method pasted after it is not)
        if parts.scheme not in ("http", "https") or code is None:
            raise ConfigError("bitrix24: BITRIX24_WEBHOOK_URL must look like https://<portal>/rest/<user>/<code>/")
        self.config, self.portal = config, parts.hostname or "?"
        self.clock = clock or utc_now
        retry = with_sleep(retry, sleep)
        self.pace = OperatingPace(retry.sleep)  # a method's operating time near its limit: wait for the window
        # the base ends at the code: a method pasted after it (.../<code>/profile.json) is not part of it
        base = urlunsplit((parts.scheme, parts.netloc, parts.path[:code.end()] + "/", "", ""))
        self.http = HttpClient(base, vendor="Bitrix24", auth_env="BITRIX24_WEBHOOK_URL",
                               url_env="BITRIX24_WEBHOOK_URL", secrets=(code.group(1),), retry=retry,
                               throttle=Throttle(config.requests_per_second, config.burst, sleep=retry.sleep),
                               inspect=_inspect, auth_advice=AUTH_ADVICE)

    def _call(self, method: str, body: Mapping[str, Any]) -> Any:
        """A read-only method's ``result``; an error envelope answered with HTTP 200 is that error (a rate limit
        retries, an auth code is the credentials error, any other stops the pull naming it)."""
        what = f"Bitrix24 {method}"

        def once() -> Any:
            data, resp = self.http.fetch("POST", f"{method}.json", json_body=dict(body), idempotent=False)
            if isinstance(data, dict) and "result" in data:
                return data, resp.headers
            code = clean(data.get("error")) if isinstance(data, dict) else None
            if code is None:
                raise FatalError(f"{what}: answered {json_shape(data)}, not one with a 'result'")
            if code == BLOCKED:
                raise blocked(method, data)
            _raise_for_codes({code}, what, method, method)
            about = self.http.safe(str(clean(data.get("error_description")) or ""))[:200]
            raise FatalError(f"{what}: answered the error {self.http.safe(code)[:60]}" + (about and f" ({about})"))
        data, headers = self.http.retrying(once, what=what)  # (retried as a whole: a rate limit's 200 too)
        self.pace.after(method, data.get("time"), headers)  # (waits for the window before a block)
        return data["result"]

    def check(self) -> str:
        user = self._call("profile", {}) or {}
        name = " ".join(p for p in (user.get("NAME"), user.get("LAST_NAME")) if p)
        return f"{self.portal} (as {name or user.get('ID', '?')})"

    def pull(self, con: duckdb.DuckDBPyConnection, cursor: str | None = None,
             progress: Progress = None) -> PullResult:
        with RunStart.of(self.http, self.clock, NAME) as run_start:
            return pull_by_time(con, NAME, cursor, progress, run_start=run_start,
                                lookback=timedelta(minutes=self.config.lookback_minutes), read=self._read)

    def _read(self, obj: str, since: datetime | None, stager: Stager) -> datetime | None:
        method, select = _METHODS[obj]
        guard, last_id, high, tail = PageGuard(f"Bitrix24 {method}"), 0, HighWater(stager), []
        while True:
            guard.next(last_id)  # in the portal's offset, told by its answers (bitrix24_pace: an overlap, not a gap)
            flt = {} if since is None else {">=DATE_MODIFY": self.pace.modified_since(since)}
            rows = self._call(method, {"filter": {**flt, ">ID": last_id}, "order": {"ID": "ASC"},
                                       "select": select, "start": -1})
            if not isinstance(rows, list):
                raise FatalError(f"Bitrix24 {method}: 'result' is not a list")
            self._stage(obj, _unseen(rows, tail), stager, high)
            if not rows:  # only an empty page ends the list: a short page mid-list (seen on busy portals) does not,
                return high.value  # and the pass after a backfill (by DATE_MODIFY) would not reach what it cut
            top, tail = _keyset(rows, method)
            if top is None:  # (short, of unreadable IDs only: the end; the cursor never asks the same page twice)
                return high.value
            last_id = top

    def _stage(self, obj: str, rows: list[Any], stager: Stager, high: HighWater) -> None:
        def one(raw: Any) -> Order | Contact | None:
            modified = high.see(get_field(raw, "DATE_MODIFY", parse_dt)) if raw.get("DATE_MODIFY") else None
            if obj == "contacts":
                return map_contact(raw)
            try:
                scoped = in_scope(raw, self.config)
            except FieldError:  # (map_deal tells: a won deal's unreadable pipeline is a bad row, another's retired)
                scoped = True
            if not scoped:  # retire it, store nothing of it
                return tombstone(get_field(raw, "ID", lambda v: str(int(v))), modified or UNDATED)
            return map_deal(raw, self.config)

        keep = (lambda c, _: stager.contact(c, self.config.phone_region)) if obj == "contacts" else None
        orders, contacts = map_page(stager, f"{NAME}:{obj}", rows, one, id_of=lambda raw: raw.get("ID"), keep=keep)
        if orders and self.config.line_items:
            orders = self._with_items(orders, stager)
        stager.stage(orders, contacts)

    def _with_items(self, orders: list[Order], stager: Stager) -> list[Order]:
        """Won deals get their product rows, read in batches of up to 50 sub-calls."""
        won = [o.order_id for o in orders if o.status is OrderStatus.COMPLETED]
        rows: dict[str, Any] = {}
        failed: dict[str, Any] = {}
        for start in range(0, len(won), BATCH_MAX):
            ok, errors = self._batch({f"d{i}": f"crm.deal.productrows.get?id={i}" for i in won[start:start + BATCH_MAX]})
            rows.update((k[1:], v) for k, v in ok.items())
            failed.update((k[1:], v) for k, v in errors.items())
        out = []
        for order in orders:
            oid = order.order_id
            if oid in failed or (oid in won and not isinstance(rows.get(oid), list)):
                err = failed.get(oid) if isinstance(failed.get(oid), dict) else {}
                reason = clean(err.get("error_description")) or clean(err.get("error")) or "no answer"
                stager.bad(BadRow(f"{NAME}:orders", oid, f"line items not read ({self.http.safe(reason)[:200]}); the "
                                  "deal is kept without them", field="productrows"))
            elif oid in rows:
                try:
                    order = with_product_rows(order, rows[oid])
                except FieldError as exc:
                    row = exc.bad_row(f"{NAME}:orders", oid)
                    stager.bad(dataclasses.replace(row, reason=f"{row.reason}; the deal is kept without items"))
            out.append(order)
        return out

    def _batch(self, cmd: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """One ``batch`` call of read-only sub-calls: (results, errors) keyed like ``cmd``.

        The batch answers 200 whatever its sub-calls did: a rate-limit error inside it retries the whole
        batch through the shared retry layer; an auth error is the credentials error.
        """
        what = f"Bitrix24 batch of {len(cmd)} crm.deal.productrows.get"

        def once() -> tuple[dict[str, Any], dict[str, Any], Any, Any]:
            data, resp = self.http.fetch("POST", "batch.json", json_body={"halt": 0, "cmd": dict(cmd)},
                                         idempotent=False)  # retried as a whole below
            result = data.get("result") if isinstance(data, dict) else None
            if not isinstance(result, dict):
                raise FatalError(f"{what}: answer has no 'result' object")
            ok = result.get("result") if isinstance(result.get("result"), dict) else {}  # PHP: [] when empty
            errors = result.get("result_error") if isinstance(result.get("result_error"), dict) else {}
            codes = {str(e.get("error")) for e in errors.values() if isinstance(e, dict)}
            _raise_for_codes(codes, f"{what}: inside the batch", "product rows", "crm.deal.productrows.get")
            return ok, errors, data, resp.headers

        ok, errors, data, headers = self.http.retrying(once, what=what)
        self.pace.after("batch", data.get("time"), headers)
        self.pace.after("crm.deal.productrows.get", batch_timing(data), headers)
        return ok, errors


register_webhook_parser(NAME, WebhookParser(verify=verify_webhook, parse=parse_webhook, secret_field="app_token",
                                            pull_key=webhook_pull_key, stale=webhook_stale_reason))
