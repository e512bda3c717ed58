"""The model fits of a predicting run, guarded: a shop too small to fit (:func:`thin_data`), several currencies or
a fit that fails give a reason (:mod:`segmentation.fitnotes`) instead of parameters; a fit whose exact inputs an
earlier run fitted is read from the caller's :class:`~segmentation.fit_cache.FitStore`, and a new one added to it.
:mod:`segmentation.predictive` calls them."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable, TypeVar

import numpy as np

from . import fitnotes
from .btyd import SummaryCounts
from .btyd_models import BgNbdParams, FitError, GammaGammaParams, fit_bgnbd, fit_gamma_gamma
from .errors import interrupted_query
from .fit_cache import FitStore, fit_key
from .fitnotes import Unfitted

if TYPE_CHECKING:
    from .predictive import PredictConfig

logger = logging.getLogger("segmentation.predictive")  # (the fits' lines are the predictions' log)
T = TypeVar("T")


def beside(fit: Callable[[], T], work: Callable[[], object] | None) -> T:
    """``fit()`` (pure numpy and scipy: no connection, no cache) on a daemon thread while ``work`` (the caller's
    DuckDB statements) runs on this one; then its result, or what it raised. A Ctrl-C in ``work`` (or DuckDB's
    form of it, :func:`~segmentation.errors.interrupted_query`) or in the wait after it is raised at once: the fit
    is not waited for, and its thread (a daemon) ends with the process. Any other exception in ``work`` is raised
    once the fit has ended: the fit holds the process's BLAS threads at one while it runs (``threadpool_limits``,
    process-wide), and a fit left running would overlap the process's next one (its figures off in the last
    digits, and the BLAS left at one thread). ``work`` None: the fit on this thread."""
    if work is None:
        return fit()
    out: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            out["result"] = fit()
        except BaseException as exc:  # raised on the caller's thread
            out["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="rfmsync-fit", daemon=True).start()
    logger.debug("fitting on a worker beside the caller's work")
    try:
        work()
    except Exception as exc:
        if not interrupted_query(exc):
            done.wait()
        raise
    done.wait()  # (a lock's wait: a Ctrl-C interrupts it)
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["result"]  # type: ignore[return-value]


def thin_data(s: SummaryCounts, cfg: PredictConfig) -> Unfitted | None:
    if s.customers < cfg.min_customers:
        return fitnotes.too_few_customers(s.customers, cfg.min_customers)
    history = s.history_days
    if history < cfg.min_history_days:
        return fitnotes.short_history(history, cfg.min_history_days)
    if s.repeat_customers < cfg.min_repeat_customers:
        return fitnotes.few_repeat_buyers(s.repeat_customers, cfg.min_repeat_customers)
    return None


def fit_bgnbd_guarded(s: SummaryCounts, cfg: PredictConfig, start: BgNbdParams | None = None,
                      fits: FitStore | None = None,
                      meanwhile: Callable[[], object] | None = None) -> tuple[BgNbdParams | None, Unfitted | None]:
    """``meanwhile``: the caller's work, run once whatever the fit does: beside it (:func:`beside`) when it runs,
    else before returning; the fit cache is read before and written after it, on this thread."""
    reason = thin_data(s, cfg)
    key = fit_key("bgnbd", s.x, s.recency_days, s.t_days, s.weights, extra=(s.time_unit, start)) \
        if fits and not reason else ""
    known = fits.get(key) if key else None
    if reason or known is not None:
        if meanwhile is not None:
            meanwhile()
        if reason:
            return None, reason
        logger.debug("BG/NBD fit%s read from an earlier run on the same summary", " (holdout)" if start else "")
        return BgNbdParams(*known), None
    try:  # customers sharing (x, t_x, T) count once, weighted: the same likelihood, fewer terms
        bg = beside(lambda: fit_bgnbd(s.x, s.t_x, s.T, weights=s.weights, start=start), meanwhile)
    except FitError as exc:
        return None, fitnotes.from_fit_error(str(exc))
    if fits:
        fits.put(key, (bg.r, bg.alpha, bg.a, bg.b, bg.log_likelihood))
    return bg, None


def fit_gamma_gamma_guarded(cfg: PredictConfig, currencies: list[tuple[str]], x: np.ndarray, m: np.ndarray,
                            fits: FitStore | None = None) -> tuple[GammaGammaParams | None, Unfitted | None]:
    if len(currencies) > 1:
        names = ", ".join(c[0] for c in currencies[:5])
        return None, fitnotes.several_currencies(len(currencies), names)
    if len(x) < cfg.min_repeat_customers:
        return None, fitnotes.few_repeat_buyers(len(x), cfg.min_repeat_customers, "repeat customers with spend")
    key = fit_key("gamma_gamma", x, m) if fits else ""
    known = fits.get(key) if fits else None
    if known is not None:
        logger.debug("Gamma-Gamma fit read from an earlier run on the same repeat buyers")
        return GammaGammaParams(*known), None
    try:
        gg = fit_gamma_gamma(x, m)
    except FitError as exc:
        values, counts = np.unique(m, return_counts=True)
        spread = fitnotes.SpendSpread(float(values[0]), float(values[-1]), float(values[counts.argmax()]),
                                      float(counts.max() / counts.sum()))
        return None, fitnotes.from_fit_error(str(exc), spread)
    if fits:
        fits.put(key, (gg.p, gg.q, gg.gamma, gg.log_likelihood))
    return gg, None
