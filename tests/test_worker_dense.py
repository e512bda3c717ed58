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
