"""An incremental pull's count is what is new or changed: the lookback window (amoCRM's, Bitrix24's, Shopify's)
reads the last records of the pull before again, and "pulled 3 orders" after a night without a sale was wrong (the
data guards added them to the store's count twice). A full pull (``--full``) still counts all it read."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import responses

from sync.config import load_config
from sync.guards import data_lines
from sync.ingest import pull_to_store, run_stats, segments_from_store
from sync.ledger import open_ledger
from sync.pipeline import pull_into
from sync.settings import load_settings
from sync.store import open_store

from . import test_amocrm, test_bitrix24, test_shopify
from .test_cli_pull import rsps, run  # noqa: F401 (fixture)
from .test_pull_unstored_counts import seeded, shop  # noqa: F401 (fixture)


def test_an_amocrm_pull_after_a_night_without_changes_pulled_nothing(rsps, shop):  # noqa: F811
    fake = seeded(rsps)  # one contact, two leads, edited a day ago
    first = run("pull", "--config", str(shop))
    assert "pulled 2 orders and 1 contact" in first.output, first.output
    quiet = run("pull", "--config", str(shop), "--format", "json")  # the window reads all three again
    counts = json.loads(quiet.output)["counts"]
    assert (counts["orders"], counts["contacts"], counts["stored_orders"]) == (0, 0, 2)
    assert (counts["unchanged_orders"], counts["unchanged_contacts"]) == (2, 1)
    fake.put_order(2, 10, "150", at=datetime.now(timezone.utc))  # changed
    fake.put_order(3, 10, "10", at=datetime.now(timezone.utc))  # new
    busy = run("pull", "--config", str(shop))
    assert "pulled 2 orders and 0 contacts from amocrm (0 bad records; 2 records read again unchanged); the " \
           "store now holds 3 orders" in busy.output, busy.output
    full = run("pull", "--config", str(shop), "--full")  # everything asked for: everything counted
    assert "pulled 3 orders and 1 contact from amocrm (0 bad records); the store" in full.output, full.output


@pytest.mark.parametrize("crm", [test_amocrm, test_bitrix24, test_shopify], ids=lambda m: m.__name__[10:])
def test_every_crm_counts_what_is_new_or_changed(crm):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = next(v for k, v in vars(crm).items() if k.startswith("Fake"))(mock)
        t0 = crm.T0
        fake.put_contact(1, "a@example.com", at=t0 - timedelta(days=3))
        fake.put_order(1, 1, "10.00", at=t0 - timedelta(days=3))
        fake.put_order(2, 1, "10.00", at=t0)  # the last edit: the next pull's window reads it again
        first = pull_into(con, crm.make_source(clock=lambda: t0 + timedelta(days=1)))
        assert (first.orders, first.unchanged_orders) == (2, 0)
        again = pull_into(con, crm.make_source(clock=lambda: t0 + timedelta(days=2)), first.cursor)
        assert (again.orders, again.contacts, again.unchanged_orders) == (0, 0, 1)
        fake.put_order(2, 1, "12.00", at=t0 + timedelta(days=2))  # changed: counted
        third = pull_into(con, crm.make_source(clock=lambda: t0 + timedelta(days=3)), again.cursor)
        assert (third.orders, third.unchanged_orders) == (1, 0)


def test_a_quiet_pull_reading_a_bad_lead_again_is_not_refused_by_max_bad_rows_pct(rsps, shop):  # noqa: F811
    """The lookback reads the same 40 good leads and 1 bad one again: the bad row is counted again, so the good
    rows read again (unchanged, not counted as pulled) stay the guard's base: 1 of 41, not "1 of 1 rows (100 %)",
    which refused every later pull (the cursor never moved)."""
    fake = test_amocrm.FakeAmo(rsps)
    now = datetime.now(timezone.utc) - timedelta(days=1)
    fake.put_contact(10, "ann@example.com", at=now)
    for i in range(1, 41):
        fake.put_order(i, 10, "100", at=now)
    fake.put_order(99, 10, "100", at=now, bad=True)
    cfg, settings = load_config(shop), load_settings()
    store = str(shop.parent / "rfmsync.duckdb")
    for _ in range(2):  # the first pull (1 bad of 41: 2.4 %), then a quiet one reading the same window again
        with open_ledger(cfg, settings) as ledger, open_store(store) as con:
            result = pull_to_store(cfg, ledger, con, settings, guarded=True)
    assert (result.orders, result.unchanged_orders, result.bad_row_count) == (0, 40, 1)
    with open_ledger(cfg, settings) as ledger:  # a run's data guards (rfmsync run) see the same rows
        assert ledger.get_cursor("amocrm", "all") is not None
        run = segments_from_store(cfg, ledger, settings, guarded=True)
        try:
            stats = run_stats(run)
        finally:
            run.close()
    assert (stats.rows, stats.bad_rows) == (40, 1) and data_lines(cfg.guards, stats) == []


@pytest.mark.parametrize("change", ["name", "added", "removed"])
def test_an_order_whose_line_items_alone_changed_is_counted_as_changed(change):
    crm = test_shopify
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = crm.FakeShopify(mock)
        t0 = crm.T0
        fake.put_contact(1, "a@example.com", at=t0)
        fake.put_order(1, 1, "10.00", at=t0)
        fake.put_order(2, 1, "10.00", at=t0)
        items = fake.orders[2]["line_items"]
        items.append({**items[0], "id": 21, "sku": "CAP-1", "title": "Cap", "price": "0.00"})
        first = pull_into(con, crm.make_source(clock=lambda: t0 + timedelta(days=1)))
        if change == "name":  # the same total, status, date: only an item's title differs
            items[1]["title"] = "Blue cap"
        elif change == "added":
            items.append({**items[0], "id": 22, "sku": "PEN-1", "title": "Pen", "price": "0.00"})
        else:
            del items[1]
        again = pull_into(con, crm.make_source(clock=lambda: t0 + timedelta(days=2)), first.cursor)
        assert (again.orders, again.unchanged_orders) == (1, 1)  # order 2 changed, order 1 read again as it was
