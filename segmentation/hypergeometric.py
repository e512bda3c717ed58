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
  summed as doubles once per distinct parameter row (see :func:`_log_series`; measured in ``bench/hyp2f1.py``).

``scipy.special`` is imported where it is first used (see :mod:`segmentation.btyd_models`).
"""

from __future__ import annotations

import numpy as np

from .triples import distinct_rows

#: the most terms :func:`_log_series` sums before it gives up on an entry (left NaN: counted as non-finite)
MAX_TERMS = 20_000
#: the series stops when the rest of it is below this share of the sum (double precision)
_TAIL = 1e-17
#: a term past this is divided by it, with its sum, and its log added to the entry's scale (the terms of a window of
#: hundreds of expected purchases reach e^hundreds: past a double's range before the sum converges); checked every
#: :data:`_CHECK_EVERY` terms, over which a term grows less than 10¹⁰⁸ (below 10¹³ purchases expected)
_RESCALE = 1e200
#: the terms summed between two checks of convergence and rescaling (a few more terms than needed add less than
#: 10⁻¹⁷ of the sum)
_CHECK_EVERY = 8
#: the entries summed together: their working arrays stay in the processor's cache
_BLOCK = 16_384

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
    """log Σₖ (a)ₖ(b)ₖ / ((c)ₖ k!) · zᵏ for a ≥ 1, b > 0, c > 0, 0 ≤ z < 1 (1-d arrays); NaN where :data:`MAX_TERMS`
    terms do not reach double precision. Summed once per distinct (a, b, c, z): expected purchases' depend on (x, T)
    alone, which many summaries share (t_x differs), and CLV's per month likewise; in blocks of :data:`_BLOCK`
    entries of about as many terms (sorted by a·z, the purchases expected in the window).

    The terms are positive: each is the one before × ρₖ = z·(a + k)/(k + 1)·(b + k)/(c + k), summed as doubles (a
    multiplication and an addition a term, no logarithm), an entry's term and sum divided by :data:`_RESCALE` when
    its term passes it. Summed in logs (until 2026-12-06), each term's log carried the rounding of all the logs
    before it: a year's discounted CLV at 7 purchases a week was 3·10⁻¹² off a 40-digit reference, 10⁻¹³ now, and
    4× slower (``bench/hyp2f1.py``). With a ≥ 1 no later ratio exceeds ρ*ₖ = z·(a + k)/(k + 1)·max(1, (b + k)/(c + k)),
    so once ρ*ₖ < 1 the rest is below termₖ₊₁·ρ*ₖ/(1 − ρ*ₖ)."""
    (a, b, c, z), inv = distinct_rows(a, b, c, z)
    out = np.empty_like(z)
    by_length = np.argsort(a * z, kind="stable")
    for start in range(0, z.size, _BLOCK):
        block = by_length[start:start + _BLOCK]
        out[block] = _log_series_block(a[block], b[block], c[block], z[block])
    return out[inv]


def _log_series_block(a: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """:func:`_log_series` of a block of distinct entries."""
    out = np.full_like(z, np.nan)
    total, term, scale = np.ones_like(z), np.ones_like(z), np.zeros_like(z)  # (term k and the sum, ÷ e^scale)
    left = np.arange(z.size)  # the entries still summing (the arrays above hold only theirs)
    for k in range(MAX_TERMS):
        bc = (b + k) / (c + k)
        step = z * (a + k) / (k + 1.0)
        term *= step * bc
        total += term
        if k % _CHECK_EVERY != _CHECK_EVERY - 1:
            continue
        big = term > _RESCALE
        if big.any():
            term[big] /= _RESCALE
            total[big] /= _RESCALE
            scale[big] += np.log(_RESCALE)
        bound = step * np.maximum(1.0, bc)
        done = (bound < 1) & (term * bound < _TAIL * total * (1 - bound))
        if done.any():  # (the finished entries leave the arrays: each step computes the others' alone)
            out[left[done]] = np.log(total[done]) + scale[done]
            keep = ~done
            a, b, c, z, term, total, scale, left = (v[keep] for v in (a, b, c, z, term, total, scale, left))
            if not left.size:
                break
    return out
