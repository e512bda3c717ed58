"""Fixtures for the ledger tests: a fresh database per test on SQLite and, when
RFMSYNC_TEST_PG_URL is set (see .ci/postgres.sh), on PostgreSQL in a throwaway schema."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import pytest
from sqlalchemy.engine import make_url

from sync.ledger import Ledger

PG_ENV = "RFMSYNC_TEST_PG_URL"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


class Clock:
    """Injected clock: starts at a fixed instant and moves only when told."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _pg_admin(base: str):  # noqa: ANN202 - psycopg connection
    import psycopg

    u = make_url(base)
    return psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                           dbname=u.database, autocommit=True, connect_timeout=10)


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty ledger database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger' / 'rfmsync.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (run: eval \"$(.ci/postgres.sh)\")")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with _pg_admin(base) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with _pg_admin(base) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_ledger(ledger_url: str, clock: Clock) -> Iterator[Callable[..., Ledger]]:
    """Factory for Ledger instances on this test's database (all closed at teardown)."""
    opened: list[Ledger] = []

    def _open(**kwargs: object) -> Ledger:
        kwargs.setdefault("clock", clock)
        ledger = Ledger.connect(ledger_url, **kwargs)  # type: ignore[arg-type]
        opened.append(ledger)
        return ledger

    yield _open
    for ledger in opened:
        ledger.close()


@pytest.fixture
def ledger(open_ledger: Callable[..., Ledger]) -> Ledger:
    return open_ledger()


ROOT = Path(__file__).resolve().parents[1]
_CHILD = """
import os, sys, time
from sync.ledger import Ledger, default_owner
led = Ledger.connect(os.environ["RFMSYNC_TEST_LEDGER"])
exec(sys.argv[1])
print("ready", flush=True)
time.sleep(120)
"""


@contextmanager
def child_killed_after(url: str, code: str) -> Iterator[list[str]]:
    """Run ``code`` (with ``led``, a Ledger on ``url``, and ``default_owner``) in a child process that then
    stays alive; yields what the code printed, and kill -9s the child when the block ends."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "RFMSYNC_TEST_LEDGER": url}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            text=True)
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip() == "ready":
                break
            lines.append(line.strip())
        assert proc.poll() is None, f"the child process ended early: {lines}"
        yield lines
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]


def dead_owner() -> str:
    """A ``host:pid:token`` owner of this host whose process has exited."""
    import subprocess
    import sys

    from sync.ledger.owners import this_host

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return f"{this_host()}:{proc.stdout.strip()}:deadbeef"
