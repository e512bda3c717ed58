"""The scheduler's thread outlives a bad tick: the ledger failing before a scheduled sync began (a write lock another
session holds past the busy timeout on SQLite, a session ended by PostgreSQL while it waited) is logged once as an
ERROR, counted, shown in ``GET /healthz`` and tried again a pause later, the fire time kept; and a retry the ledger
could not record is said to be kept in this process only (it is: it runs)."""

from __future__ import annotations

import logging
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import requests
from sqlalchemy.engine import make_url

from connectors.errors import TransientError
from sync.config import Config, ScheduleConfig
from sync.ledger import Ledger
from sync.serve.metrics import Metrics
from sync.serve.scheduler import CURSOR, RETRY_CURSOR, TICK_PAUSE, Retry, Scheduler
from sync.serve.service import Service
from sync.settings import Settings

try:
    from tests import ledger_fixtures
    from tests.test_ledger_bad_days import PgBlock, _terminate_the_waiting_session
    from tests.test_serve import wait_for
    from tests.test_webhooks_generic import live_server
except ImportError:  # tests/ itself on sys.path
    import ledger_fixtures  # type: ignore[no-redef]
    from test_ledger_bad_days import PgBlock, _terminate_the_waiting_session  # type: ignore[no-redef]
    from test_serve import wait_for  # type: ignore[no-redef]
    from test_webhooks_generic import live_server  # type: ignore[no-redef]

clock, ledger_url = ledger_fixtures.clock, ledger_fixtures.ledger_url  # fixtures

CFG = Config(schedule=ScheduleConfig(every="1h"))
FIRE = datetime(2025, 3, 1, 13, 0, tzinfo=timezone.utc)  # the first fire time after the clock fixture's start


class SqliteWriter:
    """Another session (a ``sqlite3`` shell, a backup tool) in a write transaction on the ledger file: the
    ledger's writes fail once its busy timeout (the URL's ``timeout``) has passed."""

    def __init__(self, url: str) -> None:
        self.con = sqlite3.connect(url.removeprefix("sqlite:///").split("?")[0], isolation_level=None)
        self.con.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.con.execute("ROLLBACK")
        self.con.close()


def _scheduler_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sync.serve.scheduler" and r.levelno == logging.ERROR]


def _clear_of_the_hour(margin: timedelta = timedelta(seconds=120)) -> None:
    """The real clock's next fire time (the top of the hour, ``every: 1h``) well after the test: a tick failing in
    the hour's last minute is rightly tried again at that fire time, sooner than the pause (CI at 00:59:09 once),
    and a retry run in the middle of the test would end it. Rare (2 minutes an hour); waits the hour out."""
    now = datetime.now(timezone.utc)
    top = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if top - now < margin:
        time.sleep((top - now).total_seconds() + 1)


def test_serve_scheduler_survives_a_ledger_failing_under_its_tick_and_healthz_says_so(ledger_url, caplog):
    """End to end through serve's own scheduler thread: a retry planned by an earlier process is due at the start,
    and the ledger fails as the scheduler takes the ``schedule`` lock (SQLite: another session's write lock past
    the 1 s busy timeout; PostgreSQL: its session ended while it waited, as a restart or a failover does). One
    ERROR names the failure and when it is tried again (60 s later), ``rfmsync_scheduled_syncs_total
    {outcome="scheduler_error"}`` counts it, ``/healthz`` says the scheduler is failing (since when, the error, no
    secret), the thread lives on and does not spin. Before: /healthz said nothing (and a failing tick that raised
    ended the thread)."""
    sqlite = ledger_url.startswith("sqlite")
    url = ledger_url + "?timeout=1" if sqlite else ledger_url
    _clear_of_the_hour()
    now = datetime.now(timezone.utc)
    fire = now.replace(minute=0, second=0, microsecond=0)
    with Ledger.connect(url) as seed:
        seed.set_cursor(*RETRY_CURSOR, Retry(fire, 1, now - timedelta(seconds=1)).dumps())
    block = SqliteWriter(url) if sqlite else PgBlock(url, "locks", _terminate_the_waiting_session)
    ledger = Ledger.connect(url)
    service = Service(CFG, Settings(_env_file=None), ledger, workers=0)
    try:
        with caplog.at_level(logging.INFO, "sync.serve.scheduler"), live_server(service.app) as base:
            service.start()

            def failing() -> dict | None:
                return requests.get(f"{base}/healthz", timeout=10).json()["scheduler_failing"]

            wait_for(lambda: failing() is not None, 60)
            failed_at = datetime.now(timezone.utc)
            if sqlite:
                block.release()
            else:
                block.join()
            time.sleep(2)  # no busy loop: nothing tried again before the pause is over
            health = requests.get(f"{base}/healthz", timeout=10)
            page = requests.get(f"{base}/metrics", timeout=10).text
            assert health.status_code == 200
            state = health.json()["scheduler_failing"]
            assert state["failed_ticks"] == 1 and state["error"].startswith("LedgerError: ledger ")
            assert now <= datetime.fromisoformat(state["since"]) <= failed_at
            assert 'rfmsync_scheduled_syncs_total{outcome="scheduler_error"} 1' in page
            password = make_url(url).password
            assert not password or (password not in health.text and password not in page)
            (line,) = _scheduler_errors(caplog)
            assert line.startswith(f"scheduler: a tick failed (1 in a row) (scheduled sync of {fire.isoformat()} "
                                   "not begun): LedgerError: ledger ")
            again = datetime.fromisoformat(line.rsplit("; tried again at ", 1)[1])
            assert timedelta(seconds=55) <= again - failed_at <= TICK_PAUSE + timedelta(seconds=1)
            assert all(t.is_alive() for t in service._threads)  # the scheduler's thread lives on
            pending = Retry.loads(ledger.get_cursor(*RETRY_CURSOR))  # the ledger still names the retry
            assert pending is not None and (pending.fire, pending.attempt) == (fire, 1)
    finally:
        service.close()


def test_a_failed_tick_keeps_its_fire_time_pauses_and_runs_it_after_the_pause(tmp_path, clock, caplog):
    """The step the scheduler's thread loops on: a fire time whose ``schedule`` lock the ledger cannot write is
    kept and run once the pause is over (not lost to the next fire time, an hour later); in between no tick runs
    (no busy loop), and once a tick goes through the scheduler no longer shows as failing."""
    url = f"sqlite:///{tmp_path / 'l.db'}?timeout=1"
    ran: list[int] = []
    metrics = Metrics()
    with Ledger.connect(url, clock=clock) as ledger, caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        sched = Scheduler(CFG, ledger, None, clock=clock, metrics=metrics,  # type: ignore[arg-type]
                          job=lambda: ran.append(1))
        clock.advance(hours=1, seconds=5)  # the fire time
        block = SqliteWriter(url)
        assert sched.step() == 0.0 and not ran
        assert metrics.scheduler_failure()["failed_ticks"] == 1 and metrics.scheduled["scheduler_error"] == 1
        assert sched.step() == TICK_PAUSE.total_seconds()  # paused: no tick
        block.release()
        clock.advance(seconds=59)
        assert sched.step() == 1.0 and not ran
        clock.advance(seconds=1)
        assert sched.step() == 0.0 and ran == [1]
        assert ledger.get_cursor(*CURSOR) == FIRE.isoformat() and metrics.scheduler_failure() is None
        assert metrics.scheduled["ok"] == 1 and len(_scheduler_errors(caplog)) == 1


def test_a_failed_tick_just_before_the_next_fire_time_pauses_only_until_it(tmp_path, clock):
    """A tick failing 30 s before the next fire time waits for that fire time (which does the work), not 60 s."""
    url = f"sqlite:///{tmp_path / 'l.db'}?timeout=1"
    ran: list[int] = []
    with Ledger.connect(url, clock=clock) as ledger:
        sched = Scheduler(CFG, ledger, None, clock=clock, job=lambda: ran.append(1))  # type: ignore[arg-type]
        clock.advance(hours=1, minutes=59, seconds=30)  # 13:59:30: the 13:00 fire time is due, 14:00 is next
        block = SqliteWriter(url)
        assert sched.step() == 0.0 and not ran
        block.release()
        assert sched.step() == 30.0
        clock.advance(seconds=30)
        assert sched.step() == 0.0 and ran == [1]
        assert ledger.get_cursor(*CURSOR) == (FIRE + timedelta(hours=1)).isoformat()


def test_a_retry_the_ledger_could_not_record_is_said_kept_in_this_process_and_runs(tmp_path, clock, caplog):
    """A scheduled sync fails the retry-later way while another session holds the ledger's write lock: the
    retry cannot be written to the ledger, and the log says it is kept in this process only, with its time; it
    then runs (its ``schedule`` lock, left by a release the ledger refused too, once lapsed). Before: the line said "its retry could not be planned", though it ran."""
    url = f"sqlite:///{tmp_path / 'l.db'}?timeout=1"
    calls: list[SqliteWriter] = []

    def job():
        if not calls:  # the first run: a vendor times out while another session writes to the ledger
            calls.append(SqliteWriter(url))
            raise TransientError("Mailchimp: timed out")
        calls.append(None)  # type: ignore[arg-type]

    with Ledger.connect(url, clock=clock) as ledger, caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        sched = Scheduler(CFG, ledger, None, clock=clock, job=job)  # type: ignore[arg-type]
        clock.advance(hours=1, seconds=5)
        assert not sched.tick()
        calls[0].release()
        at = clock() + timedelta(minutes=10)
        (line,) = _scheduler_errors(caplog)
        assert line.startswith("scheduled sync failed: ledger ")
        assert (f"; retry 1 of 3 at {at.isoformat()}, kept in this process only: the ledger did not record it: "
                "LedgerError: ledger ") in line
        assert "could not be planned" not in line
        pending = Retry.loads(ledger.get_cursor(*RETRY_CURSOR))
        assert pending is None or pending.attempt == 0  # not in the ledger (its running mark at most)
        # the ``schedule`` lock's release failed as well: the retry, at its time, finds it held and looks again
        # once the lock's 15 minutes are over (13:15:05), then runs
        clock.advance(minutes=10)
        assert not sched.tick() and len(calls) == 1
        clock.advance(minutes=5)
        assert sched.tick() and len(calls) == 2
        assert ledger.get_cursor(*CURSOR) == FIRE.isoformat()


def test_a_tick_that_raises_outside_the_sync_is_logged_and_paused_not_the_end_of_the_thread(tmp_path, clock,
                                                                                          caplog):
    """A fire time whose next one cannot be worked out (a host clock gone to the end of year 9999: the next
    ``every`` slot is past the dates Python counts) raises out of ``tick()``: the step logs it once, counts it and
    pauses 60 s; the loop goes on (before: the exception ended the scheduler's thread, serve answering on)."""
    metrics = Metrics()
    ran: list[int] = []
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=clock) as ledger, \
            caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        sched = Scheduler(CFG, ledger, None, clock=clock, metrics=metrics,  # type: ignore[arg-type]
                          job=lambda: ran.append(1))
        clock.now = datetime(9999, 12, 31, 23, 30, tzinfo=timezone.utc)
        assert sched.step() == 0.0 and sched.step() == TICK_PAUSE.total_seconds() and not ran
        (line,) = _scheduler_errors(caplog)
        assert line.startswith("scheduler: a tick failed (1 in a row): ") and "; tried again at " in line
        assert metrics.scheduled["scheduler_error"] == 1 and metrics.scheduler_failure()["failed_ticks"] == 1
