"""Whether untrusted text is a whole number written in the digits 0-9 (a header, a vendor's field, a count).

``str.isdigit()`` is no such test: it also takes superscripts (``"²"``) and other Unicode digits, some of which
``int()`` refuses (a ``ValueError`` where the caller expected none: a request's 503 instead of its 401)."""

from __future__ import annotations


def digits(value: object) -> bool:
    """True for a non-empty ``str`` of ASCII digits only (``int(value)`` then reads it)."""
    return isinstance(value, str) and value.isascii() and value.isdigit()
