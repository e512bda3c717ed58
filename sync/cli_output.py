"""Rendering of plans and runs for the terminal (rich)."""

from __future__ import annotations

from typing import Iterable, Sequence

import click
from rich.table import Table

from .console import visible
from .planning.plan import Plan


def print_plans(plans: Sequence[Plan], console, title: str = "Plan (dry run: nothing was written)") -> None:
    """The plan table (destination × tag, then fields, contacts and the new contacts by status) and the notes.
    Warnings are the caller's to print (:func:`print_warnings`), on stderr."""
    table = Table(title=title)
    for col, justify in (("Destination", "left"), ("Tag / list", "left"), ("+added", "right"),
                         ("−removed", "right"), ("~updated", "right"), ("new", "right"), ("skipped", "right")):
        table.add_column(col, justify=justify)
    totals = {"added": 0, "removed": 0, "updated": 0, "new": 0, "skipped": 0}
    for plan in plans:
        for row in plan.rows():
            table.add_row(visible(row["destination"]), visible(row["target"]), str(row["added"]), str(row["removed"]),
                          str(row["updated"]), str(row["new"]), str(row["skipped"]))
            for k in totals:
                totals[k] += row[k]
        _add_new_by_status(table, plan)
    table.add_row("Total", "", *(str(totals[k]) for k in ("added", "removed", "updated", "new", "skipped")),
                  style="bold")
    console.print(table)
    for plan in plans:
        for note in plan.notes:
            console.print(visible(f"{plan.destination}: {note}"), markup=False, highlight=False)


def _add_new_by_status(table: Table, plan: Plan) -> None:
    """Under the (contacts) row: the new contacts split by the status they will get (non-zero ones only);
    contacts left out for want of consent go in the skipped column."""
    for status, n in plan.new_by_status().items():
        if n:
            new, skipped = ("", str(n)) if status == "skipped" else (str(n), "")
            table.add_row("", f"  new → {status}", "", "", "", new, skipped, style="dim")


def print_warnings(lines: Iterable[str]) -> None:
    """One ``warning: ...`` line per warning on stderr, printed literally (user text may hold ``[brackets]``)."""
    for line in lines:
        click.echo("warning: " + visible(" ".join(str(line).split("\n"))), err=True)
