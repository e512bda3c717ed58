"""Mailchimp destination: one audience (list); managed tags are static segments, RFM values are merge fields.

Calls, through the official SDK ``mailchimp_marketing`` 3.0.80 (``requests`` underneath)::

    prepare          GET /lists/{id}; GET+POST /lists/{id}/merge-fields; GET+POST /lists/{id}/segments
    apply            POST /lists/{id}                 batch subscribe, <= 500 members a call
                     POST /lists/{id}/segments/{seg}  <= 500 members_to_add and <= 500 members_to_remove
    existing_members GET /lists/{id}/members          count=1000 pages
    read_managed     GET /lists/{id}/segments/{seg}/members

Consent. The batch-subscribe member object (spec 3.0.55) has ``status`` but no ``status_if_new``, and
``update_existing`` decides whether a batch may change existing members. So an upsert is done as:

1. contacts to create (``change.create`` with a ``status_if_new``): ``update_existing=false`` and
   ``status = status_if_new``. New addresses are created with that status; addresses already on the list are
   left untouched and answered ``ERROR_CONTACT_EXISTS``, and go on to step 2.
2. field updates (and the ``ERROR_CONTACT_EXISTS`` spill-over): ``update_existing=true`` with
   ``merge_fields`` and **no status at all**, so subscribed, unsubscribed, cleaned, pending and transactional
   members all keep their status.

Both steps are idempotent, so both are retried. Tags come after the upserts; a contact whose upsert failed
gets no tag call this run (its tag ops are reported failed and the engine retries them next run).

Answers are validated before they are believed (:mod:`sync.destinations.answers`): a 2xx body is re-read from the raw
response (the SDK returns raw text for HTML, a bare ``requests.Response`` for truncated JSON or an empty body)
and checked against the documented shape (batch subscribe: ``new_members``, ``updated_members``,
``errors[{email_address, error, error_code}]``; tag call: ``members_added``, ``members_removed``,
``errors[{email_addresses, error}]``), and every submitted address must be accounted for. Anything else fails
the call's items with the raw answer (cut to 200 characters). A tag add that Mailchimp ignores or refuses
because the address is not a list member reports the item ``missing``: the ledger forgets the contact, and the
next run creates it again (consent rules apply).

Errors: :data:`STATUS_ACTIONS` (data, one table) maps HTTP statuses to retry / config / item / fatal.
``retry`` becomes :class:`connectors.errors.TransientError` (with ``retry_after``), which the one retry layer
(:class:`connectors.retry.RetryPolicy`) retries; once it gives up that is a :class:`DestinationError`.
SDK quirks handled here: errors are ``ApiClientError`` whose ``.text`` is the raw problem+json string (the SDK
only parses ``application/json``) and which carries no headers; empty-body answers (a body-less 429/403, a
204) come back as a bare ``requests.Response`` instead of an exception. The API key lives only inside the
SDK client: it is never logged, never put in an error, never shown in a repr.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import requests
from mailchimp_marketing.api.lists_api import ListsApi
from mailchimp_marketing.api_client import ApiClient, ApiClientError
from pydantic import SecretStr

from connectors.errors import TransientError
from connectors.retry import RetryPolicy, retry_after_seconds

from ..errors import DestinationConfigError, DestinationError
from ..model import ContactChange, FieldValue, ItemResult, OnResults
from .answers import BadAnswer, Shape, decode_json, unaccounted, validate

log = logging.getLogger(__name__)

MAX_BATCH = 500  # members per batch subscribe; members_to_add / members_to_remove per segment call
PAGE_SIZE = 1000  # `count` maximum on GET collections
MAX_CONNECTIONS = 10  # Mailchimp's concurrent-connection limit per API key

#: HTTP status -> what the caller does: retry (transient), config (fix settings), item (this batch's items
#: failed, carry on), fatal (stop). Other 5xx retry, other 4xx are fatal.
STATUS_ACTIONS: Mapping[int, str] = MappingProxyType({
    400: "item", 401: "config", 403: "config", 404: "config", 405: "fatal", 408: "retry", 422: "item",
    429: "retry", 500: "retry", 502: "retry", 503: "retry", 504: "retry",
})
#: "At exceptionally high volumes, you may receive an HTTP 429 or 403 without a JSON body": a body-less
#: 403 is throttling, not a rejected key.
EMPTY_BODY_ACTIONS: Mapping[int, str] = MappingProxyType({403: "retry", 429: "retry"})

#: rfmsync value names stored in a ``number`` merge field; everything else gets ``text``.
NUMBER_VALUES = frozenset({
    "r", "f", "m", "r_score", "f_score", "m_score", "fm_score", "recency", "recency_days", "frequency",
    "monetary", "orders", "order_count", "total_spent", "avg_order_value", "aov", "clv", "predicted_clv",
    "p_alive", "expected_purchases", "tenure_days", "days_since_last_order",
})
_NUMBER_SUFFIXES = ("_days", "_count", "_amount", "_value", "_spent")
_MERGE_TAG = re.compile(r"[A-Z0-9_]{1,10}")
_DATA_CENTRE = re.compile(r"[a-z]+[0-9]+")
#: an error text meaning "this address is not in the audience" (tag calls; the update pass without a status)
_NOT_A_MEMBER = re.compile(r"not (?:a )?(?:list )?member|does not exist|doesn't exist|not found|status is required",
                           re.I)


class _Member(Shape):
    email_address: str


class _MemberError(Shape):
    email_address: str
    error: str | None = None
    error_code: str | None = None
    field: str | None = None
    field_message: str | None = None


class _BatchAnswer(Shape):
    """``POST /lists/{id}`` (batch subscribe), 200."""

    new_members: list[_Member]
    updated_members: list[_Member]
    errors: list[_MemberError]


class _SegmentError(Shape):
    email_addresses: list[str]
    error: str | None = None


class _SegmentAnswer(Shape):
    """``POST /lists/{id}/segments/{seg}`` (members_to_add / members_to_remove), 200."""

    members_added: list[_Member]
    members_removed: list[_Member]
    errors: list[_SegmentError]


class _ListInfo(Shape):
    id: str
    name: str


class _Created(Shape):
    id: int


def merge_field_type(value_name: str) -> str:
    """Mailchimp merge-field type created for an rfmsync value: ``number`` for numeric values, else ``text``."""
    name = value_name.lower()
    if name in NUMBER_VALUES or name.endswith(_NUMBER_SUFFIXES) or name.startswith("monetary"):
        return "number"
    return "text"


def action_for(status: int, empty_body: bool = False) -> str:
    """Look up :data:`STATUS_ACTIONS` (and :data:`EMPTY_BODY_ACTIONS` for body-less answers)."""
    if empty_body and status in EMPTY_BODY_ACTIONS:
        return EMPTY_BODY_ACTIONS[status]
    return STATUS_ACTIONS.get(status, "retry" if status >= 500 else "fatal")


def data_centre(api_key: str) -> str | None:
    """``…-us21`` -> ``us21``; None when the key has no (valid) suffix."""
    parts = api_key.split("-")
    return parts[1] if len(parts) == 2 and _DATA_CENTRE.fullmatch(parts[1]) else None


class BatchRejected(DestinationError):
    """The API refused one whole call as invalid (400): its items are reported failed, the sync goes on."""


class _ApiClient(ApiClient):
    """The SDK's client plus one seam: keep this thread's last raw response (``ApiClientError`` drops headers)."""

    def __init__(self, config: dict[str, Any], host: str) -> None:
        super().__init__(config)
        self.host = host
        self.last = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.last.response = None
        self.last.response = super().request(*args, **kwargs)
        return self.last.response


class MailchimpDestination:
    """One Mailchimp audience as a :class:`sync.model.Destination`."""

    def __init__(self, name: str, audience: str, api_key: str | SecretStr, api_url: str | None = None,
                 retry: RetryPolicy | None = None, timeout: float = 30, max_connections: int = 5,
                 batch_size: int | None = None) -> None:
        self.name = name
        self.audience = audience
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else (api_key or "")
        if not key:
            raise DestinationConfigError(f"destination {name!r}: MAILCHIMP_API_KEY is not set")
        dc = data_centre(key)
        if api_url is None and dc is None:
            raise DestinationConfigError(
                f"destination {name!r}: the Mailchimp API key has no data-centre suffix (like '-us21'); "
                "use the full key from Account > Extras > API keys, or set MAILCHIMP_API_URL")
        self.api_url = (api_url or f"https://{dc}.api.mailchimp.com/3.0").rstrip("/")
        self.timeout = timeout
        self.max_connections = max(1, min(int(max_connections), MAX_CONNECTIONS))
        self.batch_size = max(1, min(batch_size or MAX_BATCH, MAX_BATCH))
        self._retry = retry or RetryPolicy()
        # server "" turns off the SDK's url.replace('server', dc) on every URL; the host is set in full instead.
        self._api = _ApiClient({"api_key": key, "server": "", "timeout": timeout}, self.api_url)
        self._lists = ListsApi(self._api)
        self._segments: dict[str, int] | None = None  # tag name -> static segment id
        self._field_tags: dict[str, str] = {}  # config field name (or value name) -> merge tag
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MailchimpDestination(name={self.name!r}, audience={self.audience!r}, api_url={self.api_url!r})"

    # ------------------------------------------------------------------ Destination protocol
    def check(self) -> str:
        """Read-only: the API key is accepted and the audience exists (``GET /lists/{id}``)."""
        try:
            info = self._call(f"GET /lists/{self.audience}", self._lists.get_list, self.audience,
                              fields=["id", "name"], shape=_ListInfo)
        except DestinationConfigError as exc:
            if exc.status != 404:
                raise
            raise DestinationConfigError(
                f"destination {self.name!r}: Mailchimp audience {self.audience!r} not found; check `audience` "
                "(Audience > Settings > Audience name and defaults > Audience ID) and that the API key belongs "
                "to the same account", status=404, body=exc.body) from None
        return f"API key accepted, audience {info.id!r} ({info.name}) found"

    def prepare(self, managed_tags: Sequence[str], fields: Mapping[str, str]) -> None:
        """Check the audience; create missing merge fields (see :func:`merge_field_type`) and managed tags."""
        self.check()
        self._prepare_fields(fields)
        self._segment_ids(managed_tags, create=True)

    def existing_members(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """Normalised email -> Mailchimp status for the audience's members (only ``keys`` when given)."""
        wanted = None if keys is None else {k.lower() for k in keys}
        if wanted is not None and not wanted:
            return {}
        out: dict[str, str] = {}
        for m in self._paged("GET members", self._lists.get_list_members_info, (self.audience,), "members",
                             ("email_address", "status"),
                             fields=["members.email_address", "members.status", "total_items"]):
            key = m["email_address"].lower()
            if wanted is None or key in wanted:
                out[key] = m["status"]
        return out

    def read_managed(self, managed_tags: Sequence[str]) -> dict[str, set[str]]:
        """Normalised emails carrying each managed tag, whatever their status."""
        ids = self._segment_ids(managed_tags, create=False)
        out: dict[str, set[str]] = {}
        for tag in managed_tags:
            sid = ids.get(tag)
            out[tag] = set() if sid is None else {
                m["email_address"].lower() for m in self._paged(
                    f"GET segment {tag!r} members", self._lists.get_segment_members_list,
                    (self.audience, str(sid)), "members", ("email_address",),
                    fields=["members.email_address", "total_items"],
                    include_cleaned="true", include_transactional="true", include_unsubscribed="true")}
        return out

    def apply(self, changes: Sequence[ContactChange], on_results: OnResults) -> None:
        """Upsert (create, then update) and tag in batches; ``on_results`` after each API call."""
        failed: set[str] = set()
        missing: set[str] = set()
        stats = {"calls": 0, "items": 0, "failed": 0}

        def report(results: Sequence[ItemResult]) -> None:
            stats["calls"] += 1
            stats["items"] += len(results)
            bad = [r.key for r in results if not r.ok]
            stats["failed"] += len(bad)
            failed.update(bad)
            missing.update(r.key for r in results if r.missing)
            on_results(results)

        creates = [c for c in changes if c.needs_upsert and c.create and c.status_if_new]
        updates = [c for c in changes if c.needs_upsert and not (c.create and c.status_if_new)]
        spill = self._run([partial(self._subscribe, chunk, True) for chunk in self._chunks(creates)], report)
        self._run([partial(self._subscribe, chunk, False) for chunk in self._chunks(updates + spill)], report)
        self._run(self._tag_tasks(changes, failed, missing, on_results), report)
        log.info("mailchimp %s: %d changes -> %d item results (%d failed) in %d calls", self.name, len(changes),
                 stats["items"], stats["failed"], stats["calls"])

    # ------------------------------------------------------------------ apply internals
    def _chunks(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        return [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]

    def _run(self, tasks: list[Callable[[], tuple[list[ItemResult], list[Any]]]],
             report: OnResults) -> list[Any]:
        """Run calls with at most ``max_connections`` in flight; report each call's results from this thread."""
        if not tasks:
            return []
        extras: list[Any] = []
        first_error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=min(self.max_connections, len(tasks)),
                                thread_name_prefix=f"mailchimp-{self.name}") as pool:
            futures = [pool.submit(task) for task in tasks]
            for future in as_completed(futures):
                try:
                    results, extra = future.result()
                except CancelledError:
                    continue
                except Exception as exc:  # stop starting calls; still report the ones that finish
                    if first_error is None:
                        first_error = exc
                        for other in futures:
                            other.cancel()
                    continue
                report(results)
                extras.extend(extra)
        if first_error is not None:
            raise first_error
        return extras

    def _subscribe(self, chunk: Sequence[ContactChange], create: bool) -> tuple[list[ItemResult], list[Any]]:
        members = []
        for c in chunk:
            member: dict[str, Any] = {"email_address": c.email}
            if create:
                member["status"] = c.status_if_new  # applies to new members only: update_existing=false
            if c.set_fields:
                member["merge_fields"] = {self._field_tags.get(k, k): _merge_value(v) for k, v in c.set_fields.items()}
            members.append(member)
        what = f"POST /lists/{self.audience} ({len(members)} {'new' if create else 'existing'} members)"
        try:
            answer = self._call(what, self._lists.batch_list_members, self.audience,
                                {"members": members, "update_existing": not create}, shape=_BatchAnswer)
        except (BatchRejected, BadAnswer) as exc:
            return [ItemResult(c.key, "upsert", False, str(exc)) for c in chunk], []
        errors = {e.email_address.lower(): e for e in answer.errors}
        done = {m.email_address.lower() for m in [*answer.new_members, *answer.updated_members]}
        results: list[ItemResult] = []
        spill: list[ContactChange] = []
        for c in chunk:
            error = errors.get(c.email.lower()) or errors.get(c.key)
            if error is None:
                ok = c.email.lower() in done or c.key in done
                results.append(ItemResult(c.key, "upsert", ok, None if ok else
                                          f"Mailchimp {what}: the answer does not mention {c.email}"))
            elif create and error.error_code == "ERROR_CONTACT_EXISTS":
                if c.set_fields:  # already on the list, status untouched: its fields go in the update pass
                    spill.append(c)
                else:
                    results.append(ItemResult(c.key, "upsert", True))
            else:
                missing = not create and (error.field == "status" or bool(_NOT_A_MEMBER.search(error.error or "")))
                results.append(ItemResult(c.key, "upsert", False, _member_error(error), missing=missing))
        return results, spill

    def _tag_tasks(self, changes: Sequence[ContactChange], failed: set[str], missing: set[str],
                   on_results: OnResults) -> list[Callable[[], tuple[list[ItemResult], list[Any]]]]:
        adds: dict[str, list[ContactChange]] = {}
        removes: dict[str, list[ContactChange]] = {}
        skipped: list[ItemResult] = []
        for c in changes:
            ops = [(adds, "+", t) for t in sorted(c.add_tags)] + [(removes, "-", t) for t in sorted(c.remove_tags)]
            for bucket, sign, tag in ops:
                if c.key in missing:  # not in the audience: carries no tag; adds wait for it to be created
                    skipped.append(ItemResult(c.key, f"tag{sign}{tag}", sign == "-", None if sign == "-" else
                                              "skipped: not a list member", missing=sign == "+"))
                elif c.key in failed:
                    skipped.append(ItemResult(c.key, f"tag{sign}{tag}", False, "skipped: the upsert failed"))
                else:
                    bucket.setdefault(tag, []).append(c)
        if skipped:
            on_results(skipped)
        ids = self._segment_ids(sorted(set(adds) | set(removes)), create=True)
        tasks = []
        for tag in sorted(set(adds) | set(removes)):
            add, remove = adds.get(tag, []), removes.get(tag, [])
            for i in range(max(math.ceil(len(add) / self.batch_size), math.ceil(len(remove) / self.batch_size))):
                part = slice(i * self.batch_size, (i + 1) * self.batch_size)
                tasks.append(partial(self._tag_call, tag, ids[tag], add[part], remove[part]))
        return tasks

    def _tag_call(self, tag: str, sid: int, add: Sequence[ContactChange],
                  remove: Sequence[ContactChange]) -> tuple[list[ItemResult], list[Any]]:
        body: dict[str, list[str]] = {}
        if add:
            body["members_to_add"] = [c.email for c in add]
        if remove:
            body["members_to_remove"] = [c.email for c in remove]
        what = f"POST /lists/{self.audience}/segments/{sid} ({tag!r} +{len(add)} -{len(remove)})"
        ops = [(c, f"tag+{tag}") for c in add] + [(c, f"tag-{tag}") for c in remove]
        try:
            answer = self._call(what, self._lists.batch_segment_members, body, self.audience, str(sid),
                                shape=_SegmentAnswer)
        except (BatchRejected, BadAnswer) as exc:
            return [ItemResult(c.key, op, False, str(exc)) for c, op in ops], []
        refused = {email.lower(): e.error or "refused" for e in answer.errors for email in e.email_addresses}
        ignored = set(unaccounted([c.email.lower() for c in add], (m.email_address for m in answer.members_added),
                                  refused))
        results = []
        for c, op in ops:
            email = c.email.lower()
            if email in refused and op.startswith("tag-") and _NOT_A_MEMBER.search(refused[email]):
                results.append(ItemResult(c.key, op, True))  # not in the audience: it carries no tag either
            elif email in refused:
                results.append(ItemResult(c.key, op, False, refused[email],
                                          missing=bool(_NOT_A_MEMBER.search(refused[email]))))
            elif op.startswith("tag+") and email in ignored:  # "emails not on the list are ignored"
                results.append(ItemResult(c.key, op, False, f"{c.email} is not a list member (Mailchimp ignored "
                                          "the tag); it will be created again next run", missing=True))
            else:  # a removal Mailchimp does not mention: the address does not carry the tag either way
                results.append(ItemResult(c.key, op, True))
        return results, []

    # ------------------------------------------------------------------ prepare internals
    def _prepare_fields(self, fields: Mapping[str, str]) -> None:
        for tag in fields:
            if not _MERGE_TAG.fullmatch(tag.upper()):
                raise DestinationConfigError(f"destination {self.name!r}: merge tag {tag!r} in `fields` must be "
                                             "1-10 characters, letters, digits or _ (e.g. RECENCY)")
        existing = self._merge_fields()
        for tag, value in fields.items():
            tag = tag.upper()
            kind = merge_field_type(value)
            if tag in existing:
                if existing[tag].get("type") != kind:
                    log.warning("mailchimp %s: merge field %s is %s, rfmsync would use %s for %r; leaving it",
                                self.name, tag, existing[tag].get("type"), kind, value)
                continue
            body = {"tag": tag, "name": value, "type": kind, "public": False}
            try:
                self._call(f"POST /lists/{self.audience}/merge-fields ({tag})", self._lists.add_list_merge_field,
                           self.audience, body)
            except BatchRejected:  # a retried create whose first attempt landed: fine if it now exists
                if tag not in self._merge_fields():
                    raise
            log.info("mailchimp %s: created merge field %s (%s) for %r", self.name, tag, kind, value)
        # set_fields are keyed by the config's field name, whatever its case ("Recency" -> RECENCY)
        self._field_tags = {**{value: tag.upper() for tag, value in fields.items()},
                            **{tag: tag.upper() for tag in fields}}

    def _merge_fields(self) -> dict[str, dict[str, Any]]:
        return {str(f["tag"]).upper(): f for f in self._paged(
            "GET merge-fields", self._lists.get_list_merge_fields, (self.audience,), "merge_fields", ("tag",),
            fields=["merge_fields.tag", "merge_fields.type", "total_items"])}

    def _segment_ids(self, tags: Sequence[str], create: bool) -> dict[str, int]:
        with self._lock:
            if self._segments is None:
                self._segments = self._load_segments()
            for tag in tags:
                if tag not in self._segments and create:
                    self._segments[tag] = self._create_segment(tag)
            return {t: self._segments[t] for t in tags if t in self._segments}

    def _load_segments(self) -> dict[str, int]:
        return {s["name"]: int(s["id"]) for s in self._paged(
            "GET segments", self._lists.list_segments, (self.audience,), "segments", ("id", "name"), type="static",
            fields=["segments.id", "segments.name", "total_items"])}

    def _create_segment(self, tag: str) -> int:
        try:
            answer = self._call(f"POST /lists/{self.audience}/segments ({tag!r})", self._lists.create_segment,
                                self.audience, {"name": tag, "static_segment": []}, shape=_Created)
        except (BatchRejected, BadAnswer):  # a retried create whose first attempt landed, or an unreadable
            found = self._load_segments().get(tag)  # answer: fine if it now exists
            if found is None:
                raise DestinationError(f"Mailchimp could not create tag {tag!r} in audience {self.audience!r}")
            return found
        log.info("mailchimp %s: created tag %r", self.name, tag)
        return answer.id

    # ------------------------------------------------------------------ HTTP plumbing
    def _paged(self, what: str, fn: Callable[..., Any], args: tuple[Any, ...], key: str, need: tuple[str, ...],
               **params: Any) -> Iterator[dict[str, Any]]:
        offset, previous = 0, None
        while True:
            label = f"{what} offset={offset}"
            page = self._call(label, fn, *args, count=PAGE_SIZE, offset=offset, **params)
            items = page.get(key, [])
            bad = not isinstance(items, list) or any(
                not isinstance(i, dict) or any(i.get(n) is None for n in need) for i in items)
            if bad or not isinstance(page.get("total_items", 0), int):
                raise BadAnswer(f"Mailchimp {label}", f"{key}[] items need {', '.join(need)}", page)
            if items and items == previous:
                raise DestinationError(f"Mailchimp {what}: the same page came back twice at offset {offset}; "
                                       "stopping instead of looping")
            yield from items
            offset += len(items)
            total = page.get("total_items")
            if len(items) < PAGE_SIZE or (total is not None and offset >= total):
                return
            previous = items

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, shape: type[Shape] | None = None,
              **kwargs: Any) -> Any:
        """One API call through the retry layer. The 2xx body is re-read from the raw response and validated:
        ``shape`` (a model instance comes back) or, without one, any JSON object (a dict comes back); anything
        else is :class:`BadAnswer` (not retried here: the items it covers fail and the next run retries them)."""

        def once() -> Any:
            started = time.monotonic()
            try:
                result = fn(*args, **kwargs)
            except ApiClientError as exc:
                response = getattr(self._api.last, "response", None)
                raise self._error(what, exc.status_code, exc.text, response) from None
            response = getattr(self._api.last, "response", None)
            if isinstance(result, requests.Response):  # SDK quirk: empty body -> raw response, no exception
                response = result
                if not result.ok:
                    raise self._error(what, result.status_code, result.text, result)
            log.debug("mailchimp %s: %s answered in %.2fs", self.name, what, time.monotonic() - started)
            label = f"Mailchimp {what}"
            raw = response.content if response is not None else result
            payload = decode_json(raw, label) if isinstance(raw, (bytes, str)) else raw
            if shape is not None:
                return validate(shape, payload, label, raw)
            if not isinstance(payload, dict):
                raise BadAnswer(label, "not a JSON object", raw)
            return payload

        try:
            return self._retry.call(once, what=f"mailchimp {what}")
        except TransientError as exc:
            raise DestinationError(f"Mailchimp {what} (audience {self.audience!r}) still failing: "
                                   f"{exc}", status=exc.status, body=exc.body, retry_after=exc.retry_after) from None

    def _error(self, what: str, status: int | None, text: Any,
               response: requests.Response | None) -> Exception:
        if status is None:  # transport failure: the SDK wraps the requests exception
            if isinstance(text, (requests.ConnectionError, requests.Timeout)):
                if isinstance(text, requests.Timeout):
                    return TransientError(f"Mailchimp {what}: timed out after {self.timeout:g} s")
                return TransientError(f"Mailchimp {what}: cannot connect ({type(text).__name__})")
            return DestinationError(f"Mailchimp {what}: {type(text).__name__}: {text}")
        body = text if isinstance(text, str) else json.dumps(text) if isinstance(text, (dict, list)) else ""
        problem = _problem(body)
        title = problem.get("title") or ("empty body" if not body.strip() else "error")
        detail = problem.get("detail") or ""
        field_errors = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in problem.get("errors") or []
                                 if isinstance(e, dict))
        message = f"Mailchimp {what}: HTTP {status} {title}" + (f": {detail}" if detail else "") + (
            f" ({field_errors})" if field_errors else "")
        action = action_for(status, empty_body=not body.strip())
        if action == "retry":
            retry_after = retry_after_seconds(response.headers.get("Retry-After")) if response is not None else None
            return TransientError(message, status=status, body=body, retry_after=retry_after)
        if action == "config":
            hint = (f"; audience {self.audience!r} (or a tag deleted since prepare) not found" if status == 404 else
                    f"; the API key was refused for audience {self.audience!r}: check MAILCHIMP_API_KEY "
                    "(and its data centre) and the key's permissions")
            return DestinationConfigError(f"destination {self.name!r}: {message}{hint}", status=status, body=body)
        if action == "item":
            return BatchRejected(message, status=status, body=body)
        return DestinationError(message, status=status, body=body)


def _problem(body: str) -> dict[str, Any]:
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _merge_value(value: FieldValue) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""  # clears the merge field
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def _member_error(error: _MemberError) -> str:
    text = f"{error.error_code or 'ERROR'}: {error.error or 'rejected'}"
    if error.field:
        text += f" ({error.field}: {error.field_message or 'invalid'})"
    return text
