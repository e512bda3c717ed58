"""The ledger's bad days: a path that cannot be a ledger, refused before anything is written to it
(:func:`check_sqlite_path`, :func:`not_a_ledger`), and a database failure under a ledger operation made a
:class:`~sync.errors.LedgerError` naming the ledger and what to do (:func:`ledger_failure`; at open:
:func:`open_failure`), never the statement and its values. Used by :mod:`sync.ledger.db`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable, Sequence

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from connectors.secrets import hide_query_passwords

from ..errors import ConfigError, LedgerError
from .schema import MIGRATIONS

#: SQLite's busy timeout on every ledger connection (:func:`sync.ledger.db.build_engine`), named in its failure,
#: unless the URL's ``timeout`` (seconds) sets another (:func:`busy_timeout_ms`)
BUSY_TIMEOUT_MS = 30_000
#: the longest busy timeout SQLite takes (milliseconds in a C int, 2³¹ − 1): a longer one would wrap to none at all
BUSY_TIMEOUT_MAX_MS = 2**31 - 1


def busy_timeout_ms(url: URL) -> int:
    """How long a write to this SQLite ledger waits for another process's write lock, in milliseconds: the URL's
    ``timeout`` in seconds (``sqlite:///rfmsync.db?timeout=120``: the Python driver's own parameter, which the
    ledger's PRAGMA used to override), else :data:`BUSY_TIMEOUT_MS`. A value that is not a number of seconds (0
    or more), or is past :data:`BUSY_TIMEOUT_MAX_MS` (2147483 s), is a config error."""
    value = url.query.get("timeout")
    if value is None:
        return BUSY_TIMEOUT_MS
    text = value if isinstance(value, str) else value[-1]
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds < 10**9:  # (NaN, negative, infinite: no)
        raise ConfigError(f"ledger URL: timeout={text} is not a number of seconds (how long a write waits for "
                          "another process's write lock; default 30)")
    if round(seconds * 1000) > BUSY_TIMEOUT_MAX_MS:  # SQLite's busy timeout is a C int: past it, it became 0
        raise ConfigError(f"ledger URL: timeout={text} is more than SQLite's longest busy timeout, "
                          f"{BUSY_TIMEOUT_MAX_MS // 1000} seconds (about 24 days)")
    return round(seconds * 1000)


def safe_url(url: URL) -> str:
    """The ledger's URL to name it by: its password hidden, ``:***@``, and so is one given as a query parameter
    (``?password=``, libpq's own keyword, or ``sslpassword=``, a client key's passphrase), ``password=***``."""
    return hide_query_passwords(url.render_as_string(hide_password=True))



_WHERE = "point [ledger] url (or RFMSYNC_LEDGER_URL) at"


def not_a_ledger(shown: str, tables: Sequence[str] = ()) -> ConfigError:
    listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    holds = f"holds tables ({listed}) but no rfmsync schema_version" if tables else \
        "holds a schema_version table that is not rfmsync's"
    return ConfigError(f"ledger {shown} {holds}: it is not an rfmsync ledger (another program's database?) and "
                       f"was left as it is; {_WHERE} a new file, or an empty database or schema")


_VERSION_COLUMNS = {"version", "description", "applied_at"}
FIRST_VERSION = "SELECT version, description FROM schema_version ORDER BY version LIMIT 1"


def version_table_is_ours(columns: set[str], first: Callable[[], Sequence[Any] | None]) -> bool:
    """Whether a ``schema_version`` table (its columns; ``first()``: its lowest row) is rfmsync's: other programs
    keep one of that name (Flyway before 5...); rfmsync's starts at version 1 with the first migration's name."""
    return _VERSION_COLUMNS <= columns and ((row := first()) is None or tuple(row) == (1, MIGRATIONS[0].description))


def check_sqlite_path(url: URL) -> None:
    """Refuse a SQLite ledger path that cannot be a ledger, before the engine switches the file to WAL (a change
    written into the file) or migrates it: a folder, a file that is not a SQLite database (or is damaged there),
    another program's database (tables, no ``schema_version``). The folder of a new file is created."""
    if not url.database or url.database.startswith("file:"):  # a URI filename: SQLite's own options
        return
    path = Path(url.database).expanduser()
    shown = safe_url(url)
    if path.is_dir():
        raise ConfigError(f"ledger {shown}: {path} is a folder, not a database file; {_WHERE} a file in it, "
                          f"e.g. sqlite:///{path / 'rfmsync.db'}")
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"ledger {shown}: cannot create its folder {path.parent} ({exc.strerror}); "
                              f"{_WHERE} a file in a folder rfmsync may write") from None
        return
    try:
        # read-write (never created: mode=rw): a read-only connection to a WAL file leaves its -wal and -shm behind
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if "schema_version" in tables:
                columns = {r[1] for r in con.execute("PRAGMA table_info(schema_version)")}
                ours = version_table_is_ours(columns, lambda: con.execute(FIRST_VERSION).fetchone())
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            with path.open("rb") as f:
                if f.read(12)[8:12] == b"DUCK":  # the order store's file ([store] orders), a DuckDB database
                    raise ConfigError(f"ledger {shown}: {path} is a DuckDB database (the order store, [store] "
                                      f"orders?), not the ledger; {_WHERE} a SQLite file of its own, e.g. "
                                      f"sqlite:///{path.with_name('rfmsync.db')}") from None
            raise ConfigError(f"ledger {shown}: {path} is not a SQLite database, or a damaged one ({exc}); "
                              f"restore the ledger from a backup, or {_WHERE} another file (nothing was "
                              "written to this one)") from None
        return  # anything else (no access, a locked file): the engine's open reports it
    tables = [t for t in tables if not t.startswith("sqlite_")]
    if tables and "schema_version" not in tables:
        raise not_a_ledger(shown, tables)
    if "schema_version" in tables and not ours:
        raise not_a_ledger(shown)


#: SQLite's result codes (``sqlite_errorname`` without its extended part) → (what to do, transient)
_SQLITE_FAILURES: dict[str, tuple[str, bool]] = {
    "SQLITE_FULL": ("the disk is full (or the file reached its size limit): free space, then run again", False),
    "SQLITE_BUSY": ("another process held the ledger's write lock for longer than the busy timeout "
                    "({seconds} s): a long run, or a `sqlite3` shell left in a transaction; try again later (or "
                    "give the ledger URL a longer ?timeout=SECONDS)", True),
    "SQLITE_LOCKED": ("the database is locked: try again later", True),
    "SQLITE_READONLY": ("rfmsync cannot write it: it needs write access to the file and to its folder (SQLite "
                        "writes the -wal and -shm files beside it)", False),
    "SQLITE_CANTOPEN": ("rfmsync cannot open it: it needs read and write access to the file and to its folder "
                        "(SQLite writes the -wal and -shm files beside it)", False),
    "SQLITE_PERM": ("access denied: rfmsync needs write access to the file and to its folder", False),
    "SQLITE_CORRUPT": ("the file is damaged: restore it from a backup, or move it aside (a new ledger plans "
                       "every contact as new)", False),
    "SQLITE_NOTADB": ("the file is not a SQLite database (any more): restore it from a backup", False),
    "SQLITE_IOERR": ("an I/O error: check the disk (a ledger on a network share is not supported)", False),
}
#: a PostgreSQL connection that could not be made at open (no SQLSTATE: refused, unknown host, bad credentials...)
_CONNECT = "check the URL's host, port, user, password and database, or whether the server is up"
_LOST = ("the connection to the PostgreSQL server was lost or refused (a restart, a failover): run again", True)
#: SQLSTATEs (classes, or codes) of a PostgreSQL failure at open that the next run may not meet: a connection
#: exception the server reported, a deadlock or serialization failure, too many connections, a statement
#: cancelled or the server starting or shutting down, a lock not available. Others (a bad password 28P01, no such
#: database 3D000, no permission 42501) are the settings' fault: exit 2
_TEMPORARY_AT_OPEN = ("08", "40", "53", "57", "55P03")
#: psycopg's error classes (a failure of PostgreSQL's, not of the statement) → (what to do, transient)
_PG_FAILURES: dict[str, tuple[str, bool]] = {
    "AdminShutdown": _LOST, "CrashShutdown": _LOST, "CannotConnectNow": _LOST,
    "QueryCanceled": ("a statement was cancelled (its statement_timeout, or an administrator): run again; "
                      "if it recurs, raise the role's statement_timeout", True),
    "DiskFull": ("the database server's disk is full: free space, then run again", False),
    "ReadOnlySqlTransaction": ("the server only reads (a standby, or default_transaction_read_only): point "
                               "the ledger URL at the primary", True),
    "InsufficientPrivilege": ("the role may not write here (a SELECT-only role): give the ledger URL a role "
                              "that may write the ledger's tables", False),
}


def ledger_failure(exc: BaseException, url: URL) -> LedgerError | None:
    """The :class:`LedgerError` for a database failure under a ledger operation (the database's one-line reason,
    the ledger named with its password hidden, what to do); None for anything else (a constraint, a bug)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.Error):
        if not isinstance(orig, sqlite3.OperationalError) and type(orig) is not sqlite3.DatabaseError:
            return None  # IntegrityError, ProgrammingError...: the statement's fault, not the database's
        code = "_".join(str(getattr(orig, "sqlite_errorname", "") or "").split("_")[:2])
        if code not in _SQLITE_FAILURES:
            return None  # SQLITE_ERROR (no such table or column, a syntax error...): a bug of ours, never the disk's
        hint, transient = _SQLITE_FAILURES[code]
        if code == "SQLITE_BUSY":
            hint = hint.format(seconds=f"{busy_timeout_ms(url) / 1000:g}")
    elif type(orig).__module__.startswith("psycopg"):
        names = {c.__name__ for c in type(orig).__mro__}
        found = next((_PG_FAILURES[n] for n in names if n in _PG_FAILURES), None)
        if found is None and "OperationalError" not in names:
            return None
        state = getattr(orig, "sqlstate", None)  # None: the client's side (connecting, a closed connection)
        lost = state is None or state.startswith("08") or isinstance(exc, DBAPIError) and exc.connection_invalidated
        hint, transient = found or (_LOST if lost else ("", True))  # else a deadlock, too many connections...
    else:
        return None
    return LedgerError(f"ledger {safe_url(url)}: {_first_line(orig)}" + (f"; {hint}" if hint else ""),
                       transient=transient)


def foreign_key_violation(exc: BaseException) -> bool:
    """Whether ``exc`` (the driver's own, or SQLAlchemy's around it) is a row naming a row that does not exist:
    SQLite's ``FOREIGN KEY constraint failed``, PostgreSQL's ``foreign_key_violation`` (SQLSTATE 23503; psycopg's
    own error when the rows went through ``COPY``, which SQLAlchemy does not wrap)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.IntegrityError):
        return getattr(orig, "sqlite_errorname", "SQLITE_CONSTRAINT_FOREIGNKEY") == "SQLITE_CONSTRAINT_FOREIGNKEY"
    return type(orig).__module__.startswith("psycopg") and getattr(orig, "sqlstate", None) == "23503"


def open_failure(exc: DBAPIError, url: URL) -> ConfigError | LedgerError:
    """The error for a ledger that could not be opened: a temporary failure is a :class:`LedgerError` (exit 75,
    try later): a SQLite file locked by another process past the busy timeout, or a PostgreSQL server that
    answered with a temporary error of its own (an SQLSTATE: the migration's wait cancelled by statement_timeout,
    a deadlock, starting up or shutting down). Anything else (unreachable, bad credentials, no permission,
    read-only, damaged) is a :class:`ConfigError` naming the ledger, with what to do when known (a PostgreSQL
    connection not made, no SQLSTATE: check the URL, or the server; never "lost, run again")."""
    failure = ledger_failure(exc, url)
    pg = type(exc.orig).__module__.startswith("psycopg")
    sqlstate = getattr(exc.orig, "sqlstate", None) if pg else None
    if failure is not None and failure.transient and (
            isinstance(exc.orig, sqlite3.Error) or str(sqlstate or "-").startswith(_TEMPORARY_AT_OPEN)):
        return failure
    if pg and sqlstate is None:
        return ConfigError(f"cannot open ledger {safe_url(url)}: {_first_line(exc.orig)}; {_CONNECT}")
    if failure is not None:
        return ConfigError(f"cannot open {failure}")
    return ConfigError(f"cannot open ledger {safe_url(url)}: {_first_line(exc.orig or exc)}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
