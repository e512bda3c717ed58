"""CLI commands of the sync engine: pull, plan, apply, sync, runs, failures."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import click
from rich.table import Table

from .cli_output import print_plans, print_warnings
from .errors import ConfigError, DestinationError

config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="Config file (default: $RFMSYNC_CONFIG, else ./rfmsync.toml).")
dest_option = click.option("--destination", "destinations", multiple=True, metavar="NAME",
                           help="Only this destination (repeatable; default: all).")
as_of_option = click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
                            help="Compute as of this date (YYYY-MM-DD; default today).")


def _console():
    from .cli import out

    return out


def _ctx(config_path):
    from .config import load_config
    from .settings import load_settings

    return load_config(config_path), load_settings()


def _existing_ledger(cfg, settings):
    """The ledger if it exists; else an empty in-memory one (planning must not create files)."""
    from .engine import ledger_url
    from .ledger import Ledger

    url = ledger_url(cfg, settings)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return Ledger.connect("sqlite://")
    return Ledger.connect(url)


@click.command()
@config_option
@click.option("--source", "source_name", default=None, help="The source to pull (the [source] type).")
@click.option("--full", is_flag=True, help="Ignore the saved cursor and pull everything again.")
def pull(config_path, source_name, full):
    """Pull contacts and orders into the local order store (incremental), without syncing."""
    from .engine import open_ledger, pull_to_store
    from .pipeline import store_path
    from .store import connect_store

    cfg, settings = _ctx(config_path)
    kind = cfg.source.get("type", "file")
    if source_name and source_name != kind:
        raise ConfigError(f"unknown source {source_name!r}: this config's source is {kind!r}")
    ledger = open_ledger(cfg, settings)
    con = connect_store(store_path(cfg))
    try:
        progress = _progress()
        with progress as bar:
            task = bar.add_task(f"pulling {kind}", total=None)
            result = pull_to_store(cfg, ledger, con, settings, full=full,
                                   progress=lambda n: bar.update(task, advance=n))
        totals = con.execute("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM contacts)").fetchall()[0]
    finally:
        con.close()
        ledger.close()
    _console().print(f"pulled {result.orders} orders and {result.contacts} contacts from {kind} "
                     f"({result.bad_row_count} bad records); the store now holds {totals[0]} orders and "
                     f"{totals[1]} contacts")


def _progress():
    import sys

    from rich.progress import Progress

    return Progress(disable=not sys.stdout.isatty(), transient=True)


def _plan(cfg, settings, ledger, destinations, as_of, full_refresh=False, reconcile=False, remote=True):
    """Segment and plan without writing anything; returns (planned, warnings, data counts)."""
    from .engine import run_stats
    from .planning.planner import plan_all, selected_destinations
    from .pipeline import compute_segments
    from .runner import guard_warnings, require_destinations

    require_destinations(cfg)
    run = compute_segments(cfg, as_of, predict=_predictive(cfg, destinations))
    try:
        stats = run_stats(run)
        names = [d.name for d in selected_destinations(cfg, destinations)]
        warnings = [*run.warnings, *guard_warnings(cfg, ledger, stats, names)]
        return plan_all(cfg, run, ledger, settings, destinations=destinations, full_refresh=full_refresh,
                        reconcile=reconcile, remote=remote), warnings, {**stats.counts(), "rows": stats.rows}
    finally:
        run.close()


def _predictive(cfg, destinations):
    from .planning.planner import needs_predictions

    return needs_predictions(cfg, destinations)


def _emit_plans(planned, fmt, output, as_of, title=None, warnings=(), data=None):
    from .engine import plan_document

    doc = plan_document(planned, as_of, warnings, data=data)
    print_warnings(doc["warnings"])  # stderr in every format: the guard lines a sync would be refused with, ...
    if output:
        Path(output).write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    if fmt == "json":
        click.echo(json.dumps(doc, ensure_ascii=False, indent=1))
    else:
        print_plans([p.plan for p in planned], _console(), **({"title": title} if title else {}))
        if output:
            _console().print(f"plan saved to {output}: apply it with `rfmsync apply {output}`",
                             markup=False, highlight=False)


mass_change_option = click.option(
    "--allow-mass-change", is_flag=True,
    help="Override the plan guards (max_removal_pct, max_change_pct) for this run; the data guards still hold.")


@click.command()
@config_option
@dest_option
@as_of_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Save the plan as JSON.")
@click.option("--full-refresh", is_flag=True, help="Plan to push every field and tag again.")
def plan(config_path, destinations, as_of, fmt, output, full_refresh):
    """Dry run: show what a sync would change per destination; writes nothing anywhere.

    A guard that would refuse the sync is printed as a warning (`warnings` in --format json); exit 0."""
    from .resync import today_in

    cfg, settings = _ctx(config_path)
    as_of = as_of.date() if as_of else today_in(cfg.timezone)
    ledger = _existing_ledger(cfg, settings)
    try:
        planned, warnings, data = _plan(cfg, settings, ledger, destinations, as_of, full_refresh=full_refresh)
    finally:
        ledger.close()
    _emit_plans(planned, fmt, output, as_of, warnings=warnings, data=data)


@click.command()
@config_option
@mass_change_option
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
def apply(config_path, allow_mass_change, plan_file):
    """Apply exactly a saved plan (refused if the ledger changed since it was made, exit 5).

    The guards are checked again first (exit 6): the data guards on the counts saved in the plan, the plan
    guards against the ledger as it is now."""
    from .engine import load_plan_file, open_ledger
    from .runner import apply_saved, require_destinations

    cfg, settings = _ctx(config_path)
    require_destinations(cfg)
    saved = load_plan_file(plan_file)
    ledger = open_ledger(cfg, settings)
    try:
        reports = apply_saved(cfg, saved.plans, ledger, settings, data=saved.data,
                              allow_mass_change=allow_mass_change)
    finally:
        ledger.close()
    _report(reports)


def _report(reports) -> None:
    con = _console()
    failed = 0
    for r in reports:
        c = r.counts
        con.print(f"{r.destination}: run {r.run_id} {r.status} — {c.get('planned', 0)} changes, {c.get('ok', 0)} "
                  f"operations ok, {c.get('failed', 0)} failed (pending for the next run), "
                  f"{c.get('skipped', 0)} skipped")
        for e in r.errors[:5]:
            con.print(f"  {e}", markup=False, highlight=False)
        failed += c.get("failed", 0)
    if failed:
        raise DestinationError(f"{failed} operations failed; they are recorded (`rfmsync failures`) and retried "
                               f"by the next run")


@click.command(name="sync")
@config_option
@dest_option
@as_of_option
@click.option("--dry-run", is_flag=True, help="Only show the plan (same as `rfmsync plan`).")
@click.option("--full-refresh", is_flag=True, help="Push every field and tag again, whatever the ledger says.")
@click.option("--reconcile", is_flag=True, help="Read managed tags/lists from the ESP and repair drift.")
@click.option("--full", "full_pull", is_flag=True, help="Pull the whole history, ignoring the source cursor.")
@mass_change_option
def sync_cmd(config_path, destinations, as_of, dry_run, full_refresh, reconcile, full_pull, allow_mass_change):
    """Pull → segment → plan → guards → apply → record, for every (or the named) destination.

    A guard that trips stops the run before any ESP write: exit 6, one line per guard, the run recorded as
    `refused` (see README "Safety")."""
    from .engine import open_ledger
    from .resync import today_in
    from .runner import full_sync, require_destinations

    cfg, settings = _ctx(config_path)
    require_destinations(cfg)
    as_of_d = as_of.date() if as_of else today_in(cfg.timezone)
    if dry_run:
        ledger = _existing_ledger(cfg, settings)
        try:
            planned, warnings, data = _plan(cfg, settings, ledger, destinations, as_of_d, full_refresh, reconcile)
        finally:
            ledger.close()
        _emit_plans(planned, "table", None, as_of_d, warnings=warnings, data=data)
        return
    ledger = open_ledger(cfg, settings)
    try:
        reports = full_sync(cfg, ledger, settings, destinations=destinations, as_of=as_of_d,
                            allow_mass_change=allow_mass_change, full_refresh=full_refresh, reconcile=reconcile,
                            full_pull=full_pull, on_warnings=print_warnings)
    finally:
        ledger.close()
    _report(reports)


@click.command()
@config_option
@click.option("--limit", default=20, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def runs(config_path, limit, fmt):
    """Recent runs with counts, duration and errors."""
    from .engine import open_ledger

    cfg, settings = _ctx(config_path)
    ledger = open_ledger(cfg, settings)
    try:
        rows = ledger.recent_runs(limit)
    finally:
        ledger.close()
    if fmt == "json":
        click.echo(json.dumps(rows, default=str, indent=1))
        return
    table = Table(title="Recent runs")
    for col in ("id", "kind", "destination", "started", "duration s", "status", "counts", "error"):
        table.add_column(col)
    for r in rows:
        dur = f"{r['duration_s']:.1f}" if r.get("duration_s") is not None else ""
        table.add_row(str(r["id"]), r["kind"], r.get("destination") or "", str(r["started_at"])[:19], dur,
                      r["status"], json.dumps(r.get("counts") or {}), (r.get("error") or "")[:80])
    _console().print(table)


@click.command()
@config_option
@click.option("--destination", default=None, help="Only this destination.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def failures(config_path, destination, fmt):
    """Pending failed items with their reasons (retried by the next sync)."""
    from .engine import open_ledger

    cfg, settings = _ctx(config_path)
    ledger = open_ledger(cfg, settings)
    try:
        rows = ledger.pending_failures(destination)
    finally:
        ledger.close()
    if fmt == "json":
        click.echo(json.dumps(rows, default=str, indent=1))
        return
    table = Table(title=f"Pending failures ({len(rows)})")
    for col in ("destination", "contact", "operation", "attempts", "last error", "last failed"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["destination"], r["key"], r["op"], str(r["attempts"]), (r.get("last_error") or "")[:100],
                      str(r.get("last_failed_at"))[:19])
    _console().print(table)


COMMANDS = [pull, plan, apply, sync_cmd, runs, failures]
