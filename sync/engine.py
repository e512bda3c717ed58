"""The sync engine: pull → segment → plan → apply → record.

Every item's outcome is folded into the ledger as its API call completes, so a failed item stays pending (the
next run plans it again) and a process killed mid-run resumes without repeating completed calls. A second run
with no data change plans nothing and makes zero write calls.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import duckdb

from .config import Config
from .destinations.base import Destination
from .errors import ConfigError, GuardRefusedError, LockBusyError
from .ledger import Ledger
from .ledger_queue import owner_process_gone
from .model import ItemResult
from .pipeline import SegmentsRun, build_source, compute_segments, pull_into, store_path
from .planning.plan import Plan, apply_results_to_state
from .planning.planner import PlannedDestination, needs_predictions, plan_all
from .settings import Settings, load_settings
from .store import connect_store

log = logging.getLogger(__name__)
PLAN_FILE_VERSION = 1


def ledger_url(cfg: Config, settings: Settings | None = None) -> str:
    """$RFMSYNC_STORE_URL, else [store] url, else rfmsync.db next to the config."""
    settings = settings or load_settings()
    return settings.rfmsync_store_url or cfg.store.url or f"sqlite:///{cfg.base_dir / 'rfmsync.db'}"


def open_ledger(cfg: Config, settings: Settings | None = None) -> Ledger:
    return Ledger.connect(ledger_url(cfg, settings))


@contextmanager
def destination_lock(ledger: Ledger, name: str, ttl_seconds: float = 3600) -> Iterator[str]:
    """A ledger lock (a destination's, the scheduler's) that a killed process on this host cannot block: its
    lock is taken over."""
    try:
        owner = ledger.acquire_lock(name, ttl_seconds=ttl_seconds)
    except LockBusyError as exc:
        holder = getattr(exc, "holder", "")
        if not holder or not owner_process_gone(holder):
            raise
        log.warning("taking over lock %s from %s (process no longer exists)", name, holder)
        ledger.release_lock(name, holder)
        owner = ledger.acquire_lock(name, ttl_seconds=ttl_seconds)
    try:
        yield owner
    finally:
        ledger.release_lock(name, owner)


@dataclass
class ApplyReport:
    destination: str
    run_id: int
    status: str
    counts: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def execute_plan(plan: Plan, client: Destination, ledger: Ledger, *, kind: str = "sync",
                 replan: Callable[[], Plan] | None = None, data: Mapping[str, Any] | None = None) -> ApplyReport:
    """Apply one destination's plan under its ledger lock, recording each call's outcome as it completes.

    With ``replan``: once the lock is held, a ledger revision that moved since the plan was made (another run
    wrote this destination meanwhile) makes the plan stale; ``replan()`` gives the plan against the ledger as it
    is now (or raises), so an operation is never sent twice and older state is never pushed back.
    ``data``: counts of the input (orders, bad rows, customers) recorded with the run."""
    with destination_lock(ledger, f"sync:{plan.destination}"):
        if replan is not None:
            now = ledger.state_revision(plan.destination)
            if now != plan.ledger_revision:
                log.info("sync %s: the ledger moved while waiting (revision %d → %d): planning again",
                         plan.destination, plan.ledger_revision, now)
                plan = replan()
        run_id = ledger.start_run(kind, plan.destination)
        counts = {**(data or {}), "planned": len(plan.changes), "skipped": len(plan.skipped), "ok": 0, "failed": 0}
        errors: list[str] = []
        if plan.is_empty:
            ledger.finish_run(run_id, "succeeded", counts)
            return ApplyReport(plan.destination, run_id, "succeeded", counts)
        state = ledger.load_state(plan.destination)
        by_key = {c.key: c for c in plan.changes}

        def on_results(results: Sequence[ItemResult]) -> None:
            results = list(results)
            touched = apply_results_to_state(state, by_key, results)
            if touched:
                ledger.save_states(plan.destination, run_id, [state[k] for k in touched])
            ledger.record_results(plan.destination, run_id, results)
            for r in results:
                counts["ok" if r.ok else "failed"] += 1
                if not r.ok and len(errors) < 20:
                    errors.append(f"{r.key} {r.op}: {r.error}")

        try:
            client.prepare(plan.managed_tags, plan.fields)
            client.apply(plan.changes, on_results)
        except Exception as exc:
            ledger.finish_run(run_id, "failed", counts, error=str(exc))
            raise
        status = "succeeded" if counts["failed"] == 0 else "partial"
        ledger.finish_run(run_id, status, counts, error="; ".join(errors[:5]) or None)
        log.info("sync %s: %d changes, %d ok, %d failed, %d skipped", plan.destination, len(plan.changes),
                 counts["ok"], counts["failed"], counts["skipped"])
        return ApplyReport(plan.destination, run_id, status, counts, errors)


def pull_to_store(cfg: Config, ledger: Ledger, con: duckdb.DuckDBPyConnection, settings: Settings, *,
                  full: bool = False, progress=None, guarded: bool = False):
    """Pull the source into the order store; the cursor is saved only after the store merge succeeded.

    ``guarded``: the data guards (``min_orders``, ``max_bad_rows_pct``) see the staged pull first; when one
    trips, the store and the cursor are left as they were and the pull run is recorded as ``refused``."""
    source = build_source(cfg, settings)
    name = str(cfg.source.get("type", "file"))
    cursor = None if full else ledger.get_cursor(name, "all")
    run_id = ledger.start_run("pull")
    before_merge = None
    if guarded:
        def before_merge(result) -> None:
            from .guards import data_lines

            stats = staged_stats(con, result)
            lines = data_lines(cfg.guards, stats)
            if lines:
                ledger.finish_run(run_id, "refused", stats.counts(), error="; ".join(lines))
                raise GuardRefusedError(lines)
    try:
        result = pull_into(con, source, cursor, progress=progress, before_merge=before_merge)
    except GuardRefusedError:
        raise
    except Exception as exc:
        ledger.finish_run(run_id, "failed", {}, error=str(exc))
        raise
    if result.cursor is not None:
        ledger.set_cursor(name, "all", result.cursor)
    ledger.finish_run(run_id, "succeeded", {"orders": result.orders, "contacts": result.contacts,
                                            "bad_rows": result.bad_row_count})
    return result


def staged_stats(con: duckdb.DuckDBPyConnection, result):
    """The data-guard numbers of a staged pull: orders the store will hold after the merge (a full refresh
    replaces it; an incremental pull adds at most its orders), the valid and bad rows read."""
    from .guards import DataStats

    orders = result.orders
    if not result.full_refresh:
        orders += con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
    return DataStats(orders=orders, rows=result.orders, bad_rows=result.bad_row_count)


def run_stats(run: SegmentsRun):
    """The data-guard numbers of a segmented run (orders it segmented, rows read, customers)."""
    from .guards import DataStats

    orders = run.con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
    rows = run.pull.orders if run.pull is not None else orders
    return DataStats(orders=orders, rows=rows, bad_rows=run.bad_row_count, customers=run.result.customers)


def segments_from_store(cfg: Config, ledger: Ledger, settings: Settings, *, as_of: date | None = None,
                        destinations: Sequence[str] | None = None, pull: bool = True, full: bool = False,
                        guarded: bool = False) -> SegmentsRun:
    con = connect_store(store_path(cfg))
    try:
        result = pull_to_store(cfg, ledger, con, settings, full=full, guarded=guarded) if pull else None
        run = compute_segments(cfg, as_of, con=con, settings=settings,
                               predict=needs_predictions(cfg, destinations))
    except BaseException:
        con.close()
        raise
    run.pull = result
    save_cut_points(con, run)
    return run


def save_cut_points(con: duckdb.DuckDBPyConnection, run: SegmentsRun) -> None:
    """Remember the last full run's score cut points in the store, for incremental (webhook) re-scoring."""
    res = run.result
    con.execute("CREATE TABLE IF NOT EXISTS segmentation_runs (as_of DATE, preset VARCHAR, levels INTEGER, "
                "cut_points JSON, customers BIGINT, created_at TIMESTAMPTZ DEFAULT now())")
    con.execute("INSERT INTO segmentation_runs (as_of, preset, levels, cut_points, customers) VALUES (?, ?, ?, ?, ?)",
                [res.as_of, res.preset, res.levels, json.dumps(res.cut_points.model_dump()), res.customers])


def load_cut_points(con: duckdb.DuckDBPyConnection):
    """The cut points of the last full run, or None when there was none."""
    from segmentation import Thresholds

    exists = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'segmentation_runs'").fetchall()
    if not exists[0][0]:
        return None
    row = con.execute("SELECT cut_points FROM segmentation_runs ORDER BY created_at DESC LIMIT 1").fetchall()
    return Thresholds(**json.loads(row[0][0])) if row else None


def plan_document(planned: Sequence[PlannedDestination], as_of: date, warnings: Sequence[str] = (),
                  data: Mapping[str, Any] | None = None) -> dict:
    """The plan as JSON (``plan --format json``, ``plan -o``). ``warnings``: the run's own (stale data, ...),
    followed by each destination plan's. ``data``: the input counts the data guards check again at apply."""
    doc = {"version": PLAN_FILE_VERSION, "created_at": datetime.now(timezone.utc).isoformat(),
           "as_of": as_of.isoformat(),
           "warnings": [*warnings, *(f"{p.plan.destination}: {w}" for p in planned for w in p.plan.warnings)],
           "plans": [p.plan.to_json() for p in planned]}
    if data is not None:
        doc["data"] = dict(data)
    return doc


@dataclass(frozen=True)
class SavedPlan:
    plans: list[Plan]
    data: dict  # orders, bad_rows, customers of the input it was made from ({} for older files)


def load_plan_file(path: str | os.PathLike) -> SavedPlan:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read plan file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != PLAN_FILE_VERSION:
        raise ConfigError(f"{path}: not an rfmsync plan file (version {PLAN_FILE_VERSION})")
    counts = data.get("data") or {}
    if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
        raise ConfigError(f"{path}: not an rfmsync plan file (bad \"data\")")
    return SavedPlan([Plan.from_json(p) for p in data.get("plans", [])], counts)


def load_plan_document(path: str | os.PathLike) -> list[Plan]:
    return load_plan_file(path).plans


def demo_plan(cfg: Config, run: SegmentsRun, console) -> None:
    """Print the dry-run plan of the demo's sample destination against an empty, throw-away ledger."""
    from .cli_output import print_plans

    if not cfg.destinations:
        return
    ledger = Ledger.connect("sqlite://")
    try:
        planned = plan_all(cfg, run, ledger, load_settings(), remote=False)
    finally:
        ledger.close()
    print_plans([p.plan for p in planned], console, title="Dry-run plan (sample Mailchimp mapping, empty ledger)")
