"""A full sync that read the order store before a webhook resync merged does not push its older state under the
destination's lock when that resync planned nothing (the pushed state already was the new desired one: no ledger
revision moved, so the sync's re-plan on a moved revision never came). The store's generation, read again under
each destination's lock, says the store moved on; the customers the resyncs merged since are left to them
(:mod:`sync.store.resynced`). End to end against the fake Mailchimp, on both ledger engines."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from connectors.records import Order, OrderStatus
from sync.config import load_config
from sync.ledger import Ledger
from sync.serve.resync import resync
from sync.settings import load_settings
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_replan_after_later_run import _churned, _state, _sync, shop  # noqa: F401
from tests.test_worker import AS_OF


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


def test_a_write_no_resync_noted_is_not_taken_for_none():
    """A write of the store no resync noted (a pull's or another sync's merge) says nothing of whom it moved: None,
    not an empty set (the sync then writes nothing to the destination rather than its older rows)."""
    import duckdb

    from sync.store.generation import bump_generation
    from sync.store.resynced import moved_since, note_resynced

    con = duckdb.connect()
    assert moved_since(con, 0) == (0, set())
    bump_generation(con)
    note_resynced(con, ["C1", "C2"])
    bump_generation(con)
    note_resynced(con, [])  # a resync that moved nobody (a tombstone of an order never stored)
    assert moved_since(con, 0) == (2, {"C1", "C2"})
    assert moved_since(con, 1) == (2, set())
    bump_generation(con)  # a pull's merge
    assert moved_since(con, 1) == (3, None)
    assert moved_since(con, 3) == (3, set())
