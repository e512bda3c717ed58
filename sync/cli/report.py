"""``rfmsync report``: write the one-page HTML report of the shop and print its path."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from .main import as_of_option, config_option, load, reading, reading_options
from .output import out, print_warnings, status


@click.command()
@config_option
@as_of_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: rfmsync-report-<as_of>.html next to the config).")
@click.option("--lang", type=click.Choice(["en", "ru"]), default=None, help="Page language (default: [report] lang).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
@reading_options
def report(config_path, as_of, output, lang, open_browser, reread, verify):
    """Write one self-contained HTML page (segments, RFM grid, falling-asleep boundary, predictions,
    destinations, movement between segments) that needs no network to view, and print its path."""
    from .. import api
    from ..config_checks import playbook_unknown
    from ..report import default_report_path, report_html, report_run
    from ..settings import load_settings

    cfg = load(config_path)
    settings = load_settings()
    if unknown := playbook_unknown(cfg):
        print_warnings([f"{unknown}: the report uses its default line there"])
    with status("Scoring customers and fitting models…"):
        run = report_run(cfg, as_of, settings, reading=reading(reread, verify))
    print_warnings(run.warnings)
    try:
        ledger = api.existing_ledger(cfg, settings)
        try:
            html = report_html(cfg, run, ledger, lang=lang)
        finally:
            ledger.close()
        path = Path(output) if output else default_report_path(cfg, run.result.as_of)
    finally:
        run.close()
    path.write_text(html, encoding="utf-8")
    out.print(str(path), highlight=False, markup=False, soft_wrap=True)
    if open_browser:
        webbrowser.open(path.resolve().as_uri())


COMMANDS = [report]
