"""A remembered order link holds only while the export keys the order by the address it was linked by (fixk26's review)."""
from datetime import datetime, timezone
from decimal import Decimal

import duckdb

from connectors.records import Consent, Contact, Order
from connectors.source import PullResult
from connectors.tables import create_tables, stage_records
from sync.store import merge_staged

UTC = timezone.utc


def _o(oid, cust, day):
    return Order(order_id=oid, customer_id=cust, ordered_at=datetime(2025, 6, day, 12, tzinfo=UTC), amount=Decimal("10"))


def _read(con, orders, contacts=()):
    stage_records(con, orders, contacts)
    merge_staged(con, PullResult(full_refresh=True))


def _hook(con, orders=(), contacts=()):
    stage_records(con, orders, contacts)
    merge_staged(con, PullResult(), origin="webhook")


def _con():
    con = duckdb.connect()
    create_tables(con)
    return con


def test_an_order_the_export_now_keys_by_another_address_is_not_sent_to_the_old_link():
    """g1 was x@'s (linked to Anna); the shop corrected it to y@ (Beth's): it is y@'s, and Beth's consent stays hers."""
    con = _con()
    _read(con, [_o("g1", "x@x.com", 1)], [Contact("x@x.com", email="x@x.com")])
    _hook(con, [_o("w1", "c1", 3)], [Contact("c1", email="x@x.com", first_name="Anna")])
    _read(con, [_o("g1", "y@x.com", 1)],
          [Contact("y@x.com", email="y@x.com", phone="+998900000001", marketing_consent=Consent.YES)])
    assert dict(con.execute("SELECT order_id, customer_id FROM orders").fetchall())["g1"] == "y@x.com"
    assert con.execute("SELECT phone, marketing_consent FROM contacts WHERE customer_id = 'c1'").fetchall() == [
        (None, "unknown")]


def test_a_file_order_sharing_its_id_with_a_linked_webhook_order_is_not_sent_to_that_customer():
    """Webhook guest order 1001 (x@, joined Anna); the file's order 1001 is z@'s: it must not become Anna's."""
    con = _con()
    _read(con, [_o("f1", "q@x.com", 1)], [Contact("q@x.com", email="q@x.com")])
    _hook(con, [_o("w0", "c1", 2)], [Contact("c1", email="x@x.com", first_name="Anna")])
    _hook(con, [_o("1001", "x@x.com", 3)])
    _read(con, [_o("f1", "q@x.com", 1), _o("1001", "z@x.com", 5)],
          [Contact("q@x.com", email="q@x.com"),
           Contact("z@x.com", email="z@x.com", phone="+998900000002", marketing_consent=Consent.YES)])
    assert dict(con.execute("SELECT order_id, customer_id FROM orders").fetchall())["1001"] == "z@x.com"
    assert con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = 'c1'").fetchall() == [("unknown",)]
