"""A stateful fake of the classic Unisender API on 127.0.0.1 (``POST /{lang}/api/{method}?format=json``).

No machine-readable spec exists; shapes follow ``/work/shared/reference/esp-apis.md`` §3: the
``{"result": …}`` / ``{"error", "code"}`` envelope (answered with HTTP 200, like the service), getLists /
createList (``{id}``), getFields / createField, importContacts (``field_names[i]``, ``data[r][i]``,
``overwrite_tags``, ``overwrite_lists``; ``result{total, inserted, updated, deleted, new_emails, invalid,
log[{index, code, message}]}``), getContact (``{email{email, status}, fields{…, tags}, lists[…]}``),
subscribe (``double_optin`` 0/3/4, ``overwrite``), exclude and unsubscribe (recorded, rfmsync never calls them).

Rules it enforces: ``api_key`` in the form body (a key in the URL is refused and recorded in
:attr:`FakeUnisender.key_in_url`); ≤ 500 rows per import; ≤ 10 tags per contact; fields must exist; an
existing contact's ``email_status`` never changes through import unless it is active/inactive, and any
``email_status`` column is recorded in :attr:`status_columns`; new contacts get status ``new``; a
``calls_per_minute`` limit answers ``api_call_limit_exceeded_for_api_key``. A contact's place on a list
(getContact's ``lists[].status``, :meth:`FakeUnisender.set_list_status`) is replaced by an import naming the list in
``email_list_ids`` (the lists the address "will be subscribed to", the vendor's words), except a place he
unsubscribed from: the vendor documents that an unsubscribe's "active" "cannot be restored via API, only by the
contact" (reference §3.3), so the import leaves it ``unsubscribed`` (and him off the list). For a place ``blocked``,
``inactive``, ``invited`` or ``activation_requested`` nothing is documented: the fake takes the worst reading (he
is put on it, ``active``) and records it in :attr:`FakeUnisender.resubscribed`. His address's status is
protected too: the import never changes it unless it is active/inactive (documented).

How importContacts counts (the service's counting of a row that changes nothing is not documented):
``inserted`` (= ``new_emails``) the rows that created an address, ``updated`` every other row it took, also
one that changed nothing, ``deleted`` 0, ``invalid`` the rows its ``log`` names. With
:attr:`FakeUnisender.unchanged_uncounted` set, a row that changed nothing is in neither ``inserted`` nor
``updated`` (the other reading: SendGrid counts its like so).

Failure drills: :meth:`answer_raw` (one-shot raw body and content type for the next call of a method),
:meth:`fail` (an envelope error code, or a bare HTTP status, for the next N calls of a method),
:meth:`stall` (answer late = a client timeout), :attr:`reject` (email → message in the import ``log``, or
``subscribe``'s error naming the address).

Use as the ``unisender_fake`` pytest fixture or ``with FakeUnisender() as fake: ...`` from a script.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import parse_qsl

import pytest

from .http import LoopbackServer, RawAnswer, Reply, Request, take_raw

MAX_IMPORT_ROWS = 500
MAX_TAGS = 10
READ_METHODS = {"getLists", "getFields", "getContact", "getTags"}


def envelope_error(message: str, code: str, status: int = 200) -> Reply:
    return Reply(status, json.dumps({"error": message, "code": code}).encode(),
                 {"Content-Type": "application/json"})


def ok(result: Any, **extra: Any) -> Reply:
    return Reply(200, json.dumps({"result": result, **extra}).encode(), {"Content-Type": "application/json"})


@dataclass
class Fault:
    method: str | None
    times: int
    code: str | None = None  # envelope error code
    status: int = 0  # bare HTTP status (no envelope) when set without a code
    delay: float = 0.0


class FakeUnisender:
    def __init__(self, api_key: str = "uni-fake-key-0123456789", calls_per_minute: int = 1200) -> None:
        self.api_key = api_key
        self.calls_per_minute = calls_per_minute
        self.lists: dict[str, str] = {}  # id → title
        self.fields: dict[str, str] = {}  # name → type
        self.contacts: dict[str, dict[str, Any]] = {}  # email → {status, lists, tags, fields}
        self.reject: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.key_in_url: list[str] = []
        self.status_columns: list[str] = []
        self.invitations: list[str] = []
        #: (email, list id, his place before) of every import that named a list whose place is blocked, inactive or
        #: invited: the import put him on it (``email_list_ids``: the lists the address "will be subscribed to";
        #: nothing documented for these places, the worst reading; an unsubscribed place is left as it is)
        self.resubscribed: list[tuple[str, str, str]] = []
        self.unchanged_uncounted = False  # a row that changes nothing counted in neither inserted nor updated
        self._faults: list[Fault] = []
        self._raw: list[RawAnswer] = []
        self._raw_column: dict[int, str] = {}  # id of a raw answer → the import column a call must name to get it
        self._window: deque[float] = deque()
        self._ids = itertools.count(101)
        self._lock = threading.Lock()
        self._server = LoopbackServer(self.handle)

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return self._server.url

    @property
    def api_url(self) -> str:
        return self._server.url + "/ru/api"

    def start(self) -> "FakeUnisender":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "FakeUnisender":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- setup and inspection
    def add_list(self, title: str) -> str:
        lid = str(next(self._ids))
        self.lists[lid] = title
        return lid

    def add_contact(self, email: str, status: str = "active", lists: Iterable[str] = (), tags: Iterable[str] = (),
                    **fields: str) -> dict[str, Any]:
        ids = {lid for lid, t in self.lists.items() if t in set(lists)}
        for name in fields:
            self.fields.setdefault(name, "string")
        c = {"status": status, "lists": ids, "excluded": set(), "tags": list(tags), "fields": dict(fields)}
        self.contacts[email.lower()] = c
        return c

    def set_list_status(self, email: str, title: str, status: str) -> None:
        """His place on a list as getContact shows it (``lists[].status``): ``new``, ``active``, ``invited`` or
        ``activation_requested`` put him on it; any other (``unsubscribed``, ``blocked``, ``excluded``, …) off it."""
        c, lid = self.contacts[email.lower()], self.list_id(title)
        c.setdefault("list_status", {})[lid] = status
        on = status in ("new", "active", "invited", "activation_requested")
        (c["lists"].add if on else c["lists"].discard)(lid)

    def list_id(self, title: str) -> str | None:
        return next((lid for lid, t in self.lists.items() if t == title), None)

    def members(self, title: str) -> set[str]:
        lid = self.list_id(title)
        return {e for e, c in self.contacts.items() if lid in c["lists"]}

    @property
    def write_calls(self) -> int:
        return sum(n for m, n in self.calls.items() if m not in READ_METHODS)

    def fail(self, code: str | None = "retry_later", times: int = 1, *, method: str | None = None,
             status: int = 0) -> None:
        self._faults.append(Fault(method, times, code, status))

    def stall(self, seconds: float, times: int = 1, *, method: str | None = None) -> None:
        self._faults.append(Fault(method, times, None, 0, seconds))

    def answer_raw(self, body: bytes, content_type: str = "text/html; charset=utf-8", *, status: int = 200,
                   method: str | None = "importContacts", work: bool = False, column: str | None = None) -> None:
        """The next call of ``method`` is answered with exactly this body (see :class:`tests.fakes.http.RawAnswer`);
        with ``column``, the next importContacts naming that column in its ``field_names`` (``email_list_ids``: an
        import of rows, not rfmsync's e-mail-only check of which addresses it holds)."""
        raw = RawAnswer(body, content_type, status, None, rf"/{method}$" if method else None, work)
        self._raw.append(raw)
        if column is not None:
            self._raw_column[id(raw)] = column

    def forget(self, email: str) -> None:
        """Delete a contact behind rfmsync's back (drift)."""
        self.contacts.pop(email.lower(), None)

    def _fault_for(self, method: str) -> Fault | None:
        for fault in list(self._faults):
            if fault.method and fault.method != method:
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            return fault
        return None

    # ----------------------------------------------------------------- HTTP entry point
    def handle(self, req: Request) -> Reply:
        with self._lock:
            return self._handle(req)

    def _handle(self, req: Request) -> Reply:
        m = re.fullmatch(r"/(ru|en|ua)/api/(\w+)", req.path)
        if not m:
            return Reply(404, b"not found")
        method = m.group(2)
        self.calls[method] += 1
        if "api_key" in req.query:
            self.key_in_url.append(method)
            return envelope_error("api_key must be sent in the POST body", "invalid_arg")
        form = dict(parse_qsl(req.body.decode(), keep_blank_values=True)) if req.method == "POST" else {}
        self.requests.append((method, {k: v for k, v in form.items() if k != "api_key"}))
        now = time.monotonic()
        self._window.append(now)
        while self._window and self._window[0] < now - 60:
            self._window.popleft()
        fault = self._fault_for(method)
        if fault is not None and fault.code:
            return envelope_error(f"Injected &quot;{fault.code}&quot;", fault.code)
        if fault is not None and fault.status:
            return Reply(fault.status, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"})
        if len(self._window) > self.calls_per_minute:
            return envelope_error("API call limit exceeded", "api_call_limit_exceeded_for_api_key")
        if form.get("api_key") != self.api_key:
            return envelope_error("Invalid API key", "invalid_api_key")
        handler = getattr(self, f"_m_{method}", None)
        columns = {v for k, v in form.items() if k.startswith("field_names[")}
        raw = take_raw([r for r in self._raw if self._raw_column.get(id(r)) in (None, *columns)], req.method,
                       req.path)
        if raw is not None:
            self._raw.remove(raw)
            self._raw_column.pop(id(raw), None)
        if raw is not None:
            if raw.work and handler:
                handler(form)
            return raw.reply()
        reply = handler(form) if handler else envelope_error(f"Unknown method {method}", "unknown_method")
        if fault is not None:
            reply.delay = fault.delay
        return reply

    # ----------------------------------------------------------------- methods
    def _m_getLists(self, form: dict[str, str]) -> Reply:
        return ok([{"id": int(i), "title": t} for i, t in self.lists.items()])

    def _m_createList(self, form: dict[str, str]) -> Reply:
        title = form.get("title", "")
        if not title or title in self.lists.values():
            return envelope_error(f"List &quot;{title}&quot; already exists or is empty", "invalid_arg")
        return ok({"id": int(self.add_list(title))})

    def _m_getFields(self, form: dict[str, str]) -> Reply:
        return ok([{"id": n, "name": name, "type": t, "is_visible": 1, "view_pos": n}
                   for n, (name, t) in enumerate(self.fields.items(), 1)])

    def _m_createField(self, form: dict[str, str]) -> Reply:
        name, ftype = form.get("name", ""), form.get("type", "")
        if not re.fullmatch(r"[A-Za-z][\w-]*", name) or name in self.fields \
                or ftype not in ("string", "text", "number", "date", "bool"):
            return envelope_error(f"Invalid field {name}", "invalid_arg")
        self.fields[name] = ftype
        return ok({"id": len(self.fields)})

    def _m_getContact(self, form: dict[str, str]) -> Reply:
        email = form.get("email", "").lower()
        c = self.contacts.get(email)
        if c is None:
            return Reply(200, json.dumps({"error": f"Contact &quot;{email}&quot; not found", "code": "unspecified",
                                          "result": ""}).encode(), {"Content-Type": "application/json"})
        return ok({"email": {"email": email, "status": c["status"], "availability": "available"},
                   "fields": {**c["fields"], "tags": ",".join(c["tags"])},
                   "lists": [{"id": int(i), "status": c.get("list_status", {}).get(i, "active")}
                             for i in sorted(c["lists"] | set(c.get("list_status", {})))]})

    def _m_importContacts(self, form: dict[str, str]) -> Reply:
        names: dict[int, str] = {int(k[12:-1]): v for k, v in form.items() if k.startswith("field_names[")}
        rows: dict[int, dict[int, str]] = {}
        for k, v in form.items():
            mm = re.fullmatch(r"data\[(\d+)\]\[(\d+)\]", k)
            if mm:
                rows.setdefault(int(mm.group(1)), {})[int(mm.group(2))] = v
        cols = [names[i] for i in sorted(names)]
        if "email" not in cols:
            return envelope_error("field_names must include email", "invalid_arg")
        if len(rows) > MAX_IMPORT_ROWS:
            return envelope_error(f"Too many rows: {len(rows)} > {MAX_IMPORT_ROWS}", "invalid_arg")
        unknown = [c for c in cols if c not in self.fields and c not in {
            "email", "email_status", "email_list_ids", "email_excluded_list_ids", "tags", "delete"}]
        if unknown:
            return envelope_error(f"Unknown field {unknown[0]}", "invalid_arg")
        if "email_status" in cols:
            self.status_columns.append("email_status")
        overwrite_tags = form.get("overwrite_tags") == "1"
        log: list[dict[str, Any]] = []
        inserted = updated = 0
        for idx in sorted(rows):
            rec = {cols[j]: v for j, v in rows[idx].items()}
            email = rec.get("email", "").lower()
            tags = [t for t in rec.get("tags", "").split(",") if t]
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", email):
                log.append({"index": idx, "code": "invalid_email", "message": "Invalid e-mail address"})
                continue
            if email in self.reject:
                log.append({"index": idx, "code": "rejected", "message": self.reject[email]})
                continue
            c = self.contacts.get(email)
            merged = tags if overwrite_tags or c is None else c["tags"] + [t for t in tags if t not in c["tags"]]
            if len(merged) > MAX_TAGS:
                log.append({"index": idx, "code": "too_many_tags", "message": f"More than {MAX_TAGS} tags"})
                continue
            before = copy.deepcopy(c)
            if c is None:
                c = self.contacts[email] = {"status": "new", "lists": set(), "excluded": set(), "tags": [],
                                            "fields": {}}
            if rec.get("email_status") and c["status"] in ("active", "inactive"):
                c["status"] = rec["email_status"]
            c["tags"] = merged
            for lid in filter(None, rec.get("email_list_ids", "").split(",")):
                place = c.get("list_status", {}).get(lid)
                if place == "unsubscribed":  # "cannot be restored via API, only by the contact": left as it is
                    continue
                if place in ("blocked", "inactive", "invited", "activation_requested"):  # undocumented: the worst
                    self.resubscribed.append((email, lid, place))  # reading; what rfmsync must never do
                c["lists"].add(lid)
                c["excluded"].discard(lid)
                c.get("list_status", {}).pop(lid, None)  # his place on it is the import's now
            for lid in filter(None, rec.get("email_excluded_list_ids", "").split(",")):
                c["lists"].discard(lid)
                c.get("list_status", {}).pop(lid, None)
                c["excluded"].add(lid)
            c["fields"].update({k: v for k, v in rec.items() if k in self.fields})
            if before is None:
                inserted += 1
            elif c != before or not self.unchanged_uncounted:
                updated += 1
        return ok({"total": len(rows), "inserted": inserted, "updated": updated, "deleted": 0,
                   "new_emails": inserted, "invalid": len(log), "log": log})

    def _m_subscribe(self, form: dict[str, str]) -> Reply:
        email = form.get("fields[email]", "").lower()
        lids = [x for x in form.get("list_ids", "").split(",") if x]
        if not email or not lids or any(x not in self.lists for x in lids):
            return envelope_error("subscribe needs fields[email] and existing list_ids", "invalid_arg")
        if email in self.reject:  # refused naming the address (one contact a call)
            return envelope_error(f'Email "{email}": {self.reject[email]}', "invalid_arg")
        c = self.contacts.get(email)
        if c is None:
            c = self.contacts[email] = {"status": "invited", "lists": set(), "excluded": set(), "tags": [],
                                        "fields": {}}
        if form.get("double_optin") != "4" or c["status"] not in ("new", "active"):
            self.invitations.append(email)
        c["lists"] |= set(lids)
        for lid in lids:  # his place on it is the subscribe's now
            c.get("list_status", {}).pop(lid, None)
        c["tags"] += [t for t in form.get("tags", "").split(",") if t and t not in c["tags"]]
        c["fields"].update({k[7:-1]: v for k, v in form.items() if k.startswith("fields[") and k != "fields[email]"})
        return ok({"person_id": abs(hash(email)) % 10**9})

    def _m_exclude(self, form: dict[str, str]) -> Reply:
        return ok({})

    def _m_unsubscribe(self, form: dict[str, str]) -> Reply:
        c = self.contacts.get(form.get("contact", "").lower())
        if c:
            c["status"] = "unsubscribed"
        return ok({})


@pytest.fixture
def unisender_fake() -> Iterable[FakeUnisender]:
    """A running, empty Unisender account; key ``fake.api_key``; point the client at ``fake.api_url``."""
    with FakeUnisender() as fake:
        yield fake


__all__ = ["FakeUnisender", "unisender_fake", "MAX_IMPORT_ROWS", "MAX_TAGS"]
