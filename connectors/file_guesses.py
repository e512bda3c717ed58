"""An encoding guess of a file read (:mod:`connectors.file_encoding`: a tie of cp1251 and cp866, an ASCII file's
few 8-bit bytes), told as its WARNING, or collected by the reader that tells it on every run reading the file's
rows (:func:`collecting`: the order store keeps it with the file, so a warm run that reads the stored rows says it
too, as it says the staging's other warnings)."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

log = logging.getLogger("connectors.file_readers")
_COLLECTED: ContextVar[list[str] | None] = ContextVar("encoding_guesses", default=None)


@contextmanager
def collecting() -> Iterator[list[str]]:
    """The guesses of the files read inside, each its warning line (logged at INFO: the caller tells them)."""
    said: list[str] = []
    token = _COLLECTED.set(said)
    try:
        yield said
    finally:
        _COLLECTED.reset(token)


def guessed(line: str) -> None:
    """An encoding guess: collected when a reader collects them (:func:`collecting`), else a WARNING."""
    said = _COLLECTED.get()
    if said is None:
        log.warning("%s", line)
        return
    said.append(line)
    log.info("%s", line)


__all__ = ["collecting", "guessed"]
