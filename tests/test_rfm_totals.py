"""The per-customer RFM totals the order store keeps between runs (sync.store.rfm_totals) are never used stale.

After any sequence of daily files added (their totals added in the transaction that inserts them), files
rewritten or removed (the totals rebuilt), a run as of an earlier day (the orders read) or in another time zone,
a run on the store gives what a run on a copy of its orders without any kept totals gives, and the kept totals
equal freshly computed ones.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.tables import create_tables
from segmentation.metrics import TOTALS_SQL, local_times_sql
from sync.config import load_config
from sync.pipeline import compute_segments, configured_source, customers_relation, store_path
from sync.store.files import ingest_files
from sync.store.rfm_totals import TABLE, current_totals, rfm_totals
from tests.profiles import examples
from tests.test_day_cache import CONFIG as DAY_CACHE_CONFIG

AS_OF = date(2025, 6, 30)
CONFIG = DAY_CACHE_CONFIG.replace("{extra}", "")  # the same shop folder as the day cache's tests
# 2024-10-27 00:30 and 01:30 UTC are both 02:30 in Berlin (the clocks went back): the first and last sale of a
# customer are combined as instants, never as local times
DATES = ["2024-03-01 10:00", "2024-10-27 00:30", "2024-10-27 01:30", "2025-02-14 23:30", "2025-06-29 22:00"]
ROW = st.tuples(st.sampled_from(["c1", "c2", "c3", "c4"]), st.sampled_from(DATES),
                st.sampled_from(["10.00", "25.50", "99.99"]), st.sampled_from(["completed", "completed", "refunded",
                                                                               "cancelled"]))
DAY = st.lists(ROW, min_size=1, max_size=5)
STEP = st.one_of(st.tuples(st.just("add"), DAY), st.tuples(st.just("rewrite"), DAY), st.tuples(st.just("remove")),
                 st.tuples(st.just("as of"), st.sampled_from([date(2024, 10, 26), date(2024, 10, 27),
                                                              date(2025, 6, 29)])))


def _write(folder: Path, name: str, rows: list[tuple[str, ...]], first_id: int) -> None:
    (folder / "exports").mkdir(exist_ok=True)
    lines = ["order_id,customer,date,amount,status"] + [f"{first_id + i},{','.join(r)}" for i, r in enumerate(rows)]
    (folder / "exports" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _config(folder: Path, tz: str = "UTC"):
    (folder / "rfmsync.toml").write_text(CONFIG.format(tz=tz), encoding="utf-8")
    return load_config(folder / "rfmsync.toml")


def _seen(run) -> tuple:
    """What a user sees of a run: the summary, the cut points and every customer's row."""
    return run.result.summary, run.result.cut_points, customers_relation(run).fetchall()


def _assert_as_fresh(cfg, as_of: date) -> None:
    """A run on the store (its totals built, added to or read) = a run on a copy of its orders."""
    run = compute_segments(cfg, as_of, boundary=False)
    try:
        con = run.con
        fresh = duckdb.connect()
        create_tables(fresh)
        fresh.register("_copy", con.sql("SELECT * EXCLUDE (file_id) FROM orders").arrow())
        fresh.execute("INSERT INTO orders BY NAME SELECT * FROM _copy")
        alone = compute_segments(cfg, as_of, con=fresh, boundary=False)  # nothing kept: the orders are read
        assert _seen(run) == _seen(alone)
        kept = current_totals(con)
        if kept is not None:  # the totals are those of the orders as they are now
            assert kept == cfg.timezone
            assert con.execute(f"SELECT * FROM {TABLE} ORDER BY customer_id").fetchall() == fresh.execute(
                f"SELECT *, {local_times_sql(cfg.timezone)} FROM ({TOTALS_SQL.format(orders='orders', where='true')})"
                " ORDER BY customer_id").fetchall()
        alone.close()
    finally:
        run.close()


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=DAY, steps=st.lists(STEP, min_size=1, max_size=4), tz=st.sampled_from(["UTC", "Europe/Berlin"]))
def test_any_sequence_of_daily_files_and_runs_gives_the_fresh_results(tmp_path_factory, first, steps, tz):
    folder = tmp_path_factory.mktemp("shop")
    cfg = _config(folder, tz)
    files = 1
    _write(folder, "day00.csv", first, 1)
    _assert_as_fresh(cfg, AS_OF)
    for step in steps:
        as_of = AS_OF
        if step[0] == "add":
            _write(folder, f"day{files:02}.csv", step[1], 100 * files + 1)
            files += 1
        elif step[0] == "rewrite":
            _write(folder, f"day{files - 1:02}.csv", step[1], 100 * (files - 1) + 1)
        elif step[0] == "remove" and files > 1:
            files -= 1
            (folder / "exports" / f"day{files:02}.csv").unlink()
        elif step[0] == "as of":
            as_of = step[1]
        _assert_as_fresh(cfg, as_of)


def test_a_daily_file_adds_its_totals_and_the_next_run_reads_them(tmp_path):
    """The nightly case: the new file's totals are added as its rows go in, so the store's totals stay current
    (no rebuild from every order) and give the fresh results."""
    cfg = _config(tmp_path)
    _write(tmp_path, "day00.csv", [("c1", DATES[0], "10.00", "completed"), ("c2", DATES[1], "25.50", "refunded")], 1)
    _assert_as_fresh(cfg, AS_OF)
    _write(tmp_path, "day01.csv", [("c1", DATES[3], "99.99", "completed"), ("c3", DATES[4], "10.00", "completed"),
                                   ("c2", DATES[2], "10.00", "completed")], 101)
    with duckdb.connect(str(store_path(cfg))) as con:
        assert ingest_files(con, configured_source(cfg)).read == [str(tmp_path / "exports" / "day01.csv")]
        assert current_totals(con) == "UTC"  # still those of the orders: added, a run has nothing to rebuild
        assert con.execute(f"SELECT customer_id, frequency, monetary, refunds FROM {TABLE} ORDER BY 1").fetchall() \
            == [("c1", 2, Decimal("109.99"), 0), ("c2", 1, Decimal("-15.50"), 1), ("c3", 1, Decimal("10.00"), 0)]
    _assert_as_fresh(cfg, AS_OF)


def test_a_run_as_of_a_day_before_the_newest_order_reads_the_orders(tmp_path):
    cfg = _config(tmp_path)
    _write(tmp_path, "day00.csv", [("c1", DATES[0], "10.00", "completed"), ("c1", DATES[4], "25.50", "completed"),
                                   ("c2", DATES[3], "99.99", "completed")], 1)
    _assert_as_fresh(cfg, AS_OF)  # the totals are kept
    run = compute_segments(cfg, date(2025, 6, 1), boundary=False)
    try:
        rows = customers_relation(run).fetchall()
    finally:
        run.close()
    assert [(r[0], r[3], r[4], float(r[5])) for r in rows] == [("c1", 457, 1, 10.0), ("c2", 107, 1, 99.99)]
    _assert_as_fresh(cfg, date(2025, 6, 1))


def test_an_order_edited_in_the_store_without_a_merge_is_seen(tmp_path):
    cfg = _config(tmp_path)
    _write(tmp_path, "day00.csv", [("c1", DATES[0], "10.00", "completed"), ("c2", DATES[3], "99.99", "completed")], 1)
    _assert_as_fresh(cfg, AS_OF)
    with duckdb.connect(str(store_path(cfg))) as con:
        con.execute("UPDATE orders SET amount = amount + 1 WHERE customer_id = 'c1'")
        assert current_totals(con) is None
    _write(tmp_path, "day01.csv", [("c1", DATES[4], "10.00", "completed")], 101)  # added to stale totals: seen
    _assert_as_fresh(cfg, AS_OF)


def test_totals_of_another_time_zone_are_rebuilt(tmp_path):
    """The same orders read in another time zone (a store another config wrote): local times of that zone."""
    cfg = _config(tmp_path)
    _write(tmp_path, "day00.csv", [("c1", DATES[1], "10.00", "completed"), ("c2", DATES[4], "99.99", "completed")], 1)
    _assert_as_fresh(cfg, AS_OF)
    with duckdb.connect(str(store_path(cfg))) as con:
        assert rfm_totals(con, AS_OF, "Asia/Tokyo") == TABLE
        assert current_totals(con) == "Asia/Tokyo"
        assert con.execute(f"SELECT count(*) FROM {TABLE} WHERE first_order_at = timezone('Asia/Tokyo', first_at)"
                           " AND last_order_at = timezone('Asia/Tokyo', last_at)").fetchall() == [(2,)]
