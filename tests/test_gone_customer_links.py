"""A customer deleted in the CRM (emptied, his row kept: sync.store.gone) never takes a guest's orders.

Identity resolution links a guest's order to the customer carrying its e-mail/phone (connectors.identity), and
remembers the link (identity_links). A deleted customer carries nothing any more: a guest order in the same pull as
his deletion, or a later one of a person once joined to him, stays the guest's own, and his links are erased.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pytest
import responses
from click.testing import CliRunner

from connectors.contacts import gone_contact
from connectors.records import Contact, Order
from connectors.source import PullResult
from connectors.tables import create_tables, stage_records
from sync.cli import main
from sync.store import merge_staged
from tests.test_guest_registers_later import shop  # noqa: F401 (fixture)
from tests.test_retailcrm import T0, FakeRetailCrm

UTC = timezone.utc


def _q(shop, sql):
    con = duckdb.connect(str(shop.parent / "rfmsync.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _pull(shop, *args):
    result = CliRunner().invoke(main, ["pull", "--config", str(shop), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _customers(fake):
    for cid in range(10, 22):
        fake.put_contact(cid, f"c{cid}@example.com", at=T0, phones=[{"number": f"+770112345{cid}"}])
        fake.put_order(cid * 10, cid, "100", at=T0)


def _guest(fake, oid, email, phone=None):
    fake.put_order(oid, 0, "50", at=datetime.now(UTC))
    del fake.orders[oid]["customer"]
    fake.orders[oid].update(email=email, phone=phone)


def _owner(shop, oid):
    return _q(shop, f"SELECT customer_id FROM orders WHERE order_id = '{oid}'")[0][0]


def _erased(shop):
    """Customer 10's stored contact is emptied, and no link names him or carries his old e-mail."""
    assert _q(shop, "SELECT email, phone, marketing_consent FROM contacts WHERE customer_id = '10'") == [
        (None, None, "no")]
    assert _q(shop, "SELECT order_id FROM identity_links WHERE customer_id = '10'") == []
    assert _q(shop, "SELECT order_id FROM identity_links WHERE identifier = 'c10@example.com'") == []


@pytest.mark.parametrize("full", [True, False], ids=["full-pull", "incremental-pull"])
def test_guest_order_in_the_pull_that_deletes_the_customer_stays_the_guests(shop, full):
    """The pull that deletes customer 10 (gone from the full list, or told by the history) brings a guest order
    with his old address: it stays the guest's, and no link names him."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeRetailCrm(rsps)
        _customers(fake)
        _pull(shop)
        if full:
            fake.customers.pop(10)  # deleted in the CRM (an erasure)
        else:
            fake.delete_customer(10, at=datetime.now(UTC) - timedelta(minutes=1))  # told by the history
        _guest(fake, 500, "c10@example.com")  # someone orders as a guest with his old address
        out = _pull(shop, *(["--full"] if full else []))
    if full:
        assert "emptied" in out
    assert _owner(shop, 500) == "c10@example.com"
    _erased(shop)


def test_a_later_guest_order_is_not_recalled_to_a_deleted_customer(shop):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeRetailCrm(rsps)
        _customers(fake)
        _pull(shop)
        _guest(fake, 500, "anna@x.com", "8 701 123 45 10")  # a guest with 10's phone: joins 10
        _pull(shop)
        assert _owner(shop, 500) == "10"
        assert _q(shop, "SELECT customer_id, guest FROM identity_links WHERE order_id = '500'") == [
            ("10", "anna@x.com")]
        fake.delete_customer(10, at=datetime.now(UTC) - timedelta(minutes=1))  # told by the history
        _pull(shop)  # 10 is emptied, and his links erased; her order 500 (not re-read) stays in his history
        _erased(shop)
        assert _owner(shop, 500) == "10"
        _guest(fake, 501, "anna@x.com")  # her next guest order, after his erasure
        _pull(shop)
    assert _owner(shop, 501) == "anna@x.com"  # hers, not the erased customer's
    assert _q(shop, "SELECT count(*) FROM identity_links") == [(0,)]


def test_a_full_reread_after_the_deletion_gives_the_guest_her_order_back(shop):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeRetailCrm(rsps)
        _customers(fake)
        _pull(shop)
        _guest(fake, 500, "anna@x.com", "8 701 123 45 10")  # joins 10 by his phone
        _pull(shop)
        assert _owner(shop, 500) == "10"
        fake.customers.pop(10)
        _pull(shop, "--full")  # 10 is emptied; her order, read again, joins nobody (he carries nothing now)
        _erased(shop)
    assert _owner(shop, 500) == "anna@x.com"
    assert _owner(shop, 100) == "10"  # his own orders stay his


def test_a_link_left_to_a_deleted_customer_by_an_earlier_release_joins_nobody(shop):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeRetailCrm(rsps)
        _customers(fake)
        _pull(shop)
        _guest(fake, 500, "anna@x.com", "8 701 123 45 10")  # joins 10 by his phone
        _pull(shop)
        kept = _q(shop, "SELECT order_id, identifier, customer_id, linked_at, guest FROM identity_links")
        fake.delete_customer(10, at=datetime.now(UTC) - timedelta(minutes=1))
        _pull(shop)
        # a store whose deletion was merged by an earlier release kept the link
        con = duckdb.connect(str(shop.parent / "rfmsync.duckdb"))
        try:
            con.executemany("INSERT INTO identity_links (order_id, identifier, customer_id, linked_at, guest) "
                            "VALUES (?, ?, ?, ?, ?)", kept)
        finally:
            con.close()
        _guest(fake, 501, "anna@x.com")
        _pull(shop)
    assert _owner(shop, 501) == "anna@x.com"


def _file_store():
    con = duckdb.connect()
    create_tables(con)
    return con


def _read(con, orders, contacts):
    """A file export's full refresh (its rows replace the store's; webhook records kept; links applied)."""
    stage_records(con, orders, contacts)
    merge_staged(con, PullResult(full_refresh=True))


def _hook(con, orders=(), contacts=()):
    stage_records(con, orders, contacts)
    merge_staged(con, PullResult(), origin="webhook")


def _order(oid, cust, day):
    return Order(order_id=oid, customer_id=cust, ordered_at=datetime(2025, 6, day, 12, tzinfo=UTC),
                 amount=Decimal("10"))


@pytest.mark.parametrize("older_release", [False, True])
def test_a_file_guest_linked_to_a_customer_deleted_since_is_the_guests_on_the_next_read(older_release):
    """A file export's guest order joined a webhook customer (c1, by e-mail); c1 is deleted in the CRM (its webhook):
    reading the export again keys the order by the guest's e-mail, and no link sends it to c1 (``older_release``:
    the link an earlier release kept after the deletion is not applied either)."""
    guest = ([_order("g1", "anna@x.com", 1)], [Contact("anna@x.com", email="anna@x.com")])
    con = _file_store()
    _read(con, *guest)
    _hook(con, [_order("w1", "c1", 2)], [Contact("c1", email="anna@x.com")])
    assert con.execute("SELECT customer_id FROM orders WHERE order_id = 'g1'").fetchall() == [("c1",)]
    kept = con.execute("SELECT order_id, identifier, customer_id, linked_at, guest FROM identity_links").fetchall()
    assert kept
    _hook(con, [], [gone_contact("c1")])
    assert con.execute("SELECT count(*) FROM identity_links").fetchall() == [(0,)]
    if older_release:
        con.executemany("INSERT INTO identity_links VALUES (?, ?, ?, ?, ?)", kept)
    _read(con, *guest)
    assert dict(con.execute("SELECT order_id, customer_id FROM orders").fetchall()) == {"g1": "anna@x.com", "w1": "c1"}


def test_a_stale_update_of_a_deleted_customer_beside_a_guest_order_restores_nothing_for_linking():
    """reread33 crossing 1: an edit of customer 9 made before his deletion, delivered after it (a retry), arrives with
    a guest order under his old e-mail. Linking runs before the merge drops that version as older than the stored
    deletion, and took it for a restore: the guest's order joined the erased customer and an identity link wrote his
    erased e-mail back. A customer stored deleted takes no guest in the merge that stages him again."""
    from connectors.contacts import gone_contact
    from connectors.records import Consent, Contact
    from tests.test_guest_registers_later import _con, _merge, _order

    def at(h: int) -> datetime:
        return datetime(2026, 12, 1, h, tzinfo=UTC)

    anna = "anna@x.com"
    con = _con()
    _merge(con, [_order("c1", "9")], [Contact("9", email=anna, marketing_consent=Consent.YES)],
           received_at=at(1), versions={("contact", "9"): at(1)})
    _merge(con, [], [gone_contact("9")], received_at=at(3), versions={("contact", "9"): at(3)})
    _merge(con, [_order("g1", anna, 2)], [Contact("9", email=anna, marketing_consent=Consent.YES)],
           received_at=at(4), versions={("contact", "9"): at(2)})  # made at 2, delivered at 4: stale
    assert con.execute("SELECT email, marketing_consent FROM contacts WHERE customer_id = '9'").fetchall() == [
        (None, "no")]
    assert con.execute("SELECT customer_id FROM orders WHERE order_id = 'g1'").fetchall() == [(anna,)]
    assert con.execute("SELECT count(*) FROM identity_links WHERE customer_id = '9'").fetchall() == [(0,)]
