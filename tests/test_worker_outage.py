"""The worker on bad days: an ESP outage, a poison event in a batch, the ledger's disk full."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connectors.records import Order
from sync.config import Config, load_config
from sync.errors import DestinationConfigError, LedgerError
from sync.ledger import Ledger, open_ledger
from sync.ledger.codec import encode_records
from sync.serve.worker import BACKOFF_BASE, BACKOFF_MAX, PROBE_AFTER, RETRY_AFTER_MAX, Worker
from sync.settings import load_settings

try:
    from tests import test_worker
except ImportError:  # tests/ itself on sys.path
    import test_worker  # type: ignore[no-redef]

AS_OF, churned_contact, queue_order = test_worker.AS_OF, test_worker.churned_contact, test_worker.queue_order
shop = test_worker.shop  # the fixture: a demo shop synced once to the fake Mailchimp


AS_OF_DT = datetime(2025, 6, 29, 12, tzinfo=timezone.utc)


class Ticks:
    """The worker's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _enqueue_orders(ledger: Ledger, ids) -> None:
    """One event per order id, in this order."""
    for oid in ids:
        order = Order(order_id=oid, customer_id="C1", ordered_at=AS_OF_DT, amount=Decimal(1))
        ledger.enqueue_event("generic", oid, encode_records([order]))


def _statuses(ledger: Ledger) -> dict[str, tuple[str, str | None]]:
    """order id → (status, last error) of every event."""
    from sqlalchemy import select

    from sync.ledger.codec import decode_records
    from sync.ledger.schema import events

    with ledger._engine.connect() as conn:
        rows = conn.execute(select(events.c.payload, events.c.status, events.c.last_error)).all()
    return {decode_records(payload)[0][0].order_id: (status, error) for payload, status, error in rows}


def _attempts(ledger: Ledger) -> dict[str, int]:
    """order id → claims counted so far, of every queued event (a released one waiting its back-off too)."""
    from sqlalchemy import select

    from sync.ledger.codec import decode_records
    from sync.ledger.schema import events

    with ledger._engine.connect() as conn:
        rows = conn.execute(select(events.c.payload, events.c.attempts).where(events.c.status == "queued")).all()
    return {decode_records(payload)[0][0].order_id: attempts for payload, attempts in rows}


@contextlib.contextmanager
def _queued_order(shop, monkeypatch):
    """The shop's ledger with one order (W-2) of a churned contact queued, the ESP client's own retries off (the
    worker's to wait, and the tests' speed): (cfg, settings, ledger, the contact's email, the worker's clock)."""
    monkeypatch.setenv("RFMSYNC_HTTP_MAX_ATTEMPTS", "1")
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        email, cid = churned_contact(ledger)
        queue_order(ledger, "W-2", cid)
        yield cfg, settings, ledger, email, Ticks()


def test_an_esp_outage_does_not_spend_the_events_attempts_and_honours_retry_after(shop, mailchimp_fake,
                                                                                   monkeypatch):
    """Mailchimp answers 503 with Retry-After: 120 to a batch's every resync, more often than max_attempts: the
    event stays queued (no claim counted), the worker waits what the vendor asked before claiming again, and the
    order goes through once Mailchimp is back. (Before, the fifth failure marked the event failed.)"""
    with _queued_order(shop, monkeypatch) as (cfg, settings, ledger, email, ticks):
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF, clock=ticks, max_attempts=5)
        for n in range(1, 8):
            mailchimp_fake.fail(503, retry_after="120")  # its next call (each resync's first)
            assert worker.process_batch() == 0
            # the worker's own back-off's ceiling after n failures in a row, capped as the worker caps it (the
            # jitter draws from [ceiling/2, ceiling]: 5·2⁶ = 320 is capped to 300, so 150 s may be drawn)
            own = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (n - 1))
            if own <= 120:
                assert worker.backing_off() == 120  # the vendor's Retry-After
            else:  # longer now: the worker's own (half its ceiling at least)
                assert 120 <= worker.backing_off() and own / 2 <= worker.backing_off() <= own
            assert worker.drain() == 0  # nothing is claimed while backing off
        assert ledger.event_counts()["failed"] == 0 and ledger.event_counts()["queued"] == 1
        assert worker.metrics.events == {"done": 0, "retried": 7, "failed": 0}
        assert 'rfmsync_esp_errors_total{destination="mailchimp-demo"} 7' in worker.metrics.render()
        ticks.now += worker.backing_off()
        assert worker.drain() == 1
        assert "Winback" not in mailchimp_fake.tags_of(email)


def test_an_answer_not_believed_while_the_esp_is_down_spends_no_attempt(shop, mailchimp_fake, monkeypatch, caplog):
    """A proxy answers the audience's read with a 200 maintenance page (HTML: an answer not believed, which says
    nothing about the events) at every claim, more often than max_attempts: the event waits uncounted with the
    worker's back-off, as for a 5xx, and goes through when Mailchimp answers again. Before, each such claim spent
    the event's attempt (a lone failure "of its own"), and the second marked it failed; in a bisection, a garbage
    200 of one event alone also counted as "another event settled", so the other's 5xx was taken for its own."""
    with _queued_order(shop, monkeypatch) as (cfg, settings, ledger, email, ticks):
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF, clock=ticks, max_attempts=2)
        caplog.set_level(logging.INFO)
        for _ in range(4):
            mailchimp_fake.answer_raw(b"<html><h1>Down for maintenance</h1></html>", method="GET",
                                      path=r"^/lists/aud1$")
            assert worker.process_batch() == 0
            assert worker.backing_off() > 0  # the worker's back-off, as for an outage
            ticks.now += worker.backing_off()
        assert ledger.event_counts()["failed"] == 0 and _attempts(ledger) == {"W-2": 0}
        assert worker.metrics.events["failed"] == 0
        # said once as a WARNING (not at every claim, not INFO only), and shown by GET /healthz until it is over
        told = [r for r in caplog.records if r.levelno >= logging.WARNING and "answer not believed" in r.getMessage()]
        assert len(told) == 1 and "Down for maintenance" in told[0].getMessage()
        assert worker.metrics.waiting_for_config("not_believed")["workers"] == 1
        assert worker.drain() == 1
        assert worker.metrics.waiting_for_config("not_believed") is None
        assert "Winback" not in mailchimp_fake.tags_of(email)


def test_a_retry_after_up_to_30_minutes_and_none_at_all_back_off_within_bounds(tmp_path, caplog):
    """A vendor's Retry-After is honoured up to 30 minutes: a resync is every destination's and the CRM's, so
    SendGrid's day-long 429 does not hold the others' events into the 6 h give-up (before: the worker claimed
    nothing for 6 h, then every event failed at once); the log line names who asked for how long. Without
    one, 5 s doubling (with jitter) up to 5 minutes."""
    from sync.errors import DestinationError

    day = DestinationError("HTTP 429", status=429, retry_after=86400, transient=True)
    day.destination = "sendgrid"  # type: ignore[attr-defined]  (as the resync names it)
    failures = [day, DestinationError("HTTP 429", status=429, retry_after=600, transient=True)] + \
        [DestinationError("HTTP 502", status=502, transient=True)] * 8

    def outage(batch):
        raise failures.pop(0)

    caplog.set_level(logging.INFO, "sync.serve.worker")
    ticks = Ticks()
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        ledger.enqueue_event("generic", "k", encode_records())
        worker = Worker(Config(), ledger, None, process=outage, clock=ticks)  # type: ignore[arg-type]
        waits = []
        while failures:
            worker.process_batch()
            waits.append(worker.backing_off())
        assert waits[:2] == [RETRY_AFTER_MAX, 600] == [1800, 600]  # a day's Retry-After is cut, 10 min waited
        assert "sendgrid asked to wait 86400 s (at most 1800 s waited); looking again in 1800 s" in caplog.text
        for n, wait in enumerate(waits[2:], start=3):  # doubling (with jitter), capped
            ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (n - 1))
            assert ceiling / 2 <= wait <= ceiling
        assert ledger.event_counts()["queued"] == 1



class SimulatedStop(threading.Event):
    """``run_forever``'s stop whose waits move the worker's clock instead of sleeping; set ``until`` seconds on,
    or once ``enough()`` says so (a worker gone wrong: the test need not wait for all of it)."""

    def __init__(self, ticks: Ticks, until: float, enough) -> None:
        super().__init__()
        self.ticks, self.end, self.enough = ticks, ticks.now + until, enough

    def wait(self, timeout: float | None = None) -> bool:
        self.ticks.now += timeout or 0.0
        if self.ticks.now >= self.end or self.enough():
            self.set()
        return self.is_set()


@pytest.mark.parametrize("retry_after", ["0", "Sun, 06 Nov 1994 08:49:37 GMT"])  # "now" and a date gone by
def test_a_vendor_that_keeps_saying_retry_now_is_asked_less_and_less_often(shop, mailchimp_fake, monkeypatch,
                                                                           retry_after):
    """Mailchimp answers every call for an hour with 429 and ``Retry-After: 0`` (or a date in the past): the
    worker's waits still double from 5 s up to 5 minutes, as they do without a Retry-After, so the vendor is asked
    about 20 times in the hour (before: every 5 s, 720 times an hour for as long as it lasts; a vendor that
    blocks an address for abuse, as amoCRM does, would block it). The event spends no attempt and goes through
    once Mailchimp answers again."""
    with _queued_order(shop, monkeypatch) as (cfg, settings, ledger, email, ticks):
        before = sum(mailchimp_fake.calls.values())
        mailchimp_fake.fail(429, None, fraction=1.0, retry_after=retry_after)

        def asked() -> int:
            return sum(mailchimp_fake.calls.values()) - before

        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF, clock=ticks, rng=random.Random(7))
        worker.run_forever(SimulatedStop(ticks, 3600, lambda: asked() > 300))
        assert ticks.now - 1000 >= 3600  # the hour went by (not cut short by too many calls)
        resyncs = worker.metrics.events["retried"]  # each one's three reads (the audience, its fields, segments)
        assert 15 <= resyncs <= 30 and asked() == 3 * resyncs
        assert worker.metrics.events["failed"] == 0 and _attempts(ledger) == {"W-2": 0}
        mailchimp_fake._faults.clear()
        ticks.now += worker.backing_off()
        assert worker.drain() == 1
        assert "Winback" not in mailchimp_fake.tags_of(email)



def test_a_poison_event_is_isolated_so_the_rest_of_its_batch_goes_through(tmp_path):
    """Seven events in one batch, one of which the resync cannot take (our own bug, a record refused): the
    batch is bisected, the six good events are done at once, only the bad one spends attempts and ends failed."""
    resynced: list[list[str]] = []

    def process(batch):
        ids = [o.order_id for o in batch.orders]
        resynced.append(ids)
        if "BAD" in ids:
            raise RuntimeError("cannot plan order BAD")

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        _enqueue_orders(ledger, ["A", "B", "C", "BAD", "E", "F", "G"])
        worker = Worker(Config(), ledger, None, process=process, max_attempts=2)  # type: ignore[arg-type]
        assert worker.process_batch() == 6
        assert ledger.event_counts() == {"queued": 1, "processing": 0, "done": 6, "failed": 0}
        assert sorted(i for ids in resynced if "BAD" not in ids for i in ids) == ["A", "B", "C", "E", "F", "G"]
        assert worker.backing_off() == 0  # the event's fault, not an outage: no wait
        assert worker.process_batch() == 0  # alone now: its second attempt, then failed
        assert ledger.event_counts() == {"queued": 0, "processing": 0, "done": 6, "failed": 1}
        assert worker.metrics.events == {"done": 6, "retried": 1, "failed": 1}


def test_an_outage_met_while_isolating_a_poison_event_leaves_the_rest_waiting_uncounted(tmp_path):
    calls = []

    def process(batch):
        ids = [o.order_id for o in batch.orders]
        calls.append(ids)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        raise LedgerError("ledger sqlite:///l.db: database or disk is full")  # exit 74: the machine's

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        _enqueue_orders(ledger, "ABCD")
        worker = Worker(Config(), ledger, None, process=process, clock=Ticks())  # type: ignore[arg-type]
        assert worker.process_batch() == 0
        assert calls == [["A", "B", "C", "D"], ["A", "B"]]  # the second half is not tried during the outage
        assert worker.backing_off() >= BACKOFF_BASE / 2
        assert _attempts(ledger) == {"A": 0, "B": 0, "C": 0, "D": 0}


def test_the_ledgers_disk_full_spends_no_attempt_and_the_worker_backs_off_instead_of_looping(tmp_path):
    """A resync that fails on the ledger (disk full, exit 74) is about the machine: the events stay queued with
    their attempts, and the worker waits (5 s, then doubling up to 5 min) instead of claiming them again at once."""
    calls = []

    def disk_full(batch):
        calls.append(len(batch.events))
        raise LedgerError("ledger sqlite:///l.db: database or disk is full; free space, then run again")

    ticks = Ticks()
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        ledger.enqueue_event("generic", "k", encode_records())
        worker = Worker(Config(), ledger, None, process=disk_full, clock=ticks, max_attempts=2)  # type: ignore
        for n in range(1, 5):
            assert worker.drain() == 0
            assert len(calls) == n  # one claim, then the back-off: no busy loop
            wait = worker.backing_off()
            assert min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (n - 1)) / 2 <= wait <= BACKOFF_BASE * 2 ** (n - 1)
            ticks.now += wait
        assert ledger.event_counts()["queued"] == 1 and ledger.event_counts()["failed"] == 0
        assert [ev.attempts for ev in ledger.claim_events("probe")] == [1]


@pytest.mark.parametrize("failure", [RuntimeError("every batch fails alike"),
                                     DestinationConfigError("Mailchimp: API key rejected (HTTP 401)", status=401)])
def test_a_failure_of_every_event_alike_counts_only_the_events_that_failed_alone(tmp_path, failure, caplog):
    """Our own bug that fails any batch: the batch is split within its ``2·⌈log2 16⌉ + 2`` resyncs, and only the
    events that failed alone spend their attempt (the others wait uncounted for the next claim; before, every
    event spent one as soon as one event of each half failed alone too, and many bad events were taken for such
    a bug). A config error (a key rejected or rotated: no event at fault) is not split and spends no attempt: the
    batch waits with the back-off, logged as an ERROR, for the config to be fixed (before: every event spent its
    attempt, and five claims in half a minute failed the whole queue)."""
    sizes = []

    def process(batch):
        sizes.append(len(batch.events))
        raise failure

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        _enqueue_orders(ledger, "ABCDEFGHIJKLMNOP")
        worker = Worker(Config(), ledger, None, process=process)  # type: ignore[arg-type]
        assert worker.process_batch() == 0
        if isinstance(failure, RuntimeError):
            assert sizes == [16, 8, 8, 4, 4, 2, 2, 1, 1]  # the last resync left is not enough for a pair
            assert _attempts(ledger) == {**dict.fromkeys("ABCDEFGHIJKLMNOP", 0), "A": 1, "B": 1}
        else:
            assert sizes == [16]
            assert set(_attempts(ledger).values()) == {0} and worker.backing_off() > 0
            for _ in range(5):  # five more claims (each after its back-off): still nothing failed
                worker.retry_at = None
                worker.process_batch()
            counts = ledger.event_counts()
            assert (counts["queued"], counts["failed"]) == (16, 0)
            errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
            assert len(errors) == 6 and all("waits for the config to be fixed" in e and "API key rejected" in e
                                            for e in errors)


def test_a_worker_stopping_while_it_bisects_a_batch_leaves_the_rest_queued_uncounted(tmp_path):
    """SIGTERM while a failed batch is being split: the resync in hand ends, no further half is tried, and the
    events not settled go back to the queue without spending an attempt."""
    calls = []
    worker: Worker

    def process(batch):
        calls.append([o.order_id for o in batch.orders])
        worker.stopping.set()  # serve is stopping while this resync runs
        raise RuntimeError("a bug")

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        _enqueue_orders(ledger, "ABCD")
        worker = Worker(Config(), ledger, None, process=process, clock=Ticks())  # type: ignore[arg-type]
        assert worker.process_batch() == 0
        assert calls == [["A", "B", "C", "D"]]
        assert _attempts(ledger) == {"A": 0, "B": 0, "C": 0, "D": 0}


def _outage_claims(worker: Worker, ticks: Ticks, claims: int) -> None:
    """``claims`` claims, each after the worker's back-off."""
    for _ in range(claims):
        worker.process_batch()
        ticks.now += worker.backing_off()


def test_a_5xx_that_one_event_always_causes_is_isolated_once_the_back_off_grew(tmp_path):
    """SendGrid answers HTTP 500 to every upsert that carries one contact (the retry layer's retries spent): an
    outage at first (no attempt spent, the worker backs off), but after PROBE_AFTER of them in a row the batch
    is tried in halves: the 49 good events are done within ``2·⌈log2 50⌉ + 2`` resyncs. The one failing 5xx alone
    spends no attempt (a 5xx may be the ESP's own: see the next test): it is a suspect, resynced alone, apart
    from the rest, with a back-off of its own that does not hold them, until the give-up (6 h), then failed and
    kept. (Before: counted at each claim, failed within seconds.)"""
    from sync.errors import DestinationError

    sizes = []

    def process(batch):
        ids = [o.order_id for o in batch.orders]
        sizes.append(ids if len(ids) == 1 else len(ids))
        if "POISON" in ids:
            raise DestinationError(f"SendGrid upsert {len(ids)} contacts: HTTP 500", status=500, transient=True)

    ticks, wall = Ticks(), [AS_OF_DT]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        _enqueue_orders(ledger, [f"G{i}" for i in range(20)] + ["POISON"] + [f"H{i}" for i in range(29)])
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0])
        _outage_claims(worker, ticks, PROBE_AFTER)
        assert sizes == [50] * PROBE_AFTER and ledger.event_counts()["done"] == 0
        assert worker.process_batch() == 49
        assert len(sizes) - PROBE_AFTER <= 2 * 6 + 2
        assert worker.backing_off() == 0  # the others are not held
        _enqueue_orders(ledger, ["NEW"])
        sizes.clear()
        assert worker.process_batch() == 1 and sizes == [["NEW"]]  # the suspect's back-off: not called
        wall[0] += timedelta(seconds=worker.suspects_back_off())  # (not claimed before)
        ticks.now += worker.suspects_back_off()
        assert worker.process_batch() == 0 and sizes == [["NEW"], ["POISON"]]  # alone, apart
        assert worker.backing_off() == 0 and worker.suspects_back_off() > 0
        assert _attempts(ledger) == {"POISON": 0}
        wall[0] += timedelta(hours=6)
        ticks.now += BACKOFF_MAX
        worker.process_batch()
        assert ledger.event_counts() == {"queued": 0, "processing": 0, "done": 50, "failed": 1}


def test_the_one_event_needing_a_call_in_an_outage_is_not_failed(tmp_path):
    """Mailchimp is down for an hour (every call 503), while all the queued events but one plan no call (their
    resync succeeds with nothing to send): the probe's halves do not fail alike, the bisection walks down to the
    one event needing a call. Alone it fails 5xx again and again: it waits uncounted and goes through when
    Mailchimp is back. (Before: counted at each claim, failed within a minute, in an outage.)"""
    from sync.errors import DestinationError

    ticks, wall = Ticks(), [AS_OF_DT]
    start = wall[0]

    def process(batch):
        if any(o.order_id == "CALL" for o in batch.orders) and wall[0] - start < timedelta(hours=1):
            raise DestinationError("Mailchimp: HTTP 503", status=503, transient=True)

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        _enqueue_orders(ledger, [f"N{i}" for i in range(7)] + ["CALL"] + [f"N{i}" for i in range(7, 20)])
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0])
        while wall[0] - start < timedelta(hours=1, minutes=10):
            worker.process_batch()
            assert ledger.event_counts()["failed"] == 0
            step = max(worker.backing_off(), 5.0)
            ticks.now += step
            wall[0] += timedelta(seconds=step)
        assert ledger.event_counts() == {"queued": 0, "processing": 0, "done": 21, "failed": 0}


def test_an_event_causing_a_5xx_in_each_half_is_not_taken_for_an_outage(tmp_path):
    """Two events that SendGrid always answers 500 to, one in each half: both halves fail 5xx, so one event of
    each is tried alone; one goes through, so it is no outage: the halves are split on, the 48 good events are
    done within an hour, the two wait uncounted apart. (Before: taken for an outage at every probe, the queue
    stalled 6 h, then all 50 failed.)"""
    from sync.errors import DestinationError

    def process(batch):
        if any(o.order_id.startswith("POISON") for o in batch.orders):
            raise DestinationError(f"SendGrid upsert {len(batch.events)}: HTTP 500", status=500, transient=True)

    ticks, wall = Ticks(), [AS_OF_DT]
    start = wall[0]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        _enqueue_orders(ledger, [f"G{i}" for i in range(10)] + ["POISON1"] + [f"H{i}" for i in range(20)]
                        + ["POISON2"] + [f"K{i}" for i in range(18)])
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0])
        while wall[0] - start < timedelta(hours=1):
            worker.process_batch()
            step = max(worker.backing_off(), 5.0)
            ticks.now += step
            wall[0] += timedelta(seconds=step)
        assert ledger.event_counts() == {"queued": 2, "processing": 0, "done": 48, "failed": 0}
        assert _attempts(ledger) == {"POISON1": 0, "POISON2": 0}


def test_a_real_outage_fails_both_halves_and_spends_no_attempt_while_probed(tmp_path):
    """Every batch answered 500: once probed, four more calls per claim (both halves fail, and one event of each
    alone: an outage), nothing counted, the back-off goes on."""
    from sync.errors import DestinationError

    sizes = []

    def process(batch):
        sizes.append(len(batch.events))
        raise DestinationError("Mailchimp: HTTP 503", status=503, transient=True)

    ticks = Ticks()
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        _enqueue_orders(ledger, "ABCDEFGH")
        worker = Worker(Config(), ledger, None, process=process, clock=ticks)  # type: ignore[arg-type]
        _outage_claims(worker, ticks, PROBE_AFTER + 1)
        assert worker.process_batch() == 0 and worker.backing_off() > 0
        assert sizes == [8] * PROBE_AFTER + [8, 4, 4, 1, 1] * 2
        assert set(_attempts(ledger).values()) == {0}


def test_two_poison_events_with_one_error_text_one_in_each_half_are_still_isolated(tmp_path):
    """Two bad events, one in each half, failing with the same error: the events tried alone (one of each half)
    do not both fail, so the halves are split further: the good events are done, none spending an attempt (what a
    claim could not settle within its resyncs waits uncounted for the next claim), whichever events are picked
    (seeds), even a bad one. Before: taken for our own bug failing every batch, all 64 failed."""
    sizes: list[int] = []

    def process(batch):
        sizes.append(len(batch.events))
        if any(o.order_id.startswith("BAD") for o in batch.orders):
            raise ValueError("order has no line items")

    ids = [f"G{i}" for i in range(64)]
    ids[5], ids[60] = "BAD1", "BAD2"
    for seed in range(12):
        with Ledger.connect(f"sqlite:///{tmp_path / f'l{seed}.db'}") as ledger:
            _enqueue_orders(ledger, ids)
            # one attempt each: an event that spends one is failed at once
            worker = Worker(Config(), ledger, None, process=process, max_attempts=1,  # type: ignore[arg-type]
                            rng=random.Random(seed))
            for _ in range(10):
                if not ledger.event_counts()["queued"]:
                    break
                worker.process_batch()
                assert len(sizes) <= 2 * 6 + 2  # a claim's resyncs are capped
                sizes.clear()
            assert ledger.event_counts() == {"queued": 0, "processing": 0, "done": 62, "failed": 2}


def test_an_error_naming_its_batch_is_split_within_the_budget_and_counts_only_events_alone(tmp_path):
    """A 404 for a missing list whose text names the batch's size fails every batch: 500 events are split within
    ``2·⌈log2 500⌉ + 2`` resyncs (not 999), and only the events that failed alone spend an attempt."""
    from sync.errors import DestinationError

    sizes = []

    def process(batch):
        sizes.append(len(batch.events))
        raise DestinationError(f"SendGrid upsert {len(batch.events)} contacts: HTTP 404: list not found", status=404)

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        _enqueue_orders(ledger, [f"G{i}" for i in range(500)])
        worker = Worker(Config(), ledger, None, process=process)  # type: ignore[arg-type]
        assert worker.process_batch() == 0
        assert len(sizes) <= 2 * 9 + 2
        attempts = _attempts(ledger)
        assert sizes.count(1) == sum(attempts.values()) >= 1 and set(attempts.values()) == {0, 1}


def test_the_order_stores_disk_full_spends_no_attempt(tmp_path):
    """DuckDB cannot write the order store (No space left on device): about the machine, as the ledger's disk
    full: the events wait uncounted and the worker backs off (before: counted and split, failed after 5 claims)."""
    import duckdb

    sizes = []

    def process(batch):
        sizes.append(len(batch.events))
        raise duckdb.IOException('Could not write file "orders.duckdb.wal": No space left on device')

    ticks = Ticks()
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        _enqueue_orders(ledger, "ABCD")
        worker = Worker(Config(), ledger, None, process=process, clock=ticks)  # type: ignore[arg-type]
        _outage_claims(worker, ticks, 6)
        assert sizes == [4] * 6
        assert set(_attempts(ledger).values()) == {0}
        assert ledger.event_counts()["failed"] == 0


def test_the_lease_heartbeat_while_a_batch_is_bisected_renews_only_the_events_not_settled(tmp_path, caplog):
    """The heartbeat beats while halves are resynced: events already done (or sent back) are no longer renewed,
    and are not reported as taken over by another worker (before: a false WARNING at each beat)."""
    import logging
    import time

    def process(batch):
        time.sleep(0.25)  # three beats of the lease (stale_after 0.3 s: one every 0.1 s)
        if any(o.order_id == "BAD" for o in batch.orders):
            raise RuntimeError("cannot plan order BAD")

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger, caplog.at_level(logging.WARNING):
        _enqueue_orders(ledger, ["A", "B", "C", "BAD"])
        worker = Worker(Config(), ledger, None, process=process, stale_after=0.3)  # type: ignore[arg-type]
        assert worker.process_batch() == 3
    assert "taken over by another worker" not in caplog.text


def _bad_ones(batch) -> None:
    """The resync of a batch holding a BAD order fails (the event's own fault)."""
    if any(o.order_id.startswith("BAD") for o in batch.orders):
        raise ValueError("order has no line items")


def _drain_all(ledger: Ledger, worker: Worker) -> dict[str, int]:
    """Claim until nothing is queued (each claim right after the last: no back-off in these tests)."""
    for _ in range(200):
        if not ledger.event_counts()["queued"]:
            break
        worker.process_batch()
        worker.retry_at = None
    return ledger.event_counts()


@pytest.mark.parametrize("ids, bad", [
    (["BAD1", "G1", "G2", "BAD2"], 2),  # the pick of a half fails: the rest of that half was never tried alone
    (["G0", "G1", "BAD1", "G3", "G4", "G5", "BAD2", "G7"], 2),  # halves of 4 whose middle events are both bad
])
def test_good_events_never_spend_an_attempt_for_bad_events_in_their_batch(tmp_path, ids, bad):
    """Bad events spread through a batch, one attempt each (an event counted once is failed): only the bad ones
    end failed, whatever the events tried alone were. Before: the rest of a half whose picked event failed
    alone was counted with the half's old failure without a resync; halves of a few events whose picks were
    both bad were taken for our own bug failing every batch (all counted). (Picks are the halves' middle events:
    an incident can be replayed.)"""
    for seed in range(4):
        with Ledger.connect(f"sqlite:///{tmp_path / f'l{seed}.db'}") as ledger:
            _enqueue_orders(ledger, ids)
            worker = Worker(Config(), ledger, None, process=_bad_ones, max_attempts=1,  # type: ignore[arg-type]
                            rng=random.Random(seed))
            assert _drain_all(ledger, worker) == {"queued": 0, "processing": 0, "done": len(ids) - bad,
                                                  "failed": bad}


def test_a_half_failing_with_its_own_error_is_not_taken_for_an_outage_nor_charged_to_the_others(tmp_path):
    """The ESP answers 500 to any call carrying P1, and N2 cannot be resynced (its own error); the batch is probed
    once the back-off grew (:data:`PROBE_AFTER`): G0 goes through, then the half [P1, N2] fails and so does each of
    them alone. Each failed alone is settled so: N2 spends an attempt with its own error, P1 (a 5xx while G0 went
    through) waits as a suspect, uncounted. Before: the claim's resyncs spent, the last half's error (N2's
    ``ValueError``) was handed back as if it were an outage, and every event left (P1 too) was charged with it."""
    from sync.errors import DestinationError

    calls: list[list[str]] = []
    down = [True]

    def process(batch):
        ids = [o.order_id for o in batch.orders]
        calls.append(ids)
        if down[0] or "P1" in ids:
            raise DestinationError("Mailchimp: HTTP 500", status=500, transient=True)
        if "N2" in ids:
            raise ValueError("order N2 has no line items")

    ticks, wall = Ticks(), [AS_OF_DT]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        _enqueue_orders(ledger, ["G0", "P1", "N2"])
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0])
        _outage_claims(worker, ticks, PROBE_AFTER)  # the whole ESP down: an outage, nothing counted
        down[0] = False
        calls.clear()
        assert worker.process_batch() == 1
        assert calls == [["G0", "P1", "N2"], ["G0"], ["P1", "N2"], ["P1"], ["N2"]]
        status = _statuses(ledger)
        assert status["G0"][0] == "done"
        assert status["N2"] == ("queued", "ValueError: order N2 has no line items")
        assert status["P1"][0] == "queued" and "HTTP 500" in status["P1"][1]
        assert _attempts(ledger) == {"P1": 0, "N2": 1}  # only N2 spent one, for its own error


def test_a_5xx_alone_beside_an_error_of_its_own_is_a_suspect_not_an_outage(tmp_path):
    """No outage at all: the ESP answers 500 to any call carrying P0 or P1, N2 and N4 cannot be resynced (each its
    own error), G3 and G5 are good. The halves [P0 P1 N2] (500) and [G3 N4 G5] (N4's error) fail; P1 alone gets a
    500, N4 alone its own error: the ESP answered, so P1 is a suspect and N4 spends its attempt. Before: nothing had
    gone through, so P1's 500 was taken for an outage every claim: all six events, the good ones too, were given up
    at 6 h ("gave up waiting for the outage")."""
    from sync.errors import DestinationError

    def process(batch):
        ids = [o.order_id for o in batch.orders]
        if any(i.startswith("P") for i in ids):
            raise DestinationError("Mailchimp: HTTP 500", status=500, transient=True)
        named = [i for i in ids if i.startswith("N")]
        if named:
            raise ValueError(f"order {named[0]} has no line items")

    ticks, wall = Ticks(), [AS_OF_DT]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        _enqueue_orders(ledger, ["P0", "P1", "N2", "G3", "N4", "G5"])
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0], rng=random.Random(1))
        start = ticks.now
        while ticks.now < start + 3600 and ledger.claimable_count() + ledger.event_counts()["processing"]:
            step = 5.0 + worker.backing_off()
            ticks.now += step
            wall[0] += timedelta(seconds=step)
            if ledger.claimable_count():
                worker.process_batch()
        status = _statuses(ledger)
        assert status["G3"][0] == status["G5"][0] == "done"  # within the hour
        assert status["N2"] == ("failed", "ValueError: order N2 has no line items")
        assert status["N4"] == ("failed", "ValueError: order N4 has no line items")
        assert all(status[p][0] != "done" and "HTTP 500" in status[p][1] for p in ("P0", "P1"))
