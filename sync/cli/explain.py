"""``rfmsync explain``: why one customer is in their segment, and what each destination holds for them."""

from __future__ import annotations

import json

import click

from .main import as_of_option, config_option, load
from .explain_output import print_explain
from .output import print_warnings, status


@click.command()
@click.argument("customer", metavar="ID|EMAIL|PHONE")
@config_option
@as_of_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def explain(customer, config_path, as_of, fmt):
    """Explain one customer (by customer id, e-mail or phone): orders, recency/frequency/monetary, each score with
    the cut points that decided it, the rule that matched and the earlier ones that did not, the predictive fields,
    their segment history and what each destination holds for them per the ledger. Unknown customer: exit 3."""
    from .. import api

    cfg = load(config_path)
    with status("Reading orders and scoring customers…"):
        report = api.explain(cfg, customer, as_of)
    print_warnings(report["warnings"])
    if fmt == "json":
        click.echo(json.dumps(report, ensure_ascii=False, indent=2, default=str))
        return
    print_explain(report)


COMMANDS = [explain]
