"""RetailCRM (Simla) API v5 source.

* Backfill (first run, no cursor for an object): page through ``GET /api/v5/orders`` and ``GET /api/v5/customers``
  (``page``/``limit``, stop at ``totalPageCount``; an empty page before it is an error). The list has no id range
  filter nor a sort key to keyset on, so page numbers are used and made safe: right after the backfill the history
  feed is read from the backfill's start − ``lookback_minutes`` (edits, creations and deletions made while it ran;
  each named record is re-fetched by id). A record deleted or created meanwhile shifts the later ones, so a record the
  feed does not name may have crossed a page boundary onto a page already read. If the feed named any record, the
  backfill is checked: the list's ``totalCount`` (read between two history reads that saw nothing created or deleted)
  must equal the number of records read and not deleted since. While it does not, the rows near each page boundary are
  read again, de-duplicated by id (from ``moved`` rows before it to as many rows after it as records were created;
  ``moved`` = the records created or deleted since the backfill started; later rounds read twice as wide), and the
  count is checked again; after ``MAX_REREADS`` rounds (or ``MAX_COUNTS`` counts that were never quiet) the pull stops
  with a TransientError: nothing is saved and the next pull (a scheduled sync retries within minutes) backfills again.
  So any number of deletions is safe, and a backfill that nothing touched costs no extra request.
* Scope: with ``site`` set, ``filter[sites][]`` goes with every list read (backfill and the re-read by
  ids), and each record's own ``site`` is checked (history snapshots and webhooks too): a record of
  another store is never stored.
* Incremental: the vendor's ordered history feeds ``/api/v5/{orders,customers}/history``,
  read as a keyset on ``filter[sinceId]``; each page of changed ids is re-fetched in full with
  ``filter[ids][]`` (one request per 100 ids). Deleted orders become ``cancelled``.
* Deleted customers (history entries with ``deleted: true``, or merged away: ``combinedTo``) are staged as an
  emptied contact (:func:`connectors.contacts.gone_contact`, plus ``combined_to`` = the survivor, re-fetched with
  his orders: ``filter[customerId]``, as the merge moved the loser's to him with no orders-history entry). With no
  email the contact leaves every destination on the next sync and can never be created again.
* Cursor: ``{"orders": "<history id>", "contacts": "<history id>"}``; an ISO time instead of an
  id (``filter[startDate] = time − lookback``) when no history entry existed yet. The bookmark is
  the highest history id whose ``createdAt`` is not after the run start.
* Purchases: orders whose ``status`` is in ``completed_statuses``; every other status (open, cancelled,
  ``refunded_statuses``: a refunded order nets 0) is staged as cancelled so it leaves the history.
  The mapping of orders and customers (pull, history snapshots, webhooks) is in
  :mod:`connectors.retailcrm_mapping`; the per-object loop in :mod:`connectors.incremental`.
* Limits: 10 requests/s (vendor SDK), 503/429 retried with Retry-After.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Callable, Literal, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import duckdb
from pydantic import ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .counts import agrees, counted
from .digits import digits
from .secrets import Secret

from .blank import BlankIsUnset
from .contacts import PhoneRegion
from .errors import ConfigError, FatalError, TransientError
from .guests import guest_contacts
from .identity import DEFAULT_MAX_GROUP
from .http import (HttpClient, Throttle, answer_object, clean, get_field, json_shape, parse_dt,
                   with_sleep)
from .incremental import PageGuard, Progress, RunStart, Stager, map_page, parse_time_cursor, pull_objects, utc_now
from .non_purchase import tombstone
from .records import Contact, Order
from .retailcrm_mapping import CodeSeen, created_at, deleted_customer, in_scope, map_customer, map_order, snapshot
from .rekey import rekeyed
from .retailcrm_paging import (MAX_COUNTS, MAX_REREADS, _Backfill, _boundary_pages, _Feed, history_entry, page_count,
                               page_rows)
from .retry import RetryPolicy
from .source import Account, PullResult
from .suggest import did_you_mean
from .zones import TimeZone, default_zone
from .retailcrm_webhooks import parse_webhook, verify_webhook
from .webhooks import WebhookParser, register_webhook_parser

log = logging.getLogger(__name__)
NAME = "retailcrm"


class RetailCrmConfig(BlankIsUnset):
    """``[source] type = "retailcrm"`` settings (secrets come from the environment)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["retailcrm"] = "retailcrm"
    url: str | None = None  # https://shop.retailcrm.ru; default RETAILCRM_URL
    site: str | None = None  # limit to one store of a multi-store account (blank: unset, every store; check warns)
    completed_statuses: list[str] = Field(default_factory=lambda: ["complete"])
    refunded_statuses: list[str] = Field(default_factory=list)
    currency: str | None = None  # used when an order carries no currency
    timezone: TimeZone = default_zone("retailcrm")  # Moscow: the account's zone; dates have no offset
    page_size: Literal[20, 50, 100] = 100
    lookback_minutes: int = Field(10, ge=0)
    requests_per_second: float = Field(10.0, gt=0)
    phone_region: PhoneRegion = None  # default country of phones written without one, e.g. "RU"
    marketing_subscription: str | None = None  # the e-mail customerSubscriptions code that is the consent

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        """An account URL (http(s) and a host), else a config error naming it: ``url = "${RETAILCRM_URL}"`` won
        over RETAILCRM_URL and was retried as a connection error (the file expands no environment variable)."""
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme in ("http", "https") and parts.hostname:
            return value.strip()
        hint = " (the config file expands no environment variable: leave url out to use RETAILCRM_URL)" \
            if "$" in value else ""
        raise ValueError(f"{value!r} is not an account URL like https://shop.retailcrm.ru{hint}")


class RetailCrmSecrets(BlankIsUnset, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETAILCRM_", extra="ignore", env_ignore_empty=True)
    url: str | None = None
    api_key: Secret | None = None
    api_url: str | None = None  # base-URL override (tests, proxies)
    webhook_token: Secret | None = None


_OBJECTS = {  # cursor key -> (list endpoint, history endpoint, response key, history entity key)
    "orders": ("api/v5/orders", "api/v5/orders/history", "orders", "order"),
    "contacts": ("api/v5/customers", "api/v5/customers/history", "customers", "customer"),
}


class RetailCrmSource:
    name = NAME
    max_identity_group = DEFAULT_MAX_GROUP  # [source] max_identity_group, set by connectors.registry

    def __init__(self, config: RetailCrmConfig, secrets: RetailCrmSecrets | None = None, *,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        secrets = secrets or RetailCrmSecrets()
        url = secrets.api_url or config.url or secrets.url
        if not url:
            raise ConfigError("retailcrm: no account URL; set RETAILCRM_URL (e.g. https://shop.retailcrm.ru)")
        if not secrets.api_key:
            raise ConfigError("retailcrm: no API key; set RETAILCRM_API_KEY")
        self.config, self.url, self.clock, self.account_url = config, url, clock or utc_now, config.url or secrets.url
        key = secrets.api_key.get_secret_value()
        retry = with_sleep(retry, sleep)
        self.http = HttpClient(url, vendor="RetailCRM", auth_env="RETAILCRM_API_KEY",
                               url_env="RETAILCRM_API_URL" if secrets.api_url else "RETAILCRM_URL",
                               headers={"X-API-KEY": key}, secrets=(key,), retry=retry,
                               throttle=Throttle(config.requests_per_second, 1, sleep=retry.sleep),
                               auth_advice="a key stops working once deleted or deactivated, and needs access to the "
                               "orders, customers and history methods: check it in RetailCRM's API keys settings")

    def _get(self, path: str, params: Any = None) -> Mapping[str, Any]:
        data = answer_object(self.http.get(path, params), f"RetailCRM {path}")
        if data.get("success") is False:
            raise FatalError(f"RetailCRM {path}: {self.http.safe(str(data.get('errorMsg')))[:200]}")
        return data

    def check(self) -> str | Account:
        """The host and the sites the key reaches; with a warning when ``site`` is unset (absent or blank: every
        site is read) and the account lists several."""
        data = self._get("api/credentials")
        listed = data.get("sitesAvailable") or []
        if not isinstance(listed, list):
            raise FatalError(f"RetailCRM api/credentials: sitesAvailable is {json_shape(listed)}, not a list")
        named = [str(s) for s in listed if s is not None]
        name = f"{urlsplit(self.url).hostname}" + (f" (sites: {', '.join(named)})" if named else "")
        if self.config.site is None and len(named) > 1:
            return Account(name, (f"site is not set: the orders and customers of all {len(named)} sites are "
                                  f"read as one shop; set [source] site to one of them to read only its own",))
        if self.config.site is not None and named and self.config.site not in named:  # a pull would read nothing
            return Account(name, (f"[source] site {self.config.site!r} is not among the sites the key reaches"
                                  f"{did_you_mean(self.config.site, named)}: {', '.join(named)}; a pull would read "
                                  f"no order of it",))
        return name

    def _site(self) -> list[tuple[str, str]]:
        return [("filter[sites][]", self.config.site)] if self.config.site else []

    def pull(self, con: duckdb.DuckDBPyConnection, cursor: str | None = None,
             progress: Progress = None) -> PullResult:
        self.seen = CodeSeen(self.config.marketing_subscription)  # its customers and that code: warned once a pull
        with RunStart.of(self.http, self.clock, NAME) as run_start:  # the vendor's clock when the host's runs ahead
            result = pull_objects(con, NAME, cursor, progress,
                                  lambda obj, saved, stager: self._read_object(obj, saved, stager, run_start),
                                  run_start)
        self.seen.warn()
        # orders an older rfmsync keyed otherwise: told until a --full pull
        return rekeyed(con, NAME, cursor, result, self.config.phone_region)

    def _read_object(self, obj: str, previous: str | None, stager: Stager, run_start: RunStart) -> str:
        """Backfill (no cursor) then the history feed; return the object's new cursor."""
        lookback = timedelta(minutes=self.config.lookback_minutes)
        backfill: _Backfill | None = None
        if previous is None:
            backfill = self._backfill(obj, stager)
            since: int | datetime = run_start() - lookback
        elif digits(previous):  # a history id (0-9 only: int() reads it)
            since = int(previous)
        else:
            stager.saw(since := parse_time_cursor(NAME, obj, previous))
            since -= lookback
        feed = _Feed(head=since if isinstance(since, int) else None)
        self._history(obj, since, run_start, stager, feed)
        if backfill is not None:
            self._settle(obj, backfill, feed, run_start, stager)
        return str(feed.head) if feed.head is not None else (previous or run_start().isoformat())

    def _backfill(self, obj: str, stager: Stager, only: list[tuple[str, str]] | None = None) -> _Backfill:
        """Read every page (``only``: of the list so filtered); keep each page's ids, in order (:meth:`_settle`)."""
        path, _, key, _ = _OBJECTS[obj]
        guard = PageGuard(f"RetailCRM {path}")
        page, backfill = 1, _Backfill()
        while True:
            guard.next(page)
            data = self._get(path, (only or []) + [("limit", self.config.page_size), ("page", page)] + self._site())
            rows = page_rows(data, key, f"RetailCRM {path}: page {page}")
            total = page_count(data, "totalPageCount", f"RetailCRM {path}: page {page}")
            backfill.pages.append(self._stage(obj, rows, stager))
            if page >= total:
                return backfill
            if not rows:  # (taken as the end, the pages after it were never read, nor proven read by _settle)
                raise TransientError(f"RetailCRM {path}: page {page} has no rows though its answer counts "
                                     f"{counted(total, 'page')}; nothing was saved: run the pull again")
            page += 1

    def _settle(self, obj: str, backfill: _Backfill, feed: _Feed, run_start: RunStart, stager: Stager) -> None:
        """Make sure the backfill skipped nothing, however many records were created or deleted while it paged.

        Page numbers are positions in a list that moves: a record deleted (or created) before a page
        boundary between two page reads shifts every later record one place, and a record that crosses
        a boundary upwards is on no page read. A record the history feed names is re-fetched by id
        anyway; one it does not name keeps its place among the others, so if it was skipped at a
        boundary ``b`` it sits in today's list after row ``b - moved`` (``moved``: the records created or
        deleted since the backfill started) and at most ``created`` rows after ``b`` (the records
        created since; deletions only move it up).

        Proof, not hope: every record read and not deleted since is in the CRM, so when the list's
        ``totalCount`` (read between two history reads with no creation or deletion in between) equals
        the number of such records, nothing is missing. Until it does, those rows around each page
        boundary are read again (de-duplicated by id; later rounds read twice as wide on both sides, in
        case records moved for another reason) and the count is read again; after :data:`MAX_REREADS`
        rounds a TransientError says the CRM changed faster than it could be read (nothing is saved; the
        next pull backfills again). A backfill during which the history feed names no record costs
        nothing more."""
        path, _, key, _ = _OBJECTS[obj]
        backfilled = set().union(*backfill.pages)
        backfill.read |= backfilled
        if not (feed.gone or feed.fetched):  # nothing created, deleted or edited: no page could shift
            return
        for round_ in range(MAX_REREADS + 1):
            total = self._quiet_count(obj, backfill, feed, run_start, stager)
            present = backfill.present(feed)
            if total == len(present):
                return
            if total < len(present):
                raise FatalError(f"RetailCRM {path}: the list counts {counted(total, 'record')} but "
                                 f"{len(present)} read {agrees(len(present), 'one was', 'ones were')} not "
                                 "deleted; the list and the history feed disagree")
            moved = len(feed.gone | feed.created | (feed.fetched - backfilled))
            if round_ == MAX_REREADS:
                raise TransientError(
                    f"RetailCRM {path}: {counted(total - len(present), 'record')} still missing after {MAX_REREADS} "
                    f"re-reads of the backfill ({moved} created or deleted while it ran); the CRM changed "
                    "faster than it could be read. Nothing was saved: run the pull again")
            below = max(1, moved) << round_
            above = len(feed.created | (feed.fetched - backfilled)) if round_ == 0 else below
            log.info("retailcrm: %d %s created or deleted during the backfill, %d missing; re-reading the rows "
                     "from %d before to %d after each page boundary", moved, obj, total - len(present), below,
                     above)
            for limit, page in _boundary_pages(len(backfill.pages), self.config.page_size, below, above, total):
                data = self._get(path, [("limit", limit), ("page", page)] + self._site())
                backfill.read.update(self._stage(obj, page_rows(data, key, f"RetailCRM {path}"), stager))
            self._history(obj, feed.last, run_start, stager, feed)

    def _quiet_count(self, obj: str, backfill: _Backfill, feed: _Feed, run_start: RunStart,
                     stager: Stager) -> int:
        """The list's ``totalCount``, read between two history reads that saw no record created or deleted
        (else the count and the records read would not describe the same list)."""
        path, _, key, _ = _OBJECTS[obj]
        for _ in range(MAX_COUNTS):
            before, gone = backfill.present(feed), len(feed.gone)
            data = self._get(path, [("limit", 20), ("page", 1)] + self._site())
            total = page_count(data, "totalCount", f"RetailCRM {path}")
            rows = set(self._stage(obj, page_rows(data, key, f"RetailCRM {path}"), stager))
            backfill.read |= rows
            self._history(obj, feed.last, run_start, stager, feed)
            # quiet: nothing deleted, and nothing re-fetched that was not there already (a creation)
            if len(feed.gone) == gone and backfill.present(feed) <= before | rows:
                return total
        raise TransientError(f"RetailCRM {path}: records were created or deleted during each of {MAX_COUNTS} "
                             "reads of the list's count; the CRM changed faster than it could be read. Nothing "
                             "was saved: run the pull again")

    def _history(self, obj: str, since: int | datetime, run_start: RunStart, stager: Stager,
                 feed: _Feed) -> None:
        """Read the history feed after ``since`` (an entry id or a time); re-fetch changed records; note the
        bookmark head, the last entry id, and the ids deleted (or merged away) and re-fetched in ``feed``."""
        _, path, _, entity = _OBJECTS[obj]
        tz = ZoneInfo(self.config.timezone)
        guard = PageGuard(f"RetailCRM {path}")
        while True:
            if isinstance(since, int):
                params = [("filter[sinceId]", since)]
            else:
                params = [("filter[startDate]", since.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"))]
            guard.next(params)
            data = self._get(path, params + [("limit", 100)])
            entries = page_rows(data, "history", f"RetailCRM {path}")
            start = run_start()  # (after an answer: by the vendor's clock when the host's runs ahead)
            changed: dict[str, None] = {}
            deleted: list[Mapping[str, Any]] = []
            last = since if isinstance(since, int) else 0
            for entry in entries:
                eid, ref, survivor = history_entry(entry, entity, f"RetailCRM {path}")
                survivor = survivor if obj == "contacts" else None
                if entry.get("deleted") or survivor is not None:
                    deleted.append(entry)
                elif ref.get("id") is not None:
                    changed[str(ref["id"])] = None
                    if entry.get("created"):
                        feed.created.add(str(ref["id"]))
                if survivor is not None:
                    changed[str(survivor)] = None
                    feed.survivors.add(str(survivor))
                last = max(last, eid)
                try:
                    at = parse_dt(entry.get("createdAt"), tz)
                    stager.saw(at)
                except ValueError:
                    at = start
                if at <= start:
                    feed.head = max(feed.head or 0, eid)
            for entry in deleted:  # gone: nothing to re-fetch
                rid = str((entry.get(entity) or {}).get("id"))
                changed.pop(rid, None)
                feed.gone.add(rid)
            if entries:
                feed.last = max(feed.last or 0, last)
            feed.fetched |= self._refetch(obj, list(changed), stager)
            self._stage_gone(obj, deleted, stager)
            self._survivors_orders(feed, stager)
            if len(entries) < 100:
                return
            if isinstance(since, int) and last <= since:
                raise FatalError(f"RetailCRM {path}: the history feed did not advance past id {since}")
            since = last

    def _refetch(self, obj: str, ids: list[str], stager: Stager) -> set[str]:
        """Re-read records by id; return the ids the CRM returned."""
        path, _, key, _ = _OBJECTS[obj]
        returned: set[str] = set()
        for start in range(0, len(ids), 100):
            chunk = ids[start:start + 100]
            data = self._get(path, [("filter[ids][]", i) for i in chunk] + [("limit", 100)] + self._site())
            returned.update(self._stage(obj, page_rows(data, key, f"RetailCRM {path}"), stager))
        return returned

    def _survivors_orders(self, feed: _Feed, stager: Stager) -> None:
        """Each merge's survivor's orders read again (``filter[customerId]``): the merge moved the loser's to him."""
        survivors, feed.survivors = feed.survivors, set()
        for cid in sorted(survivors):
            self._backfill("orders", stager, [("filter[customerId]", cid)])

    def _stage(self, obj: str, rows: list[Any], stager: Stager) -> list[str]:
        """Stage a page of list rows; return their ids, in order (rows of another store included: the
        list's count includes them when the CRM ignores ``filter[sites][]``)."""
        def one(raw: Any) -> Order | Contact | None:
            if isinstance(raw, Mapping) and not in_scope(raw, self.config):
                return None
            if obj == "orders":  # (a guest's value the rules refuse: an issue, stager.dropped; a customer's
                return map_order(raw, self.config, dropped=stager.dropped)  # subscription read as no too)
            return map_customer(raw, self.config, stager.dropped, self.seen)

        keep = (lambda c, _: stager.contact(c, self.config.phone_region)) if obj == "contacts" else None
        orders, contacts = map_page(stager, f"{NAME}:{obj}", rows, one, keep=keep)
        for raw in rows:  # the times the CRM stamped (createdAt), never the host's date of an undated cancelled order
            stager.saw(created_at(raw, self.config.timezone))
        stager.stage(orders, contacts + guest_contacts(orders, rows, self.config.phone_region))  # (a guest's phone)
        return [str(r.get("id")) for r in rows if isinstance(r, Mapping) and r.get("id") is not None]

    def _stage_gone(self, obj: str, entries: list[Mapping[str, Any]], stager: Stager) -> None:
        """History entries of deleted records: a deleted order is staged as cancelled (from the entry's
        snapshot), a deleted or merged-away customer as an emptied contact (:func:`deleted_customer`)."""
        entity = _OBJECTS[obj][3]

        def one(entry: Mapping[str, Any]) -> Order | Contact | None:
            snap = snapshot(entry, entity)
            if snap.get("site") is not None and not in_scope(snap, self.config):
                return None
            if obj == "contacts":
                return deleted_customer(snap, entry.get("combinedTo"))
            order = map_order(snap, self.config, deleted=True, dropped=stager.dropped)
            if order is None:  # a thin snapshot: still record the deletion
                order = tombstone(get_field(snap, "id", lambda v: str(int(v))),
                                  get_field(entry, "createdAt", lambda v: parse_dt(v, self.config.timezone)),
                                  clean((snap.get("customer") or {}).get("id")))
            return order

        stager.stage(*map_page(stager, f"{NAME}:{obj}", entries, one,
                               id_of=lambda entry: snapshot(entry, entity).get("id")))


register_webhook_parser(NAME, WebhookParser(verify=verify_webhook, parse=parse_webhook, secret_field="webhook_token",
                                            needs_config=True))

__all__ = ["RetailCrmConfig", "RetailCrmSecrets", "RetailCrmSource", "verify_webhook", "parse_webhook"]
