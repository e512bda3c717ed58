"""A full sync that read the order store before a merge (a webhook resync's, a pull's) does not push its older state under the
destination's lock when that resync planned nothing (the pushed state already was the new desired one: no ledger
revision moved, so the sync's re-plan on a moved revision never came). The store's generation, read again under
each destination's lock, says the store moved on; the customers the merges since noted are left out
(:mod:`sync.store.resynced`); a write that noted nobody holds the destination but its consent withdrawals (exit 5,
a refused run, retried by serve's scheduler). End to end against the fake Mailchimp, on both ledger engines."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from connectors.records import Consent, Contact, Order, OrderStatus
from connectors.source import PullResult
from connectors.tables import stage_records
from sync import api
from sync.config import load_config
from sync.errors import PlanStaleError
from sync.ledger import Ledger, open_ledger
from sync.model import PushedState
from sync.pipeline import store_path
from sync.serve.resync import resync
from sync.serve.schedule_retry import transient
from sync.settings import load_settings
from sync.store import STORE_LOCK, connect_store
from sync.store.generation import bump_generation
from sync.store.merge import merge_staged
from sync.store.resynced import moved_since, note_moved
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_guards_withdrawal import MANAGED, set_consent
from tests.test_replan_after_later_run import _churned, _state, _sync, shop  # noqa: F401
from tests.test_worker import AS_OF, DEST


def _file_order(path: Path, customer: str, order_id: str, amount: str) -> None:
    """An order of ``customer`` appended to the shop's export file (read by the next full sync)."""
    orders = path.parent / "orders.csv"
    with orders.open("a", encoding="utf-8") as out:
        out.write(f"{order_id};29.06.2025 12:00;{customer};;;{amount};;Продажа\n")


def test_a_resync_that_planned_nothing_is_not_undone_by_the_sync_that_read_before_it(shop, mailchimp_fake):
    """The sync read a new order of a churned customer from the export (planned: Winback → another
    segment); before it took the destination's lock, the order's refund came by webhook: the customer is back in
    Churn, where the ledger has him, so the resync planned and wrote nothing. The sync then pushed the refunded
    order's segment (before: the ESP and the ledger left him out of Winback)."""
    x = _churned(shop)
    _file_order(shop, x.customer_id, "900001", "10,00")
    refund = Order(order_id="900001", customer_id=x.customer_id, amount=Decimal("10"),
                   ordered_at=datetime(2025, 6, 29, 7, tzinfo=timezone.utc), status=OrderStatus.REFUNDED,
                   updated_at=datetime(2025, 6, 30, 2, tzinfo=timezone.utc))
    planned: list[int] = []

    def later(ledger: Ledger) -> None:
        report = resync(load_config(shop), ledger, load_settings(), [refund], as_of=AS_OF)
        planned.append(sum(r.counts.get("planned", 0) for r in report.reports))

    _sync(shop, later)
    assert planned == [0], "the refund's resync was to plan nothing (the ledger held him in Winback)"
    assert _state(shop, x.key).tags == {"Winback"}
    assert set(mailchimp_fake.tags_of(x.key, "aud1")) == {"Winback"}


def _winback(path: Path, n: int) -> list[PushedState]:
    """``n`` contacts of the Churn segment (tag Winback) whose customers consented."""
    with open_ledger(load_config(path), load_settings()) as ledger:
        state = ledger.load_state(DEST)
    return [s for _, s in sorted(state.items()) if s.tags == {"Winback"}][:n]


def _pulled(path: Path, orders: list[Order]) -> None:
    """An API pull's incremental merge of ``orders`` into the shop's order store (what ``rfmsync pull`` merges)."""
    with STORE_LOCK:
        con = connect_store(store_path(load_config(path)))
        try:
            stage_records(con, orders, [])
            merge_staged(con, PullResult(), origin="pull")
        finally:
            con.close()


@pytest.mark.parametrize("shop", ["skip"], indirect=True)
def test_a_pull_merged_during_the_sync_leaves_its_customers_out_and_the_rest_goes(shop, mailchimp_fake):
    """The sync plans a consent withdrawal (x) and two churned customers' new orders (y, z: out of Winback); before
    it takes the destination's lock a pull merges another order of y. The sync goes on: x's withdrawal and z's
    change are sent, y is left out (the pull noted him: the next sync plans him from the store as it is). Before:
    exit 5 (the pull's merge taken for a write nobody noted), nothing sent, no run recorded."""
    x, y, z = _winback(shop, 3)
    set_consent(shop, "нет", {x.customer_id})
    _file_order(shop, y.customer_id, "900001", "10,00")
    _file_order(shop, z.customer_id, "900002", "10,00")
    pulled = Order(order_id="PULL-1", customer_id=y.customer_id, amount=Decimal("5"),
                   ordered_at=datetime(2025, 6, 29, 8, tzinfo=timezone.utc))

    _sync(shop, lambda ledger: _pulled(shop, [pulled]))
    _x_withdrawn_y_left_out_z_moved(shop, mailchimp_fake, x, y, z)


@pytest.mark.parametrize("shop", ["skip"], indirect=True)
def test_a_file_read_during_the_sync_leaves_its_customers_out_and_the_rest_goes(shop, mailchimp_fake):
    """The same sync; before it takes the destination's lock a pull reads the export again (a new order of y in the
    orders file, a new customer's; the shop has a contacts file: a full refresh). The refresh notes whom it moved
    (y and the new customer, not the 60 others it wrote back alike): x's withdrawal and z's change are sent, y is
    left out, the run succeeds. Before: the refresh noted nobody, the destination was held but x's withdrawal
    (exit 5, a refused run, retried)."""
    x, y, z = _winback(shop, 3)
    set_consent(shop, "нет", {x.customer_id})
    _file_order(shop, z.customer_id, "900002", "10,00")

    def later(ledger: Ledger) -> None:
        _file_order(shop, y.customer_id, "900001", "10,00")
        _file_order(shop, "NEWCUST-1", "990001", "10,00")
        api.pull(load_config(shop), ledger, load_settings())

    _sync(shop, later)
    _x_withdrawn_y_left_out_z_moved(shop, mailchimp_fake, x, y, z)


@pytest.mark.parametrize("shop", ["skip"], indirect=True)
def test_a_write_that_noted_nobody_holds_the_destination_but_its_withdrawals(shop, mailchimp_fake, monkeypatch):
    """The same sync; the write before its apply is a full refresh of the export (a pull reading a changed file)
    that moved more customers than the notes' bound (``NOTED_CUSTOMERS``, 0 here), so it says nothing of whom it
    moved: x's withdrawal still goes out, z's change is held, the destination's run is recorded as refused (exit
    5), and serve's scheduler runs it again (transient). Before: the withdrawal held too, no run recorded, no
    retry."""
    from sync.store import resynced

    x, z = _winback(shop, 2)
    set_consent(shop, "нет", {x.customer_id})
    _file_order(shop, z.customer_id, "900002", "10,00")

    def later(ledger: Ledger) -> None:
        _file_order(shop, "NEWCUST-1", "990001", "10,00")  # another customer's order in the export
        monkeypatch.setattr(resynced, "NOTED_CUSTOMERS", 0)
        api.pull(load_config(shop), ledger, load_settings())

    with pytest.raises(PlanStaleError) as err:
        _sync(shop, later)
    assert err.value.exit_code == 5 and transient(err.value)
    assert "the order store was written by another run" in str(err.value)
    assert "1 consent withdrawal went out alone" in str(err.value)
    assert not mailchimp_fake.tags_of(x.key, "aud1") & MANAGED and not _state(shop, x.key).tags & MANAGED
    assert set(mailchimp_fake.tags_of(z.key, "aud1")) == {"Winback"} == _state(shop, z.key).tags
    with open_ledger(load_config(shop), load_settings()) as ledger:
        runs = ledger.recent_runs(2)
    assert [(r["destination"], r["status"]) for r in runs] == [(DEST, "refused"), (DEST, "succeeded")]
    assert "the order store was written by another run" in runs[0]["error"]


def test_the_merges_note_whom_they_moved_and_an_unnoted_write_is_not_taken_for_none(tmp_path):
    """Each incremental merge notes whom it moved: its orders' customers and its contacts' (a consent withdrawn);
    an empty one (a pull that found nothing new) does not move the generation. A write that noted nothing answers
    None, not an empty set: the sync then holds the destination rather than push its older rows."""
    con = connect_store(tmp_path / "s.duckdb")
    assert moved_since(con, 0) == (0, set())
    order = Order(order_id="O1", customer_id="C1", amount=Decimal("5"),
                  ordered_at=datetime(2025, 6, 29, 8, tzinfo=timezone.utc))
    stage_records(con, [order], [])
    merge_staged(con, PullResult(), origin="pull")
    stage_records(con, [], [])  # a pull that found nothing new
    merge_staged(con, PullResult(), origin="pull")
    assert moved_since(con, 0) == (1, {"C1"})
    stage_records(con, [], [Contact(customer_id="C2", email="c2@example.com", marketing_consent=Consent.NO)])
    merge_staged(con, PullResult(), origin="pull")
    assert moved_since(con, 0) == (2, {"C1", "C2"})
    assert moved_since(con, 1) == (2, {"C2"})
    con.execute("UPDATE orders SET amount = 6")  # a write that noted nothing (no merge: an edit in place)
    bump_generation(con)
    assert moved_since(con, 1) == (3, None)
    assert moved_since(con, 3) == (3, set())


def test_a_pull_that_read_again_only_what_the_store_holds_moves_nobody(tmp_path):
    """The re-read of session 43: an incremental pull's lookback window reads the last records again, unchanged
    (counted by ``unchanged_staged``, still staged), and its merge moved the generation and noted those customers:
    a full sync it overlapped left them out until the next sync, and every resync read the store again. Such a merge
    moves nothing now; one changed record among the re-reads still moves its customer."""
    from connectors.tables import unchanged_staged
    from sync.store.generation import generation

    con = connect_store(tmp_path / "s.duckdb")
    order = Order(order_id="O1", customer_id="C1", amount=Decimal("5"),
                  ordered_at=datetime(2025, 6, 29, 8, tzinfo=timezone.utc))
    contact = Contact(customer_id="C1", email="c1@example.com", marketing_consent=Consent.YES)

    def pull(orders, contacts):  # as sync.pipeline.pull_into counts an incremental pull, then merges it
        stage_records(con, orders, contacts)
        same = unchanged_staged(con)
        merge_staged(con, PullResult(unchanged_orders=same[0], unchanged_contacts=same[1]), origin="pull")

    pull([order], [contact])
    seen = generation(con)
    pull([order], [contact])  # the lookback's re-read, nothing changed
    assert generation(con) == seen and moved_since(con, seen) == (seen, set())
    pull([order], [Contact(customer_id="C1", email="c1@example.com", marketing_consent=Consent.NO)])
    assert moved_since(con, seen) == (seen + 1, {"C1"})


def test_a_note_the_cap_dropped_answers_none(monkeypatch):
    """More noted customers than the cap: the older generations' notes go, and a read before them gets None (not
    the customers of the notes left, which would lose the dropped ones quietly)."""
    from sync.store import resynced

    monkeypatch.setattr(resynced, "NOTED_CUSTOMERS", 6)  # rows: each customer and a NULL per generation
    con = duckdb.connect()
    bump_generation(con)
    note_moved(con, ["A", "B", "C"])
    bump_generation(con)
    note_moved(con, ["D"])
    assert moved_since(con, 0) == (2, {"A", "B", "C", "D"})
    bump_generation(con)
    note_moved(con, ["E", "F"])
    assert moved_since(con, 0) == (3, None)
    assert moved_since(con, 2) == (3, {"E", "F"})


def _x_withdrawn_y_left_out_z_moved(shop, fake, x, y, z) -> None:
    """x's withdrawal went (no managed tag at the ESP nor in the ledger), y was left out (his older state kept), z's
    change went; the run succeeded."""
    assert not fake.tags_of(x.key, "aud1") & MANAGED and not _state(shop, x.key).tags & MANAGED
    assert set(fake.tags_of(y.key, "aud1")) == {"Winback"} == _state(shop, y.key).tags
    moved = _state(shop, z.key).tags
    assert moved & MANAGED and moved != {"Winback"} and set(fake.tags_of(z.key, "aud1")) == moved
    with open_ledger(load_config(shop), load_settings()) as ledger:
        assert ledger.recent_runs(1)[0]["status"] == "succeeded"
