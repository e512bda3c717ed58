"""amoCRM / Kommo API v4 source: won leads (deals) become orders, contacts become contacts.

* Pull (backfill and incremental alike): a keyset on ``updated_at``. Each request is
  ``GET /api/v4/{leads,contacts}?limit=250&order[updated_at]=asc&filter[updated_at][from]=<unix>`` (leads
  ``with=contacts``) with ``from`` = the highest ``updated_at`` of the page before (inclusive, so the rows of that
  second are read again and de-duplicated by id); stop at an empty page, a short page without ``_links.next`` (a
  short page with one goes on, and so does a full page without one) or HTTP 204. Page numbers are never walked over a moving list: a lead edited while the
  backfill runs moves to the end and is read there, a deleted one shifts nothing. When a whole page shares one
  second (bulk robot edits), that second alone is paged by number with ``order[id]=asc`` and
  ``filter[updated_at][to]`` = the same second, then the keyset goes on from the next second. A lead edited or
  deleted meanwhile leaves that second and shifts the rest, so the second is paged again until a pass finds every
  lead the pass before it read (:meth:`AmoCrmSource._one_second`).
* After the backfill, the same read runs again from its start (or its highest ``updated_at``, if earlier) −
  ``lookback_minutes``, and the trash (below) from the same time: what changed or was deleted while it ran is
  caught at once.
* What counts: leads whose ``status_id`` is in ``won_status_ids`` (default 142 "Успешно
  реализовано"), optionally only in ``pipeline_ids``; every other lead is staged as cancelled,
  a tombstone when it cannot be mapped (so a lead moved out of "won" leaves the history). Amount = ``price``
  (whole units of the account currency, ``currency`` setting); date = ``closed_at`` (else
  ``updated_at``); customer = the main linked contact, else the linked company (``company-<id>``; neither: a sale of
  nobody, counted in ``anonymous_orders``).
* Cursor: ``{"orders": ISO, "contacts": ISO}`` of the highest ``updated_at`` seen (capped at the
  run start); re-read from cursor − ``lookback_minutes`` (default 10: amoCRM pages are eventually
  consistent). Limit: 7 requests/s.
* Deletions: the lead list never shows deleted leads, so every incremental pull also reads
  ``GET /api/v4/leads?with=only_deleted`` (the leads in the trash: id, ``updated_at``,
  ``is_deleted``) from the same cursor, and the ``leads[delete]`` webhook is parsed the same way:
  each deleted lead becomes a cancelled tombstone that replaces the stored order. A first run reads
  the trash only from its own start − lookback (deletions while it ran).
* Scope: a lead outside ``pipeline_ids`` is never stored: it is staged only as a tombstone (id, no
  customer, amount 0), so a lead moved out of the configured pipelines leaves the history. Contacts
  have no pipeline. Contacts (pulls and webhooks) go through :func:`connectors.contacts.clean_contact`
  with ``phone_region``.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import duckdb

from .amocrm_config import DOMAINS, AmoCrmConfig, AmoCrmSecrets, env_subdomain
from .contacts import clean_contact, gone_contact
from .email_phone import lower_like_sql
from .diagnose import order_dt
from .errors import ConfigError, FatalError, TransientError
from .identity import DEFAULT_MAX_GROUP
from .http import (FieldError, HttpClient, Throttle, answer_object, clean, get_field, json_shape, parse_dt, set_advice,
                   to_decimal, with_sleep)
from .incremental import HighWater, PageGuard, Progress, RunStart, Stager, latest, map_page, pull_by_time, utc_now
from .non_purchase import NoCustomer, tombstone, undecided, unmapped
from .records import UNDATED, Consent, Contact, Order, OrderStatus
from .retry import RetryPolicy
from .shapes import vendor_id
from .source import PullResult
from .webhooks import (WebhookParser, as_list, body_digest, parse_php_form, register_webhook_parser, tokens_equal,
                       versioned)

log = logging.getLogger(__name__)
NAME = "amocrm"
#: reads of one crowded second (a full page sharing one ``updated_at``) until two agree (:meth:`_one_second`)
MAX_SECOND_PASSES = 5


def _embedded(raw: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """``raw["_embedded"][key]`` as a list of objects; a FieldError when the vendor (or a webhook) sent
    something else."""
    embedded = raw.get("_embedded") or {}
    if not isinstance(embedded, Mapping):
        raise FieldError("_embedded", "must be an object", embedded)
    items = as_list(embedded.get(key) or [])
    if not all(isinstance(item, Mapping) for item in items):
        raise FieldError(f"_embedded.{key}", "must be a list of objects", embedded.get(key))
    return items


def _contact_id(raw: Mapping[str, Any]) -> str | None:
    """Whose lead: its main contact, else its company's customer ``company-<id>`` (``_embedded.companies``: a B2B
    sale with no contact person, as RetailCRM's ``corporate-<id>``: a customer of its own, segmented, mailed by no
    destination); None with neither (a sale of nobody)."""
    contacts = _embedded(raw, "contacts")
    main = [c for c in contacts if c.get("is_main")] or contacts
    if main:
        return get_field(main[0], "id", vendor_id, "_embedded.contacts.id")
    companies = _embedded(raw, "companies")
    company = get_field(companies[0], "id", vendor_id, "_embedded.companies.id") if companies else None
    return None if company is None else f"company-{company}"


def in_scope(raw: Mapping[str, Any], cfg: AmoCrmConfig) -> bool:
    """False for a lead outside ``pipeline_ids`` (when set)."""
    return not cfg.pipeline_ids or raw.get("pipeline_id") in cfg.pipeline_ids


def map_lead(raw: Mapping[str, Any], cfg: AmoCrmConfig) -> Order | None:
    oid = get_field(raw, "id", lambda v: str(int(v)))
    if clean(raw.get("status_id")) is None:  # (staged cancelled, a stored purchase would leave the history unsaid)
        raise undecided("status_id", "lead")
    won = raw.get("status_id") in cfg.won_status_ids and (
        not cfg.pipeline_ids or raw.get("pipeline_id") in cfg.pipeline_ids) and not raw.get("is_deleted")
    customer_id = None  # (kept by the tombstone when known)
    try:
        customer_id = _contact_id(raw)
        if customer_id is None:  # a sale of nobody, as a walk-in: counted, not segmented, no bad row (won: raised)
            raise NoCustomer("_embedded.contacts", "lead has no linked contact nor company")
        when = "closed_at" if raw.get("closed_at") else "updated_at"
        return Order(order_id=oid, customer_id=customer_id, ordered_at=get_field(raw, when, order_dt),
                     amount=get_field(raw, "price", to_decimal), currency=cfg.currency,
                     status=OrderStatus.COMPLETED if won else OrderStatus.CANCELLED)
    except FieldError:
        if won:
            raise
        # no purchase (any more) and not mappable (contact unlinked, price cleared): it still leaves the history
        return unmapped(oid, raw, customer_id, ("updated_at",))


def _multi(raw: Mapping[str, Any], code: str) -> str | None:
    """The first value of the multi-field ``code`` (EMAIL, PHONE): API ``custom_fields_values[i]
    .field_code``, webhook ``custom_fields[i][code]``; a FieldError when a custom field is not an object."""
    key = "custom_fields_values" if raw.get("custom_fields_values") else "custom_fields"
    for cf in as_list(raw.get(key)):
        if not isinstance(cf, Mapping):
            raise FieldError(key, "each custom field must be an object", cf)
        if cf.get("field_code") == code or cf.get("code") == code:
            for v in as_list(cf.get("values")):
                if isinstance(v, Mapping) and clean(v.get("value")):
                    return clean(v["value"])
    return None


def map_contact(raw: Mapping[str, Any]) -> Contact:
    cid = get_field(raw, "id", lambda v: str(int(v)))
    tags = _embedded(raw, "tags")
    first, last = clean(raw.get("first_name")), clean(raw.get("last_name"))
    if first is None and last is None:
        first = clean(raw.get("name"))
    created_key = "created_at" if raw.get("created_at") else "date_create"
    return Contact(customer_id=cid, email=lower_like_sql(_multi(raw, "EMAIL") or "") or None, phone=_multi(raw, "PHONE"),
                   first_name=first, last_name=last, marketing_consent=Consent.UNKNOWN,
                   created_at=get_field(raw, created_key, parse_dt) if raw.get(created_key) else None,
                   attributes={"tags": ",".join(filter(None, (clean(t.get("name")) for t in tags)))} if tags else {})


_OBJECTS = {"contacts": "contacts", "orders": "leads"}


class AmoCrmSource:
    name = NAME
    max_identity_group = DEFAULT_MAX_GROUP  # [source] max_identity_group, set by connectors.registry

    def __init__(self, config: AmoCrmConfig, secrets: AmoCrmSecrets | None = None, *,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        secrets = secrets or AmoCrmSecrets()
        sub = config.subdomain or (env_subdomain(secrets.subdomain, config.domain) if secrets.subdomain else None)
        if not sub and not secrets.api_url:
            raise ConfigError("amocrm: no account; set AMOCRM_SUBDOMAIN (the part before .amocrm.ru / .kommo.com)")
        if not secrets.token:
            raise ConfigError("amocrm: no access token; set AMOCRM_TOKEN (a long-lived token)")
        self.config = config
        self.clock = clock or utc_now
        token = secrets.token.get_secret_value()
        retry = with_sleep(retry, sleep)
        self.subdomain = sub
        self.http = HttpClient(secrets.api_url or f"https://{sub}.{config.domain}", vendor="amoCRM",
                               auth_env="AMOCRM_TOKEN",
                               url_env="AMOCRM_API_URL" if secrets.api_url else "[source] subdomain and domain"
                               if config.subdomain else "AMOCRM_SUBDOMAIN and [source] domain",
                               headers={"Authorization": f"Bearer {token}"}, secrets=(token,), retry=retry,
                               throttle=Throttle(config.requests_per_second, 1, sleep=retry.sleep),
                               redirect_advice=None if secrets.api_url else self._redirect_advice,
                               auth_advice="a long-lived token ends with the term chosen when it was made (1 day to "
                               "5 years) or once revoked, and rfmsync does not renew tokens: make a new long-lived "
                               "token in the account's private integration and set AMOCRM_TOKEN (a 403 may also be "
                               "this address blocked for too many requests: then wait before the next pull)")

    def _redirect_advice(self, target: str) -> str:
        """An account moved to another domain (``shop.amocrm.com`` → ``shop.kommo.com``) is ``[source] domain``;
        AMOCRM_SUBDOMAIN is only the part before it."""
        sub, _, domain = (urlsplit(target).hostname or "").partition(".")
        if domain not in DOMAINS:
            return f"set AMOCRM_API_URL={target}"  # (not an amoCRM/Kommo host: a proxy's, which that URL is for)
        advice = []
        if domain != self.config.domain:  # (a [source] setting only)
            advice.append(set_advice("domain", domain, in_config=True, env_prefix="AMOCRM_"))
        if sub != self.subdomain:
            advice.append(set_advice("subdomain", sub, in_config=bool(self.config.subdomain), env_prefix="AMOCRM_"))
        return " and ".join(advice) or f"set AMOCRM_API_URL={target}"

    def check(self) -> str:
        data = answer_object(self.http.get("api/v4/account"), "amoCRM api/v4/account")
        return f"{data.get('name') or '?'} ({data.get('subdomain') or '?'})"

    def pull(self, con: duckdb.DuckDBPyConnection, cursor: str | None = None,
             progress: Progress = None) -> PullResult:
        with RunStart.of(self.http, self.clock, NAME) as run_start:
            return pull_by_time(con, NAME, cursor, progress, run_start=run_start,
                                lookback=timedelta(minutes=self.config.lookback_minutes), read=self._read)

    def _read(self, obj: str, since: datetime | None, stager: Stager) -> datetime | None:
        """Leads (or contacts) changed since ``since``; for orders with a ``since`` also the trash (deleted
        leads leave the history). A first run reads the trash only from the pass after its backfill."""
        seen = [self._keyset(obj, since, stager)]
        if obj == "orders" and since is not None:
            seen.append(self._keyset(obj, since, stager, deleted=True))
        return latest(seen)

    def _keyset(self, obj: str, since: datetime | None, stager: Stager, deleted: bool = False) -> datetime | None:
        """Keyset on ``updated_at`` from ``since`` (everything when None); see the module doc."""
        entity = _OBJECTS[obj]
        params: dict[str, Any] = {"limit": self.config.page_size, "order[updated_at]": "asc"}
        if obj == "orders":
            params["with"] = "only_deleted" if deleted else "contacts"
        start = None if since is None else int(since.timestamp())
        guard, high = PageGuard(f"amoCRM {entity}"), HighWater(stager)
        while True:
            guard.next(start)
            rows, more = self._page(entity, params if start is None else {**params, "filter[updated_at][from]": start})
            self._stage(obj, rows, stager, high)
            if not more:
                return high.value
            if high.value is None:
                raise FatalError(f"amoCRM {entity}: a page that is not the last without a usable updated_at")
            top = int(high.value.timestamp())
            if start is not None and top <= start:  # a page of one second: page through that second
                self._one_second(obj, entity, params, top, stager, high)
                top += 1
            start = top

    def _one_second(self, obj: str, entity: str, params: dict[str, Any], second: int, stager: Stager,
                    high: HighWater) -> None:
        """Page through one crowded second by page number (``order[id]=asc``). A lead can only leave a past
        second (edited: it moves on to the end of the keyset; deleted: to the trash), and each one that
        leaves during a pass shifts the rest up, so the pass may skip the lead after a page boundary. Such a
        pass read a lead that the next pass no longer finds; the second is paged again until a pass finds
        every lead the pass before it read (at most :data:`MAX_SECOND_PASSES`, else a TransientError). A pass
        ends without a next link, or at a page whose ids were all read in that pass already: paged in id order, that
        is a vendor answering a page number past the end with its last page, linking a next one (paging on, our
        own page numbers never repeat: it never ended). A non-empty page with no readable id is a TransientError."""
        params = {k: v for k, v in params.items() if not k.startswith("order[")}
        params.update({"order[id]": "asc", "filter[updated_at][from]": second, "filter[updated_at][to]": second})
        before: set[str] | None = None
        for _ in range(MAX_SECOND_PASSES):
            guard, page, ids = PageGuard(f"amoCRM {entity} of second {second}"), 1, set()
            while True:
                guard.next(page)
                rows, more = self._page(entity, {**params, "page": page})
                read = {str(r["id"]) for r in rows if isinstance(r, Mapping) and r.get("id") not in (None, "")}
                if rows and not read:  # no "no new lead" stop: the leads after it would never be read
                    raise TransientError(f"amoCRM {entity}: page {page} of second {second} has no lead with a "
                                         "readable id; nothing was saved: run the pull again")
                self._stage(obj, rows, stager, high)
                old, ids = ids, ids | read
                if not more or read <= old:
                    break
                page += 1
            if before is not None and before <= ids:
                return
            before = ids
        raise TransientError(f"amoCRM {entity}: the leads of second {second} kept changing during "
                             f"{MAX_SECOND_PASSES} reads; the CRM changed faster than it could be read. Nothing "
                             "was saved: run the pull again")

    def _page(self, entity: str, params: Mapping[str, Any]) -> tuple[list[Any], bool]:
        """(rows, whether a next page may exist)."""
        data, resp = self.http.fetch("GET", f"api/v4/{entity}", params=dict(params))
        if resp.status_code == 204:  # No Content: past the last page (only a 204 says so: see below)
            return [], False
        # A 200 must be a page: taken as the end of the list, an empty body would end a backfill early, and the
        # pass after it would move the bookmark past the leads it never read.
        embedded = data.get("_embedded") if isinstance(data, Mapping) else None
        rows = embedded.get(entity) if isinstance(embedded, Mapping) else None
        links = (data.get("_links") or {}) if isinstance(data, Mapping) else None
        if not isinstance(rows, list) or not isinstance(links, Mapping):
            raise FatalError(f"amoCRM {entity}: HTTP {resp.status_code} answered {json_shape(data)}, not a page "
                             f"with an _embedded.{entity} list; nothing was saved: run the pull again")
        if not rows and links.get("next"):  # (amoCRM answers 204 past the end: taken as the end, the leads after it
            # would never be read, the pass after a backfill moving the bookmark past them)
            raise TransientError(f"amoCRM {entity}: a page of no {entity} with a next link, not the end of the list; "
                                 "nothing was saved: run the pull again")
        # (a short page with a next link is not the end either: the keyset goes on from its last second, which
        # only ever moves forward, so a vendor that links past its last page costs a request or two, no loop; nor is
        # a full page without one: amoCRM links a full page's next and answers 204 past the end, so read on)
        return rows, bool(rows) and (bool(links.get("next")) or len(rows) >= int(params["limit"]))

    def _stage(self, obj: str, rows: list[Any], stager: Stager, high: HighWater) -> None:
        def one(raw: Any) -> Order | Contact | None:
            updated = high.see(get_field(raw, "updated_at", parse_dt))
            if obj == "contacts":
                return map_contact(raw)
            if raw.get("is_deleted"):
                return tombstone(get_field(raw, "id", lambda v: str(int(v))), updated, _contact_id(raw))
            if not in_scope(raw, self.config):  # retire it, store nothing of it
                return tombstone(get_field(raw, "id", lambda v: str(int(v))), updated)
            return map_lead(raw, self.config)

        def keep(record: Order | Contact, raw: Any) -> Order | Contact:
            if isinstance(record, Contact):
                record = stager.contact(record, self.config.phone_region)
            # the version's time, as a contact's webhook says it (a later delivery older than it is left out)
            return versioned(record, raw, what=f"{NAME} pull")

        stager.stage(*map_page(stager, f"{NAME}:{obj}", rows, one, keep=keep))


# ---------------------------------------------------------------- webhooks


def verify_webhook(headers: Mapping[str, str], body: bytes, secret: str, path_token: str | None) -> bool:
    """amoCRM signs nothing: the secret is a random token in the webhook URL's path."""
    return tokens_equal(path_token, secret)


def _groups(form: Mapping[str, Any], entity: str) -> Mapping[str, Any]:
    """``form[entity]`` as ``{action: group}``; a ValueError naming the field when it is a plain value."""
    groups = form.get(entity) or {}
    if not isinstance(groups, Mapping):
        raise ValueError(f"amocrm webhook: {entity} must be grouped by action, e.g. {entity}[add][0][id]=…")
    return groups


def webhook_refs(body: bytes) -> list[tuple[str, str, str]]:
    """``(entity, action, id)`` for every entity in a delivery, e.g. ``("leads", "status", "5")``."""
    form = parse_php_form(body)
    refs = []
    for entity in ("leads", "contacts"):
        for action, group in _groups(form, entity).items():
            for item in as_list(group):
                if isinstance(item, dict) and clean(item.get("id")):
                    refs.append((entity, action, item["id"]))
    return refs


def parse_webhook(headers: Mapping[str, str], body: bytes,
                  config: AmoCrmConfig | None = None) -> tuple[list[Order], list[Contact]]:
    """Contacts from ``contacts[add|update][i][…]``; ``contacts[delete][i][id]`` → emptied contacts (a deleted
    contact leaves the store's addresses and the destinations); ``leads[delete][i][id]`` → cancelled tombstones
    (a deleted lead leaves the history). Other lead events carry no contact link, so they map to no
    order: use :func:`webhook_refs` as a hint and pull (the lookback catches it).

    Raises ValueError (not amoCRM form data) or RecordError (a contact or deleted lead without an id).
    """
    from .errors import RecordError

    form = parse_php_form(body)
    if not any(k in form for k in ("leads", "contacts", "account")):
        raise ValueError("amocrm webhook: no leads/contacts/account fields in the body")
    orders = []
    leads = _groups(form, "leads")
    for item in as_list(leads.get("delete")):
        item = item if isinstance(item, dict) else {}
        try:
            orders.append(tombstone(get_field(item, "id", lambda v: str(int(v))), UNDATED))
        except FieldError as exc:
            raise RecordError(exc.bad_row(f"{NAME}:webhook leads[delete]", item.get("id"))) from None
    # a deleted contact (gone from the contact list, which a pull can no longer show): emptied now
    contacts = [_webhook_contact(action, item, config)
                for action, group in _groups(form, "contacts").items() for item in as_list(group)]
    return orders, contacts


def _webhook_contact(action: str, item: Any, config: AmoCrmConfig | None) -> Contact:
    """``contacts[<action>][i]``, ``updated_at`` (Unix seconds, when amoCRM changed it) its version's time: orders
    its deliveries. ``delete``: the contact emptied (:func:`connectors.contacts.gone_contact`). A company's
    (``type = company``) is its leads' customer ``company-<id>`` (add, update, delete), never the contact of the
    same number."""
    from .errors import RecordError

    item = item if isinstance(item, dict) else {}
    try:
        cid = get_field(item, "id", lambda v: str(int(v)))
        key = f"company-{cid}" if clean(item.get("type")) == "company" else cid
        if action == "delete":
            return versioned(gone_contact(key), item)
        contact, issues = clean_contact(versioned(dataclasses.replace(map_contact(item), customer_id=key), item),
                                        (config or AmoCrmConfig()).phone_region, f"{NAME}:webhook")
    except FieldError as exc:
        raise RecordError(exc.bad_row(f"{NAME}:webhook contacts[{action}]", item.get("id"))) from None
    for issue in issues:
        log.warning("amocrm webhook: %s", issue)
    return contact


def webhook_pull_key(body: bytes) -> str | None:
    """Lead events carry no contact link: a delivery about leads asks the server for an incremental pull."""
    return body_digest(body) if any(entity == "leads" for entity, _, _ in webhook_refs(body)) else None


register_webhook_parser(NAME, WebhookParser(verify=verify_webhook, parse=parse_webhook, secret_field="webhook_token",
                                            needs_config=True, pull_key=webhook_pull_key))

__all__ = ["AmoCrmConfig", "AmoCrmSecrets", "AmoCrmSource", "map_lead", "map_contact", "verify_webhook",
           "parse_webhook", "webhook_refs"]
