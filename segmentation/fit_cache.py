"""Reuse a model fit whose inputs are exactly those of an earlier run (the optimizer is deterministic).

A fit depends on its inputs alone: BG/NBD on the distinct summaries (x, recency, T) and their weights, the time
unit and the start point; Gamma-Gamma on the repeat buyers' (x, mean spend), sorted. :func:`fit_key` hashes
those arrays (their bytes, dtype and shape) with the models' own code and the numpy and scipy versions, so a key
names one result: a second command on the same orders (`rfmsync plan` after `segments`, `predict` after
`sync`) reads the parameters instead of running L-BFGS-B again, and anything else (one more order, another
as-of, another config value that reaches the fit, another optimizer) is another key and a new fit. Failed fits
are not kept (they fail fast). Where the keys live is the caller's (:class:`FitStore`; the order store keeps
them between runs: :mod:`sync.store.fit_cache`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy

from . import btyd_models

#: the fits' definition: the models' code and the libraries that compute them
_DEFINITION = hashlib.blake2b(Path(btyd_models.__file__).read_bytes() + f"{np.__version__} {scipy.__version__}"
                              .encode(), digest_size=16).digest()


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
