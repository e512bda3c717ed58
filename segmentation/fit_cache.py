"""Reuse a model fit whose inputs are exactly those of an earlier run (the optimizer is deterministic).

A fit depends on its inputs alone: BG/NBD on the distinct summaries (x, recency, T) and their weights, the time
unit and the start point; Gamma-Gamma on the repeat buyers' (x, mean spend), sorted. :func:`fit_key` hashes
those arrays (their bytes, dtype and shape) with the models' own code and the numpy and scipy versions, so a key
names one result: a second command on the same orders (`rfmsync plan` after `segments`, `predict` after
`sync`) reads the parameters instead of running L-BFGS-B again, and anything else (one more order, another
as-of, another config value that reaches the fit, another optimizer) is another key and a new fit. Failed fits
are not kept (they fail fast). Where the keys live is the caller's (:class:`FitStore`; the order store keeps
them between runs: :mod:`sync.store.fit_cache`).

The model's numbers of a whole run are kept the same way (:class:`NumberStore`, :func:`numbers_key`): the report's
figures (the fits, the holdout check, the counts) and the numbers per distinct summary, under a key of what they
are computed from: the identity of the orders the run's purchase days were built from (the caller's ``basis``: the
order store's day-cache key, which names the orders by count, checksum and generation), the as-of day, the time
zone, the whole ``[predict]`` config, the currencies of the completed orders (the one input the basis does not
cover: an order's currency edited in place) and the code that computes them. A warm run then skips the summaries,
the holdout's calibration, the spend rows and the model's numbers, and reads the table it would have computed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import scipy

from . import btyd_models

#: the fits' definition: the models' code (their optimizer and likelihood terms too) and the libraries
_DEFINITION = hashlib.blake2b(b"".join((Path(btyd_models.__file__).parent / name).read_bytes()
                                       for name in ("btyd_models.py", "fit_optimizer.py", "rising.py",
                                                    "spend_limit.py"))
                              + f"{np.__version__} {scipy.__version__}".encode(), digest_size=16).digest()


#: what the kept numbers are computed by: the modules between the purchase days and the report's figures, i.e.
#: every module of this package that :mod:`segmentation.predictive` imports, directly or not (a test checks it)
_NUMBERS_MODULES = ("predictive.py", "holdout.py", "btyd.py", "btyd_models.py", "fit_optimizer.py", "rising.py",
                    "hypergeometric.py", "lifecycle.py", "fitnotes.py", "fit_cache.py", "purchase_days.py", "localtime.py",
                    "guarded_fits.py", "triples.py", "outliers.py", "metrics.py", "errors.py", "warmup.py",
                    "spend_limit.py", "refunds.py")
_NUMBERS_DEFINITION = hashlib.blake2b(
    b"".join((Path(__file__).parent / name).read_bytes() for name in _NUMBERS_MODULES)
    + f"{np.__version__} {scipy.__version__} {pa.__version__}".encode(), digest_size=16).hexdigest()


class FitStore(Protocol):
    """Fitted parameters by key (:func:`fit_key`)."""

    def get(self, key: str) -> tuple[float, ...] | None: ...

    def put(self, key: str, params: tuple[float, ...]) -> None: ...


def fit_key(model: str, *arrays: np.ndarray, extra: tuple = ()) -> str:
    """The key of fitting ``model`` on ``arrays`` (with ``extra``: the time unit, the start point)."""
    h = hashlib.blake2b(_DEFINITION, digest_size=20)
    h.update(f"{model} {extra!r}".encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"|{a.dtype.str}{a.shape}|".encode())
        h.update(a.data)
    return f"{model}:{h.hexdigest()}"


class NumberStore(Protocol):
    """A run's model numbers by key (:func:`numbers_key`): the report's figures (JSON-able) and the table of the
    numbers per distinct summary. ``basis`` names the orders the run's purchase days come from (None: unknown,
    nothing is kept). ``get`` creates the TEMP table ``into`` (the connection's) from the kept table."""

    basis: str | None

    def get(self, key: str, into: str) -> dict[str, Any] | None: ...

    def put(self, key: str, figures: dict[str, Any], table: pa.Table) -> None: ...


def numbers_key(basis: str, as_of: date, timezone: str, config: str, currencies: list) -> str:
    """The key of a run's model numbers: ``basis`` (the orders' identity), the as-of day, the time zone, the
    ``[predict]`` config (its JSON, every field), the completed orders' currencies and the code's definition."""
    text = json.dumps([_NUMBERS_DEFINITION, basis, as_of.isoformat(), timezone, config, [list(c) for c in currencies]])
    return "numbers:" + hashlib.blake2b(text.encode(), digest_size=20).hexdigest()
