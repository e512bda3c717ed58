"""Incremental resync: a few new orders/contacts → only the affected customers' segments → only their changes.

The path of one webhook batch (see :func:`resync`):

1. stage the records (and, for CRM "pull" hints, an incremental pull) and merge them into the order store
   (one short DuckDB connection; the store is a single-writer file);
2. re-score only the affected customers against the score cut points of the last *full* run
   (:func:`sync.ingest.load_cut_points`). Quantile cut points recomputed from a handful of customers would be
   meaningless, and recomputing them over everyone would let a single order reshuffle other customers'
   scores; so when no full run exists yet, a full segmentation is run and saved first;
3. plan every destination for those customers only: the pushed state handed to the planner (``last``) is
   their ledger rows, read by key (:meth:`~sync.ledger.state.PushedStates.load_state_of`), so nobody else can
   get a removal and a million-contact destination is not read;
4. check the plan guards (:mod:`sync.guards`; a webhook run never overrides them: a refusal records ``refused``
   runs and writes nothing but, when no withdrawal rule tripped, the consent withdrawals alone:
   :func:`sync.refusals.refuse_after_withdrawals`), then apply with :func:`sync.engine.execute_plan`, recorded as a
   run of kind ``webhook``; a destination whose ledger moved while waiting for its lock is planned again first,
   and so is one whose customers another batch merged into the store after this one read them (read again first:
   :func:`sync.serve.resync_store.read_again`; the batch that read first must not push its older state last; re-scored
   against a later full run's collapsed recency scores, it is refused as the first read would be).
   Only then are the customers' segments recorded in the segment history (:func:`sync.history.record_partial`):
   a refused resync records nothing.

Work is proportional to the affected customers, not to the shop: the store is read through its lookup
indexes (:mod:`sync.store.lookup`, built by the first resync after a bulk load), the segment history too (the
affected customers' record and recent moves, :mod:`sync.store.history_partial`), the ledger by key, and the
plan guards' managed-contact count is kept between resyncs (:mod:`sync.serve.managed`).
``ResyncReport.rows_read`` says what one resync read: store rows scanned (DuckDB's profiler,
:mod:`sync.serve.readcount`) plus ledger rows.

The canonical JSON form of records on the queue is :mod:`sync.ledger.codec`.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Callable, Collection, Iterator, Sequence

from connectors.records import Contact, Order

from ..config import Config, DestinationConfig
from ..destinations.registry import make_destination
from ..engine import ApplyReport, execute_plan
from ..errors import DestinationError, LockBusyError
from ..history import record_partial
from ..guards import recency_scores_line
from ..ledger import Ledger
from ..model import PushedState
from ..pipeline import today_in
from ..planning.kept_out import without_kept_out
from ..planning.doubt import doubt_left, in_doubt
from ..planning.plan import Plan, check_fields, desired_contacts, plan_destination
from ..planning.target import check_target
from ..planning.retired import retires_only
from ..refusals import HeldAgain, apply_alone, judge_replan, refuse, refuse_after_withdrawals
from ..settings import Settings
from ..store.ordering import Ages, Senders
from .managed import ManagedCounts
from .resync_scope import StoreReads, incremental_destination, shared_addresses  # what a resync plans
from .resync_staging import CLOCK_MARGIN, utcnow  # the staging side
from .resync_store import AFFECTED_TABLE, Affected, ResyncReport, read_again, store_step  # the store's side

log = logging.getLogger(__name__)
__all__ = ["AFFECTED_TABLE", "CLOCK_MARGIN", "MANAGED_COUNTS", "ResyncReport", "resync"]

#: the plan guards' managed-contact counts of this process, kept between resyncs
MANAGED_COUNTS = ManagedCounts()


# ------------------------------------------------------------------------------------------- resync


@dataclass
class _Planned:
    """One destination's incremental plan, the guard lines it trips, and the ledger rows it was made from."""

    plan: Plan
    client: Any
    lines: list[str]
    last: dict[str, PushedState]
    rows_read: int  # ledger rows read to make it
    lost: dict[str, frozenset[str]]  # the tags the ESP lost its contacts wait for (Ledger.lost_tags)
    #: of ``lines``, the withdrawal rules' (sync.guards.PlanVerdict): when any trips, its withdrawals wait too
    withdrawal_lines: tuple[str, ...] = ()
    generation: int = 0  # the store's generation of the customers' rows it was made from (Affected.generation)


def _plan_incremental(cfg: Config, dest: DestinationConfig, ledger: Ledger, settings: Settings,
                      affected: Affected) -> _Planned:
    """The plan of ``dest`` for the affected customers only, and the plan guards it trips (against all of the
    destination's managed contacts, a count kept between resyncs: :mod:`sync.serve.managed`)."""
    from ..guards import judge_plan, plan_stats

    dest = incremental_destination(dest)
    check_fields(dest)
    client = make_destination(dest, settings, required=True)
    desired, invalid = desired_contacts(affected.rows, dest)
    keys = affected.contact_keys | {d.key for d in desired}
    target = check_target(ledger, dest)  # a config pointed at another audience waits for a full refresh
    revision = ledger.state_revision(dest.name)
    last = ledger.load_state_of(dest.name, keys, affected.customer_ids)  # by key: never the whole destination
    reads = StoreReads()  # another card's no, an address shared with customers outside: read from the store
    desired, last, shared = shared_addresses(cfg, dest, desired, last, affected.customer_ids, affected.store_wait,
                                             reads, affected.as_of)
    affected.counted(reads.rows, reads.opens)
    for note in shared:  # a resync's plan is not printed: its notes would be seen nowhere
        log.info("webhook resync of %s: %s", dest.name, note)
    existing = None
    if dest.new_contacts == "skip" and client.reads_existing_members:
        existing = client.existing_members([d.key for d in desired])
    # his adds whose outcome is unknown (sync.planning.doubt): read by key, as the state (never the destination's)
    pending, read = ledger.doubts(dest.name, {d.key for d in desired} | set(last))  # (and the dead runs read)
    plan = plan_destination(dest, desired, last, revision=revision, existing=existing, skipped=invalid,
                            remote_checked=True, doubt=in_doubt(pending),
                            notes=[f"webhook resync of {len(affected.customer_ids)} customers", *shared])
    kept = ledger.kept_out_ops(dest.name, [c.key for c in plan.changes])  # his own choice: by key, as the state
    plan = replace(without_kept_out(plan, kept), pushed_to=target, in_flight_read=read)
    managed, counted = MANAGED_COUNTS.count(ledger, dest.name, plan.managed_tags, revision)
    lost = ledger.lost_tags(dest.name, {c.key for c in plan.changes})  # their tags the ESP lost, by key
    verdict = judge_plan(cfg.guards, plan_stats(plan, last, lost, managed=managed))  # (last: the plan's contacts)
    read = len(last) + counted + sum(map(len, kept.values())) + len(pending)
    return _Planned(plan, client, list(verdict.lines), last, read, lost, withdrawal_lines=verdict.withdrawal_lines,
                    generation=affected.generation)


@contextmanager
def _named(destination: str) -> Iterator[None]:
    """A destination's error names it (``exc.destination``): the worker's metrics, and its pause of a rate
    limited destination alone (:mod:`sync.serve.pauses`)."""
    try:
        yield
    except DestinationError as exc:
        exc.destination = destination  # type: ignore[attr-defined]
        raise


def _planned(cfg: Config, dest: DestinationConfig, ledger: Ledger, settings: Settings,
             affected: Affected) -> _Planned:
    with _named(dest.name):  # (its reads: the members a "skip" destination holds)
        return _plan_incremental(cfg, dest, ledger, settings, affected)


def _apply(cfg: Config, planned: _Planned, ledger: Ledger, settings: Settings, affected: Affected,
           report: ResyncReport, lock_wait: float, sleep: Callable[[float], None], *,
           data: dict[str, int] | None = None, alone: bool = False, managed_tags: Sequence[str] = ()) -> ApplyReport:
    """Apply one destination's plan; planned again under the lock (guards included) when another run moved
    the ledger while it waited. Then the managed-contact count moves by what the plan did. ``alone``: the plan is
    its withdrawals alone (the guards hold the rest: :func:`sync.refusals.refuse_after_withdrawals`), and so is a
    re-plan's, held by the withdrawal rules alone; its managed contacts are counted by ``managed``, the held plan's
    tags (the alone plan's are only those it takes off). A re-plan that trips other plan guards alone raises
    :class:`~sync.refusals.HeldAgain` (its withdrawals go out alone: :func:`resync`)."""
    name = planned.plan.destination
    final, managed = [planned], [managed_tags if alone else planned.plan.managed_tags]

    def replan() -> Plan:
        doubt_left(ledger, name)  # (under the lock: what a run left in flight is a dead run's, read as doubts)
        again = _plan_incremental(cfg, cfg.destination(name), ledger, settings, affected)
        report.ledger_rows_read += again.rows_read
        plan = judge_replan(again, again.plan, [f"{name}: {line}" for line in again.lines], again.withdrawal_lines,
                            alone=alone, ledger=ledger, kind="webhook")
        if alone:
            managed[0] = again.plan.managed_tags
        final[0] = replace(again, plan=plan)
        return plan

    def fresh() -> bool:  # read again now, or by an earlier destination's apply: planned from older rows
        if not read_again(cfg, settings, affected, report):
            return planned.generation == affected.generation
        if affected.collapse is not None:  # re-scored against a later full run's collapsed recency scores
            raise refuse(ledger, "webhook", [name], [recency_scores_line(affected.collapse, webhook=True)])
        return False

    with _named(name):  # fresh: under the lock, another batch's later merge has the customers read again first
        applied = _execute_waiting(planned.plan, planned.client, ledger, lock_wait, sleep, replan=replan,
                                   data=data, alone=alone, fresh=fresh)
    plan = final[0].plan
    if applied.forgotten:  # taken from holders beyond the plan's contacts: the count is counted again
        MANAGED_COUNTS.drop(ledger, name, managed[0])
    elif plan.changes or plan.owners:  # a new owner alone moves the revision, not the count
        keys = {c.key for c in plan.changes}
        after = ledger.load_state_of(name, keys) if keys else {}
        report.ledger_rows_read += len(after)
        before = {k: s for k, s in final[0].last.items() if k in keys}
        # only a forget (the branch above) adds lost tags: none waited before, none wait now
        lost_after = ledger.lost_tags(name, keys) if final[0].lost and keys else {}
        MANAGED_COUNTS.applied(ledger, name, managed[0], plan.ledger_revision, before, after,
                               ledger.state_revision(name), final[0].lost, lost_after)
    return applied


def _alone(cfg: Config, planned: _Planned, ledger: Ledger, settings: Settings, affected: Affected,
           report: ResyncReport, lock_wait: float, sleep: Callable[[float], None]) -> Callable[[], ApplyReport] | None:
    """The apply of ``planned``'s withdrawals alone (None: it has none)."""
    return apply_alone(planned.plan, lambda plan, **alone: _apply(
        cfg, replace(planned, plan=plan), ledger, settings, affected, report, lock_wait, sleep,
        managed_tags=planned.plan.managed_tags, **alone))


def _execute_waiting(plan, client, ledger: Ledger, lock_wait: float, sleep: Callable[[float], None],
                     replan: Callable[[], Plan] | None = None, data: dict[str, int] | None = None,
                     alone: bool = False, fresh: Callable[[], bool] | None = None) -> ApplyReport:
    deadline = time.monotonic() + lock_wait
    while True:
        try:
            return execute_plan(plan, client, ledger, kind="webhook", replan=replan, data=data, alone=alone,
                                fresh=fresh)
        except LockBusyError:
            if time.monotonic() >= deadline:
                raise
            log.debug("resync: %s is being synced by another process; waiting", plan.destination)
            sleep(0.5)


def resync(cfg: Config, ledger: Ledger, settings: Settings, orders: Sequence[Order] = (),
           contacts: Sequence[Contact] = (), *, pull: bool = False, as_of: date | None = None,
           destinations: Sequence[str] | None = None, store_wait_seconds: float = 60.0,
           lock_wait_seconds: float = 120.0, sleep: Callable[[float], None] = time.sleep,
           received_at: datetime | Ages | None = None, now: Callable[[], datetime] = utcnow,
           restored: Collection[str] = (), senders: Senders | None = None) -> ResyncReport:
    """Store the records, re-segment only the affected customers and push only their changes.

    ``received_at``: when the ledger accepted the records (the worker's batch: each record's own event,
    :data:`sync.store.ordering.Ages`), their age against the export files (:func:`sync.store.merge.merge_staged`);
    default: now. ``now``: the wall clock a pull's start is read from, the age of the records it pulls (the
    worker passes its own, the clock its events are dated by). ``restored``: the contacts whose version given
    follows their deletion (the worker's batch folded both: :attr:`~sync.serve.batches.Batch.restored`; a list
    holding the deletion then the version says so itself): stored as given, nothing kept of the stored row.
    ``senders``: who sent each record (the worker's batch: its event's source, :data:`sync.store.ordering.Senders`;
    default: one sender), whose clock its vendor time is.

    ``pull=True`` also pulls the configured CRM source incrementally (for deliveries that carry ids only).
    A destination being synced by another process is waited for up to ``lock_wait_seconds``.
    """
    started = time.monotonic()
    as_of = as_of or today_in(cfg.timezone)
    report = ResyncReport()
    affected = store_step(cfg, ledger, settings, orders, contacts, pull, as_of, report, store_wait_seconds,
                           received_at, now, restored, senders)
    if affected.customer_ids and affected.collapse is not None:  # a webhook run never overrides a guard either
        raise refuse(ledger, "webhook", destinations or [d.name for d in cfg.destinations],
                     [recency_scores_line(affected.collapse, webhook=True)])
    if affected.customer_ids:
        chosen = [cfg.destination(n) for n in destinations] if destinations else cfg.destinations
        # a destination that maps nothing (only retires) gives no one anything: its removals are the full sync's,
        # and planned here (its retired tags stripped: :func:`incremental_destination`) it would create contacts
        planned = [_planned(cfg, dest, ledger, settings, affected) for dest in chosen if not retires_only(dest)]
        report.ledger_rows_read += sum(p.rows_read for p in planned)
        lines = [f"{p.plan.destination}: {line}" for p in planned for line in p.lines]
        if lines:  # a webhook run never overrides a guard: the run is recorded refused, only withdrawals written
            withdrawals_held = any(p.withdrawal_lines for p in planned)  # a withdrawal rule tripped: all wait
            withdraw = [] if withdrawals_held else [(p.plan.destination, _alone(cfg, p, ledger, settings, affected, report,
                                                                    lock_wait_seconds, sleep)) for p in planned]
            raise refuse_after_withdrawals(ledger, "webhook", [p.plan.destination for p in planned], lines, withdraw)
        for p in planned:
            try:
                report.reports.append(_apply(cfg, p, ledger, settings, affected, report, lock_wait_seconds, sleep))
            except HeldAgain as again:  # the ledger moved meanwhile: by the same rule, the withdrawals alone
                name = p.plan.destination
                raise refuse_after_withdrawals(ledger, "webhook", [name], again.lines, [(name, _alone(
                    cfg, again.planned, ledger, settings, affected, report, lock_wait_seconds, sleep))]) from None
        record_partial(cfg, affected.segments, as_of, store_wait_seconds)  # after the guards and the apply only
    report.seconds = time.monotonic() - started
    stale = sum(report.stale.values())
    log.info("webhook resync: %d orders, %d contacts, %d customers, %d changes, %d rows read in %.2fs%s",
             report.orders, report.contacts, report.customers,
             sum(r.counts.get("planned", 0) for r in report.reports), report.rows_read, report.seconds,
             f" ({stale} stale versions left out)" if stale else "")
    return report
