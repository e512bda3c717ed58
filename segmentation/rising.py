"""log Γ(v + x) − log Γ(v) for whole x ≥ 0 (the log of the rising factorial (v)ₓ), its derivative in v and the log
of a Beta ratio, each exact where ``v`` is large: the BG/NBD likelihood's terms (:mod:`segmentation.btyd_models`).

As a difference of ``gammaln`` they lose digits with a large v: gammaln(3·10⁸) is 5.6·10⁹, known to ~10⁻⁶, while
the difference for x = 10 is some 200; a steady-rate shop's fit (every customer buying at one rate: r, α → ∞)
goes there, and the optimizer, seeing only rounding, could not converge. For whole x they are finite sums,
Σᵢ₍ᵢ<ₓ₎ log(v + i) = x·log v + Σ log1p(i/v) and Σ 1/(v + i), taken as one cumulative sum over i < max x for every
distinct x at once (``ux``: sorted distinct whole numbers, as :func:`segmentation.btyd_models._by_x` gives).
Below :data:`EXACT_ABOVE` the ``gammaln``/``digamma`` forms are kept: they are exact there and cost nothing per x.
"""

from __future__ import annotations

import numpy as np

#: from this value of v on (or of b, for the Beta ratio), the sums and Stirling's series replace the differences of
#: gammaln/digamma; below it those lose at most ~3 digits of a term of the order of x (gammaln(10³) ≈ 5900)
EXACT_ABOVE = 1e3


def _partial_sums(steps: np.ndarray, ux: np.ndarray) -> np.ndarray:
    """Σ steps[i] for i < x, for each x of ``ux``."""
    return np.concatenate(([0.0], np.cumsum(steps)))[ux.astype(np.intp)]


def log_rising(v: float, ux: np.ndarray) -> np.ndarray:
    """log Γ(v + x) − log Γ(v) for each whole x ≥ 0 of the sorted ``ux``."""
    from scipy.special import gammaln  # (imported on first use: see segmentation.btyd_models)
    if v < EXACT_ABOVE or not ux.size:
        return gammaln(v + ux) - gammaln(v)
    return ux * np.log(v) + _partial_sums(np.log1p(np.arange(ux[-1]) / v), ux)


def digamma_rising(v: float, ux: np.ndarray) -> np.ndarray:
    """ψ(v + x) − ψ(v) = Σ 1/(v + i), i < x: the derivative of :func:`log_rising` in v."""
    from scipy.special import digamma  # (imported on first use: see segmentation.btyd_models)
    if v < EXACT_ABOVE or not ux.size:
        return digamma(v + ux) - digamma(v)
    return _partial_sums(1.0 / (v + np.arange(ux[-1])), ux)


def log_beta_ratio(a: float, b: float, ux: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log B(a, b + x) / B(a, b) = [log Γ(b + x) − log Γ(b)] − [log Γ(a + b + x) − log Γ(a + b)] for each x of
    ``ux``, and its derivatives in a and in b. With b large the two brackets are nearly equal (b = 3·10⁵, a = 10⁻⁹:
    each about 13·x, their difference 3·10⁻¹⁵·x): then Σ −log1p(a/(b + i)), −Σ 1/(a + b + i) and
    Σ a/((b + i)(a + b + i)), i < x, which nothing cancels in."""
    from scipy.special import digamma, gammaln  # (imported on first use: see segmentation.btyd_models)
    if b < EXACT_ABOVE or not ux.size:
        dab = digamma(a + b) - digamma(a + b + ux)
        value = gammaln(a + b) + gammaln(b + ux) - gammaln(b) - gammaln(a + b + ux)
        return value, dab, dab + digamma(b + ux) - digamma(b)
    bi = b + np.arange(ux[-1])
    return (_partial_sums(-np.log1p(a / bi), ux), _partial_sums(-1.0 / (a + bi), ux),
            _partial_sums(a / (bi * (a + bi)), ux))


def _stirling_rest(z: np.ndarray) -> np.ndarray:
    """log Γ(z) − [(z − ½)·log z − z + ½·log 2π] for z ≥ :data:`EXACT_ABOVE` (its next term, 1/(1260·z⁵), is below
    10⁻¹⁸ there)."""
    return 1.0 / (12.0 * z) - 1.0 / (360.0 * z ** 3)


def log_gamma_shift(q: np.ndarray | float, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """log Γ(q + s) − log Γ(q) for any s ≥ 0 (the spend model's p·x is no whole number) and q ≥ :data:`EXACT_ABOVE`
    (elementwise), and its derivative in q, ψ(q + s) − ψ(q): Stirling's series of both, where the differences of
    gammaln and digamma lose digits."""
    q, s = np.asarray(q, dtype=np.float64), np.asarray(s, dtype=np.float64)
    qs = q + s
    l1p = np.log1p(s / q)
    value = (q - 0.5) * l1p + s * np.log(qs) - s + _stirling_rest(qs) - _stirling_rest(q)
    # ψ(z) = log z − 1/(2z) − 1/(12z²) + 1/(120z⁴) − …
    slope = l1p + s / (2.0 * q * qs) + (1.0 / q ** 2 - 1.0 / qs ** 2) / 12.0 - (1.0 / q ** 4 - 1.0 / qs ** 4) / 120.0
    return value, slope


def neg_log_beta(u: np.ndarray, v: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """−log B(u, v) = log Γ(u + v) − log Γ(u) − log Γ(v) (``u`` an array, ``v`` a number) and its derivatives in u and
    in v, ψ(u + v) − ψ(u) and ψ(u + v) − ψ(v): gammaln and digamma where both are below :data:`EXACT_ABOVE`, else
    :func:`log_gamma_shift` from the larger (with Stirling's series for the other too where both are large)."""
    from scipy.special import digamma, gammaln  # (imported on first use: see segmentation.btyd_models)
    u = np.asarray(u, dtype=np.float64)
    v_ = np.full_like(u, v)
    big_u, big_v = u >= EXACT_ABOVE, v_ >= EXACT_ABOVE
    plain = gammaln(u + v_) - gammaln(u) - gammaln(v_)
    du_plain, dv_plain = digamma(u + v_) - digamma(u), digamma(u + v_) - digamma(v_)
    with np.errstate(all="ignore"):  # (each form is taken only where it holds)
        from_u, du_big = log_gamma_shift(np.where(big_u, u, EXACT_ABOVE), v_)
        from_v, dv_big = log_gamma_shift(np.where(big_v, v_, EXACT_ABOVE), u)
        both = ((u - 0.5) * np.log1p(v_ / u) + v_ * np.log1p(u / v_) + 0.5 * np.log(v_ / (2 * np.pi))
                + _stirling_rest(u + v_) - _stirling_rest(u) - _stirling_rest(v_))
    value = np.where(big_u & big_v, both, np.where(big_u, from_u - gammaln(v_),
                                                   np.where(big_v, from_v - gammaln(u), plain)))
    return value, np.where(big_u, du_big, du_plain), np.where(big_v, dv_big, dv_plain)
