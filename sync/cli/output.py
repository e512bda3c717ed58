"""Terminal output of the CLI: the consoles, errors, warnings, tables (segments, plans, predictions).

User text (paths, column names, values, segment and destination names) is printed literally:
:class:`SafeConsole` never interprets it: no rich markup (``[/сум]`` stays ``[/сум]``), no emoji codes,
and control characters (ANSI escapes, NUL, carriage returns, bidi overrides) are shown as visible escapes
(``\\x1b``, ``\\x00``, ``\\u202e``) rather than sent raw to the terminal or dropped. Style is given explicitly
with :func:`styled` / :class:`rich.text.Text`, never by markup in a string.
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterable, Sequence

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from connectors.counts import agrees, counted

if TYPE_CHECKING:
    from ..planning.plan import Plan

# C0 controls but tab and newline, DEL, C1 controls, and the bidi embeddings/overrides/isolates that can
# make a terminal show text in another order than it is (Trojan Source), and the Unicode line separators.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object) -> str:
    """``text`` with every unsafe control character replaced by a visible escape; everything else as is."""
    return _UNSAFE.sub(_escape, str(text))


def styled(text: object, style: str) -> Text:
    """A styled piece of output (``Text.assemble(styled("error:", "bold red"), " ", message)``)."""
    return Text(visible(text), style=style)


class SafeConsole(Console):
    """A rich Console for user text: markup and emoji codes off, control characters made visible.

    Every string it renders (``print`` arguments, table cells and titles) goes through :meth:`render_str`.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs) -> Text:
        kwargs["markup"] = False  # even when a caller asks for it: a message may carry a user's "[/x]"
        kwargs["emoji"] = False
        return super().render_str(visible(text), **kwargs)


_WIDTH = None if sys.stdout.isatty() else 120  # pipes and files get full rows, not an 80-column wrap
out = SafeConsole(soft_wrap=True, width=_WIDTH)
err = SafeConsole(stderr=True, soft_wrap=True, width=_WIDTH)


def print_error(kind: str, msg: str) -> None:
    """``kind: msg`` on stderr, the message literally (control characters as visible escapes)."""
    try:
        err.print(Text.assemble(styled(f"{kind}:", "bold red"), " ", visible(msg)), highlight=False)
    except Exception:  # e.g. a stderr that cannot encode the text: fall back to plain ASCII escapes
        line = f"{kind}: {visible(msg)}\n"
        sys.stderr.write(line.encode("ascii", "backslashreplace").decode("ascii"))


@contextmanager
def status(message: str):
    """A spinner on stderr while a slow step runs (when stderr is a terminal and not ``--quiet``; see
    :mod:`.progress`); the steps inside it show their own bars under it."""
    from ..progress import step

    with step(message):
        yield


def info(message: str) -> None:
    """An info line on stderr (``wrote 1200 customers to out.csv``); ``--quiet`` leaves it out."""
    ctx = click.get_current_context(silent=True)
    display = (ctx.find_root().obj or {}).get("display") if ctx is not None else None
    if display is not None:
        display.info(message)
    else:
        err.print(visible(message), markup=False, highlight=False)


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
    _print_guard_counts(plans, console)
    for plan in plans:
        for note in plan.notes:
            console.print(visible(f"{plan.destination}: {note}"), markup=False, highlight=False)


def _print_guard_counts(plans: Sequence[Plan], console) -> None:
    """What the plan guards judged, per destination with managed contacts (``guard`` in the JSON): the
    withdrawals (max_withdrawal_pct) apart from the other removals (max_removal_pct) and changes (max_change_pct),
    each with its share of the managed contacts. None printed when no plan has managed contacts to judge."""
    from ..guards import fmt_pct, pct

    judged = [p for p in plans if p.guard is not None and p.guard.managed > 0]
    if not judged:
        return
    table = Table(title="Plan guards (shares of the managed contacts)")
    for col in ("Destination", "managed", "consent withdrawn", "other removals", "changed"):
        table.add_column(col, justify="left" if col == "Destination" else "right")
    for p in judged:
        g = p.guard
        table.add_row(visible(p.destination), str(g.managed),
                      *(f"{n} ({fmt_pct(pct(n, g.managed))} %)" for n in (g.withdrawn, g.removed, g.changed)))
    console.print(table)


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


def money(x: float) -> str:
    return f"{x:,.2f}".replace(",", " ")


def print_summary(run, title: str | None = None) -> None:
    """The segments table of a run, its falling-asleep boundary and its bad-row count, on stdout."""
    res = run.result
    table = Table(title=title or f"RFM segments as of {res.as_of} — preset {res.preset}, {res.method} scoring, "
                                 f"{res.levels} levels")
    for col, justify in (("Segment", "left"), ("Customers", "right"), ("% cust.", "right"), ("Revenue", "right"),
                         ("% rev.", "right"), ("Avg check", "right"), ("Avg repeat", "right")):
        table.add_column(col, justify=justify)
    for r in res.summary:
        style = "bold" if r["segment"] == "Total" else None
        table.add_row(r["segment"], f"{r['customers']:,}".replace(",", " "), f"{r['customers_pct']:.1f}",
                      money(r["revenue"]), f"{r['revenue_pct']:.1f}", money(r["avg_check"]),
                      f"{r['avg_repeat_purchases']:.2f}", style=style)
    out.print(table)
    b = res.boundary
    if b:
        if b.get("days") is not None:  # the knee says no day where returns become rare: its reason says why
            why = (f"the return curve's knee: {b.get('reason')}" if b.get("method") == "knee" else
                   f"P(return within {b['window_days']} d) < {b['return_probability']:.0%}; method {b['method']}")
            out.print(Text.assemble("Falling-asleep boundary: ", styled(f"{b['days']} days", "bold"),
                                    f" of silence ({why}); suggested reminder on day ",
                                    styled(b["reminder_day"], "bold"), "."))
        else:
            out.print(f"Falling-asleep boundary: not computed ({b.get('reason')}).")
        if b.get("gap_percentiles"):
            out.print("Days between purchases: " + ", ".join(f"{k} {v}" for k, v in b["gap_percentiles"].items()))
    if run.bad_row_count:
        out.print(Text.assemble(styled(bad_rows_line(run.bad_row_count), "yellow"), " (see `rfmsync check`)."))


def bad_rows_line(n: int) -> str:
    """``2 bad rows were left out``: what a run's outputs say of the source rows it could not read."""
    return f"{counted(n, 'bad row')} {agrees(n, 'was', 'were')} left out"


def print_bad_rows(run) -> None:
    """The bad-row count of a run whose stdout is data (a CSV, JSON, a listing): on stderr, never among the data;
    the summary table says it on stdout under the table (:func:`print_summary`). A ``warning:`` line: rows left
    out change the data, so ``--quiet`` keeps it."""
    if run.bad_row_count:
        print_warnings([f"{bad_rows_line(run.bad_row_count)} (see `rfmsync check`)."])


def print_segment_customers(segment: str, rows: list[dict]) -> None:
    """``segments --segment NAME``: that segment's customers, one line each."""
    table = Table(title=f"{segment}: {counted(len(rows), 'customer')} shown")
    for col, justify in (("Customer", "left"), ("Name", "left"), ("E-mail", "left"), ("Phone", "left"),
                         ("RFM", "right"), ("Monetary", "right"), ("Last order", "left"), ("Churn risk", "left"),
                         ("Next order", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["customer_id"], r["name"] or "", r["email"] or "", r["phone"] or "",
                      f"{r['r']}{r['f']}{r['m']}", money(r["monetary"]), r["last_order"] or "",
                      r["churn_risk"] or "", r["next_order_date"] or "")
    out.print(table)


def print_predict(report: dict) -> None:
    """``rfmsync predict``: the fitted parameters, fit quality and churn risk per segment."""
    from segmentation.fitnotes import beyond_horizon_line

    bg, gg = report.get("bgnbd") or {}, report.get("gamma_gamma") or {}
    if report.get("reason"):
        out.print(Text.assemble(styled("Models not fitted:", "yellow"), " ", visible(report["reason"])))
    if bg.get("r") is not None:
        out.print(f"BG/NBD ({bg.get('time_unit')}): r={bg['r']:.4f} alpha={bg['alpha']:.4f} a={bg['a']:.4f} "
                  f"b={bg['b']:.4f} log-likelihood={bg['log_likelihood']:.2f}")
    if gg.get("p") is not None:
        out.print(f"Gamma-Gamma: p={gg['p']:.4f} q={gg['q']:.4f} gamma={gg['gamma']:.4f}")
    if report.get("next_order_beyond_horizon"):
        out.print(beyond_horizon_line(report["next_order_beyond_horizon"], report["horizon_days"]),
                  markup=False, highlight=False)
    hold = report.get("holdout")
    if hold:
        out.print(f"Holdout: {json.dumps(hold, default=str)}")
    table = Table(title="Churn risk by segment")
    risks = ["low", "medium", "high", "unknown"]
    table.add_column("Segment")
    for r in risks:
        table.add_column(r, justify="right")
    for seg, counts in report.get("churn_risk_by_segment", {}).items():
        table.add_row(seg, *[str(counts.get(r, 0)) for r in risks])
    out.print(table)
