"""A ledger written before the sync/ledger/ split opens unchanged, and a ledger reopens with everything in it.

The schema and its migrations did not change with the split (version 5); these tests hold the code to that: a
version 5 ledger runs only the steps added since (6: an index on pushed_state) and reads back unchanged.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from sync.ledger import Ledger
from sync.ledger.schema import LATEST_VERSION, MIGRATIONS
from sync.model import ItemResult, PushedState

try:
    from tests.ledger_fixtures import Clock, clock, ledger_url, open_ledger  # noqa: F401
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import Clock, clock, ledger_url, open_ledger  # type: ignore # noqa: F401

DUMP = Path(__file__).parent / "data" / "ledger_v5_before_split.sql"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_a_ledger_written_before_the_split_opens_without_migrating_and_reads_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rfmsync.db"
    with sqlite3.connect(path) as con:
        con.executescript(DUMP.read_text(encoding="utf-8"))
    later = T0 + timedelta(minutes=2)  # the other host's lease (300 s) still runs
    with caplog.at_level(logging.INFO, logger="sync.ledger"), \
            Ledger.connect(f"sqlite:///{path}", clock=lambda: later) as led:
        assert led.schema_version() == LATEST_VERSION >= 5
        # only the steps added after the split run (6: an index for the webhook resync's keyed reads)
        steps = [r.getMessage() for r in caplog.records if "migrating schema" in r.getMessage()]
        assert steps == [f"ledger: migrating schema to version {v.version} ({v.description})"
                         for v in MIGRATIONS if v.version > 5]

        state = led.load_state("mailchimp-main")
        assert state["ann@example.com"] == PushedState("ann@example.com", "c1", frozenset({"VIP", "rfm:Best active"}),
                                                       {"AOV": "42.50", "RFM_SCORE": 555}, True)
        assert state["bob@example.com"].exists is False and state["bob@example.com"].fields == {"CHURN": 0.25}
        assert led.state_revision("mailchimp-main") == 1
        (run,) = led.recent_runs()
        assert (run["status"], run["counts"], run["error"]) == ("partial", {"customers": 3, "failed": 1},
                                                               "1 item failed")
        assert run["started_at"] == T0 and led.last_run_counts("mailchimp-main", "customers") == run["counts"]
        (failure,) = led.pending_failures()
        assert (failure["key"], failure["op"], failure["attempts"]) == ("eve@example.com", "tag:add", 1)
        assert led.get_cursor("shopify", "all") == "2025-03-01T11:00:00+00:00"
        assert led.lock_holder("schedule") == "otherhost:1234:abcd"
        assert led.event_counts() == {"queued": 1, "processing": 1, "done": 0, "failed": 0}
        # still deduplicated: the same delivery again (its payload is the old row's)
        assert led.enqueue_event("generic", "order:1", '{"orders":[],"contacts":[]}') is False

        # and it keeps working: the next writes land next to the old rows
        run_id = led.start_run("sync", "mailchimp-main")
        assert run_id == 2
        led.save_states("mailchimp-main", run_id, [PushedState("cy@example.com", "c3", frozenset({"VIP"}), {}, True)])
        led.record_results("mailchimp-main", run_id, [ItemResult("eve@example.com", "tag:add", True)])
        led.finish_run(run_id, "succeeded", {"customers": 4})
        (event,) = led.claim_events("w", limit=5)  # the other host's claim is fresh: only the queued one
        assert event.dedupe_key == "order:2" and event.attempts == 1
        assert led.state_revision("mailchimp-main") == 2 and not led.pending_failures()


def test_a_ledger_reopens_with_everything_written_through_each_part(
        open_ledger: Callable[..., Ledger], ledger_url: str, caplog: pytest.LogCaptureFixture) -> None:
    first = open_ledger()
    run_id = first.runs.start_run("pull")
    first.cursors.set_cursor("retailcrm", "orders", "2025-02-28T00:00:00Z")
    first.state.save_states("sendgrid", run_id, [PushedState("ann@example.com", "c1", frozenset({"rfm-vip"}),
                                                             {"score": 5}, True)])
    first.failures.record_results("sendgrid", run_id, [ItemResult("bob@example.com", "list:add", False, "400")])
    first.runs.finish_run(run_id, "succeeded", {"orders": 7})
    token = first.locks.acquire_lock("sync:sendgrid", owner="h:1:x")
    first.queue.enqueue_events([("shopify", "order:9", "{}")])
    first.close()

    with caplog.at_level(logging.INFO, logger="sync.ledger"):
        again = open_ledger()
    assert not [r for r in caplog.records if "migrat" in r.getMessage()]
    assert again.schema_version() == LATEST_VERSION
    assert again.get_cursor("retailcrm", "orders") == "2025-02-28T00:00:00Z"
    assert again.load_state("sendgrid")["ann@example.com"].tags == frozenset({"rfm-vip"})
    assert [f["key"] for f in again.pending_failures("sendgrid")] == ["bob@example.com"]
    assert again.get_run(run_id)["counts"] == {"orders": 7}  # type: ignore[index]
    assert again.lock_holder("sync:sendgrid") == token
    assert again.queue_depth() == 1 and again.claim_events("w")[0].dedupe_key == "order:9"
