"""The segment history under webhook resyncs and partial failures: a resync reads the history of its customers
only; a full sync's record never loses a webhook's move of the same day; a failed destination does not keep a
run's moves out of the history."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
from hypothesis import given, settings as hsettings, strategies as st

from sync.config import load_config
from sync.ledger import open_ledger
from sync.pipeline import store_path
from sync.serve.resync import resync
from sync.settings import load_settings
from sync.store import history, open_store

from tests.test_history import D0, expected_rows, rec, rows, snap, snapshots
from tests.test_serve_resync import orders_for

AS_OF = date(2025, 6, 30)


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


@hsettings(max_examples=25, deadline=None)
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


@hsettings(max_examples=25, deadline=None)
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
