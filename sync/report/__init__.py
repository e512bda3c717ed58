"""``rfmsync report``: one offline HTML page from a segments run (see docs/report.md).

:mod:`.data` computes the numbers (aggregates only, in DuckDB), :mod:`.charts` draws them as inline SVG,
:mod:`.render` fills the Jinja2 template (autoescape on), :mod:`.playbook` holds the "what to do" lines.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..pipeline import SegmentsRun
from .data import build_report_data
from .render import render_html

__all__ = ["build_report_data", "default_report_path", "render_html", "report_html", "report_run"]


def report_run(cfg: Config, as_of=None, settings=None, *, reading=None) -> SegmentsRun:
    """The segments run a page is built from (``rfmsync report``, ``demo``, ``GET /report``): with the
    predictions and the holdout check; the caller closes it."""
    from .. import api

    extra = {"reading": reading} if reading is not None else {}
    return api.segments(cfg, as_of, predict=True, holdout=True, settings=settings, **extra)


def default_report_path(cfg: Config, as_of) -> Path:
    """``rfmsync-report-<as_of>.html`` next to the config."""
    return cfg.base_dir / f"rfmsync-report-{as_of.isoformat()}.html"


def report_html(cfg: Config, run: SegmentsRun, ledger=None, *, lang: str | None = None) -> str:
    """The page of a segments run, with the ``[report]`` settings (``lang`` overrides ``[report] lang``)."""
    rc = cfg.report
    title = rc.title or Path(cfg.base_dir).resolve().name
    return render_html(build_report_data(run, ledger), title=title, lang=lang or rc.lang,
                       currency_symbol=rc.currency_symbol, playbook=rc.playbook,
                       reminder_lead_days=cfg.segmentation.reminder_lead_days)
