"""Errors of the sync package and the CLI exit codes they map to.

::

    RfmsyncError                      root (exit 1 if nothing more specific)
    ├── ConfigError            exit 2  fix the config / environment
    ├── DataError              exit 3  the input data cannot be used
    ├── DestinationError       exit 4  an ESP refused or failed after retries
    │   └── DestinationConfigError     exit 2: audience missing, key rejected
    ├── PlanStaleError         exit 5  the ledger changed since the saved plan was made
    ├── GuardRefusedError      exit 6  a guard refused the run before any ESP write but withdrawals (docs/safety.md)
    ├── LedgerError            exit 74 the ledger failed under a command (disk full, read-only, damaged file)
    │                          exit 75 when ``transient``: locked too long, connection lost: try again later
    ├── LockBusyError          exit 75 another sync of this destination is running (EX_TEMPFAIL)
    ├── LockLostError          exit 75 a lock this run held was taken over: stopped between batches
    └── RunStopped             exit 75 a stop was asked for (SIGTERM): stopped between batches

The other packages keep their own roots (they never import ``sync``); the CLI maps them too
(:func:`sync.cli.main.exit_code`, the one place errors become exit codes)::

    connectors.errors.ConnectorError     exit 3  a source failed; BadFileError (an unusable export), ...
    ├── connectors.errors.RetryLaterError exit 75 the vendor refused until a known time (Bitrix24's method block)
    └── connectors.errors.ConfigError    exit 2  bad [source] settings or credentials (AuthError too);
                                                 imported in ``sync`` as ``SourceConfigError``, never
                                                 confused with this package's :class:`ConfigError`
    segmentation.SegmentationError       exit 2  bad [segmentation] settings
    └── segmentation.DataRangeError      exit 3  a customer's figure does not fit its column

Where ``sync`` code catches a :class:`connectors.errors.ConfigError` it re-raises this package's
:class:`ConfigError` with the same text (``sync.pipeline.configured_source``, ``pull_into``).

Anything else is an internal error: exit 70 (EX_SOFTWARE), traceback only with ``-v``.
"""

from __future__ import annotations

from connectors.errors import retry_ask

#: try again later (EX_TEMPFAIL): the transient errors below, and a connector's RetryLaterError
RETRY_LATER_EXIT = 75


class RfmsyncError(Exception):
    exit_code = 1


class ConfigError(RfmsyncError):
    exit_code = 2


class DataError(RfmsyncError):
    exit_code = 3


class DestinationError(RfmsyncError):
    exit_code = 4

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None,
                 retry_after: float | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.body = (body or "")[:500] or None
        self.retry_after = retry_ask(retry_after)  # a finite number of seconds, a day at most (or None)
        self.transient = transient  # the call kept failing the retryable way (timeout, 429, 5xx): try again later


class DestinationConfigError(DestinationError):
    exit_code = 2


class PlanStaleError(RfmsyncError):
    exit_code = 5


class GuardRefusedError(RfmsyncError):
    """A guard tripped: nothing was written to any ESP but, when only plan guards other than the withdrawal rules
    tripped, the consent withdrawals (docs/safety.md). ``lines`` holds one line per tripped guard;
    ``destinations`` the destinations whose runs were recorded as ``refused``; ``applied`` the
    :class:`~sync.engine.ApplyReport` of each destination whose withdrawals went out alone, and ``note`` the line
    saying so (the message's last line)."""

    exit_code = 6

    def __init__(self, lines: list[str], destinations: list[str] | tuple[str, ...] = (), *,
                 applied: list | tuple = (), note: str | None = None) -> None:
        self.lines = list(lines)
        self.destinations = list(destinations)
        self.applied = list(applied)
        self.note = note
        super().__init__("\n".join(self.message_lines))

    @property
    def message_lines(self) -> list[str]:
        """The guards' lines, then the note if any: the message, one line each."""
        return [*self.lines, *([self.note] if self.note else [])]


class LedgerError(RfmsyncError):
    """The ledger's database failed under a command: the disk full, the file read-only or damaged, its write lock
    held too long by another process, the PostgreSQL connection lost. The message names the ledger (password
    hidden), the database's one-line reason and what to do; never the statement or its values. ``transient``
    (locked, connection lost, statement cancelled): the same command can succeed later (exit 75)."""

    exit_code = 74  # EX_IOERR

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        if transient:
            self.exit_code = RETRY_LATER_EXIT


class LockBusyError(RfmsyncError):
    exit_code = RETRY_LATER_EXIT


class LockLostError(RfmsyncError):
    """A lock this run held was taken by another holder (it could not be refreshed before it expired): the run
    stops starting work, as if killed; what it recorded stays, and the next run plans the rest."""

    exit_code = RETRY_LATER_EXIT


class RunStopped(RfmsyncError):
    """A stop was asked for (``serve`` got SIGTERM: ``systemctl stop``, a deploy) while the run applied: it stopped
    between two batches; what it applied is recorded (the run's status is ``stopped``), nothing is sent twice by
    the next run, which plans the rest."""

    exit_code = RETRY_LATER_EXIT


class Terminated(BaseException):
    """SIGTERM to a CLI command (:mod:`sync.cli.main`): raised in the main thread, like Ctrl-C's KeyboardInterrupt
    (not an error: no ``except Exception`` takes it), so the run under way is recorded ``interrupted`` on the way
    out; the process then ends by SIGTERM, as it did before. (``serve`` stops its runs between two batches instead:
    :class:`RunStopped`.)"""


INTERNAL_EXIT = 70
