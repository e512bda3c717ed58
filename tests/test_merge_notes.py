"""After API and webhook merges the kept tables replace only the customers the merges noted (sync.store.appends).

Any sequence of webhook merges (new orders, edited orders, deleted orders whose tombstone names no customer,
identity resolution moving a customer's orders to another id), daily files (appended the lean way before the first
webhook, restaged after) and runs gives, at every run, the RFM totals, the purchase-day cache, the segments and
the predictions a run on a copy of the orders without anything kept gives. The guards are tested one by one: a
merge that rolls back notes nothing, an order edited in place is still seen, a note gone (too old) or too many
customers rebuild, a write without a note rebuilds.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.non_purchase import tombstone
from connectors.records import Contact, Order, OrderStatus
from connectors.source import PullResult
from connectors.tables import create_tables, stage_records
from segmentation.metrics import TOTALS_SQL, local_times_sql
from sync.config import load_config
from sync.pipeline import compute_segments, store_path
from sync.store import appends, merge_staged
from sync.store.appends import MERGES, TOUCHED, changed_since
from sync.store.connection import connect_store
from sync.store.generation import generation
from sync.store.rfm_totals import TABLE, current_totals
from tests.profiles import examples
from tests.test_day_cache import AS_OF, _assert_as_fresh, _config, _write
from tests.test_rfm_totals import _seen

UPDATED = "noted by the writes since"
CUSTOMERS = ["c1@example.com", "c2@example.com", "c3@example.com", "+998900000001", "+998900000002"]
DATES = [datetime(2024, 3, 1, 10, tzinfo=timezone.utc), datetime(2024, 10, 26, 23, 30, tzinfo=timezone.utc),
         datetime(2025, 2, 14, 22, 30, tzinfo=timezone.utc), datetime(2025, 6, 29, 12, tzinfo=timezone.utc)]
RUNS = ["no-predict", "customers", "full"]
ORDER = st.tuples(st.sampled_from([f"a{i}" for i in range(6)] + [f"w{i}" for i in range(6)]),
                  st.sampled_from(CUSTOMERS), st.sampled_from(DATES), st.sampled_from(["10.00", "25.50", "99.99"]),
                  st.sampled_from(["completed", "completed", "refunded", "cancelled"]))
STEP = st.one_of(
    st.tuples(st.just("webhook"), st.lists(ORDER, min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.sampled_from([f"a{i}" for i in range(6)] + ["w0", "nowhere"])),
    st.tuples(st.just("link"), st.sampled_from(CUSTOMERS[3:] + CUSTOMERS[:1]), st.sampled_from(["c7", "c8"])),
    st.tuples(st.just("file"), st.lists(ORDER, min_size=1, max_size=3)),
    st.tuples(st.just("run"), st.sampled_from(RUNS)))


def _file_rows(orders: list[tuple], prefix: str) -> list[str]:
    return [f"{prefix}{i},{cust},{at.isoformat()},{amount},{status}"
            for i, (_, cust, at, amount, status) in enumerate(orders)]


def _order(oid: str, cust: str, at: datetime, amount: str, status: str) -> Order:
    return Order(order_id=oid, customer_id=cust, ordered_at=at, amount=Decimal(amount), status=OrderStatus(status))


def _merge(cfg, orders=(), contacts=(), fail: bool = False) -> None:
    """A webhook batch merged into the store (``fail``: a write after the merge's own raises: rolled back)."""
    def boom(_con):
        raise RuntimeError("killed before the commit")

    con = connect_store(store_path(cfg))
    try:
        stage_records(con, orders, contacts)
        merge_staged(con, PullResult(), origin="webhook", before_commit=boom if fail else None)
    finally:
        con.close()


def _run(cfg, kind: str = "customers") -> None:
    """A run (`segments --customers --no-predict`, `segments --customers`, or with the holdout and boundary) = a
    run without anything kept (the day cache's test compares the purchase days, the segments and the predictions),
    and the store's RFM totals are current and equal fresh ones."""
    if kind == "no-predict":
        run = compute_segments(cfg, AS_OF, boundary=False)
        try:
            fresh = duckdb.connect()
            create_tables(fresh)
            for name in ("orders", "contacts", "line_items"):
                fresh.register("_copy", run.con.sql(f"SELECT * FROM {name}").arrow())
                fresh.execute(f"INSERT INTO {name} BY NAME SELECT * {'EXCLUDE (file_id)' * (name == 'orders')} "
                              "FROM _copy")
                fresh.unregister("_copy")
            assert _seen(run) == _seen(compute_segments(cfg, AS_OF, con=fresh, boundary=False))
        finally:
            run.close()
    else:
        _assert_as_fresh(cfg, AS_OF, full=kind == "full")
    with duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        assert current_totals(con) == cfg.timezone
        assert con.execute(f"SELECT * FROM {TABLE} ORDER BY customer_id").fetchall() == con.execute(
            f"SELECT *, {local_times_sql(cfg.timezone)} FROM ({TOTALS_SQL.format(orders='orders', where='true')}) "
            "ORDER BY customer_id").fetchall()


def _shop(folder: Path, tz: str = "UTC"):
    """A file export: orders a0..a5 of the customers above, and 40 more customers (the share of changed customers
    a kept table updates is a quarter)."""
    others = [(None, f"s{i}@example.com", DATES[i % 4], "20.00", "completed") for i in range(40)]
    _write(folder, "a.csv", _file_rows([(None, CUSTOMERS[i % 5], DATES[i % 4], "20.00", "completed")
                                        for i in range(6)], "a") + _file_rows(others, "s"))
    return _config(folder, tz)


_STARTED: dict[str, tuple[Path, Path]] = {}  # time zone -> (the shop's folder, a copy of it after its first run)


def _started_shop(tmp_path_factory, tz: str):
    """:func:`_shop` after its first run (:func:`_run`: `segments --customers`, checked against a fresh run), for
    an example of the property test below. Every example starts from that same state, so it is built once per
    time zone in this process and restored for each example byte for byte (export, store, config and their
    modification times) into the same folder: the store knows its files by their path."""
    if tz not in _STARTED:
        folder = tmp_path_factory.mktemp("shop")
        _run(_shop(folder, tz))
        _STARTED[tz] = folder, tmp_path_factory.mktemp("started")
        shutil.copytree(folder, _STARTED[tz][1], dirs_exist_ok=True)
    folder, started = _STARTED[tz]
    shutil.rmtree(folder)
    shutil.copytree(started, folder)
    return folder, load_config(folder / "rfmsync.toml")


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=5), tz=st.sampled_from(["UTC", "Europe/Berlin"]))
def test_any_sequence_of_merges_files_and_runs_gives_the_fresh_results(tmp_path_factory, steps, tz):
    folder, cfg = _started_shop(tmp_path_factory, tz)
    files = 0
    for step in steps:
        if step[0] == "webhook":
            _merge(cfg, [_order(*o) for o in step[1]])
        elif step[0] == "delete":  # the vendor no longer says whose order it was
            _merge(cfg, [tombstone(step[1], DATES[3])])
        elif step[0] == "link":  # a customer's contact arrives with the phone/e-mail their orders were keyed by
            ident = step[1]
            _merge(cfg, contacts=[Contact(step[2], **({"email": ident} if "@" in ident else {"phone": ident}))])
        elif step[0] == "file":
            files += 1
            _write(folder, f"day{files}.csv", _file_rows(step[1], f"f{files}_"))
        else:
            _run(cfg, step[1])
    _run(cfg, "full")


def _noted_run(cfg, caplog, updated: bool = True, kind: str = "customers") -> None:
    """A run (:func:`_run`) whose kept tables replaced the noted customers' rows (``updated``; else: rebuilt or
    compared every customer): the day cache's and the RFM totals' (``no-predict``: the totals alone)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sync.store"):
        _run(cfg, kind)
    lines = [r.getMessage() for r in caplog.records if UPDATED in r.getMessage()]
    assert len(lines) == (0 if not updated else 1 if kind == "no-predict" else 2), caplog.text


def test_webhook_batches_replace_only_their_customers_rows(tmp_path, caplog):
    """The nightly case: two webhook batches (a new customer, an edited and a deleted order, an identity link),
    then a run: both kept tables replace the noted customers' rows and equal fresh ones."""
    cfg = _shop(tmp_path)
    _run(cfg, "full")
    _merge(cfg, [_order("w1", "c9@example.com", DATES[3], "12.00", "completed"),  # a new customer
                 _order("a1", "c3@example.com", DATES[2], "77.00", "refunded")])  # c2's order, now c3's
    _merge(cfg, [tombstone("a2", DATES[3])], [Contact("c7", phone="+998900000002")])
    with duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        assert con.execute("SELECT customer_id FROM orders WHERE order_id = 'a2'").fetchall() == [("c3@example.com",)]
        noted = con.execute(f"SELECT generation, customer_id FROM {TOUCHED} ORDER BY ALL").fetchall()
        gen = generation(con)
    # the second: the tombstone's stored customer, and both ids of the identity link
    assert {c for g, c in noted if g == gen} == {"c3@example.com", "+998900000002", "c7"}
    assert {c for g, c in noted if g == gen - 1} == {"c9@example.com", "c2@example.com", "c3@example.com"}
    _noted_run(cfg, caplog, kind="full")
    _merge(cfg, [_order("w2", "c1@example.com", DATES[1], "5.00", "completed")])
    _noted_run(cfg, caplog)  # the totals alone (`segments --customers`), after the day table was kept
    _merge(cfg, [_order("a3", "c4@example.com", DATES[0], "5.00", "cancelled")])
    _noted_run(cfg, caplog, kind="no-predict")


def test_a_merge_that_rolls_back_notes_nothing(tmp_path, caplog):
    cfg = _shop(tmp_path)
    _run(cfg)
    with pytest.raises(RuntimeError, match="killed"):
        _merge(cfg, [_order("w1", "c9@example.com", DATES[3], "12.00", "completed")], fail=True)
    with duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        assert not con.execute(f"SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('{MERGES}', '{TOUCHED}')"
                               ).fetchall()[0][0] or not con.execute(f"SELECT count(*) FROM {MERGES}").fetchall()[0][0]
        assert con.execute("SELECT count(*) FROM orders WHERE order_id = 'w1'").fetchall() == [(0,)]
    _merge(cfg, [_order("w2", "c9@example.com", DATES[3], "12.00", "completed")])
    _noted_run(cfg, caplog)


@pytest.mark.parametrize("kind", ["no-predict", "full"])
@pytest.mark.parametrize("edit", ["noted customer", "other customer"])
def test_an_order_edited_in_place_after_a_merge_is_seen(tmp_path, caplog, edit, kind):
    """The count/checksum rule: an order edited without a merge, of a customer the merge noted or not, fails the
    check (the key plus what the merges noted is not the orders' now): the tables compare every customer."""
    cfg = _shop(tmp_path)
    _run(cfg, "full")
    _merge(cfg, [_order("w1", "c1@example.com", DATES[3], "12.00", "completed")])
    who = "c1@example.com" if edit == "noted customer" else "c2@example.com"
    with connect_store(store_path(cfg)) as con:
        con.execute("UPDATE orders SET amount = amount + 1 WHERE order_id = (SELECT min(order_id) FROM orders "
                    "WHERE customer_id = ? AND status = 'completed')", [who])
    _noted_run(cfg, caplog, updated=False, kind=kind)


@pytest.mark.parametrize("kind", ["no-predict", "customers"])
def test_too_many_changed_customers_rebuild(tmp_path, caplog, kind):
    cfg = _shop(tmp_path)
    _run(cfg)
    _merge(cfg, [_order(f"w{i}", f"n{i}", DATES[3], "12.00", "completed") for i in range(12)])
    _noted_run(cfg, caplog, updated=False, kind=kind)


def test_notes_older_than_the_kept_key_are_gone(tmp_path, caplog, monkeypatch):
    """Only the latest KEEP generations keep their notes: a key further behind rebuilds."""
    monkeypatch.setattr(appends, "KEEP", 2)
    cfg = _shop(tmp_path)
    _run(cfg)
    for i in range(3):
        _merge(cfg, [_order(f"w{i}", "c1@example.com", DATES[3], "12.00", "completed")])
    with duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        gen = generation(con)
        assert changed_since(con, gen - 3, gen) is None and changed_since(con, gen - 2, gen) is not None
    _noted_run(cfg, caplog, updated=False)


def test_a_large_merge_notes_nothing_and_the_run_rebuilds(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("sync.store.merge.NOTED_ROWS", 1)
    cfg = _shop(tmp_path)
    _run(cfg)
    _merge(cfg, [_order("w1", "c1@example.com", DATES[3], "12.00", "completed"),
                 _order("w2", "c2@example.com", DATES[3], "12.00", "completed")])
    _noted_run(cfg, caplog, updated=False)


def test_more_noted_customers_than_kept_drop_the_older_notes(tmp_path, caplog, monkeypatch):
    """At most NOTED_CUSTOMERS noted customers are kept: a merge past it drops the notes before it (a key behind
    them rebuilds), its own note stays."""
    monkeypatch.setattr(appends, "NOTED_CUSTOMERS", 2)
    cfg = _shop(tmp_path)
    _run(cfg)
    _merge(cfg, [_order("w1", "c1@example.com", DATES[3], "12.00", "completed")])
    _merge(cfg, [_order("w2", "c2@example.com", DATES[3], "12.00", "completed"),
                 _order("w3", "c3@example.com", DATES[3], "12.00", "completed")])
    with duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        gen = generation(con)
        assert changed_since(con, gen - 2, gen) is None and changed_since(con, gen - 1, gen) is not None
    _noted_run(cfg, caplog, updated=False)


@pytest.mark.parametrize("ident", ["+998900000002", "c2@example.com"])
def test_a_webhook_resync_that_links_a_contact_leaves_the_kept_tables_as_fresh(tmp_path, ident):
    """The webhook server's own path (`resync`): a contact arriving with the phone/e-mail earlier orders were keyed
    by moves those orders to its customer id. The link happens inside the merge's transaction, so the merge notes
    both ids and the next run's kept totals and purchase days equal fresh ones (they kept the old id's row when the
    server linked before the merge, outside it: the checksums leave the customer id out)."""
    from sync.ledger import open_ledger
    from sync.serve.resync import resync
    from sync.settings import load_settings

    cfg = _shop(tmp_path)
    _run(cfg, "full")
    settings = load_settings()
    with open_ledger(cfg, settings) as ledger:
        report = resync(cfg, ledger, settings, contacts=[Contact("c7", **({"email": ident} if "@" in ident
                                                                         else {"phone": ident}))], as_of=AS_OF)
    assert report.customers >= 1
    with duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM orders WHERE customer_id = ?", [ident]).fetchall()[0][0] == 0
        assert con.execute("SELECT count(*) FROM orders WHERE customer_id = 'c7'").fetchall()[0][0] > 0
    _run(cfg, "no-predict")
    _run(cfg)


def test_a_merge_that_fails_after_linking_leaves_the_stored_orders_and_the_generation_as_they_were(tmp_path):
    """Linking re-keys stored orders: it runs inside the merge's transaction, so a merge that fails after it (or a
    process killed there) leaves the orders under their old id and the generation where it was, and the next
    run's kept tables equal fresh ones."""
    cfg = _shop(tmp_path)
    _run(cfg, "full")
    con = connect_store(store_path(cfg))
    try:
        stage_records(con, [], [Contact("c7", phone="+998900000002")])
        before = generation(con)

        def killed(_con):
            raise RuntimeError("killed after the link")

        with pytest.raises(RuntimeError):
            merge_staged(con, PullResult(), origin="webhook", after_link=killed)
        assert generation(con) == before
        assert con.execute("SELECT count(*) FROM orders WHERE customer_id = '+998900000002'").fetchall()[0][0] > 0
        assert con.execute("SELECT count(*) FROM orders WHERE customer_id = 'c7'").fetchall()[0][0] == 0
    finally:
        con.close()
    _run(cfg, "no-predict")
