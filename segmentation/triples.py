"""The distinct (x, t_x, T) rows of a BTYD summary: the fits and the per-customer numbers are computed once per
distinct row (:mod:`segmentation.btyd`, :mod:`segmentation.holdout`), and each customer takes its row's."""

from __future__ import annotations

import numpy as np


def distinct_triples(x: np.ndarray, tx: np.ndarray, T: np.ndarray):
    """The distinct (x, t_x, T) rows and, per input row, the index of its distinct row (a lexsort and one pass:
    ``np.unique(axis=0)`` is ten times slower on a million rows). NaNs never match, so they stay apart. Rows
    already in that order (a query's ``ORDER BY``: the holdout's) are seen to be, and not sorted again (the
    stable sort would leave them as they are)."""
    return _distinct((x, tx, T), None if _lex_sorted(x, tx, T) else np.lexsort((T, tx, x)))


def distinct_rows(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct rows of ``columns`` (1-d arrays of one length), sorted, and per input row the index of its
    distinct row (as :func:`distinct_triples`, for any number of columns)."""
    *rows, inv = _distinct(columns, np.lexsort(columns[::-1]))
    return rows, inv


def _distinct(columns, order: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """The distinct rows of ``columns`` taken in ``order`` (None: as they are, already sorted), then the index of
    each input row's."""
    cols = [c if order is None else c[order] for c in columns]
    n = len(cols[0])
    new = np.zeros(n, dtype=bool)
    new[:1] = True
    for c in cols:
        new[1:] |= c[1:] != c[:-1]
    inv = np.empty(n, dtype=np.intp)
    inv[np.arange(n) if order is None else order] = np.cumsum(new) - 1
    return (*(c[new] for c in cols), inv)


def _lex_sorted(x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> bool:
    """Whether the rows (x, tx, T) are in ascending lexicographic order (a NaN anywhere: not known to be)."""
    if len(x) < 2:
        return True
    step = (x[1:] > x[:-1]) | ((x[1:] == x[:-1]) & ((tx[1:] > tx[:-1]) | ((tx[1:] == tx[:-1]) & (T[1:] >= T[:-1]))))
    return bool(step.all())
