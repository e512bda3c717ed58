"""The ledger's webhook queue (sync/ledger/queue.py): enqueue, claims, leases, group commit, killed
claimers; on SQLite and (with RFMSYNC_TEST_PG_URL) on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from sync.ledger import Event, Ledger

try:
    from tests.ledger_fixtures import Clock, child_killed_after, clock, dead_owner, ledger, ledger_url, open_ledger  # noqa: F401,E501
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import (Clock, child_killed_after, clock, dead_owner, ledger, ledger_url,  # type: ignore # noqa: F401
                                 open_ledger)

OpenLedger = Callable[..., Ledger]


# -- webhook queue -----------------------------------------------------------------------------


def test_enqueue_dedupes_by_source_and_key(ledger: Ledger) -> None:
    assert ledger.enqueue_event("shopify", "order-1", '{"id": 1}') is True
    assert ledger.enqueue_event("shopify", "order-1", '{"id": 1}') is False  # delivered twice
    assert ledger.enqueue_event("woo", "order-1", "{}") is True  # another source
    [event] = ledger.claim_events("w1", limit=1)
    ledger.complete_events([event.id], worker="w1")
    assert ledger.enqueue_event("shopify", "order-1", '{"id": 1}') is False  # processed already
    assert ledger.event_counts() == {"queued": 1, "processing": 0, "done": 1, "failed": 0}
    assert ledger.queue_depth() == 1
    with pytest.raises(TypeError, match="payload must be a str"):
        ledger.enqueue_event("shopify", "order-2", {"id": 2})  # type: ignore[arg-type]


def test_claim_complete_and_fail_cycle(ledger: Ledger, clock: Clock) -> None:
    for i in range(5):
        ledger.enqueue_event("shopify", f"order-{i}", json.dumps({"i": i}))
    batch = ledger.claim_events("w1", limit=3)
    assert [e.dedupe_key for e in batch] == ["order-0", "order-1", "order-2"]  # oldest first
    assert batch[0] == Event(batch[0].id, "shopify", "order-0", '{"i": 0}', clock(), 1)
    assert ledger.event_counts() == {"queued": 2, "processing": 3, "done": 0, "failed": 0}
    assert ledger.queue_depth() == 5

    assert ledger.complete_events([batch[0].id, batch[1].id], worker="w1") == 2
    assert ledger.fail_events([batch[2].id], "ESP down", worker="w1") == 1
    assert ledger.complete_events([batch[0].id], worker="w1") == 0  # already done: not processing any more
    again = ledger.claim_events("w1", limit=10)
    assert [(e.dedupe_key, e.attempts) for e in again] == [("order-2", 2), ("order-3", 1), ("order-4", 1)]
    assert ledger.claim_events("w2") == []


def test_events_fail_for_good_after_max_attempts_and_can_be_requeued(ledger: Ledger) -> None:
    ledger.enqueue_event("shopify", "poison", "{}")
    for attempt in range(1, 4):
        [event] = ledger.claim_events("w1")
        assert event.attempts == attempt
        ledger.fail_events([event.id], f"boom {attempt}", max_attempts=3, worker="w1")
    assert ledger.event_counts() == {"queued": 0, "processing": 0, "done": 0, "failed": 1}
    assert ledger.claim_events("w1") == [] and ledger.queue_depth() == 0
    assert ledger.requeue_failed_events("shopify") == 1
    [event] = ledger.claim_events("w1")
    assert event.attempts == 1


def test_fails_counts_the_failures_recorded_not_the_claims(ledger: Ledger, clock: Clock) -> None:
    """``attempts`` counts claims; ``fails`` only what :meth:`fail_events` recorded: a claim released (a wait of no
    fault of the event's) or left unsettled by a worker whose lease lapsed (killed) adds none; a requeue resets it."""
    ledger.enqueue_events([("shopify", "bad", "{}"), ("shopify", "good", "{}")])
    bad, good = ledger.claim_events("w1")
    assert (bad.attempts, bad.fails) == (1, 0)
    ledger.fail_events([bad.id], "bad alone", worker="w1")
    ledger.release_events([good.id], "the ESP down", worker="w1")
    bad, good = ledger.claim_events("dead", stale_after=30)  # then killed: its lease lapses
    assert [(e.attempts, e.fails) for e in (bad, good)] == [(2, 1), (1, 0)]
    clock.advance(seconds=60)
    bad, good = ledger.claim_events("w2", stale_after=30)
    assert [(e.attempts, e.fails) for e in (bad, good)] == [(3, 1), (2, 0)]
    ledger.fail_events([bad.id], "bad alone", max_attempts=3, worker="w2")
    assert ledger.requeue_failed_events() == 1
    [bad] = ledger.claim_events("w3")
    assert (bad.attempts, bad.fails) == (1, 0)


def test_an_event_released_with_a_wait_is_not_claimed_before_it_is_over(ledger: Ledger, clock: Clock) -> None:
    """A release with ``wait_seconds`` (a suspect's back-off, a destination's Retry-After): the event stays queued
    (in the depth) but nobody claims it, nor counts it claimable, before the wait is over; its claim is not
    counted; a release without a wait, or a failure, makes it claimable at once again."""
    ledger.enqueue_events([("shopify", "a", "{}"), ("shopify", "b", "{}")])
    first, second = ledger.claim_events("w1")
    assert ledger.release_events([first.id], "503 alone", worker="w1", wait_seconds=600) == 1
    ledger.fail_events([second.id], "bad", worker="w1")
    assert ledger.claimable_count() == 1 and ledger.queue_depth() == 2
    [b] = ledger.claim_events("w2")
    assert b.dedupe_key == "b" and ledger.complete_events([b.id], worker="w2") == 1
    clock.advance(seconds=599)
    assert ledger.claim_events("w2") == [] and ledger.claimable_count() == 0
    clock.advance(seconds=1)
    [again] = ledger.claim_events("w2")
    assert (again.id, again.attempts) == (first.id, 1)
    ledger.release_events([again.id], "busy", worker="w2")  # no wait: claimable at once
    assert [e.id for e in ledger.claim_events("w3")] == [first.id]


def test_stale_processing_events_are_reclaimed(open_ledger: OpenLedger, clock: Clock) -> None:
    crashed, rescuer = open_ledger(), open_ledger()
    crashed.enqueue_event("shopify", "order-1", "{}")
    [event] = crashed.claim_events("crashed-worker", stale_after=300)
    clock.advance(seconds=299)
    assert rescuer.claim_events("rescuer", stale_after=300) == []
    clock.advance(seconds=2)
    [again] = rescuer.claim_events("rescuer", stale_after=300)
    assert (again.id, again.attempts) == (event.id, 2)
    assert rescuer.complete_events([again.id], worker="rescuer") == 1


def _keys(ledger: Ledger) -> list[str]:
    with ledger._db.read() as conn:  # noqa: SLF001 - the rows themselves
        return sorted(conn.exec_driver_sql("SELECT dedupe_key FROM events").scalars())


def test_purge_forgets_old_superseded_done_events_only_in_batches(ledger: Ledger, clock: Clock) -> None:
    """The purge deletes what the dedupe never reads again (a state a later one of its record superseded), done
    more than ``older_than`` ago; never a record's latest event however old (a repeat of it is still a repeat),
    an older intake's content-keyed one, a failed one, nor one queued or processing."""
    done = lambda: ledger.complete_events([e.id for e in ledger.claim_events("w", limit=1000)], worker="w")  # noqa: E731
    for state in ("a", "b", "c"):  # order:1 a → b → c: a and b superseded
        ledger.enqueue_event("shopify", "order:1", state)
        done()
    for i in range(5):  # five records changed once each: five superseded
        ledger.enqueue_event("shopify", f"order:x{i}", "1")
        ledger.enqueue_event("shopify", f"order:x{i}", "2")
    done()
    older = "order:9:" + hashlib.sha256(b"old").hexdigest()[:32]  # an older intake's content key
    ledger.enqueue_event("shopify", older, "old")
    ledger.enqueue_event("shopify", "poison", "p")
    ledger.enqueue_event("shopify", "poison", "q")  # supersedes p (done), q fails
    for e in ledger.claim_events("w", limit=100):
        if e.payload == "q":
            ledger.fail_events([e.id], "bug", max_attempts=1, worker="w")
        else:
            ledger.complete_events([e.id], worker="w")
    ledger.enqueue_event("shopify", "waiting", "w")
    ledger.enqueue_event("shopify", "waiting", "v")  # supersedes a queued event: not done, kept
    clock.advance(days=31)
    ledger.enqueue_event("shopify", "order:2", "a")
    ledger.enqueue_event("shopify", "order:2", "b")
    done()  # order:2's a superseded a day ago only (and the waiting ones are done now)
    before = _keys(ledger)
    assert ledger.purge_events(timedelta(days=30), batch=2) == 2 + 5 + 1
    kept = _keys(ledger)
    assert [k for k in before if k not in kept] == sorted(
        [k for k in before if k.startswith("superseded:") and "order:2@" not in k and "waiting@" not in k])
    assert "order:1" in kept and older in kept and "poison" in kept and "order:2" in kept
    assert ledger.enqueue_event("shopify", "order:1", "c") is False  # its latest state: still a repeat
    assert ledger.enqueue_event("shopify", "order:x3", "2") is False
    assert ledger.enqueue_event("shopify", "poison", "q") is False  # the failed one: kept (and replayable)
    assert ledger.event_counts()["failed"] == 1
    assert ledger.purge_events(timedelta(days=30)) == 0


def test_purge_forgets_old_done_pulls_of_deliveries_too(ledger: Ledger, clock: Clock) -> None:
    """A delivery naming records without their state (Bitrix24's ONCRM* events, amoCRM's leads, Shopify's pull
    topics) queues one pull under a key of its own (Bitrix24: handler, time and id), never superseded: done more than
    ``older_than`` ago it is purged too, or a Bitrix24 shop's queue grows with every delivery. A late replay of a
    purged one queues one more pull (of the source's current state); a recent, queued or failed pull is kept."""
    from connectors.bitrix24_webhooks import webhook_pull_key
    from sync.ledger.codec import encode_records

    def key(ts: int) -> str:  # the key the intake gives a Bitrix24 ONCRMDEALUPDATE delivery (sync/serve/webhooks.py)
        body = f"event=ONCRMDEALUPDATE&data[FIELDS][ID]=42&ts={1765000000 + ts}&event_handler_id=7".encode()
        return "pull:" + webhook_pull_key(body)

    pull = encode_records(pull=True)
    for ts in range(5):
        assert ledger.enqueue_event("bitrix24", key(ts), pull) is True
    ledger.enqueue_event("amocrm", "pull:" + hashlib.sha256(b"leads").hexdigest(), pull)
    ledger.complete_events([e.id for e in ledger.claim_events("w", limit=100)], worker="w")
    ledger.enqueue_event("bitrix24", key(5), pull)
    ledger.fail_events([e.id for e in ledger.claim_events("w")], "down", max_attempts=1, worker="w")
    clock.advance(days=31)
    ledger.enqueue_event("bitrix24", key(6), pull)
    ledger.complete_events([e.id for e in ledger.claim_events("w")], worker="w")  # done a moment ago
    ledger.enqueue_event("bitrix24", key(7), pull)  # still queued
    assert ledger.purge_events(timedelta(days=30), batch=2) == 5 + 1
    assert _keys(ledger) == sorted(key(ts) for ts in (5, 6, 7))
    assert ledger.event_counts() == {"queued": 1, "processing": 0, "done": 1, "failed": 1}
    assert ledger.enqueue_event("bitrix24", key(6), pull) is False  # a retry of a kept one: still a repeat
    assert ledger.enqueue_event("bitrix24", key(0), pull) is True  # a replay a month late: one more pull
    assert ledger.purge_events(timedelta(days=30)) == 0


def test_a_purge_with_nothing_to_purge_takes_no_write_lock(tmp_path: Path, clock: Clock) -> None:
    """Done events that are all kept (each record's latest one, a pull done lately) open no write transaction: the
    hourly pass neither waits for another process's write lock (a long sync's) nor takes the intake's. SQLite:
    another connection holds the write lock, and this ledger waits 0.2 s at most for it."""
    path = tmp_path / "rfmsync.db"
    with Ledger.connect(f"sqlite:///{path}?timeout=0.2", clock=clock) as ledger:
        for i in range(5):
            ledger.enqueue_event("shopify", f"order:{i}", "1")
        ledger.complete_events([e.id for e in ledger.claim_events("w", limit=100)], worker="w")
        clock.advance(days=31)
        ledger.enqueue_event("bitrix24", "pull:7:1765000000:42", "[]")
        ledger.complete_events([e.id for e in ledger.claim_events("w")], worker="w")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            assert ledger.purge_events(timedelta(days=30), batch=2) == 0
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert ledger.event_counts()["done"] == 6


def test_concurrent_workers_never_get_the_same_event(open_ledger: OpenLedger) -> None:
    producer = open_ledger()
    total = 120
    for i in range(total):
        producer.enqueue_event("shopify", f"order-{i}", "{}")
    instances = [open_ledger(clock=lambda: datetime.now(timezone.utc)) for _ in range(2)]
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    holding = threading.Barrier(4)

    def work(name: str, led: Ledger) -> None:
        got = claimed.setdefault(name, [])
        try:
            first = led.claim_events(name, limit=5)
            got.extend(e.id for e in first)
            holding.wait(timeout=30)  # all four hold a claimed batch at the same time here
            led.complete_events([e.id for e in first], worker=name)
            while batch := led.claim_events(name, limit=5):
                got.extend(e.id for e in batch)
                led.complete_events([e.id for e in batch], worker=name)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}", instances[i % 2])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == len(set(every)) == total
    assert all(len(ids) >= 5 for ids in claimed.values())  # every worker got a first batch
    assert producer.event_counts()["done"] == total


# -- group commit, in-process writers, leases, killed claimers and runs -------------------------


def test_enqueue_events_writes_a_group_at_once_and_reports_each_delivery(ledger: Ledger) -> None:
    ledger.enqueue_event("generic", "order:1", "{}")
    got = ledger.enqueue_events([("generic", "order:1", "{}"), ("generic", "order:2", "{}"),
                                 ("generic", "order:2", "{}"), ("shopify", "order:1", "{}")])
    assert got == [False, True, False, True]  # seen before; new; repeated inside the group; another source
    assert ledger.event_counts()["queued"] == 3 and ledger.enqueue_events([]) == []
    with pytest.raises(TypeError, match="payload must be a str"):
        ledger.enqueue_events([("generic", "order:3", {"id": 3})])  # type: ignore[list-item]


def test_event_writer_answers_after_the_commit_and_serves_concurrent_deliveries(open_ledger: OpenLedger) -> None:
    from sync.ledger.writer import EventWriter

    intake, observer = open_ledger(), open_ledger()
    writer = EventWriter(intake)
    results: dict[int, list[bool]] = {}
    seen_committed: list[bool] = []

    def deliver(i: int) -> None:
        items = [("generic", f"order:{i}", "{}"), ("generic", "order:shared", "{}")]
        results[i] = writer.write(items)
        # the answer came only after the commit: another connection sees the row already
        seen_committed.append(observer.enqueue_event("generic", f"order:{i}", "{}") is False)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    writer.close()
    assert all(seen_committed) and len(seen_committed) == 24
    assert all(r[0] is True for r in results.values())
    assert sum(r[1] for r in results.values()) == 1  # the shared order was new exactly once
    assert intake.event_counts()["queued"] == 25
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit([("generic", "late", "{}")])


def test_event_writer_hands_a_ledger_error_to_every_waiting_delivery(tmp_path: Path) -> None:
    from sync.ledger.writer import EventWriter

    led = Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}")
    with sqlite3.connect(tmp_path / "l.db") as raw:
        raw.execute("DROP TABLE events")  # the ledger breaks under the writer
    writer = EventWriter(led)
    futures = [writer.submit([("generic", f"order:{i}", "{}")]) for i in range(5)]
    for fut in futures:
        with pytest.raises(Exception, match="events"):
            fut.result(10)
    writer.close()
    led.close()


def test_sqlite_writers_of_one_process_take_turns_without_the_busy_handlers_sleeps(tmp_path: Path) -> None:
    """SQLite's busy handler re-checks a taken write lock only after sleeps of up to 100 ms; writers in one
    process (intake, workers) queue on a mutex instead and start as soon as the holder commits.

    The waiting writer's connection has no busy handler at all (``busy_timeout = 0``): had it met SQLite's lock
    instead of the mutex, its write would fail with "database is locked" whatever the machine's load. That it
    then started soon after the holder's commit is timed too: the best of up to three tries (a loaded machine may
    deschedule a thread for a while in one; a writer that wakes late every time does not pass)."""
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path / 'rfmsync.db'}"
    worker, intake = Ledger.connect(url), Ledger.connect(url)  # two instances, one file, one process
    event.listen(intake._engine, "connect", lambda dbapi_conn, _record: dbapi_conn.execute("PRAGMA busy_timeout = 0"))
    intake._engine.dispose()  # its next connections are made with the listener above
    lates: list[float] = []  # of the tries where the writer did wait for the holder
    try:
        for i in range(5):
            late = _write_while_another_holds_the_lock(worker, intake, f"order:{i}")
            lates += [late] if late is not None else []
            if len(lates) == 3 or lates and lates[-1] < 0.05:
                break
    finally:
        worker.close(), intake.close()
    assert lates, "the writer never came while the lock was held"
    ms = [round(s * 1000) for s in lates]
    assert min(lates) < 0.05, f"the waiting writer started {ms} ms after the lock was free"


def _write_while_another_holds_the_lock(worker: Ledger, intake: Ledger, key: str) -> float | None:
    """Seconds between the holder's last moment with the lock and the waiting writer's write returning (None: the
    writer was descheduled until the holder was done, it did not wait)."""
    released = threading.Event()
    hold_until: list[float] = []

    def long_write() -> None:
        with worker._write():  # a worker transaction that holds the write lock for a while
            released.set()
            time.sleep(0.35)
            hold_until.append(time.perf_counter())

    t = threading.Thread(target=long_write)
    t.start()
    released.wait(5)
    asked = time.perf_counter()
    assert intake.enqueue_event("generic", key, "{}") is True
    done = time.perf_counter()
    t.join()
    return done - hold_until[0] if asked < hold_until[0] else None


def test_a_renewed_lease_is_kept_and_a_lapsed_one_is_taken_over(open_ledger: OpenLedger, clock: Clock) -> None:
    slow, other = open_ledger(), open_ledger()
    slow.enqueue_event("generic", "order:1", "{}")
    [event] = slow.claim_events("slow-worker", stale_after=30)
    clock.advance(seconds=25)
    assert slow.renew_claims("slow-worker", [event.id]) == 1  # heartbeat
    clock.advance(seconds=25)
    assert other.claim_events("other", stale_after=30) == []  # 50 s after the claim, 25 s after the beat
    assert other.claimable_count(stale_after=30) == 0
    clock.advance(seconds=6)
    assert other.claimable_count(stale_after=30) == 1  # nothing is queued, yet a worker must look
    [taken] = other.claim_events("other", stale_after=30)
    assert (taken.id, taken.attempts) == (event.id, 2)
    assert slow.renew_claims("slow-worker", [event.id]) == 0  # no longer ours


@pytest.mark.parametrize("finish", ["release", "fail", "complete"])
def test_a_worker_whose_lease_was_taken_over_cannot_finish_the_batch(open_ledger: OpenLedger, clock: Clock,
                                                                     finish: str) -> None:
    stalled, other = open_ledger(), open_ledger()
    stalled.enqueue_event("generic", "order:1", "{}")
    [event] = stalled.claim_events("stalled", stale_after=30)
    clock.advance(seconds=45)  # its heartbeat stalled: the lease lapsed
    [taken] = other.claim_events("other", stale_after=30)
    late = {"release": lambda: stalled.release_events([event.id], "LockBusyError: busy", worker="stalled"),
            "fail": lambda: stalled.fail_events([event.id], "HTTP 503", max_attempts=1, worker="stalled"),
            "complete": lambda: stalled.complete_events([event.id], worker="stalled")}[finish]
    assert late() == 0  # the event is the other worker's now
    assert other.event_counts()["processing"] == 1
    assert other.renew_claims("other", [taken.id]) == 1
    assert other.claim_events("stalled", stale_after=30) == []  # not handed out twice
    assert other.complete_events([taken.id], worker="other") == 1
    assert other.event_counts()["done"] == 1


def test_events_of_a_killed_claimer_on_this_host_are_claimable_at_once(ledger: Ledger, ledger_url: str) -> None:
    for i in range(3):
        ledger.enqueue_event("generic", f"order:{i}", "{}")
    with child_killed_after(ledger_url, "print(len(led.claim_events(default_owner(), stale_after=300)))") as out:
        assert out == ["3"]
        assert ledger.claim_events("rescuer", stale_after=300) == []  # its claimer is alive: hands off
        assert ledger.claimable_count(stale_after=300) == 0
    assert ledger.claimable_count(stale_after=300) == 3
    again = ledger.claim_events("rescuer", stale_after=300)  # killed: no need to wait for the lease
    assert sorted((e.dedupe_key, e.attempts) for e in again) == [(f"order:{i}", 2) for i in range(3)]
    assert ledger.complete_events([e.id for e in again], worker="rescuer") == 3


def test_runs_left_running_by_a_killed_process_become_abandoned_when_the_next_run_starts(
        ledger: Ledger, ledger_url: str) -> None:
    mine = ledger.start_run("sync", "mailchimp")  # this process is alive: its run stays running
    with child_killed_after(ledger_url, "print(led.start_run('scheduled', 'mailchimp'))") as out:
        killed = int(out[0])
    assert ledger.get_run(killed)["status"] == "running"  # nobody has looked yet
    ledger.start_run("webhook", "mailchimp")
    run = ledger.get_run(killed)
    assert run["status"] == "abandoned" and run["finished_at"] is None and run["duration_s"] is None
    assert "ended without finishing it (killed or crashed)" in run["error"]
    assert ledger.get_run(mine)["status"] == "running"
    assert ledger.abandon_dead_runs() == []
    with pytest.raises(ValueError, match="status must be one of succeeded, partial, failed"):
        ledger.finish_run(mine, "abandoned", {})


def test_owner_process_gone_only_for_exited_processes_of_this_host() -> None:
    import os
    import socket

    from sync.ledger import default_owner, owner_process_gone

    assert owner_process_gone(dead_owner())
    assert not owner_process_gone(default_owner())  # this process
    assert not owner_process_gone(f"{socket.gethostname()}:1:x")  # alive (init), maybe not ours to signal
    assert not owner_process_gone(f"another-host:{os.getpid() + 10_000_000}:x")  # cannot check: wait for expiry
    gone = dead_owner().split(":", 1)[1]
    assert owner_process_gone(f"{socket.gethostname()}:{gone}")  # an earlier version's name: as before
    assert not owner_process_gone(f"{socket.gethostname()}/1:{gone}")  # this host name, another PID namespace
    assert not owner_process_gone("probe") and not owner_process_gone(None) and not owner_process_gone("h:-1:x")
    # a pid field str.isdigit() takes but int() refuses (a ledger row edited by hand): not gone, no ValueError
    assert not owner_process_gone(f"{socket.gethostname()}:\u00b2:x")


def test_lock_holder_names_the_owner(ledger: Ledger) -> None:
    assert ledger.lock_holder("schedule") is None
    with ledger.lock("schedule", owner="host:1:abc"):
        assert ledger.lock_holder("schedule") == "host:1:abc"


def test_the_intake_writer_commits_without_checkpointing_and_checkpoints_on_the_side(tmp_path: Path) -> None:
    from sync.ledger.writer import EventWriter

    led = Ledger.connect(f"sqlite:///{tmp_path / 'rfmsync.db'}")
    quiet = led.sibling(autocheckpoint=False)
    with quiet._engine.connect() as conn, led._engine.connect() as other:  # what each connection is set to
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        assert other.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    quiet.close()
    memory = Ledger.connect("sqlite://")
    assert memory.sibling() is memory  # another in-memory engine would be another database

    writer = EventWriter(led, checkpoint_seconds=0.01)
    assert writer.write([("generic", f"order:{i}", "x" * 4000) for i in range(300)]) == [True] * 300
    writer.close()  # the last checkpoint copies everything into the database file
    with sqlite3.connect(tmp_path / "rfmsync.db") as raw:
        busy, frames, done = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and frames == done
    assert led.event_counts()["queued"] == 300
    led.close(), memory.close()


def test_a_state_that_comes_back_is_queued_again_and_only_the_latest_dedupes(ledger: Ledger) -> None:
    """A record's key dedupes against its latest event only: a sender's retry of it is dropped, an earlier state
    that comes back after another (no → yes → no) is new work, in separate groups or in one."""
    assert [ledger.enqueue_event("generic", "order:1", p) for p in ("no", "yes", "no", "no")] == [
        True, True, True, False]
    [first] = ledger.claim_events("w", limit=1)
    ledger.complete_events([first.id], worker="w")  # done or queued, the latest is what a retry repeats
    assert ledger.enqueue_event("generic", "order:1", "no") is False
    assert ledger.enqueue_events([("generic", "order:2", "a"), ("generic", "order:2", "b"),
                                  ("generic", "order:2", "b"), ("generic", "order:2", "a"),
                                  ("other", "order:2", "a")]) == [True, True, False, True, True]
    assert ledger.enqueue_events([("generic", "order:2", "a"), ("generic", "order:1", "yes")]) == [False, True]
    payloads = [(e.dedupe_key.split("@")[0], e.payload) for e in ledger.claim_events("w", limit=20)]
    assert payloads == [("superseded:order:1", "yes"), ("superseded:order:1", "no"),
                        ("superseded:order:2", "a"), ("superseded:order:2", "b"), ("order:2", "a"),
                        ("order:2", "a"), ("order:1", "yes")]  # oldest first: the states in their order


def test_intakes_racing_on_one_record_queue_a_state_that_came_back_once(open_ledger: OpenLedger) -> None:
    """Eight intakes (own connections) deliver the same earlier state of one record at once, each a few times:
    exactly one delivery is queued, whatever the engine (PostgreSQL: they take turns on the record's lock)."""
    first = open_ledger()
    assert first.enqueue_events([("generic", "order:7", "no"), ("generic", "order:7", "yes")]) == [True, True]
    intakes = [open_ledger() for _ in range(8)]
    barrier = threading.Barrier(len(intakes))
    got: list[bool] = []

    def deliver(intake: Ledger) -> None:
        barrier.wait(10)
        for _ in range(3):
            got.extend(intake.enqueue_events([("generic", "order:8", "x"), ("generic", "order:7", "no")]))

    threads = [threading.Thread(target=deliver, args=(i,)) for i in intakes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(got) == 2 and len(got) == 48  # order:8 new once, order:7's "no" back once
    assert first.event_counts()["queued"] == 4


def test_intakes_racing_with_different_new_states_of_one_record_queue_every_one(open_ledger: OpenLedger) -> None:
    """Eight intakes each deliver a different new state of one record at once: each is new work, none a repeat, and
    the record's key ends on one of them with the others superseded (PostgreSQL without the lock: a unique key
    conflict drops some as duplicates)."""
    first = open_ledger()
    intakes = [open_ledger() for _ in range(8)]
    for rnd in range(5):
        assert first.enqueue_event("generic", "order:7", f"base{rnd}")
        barrier = threading.Barrier(len(intakes))
        got: list[bool] = []

        def deliver(i: int, intake: Ledger) -> None:
            barrier.wait(10)
            got.extend(intake.enqueue_events([("generic", "order:7", f"state{rnd}-{i}")]))

        threads = [threading.Thread(target=deliver, args=(i, x)) for i, x in enumerate(intakes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert got == [True] * 8, (rnd, got)
    assert first.event_counts()["queued"] == 45


def test_a_group_of_many_records_is_queued_in_one_transaction(ledger: Ledger) -> None:
    """The intake's group commit writes up to 256 deliveries, each up to 1 MB of orders, at once: PostgreSQL's
    advisory locks are buckets of the records, not one per record (20 000 locks overflowed max_locks_per_transaction:
    "out of shared memory", 503 for every delivery of the group, at each retry)."""
    items = [("generic", f"order:{i}", f"p{i}") for i in range(20_000)]
    assert sum(ledger.enqueue_events(items)) == 20_000
    assert ledger.enqueue_events(items[:3] + [("generic", "order:3", "changed")]) == [False, False, False, True]


def _content_key(key: str, payload: str) -> str:
    """The key an rfmsync before per-record keys gave an event: the record's and a digest of its content (its
    sync/serve/webhooks.py ``_digest``, git show c954c4e^:sync/serve/webhooks.py)."""
    return f"{key}:{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


@pytest.mark.parametrize("older", ["contact:5", "order:1"])  # a lone contact's event, or an order's carrying it
def test_a_state_an_older_intake_queued_after_the_latest_is_not_taken_for_its_repeat(ledger: Ledger,
                                                                                     older: str) -> None:
    """During an upgrade an older server's intake (content keys) and this one's share the ledger. This one queues
    contact 5's consent no; the older one queues a yes (under its content key, which contact:5's latest event does not
    see); the contact withdraws again, delivered here: a withdrawal, not a repeat of the no before the yes (it was
    dropped, and the store kept yes: marketing to a contact who said no). Its own retry then is a repeat again."""
    no = '{"contacts":[{"customer_id":"5","marketing_consent":"no"}]}'
    yes = '{"contacts":[{"customer_id":"5","marketing_consent":"yes"}],"orders":[{"order_id":"1"}]}'
    assert ledger.enqueue_event("generic", "contact:5", no) is True
    assert ledger.enqueue_event("generic", _content_key(older, yes), yes) is True  # the older intake's insert
    assert ledger.enqueue_event("generic", "contact:5", no) is True
    assert ledger.enqueue_event("generic", "contact:5", no) is False
    assert [e.payload for e in ledger.claim_events("w", limit=10)] == [no, yes, no]  # the worker ends on no


def test_content_keyed_events_of_a_ledger_written_before_the_upgrade_leave_the_dedupe_as_it_is(ledger: Ledger) -> None:
    """A queue left from before the upgrade (content keys only, all older than this version's events): a record's
    new event is its latest, and a retry of it a repeat; one more content-keyed row, and events the older version
    could not have written (a key ending in 32 characters that are no digest), change nothing."""
    for i in range(3):
        assert ledger.enqueue_event("generic", _content_key(f"order:{i}", f"old{i}"), f"old{i}") is True
    assert ledger.enqueue_event("generic", "order:1", "old1") is True  # the first delivery after the upgrade
    assert ledger.enqueue_event("generic", f"contact:email:{'x' * 26}@a.uz", "c") is True  # not a digest
    assert ledger.enqueue_events([("generic", "order:1", "old1"), ("generic", "order:9", "n")]) == [False, True]
    assert ledger.enqueue_event("generic", f"contact:email:{'x' * 26}@a.uz", "c") is False
