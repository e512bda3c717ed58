"""The distinct (x, t_x, T) rows of a BTYD summary: the fits and the per-customer numbers are computed once per
distinct row (:mod:`segmentation.btyd`, :mod:`segmentation.holdout`), and each customer takes its row's."""

from __future__ import annotations

import numpy as np


def distinct_triples(x: np.ndarray, tx: np.ndarray, T: np.ndarray):
    """The distinct (x, t_x, T) rows and, per input row, the index of its distinct row (a lexsort and one pass:
    ``np.unique(axis=0)`` is ten times slower on a million rows). NaNs never match, so they stay apart. Rows
    already in that order (a query's ``ORDER BY``: the holdout's) are seen to be, and not sorted again (the
    stable sort would leave them as they are)."""
    if _lex_sorted(x, tx, T):
        order = np.arange(len(x))
        xs, txs, Ts = x, tx, T
    else:
        order = np.lexsort((T, tx, x))
        xs, txs, Ts = x[order], tx[order], T[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (xs[1:] != xs[:-1]) | (txs[1:] != txs[:-1]) | (Ts[1:] != Ts[:-1])
    inv = np.empty(len(order), dtype=np.intp)
    inv[order] = np.cumsum(new) - 1
    return xs[new], txs[new], Ts[new], inv


def _lex_sorted(x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> bool:
    """Whether the rows (x, tx, T) are in ascending lexicographic order (a NaN anywhere: not known to be)."""
    if len(x) < 2:
        return True
    step = (x[1:] > x[:-1]) | ((x[1:] == x[:-1]) & ((tx[1:] > tx[:-1]) | ((tx[1:] == tx[:-1]) & (T[1:] >= T[:-1]))))
    return bool(step.all())
