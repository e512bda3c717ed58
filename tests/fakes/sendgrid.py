"""A stateful fake of the SendGrid Marketing Campaigns API (``/v3/marketing/...``) on 127.0.0.1.

Shapes follow ``/work/shared/specs/sendgrid/tsg_mc_{contacts,lists,custom_fields}_v3.json``: lists
(``GET`` paged with ``page_size`` ≤ 1000 / ``page_token``, ``POST`` → 201), field definitions (custom +
reserved), ``PUT /contacts`` → 202 ``{job_id}`` processed as an async job (``GET /contacts/imports/{id}``:
pending for :attr:`FakeSendGrid.pending_polls` polls, then completed / errored / failed with ``results`` and
an ``errors_url``), ``POST /contacts/search/emails`` (200 with ``result`` keyed by email, per-address
``error`` for misses; 404 when none match), ``DELETE /lists/{id}/contacts?contact_ids=`` → 202 (404 when the list or one of the ids does not exist), and contact
exports (``POST /contacts/exports`` → ``GET /contacts/exports/{id}`` → CSV ``urls``).

Rules it enforces: ``Authorization: Bearer <key>``; ≤ 30 000 contacts and ≤ 6 MB of JSON per upsert (400 /
413); ≤ 100 emails per search; custom fields addressed by id; unknown list ids refused. Contacts are never
deleted by rfmsync: any ``DELETE /v3/marketing/contacts`` or call under ``/v3/asm`` (suppressions) is
recorded in :attr:`forbidden_calls`. Every answer carries ``X-RateLimit-*`` headers; an injected 429 carries
``X-RateLimit-Reset`` one second ahead.

Failure drills: :meth:`answer_raw` (one-shot raw body and content type for the next matching call),
:meth:`fail` (status for the next N matching calls), :meth:`stall` (answer late = a client
timeout; the work is done), :attr:`reject` (email → message: that contact errors inside the import job),
:attr:`unprocessable_jobs` (the next N upsert jobs fail as a whole: status ``failed``, nobody stored, the
errors file naming only the rejected contacts), :attr:`errors_file_rows` (an errors file naming fewer).

Use as the ``sendgrid_fake`` pytest fixture or ``with FakeSendGrid() as fake: ...`` from a script.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

import pytest

from .http import LoopbackServer, RawAnswer, Reply, Request, take_raw

MAX_UPSERT_CONTACTS = 30_000
MAX_UPSERT_BYTES = 6_000_000
MAX_SEARCH = 100
RESERVED = ["first_name", "last_name", "email", "alternate_emails", "address_line_1", "city", "country",
            "phone_number", "unique_name"]


def errors(status: int, message: str, field: str | None = None, **headers: str) -> Reply:
    return Reply.json(status, {"errors": [{"field": field, "message": message}]}, **headers)


@dataclass
class Fault:
    status: int  # 0 = a stall only
    times: int
    delay: float = 0.0
    method: str | None = None
    path: str | None = None  # regex searched in the path


class FakeSendGrid:
    def __init__(self, api_key: str = "SG.fake-key-0123456789") -> None:
        self.api_key = api_key
        self.lists: dict[str, str] = {}  # id → name
        self.fields: dict[str, tuple[str, str]] = {}  # id → (name, field_type)
        self.contacts: dict[str, dict[str, Any]] = {}  # email → {id, email, custom_fields, list_ids}
        self.suppressed: set[str] = set()  # global unsubscribes: rfmsync must never touch them
        self.reject: dict[str, str] = {}  # email → error message inside the import job
        self.pending_polls = 1  # a job answers "pending" this many times before it finishes
        self.errors_file_rows: int | None = None  # the errors file names at most this many (its format is unpublished)
        self.unprocessable_jobs = 0  # this many next upsert jobs fail as a whole: nobody stored, status "failed"
        #: the files' URLs are pre-signed (S3): whoever has one reads the file, so it is a secret for the logs
        self.url_signature = "sk-TESTSIGNATURE-0123456789abcdef"
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.forbidden_calls: list[str] = []
        self._jobs: dict[str, dict[str, Any]] = {}
        self._files: dict[str, bytes] = {}
        self._exports: dict[str, list[str]] = {}
        self._faults: list[Fault] = []
        self._raw: list[RawAnswer] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(self.handle)
        self._ids = 0

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> "FakeSendGrid":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "FakeSendGrid":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- setup and inspection
    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:04d}-{uuid.uuid4().hex[:8]}"

    def add_list(self, name: str) -> str:
        lid = self._next_id("list")
        self.lists[lid] = name
        return lid

    def add_field(self, name: str, field_type: str = "Text") -> str:
        fid = self._next_id("e") + "_" + field_type[0]
        self.fields[fid] = (name, field_type)
        return fid

    def add_contact(self, email: str, lists: Iterable[str] = (), **custom: Any) -> dict[str, Any]:
        ids = {lid for lid, n in self.lists.items() if n in set(lists)}
        by_name = {n.lower(): fid for fid, (n, _) in self.fields.items()}
        contact = {"id": self._next_id("c"), "email": email.lower(), "list_ids": ids,
                   "custom_fields": {by_name[k.lower()]: v for k, v in custom.items()}}
        self.contacts[email.lower()] = contact
        return contact

    def list_id(self, name: str) -> str | None:
        return next((lid for lid, n in self.lists.items() if n == name), None)

    def members(self, name: str) -> set[str]:
        lid = self.list_id(name)
        return {e for e, c in self.contacts.items() if lid in c["list_ids"]}

    def field_value(self, email: str, field_name: str) -> Any:
        fid = next(fid for fid, (n, _) in self.fields.items() if n.lower() == field_name.lower())
        return self.contacts[email.lower()]["custom_fields"].get(fid)

    def count(self, method: str, path: str) -> int:
        return self.calls[f"{method} {path}"]

    @property
    def write_calls(self) -> int:
        return sum(n for key, n in self.calls.items() if key.split()[0] in {"POST", "PUT", "PATCH", "DELETE"}
                   and "/search/" not in key and "/exports" not in key)

    # ----------------------------------------------------------------- failure drills
    def fail(self, status: int, times: int = 1, *, method: str | None = None, path: str | None = None) -> None:
        self._faults.append(Fault(status, times, 0.0, method, path))

    def stall(self, seconds: float, times: int = 1, *, method: str | None = None, path: str | None = None) -> None:
        self._faults.append(Fault(0, times, seconds, method, path))

    def answer_raw(self, body: bytes, content_type: str = "text/html; charset=utf-8", *, status: int = 200,
                   method: str | None = "PUT", path: str | None = None, work: bool = False) -> None:
        """The next matching call (path: regex on the path) is answered with exactly this body
        (see :class:`tests.fakes.http.RawAnswer`)."""
        self._raw.append(RawAnswer(body, content_type, status, method, path, work))

    def forget(self, email: str) -> None:
        """Delete a contact behind rfmsync's back (drift)."""
        self.contacts.pop(email.lower(), None)

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in list(self._faults):
            if fault.method and fault.method != method or fault.path and not re.search(fault.path, path):
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            return fault
        return None

    # ----------------------------------------------------------------- HTTP entry point
    def handle(self, req: Request) -> Reply:
        with self._lock:
            reply = self._handle(req)
        reset = str(int(time.time()) + 1)
        reply.headers.setdefault("X-RateLimit-Limit", "600")
        reply.headers.setdefault("X-RateLimit-Remaining", "0" if reply.status == 429 else "599")
        reply.headers.setdefault("X-RateLimit-Reset", reset)
        return reply

    def _handle(self, req: Request) -> Reply:
        path = req.path.rstrip("/")
        if path.startswith("/_files/"):  # the storage host of the pre-signed files
            raw = take_raw(self._raw, req.method, path)
            if raw is not None:
                return raw.reply()
            data = self._files.get(path)
            return Reply(200, data, {"Content-Type": "text/csv"}) if data is not None else Reply(404)
        template = re.sub(r"/(list|c|e|job|exp)\d{4}-[0-9a-f]{8}(_[TND])?", "/{id}", path)
        self.calls[f"{req.method} {template}"] += 1
        if req.method == "DELETE" and path == "/v3/marketing/contacts" or path.startswith("/v3/asm"):
            self.forbidden_calls.append(f"{req.method} {path}")
        fault = self._fault_for(req.method, path)
        if fault is not None and fault.status:
            if fault.status == 429:
                return errors(429, "too many requests")
            return errors(fault.status, "injected failure")
        if req.headers.get("authorization") != f"Bearer {self.api_key}":
            return errors(401, "authorization required")
        if len(req.body) > MAX_UPSERT_BYTES and req.method == "PUT":
            return errors(413, "request body is larger than 6MB")
        try:
            body = req.json() if req.body else None
        except ValueError:
            return errors(400, "invalid JSON")
        self.requests.append((req.method, template, dict(req.query), body))
        raw = take_raw(self._raw, req.method, path)
        if raw is not None:
            if raw.work:
                self._route(req.method, path, req.query, body)
            return raw.reply()
        reply = self._route(req.method, path, req.query, body)
        if fault is not None:
            reply.delay = fault.delay
        return reply

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Reply:
        m = "/v3/marketing"
        if path == f"{m}/lists" and method == "GET":
            return self._get_lists(query)
        if path == f"{m}/lists" and method == "POST":
            name = (body or {}).get("name", "")
            if not 1 <= len(name) <= 100 or name in self.lists.values():
                return errors(400, "list name invalid or already exists", "name")
            lid = self.add_list(name)
            return Reply.json(201, {"id": lid, "name": name, "contact_count": 0})
        mm = re.fullmatch(rf"{m}/lists/([^/]+)/contacts", path)
        if mm and method == "DELETE":
            return self._remove_from_list(mm.group(1), query)
        if path == f"{m}/field_definitions" and method == "GET":
            return Reply.json(200, {
                "custom_fields": [{"id": i, "name": n, "field_type": t} for i, (n, t) in self.fields.items()],
                "reserved_fields": [{"id": f"_rf{k}_T", "name": n, "field_type": "Text"}
                                    for k, n in enumerate(RESERVED)]})
        if path == f"{m}/field_definitions" and method == "POST":
            name, ftype = (body or {}).get("name", ""), (body or {}).get("field_type")
            taken = {n.lower() for n, _ in self.fields.values()} | set(RESERVED)
            if ftype not in ("Text", "Number", "Date") or not re.fullmatch(r"[A-Za-z_]\w*", name) \
                    or name.lower() in taken:
                return errors(400, "invalid or duplicate field", "name")
            fid = self.add_field(name, ftype)
            return Reply.json(200, {"id": fid, "name": name, "field_type": ftype})
        if path == f"{m}/contacts" and method == "PUT":
            return self._upsert(body or {})
        mm = re.fullmatch(rf"{m}/contacts/imports/([^/]+)", path)
        if mm and method == "GET":
            return self._job(mm.group(1))
        if path == f"{m}/contacts/search/emails" and method == "POST":
            return self._search(body or {})
        if path == f"{m}/contacts/exports" and method == "POST":
            return self._export(body or {})
        mm = re.fullmatch(rf"{m}/contacts/exports/([^/]+)", path)
        if mm and method == "GET" and mm.group(1) in self._exports:
            return Reply.json(200, {"id": mm.group(1), "status": "ready", "urls": self._exports[mm.group(1)]})
        return errors(404, "resource not found")

    def _get_lists(self, query: dict[str, str]) -> Reply:
        size = int(float(query.get("page_size", "100")))
        if not 1 <= size <= 1000:
            return errors(400, "page_size must be 1..1000", "page_size")
        items = sorted(self.lists.items())
        start = int(query.get("page_token") or 0)
        page = items[start:start + size]
        meta: dict[str, Any] = {"self": f"{self.url}/v3/marketing/lists?page_size={size}"}
        if start + size < len(items):
            meta["next"] = f"{self.url}/v3/marketing/lists?page_size={size}&page_token={start + size}"
        counts = Counter(lid for c in self.contacts.values() for lid in c["list_ids"])
        return Reply.json(200, {"result": [{"id": i, "name": n, "contact_count": counts[i]} for i, n in page],
                                "_metadata": meta})

    def _upsert(self, body: dict[str, Any]) -> Reply:
        contacts = body.get("contacts") or []
        if not 1 <= len(contacts) <= MAX_UPSERT_CONTACTS:
            return errors(400, f"contacts must hold 1..{MAX_UPSERT_CONTACTS} items", "contacts")
        list_ids = body.get("list_ids") or []
        for lid in list_ids:
            if lid not in self.lists:
                return errors(400, f"list {lid} does not exist", "list_ids")
        for i, c in enumerate(contacts):
            for fid in (c.get("custom_fields") or {}):
                if fid not in self.fields:
                    return errors(400, f"custom field {fid} does not exist", f"contacts[{i}].custom_fields")
        job_id = self._next_id("job")
        bad: list[tuple[str, str]] = []
        created = updated = 0
        unprocessable = self.unprocessable_jobs > 0  # the spec's "failed": the job as a whole was not done
        self.unprocessable_jobs -= unprocessable
        for c in contacts:
            email = str(c.get("email") or "").lower()
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", email):
                bad.append((email, "invalid email"))
                continue
            if email in self.reject:
                bad.append((email, self.reject[email]))
                continue
            if unprocessable:  # its errors file names only the contacts rejected by name
                continue
            existing = self.contacts.get(email)
            if existing is None:
                existing = self.contacts[email] = {"id": self._next_id("c"), "email": email, "list_ids": set(),
                                                   "custom_fields": {}}
                created += 1
            else:
                updated += 1
            existing["list_ids"] |= set(list_ids)
            existing["custom_fields"].update(c.get("custom_fields") or {})
        results: dict[str, Any] = {"requested_count": len(contacts), "created_count": created,
                                   "updated_count": updated, "errored_count": len(bad)}
        if bad:
            name = f"/_files/errors/{job_id}.csv"
            named = bad if self.errors_file_rows is None else bad[:self.errors_file_rows]
            self._files[name] = ("email,errors\n" + "".join(f"{e},{m}\n" for e, m in named)).encode()
            results["errors_url"] = self._signed(name)
        status = "completed" if not bad else ("failed" if len(bad) == len(contacts) else "errored")
        status = "failed" if unprocessable else status
        self._jobs[job_id] = {"id": job_id, "job_type": "upsert", "status": status, "results": results,
                              "polls_left": self.pending_polls}
        return Reply.json(202, {"job_id": job_id})

    def _job(self, job_id: str) -> Reply:
        job = self._jobs.get(job_id)
        if job is None:
            return errors(404, "job not found")
        if job["polls_left"] > 0:
            job["polls_left"] -= 1
            return Reply.json(200, {"id": job_id, "job_type": "upsert", "status": "pending", "results": {}})
        return Reply.json(200, {k: v for k, v in job.items() if k != "polls_left"})

    def _search(self, body: dict[str, Any]) -> Reply:
        emails = body.get("emails") or []
        if not emails or len(emails) > MAX_SEARCH:
            return errors(400, f"emails must hold 1..{MAX_SEARCH} addresses", "emails")
        result: dict[str, Any] = {}
        for e in emails:
            c = self.contacts.get(str(e).lower())
            if c is None:
                result[str(e).lower()] = {"error": "contact not found"}
            else:
                result[c["email"]] = {"contact": {"id": c["id"], "email": c["email"],
                                                  "list_ids": sorted(c["list_ids"]),
                                                  "custom_fields": dict(c["custom_fields"])}}
        if not any("contact" in v for v in result.values()):
            return errors(404, "no contacts found")
        return Reply.json(200, {"result": result})

    def _remove_from_list(self, lid: str, query: dict[str, str]) -> Reply:
        if lid not in self.lists:
            return errors(404, "list not found")
        ids = [i for i in (query.get("contact_ids") or "").split(",") if i]
        if not ids:
            return errors(400, "contact_ids is required", "contact_ids")
        by_id = {c["id"]: c for c in self.contacts.values()}
        if any(cid not in by_id for cid in ids):  # the spec: "one or more contact IDs do not exist"
            return errors(404, "contact ID does not exist")
        for cid in ids:
            by_id[cid]["list_ids"].discard(lid)
        return Reply.json(202, {"job_id": self._next_id("job")})

    def _signed(self, name: str) -> str:
        return f"{self.url}{name}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={self.url_signature}"

    def _export(self, body: dict[str, Any]) -> Reply:
        lids = body.get("list_ids") or []
        exp = self._next_id("exp")
        rows = [c for c in self.contacts.values() if not lids or c["list_ids"] & set(lids)]
        name = f"/_files/exports/{exp}.csv"
        self._files[name] = ("CONTACT_ID,EMAIL,FIRST_NAME\n" + "".join(f"{c['id']},{c['email']},\n" for c in rows)).encode()
        self._exports[exp] = [self._signed(name)]
        return Reply.json(202, {"id": exp, "_metadata": {}})


@pytest.fixture
def sendgrid_fake() -> Iterable[FakeSendGrid]:
    """A running, empty SendGrid account; key ``fake.api_key``; point the client at ``fake.url``."""
    with FakeSendGrid() as fake:
        yield fake


__all__ = ["FakeSendGrid", "sendgrid_fake", "MAX_UPSERT_BYTES", "MAX_UPSERT_CONTACTS", "MAX_SEARCH"]
