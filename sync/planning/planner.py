"""Planning every destination of a config: segments + ledger (+ what the ESP reports, when it can be read)
→ one :class:`~sync.planning.plan.Plan` per destination, with its guard lines.

The ESP is read only through what a destination declares it can do (``reads_existing_members``,
``reconciles``; see :class:`sync.destinations.base.Destination`), never by probing it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import duckdb

from connectors.email_phone import lower_like_sql

from ..config import Config, DestinationConfig
from ..destinations.base import Destination
from ..destinations.registry import make_destination
from ..errors import DestinationError
from ..guards import PlanVerdict, judge_plan
from ..ledger.bulk import state_schema
from ..ledger.state_rows import unreadable_row
from ..model import PushedState
from .columnar import LEDGER, columnar_plan_stats, plan_columnar, reconcile_pushed, stage_pushed
from .adopted import adopted_warnings
from .kept_out import forget_unwanted, without_kept_out
from .doubt import doubt_left, forget_moot_upserts, in_doubt
from .plan import Plan, check_fields
from .retired import (given_tags, holds_nothing, left_behind, left_behind_warning, managed_beside, retired_as_held,
                      retiring)
from .retired_fields import clear_retired, field_names, left_fields, left_fields_warning
from .replanned import leave_written
from .rows import CustomerRows, stage_dicts, stage_segments
from .target import moved_note, planned_target
from .transitions import moves_sql, transition_tags_sql
from .withdrawals import alone_note
from .withdrawn import withdrawn_subscribed, withdrawn_warning
from .values import PREDICTIVE_VALUES, column_of

if TYPE_CHECKING:
    from datetime import datetime

    from ..ledger import Ledger
    from ..ledger.statecache import Counter
    from ..pipeline import SegmentsRun
    from ..settings import Settings


#: a query of extra desired (customer_id, tag) rows of a destination (tags besides the segment's), or None
ExtraTags = Callable[[DestinationConfig], "str | None"]


def staged_rows(run: "SegmentsRun", destinations: Iterable[DestinationConfig] | None = None) -> CustomerRows:
    """The rows destinations are planned from, staged in a private DuckDB (see :mod:`sync.planning.rows`):
    only the columns the ``destinations``' fields read (every column when None)."""
    columns = None if destinations is None else field_columns(destinations)
    return stage_segments(run.con, run.result.table, columns)


def field_columns(destinations: Iterable[DestinationConfig]) -> list[str]:
    """The segments-table columns the destinations' mapped fields read."""
    return sorted({column_of(v) for d in destinations for v in d.fields.values()})


def selected_destinations(cfg: Config, names: Iterable[str] | None) -> list[DestinationConfig]:
    """The named destinations (every one when ``names`` is empty); an unknown name is a ConfigError."""
    if not names:
        return list(cfg.destinations)
    return [cfg.destination(n) for n in names]


def needs_predictions(cfg: Config, names: Iterable[str] | None) -> bool:
    """Whether a selected destination maps a predictive or behavioural value to a field."""
    return any(v in PREDICTIVE_VALUES for d in selected_destinations(cfg, names) for v in d.fields.values())


@dataclass
class PlannedDestination:
    plan: Plan
    client: Destination | None
    #: the plan guards this plan trips against the ledger it was made from (also in ``plan.warnings``)
    guard_lines: tuple[str, ...] = ()
    #: plan this destination again from the same segments against the ledger as it is now (sync re-plans
    #: under the destination's lock when another run moved the ledger while it waited)
    replan: Callable[[], "PlannedDestination"] | None = None
    #: of ``guard_lines``, the withdrawal rules' (:class:`sync.guards.PlanVerdict`): while none trips in a run,
    #: a run refused by the other plan guards still takes the withdrawn contacts' managed tags off
    withdrawal_lines: tuple[str, ...] = ()
    #: a plan to apply (``forget_kept``): what the ledger forgets once the plan is applied, not before its guards
    #: passed (a refused sync forgets nothing): the kept-out operations and the failed upserts it no longer wants
    #: (:func:`~sync.planning.kept_out.forget_unwanted`, :func:`~sync.planning.doubt.forget_moot_upserts`); made
    #: by :func:`sync.engine.execute_plan` under the destination's lock, or by the re-plan that replaces it
    forget: Callable[[], None] | None = None


def plan_all(cfg: Config, run: "SegmentsRun", ledger: "Ledger", settings: "Settings", *,
             destinations: Sequence[str] | None = None, full_refresh: bool = False, reconcile: bool = False,
             remote: bool = True, require_remote: bool = False, extra_tags: ExtraTags | None = None,
             forget_kept: bool = False) -> list[PlannedDestination]:
    """Plan every (or the named) destination. Reads the ESP only when credentials are set and ``remote``.
    ``forget_kept``: the plans are to be applied (a sync): the kept-out operations and failed upserts no longer
    wanted are forgotten when a plan is applied (:attr:`PlannedDestination.forget`); a dry run (``plan``) writes
    nothing to the ledger.

    ``extra_tags(dest)``: a query of extra desired ``(customer_id, tag)`` rows for a destination (tags besides
    the mapped segment's, e.g. transition tags; they must be among ``all_managed(dest)``)."""
    dests = selected_destinations(cfg, destinations)
    rows = staged_rows(run, dests)
    if extra_tags is None:
        extra_tags = transition_extra(run, rows)
    out = []
    for dest in dests:
        check_fields(dest)
        client = make_destination(dest, settings, required=require_remote) if remote else None
        unchecked = remote_unchecked(client, require_remote)
        out.append(plan_one(cfg, dest, rows, ledger, client, unchecked, full_refresh=full_refresh,
                            reconcile=reconcile, extra_tags=extra_tags(dest) if extra_tags else None,
                            forget_kept=forget_kept))
    return out


def transition_extra(run: "SegmentsRun", rows: CustomerRows) -> ExtraTags | None:
    """The destinations' transition tags as extra desired rows (:mod:`sync.planning.transitions`): each
    customer's latest segment move (read from the run's store, copied next to the staged rows), matched
    against ``[destinations.transitions]``; None without moves."""
    moves = moves_sql(run)
    if moves is None:
        return None
    rows.con.register("_moves_arrow", run.con.sql(moves).to_arrow_table())
    try:
        rows.con.execute("CREATE OR REPLACE TABLE _plan_moves AS SELECT * FROM _moves_arrow")
    finally:
        rows.con.unregister("_moves_arrow")
    return lambda dest: transition_tags_sql(dest, "SELECT * FROM _plan_moves")


def plan_one(cfg: Config, dest: DestinationConfig, rows: CustomerRows | Sequence[Mapping[str, Any]],
             ledger: "Ledger", client: Destination | None, unchecked: str | None, *, full_refresh: bool,
             reconcile: bool, extra_tags: str | None = None, since: int | None = None,
             since_read: tuple[Counter, datetime] | None = None, forget_kept: bool = False) -> PlannedDestination:
    """:func:`_plan_one`; a pushed-state row whose tags or fields text is not JSON (a DuckDB error where the plan
    reads it) is a :class:`~sync.errors.LedgerError` naming the destination and the contact, as the state reads'."""
    rows = rows if isinstance(rows, CustomerRows) else stage_dicts(rows)
    try:
        return _plan_one(cfg, dest, rows, ledger, client, unchecked, full_refresh=full_refresh, reconcile=reconcile,
                         extra_tags=extra_tags, since=since, since_read=since_read, forget_kept=forget_kept)
    except duckdb.InvalidInputException as exc:
        try:
            bad = rows.con.execute(f"SELECT key FROM {LEDGER} WHERE NOT (json_valid(tags_json) AND json_valid(fields))"
                                   " ORDER BY key LIMIT 1").fetchall()
        except duckdb.Error:
            bad = []
        if not bad:
            raise
        raise unreadable_row(dest.name, bad[0][0], exc) from None


def _plan_one(cfg: Config, dest: DestinationConfig, rows: CustomerRows,
              ledger: "Ledger", client: Destination | None, unchecked: str | None, *, full_refresh: bool,
              reconcile: bool, extra_tags: str | None = None, since: int | None = None,
              since_read: tuple[Counter, datetime] | None = None, forget_kept: bool = False) -> PlannedDestination:
    """One destination's plan from the customer rows, its ledger state and (when ``client`` was reached) the
    ESP's view: ``reconcile`` reads the managed tags' members, ``skip``/``full_refresh`` who already exists.

    The ledger's pushed state is read in bulk into the rows' DuckDB and joined there
    (:mod:`sync.planning.columnar`); only changed contacts come back as Python objects. ``since``: a re-plan of
    a plan made at that ledger revision: the contacts another run wrote after it are left out
    (:func:`~sync.planning.replanned.leave_written`); ``since_read``: that plan's counter and when it was read,
    which name them too when the ledger was restored from a backup since (:meth:`Ledger.written_since`)."""
    notes = []
    # the ledger's state is of this audience; or a full refresh moves it here from ``moved_from``: planned as for a
    # new destination
    target, moved_from = planned_target(ledger, dest, full_refresh=full_refresh)
    read_at = ledger.ledger_now()  # (a save after a restore since is later: :meth:`Ledger.written_since`)
    counter = ledger.state_counter(dest.name)  # read before the state: a later write only makes it stale
    revision = counter.revision
    if moved_from is None:
        state = ledger.state_parts(dest.name)  # a cached copy and the rows written since (or the full read)
        stage_pushed(rows.con, state.base, state.changed)
    else:
        stage_pushed(rows.con, state_schema().empty_table())
        notes.append(moved_note(dest, moved_from))
    existing, reconciled_read = None, None
    if client is not None and unchecked is None:
        if reconcile:
            if not client.reconciles:
                raise DestinationError(f"destination {dest.name!r}: --reconcile is not supported for "
                                       f"{dest.spec.label} (it cannot list the members of a tag or list)")
            read = reconciled_tags(dest)  # not the retired: only the ledger says whom rfmsync gave them to
            reconcile_pushed(rows.con, client.read_managed(read), read)
            reconciled_read = read
        if (dest.new_contacts == "skip" or full_refresh) and client.reads_existing_members:
            existing = client.existing_members(rows.desired_keys())  # full refresh: repairs drift
    elif client is None:
        notes.append("planned against the ledger alone (no credentials set): the ESP was not read")
    held = field_names(rows.con)  # the staged state's field names: read once, for left_fields and clear_retired
    fields_left = left_fields(rows.con, dest, held)
    # the adds whose outcome is unknown (pending failures, a killed run's in flight: the runs read recorded): he may
    # hold those tags (a move: none read, the old audience's are forgotten with it); a re-plan holds the lock
    if since is not None and moved_from is None:
        doubt_left(ledger, dest.name)
    pending, read = ledger.doubts(dest.name) if moved_from is None else ([], None)
    doubt = in_doubt(pending)
    # retire_tags named as the ESP holds them (Mailchimp: whatever the case); the tags it neither gives nor retires
    configured, given = dest, left_behind(rows.con, dest.model_copy(update={"retire_tags": []}), doubt)
    dest, tags_left = retired_as_held(dest, given)
    behind = tuple(w for w in (left_behind_warning(dest, tags_left, cfg.destinations),
                               left_fields_warning(dest, fields_left, cfg.destinations)) if w)
    shared = rows.shared_note()
    if shared is not None:
        notes.append(shared)
    plan = plan_columnar(rows, dest, revision=revision, existing=existing, full_refresh=full_refresh,
                         remote_checked=client is not None and unchecked is None, notes=notes,
                         extra_tags=extra_tags, doubt=doubt)
    forget = None
    if moved_from is None and not full_refresh:  # what the contacts' own choice in the ESP keeps out: not asked
        kept = ledger.kept_out_ops(dest.name)  # again (a full refresh asks it again); what he left is forgotten
        if forget_kept:  # a plan to apply (not a dry run), once applied: re-entering, he is read once more
            forget = _forgets(ledger, dest.name, plan, kept, pending)
        plan = without_kept_out(plan, kept)
    if since is not None and moved_from is None:  # a re-plan from this run's rows: not over a later run's
        made, at = since_read or (None, None)
        plan = leave_written(plan, ledger.written_since(dest.name, since, made, at), since, dest.retire_tags)
    plan = clear_retired(rows.con, dest, plan, held)  # retire_fields: the values rfmsync wrote there, cleared
    # retire-only: no create, and said when it is finished (what another destination there manages is not left)
    plan = retiring(rows.con, dest, plan, fields_left, managed_beside(cfg.destinations, dest), doubt)
    # a plan without changes removes and changes nothing: no plan guard can trip (and counting the managed
    # contacts is a scan of the whole pushed state)
    lost = ledger.lost_tags(dest.name) if moved_from is None else {}  # (a move forgets the old audience's)
    stats = columnar_plan_stats(rows.con, plan, lost) if plan.changes else None
    verdict = judge_plan(cfg.guards, stats) if stats is not None else PlanVerdict()
    lines, withdrawals = verdict.lines, verdict.withdrawal_lines
    adopted = tuple(adopted_warnings(rows.con, plan.changes, reconciled_read)) if reconciled_read else ()
    # rfmsync subscribed them, the source now says no: said (their status is never changed)
    still = withdrawn_subscribed(rows.con, ledger, dest.name) if moved_from is None else ()
    said = (withdrawn_warning(dest, still),) if still else ()
    warnings = ((unchecked,) if unchecked is not None else ()) + behind + adopted + said + lines
    note = alone_note(plan) if lines and not withdrawals else None  # what a refused sync still sends
    alone = (note,) if note else ()
    plan = replace(plan, warnings=(*plan.warnings, *warnings), guard=stats, notes=(*plan.notes, *alone),
                   withdrawn_subscribed=still,
                   pushed_to=None if moved_from is None and holds_nothing(rows.con, dest, plan) else target,
                   moves_from=moved_from, ledger_epoch=counter.epoch, ledger_token=counter.token,
                   in_flight_read=read)
    return PlannedDestination(plan, client, lines, replan=lambda: plan_one(
        cfg, configured, rows, ledger, client, unchecked, full_refresh=full_refresh, reconcile=reconcile,
        extra_tags=extra_tags, since=revision, since_read=(counter, read_at), forget_kept=forget_kept),
        withdrawal_lines=withdrawals, forget=forget)


def _forgets(ledger: "Ledger", destination: str, plan: Plan, kept: Mapping[str, frozenset[str]],
             pending: Sequence[tuple[str, str]]) -> Callable[[], None]:
    """:attr:`PlannedDestination.forget` of ``plan`` (of every contact, before its kept-out operations are left
    out): the kept-out rows and the failed upserts (``pending``, :mod:`sync.planning.doubt`) it no longer wants."""
    def forget() -> None:
        forget_unwanted(ledger, destination, plan, kept)
        forget_moot_upserts(ledger, destination, plan, pending)

    return forget


def remote_unchecked(client: Destination | None, require_remote: bool) -> str | None:
    """``client.check()`` (read-only); a warning "remote not checked: …" when the ESP could not be reached or
    refused the credentials (re-raised when the remote is required, as for ``sync``)."""
    if client is None:
        return None
    try:
        client.check()
    except DestinationError as exc:
        if require_remote:
            raise
        return f"remote not checked: {exc}"
    return None


def reconciled_tags(dest: DestinationConfig) -> list[str]:
    """The tags ``--reconcile`` reads the members of: the managed ones but the retired (``retire_tags``), whose
    members the ESP lists whoever tagged them."""
    return given_tags(dest)


def reconciled(last: dict[str, PushedState], actual: dict[str, set[str]], managed: Sequence[str]
               ) -> dict[str, PushedState]:
    """Replace the ledger's view of managed tags with what the ESP really holds (repairs drift)."""
    members: dict[str, set[str]] = {}
    for tag, emails in actual.items():
        for e in emails:
            members.setdefault(lower_like_sql(e), set()).add(tag)  # the key rfmsync gives it everywhere
    out = {}
    for key in set(last) | set(members):
        prev = last.get(key)
        unmanaged = (prev.tags - set(managed)) if prev else frozenset()
        out[key] = PushedState(key=key, customer_id=prev.customer_id if prev else None,
                               tags=frozenset(unmanaged | members.get(key, set())),
                               fields=prev.fields if prev else {}, exists=True)
    return out


__all__ = ["ExtraTags", "PlannedDestination", "field_columns", "staged_rows", "needs_predictions", "plan_all",
           "plan_one", "reconciled", "reconciled_tags", "remote_unchecked", "selected_destinations"]
