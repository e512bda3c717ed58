"""Import modules on a background thread while the caller's thread waits on DuckDB.

Every command runs in a fresh interpreter, and the predictions bring scipy (its special functions, and its
optimizer when a fit runs): about half a second of imports, paid before any model work. DuckDB releases the GIL
while it runs a query, so the imports can proceed during the queries that come first (opening the store, reading
the export, the purchase-day totals, the lifecycle table); the caller's own ``import`` later finds the module
loaded, or waits for it (Python's per-module import lock), and raises the import's error itself if there is one.
"""

from __future__ import annotations

import importlib
import sys
import threading

#: what a predicting run imports, in the order it needs them: the predictions' module first (the run's config
#: is validated by its :class:`~segmentation.predictive.PredictConfig`, so the run waits for it early), then the
#: special functions, which nothing needs before the model numbers, after the run's first queries on the
#: purchase days (:mod:`segmentation.btyd_models` imports them where they are used)
PREDICTION_MODULES = ("segmentation.predictive", "scipy.special")
#: what a run needs only when it computes the model's numbers (not when it reads those an earlier run kept:
#: :func:`segmentation.predictive.predict_customers` starts it then, before the queries of the summaries)
MODEL_MODULES = ("scipy.special",)


def import_in_background(*modules: str) -> threading.Thread | None:
    """Start importing ``modules``, one after the other, on a daemon thread (None when all are imported)."""
    todo = [m for m in modules if m not in sys.modules]
    if not todo:
        return None

    def load() -> None:
        for module in todo:
            try:
                importlib.import_module(module)
            except BaseException:  # noqa: BLE001 - the caller's own import raises it where it is handled
                pass

    thread = threading.Thread(target=load, name=f"import {', '.join(todo)}", daemon=True)
    thread.start()
    return thread
