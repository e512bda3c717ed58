"""Errors raised by connectors, sorted by how the caller must react.

::

    ConnectorError                      root of this package
    ├── ConfigError                     fix the settings (bad mapping, missing columns, bad credentials)
    │   └── AuthError                   credentials rejected by the vendor (401/403)
    ├── BadFileError                    an input file is empty, truncated or not what its name says: fix the export
    ├── TransientError                  retry later (connection error, timeout, 429, 5xx); .retry_after
    │   └── RetryLaterError             refused until a known time (Bitrix24's method block): not retried within
    │                                   the run; the same command succeeds after .retry_after (the CLI exits 75)
    ├── RecordError                     one record is bad: skip it and report it; .bad_row
    └── FatalError                      stop: the remote answered something we cannot act on

Typed attributes carry the HTTP status, a short body excerpt (never a secret) and
``retry_after`` seconds when the server told us: a finite number in [0, :data:`MAX_RETRY_AFTER`] or None, whatever
a client passed (:func:`retry_ask`), so that the retry layer, the scheduler and the webhook worker read it as it is.
"""

from __future__ import annotations

import math

from .records import BadRow

#: The longest wait a vendor's retry ask is read as (one day): a vendor asking for more (a ``Retry-After: 1e15``, a
#: date in year 9999) is taken at a day. The retry layer waits at most ``max_wait`` anyway; the scheduler and the
#: webhook worker schedule by it, and a time that far ahead overflowed their clocks.
MAX_RETRY_AFTER = 86400.0


def retry_ask(seconds: object) -> float | None:
    """A vendor's retry ask as the errors hold it: ``seconds`` clamped to [0, :data:`MAX_RETRY_AFTER`] (a negative
    ask is "now": the caller's back-off decides; infinity, or an integer too big for a float, is the most); None
    for no ask, and for one that is no number (NaN, a text that is none)."""
    if seconds is None:
        return None
    try:
        value = float(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    except OverflowError:  # an integer past a float's range (10**400): the most, or "now" for a negative one
        value = math.inf if seconds > 0 else -math.inf  # type: ignore[operator]
    return None if math.isnan(value) else min(max(0.0, value), MAX_RETRY_AFTER)


class ConnectorError(Exception):
    def __init__(self, message: str, *, status: int | None = None, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = (body or "")[:500] or None


class ConfigError(ConnectorError):
    """The configuration or the input files do not fit; the user must fix them."""


class AuthError(ConfigError):
    """Credentials were rejected."""


class BadFileError(ConnectorError):
    """An export file cannot be used as it is (0 bytes, no data rows, not a zip, truncated, most dates
    unreadable): the data must be fixed, not retried (the CLI exits 3)."""


class TransientError(ConnectorError):
    def __init__(self, message: str, *, status: int | None = None, body: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_ask(retry_after)


class RetryLaterError(TransientError):
    """The vendor refuses this work until a time it named (Bitrix24 blocks a method for 10 minutes once its
    execution time passes 480 s within 10 minutes): waiting inside the run would outlast the retry budget, so the
    retry layer does not retry it; the pull stops keeping nothing (the saved cursor stays) and the same command
    succeeds after ``retry_after`` seconds (the CLI exits 75; ``serve``'s scheduler retries it then)."""


class RecordError(ConnectorError):
    def __init__(self, bad_row: BadRow) -> None:
        super().__init__(str(bad_row))
        self.bad_row = bad_row


class FatalError(ConnectorError):
    """The remote answered something that retrying will not fix."""
