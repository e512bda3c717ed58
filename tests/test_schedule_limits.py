"""hunt32a: a ``[schedule]`` that ``check`` passes is one ``serve`` can run. The load check read the cron with
``croniter.is_valid`` and the durations with no upper bound, so ``check`` passed a cron that never fires (serve
died after it listened: a crash loop under a supervisor), a six-field cron (a seconds field: a full sync every
second), croniter's random ``R`` fields (fire times drawn again at each call: two serve processes disagreed) and
``every``/``retry_wait`` past the dates Python counts (an internal error at load, serve's crash at its first fire
time, or, for ``retry_wait``, the scheduler's thread dead at the first failure, serve still up). A blank ``every``
or ``retry_wait`` was refused where a blank ``cron`` is unset. Planning a retry never ends the scheduler."""

from __future__ import annotations

import logging
import socket
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from connectors.errors import TransientError
from sync.config import ScheduleConfig, load_config
from sync.ledger import Ledger
from sync.serve.scheduler import RETRY_CURSOR, Retry, Scheduler
from sync.settings import load_settings
from tests.builders import config_error, run_cli

try:
    from tests import ledger_fixtures
except ImportError:  # tests/ itself on sys.path
    import ledger_fixtures  # type: ignore[no-redef]

clock, ledger_url = ledger_fixtures.clock, ledger_fixtures.ledger_url  # fixtures

FALL_EVE = datetime(2026, 10, 31, 12, 0, tzinfo=timezone.utc)


SOURCE = ('[source]\ntype = "file"\norders = "orders.csv"\ntimezone = "Europe/Berlin"\ncurrency = "EUR"\n'
          '[source.columns]\norder_id = "order_id"\ncustomer_id = "customer_id"\nordered_at = "ordered_at"\n'
          'amount = "amount"\nemail = "email"\n')


def write(tmp_path: Path, schedule: str) -> Path:
    """A shop of one order whose ``[schedule]`` is ``schedule``."""
    (tmp_path / "orders.csv").write_text("order_id,customer_id,ordered_at,amount,email\n"
                                         "1,c1,2026-01-01,10,a@x.io\n", encoding="utf-8")
    path = tmp_path / "rfmsync.toml"
    path.write_text(f"{SOURCE}[schedule]\n{schedule}\n", encoding="utf-8")
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_retry_past_any_date_is_not_planned_and_the_scheduler_goes_on(tmp_path, monkeypatch, ledger_url, clock,
                                                                        caplog):
    """F4: planning the retry of a scheduled sync whose ESP cannot be reached ran into a time past the dates Python
    counts (here the ledger's pending retry is attempt 60 of 100, written under another ``[schedule]``: 1 minute
    doubled 60 times); the OverflowError came out of the scheduler's error handler and ended its thread (serve up,
    no scheduled sync any more). Now it is not retried (the next fire time comes first), and the next fire time runs
    the sync again."""
    from sync.demodata import generate_shop

    path = generate_shop(tmp_path / "shop", customers=30, seed=3, as_of=date(2025, 2, 28))
    path.write_text(path.read_text(encoding="utf-8") + "\n[schedule]\nevery = \"1h\"\nretries = 100\n"
                    "[guards]\nmax_bad_rows_pct = 100\n", "utf-8")  # (the demo has its bad rows)
    monkeypatch.setenv("MAILCHIMP_API_KEY", "0123456789abcdef0123456789abcdef-us1")
    monkeypatch.setenv("MAILCHIMP_API_URL", f"http://127.0.0.1:{closed_port()}/3.0")  # nothing listens there
    monkeypatch.setenv("RFMSYNC_HTTP_MAX_ATTEMPTS", "1")
    monkeypatch.chdir(tmp_path)
    cfg, settings = load_config(path), load_settings()
    with Ledger.connect(ledger_url, clock=clock) as ledger, caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        fire = clock() - timedelta(hours=3)
        ledger.set_cursor(*RETRY_CURSOR, Retry(fire, 60, clock() + timedelta(minutes=5)).dumps())
        sched = Scheduler(cfg, ledger, settings, clock=clock)
        assert sched.retry is not None and sched.retry.attempt == 60
        clock.advance(minutes=5)
        assert not sched.tick()  # (raised OverflowError: date value out of range)
        failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(failed) == 1 and failed[0].startswith("scheduled sync failed: ")
        assert failed[0].endswith("; not retried: the next fire time comes first"), failed[0]
        assert sched.retry is None and ledger.get_cursor(*RETRY_CURSOR) == ""
        assert sched.next_fire == clock().replace(minute=0) + timedelta(hours=1)
        clock.now = sched.next_fire
        caplog.clear()
        assert not sched.tick()  # the next fire time runs it again: its first retry is planned
        assert any("retry 1 of 100 at" in r.getMessage() for r in caplog.records), caplog.text
        assert [r["kind"] for r in ledger.recent_runs(10)].count("scheduled") >= 2
