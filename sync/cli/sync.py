"""The sync commands: ``pull``, ``plan``, ``apply``, ``sync``, ``runs``, ``failures``; each one call to
:mod:`sync.api` (or one ledger read)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from connectors.secrets import mask

from ..errors import ConfigError, DestinationError
from .json_output import emit, format_option, report_dict, start
from .main import as_of_option, config_option, dest_option, load, reading, reading_options
from .output import out, print_plans, print_warnings

mass_change_option = click.option(
    "--allow-mass-change", is_flag=True,
    help="Override the plan guards (max_removal_pct, max_change_pct, max_withdrawal_pct) and the scoring guard "
         "(recency_scores) for this run, and with --full let the pull empty every stored contact the CRM's contact "
         "list no longer shows however many; the data guards still hold.")


def _ctx(config_path):
    from ..settings import load_settings

    return load(config_path), load_settings()


def _open_ledger(cfg, settings):
    from ..ledger import open_ledger

    return open_ledger(cfg, settings)


@click.command()
@config_option
@click.option("--source", "source_name", default=None, help="The source to pull (the [source] type).")
@click.option("--full", is_flag=True, help="Ignore the saved cursor and pull everything again (a CRM's stored contacts its "
              "contact list no longer shows are emptied: deleted there).")
@click.option("--allow-mass-change", is_flag=True,
              help="With --full: empty every stored contact the CRM's contact list no longer shows, even more than "
                   "the guards allow (min_mass_change, max_removal_pct of the source's stored contacts).")
@reading_options
@format_option
def pull(config_path, source_name, full, allow_mass_change, reread, verify, fmt):
    """Pull contacts and orders into the local order store (incremental), without syncing."""
    from .. import api

    doc = start(fmt, "pull")
    cfg, settings = _ctx(config_path)
    kind = cfg.source.get("type", "file")
    if source_name and source_name != kind:
        raise ConfigError(f"unknown source {source_name!r}: this config's source is {kind!r}")
    ledger = _open_ledger(cfg, settings)
    try:
        pulled = api.pull(cfg, ledger, settings, full=full,  # a bar per page on a terminal (sync.progress)
                          reading=reading(reread, verify), allow_mass_change=allow_mass_change)
    finally:
        ledger.close()
    result = pulled.result
    from connectors.counts import counted

    from ..ingest import kept_apart
    from ..pipeline import pull_lines

    gone = pull_lines(result)  # files removed since the last pull, consent values not read
    print_warnings(gone)
    if doc is not None:
        doc["warnings"].extend(gone)
        doc.update(source={"type": kind}, counts={"orders": result.orders, "contacts": result.contacts,
                                        "bad_records": result.bad_row_count, "stored_orders": pulled.stored_orders,
                                        "stored_contacts": pulled.stored_contacts,
                                        "unstored_orders": result.unstored_orders,
                                        "unchanged_orders": result.unchanged_orders,
                                        "unchanged_contacts": result.unchanged_contacts,
                                        "cleaned_values": result.issue_count,
                                        "anonymous_orders": result.anonymous_orders})
        emit(doc)
        return
    unstored = (f"; {counted(result.unstored_orders, 'deleted or lost order')} never stored, not stored"
                if result.unstored_orders else "")
    again = result.unchanged_orders + result.unchanged_contacts  # (the lookback window's re-reads)
    unstored += f"; {counted(again, 'record')} read again unchanged" if again else ""
    unstored += "".join(f"; {part}" for part in kept_apart(result))  # values cleaned, walk-in sales
    out.print(f"pulled {counted(result.orders, 'order')} and {counted(result.contacts, 'contact')} from {kind} "
              f"({counted(result.bad_row_count, 'bad record')}{unstored}); the store now holds "
              f"{counted(pulled.stored_orders, 'order')} and {counted(pulled.stored_contacts, 'contact')}")


def _dry_run(cfg, settings, destinations, as_of, *, saved: bool = False, **options):
    """``api.plan`` against the ledger as it is (an empty one when there is none yet). ``saved``: the plan is saved
    (``plan -o``) for ``apply``: :func:`sync.api.plan_to_save` (the ledger is created if there is none yet, and
    given the id the plan names), as the library saves one."""
    from .. import api

    if saved:
        return api.plan_to_save(cfg, settings, destinations=destinations, as_of=as_of, **options)
    ledger = api.existing_ledger(cfg, settings)
    try:
        return api.plan(cfg, ledger, settings, destinations=destinations, as_of=as_of, **options)
    finally:
        ledger.close()


def _emit_plans(result, fmt, output):
    doc = result.document()
    print_warnings(doc["warnings"])  # stderr in every format: the guard lines a sync would be refused with, ...
    if output:
        Path(output).write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    if fmt == "json":
        click.echo(json.dumps(doc, ensure_ascii=False, indent=1))
        return
    print_plans([p.plan for p in result.planned], out)
    if output:
        out.print(f"plan saved to {output}: apply it with `rfmsync apply {output}`", markup=False, highlight=False)


@click.command()
@config_option
@dest_option
@as_of_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Save the plan as JSON.")
@click.option("--full-refresh", is_flag=True, help="Plan to push every field and tag again.")
@reading_options
def plan(config_path, destinations, as_of, fmt, output, full_refresh, reread, verify):
    """Dry run: show what a sync would change per destination; writes nothing to the ESPs or the ledger (a file
    source's new and changed files are read into the local order store; with -o, the ledger is created if there is
    none yet, and given the id the saved plan names).

    A guard that would refuse the sync is printed as a warning (`warnings` in --format json); exit 0."""
    cfg, settings = _ctx(config_path)
    _emit_plans(_dry_run(cfg, settings, destinations, as_of, saved=bool(output), full_refresh=full_refresh,
                         reading=reading(reread, verify)), fmt, output)


@click.command()
@config_option
@mass_change_option
@format_option
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
def apply(config_path, allow_mass_change, fmt, plan_file):
    """Apply exactly a saved plan (refused if the ledger changed since it was made, exit 5).

    The guards are checked again first (exit 6): the data guards on the counts saved in the plan, the plan
    guards against the ledger as it is now; a plan held by max_removal_pct or max_change_pct alone still sends its
    consent withdrawals (the ledger then moved: make a new plan for the rest). The consent of those it subscribes
    is read again from the order store: a contact who withdrew it since is left out (a warning names him)."""
    from .. import api
    from ..plan_file import load_plan_file
    from ..run import require_destinations

    doc = start(fmt, "apply")
    cfg, settings = _ctx(config_path)
    require_destinations(cfg)
    saved = load_plan_file(plan_file)
    def on_warnings(lines):
        print_warnings(lines)  # stderr in every format
        if doc is not None:
            doc["warnings"].extend(lines)

    on_warnings(saved.consent_lines())  # the consent is read again from the store, not from the source
    ledger = _open_ledger(cfg, settings)
    try:
        reports = api.apply(cfg, saved, ledger, settings, allow_mass_change=allow_mass_change,
                            on_warnings=on_warnings)  # those left out: their consent withdrawn since
    finally:
        ledger.close()
    _report(reports, doc)


def _report(reports, doc=None) -> None:
    """One line per destination (table) or ``destinations`` in the JSON document, printed last (after the
    error, when operations failed: exit 4)."""
    failed = sum(r.counts.get("failed", 0) for r in reports)
    if doc is not None:
        doc["destinations"] = [report_dict(r) for r in reports]
        # ledger_only: Plan.owners, no ESP call; kept_out: operations the contact's own choice in the ESP keeps out
        totals = ("planned", "ok", "failed", "skipped", "ledger_only", "kept_out")
        doc["counts"] = {k: sum(r.counts.get(k, 0) for r in reports) for k in totals}
    else:
        _print_reports(reports)
    if failed:
        raise DestinationError(f"{failed} operations failed; they are recorded (`rfmsync failures`) and retried "
                               f"by the next run")
    if doc is not None:
        emit(doc)


def _print_reports(reports) -> None:
    for r in reports:
        c = r.counts
        out.print(f"{r.destination}: run {r.run_id} {r.status} — {c.get('planned', 0)} changes, {c.get('ok', 0)} "
                  f"operations ok, {c.get('failed', 0)} failed (pending for the next run), "
                  f"{c.get('skipped', 0)} skipped"
                  # a contact's new customer named in the ledger alone (no ESP call): Plan.owners
                  + (f", {c['ledger_only']} recorded in the ledger only (new owner)" if c.get("ledger_only") else "")
                  # not failures: his unsubscribe (or a block) in the ESP, recorded, left out of the next plans
                  + (f", {c['kept_out']} kept out by the contact's own choice in the ESP (`rfmsync failures "
                     "--kept-out`)" if c.get("kept_out") else ""))
        for e in r.errors[:5]:
            out.print(f"  {e}", markup=False, highlight=False)


@click.command(name="sync")
@config_option
@dest_option
@as_of_option
@click.option("--dry-run", is_flag=True, help="Only show the plan (same as `rfmsync plan`).")
@click.option("--full-refresh", is_flag=True, help="Push every field and tag again, whatever the ledger says; moves a destination whose "
              "audience or type was changed (with --destination NAME: that one only).")
@click.option("--reconcile", is_flag=True, help="Read managed tags/lists from the ESP and repair drift.")
@click.option("--full", "full_pull", is_flag=True, help="Pull the whole history, ignoring the source cursor.")
@reading_options
@mass_change_option
@format_option
def sync_cmd(config_path, destinations, as_of, dry_run, full_refresh, reconcile, full_pull, reread, verify,
             allow_mass_change, fmt):
    """Pull → segment → plan → guards → apply → record, for every (or the named) destination.

    A guard that trips stops the run before any ESP write: exit 6, one line per guard, the run recorded as
    `refused`; when only max_removal_pct or max_change_pct trip, the consent withdrawals (max_withdrawal_pct not
    tripped) still go out alone, and a last line says how many (see docs/safety.md)."""
    from .. import api
    from ..run import require_destinations

    doc = start(fmt, "sync")
    cfg, settings = _ctx(config_path)
    require_destinations(cfg)
    if dry_run:
        result = _dry_run(cfg, settings, destinations, as_of, full_refresh=full_refresh, reconcile=reconcile,
                          reading=reading(reread, verify))
        _emit_plans(result, fmt, None)
        return

    def on_warnings(lines):
        print_warnings(lines)  # stderr in every format
        if doc is not None:
            doc["warnings"].extend(lines)

    ledger = _open_ledger(cfg, settings)
    try:
        reports = api.run_sync(cfg, ledger, settings, destinations=destinations, as_of=as_of,
                               allow_mass_change=allow_mass_change, full_refresh=full_refresh, reconcile=reconcile,
                               full_pull=full_pull, on_warnings=on_warnings, reading=reading(reread, verify))
    finally:
        ledger.close()
    _report(reports, doc)


@click.command()
@config_option
@click.option("--limit", default=20, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def runs(config_path, limit, fmt):
    """Recent runs with counts, duration and errors. A run that sent a refused plan's consent withdrawals alone
    shows its status as `succeeded (withdrawals alone)` (JSON: `withdrawals_alone` in its counts), or as `abandoned
    (withdrawals alone)` when its process died during it."""
    from ..planning.withdrawals import alone_run

    rows = _read_ledger(config_path, lambda ledger: ledger.recent_runs(limit))
    _print_rows(rows, fmt, "Recent runs", ("id", "kind", "destination", "started", "duration s", "status", "counts",
                                           "error"),
                lambda r: (str(r["id"]), r["kind"], r.get("destination") or "", str(r["started_at"])[:19],
                           f"{r['duration_s']:.1f}" if r.get("duration_s") is not None else "",
                           r["status"] + (" (withdrawals alone)" if alone_run(r) else ""),
                           json.dumps(r.get("counts") or {}), (r.get("error") or "")[:80]))


@click.command()
@config_option
@click.option("--destination", default=None, help="Only this destination.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--kept-out", "kept_out", is_flag=True,
              help="List instead the operations the contact's own choice in the ESP keeps out (he unsubscribed, his "
                   "address is blocked): not failures, never retried.")
def failures(config_path, destination, fmt, kept_out):
    """Pending failed items with their reasons (retried by the next sync)."""
    if kept_out:
        rows = _read_ledger(config_path, lambda ledger: ledger.kept_out_list(destination))
        _print_rows(rows, fmt, f"Kept out by the contact's own choice ({len(rows)})",
                    ("destination", "contact", "operation", "reason", "since"),
                    lambda r: (r["destination"], r["key"], r["op"], (r.get("reason") or "")[:100],
                               str(r.get("kept_at"))[:19]))
        return
    rows = _read_ledger(config_path, lambda ledger: ledger.pending_failures(destination))
    _print_rows(rows, fmt, f"Pending failures ({len(rows)})",
                ("destination", "contact", "operation", "attempts", "last error", "last failed"),
                lambda r: (r["destination"], r["key"], r["op"], str(r["attempts"]), (r.get("last_error") or "")[:100],
                           str(r.get("last_failed_at"))[:19]))


def _read_ledger(config_path, read):
    """``read`` of the ledger as it is, opened without creating a file (an empty one when there is none yet): a
    ledger the first read-only command created next to the config would hide an older version's one
    (sync.ledger.url.config_relative)."""
    from .. import api

    cfg, settings = _ctx(config_path)
    ledger = api.existing_ledger(cfg, settings)
    try:
        rows = read(ledger)
    finally:
        ledger.close()
    # errors stored before the secrets in them were masked (an older rfmsync): masked as they are printed; the
    # other columns are data (a contact's e-mail, a destination's name) that a secret which is a word would garble
    return [{k: mask(v) if k in _ERROR_COLUMNS and isinstance(v, str) else v for k, v in r.items()} for r in rows]


_ERROR_COLUMNS = frozenset({"error", "last_error", "reason"})  # of the runs, failures and the kept out


def _print_rows(rows, fmt, title, columns, cells) -> None:
    """``--format json``: the rows as they are; else a table of ``cells(row)``."""
    if fmt == "json":
        click.echo(json.dumps(rows, default=str, indent=1))
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for r in rows:
        table.add_row(*cells(r))
    out.print(table)


COMMANDS = [pull, plan, apply, sync_cmd, runs, failures]
