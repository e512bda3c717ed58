"""Progress of the long steps, told to whoever listens: nobody by default (the library prints nothing).

The CLI installs a display (:mod:`sync.cli.progress`: rich bars on a terminal, the long retry waits as one line);
a library user may install any :class:`Reporter` with :func:`reporting`. Library code reports in one line each::

    with progress.step("segmenting"):             # a step: a bar (with a total) or a spinner (without)
        ...
    progress.advance(len(results), total=n)       # n items done in the innermost step
    source.pull(con, cursor, progress=advance)    # the connectors' Progress callable is an advance

The retry layer (:class:`connectors.retry.RetryPolicy`) reports each call and each wait through
:func:`api_call` and :func:`retry_wait`, wired in :meth:`sync.config.HttpConfig.retry_policy`.

One reporter per process (a CLI command runs once per process): calls from worker threads (Mailchimp's parallel
batches) reach the innermost step too.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

from connectors.retry import RetryWait

__all__ = ["Reporter", "Step", "RetryWait", "advance", "api_call", "reporting", "retry_wait", "step"]


class Step(Protocol):
    """One running step: items done (and the total, once known), API calls made."""

    def update(self, done: int = 0, *, total: int | None = None, calls: int = 0) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    """Whoever shows progress: starts steps, hears the retry waits."""

    def start(self, label: str, total: int | None = None, unit: str = "") -> Step: ...

    def retry_wait(self, wait: RetryWait) -> None: ...


class _Silent:
    def start(self, label: str, total: int | None = None, unit: str = "") -> Step:
        return self

    def update(self, done: int = 0, *, total: int | None = None, calls: int = 0) -> None:
        pass

    def close(self) -> None:
        pass

    def retry_wait(self, wait: RetryWait) -> None:
        pass


SILENT: Reporter = _Silent()
_reporter: Reporter = SILENT
_steps: list[Step] = []
_lock = threading.Lock()


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Report to ``reporter`` inside the block (the previous reporter is back after it)."""
    global _reporter
    with _lock:
        previous, _reporter = _reporter, reporter
    try:
        yield reporter
    finally:
        with _lock:
            _reporter = previous


@contextmanager
def step(label: str, total: int | None = None, unit: str = "") -> Iterator[Callable[[int], None]]:
    """A step while the block runs (``unit``: what it counts, "contacts"); yields its ``advance(n)`` (a
    :data:`connectors.source.Progress`)."""
    handle = _reporter.start(label, total, unit)
    with _lock:
        _steps.append(handle)
    try:
        yield lambda n: handle.update(n)
    finally:
        with _lock:
            _steps.remove(handle)
        handle.close()


def _innermost() -> Step | None:
    with _lock:
        return _steps[-1] if _steps else None


def advance(n: int = 1, *, total: int | None = None) -> None:
    """``n`` items of the innermost step are done (``total``: how many there are); nothing outside a step."""
    current = _innermost()
    if current is not None:
        current.update(n, total=total)


def api_call() -> None:
    """One API call was made (the retry layer's ``on_attempt``)."""
    current = _innermost()
    if current is not None:
        current.update(calls=1)


def retry_wait(wait: RetryWait) -> None:
    """The retry layer is about to wait (its ``on_wait``)."""
    _reporter.retry_wait(wait)
