"""The worker after another one died mid-claim (killed, OOM, its lease lapsed): the events it left are claimed one
claim more but failed nothing, so they are not taken for known bad ones (``events.fails``, not ``attempts``)."""

from __future__ import annotations

import random
from datetime import timedelta

from sync.config import Config
from sync.errors import DestinationError
from sync.ledger import Ledger
from sync.serve.worker import Worker

try:
    from tests import test_worker_bad_days as bad_days
    from tests import test_worker_outage as outage
except ImportError:  # tests/ itself on sys.path
    import test_worker_bad_days as bad_days  # type: ignore[no-redef]
    import test_worker_outage as outage  # type: ignore[no-redef]

Ticks, enqueue_orders, finished = outage.Ticks, outage._enqueue_orders, bad_days._finished


def _500_for_p(calls: list[list[str]]):
    """The ESP answers 500 to any resync holding a P order (the event's own 5xx), else goes through."""
    def process(batch):
        calls.append([o.order_id for o in batch.orders])
        if any(o.order_id.startswith("P") for o in batch.orders):
            raise DestinationError("mailchimp: 500 Internal Server Error", status=500, transient=True)
    return process


def _run(ledger: Ledger, worker: Worker, ticks: Ticks, wall: list, hours: float, until=lambda: False) -> None:
    """What ``run_forever`` does, on hand-moved clocks: its back-off, then the debounce (5 s), then a claim."""
    end = ticks.now + hours * 3600
    while ticks.now < end and not until():
        step = 5.0 + worker.backing_off()
        ticks.now += step
        wall[0] += timedelta(seconds=step)
        if ledger.claimable_count(worker.stale_after):
            worker.process_batch()


def _reclaimed(tmp_path, ids: list[str], process, failed_alone: bool = False):
    """A ledger holding ``ids``, claimed by a worker on another host that died (its lease lapsed), and the worker
    that takes them over. ``failed_alone``: a worker before had failed each of them alone (recorded)."""
    ticks, wall = Ticks(), [outage.AS_OF_DT]
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0])
    enqueue_orders(ledger, ids)
    if failed_alone:
        claimed = ledger.claim_events("otherhost:1:old", limit=1000, stale_after=30)
        ledger.fail_events([e.id for e in claimed], "ValueError: fixed since", worker="otherhost:1:old")
    assert len(ledger.claim_events("otherhost:2:dead", limit=1000, stale_after=30)) == len(ids)  # then killed
    wall[0] += timedelta(seconds=60)  # its lease lapsed
    worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                    now=lambda: wall[0], rng=random.Random(1))
    return ledger, worker, ticks, wall


def test_good_events_a_killed_worker_left_are_resynced_together(tmp_path):
    """200 good events claimed by a worker that was killed: the next worker resyncs them in one claim, one resync.
    Before (``attempts > 1`` taken for "failed alone before"): each resynced alone, 200 resyncs over 11 claims."""
    calls: list[list[str]] = []
    ids = [f"O{i}" for i in range(200)]
    ledger, worker, ticks, wall = _reclaimed(tmp_path, ids, _500_for_p(calls))
    with ledger:
        _run(ledger, worker, ticks, wall, 1, until=lambda: ledger.event_counts()["done"] == len(ids))
        assert ledger.event_counts()["done"] == len(ids)
        assert calls == [ids]


def test_an_event_always_5xx_among_those_a_killed_worker_left_does_not_hold_the_others(tmp_path):
    """10 events claimed by a worker that was killed, the oldest one the ESP always answers 500: the 9 good ones are
    done within the hour (the batch's 5xx probed once the back-off grew, :data:`PROBE_AFTER`), the bad one waits as
    a suspect, uncounted. Before: each was taken for known bad, the oldest tried alone first, its 500 (nothing
    through yet) taken for an outage of the whole claim, claim after claim: all 10 given up at the 6 h."""
    calls: list[list[str]] = []
    ids = ["P0"] + [f"G{i}" for i in range(1, 10)]
    ledger, worker, ticks, wall = _reclaimed(tmp_path, ids, _500_for_p(calls))
    with ledger:
        _run(ledger, worker, ticks, wall, 1, until=lambda: ledger.event_counts()["done"] == 9)
        status = finished(ledger)
        assert {k: s for k, (s, _) in status.items()} == {"P0": "queued", **dict.fromkeys(ids[1:], "done")}
        assert ticks.now - 1000 < 3600


def test_a_known_bad_event_failing_5xx_alone_first_is_probed_with_another_event(tmp_path):
    """Every event of the claim failed alone before (a bug of ours since fixed), and the oldest is one the ESP always
    answers 500. Tried alone first, its 500 (nothing through yet) is an outage or its own: one other event resynced
    alone tells (it goes through), so it is a suspect and the 9 others are done in the first claim. Before: taken for
    an outage of the whole claim, claim after claim: all 10 given up at the 6 h."""
    calls: list[list[str]] = []
    ids = ["P0"] + [f"G{i}" for i in range(1, 10)]
    ledger, worker, ticks, wall = _reclaimed(tmp_path, ids, _500_for_p(calls), failed_alone=True)
    with ledger:
        _run(ledger, worker, ticks, wall, 1, until=lambda: ledger.event_counts()["done"] == 9)
        status = finished(ledger)
        assert {k: s for k, (s, _) in status.items()} == {"P0": "queued", **dict.fromkeys(ids[1:], "done")}
        assert calls[:2] == [["P0"], ["G1"]]  # P0 alone, then the probe
        assert len(calls) == 10 and ticks.now - 1000 < 60  # each alone (known bad), within the first claim
