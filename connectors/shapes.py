"""A CRM mapper's slip on a JSON shape its code did not expect, turned into a :class:`~connectors.http.FieldError`.

The mappers check the shapes they know to vary and name the field themselves (:func:`~connectors.http.get_object`,
:func:`~connectors.http.get_list`, ``items.offer``); :func:`shaped` is the net under them, applied once to each
mapper: whatever else a vendor or a proxy sends in another shape (a string where an object was, a number for a
name) makes a ``TypeError`` / ``AttributeError`` / ``KeyError`` / ``IndexError`` somewhere in the mapper, which stopped the
whole pull (``internal error: 'str' object has no attribute 'get'``, exit 70, on every pull after it). Through
:func:`shaped` it is a FieldError: on a pull a bad row naming the record (the rest of the pull goes on,
:func:`connectors.incremental.map_page`), on a webhook a 400 naming the record (``RecordError``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from .http import FieldError

F = TypeVar("F", bound=Callable[..., Any])

#: what a mapper raises on a shape it did not expect (its own checks raise FieldError)
SHAPE_SLIPS = (TypeError, AttributeError, KeyError, IndexError)


def shaped(mapper: F) -> F:
    """``mapper`` (vendor JSON → a record) with :data:`SHAPE_SLIPS` raised as a FieldError naming the record's
    JSON shape and the slip (a FieldError the mapper raised passes as it is)."""

    @functools.wraps(mapper)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return mapper(*args, **kwargs)
        except SHAPE_SLIPS as exc:
            raise FieldError("(shape)", f"a field is not of the documented shape ({type(exc).__name__}: "
                                        f"{str(exc)[:120]})") from None

    return call  # type: ignore[return-value]


__all__ = ["SHAPE_SLIPS", "shaped"]
