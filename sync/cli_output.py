"""Rendering of plans and runs for the terminal (rich)."""

from __future__ import annotations

from typing import Sequence

from rich.table import Table

from .plan import Plan


def print_plans(plans: Sequence[Plan], console, title: str = "Plan (dry run: nothing was written)") -> None:
    table = Table(title=title)
    for col, justify in (("Destination", "left"), ("Tag / list", "left"), ("+added", "right"),
                         ("−removed", "right"), ("~updated", "right"), ("new", "right"), ("skipped", "right")):
        table.add_column(col, justify=justify)
    totals = {"added": 0, "removed": 0, "updated": 0, "new": 0, "skipped": 0}
    for plan in plans:
        for row in plan.rows():
            table.add_row(row["destination"], row["target"], str(row["added"]), str(row["removed"]),
                          str(row["updated"]), str(row["new"]), str(row["skipped"]))
            for k in totals:
                totals[k] += row[k]
    table.add_row("Total", "", *(str(totals[k]) for k in ("added", "removed", "updated", "new", "skipped")),
                  style="bold")
    console.print(table)
    for plan in plans:
        for note in plan.notes:
            console.print(f"{plan.destination}: {note}")
        for warning in plan.warnings:
            console.print(f"{plan.destination}: warning: {warning}", markup=False, highlight=False)
