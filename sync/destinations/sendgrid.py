"""SendGrid Marketing Campaigns destination, over the official ``sendgrid`` client (``host`` override).

Managed state: one SendGrid *list* per managed name (``list_prefix`` + name) and the custom fields named in
the config. Contacts are upserted with ``PUT /v3/marketing/contacts`` (async job, polled to completion); list
adds ride on the upsert's ``list_ids``; list removals resolve emails to contact ids (``search/emails``) and call
``DELETE /v3/marketing/lists/{id}/contacts``. Contacts are never deleted and suppressions are never touched.

Every HTTP status maps to one action in :data:`sync.destinations.sendgrid_api.STATUS_ACTIONS`; retries happen
only in :class:`connectors.retry.RetryPolicy` (429 waits for ``X-RateLimit-Reset``). Custom field types come from
the field vocabulary's kinds (:data:`FIELD_TYPES`); a field that already exists keeps its type, and a boolean is
sent as 1/0 to a Number field and as yes/no to a Text field.

Answers are validated before they are believed (:mod:`sync.destinations.answers`): the upsert's ``{job_id}``, the
import job (``status`` ∈ pending/completed/errored/failed, ``results.requested_count`` = contacts sent; a
``failed`` job took nobody), list removals, lists and fields pages. A 2xx that is not the documented shape fails
the items it covers with the raw answer (cut to 200 characters); the next run retries them.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Container, Iterable, Iterator, Mapping, Sequence

from connectors.retry import RetryPolicy

from ..errors import DestinationConfigError, DestinationError
from ..model import ContactChange, ItemResult, OnResults
from ..planning.values import kind_of
from .answers import BadAnswer, excerpt
from . import specs
from .base import ClientOptions, Creating, Dispatching, dispatch, secret_text
from .field_types import SENDGRID_TAKES, check_field_type
from .sendgrid_bodies import check_clearable, contact_body, field_key as _key, upsert_batches
from .sendgrid_reads import PRESENT, SendGridReads
from .sendgrid_api import (FieldDefinitions, Id, ImportJob, JobId, ListsPage, Refused, SendGridApi, error_text,
                           indexed_errors, page_token, parse_errors_csv)

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.sendgrid.com"
#: a ``failed`` job finished "with all errors, or the job was entirely unprocessable" (the spec): it took nobody
FAILED_JOB = "SendGrid import job failed (took nobody): the outcome of a contact it does not name cannot be believed"
MAX_UPSERT_CONTACTS = specs.SENDGRID_MAX_UPSERT_CONTACTS  # PUT /v3/marketing/contacts: "up to 30,000 contacts, or 6MB"
MAX_UPSERT_BYTES = 6_000_000  # 6 MB of JSON (decimal MB: the conservative reading)
MAX_REMOVE_IDS = 100  # DELETE /lists/{id}/contacts?contact_ids=… (cap unpublished: keep URLs short)
_FIELD_NAME = specs.SENDGRID_FIELD_NAME
#: field kind -> custom field type (SendGrid has Text, Number and Date; a boolean is a yes/no Text)
FIELD_TYPES: Mapping[str, str] = specs.SENDGRID_FIELD_TYPES


def field_type_for(value_name: str) -> str:
    """SendGrid field type for an rfmsync value: Date, Number or Text (by its kind, see :data:`FIELD_TYPES`)."""
    return FIELD_TYPES[kind_of(value_name)]


class SendGridDestination(SendGridReads):
    """One SendGrid account. Managed names become lists named ``list_prefix + name``."""

    reads_existing_members = True
    reconciles = True
    reports_dispatch = True  # apply's dispatching: each upsert (with its list adds), before it goes
    checks_earlier_creates = False  # its upsert tells no create from an update: each create recorded as rfmsync's

    def __init__(self, name: str, api_key: Any, api_url: str | None = None, list_prefix: str = "",
                 retry: RetryPolicy | None = None, timeout: float = 30, *,
                 sleep: Callable[[float], None] | None = None, poll_interval: float = 1.0,
                 job_timeout: float = 900.0, batch_size: int | None = None,
                 max_upsert_bytes: int = MAX_UPSERT_BYTES, field_types: Mapping[str, str] | None = None) -> None:
        key = secret_text(api_key)
        if not key:
            raise DestinationConfigError(f"SendGrid destination {name!r}: no API key (set SENDGRID_API_KEY)")
        if any(ord(c) < 32 or ord(c) == 127 for c in key):  # the HTTP layer's error would print the whole header
            raise DestinationConfigError(f"SendGrid destination {name!r}: SENDGRID_API_KEY holds a line break or "
                                         "another control character (a trailing newline from a file?); a header "
                                         "cannot carry it")
        self.name = name
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.list_prefix = list_prefix
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.batch_size = max(1, min(batch_size or MAX_UPSERT_CONTACTS, MAX_UPSERT_CONTACTS))
        self.max_upsert_bytes = min(max_upsert_bytes, MAX_UPSERT_BYTES)
        self.field_types = dict(field_types or {})
        self._api = SendGridApi(name, key, self.api_url, self.retry, timeout, sleep or self.retry.sleep,
                                poll_interval, job_timeout)
        self._request, self._download, self._poll = self._api.request, self._api.download, self._api.poll
        self._lists: dict[str, str] | None = None  # list name → id
        self._list_counts: dict[str, int] = {}
        self._fields: dict[str, str] | None = None  # custom field name (as _key compares them) → id
        self._field_kinds: dict[str, str] = {}  # name (as _key compares them) → Text | Number | Date
        self._reserved: set[str] = set()
        self._mapped: set[str] | None = None  # the names (by _key) of the fields prepare was given (mapped ones)

    def __repr__(self) -> str:
        return f"SendGridDestination(name={self.name!r}, api_url={self.api_url!r})"

    def list_name(self, tag: str) -> str:
        """The SendGrid list for a managed name: the prefix is added unless the name already carries it."""
        return tag if tag.startswith(self.list_prefix) else self.list_prefix + tag

    def _load_lists(self) -> dict[str, str]:
        lists: dict[str, str] = {}
        token: str | None = None
        seen: set[str] = set()
        while True:
            query = {"page_size": 1000, **({"page_token": token} if token else {})}
            _, page = self._request("get", ["marketing", "lists"], query=query, what="list lists", shape=ListsPage)
            for item in page.result:
                lists[item.name] = item.id
                self._list_counts[item.name] = int(item.contact_count or 0)
            nxt = (page.metadata or {}).get("next")
            token = page_token(nxt)
            if not token or token in seen:  # pagination cannot loop
                break
            seen.add(token)
        self._lists = lists
        return lists

    def _load_fields(self) -> dict[str, str]:
        _, defs = self._request("get", ["marketing", "field_definitions"], what="list custom fields",
                                shape=FieldDefinitions)
        self._fields = {_key(f.name): f.id for f in defs.custom_fields}
        self._field_kinds = {_key(f.name): f.field_type for f in defs.custom_fields}
        self._reserved = {_key(f.name) for f in defs.reserved_fields}
        return self._fields

    def check(self) -> str:
        """Read-only: the key is accepted and has Marketing access (``GET /v3/marketing/field_definitions``)."""
        return f"API key accepted, Marketing Campaigns reachable ({len(self._load_fields())} custom fields)"

    def check_fields(self, fields: Mapping[str, str]) -> None:
        """Read-only (``rfmsync check``): DestinationConfigError for what ``prepare`` would refuse of ``fields``."""
        self._new_fields(fields, self._load_fields())

    def _new_fields(self, fields: Mapping[str, str], known: Mapping[str, str]) -> dict[str, str]:
        """The fields of ``fields`` to create (name → type); DestinationConfigError for one refused."""
        new_fields: dict[str, str] = {}
        for fname, value_name in fields.items():
            if not _FIELD_NAME.match(fname):
                raise DestinationConfigError(f"SendGrid destination {self.name!r}: field {fname!r}: use letters, "
                                             "digits and _ only, starting with a letter or _")
            if _key(fname) in self._reserved:
                raise DestinationConfigError(f"SendGrid destination {self.name!r}: field {fname!r} is a SendGrid "
                                             "reserved field; pick another name")
            ftype = self.field_types.get(fname) or field_type_for(value_name)
            if _key(fname) in known:
                have = self._field_kinds.get(_key(fname))
                if have != ftype:  # made by hand or by an older rfmsync: kept, values sent as it takes them
                    check_field_type("SendGrid", self.name, fname, have, value_name, ftype, SENDGRID_TAKES)
                    log.warning("SendGrid %s: custom field %s is %s, rfmsync would use %s for %r; leaving it",
                                self.name, fname, have, ftype, value_name)
                continue
            new_fields[fname] = ftype
        return new_fields

    def prepare(self, managed_tags: Sequence[str], fields: Mapping[str, str],
                creating: Creating | None = None) -> list[str]:
        """Create the missing custom fields and managed lists (``creating`` told their names first:
        :meth:`sync.destinations.base.Destination.prepare`); existing ones are left as they are. Returns the
        names (of ``fields`` and ``managed_tags``) created."""
        known = self._load_fields()
        self._mapped = {_key(f) for f in fields}
        new_fields = self._new_fields(fields, known)
        lists = self._load_lists()
        new_tags = [tag for tag in dict.fromkeys(managed_tags) if self.list_name(tag) not in lists]
        if (new_fields or new_tags) and creating is not None:
            creating([*new_fields, *new_tags])
        for fname, ftype in new_fields.items():
            created = self._create(["marketing", "field_definitions"], {"name": fname, "field_type": ftype},
                                   f"field {fname!r}")
            known[_key(fname)] = created.id
            self._field_kinds[_key(fname)] = ftype
            log.info("SendGrid %s: created custom field %s (%s)", self.name, fname, ftype)
        for tag in new_tags:
            lname = self.list_name(tag)
            created = self._create(["marketing", "lists"], {"name": lname}, f"list {lname!r}")
            lists[lname] = created.id
            self._list_counts[lname] = 0
            log.info("SendGrid %s: created list %s", self.name, lname)
        return [*new_fields, *new_tags]

    def _create(self, path: list[str], body: dict[str, Any], what: str) -> Id:
        """One create call of ``prepare`` (never retried: not idempotent); a refusal (400: a name taken, a limit
        reached) is an error naming what and SendGrid's reason."""
        try:
            _, created = self._request("post", path, body=body, what=f"create {what}", idempotent=False, shape=Id)
        except Refused as refused:
            raise DestinationError(f"SendGrid {self.name!r} refused to create {what}: "
                                   f"{error_text({'errors': refused.errors})}", status=refused.status) from None
        return created

    def _list_id(self, tag: str) -> str | None:
        if self._lists is None:
            self._load_lists()
        return (self._lists or {}).get(self.list_name(tag))

    # ---------------------------------------------------------------- apply
    def apply(self, changes: Sequence[ContactChange], on_results: OnResults,
              dispatching: Dispatching | None = None) -> None:
        """Upsert (with list adds) in batches at the API maxima, then remove list memberships."""
        if self._fields is None:
            self._load_fields()
        if self._mapped is not None:
            check_clearable(changes, self._mapped, self._field_kinds, self.name)
        changes, searched = self._held_only(changes, on_results)
        groups: dict[tuple[str, ...], list[tuple[ContactChange, dict[str, Any]]]] = {}
        for ch in changes:
            if not (ch.needs_upsert or ch.add_tags):
                continue
            missing = [t for t in ch.add_tags if self._list_id(t) is None]
            if missing:
                on_results([ItemResult(ch.key, f"tag+{t}", False, f"SendGrid list {self.list_name(t)!r} does "
                                       "not exist (run prepare)") for t in sorted(missing)])
            ids = tuple(sorted({self._list_id(t) for t in ch.add_tags} - {None}))  # type: ignore[arg-type]
            groups.setdefault(ids, []).append((ch, self._contact_body(ch)))
        for list_ids, members in groups.items():
            for batch in self._chunks(members, list_ids):
                dispatch(dispatching, [ch for ch, _ in batch])  # their upserts and list adds go (sync.dispatch)
                self._upsert(list(list_ids), batch, on_results)
        self._remove(changes, on_results, searched)

    def _contact_body(self, ch: ContactChange) -> dict[str, Any]:
        return contact_body(ch, self._fields or {}, self._field_kinds, self.name)

    def _chunks(self, members: list[tuple[ContactChange, dict[str, Any]]],
                list_ids: tuple[str, ...]) -> Iterator[list[tuple[ContactChange, dict[str, Any]]]]:
        return upsert_batches(members, list_ids, self.batch_size, self.max_upsert_bytes)

    def _upsert(self, list_ids: list[str], batch: list[tuple[ContactChange, dict[str, Any]]],
                on_results: OnResults) -> None:
        errors: dict[int, str] = {}
        named: set[int] = set()  # contacts SendGrid rejected by name (errors file, a 400's index): for good
        pending = list(range(len(batch)))
        try:
            for attempt in range(2):  # once more without the contacts a 400 named
                body = {"contacts": [batch[i][1] for i in pending], **({"list_ids": list_ids} if list_ids else {})}
                try:
                    _, started = self._request("put", ["marketing", "contacts"], body=body,
                                               what=f"upsert {len(pending)} contacts", shape=JobId)
                    job = self._poll(["marketing", "contacts", "imports", started.job_id],
                                     lambda p: p.status != "pending", what=f"import job {started.job_id}",
                                     shape=ImportJob)
                    rejected, by_name = self._job_errors(job, started.job_id, batch, pending)
                    errors.update(rejected)
                    named.update(by_name)
                except BadAnswer as exc:  # nothing in it can be believed: every contact sent fails
                    errors.update({i: str(exc) for i in pending})
                except Refused as refused:
                    bad = {pending[i]: msg for i, msg in indexed_errors(refused.errors).items() if i < len(pending)}
                    named.update(bad)
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
        except DestinationError:  # the resend stopped the apply: the refusals already known are recorded first
            if errors:
                on_results(self._batch_results(batch, errors, named, only=errors))
            raise
        log.debug("SendGrid %s: upsert batch of %d done, %d rejected", self.name, len(batch), len(errors))
        on_results(self._batch_results(batch, errors, named))

    def _batch_results(self, batch: list[tuple[ContactChange, dict[str, Any]]], errors: Mapping[int, str],
                       named: Container[int] = (), only: Iterable[int] | None = None) -> list[ItemResult]:
        """The upsert and list-add outcomes of a batch's contacts (``only`` these indexes): failed with their
        error (refused for good when SendGrid ``named`` the contact), else done."""
        results: list[ItemResult] = []
        for i in range(len(batch)) if only is None else sorted(only):
            ch, err = batch[i][0], errors.get(i)
            ok = err is None
            if ch.needs_upsert:
                results.append(ItemResult(ch.key, "upsert", ok, err))
            for t in sorted(ch.add_tags):
                if self._list_id(t) is not None:
                    results.append(ItemResult(ch.key, f"tag+{t}", ok, err, refused=i in named))
        return results

    def _job_errors(self, job: ImportJob, job_id: str, batch: list[tuple[ContactChange, dict[str, Any]]],
                    pending: list[int]) -> tuple[dict[int, str], Container[int]]:
        """The contacts the job failed (all of those sent when its answer cannot be believed, or when its errors
        file cannot be read: why is in their error) and those its errors file names (refused for good)."""
        res = job.results
        if res is None or res.requested_count != len(pending):
            got = "no results" if res is None else f"requested_count {res.requested_count}"
            reason = (f"SendGrid import job {job.status}: {got} for {len(pending)} contacts sent; "
                      "the outcome cannot be believed")
            return {i: reason for i in pending}, ()
        counted = sum(n or 0 for n in (res.created_count, res.updated_count, res.unmodified_count,
                                       res.deleted_count)) + res.errored_count
        if counted > len(pending):  # the per-kind counts are not documented to add up (a contact sent unchanged
            # is in none of created/updated): only more than were sent is worth a line, and it fails nobody
            log.warning("SendGrid %s: import job counts %d outcomes (created %s, updated %s, unmodified %s, "
                        "deleted %s, errored %d) for %d contacts sent", self.name, counted, res.created_count,
                        res.updated_count, res.unmodified_count, res.deleted_count, res.errored_count, len(pending))
        if job.status == "completed" and not res.errored_count:
            return {}, ()
        by_email: dict[str, str] = {}
        unread = ""
        if res.errors_url:
            what = f"errors file of import job {job_id}"
            try:
                by_email = parse_errors_csv(self._download(res.errors_url, what), what)
            except DestinationError as exc:  # expired link, 404, truncated gzip, HTML: the contacts fail with it
                log.warning("SendGrid %s: cannot read the %s: %s", self.name, what, exc)
                unread = f"; {exc}"
        if by_email:
            # only the messages kept are masked and cut (the vendor's text may echo the request), not the file
            named = {i: excerpt(by_email[batch[i][0].email.lower()], self._api.secrets) for i in pending
                     if batch[i][0].email.lower() in by_email}
            if len(named) >= (res.errored_count or 0) and job.status != "failed":
                return named, named.keys()
            # the file names fewer contacts than the job rejected, or the job failed (took nobody): which of the
            # others it took is unknown
            reason = (f"SendGrid import job {job.status}: {res.errored_count} of {res.requested_count} contacts "
                      f"rejected, its errors file names {len(named)} of them; the others' outcome cannot be believed")
            return {i: FAILED_JOB if job.status == "failed" else reason for i in pending} | named, named.keys()
        reason = f"SendGrid import job {job_id} {job.status}: {res.errored_count} of " \
                 f"{res.requested_count} contacts rejected (no per-contact details{unread})"
        return {i: f"{reason}; {FAILED_JOB}" if job.status == "failed" else reason for i in pending}, ()

    def _remove(self, changes: Sequence[ContactChange], on_results: OnResults,
                searched: Mapping[str, str | None]) -> None:
        """The list removals: each contact's id searched (but those ``searched`` already: email → id, None: not
        held, as :meth:`_held_only` found them in this apply), then one ``DELETE`` per list and 100 ids."""
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
        emails = sorted({ch.email.lower() for items in by_list.values() for ch, _ in items} - searched.keys())
        try:
            ids, unknown = self._contact_ids(emails)
        except BadAnswer as exc:  # the search's own addresses unknown; those ``searched`` already go ahead
            ids, unknown = {}, dict.fromkeys(emails, str(exc))
        ids.update({email: cid for email, cid in searched.items() if cid is not None})
        if unknown:  # neither a contact nor "not found": whether it is on the list is unknown, nothing is sent
            on_results([ItemResult(ch.key, f"tag-{t}", False, unknown[ch.email.lower()])
                        for items in by_list.values() for ch, t in items if ch.email.lower() in unknown])
            by_list = {lid: [(ch, t) for ch, t in items if ch.email.lower() not in unknown]
                       for lid, items in by_list.items()}
        on_results([])  # the searches may have taken minutes: the lock still held, the removals may go out
        for lid, items in by_list.items():
            gone = [ItemResult(ch.key, f"tag-{t}", True) for ch, t in items if ch.email.lower() not in ids]
            if gone:
                on_results(gone)  # not a SendGrid contact: not on the list either
            known = [(ch, t) for ch, t in items if ch.email.lower() in ids]
            for start in range(0, len(known), MAX_REMOVE_IDS):
                self._delete(lid, known[start:start + MAX_REMOVE_IDS], ids, on_results)

    def _delete(self, lid: str, part: list[tuple[ContactChange, str]], ids: Mapping[str, str],
                on_results: OnResults) -> None:
        """``DELETE /lists/{id}/contacts`` for ``part``. A 404 ("the list ID does not exist or one or more contact
        IDs do not exist": one contact deleted since the search fails the whole call) is asked again contact by
        contact, so only the removals it concerns fail (not done: sent again next run)."""
        cids = ",".join(sorted({ids[ch.email.lower()] for ch, _ in part}))
        try:
            status, _ = self._request("delete", ["marketing", "lists", lid, "contacts"], query={"contact_ids": cids},
                                      ok_404=True, what=f"remove {len(part)} contacts from a list", shape=JobId)
        except BadAnswer as exc:
            on_results([ItemResult(ch.key, f"tag-{t}", False, str(exc)) for ch, t in part])
            return
        except Refused as refused:
            msg = f"SendGrid refused the removal: {error_text({'errors': refused.errors})}"
            on_results([ItemResult(ch.key, f"tag-{t}", False, msg) for ch, t in part])
            return
        if status != 404:
            on_results([ItemResult(ch.key, f"tag-{t}", True) for ch, t in part])
        elif len(part) > 1:
            for item in part:
                self._delete(lid, [item], ids, on_results)
        else:
            msg = ("SendGrid answered 404 to the removal (the list or the contact was deleted meanwhile); not "
                   "counted as done, sent again next run")
            on_results([ItemResult(ch.key, f"tag-{t}", False, msg) for ch, t in part])


def _build(dest: Any, key: Any, options: ClientOptions) -> SendGridDestination:
    return SendGridDestination(dest.name, key, api_url=options.api_url, list_prefix=dest.list_prefix,
                               batch_size=dest.batch_size, retry=options.retry, timeout=options.timeout)


SPEC = specs.SENDGRID  # the rules as data, in sync.destinations.specs (no client import)

__all__ = ["SendGridDestination", "FIELD_TYPES", "SPEC", "field_type_for", "MAX_UPSERT_CONTACTS", "MAX_UPSERT_BYTES",
           "PRESENT"]
