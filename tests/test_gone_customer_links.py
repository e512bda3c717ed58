"""A customer deleted in the CRM (emptied, his row kept: sync.store.gone) never takes a guest's orders.

Identity resolution links a guest's order to the customer carrying its e-mail/phone (connectors.identity), and
remembers the link (identity_links). A deleted customer carries nothing any more: a guest order in the same pull as
his deletion, or a later one of a person once joined to him, stays the guest's own, and his links are erased.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import responses
from click.testing import CliRunner

from sync.cli import main
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


def test_guest_order_in_the_full_pull_that_deletes_the_customer_stays_the_guests(shop):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeRetailCrm(rsps)
        _customers(fake)
        _pull(shop)
        fake.customers.pop(10)  # deleted in the CRM (an erasure)
        _guest(fake, 500, "c10@example.com")  # someone orders as a guest with his old address
        out = _pull(shop, "--full")
    assert "emptied" in out
    assert _owner(shop, 500) == "c10@example.com"
    _erased(shop)


def test_guest_order_in_the_incremental_pull_that_deletes_the_customer_stays_the_guests(shop):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeRetailCrm(rsps)
        _customers(fake)
        _pull(shop)
        fake.delete_customer(10, at=datetime.now(UTC) - timedelta(minutes=1))  # told by the history
        _guest(fake, 500, "c10@example.com")
        _pull(shop)
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
