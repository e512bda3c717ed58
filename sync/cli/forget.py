"""``rfmsync forget``: the ledger forgets a destination removed from the config (:mod:`sync.forget`)."""

from __future__ import annotations

import json

import click

from .main import config_option, load
from .output import out


@click.command()
@config_option
@click.option("--destination", "destination", required=True, metavar="NAME",
              help="The destination, no longer in the config, whose ledger state to forget.")
@click.option("--yes", is_flag=True, help="Forget it (without: only say what the ledger holds under it).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def forget(config_path, destination, yes, fmt):
    """Forget what the ledger holds of a destination removed from the config: its contacts, the tags/lists it
    says rfmsync gave them, its audience. Its removed-destination warning then goes. Nothing in the ESP is
    touched: the tags stay on the contacts. Without --yes, only says what it would forget. Refused for a
    destination still in the config or named by a renamed_from; never beside a sync of it (exit 75 while one runs)."""
    from .. import api
    from ..settings import load_settings

    done = api.forget(load(config_path), load_settings(), destination, yes=yes)
    if fmt == "json":
        click.echo(json.dumps({"destination": done.destination, "target": done.target, "contacts": done.contacts,
                               "tags": dict(done.tags), "failures": done.failures, "in_flight": done.in_flight,
                               "forgotten": done.done},
                              ensure_ascii=False))
    else:
        out.print(done.text(), markup=False, highlight=False)


COMMANDS = [forget]
