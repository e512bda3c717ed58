""""Did you mean …?": the closest known name to a mistyped one (config keys, fields, headers, types, presets).

One helper for every package (``sync`` imports it; ``connectors`` never imports ``sync``)::

    >>> did_you_mean("ordres", ["orders", "contacts"])
    " (did you mean 'orders'?)"
"""

from __future__ import annotations

import difflib
from typing import Iterable


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice closest to ``word`` (case and surrounding spaces ignored), or None when nothing is close."""
    by_key: dict[str, str] = {}
    for c in choices:
        by_key.setdefault(str(c).strip().casefold(), str(c))
    key = str(word).strip().casefold()
    if key in by_key:
        return by_key[key]
    found = difflib.get_close_matches(key, list(by_key), n=1, cutoff=cutoff)
    return by_key[found[0]] if found else None


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, else an empty string: append it to a message."""
    best = closest(word, choices, cutoff)
    return f" (did you mean {best!r}?)" if best is not None and best != word else ""
