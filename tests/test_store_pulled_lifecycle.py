"""What the store keeps of a pull's vendor times over time (sync/store/pulled.py): a Shopify order deleted without
``X-Shopify-Triggered-At`` is untimed (never dated by this host's clock against the vendor's); a file's full refresh
forgets the times of the versions it replaced; a pull staged page by page notes each record's last page's time;
``pulled_versions`` holds one row per record, and none once a timed delivery orders the record."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import duckdb

from connectors.incremental import Stager
from connectors.records import Contact, Order
from connectors.shopify import parse_webhook as shopify_parse
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.store import merge_staged, open_store
from tests.test_store_pulled_versions import S, T0, _hook, _order, _pulled


def _delete(order_id: str, triggered: datetime | None = None) -> list[Order]:
    headers = {"X-Shopify-Topic": "orders/delete"}
    if triggered is not None:
        headers["X-Shopify-Triggered-At"] = triggered.isoformat().replace("+00:00", "Z")
    orders, _ = shopify_parse(headers, json.dumps({"id": int(order_id)}).encode())
    return orders


def test_an_orders_delete_without_triggered_at_is_untimed_and_deletes_an_order_pulled_by_a_clock_ahead():
    """Shopify's clock 3 minutes ahead of this host (inside the 5-minute margin): the pull read order 77 at the
    vendor's 'now'. The orders/delete delivery without X-Shopify-Triggered-At, accepted after the pull, has no
    version time (the host's clock is not Shopify's): ordered by acceptance, it deletes the order. With the header,
    its time is the version's."""
    now = datetime.now(timezone.utc)
    with open_store(None) as con:
        _pulled(con, orders=[Order("77", "7", now - 3600 * S, Decimal(100), updated_at=now + 180 * S)], pulled_at=now)
        [gone] = _delete("77")
        assert gone.updated_at is None
        counts = _hook(con, orders=[gone], accepted=now + S)
        assert "stale_orders" not in counts
        assert con.execute("SELECT status, amount FROM orders").fetchall() == [("cancelled", 0)]
    assert _delete("78", T0)[0].updated_at == T0


def test_a_file_full_refresh_forgets_the_pulled_times_of_the_versions_it_replaced():
    """An API pull noted orders 77 and 88 at 10:05; 88 then came by webhook (untimed) and a pull again (10:05). The
    store is then fully refreshed from a file that holds 77 only: 77's pulled version is gone, so a delivery of
    10:03 is applied; 88 is a webhook record the refresh keeps, with its pulled version: 10:03 is left out."""
    with open_store(None) as con:
        _pulled(con, orders=[Order("77", "7", T0, Decimal(100), updated_at=T0 + 300 * S),
                             Order("88", "8", T0, Decimal(100), updated_at=T0 + 300 * S)])
        _hook(con, orders=[Order("88", "8", T0, Decimal(90))])
        _pulled(con, orders=[Order("88", "8", T0, Decimal(80), updated_at=T0 + 300 * S)], pulled_at=T0 + 7300 * S)
        stage_records(con, [Order("77", "7", T0, Decimal(10))], [])
        merge_staged(con, PullResult(full_refresh=True), origin="pull")
        counts = _hook(con, orders=[Order("77", "7", T0, Decimal(55), updated_at=T0 + 180 * S),
                                    Order("88", "8", T0, Decimal(55), updated_at=T0 + 180 * S)],
                       accepted=T0 + 7400 * S)
        assert counts.get("stale_orders") == 1
        assert con.execute("SELECT order_id, amount FROM orders ORDER BY 1").fetchall() == [("77", 55), ("88", 80)]


def _staged_pull(con: duckdb.DuckDBPyConnection, *pages: list[Order]) -> None:
    """A pull that staged ``pages`` one by one (as an API source's Stager does), then merged them."""
    stager = Stager(con, "shopify")
    for page in pages:
        stager.stage(page, [])
    stager.result("")
    merge_staged(con, PullResult(), origin="pull", pulled_at=T0 + 3600 * S)


def test_a_pull_notes_the_time_of_a_records_last_page_not_its_latest_time():
    """A record on two pages of one pull: its later page's version is the one stored, and its time (10:01) the one
    noted, not the earlier page's 10:05: a delivery of 10:03 is applied. A later page without a time leaves the
    record untimed: a delivery accepted after the pull is applied."""
    with open_store(None) as con:
        _staged_pull(con, [_order("100", T0 + 300 * S)], [_order("90", T0 + 60 * S)])
        assert "stale_orders" not in _hook(con, orders=[_order("70", T0 + 180 * S)])
        assert con.execute("SELECT amount FROM orders").fetchall() == [(70,)]
    with open_store(None) as con:
        _staged_pull(con, [_order("100", T0 + 300 * S)], [_order("90", None)])
        assert "stale_orders" not in _hook(con, orders=[_order("70", T0 + 180 * S)])
        assert con.execute("SELECT amount FROM orders").fetchall() == [(70,)]
    with open_store(None) as con:  # and the time a page staged is noted (the pages staged once each)
        _staged_pull(con, [_order("100", T0 + 300 * S)], [Order("5", "5", T0, Decimal(1))])
        assert _hook(con, orders=[_order("70", T0 + 180 * S)]).get("stale_orders") == 1


def _pulled_rows(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("SELECT kind, id FROM pulled_versions ORDER BY ALL").fetchall()


def test_pulled_versions_holds_one_row_per_record_and_none_once_a_timed_delivery_orders_it():
    """Its size (docs/ledger.md): at most one row per stored record, however many pulls read it; a timed delivery
    (a deleted Shopify order's with X-Shopify-Triggered-At) takes over the ordering and the row goes; an untimed one
    (ordered by acceptance) leaves it: it still orders a later timed delivery."""
    with open_store(None) as con:
        for minutes in (5, 6, 7):
            _pulled(con, orders=[_order("100", T0 + minutes * 60 * S), Order("88", "8", T0, Decimal(1),
                                                                              updated_at=T0)],
                    contacts=[Contact("7", updated_at=T0 + minutes * 60 * S)])
        assert _pulled_rows(con) == [("contact", "7"), ("order", "77"), ("order", "88")]
        _hook(con, orders=_delete("77", T0 + 600 * S) + [Order("88", "8", T0, Decimal(2))],
              contacts=[Contact("7", updated_at=T0 + 600 * S)])
        assert _pulled_rows(con) == [("order", "88")]
        assert _hook(con, orders=[Order("88", "8", T0, Decimal(3), updated_at=T0 - 60 * S)]).get("stale_orders") == 1
        assert con.execute("SELECT amount FROM orders WHERE order_id = '88'").fetchall() == [(2,)]
        assert con.execute("SELECT status FROM orders WHERE order_id = '77'").fetchall() == [("cancelled",)]
