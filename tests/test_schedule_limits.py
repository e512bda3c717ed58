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


@pytest.mark.parametrize("schedule, message", [
    # F1: croniter finds no date in 50 years: serve exited 70 ("failed to find next date") after it listened
    ('cron = "0 0 30 2 *"', "[schedule] cron = '0 0 30 2 *' has no fire time serve can find"),
    ('cron = "30 4 31 4,6 *"', "[schedule] cron = '30 4 31 4,6 *' has no fire time serve can find"),
    # F2: a sixth field is croniter's seconds (`0 0 3 * * *` fired every second of 00:00 on the 3rd: 60 runs),
    # a seventh its year
    ('cron = "0 0 3 * * *"', "[schedule] cron = '0 0 3 * * *' is not a valid cron expression (five fields"),
    ('cron = "* * * * * *"', "(it has 6: a seconds or year field is not read)"),
    ('cron = "0 3 * * * * 2027"', "(it has 7: a seconds or year field is not read)"),
    # F3: drawn at random at every call
    ('cron = "R R * * *"', "[schedule] cron = 'R R * * *': a random field (R) is not read"),
    ('cron = "r/15 3 * * *"', "[schedule] cron = 'r/15 3 * * *': a random field (R) is not read"),
    # F4: past any date (an internal error at load), past the year 9999 (serve's crash), or just long
    ('every = "99999999999d"', "[schedule] every = '99999999999d': the longest interval is 366 days"),
    ('every = "999999999d"', "[schedule] every = '999999999d': the longest interval is 366 days"),
    ('every = "367d"', "[schedule] every = '367d': the longest interval is 366 days"),
    ('every = "1' + "0" * 5000 + 'd"', "[schedule] every = '1000"),  # (Python reads 4300 digits at most)
    ('cron = "0 3 * * *"\nretry_wait = "999999999d"',
     "[schedule] retry_wait = '999999999d': the longest interval is 366 days"),
])
def test_check_and_serve_refuse_a_schedule_serve_could_not_run(tmp_path, schedule, message):
    """The load refuses it: ``check`` and ``serve`` exit 2 with one line naming ``[schedule] <key>`` (check
    exited 0, or 70 with "internal error: Python int too large to convert to C int"), serve before it listens."""
    path = write(tmp_path, schedule)
    error, out = config_error(path)
    assert error.startswith(f"{path}: ") and message in error
    assert message in out and "internal error" not in out
    checked = run_cli("check", "--offline", "--config", str(path), code=2).output
    assert message in checked and len(checked.strip().splitlines()) == 1, checked
    served = run_cli("serve", "--config", str(path), "--port", "0", "--no-worker", code=2).output
    assert message in served and "listening" not in served


@pytest.mark.parametrize("schedule", ['cron = "0 0 29 2 *"', 'cron = "@DAILY"', 'cron = "0 3 * mar,apr fri"',
                                      'every = "366d"', 'every = "365d23h60m"',
                                      'cron = "0 3 * * *"\nretry_wait = "366d"'])
def test_the_longest_schedule_serve_runs_still_passes(tmp_path, schedule):
    """A leap day (every four years, eight across 2100), a named schedule in capitals, month and day names (an
    ``r`` inside a name is no random field) and a year's interval are read."""
    out = run_cli("check", "--offline", "--config", str(write(tmp_path, schedule))).output
    assert out.startswith("config ") and ": ok" in out.splitlines()[0], out


@pytest.mark.parametrize("cron", ["@DAILY", "@daily", "0 0 * * *"])
def test_a_named_schedule_in_capitals_fires_once_on_the_night_the_clocks_go_back(cron):
    """``@DAILY`` is croniter's ``@daily``, a fixed time (00:00) like ``0 0 * * *``: Havana's clocks go back from
    01:00 to 00:00 on 1 November 2026, and midnight fires once (``@DAILY`` was read as a wildcard job: twice)."""
    from sync.schedule_times import Schedule

    schedule, at, fires = Schedule.from_config(ScheduleConfig(cron=cron), "America/Havana"), FALL_EVE, []
    for _ in range(3):
        at = schedule.next_after(at)
        fires.append(at.isoformat())
    assert fires == ["2026-11-01T04:00:00+00:00", "2026-11-02T05:00:00+00:00", "2026-11-03T05:00:00+00:00"]


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_every_or_retry_wait_is_unset(tmp_path, ledger_url, clock, caplog, blank):
    """F6: ``every = ""`` schedules nothing (as a blank ``cron``), ``retry_wait = "  "`` is the default 10 minutes:
    a scheduled sync that failed the retry-later way is retried 10 minutes later. Both were refused ("use a
    duration")."""
    path = write(tmp_path, f'cron = "0 14 * * *"\nevery = "{blank}"\nretry_wait = "{blank}"')
    assert ": ok" in run_cli("check", "--offline", "--config", str(path)).output
    cfg = load_config(path)
    assert cfg.schedule.every is None and cfg.schedule.retry_wait == "10m"

    def job():
        raise TransientError("the CRM answers 503")

    with Ledger.connect(ledger_url, clock=clock) as ledger, caplog.at_level(logging.ERROR, "sync.serve.scheduler"):
        sched = Scheduler(cfg, ledger, None, clock=clock, job=job)  # type: ignore[arg-type]
        clock.advance(hours=1)  # 13:00 UTC, 14:00 in Berlin
        assert not sched.tick()
        assert sched.retry is not None and sched.retry.at == clock() + timedelta(minutes=10)
        assert f"retry 1 of 3 at {(clock() + timedelta(minutes=10)).isoformat()}" in caplog.text


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
