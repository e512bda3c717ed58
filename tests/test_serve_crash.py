"""`rfmsync serve`'s parts killed half-way (kill -9 of a real process) and run twice at once."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from connectors.errors import TransientError
from connectors.records import Consent, Contact
from sync.config import Config, ScheduleConfig
from sync.engine import destination_lock
from sync.ledger import Ledger
from sync.ledger.codec import encode_records
from sync.serve.metrics import Metrics
from sync.serve.scheduler import RETRY_CURSOR, Retry, Scheduler
from sync.serve.worker import Worker

try:
    from tests import ledger_fixtures
except ImportError:  # tests/ itself on sys.path
    import ledger_fixtures  # type: ignore

child_killed_after = ledger_fixtures.child_killed_after
clock, ledger_url = ledger_fixtures.clock, ledger_fixtures.ledger_url  # fixtures

FIRE = datetime(2025, 3, 1, 13, 0, tzinfo=timezone.utc)

# a serve process whose scheduled sync (fire time 13:00) is running, held inside the job, when it is killed
_SCHEDULER_IN_A_RUN = """
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from sync.config import Config, ScheduleConfig
from sync.serve.scheduler import Scheduler
start = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
running = threading.Event()
def job():
    running.set()
    threading.Event().wait()  # the sync is under way
sched = Scheduler(Config(schedule=ScheduleConfig(every="1h")), led, None, clock=lambda: start, job=job)
threading.Thread(target=sched.tick, args=(start + timedelta(hours=1, seconds=5),), daemon=True).start()
assert running.wait(30)
"""


def test_a_scheduled_sync_killed_half_way_runs_again_when_serve_restarts(ledger_url, clock):
    """A nightly sync killed in the middle (OOM, kill -9) is run again by the restarted serve, not a day later; a
    run that ended leaves nothing to run again."""
    cfg = Config(schedule=ScheduleConfig(every="1h"))
    with child_killed_after(ledger_url, _SCHEDULER_IN_A_RUN):
        pass  # killed while its run holds the schedule lock
    runs: list[str] = []
    clock.now = FIRE + timedelta(seconds=30)  # systemd restarts serve
    with Ledger.connect(ledger_url, clock=clock) as ledger:
        restarted = Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append("restarted"))  # type: ignore
        assert restarted.next_fire == FIRE + timedelta(hours=1)
        assert restarted.retry is not None and restarted.retry.fire == FIRE and restarted.wake_at() <= clock()
        assert restarted.tick() and runs == ["restarted"]  # the killed process's lock is taken over
        assert ledger.get_cursor(*RETRY_CURSOR) == "" and ledger.get_cursor("schedule", "last_fire") == FIRE.isoformat()
        again = Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append("again"))  # type: ignore
        assert again.retry is None and not again.tick() and runs == ["restarted"]


def test_a_sync_killed_on_a_host_since_renamed_is_run_again_once_its_lock_lapses(ledger_url, clock, caplog):
    """The killed serve ran under another host name (the host renamed, a container restarted in a new PID
    namespace): the restarted serve cannot tell its holder of the ``schedule`` lock dead, and skips the re-run at
    first. It looks again, and runs it once the lock lapsed (15 minutes, the lock refreshed while held), not 6
    hours later: before, the re-run was dropped and the fire times of the lock's 6 h TTL skipped."""
    renamed = "import socket\nsocket.gethostname = lambda: 'web1-before-rename'\n"  # the host's name back then
    with child_killed_after(ledger_url, renamed + _SCHEDULER_IN_A_RUN):
        pass
    runs: list[str] = []
    cfg = Config(schedule=ScheduleConfig(every="1h"))
    now = FIRE + timedelta(seconds=30)
    clock.now = datetime.now(timezone.utc)  # the ledger's clock (the lock's expiry), from the kill on
    with Ledger.connect(ledger_url, clock=clock) as ledger, caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        restarted = Scheduler(cfg, ledger, None, clock=lambda: now, job=lambda: runs.append("re-run"))  # type: ignore
        assert not restarted.tick() and runs == []  # the lock is the dead holder's
        assert "another process is running it; looking again at" in caplog.records[-1].getMessage()
        clock.advance(minutes=16)
        now += timedelta(minutes=16)
        assert restarted.tick() and runs == ["re-run"]
        assert ledger.get_cursor(*RETRY_CURSOR) == "" and ledger.get_cursor("schedule", "last_fire") == FIRE.isoformat()



def test_a_second_serve_looking_again_during_a_long_run_counts_one_skip_per_fire_time(ledger_url, clock, caplog):
    """Another serve (alive, same ledger) runs a long sync of the fire time and holds the ``schedule`` lock: this
    one looks again every 5 minutes; the fire time is one skip in the metrics and one INFO line, not one per look
    (before: 24 for a 2 h sync)."""
    cfg = Config(schedule=ScheduleConfig(every="1h"))
    metrics = Metrics()
    with Ledger.connect(ledger_url, clock=clock) as ledger, Ledger.connect(ledger_url, clock=clock) as other, \
            caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        sched = Scheduler(cfg, ledger, None, clock=clock, job=lambda: None, metrics=metrics)  # type: ignore
        other.acquire_lock("schedule", owner="web2:7:serve", ttl_seconds=7200)  # the other serve's long run
        clock.advance(hours=1)
        for _ in range(3):
            assert not sched.tick() and sched.retry is not None
            clock.now = sched.retry.at
        assert metrics.scheduled["skipped"] == 1
        assert sum("another process is running it" in r.getMessage() for r in caplog.records
                   if r.levelno == logging.INFO) == 1
        other.set_cursor("schedule", "last_fire", sched.retry.fire.isoformat())  # the other serve's run ends
        assert other.release_lock("schedule", owner="web2:7:serve")
        assert not sched.tick() and sched.retry is None  # the look-again finds it done: still the one skip
        assert metrics.scheduled["skipped"] == 1 and not metrics.scheduled.get("ok")


# a serve restarted after the kill above: it runs the killed sync again at once, and that run is killed too
_SCHEDULER_RERUNS = """
import threading
from datetime import datetime, timedelta, timezone
from sync.config import Config, ScheduleConfig
from sync.serve.scheduler import Scheduler
now = datetime(2025, 3, 1, 13, 1, tzinfo=timezone.utc)
running = threading.Event()
def job():
    running.set()
    threading.Event().wait()  # the re-run is under way (and runs out of memory again)
sched = Scheduler(Config(schedule=ScheduleConfig(every="1h", retries=3)), led, None, clock=lambda: now, job=job)
threading.Thread(target=sched.tick, daemon=True).start()
assert running.wait(30)
"""


def test_a_scheduled_sync_that_kills_its_process_is_run_again_once_not_at_every_restart(ledger_url, clock, caplog):
    """The OOM killer ends the sync, systemd restarts serve, which runs the sync again at once: killed again. The
    next serve does not run it a third time (a crash loop with the webhook intake down each time): it logs an
    ERROR, counts it, and waits for the next fire time. The re-run did not use up one of the ``retries``."""
    with child_killed_after(ledger_url, _SCHEDULER_IN_A_RUN):
        pass  # the fire time's run, killed
    with Ledger.connect(ledger_url, clock=clock) as ledger:
        assert Retry.loads(ledger.get_cursor(*RETRY_CURSOR)) == Retry(FIRE, 0, FIRE - timedelta(hours=1), killed=1)
    with child_killed_after(ledger_url, _SCHEDULER_RERUNS):
        pass  # its re-run, killed too
    runs: list[str] = []
    metrics = Metrics()
    clock.now = FIRE + timedelta(minutes=2)  # the third start
    cfg = Config(schedule=ScheduleConfig(every="1h", retries=3))
    with Ledger.connect(ledger_url, clock=clock) as ledger, caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        third = Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append("third"), metrics=metrics)  # type: ignore
        assert not third.tick() and runs == []
        assert metrics.scheduled["killed"] == 1 and sum(metrics.scheduled.values()) == 1
        ours = [r for r in caplog.records if r.name == "sync.serve.scheduler"]
        assert [r.levelname for r in ours] == ["ERROR"] and "killed half-way 2 times" in ours[0].getMessage()
        assert ledger.get_cursor(*RETRY_CURSOR) == ""
        fourth = Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append("fourth"))  # type: ignore
        assert fourth.retry is None and not fourth.tick() and runs == []
        assert fourth.tick(FIRE + timedelta(hours=1)) and runs == ["fourth"]  # the next fire time runs


def test_the_re_run_of_a_killed_sync_does_not_use_up_a_retry(ledger_url, clock, caplog):
    with child_killed_after(ledger_url, _SCHEDULER_IN_A_RUN):
        pass

    def job():
        raise TransientError("the CRM answers 503")

    clock.now = FIRE + timedelta(seconds=30)
    cfg = Config(schedule=ScheduleConfig(every="1h", retries=3, retry_wait="10m"))
    with Ledger.connect(ledger_url, clock=clock) as ledger, caplog.at_level(logging.INFO, "sync.serve.scheduler"):
        sched = Scheduler(cfg, ledger, None, clock=clock, job=job)  # type: ignore
        assert not sched.tick()
        started, failed = [r.getMessage() for r in caplog.records if r.name == "sync.serve.scheduler"]
        assert "retry 1 of" not in started and "run again: the run before it was killed" in started
        assert sched.retry == Retry(FIRE, 1, clock() + timedelta(minutes=10))  # the first retry is still to come
        assert "retry 1 of 3 at" in failed


def test_while_a_scheduled_sync_runs_the_ledger_names_it_and_a_second_process_skips_it(ledger_url, clock):
    """The mark left during a run is the run itself: another serve (alive, same ledger) that reads it while the run
    holds the schedule lock skips it, and the run clears it when it ends, failed or not."""
    cfg = Config(schedule=ScheduleConfig(every="1h"))
    seen: list[Retry | None] = []
    with Ledger.connect(ledger_url, clock=clock) as ledger, Ledger.connect(ledger_url, clock=clock) as other:
        def job():
            seen.append(Retry.loads(ledger.get_cursor(*RETRY_CURSOR)))
            second = Scheduler(cfg, other, None, clock=clock, job=lambda: seen.append(None))  # type: ignore
            seen.append(second.retry)
            seen.append(second.tick())  # the schedule lock is held: skipped
            raise RuntimeError("a bug")

        sched = Scheduler(cfg, ledger, None, clock=clock, job=job)  # type: ignore
        clock.now = FIRE
        assert not sched.tick()
        assert seen == [Retry(FIRE, 0, FIRE, killed=1), Retry(FIRE, 0, FIRE, killed=1), False]
        assert ledger.get_cursor(*RETRY_CURSOR) == "" and sched.retry is None  # not transient: nothing planned


def test_a_batch_waiting_for_a_long_sync_is_never_given_up(tmp_path, mailchimp_fake, monkeypatch):
    """A cron `rfmsync sync` (another process) holds the destination for longer than the worker's retries last (a
    first sync of a big audience): the webhook batch waits in the queue, its claims not counted as failures, and is
    applied once the sync ends. Before, after ``max_attempts`` claims it was marked failed and its customers' move
    waited for the next full sync, or for someone to requeue it."""
    from sync.config import load_config
    from sync.ledger import ledger_url as url_of, open_ledger
    from sync.serve.resync import resync
    from sync.serve.worker import Worker
    from sync.settings import load_settings
    from tests.test_worker import AS_OF, DEST, churned_contact, make_shop, queue_order, run_full_sync

    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=60)
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        email, cid = churned_contact(ledger)
        queue_order(ledger, "W-LONG", cid)
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF, max_attempts=2,
                        process=lambda b: resync(cfg, ledger, settings, b.orders, b.contacts, as_of=AS_OF,
                                                 lock_wait_seconds=0.1))
        hold = f"led.acquire_lock('sync:{DEST}', owner=default_owner(), ttl_seconds=3600)"
        with child_killed_after(url_of(cfg, settings), hold):  # the cron sync, alive and applying
            for _ in range(4):
                assert worker.process_batch() == 0
            assert ledger.event_counts()["queued"] == 1 and ledger.event_counts()["failed"] == 0
            assert "Winback" in mailchimp_fake.tags_of(email)
        assert worker.drain() == 1 and "Winback" not in mailchimp_fake.tags_of(email)  # the sync is gone
        assert worker.metrics.events["failed"] == 0


def test_a_released_claim_is_not_counted_a_failed_one_is(ledger_url):
    with Ledger.connect(ledger_url) as ledger:
        ledger.enqueue_event("generic", "k1", "{}")
        for _ in range(3):  # waited for another run three times: still the first attempt
            (ev,) = ledger.claim_events("w", limit=10)
            assert ev.attempts == 1
            assert ledger.release_events([ev.id], "LockBusyError: sync:x is already running", worker="w") == 1
        assert ledger.event_counts()["queued"] == 1
        (ev,) = ledger.claim_events("w", limit=10)
        assert ledger.fail_events([ev.id], "HTTP 503", max_attempts=2, worker="w") == 1  # a real failure counts
        (ev,) = ledger.claim_events("w", limit=10)
        assert ev.attempts == 2 and ledger.fail_events([ev.id], "HTTP 503", max_attempts=2, worker="w") == 1
        assert ledger.event_counts()["failed"] == 1
        assert ledger.release_events([ev.id], "late", worker="w") == 0  # only events being processed go back


def test_a_batch_waiting_for_a_lock_that_never_frees_is_given_up_naming_the_holder(ledger_url, clock, caplog):
    """A paused `rfmsync sync` holds the destination for ever: the webhook batch is released every two minutes, a
    WARNING every tenth time, and given up (failed, kept) once its oldest event waited the limit, naming the lock's
    holder; it is not released for ever, invisibly."""
    with Ledger.connect(ledger_url, clock=clock) as ledger, caplog.at_level(logging.INFO, "sync.serve.worker"):
        ledger.acquire_lock("sync:mailchimp", owner="paused-sync:4242", ttl_seconds=10**7)
        ledger.enqueue_event("generic", "k1", encode_records(contacts=[Contact("C1", marketing_consent=Consent.NO)]))

        def process(batch):
            with destination_lock(ledger, "sync:mailchimp"):
                raise AssertionError("the lock is held by the paused sync")

        worker = Worker(Config(), ledger, None, process=process, now=clock, stale_after=30,  # type: ignore[arg-type]
                        give_up_waiting_after=3600)
        for _ in range(29):  # 58 minutes: still waiting
            clock.advance(minutes=2)
            assert worker.process_batch() == 0
        assert ledger.event_counts()["queued"] == 1 and worker.metrics.events.get("failed", 0) == 0
        warnings = [r for r in caplog.records if r.name == "sync.serve.worker" and r.levelname == "WARNING"]
        assert len(warnings) == 2 and "released 20 times" in warnings[-1].getMessage()
        clock.advance(minutes=2)
        assert worker.process_batch() == 0
        assert ledger.event_counts()["failed"] == 1 and worker.metrics.events["failed"] == 1
        (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert "paused-sync:4242" in error and "given up" in error
        ledger.release_lock("sync:mailchimp", "paused-sync:4242")
        assert ledger.requeue_failed_events() == 1  # kept: replayed once the sync is dealt with


def test_a_waiting_batch_gives_up_only_the_events_that_waited_the_limit(ledger_url, clock):
    """A batch re-formed at each claim takes newer events along: an event accepted a second before the oldest one
    reached the limit is released to wait on, not failed with it; but a newer event of the same record is given up
    with the old one (requeued alone later, the old one would be merged after it and undo it)."""
    with Ledger.connect(ledger_url, clock=clock) as ledger:
        ledger.acquire_lock("sync:mailchimp", owner="paused-sync:4242", ttl_seconds=10**7)

        def process(batch):
            with destination_lock(ledger, "sync:mailchimp"):
                raise AssertionError("the lock is held by the paused sync")

        worker = Worker(Config(), ledger, None, process=process, now=clock, stale_after=30,  # type: ignore[arg-type]
                        give_up_waiting_after=3600)
        ledger.enqueue_event("generic", "old", encode_records(contacts=[Contact("C1")]))
        clock.advance(minutes=59, seconds=59)
        ledger.enqueue_event("generic", "fresh", encode_records(contacts=[Contact("C2")]))
        ledger.enqueue_event("generic", "same", encode_records(contacts=[Contact("C1", marketing_consent=Consent.NO)]))
        clock.advance(seconds=1)
        assert worker.process_batch() == 0
        assert ledger.event_counts()["failed"] == 2 and ledger.event_counts()["queued"] == 1
        (left,) = ledger.claim_events("w", limit=10)
        assert left.dedupe_key == "fresh"


def test_a_batch_hands_each_record_the_time_its_own_event_was_accepted(ledger_url, clock):
    """The age the order store notes for a webhook record (merge_staged) is its own event's, the last one holding
    it, not the batch's newest: a newer event a re-claimed batch took along does not age the records waiting."""
    from decimal import Decimal

    from connectors.records import Order

    with Ledger.connect(ledger_url, clock=clock) as ledger:
        seen = []
        worker = Worker(Config(), ledger, None, process=seen.append, now=clock)  # type: ignore[arg-type]
        at = datetime(2025, 6, 1, tzinfo=timezone.utc)
        ledger.enqueue_event("generic", "e1", encode_records(orders=[Order("O1", "C1", at, Decimal("5"))]))
        clock.advance(minutes=30)
        ledger.enqueue_event("generic", "e2", encode_records(orders=[Order("O2", "C2", at, Decimal("5"))],
                                                             contacts=[Contact("C2")]))
        clock.advance(minutes=30)
        ledger.enqueue_event("generic", "e3", encode_records(orders=[Order("O1", "C1", at, Decimal("7"))]))
        assert worker.process_batch() == 3
        (e1, e2, e3), = [sorted(ev.received_at for ev in b.events) for b in seen]
        assert seen[0].ages == {("order", "O1"): e3, ("order", "O2"): e2, ("contact", "C2"): e2}
        assert e1 < e2 < e3


_READING_IN_SCRATCH = """
from sync.store.scratch import scratch_dir
reading = scratch_dir()
folder = reading.__enter__()
(folder / "orders.utf8.csv").write_bytes(b"x" * 1_000_000)  # the UTF-8 copy of a cp1251 export, half written
print(folder, flush=True)
"""


def test_the_scratch_copy_of_an_ingest_killed_half_way_is_removed_by_the_next_one(tmp_path, monkeypatch):
    """An ingest killed while it reads (the OOM killer on a big cp1251 export, systemd restarting it in a loop) left
    its UTF-8 copy of the export in the temp folder every time; the next ingest removes it, and nobody else's."""
    import tempfile

    from sync.store.scratch import scratch_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the child's temp folder too
    with child_killed_after(f"sqlite:///{tmp_path / 'l.db'}", _READING_IN_SCRATCH) as printed:
        (left,) = (Path(line) for line in printed)
        other = tmp_path / "rfmsync-not-ours"  # another version's, or another tool's: no owner noted
        other.mkdir()
    assert left.is_dir() and left.parent == tmp_path
    with scratch_dir() as mine:
        assert not left.exists() and other.is_dir()
        with scratch_dir() as second:  # a live process's folder (this one's) stays
            assert mine.is_dir() and second != mine
    assert not mine.exists()


def test_the_scratch_sweep_does_not_follow_or_claim_to_remove_a_link(tmp_path, caplog):
    """A link named like a scratch folder, to a folder whose note names a dead process of this host: the sweep
    leaves both alone, and says nothing was removed (it logged "removed" at every ingest, though nothing was)."""
    import subprocess
    import sys

    from sync.store.scratch import _owner, sweep_scratch

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("x", encoding="utf-8")
    pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                         text=True, check=True).stdout.strip()
    host, namespace = (_owner(os.getpid()) or "").split()[:2]
    (victim / ".owner").write_text(f"{host} {namespace} {pid} 1", encoding="utf-8")  # a dead process's note
    (tmp_path / "rfmsync-link").symlink_to(victim)
    with caplog.at_level(logging.INFO, "sync.store.scratch"):
        assert sweep_scratch(tmp_path) == []
    assert "removed" not in caplog.text
    assert (tmp_path / "rfmsync-link").is_symlink() and sorted(os.listdir(victim)) == [".owner", "keep.txt"]
