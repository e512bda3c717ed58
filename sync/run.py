"""A full sync and the apply of a saved plan, with the guards (see :mod:`sync.guards`).

:func:`full_sync` is :func:`sync.api.run_sync` (``rfmsync sync``, the scheduler of ``rfmsync serve``);
:func:`apply_saved` is :func:`sync.api.apply` (``rfmsync apply``). Every guard is checked before the first ESP write: a refusal records one ``refused`` run
per destination (the reason as its error) and raises :class:`sync.errors.GuardRefusedError` (exit 6); when only
plan guards other than the withdrawal rules refused, the consent withdrawals go out alone first
(:func:`sync.refusals.refuse_after_withdrawals`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import date
from typing import Any, Callable, Mapping, Sequence

from connectors.errors import BadFileError
from segmentation.errors import interrupted_query

from . import progress as steps
from .config import Config
from .destinations.registry import make_destination
from .engine import ApplyReport, execute_plan
from .errors import (ConfigError, GuardRefusedError, LedgerError, LockBusyError, LockLostError, PlanStaleError,
                     RunStopped)
from .history import record_after_sync, snapshot
from .guards import (DataStats, believed_withdrawals, customer_drop_line, data_lines, judge_plan, plan_stats,
                     scoring_lines)
from .ingest import run_stats, segments_from_store
from .ledger import Ledger, RunHistory
from .ledger.statecache import Counter
from .pipeline import Reading, store_path, today_in
from .planning.consent_now import recheck_consent
from .planning.doubt import forget_moot_upserts, in_doubt
from .planning.plan import Plan
from .planning.plan_json import check_managed
from .planning.planner import PlannedDestination, plan_all, selected_destinations
from .planning.retired import removed_destinations
from .takeover import after_applies
from .planning.target import check_saved
from .refusals import HeldAgain, apply_alone, judge_replan, record_closed, refuse, refuse_after_withdrawals
from .store import STORE_LOCK
from .store_moved import StoreMovedUnknown, StoreRead
from .settings import Settings

log = logging.getLogger(__name__)

#: the warnings the last run without ``on_warnings`` (a ``serve`` schedule's) logged, by order store
_LOGGED: dict[str, frozenset[str]] = {}
_LOGGED_LOCK = threading.Lock()


def log_warnings(store: str, warnings: Sequence[str]) -> None:
    """A run's warnings where no one reads them but the log (a ``serve`` schedule): a WARNING each that the last
    such run of the store did not log, at INFO (``… (as at the last run)``) one it did: the same export's warning
    (codes without their zeros, a repeated order id) every interval would drown the new ones. A warning gone and
    back is a WARNING again."""
    with _LOGGED_LOCK:
        before = _LOGGED.get(store, frozenset())
        _LOGGED[store] = frozenset(warnings)
    for w in warnings:
        if w in before:
            log.info("%s (as at the last run)", w)
        else:
            log.warning("%s", w)


def require_destinations(cfg: Config) -> None:
    """``sync``, ``plan`` and ``apply`` need somewhere to sync to."""
    if not cfg.destinations:
        raise ConfigError(f"no [[destinations]] in {cfg.path or 'the config'}")


def customer_drop_lines(cfg: Config, ledger: RunHistory, stats: DataStats, destinations: Sequence[str]) -> list[str]:
    """``max_customer_drop_pct`` for each destination, against its last successful run's customer count (a run
    that sent withdrawals alone records none: :data:`sync.planning.withdrawals.ALONE`)."""
    if stats.customers is None:
        return []
    lines = []
    for name in destinations:
        last = ledger.last_run_counts(name, "customers")
        line = customer_drop_line(cfg.guards, stats.customers, last["customers"] if last else None, name)
        if line:
            lines.append(line)
    return lines


def guard_warnings(cfg: Config, ledger: Ledger, stats: DataStats, destinations: Sequence[str]) -> list[str]:
    """The data and scoring guards a run would trip, as warnings (``plan``, ``sync --dry-run``); the plan guards
    are in each plan's own warnings."""
    return data_lines(cfg.guards, stats) + customer_drop_lines(cfg, ledger, stats, destinations) + scoring_lines(stats)


def _plan_guard_lines(planned: Sequence[PlannedDestination]) -> list[str]:
    return [f"{p.plan.destination}: {line}" for p in planned for line in p.guard_lines]


def full_sync(cfg: Config, ledger: Ledger, settings: Settings, *, destinations: Sequence[str] | None = None,
              as_of: date | None = None, kind: str = "sync", allow_mass_change: bool = False,
              full_refresh: bool = False, reconcile: bool = False, full_pull: bool = False,
              on_warnings: Callable[[list[str]], None] | None = None,
              reading: Reading = Reading()) -> list[ApplyReport]:
    """Pull → segment → plan → guards → apply → record, for every (or the named) destination.

    The segment history is recorded once the guards accepted the run, even when a destination's apply
    failed; a run a guard refused records nothing. A destination whose apply fails does not stop the ones after
    it: each is applied, then the first failure is raised (the others are logged, every run is in the ledger).

    ``as_of`` defaults to today in the config's timezone. ``allow_mass_change`` overrides the plan guards for
    this run (never the data guards); scheduled and webhook runs never pass it. ``on_warnings`` receives the
    run's warnings (stale data, unfitted models, each plan's consent warnings) before any guard is judged;
    without it they are logged (scheduled runs: :func:`log_warnings`)."""
    require_destinations(cfg)
    names = [d.name for d in selected_destinations(cfg, destinations)]
    as_of = as_of or today_in(cfg.timezone)
    with STORE_LOCK:  # one DuckDB writer per process (the serve worker threads take turns with the scheduler)
        try:
            run = segments_from_store(cfg, ledger, settings, as_of=as_of, destinations=destinations,
                                      full=full_pull, guarded=True, reading=reading,
                                      allow_mass_change=allow_mass_change)
        except GuardRefusedError as exc:
            raise refuse(ledger, kind, names, exc.lines) from None
        except BadFileError as exc:  # an unusable export (empty, truncated, dates unreadable): exit 3, refused
            refuse(ledger, kind, names, [str(exc)])
            raise
        try:
            stats = run_stats(run)
            lines = data_lines(cfg.guards, stats) + customer_drop_lines(cfg, ledger, stats, names)
            with steps.step("planning"):
                try:
                    planned = plan_all(cfg, run, ledger, settings, destinations=destinations,
                                       full_refresh=full_refresh, reconcile=reconcile, remote=True,
                                       require_remote=True, forget_kept=True)
                except NOT_A_FAILED_RUN:
                    raise
                except Exception as exc:  # an ESP down or lying, a key refused: `rfmsync runs` shows it failed
                    if not interrupted_query(exc):  # (Ctrl-C, SIGTERM inside a DuckDB statement: no failure)
                        _record_unplanned(ledger, kind, names, exc)
                    raise
            warnings = [*run.warnings, *(f"{p.plan.destination}: {w}" for p in planned for w in p.plan.warnings
                                         if not w.startswith("guard ")), *removed_destinations(cfg, ledger)]
            segments_now = snapshot(run)  # recorded in the segment history once the apply ran
            read = StoreRead.taken(cfg, run.con)  # a resync merging after it: its customers are its own
        finally:
            run.close()
    try:
        if warnings:
            if on_warnings is not None:
                on_warnings(warnings)
            else:
                log_warnings(str(store_path(cfg)), warnings)
        suspect = bool(lines)  # a data guard: the source itself is suspect, its withdrawals too
        if not allow_mass_change:
            scoring = scoring_lines(stats)
            suspect = suspect or bool(scoring) or any(p.withdrawal_lines for p in planned)
            lines += scoring + _plan_guard_lines(planned)
        if lines:  # only plan guards but the withdrawal rules: the withdrawals go out alone, the rest is held
            withdraw = [] if suspect else [(p.plan.destination, _withdraw(p, ledger, kind, stats)) for p in planned]
            raise refuse_after_withdrawals(ledger, kind, names, lines, withdraw, stats.counts())
        reports, failed = [], []
        for i, p in enumerate(planned):  # one destination failing (a vendor down, a revoked key) keeps no other stale
            try:
                try:
                    later: list[Callable[[], None]] = []  # a re-plan's forgets, run by the apply in their turn
                    replan = read.replan(p.plan, ledger, _guarded_replan(p, ledger, kind, allow_mass_change, stats,
                                                                         later=later),
                                         cfg.destination(p.plan.destination).retire_tags, p.forget, later=later)
                    reports.append(_execute(p.plan, p.client, ledger, kind=kind, data=stats.counts(), replan=replan,
                                            fresh=read.fresh, forget=p.forget, replanned_forgets=later))
                except HeldAgain as again:  # the re-plan's withdrawals alone, the rest refused
                    alone = [(p.plan.destination, _withdraw(again.planned, ledger, kind, stats))]
                    raise refuse_after_withdrawals(ledger, kind, [p.plan.destination], again.lines, alone,
                                                   stats.counts()) from None
                except StoreMovedUnknown as exc:  # an unnoted store write since the read: withdrawals alone, exit 5
                    held = refuse_after_withdrawals(ledger, kind, [p.plan.destination], [str(exc)],
                                                    [(p.plan.destination, _withdraw(p, ledger, kind, stats))],
                                                    stats.counts())
                    raise StoreMovedUnknown("\n".join(held.message_lines)) from None
            except Exception as exc:  # recorded as a failed run by the engine (or refused by a re-plan's guard)
                if interrupted_query(exc):  # Ctrl-C, SIGTERM inside a DuckDB statement (the store's check under the
                    raise  # lock): interrupted, no further destination starts
                failed.append(exc)
                if isinstance(exc, RunStopped):  # a stop asked for (SIGTERM): no further destination starts
                    break
                if len(planned) > 1:  # stderr: the command's own error line names only the first failure
                    log.error("destination %r failed: %s%s", p.plan.destination, exc,
                              "; going on with the others" if i < len(planned) - 1 else "")
        after_applies(cfg, ledger, reports)  # a renamed destination takes over its old name's rows; a retired one ends
        # the guards accepted the data: its segments are a fact about the shop whatever a destination did (a failed
        # destination's move tags are planned again next run, while their transition_days last)
        record_after_sync(cfg, segments_now, as_of)
        if failed:  # the first one's exit code; every destination's outcome is in `rfmsync runs`
            # the others too: the scheduler asks whether any of them may pass if run again soon
            failed[0].other_failures = failed[1:]  # type: ignore[attr-defined]
            raise failed[0]
        return reports
    finally:
        read.release()  # a full refresh after the sync's applies compares nothing (sync.store.reads)


#: errors of the planning step that are not a failed run: a stop asked for, a guard's refusal (it records its own),
#: the ledger itself failing (nothing can be recorded in it), another run holding a lock
NOT_A_FAILED_RUN = (RunStopped, GuardRefusedError, LedgerError, LockBusyError, LockLostError)


def _record_unplanned(ledger: Ledger, kind: str, names: Sequence[str], exc: Exception) -> None:
    """A sync that failed before its plans were made (the ESP's check or read failed: down, an HTML page, a key
    refused, a config the ESP's fields refuse) records one ``failed`` run per destination of the run, nothing
    written to any, so that ``rfmsync runs`` does not keep showing the last good sync as the latest (a cron job
    watched through it would miss an outage of days). The error's text is the one the command prints."""
    error = f"failed before any ESP write (planning): {str(exc) or type(exc).__name__}"
    try:
        record_closed(ledger, kind, names, "failed", error)
    except Exception as again:  # the run's own error is the one to raise; this one is logged
        log.error("could not record the failed %s run: %s", kind, again)


def _execute(plan: Plan, client: Any, ledger: Ledger, **options: Any) -> ApplyReport:
    """:func:`execute_plan` under a progress step (contacts done / total, calls, retries waiting)."""
    with steps.step(f"applying {plan.destination}", total=len(plan.changes), unit="contacts"):
        return execute_plan(plan, client, ledger, **options)


def _guarded_replan(planned: PlannedDestination, ledger: Ledger, kind: str, allow_mass_change: bool,
                    stats: DataStats, *, alone: bool = False,
                    later: list[Callable[[], None]] | None = None) -> Callable[[], Plan] | None:
    """The re-plan under the lock, held to the plan guards like the first plan (:func:`judge_replan`)."""
    def again() -> Plan:
        fresh = planned.replan()  # type: ignore[misc]
        guarded = not allow_mass_change
        plan = judge_replan(fresh, fresh.plan, _plan_guard_lines([fresh]) if guarded else (),
                            fresh.withdrawal_lines if guarded else (), alone=alone, ledger=ledger, kind=kind,
                            counts=stats.counts())
        if fresh.forget is not None and not alone and later is not None:  # accepted, applied whole: what it no
            later.append(fresh.forget)  # longer wants forgotten, by the apply after the in-flight doubts are pending
        return plan

    return again if planned.replan is not None else None


def _withdraw(planned: PlannedDestination, ledger: Ledger, kind: str, stats: DataStats
              ) -> Callable[[], ApplyReport] | None:
    """The apply of ``planned``'s withdrawals alone (None: it has none); a re-plan under the lock (the ledger
    moved while it waited) is held by the withdrawal rules alone, and sends the new plan's withdrawals alone."""
    replan = _guarded_replan(planned, ledger, kind, False, stats, alone=True)
    return apply_alone(planned.plan, lambda plan, **alone: _execute(plan, planned.client, ledger, kind=kind,
                                                                     replan=replan, **alone))


def apply_saved(cfg: Config, plans: Sequence[Plan], ledger: Ledger, settings: Settings, *,
                data: Mapping[str, int] | None = None, allow_mass_change: bool = False,
                ledger_id: str | None = None, as_of: date | None = None,
                on_warnings: Callable[[list[str]], None] | None = None) -> list[ApplyReport]:
    """Apply exactly a saved plan; refuse when the ledger changed since it was made (exit 5), when it touches a
    tag, list or field the config does not manage (exit 2: a plan edited by hand, or made from another config), or
    when a guard trips: the data guards on the counts saved with the plan, the plan guards against the ledger as it is now.
    The consent of those it subscribes (or tags under ``skip``) is read again from the order store first: a change
    it no longer allows is left out (:mod:`sync.planning.consent_now`; ``as_of``: the plan's, which cards count),
    told to ``on_warnings`` (else logged)."""
    require_destinations(cfg)
    for plan in plans:
        # an unknown destination is a config error before anything else, and so is one pointed elsewhere since
        check_saved(ledger, cfg.destination(plan.destination), plan)
        now = ledger.state_counter(plan.destination)
        if not plan.made_at(now):
            # a restore the plan proves (the counter of its epoch behind it, or its revision written again) is
            # told and given a new epoch now, as the next plan or save would
            ledger.saved_plan_restored(plan.destination, Counter(plan.ledger_revision, plan.ledger_epoch,
                                                                 plan.ledger_token))
            raise _stale(plan, now)
    # after the revisions: a ledger put back from a copy older than its id is a restore (exit 5), not another ledger
    check_ledger_id(ledger, plans, ledger_id)
    for plan in plans:
        check_managed(cfg.destination(plan.destination), plan)  # never a tag, list or field the config leaves alone
    plans, left = recheck_consent(cfg, plans, store_path(cfg), as_of)  # a consent withdrawn since: left out
    if left:
        if on_warnings is not None:
            on_warnings([lo.line() for lo in left])
        else:
            for lo in left:
                log.warning("%s", lo.line())
    names = [p.destination for p in plans]
    lines: list[str] = []
    counts: dict[str, int] = dict(data or {})
    if data:
        stats = DataStats.from_counts(data)
        lines += data_lines(cfg.guards, stats) + customer_drop_lines(cfg, ledger, stats, names)
        if not allow_mass_change:
            lines += scoring_lines(stats)
    suspect, judged_plans = bool(lines), []  # a data or scoring guard holds everything
    if not allow_mass_change:
        for plan in plans:
            # a withdrawal only when the plan's change is one, by the planners' test, under the destination's
            # new_contacts now (a key added to "withdrawn" by hand, or a destination switched from skip: a removal),
            # and one the stats count as such (managed tags before, none after): the only keys sent alone
            state = ledger.load_state(plan.destination)
            listed = frozenset(plan.withdrawn)  # the tags they may hold (sync.planning.doubt): read by key
            doubt = in_doubt(ledger.doubted_ops(plan.destination, listed)) if listed else {}
            judged = replace(plan, withdrawn=believed_withdrawals(
                plan, cfg.destination(plan.destination).new_contacts, state, doubt))
            verdict = judge_plan(cfg.guards, plan_stats(judged, state, ledger.lost_tags(plan.destination)))
            lines += [f"{plan.destination}: {line}" for line in verdict.lines]
            suspect = suspect or bool(verdict.withdrawal_lines)
            judged_plans.append(judged)
    if lines:  # only plan guards but the withdrawal rules: the believed withdrawals go out alone
        withdraw = [] if suspect else [(j.destination, _withdraw_saved(cfg, j, ledger, settings))
                                       for j in judged_plans]
        raise refuse_after_withdrawals(ledger, "apply", names, lines, withdraw, counts)
    reports = []
    for plan in plans:
        client = make_destination(cfg.destination(plan.destination), settings, required=True)
        # the plan of every contact is applied (as a sync's): a failed upsert it no longer makes is moot (forgotten
        # under the lock, once the plan is found current)
        reports.append(_execute(plan, client, ledger, kind="apply", data=counts, forget=_moot(ledger, plan),
                                replan=lambda plan=plan: _raise_stale(plan, ledger)))
    after_applies(cfg, ledger, reports)
    return reports


def _moot(ledger: Ledger, plan: Plan) -> Callable[[], None]:
    """A saved plan's ``forget`` (:func:`execute_plan`): the failed upserts it no longer makes."""
    return lambda: forget_moot_upserts(ledger, plan.destination, plan, ledger.doubted_ops(plan.destination))


def check_ledger_id(ledger: Ledger, plans: Sequence[Plan], saved: str | None) -> None:
    """A saved plan is applied only to the ledger it was made against (its file's ``ledger_id``): applied to
    another config's ledger, one shop's contacts would be pushed into the other's audience. A plan file without
    it (an older rfmsync) is judged by its revisions as before, but refused for a destination this ledger never
    wrote (nothing then tells which ledger, or shop, it was made for). A ledger without an id (put back from a copy
    taken before it had one) is not another ledger when it wrote every destination of the plan: the revisions,
    checked first, judged the plan (a never-written one tells nothing: another shop's, refused)."""
    held = ledger.ledger_id()
    mine = held or ledger.ledger_id(create=True)
    written = all(ledger.state_counter(p.destination).epoch is not None for p in plans)
    if saved is not None and saved != mine and (held is not None or not written):
        raise ConfigError(f"this plan was made against another ledger (ledger_id {saved}; this config's ledger is "
                          f"{mine}): a plan saved with another config, or against another copy of the ledger, is "
                          f"not applied here; make a new plan with this config")
    if saved is None:
        fresh = [p.destination for p in plans if ledger.state_counter(p.destination).epoch is None]
        if fresh:
            raise ConfigError(f"this plan file names no ledger (saved by an rfmsync before plans recorded "
                              f"ledger_id, or not by `rfmsync plan -o`) and this ledger never wrote destination "
                              f"{fresh[0]!r}: nothing tells that the plan was made for this shop; make a new plan "
                              f"with `rfmsync plan -o FILE`")


def _withdraw_saved(cfg: Config, judged: Plan, ledger: Ledger, settings: Settings
                    ) -> Callable[[], ApplyReport] | None:
    """The apply of a saved plan's believed withdrawals alone (None: it has none); stale if the ledger moved."""
    return apply_alone(judged, lambda plan, **alone: _execute(
        plan, make_destination(cfg.destination(plan.destination), settings, required=True), ledger, kind="apply",
        replan=lambda: _raise_stale(judged, ledger), **alone))


def _stale(plan: Plan, now: Counter) -> PlanStaleError:
    how = plan.moved_how(now)
    epoch = f", {how}" if how else ""
    return PlanStaleError(f"the ledger of destination {plan.destination!r} changed since this plan was made "
                          f"(revision {plan.ledger_revision} → {now.revision}{epoch}: another run wrote to it, or "
                          f"what it held was forgotten or moved); make a new plan")


def _raise_stale(plan: Plan, ledger: Ledger) -> Plan:
    """``apply`` never re-plans: a ledger that moved while it waited for the lock makes the saved plan stale."""
    raise _stale(plan, ledger.state_counter(plan.destination))
