"""The resync worker, the incremental resync against the fake Mailchimp, several workers, the schedule."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest

from sync.config import load_config
from sync.planning.planner import plan_all
from sync.errors import ConfigError
from sync.ingest import load_cut_points, segments_from_store
from sync.ledger import Ledger, open_ledger
from sync.ledger.codec import encode_records
from sync.pipeline import store_path
from sync.serve.generic import parse_generic
from sync.serve.resync import resync
from sync.serve.scheduler import CURSOR, Retry, Schedule, Scheduler, parse_every, run_full_sync
from sync.serve.webhooks import events_for
from sync.serve.worker import Worker
from sync.settings import load_settings
from sync.store import open_store

try:
    from tests.ledger_fixtures import Clock, clock, dead_owner, ledger_url  # noqa: F401
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import Clock, clock, dead_owner, ledger_url  # type: ignore # noqa: F401

AS_OF = date(2025, 6, 30)
DEST = "mailchimp-demo"


def make_shop(folder: Path, fake, monkeypatch, debounce: float = 0.2, customers: int = 250) -> Path:
    from sync.demodata import generate_shop

    cfg = generate_shop(folder, customers=customers, seed=3, as_of=AS_OF)
    text = cfg.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"')
    cfg.write_text(text + f"\n[serve]\ndebounce_seconds = {debounce}\n", encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", fake.url)
    monkeypatch.setenv("RFMSYNC_WEBHOOK_SECRET", "whsec-test")
    return cfg


@pytest.fixture
def shop(tmp_path, mailchimp_fake, monkeypatch):
    """A 250-customer demo shop, fully synced once to the fake Mailchimp as of AS_OF."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
    return path


def churned_contact(ledger: Ledger) -> tuple[str, str]:
    """(email, customer_id) of a synced customer in the Churn segment (tag "Winback")."""
    state = ledger.load_state(DEST)
    return next((k, s.customer_id) for k, s in sorted(state.items()) if s.tags == {"Winback"})


def audience(fake) -> dict[str, tuple[frozenset, dict]]:
    lst = fake.lists["aud1"]
    return {e: (frozenset(fake.tags_of(e)), dict(m["merge_fields"])) for e, m in lst.members.items()}


def queue_order(ledger: Ledger, order_id: str, customer_id: str, day: str = "2025-06-29", **extra) -> None:
    body = ('{"order_id": "%s", "customer_id": "%s", "ordered_at": "%sT12:00:00+05:00", "amount": "990000"}'
            % (order_id, customer_id, day)).encode()
    pairs = parse_generic(body)
    for key, payload, _ in events_for([], [], pairs):
        ledger.enqueue_event("generic", key, payload)


# ------------------------------------------------------------------------------------ incremental resync


def test_a_webhook_order_moves_only_that_customer_and_is_recorded_as_a_webhook_run(shop, mailchimp_fake):
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        email, cid = churned_contact(ledger)
        before = audience(mailchimp_fake)
        writes = mailchimp_fake.write_calls
        queue_order(ledger, "W-1", cid)
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF)
        assert worker.drain() == 1
        after = audience(mailchimp_fake)
        assert after[email][0] != {"Winback"} and "Winback" not in after[email][0]
        assert after[email][1]["RFM_SEG"] != before[email][1]["RFM_SEG"]
        assert {e for e in before if before[e] != after[e]} == {email}  # nobody else was touched
        assert mailchimp_fake.write_calls - writes <= 3  # one upsert, at most one tag off and one on
        run = ledger.recent_runs(1)[0]
        assert (run["kind"], run["destination"], run["status"]) == ("webhook", DEST, "succeeded")
        assert ledger.event_counts()["done"] == 1 and ledger.load_state(DEST)[email].tags == after[email][0]
        with open_store(store_path(cfg)) as con:  # the order is in the store for the next full run
            assert con.execute("SELECT count(*) FROM orders WHERE order_id = 'W-1'").fetchall() == [(1,)]
        # the same order again is a duplicate; a full segmentation of the same store agrees on this customer
        # (it may move a few others: new quantiles are exactly what the webhook path avoids)
        queue_order(ledger, "W-1", cid)
        assert ledger.queue_depth() == 0
        run = segments_from_store(cfg, ledger, settings, as_of=AS_OF, pull=False)
        try:
            [planned] = plan_all(cfg, run, ledger, settings)
        finally:
            run.close()
        assert email not in {c.key for c in planned.plan.changes}


def test_a_deleted_order_without_its_customer_re_scores_the_customer_it_belonged_to(shop, mailchimp_fake):
    from connectors.non_purchase import tombstone

    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        email, cid = churned_contact(ledger)
        queue_order(ledger, "W-9", cid)
        assert Worker(cfg, ledger, settings, as_of=lambda: AS_OF).drain() == 1
        assert "Winback" not in audience(mailchimp_fake)[email][0]
        # the shop deletes the order; its webhook no longer says whose it was
        gone = tombstone("W-9", datetime(2025, 6, 29, 13, tzinfo=timezone.utc))
        assert gone.customer_id == ""
        report = resync(cfg, ledger, settings, [gone], as_of=AS_OF)
        assert report.customers >= 1
        assert audience(mailchimp_fake)[email][0] == {"Winback"}  # back where the deleted order had moved it from
        with open_store(store_path(cfg)) as con:
            assert con.execute("SELECT customer_id, status FROM orders WHERE order_id = 'W-9'").fetchall() == [
                (cid, "cancelled")]


def test_without_a_full_run_the_first_resync_segments_everyone_once_and_saves_cut_points(tmp_path, mailchimp_fake,
                                                                                         monkeypatch):
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=60)
    cfg, settings = load_config(path), load_settings()
    from connectors.records import Contact, Consent

    orders = [o for o, _ in parse_generic(b'[{"order_id": "N1", "customer_id": "NEW", "ordered_at": '
                                          b'"2025-06-20T10:00:00Z", "amount": "100"}]')]
    contact = Contact("NEW", email="new.buyer@example.com", marketing_consent=Consent.YES)
    with open_ledger(cfg, settings) as ledger:
        from sync.api import pull

        pull(cfg, ledger, settings)  # the shop in the store (one customer alone is a collapse: recency_scores)
        report = resync(cfg, ledger, settings, orders, [contact], as_of=AS_OF)
        assert report.full_segmentation and report.customers == 1
        with open_store(store_path(cfg)) as con:
            assert load_cut_points(con) is not None
        assert set(mailchimp_fake.lists["aud1"].members) == {"new.buyer@example.com"}
        assert mailchimp_fake.member("new.buyer@example.com")["status"] == "subscribed"
        second = resync(cfg, ledger, settings, orders, [contact], as_of=AS_OF)  # cut points now exist
        assert not second.full_segmentation and second.reports[0].counts["planned"] == 0


def test_a_destination_busy_with_another_sync_puts_the_batch_back_in_the_queue(shop, mailchimp_fake):
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        email, cid = churned_contact(ledger)
        queue_order(ledger, "W-2", cid)
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF,
                        process=lambda b: resync(cfg, ledger, settings, b.orders, b.contacts, as_of=AS_OF,
                                                 lock_wait_seconds=0.3))
        with ledger.lock(f"sync:{DEST}"):  # a cron `rfmsync sync` holds the destination
            assert worker.process_batch() == 0
        assert ledger.event_counts()["queued"] == 1
        assert worker.metrics.events["retried"] == 1
        assert worker.drain() == 1 and "Winback" not in mailchimp_fake.tags_of(email)


def test_a_storm_of_updates_to_one_order_stores_its_last_version_with_its_items_once(tmp_path, mailchimp_fake,
                                                                                    monkeypatch):
    """A CRM sends 300 updates of one order within the debounce window (status, payment, an item replaced): one
    batch. The store holds the order's last version with the last version's line items, once; before, every
    version's items were inserted (600 rows for a 2-item order, the replaced item among them), and the customer's
    favourite category was counted from them."""
    from connectors.records import LineItem, Order

    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=60)
    cfg, settings = load_config(path), load_settings()
    at = datetime(2025, 6, 29, 12, tzinfo=timezone.utc)
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        _, cid = churned_contact(ledger)
        for n in range(300):
            items = (LineItem(sku="A", category="shoes", price=Decimal("100")),
                     LineItem(sku="B" if n < 299 else "C", category="bags" if n < 299 else "hats",
                              price=Decimal("50")))
            ledger.enqueue_event("generic", f"upd-{n}", encode_records(
                orders=[Order("STORM-1", cid, at, Decimal("150"), items=items)]))
        assert Worker(cfg, ledger, settings, as_of=lambda: AS_OF).drain() == 300
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT line_no, sku, category FROM line_items WHERE order_id = 'STORM-1' "
                           "ORDER BY line_no").fetchall() == [(1, "A", "shoes"), (2, "C", "hats")]
        assert con.execute("SELECT count(*) FROM orders WHERE order_id = 'STORM-1'").fetchall() == [(1,)]


def _append_export_row(shop: Path, order_id: str, customer_id: str, email: str) -> None:
    """The shop's next export now contains the order (same format as the demo's orders.csv)."""
    path = shop.parent / "orders.csv"
    with path.open("a", encoding="utf-8", newline="") as f:
        f.write(f"{order_id};29.06.2025 12:00;{customer_id};;{email};990\u00a0000,00;;Продажа\n")


def test_webhook_orders_survive_a_full_file_refresh_until_the_export_contains_them(shop, mailchimp_fake):
    from sync.store import webhook_records

    cfg, settings = load_config(shop), load_settings()
    new_buyer = (b'{"order_id": "W-NEW", "customer_id": "NEW-1", "ordered_at": "2025-06-28T10:00:00+05:00", '
                 b'"amount": "250000", "contact": {"email": "new.buyer@example.com", "marketing_consent": true}}')
    with open_ledger(cfg, settings) as ledger:
        email, cid = churned_contact(ledger)
        queue_order(ledger, "W-9", cid)
        for key, payload, _ in events_for([], [], parse_generic(new_buyer, cfg.timezone)):
            ledger.enqueue_event("generic", key, payload)
        assert Worker(cfg, ledger, settings, as_of=lambda: AS_OF).drain() == 3  # W-9; W-NEW and its contact
        moved = audience(mailchimp_fake)
        assert "Winback" not in moved[email][0] and "new.buyer@example.com" in moved

        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")  # the export has neither order yet
        after = audience(mailchimp_fake)
        assert after[email] == moved[email] and after["new.buyer@example.com"] == moved["new.buyer@example.com"]
        with open_store(store_path(cfg)) as con:
            assert con.execute("SELECT order_id, customer_id FROM orders WHERE order_id LIKE 'W-%' "
                               "ORDER BY 1").fetchall() == [("W-9", cid), ("W-NEW", "NEW-1")]
            assert con.execute("SELECT email FROM contacts WHERE customer_id = 'NEW-1'").fetchall() == [
                ("new.buyer@example.com",)]
            assert webhook_records(con) == {"order": {"W-9", "W-NEW"}, "contact": {"NEW-1"}}
        # a dry run / `rfmsync segments` reads the export itself, and sees the webhook orders too
        from sync.api import plan
        planned = plan(cfg, ledger, settings, as_of=AS_OF).planned
        assert [tuple(p.plan.changes) for p in planned] == [()]  # nothing to do: it agrees with the sync
        from sync.pipeline import compute_segments
        seg = compute_segments(cfg, AS_OF)
        try:
            assert seg.con.execute("SELECT segment FROM customer_segments WHERE customer_id = 'NEW-1'").fetchall()
        finally:
            seg.close()

        _append_export_row(shop, "W-9", cid, email)  # the export catches up with one of them
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        assert audience(mailchimp_fake)[email] == moved[email]
        with open_store(store_path(cfg)) as con:
            assert con.execute("SELECT count(*), sum(amount) FROM orders WHERE order_id = 'W-9'").fetchall() == [
                (1, 990000)]  # one copy: the file's
            assert webhook_records(con) == {"order": {"W-NEW"}, "contact": {"NEW-1"}}


# ------------------------------------------------------------------------------------ queue handling


def _enqueue(ledger: Ledger, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        ledger.enqueue_event("generic", f"k{i}", encode_records())


def test_two_workers_on_one_ledger_never_process_an_event_twice(ledger_url, tmp_path):
    from sync.config import Config

    cfg = Config()
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()
    one, two = Ledger.connect(ledger_url), Ledger.connect(ledger_url)
    try:
        _enqueue(one, 300)

        def process(name):
            def run(batch):
                with lock:
                    seen.extend((name, e.id) for e in batch.events)
                time.sleep(0.002)

            return run

        workers = [Worker(cfg, led, None, name=f"w{i}", batch_limit=7, process=process(f"w{i}"))  # type: ignore
                   for i, led in enumerate((one, two))]
        threads = [threading.Thread(target=w.drain) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        ids = [i for _, i in seen]
        assert len(ids) == len(set(ids)) == 300  # each event exactly once
        assert {name for name, _ in seen} == {"w0", "w1"}  # both took part
        assert set(workers[0].processed_ids).isdisjoint(workers[1].processed_ids)
        assert one.event_counts() == {"queued": 0, "processing": 0, "done": 300, "failed": 0}
    finally:
        one.close()
        two.close()


def test_a_consent_withdrawn_by_a_newer_event_another_worker_merged_first_is_not_undone(tmp_path, mailchimp_fake,
                                                                                        monkeypatch):
    """A new customer orders and agrees to the newsletter (event A), then withdraws his consent (event B). Worker 1
    claims A, but worker 2, claiming B meanwhile, reaches the order store first. A merged last must not give the
    consent back: the customer is created in Mailchimp without a subscription, and the store keeps the "no"."""
    from connectors.records import Consent, Contact, Order

    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=60)
    cfg, settings = load_config(path), load_settings()
    email = "new.buyer@example.com"
    at = datetime(2025, 6, 29, 12, tzinfo=timezone.utc)
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        ledger.enqueue_event("generic", "A", encode_records(
            orders=[Order("N1", "NEW", at, Decimal("990000"))],
            contacts=[Contact("NEW", email=email, marketing_consent=Consent.YES)]))
        time.sleep(0.01)
        ledger.enqueue_event("generic", "B", encode_records(contacts=[Contact("NEW", email=email,
                                                                            marketing_consent=Consent.NO)]))
        second = Worker(cfg, ledger, settings, name="w2", as_of=lambda: AS_OF)

        def held_up(batch):  # worker 1, its batch (A) claimed, reaches the store after worker 2 merged B
            assert [ev.dedupe_key for ev in batch.events] == ["A"] and second.process_batch() == 1
            return resync(cfg, ledger, settings, batch.orders, batch.contacts, as_of=AS_OF, received_at=batch.ages)

        first = Worker(cfg, ledger, settings, name="w1", batch_limit=1, process=held_up)
        assert first.process_batch() == 1
        assert ledger.event_counts()["done"] == 2
        assert mailchimp_fake.member(email)["status"] != "subscribed"
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = 'NEW'").fetchall() == [("no",)]
        assert con.execute("SELECT count(*) FROM orders WHERE order_id = 'N1'").fetchall() == [(1,)]


def test_a_long_batch_keeps_its_lease_by_heartbeat_and_nobody_else_takes_it(ledger_url):
    from sync.config import Config

    one, two = Ledger.connect(ledger_url), Ledger.connect(ledger_url)
    try:
        _enqueue(one, 3)
        stolen: list[int] = []

        def slow(batch):  # a resync far longer than the lease; another worker keeps trying meanwhile
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                stolen.extend(e.id for e in two.claim_events("thief", stale_after=0.4))
                time.sleep(0.05)

        worker = Worker(Config(), one, None, stale_after=0.4, process=slow)  # type: ignore[arg-type]
        assert worker.heartbeat_seconds == pytest.approx(0.4 / 3)
        assert worker.process_batch() == 3
        assert stolen == [] and one.event_counts()["done"] == 3
        # without a heartbeat the lease lapses and the events go to the next worker
        _enqueue(one, 1, start=100)
        [event] = one.claim_events("silent", stale_after=0.4)
        time.sleep(0.5)
        assert [e.id for e in two.claim_events("rescuer", stale_after=0.4)] == [event.id]
    finally:
        one.close()
        two.close()


def test_failed_batches_are_retried_then_given_up_and_undecodable_events_fail_at_once(tmp_path):
    from sync.config import Config

    wall, ticks = [datetime.now(timezone.utc)], [1000.0]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        _enqueue(ledger, 2)
        ledger.enqueue_event("generic", "junk", "{not json")

        def boom(batch):
            raise RuntimeError("ESP exploded")

        worker = Worker(Config(), ledger, None, process=boom, max_attempts=2,  # type: ignore[arg-type]
                        clock=lambda: ticks[0], now=lambda: wall[0])
        assert worker.process_batch() == 0
        assert ledger.event_counts() == {"queued": 2, "processing": 0, "done": 0, "failed": 1}
        # each failed alone with the claim's one error: no progress (our own bug?), the worker backs off and the
        # events wait it out unclaimed
        wait = worker.backing_off()
        assert wait > 0 and ledger.claimable_count() == 0
        ticks[0] += wait
        wall[0] += timedelta(seconds=wait)
        worker.process_batch()
        assert ledger.event_counts() == {"queued": 0, "processing": 0, "done": 0, "failed": 3}
        assert worker.metrics.events == {"done": 0, "retried": 2, "failed": 3}
        # the pair, then each alone; at the next claim each alone again (they failed alone: resynced apart)
        assert 'rfmsync_resyncs_total{outcome="error"} 5' in worker.metrics.render()


def test_the_debounce_window_turns_a_burst_into_one_batch_and_restarts_find_queued_events(tmp_path):
    from sync.config import Config

    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Ledger.connect(url) as ledger:
        _enqueue(ledger, 2)  # queued before any worker runs (a restart)
        batches: list[int] = []
        worker = Worker(Config(), ledger, None, debounce_seconds=0.4, poll_seconds=0.05,  # type: ignore[arg-type]
                        process=lambda b: batches.append(len(b.events)))
        stop = threading.Event()
        thread = threading.Thread(target=worker.run_forever, args=(stop,))
        thread.start()
        try:
            for i in range(3):  # a burst inside the window
                time.sleep(0.08)
                _enqueue(ledger, 1, start=10 + i)
                worker.wake()
            deadline = time.monotonic() + 5
            while ledger.event_counts()["done"] < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            thread.join(5)
        assert batches == [5]


# ------------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize("text, seconds", [("6h", 21600), ("30m", 1800), ("1h30m", 5400), ("1d", 86400),
                                           (" 90 s ", 90)])
def test_every_durations(text, seconds):
    assert parse_every(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "6", "h", "6x", "10s", "-1h", "6h garbage"])
def test_bad_every_is_a_config_error_naming_the_key(text):
    with pytest.raises(ConfigError, match=r"\[schedule\] every"):
        parse_every(text)


def test_cron_in_the_shop_timezone_and_every_aligned_to_the_epoch_the_earlier_wins():
    from sync.config import ScheduleConfig

    now = datetime(2025, 3, 1, 20, 30, tzinfo=timezone.utc)
    cron = Schedule.from_config(ScheduleConfig(cron="0 3 * * *"), "Asia/Tashkent")  # UTC+5
    assert cron.next_after(now) == datetime(2025, 3, 1, 22, 0, tzinfo=timezone.utc)
    every = Schedule.from_config(ScheduleConfig(every="6h"))
    assert every.next_after(now) == datetime(2025, 3, 2, 0, 0, tzinfo=timezone.utc)
    both = Schedule.from_config(ScheduleConfig(cron="0 3 * * *", every="6h"), "Asia/Tashkent")
    assert both.next_after(now) == datetime(2025, 3, 1, 22, 0, tzinfo=timezone.utc)
    assert Schedule.from_config(ScheduleConfig()).next_after(now) is None
    with pytest.raises(ConfigError, match="not a valid cron expression"):
        Schedule.from_config(ScheduleConfig(cron="0 3 * *"))


@pytest.mark.parametrize("zone, cron, start, local_fires", [
    # the clocks go back at 02:00 EDT: 01:30 comes twice (05:30 and 06:30 UTC); the nightly sync runs once
    ("America/New_York", "30 1 * * *", datetime(2026, 10, 31, 12, 0), ["11-01 01:30", "11-02 01:30", "11-03 01:30"]),
    # serve started in the repeated hour, after the first 01:30: the second is no fire time either
    ("America/New_York", "30 1 * * *", datetime(2026, 11, 1, 6, 0), ["11-02 01:30", "11-03 01:30"]),
    # a fixed list of hours: the repeated 01:00 is not run again either
    ("America/New_York", "0 1,2 * * *", datetime(2026, 11, 1, 4, 0), ["11-01 01:00", "11-01 02:00", "11-02 01:00"]),
    # hourly (a wildcard hour, as Vixie cron tells them apart): runs as the clock reads, the repeated 02:00 too
    ("Europe/Berlin", "0 * * * *", datetime(2026, 10, 24, 23, 30),
     ["10-25 02:00", "10-25 02:00", "10-25 03:00", "10-25 04:00"]),
    # every 15 minutes: the repeated hour runs every 15 minutes too (not 70 minutes without a sync)
    ("America/New_York", "*/15 * * * *", datetime(2026, 11, 1, 5, 40),
     ["11-01 01:45", "11-01 01:00", "11-01 01:15", "11-01 01:30", "11-01 01:45", "11-01 02:00"]),
    ("America/New_York", "@hourly", datetime(2026, 11, 1, 5, 30), ["11-01 01:00", "11-01 02:00"]),
    # the clocks go forward at 02:00: 02:30 does not exist that night and fires at 03:00, once
    ("Europe/Berlin", "30 2 * * *", datetime(2026, 3, 28, 12, 0), ["03-29 03:00", "03-30 02:30"]),
    # Lord Howe's clocks go back by 30 minutes (02:00 → 01:30): a wildcard job whose next time after the first
    # pass is 02:00 runs through the second pass too; croniter alone went from 01:56 to 02:00, skipping 01:35 to
    # 01:56 of the second pass (every 25 minutes: 01:50, 35 minutes without a sync)
    ("Australia/Lord_Howe", "*/7 * * * *", datetime(2026, 4, 4, 14, 50),
     ["04-05 01:56", "04-05 01:35", "04-05 01:42", "04-05 01:49", "04-05 01:56", "04-05 02:00"]),
    ("Australia/Lord_Howe", "*/25 * * * *", datetime(2026, 4, 4, 14, 45),
     ["04-05 01:50", "04-05 01:50", "04-05 02:00"]),
])
def test_a_cron_fires_once_per_local_time_across_daylight_saving_changes(zone, cron, start, local_fires):
    from sync.config import ScheduleConfig
    from zoneinfo import ZoneInfo

    schedule = Schedule.from_config(ScheduleConfig(cron=cron), zone)
    at, fires = start.replace(tzinfo=timezone.utc), []
    while len(fires) < len(local_fires):
        at = schedule.next_after(at)
        fires.append(at.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M"))
    assert fires == local_fires


def test_the_last_fire_time_is_one_next_after_would_give():
    from sync.config import ScheduleConfig

    ny = Schedule.from_config(ScheduleConfig(cron="30 1 * * *"), "America/New_York")
    # 06:40 UTC on the night the clocks go back: 01:30 EST (06:30 UTC) is the repeated 01:30, no fire time
    assert ny.last_at_or_before(datetime(2026, 11, 1, 6, 40, tzinfo=timezone.utc)) == datetime(
        2026, 11, 1, 5, 30, tzinfo=timezone.utc)
    fire = datetime(2026, 11, 2, 6, 30, tzinfo=timezone.utc)
    assert ny.last_at_or_before(fire) == fire and ny.next_after(ny.last_at_or_before(fire)) > fire
    both = Schedule.from_config(ScheduleConfig(cron="0 3 * * *", every="6h"), "Asia/Tashkent")  # 22:00 UTC
    assert both.last_at_or_before(datetime(2025, 3, 1, 23, 0, tzinfo=timezone.utc)) == datetime(
        2025, 3, 1, 22, 0, tzinfo=timezone.utc)
    assert both.last_at_or_before(datetime(2025, 3, 2, 0, 5, tzinfo=timezone.utc)) == datetime(
        2025, 3, 2, 0, 0, tzinfo=timezone.utc)
    assert Schedule.from_config(ScheduleConfig()).last_at_or_before(fire) is None
    # November's Sundays at 01:30: on the night the clocks go back, the first 01:30 (05:30 UTC), from within
    # the repeated hour and after it; before, croniter's previous time from the second pass was last year's
    sunday = Schedule.from_config(ScheduleConfig(cron="30 1 * 11 0"), "America/New_York")
    for now in (datetime(2026, 11, 1, 6, 10), datetime(2026, 11, 1, 12, 0)):
        assert sunday.last_at_or_before(now.replace(tzinfo=timezone.utc)) == datetime(
            2026, 11, 1, 5, 30, tzinfo=timezone.utc)
    # a wildcard job's last time in the repeated hour is its second pass's
    quarter = Schedule.from_config(ScheduleConfig(cron="*/15 * * * *"), "America/New_York")
    assert quarter.last_at_or_before(datetime(2026, 11, 1, 6, 20, tzinfo=timezone.utc)) == datetime(
        2026, 11, 1, 6, 15, tzinfo=timezone.utc)
    assert quarter.last_at_or_before(datetime(2026, 11, 1, 6, 50, tzinfo=timezone.utc)) == datetime(
        2026, 11, 1, 6, 45, tzinfo=timezone.utc)


def test_a_fire_time_missed_while_no_serve_ran_is_run_once_at_the_next_start(tmp_path, clock):
    """The nightly 03:00 sync ran yesterday; serve was down from 02:55 (a deploy, a reboot) and starts at 03:10:
    today's sync runs at the start, once, instead of waiting a day. Not on a first start, and not when the start
    is nearer to the next fire time than to the missed one."""
    from sync.config import Config, ScheduleConfig

    cfg = Config(schedule=ScheduleConfig(cron="0 3 * * *"))
    runs: list[str] = []
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        clock.now = datetime(2025, 3, 2, 3, 10, tzinfo=timezone.utc)
        first = Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append("first"))  # type: ignore
        assert not first.tick() and runs == []  # a first start: nothing ran before, nothing was missed
        ledger.set_cursor(*CURSOR, "2025-03-01T03:00:00+00:00")  # yesterday's ran
        started = Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append("missed"))  # type: ignore
        assert started.wake_at() == clock.now
        assert started.tick() and runs == ["missed"]
        assert ledger.get_cursor(*CURSOR) == "2025-03-02T03:00:00+00:00"
        assert not started.tick() and runs == ["missed"]  # once
        again = Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append("again"))  # type: ignore
        assert not again.tick() and runs == ["missed"]  # another start (or process): it ran
        clock.now = datetime(2025, 3, 3, 20, 0, tzinfo=timezone.utc)  # down all day: 7 h before the next one
        late = Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append("late"))  # type: ignore
        assert not late.tick() and late.wake_at() == datetime(2025, 3, 4, 3, 0, tzinfo=timezone.utc)
        assert runs == ["missed"]


def test_a_start_catches_up_nothing_a_sync_by_hand_did_or_another_schedule_missed(ledger_url, clock):
    """The catch-up at a start runs only what was missed: not when ``rfmsync sync`` of every destination started
    after the missed time (one destination synced by hand is not enough), and not when ``[schedule]`` changed since
    the last fire time ran (``0 3`` moved to ``0 9`` at 10:00, or to ``every``): that time was never due. Once the
    new schedule ran a fire time, a start catches up its missed ones again."""
    from sync.config import Config, DestinationConfig, ScheduleConfig

    dests = [DestinationConfig(name=name, type="mailchimp", audience="a") for name in ("mc", "mc2")]
    runs: list[datetime] = []
    with Ledger.connect(ledger_url, clock=clock) as ledger:

        def start(at: datetime, **schedule: str) -> Scheduler:
            clock.now = at
            cfg = Config(schedule=ScheduleConfig(**schedule), destinations=dests)
            return Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append(clock.now))  # type: ignore

        def by_hand(at: datetime, *names: str) -> None:
            clock.now = at
            for name in names:
                ledger.finish_run(ledger.start_run("sync", name), "succeeded", {})

        def day(d: int, hour: int, minute: int = 0) -> datetime:
            return datetime(2025, 3, d, hour, minute, tzinfo=timezone.utc)

        nightly = start(day(1, 2, 59), cron="0 3 * * *")
        clock.now = day(1, 3)
        assert nightly.tick() and runs == [day(1, 3)]
        by_hand(day(2, 3, 5), "mc")  # serve down across 03:00; one destination synced by hand: mc2 was not
        assert start(day(2, 3, 20), cron="0 3 * * *").tick() and runs[-1] == day(2, 3, 20)
        by_hand(day(3, 3, 5), "mc", "mc2")  # the next night, both by hand: nothing left to catch up
        assert not start(day(3, 3, 20), cron="0 3 * * *").tick() and len(runs) == 2
        nightly = start(day(4, 2, 59), cron="0 3 * * *")
        clock.now = day(4, 3)
        assert nightly.tick() and len(runs) == 3
        assert not start(day(4, 10), cron="0 9 * * *").tick() and len(runs) == 3  # 09:00 was never due
        assert not start(day(4, 13), every="6h").tick() and len(runs) == 3  # nor 12:00
        later = start(day(5, 8, 59), cron="0 9 * * *")
        clock.now = day(5, 9)
        assert later.tick() and len(runs) == 4  # the new schedule ran a fire time: its missed ones are caught up
        assert start(day(6, 9, 10), cron="0 9 * * *").tick() and runs[-1] == day(6, 9, 10)


def test_two_serve_processes_run_each_fire_time_once(ledger_url, clock):
    from sync.config import Config, ScheduleConfig

    cfg = Config(schedule=ScheduleConfig(every="1h"))
    runs: list[str] = []
    ledgers = [Ledger.connect(ledger_url), Ledger.connect(ledger_url)]
    try:
        schedulers = [Scheduler(cfg, led, None, clock=clock, job=lambda n=n: runs.append(n))  # type: ignore
                      for n, led in zip("ab", ledgers)]
        assert schedulers[0].next_fire == datetime(2025, 3, 1, 13, 0, tzinfo=timezone.utc)
        assert not schedulers[0].tick()  # not due yet
        clock.advance(hours=1, seconds=5)
        assert schedulers[0].tick() and not schedulers[1].tick()  # b wakes late: a already ran 13:00
        assert runs == ["a"] and schedulers[1].next_fire == datetime(2025, 3, 1, 14, 0, tzinfo=timezone.utc)
        with ledgers[0].lock("schedule", owner="other-host:1"):  # a run in progress elsewhere: skip
            clock.advance(hours=1)
            assert not schedulers[0].tick()
        assert runs == ["a"]
    finally:
        for led in ledgers:
            led.close()


def test_a_failing_scheduled_sync_is_counted_and_the_next_fire_time_still_comes(tmp_path, clock):
    from sync.config import Config, ScheduleConfig
    from sync.serve.metrics import Metrics

    metrics = Metrics()

    def fail():
        raise RuntimeError("source down")

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        sched = Scheduler(Config(schedule=ScheduleConfig(every="1h")), ledger, None, clock=clock,  # type: ignore
                          job=fail, metrics=metrics)
        clock.advance(hours=1)
        assert not sched.tick()
        assert metrics.scheduled["error"] == 1 and sched.next_fire > clock()
        assert ledger.get_cursor("schedule", "last_fire") == "2025-03-01T13:00:00+00:00"


def _flaky(failures: list[BaseException], runs: list[datetime], clock):
    """A scheduled job that raises the next of ``failures`` at each run, then succeeds; ``runs`` gets its times."""
    def job():
        runs.append(clock())
        if failures:
            raise failures.pop(0)
    return job


def test_a_transient_failure_is_retried_before_the_next_fire_time(ledger_url, clock):
    from connectors.errors import TransientError
    from sync.config import Config, ScheduleConfig
    from sync.errors import DestinationError
    from sync.serve.metrics import Metrics

    metrics, runs = Metrics(), []
    down = [TransientError("RetailCRM: the list moved under the backfill"),
            DestinationError("Mailchimp upsert still failing: HTTP 503", status=503, transient=True)]
    with Ledger.connect(ledger_url, clock=clock) as ledger:
        sched = Scheduler(Config(schedule=ScheduleConfig(every="1h")), ledger, None, clock=clock,  # type: ignore
                          job=_flaky(down, runs, clock), metrics=metrics)
        fire = sched.next_fire
        clock.advance(hours=1)
        assert not sched.tick() and sched.retry is not None
        assert sched.retry.at == fire + timedelta(minutes=10) and sched.wake_at() == sched.retry.at
        clock.advance(minutes=9)
        assert not sched.tick() and len(runs) == 1  # not before its time
        clock.advance(minutes=1)
        assert not sched.tick() and sched.retry.at == fire + timedelta(minutes=30)  # the wait doubles
        clock.advance(minutes=20)
        assert sched.tick() and sched.retry is None
        assert [r - fire for r in runs] == [timedelta(0), timedelta(minutes=10), timedelta(minutes=30)]
        assert metrics.scheduled["error"] == 2 and metrics.scheduled["ok"] == 1
        assert sched.next_fire == fire + timedelta(hours=1)  # the schedule itself did not move


def test_only_transient_failures_are_retried_and_never_past_the_next_fire_time(ledger_url, clock):
    from connectors.errors import TransientError
    from sync.config import Config, ScheduleConfig
    from sync.errors import DestinationError, GuardRefusedError

    for failure in (RuntimeError("bug"), DestinationError("Mailchimp: HTTP 400 invalid resource", status=400),
                    GuardRefusedError(["guard min_orders: 0 valid orders; at least 1 needed"])):
        runs: list[datetime] = []
        with Ledger.connect(ledger_url, clock=clock) as ledger:
            sched = Scheduler(Config(schedule=ScheduleConfig(every="1h")), ledger, None,  # type: ignore
                              clock=clock, job=_flaky([failure], runs, clock))
            clock.advance(hours=1)
            assert not sched.tick() and sched.retry is None, failure
    runs = []
    with Ledger.connect(ledger_url, clock=clock) as ledger:  # retries = 3, but the 3rd would land after 14:00
        sched = Scheduler(Config(schedule=ScheduleConfig(every="1h", retry_wait="15m")), ledger, None,  # type: ignore
                          clock=clock, job=_flaky([TransientError("down")] * 5, runs, clock))
        clock.advance(hours=1)
        assert not sched.tick()
        while sched.wake_at() < sched.next_fire:
            clock.now = sched.wake_at()
            sched.tick()
        assert [(r - runs[0]).seconds // 60 for r in runs] == [0, 15, 45]  # 45 + 60 would pass the next fire
        assert sched.retry is None
        off = Scheduler(Config(schedule=ScheduleConfig(every="1h", retries=0)), ledger, None,  # type: ignore
                        clock=clock, job=_flaky([TransientError("down")], [], clock))
        clock.now = off.next_fire
        assert not off.tick() and off.retry is None
        with pytest.raises(ValueError, match=r"\[schedule\] retry_wait = 'soon'"):  # refused as the config loads
            Config(schedule=ScheduleConfig(every="1h", retry_wait="soon"))


def test_a_destination_busy_with_a_webhook_resync_is_retried_and_only_the_failing_process_retries(ledger_url,
                                                                                                    clock):
    from sync.config import Config, ScheduleConfig
    from sync.engine import destination_lock
    from sync.serve.metrics import Metrics

    cfg = Config(schedule=ScheduleConfig(every="1h", retries=1))
    ledgers = [Ledger.connect(ledger_url, clock=clock), Ledger.connect(ledger_url, clock=clock)]
    try:
        runs: list[str] = []

        def job(name: str):
            def run():
                runs.append(name)
                with destination_lock(ledgers[0], "sync:mc"):  # as execute_plan takes it
                    pass
            return run

        metrics = Metrics()
        a, b = (Scheduler(cfg, led, None, clock=clock, job=job(n), metrics=metrics)  # type: ignore
                for n, led in zip("ab", ledgers))
        fire = a.next_fire
        ledgers[1].acquire_lock("sync:mc", owner="other-host:1:resync", ttl_seconds=7200)  # a webhook batch
        clock.advance(hours=1)
        assert not a.tick() and a.retry is not None and a.retry.at == fire + timedelta(minutes=10)
        assert not b.tick() and b.retry is None  # b wakes late: a ran this fire time, and only a retries it
        assert metrics.scheduled["skipped"] == 2 and runs == ["a"]
        ledgers[1].release_lock("sync:mc", "other-host:1:resync")
        clock.advance(minutes=10)
        assert a.tick() and runs == ["a", "a"]
        ledgers[1].acquire_lock("sync:mc", owner="other-host:1:resync", ttl_seconds=7200)
        clock.advance(hours=1)  # the next fire time: busy again, retried once (retries = 1), then left to 15:00
        assert not a.tick() and a.retry is not None
        clock.now = a.retry.at
        assert not a.tick() and a.retry is None and runs == ["a", "a", "a", "a"]
        ledgers[0].set_cursor("schedule", "last_fire", (a.next_fire + timedelta(hours=1)).isoformat())
        a.retry = Retry(fire, 1, clock())  # a retry of a fire time another process has gone past: skipped
        assert not a.tick() and runs == ["a", "a", "a", "a"]
    finally:
        for led in ledgers:
            led.close()


def test_a_pending_retry_survives_a_restart_and_runs_once(ledger_url, clock):
    """The process that planned a retry stops (a deploy, a crash): the one started after it finds the retry in the
    ledger and runs it at its time; the old one, had it lived on, finds it done and skips it."""
    from connectors.errors import TransientError
    from sync.config import Config, ScheduleConfig

    cfg = Config(schedule=ScheduleConfig(every="1h"))
    runs: list[str] = []
    ledgers = [Ledger.connect(ledger_url, clock=clock), Ledger.connect(ledger_url, clock=clock)]
    try:
        def fail():
            runs.append("old")
            raise TransientError("Mailchimp: HTTP 503")

        old = Scheduler(cfg, ledgers[0], None, clock=clock, job=fail)  # type: ignore
        fire = old.next_fire
        clock.advance(hours=1)
        assert not old.tick() and old.retry == Retry(fire, 1, fire + timedelta(minutes=10))
        clock.advance(minutes=3)  # restarted before the retry's time
        new = Scheduler(cfg, ledgers[1], None, clock=clock, job=lambda: runs.append("new"))  # type: ignore
        assert new.retry == old.retry and new.wake_at() == fire + timedelta(minutes=10)
        clock.advance(minutes=7)
        assert new.tick() and not old.tick() and runs == ["old", "new"]
        restarted = Scheduler(cfg, ledgers[1], None, clock=clock, job=lambda: runs.append("again"))  # type: ignore
        assert restarted.retry is None and not restarted.tick() and runs == ["old", "new"]
    finally:
        for led in ledgers:
            led.close()


def test_a_schedule_lock_left_by_a_killed_process_does_not_block_the_next_fire_time(ledger_url, clock):
    from sync.config import Config, ScheduleConfig

    runs: list[int] = []
    with Ledger.connect(ledger_url, clock=clock) as ledger:
        ledger.acquire_lock("schedule", owner=dead_owner(), ttl_seconds=6 * 3600)  # killed mid-sync
        sched = Scheduler(Config(schedule=ScheduleConfig(every="1h")), ledger, None, clock=clock,  # type: ignore
                          job=lambda: runs.append(1))
        clock.advance(hours=1)
        assert sched.tick() and runs == [1]
        ledger.acquire_lock("schedule", owner="other-host:1:x", ttl_seconds=6 * 3600)  # alive elsewhere
        clock.advance(hours=1)
        assert not sched.tick() and runs == [1]


def test_the_worker_process_metrics_are_added_to_the_intake_process_metrics():
    from sync.serve.metrics import Metrics

    intake, worker = Metrics(), Metrics()
    intake.webhook("generic", 202)
    worker.webhook("generic", 202)
    worker.event_outcome("done", 3)
    worker.resync_done(0.3, None)
    worker.scheduled_run("ok")
    intake.set_remote([worker.snapshot()])
    text = intake.render({"queued": 1, "processing": 0})
    for line in ('rfmsync_webhooks_received_total{source="generic",code="202"} 2',
                 'rfmsync_events_processed_total{outcome="done"} 3', 'rfmsync_resyncs_total{outcome="ok"} 1',
                 "rfmsync_resync_seconds_count 1", 'rfmsync_resync_seconds_bucket{le="0.5"} 1',
                 'rfmsync_scheduled_syncs_total{outcome="ok"} 1', "rfmsync_queue_depth 1"):
        assert line in text, line
    worker.event_outcome("done", 1)
    intake.set_remote([worker.snapshot()])  # the newest snapshot replaces the previous one
    assert 'rfmsync_events_processed_total{outcome="done"} 4' in intake.render()
    assert 'rfmsync_events_processed_total{outcome="done"} 0' in Metrics().render()


@contextmanager
def bitrix_shop(folder: Path, monkeypatch) -> Iterator[tuple]:
    """A Bitrix24 shop against the fake portal, with its contact 5: (cfg, settings, ledger, fake)."""
    import responses

    from tests.test_bitrix24 import HOOK, T0, FakeBitrix24

    (folder / "rfmsync.toml").write_text('[source]\ntype = "bitrix24"\n', encoding="utf-8")
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", HOOK)
    cfg, settings = load_config(folder / "rfmsync.toml"), load_settings()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, open_ledger(cfg, settings) as ledger:
        fake = FakeBitrix24(rsps)
        fake.put_contact(5, "ann@example.com", at=T0)
        yield cfg, settings, ledger, fake


def test_a_deleted_crm_deal_leaves_the_history_when_its_webhook_also_asks_for_a_pull(tmp_path, monkeypatch):
    """Bitrix24 ONCRMDEALDELETE queues a tombstone *and* a pull: the pull must not drop the tombstone."""
    from connectors.non_purchase import tombstone
    from tests.test_bitrix24 import T0

    with bitrix_shop(tmp_path, monkeypatch) as (cfg, settings, ledger, fake):
        fake.put_order(77, 5, "100.00", at=T0)
        fake.put_order(78, 5, "50.00", at=T0)
        first = resync(cfg, ledger, settings, pull=True, as_of=AS_OF)
        assert first.orders == 2
        del fake.deals[77]  # deleted on the portal: the deal list no longer shows it
        second = resync(cfg, ledger, settings, [tombstone("77", T0 + timedelta(days=1))], pull=True, as_of=AS_OF)
        assert second.customers == 1
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT order_id, status, amount FROM orders ORDER BY 1").fetchall() == [
            ("77", "cancelled", 0), ("78", "completed", 50)]


def test_a_crm_pull_asked_by_a_webhook_is_merged_even_when_its_event_is_older_than_the_last_pull(tmp_path,
                                                                                                   monkeypatch):
    """A Bitrix24 webhook (ids only: a pull) is accepted, then the scheduled sync pulls the CRM before the worker
    gets to it, then the deal changes again. The worker's pull reads the CRM now: its rows are not older than the
    scheduled pull's, whatever the event's age, and the change is stored (a webhook's own records yield to a newer
    version; rows pulled for it do not)."""
    from tests.test_bitrix24 import T0

    with bitrix_shop(tmp_path, monkeypatch) as (cfg, settings, ledger, fake):
        fake.put_order(78, 5, "50.00", at=T0)
        resync(cfg, ledger, settings, pull=True, as_of=AS_OF)  # an earlier webhook's pull: 78 noted as a webhook's
        ledger.enqueue_event("bitrix24", "deal-78-update", encode_records(pull=True))
        time.sleep(0.01)
        segments_from_store(cfg, ledger, settings, as_of=AS_OF, pull=True).con.close()  # the scheduled sync's pull
        fake.put_order(78, 5, "60.00", at=T0 + timedelta(days=1))  # the deal changes again
        assert Worker(cfg, ledger, settings, as_of=lambda: AS_OF).drain() == 1
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT amount FROM orders WHERE order_id = '78'").fetchall() == [(60,)]


def test_a_scheduled_sync_adds_its_contact_changes_and_failures_to_the_esp_metrics(tmp_path, clock):
    from sync.config import Config, ScheduleConfig
    from sync.engine import ApplyReport
    from sync.serve.metrics import Metrics

    metrics = Metrics()
    reports = [ApplyReport("mc", 1, "partial", {"planned": 5, "ok": 4, "failed": 1}),
               ApplyReport("sg", 2, "failed", {"planned": 2, "ok": 0, "failed": 2})]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        sched = Scheduler(Config(schedule=ScheduleConfig(every="1h")), ledger, None, clock=clock,  # type: ignore
                          job=lambda: reports, metrics=metrics)
        clock.advance(hours=1)
        assert sched.tick()
    text = metrics.render()
    assert 'rfmsync_esp_operations_total{destination="mc",outcome="ok"} 4' in text
    assert 'rfmsync_esp_operations_total{destination="sg",outcome="failed"} 2' in text
    assert 'rfmsync_esp_errors_total{destination="sg"} 1' in text and 'destination="mc"} 1' not in text
    assert metrics.scheduled["ok"] == 1


def test_a_crm_pull_in_a_batch_with_an_older_webhook_copy_of_the_same_record_is_stored(tmp_path, monkeypatch):
    """A batch holds a webhook record (an order's version accepted long ago) and asks for a pull, which reads the
    same order's newer version from the CRM. The store notes a newer version than the webhook's (the scheduled
    sync's pull): the webhook copy is left out, but the pulled version is stored, not left out with it while the
    cursor moves past it. Before, every staged row of the order went: the CRM's change was lost (50 kept)."""
    from connectors.records import Order
    from tests.test_bitrix24 import T0

    with bitrix_shop(tmp_path, monkeypatch) as (cfg, settings, ledger, fake):
        fake.put_order(78, 5, "50.00", at=T0)
        resync(cfg, ledger, settings, pull=True, as_of=AS_OF)  # an earlier webhook's pull: 78 noted
        accepted = datetime.now(timezone.utc)
        segments_from_store(cfg, ledger, settings, as_of=AS_OF, pull=True).con.close()  # the scheduled sync's pull
        fake.put_order(78, 5, "60.00", at=T0 + timedelta(days=1))  # the deal changes again
        old = Order("78", "5", T0, Decimal("50.00"))
        resync(cfg, ledger, settings, [old], pull=True, as_of=AS_OF, received_at={("order", "78"): accepted})
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT amount FROM orders WHERE order_id = '78'").fetchall() == [(60,)]


def test_rows_a_crm_pull_brings_with_a_batchs_records_are_as_new_as_the_pull(tmp_path, monkeypatch):
    """A batch holds a webhook record accepted two hours ago and asks for a pull: the pulled records are noted as
    new as the pull, not as the batch's event (before: two hours old, so a webhook batch accepted since, merged
    after, would pass for newer than the CRM's version read after it)."""
    from connectors.records import Order
    from tests.test_bitrix24 import T0

    with bitrix_shop(tmp_path, monkeypatch) as (cfg, settings, ledger, fake):
        fake.put_order(78, 5, "50.00", at=T0)
        before = datetime.now(timezone.utc)
        hours_ago = before - timedelta(hours=2)
        resync(cfg, ledger, settings, [Order("90", "5", T0, Decimal("5.00"))], pull=True, as_of=AS_OF,
               received_at={("order", "90"): hours_ago})
    with open_store(store_path(cfg)) as con:
        ages = dict(con.execute("SELECT id, received_at FROM webhook_records WHERE kind = 'order'").fetchall())
    assert ages["90"] == hours_ago and ages["78"] >= before


def test_the_workers_clock_dates_the_rows_its_pull_brings(tmp_path, monkeypatch):
    """The worker's injected wall clock (the one its events are dated by) is the pull's start too: the rows a
    batch's pull brings are as new as that clock says, not as the machine's (before: the machine's clock)."""
    from tests.test_bitrix24 import T0

    pulled_at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with bitrix_shop(tmp_path, monkeypatch) as (cfg, settings, ledger, fake):
        fake.put_order(78, 5, "50.00", at=T0)
        ledger.enqueue_event("bitrix24", "deal-78-update", encode_records(pull=True))
        assert Worker(cfg, ledger, settings, as_of=lambda: AS_OF, now=lambda: pulled_at).drain() == 1
    with open_store(store_path(cfg)) as con:
        ages = dict(con.execute("SELECT id, received_at FROM webhook_records WHERE kind = 'order'").fetchall())
    assert ages == {"78": pulled_at}


@pytest.mark.parametrize("zone, cron, start, local_fire, windows", [
    # a month's wait over the night Berlin's clocks go back (one repeated hour in between)
    ("Europe/Berlin", "*/30 * 1 * *", datetime(2026, 10, 2, 12, 0), "2026-11-01 00:00", 1),
    # a leap day's, over two nights the clocks go back (and one they go forward)
    ("Europe/Berlin", "* * 29 2 *", datetime(2026, 10, 2, 12, 0), "2028-02-29 00:00", 2),
    # Lord Howe's half hour, the second pass's time found
    ("Australia/Lord_Howe", "*/7 * * * *", datetime(2026, 4, 4, 14, 57), "2026-04-05 01:35", 1),
])
def test_a_wildcard_cron_looks_only_at_the_repeated_minutes_when_the_clocks_go_back(monkeypatch, zone, cron, start,
                                                                                   local_fire, windows):
    """A wildcard job whose next time lies past a night the clocks go back looks at the minutes of that night's
    second pass one by one (at most an hour of them each), not at every minute up to its next time (before: a
    month's 43 000 minutes, 5 CPU seconds at every serve start and after each fire; a leap day's, minutes)."""
    from croniter import croniter
    from sync.config import ScheduleConfig
    from zoneinfo import ZoneInfo

    calls = []
    match = croniter.match

    def counting(*args, **kwargs):
        calls.append(args[1] if len(args) > 1 else kwargs)
        return match(*args, **kwargs)

    monkeypatch.setattr(croniter, "match", counting)
    schedule = Schedule.from_config(ScheduleConfig(cron=cron), zone)
    fire = schedule.next_after(start.replace(tzinfo=timezone.utc))
    assert fire.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M") == local_fire
    assert len(calls) <= 60 * windows


def test_an_order_and_the_withdrawal_it_carries_apply_together_whatever_batch_cuts_them(shop, mailchimp_fake):
    """A generic order carries its contact; the contact is also an event of its own (the queue's dedupe per record).
    A worker's batch that ended between the two (a backlog of 999, a delivery of 500 orders) re-scored the customer
    on the order under his old consent and pushed a tag (the ESP's "tag added" automations) to a contact whose
    delivery withdrew it, taken off only by the next batch. The order's event carries the contact too now."""
    import re

    shop.write_text(re.sub(r'(?m)^new_contacts = .*$', 'new_contacts = "skip"', shop.read_text(encoding="utf-8")),
                    encoding="utf-8")
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        email, cid = churned_contact(ledger)
        before = audience(mailchimp_fake)[email][0]
        body = ('{"order_id": "W-X", "customer_id": "%s", "ordered_at": "2025-06-29T12:00:00+05:00", '
                '"amount": "990000", "contact": {"email": "%s", "marketing_consent": "no"}}' % (cid, email)).encode()
        events = events_for([], [], parse_generic(body, cfg.timezone))
        assert [key for key, *_ in events] == ["order:W-X", f"contact:{cid}"]
        for key, payload, *_ in events:
            ledger.enqueue_event("generic", key, payload)
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF, batch_limit=1)  # one event a batch
        worker.process_batch()
        assert not audience(mailchimp_fake)[email][0] - before  # no tag added on the consent he withdrew
        worker.process_batch()
        assert not audience(mailchimp_fake)[email][0]  # his managed tags off


def test_a_scheduled_sync_longer_than_its_interval_is_followed_by_one_run_not_a_pile_up(tmp_path, clock):
    """docs/serve.md's overrun rule: an ``every = "1h"`` sync started at 01:00 that lasts until 03:30 is followed
    at once by one run, labelled with the earliest fire time it missed (02:00); 03:00 is not run as well, and the
    next fire time is 04:00."""
    from sync.config import Config, ScheduleConfig

    cfg = Config(schedule=ScheduleConfig(every="1h"))
    runs: list[datetime] = []

    def job() -> None:
        runs.append(clock.now)
        if len(runs) == 1:
            clock.now = datetime(2025, 3, 2, 3, 30, tzinfo=timezone.utc)  # the first run took 2.5 intervals

    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        clock.now = datetime(2025, 3, 2, 0, 59, tzinfo=timezone.utc)
        scheduler = Scheduler(cfg, ledger, None, clock=clock, job=job)  # type: ignore
        clock.now = datetime(2025, 3, 2, 1, 0, tzinfo=timezone.utc)
        assert scheduler.tick() and ledger.get_cursor(*CURSOR) == "2025-03-02T01:00:00+00:00"
        assert scheduler.wake_at() <= clock.now  # due at once, back to back
        assert scheduler.tick() and ledger.get_cursor(*CURSOR) == "2025-03-02T02:00:00+00:00"
        assert not scheduler.tick() and len(runs) == 2  # 03:00 is not run as well
        assert scheduler.wake_at() == datetime(2025, 3, 2, 4, 0, tzinfo=timezone.utc)
