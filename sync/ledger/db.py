"""Engine setup and transactions for the ledger: SQLite (default) and PostgreSQL.

:class:`LedgerDB` is what every part of the ledger (state, runs, failures, cursors, locks, queue) shares:
the engine, the injectable clock, short read/write transactions and the dialect's upsert ``INSERT``.

SQLite: every pooled connection gets WAL journaling, ``busy_timeout`` and foreign keys;
pysqlite's own implicit transaction handling is switched off so that SQLAlchemy emits
``BEGIN`` itself, ``BEGIN IMMEDIATE`` for writing transactions (the write lock is taken
up front, so two processes queue on ``busy_timeout`` instead of failing half-way).
PostgreSQL: psycopg 3 with ``pool_pre_ping``; schema changes take an advisory lock.

Bad days: a SQLite path that cannot be a ledger (a folder, not a SQLite file, another program's database) is
refused before anything is written to it (:func:`check_sqlite_path`), as is a database holding tables of the
ledger's names without its ``schema_version`` (:func:`migrate`); a database failure under a read or write (disk
full, read-only, damaged, locked too long, connection lost) becomes a :class:`~sync.errors.LedgerError` naming
the ledger and what to do (:func:`ledger_failure`), never the statement and its values.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from sqlalchemy import create_engine, event, insert, inspect, text
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import Table

from connectors.secrets import mask

from ..errors import ConfigError, LedgerError
from .schema import LATEST_VERSION, MIGRATIONS, TABLES, create_version_table, current_version, schema_version

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
_WRITE = "rfmsync_write"
_MIGRATION_LOCK_KEY = 0x72666D73  # "rfms": pg_advisory_xact_lock key for migrations
MAX_ERROR_CHARS = 2000
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def chunks(items: Sequence[T], size: int = 5000) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def clip(error: str | None) -> str | None:
    """An error text cut to what the ledger's error columns keep, every known secret masked first (a last resort:
    the clients mask theirs; see :func:`connectors.secrets.remember_secrets`)."""
    return None if error is None else mask(error)[:MAX_ERROR_CHARS]


def parse_url(url: str) -> URL:
    """Parse and normalise a ledger URL; only SQLite and PostgreSQL (psycopg 3) are supported."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "ledger URL is not a database URL (expected sqlite:///path/rfmsync.db "
            "or postgresql+psycopg://user:password@host/db)"
        ) from None
    if "@" in (parsed.host or ""):  # "user:p@ss@host": the rest of the password would be shown as the host
        raise ConfigError("ledger URL: '@' in the user name or password must be written %40 "
                          "(postgresql+psycopg://user:p%40ss@host/db)")
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql":  # psycopg 3 is the one installed driver, whatever was asked
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.drivername != "sqlite":
            raise ConfigError(f"ledger URL: SQLite driver {parsed.drivername!r} is not supported; use sqlite:///path")
        return parsed
    raise ConfigError(f"ledger URL: unsupported database {backend!r}; use sqlite:///path or postgresql+psycopg://...")


def safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or str(url.query.get("mode", "")) == "memory"


def build_engine(url: URL) -> Engine:
    if url.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                             connect_args={"connect_timeout": 10})
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}}
    if is_memory(url):
        kwargs["poolclass"] = StaticPool
    else:
        check_sqlite_path(url)
    engine = create_engine(url, **kwargs)
    memory = is_memory(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _on_begin)
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not memory:
                _switch_to_wal(cur)
                cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


_WHERE = "point [ledger] url (or RFMSYNC_LEDGER_URL) at"


def not_a_ledger(shown: str, tables: Sequence[str] = ()) -> ConfigError:
    listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    holds = f"holds tables ({listed}) but no rfmsync schema_version" if tables else \
        "holds a schema_version table that is not rfmsync's"
    return ConfigError(f"ledger {shown} {holds}: it is not an rfmsync ledger (another program's database?) and "
                       f"was left as it is; {_WHERE} a new file, or an empty database or schema")


_VERSION_COLUMNS = {"version", "description", "applied_at"}
_FIRST_VERSION = "SELECT version, description FROM schema_version ORDER BY version LIMIT 1"


def _version_table_is_ours(columns: set[str], first: Callable[[], Sequence[Any] | None]) -> bool:
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
                ours = _version_table_is_ours(columns, lambda: con.execute(_FIRST_VERSION).fetchone())
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
                    f"({BUSY_TIMEOUT_MS // 1000} s): a long run, or a `sqlite3` shell left in a transaction; "
                    "try again later", True),
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


def _switch_to_wal(cur: Any) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the file.

    SQLite answers the journal-mode change with "database is locked" at once, without calling the busy
    handler, when another connection is reading or switching the same fresh file (several processes
    or threads opening a new ledger together). The switch is retried for up to ``busy_timeout``.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """One transaction; ``write=True`` takes SQLite's write lock at BEGIN."""
    with engine.connect() as conn:
        if write:
            conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


def migrate(engine: Engine, now: Callable[[], datetime], target: int | None = None) -> tuple[int, int]:
    """Apply pending migrations up to ``target`` (default: latest) in one transaction.

    Returns (version before, version after). The version is read first in a read transaction: a ledger that needs
    no step opens without the write lock (a command opening it never waits for, nor fails on, a writer of
    another process). Safe when several processes start at once: SQLite serialises on BEGIN IMMEDIATE,
    PostgreSQL on an advisory transaction lock, and the version is read again under them.
    """
    target = LATEST_VERSION if target is None else target
    with transaction(engine, write=False) as conn:
        if conn.dialect.name == "postgresql":
            _check_encoding(conn, engine.url)
        before = _known_version(conn, engine.url)
    if before and before >= target:
        return before, before
    with transaction(engine, write=True) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        before = _known_version(conn, engine.url)
        if before == 0:
            taken = set(inspect(conn).get_table_names()) & set(TABLES.tables)
            if taken:  # create_all would take them as they are: another program's tables of these names
                raise not_a_ledger(safe_url(engine.url), sorted(taken))
            create_version_table(conn)
        after = before
        for step in MIGRATIONS:
            if before < step.version <= target:
                log.info("ledger: migrating schema to version %d (%s)", step.version, step.description)
                step.apply(conn)
                conn.execute(insert(schema_version).values(
                    version=step.version, description=step.description, applied_at=now()))
                after = step.version
    return before, after


def _known_version(conn: Connection, url: URL) -> int:
    """The ledger's schema version; a ledger written by a newer rfmsync is refused, never migrated or used, as is
    another program's ``schema_version`` table (never taken for a newer or an older ledger)."""
    if conn.dialect.has_table(conn, "schema_version"):
        columns = {c["name"] for c in inspect(conn).get_columns("schema_version")}
        if not _version_table_is_ours(columns, lambda: conn.execute(text(_FIRST_VERSION)).first()):
            raise not_a_ledger(safe_url(url))
    version = current_version(conn)
    if version > LATEST_VERSION:
        raise ConfigError(
            f"ledger {safe_url(url)}: its schema is version {version}, newer than this rfmsync understands "
            f"(version {LATEST_VERSION}): it was written by a newer rfmsync; upgrade rfmsync (it was left as it is)"
        )
    return version


def _check_encoding(conn: Connection, url: URL) -> None:
    """Refuse a PostgreSQL database that cannot hold any text: the ledger stores names, fields and queued
    webhooks as UTF-8 text, which a LATIN1 or WIN1251 database rejects at the first Cyrillic or Uzbek letter it
    has no code for (after the ESP was already changed: every later sync would fail at the same contact)."""
    encoding = conn.execute(text("SHOW server_encoding")).scalar()
    if str(encoding).upper() not in ("UTF8", "UTF-8"):
        raise ConfigError(f"ledger database {safe_url(url)} has encoding {encoding}: rfmsync keeps its text in "
                          "UTF-8; create one with ENCODING 'UTF8' (CREATE DATABASE rfmsync ENCODING 'UTF8' "
                          "TEMPLATE template0) and point RFMSYNC_LEDGER_URL at it")


_SQLITE_WRITERS: dict[str, threading.Lock] = {}
_SQLITE_WRITERS_GUARD = threading.Lock()


def sqlite_writer_mutex(engine: Engine) -> threading.Lock:
    """One mutex per SQLite database file in this process (shared by every Ledger on that file).

    SQLite lets one writer in at a time; a connection that finds the write lock taken waits in SQLite's
    busy handler, which *sleeps* in steps of up to 100 ms before it looks again. Threads of one process
    (webhook intake, resync workers, scheduler) therefore queue on this mutex instead: the next writer
    starts the moment the previous one commits. Other processes still meet on ``busy_timeout``.
    """
    key = os.path.abspath(engine.url.database) if engine.url.database and engine.url.database != ":memory:" \
        else f"memory:{id(engine)}"
    with _SQLITE_WRITERS_GUARD:
        return _SQLITE_WRITERS.setdefault(key, threading.Lock())


class LedgerDB:
    """The database every ledger part works on: engine, clock, short transactions, dialect upserts.

    Every read and write is its own short transaction, so a crash never leaves half a batch written.
    Writers of one SQLite file in this process queue on one mutex (see :func:`sqlite_writer_mutex`).
    """

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self._writer: AbstractContextManager[Any] = \
            sqlite_writer_mutex(engine) if engine.dialect.name == "sqlite" else nullcontext()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def insert(self, table: Table) -> sqlite_dialect.Insert | pg_dialect.Insert:
        """An INSERT with this dialect's ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
        mod = pg_dialect if self.dialect == "postgresql" else sqlite_dialect
        return mod.insert(table)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._failures(), self._writer, transaction(self.engine, write=True) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._failures(), transaction(self.engine, write=False) as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction whose statements all see one state (PostgreSQL: ``REPEATABLE READ``; a SQLite read
        transaction always does)."""
        if self.dialect != "postgresql":
            with self.read() as conn:
                yield conn
            return
        with self._failures(), self.engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection outside any transaction (SQLite's PRAGMAs that need one), its failures as for a read."""
        with self._failures(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """A database failure in the transaction (also at its BEGIN or COMMIT) as a :class:`LedgerError`."""
        try:
            yield
        except Exception as exc:
            failure = ledger_failure(exc, self.engine.url)
            if failure is None:
                raise
            raise failure from exc
