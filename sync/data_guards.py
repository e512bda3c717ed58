"""The data guards (``min_orders``, ``max_bad_rows_pct``, ``max_customer_drop_pct``) and the scoring guard
(``recency_scores``): the numbers of the input they judge (:class:`DataStats`) and their lines. :mod:`sync.guards`
describes every guard and re-exports these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from connectors.counts import agrees, counted
from segmentation.scoring import RecencyCollapse

from .config import GuardsConfig

@dataclass(frozen=True)
class DataStats:
    """What the data guards look at: ``orders`` the run would segment, the valid and bad ``rows`` of the read
    (``rows`` counts valid orders read; bad rows are rows that could not be used), ``customers`` segmented;
    ``window``: the rows are an incremental pull's window, not the whole history (``min_bad_rows`` applies)."""

    orders: int
    rows: int
    bad_rows: int
    customers: int | None = None
    recency: RecencyCollapse | None = None  # the segments' recency scores collapsed (a quantile run)
    window: bool = False

    def counts(self) -> dict[str, int]:
        """For a run's counts (the next run compares its customer count with this one) and a saved plan's
        ``data`` (``apply`` judges them again); a collapse of the recency scores adds its numbers."""
        out = {"orders": self.orders, "bad_rows": self.bad_rows}
        if self.customers is not None:
            out["customers"] = self.customers
        if self.window:
            out["incremental_pull"] = 1
        if self.recency is not None:
            c = self.recency
            out |= {"recency_best_customers": c.customers, "recency_best_days": c.days, "recency_best_r": c.score,
                    "recency_levels": c.levels}
            if c.within is not None:
                out["recency_within_days"] = c.within
        return out

    @classmethod
    def from_counts(cls, data: Mapping[str, Any]) -> "DataStats":
        """The stats a saved plan's ``data`` holds (:meth:`counts` with ``rows``)."""
        customers = data.get("customers")
        recency = None
        if "recency_best_customers" in data:
            recency = RecencyCollapse(customers=data["recency_best_customers"],
                                      total=customers or data["recency_best_customers"],
                                      days=data.get("recency_best_days", 0), score=data.get("recency_best_r", 1),
                                      levels=data.get("recency_levels", 5), within=data.get("recency_within_days"))
        return cls(orders=data.get("orders", 0), rows=data.get("rows", data.get("orders", 0)),
                   bad_rows=data.get("bad_rows", 0), customers=customers, recency=recency,
                   window=bool(data.get("incremental_pull")))


def pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def fmt_pct(value: float) -> str:
    """``100``, ``12.5``: no trailing ``.0``."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def data_lines(g: GuardsConfig, stats: DataStats) -> list[str]:
    """The data guards that do not need a previous run: ``min_orders`` and ``max_bad_rows_pct``."""
    lines = []
    if stats.orders < g.min_orders:
        lines.append(f"guard min_orders: {counted(stats.orders, 'valid order')}; at least {g.min_orders} needed")
    total = stats.rows + stats.bad_rows
    share = pct(stats.bad_rows, total)
    # a quiet incremental window holds a handful of rows: fewer than min_bad_rows bad ones are judged by the
    # share only when they outnumber the valid rows read (all four changed orders bad: a broken mapping, whose
    # rows the cursor would move past for good); a whole history (a file, a --full pull) by the share alone
    least = max(g.min_bad_rows, 1) if stats.window else 1
    if share > g.max_bad_rows_pct and (stats.bad_rows >= least or stats.bad_rows > stats.rows):
        lines.append(f"guard max_bad_rows_pct: {stats.bad_rows} of {counted(total, 'row')} ({fmt_pct(share)} %) "
                     f"{agrees(stats.bad_rows, 'is', 'are')} bad; "
                     f"limit {fmt_pct(g.max_bad_rows_pct)} %")
    return lines


def recency_collapse_text(c: RecencyCollapse) -> str:
    """What a collapse of the recency scores is, in numbers (the warning's and the guard's middle part)."""
    where = "the score of the least recent customers" if c.score == 1 else "in the lower half of the scores"
    share = f"{c.customers} of {counted(c.total, 'customer')} ({fmt_pct(pct(c.customers, c.total))} %)"
    if c.within is not None:
        return (f"{share} bought within the last {counted(c.within, 'day')} (the newest {counted(c.days, 'day')} "
                f"ago) yet {agrees(c.customers, 'scores', 'score')} R = {c.score} of {c.levels}, {where}")
    return (f"{share} {agrees(c.customers, 'shares', 'share')} the best recency ({counted(c.days, 'day')}) yet "
            f"{agrees(c.customers, 'scores', 'score')} R = {c.score} of {c.levels}, {where}")


#: what to do about collapsed recency scores (the warning and the guard)
RECENCY_ADVICE = ('set [segmentation] method = "thresholds" (for good in a shop whose customers buy every week, by '
                  "subscription or regular reorders: quantiles put last week's buyers in Churn), check that the "
                  "ordered_at column is the order's date (not the export's), or, in a young shop, wait for more "
                  "history")


def scoring_lines(stats: DataStats) -> list[str]:
    """The scoring guard ``recency_scores``: quantile scores that tag the newest buyers as lost (Churn, win-back),
    also on a first sync (the plan guards see nothing there). ``--allow-mass-change`` lifts it."""
    return [recency_scores_line(stats.recency)] if stats.recency is not None else []


def recency_scores_line(c: RecencyCollapse, *, webhook: bool = False) -> str:
    """The ``recency_scores`` guard's line; a webhook resync's (refused when the last full run's scores collapsed,
    its cut points would score the newest buyers as lost) cannot be overridden, a full run's can."""
    way_out = ("webhook resyncs wait for a full sync whose scores do not collapse" if webhook
               else "or sync anyway with --allow-mass-change")
    return (f"guard recency_scores: {recency_collapse_text(c)}: the sync would tag the newest buyers as lost; "
            f"{RECENCY_ADVICE}, {way_out}")


def customer_drop_line(g: GuardsConfig, customers: int, previous: int | None, destination: str) -> str | None:
    """``max_customer_drop_pct`` against the last successful run of ``destination`` (None: first run)."""
    if previous is None or previous <= 0 or customers >= previous:
        return None
    drop = pct(previous - customers, previous)
    if drop <= g.max_customer_drop_pct:
        return None
    return (f"guard max_customer_drop_pct: {counted(customers, 'customer')}, {previous} at the last successful run of "
            f"{destination} ({fmt_pct(drop)} % fewer); limit {fmt_pct(g.max_customer_drop_pct)} %")


def check_source_lines(g: GuardsConfig, orders: int, bad_rows: int) -> list[str]:
    """What ``rfmsync check`` reports (exit 3) so that ``rfmsync check && rfmsync sync`` stops early: the data
    guards a read of ``orders`` valid orders and ``bad_rows`` bad rows trips. (``max_customer_drop_pct`` needs
    the segmented customers and the ledger: ``sync`` checks it.)"""
    return data_lines(g, DataStats(orders=orders, rows=orders, bad_rows=bad_rows))
