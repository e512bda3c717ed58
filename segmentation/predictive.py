"""Predictions per customer: fit the BTYD models on ``orders`` and write ``customer_predictions``.

:func:`predict_customers` is the entry point, configured by :class:`PredictConfig` (the ``[predict]`` config
section) and summarised by :class:`PredictReport`. The models themselves (BG/NBD, Gamma-Gamma, CLV) are in
:mod:`segmentation.btyd_models`; the plain-language reasons for a model left unfitted in
:mod:`segmentation.fitnotes`; the lifecycle fields and the final table's SQL in :mod:`segmentation.lifecycle`.
Thin data leaves the model fields NULL with a reason; a holdout refit reports the fit quality.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Callable, Literal, Mapping

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import fitnotes
from . import holdout
from .btyd import DAYS_PER_UNIT, SummaryCounts
from .btyd_models import (DAYS_PER_MONTH, ONE_RATE, BgNbdParams, GammaGammaParams, clv, expected_purchases,
                          nobody_leaves, own_spend_weight, p_alive, prob_no_purchase, time_to_likely_purchase)
from .fit_cache import FitStore, NumberStore, numbers_key
from .guarded_fits import fit_bgnbd_guarded, fit_gamma_gamma_guarded
from .lifecycle import create_lifecycle_table, create_predictions_table, has_relation
from .localtime import check_timezone
from .outliers import OutlierAmounts, left_out_count, outlier_amounts, spend_rows_sql
from .purchase_days import PurchaseDays, build_purchase_days, purchase_days_for, purchase_days_query
from .refunds import TABLE as REFUNDS
from .warmup import MODEL_MODULES, import_in_background

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- entry point

class PredictConfig(BaseModel):
    """The ``[predict]`` config section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon_days: int = Field(90, gt=0, description="window for expected purchases and churn probability; a "
                              "model-based next_order_date further ahead is left NULL")
    clv_horizon_days: int = Field(365, gt=0, description="window for CLV")
    monthly_discount_rate: float = Field(0.0, ge=0.0, lt=1.0)
    time_unit: Literal["days", "weeks"] = "weeks"
    remind_days_before: int = Field(2, ge=0)
    discount_hunter_threshold: float = Field(0.5, gt=0.0, le=1.0, description="share of discounted orders")
    churn_risk_cut_points: tuple[float, float] = (0.33, 0.66)
    min_customers: int = Field(50, ge=2, description="fewer customers: predictive fields stay NULL")
    min_repeat_customers: int = Field(10, ge=2, description="fewer repeat buyers: no fit")
    min_history_days: int = Field(90, ge=1, description="shorter order history: no fit")
    holdout_days: int = Field(90, ge=0, description="fit-quality check window; 0 disables it")

    @model_validator(mode="after")
    def _cut_points_ordered(self) -> "PredictConfig":
        lo, hi = self.churn_risk_cut_points
        if not 0.0 < lo < hi < 1.0:
            raise ValueError(f"churn_risk_cut_points must satisfy 0 < low < high < 1, got {lo}, {hi}")
        return self


@dataclass(frozen=True)
class PredictReport:
    """What :func:`predict_customers` fitted; ``reason`` says why fields were left NULL."""

    as_of: date
    customers: int
    repeat_customers: int
    horizon_days: int
    clv_horizon_days: int
    time_unit: str
    churn_risk_cut_points: tuple[float, float]
    bgnbd: BgNbdParams | None = None
    gamma_gamma: GammaGammaParams | None = None
    holdout: Mapping[str, Any] = field(default_factory=dict)
    #: the holdout's customers grouped by calibration repeat purchases (0 … 6+): customers, predicted and
    #: actual purchase days in the window; for the report's chart (not part of the JSON)
    holdout_groups: tuple[Mapping[str, Any], ...] = field(default=(), repr=False, compare=False)
    reason: str | None = None
    gamma_gamma_corr: float | None = None  # corr(frequency, mean spend); the model assumes ~0
    #: plain-language lines for the run's warnings: what was not fitted, why, and what to change
    warnings: tuple[str, ...] = ()
    #: customers whose model-based next_order_date fell beyond horizon_days (left NULL)
    next_order_beyond_horizon: int = 0
    #: the run's purchase-day table, for the falling-asleep boundary to reuse (not part of the JSON)
    purchase_days: PurchaseDays | None = field(default=None, repr=False, compare=False)
    #: outlier orders (:mod:`segmentation.outliers`) the spend model's fit left out, and those in their customers'
    #: own expected_aov and clv (on a repeat purchase day): :func:`~segmentation.outliers.left_out_count`
    spend_left_out: int = 0
    spend_own: int = 0

    def to_json(self) -> dict[str, Any]:
        bg, gg = self.bgnbd, self.gamma_gamma
        return {
            "as_of": self.as_of.isoformat(),
            "bgnbd": _params_json(bg, ("r", "alpha", "a", "b", "log_likelihood")) | {"time_unit": self.time_unit},
            "gamma_gamma": _params_json(gg, ("p", "q", "gamma", "log_likelihood"),
                                        corr_frequency_spend=self.gamma_gamma_corr)
            | {"left_out_orders": self.spend_left_out},
            "customers": self.customers,
            "repeat_customers": self.repeat_customers,
            "horizon_days": self.horizon_days,
            "clv_horizon_days": self.clv_horizon_days,
            "holdout": dict(self.holdout),
            "reason": self.reason,
            "churn_risk_cut_points": list(self.churn_risk_cut_points),
            "next_order_beyond_horizon": self.next_order_beyond_horizon,
            "warnings": list(self.warnings),
        }


def _params_json(params: object | None, names: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    out = {n: (None if params is None else getattr(params, n)) for n in names}
    out.update({k: (None if params is None else v) for k, v in extra.items()})
    return out


def _currencies(con: duckdb.DuckDBPyConnection, days: PurchaseDays, as_of: date) -> list[tuple[str]]:
    """The currencies of the completed orders up to ``as_of`` (sorted) when there are several; at most one
    entry otherwise. A cheap scan without local days answers alone unless the whole history has several."""
    where = f"FROM {days.orders} WHERE status = 'completed' AND currency IS NOT NULL"
    seen = con.execute(f"SELECT DISTINCT currency {where} LIMIT 2").fetchall()
    if len(seen) <= 1:
        return seen
    return con.execute(f"SELECT DISTINCT currency {where} AND {days.day_sql} <= ? ORDER BY 1",
                       [as_of]).fetchall()


def _repeat_spend(con: duckdb.DuckDBPyConnection, days: PurchaseDays, as_of: date,
                  outliers: OutlierAmounts) -> tuple[np.ndarray, np.ndarray]:
    """(frequency, mean repeat spend) of the repeat buyers with spend, from ``customer_lifecycle``; sorted by
    value, so that the fit's sums do not depend on the order DuckDB's threads return the rows in. The ``outliers``'
    customers are counted without those orders (:func:`segmentation.outliers.spend_rows_sql`)."""
    if outliers:
        refunds = has_relation(con, REFUNDS)  # (the lifecycle's: the orders hold refunds)
        got = con.execute(spend_rows_sql(days.orders, days.day_sql, refunds), {"as_of": as_of}).fetchnumpy()
    else:
        got = con.execute("SELECT purchase_days - 1 AS x, monetary FROM customer_lifecycle "
                          "WHERE purchase_days > 1 AND monetary > 0 ORDER BY x, monetary").fetchnumpy()
    return got["x"].astype(np.float64), got["monetary"].astype(np.float64)


def _correlation(x: np.ndarray, m: np.ndarray) -> float | None:
    """corr(x, m), or None when either is the same for everyone (every repeat buyer bought on two days): there is
    no correlation then, and numpy's NaN (with a RuntimeWarning on stderr) was written as ``NaN`` into the JSON."""
    if np.ptp(x) == 0 or np.ptp(m) == 0:
        return None
    return float(np.corrcoef(x, m)[0, 1])


SUMMARY_SQL = """
    SELECT purchase_days - 1 AS x, last_day - first_day AS recency_days, $as_of::DATE - first_day AS t_days,
           count(*) AS customers
    FROM customer_lifecycle GROUP BY ALL ORDER BY ALL
"""

#: the model's numbers per distinct summary, kept as a TEMP table when ``customer_predictions`` is a view over it
MODEL_TABLE = "customer_model"
MODEL_COLUMNS = ("p_alive", "expected_purchases", "churn_probability", "days_to_next_order", "clv_per_aov")


def _summary(con: duckdb.DuckDBPyConnection, as_of: date, time_unit: str) -> SummaryCounts:
    """The BTYD summary of ``customer_lifecycle`` (which has it per customer), as its distinct rows."""
    got = con.execute(SUMMARY_SQL, {"as_of": as_of}).fetchnumpy()
    return SummaryCounts.from_arrays(got["x"], got["recency_days"], got["t_days"], got["customers"], time_unit)


def _model_table(s: SummaryCounts, cfg: PredictConfig, bg: BgNbdParams | None,
                 gg: GammaGammaParams | None) -> tuple[pa.Table, int, int]:
    """The BG/NBD numbers per distinct summary (x, recency_days, t_days) as an Arrow table (NaN → NULL), for
    :func:`~segmentation.lifecycle.create_predictions_table` to join to the customers; also how many customers
    got non-finite numbers (their rows are NULL), and how many will have ``next_order_reason`` =
    ``beyond_horizon``. ``clv_per_aov`` is the CLV of one unit of spend per purchase (NULL without a spend model):
    the table multiplies it by each customer's expected_aov.

    The last count is the predictions table's rule on the summaries: a customer gets a model-based date unless
    they have two gaps between purchase days (``gaps`` = purchase days − 1 = ``x``, so ``x < 2``), and it is beyond
    the horizon when ``ceil(days_to_next_order)`` (not NULL) exceeds ``horizon_days``; counted here, weighted by
    customers, instead of by a scan of ``customer_predictions`` (a view, when it is one, computed again)."""
    per_unit = DAYS_PER_UNIT[s.time_unit]
    rows = len(s) if bg is not None else 0  # no model: no rows, every customer's numbers are NULL
    x, t_x, T = s.x[:rows], s.t_x[:rows], s.T[:rows]
    nan = np.full(rows, np.nan)
    alive = expected = churn = next_days = value = nan
    with np.errstate(all="ignore"):
        if bg is not None:
            alive = p_alive(bg, x, t_x, T)
            expected = expected_purchases(bg, cfg.horizon_days / per_unit, x, t_x, T)
            churn = prob_no_purchase(bg, cfg.horizon_days / per_unit, x, t_x, T)
            next_days = time_to_likely_purchase(bg, x, t_x, T) * per_unit
            if gg is not None:
                value = clv(bg, np.ones(rows), x, t_x, T, cfg.clv_horizon_days / per_unit,
                            DAYS_PER_MONTH / per_unit, cfg.monthly_discount_rate)
        bad = ~np.isfinite(alive + expected + churn + (value if gg is not None else 0.0))
        bad |= (expected < 0) | (churn < -1e-12) | (churn > 1 + 1e-12)
    cols = dict(zip(MODEL_COLUMNS, (alive, expected, churn, next_days, value)))
    keys = {"x": _arrow(x), "recency_days": _arrow(s.recency_days[:rows]), "t_days": _arrow(s.t_days[:rows])}
    model = {k: _arrow(v, np.isnan(v) | bad) for k, v in cols.items()}
    weights = s.weights[:rows]
    # lifecycle.PREDICTIONS_SQL's 'beyond_horizon' rule, counted here per summary: change both together
    beyond = (x < 2) & ~bad & (np.ceil(next_days) > cfg.horizon_days)  # (NaN: not beyond, as NULL is not)
    return pa.table(keys | model), int(weights[bad].sum()), int(weights[beyond].sum())


def _arrow(values: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """An int64 or float64 numpy array as an Arrow array (``null``: where it is NULL), built on its buffer:
    ``pa.array`` on a numpy array imports pandas (0.4 s of every predicting run, which nothing else needs)."""
    values = np.ascontiguousarray(values, dtype=np.float64 if values.dtype.kind == "f" else np.int64)
    kind = pa.float64() if values.dtype.kind == "f" else pa.int64()
    if null is None or not null.any():
        return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)], null_count=0)
    valid = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(kind, len(values), [valid, pa.py_buffer(values)], null_count=int(null.sum()))


def _holdout(con: duckdb.DuckDBPyConnection, cal_end: date | None, cfg: PredictConfig, pool: Executor,
             start: BgNbdParams | None = None,
             fits: FitStore | None = None) -> Future[tuple[dict[str, Any], tuple[dict[str, Any], ...]]]:
    """Refit on orders up to as_of − holdout_days (``cal_end``: customer_lifecycle has the calibration columns);
    compare predicted with actual purchase days after. Also the customers grouped by their calibration repeat
    purchases (:func:`segmentation.holdout.compare`). ``start``: the full history's fit, where the refit starts
    (the same shop a little earlier: close to its maximum, so it takes fewer steps). The comparison (the model's
    numbers for every calibration summary: numpy and scipy's special functions, which release the GIL) runs on
    ``pool`` while the caller computes the full history's numbers; the refit itself runs here, never beside
    another fit (a fit limits the BLAS threads of the whole process)."""
    done: Future[tuple[dict[str, Any], tuple[dict[str, Any], ...]]] = Future()
    if cal_end is None:
        done.set_result(({"reason": "disabled (holdout_days = 0)"}, ()))
        return done
    out: dict[str, Any] = {"calibration_end": cal_end.isoformat(), "holdout_days": cfg.holdout_days}
    cal = holdout.calibration(con, cfg.time_unit)
    bg, reason = fit_bgnbd_guarded(cal.summary, cfg, start, fits)
    if bg is None:
        done.set_result((out | {"reason": f"calibration period: {reason}"}, ()))
        return done
    return pool.submit(_holdout_check, cal, bg, cfg, out)


def _holdout_check(cal: holdout.Calibration, bg: BgNbdParams, cfg: PredictConfig,
                   out: dict[str, Any]) -> tuple[dict[str, Any], tuple[dict[str, Any], ...]]:
    u = cal.summary
    with np.errstate(all="ignore"):
        predicted = expected_purchases(bg, cfg.holdout_days / DAYS_PER_UNIT[cfg.time_unit], u.x, u.t_x, u.T)
    totals, groups = holdout.compare(cal, predicted)
    bgnbd = {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b, "log_likelihood": bg.log_likelihood}
    return out | totals | {"bgnbd": bgnbd}, groups


def predict_customers(con: duckdb.DuckDBPyConnection, as_of: date, cfg: PredictConfig,
                      timezone: str = "UTC", *, keep_days: bool = True,
                      days: PurchaseDays | None = None, fits: FitStore | None = None,
                      view: bool = False, meanwhile: Callable[[], object] | None = None,
                      numbers: NumberStore | None = None, outliers: OutlierAmounts | None = None,
                      writes: Callable[[], object] | None = None) -> PredictReport:
    """Fit BG/NBD + Gamma-Gamma on ``orders`` and (re)create ``customer_predictions`` (a TEMP table, or with
    ``view`` a TEMP VIEW).

    One row per customer with a completed order on or before the local day ``as_of``.
    Model fields stay NULL, with ``PredictReport.reason`` saying why, on thin data.
    ``keep_days``: keep the run's purchase-day table (``PredictReport.purchase_days``) for the falling-asleep
    boundary; False never writes it (the one pass reads it as a subquery): less time, and no memory held.
    ``days``: the purchase days already found (the order store's, :mod:`sync.store.day_cache`; they must cover
    ``as_of`` in ``timezone``); reported as ``purchase_days`` when ``keep_days``.
    ``fits``: fits of earlier runs by key (:mod:`segmentation.fit_cache`): one whose inputs are exactly this
    run's is read, not fitted again; this run's are added.
    ``numbers``: whole runs' model numbers by key (:func:`segmentation.fit_cache.numbers_key`; its ``basis`` must
    name the orders ``days`` come from): a run on exactly the same inputs reads the report's figures and the
    numbers per distinct summary (into TEMP table ``customer_model``) instead of computing them (no summaries,
    holdout or spend rows read); this run's are added.
    ``view``: ``customer_predictions`` is a TEMP VIEW (over ``customer_lifecycle`` and TEMP table
    ``customer_model``, the model's numbers per distinct summary), for a caller that reads it once or twice
    (:func:`~segmentation.lifecycle.create_predictions_table`).
    ``meanwhile``: the caller's work that reads none of the predictions (the segmenting of a run that keeps them
    out of its segments table: DuckDB's queries), run on this thread while the model's numbers for every
    distinct summary are computed on a worker thread; its exceptions propagate.
    ``outliers``: the outlier orders up to ``as_of`` (:func:`segmentation.outliers.outlier_amounts` on this
    connection's ``orders``, its table still there), left out of the spend model's fit; None: found here.
    ``writes``: the caller's DuckDB work that reads nothing of this run's (the order store's kept tables, while
    ``days`` are TEMP tables of them), run once on this thread before ``meanwhile``: beside the BG/NBD fit on a
    daemon thread (:func:`~segmentation.guarded_fits.beside`) when it runs.
    """
    check_timezone(timezone)
    # once per run: the lifecycle fields, the BTYD summary and the holdout's calibration summary come from one
    # pass over the purchase days; only the boundary reads them again, so without it they are not materialized
    if days is not None:
        days = purchase_days_for(con, as_of, timezone, days)
    elif keep_days:
        days = build_purchase_days(con, as_of, timezone)
    else:
        days = purchase_days_query(con, as_of, timezone)
    cal_end = as_of - timedelta(days=cfg.holdout_days) if cfg.holdout_days else None
    create_lifecycle_table(con, as_of, timezone, cfg.discount_hunter_threshold, days=days, calibration_end=cal_end)
    currencies = key = known = None
    if numbers is not None and numbers.basis is not None:
        currencies = _currencies(con, days, as_of)
        key = numbers_key(numbers.basis, as_of, timezone, cfg.model_dump_json(), currencies)
        known = numbers.get(key, MODEL_TABLE)  # (the numbers' table: TEMP table customer_model)
    if known is not None:
        logger.debug("model numbers read from an earlier run on the same orders, as-of and config")
        figures, table = known, None
        if writes is not None:
            writes()
        if meanwhile is not None:
            meanwhile()
    else:  # (scipy's special functions, not needed to read the kept numbers: imported during the summaries' queries)
        import_in_background(*MODEL_MODULES)
        if outliers is None:
            outliers = outlier_amounts(con, as_of, timezone, days.orders)
        figures, table = _model_numbers(con, cfg, days, as_of, cal_end, fits, meanwhile, currencies, outliers,
                                        writes)
        if key is not None:
            numbers.put(key, figures, table)
    bg = BgNbdParams(*figures["bgnbd"]) if figures["bgnbd"] is not None else None
    gg = GammaGammaParams(*figures["gamma_gamma"]) if figures["gamma_gamma"] is not None else None
    name = MODEL_TABLE if table is None else "_rfmsync_predict_model"
    if table is not None:
        con.register(name, table)
    try:
        if view and table is not None:  # the view reads the model's numbers when it is read: a table of them
            con.execute(f"CREATE OR REPLACE TEMP TABLE {MODEL_TABLE} AS SELECT * FROM {name}")
            name = MODEL_TABLE
        too_big = create_predictions_table(con, name, as_of, cfg.remind_days_before, horizon_days=cfg.horizon_days,
                                           spend=(gg.p, gg.q, gg.gamma) if gg is not None else None,
                                           churn_risk_cut_points=tuple(cfg.churn_risk_cut_points), view=view)
    finally:
        if table is not None:
            con.unregister("_rfmsync_predict_model")
    report = PredictReport(
        as_of=as_of, customers=figures["customers"], repeat_customers=figures["repeat_customers"],
        horizon_days=cfg.horizon_days, clv_horizon_days=cfg.clv_horizon_days, time_unit=cfg.time_unit,
        churn_risk_cut_points=tuple(cfg.churn_risk_cut_points), bgnbd=bg, gamma_gamma=gg,
        holdout=figures["holdout"], holdout_groups=tuple(figures["holdout_groups"]),
        reason=figures["reason"], gamma_gamma_corr=figures["gamma_gamma_corr"],
        warnings=(*figures["warnings"], *([too_big] if too_big else [])),
        next_order_beyond_horizon=figures["beyond"], purchase_days=days if keep_days else None,
        spend_left_out=figures["left_out"][0], spend_own=figures["left_out"][1])
    logger.info("predictions as of %s: %d customers, %d repeat, bgnbd=%s, gamma_gamma=%s%s", as_of,
                report.customers, report.repeat_customers, "fitted" if bg else "no", "fitted" if gg else "no",
                f" ({report.reason})" if report.reason else "")
    return report


def _model_numbers(con: duckdb.DuckDBPyConnection, cfg: PredictConfig, days: PurchaseDays, as_of: date,
                   cal_end: date | None, fits: FitStore | None, meanwhile: Callable[[], object] | None,
                   currencies: list[tuple[str]] | None,
                   outliers: OutlierAmounts, writes: Callable[[], object] | None = None) -> tuple[dict[str, Any], pa.Table]:
    """The fits, the holdout check and the model's numbers per distinct summary of ``customer_lifecycle``: the
    report's figures (JSON-able: what :class:`PredictReport` is made of) and the numbers' table
    (:func:`_model_table`). ``currencies``: :func:`_currencies`, when the caller has them; ``outliers``: the
    orders the spend fit leaves out; ``writes``: run beside the BG/NBD fit."""
    s = _summary(con, as_of, cfg.time_unit)
    reasons = []
    bg, bg_why = fit_bgnbd_guarded(s, cfg, fits=fits, meanwhile=writes)
    # two workers: the holdout's comparison and the model's numbers (numpy and scipy ufuncs, which release the GIL)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="rfmsync-predict") as pool:
        checked = _holdout(con, cal_end, cfg, pool, bg, fits)  # compared on the pool meanwhile
        if bg_why:
            reasons.append(f"BG/NBD not fitted: {bg_why}")
        gg = gg_why = corr = None
        if bg is not None:
            spend_x, spend_m = _repeat_spend(con, days, as_of, outliers)
            if currencies is None:
                currencies = _currencies(con, days, as_of)
            gg, gg_why = fit_gamma_gamma_guarded(cfg, currencies, spend_x, spend_m, fits)
            if gg is not None:  # the model assumes spend independent of frequency: reported
                corr = _correlation(spend_x, spend_m)
        if gg_why:
            reasons.append(f"Gamma-Gamma not fitted: {gg_why}")
        numbers = pool.submit(_model_table, s, cfg, bg, gg)  # (no fit runs beside them: the fits are done)
        if meanwhile is not None:
            meanwhile()
        table, bad, beyond = numbers.result()
        hold, hold_groups = checked.result()
    if bad:
        reasons.append(f"{bad} customers got non-finite predictions (left NULL)")
    warn = fitnotes.warning_lines(bg_why, gg_why, bad) if s.customers else []
    one_spend = float(own_spend_weight(gg, spend_x.max())) if gg is not None and gg.q >= ONE_RATE else None
    limit = bg and fitnotes.limit_line(bg.r >= ONE_RATE, nobody_leaves(bg), one_spend)
    warn += [limit] if limit else []
    figures = {"customers": s.customers, "repeat_customers": s.repeat_customers,
               "bgnbd": None if bg is None else [bg.r, bg.alpha, bg.a, bg.b, bg.log_likelihood],
               "gamma_gamma": None if gg is None else [gg.p, gg.q, gg.gamma, gg.log_likelihood],
               "gamma_gamma_corr": corr, "holdout": hold, "holdout_groups": list(hold_groups),
               "reason": "; ".join(reasons) or None, "warnings": list(warn), "beyond": beyond,
               "left_out": left_out_count(con, days.orders, days.day_sql) if gg is not None and outliers else (0, 0)}
    return figures, table
