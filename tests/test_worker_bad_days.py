"""The worker's bad days: many bad events in one batch, a suspect's long back-off, one ESP's Retry-After."""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta, timezone

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

try:
    from tests import test_worker
    from tests.test_history_webhooks import SECOND
except ImportError:  # tests/ itself on sys.path
    import test_worker  # type: ignore[no-redef]
    from test_history_webhooks import SECOND  # type: ignore[no-redef]

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


def _bad_day(tmp_path, n: int, n_bad: int, seed: int) -> tuple[dict[str, tuple[str, str | None]], float, float]:
    """``n`` events, ``n_bad`` of them bad (each failing with an error naming itself), spread at random; one
    worker claims through simulated time as ``run_forever`` waits (its back-off, then the 5 s debounce), the
    wall clock (events' ages, their ``not_before``, the 6 h give-up) moving with it, until nothing is queued
    (at most 8 h). Every claim stays within its ``2·⌈log2 n⌉ + 2`` resyncs. Returns every event's (status,
    error), the hours it took and the hours until the last good event was done (None: not every one was)."""
    rng = random.Random(seed)
    bad = set(rng.sample(range(n), n_bad))
    ids = [f"BAD{i}" if i in bad else f"G{i}" for i in range(n)]
    sizes: list[int] = []

    def process(batch):
        sizes.append(len(batch.events))
        _own_fault(batch)

    ticks, wall = Ticks(), [outage.AS_OF_DT]
    good_done = None
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        enqueue_orders(ledger, ids)
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0], rng=random.Random(seed))
        while ledger.event_counts()["queued"] and wall[0] - outage.AS_OF_DT < timedelta(hours=8):
            step = 5.0 + worker.backing_off()
            ticks.now += step
            wall[0] += timedelta(seconds=step)
            if ledger.claimable_count():
                sizes.clear()
                worker.process_batch()
                assert len(sizes) <= _resync_budget(len(ids))  # a claim's resyncs stay capped
                if good_done is None and ledger.event_counts()["done"] == n - n_bad:
                    good_done = (wall[0] - outage.AS_OF_DT).total_seconds() / 3600
        assert worker.metrics.events["failed"] == n_bad
        return _finished(ledger), (wall[0] - outage.AS_OF_DT).total_seconds() / 3600, good_done


@pytest.mark.parametrize("seed", range(8))
def test_good_events_end_synced_when_a_batch_holds_many_bad_events(tmp_path, seed):
    """40 events, 10 to 20 of them bad, spread at random (seeds): claim after claim every good event ends
    done, none failed nor counted, and each bad event ends failed with its own error. Before: when the two
    events tried alone (one of each half) were both bad, every event of the batch spent an attempt, and after
    5 such claims good events were failed for good."""
    n_bad = random.Random(seed).randint(10, 20)
    finished, _, _ = _bad_day(tmp_path, 40, n_bad, seed)
    assert {i for i, (status, _) in finished.items() if status == "done"} == {i for i in finished if i[0] == "G"}
    assert {i: f for i, (status, f) in finished.items() if status == "failed"} == {
        i: f"ValueError: order {i} has no line items" for i in finished if i.startswith("BAD")}


def test_good_events_end_synced_when_a_batch_is_mostly_bad_events(tmp_path):
    """200 events, 180 of them bad, each naming itself in its error: a claim failing lone events with errors
    of their own (not the one that failed the batch) makes progress, so the worker does not back off claim
    after claim; every good event ends done well within the 6 h give-up (0.1 h; 0.4 h before the events that
    failed alone were resynced apart), each bad one failed with its own error. Before: such claims backed off (5 s doubling to 300 s) as if our own bug failed every batch: after
    6 h, 4 good events and 75 bad ones were given up (and 200 events with 140 bad took 4.4 h)."""
    finished, hours, _ = _bad_day(tmp_path, 200, 180, 7)
    assert not {i: f for i, (status, f) in finished.items() if i[0] == "G" and status != "done"}
    assert {i: f for i, (status, f) in finished.items() if status == "failed"} == {
        i: f"ValueError: order {i} has no line items" for i in finished if i.startswith("BAD")}
    assert hours < 2


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


@pytest.fixture
def two_audiences(tmp_path, mailchimp_fake, monkeypatch):
    """The demo shop synced to two destinations: mailchimp-demo (audience aud1) and mc2 (aud2), both on the fake
    Mailchimp; the client's own retries off (a 429's Retry-After is the worker's to honour)."""
    from sync.config import load_config
    from sync.ledger import open_ledger
    from sync.serve.scheduler import run_full_sync
    from sync.settings import load_settings

    path = test_worker.make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    path.write_text(path.read_text(encoding="utf-8") + SECOND, encoding="utf-8")
    mailchimp_fake.add_list("aud2")
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=test_worker.AS_OF, kind="sync")
    monkeypatch.setenv("RFMSYNC_HTTP_MAX_ATTEMPTS", "1")
    return cfg, load_settings()


def test_one_esps_retry_after_pauses_only_its_own_work(two_audiences, mailchimp_fake, caplog):
    """aud1's Mailchimp answers 429 with Retry-After: 600 to every call, aud2's works: the worker does not pause
    (before: nobody's events moved for 10 minutes); the order reaches aud2 at once, and so does a later one; aud1
    gets nothing, its work waits unclaimed (no claim at each debounce) and goes through once its 600 s are over
    and it answers again. The events are done then, none counted."""
    from sync.ledger import Ledger, ledger_url

    cfg, settings = two_audiences
    ticks, wall = Ticks(), [datetime.now(timezone.utc)]
    with Ledger.connect(ledger_url(cfg, settings), clock=lambda: wall[0]) as ledger:
        (email, cid), (email2, cid2) = _churned(ledger, 2)
        assert all(mailchimp_fake.tags_of(e, aud) == {"Winback"} for e in (email, email2) for aud in ("aud1", "aud2"))
        mailchimp_fake.fail(429, None, fraction=1.0, retry_after="600", path="/lists/aud1")
        worker = Worker(cfg, ledger, settings, as_of=lambda: test_worker.AS_OF, clock=ticks, now=lambda: wall[0])
        test_worker.queue_order(ledger, "W-2", cid)
        caplog.set_level(logging.INFO, "sync.serve.worker")
        worker.drain()
        assert worker.backing_off() == 0
        assert "Winback" not in mailchimp_fake.tags_of(email, "aud2")
        assert mailchimp_fake.tags_of(email, "aud1") == {"Winback"}
        assert "mailchimp-demo is rate limited (it asked to wait 600 s): its work waits 600 s" in caplog.text
        ticks.now += 60
        wall[0] += timedelta(seconds=60)
        test_worker.queue_order(ledger, "W-3", cid2)  # a minute later: aud2 still gets it at once
        worker.drain()
        assert "Winback" not in mailchimp_fake.tags_of(email2, "aud2")
        assert mailchimp_fake.tags_of(email2, "aud1") == {"Winback"}
        assert ledger.claimable_count() == 0 and ledger.event_counts()["queued"] == 2
        mailchimp_fake._faults.clear()  # aud1 answers again
        ticks.now += 600
        wall[0] += timedelta(seconds=600)
        worker.drain()
        assert "Winback" not in mailchimp_fake.tags_of(email, "aud1") | mailchimp_fake.tags_of(email2, "aud1")
        assert ledger.event_counts() == {"queued": 0, "processing": 0, "done": 2, "failed": 0}
        assert worker.metrics.events["done"] == 2 and worker.metrics.events["failed"] == 0
        assert 'rfmsync_esp_errors_total{destination="mailchimp-demo"} 1' in worker.metrics.render()


def _churned(ledger: Ledger, n: int) -> list[tuple[str, str]]:
    """(email, customer_id) of ``n`` synced customers in the Churn segment (tag "Winback")."""
    state = ledger.load_state(test_worker.DEST)
    return [(k, s.customer_id) for k, s in sorted(state.items()) if s.tags == {"Winback"}][:n]


@pytest.mark.parametrize("status, retry_after, named, paused", [
    (429, 600, True, True), (429, None, True, True), (503, 120, True, True),
    (503, None, True, False),  # a 5xx without Retry-After: an outage (or a suspect), the worker's back-off
    (429, 600, False, False),  # not a destination's (the CRM's, or the plan's reads): the worker's back-off
])
def test_only_a_named_destinations_rate_limit_pauses_it_alone(status, retry_after, named, paused):
    from sync.errors import DestinationError
    from sync.serve.pauses import rate_limited

    exc = DestinationError(f"HTTP {status}", status=status, retry_after=retry_after, transient=True)
    if named:
        exc.destination = "mc"  # type: ignore[attr-defined]  (as the resync names it)
    assert rate_limited(exc) == ("mc" if paused else None)
    assert rate_limited(DestinationError("HTTP 401", status=401)) is None


def test_events_resynced_without_a_paused_destination_are_never_done_before_it_had_them(tmp_path):
    """mc is rate limited (429, Retry-After: 60) and mc2 is not: the batch is resynced for mc2 at once; if mc's
    pause ends while that resync runs, the events still go back to the queue (claimable at once) instead of done,
    and the next claim resyncs them for every destination; a rate limit met while a batch is split (here the
    first half) pauses mc too, the events released at once for the next claim, the worker not backing off."""
    from sync.errors import DestinationError

    cfg = Config(destinations=[{"name": n, "type": "mailchimp", "audience": a, "segments": {"Churn": "W"}}
                               for n, a in (("mc", "aud1"), ("mc2", "aud2"))])
    calls: list[tuple[int, list[str] | None]] = []
    ticks = Ticks()
    answers = ["429", "ok+60", "ok", "bad", "429", "ok", "ok"]

    def process(batch):
        calls.append((len(batch.events), batch.destinations))
        answer = answers.pop(0)
        if answer == "ok+60":
            ticks.now += 60  # mc's pause is over meanwhile
        if answer == "429":
            exc = DestinationError("Mailchimp: HTTP 429", status=429, retry_after=60, transient=True)
            exc.destination = "mc"  # type: ignore[attr-defined]  (as the resync names it)
            raise exc
        if answer == "bad":
            raise ValueError("order has no line items")

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        enqueue_orders(ledger, ["A", "B"])
        worker = Worker(cfg, ledger, None, process=process, clock=ticks)  # type: ignore[arg-type]
        assert worker.process_batch() == 0 and ledger.event_counts()["done"] == 0  # released: none completed
        assert calls == [(2, None), (2, ["mc2"])] and ledger.claimable_count() == 2
        assert not worker.processed_ids and worker.metrics.events["done"] == 0
        assert worker.process_batch() == 2 and ledger.event_counts()["done"] == 2
        assert calls[2] == (2, None)
        enqueue_orders(ledger, ["C", "D"])
        worker.process_batch()  # the batch fails (its own fault), its first half meets mc's 429
        assert calls[3:] == [(2, None), (1, None)] and worker.backing_off() == 0
        assert worker.paused() == {"mc": 60} and ledger.claimable_count() == 2
        worker.process_batch()
        assert calls[5:] == [(2, ["mc2"])]


OWN_BUGS = {"one text": lambda batch: "KeyError in our plan code: 'segment'",
            # fix42: our bug's message naming the record it fails on, or the batch's size, differs event by event:
            # it is still no progress (no resync of the worker went through lately), not poison events
            "naming the order": lambda batch: f"KeyError: {batch.orders[0].order_id!r}",
            "naming the size": lambda batch: f"planned {len(batch.events)} contacts, the plan holds one less"}


@pytest.mark.parametrize("bug", list(OWN_BUGS))
def test_our_own_bug_failing_every_batch_backs_the_worker_off(tmp_path, caplog, bug):
    """Our own bug fails every resync, whatever the events (a KeyError in the plan, a 404 'missing list'): each
    claim's bisection fails one to three events alone, which is no progress, so the worker backs off (5 s doubling
    up to 300 s) instead of claiming again at the next debounce: hour after hour at most 30 claims (the waits
    reach 150–300 s after 7), their resyncs and log lines capped with them, the halving logged once a claim; every
    event ends failed, with its own error or, after 6 h, the give-up error. Before: a failed lone event counted as
    progress, no back-off: 65 claims, 635 resyncs and 635 log lines in the first 6 minutes."""
    calls: list[int] = []

    def process(batch):
        calls.append(len(batch.events))
        raise ValueError(OWN_BUGS[bug](batch))

    ticks, wall = Ticks(), [outage.AS_OF_DT]
    hours: list[tuple[int, int, int, int]] = []  # per simulated hour: claims, resyncs, log lines, halvings
    caplog.set_level(logging.INFO, "sync")
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        enqueue_orders(ledger, [f"O{i}" for i in range(40)])
        worker = Worker(Config(), ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0], rng=random.Random(7))
        for hour in range(7):
            claims, resyncs = 0, len(calls)
            caplog.clear()
            while ticks.now < 1000 + 3600 * (hour + 1) and ledger.event_counts()["queued"]:
                step = 5.0 + worker.backing_off()  # what run_forever waits: its back-off, then the debounce
                ticks.now += step
                wall[0] += timedelta(seconds=step)
                if ledger.claimable_count():
                    worker.process_batch()
                    claims += 1
            halvings = sum("resyncing them in halves" in r.getMessage() for r in caplog.records)
            hours.append((claims, len(calls) - resyncs, len(caplog.records), halvings))
        assert ledger.event_counts()["queued"] == 0 and ledger.event_counts()["failed"] == 40
        errors = {error for status, error in _finished(ledger).values()}
    own = "ValueError: KeyError in our plan code: 'segment'"
    if bug == "one text":
        assert own in errors and all(e == own or e.startswith("gave up waiting for") and e.endswith(own)
                                     for e in errors)
    for claims, resyncs, lines, halvings in hours:
        assert claims <= 30 and resyncs <= claims * _resync_budget(40) and lines <= claims * 6
        assert halvings <= claims


def test_a_resync_leaving_a_paused_destination_out_keeps_its_suspect(tmp_path):
    """POISON makes mc answer 500 (a suspect, resynced apart); mc is then rate limited (429) and POISON resynced
    for mc2 only, which goes through: that says nothing of mc's 500, POISON stays a suspect. Once mc's pause is
    over, the next claim resyncs N1 without it (done) and POISON alone (it waits again, uncounted); the worker
    does not back off. Before: the resync without mc cleared POISON and the outage count, it rejoined the batch,
    which failed with the 500, taken for an outage: nothing done, the worker backing off."""
    from sync.errors import DestinationError
    from sync.serve.worker import PROBE_AFTER

    cfg = Config(destinations=[{"name": n, "type": "mailchimp", "audience": a, "segments": {"Churn": "W"}}
                               for n, a in (("mc", "aud1"), ("mc2", "aud2"))])
    limited, calls = [False], []

    def process(batch):
        ids = [o.order_id for o in batch.orders]
        calls.append(ids if len(ids) == 1 else len(ids))
        if batch.destinations is None and (limited[0] or "POISON" in ids):  # mc's answers; mc2 is fine
            exc = DestinationError(f"Mailchimp: HTTP {429 if limited[0] else 500}", status=429 if limited[0] else
                                   500, retry_after=60 if limited[0] else None, transient=True)
            exc.destination = "mc"  # type: ignore[attr-defined]  (as the resync names it)
            raise exc

    ticks, wall = Ticks(), [outage.AS_OF_DT]

    def advance(seconds: float) -> None:
        ticks.now += seconds
        wall[0] += timedelta(seconds=seconds)

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        enqueue_orders(ledger, [f"G{i}" for i in range(8)] + ["POISON"])
        worker = Worker(cfg, ledger, None, process=process, clock=ticks,  # type: ignore[arg-type]
                        now=lambda: wall[0], rng=random.Random(1))
        for _ in range(PROBE_AFTER + 1):  # an outage at first, then probed: the 8 others are done
            worker.process_batch()
            advance(worker.backing_off() + worker.suspects_back_off())
        assert ledger.event_counts()["done"] == 8 and calls[-1] == ["POISON"]
        limited[0] = True
        enqueue_orders(ledger, ["N1"])
        assert worker.process_batch() == 0  # mc paused: N1 and POISON resynced for mc2, released for mc
        assert worker.paused() == {"mc": 60} and calls[-3:] == [["N1"], ["N1"], ["POISON"]]
        limited[0] = False
        advance(60)
        del calls[:]
        assert worker.process_batch() == 1 and worker.backing_off() == 0
        assert calls == [["N1"], ["POISON"]]
        finished = _finished(ledger)
        assert finished["N1"][0] == "done" and finished["POISON"][0] == "queued"
        assert finished["POISON"][1].startswith("DestinationError: Mailchimp: HTTP 500 (alone; tried again in")


def test_our_own_bug_backs_off_every_worker_sharing_the_ledger(tmp_path):
    """Two workers on one ledger (threads of ``[serve] workers``, or hosts), our own bug failing every resync: a
    claim that backs its worker off leaves its events unclaimable for as long (``events.not_before``), those it
    counted too, so the other worker does not claim them at its next debounce: the claims an hour of both stay
    within one worker's bound. Before: released with no wait, the other worker claimed them at once (4 workers
    made 84 claims an hour instead of 20)."""
    calls: list[int] = []

    def process(batch):
        calls.append(len(batch.events))
        raise ValueError(OWN_BUGS["one text"](batch))

    ticks, wall = Ticks(), [outage.AS_OF_DT]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        enqueue_orders(ledger, [f"O{i}" for i in range(40)])
        workers = [Worker(Config(), ledger, None, name=f"w{i}", process=process, clock=ticks,  # type: ignore[arg-type]
                          now=lambda: wall[0], rng=random.Random(i)) for i in range(2)]
        workers[0].process_batch()
        assert workers[0].backing_off() > 0 and ledger.event_counts()["queued"] == 40
        assert ledger.claimable_count() == 0  # nobody's until the back-off is over
        resyncs = len(calls)
        assert workers[1].process_batch() == 0 and len(calls) == resyncs
        hours = [0, 0, 0]
        while ticks.now + 5 < 1000 + 3 * 3600 and ledger.event_counts()["queued"]:
            ticks.now += 5.0  # each worker: its back-off, then the 5 s debounce
            wall[0] += timedelta(seconds=5.0)
            for worker in workers:
                if not worker.backing_off() and ledger.claimable_count():
                    worker.process_batch()
                    hours[int((ticks.now - 1000) // 3600)] += 1
    assert all(claims <= 30 for claims in hours), hours


def test_a_worker_running_for_months_keeps_a_bounded_list_of_the_events_it_completed(tmp_path, monkeypatch):
    """``processed_ids`` kept every id a worker ever completed: one per event for as long as serve runs (millions
    in a month at 50 orders a second). It keeps the latest ``processed_keep``; the count of all is ``completed``,
    and ``drain()`` still returns the events completed."""
    monkeypatch.setattr(Worker, "processed_keep", 3)
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        worker = Worker(Config(), ledger, None, process=lambda batch: None, batch_limit=2)  # type: ignore[arg-type]
        enqueue_orders(ledger, [f"O{i}" for i in range(7)])
        assert worker.drain() == 7 and worker.completed == 7
        assert len(worker.processed_ids) == 3 and ledger.event_counts()["done"] == 7
