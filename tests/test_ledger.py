"""The operational ledger, on SQLite and (with RFMSYNC_TEST_PG_URL) on PostgreSQL."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

import pytest
from sqlalchemy import inspect as sa_inspect, text
from sqlalchemy.engine import make_url

from sync.errors import ConfigError, LockBusyError
from sync.ledger import Ledger
from sync.ledger.db import build_engine, parse_url
from sync.ledger.schema import LATEST_VERSION, MIGRATIONS, TABLES, pushed_state, runs
from sync.model import ItemResult, PushedState

try:
    from tests.ledger_fixtures import PG_ENV, Clock, clock, ledger, ledger_url, open_ledger  # noqa: F401
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import PG_ENV, Clock, clock, ledger, ledger_url, open_ledger  # type: ignore # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
OpenLedger = Callable[..., Ledger]


def state(key: str, *tags: str, exists: bool = True, **fields: object) -> PushedState:
    return PushedState(key=key, customer_id=f"c-{key}", tags=frozenset(tags), fields=fields, exists=exists)


# -- connect, URLs, secrets, migrations ------------------------------------------------------


def test_connect_creates_the_newest_schema_and_is_idempotent(open_ledger: OpenLedger) -> None:
    first = open_ledger()
    assert first.schema_version() == LATEST_VERSION
    first.set_cursor("shopify", "orders", "2025-01-01T00:00:00Z")
    second = open_ledger()  # connecting again migrates nothing and keeps the data
    assert second.schema_version() == LATEST_VERSION
    assert second.get_cursor("shopify", "orders") == "2025-01-01T00:00:00Z"


def test_several_processes_starting_at_once_migrate_once(ledger_url: str) -> None:
    errors: list[BaseException] = []
    versions: list[int] = []

    def start() -> None:
        try:
            with Ledger.connect(ledger_url) as led:
                versions.append(led.schema_version())
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and versions == [LATEST_VERSION] * 4


def test_a_fresh_sqlite_ledger_opened_by_several_threads_at_once_never_reports_locked(tmp_path: Path) -> None:
    """Switching a new file to WAL answers "database is locked" at once (no busy handler) when another
    connection is switching it too; that used to fail about one start in twelve. 60 fresh files, 4 each."""
    errors: list[BaseException] = []

    def start(url: str) -> None:
        try:
            with Ledger.connect(url) as led:
                led.schema_version()
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    for round_ in range(60):
        url = f"sqlite:///{tmp_path / str(round_) / 'rfmsync.db'}"
        threads = [threading.Thread(target=start, args=(url,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert errors == []


def test_migrated_schema_matches_the_table_definitions(ledger: Ledger, ledger_url: str) -> None:
    """MIGRATIONS and TABLES must describe the same schema (catches a step forgotten)."""
    engine = build_engine(parse_url(ledger_url))
    try:
        insp = sa_inspect(engine)
        assert set(insp.get_table_names()) == set(TABLES.tables)
        for name, table in TABLES.tables.items():
            got = {c["name"]: c["nullable"] for c in insp.get_columns(name)}
            want = {c.name: c.nullable for c in table.columns}
            assert got == want, name
            assert set(insp.get_pk_constraint(name)["constrained_columns"]) == set(table.primary_key.columns.keys())
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("events")}
        assert ("source", "dedupe_key") in uniques
    finally:
        engine.dispose()


def test_migrates_a_version_1_ledger_keeping_its_data(open_ledger: OpenLedger, ledger_url: str,
                                                       clock: Clock) -> None:
    old = open_ledger(target_version=1)
    assert old.schema_version() == 1
    engine = build_engine(parse_url(ledger_url))
    try:
        with engine.begin() as conn:
            assert not engine.dialect.has_table(conn, "events")
            run_id = conn.execute(runs.insert().values(kind="sync", destination="mailchimp", status="succeeded",
                                                       started_at=clock(), counts="{}").returning(runs.c.id)).scalar()
            conn.execute(pushed_state.insert().values(
                destination="mailchimp", key="ann@example.com", customer_id="c1", tags='["rfm:vip"]',
                fields='{"RFM_SEG":"vip"}', in_destination=True, pushed_at=clock(), run_id=run_id))
    finally:
        engine.dispose()

    new = open_ledger()
    assert new.schema_version() == LATEST_VERSION
    assert new.load_state("mailchimp") == {
        "ann@example.com": PushedState("ann@example.com", "c1", frozenset({"rfm:vip"}), {"RFM_SEG": "vip"})}
    assert new.state_revision("mailchimp") == 1  # v2 seeds revisions from existing state
    assert new.recent_runs()[0]["destination"] == "mailchimp"
    assert new.enqueue_event("shopify", "order-1", "{}") is True  # v3 tables exist
    engine = build_engine(parse_url(ledger_url))
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version FROM schema_version ORDER BY version")).scalars().all()
    finally:
        engine.dispose()
    assert versions == [m.version for m in MIGRATIONS]


def test_refuses_a_ledger_from_a_newer_rfmsync(open_ledger: OpenLedger, ledger_url: str, clock: Clock) -> None:
    open_ledger()
    engine = build_engine(parse_url(ledger_url))
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO schema_version (version, description, applied_at) "
                              "VALUES (:v, 'from the future', :t)"),
                         {"v": LATEST_VERSION + 1, "t": "2030-01-01 00:00:00"})
    finally:
        engine.dispose()
    with pytest.raises(ConfigError, match=f"version {LATEST_VERSION + 1}.*upgrade rfmsync"):
        open_ledger()


@pytest.mark.parametrize("url, message", [
    ("mysql://u:p@localhost/db", "unsupported database 'mysql'"),
    ("not a url", "not a database URL"),
    ("sqlite+pysqlcipher:///x.db", "not supported"),
])
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Ledger.connect(url)


def test_unreachable_postgres_is_a_config_error_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = "postgresql://rfm:s3cr3t-pw@127.0.0.1:1/rfm"  # port 1: refused at once; driver defaulted to psycopg
    with pytest.raises(ConfigError) as info:
        Ledger.connect(url)
    assert "cannot open ledger postgresql+psycopg://rfm:***@127.0.0.1:1/rfm" in str(info.value)
    assert "s3cr3t" not in str(info.value) and "s3cr3t" not in caplog.text


def test_repr_and_logs_hide_the_password(ledger_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sync")
    with Ledger.connect(ledger_url) as led:
        password = parse_url(ledger_url).password
        if password:
            assert password not in repr(led) and "***" in repr(led)
            assert password not in caplog.text
        assert "migrated from schema version 0" in caplog.text


def test_sqlite_uses_wal_and_enforces_foreign_keys(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "dir" / "rfmsync.db"
    with Ledger.connect(f"sqlite:///{db}") as led:
        with sqlite3.connect(db) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(ValueError, match="run 999 does not exist"):
            led.save_states("mailchimp", 999, [state("a@x.io")])
        assert led.load_state("mailchimp") == {}


def test_a_save_naming_a_run_that_does_not_exist_is_a_clear_error_on_either_engine(ledger: Ledger) -> None:
    """PostgreSQL's rows go through COPY (psycopg's own ForeignKeyViolation, unwrapped): the same ValueError as
    SQLite's, naming the run, and nothing saved; the ledger goes on working."""
    with pytest.raises(ValueError, match="^save_states: run 999 does not exist in the ledger$"):
        ledger.save_states("mailchimp", 999, [state("a@x.io")])
    assert ledger.load_state("mailchimp") == {} and ledger.state_revision("mailchimp") == 0
    run = ledger.start_run("sync", "mailchimp")
    assert ledger.save_states("mailchimp", run, [state("a@x.io")]) == 1


def test_a_large_group_is_saved_whole_and_leaves_the_connections_page_cache_as_it_was(tmp_path: Path) -> None:
    """save_states writes a large group (keys not in customer order) with a bigger SQLite page cache for its
    transaction only: every row is there, and the connection's cache is its default size again afterwards,
    also when the group fails, and after the ``subscribed_by_us`` rows written with it (so readers on the pooled
    connection stay small)."""
    from sync.ledger.state_rows import LARGE_GROUP

    with Ledger.connect(f"sqlite:///{tmp_path / 'rfmsync.db'}") as led:
        engine = led._db.engine  # the ledger's own pooled connections (one thread: the same one each time)

        def cache_size() -> int:
            with engine.connect() as conn:
                return conn.exec_driver_sql("PRAGMA cache_size").scalar()

        default = cache_size()
        states = [PushedState(key=f"{(i * 7919) % LARGE_GROUP:05d}@x.io", customer_id=f"c{(i * 104729) % 9973}",
                              tags=frozenset({"t"}), fields={"n": i}, exists=True) for i in range(LARGE_GROUP)]
        with pytest.raises(ValueError, match="run 999 does not exist"):
            led.save_states("mailchimp", 999, states)
        assert cache_size() == default
        run = led.start_run("sync", "mailchimp")
        assert led.save_states("mailchimp", run, states) == LARGE_GROUP
        assert cache_size() == default
        # a first sync's group records its subscribed creates in the same transaction, with the larger cache too
        keys = sorted(s.key for s in states)
        assert led.save_states("mailchimp", run, states, subscribed=(keys, ())) == LARGE_GROUP
        assert cache_size() == default
        assert led.subscribed_among("mailchimp", keys) == set(keys)
        loaded = led.load_state("mailchimp")
        assert len(loaded) == LARGE_GROUP
        assert {k: (s.customer_id, dict(s.fields)) for k, s in loaded.items()} == \
            {s.key: (s.customer_id, dict(s.fields)) for s in states}


def test_saves_of_any_group_size_run_statements_of_a_few_sizes_and_store_every_row(tmp_path: Path) -> None:
    """An apply's groups come in any size; SQLite prepares a statement per distinct text (its rows' count), which
    for a few hundred rows costs about what writing them does: every save writes blocks of VALUES_ROWS rows and
    the rest in blocks of a power of two, so the statements SQLite sees have a dozen sizes, not one per group, and
    every row is stored (new rows, then the same keys under another customer: the second, full update)."""
    from sync.ledger.state_rows import VALUES_ROWS

    sizes: list[int] = []

    def traced(sql: str) -> None:
        if sql.startswith("INSERT INTO pushed_state"):
            sizes.append(sql.count("@x.io'"))

    with Ledger.connect(f"sqlite:///{tmp_path / 'rfmsync.db'}") as led:
        run = led.start_run("sync", "mailchimp")
        start, groups = 0, [1, 2, 3, 5, 77, 437, 999, 1000, 1001, 1234, 2222]
        with led._db.engine.connect() as conn:  # the pool's one connection in this thread
            conn.connection.driver_connection.set_trace_callback(traced)
        for owner in ("a", "b"):
            start = 0
            for n in groups:
                led.save_states("mailchimp", run, [
                    PushedState(key=f"k{i:05d}@x.io", customer_id=f"{owner}{i}", tags=frozenset({"t"}),
                                fields={"n": i}, exists=True) for i in range(start, start + n)])
                start += n
            loaded = led.load_state("mailchimp")
            assert len(loaded) == start and all(s.customer_id == f"{owner}{int(k[1:6])}" for k, s in loaded.items())
    assert sizes and set(sizes) <= {VALUES_ROWS, *(1 << b for b in range(VALUES_ROWS.bit_length()))}
    assert sum(sizes) == 3 * start  # the new rows once; the moved ones by the upsert that skips them, then the full one


def test_in_memory_sqlite_works_for_quick_use() -> None:
    with Ledger.connect("sqlite://") as led:
        led.set_cursor("csv", "orders", "42")
        assert led.get_cursor("csv", "orders") == "42"


def test_stored_datetimes_are_aware_utc_and_naive_ones_are_refused(open_ledger: OpenLedger) -> None:
    cet = timezone(timedelta(hours=1))
    led = open_ledger(clock=lambda: datetime(2025, 6, 1, 14, 0, tzinfo=cet))
    run_id = led.start_run("sync")
    assert led.get_run(run_id)["started_at"] == datetime(2025, 6, 1, 13, 0, tzinfo=timezone.utc)
    assert led.get_run(run_id)["started_at"].tzinfo == timezone.utc
    naive = open_ledger(clock=lambda: datetime(2025, 6, 1, 14, 0))
    with pytest.raises(Exception, match="naive datetime"):
        naive.start_run("sync")


# -- pushed state ------------------------------------------------------------------------


def test_save_load_upsert_forget_and_revision(ledger: Ledger) -> None:
    run_id = ledger.start_run("sync", "mailchimp")
    assert ledger.state_revision("mailchimp") == 0
    ledger.save_states("mailchimp", run_id, [
        state("ann@x.io", "rfm:vip", "rfm:a", SEG="vip", ORDERS=3, LTV=12.5, VIP=True, NOTE=None),
        state("bob@x.io", exists=False),
    ])
    assert ledger.state_revision("mailchimp") == 1
    got = ledger.load_state("mailchimp")
    assert got["ann@x.io"] == PushedState("ann@x.io", "c-ann@x.io", frozenset({"rfm:a", "rfm:vip"}),
                                          {"SEG": "vip", "ORDERS": 3, "LTV": 12.5, "VIP": True, "NOTE": None})
    assert got["bob@x.io"].exists is False
    assert ledger.load_state("sendgrid") == {}  # destinations are separate

    ledger.save_states("mailchimp", run_id, [state("ann@x.io", "rfm:lost", SEG="lost")])  # upsert
    assert ledger.load_state("mailchimp")["ann@x.io"].tags == frozenset({"rfm:lost"})
    assert ledger.state_revision("mailchimp") == 2

    assert ledger.save_states("mailchimp", run_id, []) == 0
    assert ledger.forget("mailchimp", ["nobody@x.io"]) == 0
    assert ledger.state_revision("mailchimp") == 2  # nothing changed, no bump
    assert ledger.forget("mailchimp", ["bob@x.io", "bob@x.io"]) == 1
    assert set(ledger.load_state("mailchimp")) == {"ann@x.io"}
    assert ledger.state_revision("mailchimp") == 3
    assert ledger.state_revision("sendgrid") == 0


def test_customer_states_are_one_customers_rows_in_every_destination(ledger: Ledger) -> None:
    """``rfmsync explain``: what each destination holds for one customer, read by customer id."""
    run_id = ledger.start_run("sync", "mailchimp")
    ledger.save_states("mailchimp", run_id, [state("ann@x.io", "rfm:vip", "rfm:a", SEG="vip"), state("bob@x.io")])
    ledger.save_states("sendgrid", run_id, [state("ann@x.io", "rfm-list", exists=False)])
    got = ledger.customer_states("c-ann@x.io")
    assert [(g["destination"], g["key"], g["tags"], g["fields"], g["in_destination"], g["run_id"]) for g in got] == [
        ("mailchimp", "ann@x.io", ["rfm:a", "rfm:vip"], {"SEG": "vip"}, True, run_id),
        ("sendgrid", "ann@x.io", ["rfm-list"], {}, False, run_id)]
    assert all(g["pushed_at"].tzinfo is not None for g in got)
    assert ledger.customer_states("c-nobody") == []


def test_tags_and_fields_are_stored_as_sorted_json(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    with Ledger.connect(f"sqlite:///{db}") as led:
        led.save_states("mc", None, [state("a@x.io", "z", "b", "m", Z=1, A="x")])
    with sqlite3.connect(db) as raw:
        tags, fields, run_id = raw.execute("SELECT tags, fields, run_id FROM pushed_state").fetchone()
    assert (tags, fields, run_id) == ('["b","m","z"]', '{"A":"x","Z":1}', None)


def test_unstorable_field_value_names_the_contact_and_field(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match=r"'ann@x\.io'.*Decimal"):
        ledger.save_states("mc", None, [state("ann@x.io", LTV=Decimal("1.50"))])
    with pytest.raises(ValueError, match="empty key"):
        ledger.save_states("mc", None, [state("")])
    assert ledger.load_state("mc") == {} and ledger.state_revision("mc") == 0


def test_duplicate_keys_in_one_save_keep_the_last(ledger: Ledger) -> None:
    ledger.save_states("mc", None, [state("a@x.io", "one"), state("a@x.io", "two")])
    assert ledger.load_state("mc")["a@x.io"].tags == frozenset({"two"})


def test_many_states_round_trip_exactly_across_chunks(ledger: Ledger) -> None:
    # 45 001 rows: over two of PostgreSQL's 20 000-row JSON chunks and many SQLite executemany chunks.
    # (Speed is the business of bench/sync.py, not of this test.)
    states = [PushedState(f"user{i}@example.com", None if i % 7 == 0 else str(i),
                          frozenset({f"rfm:{('vip', 'lost', 'new')[i % 3]}"}) if i % 5 else frozenset(),
                          {"RFM_SEG": ("vip", "lost", "new")[i % 3], "ORDERS": i % 40, "NOTE": 'a "q" é\\'},
                          exists=i % 11 != 0)
              for i in range(45_001)]
    run_id = ledger.start_run("sync", "mailchimp")
    ledger.save_states("mailchimp", run_id, states)
    assert ledger.load_state("mailchimp") == {s.key: s for s in states}


# -- runs ----------------------------------------------------------------------------------


def test_runs_record_status_counts_duration_newest_first(ledger: Ledger, clock: Clock) -> None:
    first = ledger.start_run("sync", "mailchimp")
    clock.advance(seconds=90)
    ledger.finish_run(first, "partial", {"upserted": 10, "failed": 2}, error="2 contacts rejected")
    second = ledger.start_run("pull")
    runs_ = ledger.recent_runs()
    assert [r["id"] for r in runs_] == [second, first]
    assert runs_[0] | {"started_at": None} == {
        "id": second, "kind": "pull", "destination": None, "started_at": None, "finished_at": None,
        "duration_s": None, "status": "running", "counts": {}, "error": None}
    done = runs_[1]
    assert (done["status"], done["counts"], done["error"], done["duration_s"]) == (
        "partial", {"upserted": 10, "failed": 2}, "2 contacts rejected", 90.0)
    assert done["finished_at"] - done["started_at"] == timedelta(seconds=90)
    assert len(ledger.recent_runs(limit=1)) == 1


def test_finish_run_rejects_bad_status_and_unknown_run(ledger: Ledger) -> None:
    run_id = ledger.start_run("sync", "mc")
    with pytest.raises(ValueError, match="status must be one of succeeded, partial, failed"):
        ledger.finish_run(run_id, "done", {})
    with pytest.raises(ValueError, match="no run with id 12345"):
        ledger.finish_run(12345, "failed", {})
    ledger.finish_run(run_id, "failed", {}, error="x" * 10_000)
    assert len(ledger.get_run(run_id)["error"]) == 2000


# -- failures --------------------------------------------------------------------------------


def test_failures_upsert_count_attempts_and_resolve(ledger: Ledger, clock: Clock) -> None:
    r1 = ledger.start_run("sync", "mc")
    first_time = clock()
    ledger.record_failures("mc", r1, [ItemResult("a@x.io", "upsert", False, "400 invalid merge field"),
                                      ItemResult("b@x.io", "tag+rfm:vip", False, "404"),
                                      ItemResult("c@x.io", "upsert", True)])
    clock.advance(minutes=5)
    r2 = ledger.start_run("sync", "mc")
    ledger.record_failures("mc", r2, [ItemResult("a@x.io", "upsert", False, "400 still invalid")])
    ledger.record_failures("sg", r2, [ItemResult("a@x.io", "upsert", False, "other destination")])

    pending = {(f["key"], f["op"]): f for f in ledger.pending_failures("mc")}
    assert set(pending) == {("a@x.io", "upsert"), ("b@x.io", "tag+rfm:vip")}
    a = pending["a@x.io", "upsert"]
    assert (a["attempts"], a["last_error"], a["run_id"]) == (2, "400 still invalid", r2)
    assert (a["first_failed_at"], a["last_failed_at"]) == (first_time, clock())
    assert pending["b@x.io", "tag+rfm:vip"]["attempts"] == 1
    assert len(ledger.pending_failures()) == 3

    assert ledger.resolve_failures("mc", [("a@x.io", "upsert"), ("zzz", "upsert")]) == 1
    assert [(f["key"], f["op"]) for f in ledger.pending_failures("mc")] == [("b@x.io", "tag+rfm:vip")]
    assert [f["destination"] for f in ledger.pending_failures("sg")] == ["sg"]


def test_record_results_records_failures_and_resolves_successes(ledger: Ledger) -> None:
    ledger.record_results("mc", None, [ItemResult("a@x.io", "upsert", False, "boom")])
    ledger.record_results("mc", None, [ItemResult("a@x.io", "upsert", True),
                                       ItemResult("b@x.io", "tag-rfm:new", False, "429 after retries")])
    assert [(f["key"], f["op"]) for f in ledger.pending_failures()] == [("b@x.io", "tag-rfm:new")]


# -- cursors -----------------------------------------------------------------------------------


def test_cursors_get_set_overwrite(ledger: Ledger) -> None:
    assert ledger.get_cursor("amocrm", "leads") is None
    ledger.set_cursor("amocrm", "leads", "1700000000")
    ledger.set_cursor("amocrm", "contacts", "5")
    ledger.set_cursor("amocrm", "leads", "1700000600")
    assert ledger.get_cursor("amocrm", "leads") == "1700000600"
    assert ledger.get_cursor("amocrm", "contacts") == "5"
    with pytest.raises(TypeError, match="must be a str"):
        ledger.set_cursor("amocrm", "leads", 5)  # type: ignore[arg-type]


# -- locks -------------------------------------------------------------------------------------


def test_lock_contention_between_two_instances(open_ledger: OpenLedger, clock: Clock) -> None:
    one, two = open_ledger(), open_ledger()
    with one.lock("sync:mailchimp", owner="host-a:1") as token:
        assert token == "host-a:1"
        with pytest.raises(LockBusyError) as info:
            two.acquire_lock("sync:mailchimp", owner="host-b:2")
        assert str(info.value) == ("sync:mailchimp is already running (held by host-a:1 since "
                                   "2025-03-01 12:00:00 UTC; the lock expires 2025-03-01 13:00:00 UTC)")
        assert info.value.exit_code == 75
        assert two.release_lock("sync:mailchimp", "host-b:2") is False  # not ours: no effect
        with two.lock("sync:sendgrid"):  # other names are independent
            pass
    with two.lock("sync:mailchimp") as token:  # released on exit
        assert token != "host-a:1"


def test_lock_is_released_when_the_block_raises(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError):
        with ledger.lock("sync:mc"):
            raise RuntimeError("sync failed")
    with ledger.lock("sync:mc"):
        pass


def test_expired_lock_can_be_taken_over_and_refresh_extends_it(open_ledger: OpenLedger, clock: Clock) -> None:
    one, two = open_ledger(), open_ledger()
    token = one.acquire_lock("sync:mc", ttl_seconds=60)
    clock.advance(seconds=50)
    assert one.refresh_lock("sync:mc", token, ttl_seconds=60) is True  # now expires at +110 s
    clock.advance(seconds=50)
    with pytest.raises(LockBusyError):
        two.acquire_lock("sync:mc")
    clock.advance(seconds=11)
    new_token = two.acquire_lock("sync:mc")  # the holder crashed: TTL passed
    assert one.refresh_lock("sync:mc", token) is False
    assert one.release_lock("sync:mc", token) is False
    with pytest.raises(LockBusyError, match="held by " + new_token):
        one.acquire_lock("sync:mc")


def test_lock_held_by_another_process(ledger_url: str, ledger: Ledger) -> None:
    code = ("import sys; from sync.ledger import Ledger; "
            "led = Ledger.connect(sys.argv[1]); led.acquire_lock('sync:mc', owner='worker-process'); led.close()")
    subprocess.run([sys.executable, "-c", code, ledger_url], cwd=ROOT, check=True, timeout=60)
    with pytest.raises(LockBusyError, match="held by worker-process"):  # it exited without releasing
        ledger.acquire_lock("sync:mc", ttl_seconds=5)


@pytest.mark.postgres
def test_a_postgresql_database_that_cannot_hold_every_character_is_refused_before_anything_is_written():
    """A LATIN1 (or WIN1251) database rejects the first name it has no code for, mid-apply, after the ESP was
    changed: the ledger refuses it when it opens, naming the encoding and the fix, with no table created."""
    import psycopg

    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (run: eval \"$(.ci/postgres.sh)\")")
    url = make_url(base).set(database=f"{make_url(base).database}_latin1")
    try:
        admin = psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                                dbname=url.database, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError:
        pytest.skip(f"needs the LATIN1 database {url.database} that .ci/postgres.sh creates")
    with admin:
        admin.execute("DROP SCHEMA IF EXISTS enc_test CASCADE")
        admin.execute("CREATE SCHEMA enc_test")
        try:
            scoped = url.update_query_dict({"options": "-csearch_path=enc_test"}).render_as_string(hide_password=False)
            with pytest.raises(ConfigError, match="has encoding LATIN1.*ENCODING 'UTF8'") as err:
                Ledger.connect(scoped)
            assert url.password not in str(err.value)
            assert admin.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'enc_test'"
                                 ).fetchone() == (0,)
        finally:
            admin.execute("DROP SCHEMA enc_test CASCADE")
