"""Apply: execute one destination's plan under its ledger lock, recording each call's outcome as it completes.

Every item's outcome is folded into the ledger as its API call completes (group-committed by a writer thread,
:mod:`sync.outcomes`, so the calls never wait for the ledger): a failure at once, a contact's pushed state once
its last operation of the run has answered (its upsert and its tag calls answer close together). So a failed item
stays pending (the next run plans it again) and a process killed mid-run resumes without repeating the calls whose
outcomes were committed (and repeats, idempotently, at most the operations of contacts with one not answered). The
adds and creates it sends are written before its first call and forgotten when it ends normally
(:mod:`sync.ledger.inflight`): a killed run's are in doubt, taken off whoever no longer gets them, and so are
those a failed or interrupted run's calls carried (:mod:`sync.dispatch`: the others were never sent). A
second run with no data change plans nothing and makes zero write calls. The locks it holds: :mod:`sync.held_lock`.

Planning is :mod:`sync.planning`, the ESP clients :mod:`sync.destinations`; the full sync that strings
pull → segment → plan → apply together is :func:`sync.api.run_sync`.
"""

from __future__ import annotations

import logging
from collections import ChainMap
from contextlib import ExitStack
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from sqlalchemy.exc import SQLAlchemyError

from . import gc_pause, progress
from .destinations.base import Destination
from .dispatch import Dispatched, landed, narrowed, shut_down
from .errors import LedgerError, RunStopped
from .held_lock import HeldLock, between_batches, between_check, destination_lock  # (all but between_check re-exported)
from .ledger import Ledger
from .ledger.inflight import in_flight_ops
from .ledger.locks import apply_lock
from .ledger.runs import ended_if_interrupted, record_interrupted
from .model import CallResults, ItemResult, PushedState, failed_results, kept_out_results
from .outcomes import OutcomeWriter, StateFold
from .planning.doubt import earlier_sends, unread_runs
from .planning.plan import Plan
from .planning.target import move_if_planned

if TYPE_CHECKING:
    from .ledger.readahead import ReadAhead

log = logging.getLogger(__name__)

@dataclass
class ApplyReport:
    destination: str
    run_id: int
    status: str
    counts: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: seconds the outcome writer spent writing the ledger (wall, and its thread's CPU), and how long the apply
    #: waited for it at the end
    ledger_seconds: float = 0.0
    ledger_wait_seconds: float = 0.0
    ledger_cpu_seconds: float = 0.0
    #: what the ledger forgot because the destination had lost it, ``(kind, name)`` (:func:`lost_in_destination`):
    #: counts kept from the ledger (a webhook's cached managed count) are stale when there is any
    forgotten: frozenset[tuple[str, str]] = frozenset()


#: the error of a run interrupted (after ``interrupted by Ctrl-C (SIGINT)``, ``... SIGTERM``)
INTERRUPTED = ("; the outcomes answered before it are recorded, the calls still out were not waited for: the adds "
               "and creates sent without a recorded answer are in doubt, settled by the next sync")

#: a destination lock's time to live (refreshed every third of it while held: :class:`HeldLock`)
LOCK_TTL = 3600.0

#: an apply of this many changes or more renews the destination's cached state copy before it returns
#: (:meth:`~sync.ledger.state.PushedStates.keep_copy_current`); smaller ones (a webhook's resync) leave it
COPY_AFTER = 5_000


def _keep_copy_current(ledger: Ledger, destination: str, ahead: ReadAhead | None = None) -> None:
    """Read back what a big apply wrote into the destination's cached copy (the next plan then reads only
    what changes after it; ``ahead``: the pages read while the calls ran). The rows are in the ledger already: a
    failure costs the next plan a full read."""
    try:
        read = ledger.keep_copy_current(destination, ahead=ahead)
    except (LedgerError, SQLAlchemyError, OSError) as exc:
        log.warning("sync %s: the cached copy of the pushed state was not renewed (%s); the next plan reads "
                    "the state in full", destination, type(exc).__name__)
        return
    if read:
        log.info("sync %s: %d pushed-state rows read back into the cached copy", destination, read)


def lost_in_destination(ledger: Ledger, plan: Plan, created: Sequence[str] | None,
                        before: Callable[[], Mapping[str, PushedState]], *,
                        lock: tuple[str, str] | None = None) -> tuple[list[str], set[tuple[str, str]]]:
    """What the destination's ``prepare`` is about to create again although the ledger says rfmsync pushed it
    to contacts (someone deleted a managed field, tag or list in the ESP): those contacts' values are gone there.
    The ledger forgets it for them at once, durably (:meth:`~sync.ledger.state.PushedStates.forget_lost`),
    before the create call (whether it then succeeds or not, the values are gone in the ESP; a create that
    succeeded before its forget would leave the ledger believing them pushed for good) and before this run's
    first write call, so the next plan, made from the ledger, sends it again to those still meant
    to have it (the consent rules as ever: a tag is only added to contacts the ESP holds); a process killed
    meanwhile changes nothing to that. ``before``: the pushed state of the plan's contacts (read only when the
    ledger holds what was created, before it forgets it): the holders this run sends it to again, or takes it
    from, lose nothing and are not counted. One line for each field or tag lost, saying what happens next; and
    the ``(kind, name)`` forgotten. ``lock``: the destination lock's ``(name, owner)``, confirmed in the
    forget's transaction (:class:`LockLostError` when another run took it)."""
    names = set(created or ()) & (set(plan.fields) | set(plan.managed_tags))
    fields = [n for n in plan.fields if n in names]
    tags = [t for t in plan.managed_tags if t in names]
    if not (fields and ledger.field_holders(plan.destination, fields)) and \
            not (tags and any(s.intersection(tags) for s in ledger.tag_set_counts(plan.destination))):
        return [], set()  # created for the first time (the usual case: nothing to wait for)
    state = before()
    # the holders this run takes a lost tag from are not meant to have it back: not remembered as waiting for it
    leaving = {(c.key, t) for c in plan.changes for t in c.remove_tags if t in names}
    held = ledger.forget_lost(plan.destination, fields, tags, lock=lock, leaving=leaving)
    forgotten = set(held)
    for c in plan.changes:  # the holders this run sends it to again, or takes it from (they lose nothing)
        prev = state.get(c.key)
        if prev is not None:
            for what in [("field", k) for k in c.set_fields if k in prev.fields] + \
                    [("tag", t) for t in c.add_tags | c.remove_tags if t in prev.tags]:
                if what in held:
                    held[what] -= 1
    return [f"{kind} {name!r} was missing in the destination and was created again, empty: the {n} contacts "
            f"rfmsync had pushed it to lost it there; the ledger no longer counts it as pushed to them, so the "
            f"next sync pushes it again to those still meant to have it"
            + (" (adding it again fires the ESP's automations on it: the ledger remembers them until it is given "
               "back, and the plan guards count it as a change for them: over max_change_pct, run "
               "`rfmsync sync --allow-mass-change`)"
               if kind == "tag" else "")
            for (kind, name), n in held.items() if n > 0], forgotten


def _without_lost(forgotten: set[tuple[str, str]], state: Mapping[str, PushedState]) -> Mapping[str, PushedState]:
    """The state the fold starts from once the ledger forgot what the ESP lost (:func:`lost_in_destination`):
    a contact this run touches must not get the lost field or tag written back as pushed."""
    fields = [name for kind, name in forgotten if kind == "field"]
    tags = [name for kind, name in forgotten if kind == "tag"]
    stripped = {}
    for key, prev in state.items():
        kept = prev.without(fields, tags)
        if kept is not prev:
            stripped[key] = kept
    return ChainMap(stripped, state) if stripped else state  # type: ignore[arg-type]


class _Summary:
    """The sync's one INFO line (a scheduled sync prints nothing else), logged when the apply ends, however it
    ends, once its run was started: ``sync <destination> <status>: …`` with the run's status (``failed`` when it
    stopped on an error: the lock lost, the ESP or the ledger failing; ``interrupted``: Ctrl-C, SIGTERM). A webhook
    resync's empty plan that recorded nothing logs none (every webhook batch plans every destination: a line each
    would be noise)."""

    def __init__(self, kind: str) -> None:
        self.kind, self.destination, self.empty, self.status = kind, "", False, "failed"
        self.counts: Mapping[str, Any] | None = None  # set once the run is started

    def __enter__(self) -> _Summary:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            self.status = "interrupted"  # (recorded so by ended_if_interrupted)
        c = self.counts
        if c is None or (self.kind == "webhook" and self.empty and not c["ledger_only"]):
            return
        kept = f", {c['kept_out']} kept out by the contacts' own choice in the ESP" if c.get("kept_out") else ""
        log.info("sync %s %s: %d changes, %d ok, %d failed, %d skipped, %d recorded in the ledger only (new owner)%s",
                 self.destination, self.status, c["planned"], c["ok"], c["failed"], c["skipped"], c["ledger_only"],
                 kept)


def _all(forgets: list[Callable[[], None]] | None) -> Callable[[], None] | None:
    """The forgets a re-plan handed back (:func:`execute_plan`), as one (None: none)."""
    todo = list(forgets or ())

    def forget() -> None:
        for f in todo:
            f()

    return forget if todo else None


def execute_plan(plan: Plan, client: Destination, ledger: Ledger, *, kind: str = "sync",
                 replan: Callable[[], Plan] | None = None, data: Mapping[str, Any] | None = None,
                 lock_ttl: float = LOCK_TTL, alone: bool = False,
                 fresh: Callable[[], bool] | None = None, forget: Callable[[], None] | None = None,
                 replanned_forgets: list[Callable[[], None]] | None = None) -> ApplyReport:
    """Apply one destination's plan under its ledger lock, recording each call's outcome as it completes.

    With ``replan``: once the lock is held, a ledger revision that moved since the plan was made (another run
    wrote this destination meanwhile) makes the plan stale; ``replan()`` gives the plan against the ledger as it
    is now (or raises), so an operation is never sent twice and older state is never pushed back. ``fresh``
    (with ``replan``): asked once the lock is held whether the plan's input is still the newest (a webhook resync:
    no later batch merged into the order store since it read it); when it says no, ``replan()`` too; and so when a
    run that ended without finishing since the plan was made left operations in flight the plan did not read as
    doubts (:func:`~sync.planning.doubt.unread_runs`: settled by this run, not the next).
    ``data``: counts of the input (orders, bad rows, customers) recorded with the run. ``lock_ttl``: the
    destination lock's time to live, refreshed every third of it while the apply runs (:class:`HeldLock`).
    Inside :func:`between_batches`, its check is made before the apply starts and between two batches.
    ``alone``: the plan is a held plan's consent withdrawals alone (:mod:`sync.planning.withdrawals`): it settles
    the lost-tag memory of its own contacts only, never of the contacts it leaves to the held plan.
    ``forget``: the ledger writes a plan of every contact leaves until it is applied (a sync's
    :attr:`~sync.planning.planner.PlannedDestination.forget`, a saved plan's moot upserts:
    :func:`~sync.planning.doubt.forget_moot_upserts`), made once the lock is held and the plan found current, before
    any ESP call; not once ``replan()`` was asked for (a sync's re-plan makes its own as it is accepted:
    :mod:`sync.run`, and so does its plan narrowed to the customers not merged since the read:
    :meth:`sync.store_moved.StoreRead.replan`): those a re-plan appends to ``replanned_forgets``, run in its place
    (after the in-flight doubts are pending and the stop check passed, as ``forget`` is)."""
    between = between_check()

    def checkpoint() -> None:
        held.check()
        if between is not None:
            between()

    with destination_lock(ledger, apply_lock(plan.destination), lock_ttl) as held, _Summary(kind) as summary, \
            ExitStack() as started:
        if replan is not None:
            now = ledger.state_counter(plan.destination)
            unread = unread_runs(ledger, plan)  # a run that died since the plan was made: its ops unread
            if fresh is not None and not fresh():
                log.info("sync %s: its input moved on while waiting: planning again", plan.destination)
                plan = replan()
                forget = _all(replanned_forgets)
            elif not plan.made_at(now):
                how = plan.moved_how(now)
                log.info("sync %s: the ledger moved while waiting (revision %d → %d%s): planning again",
                         plan.destination, plan.ledger_revision, now.revision, f", {how}" if how else "")
                plan = replan()
                forget = _all(replanned_forgets)
            elif unread:
                log.info("sync %s: run %s ended without finishing since the plan was made, its operations in "
                         "flight in doubt: planning again", plan.destination, ", ".join(map(str, unread)))
                plan = replan()
                forget = _all(replanned_forgets)
        if between is not None:
            between()  # stopped before the run starts: nothing to record
        # a full refresh's move: the ledger forgets the old audience's state (a first apply: records its target)
        move_if_planned(ledger, plan.destination, plan.pushed_to, (held.name, held.owner),
                        moves_from=plan.moves_from, moves_unknown=plan.moves_unknown)
        run_id = ledger.start_run(kind, plan.destination, data)  # a run killed: abandoned with its input counts
        counts = {**(data or {}), "planned": len(plan.changes), "skipped": len(plan.skipped), "ok": 0, "failed": 0,
                  "ledger_only": 0, "kept_out": 0,
                  **({"withdrawn_subscribed": len(plan.withdrawn_subscribed)} if plan.withdrawn_subscribed else {})}
        summary.destination, summary.empty, summary.counts = plan.destination, plan.is_empty, counts
        # Ctrl-C, SIGTERM: the run recorded ended at once, its operations in flight left in doubt (an error is
        # recorded below as it fails the run)
        started.enter_context(ended_if_interrupted(ledger, run_id, counts, INTERRUPTED))
        try:  # the ledger's writes before any ESP call; a failure fails the run (recorded)
            # what runs that ended without finishing left in flight is in doubt now (sync.ledger.inflight)
            ledger.doubt_in_flight(plan.destination, run_id, lambda keys: ledger.load_states(plan.destination, keys))
            earlier = earlier_sends(ledger, plan, client)  # its creates an earlier run's lost send may have made
            if forget is not None:  # (the guards passed, the plan is current)
                forget()
            # the contacts waiting for a tag the ESP lost that this plan no longer gives them (they left its
            # segment, or it is no longer mapped) wait no longer (a webhook resync's plan covers only its customers,
            # a withdrawals-alone plan only the withdrawn: the held plan gives the others their lost tags back)
            ledger.settle_lost(plan.destination, plan.ledger_revision,
                               lambda: {c.key: c.add_tags for c in plan.changes},
                               whole=kind != "webhook" and not alone,
                               lock=(held.name, held.owner))
            # the contacts whose customer id changed (Plan.owners) named first, so that a change whose calls all
            # fail still names its new customer (tags and fields stay those pushed: the next plan sends the change
            # again); those with nothing else to write (no ESP call) are counted as ledger_only, not as changes
            moved = ledger.record_owners(plan.destination, plan.owners, lock=(held.name, held.owner)) \
                if plan.owners else []
        except Exception as exc:
            ledger.finish_run(run_id, "failed", counts, error=str(exc))
            raise
        changed = {c.key for c in plan.changes} if moved else set()
        counts["ledger_only"] = sum(key not in changed for key in moved)
        errors: list[str] = []
        lost: list[str] = []  # what the destination lost since rfmsync pushed it (lost_in_destination)
        forgotten: set[tuple[str, str]] = set()  # and what the ledger forgot for it
        if plan.is_empty:
            ledger.finish_run(run_id, "succeeded", counts)
            summary.status = "succeeded"
            return ApplyReport(plan.destination, run_id, "succeeded", counts)
        early = ThreadPoolExecutor(max_workers=3, thread_name_prefix=f"rfmsync-prepare-{plan.destination}")
        started.push(shut_down(early))  # an interruption waits for none of its calls (prepare's, the ledger's)
        with gc_pause.paused_for(len(plan.changes)):
            # the adds (and creates) this run sends, written while it gets ready, durable before its first call;
            # forgotten once it ends normally (every call answered, its outcome in the ledger) or fails before its
            # first call: a run killed, failed or interrupted meanwhile leaves them, in doubt (sync.ledger.inflight)
            noted = early.submit(lambda: ledger.note_in_flight(plan.destination, run_id, in_flight_ops(plan.changes)))
            calling = False  # client.apply called: an add may be carried out whatever becomes of its answer
            # what its write calls carried, as the client reports them (None: a client that does not: all in doubt)
            dispatched = Dispatched() if getattr(client, "reports_dispatch", False) else None
            by_key = {c.key: c for c in plan.changes}
            # the pushed state of the contacts this plan touches, read while the first calls are out: the fold
            # needs it from the first outcome on (a read that fails fails the run there, like a crash: the
            # calls in flight are idempotent and planned again)
            loaded = early.submit(ledger.load_states, plan.destination, by_key)
            announced: set[str] = set()

            def creating(names: Sequence[str]) -> None:
                """``prepare`` is about to create these: what the ledger holds of them is forgotten first."""
                held.check()  # a lock lost while the destination was prepared: the ledger is not written
                new = [n for n in names if n not in announced]
                announced.update(new)
                found, gone = lost_in_destination(ledger, plan, new, loaded.result, lock=(held.name, held.owner))
                for line in found:
                    log.warning("sync %s: %s", plan.destination, line)
                lost.extend(found)
                forgotten.update(gone)

            # the ESP's setup calls (reading and creating fields and tags) run while the apply gets ready
            prepared = early.submit(client.prepare, plan.managed_tags, plan.fields, creating=creating)
            writer = OutcomeWriter(ledger, plan.destination, run_id, rows=True, changes=by_key)  # the ledger writes, group-committed
            fold = StateFold({}, by_key)  # a contact's state is written once its last operation answered
            loaded_into = [False]  # the read state is the fold's
            progress.advance(fold.done, total=len(by_key))  # contacts done / total on the display (the fold's)
            # the pages of the state the writer has written past, read while the calls run (the read-back's)
            ahead = ledger.read_ahead(plan.destination) if len(plan.changes) >= COPY_AFTER else None

            def on_results(results: Sequence[ItemResult]) -> None:
                if not results:  # a client's long read phase asks whether to go on (between its reads)
                    checkpoint()
                    return
                if not loaded_into[0]:
                    fold.state, loaded_into[0] = loaded.result(), True
                if not isinstance(results, CallResults):  # columns stay columns (sync.model.CallResults)
                    results = list(results)
                done = fold.done
                writer.submit(fold.rows(results), results)  # the ledger's rows, no state object a contact
                if fold.done > done:
                    progress.advance(fold.done - done)
                failed = failed_results(results)
                kept = len(kept_out_results(results))  # his own choice in the ESP: neither done nor a failure
                counts["ok"] += len(results) - len(failed) - kept
                counts["failed"] += len(failed)
                counts["kept_out"] += kept
                for r in failed[:max(0, 20 - len(errors))]:
                    errors.append(f"{r.key} {r.op}: {r.error}")
                checkpoint()  # the lock lost, a stop asked: this call's outcomes are recorded, no further call starts

            try:
                try:
                    creating(prepared.result() or ())  # created names it did not announce: forgotten now
                    if forgotten:  # the fold starts from the state the ledger now holds
                        fold.state, loaded_into[0] = _without_lost(forgotten, loaded.result()), True
                    errors += lost
                    checkpoint()  # a lock lost (a stop asked) while the destination was prepared: no write call
                    noted.result()  # the operations in flight are in the ledger before the first call goes
                    calling = True
                    extra = {} if dispatched is None else {"dispatching": dispatched}
                    client.apply(plan.changes, on_results, **extra, **({"earlier": earlier} if earlier else {}))
                    missing = fold.unanswered() if fold.done < len(by_key) else None
                    if missing:  # an operation nobody reported on is a failure, never counted as done
                        on_results(missing)
                except BaseException as exc:  # an interruption recorded at once, before the waits below: a second
                    if not isinstance(exc, Exception):  # signal during them ends the process, the run not running
                        record_interrupted(ledger, run_id, counts, INTERRUPTED, exc)
                    raise
                finally:
                    try:
                        writer.submit(fold.rest_rows(), [])  # the states held back, also when the apply failed
                        fold.close()  # its slots freed while the writer writes, not walked by the collector after
                    finally:
                        try:
                            writer.close()  # every outcome is in the ledger before the run is finished (or failed)
                        finally:  # also when the ledger's write failed: no thread left reading
                            if ahead is not None:
                                ahead.stop()
            except BaseException as exc:  # (an interruption is recorded by ended_if_interrupted)
                if not calling:  # stopped before its first write call: nothing it sent is in doubt
                    landed(ledger, plan.destination, run_id, noted)
                else:  # past it: only what its calls carried is in doubt (sync.dispatch)
                    narrowed(ledger, plan.destination, run_id, noted, plan.changes, dispatched)
                if isinstance(exc, Exception):
                    summary.status = "stopped" if isinstance(exc, RunStopped) else "failed"
                    ledger.finish_run(run_id, summary.status, counts, error=str(exc))
                raise
        # every operation answered (a failure too) and its outcome written: none is in flight any more (a run that
        # failed, was stopped or interrupted past its first call leaves them: the next apply finds what it recorded)
        landed(ledger, plan.destination, run_id, noted)
        status = "succeeded" if counts["failed"] == 0 and not lost else "partial"
        ledger.finish_run(run_id, status, counts, error="; ".join(errors[:5]) or None)
        summary.status = status
        if len(plan.changes) >= COPY_AFTER:
            _keep_copy_current(ledger, plan.destination, ahead)
        return ApplyReport(plan.destination, run_id, status, counts, errors, ledger_seconds=writer.busy_seconds,
                           ledger_wait_seconds=writer.wait_seconds, ledger_cpu_seconds=writer.cpu_seconds,
                           forgotten=frozenset(forgotten))


__all__ = ["COPY_AFTER", "LOCK_TTL", "ApplyReport", "HeldLock", "between_batches", "destination_lock", "execute_plan",
           "lost_in_destination"]
