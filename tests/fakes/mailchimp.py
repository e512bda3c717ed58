"""A stateful fake of the Mailchimp Marketing API v3 on 127.0.0.1, for the official SDK and bench scripts.

Shapes follow ``/work/shared/specs/mailchimp/mailchimp-list-id-api-openapi.yml`` (Swagger 2.0, 3.0.55):
batch subscribe ``POST /lists/{id}`` (members[] with ``status``, ``update_existing``; answer new_members /
updated_members / errors[{email_address, error, error_code, field, field_message}]), static segments
(``POST /lists/{id}/segments/{seg}`` members_to_add / members_to_remove; errors[{email_addresses, error}]),
merge fields, paged members, segment members (cleaned / transactional / unsubscribed hidden unless
``include_*=true``). Errors are ``application/problem+json``.

Rules it enforces: HTTP Basic auth with the configured key (any user name); at most 500 members per batch
and 500 adds / 500 removes per segment call, ``count`` ≤ 1000 (400 otherwise); a batch with
``update_existing=false`` leaves existing members alone (``ERROR_CONTACT_EXISTS``); a member with a merge field the
audience does not have, or an empty value of a required one, is refused ("Your merge fields were invalid."); a
batch ``status`` that
would change an existing member's status is recorded in :attr:`FakeMailchimp.violations` (and refused for
unsubscribed/cleaned members, "Member In Compliance State"; so is a ``subscribed``/``pending`` create of an address
of :attr:`FakeMailchimp.compliance`, not in the audience). Member keys the spec does not list (e.g.
``status_if_new`` in a batch) are ignored, and recorded in :attr:`ignored_fields`. One member's read
(``GET /lists/{id}/members/{hash}``) carries his ``timestamp_signup``, ``timestamp_opt`` and ``last_changed``
(:data:`TIMES`; the batch answers and the usual pages leave them out, as rfmsync reads none there): a create's are the
server's clock, a seeded member's (:meth:`FakeMailchimp.add_member`) :data:`SEEDED` unless given. The members'
listing filters and sorts by those times as the spec's ``since_timestamp_opt``, ``before_timestamp_opt``,
``since_last_changed``, ``before_last_changed``, ``sort_field``, ``sort_dir`` ask, and then shows them.

Failure drills: :meth:`answer_raw` (one-shot: answer a matching call with exactly this body and content
type, with or without doing the work), :meth:`fail` (status, Retry-After, empty body, for the next N calls or a seeded fraction),
:meth:`stall` (answer late: a client timeout), :meth:`drop` (the work done, the connection closed unanswered: an
answer lost), :meth:`cut` (the work done, the answer cut off mid-body), :attr:`date_offset` (the answers' ``Date``
off the host's clock), :attr:`member_errors` (per-member errors for chosen emails),
:attr:`empty_segment_answers` (segment batch answers 204 with no body), :attr:`latency` (makes concurrency
observable: :attr:`max_in_flight`).

Use as the ``mailchimp_fake`` pytest fixture or ``with FakeMailchimp() as fake: ...`` from a script.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import threading
import time
import uuid
from collections import Counter
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import pytest

from .http import LoopbackServer, RawAnswer, Reply, Request, take_raw

STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
MERGE_TYPES = ("text", "number", "address", "phone", "date", "url", "imageurl", "radio", "dropdown",
               "birthday", "zip")
BATCH_MEMBER_KEYS = {"email_address", "email_type", "status", "merge_fields", "interests", "language", "vip",
                     "location", "ip_signup", "timestamp_signup", "ip_opt", "timestamp_opt"}
HIDDEN_IN_SEGMENTS = ("cleaned", "transactional", "unsubscribed")
MAX_BATCH = 500
MAX_COUNT = 1000


#: the member's times (ISO 8601, whole seconds, the server's clock; "" when not known), shown by one member's read
TIMES = ("timestamp_signup", "timestamp_opt", "last_changed")
SEEDED = "2024-01-01T00:00:00+00:00"  # when a member seeded by a test (add_member) signed up and opted in


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def _times(status: str, signup: str, opt: str) -> dict[str, str]:
    """A new member's times: an API create leaves ``timestamp_signup`` empty; ``timestamp_opt`` is when he was
    subscribed (none for another status); ``last_changed`` the later of the two."""
    opted = opt if status == "subscribed" else ""
    return {"timestamp_signup": signup, "timestamp_opt": opted, "last_changed": max(signup, opt)}


#: the listing's parameters on the members' times (spec: GET /lists/{list_id}/members)
_BY_TIME = ("since_timestamp_opt", "before_timestamp_opt", "since_last_changed", "before_last_changed", "sort_field")


def _by_time(lst: "FakeList", keys: list[str], query: dict[str, str]) -> list[str]:
    """``keys`` filtered and sorted as the spec's ``since_``/``before_`` times (opted in, changed "after"/"before"
    the time given: strictly; a member with no such time is left out) and ``sort_field``/``sort_dir`` ask."""
    def at(key: str, name: str) -> datetime | None:
        value = lst.times.get(key, {}).get(name)
        return datetime.fromisoformat(value) if value else None

    for name in ("timestamp_opt", "last_changed"):
        after, before = query.get(f"since_{name}"), query.get(f"before_{name}")
        if after:
            keys = [k for k in keys if (t := at(k, name)) is not None and t > datetime.fromisoformat(after)]
        if before:
            keys = [k for k in keys if (t := at(k, name)) is not None and t < datetime.fromisoformat(before)]
    field = query.get("sort_field")
    if field in TIMES:
        floor = datetime.min.replace(tzinfo=timezone.utc)
        keys = sorted(keys, key=lambda k: at(k, field) or floor, reverse=query.get("sort_dir") == "DESC")
    return keys


_str = encode_basestring_ascii  # what json.dumps gives for a str
_SCALARS = (str, int, float, bool, type(None))


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# json.dumps with its defaults (no circular check: the fake's own plain data), without building an encoder per
# call: the bench's fake renders a million member objects and must not be slower than the client it serves
_c_encode = c_make_encoder(None, _refuse, encode_basestring_ascii, None, ": ", ", ", False, False, True)


def _encode(value: Any) -> str:
    return "".join(_c_encode(value, 0))


def _json_reply(text: str) -> Reply:
    return Reply(200, text.encode(), {"Content-Type": "application/json; charset=utf-8"})


def problem(status: int, title: str, detail: str) -> Reply:
    return Reply.json(status, {"type": "https://mailchimp.com/developer/marketing/docs/errors/", "title": title,
                               "status": status, "detail": detail, "instance": str(uuid.uuid4())},
                      content_type="application/problem+json; charset=utf-8")


@dataclass
class Fault:
    status: int = 0  # 0 = no status answer, only a stall
    times: int | None = 1  # None = use fraction
    fraction: float = 0.0
    retry_after: str | None = None
    empty_body: bool = False
    delay: float = 0.0
    method: str | None = None
    path: str | None = None  # regex searched in the path after /3.0
    drop: bool = False  # the work done, the connection closed without an answer
    cut: bool = False  # the work done, the answer cut off mid-body


class _Members(set):
    """A segment's members (lower-cased addresses): a set that keeps its list's tag index in step
    (:meth:`FakeList.tag_ids`), whoever changes it (the fake's endpoints, or a test editing the audience by hand).
    ``_gen``: the list's index generation this set is part of (a set no longer in the list keeps an older one)."""

    __slots__ = ("_lst", "_sid", "_gen")

    def __init__(self, lst: "FakeList", sid: int) -> None:
        super().__init__()
        self._lst, self._sid, self._gen = lst, sid, -1

    def add(self, key: str) -> None:
        if key not in self:
            set.add(self, key)
            self._lst._tagged(key, self, True)

    def discard(self, key: str) -> None:
        if key in self:
            set.discard(self, key)
            self._lst._tagged(key, self, False)

    def remove(self, key: str) -> None:
        set.remove(self, key)
        self._lst._tagged(key, self, False)

    def update(self, *others: Iterable[str]) -> None:
        for other in others:
            for key in other:
                self.add(key)

    def _bulk(name: str) -> Any:  # noqa: N805 - any other change: the index is built again when next read
        def change(self: "_Members", *args: Any) -> Any:
            result = getattr(set, name)(self, *args)
            self._lst._stale()
            return result
        return change

    clear, pop = _bulk("clear"), _bulk("pop")
    difference_update, intersection_update = _bulk("difference_update"), _bulk("intersection_update")
    symmetric_difference_update = _bulk("symmetric_difference_update")
    __ior__, __iand__, __isub__, __ixor__ = _bulk("__ior__"), _bulk("__iand__"), _bulk("__isub__"), _bulk("__ixor__")
    del _bulk


def _members(lst: "FakeList", sid: int, members: Iterable[str]) -> _Members:
    """``members`` as segment ``sid`` of ``lst`` keeps them: itself when it is that segment's :class:`_Members`, else
    a copy (a plain set put there by a test, or another segment's): the caller marks the tag index stale."""
    if type(members) is _Members and members._lst is lst and members._sid == sid:
        return members
    own = _Members(lst, sid)
    set.update(own, members)
    return own


class _Segment(dict):
    """A segment (id, name, type, members): assigning its ``members`` by hand (``seg["members"] = set()``) keeps the
    list's tag index in step (the set is copied into the segment's :class:`_Members`)."""

    __slots__ = ("_lst", "_sid")

    def __init__(self, lst: "FakeList", sid: int, seg: dict[str, Any]) -> None:
        super().__init__(seg)
        self._lst, self._sid = lst, sid
        if "members" in self:
            dict.__setitem__(self, "members", _members(lst, sid, self["members"]))

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "members":
            value = _members(self._lst, self._sid, value)
            self._lst._stale()
        elif key == "name":  # renamed by hand: the member views' tags name it
            self._lst.tails.clear()
        dict.__setitem__(self, key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # dict.update does not call __setitem__
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


class _Segments(dict):
    """A list's segments by id: any change of the mapping itself (a segment created, deleted, replaced) marks its
    tag index stale (created segments are empty: their creation keeps it). A segment put there by hand (a plain
    dict, its members a plain set) is taken as a :class:`_Segment` of its own (a copy)."""

    def __init__(self, lst: "FakeList", segments: dict[int, dict[str, Any]]) -> None:
        super().__init__()
        self._lst = lst
        for sid, seg in segments.items():
            dict.__setitem__(self, sid, self._own(sid, seg))

    def _own(self, sid: int, seg: dict[str, Any]) -> _Segment:
        if type(seg) is _Segment and seg._lst is self._lst and seg._sid == sid:
            return seg
        return _Segment(self._lst, sid, seg)

    def __setitem__(self, sid: int, seg: dict[str, Any]) -> None:
        new = sid not in self
        seg = self._own(sid, seg)
        dict.__setitem__(self, sid, seg)
        if new and not seg["members"] and self._lst._index is not None:
            self._lst._order[sid] = len(self._lst._order)
            seg["members"]._gen = self._lst._gen
        else:
            self._lst._stale()

    def update(self, *args: Any, **kwargs: Any) -> None:  # dict.update does not call __setitem__
        for sid, seg in dict(*args, **kwargs).items():
            self[sid] = seg

    def setdefault(self, sid: int, seg: Any = None) -> Any:
        if sid not in self:
            self[sid] = seg
        return self[sid]

    def __ior__(self, other: Any) -> "_Segments":
        self.update(other)
        return self

    def _bulk(name: str) -> Any:  # noqa: N805
        def change(self: "_Segments", *args: Any, **kwargs: Any) -> Any:
            result = getattr(dict, name)(self, *args, **kwargs)
            self._lst._stale()
            return result
        return change

    __delitem__, pop, popitem, clear = _bulk("__delitem__"), _bulk("pop"), _bulk("popitem"), _bulk("clear")
    del _bulk


class FakeList:
    def __init__(self, list_id: str, name: str) -> None:
        self.id, self.name = list_id, name
        self.members: dict[str, dict[str, Any]] = {}  # lower-cased email -> member
        self.merge_fields: dict[str, dict[str, Any]] = {}  # TAG -> definition
        self.times: dict[str, dict[str, str]] = {}  # lower-cased email -> the member's :data:`TIMES`
        #: lower-cased email -> the member view's JSON up to its tags (id, address, status, merge fields): a
        #: member is rendered again by every tag call; dropped by every change of those (the fake's own methods)
        self.heads: dict[str, str] = {}
        # the tag index: lower-cased email -> ids of the segments holding it, in the segments' order (a member
        # view's tags without scanning every segment: half of the bench's fake's CPU went into that scan); None:
        # built again when next read. _order: segment id -> its place among the segments
        self._index: dict[str, tuple[int, ...]] | None = {}
        self._order: dict[int, int] = {}
        self._gen = 0  # the index's generation (:attr:`_Members._gen`)
        #: segment ids -> the member view's JSON from its "tags_count" on; dropped with the index (a segment
        #: deleted or replaced by hand: its id may come back under another name)
        self.tails: dict[tuple[int, ...], str] = {}
        self.segments = {}  # id -> {id, name, type, members: a set of lower-cased emails}

    @property
    def segments(self) -> dict[int, dict[str, Any]]:
        return self._segments

    @segments.setter
    def segments(self, segments: dict[int, dict[str, Any]]) -> None:  # a test deleting a segment by hand
        self._segments = _Segments(self, segments)
        self._stale()

    def tag_ids(self, key: str) -> tuple[int, ...]:
        """The ids of the segments holding ``key``, in the segments' order."""
        index = self._index
        if index is None:
            index, self._order = {}, {sid: i for i, sid in enumerate(self._segments)}
            self._gen = gen = self._gen + 1
            for sid, seg in self._segments.items():
                members = seg["members"]
                members._gen = gen
                for k in members:
                    index[k] = index.get(k, ()) + (sid,)
            self._index = index
        return index.get(key, ())

    def _stale(self) -> None:
        self._index = None
        self.tails.clear()

    def _tagged(self, key: str, members: _Members, added: bool) -> None:
        index = self._index
        if index is None:
            return
        if members._gen != self._gen:  # a set a test kept of a segment deleted or replaced (each of those
            return  # marks the index stale: its next build stamps the sets still in the list)
        sid = members._sid
        ids = index.get(key, ())
        if added:
            order = self._order
            if sid not in order:  # a segment the index does not know (not added through ``segments``)
                return self._stale()
            ids += (sid,)
            if len(ids) > 1 and order[ids[-2]] > order[sid]:
                ids = tuple(sorted(ids, key=order.__getitem__))
            index[key] = ids
        elif len(ids) == 1:
            del index[key]
        else:
            index[key] = tuple([i for i in ids if i != sid])


class FakeMailchimp:
    #: how many ``"TAG": value`` texts the fake keeps (:meth:`_fields_json`); past it they are dropped all at once
    field_json_limit = 50_000

    def __init__(self, api_key: str = "fake0key0123456789-us1", list_id: str | None = "aud1",
                 seed: int = 0) -> None:
        self.api_key = api_key
        self.lists: dict[str, FakeList] = {}
        self.calls: Counter[str] = Counter()  # "POST /lists/aud1" -> n
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []  # method, path, query, json body
        self.violations: list[str] = []
        self.ignored_fields: set[str] = set()
        self.member_errors: dict[str, str] = {}  # lower-cased email -> error message
        #: lower-cased addresses not in the audience that Mailchimp holds in a compliance state (unsubscribed or
        #: bounced, then archived or deleted): created ``subscribed``/``pending`` they are refused, 400-per-member
        self.compliance: set[str] = set()
        self.empty_segment_answers = False
        #: called with (method, path, query) once a request's work is done, before its answer: a live edit between
        #: two pages (a member unsubscribing while a listing is paged)
        self.after: Callable[[str, str, dict[str, str]], None] | None = None
        self.latency = 0.0
        self.in_flight = self.max_in_flight = 0
        self._faults: list[Fault] = []
        self._raw: list[RawAnswer] = []
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._count_lock = threading.Lock()
        self._next_id = 1000
        self._ids: dict[str, str] = {}  # lower-cased email -> member id (subscriber hash)
        self._field_json: dict[tuple[str, type, Any], str] = {}  # (tag, type, value) -> '"TAG": value' as JSON
        self._server = LoopbackServer(self.handle)
        self.default_list = list_id
        if list_id:
            self.add_list(list_id)

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return self._server.url + "/3.0"

    def start(self) -> "FakeMailchimp":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "FakeMailchimp":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- seeding and inspection
    def add_list(self, list_id: str, name: str = "Shop customers") -> FakeList:
        lst = self.lists[list_id] = FakeList(list_id, name)
        for tag, label in (("FNAME", "First Name"), ("LNAME", "Last Name")):
            self._add_merge_field(lst, {"tag": tag, "name": label, "type": "text"})
        return lst

    def _list(self, list_id: str | None) -> FakeList:
        return self.lists[list_id or self.default_list or ""]

    def add_member(self, email: str, status: str = "subscribed", merge_fields: dict[str, Any] | None = None,
                   tags: Iterable[str] = (), list_id: str | None = None, since: str = SEEDED) -> None:
        """A member the audience holds already: signed up and opted in (when ``subscribed``) at ``since``."""
        lst = self._list(list_id)
        lst.members[email.lower()] = {"email_address": email, "status": status,
                                      "merge_fields": dict(merge_fields or {})}
        lst.times[email.lower()] = _times(status, since, since)
        lst.heads.pop(email.lower(), None)
        for tag in tags:
            seg = self._segment_by_name(lst, tag) or self._create_segment(lst, tag)
            seg["members"].add(email.lower())

    def add_merge_field(self, tag: str, type: str = "text", name: str | None = None,
                        list_id: str | None = None) -> None:
        self._add_merge_field(self._list(list_id), {"tag": tag, "name": name or tag, "type": type})

    def add_segment(self, name: str, emails: Iterable[str] = (), list_id: str | None = None,
                    type: str = "static") -> int:
        lst = self._list(list_id)
        seg = self._create_segment(lst, name, type)
        seg["members"].update(e.lower() for e in emails)
        return seg["id"]

    def member(self, email: str, list_id: str | None = None) -> dict[str, Any]:
        return self._list(list_id).members[email.lower()]

    def forget(self, email: str, list_id: str | None = None) -> None:
        """Delete a member behind rfmsync's back (drift): gone from the audience and every segment."""
        lst = self._list(list_id)
        lst.members.pop(email.lower(), None)
        lst.heads.pop(email.lower(), None)
        lst.times.pop(email.lower(), None)
        for seg in lst.segments.values():
            seg["members"].discard(email.lower())

    def tags_of(self, email: str, list_id: str | None = None) -> set[str]:
        lst = self._list(list_id)
        return {s["name"] for s in lst.segments.values() if email.lower() in s["members"]}

    def segment_names(self, list_id: str | None = None) -> set[str]:
        return {s["name"] for s in self._list(list_id).segments.values()}

    def count(self, method: str, path: str) -> int:
        return self.calls[f"{method} {path}"]

    @property
    def write_calls(self) -> int:
        return sum(n for key, n in self.calls.items() if not key.startswith("GET "))

    # ----------------------------------------------------------------- failure drills
    def fail(self, status: int, times: int | None = 1, *, fraction: float = 0.0, retry_after: str | None = None,
             empty_body: bool = False, method: str | None = None, path: str | None = None) -> None:
        """Answer ``status`` to the next ``times`` matching calls (or, with times=None, a seeded ``fraction``)."""
        self._faults.append(Fault(status, times, fraction, retry_after, empty_body, 0.0, method, path))

    def stall(self, seconds: float, times: int | None = 1, *, method: str | None = None,
              path: str | None = None) -> None:
        """Answer the next matching calls only after ``seconds`` (longer than the client timeout = a timeout)."""
        self._faults.append(Fault(0, times, 0.0, None, False, seconds, method, path))

    def drop(self, times: int | None = 1, *, method: str | None = None, path: str | None = None) -> None:
        """Do the next matching calls' work, then close their connections without answering (an answer lost)."""
        self._faults.append(Fault(0, times, 0.0, None, False, 0.0, method, path, drop=True))

    def cut(self, times: int | None = 1, *, method: str | None = None, path: str | None = None) -> None:
        """Do the next matching calls' work, then send their answers' status, headers and half the body and close
        the connection (an answer cut off mid-body)."""
        self._faults.append(Fault(0, times, 0.0, None, False, 0.0, method, path, cut=True))

    @property
    def date_offset(self) -> float:
        """Seconds the answers' ``Date`` header is off this host's clock (0: right; a proxy's clock, a cache)."""
        return self._server.date_offset

    @date_offset.setter
    def date_offset(self, seconds: float) -> None:
        self._server.date_offset = seconds

    def answer_raw(self, body: bytes, content_type: str = "text/html; charset=utf-8", *, status: int = 200,
                   method: str | None = "POST", path: str | None = None, work: bool = False) -> None:
        """The next matching call (path: regex on the path after /3.0) is answered with exactly this body
        (see :class:`tests.fakes.http.RawAnswer`)."""
        self._raw.append(RawAnswer(body, content_type, status, method, path, work))

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in list(self._faults):
            if fault.method and fault.method != method or fault.path and not re.search(fault.path, path):
                continue
            if fault.times is None:
                if self._rng.random() < fault.fraction:
                    return fault
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            return fault
        return None

    # ----------------------------------------------------------------- HTTP entry point
    def handle(self, req: Request) -> Reply:
        # the calls in flight have a lock of their own: counting one must not wait for another call's work
        with self._count_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        arrived = req.arrived or time.monotonic()
        try:
            with self._lock:
                reply = self._handle(req)
            # answered `latency` after the call reached the server (reading its body and the work done meanwhile
            # count, as they do in a vendor's answer time)
            if self.latency:
                time.sleep(max(0.0, arrived + self.latency - time.monotonic()))
            return reply
        finally:
            with self._count_lock:
                self.in_flight -= 1

    def _handle(self, req: Request) -> Reply:
        if not req.path.startswith("/3.0/"):
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        path = req.path[len("/3.0"):].rstrip("/")
        try:
            body = req.json() if req.body else None
        except ValueError:
            return problem(400, "JSON Parse Exception", "We encountered an unspecified JSON parsing error.")
        self.calls[f"{req.method} {path}"] += 1
        self.requests.append((req.method, path, dict(req.query), body))
        fault = self._fault_for(req.method, path)
        if fault is not None and fault.status:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            if fault.empty_body:
                return Reply(fault.status, b"", headers)
            reply = problem(fault.status, "Too Many Requests" if fault.status == 429 else "Injected Error",
                            "Injected by the fake.")
            reply.headers.update(headers)
            return reply
        if not self._authorised(req.headers.get("authorization", "")):
            return problem(401, "API Key Invalid", "Your API key may be invalid, or you've attempted to access "
                                                  "the wrong datacenter.")
        if int(req.query.get("count", "10")) > MAX_COUNT:
            return problem(400, "Invalid Resource", f"count must be <= {MAX_COUNT}")
        raw = take_raw(self._raw, req.method, path)
        if raw is not None:
            if raw.work:
                self._route(req.method, path, req.query, body)
            return raw.reply()
        reply = self._route(req.method, path, req.query, body)
        if self.after is not None:
            self.after(req.method, path, dict(req.query))
        if fault is not None:  # a stall: the work is done, the answer comes too late (or never: drop; cut off)
            reply.delay, reply.drop, reply.cut = fault.delay, fault.drop, fault.cut
        return reply

    def _authorised(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return password == self.api_key

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Reply:
        if path == "/ping" and method == "GET":
            return Reply.json(200, {"health_status": "Everything's Chimpy!"})
        m = re.fullmatch(r"/lists/([^/]+)(/[a-z-]+)?(?:/([^/]+))?(/members)?", path)
        lst = self.lists.get(m.group(1)) if m else None
        if lst is None:
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        sub, item, tail = m.group(2), m.group(3), m.group(4)
        if sub is None and method == "GET":
            return Reply.json(200, self._pick(self._list_view(lst, stats=self._wants(query, "stats")), query))
        if sub is None and method == "POST":
            return self._batch_subscribe(lst, body or {})
        if sub == "/members" and not item and method == "GET":
            keys = [k for k in lst.members if not query.get("status") or lst.members[k]["status"] == query["status"]]
            if not any(n in query for n in _BY_TIME):  # (the usual listing, as it was: no member's times)
                return self._page("members", [self._member_view(lst, k) for k in keys], lst, query)
            return self._page("members", [{**self._member_view(lst, k), **lst.times.get(k, {})}
                                          for k in _by_time(lst, keys, query)], lst, query)
        if sub == "/members" and item and not tail and method == "GET":  # by subscriber hash (or the address)
            key = next((k for k in lst.members if item in (k, hashlib.md5(k.encode()).hexdigest())), None)
            if key is None:
                return problem(404, "Resource Not Found", "The requested resource could not be found.")
            times = lst.times.get(key, {})  # (only here: the batch answers' members are kept as they were)
            return Reply.json(200, self._pick({**self._member_view(lst, key), **{k: times.get(k, "") for k in TIMES}},
                                              query))
        if sub == "/merge-fields" and not item:
            if method == "GET":
                return self._page("merge_fields", list(lst.merge_fields.values()), lst, query)
            if method == "POST":
                return self._create_merge_field(lst, body or {})
        if sub == "/segments":
            seg = lst.segments.get(int(item)) if item and item.isdigit() else None
            if item and seg is None:
                return problem(404, "Resource Not Found", "The requested segment could not be found.")
            if not item and method == "GET":
                segs = [self._segment_view(lst, s) for s in lst.segments.values()
                        if not query.get("type") or s["type"] == query["type"]]
                return self._page("segments", segs, lst, query)
            if not item and method == "POST":
                return self._post_segment(lst, body or {})
            if seg and not tail and method == "POST":
                return self._batch_segment(lst, seg, body or {})
            if seg and tail and method == "GET":
                shown = [k for k in sorted(seg["members"]) if k in lst.members and (
                    lst.members[k]["status"] not in HIDDEN_IN_SEGMENTS
                    or query.get(f"include_{lst.members[k]['status']}", "").lower() == "true")]
                return self._page("members", [self._member_view(lst, k) for k in shown], lst, query)
        return problem(405, "Method Not Allowed", f"{method} {path} is not supported by the fake.")

    # ----------------------------------------------------------------- endpoints
    def _batch_subscribe(self, lst: FakeList, body: dict[str, Any]) -> Reply:
        members = body.get("members")
        if not isinstance(members, list):
            return problem(400, "Invalid Resource", "members is required")
        if len(members) > MAX_BATCH:
            return problem(400, "Invalid Resource", f"You may only add or update up to {MAX_BATCH} members at once.")
        update_existing = bool(body.get("update_existing"))
        new, updated, errors = [], [], []
        stamp = ""  # this call's time, its creates' (read once)
        # each merge tag's checks, read once a call: (a number field, a required one)
        checks = {tag: (field["type"] == "number", bool(field.get("required")))
                  for tag, field in lst.merge_fields.items()}

        def error(email: str, message: str, code: str = "ERROR_GENERIC", field: str = "",
                  field_message: str = "") -> None:
            errors.append({"email_address": email, "error": message, "error_code": code, "field": field,
                           "field_message": field_message})

        for item in members:
            email = str(item.get("email_address", ""))
            key = email.lower()
            if not item.keys() <= BATCH_MEMBER_KEYS:
                self.ignored_fields.update(set(item) - BATCH_MEMBER_KEYS)
            if key in self.member_errors:
                error(email, self.member_errors[key])
                continue
            fields = item.get("merge_fields") or {}
            bad, why = self._merge_field_error(checks, fields)
            if bad:  # the member refused, as real Mailchimp does (no skip_merge_validation)
                error(email, "Your merge fields were invalid.", field=bad, field_message=why)
                continue
            existing = lst.members.get(key)
            status = item.get("status")
            if existing is None:
                if key in self.compliance and status in ("subscribed", "pending"):
                    error(email, f"{email} is in a compliance state due to unsubscribe, bounce, or compliance "
                          "review and cannot be subscribed.")
                    continue
                if status not in STATUSES:
                    error(email, "The resource submitted could not be validated.", field="status",
                          field_message="status is required for a new member")
                    continue
                lst.members[key] = {"email_address": email, "status": status, "merge_fields": dict(fields)}
                lst.times[key] = _times(status, "", stamp or (stamp := now()))
                lst.heads.pop(key, None)
                new.append(self._member_json(lst, key))
                continue
            if not update_existing:
                error(email, f"{email} is already a list member. Use PUT to insert or update list members.",
                      "ERROR_CONTACT_EXISTS")
                continue
            if status is not None and status != existing["status"]:
                self.violations.append(f"batch status {status!r} sent for {existing['status']} member {email}")
                if existing["status"] in ("unsubscribed", "cleaned") and status in ("subscribed", "pending"):
                    error(email, f"{email} is in a compliance state due to unsubscribe, bounce, or compliance "
                          "review and cannot be subscribed.")
                    continue
                existing["status"] = status
            existing["merge_fields"].update(fields)
            lst.heads.pop(key, None)
            updated.append(self._member_json(lst, key))
        return _json_reply(f'{{"new_members": [{", ".join(new)}], "updated_members": [{", ".join(updated)}], '
                           f'"errors": {_encode(errors)}, "total_created": {len(new)}, '
                           f'"total_updated": {len(updated)}, "error_count": {len(errors)}}}')

    def _batch_segment(self, lst: FakeList, seg: dict[str, Any], body: dict[str, Any]) -> Reply:
        adds, removes = body.get("members_to_add") or [], body.get("members_to_remove") or []
        if len(adds) > MAX_BATCH or len(removes) > MAX_BATCH:
            return problem(400, "Invalid Resource", f"A maximum of {MAX_BATCH} members can be sent per call.")
        added, removed, failed = [], [], {}
        for emails, target, op in ((adds, added, seg["members"].add), (removes, removed, seg["members"].discard)):
            for email in emails:
                key = email.lower()
                if key in self.member_errors:
                    failed.setdefault(self.member_errors[key], []).append(email)
                elif key not in lst.members:
                    failed.setdefault("Email address does not exist on this list", []).append(email)
                else:
                    op(key)
                    target.append(self._member_json(lst, key))
        if self.empty_segment_answers:
            return Reply(204)
        errors = [{"email_addresses": emails, "error": message} for message, emails in failed.items()]
        return _json_reply(f'{{"members_added": [{", ".join(added)}], "members_removed": [{", ".join(removed)}], '
                           f'"errors": {_encode(errors)}, "total_added": {len(added)}, '
                           f'"total_removed": {len(removed)}, "error_count": {sum(len(e) for e in failed.values())}}}')

    def _post_segment(self, lst: FakeList, body: dict[str, Any]) -> Reply:
        name = body.get("name")
        if not name:
            return problem(400, "Invalid Resource", "name is required")
        if self._segment_by_name(lst, name):
            return problem(400, "Invalid Resource", f"Tag or segment {name!r} already exists.")
        seg = self._create_segment(lst, name, "static" if "static_segment" in body else "saved")
        seg["members"].update(e.lower() for e in body.get("static_segment") or [] if e.lower() in lst.members)
        return Reply.json(200, self._segment_view(lst, seg))

    def _create_merge_field(self, lst: FakeList, body: dict[str, Any]) -> Reply:
        if not body.get("name") or body.get("type") not in MERGE_TYPES:
            return problem(400, "Invalid Resource", "name and a valid type are required")
        tag = str(body.get("tag") or f"MMERGE{len(lst.merge_fields) + 1}").upper()
        if len(tag) > 10 or tag in lst.merge_fields:
            return problem(400, "Invalid Resource", f"merge tag {tag!r} is too long or already exists")
        return Reply.json(200, self._add_merge_field(lst, {**body, "tag": tag}))

    # ----------------------------------------------------------------- helpers
    def _add_merge_field(self, lst: FakeList, body: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        field = {"merge_id": self._next_id, "tag": body["tag"], "name": body["name"], "type": body["type"],
                 "required": bool(body.get("required")), "default_value": body.get("default_value", ""),
                 "public": bool(body.get("public")), "display_order": len(lst.merge_fields) + 1,
                 "options": body.get("options", {}), "help_text": body.get("help_text", ""), "list_id": lst.id}
        lst.merge_fields[field["tag"]] = field
        return field

    @staticmethod
    def _merge_field_error(checks: dict[str, tuple[bool, bool]], values: dict[str, Any]) -> tuple[str, str]:
        """Why a member's merge field ``values`` are refused: the first value a number merge field cannot take
        ("Please enter a number"), else the first the audience has no merge field for, or an empty value of a
        required one; ``("", "")`` when none. ``checks``: each merge tag's (a number field, a required one)."""
        other = None
        for tag, value in values.items():
            check = checks.get(tag)
            if check is None:
                other = other or (tag, f"{tag} is not a merge field of this audience")
            elif value in ("", None):
                if check[1]:
                    other = other or (tag, "Please enter a value")
            elif check[0]:
                try:
                    float(value)
                except (TypeError, ValueError):
                    return tag, "Please enter a number"
        return other or ("", "")

    def _create_segment(self, lst: FakeList, name: str, type: str = "static") -> dict[str, Any]:
        self._next_id += 1
        seg = lst.segments[self._next_id] = _Segment(lst, self._next_id, {"id": self._next_id, "name": name,
                                                                         "type": type, "members": ()})
        return seg

    @staticmethod
    def _segment_by_name(lst: FakeList, name: str) -> dict[str, Any] | None:
        return next((s for s in lst.segments.values() if s["name"] == name), None)

    @staticmethod
    def _segment_view(lst: FakeList, seg: dict[str, Any]) -> dict[str, Any]:
        return {"id": seg["id"], "name": seg["name"], "member_count": len(seg["members"]), "type": seg["type"],
                "created_at": "2024-01-01T00:00:00+00:00", "updated_at": "2024-01-01T00:00:00+00:00",
                "list_id": lst.id}

    def _member_view(self, lst: FakeList, key: str) -> dict[str, Any]:
        m = lst.members[key]
        tags = [{"id": s["id"], "name": s["name"]} for s in lst.segments.values() if key in s["members"]]
        return {"id": hashlib.md5(key.encode()).hexdigest(), "email_address": m["email_address"],
                "status": m["status"], "merge_fields": dict(m["merge_fields"]), "tags_count": len(tags),
                "tags": tags, "list_id": lst.id}

    def _member_json(self, lst: FakeList, key: str) -> str:
        """:meth:`_member_view` as the JSON text ``json.dumps`` would give it, built from pre-serialised parts
        (a batch answer carries 500 of them: the bench's fake must not be slower than the client it serves). The
        part before the tags is kept per member (:attr:`FakeList.heads`): a tag call renders it again unchanged."""
        ids = lst.tag_ids(key)
        tail = lst.tails.get(ids)
        if tail is None:
            tags = _encode([{"id": i, "name": lst.segments[i]["name"]} for i in ids])
            tail = lst.tails[ids] = f'"tags_count": {len(ids)}, "tags": {tags}, "list_id": {_str(lst.id)}}}'
        head = lst.heads.get(key)
        if head is None:
            m = lst.members[key]
            member_id = self._ids.get(key)
            if member_id is None:  # the MD5 of the lower-cased address, as Mailchimp's subscriber hash
                member_id = self._ids[key] = hashlib.md5(key.encode()).hexdigest()
            fields = self._fields_json(m["merge_fields"])
            head = lst.heads[key] = (f'{{"id": "{member_id}", "email_address": {_str(m["email_address"])}, '
                                     f'"status": {_str(m["status"])}, "merge_fields": {fields}, ')
        return head + tail

    def _fields_json(self, fields: dict[str, Any]) -> str:
        """``_encode(fields)`` with each ``"TAG": value`` kept (a bench audience has few distinct values per field)."""
        parts, known = [], self._field_json
        for item in fields.items():
            tag, value = item
            kind = type(value)
            try:  # kept texts are of str tags and scalar values only (0.0 and -0.0 never): a hit is one of those
                text = known.get((tag, kind, value))  # the type too: 1, 1.0 and True are equal keys, not equal JSON
            except TypeError:  # an unhashable value (a list, a dict)
                return _encode(fields)
            if text is None:
                if kind not in _SCALARS or type(tag) is not str:
                    return _encode(fields)
                text = f"{_str(tag)}: {_encode(value)}"
                if kind is not float or value:  # 0.0 and -0.0: equal keys, not equal JSON
                    if len(known) >= self.field_json_limit:  # mostly distinct values (money): kept, not piled up
                        known.clear()
                    known[(tag, kind, value)] = text
            parts.append(text)
        return "{" + ", ".join(parts) + "}"

    @staticmethod
    def _list_view(lst: FakeList, stats: bool = True) -> dict[str, Any]:
        view = {"id": lst.id, "web_id": 1, "name": lst.name, "double_optin": False}
        if stats:  # a count over every member, under the fake's one lock: only when the answer shows it (the API
            # keeps its stats cached; counting a million members held every other call ~0.1-0.4 s)
            view["stats"] = {"member_count": sum(m["status"] == "subscribed" for m in lst.members.values())}
        return view

    @staticmethod
    def _wants(query: dict[str, str], top: str) -> bool:
        """Whether ``fields`` (none: everything) keeps the answer's ``top`` key."""
        wanted = [f for f in query.get("fields", "").split(",") if f]
        return not wanted or any(f.partition(".")[0] == top for f in wanted)

    def _page(self, key: str, items: list[dict[str, Any]], lst: FakeList, query: dict[str, str]) -> Reply:
        count, offset = int(query.get("count", "10")), int(query.get("offset", "0"))
        payload = {key: items[offset:offset + count], "list_id": lst.id, "total_items": len(items)}
        return Reply.json(200, self._pick(payload, query))

    @staticmethod
    def _pick(payload: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        """Apply ``fields=a,b.c`` (dot notation into an object or arrays of objects) like the real API."""
        wanted = [f for f in query.get("fields", "").split(",") if f]
        if not wanted:
            return payload
        out: dict[str, Any] = {}
        for f in wanted:
            top, _, sub = f.partition(".")
            if top not in payload:
                continue
            if not sub:
                out[top] = payload[top]
            elif isinstance(payload[top], list):
                rows = out.setdefault(top, [{} for _ in payload[top]])
                for row, src in zip(rows, payload[top]):
                    if sub in src:
                        row[sub] = src[sub]
            elif isinstance(payload[top], dict) and sub in payload[top]:  # into an object (``stats.member_count``)
                out.setdefault(top, {})[sub] = payload[top][sub]
        return out


@pytest.fixture
def mailchimp_fake() -> Iterable[FakeMailchimp]:
    """A running fake with one audience ``aud1`` (FNAME, LNAME merge fields); key ``fake.api_key``."""
    with FakeMailchimp() as fake:
        yield fake
