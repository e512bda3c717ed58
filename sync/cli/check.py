"""``rfmsync check``: the config, the source (credentials, or every row of a file export), each destination."""

from __future__ import annotations

import click

from ..errors import ConfigError, DataError
from .main import config_option, load
from .output import out, status


@click.command()
@config_option
@click.option("--limit", default=50, show_default=True, help="Bad rows to list.")
@click.option("--strict", is_flag=True, help="Exit 3 when any row is bad.")
@click.option("--offline", is_flag=True, help="Do not contact the ESPs: skip the destination checks.")
def check(config_path, limit, strict, offline):
    """Validate the config and the source (files or CRM credentials); list bad rows; check each destination
    read-only (credentials accepted, audience/account reachable; exit 2 when not)."""
    import duckdb

    from connectors.tables import create_tables

    from ..guards import check_source_lines
    from ..pipeline import configured_source

    cfg = load(config_path)
    source = configured_source(cfg)
    out.print(f"config {cfg.path}: ok")
    account = source.check()  # an API source names its account; a file export is checked by reading it
    if account is not None:
        out.print(f"source {cfg.source.get('type')}: {account}")
        _check_destinations(cfg, offline)
        return
    con = duckdb.connect()
    create_tables(con)
    with status("Reading the source…"):
        result = source.pull(con, None)
    out.print(f"source {cfg.source.get('type', 'file')}: {result.orders} orders, {result.contacts} contacts, "
              f"{result.bad_row_count} bad rows")
    if result.identity is not None:
        out.print(f"  {result.identity}", highlight=False, markup=False)
    for bad in result.bad_rows[:limit]:
        out.print(f"  {bad}", highlight=False, markup=False)
    if result.bad_row_count > limit:
        out.print(f"  … and {result.bad_row_count - limit} more")
    _check_destinations(cfg, offline)
    if strict and result.bad_row_count:
        raise DataError(f"{result.bad_row_count} bad rows")
    guard_lines = check_source_lines(cfg.guards, result.orders, result.bad_row_count)
    if guard_lines:  # a sync would be refused: stop `check && sync` here
        raise DataError("\n".join(guard_lines))


def _check_destinations(cfg, offline: bool) -> None:
    """One read-only line per destination (``Destination.check``); no writes. Exit 2 when credentials are
    rejected or the audience is missing, 4 when an ESP cannot be reached."""
    from ..destinations.registry import make_destination
    from ..errors import DestinationConfigError, DestinationError
    from ..settings import load_settings

    if offline:
        if cfg.destinations:
            out.print("destinations: not checked (--offline)")
        return
    settings, rejected, unreachable = load_settings(), [], []
    for dest in cfg.destinations:
        label = f"destination {dest.name} ({dest.type})"
        try:
            client = make_destination(dest, settings, required=False)
            if client is None:
                out.print(f"{label}: not checked, {dest.spec.key_env} is not set", markup=False,
                          highlight=False)
                continue
            out.print(f"{label}: {client.check()}", markup=False, highlight=False)
        except DestinationConfigError as exc:
            rejected.append(dest.name)
            out.print(f"{label}: {exc}", markup=False, highlight=False)
        except DestinationError as exc:
            unreachable.append(dest.name)
            out.print(f"{label}: not reachable: {exc}", markup=False, highlight=False)
    if rejected:
        raise ConfigError(f"destination check failed: {', '.join(rejected)} (credentials or audience)")
    if unreachable:
        raise DestinationError(f"destination check failed: {', '.join(unreachable)} not reachable")


COMMANDS = [check]
