"""BG/NBD and Gamma-Gamma models: maximum-likelihood fits and per-customer predictions.

numpy/scipy only, vectorised over customers, no lifetimes/pymc at run time (they are test oracles). Inputs are the
BTYD summary of :mod:`segmentation.btyd`: ``x`` repeat purchase periods, ``t_x`` recency, ``T`` age, ``m`` mean
repeat-period spend, all times in one unit. :mod:`segmentation.predictive` fits them and writes the customer table.

* BG/NBD: Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way", Marketing Science 24(2).
  Log-likelihood §7 (eq. 6); P(alive) Hardie note 021; conditional expectation eq. 10; P(no purchase in (T, T+t])
  = 1 − P(alive) + P(alive)·((α+T)/(α+T+t))^(r+x): a live customer's rate given the history is Gamma(r+x, α+T),
  and a dead one never buys.
* Gamma-Gamma: Fader & Hardie (2013) note 025; E[AOV | x, m] eq. 5.
* CLV: discounted sum over monthly steps of expected purchases in the step × E[AOV]
  (the method of lifetimes' ``customer_lifetime_value``).

Fits: L-BFGS-B on log-parameters with analytic gradients (Nelder–Mead fallback):
:mod:`segmentation.fit_optimizer`.

``scipy.special`` is imported where it is first used, not with this module: it takes ~0.2 s (it copies numpy's
namespace, ``numpy.f2py`` included), and a predicting run imports it on a background thread
(:mod:`segmentation.warmup`) while its first queries run, instead of waiting for it before them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import spend_limit
from .fit_optimizer import EDGE, FitError, minimise
from .hypergeometric import log_hyp2f1
from .rising import EXACT_ABOVE, digamma_rising, log_beta_ratio, log_rising, neg_log_beta

DAYS_PER_MONTH = 365.25 / 12


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


# --------------------------------------------------------------------------- BG/NBD

def bgnbd_log_likelihood(params: BgNbdParams | tuple[float, float, float, float],
                         x, t_x, T, weights=None) -> float:
    """Total BG/NBD log-likelihood of the summary (FHL 2005 eq. 6), e.g. −9582.43 on CDNOW: with the fit's exact
    terms (:func:`_bgnbd_objective`: r·log α − (r+x)·log(α+T) as −r·log1p(T/α) − x·log(α+T), the Gamma and Beta
    ratios :mod:`segmentation.rising`'s), so that a fit at a limit (r, α or b ~ 10⁸) reports it to its digits."""
    r, alpha, a, b = params[:4] if isinstance(params, tuple) else (params.r, params.alpha, params.a, params.b)
    x, t_x, T = _arrays(x, t_x, T)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    ux, ix = _by_x(x)
    a12 = (log_rising(r, ux) + log_beta_ratio(a, b, ux)[0])[ix]
    a3 = -r * np.log1p(T / alpha) - x * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - r * np.log1p(t_x / alpha) - x * np.log(alpha + t_x)
    return float(np.sum(w * (a12 + np.where(x > 0, np.logaddexp(a3, a4), a3))))


def _bgnbd_objective(x, t_x, T, w):
    """Mean negative log-likelihood and its gradient over log-parameters.

    Sums over customers are taken per distinct x / T with precomputed weights
    (np.bincount), so only repeat buyers' "dropped out after t_x" term is evaluated per
    customer: z = log a − log(b+x−1) + (r+x)·log((α+T)/(α+t_x)), ℓ gains softplus(z).

    Every term stays exact as r, α and b grow (a steady-rate shop's fit goes to r, α ~ 10⁸: r·log α and
    r·log(α+T) are 2·10⁹ each, their difference some hundreds): r·log(α/(α+T)) is −r·log1p(T/α), the gammaln
    and digamma differences are :mod:`segmentation.rising`'s, and log((α+T)/(α+t_x)) is log1p((T−t_x)/(α+t_x))
    once α passes :data:`~segmentation.rising.EXACT_ABOVE` (below it, the difference of the logs of the distinct
    T and t_x: no per-customer log).
    """
    ux, ix = _by_x(x)
    uT, iT = _by_x(T)
    W_x = np.bincount(ix, weights=w, minlength=ux.size)
    W_T = np.bincount(iT, weights=w, minlength=uT.size)
    WX_T = np.bincount(iT, weights=w * x, minlength=uT.size)
    rep = x > 0
    xr, wr, ixr, iTr = x[rep], w[rep], ix[rep], iT[rep]
    utx, itxr = _by_x(t_x[rep])
    gap = T[rep] - t_x[rep]
    ux1, wsum = np.maximum(ux, 1) - 1, w.sum()

    def fun(v):
        r, alpha, a, b = np.exp(v)
        la_uT, inv_uT = np.log(alpha + uT), 1.0 / (alpha + uT)
        if alpha < EXACT_ABOVE:
            d_log = la_uT[iTr] - np.log(alpha + utx)[itxr]  # log((α+T)/(α+t_x)) ≥ 0
            d_inv = inv_uT[iTr] - 1.0 / (alpha + utx[itxr])  # its derivative in α
        else:
            at_x = alpha + utx[itxr]
            d_log = np.log1p(gap / at_x)
            d_inv = -gap * inv_uT[iTr] / at_x
        rx = r + xr
        z = (np.log(a) - np.log(b + ux1))[ixr] + rx * d_log
        e = np.exp(-np.abs(z))
        softplus = np.maximum(z, 0.0) + np.log1p(e)
        w4 = wr * np.where(z >= 0, 1.0, e) / (1.0 + e)  # posterior weight of "dropped out"
        beta, dab, dbb = log_beta_ratio(a, b, ux)
        l1p_uT = np.log1p(uT / alpha)  # r·log α − r·log(α+T) = −r·log1p(T/α)
        ll = W_x @ (log_rising(r, ux) + beta) - r * (W_T @ l1p_uT) - WX_T @ la_uT + wr @ softplus
        dr = W_x @ digamma_rising(r, ux) - W_T @ l1p_uT + w4 @ d_log
        dalpha = r * (W_T @ (uT * inv_uT)) / alpha - WX_T @ inv_uT + (w4 * rx) @ d_inv
        da = W_x @ dab + w4.sum() / a
        w4_x = np.bincount(ixr, weights=w4, minlength=ux.size)
        db = W_x @ dbb - w4_x @ (1.0 / (b + ux1))
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
    if not np.any((x > 1) & (w > 0)):
        raise FitError(EVERYONE_LEAVES)
    scale = 10.0 / max(float(T.max()), 1e-12)  # rescale time so alpha starts near 1
    fun = _bgnbd_objective(x, t_x * scale, T * scale, w)
    x0 = None if start is None else np.log([start.r, start.alpha * scale, start.a, start.b])
    v = minimise(fun, 4, "BG/NBD", x0, _bgnbd_limit)
    r, alpha, a, b = np.exp(v)
    alpha /= scale
    ll = bgnbd_log_likelihood((r, alpha, a, b), x, t_x, T, w)
    return BgNbdParams(float(r), float(alpha), float(a), float(b), ll)


#: r and α both past this: the Gamma mix of purchase rates is one rate (their spread 1/√r ≤ 0.1 % of it)
ONE_RATE = 1e6


def _bgnbd_limit(v: np.ndarray) -> bool:
    """Whether BG/NBD log-parameters at the box's edge are one of the model's limits, where the likelihood keeps
    rising to a supremum and the edge's parameters give the limit's numbers (to ~1/r): r, α → ∞ with r/α the
    shop's one purchase rate (no differences between customers: a perfectly regular shop's customers, whose
    purchase counts vary less than any mix of Poisson rates allows), and a → 0 with b ≥ 1 (nobody drops out; b
    then plays no part). Any other edge (a rate → 0, a + b → 0, …) is no model: the data do not identify it."""
    r, alpha, a, b = v
    rate = (r >= EDGE or alpha >= EDGE) and min(r, alpha) >= np.log(ONE_RATE)
    nobody = a <= -EDGE and b >= 0
    return bool((rate or max(r, alpha) < EDGE) and (nobody or (abs(a) < EDGE and abs(b) < EDGE)))


#: Why a shop where nobody bought on a third day (no x above 1) gets no fit: with every x ≤ 1 the likelihood
#: rises for ever as the dropout after a purchase, a/(a+b), goes to 1, so the best fit is that limit; the
#: optimizer stopped on the way wherever it happened to (a ~ 10²–10⁴, b ~ 10⁻³–10⁻⁵), and every repeat buyer,
#: yesterday's too, got P(alive) ~ 10⁻⁹–10⁻³. Unlike a → 0 (nobody leaves, the Poisson mix's numbers) this limit
#: says nothing of when customers leave, so the fit is not run.
EVERYONE_LEAVES = ("BG/NBD cannot tell when customers leave: no customer bought on more than 2 days, and then "
                   "the best fit is the limit where every repeat buyer drops out after his last purchase")


#: a fit's a at or below this is the box's edge: the limit a → 0 where nobody leaves (:func:`_bgnbd_limit`)
NOBODY_LEAVES = float(np.exp(-EDGE))


def nobody_leaves(params: BgNbdParams) -> bool:
    """Whether ``params`` are the fit's limit a → 0: nobody drops out, b plays no part (it drifts anywhere, to 10⁸,
    where the general formulas subtract nearly equal numbers), P(alive) = 1 and the expected purchases those of
    the Gamma–Poisson mix alone."""
    return params.a <= NOBODY_LEAVES


def p_alive(params: BgNbdParams, x, t_x, T) -> np.ndarray:
    """P(alive at T | x, t_x, T) (Hardie note 021); 1 for customers without repeat purchases, and for everyone at
    the limit where nobody leaves (:func:`nobody_leaves`)."""
    from scipy.special import expit  # (imported on first use: see the module docstring)
    x, t_x, T = _arrays(x, t_x, T)
    if nobody_leaves(params):
        return np.ones(np.broadcast_shapes(x.shape, t_x.shape, T.shape))
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_div = (r + x) * np.log1p((T - t_x) / (alpha + t_x)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_div))


def expected_purchases(params: BgNbdParams, t, x, t_x, T) -> np.ndarray:
    """E[purchases in (T, T+t] | x, t_x, T] (FHL 2005 eq. 10); ``t`` scalar or array.

    The term ((α+T)/(α+T+t))^(r+x)·2F1(…) is taken in log space (both factors overflow for large x) with its
    sign: where 2F1 < 0 (see :func:`~segmentation.hypergeometric.log_hyp2f1`) 1 − term = 1 + |term|. At the limit
    where nobody leaves (:func:`nobody_leaves`) they are (r+x)/(α+T)·t, the Gamma–Poisson mix's."""
    t, x, t_x, T = _arrays(t, x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if nobody_leaves(params):
        return t * ((r + x) / (alpha + T)) * np.ones_like(t_x)
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
    """Total Gamma-Gamma log-likelihood of repeat buyers' (x, m̄) (note 025 eq. 1a), with the fit's exact terms:
    −log B(p·x, q) − q·log1p(x·m̄/γ) − p·x·log1p(γ/(x·m̄)) − log m̄ (q·log γ − (p·x+q)·log(x·m̄+γ) does not cancel
    there): 2·10⁻⁹ relative where p·x and q are in the millions (their gammaln differences: 5·10⁻⁸; 10⁻¹⁵ at the
    CDNOW fit). A fit at the limit of one mean spend reports the limit's own
    (:func:`segmentation.spend_limit.log_likelihood`)."""
    p, q, g = params[:3] if isinstance(params, tuple) else (params.p, params.q, params.gamma)
    x, m = _arrays(x, m)
    ux, ix = _by_x(x)
    xm = x * m
    return float(np.sum(neg_log_beta(p * ux, q)[0][ix] - q * np.log1p(xm / g) - p * x * np.log1p(g / xm) - np.log(m)))


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
        dpq = digamma(pu + q)
        dp = np.dot(n_x * ux, dpq - digamma(pu) + lux) + sum_xlm - sum_xlxg
        if q < EXACT_ABOVE and p < EXACT_ABOVE:
            ll = (np.dot(n_x, gammaln(pu + q) - gammaln(pu) + pu * lux) - n * gammaln(q) + n * q * np.log(g)
                  + p * sum_xlm - sum_lm - p * sum_xlxg - q * sum_lxg)
            dq = np.dot(n_x, dpq) - sum_lxg + n * (np.log(g) - digamma(q))
            dg = n * q / g - p * float(np.dot(x, inv)) - q * float(inv.sum())
        else:  # spends alike (q, γ → ∞) or each customer's alike (p → ∞): the terms without cancelling
            # (q·log γ − q·log(x·m̄ + γ) = −q·log1p(x·m̄/γ); the terms in p alike)
            nlb, d_pu, d_q = neg_log_beta(pu, q)
            l_m, l_g = np.log1p(xm / g), np.log1p(g / xm)
            ll = np.dot(n_x, nlb) - q * float(l_m.sum()) - p * float(np.dot(x, l_g)) - sum_lm
            dp = np.dot(n_x * ux, d_pu) - float(np.dot(x, l_g))
            dq = np.dot(n_x, d_q) - float(l_m.sum())
            dg = q / g * float(np.dot(xm, inv)) - p * float(np.dot(x, inv))
        return -float(ll) / n, -np.array([dp * p, dq * q, dg * g]) / n

    try:
        v = minimise(fun, 3, "Gamma-Gamma", limit=_gamma_gamma_limit)
    except FitError as exc:
        one = _one_mean_spend(x, m, s, exc.best, n)
        if one is None:
            raise
        return one
    if np.any(np.abs(v) >= EDGE):  # (the limit, accepted at the box's edge: fitted directly, where it is)
        return _one_mean_spend(x, m, s, fun(v)[0], n) or _gamma_gamma_params(np.exp(v), s, x, m)
    return _gamma_gamma_params(np.exp(v), s, x, m)


def _gamma_gamma_params(pqg: np.ndarray, s: float, x: np.ndarray, m: np.ndarray) -> GammaGammaParams:
    p, q, g = pqg
    g *= s
    if q <= 1:
        raise FitError(f"Gamma-Gamma q = {q:.3f} ≤ 1: expected spend is undefined (heavy-tailed spend)")
    return GammaGammaParams(float(p), float(q), float(g), gamma_gamma_log_likelihood((p, q, g), x, m))


def _one_mean_spend(x: np.ndarray, m: np.ndarray, s: float, best: float | None, n: int) -> GammaGammaParams | None:
    """The spend model's limit of one mean spend (:mod:`segmentation.spend_limit`), when the general fit (its
    objective's least value ``best``: the mean negative log-likelihood of m̄/``s``) found no point better than it by
    more than :data:`~segmentation.spend_limit.TOLERANCE`; else None."""
    one = spend_limit.fit(x, m / s)
    if one is None or best is None:
        return None
    p, nu = one
    if -best * n - spend_limit.log_likelihood(p, nu, x, m / s) > spend_limit.TOLERANCE:
        return None
    p, q, g = spend_limit.params(p, nu / s, x)
    return GammaGammaParams(p, q, g, spend_limit.log_likelihood(p, nu / s, x, m))


def _gamma_gamma_limit(v: np.ndarray) -> bool:
    """Whether Gamma-Gamma log-parameters at the box's edge are its limit of no differences between customers'
    mean spends: q, γ → ∞ with γ/q fixed, p inside the box (each customer's orders one mix of the same prices;
    expected_aov is then p·γ/(q − 1) for everyone). p → ∞ (each customer's orders alike: one price for everything)
    stays a failed fit, with its own advice (:func:`segmentation.fitnotes.spend_did_not_converge`)."""
    p, q, g = v
    alike = (q >= EDGE or g >= EDGE) and min(q, g) >= np.log(ONE_RATE)
    return bool(alike and abs(p) < EDGE)


def expected_aov(params: GammaGammaParams, x, m) -> np.ndarray:
    """E[mean spend per purchase | x, m̄] (note 025 eq. 5); the population mean when x = 0."""
    x, m = _arrays(x, m)
    p, q, g = params.p, params.q, params.gamma
    weight = own_spend_weight(params, x)
    return (1 - weight) * (g * p / (q - 1)) + weight * m


def own_spend_weight(params: GammaGammaParams, x) -> np.ndarray:
    """The weight of a customer's own mean spend in his :func:`expected_aov` (of ``x`` repeat purchase days):
    p·x/(p·x + q − 1), the population mean's the rest. 0 to double precision at the limit of one mean spend."""
    x = np.asarray(x, dtype=float)
    return params.p * x / (params.p * x + params.q - 1)


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
    # every step's end in one call (one row each): the 2F1 series of all of them are summed together
    cums = expected_purchases(bg, ends.reshape((n,) + (1,) * total.ndim), x, t_x, T)
    for end, cum in zip(ends, cums):
        total = total + (cum - prev) / (1 + monthly_discount_rate) ** (end / month)
        prev = cum
    return total * np.asarray(aov, dtype=np.float64)
