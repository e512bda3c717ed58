"""Mailchimp's apply as one pipeline: a tag call starts as soon as the upserts of its new contacts have answered.

The calls are the same as when the upserts all ran first and the tag calls after them (same batches, same count:
each tag's adds and removes in contact order, up to the batch maximum each, one call per part), but they share
one pool of at most ``max_connections`` calls in flight, and a ready tag call goes before the next upsert. So no
connection idles between the phases, and each contact's operations get their outcomes close together (the
engine records a contact's state once, when its last operation has answered: :class:`sync.outcomes.StateFold`).

Order kept from the phased apply: creates first; the updates (and the creates Mailchimp answered
``ERROR_CONTACT_EXISTS`` for, whose fields still have to be written) once every create has answered, chunked
together; a new contact's tags (``change.create``: not known to be in the audience) only after its upsert
answered, and not at all when the upsert failed (reported as failed: the next run retries them; refused for good,
:attr:`~sync.model.ItemResult.refused`, when Mailchimp refused the upsert naming the contact) or found the
contact missing (adds reported missing, removes done: it carries no tag).

The tags of a contact the ledger knows is in the audience (``create`` false: a contact that moved between
segments) do not wait for its field update: a tag call holding no new contact goes in the first round (one that
also holds a new contact waits for that contact's create). Nothing the wait guards
applies to it. A tag call never creates a member ("emails not on the list are ignored") and never touches a
status, so consent is the upsert's alone. A member gone since (deleted, archived) is reported ``missing`` by the
tag call itself (an add Mailchimp ignores or refuses), as by its update. And an update that fails does not
undo a tag Mailchimp confirmed: the ledger records the tag, keeps the old fields, and the next run sends the
fields again (:class:`sync.outcomes.StateFold` folds each operation's outcome on its own, in any order).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..model import CallResults, ContactChange, ItemResult, OnResults
from .base import Dispatching

if TYPE_CHECKING:
    from .mailchimp import MailchimpDestination

Call = Callable[[], tuple[list[ItemResult], list[ContactChange]]]


@dataclass(eq=False)
class TagBatch:
    """One tag call: up to a batch of adds and a batch of removes of one tag."""

    tag: str
    add: list[ContactChange]
    remove: list[ContactChange]
    waiting: int = 0  # contacts of this batch whose upsert has not answered yet


def tag_batches(changes: Sequence[ContactChange], batch_size: int) -> list[TagBatch]:
    """Every tag's adds and removes in contact order, cut into calls of up to ``batch_size`` of each."""
    adds: dict[str, list[ContactChange]] = {}
    removes: dict[str, list[ContactChange]] = {}
    for c in changes:
        for tag in c.add_tags:
            adds.setdefault(tag, []).append(c)
        for tag in c.remove_tags:
            removes.setdefault(tag, []).append(c)
    batches = []
    for tag in sorted(set(adds) | set(removes)):
        add, remove = adds.get(tag, []), removes.get(tag, [])
        for i in range(max(math.ceil(len(add) / batch_size), math.ceil(len(remove) / batch_size))):
            part = slice(i * batch_size, (i + 1) * batch_size)
            batches.append(TagBatch(tag, add[part], remove[part]))
    return batches


def waiting_for_upserts(batches: Sequence[TagBatch]) -> dict[str, TagBatch | list[TagBatch]]:
    """Contact key -> the tag call (or the list of them: a contact with several tag changes) waiting for its
    upsert; sets each batch's ``waiting`` (its distinct new contacts: ``create``, whose upsert makes the member;
    a known member's tags do not wait for its field update). One object per contact, no list, in the usual
    case of one tag change; and in the usual plan (no contact in two tag calls, nor twice in one) the mapping
    is one dict built in C, checked by its size; any other plan takes the general loop."""
    keys = [[c.key for c in (*b.add, *b.remove) if c.create] for b in batches]
    flat = list(chain.from_iterable(keys))
    waiting_on: dict[str, TagBatch | list[TagBatch]] = dict(
        zip(flat, chain.from_iterable(repeat(b, len(k)) for b, k in zip(batches, keys))))
    if len(waiting_on) == len(flat):  # every key once
        for batch, k in zip(batches, keys):
            batch.waiting = len(k)
        return waiting_on
    waiting_on = {}
    for batch in batches:
        n = 0
        for c in {c.key: c for c in (*batch.add, *batch.remove)}.values():
            if c.create:
                n += 1
                key = c.key
                other = waiting_on.get(key)
                if other is None:
                    waiting_on[key] = batch
                elif type(other) is list:
                    other.append(batch)
                else:
                    waiting_on[key] = [other, batch]
        batch.waiting = n
    return waiting_on


class Pipeline:
    """One apply's calls: creates, then updates; each tag call once its new contacts' upserts have answered."""

    def __init__(self, dest: MailchimpDestination, changes: Sequence[ContactChange], report: OnResults,
                 on_results: OnResults, dispatching: Dispatching | None = None) -> None:
        self.dest, self.report, self.on_results = dest, report, on_results
        self.dispatching = dispatching  # told of each call before it goes (sync.dispatch)
        self.changes = changes
        self.creates: list[ContactChange] = []
        self.updates: list[ContactChange] = []
        for c in changes:  # one pass (a million changes): needs_upsert is create or set_fields
            if c.create and c.status_if_new:
                self.creates.append(c)
            elif c.create or c.set_fields:
                self.updates.append(c)
        # of the new contacts a tag call waits for (:func:`waiting_for_upserts`):
        self.failed: set[str] = set()  # upserts that failed: their tag ops are not attempted
        self.refused: set[str] = set()  # of those, the ones Mailchimp refused naming the contact: for good
        self.kept: set[str] = set()  # of those, the creates his own choice keeps out (compliance state)
        self.missing: set[str] = set()  # upserts that found the contact missing: it carries no tag
        self.spill: list[ContactChange] = []
        # the tag calls and which upserts each waits for: made on a thread of :meth:`run` once the first upserts
        # are out (at a million changes ~0.5-1 s of CPU: made before the first call it held that call back, made
        # between two calls it held back every connection's next one); the upserts that answer meanwhile are
        # matched to them once they exist (:attr:`unmatched`), in the order they answered
        self.batches: list[TagBatch] | None = None
        self.unmatched: list[tuple[Sequence[ContactChange], list[ItemResult], list[ContactChange]]] = []
        self.waiting_on: dict[str, TagBatch | list[TagBatch]] = {}
        self.ready: deque[TagBatch] = deque()
        self.upserts: deque[tuple[str, Sequence[ContactChange]]] = deque(
            ("create", chunk) for chunk in dest._chunks(self.creates))
        self.creating = len(self.upserts)  # create calls that have not answered
        if not self.creating:
            self._queue_updates()

    def _tag_plan(self) -> tuple[list[TagBatch], dict[str, TagBatch | list[TagBatch]]]:
        """The tag calls and which upserts each waits for (run on a thread of its own: nothing shared)."""
        batches = tag_batches(self.changes, self.dest.batch_size)
        return batches, waiting_for_upserts(batches)

    def _plan_tags(self, plan: tuple[list[TagBatch], dict[str, TagBatch | list[TagBatch]]]) -> None:
        """The tag plan made: the calls that wait for nobody ready, then the upserts answered so far matched."""
        self.batches, self.waiting_on = plan
        self.ready.extend(b for b in self.batches if not b.waiting)
        unmatched, self.unmatched = self.unmatched, []
        for chunk, results, spill in unmatched:
            self._tags_answered(chunk, results, spill)

    def _queue_updates(self) -> None:
        self.upserts.extend(("update", chunk) for chunk in self.dest._chunks(self.updates + self.spill))

    def _next_call(self) -> tuple[Call, str, Sequence[ContactChange]] | None:
        """The next call to send, ``dispatching`` told of it (its adds, its upserts)."""
        while self.ready:
            call = self._tag_call(self.ready.popleft())
            if call is not None:
                if self.dispatching is not None:
                    self.dispatching(call.args[2], f"tag+{call.args[0]}")
                return call, "tag", ()
        if self.upserts:
            kind, chunk = self.upserts.popleft()
            if self.dispatching is not None:
                self.dispatching(chunk, "upsert")
            return partial(self.dest._subscribe, chunk, kind == "create"), kind, chunk
        return None

    def _tag_call(self, batch: TagBatch) -> partial[Any] | None:
        """The batch's call without the contacts whose upsert failed or found them missing (reported here)."""
        if not self.missing and not self.failed:  # the usual case: every upsert so far succeeded
            sid = self.dest._segment_ids([batch.tag], create=True)[batch.tag]
            return partial(self.dest._tag_call, batch.tag, sid, batch.add, batch.remove)
        skipped: list[ItemResult] = []
        kept: dict[str, list[ContactChange]] = {"+": [], "-": []}
        for sign, contacts in (("+", batch.add), ("-", batch.remove)):
            for c in contacts:
                if c.key in self.missing:  # not in the audience: carries no tag; adds wait for it to be created
                    skipped.append(ItemResult(c.key, f"tag{sign}{batch.tag}", sign == "-", None if sign == "-"
                                              else "skipped: not a list member", missing=sign == "+"))
                elif c.key in self.refused:  # his refusal is his tags' too (a lost tag's wait ends; kept out with
                    skipped.append(ItemResult(c.key, f"tag{sign}{batch.tag}", False,  # his create: his choice)
                                              "skipped: Mailchimp refused the contact's upsert", refused=True,
                                              kept_out=c.key in self.kept))
                elif c.key in self.failed:
                    skipped.append(ItemResult(c.key, f"tag{sign}{batch.tag}", False, "skipped: the upsert failed"))
                else:
                    kept[sign].append(c)
        if skipped:
            self.on_results(skipped)
        if not kept["+"] and not kept["-"]:
            return None
        sid = self.dest._segment_ids([batch.tag], create=True)[batch.tag]
        return partial(self.dest._tag_call, batch.tag, sid, kept["+"], kept["-"])

    def _upsert_answered(self, kind: str, chunk: Sequence[ContactChange], results: list[ItemResult],
                         spill: list[ContactChange]) -> None:
        if self.batches is None:  # the tag calls are still being planned: matched once they are
            self.unmatched.append((chunk, results, spill))
        else:
            self._tags_answered(chunk, results, spill)
        self.spill.extend(spill)
        if kind == "create":
            self.creating -= 1
            if not self.creating:
                self._queue_updates()

    def _tags_answered(self, chunk: Sequence[ContactChange], results: list[ItemResult],
                       spill: list[ContactChange]) -> None:
        """The tag calls waiting for ``chunk``'s upserts: the ones it was the last wait of made ready."""
        waiting_on = self.waiting_on
        for r in results.other if isinstance(results, CallResults) else results:  # the groups all succeeded
            if r.key not in waiting_on:  # no tag call waits for it (a known member's tags went on their own)
                continue
            if not r.ok:
                self.failed.add(r.key)
                if r.refused:
                    self.refused.add(r.key)
                if r.kept_out:
                    self.kept.add(r.key)
            if r.missing:
                self.missing.add(r.key)
        spilled = {c.key for c in spill}
        found = list(map(waiting_on.pop, [c.key for c in chunk if c.key not in spilled] if spilled else
                         [c.key for c in chunk], repeat(None)))
        try:  # the usual plan: one tag call per contact (a list, for several, is not hashable)
            counts = Counter(found)
        except TypeError:
            counts = None
        ready = self.ready
        if counts is not None:  # each batch's count at once; ready in the order of its last contact here
            counts.pop(None, None)
            last = dict(zip(found, range(len(found))))
            for batch in sorted(counts, key=last.__getitem__):
                batch.waiting -= counts[batch]
                if not batch.waiting:
                    ready.append(batch)
        else:
            for batch in found:
                if batch is None:
                    continue
                for batch in batch if type(batch) is list else (batch,):
                    batch.waiting -= 1
                    if not batch.waiting:
                        ready.append(batch)

    def run(self) -> None:
        """Every call, at most ``max_connections`` at once; each call's results reported from this thread. The
        first call (or report of its results, or the tag calls' building) that raises stops new calls; the ones in
        flight are still reported, then it is raised. An interruption (Ctrl-C, SIGTERM to the CLI) waits for none
        of the calls out: their answers would not be read (the adds sent stay in doubt: :mod:`sync.ledger.inflight`)."""
        connections = self.dest.max_connections
        in_flight: dict[Future[Any], tuple[str, Sequence[ContactChange]]] = {}
        first_error: BaseException | None = None
        planning: Future[Any] | None = None  # the tag plan, made on its own thread while the upserts go
        pool = ThreadPoolExecutor(max_workers=connections, thread_name_prefix=f"mailchimp-{self.dest.name}")
        planner = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mailchimp-{self.dest.name}-tags")
        interrupted = True  # until the loop ends, or raises an error
        try:
            while True:
                try:  # a call's building (a tag created for it, the tag calls planned) raising: no further call;
                    if planning is not None and planning.done():  # the tag plan made: its calls can go now
                        plan, planning = planning.result(), None
                        self._plan_tags(plan)
                    while first_error is None and len(in_flight) < connections:  # the calls out still reported
                        nxt = self._next_call()
                        if nxt is None:
                            break
                        call, kind, chunk = nxt
                        in_flight[pool.submit(call)] = (kind, chunk)
                    if self.batches is None and planning is None:  # the first upserts are out: the tag calls
                        planning = planner.submit(self._tag_plan)
                except Exception as exc:
                    first_error = first_error or exc
                    planning = None
                    if self.batches is None:
                        self.batches = []
                    continue
                if not in_flight and (planning is None or first_error is not None):
                    break
                done, _ = wait([*in_flight, *([planning] if planning is not None else [])],
                               return_when=FIRST_COMPLETED)
                for future in done:
                    if future is planning:
                        continue  # taken at the top of the loop
                    kind, chunk = in_flight.pop(future)
                    try:
                        results, spill = future.result()
                    except Exception as exc:  # stop starting calls; still report the ones that finish
                        first_error = first_error or exc
                        continue
                    try:
                        self.report(results)  # recorded first; raises when the run must stop (its lock lost)
                    except Exception as exc:  # then as a call that raised: the calls in flight are still reported
                        first_error = first_error or exc
                        continue
                    if kind != "tag":
                        self._upsert_answered(kind, chunk, results, spill)
            interrupted = False
        except Exception:
            interrupted = False
            raise
        finally:
            planner.shutdown(wait=not interrupted, cancel_futures=interrupted)
            pool.shutdown(wait=not interrupted, cancel_futures=interrupted)
        if first_error is not None:
            raise first_error


__all__ = ["Pipeline", "TagBatch", "tag_batches", "waiting_for_upserts"]
