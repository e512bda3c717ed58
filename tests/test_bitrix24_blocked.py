"""Bitrix24's method block (sources.md §3.3: a method whose execution time passes 480 s within 10 minutes is
blocked for 10 minutes, HTTP 429 with ``operating_reset_at``) outlasts the retry budget (120 s): the pull stops at
once keeping nothing (the saved cursor stays), names the method and when it resets, exits 75 (try later), and the
pull after the reset reads everything, each record once. Before it comes to that, every answer's ``time.operating``
paces the pull: near the limit it waits for the window (connectors.bitrix24_pace), so a long backfill completes."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import duckdb
import pytest

from connectors.errors import RetryLaterError
from sync.cli.main import exit_code
from sync.ledger import Ledger
from sync.pipeline import pull_into
from sync.store import open_store

from .test_bitrix24 import CODE, HOOK, T0, FakeBitrix24, make_source, product_row, rsps  # noqa: F401 (the fixture)
from .test_cli_pull import run
from .test_retry_after_bounds import clock, ledger_url, scheduled  # noqa: F401 (fixtures)


def block(reset_at: float | None) -> tuple[int, dict, str]:
    """The 429 of a blocked method, as the portal answers it (every answer's ``time`` carries
    ``operating_reset_at``, Unix seconds)."""
    timing = {"start": time.time(), "finish": time.time(), "duration": 0.01, "operating": 480.7}
    if reset_at is not None:
        timing["operating_reset_at"] = int(reset_at)
    return 429, {"Content-Type": "application/json"}, json.dumps({
        "error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit.",
        "time": timing})


def stored(con) -> list[tuple[str, str]]:
    return con.execute("SELECT order_id, status FROM orders ORDER BY order_id::INT").fetchall()


@pytest.mark.parametrize("told", [True, False], ids=["operating_reset_at", "no_reset_time"])
def test_a_blocked_method_stops_the_pull_at_once_and_the_pull_after_the_reset_reads_everything_once(rsps, told):
    fake = FakeBitrix24(rsps)
    rsps.assert_all_requests_are_fired = False  # (no batch: line items off)
    fake.put_contact(1, "a@example.com", at=T0)
    for d in range(1, 121):  # three pages of deals
        fake.put_order(d, 1, "10.00", at=T0)
    reset_at = time.time() + 540
    # after the first page of deals the method is blocked; the portal keeps answering 429 until the reset
    fake.between_pages = lambda: fake.failures.extend([block(reset_at if told else None)] * 20)
    slept: list[float] = []
    with open_store(None) as con:
        with pytest.raises(RetryLaterError) as caught:
            pull_into(con, make_source(sleep=slept.append, line_items=False))
        message = str(caught.value)
        assert "crm.deal.list" in message and "blocked" in message and "OPERATION" not in message
        assert "nothing this pull read was kept" in message  # (incremental.pull_objects' word on it)
        assert len(fake.failures) == 19  # one answer taken, no retry within the run ...
        assert sum(slept) < 1  # ... and no sleep through the block
        assert 530 <= caught.value.retry_after <= (541 if told else 600)  # for serve's scheduler
        assert exit_code(caught.value) == 75  # try later, as a busy lock
        if told:  # the time it names is the reset's
            assert time.strftime("%H:%M", time.gmtime(reset_at)) in message
        assert stored(con) == []  # nothing of the half-read backfill; no cursor to save
        fake.failures.clear()  # the block is over
        result = pull_into(con, make_source(sleep=slept.append, line_items=False))
        assert result.orders == 120 and stored(con) == [(str(d), "completed") for d in range(1, 121)]


def test_a_blocked_method_answered_with_http_200_and_inside_a_batch_stops_the_same(rsps):
    fake = FakeBitrix24(rsps)
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10.00", at=T0)
    fake.batch_failures = ["OPERATION_TIME_LIMIT"] * 10
    with pytest.raises(RetryLaterError, match=r"blocked crm\.deal\.productrows\.get .*about") as caught:
        make_source().pull(duckdb.connect())
    assert len(fake.batches) == 1 and caught.value.retry_after == 600


def test_rfmsync_pull_on_a_blocked_method_exits_75_keeping_the_saved_cursor(rsps, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RFMSYNC_STORE_URL", raising=False)
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", HOOK)
    config = tmp_path / "rfmsync.toml"
    config.write_text('[source]\ntype = "bitrix24"\nline_items = false\n', encoding="utf-8")
    rsps.assert_all_requests_are_fired = False  # (no batch: line items off)
    fake = FakeBitrix24(rsps)
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10.00", at=T0)
    assert run("pull", "--config", str(config)).exit_code == 0
    saved = cursor(config)
    fake.put_order(2, 1, "20.00", at=datetime.now(timezone.utc))
    fake.failures.extend([block(time.time() + 300)] * 20)
    blocked = run("pull", "--config", str(config), "--format", "json")
    assert blocked.exit_code == 75, blocked.output
    assert "blocked crm.contact.list" in blocked.output and CODE not in blocked.output
    assert cursor(config) == saved  # the saved cursor stays: the next pull reads again from it
    fake.failures.clear()
    again = run("pull", "--config", str(config))
    assert again.exit_code == 0 and "pulled 1 order" in again.output, again.output


def cursor(config) -> str | None:
    with Ledger.connect(f"sqlite:///{config.parent / 'rfmsync.db'}") as ledger:
        return ledger.get_cursor("bitrix24", "all")


class BudgetedPortal(FakeBitrix24):
    """A portal that bills each ``crm.deal.list`` page ``cost`` seconds of operating time (told in every answer's
    ``time``, with ``operating_reset_at`` and a ``Date`` on its own clock) and blocks the method once a 10-minute
    window's total passes 480 s, until the window ends. Its clock moves by the source's (injected) sleep only."""

    def __init__(self, rsps, cost: float) -> None:
        super().__init__(rsps)
        self.now, self.cost, self.window, self.operating, self.blocks = time.time(), cost, time.time(), 0.0, 0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def _guard(self, handler):
        inner = super()._guard(handler)

        def callback(request):
            if not request.url.endswith("crm.deal.list.json"):
                return inner(request)
            if self.now >= self.window + 600:  # a new window
                self.window, self.operating = self.now, 0.0
            reset = self.window + 600
            if self.operating > 480:
                self.blocks += 1
                return block(reset)
            status, headers, body = inner(request)
            self.operating += self.cost
            data = json.loads(body)
            data["time"] = {**data["time"], "duration": self.cost, "operating": self.operating,
                            "operating_reset_at": int(reset)}
            date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(self.now))
            return status, {**headers, "Date": date}, json.dumps(data)
        return callback


def test_a_backfill_longer_than_one_operating_window_waits_for_the_windows_and_completes(rsps, caplog):
    # (the review's livelock: 3 pages of crm.deal.list a window, a 10-page backfill; unpaced, every run was blocked
    # at the same page, kept nothing and exited 75, for ever)
    fake = BudgetedPortal(rsps, cost=150)
    rsps.assert_all_requests_are_fired = False  # (no batch: line items off)
    fake.put_contact(1, "a@example.com", at=T0)
    for d in range(1, 501):  # ten pages of deals
        fake.put_order(d, 1, "10.00", at=T0)
    started = fake.now
    with open_store(None) as con, caplog.at_level("WARNING", logger="connectors.bitrix24_pace"):
        result = pull_into(con, make_source(sleep=fake.sleep, line_items=False))
        assert result.orders == 500 and len(stored(con)) == 500  # one run, the whole backfill
    assert fake.blocks == 0  # the block was never reached ...
    waits = [r.getMessage() for r in caplog.records if "crm.deal.list" in r.getMessage()]
    assert len(waits) >= 3 and all("waiting" in w and "480 s" in w for w in waits)  # ... each wait said so ...
    assert all(float(w.split("waiting ")[1].split(" s")[0]) <= 600 for w in waits)  # ... bounded by one window
    assert 3 * 600 <= fake.now - started <= (len(waits) + 1) * 600  # (on the portal's clock)


def test_a_batch_whose_sub_calls_near_the_operating_limit_waits_for_the_window(rsps):
    class Portal(FakeBitrix24):
        def _batch(self, body):
            answer = super()._batch(body)
            for timing in answer["result_time"].values():
                timing.update(operating=470.5, operating_reset_at=int(time.time() + 300))
            return answer

    fake = Portal(rsps)
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10.00", at=T0)
    fake.product_rows[1] = [product_row(1, 7, "Tea", price=10.0)]
    slept: list[float] = []
    make_source(sleep=slept.append).pull(duckdb.connect())
    assert fake.batches and len([s for s in slept if s > 200]) == len(fake.batches)  # a wait after each batch
    assert all(s <= 600 for s in slept)


def test_serves_scheduler_retries_a_blocked_pull_at_the_blocks_reset(rsps, ledger_url, clock):  # noqa: F811
    fake = FakeBitrix24(rsps)
    rsps.assert_all_requests_are_fired = False
    fake.put_contact(1, "a@example.com", at=T0)
    fake.failures.extend([block(time.time() + 540)] * 20)
    with pytest.raises(RetryLaterError) as caught, open_store(None) as con:
        pull_into(con, make_source(line_items=False))
    with Ledger.connect(ledger_url, clock=clock) as ledger:
        sched, ran = scheduled(ledger, clock, caught.value)  # (every hour; retry_wait 1 minute)
        clock.advance(hours=1)
        sched.tick()
        assert ran == [1] and sched.retry is not None
        assert 530 <= (sched.retry.at - clock()).total_seconds() <= 541  # at the reset, not after retry_wait
        clock.advance(seconds=545)
        sched.tick()
        assert ran == [1, 1] and sched.retry is None  # retried then, and it succeeded
