"""The segment history under webhook resyncs and partial failures: a resync reads the history of its customers
only; a full sync's record never loses a webhook's move of the same day; a failed destination does not keep a
run's moves out of the history."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable

import duckdb
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from sync.config import load_config
from sync.ledger import open_ledger
from sync.pipeline import store_path
from sync.serve.resync import resync
from sync.settings import load_settings
from sync.store import history, open_store

from tests.builders import run_cli
from tests.fakes.mailchimp import FakeMailchimp
from tests.profiles import examples
from tests.test_history import D0, expected_rows, rec, rows, snap, snapshots
from tests.test_serve_resync import orders_for
from tests.test_transitions import buy, ledger_tags, sync, tiny  # noqa: F401  (tiny: the fixture)

AS_OF = date(2025, 6, 30)
CONFIG_EXIT = 2


class HookedMailchimp(FakeMailchimp):
    """The fake Mailchimp, which runs ``before_write`` (once) when the first write call of an apply arrives:
    something that happens while a sync is applying, at a known point."""

    before_write: Callable[[], None] | None = None

    def handle(self, req):
        hook, self.before_write = (self.before_write, None) if req.method != "GET" else (None, self.before_write)
        if hook is not None:
            hook()
        return super().handle(req)


@pytest.fixture
def mailchimp_fake():
    with HookedMailchimp() as fake:
        yield fake


def test_a_resync_reads_the_history_of_its_customers_not_the_whole_history(tmp_path, mailchimp_fake, monkeypatch):
    """60 000 customers with five recorded days of history (about 2 rows each) and a transition tag: a resync of
    three customers records their moves, tags them, and reads a few hundred store rows, as without a history."""
    from bench.serve_load import big_store

    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    path, churned = big_store(tmp_path / "big", 60_000, 0.2, pool=66, fake=mailchimp_fake, history_days=5)
    block = '[destinations.transitions]\n"Churn -> *" = "rfm-back"\n\n[destinations.fields]'  # moves read too
    path.write_text(path.read_text(encoding="utf-8").replace("[destinations.fields]", block), encoding="utf-8")
    cfg, settings = load_config(path), load_settings()
    with open_store(store_path(cfg)) as con:
        rows_before = con.execute("SELECT count(*) FROM segment_history").fetchall()[0][0]
        customers_before = history.records(con)[-1]["customers"]
    assert rows_before > 60_000 and customers_before == 60_000
    ids = list(churned)
    with open_ledger(cfg, settings) as ledger:
        warm = resync(cfg, ledger, settings, orders_for(ids[:2], "WARM"), as_of=AS_OF)  # indexes, managed count
        report = resync(cfg, ledger, settings, orders_for(ids[2:5], "R"), as_of=AS_OF)
        batch = resync(cfg, ledger, settings, orders_for(ids[5:65], "B"), as_of=AS_OF)
        again = resync(cfg, ledger, settings, orders_for(ids[5:6], "A"), as_of=AS_OF)  # the same day again
    assert warm.customers == 2 and report.customers == 3
    assert all("rfm-back" in mailchimp_fake.tags_of(email) for email in list(churned.values())[:65])
    with open_store(store_path(cfg)) as con:
        moved = {cid for cid in ids[:65] if history.customer_history(con, cid)[-1]["valid_from"] == AS_OF}
        last = history.records(con)[-1]
        exact = con.execute("SELECT count(*) FROM segment_history WHERE line = ? AND valid_from <= ? AND "
                            "(valid_to IS NULL OR valid_to > ?)", [last["line"], AS_OF, AS_OF]).fetchall()[0][0]
    assert moved == set(ids[:65])  # every resynced customer left Churn today, in the history
    assert (last["as_of"], last["source"], last["customers"]) == (AS_OF, "webhook", exact) and exact == 60_000
    # three customers: their orders, contacts, ledger rows and history rows, not the 60 000 customers' history
    assert report.store_rows_read <= 500, report.store_rows_read
    assert batch.customers == 60 and batch.store_rows_read <= 60 * 60, batch.store_rows_read
    assert again.customers == 1 and again.store_rows_read <= 500, again.store_rows_read


@hsettings(max_examples=examples(25), deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans(), snapshots), min_size=1, max_size=7))
def test_keyed_webhook_records_leave_what_the_day_by_day_model_leaves(steps):
    """Any sequence of full and webhook records (days repeated): each day ends as its last full snapshot with the
    later webhook snapshots laid over it (a webhook record touches only its customers), and the recorded customer
    count (kept, not counted) is that day's."""
    con = duckdb.connect()
    day, days, by_day = D0, [], {}
    for n, (gap, webhook, s) in enumerate(steps):
        day = day + timedelta(days=gap)
        webhook = webhook and n > 0  # the first record is a full one (a webhook record never starts a line)
        result = rec(con, day, s, source="webhook" if webhook else "sync")
        if webhook:
            base = by_day.get(day, by_day[max(by_day)] if by_day else {})
            by_day[day] = {**base, **s}
        else:
            by_day[day] = dict(s)
        days.append((day, by_day[day]))
        assert result.customers == len(by_day[day])
    assert sorted(rows(con), key=lambda r: (r[0], r[1], r[2], r[3], r[4] or date.max)) == expected_rows(days)
    assert [(r["as_of"], r["customers"]) for r in history.records(con)] == [(d, len(s)) for d, s in
                                                                            sorted(by_day.items())]


@hsettings(max_examples=examples(25), deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.booleans(), snapshots), min_size=1, max_size=6), snapshots,
       st.integers(1, 8))
def test_the_keyed_moves_of_a_few_customers_are_the_moves_the_scan_gives(steps, today, days):
    """A webhook resync reads its customers' moves by key (``keyed``): the same rows as the query over the line,
    whatever the history (lines changed by the rules included)."""
    con = duckdb.connect()
    day = D0
    for n, (gap, new_rules, s) in enumerate(steps):
        day = day + timedelta(days=gap)
        rec(con, day, s, rules=f"h{n}" if new_rules else "h")
    line = history.current_line(con)["line"]
    table = snap(con, today, "today")
    day = day + timedelta(days=1)
    plain = history.recent_moves_sql(day, days, segments_table=table, line=line)
    keyed = history.recent_moves_sql(day, days, segments_table=table, line=line, keyed=True)
    assert sorted(con.sql(keyed).fetchall()) == sorted(con.sql(plain).fetchall())


def test_a_full_sync_keeps_a_webhook_move_recorded_for_the_same_day_while_it_applied(tiny, mailchimp_fake):
    """The sync of d1 segments the store, then applies; meanwhile a webhook order moves x out of Churn, but its
    resync finds the destination held by the sync: not applied, it records nothing (a resync records once it
    applied). The worker's retry applies and records x's move for d1 (the day the sync recorded too): x left
    Churn on d1, and its move tag counts from d1. (A webhook that applied between a sync's snapshot and its
    record keeps its move: test_a_full_record_keeps_only_the_webhook_records_made_after_its_snapshot.)"""
    from connectors.records import Order
    from sync.errors import LockBusyError
    from sync.history import open_history

    cfg, settings = load_config(tiny), load_settings()
    sync(tiny, D0)
    d1 = D0 + timedelta(days=1)
    buy(tiny, "v2", "v", d1)  # something for the sync of d1 to write (v: Churn → Beginners)
    webhook = [Order(order_id="x-hook", customer_id="x", amount=Decimal(1000), currency="UZS",
                     ordered_at=datetime(2025, 7, 1, 9, tzinfo=timezone.utc))]
    seen: list[str] = []

    def webhook_during_the_apply() -> None:
        with open_ledger(cfg, settings) as ledger:
            try:
                resync(cfg, ledger, settings, webhook, as_of=d1, lock_wait_seconds=0, sleep=lambda s: None)
            except LockBusyError:  # the sync holds the destination: the worker would retry the batch
                seen.append("busy")

    mailchimp_fake.before_write = webhook_during_the_apply
    sync(tiny, d1)
    assert seen == ["busy"]  # the webhook ran while the sync applied, and was not applied

    def rows_of(customer: str) -> list[tuple]:
        con = open_history(cfg)
        try:
            assert history.records(con)[-1] == {"line": 1, "as_of": d1, "source": "sync", "customers": 4}
            return [(r["segment"], r["valid_from"]) for r in history.customer_history(con, customer)]
        finally:
            con.close()

    assert rows_of("x") == [("Churn", D0)]  # the resync not applied recorded nothing
    assert rows_of("v") == [("Churn", D0), ("Beginners", d1)]  # the sync's own moves are recorded as ever
    with open_ledger(cfg, settings) as ledger:  # the worker's retry of the batch pushes x's move
        resync(cfg, ledger, settings, webhook, as_of=d1)
    assert rows_of("x") == [("Churn", D0), ("Best active", d1)]  # recorded once applied
    assert {"VIP", "rfm-back"} <= ledger_tags(tiny, "x@example.org")
    sync(tiny, d1 + timedelta(days=6))
    assert "rfm-back" in mailchimp_fake.tags_of("x@example.org")  # still within its 7 days from d1
    sync(tiny, d1 + timedelta(days=7))
    assert "rfm-back" not in mailchimp_fake.tags_of("x@example.org")  # d1 + 7: off, the window counted from d1


def test_a_full_record_keeps_only_the_webhook_records_made_after_its_snapshot():
    from sync.store.history_partial import current_mark

    con = duckdb.connect()
    d1 = D0 + timedelta(days=1)
    rec(con, D0, {"a": "A", "b": "A", "c": "A"})
    rec(con, d1, {"a": "B"}, source="webhook")  # before the snapshot: the snapshot saw it
    mark = current_mark(con)
    rec(con, d1, {"b": "B"}, source="webhook")  # after the snapshot
    history.record(con, snap(con, {"a": "C", "b": "A", "c": "C"}), as_of=d1, preset="tracks", rules_hash="h1",
                   source="sync", mark=mark)
    now = {cid: seg for _, cid, seg, _, to in rows(con) if to is None}
    assert now == {"a": "C", "b": "B", "c": "C"}  # b keeps the newer webhook record; a and c as the snapshot says
    assert history.records(con)[-1]["customers"] == 3
    rec(con, d1, {"a": "C", "b": "A", "c": "C"})  # a snapshot without a mark (segments --record) replaces the day
    assert {cid: seg for _, cid, seg, _, to in rows(con) if to is None} == {"a": "C", "b": "A", "c": "C"}


SECOND = """
[[destinations]]
name = "mc2"
type = "mailchimp"
audience = "aud2"
[destinations.segments]
"Best active" = "VIP"
"Churn" = "Winback"
[destinations.transitions]
"Churn -> *" = "rfm-back"
"""


def test_a_failed_destination_does_not_keep_the_runs_moves_out_of_the_history(tiny, mailchimp_fake):
    """d1: x leaves Churn; the first destination is written, the second fails (401 on every write). The run's
    data was accepted, so d1 is recorded: the move is dated d1, the failed destination gets its tag at the next
    sync (still in the window, the ledger says it was never pushed) and loses it 7 days after d1, like the other."""
    from sync.history import open_history

    tiny.write_text(tiny.read_text(encoding="utf-8") + SECOND, encoding="utf-8")
    mailchimp_fake.add_list("aud2")
    x = "x@example.org"
    sync(tiny, D0)
    d1 = D0 + timedelta(days=1)
    buy(tiny, "x9", "x", d1)
    mailchimp_fake.fail(401, None, fraction=1.0, method="POST", path="/lists/aud2")
    failed = run_cli("sync", "--config", str(tiny), "--as-of", d1.isoformat(), code=CONFIG_EXIT)
    assert "error: destination 'mc2': Mailchimp POST /lists/aud2/" in failed.output
    assert "rfm-back" in mailchimp_fake.tags_of(x)  # the first destination was written
    assert "rfm-back" not in mailchimp_fake.tags_of(x, "aud2")
    con = open_history(load_config(tiny))
    try:
        assert [(r["segment"], r["valid_from"]) for r in history.customer_history(con, "x")] == [
            ("Churn", D0), ("Best active", d1)]
        assert history.records(con)[-1]["as_of"] == d1
    finally:
        con.close()
    mailchimp_fake._faults.clear()
    d2 = d1 + timedelta(days=1)
    sync(tiny, d2)  # the failed destination's move tag is planned again: x moved on d1, 1 day ago
    assert "rfm-back" in mailchimp_fake.tags_of(x, "aud2") and "VIP" in mailchimp_fake.tags_of(x, "aud2")
    sync(tiny, d1 + timedelta(days=7))  # 7 days after the move, in both destinations
    assert "rfm-back" not in mailchimp_fake.tags_of(x) and "rfm-back" not in mailchimp_fake.tags_of(x, "aud2")


def test_a_run_refused_by_a_data_guard_records_no_history(tiny, mailchimp_fake):
    from sync.history import open_history

    sync(tiny, D0)
    tiny.write_text(tiny.read_text(encoding="utf-8").replace("max_customer_drop_pct = 100",
                                                             "max_customer_drop_pct = 10"), encoding="utf-8")
    orders = tiny.parent / "orders.csv"
    orders.write_text("".join(line for line in orders.read_text(encoding="utf-8").splitlines(keepends=True)
                              if not line.startswith(("y", "w"))), encoding="utf-8")  # half the customers gone
    run_cli("sync", "--config", str(tiny), "--as-of", (D0 + timedelta(days=1)).isoformat(), code=6)
    con = open_history(load_config(tiny))
    try:
        assert [r["as_of"] for r in history.records(con)] == [D0]
    finally:
        con.close()


def test_a_batch_refused_by_a_guard_is_failed_at_once_and_the_next_full_sync_pushes_it(tmp_path, mailchimp_fake,
                                                                                       monkeypatch):
    """A webhook batch that a plan guard refuses is not retried (the same records would give the same plan and
    the same refusal on every claim): its events are failed after one claim. Its records are in the order store,
    so the next full sync the guard lets through pushes them; its moves are not in the segment history (a refused
    resync records nothing, like a refused sync): that sync records the move, dated that day."""
    from sync.serve.scheduler import run_full_sync
    from sync.serve.worker import Worker
    from tests.test_guards import set_guards
    from tests.test_worker import churned_contact, make_shop, queue_order

    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    block = '[destinations.transitions]\n"Churn -> *" = "rfm-back"\n\n[destinations.fields]'
    path.write_text(path.read_text(encoding="utf-8").replace("[destinations.fields]", block), encoding="utf-8")
    cfg, settings = load_config(path), load_settings()
    d1 = AS_OF + timedelta(days=1)
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        email, cid = churned_contact(ledger)
    set_guards(path, max_change_pct=0, min_mass_change=1)  # any change to a managed contact is a mass change
    cfg = load_config(path)
    with open_ledger(cfg, settings) as ledger:
        queue_order(ledger, "G-1", cid, day=d1.isoformat())
        worker = Worker(cfg, ledger, settings, as_of=lambda: d1)
        assert worker.drain() == 0
        counts = ledger.event_counts()
        assert (counts["failed"], counts["queued"]) == (1, 0)  # one claim, no retry
        assert ledger.recent_runs(1)[0]["status"] == "refused"
    assert "Winback" in mailchimp_fake.tags_of(email)  # nothing written
    with open_store(store_path(cfg)) as con:
        assert [r["valid_from"] for r in history.customer_history(con, cid)][-1] < d1  # the move is not recorded
    path.write_text(path.read_text(encoding="utf-8").replace("max_change_pct = 0", "max_change_pct = 100"),
                    encoding="utf-8")
    cfg = load_config(path)
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=d1 + timedelta(days=1), kind="sync")
    assert "Winback" not in mailchimp_fake.tags_of(email) and "rfm-back" in mailchimp_fake.tags_of(email)
    with open_store(store_path(cfg)) as con:
        assert [r["valid_from"] for r in history.customer_history(con, cid)][-1] == d1 + timedelta(days=1)
