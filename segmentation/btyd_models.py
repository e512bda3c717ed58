"""BG/NBD and Gamma-Gamma models: maximum-likelihood fits and per-customer predictions.

numpy/scipy only, vectorised over customers, no lifetimes/pymc at run time (they are
test oracles). Inputs are the BTYD summary of :mod:`segmentation.btyd`: ``x`` repeat
purchase periods, ``t_x`` recency, ``T`` age, ``m`` mean repeat-period spend, all
times in one unit. :mod:`segmentation.predictive` fits them on a shop's orders and
writes the per-customer table.

* BG/NBD: Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way",
  Marketing Science 24(2). Log-likelihood §7 (eq. 6); P(alive) Hardie note 021;
  conditional expectation eq. 10; P(no purchase in (T, T+t]) =
  1 − P(alive) + P(alive)·((α+T)/(α+T+t))^(r+x): a live customer's rate given the
  history is Gamma(r+x, α+T), and a dead one never buys.
* Gamma-Gamma: Fader & Hardie (2013) note 025; E[AOV | x, m] eq. 5.
* CLV: discounted sum over monthly steps of expected purchases in the step × E[AOV]
  (the method of lifetimes' ``customer_lifetime_value``).

Fits: L-BFGS-B on log-parameters with analytic gradients (Nelder–Mead fallback).

``scipy.special`` is imported where it is first used, not with this module: it takes ~0.2 s (it copies numpy's
namespace, ``numpy.f2py`` included), and a predicting run imports it on a background thread
(:mod:`segmentation.warmup`) while its first queries run, instead of waiting for it before them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import ThinDataError
from .hypergeometric import log_hyp2f1

DAYS_PER_MONTH = 365.25 / 12

logger = logging.getLogger(__name__)


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


class _Stalled(Exception):
    """The optimizer's last evaluations improved on the best value by no more than rounding."""


#: evaluations in a row without an improvement beyond rounding, at a point with a small gradient: converged
STALLED_EVALUATIONS = 8


def _stall_guard(fun):
    """``fun`` that remembers the best point it saw and raises :class:`_Stalled` after
    :data:`STALLED_EVALUATIONS` evaluations in a row have not bettered it by more than a few units in the last
    place while its gradient is small (the L-BFGS-B convergence test below). L-BFGS-B with ``ftol`` at machine
    precision ends with line searches that cannot tell its trial points apart: up to half of a fit's
    evaluations (110 → 70 on the 10 M-order benchmark, where a flat direction keeps it going) change nothing but
    the rounding of a value already at the maximum; the parameters it gives agree with the full run's to about
    1e-9)."""
    best: dict = {"f": np.inf, "v": None, "g": None, "since": 0, "evaluations": 0}

    def guarded(v):
        f, g = fun(v)
        best["evaluations"] += 1
        if not np.isfinite(f):
            return f, g
        rounding = 8 * np.finfo(np.float64).eps * max(abs(best["f"]), 1.0) if np.isfinite(best["f"]) else 0.0
        best["since"] = 0 if f < best["f"] - rounding else best["since"] + 1
        if f < best["f"]:
            best.update(f=f, v=np.array(v, dtype=np.float64), g=np.asarray(g))
        if best["since"] >= STALLED_EVALUATIONS and np.max(np.abs(best["g"])) < 1e-5:
            raise _Stalled
        return f, g

    return guarded, best


def _minimise(fun, n_params: int, what: str, start: np.ndarray | None = None) -> np.ndarray:
    """Minimise ``fun(v) -> (value, gradient)`` over log-parameters from ``start`` (default 0); return them.

    L-BFGS-B's line search often stops "abnormally" at the optimum once the mean
    log-likelihood is flat to machine precision, so a small gradient counts as converged; so does a run of
    evaluations that no longer better the value beyond rounding (:func:`_stall_guard`): the best point is taken.
    """
    # scipy.optimize (~0.3 s of imports) only where a fit runs: a run that reads every fit of an earlier run
    # (segmentation.fit_cache) predicts with the special functions alone
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    x0 = np.zeros(n_params) if start is None or not np.all(np.isfinite(start)) else np.clip(start, -19.0, 19.0)
    guarded, best = _stall_guard(fun)
    # One BLAS thread: L-BFGS-B and the likelihoods make thousands of tiny BLAS calls, and OpenBLAS waking its
    # threads for each cost 3–70 ms a call on a busy 2-core machine (a fit took 4× longer than single-threaded).
    with np.errstate(all="ignore"), threadpool_limits(1, user_api="blas"):
        try:
            res = minimize(guarded, x0, jac=True, method="L-BFGS-B", bounds=[(-20.0, 20.0)] * n_params,
                           options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-9})
        except _Stalled:
            logger.debug("%s fit: %d likelihood evaluations (stopped: no better than rounding)", what,
                         best["evaluations"])
            return _off_boundary(best["v"], what)
        logger.debug("%s fit: %d likelihood evaluations", what, best["evaluations"])
        ok = np.all(np.isfinite(res.x)) and np.isfinite(res.fun) and np.max(np.abs(res.jac)) < 1e-5
        if not ok:
            res = minimize(lambda v: fun(v)[0], res.x if np.all(np.isfinite(res.x)) else x0,
                           method="Nelder-Mead", options={"maxiter": 2000 * n_params, "xatol": 1e-9, "fatol": 1e-13})
            ok = res.success and np.all(np.isfinite(res.x)) and np.isfinite(res.fun)
    if not ok:
        raise FitError(f"{what} optimizer did not converge: {res.message}")
    return _off_boundary(res.x, what)


def _off_boundary(v: np.ndarray, what: str) -> np.ndarray:
    if np.any(np.abs(v) >= 19.9):
        raise FitError(f"{what} parameters ran off to a boundary (the data do not identify the model)")
    return v


# --------------------------------------------------------------------------- BG/NBD

def bgnbd_log_likelihood(params: BgNbdParams | tuple[float, float, float, float],
                         x, t_x, T, weights=None) -> float:
    """Total BG/NBD log-likelihood of the summary (FHL 2005 eq. 6), e.g. −9582.43 on CDNOW."""
    from scipy.special import gammaln  # (imported on first use: see the module docstring)
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
    from scipy.special import digamma, gammaln  # (imported on first use: see the module docstring)
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


def fit_bgnbd(x, t_x, T, weights=None, start: BgNbdParams | None = None) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters; raises :class:`FitError` on degenerate data.

    ``start``: the optimizer starts there (e.g. the fit of the same shop on a shorter history, which is close)
    instead of at r = α' = a = b = 1: fewer steps to the same maximum."""
    x, t_x, T = _arrays(x, t_x, T)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if x.size == 0 or not np.any(x > 0):
        raise FitError("BG/NBD needs at least one repeat buyer")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T) or not np.all(np.isfinite(T)):
        raise FitError("BG/NBD summary is inconsistent (need 0 ≤ recency ≤ T, frequency ≥ 0)")
    scale = 10.0 / max(float(T.max()), 1e-12)  # rescale time so alpha starts near 1
    fun = _bgnbd_objective(x, t_x * scale, T * scale, w)
    x0 = None if start is None else np.log([start.r, start.alpha * scale, start.a, start.b])
    v = _minimise(fun, 4, "BG/NBD", x0)
    r, alpha, a, b = np.exp(v)
    alpha /= scale
    ll = bgnbd_log_likelihood((r, alpha, a, b), x, t_x, T, w)
    return BgNbdParams(float(r), float(alpha), float(a), float(b), ll)


def p_alive(params: BgNbdParams, x, t_x, T) -> np.ndarray:
    """P(alive at T | x, t_x, T) (Hardie note 021); 1 for customers without repeat purchases."""
    from scipy.special import expit  # (imported on first use: see the module docstring)
    x, t_x, T = _arrays(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_div = (r + x) * np.log1p((T - t_x) / (alpha + t_x)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_div))


def expected_purchases(params: BgNbdParams, t, x, t_x, T) -> np.ndarray:
    """E[purchases in (T, T+t] | x, t_x, T] (FHL 2005 eq. 10); ``t`` scalar or array.

    The term ((α+T)/(α+T+t))^(r+x)·2F1(…) is taken in log space (both factors overflow for large x) with its
    sign: where 2F1 < 0 (see :func:`~segmentation.hypergeometric.log_hyp2f1`) 1 − term = 1 + |term|."""
    t, x, t_x, T = _arrays(t, x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = t / (alpha + T + t)
    ln_hyp, negative = log_hyp2f1(*np.broadcast_arrays(r + x, b + x, a + b + x - 1, z))
    first = (a + b + x - 1) / (a - 1)
    ln_term = ln_hyp - (r + x) * np.log1p(t / (alpha + T))  # (log1p: exact where r + x is large)
    second = -np.expm1(ln_term)
    if negative.any():  # (rare: one-time buyers of a + b < 1 fits only)
        second = np.where(negative, 1.0 + np.exp(ln_term), second)
    # ÷ (1 + a/(b+x−1)·((α+T)/(α+t_x))^(r+x)) for x > 0 is × P(alive), taken in logs (the power overflows
    # for a steady-rate fit's older customers; 0·inf was NaN for one-time buyers)
    return first * second * p_alive(params, x, t_x, T)


def prob_no_purchase(params: BgNbdParams, t, x, t_x, T) -> np.ndarray:
    """P(no purchase in (T, T+t] | x, t_x, T) = 1 − P(alive) + P(alive)·((α+T)/(α+T+t))^(r+x)."""
    t, x, t_x, T = _arrays(t, x, t_x, T)
    pa = p_alive(params, x, t_x, T)
    return 1.0 - pa + pa * np.exp(-(params.r + x) * np.log1p(t / (params.alpha + T)))


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
    from scipy.special import gammaln  # (imported on first use: see the module docstring)
    p, q, g = params[:3] if isinstance(params, tuple) else (params.p, params.q, params.gamma)
    x, m = _arrays(x, m)
    return float(np.sum(gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(g)
                        + (p * x - 1) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(x * m + g)))


def fit_gamma_gamma(x, m) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters from repeat buyers (x > 0, m > 0 only)."""
    from scipy.special import digamma, gammaln  # (imported on first use: see the module docstring)
    x, m = _arrays(x, m)
    keep = (x > 0) & (m > 0) & np.isfinite(m)
    x, m = x[keep], m[keep]
    if x.size < 2:
        raise FitError("Gamma-Gamma needs at least two repeat buyers with positive spend")
    s = float(m.mean())  # rescale money so gamma starts near 1
    n, xm = x.size, x * (m / s)
    # The terms in x alone are summed per distinct x (a few hundred), those in m̄ alone once: only
    # log(x·m̄ + γ) and its reciprocal are evaluated per customer.
    ux, ix = _by_x(x)
    n_x = np.bincount(ix, minlength=ux.size).astype(np.float64)
    lux = np.log(ux)
    lm = np.log(m / s)
    sum_lm, sum_xlm = float(lm.sum()), float(np.dot(x, lm))

    def fun(v):
        p, q, g = np.exp(v)
        pu = p * ux
        lxg = np.log(xm + g)
        inv = 1.0 / (xm + g)
        sum_lxg, sum_xlxg = float(lxg.sum()), float(np.dot(x, lxg))
        ll = (np.dot(n_x, gammaln(pu + q) - gammaln(pu) + pu * lux) - n * gammaln(q) + n * q * np.log(g)
              + p * sum_xlm - sum_lm - p * sum_xlxg - q * sum_lxg)
        dpq = digamma(pu + q)
        dp = np.dot(n_x * ux, dpq - digamma(pu) + lux) + sum_xlm - sum_xlxg
        dq = np.dot(n_x, dpq) - sum_lxg + n * (np.log(g) - digamma(q))
        dg = n * q / g - p * float(np.dot(x, inv)) - q * float(inv.sum())
        return -float(ll) / n, -np.array([dp * p, dq * q, dg * g]) / n

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
    if monthly_discount_rate == 0:  # undiscounted, the steps' purchases add up to those of the whole horizon
        return expected_purchases(bg, horizon, x, t_x, T) * np.asarray(aov, dtype=np.float64)
    n = int(np.ceil(horizon / month - 1e-9))
    ends = np.minimum(np.arange(1, n + 1) * month, horizon)
    total = np.zeros(np.shape(np.asarray(T, dtype=np.float64)))
    prev = np.zeros_like(total)
    for end in ends:  # a dozen steps, each vectorised over all customers
        cum = expected_purchases(bg, end, x, t_x, T)
        total = total + (cum - prev) / (1 + monthly_discount_rate) ** (end / month)
        prev = cum
    return total * np.asarray(aov, dtype=np.float64)
