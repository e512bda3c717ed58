"""Engine setup and transactions for the ledger: SQLite (default) and PostgreSQL.

:class:`LedgerDB` is what every part of the ledger (state, runs, failures, cursors, locks, queue) shares:
the engine, the injectable clock, short read/write transactions and the dialect's upsert ``INSERT``.

SQLite: every pooled connection gets WAL journaling, ``busy_timeout`` and foreign keys;
pysqlite's own implicit transaction handling is switched off so that SQLAlchemy emits
``BEGIN`` itself, ``BEGIN IMMEDIATE`` for writing transactions (the write lock is taken
up front, so two processes queue on ``busy_timeout`` instead of failing half-way).
PostgreSQL: psycopg 3 with ``pool_pre_ping``; schema changes take an advisory lock.

Bad days: a SQLite path that cannot be a ledger (a folder, not a SQLite file, another program's database) is
refused before anything is written to it (:func:`~sync.ledger.dberrors.check_sqlite_path`), as is a database holding tables of the
ledger's names without its ``schema_version`` (:func:`migrate`); a database failure under a read or write (disk
full, read-only, damaged, locked too long, connection lost) becomes a :class:`~sync.errors.LedgerError` naming
the ledger and what to do (:func:`~sync.ledger.dberrors.ledger_failure`), never the statement and its values.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence, TypeVar

from sqlalchemy import create_engine, event, insert, inspect, text
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import Table

from connectors.secrets import mask

from ..errors import ConfigError
from .dberrors import (FIRST_VERSION, busy_timeout_ms, check_sqlite_path, ledger_failure, not_a_ledger,
                       safe_url, version_table_is_ours)
from .schema import LATEST_VERSION, MIGRATIONS, TABLES, create_version_table, current_version, schema_version

log = logging.getLogger(__name__)

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
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number (5x32, an IPv6 unclosed)
        port = " (its port is not a number)" if isinstance(exc, ValueError) else ""
        raise ConfigError(
            f"ledger URL is not a database URL{port} (expected sqlite:///path/rfmsync.db "
            "or postgresql+psycopg://user:password@host:5432/db)"
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
        if "mode" in parsed.query and uri_path(parsed) is None:  # SQLite would open a file, not what mode says
            raise ConfigError(f"ledger URL: SQLite reads mode={parsed.query['mode']} only in a URI filename: write "
                              f"sqlite:///file:{parsed.database or ':memory:'}?mode=...&uri=true (file: and "
                              "uri=true both), or leave mode out")
        return parsed
    raise ConfigError(f"ledger URL: unsupported database {backend!r}; use sqlite:///path or postgresql+psycopg://...")


URI_SCHEME = "file:"  # a SQLite URI filename (with ?uri=true): sqlite:///file:data/l.db?uri=true


def uri_path(url: URL) -> str | None:
    """The path of a SQLite URI filename (``sqlite:///file:data/l.db?uri=true`` → ``data/l.db``, ``file:///abs/l.db``
    → ``/abs/l.db``: an empty or local authority); None when the database is no URI filename (no ``file:``, or no
    ``uri=true``: SQLite then takes the name as it is)."""
    from sqlalchemy.util import asbool

    name = url.database or ""
    if not name.startswith(URI_SCHEME) or not asbool(url.query.get("uri", False)):
        return None
    path = name[len(URI_SCHEME):]
    return "/" + path[2:].partition("/")[2] if path.startswith("//") else path


def is_memory(url: URL) -> bool:
    """Whether SQLite opens this URL's database in memory, as SQLite decides it: no name or ``:memory:``; in a URI
    filename the path ``:memory:`` (``file::memory:``, percent-encoded too) or ``mode=memory`` (SQLite's modes are
    lower case: ``mode=MEMORY`` is an error, never a file). ``mode`` outside a URI filename is refused by
    :func:`parse_url` (SQLite would open a file of that name)."""
    from urllib.parse import unquote

    path = uri_path(url)
    if path is None:
        return url.database in (None, "", ":memory:")
    return unquote(path) == ":memory:" or url.query.get("mode") == "memory"


def build_engine(url: URL) -> Engine:
    if url.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                             connect_args={"connect_timeout": 10})
    busy_ms = busy_timeout_ms(url)  # the URL's ?timeout=SECONDS, else 30 s
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": busy_ms / 1000}}
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
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not memory:
                _switch_to_wal(cur, busy_ms)
                cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


def _switch_to_wal(cur: Any, busy_ms: int) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the file.

    SQLite answers the journal-mode change with "database is locked" at once, without calling the busy
    handler, when another connection is reading or switching the same fresh file (several processes
    or threads opening a new ledger together). The switch is retried for up to ``busy_timeout``.
    """
    deadline = time.monotonic() + busy_ms / 1000
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
        if not version_table_is_ours(columns, lambda: conn.execute(text(FIRST_VERSION)).first()):
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
        self._local = threading.local()  # .after: the running write transaction's after-commit callbacks

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
        """A write transaction; the callbacks :meth:`after_commit` registered in it run once it committed (none
        when it was rolled back: an exception inside, a failed COMMIT)."""
        after: list[Callable[[], None]] = []
        outer, self._local.after = getattr(self._local, "after", None), after
        try:
            with self._failures(), self._writer, transaction(self.engine, write=True) as conn:
                yield conn
        finally:
            self._local.after = outer
        for callback in after:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this thread's write transaction (:meth:`write`) committed, never if it is rolled
        back: what a process remembers of what it wrote (its notes of the revision counter) moves with the ledger."""
        after = getattr(self._local, "after", None)
        if after is None:
            raise RuntimeError("after_commit outside a write transaction")
        after.append(callback)

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
