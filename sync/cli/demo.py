"""``rfmsync demo``: a realistic sample shop, its segments, the Mailchimp dry-run plan (no account needed) and
its report page."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from .json_output import emit, format_option, start
from .output import out, print_plans, print_summary, print_warnings, status


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False), default="rfmsync-demo", show_default=True,
              help="Folder for the generated sample shop.")
@click.option("--customers", default=3000, show_default=True, help="Customers in the sample shop.")
@click.option("--seed", default=42, show_default=True)
@format_option
def demo(workdir, customers, seed, fmt):
    """Build a realistic sample shop, segment it and show the Mailchimp dry-run plan (no account needed)."""
    from .. import api
    from ..config import load_config
    from ..demodata import generate_shop

    doc = start(fmt, "demo")
    with status("building the sample shop"):
        path = generate_shop(Path(workdir), customers=customers, seed=seed)
    cfg = load_config(path)
    run = api.segments(cfg, _demo_as_of(cfg))
    print_warnings(run.warnings)
    if doc is not None:
        try:
            doc["warnings"].extend(run.warnings)
            doc.update(workdir=str(path.parent), config=str(path), segments=run.to_json(),
                       bad_rows=[str(bad) for bad in run.bad_rows[:5]], plans=_demo_plans(cfg, run))
        finally:
            run.close()
        doc["report"] = str(_write_demo_report(cfg))
        emit(doc)
        return
    out.print(f"Sample shop written to {path.parent} (config {path}).")
    try:
        print_summary(run)
        for bad in run.bad_rows[:5]:
            out.print(f"  bad row: {bad}", highlight=False, markup=False)
        _print_demo_plan(cfg, run)
    finally:
        run.close()
    report = _write_demo_report(cfg)
    out.print(f"Report page: {report}", highlight=False, markup=False, soft_wrap=True)
    out.print(f"Next: `rfmsync segments --config {path} --format json`, "
              f"`rfmsync plan --config {path}`, `rfmsync check --config {path}`.")


def _demo_as_of(cfg) -> date | None:
    marker = cfg.base_dir / "AS_OF"
    return date.fromisoformat(marker.read_text().strip()) if marker.exists() else None


def _demo_planned(cfg, run) -> list:
    """The dry-run plans of the demo's sample destination against an empty, throw-away ledger."""
    from ..planning.planner import plan_all
    from ..ledger import Ledger
    from ..settings import load_settings

    if not cfg.destinations:
        return []
    ledger = Ledger.connect("sqlite://")
    try:
        with status("planning"):
            return plan_all(cfg, run, ledger, load_settings(), remote=False)
    finally:
        ledger.close()


def _print_demo_plan(cfg, run) -> None:
    if cfg.destinations:
        print_plans([p.plan for p in _demo_planned(cfg, run)], out,
                    title="Dry-run plan (sample Mailchimp mapping, empty ledger)")


def _demo_plans(cfg, run) -> list[dict]:
    """``--format json``: each plan's summary and totals (not every contact's change)."""
    keep = ("destination", "type", "warnings", "summary", "totals")
    return [{k: v for k, v in p.plan.to_json().items() if k in keep} for p in _demo_planned(cfg, run)]


def _write_demo_report(cfg):
    """The demo shop's report page (``rfmsync report``), next to its config; returns its path."""
    from ..report import default_report_path, report_html, report_run

    run = report_run(cfg, _demo_as_of(cfg))
    try:
        path = default_report_path(cfg, run.result.as_of)
        path.write_text(report_html(cfg, run), encoding="utf-8")
    finally:
        run.close()
    return path


COMMANDS = [demo]
