"""Bitrix24's method block (sources.md §3.3: a method whose execution time passes 480 s within 10 minutes is
blocked for 10 minutes, HTTP 429 with ``operating_reset_at``) outlasts the retry budget (120 s): the pull stops at
once keeping nothing (the saved cursor stays), names the method and when it resets, exits 75 (try later), and the
pull after the reset reads everything, each record once."""

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

from .test_bitrix24 import CODE, HOOK, T0, FakeBitrix24, make_source, rsps  # noqa: F401 (the fixture)
from .test_cli_pull import run


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
    assert again.exit_code == 0 and "pulled 1 orders" in again.output, again.output


def cursor(config) -> str | None:
    with Ledger.connect(f"sqlite:///{config.parent / 'rfmsync.db'}") as ledger:
        return ledger.get_cursor("bitrix24", "all")
