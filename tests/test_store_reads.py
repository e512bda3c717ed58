"""A file export's full refresh pays for noting whom it moved (each customer's rows compared before and after: two
grouped scans of the store) only while a full sync's read of the store is outstanding (:mod:`sync.store.reads`):
the sync registers its read where it reads the generation, renews it under each destination's lock and takes it back
when its applies are done; a crashed sync's read lapses after ``LEASE``. Without one the refresh compares nothing
and leaves its generation unnoted (a sync whose read lapsed while it ran is held, exit 5, as before resync29).
Before resync30 every full refresh of a changed file compared (1 M contacts / 2 M orders: 7.9-10.6 s → 9.8-18.7 s)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connectors.records import Order
from connectors.source import PullResult
from connectors.tables import stage_records
from sync import api
from sync.config import load_config
from sync.ledger import Ledger, open_ledger
from sync.pipeline import store_path
from sync.settings import load_settings
from sync.store import connect_store
from sync.store.generation import generation
from sync.store.merge import merge_staged
from sync.store.reads import LEASE, release_read, reads_outstanding, take_read
from sync.store.resynced import KEPT_ROWS, moved_since
from sync.store_moved import StoreRead
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_guards_withdrawal import MANAGED, set_consent
from tests.test_replan_after_later_run import _state, _sync, shop  # noqa: F401
from tests.test_sync_store_moved import _file_order, _winback, _x_withdrawn_y_left_out_z_moved
from tests.test_worker import DEST

AT = datetime(2025, 6, 29, 8, tzinfo=timezone.utc)


def _refresh(con, *orders: tuple[str, str, str]) -> None:
    """A file export's full refresh of ``orders`` (id, customer, amount)."""
    stage_records(con, [Order(order_id=o, customer_id=c, amount=Decimal(a), ordered_at=AT) for o, c, a in orders], [])
    merge_staged(con, PullResult(full_refresh=True), origin="pull")


def _kept(con) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [KEPT_ROWS]).fetchall()[0][0])


def test_a_full_refresh_compares_only_while_a_syncs_read_is_outstanding(tmp_path):
    """No sync's read outstanding: the refresh compares nothing, notes nothing (None: whom it moved is not known)
    and keeps no rows. A read taken: the next refresh notes whom it moved; taken back: nothing again. Before: every
    refresh compared, whether or not anybody had read the store."""
    con = connect_store(tmp_path / "s.duckdb")
    _refresh(con, ("1", "A", "5"), ("2", "B", "5"))  # the empty store's first read
    seen = generation(con)
    _refresh(con, ("1", "A", "6"), ("2", "B", "5"))
    assert moved_since(con, seen) == (seen + 1, None) and not _kept(con)
    read = take_read(con)  # a full sync reads here
    seen = generation(con)
    _refresh(con, ("1", "A", "6"), ("2", "B", "7"))
    assert moved_since(con, seen) == (seen + 1, {"B"}) and _kept(con)
    release_read(con, read)  # its applies are done
    assert not reads_outstanding(con)
    _refresh(con, ("1", "A", "8"), ("2", "B", "7"))
    assert moved_since(con, seen + 1) == (seen + 2, None) and not _kept(con)


def test_a_crashed_syncs_read_lapses(tmp_path):
    """A read never taken back (the sync was killed) holds the comparison on until LEASE after it was taken or last
    renewed, then lapses: a refresh after that compares nothing, and the next read taken forgets it."""
    con = connect_store(tmp_path / "s.duckdb")
    _refresh(con, ("1", "A", "5"))
    now = datetime.now(timezone.utc)
    take_read(con, at=now - LEASE + timedelta(minutes=1))  # a minute left
    assert reads_outstanding(con) and not reads_outstanding(con, at=now + timedelta(minutes=2))
    con.execute("DELETE FROM store_reads")
    take_read(con, at=now - LEASE - timedelta(seconds=1))  # lapsed a second ago
    seen = generation(con)
    _refresh(con, ("1", "A", "6"))
    assert moved_since(con, seen) == (seen + 1, None)
    take_read(con)
    assert con.execute("SELECT count(*) FROM store_reads").fetchall()[0][0] == 1


@pytest.mark.parametrize("shop", ["skip"], indirect=True)
def test_a_syncs_read_is_renewed_under_each_destinations_lock(shop, mailchimp_fake):
    """A read with a minute of its lease left, checked under a destination's lock (``StoreRead.fresh``), holds
    for another LEASE: a long apply's comparison stays on; taken back, it is gone."""
    cfg = load_config(shop)
    with connect_store(store_path(cfg)) as con:
        seen = generation(con)
        read_id = take_read(con, at=datetime.now(timezone.utc) - LEASE + timedelta(minutes=1))
    read = StoreRead(cfg, seen, read_id=read_id)
    assert read.fresh()
    with connect_store(store_path(cfg)) as con:
        assert reads_outstanding(con, at=datetime.now(timezone.utc) + timedelta(hours=1))
    read.release()
    with connect_store(store_path(cfg)) as con:
        assert not reads_outstanding(con)


@pytest.mark.parametrize("shop", ["skip"], indirect=True)
def test_a_sync_reading_before_a_refresh_is_not_held_and_takes_its_read_back(shop, mailchimp_fake):
    """The full sync registers its read: a pull reading a changed export before its apply compares and notes y and
    the new customer (x's withdrawal and z's change go, y is left out, the run succeeds), and once its applies are
    done no read is outstanding: a refresh after it compares nothing."""
    x, y, z = _winback(shop, 3)
    set_consent(shop, "нет", {x.customer_id})
    _file_order(shop, z.customer_id, "900002", "10,00")
    outstanding: list[bool] = []

    def later(ledger: Ledger) -> None:
        with connect_store(store_path(load_config(shop))) as con:
            outstanding.append(reads_outstanding(con))
        _file_order(shop, y.customer_id, "900001", "10,00")
        _file_order(shop, "NEWCUST-1", "990001", "10,00")
        api.pull(load_config(shop), ledger, load_settings())

    _sync(shop, later)
    assert outstanding == [True]
    _x_withdrawn_y_left_out_z_moved(shop, mailchimp_fake, x, y, z)
    with connect_store(store_path(load_config(shop))) as con:
        assert not reads_outstanding(con)


@pytest.mark.parametrize("shop", ["skip"], indirect=True)
def test_a_sync_reading_after_an_unnoted_refresh_is_not_affected(shop, mailchimp_fake):
    """A refresh with no sync's read outstanding leaves its generation unnoted; a sync reading after it plans from
    it and pushes everything (nobody left out, not held)."""
    y, z = _winback(shop, 2)
    cfg = load_config(shop)
    _file_order(shop, y.customer_id, "900001", "10,00")
    with open_ledger(cfg, load_settings()) as ledger:
        api.pull(cfg, ledger, load_settings())
    with connect_store(store_path(cfg)) as con:
        assert moved_since(con, generation(con) - 1)[1] is None  # the pull's refresh: unnoted
    _file_order(shop, z.customer_id, "900002", "10,00")
    _sync(shop)
    for who in (y, z):
        moved = _state(shop, who.key).tags  # out of Winback: the new order pushed
        assert moved != {"Winback"} and set(mailchimp_fake.tags_of(who.key, "aud1")) & MANAGED == moved & MANAGED
    with open_ledger(cfg, load_settings()) as ledger:
        assert [(r["destination"], r["status"]) for r in ledger.recent_runs(1)] == [(DEST, "succeeded")]
