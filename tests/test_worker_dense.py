"""The worker among many bad events and on small batches: events that failed alone resynced apart, a small batch
of our own bug backed off like a large one."""

from __future__ import annotations

import random
import statistics
from datetime import timedelta

import pytest

from sync.config import Config
from sync.ledger import Ledger
from sync.serve.worker import Worker

try:
    from tests import test_worker_bad_days as bad_days
    from tests import test_worker_outage as outage
except ImportError:  # tests/ itself on sys.path
    import test_worker_bad_days as bad_days  # type: ignore[no-redef]
    import test_worker_outage as outage  # type: ignore[no-redef]

Ticks, enqueue_orders, OWN_BUGS = outage.Ticks, outage._enqueue_orders, bad_days.OWN_BUGS


@pytest.mark.parametrize("bug", ["one text", "naming the order"])
def test_our_own_bug_on_small_batches_backs_the_worker_off_as_on_a_large_one(tmp_path, bug):
    """Our own bug fails every resync, and the queue holds a few events at a time (3 at first, then one more every
    10 minutes for 3 hours: every claim takes at most 4). A claim of them fails each alone (no event is left
    unsettled) and makes no progress, so the worker backs off as for a larger batch (5 s doubling up to 300 s), the
    events waiting it out unclaimed: at most 24 claims an hour (19, 15, 15), and an event spends its 5 claims over
    minutes (82 s for the first three, 12 to 19 minutes for the others; it ends failed, with its own error, after its
    fifth). Before: nothing left unsettled, no back-off: 5 claims in 20 s at every 5 s debounce for each event (30
    claims an hour), each event failed 20 to 25 s after it was accepted."""
    calls: list[int] = []

    def process(batch):
        calls.append(len(batch.events))
        raise ValueError(OWN_BUGS[bug](batch))

    ticks, wall = Ticks(), [outage.AS_OF_DT]
    accepted: dict[str, float] = {}
    ended: dict[str, float] = {}
    hours = [0, 0, 0, 0]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0], rng=random.Random(3))

        def queue(ids: list[str]) -> None:
            enqueue_orders(ledger, ids)
            accepted.update(dict.fromkeys(ids, ticks.now))

        queue(["O0", "O1", "O2"])
        arrivals = iter(range(1, 19))
        next_at = ticks.now + 600
        while ticks.now < 1000 + 4 * 3600:
            step = 5.0 + worker.backing_off()  # what run_forever waits: its back-off, then the debounce
            ticks.now += step
            wall[0] += timedelta(seconds=step)
            while ticks.now >= next_at:  # the events accepted meanwhile
                n = next(arrivals, None)
                next_at = float("inf") if n is None else next_at + 600
                if n is not None:
                    queue([f"N{n}"])
            if ledger.claimable_count():
                assert len(calls) == 0 or max(calls) <= 4
                worker.process_batch()
                hours[int((ticks.now - 1000) // 3600)] += 1
                for oid, (status, _) in bad_days._finished(ledger).items():
                    if status == "failed" and oid not in ended:
                        ended[oid] = ticks.now
        finished = bad_days._finished(ledger)
    assert set(ended) == set(accepted) and all(status == "failed" for status, _ in finished.values())
    if bug == "one text":
        assert {error for _, error in finished.values()} == {"ValueError: KeyError in our plan code: 'segment'"}
    assert all(claims <= 24 for claims in hours), hours  # (19, 15, 15, 5)
    spent = [ended[oid] - accepted[oid] for oid in accepted]
    assert min(spent) > 60 and statistics.median(spent) > 600, spent  # (82 s; 16 min)


@pytest.mark.parametrize("n, n_bad, seed, within", [(1000, 990, 7, 1.0), (200, 195, 2, 0.25)])
def test_good_events_among_nearly_only_bad_ones_are_done_well_before_the_give_up(tmp_path, n, n_bad, seed, within):
    """A fresh worker (no resync went through in the last hour) and a queue of nearly only bad events, each failing
    with an error naming itself: an event that failed alone is resynced apart at its next claims, each alone, and
    the others, failing together, one by one from the oldest, so the claim's resyncs go to the events not tried
    yet. Every good event is done well before the 6 h give-up (1 000 with 990 bad: the last one at 0.8 h, every
    event settled at 1.0 h; 200 with 195 bad: 0.04 h), each bad one failed with its own error after its 5 attempts,
    every claim within its ``2·⌈log2 n⌉ + 2`` resyncs. Before: the known bad events failed each batch again and the
    bisection found two or three a claim while the worker backed off (it cannot tell them from our own bug): 1 000
    with 990 bad gave good events up at 6 h, 200 with 195 bad took 3.6 h."""
    finished, _, good_done = bad_days._bad_day(tmp_path, n, n_bad, seed)
    assert good_done is not None and good_done < within, good_done
    assert {i for i, (status, _) in finished.items() if status == "done"} == {i for i in finished if i[0] == "G"}
    assert {i: f for i, (status, f) in finished.items() if status == "failed"} == {
        i: f"ValueError: order {i} has no line items" for i in finished if i.startswith("BAD")}


def test_our_own_bug_with_one_text_fails_a_few_events_a_claim_and_the_others_wait_for_the_fix(tmp_path):
    """Our own bug failing every resync with one same text: once events failed alone at a claim, the next claims
    resync them apart (and the others one by one), but a claim stops trying events alone once 3 failed with its
    one error while nothing went through: the first hour fails 12 of 40 events (their 5 attempts spent), the others
    wait uncounted for the fix. Without that stop, every event a claim could try alone spent an attempt, and all 40
    were failed within the first hour."""
    def process(batch):
        raise ValueError(OWN_BUGS["one text"](batch))

    ticks, wall = Ticks(), [outage.AS_OF_DT]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        enqueue_orders(ledger, [f"O{i}" for i in range(40)])
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0], rng=random.Random(7))
        while ticks.now < 1000 + 3600:
            step = 5.0 + worker.backing_off()
            ticks.now += step
            wall[0] += timedelta(seconds=step)
            if ledger.claimable_count():
                worker.process_batch()
        counts = ledger.event_counts()
    assert 0 < counts["failed"] <= 15 and counts["queued"] == 40 - counts["failed"], counts


def test_a_warm_worker_does_not_back_off_after_lone_bad_events(tmp_path):
    """A worker whose resyncs go through (warm) in a quiet queue: 6 bad events (each naming itself) arrive one every
    20 s, each claimed alone, then a good one. Each lone bad event's claim fails it alone with its own error:
    progress, no back-off, so the good event is resynced at the next debounce (5 s). Before: a claim of one event
    never counted as an error of its own, the warm worker backed off after each (5 s doubling: 80–160 s after the
    sixth), the good event waiting for it (15 s here)."""
    done_at: dict[str, float] = {}
    ticks, wall = Ticks(), [outage.AS_OF_DT]

    def process(batch):
        bad_days._own_fault(batch)
        for o in batch.orders:
            done_at.setdefault(o.order_id, ticks.now)

    arrivals = [(20 * i, f"BAD{i}") for i in range(1, 7)] + [(125, "G")]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0], rng=random.Random(1))
        enqueue_orders(ledger, ["W"])
        assert worker.process_batch() == 1  # warm: a resync went through
        start, accepted = ticks.now, {}
        while "G" not in done_at and ticks.now < start + 600:
            step = 5.0 + worker.backing_off()  # what run_forever waits: its back-off, then the debounce
            ticks.now += step
            wall[0] += timedelta(seconds=step)
            for at, oid in arrivals:
                if oid not in accepted and ticks.now - start >= at:
                    enqueue_orders(ledger, [oid])
                    accepted[oid] = start + at
            if ledger.claimable_count():
                worker.process_batch()
        assert done_at["G"] - accepted["G"] == 0  # claimed at the first look after it came (every 5 s here)
        assert bad_days._finished(ledger)["BAD6"][1] == "ValueError: order BAD6 has no line items"  # its own


def test_a_warm_worker_backs_off_from_our_own_bug_meeting_events_one_at_a_time(tmp_path):
    """A resync went through (the worker is warm), then our own bug fails every resync with one same text while
    events arrive one a minute for an hour, each claimed alone. A lone event failing with another's same text is no
    error of its own: the worker backs off (5 s doubling): 42 claims in the hour (an event failing again alone with
    its own same text is counted as its own failure, as a poison event's, so a little more than a cold worker's 24),
    14 events failed and 46 still waiting for the fix. Before: every one-event claim counted as its own error, so
    the warm worker never backed off: 300 claims an hour (every 5 s debounce), all 60 events failed ~25 s after
    each came."""
    ticks, wall = Ticks(), [outage.AS_OF_DT]
    bug = [False]

    def process(batch):
        if bug[0]:
            raise KeyError("total")

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0], rng=random.Random(1))
        enqueue_orders(ledger, ["W"])
        assert worker.process_batch() == 1  # warm
        bug[0] = True
        start, claims, n = ticks.now, 0, 0
        while ticks.now < start + 3600:
            step = 5.0 + worker.backing_off()
            ticks.now += step
            wall[0] += timedelta(seconds=step)
            while ticks.now - start >= 60 * n and n < 60:
                enqueue_orders(ledger, [f"E{n}"])
                n += 1
            if ledger.claimable_count():
                worker.process_batch()
                claims += 1
        counts = ledger.event_counts()
    assert claims <= 60, claims  # (42; an event failing again alone with its same text is its own failure)
    assert counts["failed"] < 20 and counts["queued"] + counts.get("processing", 0) > 40, counts


def test_a_resync_going_through_makes_the_next_lone_failure_with_an_earlier_text_its_own_again(tmp_path):
    """A warm worker: bad event A fails alone with a text naming no order; a good event goes through; then bad
    event B fails alone with that same text. A resync went through in between, so B's failure is its own (no
    back-off, the next event is claimed at once); C failing alone with it right after B, nothing through between,
    is our own bug's sign: the worker backs off. Before: B's failure counted against A's text, a back-off."""
    bad = {"A", "B", "C"}

    def process(batch):
        if any(o.order_id in bad for o in batch.orders):
            raise ValueError("order has no line items")

    ticks, wall = Ticks(), [outage.AS_OF_DT]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0], rng=random.Random(1), max_attempts=1)
        for oid, expect_back_off in [("W", False), ("A", False), ("G", False), ("B", False), ("C", True)]:
            enqueue_orders(ledger, [oid])
            worker.process_batch()
            assert (worker.backing_off() > 0) is expect_back_off, oid
            ticks.now += 5.0 + worker.backing_off()
            wall[0] += timedelta(seconds=5.0)
