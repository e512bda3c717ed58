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
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import duckdb

from .config import Config, DestinationConfig
from .errors import ConfigError, DestinationError, GuardRefusedError, LockBusyError
from .ledger import Ledger
from .ledger_queue import owner_process_gone
from .model import Destination, ItemResult, PushedState
from .pipeline import SegmentsRun, build_source, compute_segments, pull_into, store_path
from .planning.plan import (PREDICTIVE_VALUES, Plan, all_managed, apply_results_to_state, check_fields, desired_contacts,
                   plan_destination)
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


def make_destination(dest: DestinationConfig, settings: Settings, *, required: bool = True,
                     retry=None, timeout: float | None = None) -> Destination | None:
    """The ESP client for a destination, or None when its credentials are not set and not ``required``.

    ``retry`` (a :class:`connectors.retry.RetryPolicy`) and ``timeout`` default to the destination's [http]
    settings (``RFMSYNC_HTTP_*`` > ``[destinations.http]`` > ``[http]``).
    """
    http = dest.http_settings(settings)
    retry = retry or http.retry_policy()
    timeout = timeout if timeout is not None else http.timeout_seconds
    key_name = f"{dest.type.upper()}_API_KEY"
    key = getattr(settings, f"{dest.type}_api_key")
    url = getattr(settings, f"{dest.type}_api_url")
    if key is None:
        if required:
            raise ConfigError(f"destination {dest.name!r}: {key_name} is not set (see settings.example.env)")
        return None
    if dest.type == "mailchimp":
        from .destinations.mailchimp import MailchimpDestination

        return MailchimpDestination(dest.name, dest.audience or "", key, api_url=url, batch_size=dest.batch_size,
                                    retry=retry, timeout=timeout, max_connections=http.concurrency)
    if dest.type == "sendgrid":
        from .destinations.sendgrid import SendGridDestination

        return SendGridDestination(dest.name, key, api_url=url, list_prefix=dest.list_prefix,
                                   batch_size=dest.batch_size, retry=retry, timeout=timeout)
    from .destinations.unisender import UnisenderDestination

    return UnisenderDestination(dest.name, key, api_url=url, batch_size=dest.batch_size, retry=retry,
                                timeout=timeout)


def _customer_rows(run: SegmentsRun) -> list[dict[str, Any]]:
    seg = run.result.table
    rel = run.con.sql(f"""
        SELECT s.*, c.email, c.phone, c.marketing_consent
        FROM {seg} s JOIN contacts c USING (customer_id)
        WHERE c.email IS NOT NULL AND trim(c.email) <> ''
        ORDER BY s.monetary DESC, s.customer_id
    """)
    cols = rel.columns
    return [dict(zip(cols, row)) for row in rel.fetchall()]


def _needs_predictions(cfg: Config, names: Iterable[str] | None) -> bool:
    return any(v in PREDICTIVE_VALUES for d in _destinations(cfg, names) for v in d.fields.values())


def _destinations(cfg: Config, names: Iterable[str] | None) -> list[DestinationConfig]:
    if not names:
        return list(cfg.destinations)
    return [cfg.destination(n) for n in names]


@dataclass
class PlannedDestination:
    plan: Plan
    client: Destination | None
    #: the plan guards this plan trips against the ledger it was made from (also in ``plan.warnings``)
    guard_lines: tuple[str, ...] = ()
    #: plan this destination again from the same segments against the ledger as it is now (sync re-plans
    #: under the destination's lock when another run moved the ledger while it waited)
    replan: Callable[[], "PlannedDestination"] | None = None


def plan_all(cfg: Config, run: SegmentsRun, ledger: Ledger, settings: Settings, *,
             destinations: Sequence[str] | None = None, full_refresh: bool = False, reconcile: bool = False,
             remote: bool = True, require_remote: bool = False) -> list[PlannedDestination]:
    """Plan every (or the named) destination. Reads the ESP only when credentials are set and ``remote``."""
    rows = _customer_rows(run)
    out = []
    for dest in _destinations(cfg, destinations):
        check_fields(dest)
        client = make_destination(dest, settings, required=require_remote) if remote else None
        unchecked = _remote_unchecked(client, require_remote)
        out.append(_plan_one(cfg, dest, rows, ledger, client, unchecked, full_refresh=full_refresh,
                             reconcile=reconcile))
    return out


def _plan_one(cfg: Config, dest: DestinationConfig, rows: list[dict[str, Any]], ledger: Ledger,
              client: Destination | None, unchecked: str | None, *, full_refresh: bool, reconcile: bool
              ) -> PlannedDestination:
    from .guards import plan_lines, plan_stats

    notes = []
    desired, invalid = desired_contacts(rows, dest)
    revision = ledger.state_revision(dest.name)  # read before the state: a later write only makes it stale
    state = last = ledger.load_state(dest.name)
    existing = None
    if client is not None and unchecked is None:
        if reconcile:
            last = _reconciled(last, client.read_managed(all_managed(dest)), all_managed(dest))
        if (dest.new_contacts == "skip" or full_refresh) and hasattr(client, "existing_members"):
            existing = client.existing_members([d.key for d in desired])  # full refresh: repairs drift
    elif client is None:
        notes.append("planned against the ledger alone (no credentials set): the ESP was not read")
    plan = plan_destination(dest, desired, last, revision=revision, existing=existing,
                            full_refresh=full_refresh, skipped=invalid,
                            remote_checked=client is not None and unchecked is None, notes=notes)
    lines = tuple(plan_lines(cfg.guards, plan_stats(plan, state)))
    warnings = ((unchecked,) if unchecked is not None else ()) + lines
    if warnings:
        plan = replace(plan, warnings=(*plan.warnings, *warnings))
    return PlannedDestination(plan, client, lines, replan=lambda: _plan_one(
        cfg, dest, rows, ledger, client, unchecked, full_refresh=full_refresh, reconcile=reconcile))


def _remote_unchecked(client: Destination | None, require_remote: bool) -> str | None:
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


def _reconciled(last: dict[str, PushedState], actual: dict[str, set[str]], managed: Sequence[str]
                ) -> dict[str, PushedState]:
    """Replace the ledger's view of managed tags with what the ESP really holds (repairs drift)."""
    members: dict[str, set[str]] = {}
    for tag, emails in actual.items():
        for e in emails:
            members.setdefault(e.lower(), set()).add(tag)
    out = {}
    for key in set(last) | set(members):
        prev = last.get(key)
        unmanaged = (prev.tags - set(managed)) if prev else frozenset()
        out[key] = PushedState(key=key, customer_id=prev.customer_id if prev else None,
                               tags=frozenset(unmanaged | members.get(key, set())),
                               fields=prev.fields if prev else {}, exists=True)
    return out


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
                               predict=_needs_predictions(cfg, destinations))
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
