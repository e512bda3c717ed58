"""Predictions per customer: fit the BTYD models on ``orders`` and write ``customer_predictions``.

:func:`predict_customers` is the entry point, configured by :class:`PredictConfig` (the ``[predict]`` config
section) and summarised by :class:`PredictReport`. The models themselves (BG/NBD, Gamma-Gamma, CLV) are in
:mod:`segmentation.btyd_models`; the plain-language reasons for a model left unfitted in
:mod:`segmentation.fitnotes`; the lifecycle fields and the final table's SQL in :mod:`segmentation.lifecycle`.
Thin data leaves the model fields NULL with a reason; a holdout refit reports the fit quality.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, Mapping

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import fitnotes
from .btyd import DAYS_PER_UNIT, BtydSummary, btyd_summary
from .btyd_models import (DAYS_PER_MONTH, BgNbdParams, FitError, GammaGammaParams, churn_risk, clv, expected_aov,
                          expected_purchases, fit_bgnbd, fit_gamma_gamma, p_alive, prob_no_purchase,
                          time_to_likely_purchase)
from .fitnotes import Unfitted
from .lifecycle import create_lifecycle_table, create_predictions_table
from .localtime import check_timezone
from .purchase_days import PurchaseDays, build_purchase_days

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
    reason: str | None = None
    gamma_gamma_corr: float | None = None  # corr(frequency, mean spend); the model assumes ~0
    #: plain-language lines for the run's warnings: what was not fitted, why, and what to change
    warnings: tuple[str, ...] = ()
    #: customers whose model-based next_order_date fell beyond horizon_days (left NULL)
    next_order_beyond_horizon: int = 0
    #: the run's purchase-day table, for the falling-asleep boundary to reuse (not part of the JSON)
    purchase_days: PurchaseDays | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        bg, gg = self.bgnbd, self.gamma_gamma
        return {
            "as_of": self.as_of.isoformat(),
            "bgnbd": _params_json(bg, ("r", "alpha", "a", "b", "log_likelihood")) | {"time_unit": self.time_unit},
            "gamma_gamma": _params_json(gg, ("p", "q", "gamma", "log_likelihood"),
                                        corr_frequency_spend=self.gamma_gamma_corr),
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


def _thin_data(s: BtydSummary, cfg: PredictConfig) -> Unfitted | None:
    if len(s) < cfg.min_customers:
        return fitnotes.too_few_customers(len(s), cfg.min_customers)
    history = int(s.t_days.max())
    if history < cfg.min_history_days:
        return fitnotes.short_history(history, cfg.min_history_days)
    if s.repeat_customers < cfg.min_repeat_customers:
        return fitnotes.few_repeat_buyers(s.repeat_customers, cfg.min_repeat_customers)
    return None


def _fit_bgnbd_guarded(s: BtydSummary, cfg: PredictConfig) -> tuple[BgNbdParams | None, Unfitted | None]:
    reason = _thin_data(s, cfg)
    if reason:
        return None, reason
    u = s.triples  # customers sharing (x, t_x, T) count once, weighted: the same likelihood, fewer terms
    try:
        return fit_bgnbd(u.x, u.t_x, u.T, weights=u.weights), None
    except FitError as exc:
        return None, fitnotes.from_fit_error(str(exc))


def _currencies(con: duckdb.DuckDBPyConnection, days: PurchaseDays) -> list[tuple[str]]:
    """The currencies of the completed orders up to ``days.as_of`` (sorted) when there are several; at most one
    entry otherwise. A cheap scan without local days answers alone unless the whole history has several."""
    where = f"FROM {days.orders} WHERE status = 'completed' AND currency IS NOT NULL"
    if con.execute(f"SELECT count(DISTINCT currency) {where}").fetchall()[0][0] <= 1:
        return con.execute(f"SELECT DISTINCT currency {where}").fetchall()
    return con.execute(f"SELECT DISTINCT currency {where} AND {days.day_sql} <= ? ORDER BY 1",
                       [days.as_of]).fetchall()


def _fit_gamma_gamma_guarded(con: duckdb.DuckDBPyConnection, s: BtydSummary, cfg: PredictConfig,
                             days: PurchaseDays) -> tuple[GammaGammaParams | None, Unfitted | None]:
    currencies = _currencies(con, days)
    if len(currencies) > 1:
        names = ", ".join(c[0] for c in currencies[:5])
        return None, fitnotes.several_currencies(len(currencies), names)
    buyers = int(np.count_nonzero((s.frequency > 0) & (s.monetary > 0)))
    if buyers < cfg.min_repeat_customers:
        return None, fitnotes.few_repeat_buyers(buyers, cfg.min_repeat_customers, "repeat customers with spend")
    try:
        return fit_gamma_gamma(s.frequency, s.monetary), None
    except FitError as exc:
        return None, fitnotes.from_fit_error(str(exc))



def _model_table(s: BtydSummary, cfg: PredictConfig, bg: BgNbdParams | None,
                 gg: GammaGammaParams | None) -> tuple[pa.Table, int]:
    """Per-customer model columns as an Arrow table (NaN → NULL); also the count of non-finite rows."""
    n = len(s)
    nan = np.full(n, np.nan)
    per_unit = DAYS_PER_UNIT[s.time_unit]
    x = s.frequency
    # The BG/NBD quantities depend on (x, t_x, T) alone, and customers share them (every one-time buyer of a
    # day, for one): evaluate each distinct triple once (about 40 % of the customers of a large shop).
    u = s.triples
    ux, utx, uT, inv = u.x, u.t_x, u.T, u.index
    with np.errstate(all="ignore"):
        if bg is not None:
            alive = p_alive(bg, ux, utx, uT)[inv]
            expected = expected_purchases(bg, cfg.horizon_days / per_unit, ux, utx, uT)[inv]
            churn = prob_no_purchase(bg, cfg.horizon_days / per_unit, ux, utx, uT)[inv]
            next_days = time_to_likely_purchase(bg, ux, utx, uT)[inv] * per_unit
        else:
            alive = expected = churn = next_days = nan
        aov = expected_aov(gg, x, s.monetary) if gg is not None else nan
        value = (clv(bg, np.ones(len(ux)), ux, utx, uT, cfg.clv_horizon_days / per_unit, DAYS_PER_MONTH / per_unit,
                     cfg.monthly_discount_rate)[inv] * aov if bg is not None and gg is not None else nan)
    bad = np.zeros(n, dtype=bool)
    if bg is not None:
        bad = ~np.isfinite(alive + expected + churn + (value if gg is not None else 0.0))
        bad |= (expected < 0) | (churn < -1e-12) | (churn > 1 + 1e-12)
    cols = {"p_alive": alive, "expected_purchases": expected, "churn_probability": churn,
            "expected_aov": aov, "clv": value, "days_to_next_order": next_days}
    cols = {k: np.where(bad, np.nan, v) for k, v in cols.items()}
    arrays = {k: pa.array(v, type=pa.float64(), mask=np.isnan(v)) for k, v in cols.items()}
    risk = pa.array(churn_risk(cols["churn_probability"], cfg.churn_risk_cut_points), type=pa.string())
    table = pa.table({"customer_id": s.customer_id, **arrays, "churn_risk": risk})
    return table, int(bad.sum())


def _holdout(con: duckdb.DuckDBPyConnection, days: PurchaseDays, cfg: PredictConfig) -> dict[str, Any]:
    """Refit on orders up to as_of − holdout_days; compare predicted with actual purchase days after."""
    if cfg.holdout_days == 0:
        return {"reason": "disabled (holdout_days = 0)"}
    as_of = days.as_of
    cal_end = as_of - timedelta(days=cfg.holdout_days)
    out: dict[str, Any] = {"calibration_end": cal_end.isoformat(), "holdout_days": cfg.holdout_days}
    cal = btyd_summary(con, cal_end, days.timezone, cfg.time_unit, days=days)
    bg, reason = _fit_bgnbd_guarded(cal, cfg)
    if bg is None:
        return out | {"reason": f"calibration period: {reason}"}
    with np.errstate(all="ignore"):
        u = cal.triples
        window = cfg.holdout_days / DAYS_PER_UNIT[cfg.time_unit]
        predicted = expected_purchases(bg, window, u.x, u.t_x, u.T)[u.index]
    later = con.sql(f"SELECT customer_id, count(*) AS purchase_days FROM {days.table} WHERE day > $cal_end "
                    "GROUP BY customer_id", params={"cal_end": cal_end}).to_arrow_table()
    idx = pc.index_in(cal.customer_id, value_set=later.column("customer_id").combine_chunks())
    actual = pc.fill_null(pc.take(later.column("purchase_days").combine_chunks(), idx), 0)
    actual = actual.to_numpy().astype(np.float64)
    ok = np.isfinite(predicted)
    corr = None
    if ok.sum() > 2 and np.std(actual[ok]) > 0 and np.std(predicted[ok]) > 0:
        corr = float(np.corrcoef(predicted[ok], actual[ok])[0, 1])
    return out | {
        "customers": len(cal),
        "predicted_purchases": float(predicted[ok].sum()),
        "actual_purchases": int(actual.sum()),
        "correlation": corr,
        "bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b, "log_likelihood": bg.log_likelihood},
    }


def predict_customers(con: duckdb.DuckDBPyConnection, as_of: date, cfg: PredictConfig,
                      timezone: str = "UTC", *, keep_days: bool = True) -> PredictReport:
    """Fit BG/NBD + Gamma-Gamma on ``orders`` and (re)create TEMP table ``customer_predictions``.

    One row per customer with a completed order on or before the local day ``as_of``.
    Model fields stay NULL, with ``PredictReport.reason`` saying why, on thin data.
    ``keep_days``: keep the run's purchase-day table (``PredictReport.purchase_days``) for the falling-asleep
    boundary; False drops it at the end, which frees its memory (a tenth of the orders' rows) for what follows.
    """
    check_timezone(timezone)
    days = build_purchase_days(con, as_of, timezone)  # once per run: every step below reads this table
    create_lifecycle_table(con, as_of, timezone, cfg.discount_hunter_threshold, days=days)
    s = btyd_summary(con, as_of, timezone, cfg.time_unit, days=days)
    holdout = _holdout(con, days, cfg)
    if not keep_days:  # the table is done with: free its memory before the fits and what follows
        con.execute(f"DROP TABLE {days.table}")
    reasons = []
    bg, bg_why = _fit_bgnbd_guarded(s, cfg)
    if bg_why:
        reasons.append(f"BG/NBD not fitted: {bg_why}")
    gg, gg_why = _fit_gamma_gamma_guarded(con, s, cfg, days) if bg is not None else (None, None)
    if gg_why:
        reasons.append(f"Gamma-Gamma not fitted: {gg_why}")
    table, bad = _model_table(s, cfg, bg, gg)
    if bad:
        reasons.append(f"{bad} customers got non-finite predictions (left NULL)")
    warn = fitnotes.warning_lines(bg_why, gg_why, bad) if len(s) else []
    name = "_rfmsync_predict_model"
    con.register(name, table)
    try:
        create_predictions_table(con, name, as_of, cfg.remind_days_before, horizon_days=cfg.horizon_days)
    finally:
        con.unregister(name)
    beyond = con.execute("SELECT count(*) FROM customer_predictions WHERE next_order_reason = 'beyond_horizon'"
                         ).fetchall()[0][0]
    corr = None
    if gg is not None:
        rep = (s.frequency > 0) & (s.monetary > 0)
        corr = float(np.corrcoef(s.frequency[rep], s.monetary[rep])[0, 1])
    report = PredictReport(
        as_of=as_of, customers=len(s), repeat_customers=s.repeat_customers, horizon_days=cfg.horizon_days,
        clv_horizon_days=cfg.clv_horizon_days, time_unit=cfg.time_unit,
        churn_risk_cut_points=tuple(cfg.churn_risk_cut_points), bgnbd=bg, gamma_gamma=gg,
        holdout=holdout, reason="; ".join(reasons) or None, gamma_gamma_corr=corr,
        warnings=tuple(warn), next_order_beyond_horizon=beyond, purchase_days=days if keep_days else None)
    logger.info("predictions as of %s: %d customers, %d repeat, bgnbd=%s, gamma_gamma=%s%s", as_of, len(s),
                s.repeat_customers, "fitted" if bg else "no", "fitted" if gg else "no",
                f" ({report.reason})" if report.reason else "")
    return report
