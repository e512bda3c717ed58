"""The worker's bad days: many bad events in one batch, a suspect's long back-off, one ESP's Retry-After."""

from __future__ import annotations

import logging
import random
from datetime import timedelta

import pytest
from sqlalchemy import select

from sync.config import Config
from sync.ledger import Ledger
from sync.ledger.codec import decode_records
from sync.ledger.schema import events
from sync.serve.batches import _resync_budget
from sync.serve.worker import Worker

try:
    from tests import test_worker_outage as outage
except ImportError:  # tests/ itself on sys.path
    import test_worker_outage as outage  # type: ignore[no-redef]

Ticks, enqueue_orders = outage.Ticks, outage._enqueue_orders


def _finished(ledger: Ledger) -> dict[str, tuple[str, str | None]]:
    """order id → (status, last error) of every event."""
    with ledger._engine.connect() as conn:
        rows = conn.execute(select(events.c.payload, events.c.status, events.c.last_error)).all()
    return {decode_records(payload)[0][0].order_id: (status, error) for payload, status, error in rows}


def _own_fault(batch) -> None:
    """A batch holding a BAD order fails, naming the first (the events' own fault, not the ESP's)."""
    bad = [o.order_id for o in batch.orders if o.order_id.startswith("BAD")]
    if bad:
        raise ValueError(f"order {bad[0]} has no line items")


@pytest.mark.parametrize("seed", range(8))
def test_good_events_end_synced_when_a_batch_holds_many_bad_events(tmp_path, seed):
    """40 events, 10 to 20 of them bad, spread at random (seeds): claim after claim (each within its
    ``2·⌈log2 40⌉ + 2`` resyncs) every good event ends done, none failed nor counted, and each bad event ends
    failed with its own error. Before: when the two events tried alone (one of each half) were both bad, every
    event of the batch spent an attempt, and after 5 such claims good events were failed for good."""
    rng = random.Random(seed)
    bad = set(rng.sample(range(40), rng.randint(10, 20)))
    ids = [f"BAD{i}" if i in bad else f"G{i}" for i in range(40)]
    sizes: list[int] = []

    def process(batch):
        sizes.append(len(batch.events))
        _own_fault(batch)

    ticks = Ticks()
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        enqueue_orders(ledger, ids)
        worker = Worker(Config(), ledger, None, process=process, clock=ticks)  # type: ignore[arg-type]
        for _ in range(200):
            if not ledger.event_counts()["queued"]:
                break
            sizes.clear()
            worker.process_batch()
            assert len(sizes) <= _resync_budget(40) == 14  # a claim's resyncs stay capped
            ticks.now += worker.backing_off()
        finished = _finished(ledger)
        assert {i for i, (status, _) in finished.items() if status == "done"} == {i for i in ids if i[0] == "G"}
        assert {i: f for i, (status, f) in finished.items() if status == "failed"} == {
            i: f"ValueError: order {i} has no line items" for i in ids if i.startswith("BAD")}
        assert worker.metrics.events["failed"] == len(bad)


def test_a_suspect_is_not_claimed_nor_logged_at_every_debounce_while_its_back_off_lasts(tmp_path, caplog):
    """A suspect (an event failing 5xx alone, here with Retry-After: 600) waits its back-off unclaimed: 30 debounce
    cycles (2 s each) within it make no resync, no claim and no log line (before: claimed and released at each,
    an INFO line each time: a log flood on a long back-off); once it is over, the suspect is resynced alone."""
    from sync.errors import DestinationError
    from sync.serve.worker import PROBE_AFTER

    sizes: list = []

    def process(batch):
        ids = [o.order_id for o in batch.orders]
        sizes.append(ids if len(ids) == 1 else len(ids))
        if "POISON" in ids:
            raise DestinationError("SendGrid: HTTP 503", status=503, retry_after=600, transient=True)

    ticks, wall = Ticks(), [outage.AS_OF_DT]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        enqueue_orders(ledger, [f"G{i}" for i in range(10)] + ["POISON"] + [f"H{i}" for i in range(9)])
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0])
        for _ in range(PROBE_AFTER):  # an outage at first, then probed: the 19 others are done
            worker.process_batch()
            ticks.now += worker.backing_off()
            wall[0] += timedelta(seconds=worker.backing_off())
        assert worker.process_batch() == 19 and worker.suspects_back_off() == 600
        sizes.clear()
        caplog.clear()
        caplog.set_level(logging.DEBUG, "sync.serve.worker")
        for _ in range(30):  # what run_forever does at each debounce: look, claim what is claimable
            ticks.now += 2
            wall[0] += timedelta(seconds=2)
            assert ledger.claimable_count() == 0
            worker.drain()
        assert sizes == [] and caplog.records == []
        assert ledger.event_counts()["queued"] == 1
        ticks.now += 600
        wall[0] += timedelta(seconds=600)
        worker.drain()
        assert sizes == [["POISON"]]
