"""SendGrid Marketing Campaigns destination, over the official ``sendgrid`` client (``host`` override).

Managed state: one SendGrid *list* per managed name (``list_prefix`` + name) and the custom fields named in
the config. Contacts are upserted with ``PUT /v3/marketing/contacts`` (async job, polled to completion); list
adds ride on the upsert's ``list_ids``; list removals resolve emails to contact ids (``search/emails``) and call
``DELETE /v3/marketing/lists/{id}/contacts``. Contacts are never deleted and suppressions are never touched.

Every HTTP status maps to one action in :data:`STATUS_ACTIONS`; retries happen only in
:class:`connectors.retry.RetryPolicy` (429 waits for ``X-RateLimit-Reset``).

Answers are validated before they are believed (:mod:`sync.destinations.answers`): the upsert's ``{job_id}``, the import
job (``status`` ∈ pending/completed/errored/failed, ``results.requested_count`` = contacts sent), list
removals, lists and fields pages. A 2xx that is not the documented shape fails the items it covers with the raw
answer (cut to 200 characters); the next run retries them.
"""

from __future__ import annotations

import csv
import enum
import gzip
import http.client
import io
import json
import logging
import re
import urllib.error
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence

import requests
from pydantic import Field
from python_http_client import exceptions as phc_errors
from sendgrid import SendGridAPIClient

from connectors.errors import TransientError
from connectors.retry import RetryPolicy, retry_after_seconds

from ..errors import DestinationConfigError, DestinationError
from ..model import ContactChange, ItemResult, OnResults
from .answers import BadAnswer, Shape, parse_answer

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.sendgrid.com"
MAX_UPSERT_CONTACTS = 30_000  # PUT /v3/marketing/contacts: "up to 30,000 contacts, or 6MB"
MAX_UPSERT_BYTES = 6_000_000  # 6 MB of JSON (decimal MB: the conservative reading)
MAX_SEARCH_EMAILS = 100  # POST /v3/marketing/contacts/search/emails returns up to 100 contacts
MAX_REMOVE_IDS = 100  # DELETE /lists/{id}/contacts?contact_ids=… (cap unpublished: keep URLs short)
PRESENT = "present"  # existing_members() status: SendGrid contacts have no subscription status
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Action(str, enum.Enum):
    RETRY = "retry"  # transient: back off and retry (idempotent calls; creates only on 429)
    CONFIG = "config"  # fix the API key / its scopes
    RECORD = "record"  # the request's content was refused: report per contact
    FATAL = "fatal"  # stop: retrying will not help


STATUS_ACTIONS: Mapping[int, Action] = {
    400: Action.RECORD, 401: Action.CONFIG, 403: Action.CONFIG, 404: Action.FATAL, 405: Action.FATAL,
    408: Action.RETRY, 413: Action.RECORD, 415: Action.FATAL, 429: Action.RETRY,
    500: Action.RETRY, 502: Action.RETRY, 503: Action.RETRY, 504: Action.RETRY,
}


def action_for_status(status: int) -> Action:
    """The one status → action rule: the table, else 5xx retry, else fatal."""
    return STATUS_ACTIONS.get(status, Action.RETRY if status >= 500 else Action.FATAL)


def field_type_for(value_name: str) -> str:
    """SendGrid field type for an rfmsync value: Date, Number or Text (by the value's name)."""
    v = value_name.lower()
    if "date" in v or v.endswith("_at") or v in {"first_order", "last_order"}:
        return "Date"
    numeric = ("recency", "frequency", "monetary", "score", "count", "orders", "days", "clv", "value",
               "probability", "alive", "total", "aov", "spend", "amount", "revenue")
    if v in {"r", "f", "m"} or any(tok in v for tok in numeric):
        return "Number"
    return "Text"


def _secret(value: Any) -> str:
    raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    return str(raw or "")


class _Refused(Exception):
    """A 400/413 on a content-bearing call: handled per contact by the caller."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.errors = status, errors


def _json(raw: bytes | str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _error_text(payload: Any, limit: int = 300) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("errors"), list):
        msgs = [str(e.get("message", "")) + (f" ({e['field']})" if e.get("field") else "")
                for e in payload["errors"] if isinstance(e, dict)]
        return "; ".join(msgs)[:limit]
    return json.dumps(payload)[:limit] if payload is not None else ""


class _JobId(Shape):
    job_id: str


class _Id(Shape):
    id: str


class _JobResults(Shape):
    requested_count: int | None = None  # absent while pending; a finished job must say how many it took
    errored_count: int = 0
    errors_url: str | None = None


class _ImportJob(Shape):
    """``GET /v3/marketing/contacts/imports/{id}``."""

    status: Literal["pending", "completed", "errored", "failed"]
    results: _JobResults | None = None


class _ExportJob(Shape):
    status: str
    urls: list[str] | None = None
    message: str | None = None


class _List(Shape):
    id: str
    name: str
    contact_count: int | None = None


class _ListsPage(Shape):
    result: list[_List]
    metadata: dict[str, Any] | None = Field(default=None, alias="_metadata")


class _FieldDef(Shape):
    id: str
    name: str
    field_type: str = "Text"


class _Reserved(Shape):
    name: str


class _FieldDefinitions(Shape):
    custom_fields: list[_FieldDef]
    reserved_fields: list[_Reserved] = []


class _Search(Shape):
    result: dict[str, Any]


class _RedactAuthorization(logging.Filter):
    """python_http_client logs request headers at DEBUG, Authorization included: mask it."""

    _PATTERN = re.compile(r"(['\"]?Authorization['\"]?\s*:\s*['\"]?)Bearer [^'\",}]+", re.I)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "uthorization" in msg:
            record.msg, record.args = self._PATTERN.sub(r"\1Bearer ***", msg), None
        return True


_phc_logger = logging.getLogger("python_http_client.client")
if not any(isinstance(f, _RedactAuthorization) for f in _phc_logger.filters):
    _phc_logger.addFilter(_RedactAuthorization())


class SendGridDestination:
    """One SendGrid account. Managed names become lists named ``list_prefix + name``."""

    def __init__(self, name: str, api_key: Any, api_url: str | None = None, list_prefix: str = "",
                 retry: RetryPolicy | None = None, timeout: float = 30, *,
                 sleep: Callable[[float], None] | None = None, poll_interval: float = 1.0,
                 job_timeout: float = 900.0, batch_size: int | None = None,
                 max_upsert_bytes: int = MAX_UPSERT_BYTES, field_types: Mapping[str, str] | None = None) -> None:
        key = _secret(api_key)
        if not key:
            raise DestinationConfigError(f"SendGrid destination {name!r}: no API key (set SENDGRID_API_KEY)")
        self.name = name
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.list_prefix = list_prefix
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._sleep = sleep or self.retry.sleep
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout
        self.batch_size = min(batch_size or MAX_UPSERT_CONTACTS, MAX_UPSERT_CONTACTS)
        self.max_upsert_bytes = min(max_upsert_bytes, MAX_UPSERT_BYTES)
        self.field_types = dict(field_types or {})
        self._sg = SendGridAPIClient(api_key=key, host=self.api_url)
        self._sg.client.timeout = timeout
        self._lists: dict[str, str] | None = None  # list name → id
        self._list_counts: dict[str, int] = {}
        self._fields: dict[str, str] | None = None  # lower-cased custom field name → id
        self._field_kinds: dict[str, str] = {}  # lower-cased name → Text | Number | Date
        self._reserved: set[str] = set()

    def __repr__(self) -> str:
        return f"SendGridDestination(name={self.name!r}, api_url={self.api_url!r})"

    def list_name(self, tag: str) -> str:
        """The SendGrid list for a managed name: the prefix is added unless the name already carries it."""
        return tag if tag.startswith(self.list_prefix) else self.list_prefix + tag

    # ---------------------------------------------------------------- HTTP
    def _request(self, method: str, parts: Sequence[str], body: Any = None, query: Mapping[str, Any] | None = None,
                 *, what: str, idempotent: bool = True, ok_404: bool = False,
                 shape: type[Shape] | None = None) -> tuple[int, Any]:
        """One call through the retry layer: (status, answer). With ``shape`` a 2xx body is validated and comes
        back as that model (:class:`BadAnswer` otherwise, not retried here); without one, decoded JSON or None."""
        def once() -> tuple[int, Any]:
            node = self._sg.client
            for part in parts:
                node = node._(part)
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
                raise DestinationError(msg) from None
            log.debug("SendGrid %s %s -> %s", method.upper(), "/".join(parts), resp.status_code)
            if shape is not None:
                return resp.status_code, parse_answer(shape, resp.body, f"SendGrid {what}")
            return resp.status_code, _json(resp.body)

        try:
            return self.retry.call(once, what=f"SendGrid {what}")
        except TransientError as exc:
            raise DestinationError(str(exc), status=exc.status, body=exc.body,  # "...; gave up after N attempts"
                                   retry_after=exc.retry_after) from None

    def _on_http_error(self, status: int, raw: bytes, headers: Any, what: str, idempotent: bool,
                       ok_404: bool) -> tuple[int, Any]:
        payload = _json(raw)
        text = _error_text(payload)
        if status == 404 and ok_404:
            return status, payload
        action = action_for_status(status)
        msg = f"SendGrid {what}: HTTP {status}" + (f": {text}" if text else "")
        if action is Action.RETRY and (idempotent or status == 429):
            wait = None
            if status == 429:
                wait = retry_after_seconds(headers.get("X-RateLimit-Reset") if headers else None)
                if wait is None:
                    wait = retry_after_seconds(headers.get("Retry-After") if headers else None)
            raise TransientError(msg, status=status, body=text, retry_after=wait)
        if action is Action.CONFIG:
            raise DestinationConfigError(f"SendGrid destination {self.name!r}: the API key was rejected or lacks "
                                         f"the Marketing scopes ({what}: HTTP {status})", status=status, body=text)
        if action is Action.RECORD:
            errors = payload.get("errors") if isinstance(payload, dict) else None
            raise _Refused(status, errors if isinstance(errors, list) else [{"message": text or f"HTTP {status}"}])
        raise DestinationError(msg, status=status, body=text)

    def _download(self, url: str, what: str) -> bytes:
        """Fetch a job's errors/export file: a pre-signed URL, fetched WITHOUT the API key."""
        def once() -> bytes:
            try:
                resp = requests.get(url, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransientError(f"SendGrid {what}: download failed ({type(exc).__name__})") from None
            if resp.status_code == 429 or resp.status_code >= 500:
                raise TransientError(f"SendGrid {what}: download HTTP {resp.status_code}", status=resp.status_code)
            if resp.status_code >= 400:
                raise DestinationError(f"SendGrid {what}: download HTTP {resp.status_code}", status=resp.status_code)
            data = resp.content
            return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data

        try:
            return self.retry.call(once, what=f"SendGrid {what}")
        except TransientError as exc:
            raise DestinationError(str(exc), status=exc.status) from None

    def _poll(self, parts: Sequence[str], done: Callable[[Any], bool], what: str, shape: type[Shape]) -> Any:
        waited, interval, misses = 0.0, self.poll_interval, 0
        while True:
            status, payload = self._request("get", parts, what=what, ok_404=True, shape=shape)
            if status == 404:  # a fresh job may not be visible yet
                misses += 1
                if misses > 5:
                    raise DestinationError(f"SendGrid {what}: job not found", status=404)
            elif done(payload):
                return payload
            if waited >= self.job_timeout:
                raise DestinationError(f"SendGrid {what}: still pending after {waited:.0f}s")
            self._sleep(interval)
            waited += interval
            interval = min(interval * 2, 10.0)

    # ---------------------------------------------------------------- lists and fields
    def _load_lists(self) -> dict[str, str]:
        lists: dict[str, str] = {}
        token: str | None = None
        seen: set[str] = set()
        while True:
            query = {"page_size": 1000, **({"page_token": token} if token else {})}
            _, page = self._request("get", ["marketing", "lists"], query=query, what="list lists", shape=_ListsPage)
            for item in page.result:
                lists[item.name] = item.id
                self._list_counts[item.name] = int(item.contact_count or 0)
            nxt = (page.metadata or {}).get("next")
            token = _page_token(nxt)
            if not token or token in seen:  # pagination cannot loop
                break
            seen.add(token)
        self._lists = lists
        return lists

    def _load_fields(self) -> dict[str, str]:
        _, defs = self._request("get", ["marketing", "field_definitions"], what="list custom fields",
                                shape=_FieldDefinitions)
        self._fields = {f.name.lower(): f.id for f in defs.custom_fields}
        self._field_kinds = {f.name.lower(): f.field_type for f in defs.custom_fields}
        self._reserved = {f.name.lower() for f in defs.reserved_fields}
        return self._fields

    def check(self) -> str:
        """Read-only: the key is accepted and has Marketing access (``GET /v3/marketing/field_definitions``)."""
        fields = self._load_fields()
        return f"API key accepted, Marketing Campaigns reachable ({len(fields)} custom fields)"

    def prepare(self, managed_tags: Sequence[str], fields: Mapping[str, str]) -> None:
        """Create the missing custom fields and managed lists; existing ones are left as they are."""
        known = self._load_fields()
        for fname, value_name in fields.items():
            if not _FIELD_NAME.match(fname):
                raise DestinationConfigError(f"SendGrid destination {self.name!r}: field {fname!r}: use letters, "
                                             "digits and _ only, starting with a letter or _")
            if fname.lower() in self._reserved:
                raise DestinationConfigError(f"SendGrid destination {self.name!r}: field {fname!r} is a SendGrid "
                                             "reserved field; pick another name")
            if fname.lower() in known:
                continue
            ftype = self.field_types.get(fname) or field_type_for(value_name)
            _, created = self._request("post", ["marketing", "field_definitions"],
                                       body={"name": fname, "field_type": ftype},
                                       what=f"create field {fname!r}", idempotent=False, shape=_Id)
            known[fname.lower()] = created.id
            self._field_kinds[fname.lower()] = ftype
            log.info("SendGrid %s: created custom field %s (%s)", self.name, fname, ftype)
        lists = self._load_lists()
        for tag in managed_tags:
            lname = self.list_name(tag)
            if lname in lists:
                continue
            _, created = self._request("post", ["marketing", "lists"], body={"name": lname},
                                       what=f"create list {lname!r}", idempotent=False, shape=_Id)
            lists[lname] = created.id
            self._list_counts[lname] = 0
            log.info("SendGrid %s: created list %s", self.name, lname)

    def _list_id(self, tag: str) -> str | None:
        if self._lists is None:
            self._load_lists()
        return (self._lists or {}).get(self.list_name(tag))

    # ---------------------------------------------------------------- apply
    def apply(self, changes: Sequence[ContactChange], on_results: OnResults) -> None:
        """Upsert (with list adds) in batches at the API maxima, then remove list memberships."""
        if self._fields is None:
            self._load_fields()
        groups: dict[tuple[str, ...], list[tuple[ContactChange, dict[str, Any]]]] = {}
        for ch in changes:
            if not (ch.needs_upsert or ch.add_tags):
                continue
            missing = [t for t in ch.add_tags if self._list_id(t) is None]
            if missing:
                on_results([ItemResult(ch.key, f"tag+{t}", False, f"SendGrid list {self.list_name(t)!r} does "
                                       "not exist (run prepare)") for t in sorted(missing)])
            ids = tuple(sorted({self._list_id(t) for t in ch.add_tags} - {None}))  # type: ignore[arg-type]
            groups.setdefault(ids, []).append((ch, self._contact_json(ch)))
        for list_ids, members in groups.items():
            for batch in self._chunks(members, list_ids):
                self._upsert(list(list_ids), batch, on_results)
        self._remove(changes, on_results)

    def _contact_json(self, ch: ContactChange) -> dict[str, Any]:
        custom: dict[str, Any] = {}
        for fname, value in ch.set_fields.items():
            fid = (self._fields or {}).get(fname.lower())
            if fid is None:
                raise DestinationConfigError(f"SendGrid destination {self.name!r}: custom field {fname!r} does "
                                             "not exist (run prepare with it)")
            if value is None:
                if self._field_kinds.get(fname.lower(), "Text") != "Text":
                    continue  # SendGrid cannot clear Number/Date fields through an upsert
                value = ""
            custom[fid] = value
        return {"email": ch.email, **({"custom_fields": custom} if custom else {})}

    def _chunks(self, members: list[tuple[ContactChange, dict[str, Any]]],
                list_ids: tuple[str, ...]) -> Iterator[list[tuple[ContactChange, dict[str, Any]]]]:
        overhead = len(json.dumps({"list_ids": list(list_ids), "contacts": []}))
        batch: list[tuple[ContactChange, dict[str, Any]]] = []
        size = overhead
        for ch, body in members:
            item = len(json.dumps(body)) + 2
            if batch and (len(batch) >= self.batch_size or size + item > self.max_upsert_bytes):
                yield batch
                batch, size = [], overhead
            batch.append((ch, body))
            size += item
        if batch:
            yield batch

    def _upsert(self, list_ids: list[str], batch: list[tuple[ContactChange, dict[str, Any]]],
                on_results: OnResults) -> None:
        errors: dict[int, str] = {}
        pending = list(range(len(batch)))
        for attempt in range(2):  # once more without the contacts a 400 named
            body = {"contacts": [batch[i][1] for i in pending], **({"list_ids": list_ids} if list_ids else {})}
            try:
                _, started = self._request("put", ["marketing", "contacts"], body=body,
                                           what=f"upsert {len(pending)} contacts", shape=_JobId)
                job = self._poll(["marketing", "contacts", "imports", started.job_id],
                                 lambda p: p.status != "pending", what=f"import job {started.job_id}",
                                 shape=_ImportJob)
                errors.update(self._job_errors(job, batch, pending))
            except BadAnswer as exc:  # nothing in it can be believed: every contact sent fails
                errors.update({i: str(exc) for i in pending})
            except _Refused as refused:
                named = _indexed_errors(refused.errors)
                bad = {pending[i]: msg for i, msg in named.items() if i < len(pending)}
                if not bad or attempt == 1:
                    msg = "; ".join(str(e.get("message")) for e in refused.errors)[:300]
                    bad = {i: f"SendGrid refused the batch (HTTP {refused.status}): {msg}"
                           for i in pending if i not in bad} | bad
                errors.update(bad)
                pending = [i for i in pending if i not in bad]
                if not pending:
                    break
                continue
            break
        results: list[ItemResult] = []
        for i, (ch, _) in enumerate(batch):
            err = errors.get(i)
            ok = err is None
            if ch.needs_upsert:
                results.append(ItemResult(ch.key, "upsert", ok, err))
            for t in sorted(ch.add_tags):
                if self._list_id(t) is not None:
                    results.append(ItemResult(ch.key, f"tag+{t}", ok, err))
        log.debug("SendGrid %s: upsert batch of %d done, %d rejected", self.name, len(batch), len(errors))
        on_results(results)

    def _job_errors(self, job: _ImportJob, batch: list[tuple[ContactChange, dict[str, Any]]],
                    pending: list[int]) -> dict[int, str]:
        res = job.results
        if res is None or res.requested_count != len(pending):
            got = "no results" if res is None else f"requested_count {res.requested_count}"
            reason = (f"SendGrid import job {job.status}: {got} for {len(pending)} contacts sent; "
                      "the outcome cannot be believed")
            return {i: reason for i in pending}
        if job.status == "completed" and not res.errored_count:
            return {}
        by_email: dict[str, str] = {}
        if res.errors_url:
            try:
                by_email = _parse_errors_csv(self._download(res.errors_url, "import errors file"))
            except DestinationError as exc:
                log.warning("SendGrid %s: cannot read the import errors file: %s", self.name, exc)
        if by_email:
            return {i: by_email[batch[i][0].email.lower()] for i in pending if batch[i][0].email.lower() in by_email}
        reason = f"SendGrid import job {job.status}: {res.errored_count} of " \
                 f"{res.requested_count} contacts rejected (no per-contact details)"
        return {i: reason for i in pending}

    def _remove(self, changes: Sequence[ContactChange], on_results: OnResults) -> None:
        by_list: dict[str, list[tuple[ContactChange, str]]] = {}
        absent: list[ItemResult] = []
        for ch in changes:
            for t in sorted(ch.remove_tags):
                lid = self._list_id(t)
                if lid is None:  # no such list: nobody is on it
                    absent.append(ItemResult(ch.key, f"tag-{t}", True))
                else:
                    by_list.setdefault(lid, []).append((ch, t))
        if absent:
            on_results(absent)
        if not by_list:
            return
        emails = sorted({ch.email.lower() for items in by_list.values() for ch, _ in items})
        try:
            ids = self._contact_ids(emails)
        except BadAnswer as exc:
            on_results([ItemResult(ch.key, f"tag-{t}", False, str(exc)) for items in by_list.values()
                        for ch, t in items])
            return
        for lid, items in by_list.items():
            gone = [ItemResult(ch.key, f"tag-{t}", True) for ch, t in items if ch.email.lower() not in ids]
            if gone:
                on_results(gone)  # not a SendGrid contact: not on the list either
            known = [(ch, t) for ch, t in items if ch.email.lower() in ids]
            for start in range(0, len(known), MAX_REMOVE_IDS):
                part = known[start:start + MAX_REMOVE_IDS]
                cids = ",".join(sorted({ids[ch.email.lower()] for ch, _ in part}))
                try:
                    self._request("delete", ["marketing", "lists", lid, "contacts"], query={"contact_ids": cids},
                                  what=f"remove {len(part)} contacts from a list", shape=_JobId)
                    on_results([ItemResult(ch.key, f"tag-{t}", True) for ch, t in part])
                except BadAnswer as exc:
                    on_results([ItemResult(ch.key, f"tag-{t}", False, str(exc)) for ch, t in part])
                except _Refused as refused:
                    msg = f"SendGrid refused the removal: {_error_text({'errors': refused.errors})}"
                    on_results([ItemResult(ch.key, f"tag-{t}", False, msg) for ch, t in part])

    def _contact_ids(self, emails: Sequence[str]) -> dict[str, str]:
        """email → contact id for those SendGrid knows (``search/emails``, 100 per call)."""
        found: dict[str, str] = {}
        for start in range(0, len(emails), MAX_SEARCH_EMAILS):
            chunk = list(emails[start:start + MAX_SEARCH_EMAILS])
            try:
                status, payload = self._request("post", ["marketing", "contacts", "search", "emails"],
                                                body={"emails": chunk}, what="search contacts by email",
                                                ok_404=True, shape=_Search)
            except _Refused as refused:
                raise DestinationError(f"SendGrid search by email refused: "
                                       f"{_error_text({'errors': refused.errors})}", status=refused.status) from None
            if status == 404:
                continue
            for email, entry in payload.result.items():
                contact = (entry or {}).get("contact") if isinstance(entry, dict) else None
                if contact and contact.get("id"):
                    found[email.lower()] = contact["id"]
        return found

    # ---------------------------------------------------------------- reads
    def read_managed(self, managed_tags: Sequence[str]) -> dict[str, set[str]]:
        """Members of each managed list, via one contact export per non-empty list."""
        self._load_lists()
        out: dict[str, set[str]] = {}
        for tag in managed_tags:
            lname = self.list_name(tag)
            lid = (self._lists or {}).get(lname)
            if lid is None or self._list_counts.get(lname, 1) == 0:
                out[tag] = set()
                continue
            _, started = self._request("post", ["marketing", "contacts", "exports"],
                                       body={"list_ids": [lid], "file_type": "csv"}, what=f"export list {lname!r}",
                                       shape=_Id)
            job = self._poll(["marketing", "contacts", "exports", started.id],
                             lambda p: p.status in ("ready", "failure"), what=f"export {started.id}",
                             shape=_ExportJob)
            if job.status != "ready":
                raise DestinationError(f"SendGrid export of list {lname!r} failed: {job.message or ''}")
            members: set[str] = set()
            for url in job.urls or []:
                members |= _emails_from_csv(self._download(url, "list export file"))
            out[tag] = members
        return out

    def existing_members(self, keys: Iterable[str] | None = None) -> dict[str, str] | None:
        """``{email: "present"}`` for the given keys SendGrid holds; ``None`` without keys (no cheap full read)."""
        if keys is None:
            return None
        return {email: PRESENT for email in self._contact_ids(sorted({k.lower() for k in keys}))}


def _page_token(next_url: str | None) -> str | None:
    if not next_url:
        return None
    from urllib.parse import parse_qs, urlsplit

    return (parse_qs(urlsplit(next_url).query).get("page_token") or [None])[0] or None


_INDEXED = re.compile(r"contacts\[(\d+)\]")


def _indexed_errors(errors: Sequence[dict[str, Any]]) -> dict[int, str]:
    out: dict[int, str] = {}
    for err in errors:
        m = _INDEXED.search(str(err.get("field") or ""))
        if m:
            out[int(m.group(1))] = f"SendGrid rejected the contact: {err.get('message', 'invalid')}"
    return out


def _rows(data: bytes) -> list[dict[str, str]]:
    text = data.decode("utf-8-sig", errors="replace")
    return [{(k or "").strip().lower(): (v or "") for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def _parse_errors_csv(data: bytes) -> dict[str, str]:
    """The import errors file (format unpublished): any e-mail column plus an error/errors/message column."""
    out: dict[str, str] = {}
    for row in _rows(data):
        email = row.get("email") or row.get("e-mail") or ""
        msg = row.get("errors") or row.get("error") or row.get("message") or "rejected"
        if email:
            out[email.strip().lower()] = f"SendGrid rejected the contact: {msg}"
    return out


def _emails_from_csv(data: bytes) -> set[str]:
    return {(r.get("email") or "").strip().lower() for r in _rows(data)} - {""}


__all__ = ["SendGridDestination", "STATUS_ACTIONS", "Action", "action_for_status", "field_type_for",
           "MAX_UPSERT_CONTACTS", "MAX_UPSERT_BYTES", "MAX_SEARCH_EMAILS", "PRESENT"]
