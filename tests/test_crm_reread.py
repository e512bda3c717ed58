"""A record read twice by one pull (the pass after a backfill, the lookback) is reported as its LAST read saw it:
fixed in between, no stale bad row; broken (or broken otherwise) in between, the later fault."""

from __future__ import annotations

import logging
from datetime import timedelta

from sync.store import open_store

from . import test_amocrm
from .test_amocrm import T0

rsps = test_amocrm.rsps


def backfill(rsps, change) -> tuple[list[tuple], int, list[tuple]]:
    """A backfill of leads 1-3 (one page) with ``change(fake)`` after its first page was served, so that lead 1 is
    read again, changed, by the pass after it: (bad rows (id, field, value), their count, the staged orders)."""
    fake = test_amocrm.FakeAmo(rsps)
    fake.put_contact(10, "ann@example.com", at=T0)
    for i in (1, 2, 3):
        fake.put_order(i, 10, "100", at=T0 + i * timedelta(minutes=1), bad=i == 1)
    fake.between_pages = lambda: change(fake)
    with open_store(None) as con:
        result = test_amocrm.make_source().pull(con)
        staged = con.execute("SELECT order_id, amount FROM staged_orders ORDER BY 1").fetchall()
    assert fake.between_pages is None
    return [(b.row, b.field, b.value) for b in result.bad_rows], result.bad_row_count, staged


def test_a_record_fixed_between_two_reads_of_a_pull_leaves_no_stale_bad_row(rsps):
    bad, count, staged = backfill(rsps, lambda fake: fake.put_order(1, 10, "70", at=T0 + timedelta(minutes=5)))
    assert (bad, count) == ([], 0)
    assert [(i, int(a)) for i, a in staged] == [("1", 70), ("2", 100), ("3", 100)]


def test_a_record_broken_between_two_reads_is_reported_as_the_later_read_saw_it(rsps, caplog):
    def break_it(fake):
        fake.put_order(1, 10, "100", at=T0 + timedelta(minutes=5))
        fake.leads[1]["price"] = "many"

    with caplog.at_level(logging.WARNING, "connectors.incremental"):
        bad, count, _ = backfill(rsps, break_it)
    assert (bad, count) == ([("1", "price", "many")], 1)  # (not the first read's 'lots')
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 2  # each fault logged once


def test_a_record_read_twice_with_the_same_fault_is_one_bad_row_logged_once(rsps, caplog):
    def touch(fake):
        fake.leads[1]["updated_at"] = int((T0 + timedelta(minutes=5)).timestamp())

    with caplog.at_level(logging.WARNING, "connectors.incremental"):
        bad, count, _ = backfill(rsps, touch)
    assert (bad, count) == ([("1", "price", "lots")], 1)
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 1


def test_a_good_record_broken_by_the_later_read_is_reported_and_its_good_read_stays_staged(rsps):
    """Not missed: the bad row names it; the store keeps the last version that could be read (as a later pull's bad
    read of it keeps the stored one)."""
    bad, count, staged = backfill(rsps, lambda fake: fake.put_order(2, 10, "100", at=T0 + timedelta(minutes=6),
                                                                     bad=True))
    assert (sorted(bad), count) == ([("1", "price", "lots"), ("2", "price", "lots")], 2)
    assert [i for i, _ in staged] == ["2", "3"]


def test_rows_naming_no_record_are_kept_up_to_max_bad_rows_and_counted_beyond(caplog):
    """Rows without a record id cannot be read again: the first ``max_bad_rows`` are kept, the rest only counted
    (each was kept, 56 MB for 200 k of them)."""
    import tracemalloc

    import duckdb

    from connectors.incremental import Stager
    from connectors.records import BadRow

    caplog.set_level(logging.CRITICAL, logger="connectors.incremental")  # (pytest keeps the records it captures)
    stager = Stager(duckdb.connect(), "x", max_bad_rows=10)
    tracemalloc.start()
    try:
        for _ in range(20_000):
            stager.bad(BadRow("x:orders", None, "the vendor sent a row that is not an object", value="garbage" * 10))
        grown = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert (len(stager.bad_rows), stager.bad_row_count) == (10, 20_000)
    assert grown < 1_000_000, f"{grown} bytes kept for 10 rows"
