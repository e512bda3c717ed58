"""Unisender (Selzy) destination over ``requests``: lists, tags and fields via ``importContacts``.

Every call is ``POST {api_url}/{method}?format=json`` with a form-encoded body that carries ``api_key`` (never
the URL, never a log line). Answers are decoded from the ``{"result"}`` / ``{"error", "code"}`` envelope
whatever the HTTP status, and sorted by :data:`CODE_ACTIONS`. Calls are paced by a token bucket that keeps
any 60-second window at or under ``calls_per_minute``.

Names in ``ContactChange.add_tags`` / ``remove_tags``: ``"list:<title>"`` is a Unisender list (created when
missing), ``"tag:<name>"`` a Unisender tag; a name without a prefix is a list title.

Consent: rows are imported without ``email_status`` (new addresses get Unisender's default ``new``; existing
contacts keep theirs), leaving a segment is ``email_excluded_list_ids`` (never ``unsubscribe``), lists are
never overwritten (``overwrite_lists=0``) and tags are only added (``overwrite_tags=0``) — except for
contacts losing a managed tag: their current tags are read first (``getContact``) and re-sent in full with
``overwrite_tags=1`` so unmanaged tags survive.

An import creates every address it does not know, as ``new``: so only a new contact whose status would be ``subscribed``
is ever imported (``pending`` ones are invited with ``subscribe``, which needs a list; the others' adds are refused,
their removals sent), and a row that only removes, or a known contact who would not be created ``subscribed`` now, is
imported only after ``getContact`` found him (:func:`_must_exist`). A known contact put on a list is read first whatever
his consent (:func:`_joins_known`): the import names no list he left (kept out: his choice, never undone by rfmsync) nor
one he is invited to (left as it is, the add done), and, without consent now, a list only when getContact shows him
``active`` or ``new`` (:func:`_hold_unconfirmed`: an import adds to lists without an invitation). A contact new to the
ledger put on a list is read so too when Unisender may hold him already
(:class:`~sync.destinations.unisender_probe.HeldCheck`: an e-mail-only import tells), batch by batch: each batch of 500
is checked, read and imported before the next.
``subscribe`` is not idempotent (it mails the invitation again), so a pending contact already on the change's
lists is not subscribed again. One contact's failed read or subscribe fails his row only; errors about the
whole account (a rejected key, ``not_enough_money``, ``unknown_method``) and a temporary error that outlasted
the retries (Unisender unreachable) stop the apply (:func:`_row_error`).

Answers are validated before they are believed (:mod:`sync.destinations.answers`): a 2xx without the ``{"result"}`` /
``{"error", "code"}`` envelope (an HTML page, truncated JSON, ``{"errors": …}``), or an ``importContacts``
result whose ``total`` is not the number of rows sent or whose ``log`` is not ``[{index, code, message}]``,
fails every row of the call with the raw answer (cut to 200 characters); the next run retries them. When its
``invalid`` count says more rows were not imported than its ``log`` names, the rows it does not name fail the
same way (its other counts need not add up: a row sent unchanged may be in none of them, one warning).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import requests

from connectors.retry import RetryPolicy

from ..errors import DestinationConfigError, DestinationError
from ..model import ContactChange, ItemResult, OnResults
from ..planning.values import kind_of
from .answers import BadAnswer
from . import specs
from .base import ClientOptions, Creating, Dispatching, dispatch, not_recreated, secret_text, without_lost_fields
from .unisender_rows import (_Row, _barred, _grouped, _hold_unconfirmed, _joins_known, _list_ids_of, _merged,
                             _must_exist, _names_contact, _ops, _row_error, _tags_of, _text, split_name)
from .unisender_api import (Created, FieldItem, ImportResult, ListItem, Subscribed, TokenBucket, UnisenderApi,
                            UnisenderError)
from .unisender_probe import HeldCheck

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.unisender.com/ru/api"
MAX_IMPORT_ROWS = specs.UNISENDER_MAX_IMPORT_ROWS
MAX_TAGS = 10
#: getContact's answer for an address Unisender does not hold (code ``unspecified``), reference §3.1
_NOT_FOUND = re.compile(r'Contact ".*" not found\.?', re.IGNORECASE | re.DOTALL)
_FIELD_NAME = specs.UNISENDER_FIELD_NAME
_SYSTEM_FIELDS = specs.UNISENDER_SYSTEM_FIELDS
#: field kind -> Unisender field type (the type only affects the web UI; values are stored as text)
FIELD_TYPES: Mapping[str, str] = specs.UNISENDER_FIELD_TYPES


def field_type_for(value_name: str) -> str:
    """Unisender field type for an rfmsync value (by its kind, see :data:`FIELD_TYPES`)."""
    return FIELD_TYPES[kind_of(value_name)]


class UnisenderDestination:
    """One Unisender account; managed names are ``list:<title>`` lists and ``tag:<name>`` tags."""

    reads_existing_members = False  # no bulk lookup by email (one getContact call per address)
    reconciles = False  # exportContacts is asynchronous with a notify_url callback
    reports_dispatch = True  # apply's dispatching: each importContacts and subscribe, before it goes
    checks_earlier_creates = False  # its upsert tells no create from an update: each create recorded as rfmsync's

    def __init__(self, name: str, api_key: Any, api_url: str | None = None, retry: RetryPolicy | None = None,
                 timeout: float = 30, calls_per_minute: int = 1200, *, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] | None = None,
                 batch_size: int | None = None) -> None:
        self._key = secret_text(api_key)
        if not self._key:
            raise DestinationConfigError(f"Unisender destination {name!r}: no API key (set UNISENDER_API_KEY)")
        self.name = name
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.batch_size = max(1, min(batch_size or MAX_IMPORT_ROWS, MAX_IMPORT_ROWS))
        self.bucket = TokenBucket(calls_per_minute, clock, sleep or self.retry.sleep)
        self._api = UnisenderApi(name, self._key, self.api_url, self.retry, timeout, self.bucket,
                                 session or requests.Session())
        self.call = self._api.call
        self._lists: dict[str, str] | None = None  # title → id
        self._fields: set[str] | None = None
        self._dispatching: Dispatching | None = None  # the apply's (sync.dispatch)

    def __repr__(self) -> str:
        return f"UnisenderDestination(name={self.name!r}, api_url={self.api_url!r})"

    def check(self) -> str:
        """Read-only: the key is accepted (``getLists``)."""
        lists = self._load_lists()
        return f"API key accepted ({len(lists)} lists)"

    def check_fields(self, fields: Mapping[str, str]) -> None:
        """Read-only (``rfmsync check``): nothing to refuse (Unisender stores every value as text)."""

    # ---------------------------------------------------------------- lists and fields
    def _load_lists(self) -> dict[str, str]:
        self._lists = {x.title: str(x.id) for x in self._api.result("getLists", ListItem, self.call("getLists"))}
        return self._lists

    def _load_fields(self) -> set[str]:
        self._fields = {x.name for x in self._api.result("getFields", FieldItem, self.call("getFields"))}
        return self._fields

    def prepare(self, managed_tags: Sequence[str], fields: Mapping[str, str],
                creating: Creating | None = None) -> list[str]:
        """Create missing lists (for ``list:`` names) and fields (``creating`` told their names first:
        :meth:`sync.destinations.base.Destination.prepare`); tags need no creation. Returns the names (of
        ``fields`` and ``managed_tags``) created."""
        for fname in fields:
            if not _FIELD_NAME.match(fname) or fname.lower() in _SYSTEM_FIELDS:
                raise DestinationConfigError(f"Unisender destination {self.name!r}: field {fname!r}: use Latin "
                                             "letters, digits, _ or -, start with a letter, avoid system names")
        lists = self._load_lists()
        new_lists = [tag for tag in dict.fromkeys(managed_tags)
                     if split_name(tag)[0] == "list" and split_name(tag)[1] not in lists]
        known = self._load_fields()
        new_fields = [fname for fname in fields if fname not in known]
        if (new_lists or new_fields) and creating is not None:
            creating([*new_lists, *new_fields])
        for tag in new_lists:
            title = split_name(tag)[1]
            created = self._api.result("createList", Created,
                                       self.call("createList", [("title", title)], idempotent=False))
            lists[title] = str(created.id)
            log.info("Unisender %s: created list %s", self.name, title)
        for fname in new_fields:
            self.call("createField", [("name", fname), ("type", field_type_for(fields[fname]))], idempotent=False)
            known.add(fname)
            log.info("Unisender %s: created field %s", self.name, fname)
        return [*new_lists, *new_fields]

    def _list_id(self, title: str) -> str | None:
        if self._lists is None:
            self._load_lists()
        return (self._lists or {}).get(title)

    # ---------------------------------------------------------------- apply
    def apply(self, changes: Sequence[ContactChange], on_results: OnResults,
              dispatching: Dispatching | None = None) -> None:
        """Refuse new contacts that cannot be imported with consent, invite ``pending`` ones (``subscribe``),
        check that known contacts still exist where an import could re-create them, import the rest in batches
        of 500 (``dispatching`` told of each write call before it goes)."""
        self._dispatching = dispatching
        refused: list[ItemResult] = []  # and the upserts left with nothing to send (done)
        if any(v is None for ch in changes for v in ch.set_fields.values()):  # a clear: names as Unisender's
            changes = [_named_as_held(ch) for ch in changes]  # (a ledger name with spaces around is that field)
            changes, refused = without_lost_fields(changes, self._fields or self._load_fields(), key=SPEC.field_key)
        rows: list[_Row] = []
        for ch in changes:
            if ch.create and ch.status_if_new != "subscribed":  # only consenting new contacts are ever imported
                msg = self._not_invitable(ch)
                if msg:  # not added; his removals still go out (read first: a removal never creates him)
                    refused += [ItemResult(ch.key, op, False, msg, refused=True) for op in _ops(ch, removes=False)]
                    rows += [self._row(_removals(ch), adds=False)] if ch.remove_tags else []
                    continue
                held = self._subscribe(ch, on_results)
                if ch.remove_tags:  # one row: a second one would re-send the tags read before the first's adds
                    held = [_merged(held[0], self._row(ch, adds=False))] if held else [self._row(ch, adds=False)]
                rows += held
            elif ch.needs_upsert or ch.add_tags or ch.remove_tags:
                rows.append(self._row(ch))
        if refused:
            on_results(refused)
        checks = HeldCheck(self._api, self._key, self.name, self.batch_size, self._dispatching)
        for members in _grouped(rows, on_results).values():
            for start in range(0, len(members), self.batch_size):  # each batch checked, read and imported before
                batch = members[start:start + self.batch_size]  # the next: a stop leaves one checked, not imported
                joining = [r for r in batch if r.change.create and r.add_lists]  # new to the ledger: maybe held
                held = {id(r) for r in checks.maybe_held(joining, on_results)}
                self._read_contacts([r for r in batch if r.replace_tags or _must_exist(r) or _joins_known(r)
                                     or id(r) in held], on_results)
                for (overwrite, names), part in _grouped(batch, on_results).items():  # a read may change a row's
                    self._import(part, overwrite, names, on_results)  # group (tags unseen) or leave it nothing

    def _not_invitable(self, ch: ContactChange) -> str | None:
        """Why a new contact without ``subscribed`` status is not added (None: he is invited)."""
        if ch.status_if_new != "pending":
            return ("Unisender has no transactional status: a contact without consent is not added "
                    "(use new_contacts = skip or pending)")
        titles = [value for kind, value in map(split_name, sorted(ch.add_tags)) if kind == "list"]
        if not titles:
            return ("Unisender invites a pending contact to a list (subscribe, double opt-in) and his segment has "
                    "no Unisender list: he is not added (an import would make him 'new' without an invitation); "
                    "map the segment to a list to invite him")
        if any(self._list_id(t) is None for t in titles):
            return "Unisender subscribe needs an existing list (run prepare)"
        return None

    def _row(self, ch: ContactChange, adds: bool = True) -> _Row:
        row = _Row(ch)
        if adds and ch.needs_upsert:
            row.ops.append("upsert")
        for name in sorted(ch.add_tags) if adds else []:
            kind, value = split_name(name)
            lid = self._list_id(value) if kind == "list" else None
            if kind == "list" and lid is None:
                row.results.append(ItemResult(ch.key, f"tag+{name}", False,
                                              f"Unisender list {value!r} does not exist (run prepare)"))
                continue
            (row.add_lists.append(lid) if kind == "list" else row.tags.append(value))  # type: ignore[arg-type]
            row.ops.append(f"tag+{name}")
        for name in sorted(ch.remove_tags):
            kind, value = split_name(name)
            if kind == "tag":
                row.replace_tags = True
                row.ops.append(f"tag-{name}")
                continue
            lid = self._list_id(value)
            if lid is None:  # no such list: nobody is in it
                row.results.append(ItemResult(ch.key, f"tag-{name}", True))
            else:
                row.excluded.append(lid)
                row.ops.append(f"tag-{name}")
        return row

    def _read_contacts(self, rows: list[_Row], on_results: OnResults) -> None:
        """``getContact`` for rows losing a managed tag (their current tags, so the full set can be re-sent) and
        for rows whose contact must still exist (:func:`_must_exist`): one not found is not re-created. Before each
        read, ``on_results([])``: the caller's check that it may go on (its lock still held)."""
        for row in rows:
            # nothing is reported for minutes to hours (a read a contact): the engine may stop here, before the
            # next read and any import, when the destination's lock was lost meanwhile (sync.engine.execute_plan)
            on_results([])
            ch = row.change
            try:
                info = self._contact(ch.email)
            except DestinationError as exc:  # this contact's read failed: his row fails, the others go on
                row.results += [ItemResult(ch.key, op, False, _row_error(exc)) for op in row.ops]
                row.ops = []
                continue
            if info is None and _must_exist(row):  # deleted in Unisender (erased on request, cleaned up by hand)
                # a removal is done (he carries nothing); anything else is not sent: the import would create him
                # as 'new'. missing: the ledger forgets him, so the next plan adds him only under the consent
                # rules (pending: through subscribe; no consent: not at all)
                gone = not_recreated(ch.email, "Unisender")
                done = ch.clears_only  # a clear too: he holds nothing
                row.results += [ItemResult(ch.key, op, True, missing=not ch.create)
                                if op.startswith("tag-") or done else
                                ItemResult(ch.key, op, False, gone, missing=True) for op in row.ops]
                row.ops = []
                continue
            if row.add_lists:  # not a list he left or is invited to; without consent, only once he confirmed
                _hold_unconfirmed(row, info)
            if not row.replace_tags:
                continue
            current = _tags_of(info if info is not None else {"fields": {"tags": ""}})
            if current is None:  # cannot see the tags: never overwrite blindly
                msg = "Unisender getContact returned no tags: managed tag left in place"
                failed = [op for op in row.ops if op.startswith("tag-tag:")]
                row.results += [ItemResult(ch.key, op, False, msg) for op in failed]
                row.ops = [op for op in row.ops if op not in failed]
                row.replace_tags = False
                continue
            removed = {split_name(n)[1] for n in ch.remove_tags if split_name(n)[0] == "tag"}
            full = [t for t in current if t not in removed] + [t for t in row.tags if t not in current]
            if len(full) > MAX_TAGS:
                row.results += [ItemResult(ch.key, op, False, f"more than {MAX_TAGS} tags") for op in row.ops]
                row.ops = []
            row.tags = full
        if rows:
            on_results([])  # and after the last one: the imports may go out

    def _contact(self, email: str) -> Any:
        """``getContact`` (fields and lists); None when Unisender does not hold the address."""
        try:
            return self.call("getContact", [("email", email), ("include_fields", 1), ("include_lists", 1)])
        except UnisenderError as exc:
            if exc.code == "unspecified" and _NOT_FOUND.fullmatch(exc.text.strip()):
                return None
            raise

    def _import(self, rows: list[_Row], replace: bool, names: tuple[str, ...], on_results: OnResults) -> None:
        columns = ["email", "email_list_ids", "email_excluded_list_ids", "tags", *names]
        params: list[tuple[str, Any]] = [(f"field_names[{j}]", c) for j, c in enumerate(columns)]
        for i, row in enumerate(rows):
            values = [row.change.email, ",".join(row.add_lists), ",".join(row.excluded), ",".join(row.tags),
                      *(_text(row.change.set_fields[n]) for n in names)]
            params += [(f"data[{i}][{j}]", v) for j, v in enumerate(values)]
        params += [("overwrite_tags", 1 if replace else 0), ("overwrite_lists", 0)]
        errors: dict[int, str] = {}
        named: set[int] = set()  # rows Unisender's log rejects by index: refused for good; the rest unknown
        try:
            dispatch(self._dispatching, [row.change for row in rows])  # their upserts and adds (sync.dispatch)
            raw = self.call("importContacts", params)
            result = self._api.result("importContacts", ImportResult, raw)
            errors, named = result.judged(len(rows), raw, (self._key,), self.name)
        except UnisenderError as exc:
            if exc.fatal:  # about the whole account (not_enough_money, a rejected key): stop, as a read does
                raise
            errors = {i: str(exc) for i in range(len(rows))}
        except BadAnswer as exc:
            errors = {i: str(exc) for i in range(len(rows))}
        out: list[ItemResult] = []
        for i, row in enumerate(rows):
            err = errors.get(i)
            out += row.results + [ItemResult(row.change.key, op, err is None, err, refused=i in named)
                                  for op in row.ops]
        log.debug("Unisender %s: imported %d rows, %d rejected", self.name, len(rows), len(errors))
        on_results(out)

    def _subscribe(self, ch: ContactChange, on_results: OnResults) -> list[_Row]:
        """A new contact that must confirm: ``subscribe`` with ``double_optin=4`` (existing new/active contacts
        are just added; others get the confirmation e-mail).

        ``subscribe`` is not idempotent (a second one mails the invitation again), and a pending create is planned
        again whenever its outcome was lost (an HTML or timed-out answer, a process killed before the ledger
        wrote it). So the contact is read first: one already on every list of the change (invited by that lost
        call, or there before) is not subscribed again; his fields and tags, if any, go in an import row (he
        exists: the import neither creates him nor changes his status or lists), returned to the caller. Nor is
        one invited to a list he left or may not be mailed on (:func:`_barred`): that add fails, as his refusal."""
        op_of = {self._list_id(v): f"tag+{n}" for n in sorted(ch.add_tags) for k, v in [split_name(n)] if k == "list"}
        lists, tags = list(op_of), [v for k, v in map(split_name, sorted(ch.add_tags)) if k == "tag"]
        ops = _ops(ch, removes=False)
        subscribing = False
        try:
            info = self._contact(ch.email)
            on_results([])  # the lock still held after the read: the subscribe may go out
            if barred := _barred(info, lists):  # he left a list, or may not be mailed: not invited (consent)
                on_results([ItemResult(ch.key, op_of[i], False, why, refused=r, kept_out=k)
                            for i, (why, r, k) in barred.items()])
                ops = [op for op in ops if op not in map(op_of.get, barred)]
                lists = [i for i in lists if i not in barred]
            held = _list_ids_of(info)
            if not lists or held is not None and set(lists) <= held:
                log.debug("Unisender %s: %s is on the lists already (or barred): not invited", self.name, ch.key)
                rest = [op for op in ops if op not in op_of.values()]  # upsert, tag+tag:…
                if ch.set_fields or tags:
                    on_results([ItemResult(ch.key, op, True) for op in ops if op not in rest])
                    return [_Row(ch, tags=tags, ops=rest)]
                on_results([ItemResult(ch.key, op, True) for op in ops])
                return []
            params: list[tuple[str, Any]] = [("list_ids", ",".join(lists)), ("fields[email]", ch.email)]
            params += [(f"fields[{k}]", _text(v)) for k, v in sorted(ch.set_fields.items())]
            params += [("tags", ",".join(tags)), ("double_optin", 4), ("overwrite", 2)]
            subscribing = True
            dispatch(self._dispatching, [ch])
            self._api.result("subscribe", Subscribed, self.call("subscribe", params, idempotent=False))
            on_results([ItemResult(ch.key, op, True) for op in ops])
        except DestinationError as exc:  # this contact's read or subscribe failed: the others go on
            error = _row_error(exc)
            refused = subscribing and _names_contact(exc, ch.email)
            on_results([ItemResult(ch.key, op, False, error, refused=refused) for op in ops])
        return []

    # ---------------------------------------------------------------- reads
    def read_managed(self, managed_tags: Sequence[str]) -> Mapping[str, set[str]]:
        raise DestinationError("Unisender cannot list members cheaply (exportContacts is asynchronous with a "
                               "notify_url callback): --reconcile is not supported for Unisender")

    def existing_members(self, keys: Iterable[str] | None = None) -> dict[str, str] | None:
        """``None``: Unisender has no bulk lookup by email (one getContact call per address)."""
        return None


def _build(dest: Any, key: Any, options: ClientOptions) -> UnisenderDestination:
    return UnisenderDestination(dest.name, key, api_url=options.api_url, batch_size=dest.batch_size,
                                retry=options.retry, timeout=options.timeout)


def _removals(ch: ContactChange) -> ContactChange:
    """``ch`` without its field values (a change whose upsert and adds are refused: only its removals are sent)."""
    return replace(ch, set_fields={}, fields_text=None)


def _named_as_held(ch: ContactChange) -> ContactChange:
    """``ch`` with its field names as Unisender compares and spells them (:meth:`DestinationSpec.field_key`)."""
    named = {SPEC.field_key(n): v for n, v in ch.set_fields.items()}
    return ch if list(named) == list(ch.set_fields) else replace(ch, set_fields=named, fields_text=None)


SPEC = specs.UNISENDER  # the rules as data, in sync.destinations.specs (no client import)

__all__ = ["UnisenderDestination", "FIELD_TYPES", "SPEC", "split_name", "field_type_for", "MAX_IMPORT_ROWS"]
