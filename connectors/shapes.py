"""A CRM mapper's slip on a JSON shape its code did not expect, turned into a :class:`~connectors.http.FieldError`.

The mappers check the shapes they know to vary and name the field themselves (:func:`~connectors.http.get_object`,
:func:`~connectors.http.get_list`, ``items.offer``); :func:`shape_error` is the net under them, in one place:
:func:`connectors.incremental.map_page`, around the mapper's call only (what the source then does with a mapped
record, a contact's normalisation or its version's time, is rfmsync's own code: a slip there is a bug, and
surfaces as one). Whatever else a vendor or a proxy sends in another shape (a string where an object was, a number
for a name) makes a ``TypeError`` / ``AttributeError`` / ``KeyError`` / ``IndexError`` somewhere in the mapper,
which stopped the whole pull (``internal error: 'str' object has no attribute 'get'``, exit 70, on every pull
after it); now it is a bad row naming the record, and the rest of the pull goes on. A webhook needs no net of its
own: the server answers 400 to whatever a parser raises (:mod:`sync.serve.webhooks`).
"""

from __future__ import annotations

import logging
from typing import Any

from .http import FieldError, clean

log = logging.getLogger(__name__)

#: what a mapper raises on a shape it did not expect (its own checks raise FieldError)
SHAPE_SLIPS = (TypeError, AttributeError, KeyError, IndexError)


def vendor_id(value: Any) -> str | None:
    """A vendor's id as text: a string (stripped) or a whole number; None when absent or blank. Another shape (an
    object, a list, a bool, a fraction) is a TypeError, which :func:`~connectors.http.get_field` names as the
    field's FieldError: ``clean`` would have made ``{'ID': 5}`` a customer key of its text."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) and value is not None:
        raise TypeError(f"not an id: {type(value).__name__}")
    if isinstance(value, float):
        if not value.is_integer():
            raise TypeError("not an id: a fraction")
        value = int(value)
    return clean(value)


def shape_error(exc: BaseException, what: str, first: bool) -> FieldError:
    """The FieldError (field ``(shape)``) a mapper's slip ``exc`` on a record of ``what`` becomes; the first one
    of a pull (``first``) logs its traceback at DEBUG, for a bug report."""
    if first:
        log.debug("%s: a record not of the shape rfmsync reads (the first of this pull)", what, exc_info=exc)
    return FieldError("(shape)", f"a field is not of the shape rfmsync reads ({type(exc).__name__}: "
                                 f"{str(exc)[:120]})")


__all__ = ["SHAPE_SLIPS", "shape_error", "vendor_id"]
