"""The Gauss hypergeometric function 2F1 as BG/NBD's expected purchases need it: its log and sign, wherever
doubles can hold the answer (:func:`log_hyp2f1`).

scipy's ``hyp2f1`` alone leaves three holes, each of which left customers without predictions:

* 2F1 < 0 (``c`` < 0: one-time buyers of a fit with a + b < 1, a U-shaped dropout mix): its log was NaN; the sign
  is returned beside the log of its magnitude.
* the series overflows (many repeat purchases): Euler's transformation, 2F1(a, b; c; z) =
  (1 − z)^(c − a − b) · 2F1(c − a, c − b; c; z), taken in logs.
* a first parameter ``a`` = r + x of 10⁵ or more: scipy answers NaN. A fit gets there when every customer buys at
  one steady rate (a subscription shop's regular buyers: r, α → ∞ with r/α, the rate, fixed; the Gamma mix of
  rates becomes a single rate). There the series is summed term by term (:func:`_log_series`): with b, c > 0 and
  0 ≤ z < 1 every term is positive, so nothing cancels, and the terms fall once k passes a·z (the expected
  purchases in the window: a few to some hundreds), so that many terms and a few dozen more reach double precision;
  summed once per distinct parameter row (see :func:`_log_series`; measured in ``bench/hyp2f1.py``).

``scipy.special`` is imported where it is first used (see :mod:`segmentation.btyd_models`).
"""

from __future__ import annotations

import numpy as np

from .triples import distinct_rows

#: the most terms :func:`_log_series` sums before it gives up on an entry (left NaN: counted as non-finite)
MAX_TERMS = 20_000
#: the series stops when the rest of it is below this share of the sum (double precision)
_TAIL = np.log(1e-17)


def log_hyp2f1(ha: np.ndarray, hb: np.ndarray, hc: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log |2F1(ha, hb; hc; z)| and where 2F1 is negative (arrays of one shape): scipy's, Euler's transformation
    where that overflows, the positive series where scipy gives no number (see the module docstring; each of the
    later ones is evaluated only where the one before failed)."""
    from scipy.special import hyp2f1  # (imported on first use: see the module docstring)
    shape = np.shape(z)
    ha, hb, hc, z = (np.atleast_1d(v) for v in (ha, hb, hc, z))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        h = hyp2f1(ha, hb, hc, z)
        out, negative = np.log(np.abs(h)), h < 0
        over = np.isinf(out)
        if over.any():
            a, b, c, zo = ha[over], hb[over], hc[over], z[over]
            h = hyp2f1(c - a, c - b, c, zo)
            out[over] = np.log(np.abs(h)) + (c - a - b) * np.log1p(-zo)
            negative[over] = h < 0
        summed = ~np.isfinite(out) & (ha >= 1) & (hb > 0) & (hc > 0) & (z >= 0) & (z < 1)
        if summed.any():
            out[summed] = _log_series(ha[summed], hb[summed], hc[summed], z[summed])
            negative[summed] = False
    return out.reshape(shape), negative.reshape(shape)


def _log_series(a: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log Σₖ (a)ₖ(b)ₖ / ((c)ₖ k!) · zᵏ for a ≥ 1, b > 0, c > 0, 0 ≤ z < 1 (1-d arrays), summed in logs; NaN where
    :data:`MAX_TERMS` terms do not reach double precision. Summed once per distinct (a, b, c, z): expected
    purchases' depend on (x, T) alone, which many summaries share (t_x differs), and CLV's per month likewise.

    The ratio of term k + 1 to term k is ρₖ = z·(a + k)/(k + 1)·(b + k)/(c + k); with a ≥ 1 no later ratio exceeds
    ρ*ₖ = z·(a + k)/(k + 1)·max(1, (b + k)/(c + k)), so once ρ*ₖ < 1 the rest is below termₖ₊₁·ρ*ₖ/(1 − ρ*ₖ)."""
    (a, b, c, z), inv = distinct_rows(a, b, c, z)
    out = np.full_like(z, np.nan)
    total = np.zeros_like(z)
    term = np.zeros_like(z)  # log of term k
    left = np.arange(z.size)  # the entries still summing (the arrays above hold only theirs)
    for k in range(MAX_TERMS):
        ak, bk, ck = a + k, b + k, c + k
        step = z * ak / (k + 1.0)
        term += np.log(step * bk / ck)
        total = np.logaddexp(total, term)
        bound = step * np.maximum(1.0, bk / ck)
        done = (bound < 1) & (term + np.log(bound) - np.log1p(-bound) - total < _TAIL)
        if done.any():  # (the finished entries leave the arrays: each step computes the others' alone)
            out[left[done]] = total[done]
            keep = ~done
            a, b, c, z, term, total, left = (v[keep] for v in (a, b, c, z, term, total, left))
            if not left.size:
                break
    return out[inv]
