"""``rfmsync check``: the config, the source (credentials, or every row of a file export), each destination."""

from __future__ import annotations

import click

from ..errors import ConfigError, DataError
from .json_output import emit, format_option, start
from .main import config_option, load
from .output import out, print_warnings, status


@click.command()
@config_option
@click.option("--limit", default=50, show_default=True, help="Bad rows to list.")
@click.option("--strict", is_flag=True, help="Exit 3 when any row is bad.")
@click.option("--offline", is_flag=True, help="Do not contact the ESPs: skip the destination checks.")
@format_option
def check(config_path, limit, strict, offline, fmt):
    """Validate the config and the source (files or CRM credentials); list bad rows; check each destination
    read-only (credentials accepted, audience/account reachable; exit 2 when not)."""
    import duckdb

    from connectors.counts import counted
    from connectors.file_consent import consent_lines
    from connectors.file_paths import left_out_lines
    from connectors.tables import create_tables

    from ..config_checks import check_before_sync
    from ..guards import check_source_lines
    from ..ledger import ledger_url
    from ..pipeline import configured_source
    from ..settings import load_settings

    doc = start(fmt, "check")
    say = out.print if doc is None else (lambda *a, **k: None)  # JSON: the document only, printed last
    cfg = load(config_path)
    ledger_url(cfg, load_settings())  # where sync would stop (exit 2): an older version's ledger elsewhere
    check_before_sync(cfg, load_settings())  # the ledger URL parsed, [predict] validated: as sync would
    source = configured_source(cfg)
    say(f"config {cfg.path}: ok")
    account = source.check()  # an API source names its account; a file export is checked by reading it
    if doc is not None:
        doc.update(config=str(cfg.path), source={"type": cfg.source.get("type", "file")}, destinations=[])
    if account is not None:
        say(f"source {cfg.source.get('type')}: {account}")
        if doc is not None:
            doc["source"]["account"] = str(account)
        _source_warnings(cfg, account, doc)
        _check_destinations(cfg, offline, say, doc)
        _done(doc)
        return
    con = duckdb.connect()
    create_tables(con)
    with status("Reading the source…"):
        result = source.pull(con, None)
    say(f"source {cfg.source.get('type', 'file')}: {counted(result.orders, 'order')}, "
        f"{counted(result.contacts, 'contact')}, {counted(result.bad_row_count, 'bad row')}")
    left_out = left_out_lines([source.cfg.orders, source.cfg.contacts], source.base_dir) \
        if hasattr(source, "base_dir") else []  # a file export: the office suites' own files beside workbooks
    for line in left_out:
        say(f"  {line}", highlight=False, markup=False)
    if result.identity is not None:
        say(f"  {result.identity}", highlight=False, markup=False)
    for bad in result.bad_rows[:limit]:
        say(f"  {bad}", highlight=False, markup=False)
    if result.bad_row_count > limit:
        say(f"  … and {result.bad_row_count - limit} more")
    # consent values read neither as yes nor as no, then the staging's own (a repeated order id, …)
    unread = consent_lines(result) + list(result.warnings)
    print_warnings(unread)
    if doc is not None:
        doc["counts"] = {"orders": result.orders, "contacts": result.contacts, "bad_rows": result.bad_row_count}
        doc["bad_rows"] = [str(bad) for bad in result.bad_rows[:limit]]
        doc["left_out"] = left_out
        doc["warnings"].extend(unread)
        if result.identity is not None:
            doc["source"]["identity"] = str(result.identity)
    _check_destinations(cfg, offline, say, doc)
    if strict and result.bad_row_count:
        raise DataError(counted(result.bad_row_count, "bad row"))
    guard_lines = check_source_lines(cfg.guards, result.orders, result.bad_row_count)
    if guard_lines:  # a sync would be refused: stop `check && sync` here
        if doc is not None:
            doc["guards"] = guard_lines
        raise DataError("\n".join(guard_lines))
    _done(doc)


def _source_warnings(cfg, account, doc) -> None:
    """What the source's check found about the config (a Shopify shop in another time zone): ``warning:``
    lines on stderr, and the JSON document's ``warnings``."""
    from connectors.source import Account

    lines = [f"source {cfg.source.get('type')}: {w}" for w in account.warnings] \
        if isinstance(account, Account) else []
    print_warnings(lines)
    if doc is not None:
        doc["warnings"].extend(lines)


def _done(doc) -> None:
    if doc is not None:
        emit(doc)


def _check_destinations(cfg, offline: bool, say=out.print, doc=None) -> None:
    """One read-only line per destination (``Destination.check``); no writes. Exit 2 when credentials are
    rejected or the audience is missing, 4 when an ESP cannot be reached."""
    from ..destinations.registry import make_destination
    from ..errors import DestinationConfigError, DestinationError
    from ..settings import load_settings

    def result(dest, status: str, message: str) -> None:
        say(f"destination {dest.name} ({dest.type}): {message}", markup=False, highlight=False)
        if doc is not None:
            doc["destinations"].append({"destination": dest.name, "type": dest.type, "status": status,
                                        "message": message})

    if offline:
        if cfg.destinations:
            say("destinations: not checked (--offline)")
            if doc is not None:
                doc["destinations"] = [{"destination": d.name, "type": d.type, "status": "not checked",
                                        "message": "--offline"} for d in cfg.destinations]
        return
    settings, rejected, unreachable = load_settings(), [], []
    for dest in cfg.destinations:
        try:
            client = make_destination(dest, settings, required=False)
            if client is None:
                result(dest, "not checked", f"not checked, {dest.spec.key_env} is not set")
                continue
            seen = str(client.check())
            client.check_fields(dest.fields)  # what prepare would refuse before any write (names, types)
            result(dest, "ok", seen)
        except DestinationConfigError as exc:
            rejected.append(dest.name)
            result(dest, "rejected", str(exc))
        except DestinationError as exc:
            unreachable.append(dest.name)
            result(dest, "not reachable", f"not reachable: {exc}")
    if rejected:
        raise ConfigError(f"destination check failed: {', '.join(rejected)} (credentials, audience or fields)")
    if unreachable:
        raise DestinationError(f"destination check failed: {', '.join(unreachable)} not reachable")


COMMANDS = [check]
