"""The spend model's limit of one mean spend, fitted directly: Gamma-Gamma with q, γ → ∞ and γ/q = 1/ν fixed (no
differences between customers' mean spends), where each repeat buyer's mean spend m̄ over x purchase days is
Gamma(p·x, x·ν) and expected_aov is p/ν for everyone.

Near that limit the likelihood has a ridge (the spread of the mean spends is p·x's or q's to tell, and nearly
alike spends tell neither): the general fit's optimizer can stop on it before the box's edge ("did not converge"),
or, when p is large, at an edge that is still short of the limit (q = e²⁰ is not ≫ p·x for p ~ 10⁶). The limit
itself has one parameter to search, p (ν = p·Σx / Σx·m̄ at its maximum), and a concave likelihood: it is fitted
here and :func:`segmentation.btyd_models.fit_gamma_gamma` takes it when the general fit found no point better than
it by more than :data:`TOLERANCE`.
"""

from __future__ import annotations

import numpy as np

from .fit_optimizer import BOUND, EDGE
from .rising import EXACT_ABOVE

#: how much better (in total log-likelihood) the best point of a failed general fit may be than the limit for the
#: limit to be taken: a likelihood ratio of 1.01, far below what any data could tell apart (a ratio of e^1.92 is
#: the usual 95 % line for one parameter)
TOLERANCE = 0.01

#: the limit's q, as a multiple of the largest p·x: a customer's own mean spend weighs below 10⁻¹⁵ in his
#: expected_aov, which is p·γ/(q − 1) = p/ν to the last digit
LIMIT_Q = 1e15


def _log_minus_digamma(z: np.ndarray) -> np.ndarray:
    """log z − ψ(z) > 0, without the difference of two nearly equal numbers for a large z (its series)."""
    from scipy.special import digamma  # (imported on first use: see segmentation.btyd_models)
    big = z >= EXACT_ABOVE
    zb = np.where(big, z, EXACT_ABOVE)
    series = 1 / (2 * zb) + 1 / (12 * zb ** 2) - 1 / (120 * zb ** 4)
    return np.where(big, series, np.log(np.where(big, 1.0, z)) - digamma(np.where(big, 1.0, z)))


def log_likelihood(p: float, nu: float, x: np.ndarray, m: np.ndarray) -> float:
    """Σ log Gamma(m̄ | p·x, x·ν): the limit's total log-likelihood, the general one's as q → ∞ (note 025 eq. 1a).
    Each term as p·x·(log c − c + 1) + ½·log(p·x/2π) − Stirling's rest − log m̄ with c = m̄·ν/p, where p·x passes
    :data:`~segmentation.rising.EXACT_ABOVE` (p·x·log(x·ν·m̄), x·ν·m̄ and log Γ(p·x) then cancel to a few units)."""
    from scipy.special import gammaln  # (imported on first use: see segmentation.btyd_models)
    a, d = p * x, m * nu / p - 1.0
    plain = a * np.log(x * nu * m) - x * nu * m - gammaln(a)
    with np.errstate(all="ignore"):  # (each form is taken only where it holds)
        big = (a * (np.log1p(d) - d) + 0.5 * np.log(a / (2 * np.pi)) - 1 / (12 * a) + 1 / (360 * a ** 3))
    return float(np.sum(np.where(a >= EXACT_ABOVE, big, plain) - np.log(m)))


def fit(x: np.ndarray, m: np.ndarray) -> tuple[float, float] | None:
    """The limit's maximum-likelihood (p, ν) for repeat buyers' x and m̄ (m̄ > 0), or None when p runs to the
    box's edge (every customer's mean spend exactly alike: p → ∞, one price for everything)."""
    from scipy.optimize import brentq

    X, S = float(x.sum()), float(np.dot(x, m))
    spread = float(np.dot(x, np.log(m * (X / S))))  # ≤ 0 (Jensen); the slope in p is spread + Σx·(log(px) − ψ(px))

    def slope(log_p: float) -> float:
        return spread + float(np.dot(x, _log_minus_digamma(np.exp(log_p) * x)))

    if not slope(-BOUND) > 0 or not slope(EDGE) < 0:
        return None
    p = float(np.exp(brentq(slope, -BOUND, EDGE, xtol=1e-13, rtol=1e-15, maxiter=500)))
    return p, p * X / S


def params(p: float, nu: float, x: np.ndarray) -> tuple[float, float, float]:
    """The limit as Gamma-Gamma parameters (p, q, γ): q = :data:`LIMIT_Q` × the largest p·x, γ = q/ν."""
    q = LIMIT_Q * max(1.0, p * float(x.max()))
    return p, q, q / nu
