"""The destination lock an apply holds is refreshed while the apply runs (sync.engine.HeldLock), on SQLite and
PostgreSQL: a run longer than the lock's time to live keeps the next run out; an apply whose lock was taken by
another holder stops starting calls, keeps what it recorded, and leaves the other holder's lock alone.

Real time, short TTLs (1.5 s: refreshed every 0.5 s): a refresh would have to be 1 s late for the first test
to fail with the heartbeat in place; without it, the lock expires after 1.5 s and the second ledger takes it."""

from __future__ import annotations

import logging
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

TTL = 1.5


def changes(n: int) -> tuple[ContactChange, ...]:
    return tuple(ContactChange(f"c{i}@example.com", f"c{i}@example.com", f"C{i}", "A", True, "subscribed",
                               set_fields={"SEGMENT": "A"}) for i in range(n))


def plan_of(n: int) -> Plan:
    return Plan("dest", "mailchimp", changes(n), (), (), {"SEGMENT": "segment"}, 0)


class Paced:
    """A destination whose calls answer one contact every ``pace`` seconds; ``during(i)`` runs before each."""

    def __init__(self, pace: float, during=lambda i: None) -> None:
        self.pace, self.during, self.answered = pace, during, 0

    def prepare(self, managed_tags: Sequence[str], fields: dict, creating=None) -> None:
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
    report = execute_plan(plan_of(25), client, mine, lock_ttl=TTL)  # 2.5 s: five refreshes
    assert report.status == "succeeded" and client.answered == 25
    assert refused == ["busy"] * 25
    assert mine.lock_holder("sync:dest") is None  # released at the end


def summaries(caplog) -> list[str]:
    """The engine's INFO summary lines (``sync <destination> <status>: …``)."""
    return [r.getMessage() for r in caplog.records if r.name == "sync.engine" and "recorded in the ledger only"
            in r.getMessage()]


def test_an_apply_whose_lock_was_taken_stops_keeps_its_outcomes_and_leaves_the_new_holder(ledgers, caplog):
    mine, other = ledgers
    caplog.set_level(logging.INFO, logger="sync.engine")

    def taken_after_the_third(i: int) -> None:
        if i == 3:  # another holder takes the lock (as after this process stalled past the TTL)
            holder = other.lock_holder("sync:dest")
            assert holder and other.release_lock("sync:dest", holder)
            other.acquire_lock("sync:dest", owner="other-host:1:next", ttl_seconds=600)

    client = Paced(0.1, taken_after_the_third)
    with pytest.raises(LockLostError, match="sync:dest"):
        execute_plan(plan_of(40), client, mine, lock_ttl=TTL)  # the loss is seen within 0.5 s
    assert 4 <= client.answered < 40  # stopped: no call after the one that saw the loss
    assert len(mine.load_state("dest")) == client.answered  # every answered call's outcome recorded
    assert other.lock_holder("sync:dest") == "other-host:1:next"  # the new holder's lock is left alone
    run = mine.recent_runs(1)[0]
    assert run["status"] == "failed" and "taken by another holder" in run["error"]
    # review29 #4: the failed run still logs its one summary line, saying it failed and what it did
    assert summaries(caplog) == [f"sync dest failed: 40 changes, {client.answered} ok, 0 failed, 0 skipped, "
                                 "0 recorded in the ledger only (new owner)"]


def test_an_empty_webhook_plan_logs_no_summary_a_sync_does(ledgers, caplog):
    """review29 #4: every webhook batch applies every destination's plan, mostly empty: no "0 changes" line each
    time; a scheduled or manual sync with nothing to do still says so."""
    mine, _ = ledgers
    caplog.set_level(logging.INFO, logger="sync.engine")
    empty = Plan("dest", "mailchimp", (), (), (), {}, 0)
    for _ in range(3):
        assert execute_plan(empty, Paced(0), mine, kind="webhook").status == "succeeded"
    assert summaries(caplog) == []
    execute_plan(empty, Paced(0), mine, kind="sync")
    assert summaries(caplog) == ["sync dest succeeded: 0 changes, 0 ok, 0 failed, 0 skipped, 0 recorded in the "
                                 "ledger only (new owner)"]


def test_a_lost_lock_still_records_the_mailchimp_calls_in_flight(ledgers, mailchimp_fake):
    """Mailchimp sends up to four calls at once: when one answer's report finds the lock lost, the answers of
    the calls already out are recorded too (each contact the fake holds has its outcome in the ledger)."""
    import random

    from connectors.retry import RetryPolicy
    from sync.destinations.mailchimp import MailchimpDestination

    mine, other = ledgers
    dest = MailchimpDestination("mc", "aud1", mailchimp_fake.api_key, api_url=mailchimp_fake.url, timeout=5,
                                max_connections=4, batch_size=5,
                                retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))

    class StolenAfterTheFirstAnswer:
        def prepare(self, managed_tags, fields, creating=None):
            return dest.prepare(managed_tags, fields, creating)

        def apply(self, changes, on_results):
            first = [True]

            def report(results):
                if first[0]:
                    first[0] = False
                    holder = other.lock_holder("sync:dest")
                    other.release_lock("sync:dest", holder)
                    other.acquire_lock("sync:dest", owner="other-host:1:next", ttl_seconds=600)
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:  # until the heartbeat saw it (calls are in flight)
                        try:
                            on_results([])
                        except LockLostError:
                            break
                        time.sleep(0.02)
                on_results(results)

            dest.apply(changes, report)

    plan = Plan("dest", "mailchimp", changes(60), (), (), {"SEGMENT": "segment"}, 0)
    with pytest.raises(LockLostError):
        execute_plan(plan, StolenAfterTheFirstAnswer(), mine, lock_ttl=TTL)
    at_the_esp = {e for e in mailchimp_fake.lists["aud1"].members}
    assert 5 <= len(at_the_esp) < 60  # stopped early
    assert set(mine.load_state("dest")) == at_the_esp  # and every contact made there is in the ledger


class UpsertsHeld:
    """The fake Mailchimp holding every batch upsert's answer until the second one is in and ``on_second`` (run
    then, once) has returned: both connections busy, no answer yet, at a known point."""

    def __init__(self) -> None:
        import threading

        from tests.fakes.mailchimp import FakeMailchimp

        held = self

        class Fake(FakeMailchimp):
            def handle(self, req):
                if req.method == "POST" and req.path == "/3.0/lists/aud1":
                    with held.lock:
                        held.arrived += 1
                        second = held.arrived == 2
                    if second:
                        try:
                            held.on_second()
                        finally:
                            held.gate.set()
                    held.gate.wait(10)
                return super().handle(req)

        self.lock, self.gate, self.arrived, self.on_second = threading.Lock(), threading.Event(), 0, lambda: None
        self.fake = Fake()


def test_no_mailchimp_call_starts_once_a_lost_lock_is_known(ledgers):
    """A lock lost while two calls were out, and known (the heartbeat saw it) before either answered: no further
    call goes, and both answers are recorded. Pins what a pipeline that sends the next ready call before it
    reports an answer must keep (perf30b measured one, BENCHMARKS.md: without asking the engine first it sent
    two calls after the loss)."""
    import random

    from connectors.retry import RetryPolicy
    from sync.destinations.mailchimp import MailchimpDestination

    mine, other = ledgers
    held = UpsertsHeld()
    with held.fake as fake:
        dest = MailchimpDestination("mc", "aud1", fake.api_key, api_url=fake.url, timeout=15, max_connections=2,
                                    batch_size=5, retry=RetryPolicy(attempts=1, sleep=lambda s: None,
                                                                    rng=random.Random(0)))

        class LostWhileTwoCallsAreOut:
            def prepare(self, managed_tags, fields, creating=None):
                return dest.prepare(managed_tags, fields, creating)

            def apply(self, changes, on_results):
                def lose() -> None:  # another holder takes it; the heartbeat sees it (the engine's check says so)
                    other.release_lock("sync:dest", other.lock_holder("sync:dest"))
                    other.acquire_lock("sync:dest", owner="other-host:1:next", ttl_seconds=600)
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        try:
                            on_results([])
                        except LockLostError:
                            return
                        time.sleep(0.02)
                    raise AssertionError("the heartbeat did not see the lock taken")

                held.on_second = lose
                dest.apply(changes, on_results)

        plan = Plan("dest", "mailchimp", changes(30), (), (), {"SEGMENT": "segment"}, 0)
        with pytest.raises(LockLostError):
            execute_plan(plan, LostWhileTwoCallsAreOut(), mine, lock_ttl=TTL)
        assert fake.count("POST", "/lists/aud1") == 2  # the two out when the loss was known; none after it
        assert len(fake.lists["aud1"].members) == 10
        assert set(mine.load_state("dest")) == set(fake.lists["aud1"].members)  # both answers recorded
    assert other.lock_holder("sync:dest") == "other-host:1:next"


@pytest.mark.parametrize("seen_by_the_heartbeat", [False, True])
def test_a_lock_taken_while_the_destination_is_prepared_leaves_the_ledger_as_it_was(ledgers, seen_by_the_heartbeat):
    """prepare, about to create a field the ledger says was pushed (lost in the ESP), announces it; the lock was
    taken meanwhile by another run: this run forgets nothing, starts no call and leaves the other's lock. Not yet
    seen by the heartbeat, the forget's own transaction finds the lock row naming another owner."""
    mine, other = ledgers
    from sync.model import PushedState
    mine.save_states("dest", None, [PushedState(k.key, k.customer_id, frozenset(), {"SEGMENT": "A"})
                                    for k in changes(3)])
    revision, before = mine.state_revision("dest"), mine.load_state("dest")

    class StolenWhilePrepared:
        def prepare(self, managed_tags, fields, creating=None):
            other.release_lock("sync:dest", other.lock_holder("sync:dest"))
            other.acquire_lock("sync:dest", owner="other-host:1:next", ttl_seconds=600)
            if seen_by_the_heartbeat:
                time.sleep(TTL / 3 + 0.3)
            creating(["SEGMENT"])
            return ["SEGMENT"]

        def apply(self, changes, on_results):
            raise AssertionError("no write call after the lock was lost")

    plan = Plan("dest", "mailchimp", tuple(c for c in changes(3)), (), (), {"SEGMENT": "segment"}, revision)
    with pytest.raises(LockLostError, match="sync:dest"):
        execute_plan(plan, StolenWhilePrepared(), mine, lock_ttl=TTL)
    assert (mine.state_revision("dest"), mine.load_state("dest")) == (revision, before)
    assert other.lock_holder("sync:dest") == "other-host:1:next"


def _in_another_pid_namespace(url: str, code: str, pid: int):
    """A child running ``code`` (with ``led``, a Ledger on ``url``) as PID ``pid`` of a PID namespace of its own,
    as a container given this machine's host name runs; None where namespaces cannot be made (no root)."""
    import os
    import shutil
    import subprocess
    import sys

    if not shutil.which("unshare"):
        return None
    child = ("import os, sys, time; from sync.ledger import Ledger; "
             "led = Ledger.connect(os.environ['RFMSYNC_TEST_LEDGER']); " + code + "; print('ready', flush=True); "
             "sys.stdin.read()")
    # the shell sets the namespace's next PID, then forks the child (its trailing ':' keeps it from exec'ing)
    script = f"echo {pid - 1} > /proc/sys/kernel/ns_last_pid && {sys.executable} -c \"{child}\"; :"
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
                            env={**os.environ, "RFMSYNC_TEST_LEDGER": url}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.strip() == "ready":
            return proc, lines
        lines.append(line.strip())
    proc.wait(10)
    return None  # unshare refused (not root, or no user namespaces): nothing to test here


def test_a_lock_held_in_another_pid_namespace_of_this_host_name_is_not_taken_over(ledger_url):
    """Two containers given one host name count PIDs apart: the holder's PID dead here says nothing about it."""
    import os

    from sync.engine import destination_lock

    pid = next(p for p in range(30_000, 32_000) if not os.path.exists(f"/proc/{p}"))  # dead in this namespace
    started = _in_another_pid_namespace(ledger_url, "print(led.acquire_lock('sync:dest', ttl_seconds=600))", pid)
    if started is None:
        pytest.skip("needs `unshare --pid` (root) to run a process in a second PID namespace")
    proc, printed = started
    try:
        assert printed[-1].split(":")[1] == str(pid)  # the holder's PID in its own namespace
        led = Ledger.connect(ledger_url)
        try:
            with pytest.raises(LockBusyError):
                with destination_lock(led, "sync:dest", ttl_seconds=600):
                    pass
        finally:
            led.close()
    finally:
        proc.communicate("", timeout=10)
