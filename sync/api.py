"""The library API: one call per CLI command, and the one full sync every caller shares.

::

    from sync import api
    from sync.config import load_config
    from sync.settings import load_settings

    cfg, settings = load_config("rfmsync.toml"), load_settings()
    run = api.segments(cfg)                          # score and segment (close it when done)
    ledger = api.existing_ledger(cfg, settings)      # planning never creates the ledger file (plan -o does)
    result = api.plan(cfg, ledger, settings)         # what a sync would change, written nowhere
    saved = api.plan_to_save(cfg, settings)          # a plan to save for apply: what plan -o saves, the same
    # ledger_id (the ledger is created if there is none yet, and given its id); write saved.document() as JSON
    reports = api.run_sync(cfg, ledger, settings)    # pull → segment → plan → guards → apply → record

``rfmsync sync``, the scheduler of ``rfmsync serve`` and anything else doing "a full sync" call
:func:`run_sync`. One as-of rule everywhere (``segments``, ``predict``, ``plan``, ``sync``, the scheduled and
webhook runs): a date not given is today in the config's timezone (:func:`as_of_date`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from connectors.source import Progress, PullResult

from . import progress as steps
from .config import Config
from .pipeline import Reading, SegmentsRun, compute_segments, store_path, today_in
from .settings import Settings
from .store import connect_store

# the ledger, the planner and the apply (SQLAlchemy, the ESP clients) are imported by the calls that use them:
# ``segments`` and ``predict`` need none of them, and importing them took about 0.3 s of every such run
if TYPE_CHECKING:
    from .engine import ApplyReport
    from .ledger import Ledger
    from .plan_file import SavedPlan
    from .planning.planner import PlannedDestination

__all__ = ["PlanResult", "PullSummary", "apply", "as_of_date", "existing_ledger", "explain", "history",
           "init_config", "plan", "plan_to_save", "prune_history", "pull", "record_history", "run_sync", "segments"]


def as_of_date(cfg: Config, as_of: date | datetime | None = None) -> date:
    """The day to compute as of: the one given, else today in the config's timezone."""
    if as_of is None:
        return today_in(cfg.timezone)
    return as_of.date() if isinstance(as_of, datetime) else as_of


def existing_ledger(cfg: Config, settings: Settings) -> Ledger:
    """The ledger if it exists, else an empty in-memory one: planning must not create files."""
    from .ledger import Ledger, ledger_url, state_cache_folder
    from .ledger.url import sqlite_file

    url = ledger_url(cfg, settings)
    path = sqlite_file(url)  # without the URL's query (?timeout=30): the file itself
    if path is not None and not Path(path).exists():
        return Ledger.connect("sqlite://")
    return Ledger.connect(url, state_cache=state_cache_folder(cfg, url))


@dataclass(frozen=True)
class PullSummary:
    """What one pull read, and what the order store holds after it."""

    result: PullResult
    stored_orders: int
    stored_contacts: int


def pull(cfg: Config, ledger: Ledger, settings: Settings, *, full: bool = False,
         progress: Progress = None, reading: Reading = Reading(), allow_mass_change: bool = False) -> PullSummary:
    """Pull the source into the order store (incremental from the saved cursor unless ``full``; a file source
    reads its new and changed files, every file with ``reading.reread``); ``allow_mass_change``: a whole read
    empties every stored contact the source's list no longer shows, however many (:mod:`sync.store.gone`)."""
    from .ingest import pull_to_store

    con = connect_store(store_path(cfg))
    try:
        result = pull_to_store(cfg, ledger, con, settings, full=full, progress=progress, reading=reading,
                               allow_mass_change=allow_mass_change)
        orders, contacts = con.execute(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM contacts)").fetchall()[0]
    finally:
        con.close()
    return PullSummary(result, orders, contacts)


def segments(cfg: Config, as_of: date | datetime | None = None, *, preset: str | None = None,
             predict: bool = False, holdout: bool = False, boundary: bool = True,
             settings: Settings | None = None, reading: Reading = Reading(),
             join_predictions: bool = True) -> SegmentsRun:
    """Score and segment every customer (``rfmsync segments``, ``predict``, ``demo``); the caller closes the
    run. ``predict`` adds the predictive fields, ``holdout`` the models' fit-quality refit; ``reading``: how a
    file source is read into the order store (``--reread``, ``--verify``); ``join_predictions=False``: the
    predictions' columns stay out of the segments table unless a rule reads one
    (:func:`~sync.pipeline.compute_segments`)."""
    return compute_segments(cfg, as_of_date(cfg, as_of), preset=preset, settings=settings, predict=predict,
                            holdout=holdout, boundary=boundary, reading=reading, join_predictions=join_predictions)


@dataclass(frozen=True)
class PlanResult:
    """Each destination's plan, the run's warnings (stale data, the data guards a sync would trip, ...) and
    the input counts the data guards check again when a saved plan is applied."""

    as_of: date
    planned: list[PlannedDestination]
    warnings: list[str]
    data: dict[str, int]
    #: the ledger's id (:func:`sync.ledger.cursors.ledger_id`; None: none made yet), saved with the plan
    ledger_id: str | None = None

    def document(self) -> dict:
        """The plan as JSON (``plan --format json``, ``plan -o FILE``)."""
        from .plan_file import plan_document

        return plan_document(self.planned, self.as_of, self.warnings, data=self.data, ledger_id=self.ledger_id)


def plan(cfg: Config, ledger: Ledger, settings: Settings, *, destinations: Sequence[str] | None = None,
         as_of: date | datetime | None = None, full_refresh: bool = False, reconcile: bool = False,
         remote: bool = True, reading: Reading = Reading()) -> PlanResult:
    """Segment and plan every (or the named) destination without writing anything anywhere (``rfmsync plan``,
    ``sync --dry-run``). The ESPs are read (read-only) when their credentials are set and ``remote``."""
    from .ingest import run_stats
    from .planning.planner import needs_predictions, plan_all, selected_destinations
    from .planning.retired import removed_destinations
    from .run import guard_warnings, require_destinations

    require_destinations(cfg)
    day = as_of_date(cfg, as_of)
    run = compute_segments(cfg, day, settings=settings, predict=needs_predictions(cfg, destinations),
                           reading=reading)
    try:
        stats = run_stats(run)
        names = [d.name for d in selected_destinations(cfg, destinations)]
        warnings = [*run.warnings, *guard_warnings(cfg, ledger, stats, names), *removed_destinations(cfg, ledger)]
        with steps.step("planning"):
            planned = plan_all(cfg, run, ledger, settings, destinations=destinations, full_refresh=full_refresh,
                               reconcile=reconcile, remote=remote)
    finally:
        run.close()
    return PlanResult(day, planned, warnings, {**stats.counts(), "rows": stats.rows}, ledger.ledger_id())


def plan_to_save(cfg: Config, settings: Settings, **options) -> PlanResult:
    """:func:`plan` for a plan to save for ``apply`` (``rfmsync plan -o``; ``options``: :func:`plan`'s): its
    document names the ledger it is made against (``ledger_id``). The ledger is opened as ``apply`` opens it
    (created if there is none yet) and given its id if it has none; on a ledger this process may only read (a
    ``mode=ro`` SQLite URI, a standby or a SELECT-only role) the id is not made: a warning, and the plan names no
    ledger (``ledger_id: null``: ``apply`` judges it by its revisions, docs/sync.md#plan)."""
    from dataclasses import replace

    from .errors import LedgerError
    from .ledger import open_ledger

    ledger = open_ledger(cfg, settings)
    try:
        try:
            ledger.ledger_id(create=True)
            unnamed = []
        except LedgerError as exc:
            unnamed = [f"the ledger's id could not be made ({exc}): the saved plan names no ledger (ledger_id "
                       f"null), so apply judges it by its revisions alone, and refuses it for a destination the "
                       f"ledger never wrote (docs/sync.md#plan)"]
        result = plan(cfg, ledger, settings, **options)
    finally:
        ledger.close()
    return replace(result, warnings=[*result.warnings, *unnamed]) if unnamed else result


def apply(cfg: Config, saved: SavedPlan, ledger: Ledger, settings: Settings, *,
          allow_mass_change: bool = False,
          on_warnings: Callable[[list[str]], None] | None = None) -> list[ApplyReport]:
    """Apply exactly a saved plan (``rfmsync apply``): refused when the ledger moved since it was made (exit 5)
    or when a guard trips (exit 6). The consent of those it subscribes is read again from the order store first:
    the contacts whose consent no longer allows it are left out (told to ``on_warnings``, else logged); a host
    without the store refuses such a plan (exit 2)."""
    from .run import apply_saved

    return apply_saved(cfg, saved.plans, ledger, settings, data=saved.data, allow_mass_change=allow_mass_change,
                       ledger_id=saved.ledger_id, as_of=saved.as_of, on_warnings=on_warnings)


def run_sync(cfg: Config, ledger: Ledger, settings: Settings, *, destinations: Sequence[str] | None = None,
             as_of: date | datetime | None = None, kind: str = "sync", allow_mass_change: bool = False,
             full_refresh: bool = False, reconcile: bool = False, full_pull: bool = False,
             on_warnings: Callable[[list[str]], None] | None = None,
             reading: Reading = Reading()) -> list[ApplyReport]:
    """The full sync: pull → segment → plan → guards → apply → record (``rfmsync sync``, scheduled runs).

    ``kind`` names the run in the ledger (``sync``, ``scheduled``); see :func:`sync.run.full_sync` for the
    guards, ``allow_mass_change`` and ``on_warnings``."""
    from .run import full_sync

    return full_sync(cfg, ledger, settings, destinations=destinations, as_of=as_of_date(cfg, as_of), kind=kind,
                     allow_mass_change=allow_mass_change, full_refresh=full_refresh, reconcile=reconcile,
                     full_pull=full_pull, on_warnings=on_warnings, reading=reading)


def explain(cfg: Config, who: str, as_of: date | datetime | None = None, *,
            settings: Settings | None = None) -> dict:
    """One customer (id, e-mail or phone) explained (``rfmsync explain``): orders, scores and their bands, the
    rules tried, predictive fields, what the ledger says each destination holds. Unknown: DataError (exit 3).
    Reads the ledger only when it exists; creates nothing."""
    from .explain import explain as explain_customer
    from .settings import load_settings

    run = segments(cfg, as_of, predict=True, boundary=False, settings=settings)
    try:
        ledger = existing_ledger(cfg, settings or load_settings()) if cfg.destinations else None
        try:
            report = explain_customer(run, who, ledger)
        finally:
            if ledger is not None:
                ledger.close()
    finally:
        run.close()
    report["warnings"] = list(run.warnings)
    return report


def record_history(cfg: Config, run: SegmentsRun):
    """Record a run's segments in the segment history (``segments --record``; every ``sync`` records on its
    own); returns :class:`sync.store.history.RecordResult`."""
    from .history import record_run

    return record_run(cfg, run)


def history(cfg: Config, *, since: date | None = None, matrix: bool = False, date_from: date | None = None,
            date_to: date | None = None) -> dict:
    """The segment history (``rfmsync history``): lines, records and sizes, or the from → to matrix."""
    from .history import history_report

    return history_report(cfg, since=since, matrix=matrix, date_from=date_from, date_to=date_to)


def prune_history(cfg: Config, before: date) -> dict[str, int]:
    """Drop the segment history that lies wholly before ``before`` (``history --prune-before``)."""
    from .history import prune

    return prune(cfg, before)


def forget(cfg: Config, settings: Settings, destination: str, *, yes: bool = False):
    """What the ledger holds under a destination the config no longer has, forgotten with ``yes`` (``rfmsync
    forget``); a :class:`sync.forget.Forgotten`. No ledger file is created (none yet: nothing to forget)."""
    from .forget import forget_destination

    ledger = existing_ledger(cfg, settings)
    try:
        return forget_destination(cfg, ledger, destination, yes=yes)
    finally:
        ledger.close()


def init_config(export_file: Path, output: Path, *, force: bool = False):
    """Write a commented config guessed from an export (``rfmsync init``); returns the
    :class:`connectors.guess.Guess`. An existing ``output`` is a ConfigError unless ``force``; an export the file
    reader cannot read (cut short inside a character, in no encoding it knows) writes nothing."""
    from connectors.errors import ConnectorError
    from connectors.file_paths import read_as_given
    from connectors.guess import guess, read_sample

    from .errors import ConfigError
    from .init_config import render_config

    if output.exists() and not force:
        raise ConfigError(f"{output} exists: rerun with --force to overwrite it")
    with read_as_given([export_file]):  # the file named is read as it is (no copy under way), or nothing is written
        try:
            sample = read_sample(export_file)
        except ConnectorError as e:
            e.args = (f"{e}; {output} was not written",)
            raise
    g = guess(sample)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_config(g, output), encoding="utf-8")
    return g
