"""BG/NBD and Gamma-Gamma models: maximum-likelihood fits and per-customer predictions.

numpy/scipy only, vectorised over customers, no lifetimes/pymc at run time (they are
test oracles). Inputs are the BTYD summary of :mod:`segmentation.btyd`: ``x`` repeat
purchase periods, ``t_x`` recency, ``T`` age, ``m`` mean repeat-period spend, all
times in one unit.

* BG/NBD: Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way",
  Marketing Science 24(2). Log-likelihood §7 (eq. 6); P(alive) Hardie note 021;
  conditional expectation eq. 10; P(no purchase in (T, T+t]) =
  1 − P(alive) + P(alive)·((α+T)/(α+T+t))^(r+x): a live customer's rate given the
  history is Gamma(r+x, α+T), and a dead one never buys.
* Gamma-Gamma: Fader & Hardie (2013) note 025; E[AOV | x, m] eq. 5.
* CLV: discounted sum over monthly steps of expected purchases in the step × E[AOV]
  (the method of lifetimes' ``customer_lifetime_value``).

Fits: L-BFGS-B on log-parameters with analytic gradients (Nelder–Mead fallback).
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
from scipy.optimize import minimize
from scipy.special import digamma, expit, gammaln, hyp2f1

from .btyd import DAYS_PER_UNIT, BtydSummary, btyd_summary, check_timezone, purchase_days_between
from . import fitnotes
from .errors import ThinDataError
from .fitnotes import Unfitted
from .lifecycle import create_lifecycle_table, create_predictions_table

logger = logging.getLogger(__name__)

DAYS_PER_MONTH = 365.25 / 12


class FitError(ThinDataError):
    """A model could not be fitted; ``str()`` is a one-line reason for the report."""


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float | None = None


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float
    log_likelihood: float | None = None


# --------------------------------------------------------------------------- helpers

def _arrays(*arrays: object) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _by_x(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an integer-valued array and the index of each element into them."""
    ux, inv = np.unique(x, return_inverse=True)
    return ux, inv.reshape(x.shape)


def _minimise(fun, n_params: int, what: str) -> np.ndarray:
    """Minimise ``fun(v) -> (value, gradient)`` over log-parameters from 0; return them.

    L-BFGS-B's line search often stops "abnormally" at the optimum once the mean
    log-likelihood is flat to machine precision, so a small gradient counts as converged.
    """
    x0 = np.zeros(n_params)
    with np.errstate(all="ignore"):
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=[(-20.0, 20.0)] * n_params,
                       options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-9})
        ok = np.all(np.isfinite(res.x)) and np.isfinite(res.fun) and np.max(np.abs(res.jac)) < 1e-5
        if not ok:
            res = minimize(lambda v: fun(v)[0], res.x if np.all(np.isfinite(res.x)) else x0,
                           method="Nelder-Mead", options={"maxiter": 2000 * n_params, "xatol": 1e-9, "fatol": 1e-13})
            ok = res.success and np.all(np.isfinite(res.x)) and np.isfinite(res.fun)
    if not ok:
        raise FitError(f"{what} optimizer did not converge: {res.message}")
    if np.any(np.abs(res.x) >= 19.9):
        raise FitError(f"{what} parameters ran off to a boundary (the data do not identify the model)")
    return res.x


# --------------------------------------------------------------------------- BG/NBD

def bgnbd_log_likelihood(params: BgNbdParams | tuple[float, float, float, float],
                         x, t_x, T, weights=None) -> float:
    """Total BG/NBD log-likelihood of the summary (FHL 2005 eq. 6), e.g. −9582.43 on CDNOW."""
    r, alpha, a, b = params[:4] if isinstance(params, tuple) else (params.r, params.alpha, params.a, params.b)
    x, t_x, T = _arrays(x, t_x, T)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x)
    return float(np.sum(w * (a1 + a2 + np.where(x > 0, np.logaddexp(a3, a4), a3))))


def _bgnbd_objective(x, t_x, T, w):
    """Mean negative log-likelihood and its gradient over log-parameters.

    Sums over customers are taken per distinct x / T with precomputed weights
    (np.bincount), so only repeat buyers' "dropped out after t_x" term is evaluated per
    customer: z = log a − log(b+x−1) + (r+x)·log((α+T)/(α+t_x)), ℓ gains softplus(z).
    """
    ux, ix = _by_x(x)
    uT, iT = _by_x(T)
    W_x = np.bincount(ix, weights=w, minlength=ux.size)
    W_T = np.bincount(iT, weights=w, minlength=uT.size)
    WX_T = np.bincount(iT, weights=w * x, minlength=uT.size)
    rep = x > 0
    xr, wr, ixr, iTr = x[rep], w[rep], ix[rep], iT[rep]
    utx, itxr = _by_x(t_x[rep])
    ux1, wsum = np.maximum(ux, 1) - 1, w.sum()

    def fun(v):
        r, alpha, a, b = np.exp(v)
        la_uT, inv_uT = np.log(alpha + uT), 1.0 / (alpha + uT)
        d_log = la_uT[iTr] - np.log(alpha + utx)[itxr]  # log((α+T)/(α+t_x)) ≥ 0
        rx = r + xr
        z = (np.log(a) - np.log(b + ux1))[ixr] + rx * d_log
        e = np.exp(-np.abs(z))
        softplus = np.maximum(z, 0.0) + np.log1p(e)
        w4 = wr * np.where(z >= 0, 1.0, e) / (1.0 + e)  # posterior weight of "dropped out"
        gx = gammaln(r + ux) - gammaln(r) + gammaln(a + b) + gammaln(b + ux) - gammaln(b) - gammaln(a + b + ux)
        ll = (W_x @ gx + wsum * r * np.log(alpha) - (r * W_T + WX_T) @ la_uT + wr @ softplus)
        dr = W_x @ (digamma(r + ux) - digamma(r)) + wsum * np.log(alpha) - W_T @ la_uT + w4 @ d_log
        dalpha = (wsum * r / alpha - (r * W_T + WX_T) @ inv_uT
                  + (w4 * rx) @ (inv_uT[iTr] - 1.0 / (alpha + utx[itxr])))
        dab = digamma(a + b) - digamma(a + b + ux)
        da = W_x @ dab + w4.sum() / a
        w4_x = np.bincount(ixr, weights=w4, minlength=ux.size)
        db = W_x @ (dab + digamma(b + ux) - digamma(b)) - w4_x @ (1.0 / (b + ux1))
        return -ll / wsum, -np.array([dr * r, dalpha * alpha, da * a, db * b]) / wsum

    return fun


def fit_bgnbd(x, t_x, T, weights=None) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters; raises :class:`FitError` on degenerate data."""
    x, t_x, T = _arrays(x, t_x, T)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if x.size == 0 or not np.any(x > 0):
        raise FitError("BG/NBD needs at least one repeat buyer")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T) or not np.all(np.isfinite(T)):
        raise FitError("BG/NBD summary is inconsistent (need 0 ≤ recency ≤ T, frequency ≥ 0)")
    scale = 10.0 / max(float(T.max()), 1e-12)  # rescale time so alpha starts near 1
    fun = _bgnbd_objective(x, t_x * scale, T * scale, w)
    v = _minimise(fun, 4, "BG/NBD")
    r, alpha, a, b = np.exp(v)
    alpha /= scale
    ll = bgnbd_log_likelihood((r, alpha, a, b), x, t_x, T, w)
    return BgNbdParams(float(r), float(alpha), float(a), float(b), ll)


def p_alive(params: BgNbdParams, x, t_x, T) -> np.ndarray:
    """P(alive at T | x, t_x, T) (Hardie note 021); 1 for customers without repeat purchases."""
    x, t_x, T = _arrays(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_div = (r + x) * np.log((alpha + T) / (alpha + t_x)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_div))


def expected_purchases(params: BgNbdParams, t, x, t_x, T) -> np.ndarray:
    """E[purchases in (T, T+t] | x, t_x, T] (FHL 2005 eq. 10); ``t`` scalar or array."""
    t, x, t_x, T = _arrays(t, x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    ha, hb, hc = r + x, b + x, a + b + x - 1
    z = t / (alpha + T + t)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ln_hyp = np.log(hyp2f1(ha, hb, hc, z))
        # Euler's transformation where the direct series overflows
        ln_alt = np.log(hyp2f1(hc - ha, hc - hb, hc, z)) + (hc - ha - hb) * np.log1p(-z)
    ln_hyp = np.where(np.isinf(ln_hyp), ln_alt, ln_hyp)
    first = (a + b + x - 1) / (a - 1)
    second = -np.expm1(ln_hyp + (r + x) * np.log((alpha + T) / (alpha + T + t)))
    denom = 1 + (x > 0) * (a / (b + np.maximum(x, 1) - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x)
    return first * second / denom


def prob_no_purchase(params: BgNbdParams, t, x, t_x, T) -> np.ndarray:
    """P(no purchase in (T, T+t] | x, t_x, T) = 1 − P(alive) + P(alive)·((α+T)/(α+T+t))^(r+x)."""
    t, x, t_x, T = _arrays(t, x, t_x, T)
    pa = p_alive(params, x, t_x, T)
    return 1.0 - pa + pa * np.exp((params.r + x) * np.log((params.alpha + T) / (params.alpha + T + t)))


def time_to_likely_purchase(params: BgNbdParams, x, t_x, T) -> np.ndarray:
    """Smallest t with P(no purchase in (T, T+t]) ≤ 0.5, in the model's time unit.

    Closed form of the equation above; NaN when P(alive) ≤ 0.5 (the probability of
    a purchase never reaches one half).
    """
    x, t_x, T = _arrays(x, t_x, T)
    pa = p_alive(params, x, t_x, T)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.log1p(-0.5 / pa) / (params.r + x)  # log((α+T)/(α+T+t)) at the boundary
        t = (params.alpha + T) * np.expm1(-k)
    return np.where(pa > 0.5, t, np.nan)


def churn_risk(prob: np.ndarray, cut_points: tuple[float, float]) -> np.ndarray:
    """Bucket P(no purchase): low < c1 ≤ medium ≤ c2 < high; None where ``prob`` is NaN."""
    lo, hi = cut_points
    prob = np.asarray(prob, dtype=np.float64)
    out = np.where(prob < lo, "low", np.where(prob <= hi, "medium", "high")).astype(object)
    out[np.isnan(prob)] = None
    return out


# --------------------------------------------------------------------------- Gamma-Gamma

def gamma_gamma_log_likelihood(params: GammaGammaParams | tuple[float, float, float], x, m) -> float:
    """Total Gamma-Gamma log-likelihood of repeat buyers' (x, m̄) (note 025 eq. 1a)."""
    p, q, g = params[:3] if isinstance(params, tuple) else (params.p, params.q, params.gamma)
    x, m = _arrays(x, m)
    return float(np.sum(gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(g)
                        + (p * x - 1) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(x * m + g)))


def fit_gamma_gamma(x, m) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters from repeat buyers (x > 0, m > 0 only)."""
    x, m = _arrays(x, m)
    keep = (x > 0) & (m > 0) & np.isfinite(m)
    x, m = x[keep], m[keep]
    if x.size < 2:
        raise FitError("Gamma-Gamma needs at least two repeat buyers with positive spend")
    s = float(m.mean())  # rescale money so gamma starts near 1
    ms = m / s
    lx, lm = np.log(x), np.log(ms)

    def fun(v):
        p, q, g = np.exp(v)
        px = p * x
        lxg = np.log(x * ms + g)
        ll = gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(g) + (px - 1) * lm + px * lx - (px + q) * lxg
        dpq = digamma(px + q)
        dp = np.dot(x, dpq - digamma(px) + lm + lx - lxg)
        dq = np.sum(dpq - lxg) + x.size * (np.log(g) - digamma(q))
        dg = x.size * q / g - np.sum((px + q) / (x * ms + g))
        return -float(ll.sum()) / x.size, -np.array([dp * p, dq * q, dg * g]) / x.size

    p, q, g = np.exp(_minimise(fun, 3, "Gamma-Gamma"))
    g *= s
    if q <= 1:
        raise FitError(f"Gamma-Gamma q = {q:.3f} ≤ 1: expected spend is undefined (heavy-tailed spend)")
    return GammaGammaParams(float(p), float(q), float(g), gamma_gamma_log_likelihood((p, q, g), x, m))


def expected_aov(params: GammaGammaParams, x, m) -> np.ndarray:
    """E[mean spend per purchase | x, m̄] (note 025 eq. 5); the population mean when x = 0."""
    x, m = _arrays(x, m)
    p, q, g = params.p, params.q, params.gamma
    weight = p * x / (p * x + q - 1)
    return (1 - weight) * (g * p / (q - 1)) + weight * m


def clv(bg: BgNbdParams, aov: np.ndarray, x, t_x, T, horizon: float, month: float,
        monthly_discount_rate: float = 0.0) -> np.ndarray:
    """Discounted expected spend over (T, T+horizon], all times in the model's unit.

    The horizon is cut into steps of one ``month`` (the last one may be shorter); the
    expected purchases of step k (ending at t_k) × ``aov`` are discounted by
    (1+d)^(t_k / month). With ``horizon = n·month`` this is lifetimes'
    ``customer_lifetime_value(time=n, freq=...)``.
    """
    if horizon <= 0 or month <= 0:
        raise ValueError("horizon and month must be positive")
    n = int(np.ceil(horizon / month - 1e-9))
    ends = np.minimum(np.arange(1, n + 1) * month, horizon)
    total = np.zeros(np.shape(np.asarray(T, dtype=np.float64)))
    prev = np.zeros_like(total)
    for end in ends:  # a dozen steps, each vectorised over all customers
        cum = expected_purchases(bg, end, x, t_x, T)
        total = total + (cum - prev) / (1 + monthly_discount_rate) ** (end / month)
        prev = cum
    return total * np.asarray(aov, dtype=np.float64)


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
    try:
        return fit_bgnbd(s.frequency, s.recency, s.T), None
    except FitError as exc:
        return None, fitnotes.from_fit_error(str(exc))


def _fit_gamma_gamma_guarded(con: duckdb.DuckDBPyConnection, s: BtydSummary, cfg: PredictConfig,
                             timezone: str) -> tuple[GammaGammaParams | None, Unfitted | None]:
    currencies = con.execute(
        "SELECT DISTINCT currency FROM orders WHERE status = 'completed' AND currency IS NOT NULL"
        " AND (ordered_at AT TIME ZONE ?)::DATE <= ? ORDER BY 1", [timezone, s.as_of]).fetchall()
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


def _distinct_triples(x: np.ndarray, tx: np.ndarray, T: np.ndarray):
    """The distinct (x, t_x, T) rows and, per input row, the index of its distinct row (a lexsort and one pass:
    ``np.unique(axis=0)`` is ten times slower on a million rows). NaNs never match, so they stay apart."""
    order = np.lexsort((T, tx, x))
    xs, txs, Ts = x[order], tx[order], T[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (xs[1:] != xs[:-1]) | (txs[1:] != txs[:-1]) | (Ts[1:] != Ts[:-1])
    inv = np.empty(len(order), dtype=np.intp)
    inv[order] = np.cumsum(new) - 1
    return xs[new], txs[new], Ts[new], inv


def _model_table(s: BtydSummary, cfg: PredictConfig, bg: BgNbdParams | None,
                 gg: GammaGammaParams | None) -> tuple[pa.Table, int]:
    """Per-customer model columns as an Arrow table (NaN → NULL); also the count of non-finite rows."""
    n = len(s)
    nan = np.full(n, np.nan)
    per_unit = DAYS_PER_UNIT[s.time_unit]
    x, tx, T = s.frequency, s.recency, s.T
    # The BG/NBD quantities depend on (x, t_x, T) alone, and customers share them (every one-time buyer of a
    # day, for one): evaluate each distinct triple once (about 40 % of the customers of a large shop).
    ux, utx, uT, inv = _distinct_triples(x, tx, T)
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


def _holdout(con: duckdb.DuckDBPyConnection, as_of: date, cfg: PredictConfig, timezone: str) -> dict[str, Any]:
    """Refit on orders up to as_of − holdout_days; compare predicted with actual purchase days after."""
    if cfg.holdout_days == 0:
        return {"reason": "disabled (holdout_days = 0)"}
    cal_end = as_of - timedelta(days=cfg.holdout_days)
    out: dict[str, Any] = {"calibration_end": cal_end.isoformat(), "holdout_days": cfg.holdout_days}
    cal = btyd_summary(con, cal_end, timezone, cfg.time_unit)
    bg, reason = _fit_bgnbd_guarded(cal, cfg)
    if bg is None:
        return out | {"reason": f"calibration period: {reason}"}
    with np.errstate(all="ignore"):
        predicted = expected_purchases(bg, cfg.holdout_days / DAYS_PER_UNIT[cfg.time_unit],
                                       cal.frequency, cal.recency, cal.T)
    later = purchase_days_between(con, cal_end, as_of, timezone)
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
                      timezone: str = "UTC") -> PredictReport:
    """Fit BG/NBD + Gamma-Gamma on ``orders`` and (re)create TEMP table ``customer_predictions``.

    One row per customer with a completed order on or before the local day ``as_of``.
    Model fields stay NULL, with ``PredictReport.reason`` saying why, on thin data.
    """
    check_timezone(timezone)
    create_lifecycle_table(con, as_of, timezone, cfg.discount_hunter_threshold)
    s = btyd_summary(con, as_of, timezone, cfg.time_unit)
    reasons = []
    bg, bg_why = _fit_bgnbd_guarded(s, cfg)
    if bg_why:
        reasons.append(f"BG/NBD not fitted: {bg_why}")
    gg, gg_why = _fit_gamma_gamma_guarded(con, s, cfg, timezone) if bg is not None else (None, None)
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
        holdout=_holdout(con, as_of, cfg, timezone), reason="; ".join(reasons) or None, gamma_gamma_corr=corr,
        warnings=tuple(warn), next_order_beyond_horizon=beyond)
    logger.info("predictions as of %s: %d customers, %d repeat, bgnbd=%s, gamma_gamma=%s%s", as_of, len(s),
                s.repeat_customers, "fitted" if bg else "no", "fitted" if gg else "no",
                f" ({report.reason})" if report.reason else "")
    return report
