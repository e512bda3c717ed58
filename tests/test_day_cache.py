"""The order store's purchase-day cache (sync.store.day_cache) is never used stale.

After every change of the export (a new file, a changed file, a removed file), in another time zone and as of
another day, a run that reads the cache gives what a run without it gives: the cached table and totals equal
freshly built ones, and so do the lifecycle (holdout columns included), the predictions, the fit report and the
boundary. Two changes only one part of the key sees are tested on their own: an order edited in the store
without a merge (the checksum) and a customer id rewritten by a file change (the store's generation).
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from connectors.tables import create_tables
from segmentation.lifecycle import create_customer_totals
from segmentation.purchase_days import ALL_DAYS, build_purchase_days
from sync.config import load_config
from sync.pipeline import compute_segments, store_path
from sync.store.day_cache import (CHECK_TABLE, DAYS_TABLE, TOTALS_TABLE, cached_purchase_days, drop_cache,
                                  valid_purchase_days)
from sync.store.generation import bump_generation

AS_OF = date(2025, 6, 30)
CONFIG = """\
[source]
type = "file"
orders = "exports/*.csv"
timezone = "{tz}"

[source.columns]
order_id = "order_id"
customer_id = "customer"
ordered_at = "date"
amount = "amount"
status = "status"{extra}

[store]
orders = "shop.duckdb"
"""


def _rows(seed: int, n: int, prefix: str) -> list[str]:
    """``n`` orders of 40 customers over 18 months; times near midnight UTC (another local day in Europe)."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    out = []
    for i in range(n):
        at = start + timedelta(days=rng.randrange(545), hours=rng.choice([0, 1, 21, 22, 23, 12]),
                               minutes=rng.randrange(60))
        status = rng.choice(["completed"] * 6 + ["refunded", "cancelled"])
        out.append(f"{prefix}{i},c{rng.randrange(40)}@example.com,{at.isoformat()},{rng.randrange(5, 300)}.00,{status}")
    return out


def _write(folder: Path, name: str, rows: list[str]) -> None:
    (folder / "exports").mkdir(exist_ok=True)
    path = folder / "exports" / name
    path.write_text("\n".join(["order_id,customer,date,amount,status", *rows]) + "\n", encoding="utf-8")


def _config(folder: Path, tz: str = "UTC", email: bool = False):
    """``email``: the file's customer column is mapped as the e-mail too: a contact field, so every change is
    staged over all files and merged (sync.store.merge), not swapped by file id (sync.store.file_lean)."""
    extra = '\nemail = "customer"' if email else ""
    (folder / "rfmsync.toml").write_text(CONFIG.format(tz=tz, extra=extra), encoding="utf-8")
    return load_config(folder / "rfmsync.toml")


def _table(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def _assert_as_fresh(cfg, as_of: date, full: bool = True, boundary: bool | None = None) -> None:
    """A run on the store (cache built or read) = a run on a copy of its orders without any cache. ``full``:
    holdout and boundary (`rfmsync segments` with predictions and the report: the day table is kept too), else
    `segments --customers`; ``boundary=False`` with ``full``: `rfmsync predict` (the holdout without a day
    table counts the totals' lists of days)."""
    boundary = full if boundary is None else boundary
    run = compute_segments(cfg, as_of, predict=True, holdout=full, boundary=boundary)
    try:
        con = run.con
        days = valid_purchase_days(con, cfg.timezone)
        assert days is not None and (days.table == DAYS_TABLE or not boundary)
        fresh = duckdb.connect()
        create_tables(fresh)
        for name in ("orders", "contacts", "line_items"):
            fresh.register("_copy", con.sql(f"SELECT * FROM {name}").arrow())
            fresh.execute(f"INSERT INTO {name} BY NAME SELECT * EXCLUDE (file_id) FROM _copy" if name == "orders"
                          else f"INSERT INTO {name} BY NAME SELECT * FROM _copy")
            fresh.unregister("_copy")
        own = build_purchase_days(fresh, ALL_DAYS, cfg.timezone, table="_fresh_days")
        create_customer_totals(fresh, own, "_fresh_totals")
        if days.table == DAYS_TABLE:
            assert _table(con, f"SELECT * FROM {DAYS_TABLE} ORDER BY ALL") == _table(
                fresh, "SELECT * FROM _fresh_days ORDER BY ALL")
        totals = "SELECT * REPLACE (list_sort(day_list) AS day_list) FROM {} ORDER BY ALL"  # (lists unordered)
        assert _table(con, totals.format(TOTALS_TABLE)) == _table(fresh, totals.format("_fresh_totals"))
        alone = compute_segments(cfg, as_of, con=fresh, predict=True, holdout=full, boundary=boundary)  # no cache
        assert alone.predictions.purchase_days is None or alone.predictions.purchase_days.table != DAYS_TABLE
        for table in ("customer_lifecycle", "customer_predictions", "customer_segments"):
            assert _table(con, f"SELECT * FROM {table} ORDER BY customer_id") == _table(
                fresh, f"SELECT * FROM {table} ORDER BY customer_id"), table
        assert run.predictions.to_json() == alone.predictions.to_json()
        assert run.predictions.holdout_groups == alone.predictions.holdout_groups
        assert run.result.boundary == alone.result.boundary
    finally:
        run.close()


def test_the_cache_equals_a_fresh_computation_after_every_change(tmp_path):
    _write(tmp_path, "a.csv", _rows(1, 300, "a"))
    _write(tmp_path, "b.csv", _rows(2, 300, "b"))
    cfg = _config(tmp_path)
    _assert_as_fresh(cfg, AS_OF, full=False)  # `segments --customers`: the totals only
    with duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        assert con.execute(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{DAYS_TABLE}'"
                           ).fetchall() == [(0,)]
    _assert_as_fresh(cfg, date(2025, 3, 31), full=False)  # an earlier day: the orders' days, not the totals
    _assert_as_fresh(cfg, AS_OF, boundary=False)  # `rfmsync predict`: the totals and their lists of days
    _assert_as_fresh(cfg, AS_OF)  # the day table added to the totals
    _assert_as_fresh(cfg, AS_OF)  # both read
    _assert_as_fresh(cfg, date(2025, 3, 31))  # another as-of: a filter of the same table (no totals)
    _write(tmp_path, "c.csv", _rows(3, 120, "c"))  # a new file
    _assert_as_fresh(cfg, AS_OF)
    _assert_as_fresh(cfg, AS_OF, full=False)  # reads the totals; the day table stays for the next
    _assert_as_fresh(cfg, AS_OF)
    rows = _rows(2, 300, "b")
    rows[7] = rows[7].rsplit(",", 2)[0] + ",1234.00,completed"  # a changed file
    _write(tmp_path, "b.csv", rows)
    _assert_as_fresh(cfg, AS_OF)
    (tmp_path / "exports" / "a.csv").unlink()  # a removed file
    _assert_as_fresh(cfg, AS_OF)
    _assert_as_fresh(_config(tmp_path, "Europe/Berlin"), AS_OF)  # another time zone
    _assert_as_fresh(_config(tmp_path, "Europe/Berlin"), date(2024, 11, 2))
    for tz, day in (("Europe/Berlin", date(2025, 6, 30)), ("Pacific/Kiritimati", AS_OF), ("Etc/GMT+12", AS_OF),
                    ("America/New_York", date(2025, 1, 29))):  # the holdout's window starts across a DST change
        with duckdb.connect(str(store_path(_config(tmp_path, tz)))) as con:
            drop_cache(con)  # the totals alone (no day table left by the runs before)
        _assert_as_fresh(_config(tmp_path, tz), day, boundary=False)


@pytest.mark.parametrize("boundary", [False, True], ids=["totals-alone", "with-day-table"])
def test_the_kept_totals_and_checks_customer_ids_are_stored_uncompressed(tmp_path, boundary):
    """A cold build writes the customer ids of the kept totals and the customers' checks uncompressed (compressing
    a million of them cost a 10 M-order store's cold run more than writing them: BENCHMARKS.md, branch dense11),
    with the types and rows of a fresh computation, and a daily file's update keeps them so."""
    _write(tmp_path, "a.csv", _rows(1, 400, "a"))
    cfg = _config(tmp_path)
    _assert_as_fresh(cfg, AS_OF, boundary=boundary)
    _write(tmp_path, "b.csv", _rows(2, 20, "b"))  # a daily file: its customers' rows replaced
    _assert_as_fresh(cfg, AS_OF, boundary=boundary)
    with duckdb.connect(str(store_path(cfg))) as con:
        con.execute("CHECKPOINT")
        for table in (TOTALS_TABLE, CHECK_TABLE):
            kinds = {kind for kind, in con.execute(f"SELECT DISTINCT compression FROM pragma_storage_info('{table}') "
                                                    "WHERE segment_type <> 'VALIDITY' AND column_name = 'customer_id'"
                                                    ).fetchall()}
            assert kinds and kinds <= {"Uncompressed", "Constant"}, (table, kinds)


def test_a_cache_of_another_time_zone_is_not_used(tmp_path):
    _write(tmp_path, "a.csv", _rows(1, 200, "a"))
    cfg = _config(tmp_path)
    compute_segments(cfg, AS_OF, predict=True).close()
    with duckdb.connect(str(store_path(cfg))) as con:
        assert valid_purchase_days(con, "UTC") is not None
        assert valid_purchase_days(con, "Europe/Berlin") is None
        berlin = cached_purchase_days(con, "Europe/Berlin")  # replaces it
        assert berlin.timezone == "Europe/Berlin" and valid_purchase_days(con, "UTC") is None


def test_an_order_edited_in_the_store_without_a_merge_is_seen(tmp_path):
    """The checksum: nothing but the amount changes, and no merge moves the generation."""
    _write(tmp_path, "a.csv", _rows(1, 200, "a"))
    cfg = _config(tmp_path)
    _assert_as_fresh(cfg, AS_OF)
    with duckdb.connect(str(store_path(cfg))) as con:
        con.execute("UPDATE orders SET amount = amount + 1 WHERE order_id = (SELECT min(order_id) FROM orders "
                    "WHERE status = 'completed')")
        assert valid_purchase_days(con, "UTC") is None
    _assert_as_fresh(cfg, AS_OF)


@pytest.mark.parametrize("merged", [False, True], ids=["by-file-id", "merged"])
def test_a_customer_id_rewritten_by_a_file_change_is_seen(tmp_path, merged):
    """The generation: the orders' times, amounts and statuses stay, only whose they are changes."""
    rows = _rows(1, 200, "a")
    _write(tmp_path, "a.csv", rows)
    cfg = _config(tmp_path, email=merged)
    _assert_as_fresh(cfg, AS_OF)
    moved = [r.replace(",c1@", ",c99@") for r in rows]
    assert moved != rows
    _write(tmp_path, "a.csv", moved)
    _assert_as_fresh(cfg, AS_OF)
    with duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        assert _table(con, f"SELECT count(*) FROM {DAYS_TABLE} WHERE customer_id LIKE 'c1@%'") == [(0,)]


@pytest.mark.parametrize("as_of", [date(2025, 6, 30), date(2030, 1, 1)])
def test_totals_serve_any_day_from_the_last_purchase_on(tmp_path, as_of):
    _write(tmp_path, "a.csv", _rows(4, 250, "a"))
    _assert_as_fresh(_config(tmp_path), as_of)


def test_the_summary_boundary_reads_a_current_day_table_only(tmp_path):
    """`rfmsync segments` (boundary, no predictions) reads the store's day table when it is current: the same
    boundary as its own sampled table gives; after an edit the table is stale and not read."""
    _write(tmp_path, "a.csv", _rows(5, 400, "a"))
    cfg = _config(tmp_path)
    own = compute_segments(cfg, AS_OF)  # no cache yet: the boundary's own table
    want = own.result.boundary
    own.close()
    assert want["gaps"] >= 30
    compute_segments(cfg, AS_OF, predict=True, holdout=True).close()  # keeps the day table
    shared = compute_segments(cfg, AS_OF)
    assert valid_purchase_days(shared.con, "UTC", day_table=True) is not None
    assert shared.result.boundary == want
    shared.con.execute("UPDATE orders SET ordered_at = ordered_at - INTERVAL 40 DAY WHERE order_id IN "
                       "(SELECT order_id FROM orders WHERE status = 'completed' ORDER BY order_id LIMIT 60)")
    assert valid_purchase_days(shared.con, "UTC", day_table=True) is None
    shared.close()
    edited = compute_segments(cfg, AS_OF)
    fresh = duckdb.connect()
    create_tables(fresh)
    fresh.register("_copy", edited.con.sql("SELECT * EXCLUDE (file_id) FROM orders").arrow())
    fresh.execute("INSERT INTO orders BY NAME SELECT * FROM _copy")
    assert edited.result.boundary == compute_segments(cfg, AS_OF, con=fresh).result.boundary != want
    edited.close()


def _shop_rows(seed: int, n: int, prefix: str, customers: range) -> list[str]:
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return [f"{prefix}{i},c{rng.choice(customers)}@example.com,"
            f"{(start + timedelta(days=rng.randrange(545), hours=rng.choice([0, 22, 23, 12]))).isoformat()},"
            f"{rng.randrange(5, 300)}.00,{rng.choice(['completed'] * 6 + ['refunded'])}" for i in range(n)]


@pytest.mark.parametrize("tz", ["Europe/Berlin"])
def test_a_daily_file_replaces_only_its_customers_rows(tmp_path, caplog, tz):
    """A new file of a few customers (one of them new), a changed order, a removed file: only those customers'
    rows are recomputed, and every table equals a fresh computation (a later file also moves the local-day
    expression's range: the kept days of the others stay right)."""
    import logging

    _write(tmp_path, "a.csv", _shop_rows(1, 500, "a", range(60)))
    cfg = _config(tmp_path, tz)
    _assert_as_fresh(cfg, AS_OF)
    caplog.set_level(logging.INFO, logger="sync.store.day_cache")
    steps = [("daily-1.csv", ["d1,c3@example.com,2025-06-30T23:30:00+00:00,40.00,completed",
                              "d2,c999@example.com,2025-06-29T10:00:00+00:00,15.00,completed",
                              "d3,c7@example.com,2025-06-30T08:00:00+00:00,25.00,refunded"]),
             ("daily-2.csv", ["e1,c3@example.com,2025-07-01T01:00:00+00:00,70.00,completed"])]
    for name, rows in steps:  # appended the lean way: their customers found from their rows alone
        caplog.clear()
        _write(tmp_path, name, rows)
        _assert_as_fresh(cfg, AS_OF)
        assert any("replaced the rows of" in r.getMessage() and APPENDED in r.getMessage()
                   for r in caplog.records), caplog.text
    caplog.clear()
    (tmp_path / "exports" / "daily-1.csv").unlink()  # not an append: every customer's orders compared
    _assert_as_fresh(cfg, date(2025, 7, 2), full=False)
    assert any("replaced the rows of 3 of" in r.getMessage() and APPENDED not in r.getMessage()
               for r in caplog.records), caplog.text


APPENDED = "the customers noted by the writes since: "


@pytest.mark.parametrize("edit", ["amount", "customer"])
def test_an_appended_file_after_an_edit_in_place_compares_every_customer(tmp_path, caplog, edit):
    """An order edited in the store without a merge (its amount: the checksum; its customer: the generation),
    then a daily file appended: the customers of that file are not all that changed, so the update compares
    every customer's orders, and the tables equal a fresh computation."""
    import logging

    _write(tmp_path, "a.csv", _shop_rows(1, 400, "a", range(50)))
    cfg = _config(tmp_path)
    _assert_as_fresh(cfg, AS_OF)
    with duckdb.connect(str(store_path(cfg))) as con:
        if edit == "amount":  # nothing moves the generation: only the checksum sees it
            con.execute("UPDATE orders SET amount = amount + 1 WHERE order_id = (SELECT min(order_id) FROM orders "
                        "WHERE status = 'completed' AND customer_id <> 'c3@example.com')")
        else:  # a rewrite that moves the generation without noting an append
            con.execute("UPDATE orders SET customer_id = 'c49@example.com' WHERE order_id = (SELECT min(order_id) "
                        "FROM orders WHERE customer_id NOT IN ('c3@example.com', 'c49@example.com'))")
            bump_generation(con)
    caplog.set_level(logging.INFO, logger="sync.store.day_cache")
    _write(tmp_path, "daily-1.csv", ["d1,c3@example.com,2025-06-30T23:30:00+00:00,40.00,completed"])
    _assert_as_fresh(cfg, AS_OF, full=False)
    lines = [r.getMessage() for r in caplog.records if "replaced the rows of" in r.getMessage()]
    assert lines and not any(APPENDED in line for line in lines), caplog.text


def test_the_holdout_cuts_the_kept_days_by_local_day(tmp_path):
    """`rfmsync predict` keeps no day table: the holdout's purchase days after the calibration end are counted
    from the totals' list of each customer's local days. Orders a few hours either side of the UTC midnight after
    that day are on one side or the other depending on the zone (UTC+14 and UTC−12 included)."""
    cal_end = AS_OF - timedelta(days=90)
    midnight = datetime.combine(cal_end + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    rows = []
    for i, hours in enumerate((-14.5, -13.5, -11, -1, 0, 1, 11.5, 12.5, 13.5)):
        rows.append(f"e{i},c{i},2024-06-01T12:00:00+00:00,10.00,completed")
        rows.append(f"m{i},c{i},{(midnight - timedelta(days=30)).isoformat()},20.00,completed")
        rows.append(f"b{i},c{i},{(midnight + timedelta(hours=hours)).isoformat()},30.00,completed")
    rows.append(f"n0,c99,{(midnight + timedelta(hours=-13)).isoformat()},40.00,completed")  # a first purchase
    _write(tmp_path, "a.csv", rows)
    for tz in ("Pacific/Kiritimati", "Etc/GMT+12", "UTC", "Asia/Kathmandu"):
        cfg = _config(tmp_path, tz)
        with duckdb.connect(str(store_path(cfg))) as con:
            drop_cache(con)
        _assert_as_fresh(cfg, AS_OF, boundary=False)


@pytest.mark.parametrize("holdout_days", [63, 64, 65, 200])
def test_a_long_holdout_counts_its_later_purchase_days_as_fresh(tmp_path, holdout_days):
    """The holdout's later purchase days per customer, counted from the totals' list of days: windows of 63 to
    200 days, several orders on one day counting once (a cut off by one day fails)."""
    rows = _rows(5, 900, "o") + [f"d{i},c{i % 7}@example.com,2025-06-{10 + i % 3}T10:00:00+00:00,20.00,completed"
                                 for i in range(30)]
    _write(tmp_path, "a.csv", rows)
    cfg = _config(tmp_path, "Europe/Berlin")
    (tmp_path / "rfmsync.toml").write_text((tmp_path / "rfmsync.toml").read_text(encoding="utf-8")
                                           + f"\n[predict]\nholdout_days = {holdout_days}\n", encoding="utf-8")
    cfg = load_config(tmp_path / "rfmsync.toml")
    _assert_as_fresh(cfg, AS_OF, boundary=False)


