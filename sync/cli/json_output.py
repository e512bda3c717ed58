"""``--format json`` on ``check``, ``pull``, ``sync``, ``apply`` and ``demo``: one JSON object on stdout.

A command asked for JSON starts its document with :func:`start` (kept on the click context), fills it as it
goes (counts, warnings, per destination results) and prints it last with :func:`emit`. When the command fails,
the error printer in :mod:`.main` prints the same document with ``exit_code`` and ``error`` instead (and
``guards``, one line per tripped guard, and ``withdrawals_applied``, the runs that sent the consent withdrawals alone,
when a guard refused the run), so stdout is one JSON object in every case.
"""

from __future__ import annotations

import json

import click

format_option = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="json: one JSON object on stdout (counts, warnings, per destination results, exit_code, error).")


def start(fmt: str, command: str) -> dict | None:
    """The JSON document of this run (``None`` in table mode), registered for the error printer."""
    if fmt != "json":
        return None
    doc = {"command": command, "exit_code": 0, "error": None, "warnings": []}
    click.get_current_context().ensure_object(dict)["json"] = doc
    return doc


def emit(doc: dict) -> None:
    click.echo(json.dumps(doc, ensure_ascii=False, indent=1, default=str))


def emit_error(ctx: click.Context, code: int, message: str, exc: BaseException) -> bool:
    """Print the command's JSON document with its error; False when the command was not asked for JSON."""
    doc = (ctx.obj or {}).get("json") if isinstance(ctx.obj, dict) else None
    if doc is None:
        return False
    doc["exit_code"] = code
    doc["error"] = message
    # a GuardRefusedError (one line per tripped guard): the command's own, or another destination's when a sync's
    # first failure was something else (a vendor down) and a later destination's re-plan was refused
    refused = [e for e in (exc, *getattr(exc, "other_failures", ())) if isinstance(getattr(e, "lines", None), list)]
    if refused:
        doc["guards"] = [line for e in refused for line in e.lines]
        # and the destinations whose consent withdrawals went out alone while the guards held the rest
        doc["withdrawals_applied"] = [report_dict(r) for e in refused for r in getattr(e, "applied", ())]
    emit(doc)
    return True


def report_dict(r) -> dict:
    """One destination's :class:`sync.engine.ApplyReport`."""
    return {"destination": r.destination, "run_id": r.run_id, "status": r.status, "counts": dict(r.counts),
            "errors": list(r.errors)}
