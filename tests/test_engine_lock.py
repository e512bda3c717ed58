"""The destination lock an apply holds is refreshed while the apply runs (sync.engine.HeldLock), on SQLite and
PostgreSQL: a run longer than the lock's time to live keeps the next run out; an apply whose lock was taken by
another holder stops starting calls, keeps what it recorded, and leaves the other holder's lock alone.

Real time, short TTLs (0.9 s: refreshed every 0.3 s): a refresh would have to be 0.6 s late for the first test
to fail with the heartbeat in place; without it, the lock expires after 0.9 s and the second ledger takes it."""

from __future__ import annotations

import time
from typing import Sequence

import pytest

from sync.engine import execute_plan
from sync.errors import LockBusyError, LockLostError
from sync.ledger import Ledger
from sync.model import ContactChange, ItemResult, OnResults
from sync.planning.plan import Plan

try:
    from tests.ledger_fixtures import ledger_url  # noqa: F401
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import ledger_url  # type: ignore # noqa: F401

TTL = 0.9


def changes(n: int) -> tuple[ContactChange, ...]:
    return tuple(ContactChange(f"c{i}@example.com", f"c{i}@example.com", f"C{i}", "A", True, "subscribed",
                               set_fields={"SEGMENT": "A"}) for i in range(n))


def plan_of(n: int) -> Plan:
    return Plan("dest", "mailchimp", changes(n), (), (), {"SEGMENT": "segment"}, 0)


class Paced:
    """A destination whose calls answer one contact every ``pace`` seconds; ``during(i)`` runs before each."""

    def __init__(self, pace: float, during=lambda i: None) -> None:
        self.pace, self.during, self.answered = pace, during, 0

    def prepare(self, managed_tags: Sequence[str], fields: dict) -> None:
        pass

    def apply(self, changes: Sequence[ContactChange], on_results: OnResults) -> None:
        for i, ch in enumerate(changes):
            self.during(i)
            time.sleep(self.pace)
            self.answered += 1
            on_results([ItemResult(ch.key, "upsert", True)])


@pytest.fixture
def ledgers(ledger_url):
    opened = [Ledger.connect(ledger_url), Ledger.connect(ledger_url)]
    yield opened
    for led in opened:
        led.close()


def test_an_apply_longer_than_its_lock_ttl_keeps_the_next_run_out(ledgers):
    mine, other = ledgers
    refused: list[str] = []

    def next_run_tries(i: int) -> None:
        try:
            other.acquire_lock("sync:dest", owner="other-host:1:next", ttl_seconds=TTL)
        except LockBusyError:
            refused.append("busy")
        else:
            refused.append("taken")
            other.release_lock("sync:dest", "other-host:1:next")

    client = Paced(0.1, next_run_tries)
    report = execute_plan(plan_of(25), client, mine, lock_ttl=TTL)  # 2.5 s: nearly three TTLs
    assert report.status == "succeeded" and client.answered == 25
    assert refused == ["busy"] * 25
    assert mine.lock_holder("sync:dest") is None  # released at the end


def test_an_apply_whose_lock_was_taken_stops_keeps_its_outcomes_and_leaves_the_new_holder(ledgers):
    mine, other = ledgers

    def taken_after_the_third(i: int) -> None:
        if i == 3:  # another holder takes the lock (as after this process stalled past the TTL)
            holder = other.lock_holder("sync:dest")
            assert holder and other.release_lock("sync:dest", holder)
            other.acquire_lock("sync:dest", owner="other-host:1:next", ttl_seconds=600)

    client = Paced(0.1, taken_after_the_third)
    with pytest.raises(LockLostError, match="sync:dest"):
        execute_plan(plan_of(40), client, mine, lock_ttl=TTL)  # the loss is seen within 0.3 s
    assert 4 <= client.answered < 40  # stopped: no call after the one that saw the loss
    assert len(mine.load_state("dest")) == client.answered  # every answered call's outcome recorded
    assert other.lock_holder("sync:dest") == "other-host:1:next"  # the new holder's lock is left alone
    run = mine.recent_runs(1)[0]
    assert run["status"] == "failed" and "taken by another holder" in run["error"]
