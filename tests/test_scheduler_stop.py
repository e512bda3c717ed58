"""A scheduled sync stopped between two apply batches: SIGTERM (a deploy), or its ``schedule`` lock lost while the
process was paused. The apply is real (sync.engine.execute_plan) against a paced fake destination."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from sync.config import Config, ScheduleConfig
from sync.engine import execute_plan
from sync.ledger import Ledger
from sync.serve.metrics import Metrics
from sync.serve.scheduler import CURSOR, RETRY_CURSOR, Retry, Scheduler

try:
    from tests import ledger_fixtures, test_engine_lock
except ImportError:  # tests/ itself on sys.path
    import ledger_fixtures  # type: ignore[no-redef]
    import test_engine_lock  # type: ignore[no-redef]

clock, ledger_url = ledger_fixtures.clock, ledger_fixtures.ledger_url  # fixtures
Paced, plan_of = test_engine_lock.Paced, test_engine_lock.plan_of

CFG = Config(schedule=ScheduleConfig(every="1h"))
FIRE = datetime(2025, 3, 1, 13, 0, tzinfo=timezone.utc)  # the first fire time after the clock fixture's start


def _job(ledger: Ledger, during, answered: list[int]):
    """A scheduled sync's apply of 20 contacts, one per batch; ``during(i)`` runs before batch ``i``."""
    def job():
        client = Paced(0.0, during)
        try:
            return [execute_plan(plan_of(20), client, ledger, kind="scheduled")]
        finally:
            answered.append(client.answered)
    return job


def test_sigterm_stops_a_scheduled_sync_between_batches_and_the_next_start_runs_it_again_uncounted(ledger_url,
                                                                                                   clock, caplog):
    """A deploy stops serve (SIGTERM: the scheduler's stop set) three times in a row while the fire time's sync
    applies: each stops after the batch in hand, records its run ``stopped`` (not failed, not killed), frees both
    locks and keeps what it applied; the next start runs the fire time again, its retries and kills not counted,
    so the fourth run completes it (before: each stop left the run as a kill, and the second kill gave it up)."""
    metrics = Metrics()
    with Ledger.connect(ledger_url, clock=clock) as ledger, caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        sched = Scheduler(CFG, ledger, None, clock=clock, metrics=metrics)  # type: ignore[arg-type]
        clock.advance(hours=1, seconds=5)  # the fire time
        for deploy in range(3):
            if deploy:  # systemd started serve again
                sched = Scheduler(CFG, ledger, None, clock=clock, metrics=metrics)  # type: ignore[arg-type]
            answered: list[int] = []

            def sigterm(i: int) -> None:
                if i == 3:
                    sched.stop.set()

            sched.job = _job(ledger, sigterm, answered)
            assert sched.wake_at() <= clock() and not sched.tick()
            assert answered == [4]  # the batch in hand answered and recorded, no further call
            run = ledger.recent_runs(1)[0]
            assert (run["kind"], run["status"]) == ("scheduled", "stopped")
            assert ledger.lock_holder("sync:dest") is None and ledger.lock_holder("schedule") is None
            pending = Retry.loads(ledger.get_cursor(*RETRY_CURSOR))
            assert pending is not None and (pending.fire, pending.attempt, pending.killed) == (FIRE, 0, 0)
            assert ledger.get_cursor(*CURSOR) is None
            clock.advance(seconds=30)
        assert metrics.scheduled["stopped"] == 3 and not metrics.scheduled.get("killed")
        assert "stopped between two batches (serve is stopping)" in caplog.text
        answered = []
        last = Scheduler(CFG, ledger, None, clock=clock, metrics=metrics,  # type: ignore[arg-type]
                         job=_job(ledger, lambda i: None, answered))
        assert last.tick() and answered == [20]
        assert ledger.get_cursor(*CURSOR) == FIRE.isoformat() and ledger.get_cursor(*RETRY_CURSOR) == ""


def test_a_scheduler_paused_past_its_lock_stops_when_another_process_took_the_lock(ledger_url, clock, caplog):
    """The process is paused (SIGSTOP, a suspended VM) mid-apply longer than the ``schedule`` lock's 15 minutes,
    and another serve takes the lock over and runs the fire time: at the next batch this one refreshes the lock,
    finds it lost, stops with a clear ERROR and leaves the cursors to the new holder (before: it applied on)."""
    with Ledger.connect(ledger_url, clock=clock) as ledger, Ledger.connect(ledger_url, clock=clock) as other, \
            caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        sched = Scheduler(CFG, ledger, None, clock=clock)  # type: ignore[arg-type]
        clock.advance(hours=1, seconds=5)
        answered: list[int] = []

        def paused(i: int) -> None:
            if i == 3:
                clock.advance(minutes=20)  # the pause: the lock lapsed meanwhile
                other.acquire_lock("schedule", owner="web2:7:serve", ttl_seconds=900)
                other.set_cursor(*RETRY_CURSOR, Retry(FIRE, 0, clock(), 1).dumps())  # the new holder's run

        sched.job = _job(ledger, paused, answered)
        assert not sched.tick()
        assert answered == [4]  # the batch in hand, then no further call
        assert ledger.lock_holder("schedule") is not None and "web2:7:serve" in str(ledger.lock_holder("schedule"))
        assert ledger.lock_holder("sync:dest") is None
        assert Retry.loads(ledger.get_cursor(*RETRY_CURSOR)) == Retry(FIRE, 0, clock(), 1)  # untouched
        assert ledger.get_cursor(*CURSOR) is None
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("schedule: the lock was taken by another holder" in m and "paused" in m for m in errors)


def test_a_stop_after_another_destination_failed_first_is_still_a_stop(ledger_url, clock):
    """Two destinations: the first fails for its own reason (its key rejected), then SIGTERM stops the second
    between two batches. ``full_sync`` raises the first failure with the stop among ``other_failures``: the
    fire time stays due as it was (the stopped destination's contacts do not wait for the next day), the run is
    counted stopped; its run row's status is one of ``RUN_STATUSES``. (Before: counted an error, the fire time
    marked done, the retry cleared.)"""
    from dataclasses import replace

    from sync.errors import DestinationConfigError
    from sync.ledger import RUN_STATUSES

    class Rejected(Paced):
        def apply(self, changes, on_results):
            raise DestinationConfigError("Mailchimp 'first': API key rejected (HTTP 401)", status=401)

    metrics = Metrics()
    with Ledger.connect(ledger_url, clock=clock) as ledger:
        sched = Scheduler(CFG, ledger, None, clock=clock, metrics=metrics)  # type: ignore[arg-type]

        def sigterm(i: int) -> None:
            if i == 3:
                sched.stop.set()

        def job():  # what sync.run.full_sync does with two destinations
            failed = []
            for plan, client in ((replace(plan_of(5), destination="first"), Rejected(0.0)),
                                 (plan_of(20), Paced(0.0, sigterm))):
                try:
                    execute_plan(plan, client, ledger, kind="scheduled")
                except Exception as exc:
                    failed.append(exc)
            failed[0].other_failures = failed[1:]
            raise failed[0]

        sched.job = job
        clock.advance(hours=1, seconds=5)
        assert not sched.tick()
        statuses = {r["destination"]: r["status"] for r in ledger.recent_runs(2)}
        assert statuses == {"first": "failed", "dest": "stopped"} and set(statuses.values()) <= set(RUN_STATUSES)
        pending = Retry.loads(ledger.get_cursor(*RETRY_CURSOR))
        assert pending is not None and (pending.fire, pending.attempt, pending.killed) == (FIRE, 0, 0)
        assert ledger.get_cursor(*CURSOR) is None
        assert metrics.scheduled["stopped"] == 1 and metrics.scheduled["error"] == 0


def test_a_stop_before_the_first_batch_at_every_start_is_capped_in_its_own_counter(ledger_url, clock, caplog):
    """SIGTERM at every start before the sync's first batch (a liveness probe killing serve while it pulls, or
    deploys): nothing applied; the stops count in their own counter, not as kills: run again up to 3 times in a
    row, then left to the next fire time with an ERROR saying so; each WARNING says it stopped before its first
    batch (before: counted as kills, given up after two runs with an ERROR blaming 'killed half-way (out of
    memory?)', each WARNING saying 'not counted as a retry or a kill')."""
    metrics = Metrics()
    runs: list[int] = []
    with Ledger.connect(ledger_url, clock=clock) as ledger, caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        sched = Scheduler(CFG, ledger, None, clock=clock, metrics=metrics)  # type: ignore[arg-type]
        clock.advance(hours=1, seconds=5)  # the fire time
        for start in range(4):
            if start:  # systemd started serve again
                sched = Scheduler(CFG, ledger, None, clock=clock, metrics=metrics)  # type: ignore[arg-type]
            sched.stop.set()  # SIGTERM came while it pulled: its first batch is not started
            sched.job = _job(ledger, lambda i: None, runs)
            assert not sched.tick()
            clock.advance(seconds=30)
        assert runs == [0, 0, 0]  # run three times, never a batch
        assert metrics.scheduled["stopped"] == 3 and metrics.scheduled["stopped_early"] == 1
        assert not metrics.scheduled.get("killed")
        texts = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert sum("stopped before its first batch (serve is stopping; nothing applied)" in t for t in texts) == 3
        assert any(r.levelno == logging.ERROR and "stopped before its first batch 3 times in a row" in r.getMessage()
                   for r in caplog.records)
        assert not any("kill" in t and "out of memory" in t for t in texts)
        assert ledger.get_cursor(*CURSOR) == FIRE.isoformat() and ledger.get_cursor(*RETRY_CURSOR) == ""
