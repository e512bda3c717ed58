"""Bitrix24 REST source (inbound webhook URL): won deals become orders, CRM contacts become contacts.

* Pull: ``POST {webhook}/crm.deal.list.json`` and ``crm.contact.list.json`` with
  ``filter{">=DATE_MODIFY": cursor − lookback, ">ID": last id}``, ``order{"ID": "ASC"}``,
  ``start=-1`` (the vendor's ID-keyset recipe for large pulls: no ``total`` count); pages are a
  fixed 50 rows; stop at a short page; an ID that does not advance is fatal.
* What counts: deals whose ``STAGE_SEMANTIC_ID`` is in ``won_semantics`` (default ``S`` =
  success) or whose ``STAGE_ID`` is in ``won_stage_ids``, optionally only in ``category_ids``
  (pipelines); other deals are staged as cancelled when they can be mapped. Amount =
  ``OPPORTUNITY`` in ``CURRENCY_ID``; date = ``CLOSEDATE`` (else ``DATE_CREATE``); customer =
  ``CONTACT_ID``. Line items (``crm.deal.productrows.get``) are not read yet.
* Cursor: ``{"orders": ISO, "contacts": ISO}`` of the highest ``DATE_MODIFY`` seen (capped at
  the run start). Limits: leaky bucket 2 requests/s, burst 50; 503 ``QUERY_LIMIT_EXCEEDED``
  and 429 (method operating-time limit) are retried.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Literal, Mapping
from urllib.parse import urlsplit

import duckdb
import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError, FatalError
from .http import (Action, FieldError, HttpClient, PageGuard, Progress, Stager, Throttle, bookmark, clean,
                   dump_cursor, get_field, iso, load_cursor, parse_dt, to_decimal, with_sleep)
from .records import Consent, Contact, Order, OrderStatus
from .retry import RetryPolicy
from .source import PullResult
from .webhooks import DEFAULT_MAX_AGE, is_fresh, parse_php_form, tokens_equal

log = logging.getLogger(__name__)
NAME = "bitrix24"
PAGE = 50  # fixed by the vendor
_AUTH_ERRORS = {"NO_AUTH_FOUND", "INVALID_CREDENTIALS", "expired_token", "invalid_token", "insufficient_scope",
                "ACCESS_DENIED", "WRONG_AUTH_TYPE"}
_RETRY_ERRORS = {"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "INTERNAL_SERVER_ERROR"}


class Bitrix24Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["bitrix24"] = "bitrix24"
    won_semantics: list[str] = Field(default_factory=lambda: ["S"])
    won_stage_ids: list[str] = Field(default_factory=list)  # e.g. ["WON", "C2:WON"]
    category_ids: list[int] = Field(default_factory=list)  # deal pipelines; empty: all
    currency: str | None = None  # used when a deal has no CURRENCY_ID
    lookback_minutes: int = Field(10, ge=0)
    requests_per_second: float = Field(2.0, gt=0)
    burst: int = Field(50, ge=1)


class Bitrix24Secrets(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BITRIX24_", extra="ignore")
    webhook_url: SecretStr | None = None  # https://portal.bitrix24.ru/rest/1/<code>/ (the code is a secret)
    app_token: SecretStr | None = None  # application_token of the outgoing webhook / app, for events


def map_deal(raw: Mapping[str, Any], cfg: Bitrix24Config) -> Order | None:
    oid = get_field(raw, "ID", lambda v: str(int(v)))
    won = (raw.get("STAGE_SEMANTIC_ID") in cfg.won_semantics or raw.get("STAGE_ID") in cfg.won_stage_ids) and (
        not cfg.category_ids or int(raw.get("CATEGORY_ID") or 0) in cfg.category_ids)
    try:
        customer = clean(raw.get("CONTACT_ID"))
        if customer in (None, "0"):
            raise FieldError("CONTACT_ID", "deal has no contact")
        return Order(order_id=oid, customer_id=customer,
                     ordered_at=get_field(raw, "CLOSEDATE" if raw.get("CLOSEDATE") else "DATE_CREATE", parse_dt),
                     amount=get_field(raw, "OPPORTUNITY", to_decimal),
                     currency=clean(raw.get("CURRENCY_ID")) or cfg.currency,
                     status=OrderStatus.COMPLETED if won else OrderStatus.CANCELLED)
    except FieldError:
        if not won:
            return None
        raise


def _first(raw: Mapping[str, Any], key: str) -> str | None:
    for item in raw.get(key) or []:
        if isinstance(item, dict) and clean(item.get("VALUE")):
            return clean(item["VALUE"])
    return None


def map_contact(raw: Mapping[str, Any]) -> Contact:
    cid = get_field(raw, "ID", lambda v: str(int(v)))
    attrs = {"city": clean(raw.get("ADDRESS_CITY")), "source": clean(raw.get("SOURCE_ID")),
             "type": clean(raw.get("TYPE_ID"))}
    return Contact(customer_id=cid, email=(_first(raw, "EMAIL") or "").lower() or None, phone=_first(raw, "PHONE"),
                   first_name=clean(raw.get("NAME")), last_name=clean(raw.get("LAST_NAME")),
                   marketing_consent=Consent.UNKNOWN,
                   created_at=get_field(raw, "DATE_CREATE", parse_dt) if raw.get("DATE_CREATE") else None,
                   attributes={k: v for k, v in attrs.items() if v})


_METHODS = {
    "contacts": ("crm.contact.list", ["ID", "NAME", "LAST_NAME", "EMAIL", "PHONE", "DATE_CREATE", "DATE_MODIFY",
                                      "ADDRESS_CITY", "SOURCE_ID", "TYPE_ID"]),
    "orders": ("crm.deal.list", ["ID", "CONTACT_ID", "OPPORTUNITY", "CURRENCY_ID", "DATE_CREATE", "DATE_MODIFY",
                                 "CLOSEDATE", "CLOSED", "STAGE_ID", "STAGE_SEMANTIC_ID", "CATEGORY_ID"]),
}


def _inspect(resp: requests.Response) -> Action | None:
    """Bitrix24 names the problem in ``{"error": …}``; map it whatever the HTTP status."""
    if resp.status_code < 400:
        return None
    try:
        code = str(resp.json().get("error", ""))
    except (ValueError, AttributeError):
        return None
    if code in _RETRY_ERRORS:
        return Action.RETRY
    if code in _AUTH_ERRORS:
        return Action.AUTH
    return None


class Bitrix24Source:
    name = NAME

    def __init__(self, config: Bitrix24Config, secrets: Bitrix24Secrets | None = None, *,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        secrets = secrets or Bitrix24Secrets()
        if not secrets.webhook_url:
            raise ConfigError("bitrix24: no inbound webhook; set BITRIX24_WEBHOOK_URL "
                              "(https://<portal>/rest/<user>/<code>/)")
        url = secrets.webhook_url.get_secret_value().strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or "/rest/" not in parts.path:
            raise ConfigError("bitrix24: BITRIX24_WEBHOOK_URL must look like https://<portal>/rest/<user>/<code>/")
        self.config, self.portal = config, parts.hostname or "?"
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        retry = with_sleep(retry, sleep)
        code = parts.path.rstrip("/").rsplit("/", 1)[-1]
        self.http = HttpClient(url.rstrip("/") + "/", vendor="Bitrix24", auth_env="BITRIX24_WEBHOOK_URL",
                               url_env="BITRIX24_WEBHOOK_URL", secrets=(code, url), retry=retry,
                               throttle=Throttle(config.requests_per_second, config.burst, sleep=retry.sleep),
                               inspect=_inspect)

    def _call(self, method: str, body: Mapping[str, Any]) -> Any:
        data = self.http.request("POST", f"{method}.json", json_body=dict(body), idempotent=True)
        if not isinstance(data, dict) or "result" not in data:
            raise FatalError(f"Bitrix24 {method}: answer has no 'result'")
        return data["result"]

    def check(self) -> str:
        user = self._call("profile", {}) or {}
        name = " ".join(p for p in (user.get("NAME"), user.get("LAST_NAME")) if p)
        return f"{self.portal} (as {name or user.get('ID', '?')})"

    def pull(self, con: duckdb.DuckDBPyConnection, cursor: str | None = None,
             progress: Progress = None) -> PullResult:
        run_start = self.clock()
        cursors = load_cursor(cursor, NAME)
        stager = Stager(con, NAME, progress)
        new: dict[str, str | None] = {}
        for obj in ("contacts", "orders"):
            previous = None
            if cursors.get(obj):
                try:
                    previous = datetime.fromisoformat(cursors[obj])
                except ValueError:
                    raise ConfigError(f"bitrix24: bad {obj} cursor {cursors[obj]!r}") from None
            new[obj] = iso(bookmark(self._read(obj, previous, stager), run_start, previous))
        return stager.result(dump_cursor(new))

    def _read(self, obj: str, since: datetime | None, stager: Stager) -> datetime | None:
        method, select = _METHODS[obj]
        flt: dict[str, Any] = {}
        if since is not None:
            flt[">=DATE_MODIFY"] = iso(since - timedelta(minutes=self.config.lookback_minutes))
        guard, last_id, max_seen = PageGuard(f"Bitrix24 {method}"), 0, None
        while True:
            guard.next(last_id)
            rows = self._call(method, {"filter": {**flt, ">ID": last_id}, "order": {"ID": "ASC"},
                                       "select": select, "start": -1})
            if not isinstance(rows, list):
                raise FatalError(f"Bitrix24 {method}: 'result' is not a list")
            max_seen = self._stage(obj, rows, stager, max_seen)
            if len(rows) < PAGE:
                return max_seen
            try:
                last_id = max(int(r["ID"]) for r in rows)
            except (KeyError, TypeError, ValueError):
                raise FatalError(f"Bitrix24 {method}: a full page without usable IDs") from None

    def _stage(self, obj: str, rows: list[Any], stager: Stager, max_seen: datetime | None) -> datetime | None:
        orders, contacts = [], []
        for raw in rows:
            try:
                if raw.get("DATE_MODIFY"):
                    modified = get_field(raw, "DATE_MODIFY", parse_dt)
                    max_seen = modified if max_seen is None else max(max_seen, modified)
                if obj == "orders":
                    order = map_deal(raw, self.config)
                    if order is not None:
                        orders.append(order)
                else:
                    contacts.append(map_contact(raw))
            except FieldError as exc:
                stager.bad(exc.bad_row(f"{NAME}:{obj}", raw.get("ID") if isinstance(raw, dict) else None))
        stager.stage(orders, contacts)
        return max_seen


# ---------------------------------------------------------------- webhooks (outgoing events)


def _event(body: bytes) -> dict[str, Any]:
    text = body.lstrip()
    if text.startswith(b"{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("bitrix24 event: body is not valid JSON") from None
        return data if isinstance(data, dict) else {}
    return parse_php_form(body)


def verify_webhook(headers: Mapping[str, str], body: bytes, secret: str, path_token: str | None = None, *,
                   now: datetime | None = None, max_age: timedelta = DEFAULT_MAX_AGE) -> bool:
    """``auth[application_token]`` must equal the stored token (constant time); ``ts`` must be fresh."""
    try:
        event = _event(body)
    except ValueError:
        return False
    auth = event.get("auth") if isinstance(event.get("auth"), dict) else {}
    if not tokens_equal(auth.get("application_token"), secret):
        return False
    ts = event.get("ts")
    if ts is not None:
        try:
            return is_fresh(parse_dt(ts), now, max_age)
        except ValueError:
            return False
    return True


def webhook_refs(body: bytes) -> list[tuple[str, str, str]]:
    """``(event, id, delivery key)``: events carry only the id, so re-pull (the lookback catches it)."""
    event = _event(body)
    name = clean(event.get("event"))
    fields = ((event.get("data") or {}).get("FIELDS") or {}) if isinstance(event.get("data"), dict) else {}
    rid = clean(fields.get("ID")) if isinstance(fields, dict) else None
    if not name or not rid:
        raise ValueError("bitrix24 event: missing event name or data[FIELDS][ID]")
    return [(name, rid, f"{event.get('event_handler_id', '')}:{event.get('ts', '')}:{rid}")]


def parse_webhook(headers: Mapping[str, str], body: bytes) -> tuple[list[Order], list[Contact]]:
    """Bitrix24 events hold ids only, never a full deal or contact: always ``([], [])`` for a valid
    ``ONCRM*`` event (use :func:`webhook_refs`); ValueError for anything else."""
    refs = webhook_refs(body)
    if not refs[0][0].upper().startswith("ONCRM"):
        raise ValueError(f"bitrix24 event: unsupported event {refs[0][0]!r}")
    return [], []
