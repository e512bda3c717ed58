"""A count and its noun in the number it takes: ``1 delivery``, ``2 deliveries``, ``0 rows`` (:func:`counted`), and
the verb after it (:func:`agrees`). Every count message of rfmsync says it so."""

from __future__ import annotations


def plural(noun: str) -> str:
    """The plural of an English ``noun`` (its last word): ``row`` → ``rows``, ``delivery`` → ``deliveries``,
    ``match`` → ``matches``; ``bad row`` → ``bad rows``."""
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def counted(n: int, noun: str, many: str | None = None) -> str:
    """``n`` and ``noun`` in its number (``many``: its plural when :func:`plural` cannot tell it, e.g. a noun
    followed by words: ``delivery refused`` → ``deliveries refused``)."""
    return f"{n} {noun if n == 1 else many or plural(noun)}"


def agrees(n: int, one: str, many: str) -> str:
    """The verb (or any word) agreeing with a count ``n``: ``one`` for 1, else ``many`` (``has``/``have``)."""
    return one if n == 1 else many


__all__ = ["plural", "counted", "agrees"]
