"""A vendor's ``Retry-After`` / ``X-RateLimit-Reset`` on a bad day: a huge ask (``1e15``, a date in year 9999) is
read as a day at most, and the scheduler's retry of a failed scheduled sync stays on its clock (it overflowed, the
scheduler's thread died and scheduled syncs stopped silently); a date or an epoch is measured by the answer's
``Date`` only when that Date is believable (within a day of this host's clock), else by this host's clock. Faked at
the HTTP level (``responses``) through the CRM client, and through the scheduler with a real ledger. Whatever a
client puts in an error's ``retry_after`` (1e15, infinity, NaN, a negative ask) is clamped once, by the error: the
scheduler, the webhook worker and its pauses read it as it is."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import responses

from connectors.errors import MAX_RETRY_AFTER, TransientError
from connectors.http import HttpClient
from connectors.retry import RetryPolicy, retry_after_seconds
from connectors.runstart import server_date
from sync.config import Config, ScheduleConfig
from sync.errors import DestinationError
from sync.ledger import Ledger
from sync.ledger.codec import encode_records
from sync.serve.scheduler import Scheduler

try:
    from tests import ledger_fixtures
except ImportError:  # tests/ itself on sys.path
    import ledger_fixtures  # type: ignore[no-redef]

clock, ledger_url = ledger_fixtures.clock, ledger_fixtures.ledger_url  # fixtures

URL = "https://shop.retailcrm.ru/api/v5/orders"
EPOCH_DATE = "Thu, 01 Jan 1970 00:00:00 GMT"  # a clock never set
FAR_DATE = "Fri, 31 Dec 9999 23:59:59 GMT"


def http_date(at: datetime) -> str:
    return format_datetime(at.astimezone(timezone.utc), usegmt=True)


def refused(headers: dict[str, str]) -> tuple[TransientError, list[float]]:
    """The CRM client's error after a 429 carrying ``headers`` twice (the policy's two attempts), and its waits."""
    waits: list[float] = []
    client = HttpClient("https://shop.retailcrm.ru/", vendor="RetailCRM", auth_env="RETAILCRM_API_KEY",
                        url_env="RETAILCRM_URL", retry=RetryPolicy(attempts=2, sleep=waits.append, max_wait=60.0))
    with responses.RequestsMock() as rsps:
        rsps.get(URL, status=429, json={}, headers=headers)
        with pytest.raises(TransientError) as err:
            client.get("api/v5/orders")
    return err.value, waits


def scheduled(ledger: Ledger, clock, failure: Exception) -> tuple[Scheduler, list[int]]:
    """A scheduler (every hour, retry_wait 1 minute) whose first scheduled sync fails with ``failure``."""
    failures, ran = [failure], []

    def job():
        ran.append(1)
        if failures:
            raise failures.pop(0)
        return []
    cfg = Config(schedule=ScheduleConfig(every="1h", retry_wait="1m"))
    return Scheduler(cfg, ledger, None, clock=clock, job=job), ran  # type: ignore[arg-type]


@pytest.mark.parametrize("headers", [{"Retry-After": "1e15"}, {"Date": EPOCH_DATE, "Retry-After": FAR_DATE},
                                     {"X-RateLimit-Reset": "1e15"}], ids=["1e15", "1970-9999", "reset-1e15"])
def test_a_huge_retry_after_is_a_day_at_most_and_the_scheduler_goes_on(ledger_url, clock, caplog, headers):
    """The scheduled sync fails on a 429 asking for 1e15 s (or, by a Date of 1970, until year 9999): the failure is
    logged, its retry would come after the next fire time (not retried), and the next fire time runs the sync."""
    exc, waits = refused(headers)
    assert exc.retry_after == MAX_RETRY_AFTER == 86400.0 and waits == [60.0]
    with Ledger.connect(ledger_url, clock=clock) as ledger:
        sched, ran = scheduled(ledger, clock, exc)
        clock.advance(hours=1)
        with caplog.at_level(logging.ERROR, logger="sync.serve.scheduler"):
            sched.tick()
        assert ran == [1] and sched.retry is None
        assert "HTTP 429" in caplog.text and "not retried: the next fire time comes first" in caplog.text
        clock.advance(hours=1)
        sched.tick()
        assert ran == [1, 1]


ASKS = [1e15, float("inf"), float("nan"), -5.0, float("-inf")]


@pytest.mark.parametrize("error", [TransientError, DestinationError])
@pytest.mark.parametrize("asked, held", [(1e15, MAX_RETRY_AFTER), (float("inf"), MAX_RETRY_AFTER), (-5, 0.0),
                                         (float("-inf"), 0.0), (float("nan"), None), ("soon", None), (None, None),
                                         (30, 30.0), ("12", 12.0), (10**400, MAX_RETRY_AFTER), (-10**400, 0.0)])
def test_an_error_holds_a_finite_retry_ask_whatever_a_client_passes(error, asked, held):
    """A client's ask is clamped once, where the error is made: a day at most, "now" at least, no NaN; every reader
    (the retry layer, the scheduler, the webhook worker and its pauses) reads it as it is."""
    assert error("Unisender: HTTP 429", status=429, retry_after=asked).retry_after == held


@pytest.mark.parametrize("asked", ASKS)
def test_the_scheduler_plans_any_retry_after_a_client_raises_on_its_clock(ledger_url, clock, asked):
    """Whatever a client put in ``retry_after`` (not only the CRM client's parsed headers), the retry is planned on
    the scheduler's clock: a day at most (here past the next fire time: not retried); a NaN is no ask at all and
    a negative one "now": the scheduler's own retry_wait."""
    exc = TransientError("Unisender: HTTP 429", status=429, retry_after=asked)
    with Ledger.connect(ledger_url, clock=clock) as ledger:
        sched, ran = scheduled(ledger, clock, exc)
        clock.advance(hours=1)
        sched.tick()
        assert ran == [1]
        if asked != asked or asked < 0:
            assert sched.retry is not None and sched.retry.at == clock() + timedelta(minutes=1)
        else:
            assert sched.retry is None


@pytest.mark.parametrize("asked", ASKS)
def test_the_webhook_worker_backs_off_and_pauses_by_any_retry_after_a_client_raises(tmp_path, caplog, asked):
    """The worker's back-off and a rate-limited destination's pause read the same ask: a NaN is none (the worker's
    own back-off; it made both a wait of nothing: the worker claimed again at once and the pause ended as it began),
    a negative one "now" (its own first wait, jittered: 2.5–5 s), a huge one its own longest; no "nan s" or
    "inf s" in the log."""
    from sync.serve.worker import RETRY_AFTER_MAX, Worker

    cfg = Config(destinations=[{"name": n, "type": "mailchimp", "audience": a, "segments": {"Churn": "W"}}
                               for n, a in (("mc", "aud1"), ("mc2", "aud2"))])
    limited = DestinationError("Mailchimp: HTTP 429", status=429, retry_after=asked, transient=True)
    limited.destination = "mc"  # type: ignore[attr-defined]  (as the resync names it)
    failures = [limited, DestinationError("Mailchimp: HTTP 503", status=503, retry_after=asked, transient=True)]
    now = [1000.0]

    def process(batch):
        if failures:
            raise failures.pop(0)

    expected = RETRY_AFTER_MAX if asked == asked and asked > 0 else None  # else its own first, jittered wait
    caplog.set_level(logging.INFO, "sync.serve")
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        ledger.enqueue_event("generic", "k", encode_records())
        worker = Worker(cfg, ledger, None, process=process, clock=lambda: now[0])  # type: ignore[arg-type]
        worker.process_batch()  # mc's 429: mc paused, mc2 resynced
        paused = worker.paused()
        assert list(paused) == ["mc"] and (paused["mc"] == expected if expected else 2.5 <= paused["mc"] <= 5)
        worker.process_batch()  # every destination's 503: the worker backs off
        wait = worker.backing_off()
        assert wait == expected if expected else 2.5 <= wait <= 5
    assert "nan s" not in caplog.text and "inf s" not in caplog.text


def in_20_s() -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=20)


STALE = http_date(datetime.now(timezone.utc) - timedelta(days=3))  # an answer a cache kept for three days


@pytest.mark.parametrize("date", [EPOCH_DATE, FAR_DATE, STALE], ids=["1970", "9999", "cached-3-days"])
@pytest.mark.parametrize("ask", ["date", "epoch"])
def test_a_date_or_epoch_is_read_by_this_host_s_clock_when_the_answer_s_date_is_not_believable(date, ask):
    """The vendor asks for 20 s as a ``Retry-After`` date or an epoch ``X-RateLimit-Reset`` (right by this host's
    clock) in an answer whose ``Date`` is more than a day off it: the wait is 20 s, not "now" (the back-off, a
    Date ahead) nor the most it may be (a Date behind)."""
    at = in_20_s()
    asked = {"Retry-After": http_date(at)} if ask == "date" else {"X-RateLimit-Reset": str(int(at.timestamp()))}
    exc, waits = refused({"Date": date, **asked})
    assert 15.0 <= exc.retry_after <= 20.0 and 15.0 <= waits[0] <= 20.0, (exc.retry_after, waits)


def test_a_believable_date_still_decides():
    """A Date an hour behind this host's clock (the host's clock is the wrong one) is the server's: its "Date + 20 s"
    is waited as 20 s."""
    server = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    exc, waits = refused({"Date": http_date(server), "X-RateLimit-Reset": str(int(server.timestamp()) + 20)})
    assert exc.retry_after == 20.0 and waits == [20.0]


def test_a_retry_after_date_without_a_zone_is_read_as_utc_and_one_parser_reads_both_headers():
    """A ``Retry-After`` date is parsed by the ``Date`` header's parser (:func:`server_date`), with one difference:
    a date without a zone (HTTP's asctime form, or ``-0000``) is UTC, as HTTP reads every date, so the server's
    "in 30 s" waits 30 s; a ``Date`` without its zone still moves no run start."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp()
    for value in ("Thu Jan  1 12:00:30 2026", "Thu, 01 Jan 2026 12:00:30 -0000", "Thu, 01 Jan 2026 12:00:30 GMT",
                  "Thu, 01 Jan 2026 13:00:30 +0100"):
        assert retry_after_seconds(value, now) == 30, value
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0  # past: the back-off decides
    assert retry_after_seconds("Fri, 31 Dec 9999 23:59:59 -0100", now) is None  # past year 9999: not a date
    assert retry_after_seconds("soon", now) is None
    assert server_date("Thu Jan  1 12:00:30 2026") is None
    assert server_date("Thu, 01 Jan 2026 12:00:30 GMT") == datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
