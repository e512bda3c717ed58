"""``rfmsync history``: segment sizes at each recorded run, the from → to matrix, pruning."""

from __future__ import annotations

import csv
import io
import json

import click
from rich.table import Table

from .main import config_option, load
from .output import out

_DATE = click.DateTime(formats=["%Y-%m-%d"])


@click.command()
@config_option
@click.option("--since", type=_DATE, default=None, help="Only records on or after this date (YYYY-MM-DD).")
@click.option("--matrix", is_flag=True,
              help="Print the from → to transition matrix (customers per pair of segments) instead of the sizes.")
@click.option("--from", "date_from", type=_DATE, default=None,
              help="Matrix: the earlier date (default: the record before --to). Implies --matrix.")
@click.option("--to", "date_to", type=_DATE, default=None,
              help="Matrix: the later date (default: the last record). Implies --matrix.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--prune-before", type=_DATE, default=None,
              help="Delete the history that lies wholly before this date (rows that ended by then, older records).")
def history(config_path, since, matrix, date_from, date_to, fmt, prune_before):
    """Segment history: the size of each segment at every recorded run (each successful sync and each
    `segments --record`). A new history line starts when the preset or the rules change, and is shown as such.
    With --matrix (or --from/--to): how many customers went from each segment to each other one between two
    recorded dates (default: the last two)."""
    from .. import api

    cfg = load(config_path)
    if prune_before is not None:
        if matrix or date_from or date_to or since:
            raise click.UsageError("--prune-before goes alone")
        done = api.prune_history(cfg, prune_before.date())
        if fmt == "json":
            click.echo(json.dumps(done))
        else:
            out.print(f"pruned the segment history before {prune_before.date()}: {done['rows']} rows, "
                      f"{done['records']} records, {done['lines']} lines")
        return
    day = (lambda d: d.date() if d else None)
    if since and (matrix or date_from or date_to):
        raise click.UsageError("--since is for the sizes; the matrix takes --from and --to")
    if matrix or date_from or date_to:
        report = api.history(cfg, matrix=True, date_from=day(date_from), date_to=day(date_to))
        _emit_matrix(report, fmt)
    else:
        _emit_sizes(api.history(cfg, since=day(since)), fmt)


def _emit_sizes(report: dict, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(report, ensure_ascii=False, indent=2, default=str))
        return
    if fmt == "csv":
        click.echo(_csv(report["sizes"], ["as_of", "line", "segment", "customers"]), nl=False)
        return
    if not report["records"]:
        out.print("No segment history yet: every successful sync records one, and so does segments --record.")
        return
    lines = {ln["line"]: ln for ln in report["lines"]}
    by_line: dict[int, list[dict]] = {}
    for r in report["records"]:
        by_line.setdefault(r["line"], []).append(r)
    for n, recs in by_line.items():
        ln = lines.get(n, {})
        first = n == min(lines, default=n)
        out.print(f"History line {n}: preset {ln.get('preset')}, rules {ln.get('rules_hash')}, started on "
                  f"{ln.get('started_on')}" + ("" if first else
                                               " — a new line: the preset or the rules changed, so its sizes are "
                                               "not comparable with the line before and nobody moved across it"))
        segs = sorted({s["segment"] for s in report["sizes"] if s["line"] == n})
        table = Table()
        for col in ["as of", "source", *segs, "customers"]:
            table.add_column(col, justify="left" if col in ("as of", "source") else "right")
        counts = {(s["as_of"], s["segment"]): s["customers"] for s in report["sizes"] if s["line"] == n}
        for r in recs:
            table.add_row(str(r["as_of"]), r["source"], *(str(counts.get((r["as_of"], s), 0)) for s in segs),
                          str(r["customers"]))
        out.print(table)


def _emit_matrix(report: dict, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(report, ensure_ascii=False, indent=2, default=str))
        return
    if fmt == "csv":
        click.echo(_csv(report["matrix"], ["from", "to", "customers"]), nl=False)
        return
    rows = sorted({m["from"] for m in report["matrix"]})
    cols = sorted({m["to"] for m in report["matrix"]})
    counts = {(m["from"], m["to"]): m["customers"] for m in report["matrix"]}
    table = Table(title=f"Segment moves {report['from']} → {report['to']} (line {report['line']}; rows: from, "
                        f"columns: to)")
    table.add_column("from \\ to")
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(r, *(str(counts.get((r, c), 0)) for c in cols))
    out.print(table)
    moved = sum(n for (f, t), n in counts.items() if f != t)
    out.print(f"{moved} of {sum(counts.values())} customers moved")


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


COMMANDS = [history]
