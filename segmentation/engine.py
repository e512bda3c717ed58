"""Public entry point: metrics → scores → segments → summary → boundary, all in DuckDB."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb

from .boundary import falling_asleep_boundary
from .config import SegmentationConfig, Thresholds
from .errors import RuleError
from .metrics import NegativeRevenue, build_customer_metrics, negative_revenue
from .purchase_days import PurchaseDays
from .rules import PRESETS, CompiledRules, check_rules, compile_rules, unreachable
from .scoring import RecencyCollapse, derive_cut_points, recency_collapse, score_sql
from .summary import summarise

SCORE_TABLE = "customer_segments"
CUSTOMER_COLUMNS = ("customer_id", "recency_days", "frequency", "monetary", "r", "f", "m", "rfm", "segment")


@dataclass
class SegmentationResult:
    as_of: date
    preset: str
    method: str
    levels: int
    customers: int
    segment_names: tuple[str, ...]
    summary: list[dict]
    cut_points: Thresholds
    boundary: dict = field(default_factory=dict)
    table: str = SCORE_TABLE
    #: a quantile run whose most recent buyers scored among the lost (:func:`~segmentation.scoring.recency_collapse`)
    recency_collapse: RecencyCollapse | None = None
    #: customers whose refunds exceed their sales (:func:`~segmentation.metrics.negative_revenue`)
    negative_revenue: NegativeRevenue | None = None

    def to_json(self, bad_rows: int = 0) -> dict:
        return {
            "as_of": self.as_of.isoformat(),
            "preset": self.preset,
            "method": self.method,
            "levels": self.levels,
            "customers": self.customers,
            "segments": [r for r in self.summary if r["segment"] != "Total"],
            "totals": next(r for r in self.summary if r["segment"] == "Total"),
            "boundary": self.boundary,
            "cut_points": self.cut_points.model_dump(),
            "bad_rows": bad_rows,
        }


def resolve_rules(cfg: SegmentationConfig, fields: set[str]) -> CompiledRules:
    """The config's custom rules, then its preset's, compiled for the right number of levels."""
    rules, default, levels = configured_rules(cfg)
    return compile_rules(rules, default, levels, fields)


def configured_rules(cfg: SegmentationConfig) -> tuple[list[tuple[str, tuple[str, ...]]], str, int]:
    """The rules in the order they are tried (the config's custom ones, then its preset's), the default segment
    and the number of levels."""
    if cfg.preset not in PRESETS:
        raise RuleError(f"unknown segmentation preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[cfg.preset]
    levels = cfg.levels or preset.levels
    if levels not in (3, 4, 5):
        raise RuleError(f"segmentation.levels must be 3, 4 or 5, got {levels}")
    if cfg.levels and cfg.preset != "none" and cfg.levels != preset.levels:
        raise RuleError(f"preset {cfg.preset!r} is defined on {preset.levels} levels; remove levels = {cfg.levels} "
                        f"or use preset = \"none\" with your own rules")
    if cfg.preset == "none" and not cfg.rules:
        raise RuleError('preset = "none" needs [[segmentation.rules]]')
    if cfg.method == "thresholds":
        _check_thresholds(cfg.thresholds, levels)
    rules = [(r.name, tuple(r.match)) for r in cfg.rules] + list(preset.rules)
    default = cfg.default_segment or preset.default
    check_rules(rules, default, levels, custom=len(cfg.rules))
    return rules, default, levels


def unreachable_segments(cfg: SegmentationConfig) -> dict[str, list[str]]:
    """The segments of the config's rules that no customer can reach, each with the segments taking its scores
    first (:func:`~segmentation.rules.unreachable`): a preset's segment the custom rules took over wholly."""
    rules, _, levels = configured_rules(cfg)
    return unreachable(rules, levels)


def _check_thresholds(thresholds: Thresholds | None, levels: int) -> None:
    """``method = "thresholds"`` has its table, with N − 1 cut points per metric for the N levels."""
    if thresholds is None:
        raise RuleError(f'method = "thresholds" needs a [segmentation.thresholds] table: {levels - 1} ascending '
                        f"cut points for each of recency_days, frequency and monetary ({levels} levels)")
    for name in ("recency_days", "frequency", "monetary"):
        cuts = getattr(thresholds, name)
        if len(cuts) != levels - 1:
            raise RuleError(f"segmentation.thresholds.{name}: {levels} levels need {levels - 1} cut points, got "
                            f"{len(cuts)} ({cuts})")


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]


def run_segmentation(con: duckdb.DuckDBPyConnection, cfg: SegmentationConfig, as_of: date,
                     timezone: str = "UTC", *, extra_fields: str | None = None,
                     cut_points: Thresholds | None = None, customers: str | None = None,
                     with_boundary: bool = True, orders: str = "orders",
                     purchase_days: PurchaseDays | None = None, totals: str | None = None) -> SegmentationResult:
    """Score and segment every customer with a completed order up to ``as_of``.

    Creates TEMP table ``customer_segments`` (metrics, r, f, m, rfm, segment, and ``extra_fields`` columns).
    ``extra_fields``: a table keyed by customer_id whose columns become rule inputs (e.g. predictions).
    ``cut_points``: score with these thresholds instead (incremental re-scoring against the last full run).
    ``customers``: restrict to the customer ids in this table.
    ``purchase_days``: the run's purchase-day table (built by the predictions), which the boundary then reuses.
    ``totals``: per-customer totals of every order before the as-of's cut-off, read instead of the orders
    (:func:`~segmentation.metrics.build_customer_metrics`).
    """
    n = build_customer_metrics(con, as_of, timezone, orders=orders, customers=customers, totals=totals)
    fields = set(_columns(con, "customer_metrics"))
    join = ""
    if extra_fields:
        extra = [c for c in _columns(con, extra_fields) if c != "customer_id"]
        fields |= set(extra)
        join = f"LEFT JOIN {extra_fields} x USING (customer_id)"
    compiled = resolve_rules(cfg, fields)
    levels = compiled.levels
    method = "thresholds" if cut_points is not None else cfg.method
    r_sql, f_sql, m_sql = score_sql(con, method, levels, cut_points if cut_points is not None else cfg.thresholds,
                                    "customer_metrics", "cm", n)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {SCORE_TABLE} AS
        WITH scored AS (
            SELECT cm.*, {'x.* EXCLUDE (customer_id),' if join else ''}
                   CAST({r_sql} AS INTEGER) AS r, CAST({f_sql} AS INTEGER) AS f, CAST({m_sql} AS INTEGER) AS m
            FROM customer_metrics cm {join}
        )
        SELECT *, CAST(r AS VARCHAR) || CAST(f AS VARCHAR) || CAST(m AS VARCHAR) AS rfm,
               {compiled.case_sql} AS segment
        FROM scored
    """)
    derived = cut_points if cut_points is not None else derive_cut_points(con, SCORE_TABLE, levels)
    summary = summarise(con, SCORE_TABLE, compiled.names)
    collapse = recency_collapse(con, SCORE_TABLE, levels) if method == "quantile" and n else None
    boundary = (falling_asleep_boundary(con, as_of, timezone, cfg.boundary, cfg.reminder_lead_days, orders,
                                        customers=n, days=purchase_days) if with_boundary else {})
    return SegmentationResult(as_of=as_of, preset=cfg.preset, method=method, levels=levels, customers=n,
                              segment_names=compiled.names, summary=summary, cut_points=derived,
                              boundary=boundary, recency_collapse=collapse,
                              negative_revenue=negative_revenue(con, SCORE_TABLE) if n else None)
