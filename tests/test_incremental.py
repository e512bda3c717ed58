"""The per-object cursor loop every time-keyed API source uses (connectors.incremental), without HTTP.

A scripted ``read(object, since, stager)`` stands in for a vendor: it records what it was asked, stages what
the "vendor" holds, and answers the highest modification time it saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pytest

from connectors.errors import ConfigError, FatalError
from connectors.http import FieldError, get_field, parse_dt
from connectors.incremental import (HighWater, PageGuard, RunStart, Stager, latest, map_page, pull_by_time,
                                    pull_objects)
from connectors.records import Contact, Order, OrderStatus

T0 = datetime(2026, 1, 10, 9, 0, tzinfo=timezone.utc)
START = T0 + timedelta(days=1)  # the run start
LOOKBACK = timedelta(minutes=10)


def order(oid: str, amount: str = "10") -> Order:
    return Order(order_id=oid, customer_id="c1", ordered_at=T0, amount=Decimal(amount), status=OrderStatus.COMPLETED)


@dataclass
class Vendor:
    """What each object's read answers: the highest time seen on each call, in call order."""

    answers: dict[str, list[datetime | None]] = field(default_factory=dict)
    calls: list[tuple[str, datetime | None]] = field(default_factory=list)

    def read(self, obj: str, since: datetime | None, stager: Stager) -> datetime | None:
        self.calls.append((obj, since))
        if obj == "orders":
            stager.stage([order(str(len(self.calls)))])
        return self.answers.get(obj, [None]).pop(0) if self.answers.get(obj) else None


def pull(vendor: Vendor, cursor: str | None = None, progress=None, con=None):
    return pull_by_time(con or duckdb.connect(), "vendor", cursor, progress, run_start=RunStart(START), lookback=LOOKBACK,
                        read=vendor.read)


def test_a_first_run_backfills_then_rereads_from_its_own_start_and_caps_the_bookmark_at_it():
    vendor = Vendor(answers={"contacts": [T0, T0 + timedelta(minutes=1)], "orders": [START + timedelta(hours=1), T0]})
    result = pull(vendor)
    # everything, then the pass after the backfill from min(its highest time, the run start) − lookback (a listing
    # ended early is read on, never skipped by the bookmark: tests/test_crm_backfill_cut.py): contacts first
    assert vendor.calls == [("contacts", None), ("contacts", T0 - LOOKBACK),
                            ("orders", None), ("orders", START - LOOKBACK)]
    cursor = json.loads(result.cursor)
    assert cursor["contacts"] == (T0 + timedelta(minutes=1)).isoformat()  # the highest time seen
    assert cursor["orders"] == START.isoformat()  # a time after the run start is capped at it


def test_a_next_run_reads_from_the_bookmark_minus_the_lookback_once():
    saved = json.dumps({"contacts": T0.isoformat(), "orders": (T0 + timedelta(hours=2)).isoformat()})
    vendor = Vendor(answers={"contacts": [T0 + timedelta(hours=5)], "orders": [None]})
    result = pull(vendor, saved)
    assert vendor.calls == [("contacts", T0 - LOOKBACK), ("orders", T0 + timedelta(hours=2) - LOOKBACK)]
    cursor = json.loads(result.cursor)
    assert cursor["contacts"] == (T0 + timedelta(hours=5)).isoformat()
    assert cursor["orders"] == (T0 + timedelta(hours=2)).isoformat()  # nothing seen: the bookmark stays


def test_the_bookmark_never_moves_back():
    saved = json.dumps({"contacts": T0.isoformat(), "orders": T0.isoformat()})
    vendor = Vendor(answers={"contacts": [T0 - timedelta(minutes=5)], "orders": [T0 - timedelta(days=3)]})
    assert json.loads(pull(vendor, saved).cursor) == {"contacts": T0.isoformat(), "orders": T0.isoformat()}


def test_nothing_at_all_leaves_no_bookmark_so_the_next_run_backfills_again():
    assert json.loads(pull(Vendor()).cursor) == {}


@pytest.mark.parametrize("cursor, says", [("not json", "not a JSON object"), ('{"orders": 5}', "not a JSON object"),
                                          ('{"orders": "yesterday"}', "bad orders cursor 'yesterday'")])
def test_a_garbled_cursor_is_a_config_error_naming_the_source(cursor, says):
    with pytest.raises(ConfigError, match=says) as err:
        pull(Vendor(), cursor)
    assert str(err.value).startswith("vendor: ")


def test_records_read_twice_are_staged_once_in_their_latest_version_and_progress_counts_pages():
    con, pages = duckdb.connect(), []
    stager = Stager(con, "vendor", pages.append)
    stager.stage([order("1", "10"), order("2", "20")])
    stager.stage([order("1", "11")])  # the lookback window read order 1 again, edited
    result = stager.result("{}")
    assert result.orders == 2 and pages == [2, 1]
    assert con.execute("SELECT order_id, amount FROM staged_orders ORDER BY 1").fetchall() == [
        ("1", Decimal("11")), ("2", Decimal("20"))]


def test_a_page_is_mapped_row_by_row_and_a_row_that_cannot_be_is_reported_with_its_id():
    stager = Stager(duckdb.connect(), "vendor")

    def one(raw):
        if raw.get("kind") == "skip":
            return None
        oid = get_field(raw, "id", lambda v: str(int(v)))
        if raw.get("kind") == "contact":
            return Contact(customer_id=oid)
        return order(oid, get_field(raw, "amount", str))

    rows = [{"id": 1, "amount": "5"}, {"id": 2, "kind": "contact"}, {"id": "x"}, {"id": 4, "kind": "skip"}, "junk"]
    orders, contacts = map_page(stager, "vendor:orders", rows, one)
    assert [o.order_id for o in orders] == ["1"] and [c.customer_id for c in contacts] == ["2"]
    assert [(b.source, b.row, b.field, b.value) for b in stager.bad_rows] == [("vendor:orders", "x", "id", "x"),
                                                                              ("vendor:orders", None, None, "junk")]
    assert "not an object" in stager.bad_rows[1].reason


@pytest.mark.parametrize("value", [10 ** 20, "1" * 25, 1e300, float("inf")])
def test_a_date_or_id_too_large_for_any_clock_is_a_field_error_not_a_crash(value):
    """Python raises OverflowError (not ValueError) for a Unix time past its clock or int(Infinity), which
    requests' JSON decoder accepts: a vendor row holding one stopped the whole pull instead of being a bad row."""
    with pytest.raises(FieldError, match="closed_at: "):
        get_field({"closed_at": value}, "closed_at", parse_dt)
    with pytest.raises(ValueError):
        parse_dt(value)  # its contract, relied on by callers that catch ValueError (history entries, webhooks)
    if value == float("inf"):
        with pytest.raises(FieldError, match="id: "):
            get_field({"id": value}, "id", lambda v: str(int(v)))


def test_pull_objects_hands_each_object_its_own_saved_cursor():
    seen = []

    def read_object(obj, saved, stager):
        seen.append((obj, saved))
        return None if obj == "contacts" else "42"

    result = pull_objects(duckdb.connect(), "vendor", '{"orders": "41"}', None, read_object, RunStart(START))
    assert seen == [("contacts", None), ("orders", "41")] and json.loads(result.cursor) == {"orders": "42"}


def test_high_water_latest_and_the_page_guard():
    high = HighWater()
    assert high.value is None
    for t in (T0, T0 + timedelta(hours=1), T0 - timedelta(hours=1)):
        high.see(t)
    assert high.value == T0 + timedelta(hours=1)
    assert latest([None, T0, None, START]) == START and latest([None]) is None
    guard = PageGuard("vendor orders", max_pages=3)
    guard.next(1)
    guard.next(2)
    with pytest.raises(FatalError, match="vendor orders: the server returned page 2 twice"):
        guard.next(2)
    guard.next(3)
    with pytest.raises(FatalError, match="more than 3 pages"):
        guard.next(4)
