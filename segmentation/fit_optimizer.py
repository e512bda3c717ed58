"""The fits' optimizer: a mean negative log-likelihood with its gradient minimised over log-parameters in a box
(:func:`minimise`), for :mod:`segmentation.btyd_models`' BG/NBD and Gamma-Gamma fits.

``scipy.optimize`` is imported where a fit runs (see :mod:`segmentation.btyd_models`).
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import ThinDataError

logger = logging.getLogger("segmentation.btyd_models")  # (the fits' lines, as before the optimizer had a module)


class FitError(ThinDataError):
    """A model could not be fitted; ``str()`` is a one-line reason for the report. ``best``: the least value of the
    objective the optimizer saw (None when none was finite or no optimizer ran)."""

    def __init__(self, message: str, best: float | None = None):
        super().__init__(message)
        self.best = best


class _Stalled(Exception):
    """The optimizer's last evaluations improved on the best value by no more than rounding."""


#: evaluations in a row without an improvement beyond rounding, at a point with a small gradient: converged
STALLED_EVALUATIONS = 8


#: the log-parameters' box, and how near its edge a fit counts as run off to it
BOUND, EDGE = 20.0, 19.9


def _projected(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The gradient ``g`` at ``v`` without the components that push out of the box at its edge (L-BFGS-B's own
    convergence test): a fit at a model's limit (:func:`fit_bgnbd`) has converged there."""
    return np.where(((v <= -EDGE) & (g > 0)) | ((v >= EDGE) & (g < 0)), 0.0, g)


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
            best.update(f=f, v=np.array(v, dtype=np.float64), g=_projected(np.asarray(g), np.asarray(v)))
        if best["since"] >= STALLED_EVALUATIONS and np.max(np.abs(best["g"])) < 1e-5:
            raise _Stalled
        return f, g

    return guarded, best


def minimise(fun, n_params: int, what: str, start: np.ndarray | None = None, limit=None) -> np.ndarray:
    """Minimise ``fun(v) -> (value, gradient)`` over log-parameters from ``start`` (default 0); return them.

    L-BFGS-B's line search often stops "abnormally" at the optimum once the mean
    log-likelihood is flat to machine precision, so a small gradient counts as converged; so does a run of
    evaluations that no longer better the value beyond rounding (:func:`_stall_guard`): the best point is taken.
    ``limit(v)``: whether log-parameters at the box's edge are a limit the model has there (see :func:`_off_boundary`).
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
            res = minimize(guarded, x0, jac=True, method="L-BFGS-B", bounds=[(-BOUND, BOUND)] * n_params,
                           options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-9})
        except _Stalled:
            logger.debug("%s fit: %d likelihood evaluations (stopped: no better than rounding)", what,
                         best["evaluations"])
            return _off_boundary(best["v"], what, limit, best["f"])
        logger.debug("%s fit: %d likelihood evaluations", what, best["evaluations"])
        ok = np.all(np.isfinite(res.x)) and np.isfinite(res.fun) and np.max(np.abs(_projected(res.jac, res.x))) < 1e-5
        if not ok:
            res = minimize(lambda v: fun(v)[0], res.x if np.all(np.isfinite(res.x)) else x0,
                           method="Nelder-Mead", options={"maxiter": 2000 * n_params, "xatol": 1e-9, "fatol": 1e-13})
            ok = res.success and np.all(np.isfinite(res.x)) and np.isfinite(res.fun)
    least = min(best["f"], res.fun) if np.isfinite(res.fun) else best["f"]
    if not ok:
        raise FitError(f"{what} optimizer did not converge: {res.message}", _finite(least))
    return _off_boundary(res.x, what, limit, least)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _off_boundary(v: np.ndarray, what: str, limit=None, least: float = np.inf) -> np.ndarray:
    """``v``, unless it is at the box's edge where the model has no limit (``limit(v)``: where it has one, the
    parameters there give that limit's numbers); ``least``: the objective's least value seen, for the error."""
    if np.any(np.abs(v) >= EDGE) and limit is not None and limit(v):
        logger.debug("%s fit at the model's limit on the box's edge: %s", what, np.round(v, 2))
        return v
    if np.any(np.abs(v) >= EDGE):
        raise FitError(f"{what} parameters ran off to a boundary (the data do not identify the model)", _finite(least))
    return v
