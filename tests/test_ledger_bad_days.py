"""The ledger's bad days: a path that cannot be a ledger, another program's database, the disk full in the middle
of an apply, the PostgreSQL connection lost or a statement cancelled while the apply writes its outcomes.

Each is refused or stopped with one clear error that names the ledger (its password hidden) and says what to do,
never the SQL statement and its values; nothing is written into a file that is not a ledger; an apply whose
outcomes cannot be recorded stops starting calls, records the run as failed and releases its lock.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from sync.cli.main import exit_code
from sync.engine import execute_plan
from sync.errors import ConfigError, LedgerError
from sync.ledger import Ledger
from sync.ledger.locks import RELEASE_RETRY_SECONDS

try:
    from tests import ledger_fixtures
    from tests.test_engine_lock import Paced, plan_of
except ImportError:  # tests/ itself on sys.path
    import ledger_fixtures  # type: ignore
    from test_engine_lock import Paced, plan_of  # type: ignore

ledger_url = ledger_fixtures.ledger_url  # the fixture: a SQLite file, or a PostgreSQL schema
_pg_admin = ledger_fixtures._pg_admin


def _folder_state(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.iterdir())}


def _ledger_file(tmp_path: Path) -> Path:
    Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}").close()
    return tmp_path / "ledger.db"


def _make_random(tmp_path: Path) -> Path:
    (tmp_path / "random.db").write_bytes(os.urandom(8192))
    return tmp_path / "random.db"


def _make_truncated(tmp_path: Path) -> Path:
    whole = _ledger_file(tmp_path).read_bytes()
    (tmp_path / "ledger.db").unlink()
    (tmp_path / "truncated.db").write_bytes(whole[:len(whole) // 2])
    return tmp_path / "truncated.db"


def _make_sqlite(tmp_path: Path, ddl: str) -> Path:
    with sqlite3.connect(tmp_path / "other.db") as con:  # a rollback-journal file, as most programs keep
        con.execute(ddl)
        con.execute("INSERT INTO " + ddl.split()[2] + " DEFAULT VALUES")
    return tmp_path / "other.db"


def _make_in_a_file(tmp_path: Path) -> Path:
    (tmp_path / "notes").write_text("x")
    return tmp_path / "notes" / "rfmsync.db"


def _make_duckdb(tmp_path: Path) -> Path:
    import duckdb

    duckdb.connect(str(tmp_path / "rfmsync.duckdb")).close()
    return tmp_path / "rfmsync.duckdb"


CANNOT_BE_A_LEDGER = {
    "a folder": (lambda tmp: (tmp / "ledger.db").mkdir() or tmp / "ledger.db", "is a folder, not a database file"),
    "random bytes": (_make_random, "is not a SQLite database, or a damaged one"),
    "a truncated ledger": (_make_truncated, "is not a SQLite database, or a damaged one"),
    "another program's database": (
        lambda tmp: _make_sqlite(tmp, "CREATE TABLE orders (id INTEGER PRIMARY KEY, total TEXT)"),
        "holds tables (orders) but no rfmsync schema_version"),
    "a pushed_state table of another shape": (
        lambda tmp: _make_sqlite(tmp, "CREATE TABLE pushed_state (id INTEGER PRIMARY KEY, who TEXT)"),
        "holds tables (pushed_state) but no rfmsync schema_version"),
    "another program's schema_version": (
        lambda tmp: _make_sqlite(tmp, "CREATE TABLE schema_version (version INTEGER DEFAULT 3, script TEXT)"),
        "holds a schema_version table that is not rfmsync's"),
    "a schema_version of rfmsync's shape, not its history": (
        lambda tmp: _make_sqlite(tmp, "CREATE TABLE schema_version (version INTEGER DEFAULT 12, description TEXT "
                                      "DEFAULT 'create users', applied_at TEXT DEFAULT '2020-01-01')"),
        "holds a schema_version table that is not rfmsync's"),
    "a folder that is a file": (_make_in_a_file, "cannot create its folder"),
    "the order store": (_make_duckdb, "is a DuckDB database (the order store, [store] orders?), not the ledger"),
}


@pytest.mark.parametrize("case", list(CANNOT_BE_A_LEDGER))
def test_a_path_that_cannot_be_a_ledger_is_refused_naming_it_and_is_left_as_it_was(tmp_path: Path,
                                                                                    case: str) -> None:
    make, says = CANNOT_BE_A_LEDGER[case]
    path = make(tmp_path)
    before = _folder_state(tmp_path)
    with pytest.raises(ConfigError) as err:
        Ledger.connect(f"sqlite:///{path}")
    message = str(err.value)
    assert str(path) in message and says in message
    assert "point [ledger] url (or RFMSYNC_LEDGER_URL) at" in message  # what to do
    assert "\n" not in message and "[SQL" not in message
    assert _folder_state(tmp_path) == before  # not switched to WAL, no table added, no -wal/-shm left beside it


def test_a_ledger_another_process_keeps_write_locked_still_opens_and_reads(tmp_path: Path) -> None:
    """Opening a ledger that needs no migration takes no write lock: a ``sqlite3`` shell left in ``BEGIN
    EXCLUSIVE`` (WAL: it keeps writers out, never readers) does not keep ``plan`` or ``report`` from reading.
    On main every open took the write lock for its migration check and failed after the 30 s busy timeout."""
    path = _ledger_file(tmp_path)
    with Ledger.connect(f"sqlite:///{path}") as led:
        led.set_cursor("shop", "orders", "2025-02-28")
    shell = sqlite3.connect(path, isolation_level=None)
    try:
        shell.execute("BEGIN EXCLUSIVE")
        shell.execute("UPDATE cursors SET value = 'not committed'")
        with Ledger.connect(f"sqlite:///{path}") as led:
            assert led.get_cursor("shop", "orders") == "2025-02-28"
            assert led.load_state("dest") == {}
    finally:
        shell.close()


def test_a_sqlite_urls_timeout_is_the_ledgers_busy_timeout(tmp_path: Path) -> None:
    """``?timeout=SECONDS`` in a SQLite ledger URL (the Python driver's own parameter, the one SQLAlchemy documents)
    is how long a write waits for another process's write lock (a long first sync's save, a backup tool, a
    ``sqlite3`` shell left in a transaction), and the error names it. Before, the ledger's own PRAGMA set 30 s
    whatever the URL said: a user who raised it around a nightly backup still got exit 75 after 30 s, one who
    lowered it waited 30 s. A timeout that is not a number of seconds is a config error naming it."""
    path = _ledger_file(tmp_path)
    with Ledger.connect(f"sqlite:///{path}?timeout=120") as led:
        led.set_cursor("shop", "orders", "2025-02-28")
        with led._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 120_000
    shell = sqlite3.connect(path, isolation_level=None)
    try:
        shell.execute("BEGIN EXCLUSIVE")
        with Ledger.connect(f"sqlite:///{path}?timeout=0.2") as led:
            with pytest.raises(LedgerError, match=r"longer than the busy timeout \(0\.2 s\)") as caught:
                led.set_cursor("shop", "orders", "2025-03-01")
            assert exit_code(caught.value) == 75
    finally:
        shell.close()
    for bad in ("soon", "-1", "inf"):
        with pytest.raises(ConfigError, match=rf"ledger URL: timeout={bad} is not a number of seconds"):
            Ledger.connect(f"sqlite:///{path}?timeout={bad}")


def test_a_sqlite_timeout_past_sqlites_longest_is_refused_not_made_none(tmp_path: Path) -> None:
    """SQLite's busy timeout is milliseconds in a C int: ``?timeout=3000000`` (past 2³¹ ms) became a busy timeout
    of 0, every write failing at once on a lock. It is a config error naming the limit; the longest one stands."""
    path = tmp_path / "rfmsync.db"
    with Ledger.connect(f"sqlite:///{path}?timeout=2147483") as led:
        with led._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2_147_483_000
    for big in ("2147484", "3000000"):
        with pytest.raises(ConfigError, match=rf"timeout={big} is more than SQLite's longest busy timeout, "
                                              r"2147483 seconds"):
            Ledger.connect(f"sqlite:///{path}?timeout={big}")


@pytest.mark.parametrize("url", ["postgresql+psycopg://rfm:pg@db.example:5x32/rfm",
                                 "postgresql+psycopg://rfm:pg@[::1/rfm"])
def test_a_ledger_url_whose_port_is_not_a_number_is_a_config_error(url: str) -> None:
    """A port mistyped (``5x32``, an IPv6 address left unclosed) was an internal error (exit 1, "invalid literal
    for int()"): it is a config error saying what is wrong, exit 2, the password nowhere."""
    with pytest.raises(ConfigError, match=r"ledger URL is not a database URL \(its port is not a number\)") as err:
        Ledger.connect(url)
    assert exit_code(err.value) == 2 and ":pg@" not in str(err.value)


def test_a_database_holding_tables_of_the_ledgers_names_but_no_schema_version_is_left_as_it_was(
        ledger_url: str) -> None:
    """PostgreSQL too: another program's ``runs`` table in the schema is not taken for the ledger's (the first
    migration's CREATE would skip it and every later run would write into it)."""
    if ledger_url.startswith("sqlite"):
        Path(make_url(ledger_url).database).parent.mkdir()
    other = create_engine(ledger_url)
    with other.begin() as conn:
        conn.execute(text("CREATE TABLE runs (id INTEGER PRIMARY KEY, job TEXT)"))
    try:
        with pytest.raises(ConfigError, match=r"holds tables \(runs\) but no rfmsync schema_version"):
            Ledger.connect(ledger_url)
        with other.connect() as conn:
            tables = set(conn.dialect.get_table_names(conn))
        assert tables == {"runs"}
    finally:
        other.dispose()


def test_another_programs_schema_version_is_neither_a_newer_nor_an_older_ledger(ledger_url: str) -> None:
    """PostgreSQL too (SQLite's file is refused before the engine opens it): another program's ``schema_version``
    at version 12 is not "written by a newer rfmsync; upgrade rfmsync", and at 3 not migrated from there."""
    if ledger_url.startswith("sqlite"):
        Path(make_url(ledger_url).database).parent.mkdir()
    other = create_engine(ledger_url)
    with other.begin() as conn:
        conn.execute(text("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT, "
                          "applied_at TEXT)"))
        conn.execute(text("INSERT INTO schema_version VALUES (12, 'create users', '2020-01-01')"))
    try:
        with pytest.raises(ConfigError, match="holds a schema_version table that is not rfmsync's") as err:
            Ledger.connect(ledger_url)
        assert "upgrade" not in str(err.value) and exit_code(err.value) == 2
        with other.connect() as conn:
            assert set(conn.dialect.get_table_names(conn)) == {"schema_version"}
    finally:
        other.dispose()


def test_the_disk_full_in_the_middle_of_an_apply_stops_it_with_one_clear_error(tmp_path: Path) -> None:
    """The outcome writer's save fails with SQLITE_FULL (the file may not grow: ``max_page_count`` on every
    connection of the ledger, the size a full disk leaves it) after the ESP answered: the apply starts no further
    call, the error names the ledger file and says what to do, the run is recorded as failed with that line, the
    lock is released, and the ledger holds no contact the ESP did not answer (the rest are planned again)."""
    path = tmp_path / "rfmsync.db"
    led = Ledger.connect(f"sqlite:///{path}")
    full_at: list[int] = []

    @event.listens_for(led._engine, "checkout")
    def _disk_size(dbapi_conn, _record, _proxy) -> None:
        if full_at:
            dbapi_conn.execute(f"PRAGMA max_page_count = {full_at[0]}")

    def disk_fills(i: int) -> None:
        if i == 200:
            with sqlite3.connect(path) as con:
                full_at.append(con.execute("PRAGMA page_count").fetchone()[0])
        elif i > 200:
            time.sleep(0.005)  # slower once full: ~9 s of calls left for a writer starved on a loaded machine

    client = Paced(0.0005, disk_fills)
    plan = plan_of(2000)
    with pytest.raises(LedgerError) as err:
        execute_plan(plan, client, led)
    message = str(err.value)
    assert message == (f"ledger sqlite:///{path}: database or disk is full; the disk is full (or the file reached "
                       "its size limit): free space, then run again")
    assert exit_code(err.value) == 74
    assert 200 < client.answered < 2000  # stopped after the first write that failed, before the end
    full_at.clear()
    (run,) = led.recent_runs()
    assert (run["status"], run["error"]) == ("failed", message)
    assert led.lock_holder("sync:dest") is None
    answered = {c.key for c in plan.changes[:client.answered]}
    assert set(led.load_state("dest")) <= answered
    led.close()


class PgBlock:
    """Locks ``table`` now (a session of the test's own) in a thread that calls ``then(admin connection, blocker
    pid)`` and then lets go. ``join()`` re-raises what went wrong there. Only sessions waiting on this blocker are
    ever looked at or ended: other tests (xdist workers, other suites) share the database and its role."""

    def __init__(self, ledger_url: str, table: str, then,  # noqa: ANN001 - then(admin, blocker pid)
                 mode: str = "ACCESS EXCLUSIVE") -> None:
        import psycopg

        u = make_url(ledger_url)
        self._base, self._then, self._trouble = ledger_url.split("?")[0], then, []
        self._blocker = psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                                        dbname=u.database, options=u.query["options"], connect_timeout=10)
        self._blocker.execute(f"LOCK TABLE {table} IN {mode} MODE")
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            with _pg_admin(self._base) as admin:
                self._then(admin, self._blocker.info.backend_pid)
        except BaseException as exc:  # noqa: BLE001 - re-raised by join() on the test's thread
            self._trouble.append(exc)
        finally:
            self._blocker.close()

    def join(self) -> None:
        self._thread.join()
        if self._trouble:
            raise self._trouble[0]


def _waiting_on(admin, blocker: int) -> list[int]:  # noqa: ANN001
    """The sessions waiting on ``blocker``'s lock (only the code under test's: nobody else touches its schema)."""
    deadline = time.monotonic() + 20
    while True:
        pids = [r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                            (blocker,)).fetchall()]
        if pids:
            return pids
        assert time.monotonic() < deadline, "nothing waited on the locked table"
        time.sleep(0.02)


def _terminate_the_waiting_session(admin, blocker: int) -> None:  # noqa: ANN001
    for pid in _waiting_on(admin, blocker):
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _set_statement_timeout(led: Ledger, ms: int) -> None:
    """The role's ``statement_timeout`` on every connection of ``led`` from now on (set after the open: its
    migration may queue on the server-wide migration lock behind other tests')."""
    @event.listens_for(led._engine, "checkout")
    def _statement_timeout(dbapi_conn, _record, _proxy) -> None:  # noqa: ANN001
        dbapi_conn.execute(f"SET statement_timeout = {ms}")
        dbapi_conn.commit()


PG_FAILURES = {
    # a failover or an administrator ends the writer's session in the middle of its transaction
    "connection lost": (None, ("terminating connection due to administrator command", "; the connection to the "
                               "PostgreSQL server was lost or refused (a restart, a failover)")),
    # the role's statement_timeout cancels the writer's statement
    "statement timeout": (1000, ("canceling statement due to statement timeout",
                                 "; a statement was cancelled (its statement_timeout")),
}


@pytest.mark.postgres
@pytest.mark.parametrize("case", list(PG_FAILURES))
def test_postgresql_failing_under_the_apply_stops_it_with_one_clear_error_and_releases_the_lock(
        ledger_url: str, case: str) -> None:
    if not ledger_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    timeout_ms, says = PG_FAILURES[case]
    led = Ledger.connect(ledger_url)
    if timeout_ms is not None:
        _set_statement_timeout(led, timeout_ms)

    applied = threading.Event()

    def end_the_writers_session(admin, blocker: int) -> None:  # noqa: ANN001
        if timeout_ms is None:
            _terminate_the_waiting_session(admin, blocker)
        else:
            applied.wait(60)  # the timeout cancels the waiting statement meanwhile

    blocks: list[PgBlock] = []

    def during(i: int) -> None:  # the calls go on meanwhile: the writer has outcomes to write
        if i == 200:
            blocks.append(PgBlock(ledger_url, "state_revisions", end_the_writers_session))
        elif i > 200:
            time.sleep(0.004)  # slower once blocked: ~15 s of calls left for a writer starved on a loaded machine

    client = Paced(0.001, during)
    try:
        with pytest.raises(LedgerError) as err:
            execute_plan(plan_of(4000), client, led)
    finally:
        applied.set()
        if blocks:
            blocks[0].join()
    message = str(err.value)
    url = make_url(ledger_url)
    assert message.startswith(f"ledger {url.render_as_string(hide_password=True)}: ")
    assert all(part in message for part in says)
    assert url.password not in message and "[SQL" not in message and "INSERT" not in message
    assert err.value.transient and exit_code(err.value) == 75
    assert client.answered < 4000  # stopped at the next call's outcomes
    (run,) = led.recent_runs()
    assert (run["status"], run["error"]) == ("failed", message)
    assert led.lock_holder("sync:dest") is None  # the next run is not kept out for the lock's hour
    led.close()


@pytest.mark.postgres
def test_a_connection_lost_while_the_lock_is_released_does_not_leave_it_held(ledger_url: str) -> None:
    """The session that deletes the destination's lock row at the end of a run is terminated (a failover): the
    release is tried again on a new connection. On main the lock stayed held for its TTL (an hour), keeping out
    every run of that destination, and the next resyncs of a ``serve`` still alive (never taken over), and the
    run that had succeeded ended with the connection's error, its SQL statement included."""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    led = Ledger.connect(ledger_url)
    slept: list[float] = []
    led.locks.sleep = slept.append  # the wait before the second try, recorded instead of slept
    blocks: list[PgBlock] = []

    def during(i: int) -> None:
        if i == 49:  # the last call: the release comes next; SHARE: its DELETE waits, the writer's FOR UPDATE not
            blocks.append(PgBlock(ledger_url, "locks", _terminate_the_waiting_session, mode="SHARE"))

    report = execute_plan(plan_of(50), Paced(0.001, during), led)
    blocks[0].join()
    assert report.status == "succeeded" and report.counts["ok"] == 50
    assert slept == [RELEASE_RETRY_SECONDS]
    assert led.lock_holder("sync:dest") is None
    assert led.acquire_lock("sync:dest", owner="next-run:1:x")
    led.close()


def test_a_read_only_ledger_is_read_and_a_write_is_refused_saying_what_it_needs(tmp_path: Path) -> None:
    """A ledger SQLite can only read (here opened ``mode=ro``, as a file or folder without write permission is
    for a user who is not root): ``plan`` and ``report`` read it; the first write (a sync's lock, before any ESP
    call) fails with one line saying what SQLite needs. On main it was an internal error (exit 70) holding the SQL
    statement, with no word of the file or of what to do."""
    path = _ledger_file(tmp_path)
    with Ledger.connect(f"sqlite:///{path}") as led:
        led.set_cursor("shop", "orders", "2025-02-28")
    with Ledger.connect(f"sqlite:///file:{path}?mode=ro&uri=true") as led:
        assert led.get_cursor("shop", "orders") == "2025-02-28"
        with pytest.raises(LedgerError) as err:
            led.acquire_lock("sync:dest")
    assert str(path) in str(err.value) and exit_code(err.value) == 74
    assert str(err.value).endswith("attempt to write a readonly database; rfmsync cannot write it: it needs write "
                                   "access to the file and to its folder (SQLite writes the -wal and -shm files "
                                   "beside it)")


@pytest.mark.parametrize("bug", ["SELECT no_such_column FROM runs", "SELECT FROM WHERE"])
def test_a_statement_of_ours_that_sqlite_rejects_stays_an_internal_error_not_a_ledger_failure(
        tmp_path: Path, bug: str) -> None:
    """SQLITE_ERROR (no such column, a syntax error) is rfmsync's bug, not the disk's: it is not dressed up as a
    ledger failure (exit 74, "ledger ...: no such column") but stays an internal error (70, "please report")."""
    with Ledger.connect(f"sqlite:///{tmp_path / 'rfmsync.db'}") as led:
        with pytest.raises(DBAPIError) as err:
            with led._write() as conn:
                conn.execute(text(bug))
    assert not isinstance(err.value, LedgerError) and exit_code(err.value) == 70


@pytest.mark.postgres
@pytest.mark.parametrize("wrong", ["password", "database", "port"])
def test_a_postgresql_ledger_that_cannot_be_connected_at_open_says_to_check_the_url(ledger_url: str,
                                                                                     wrong: str) -> None:
    """A wrong password, an unknown database or nothing listening: exit 2 and "check the URL's host, port, user,
    password and database", never "the connection was lost (a restart, a failover): run again", which sent the
    operator to retry a typo every night."""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    url = make_url(ledger_url)
    url = url.set(**{wrong: {"password": "not-the-password", "database": "no_such_ledger_db", "port": 1}[wrong]})
    with pytest.raises(ConfigError) as err:
        Ledger.connect(url.render_as_string(hide_password=False))
    message = str(err.value)
    assert message.startswith(f"cannot open ledger {url.render_as_string(hide_password=True)}: ")
    assert message.endswith("; check the URL's host, port, user, password and database, or whether the server is up")
    assert "lost" not in message and "not-the-password" not in message and exit_code(err.value) == 2



@pytest.mark.postgres
def test_a_postgresql_open_whose_migration_wait_is_cancelled_is_a_ledger_error_to_retry(ledger_url: str) -> None:
    """review29 #3: a new ledger's migration waits on the server-wide migration lock (another process migrating);
    the role's statement_timeout cancels the wait. The server answered (an SQLSTATE): nothing in the settings is
    wrong, so exit 75 (try later), not a ConfigError (exit 2) whose text said "run again"."""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    from sync.ledger.db import _MIGRATION_LOCK_KEY

    url = make_url(ledger_url)
    url = url.update_query_dict({"options": f"{url.query['options']} -cstatement_timeout=300"})
    with _pg_admin(ledger_url.split("?")[0]) as holder, holder.transaction():  # another process migrating
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        with pytest.raises(LedgerError) as err:
            Ledger.connect(url.render_as_string(hide_password=False))
    message = str(err.value)
    assert message.startswith(f"ledger {url.render_as_string(hide_password=True)}: canceling statement due to "
                              "statement timeout; a statement was cancelled")
    assert err.value.transient and exit_code(err.value) == 75


@pytest.mark.parametrize("error,temporary", [("QueryCanceled", True), ("DeadlockDetected", True),
                                             ("CannotConnectNow", True), ("TooManyConnections", True),
                                             ("InvalidPassword", False), ("InvalidCatalogName", False),
                                             ("InsufficientPrivilege", False), ("DiskFull", False)])
def test_a_postgresql_failure_at_open_is_retried_later_only_when_temporary(error: str, temporary: bool) -> None:
    """review29 #3: the server's answer at open (an SQLSTATE) that the next run may not meet is exit 75; a bad
    password, an unknown database, no permission, a full disk are the operator's to fix: exit 2."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    from sync.ledger.db import parse_url
    from sync.ledger.dberrors import open_failure

    orig = getattr(psycopg.errors, error)("the server's reason")
    err = open_failure(OperationalError("SELECT 1", {}, orig), parse_url("postgresql+psycopg://u:pw@db/rfm"))
    assert "the server's reason" in str(err) and "pw" not in str(err).replace("psycopg", "")
    assert (type(err), exit_code(err)) == ((LedgerError, 75) if temporary else (ConfigError, 2))

READS = {"the plan's read of the pushed state": ("pushed_state", lambda led: led.state_table("dest", cached=False)),
         "the schema version": ("schema_version", lambda led: led.schema_version())}


@pytest.mark.postgres
@pytest.mark.parametrize("case", list(READS))
def test_a_postgresql_read_cancelled_by_its_statement_timeout_is_one_clear_ledger_error(ledger_url: str,
                                                                                        case: str) -> None:
    """The plan's snapshot read (``REPEATABLE READ``) and ``schema_version`` meet a cancelled statement as every
    other read does: exit 75 and what to do, not an internal error (70) quoting the SQL."""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    table, read = READS[case]
    led = Ledger.connect(ledger_url)
    _set_statement_timeout(led, 300)
    applied = threading.Event()
    block = PgBlock(ledger_url, table, lambda _admin, _blocker: applied.wait(60))
    try:
        with pytest.raises(LedgerError) as err:
            read(led)
    finally:
        applied.set()
        block.join()
        led.close()
    message = str(err.value)
    assert message.startswith(f"ledger {make_url(ledger_url).render_as_string(hide_password=True)}: canceling "
                              "statement due to statement timeout; a statement was cancelled")
    assert "[SQL" not in message and err.value.transient and exit_code(err.value) == 75
