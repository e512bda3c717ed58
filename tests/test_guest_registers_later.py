"""A guest who buys first and registers later with the same phone (or e-mail) is one customer (hunt31a F3): the guest's
orders join the customer whose contact arrives with a value the guest gave, end to end (a RetailCRM pull, Shopify
webhooks), and the rules hold: the customer's contact keeps its own values and versions, a shop's phone on many
guests links nobody, the next order of that e-mail alone does not split him again, a file's full refresh re-links
nobody the rules refused, a guest's "yes" never overrides the customer's "no"."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pytest
import responses
from click.testing import CliRunner

from connectors.records import Consent, Contact, Order
from connectors.source import PullResult
from connectors.tables import create_tables, stage_records
from sync.cli import main
from sync.store import merge_staged

from . import test_shopify
from .test_retailcrm import BASE, KEY, T0, FakeRetailCrm

UTC = timezone.utc
PHONE = "+77011234567"  # FakeRetailCrm's customers' phone


@pytest.fixture
def shop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RFMSYNC_STORE_URL", raising=False)
    monkeypatch.setenv("RETAILCRM_URL", BASE)
    monkeypatch.setenv("RETAILCRM_API_KEY", KEY)
    path = tmp_path / "rfmsync.toml"
    path.write_text('[source]\ntype = "retailcrm"\npage_size = 20\nphone_region = "KZ"\n', encoding="utf-8")
    return path


def _stored(shop) -> list[tuple]:
    con = duckdb.connect(str(shop.parent / "rfmsync.duckdb"), read_only=True)
    try:
        return con.execute("SELECT order_id, customer_id FROM orders ORDER BY 1").fetchall()
    finally:
        con.close()


def _pull(shop) -> None:
    result = CliRunner().invoke(main, ["pull", "--config", str(shop)])
    assert result.exit_code == 0, result.output


def test_a_retailcrm_guest_who_registers_later_with_that_phone_is_one_customer(shop):
    """A guest order with an e-mail and a phone (keyed by the e-mail), then a customer with that phone and another
    e-mail: the incremental pull joins the guest's order (it stayed anna@x.com's: two customers for one person);
    the next guest order of that e-mail alone joins him too (it split him again: review #4)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeRetailCrm(rsps)
        fake.put_order(1, 0, "100", at=T0)
        del fake.orders[1]["customer"]
        fake.orders[1].update(email="Anna@X.com", phone="8 701 123 45 67")
        _pull(shop)
        assert _stored(shop) == [("1", "anna@x.com")]
        fake.put_contact(10, "ann@other.com", at=datetime.now(UTC))  # phone +77011234567
        _pull(shop)
        assert _stored(shop) == [("1", "10")]
        fake.put_order(2, 0, "50", at=datetime.now(UTC))
        del fake.orders[2]["customer"]
        fake.orders[2].update(email="anna@x.com", phone=None)
        _pull(shop)
        assert _stored(shop) == [("1", "10"), ("2", "10")]
    con = duckdb.connect(str(shop.parent / "rfmsync.duckdb"), read_only=True)
    try:  # the customer's contact, his own e-mail and phone
        assert con.execute("SELECT customer_id, email, phone FROM contacts").fetchall() == [
            ("10", "ann@other.com", PHONE)]
    finally:
        con.close()


# --------------------------------------------------------------------------- the webhook path (Shopify)

def _shopify(con, topic: str, payload: dict, received: datetime) -> None:
    from connectors.shopify import parse_webhook

    body = json.dumps(payload).encode()
    orders, contacts = parse_webhook({**test_shopify.signed(body), "X-Shopify-Topic": topic}, body)
    stage_records(con, orders, contacts)
    merge_staged(con, PullResult(), origin="webhook", received_at=received,
                 versions={**{("order", o.order_id): o.updated_at for o in orders},
                           **{("contact", c.customer_id): c.updated_at for c in contacts}})


def _customer(cid: int, at: datetime, **fields) -> dict:
    return {"id": cid, "email": "ann@other.com", "phone": "+998901234567", "first_name": "Ann",
            "updated_at": at.isoformat(), "created_at": "2026-01-01T00:00:00Z", **fields}


def _guest_order(oid: int, at: datetime, **fields) -> dict:
    return {"id": oid, "financial_status": "paid", "total_price": "35.00", "customer": None,
            "email": "anna@x.com", "phone": "+998 90 123-45-67", "created_at": at.isoformat(),
            "updated_at": at.isoformat(), **fields}


def test_a_shopify_guest_order_then_the_customer_by_webhooks_and_the_guest_times_hide_no_contact_update():
    """The guest's order webhook (dated T3), then the customer's (T1) with the guest's phone: one customer; then the
    customer's own update dated T2 (after his T1, before the guest order's T3) is his newest contact version and is
    taken (review #1: the guest order's time must not pass for his contact's), with his own e-mail and phone."""
    t1, t2, t3 = (datetime(2026, 1, d, 12, tzinfo=UTC) for d in (2, 3, 4))
    now = datetime.now(UTC)
    con = duckdb.connect()
    create_tables(con)
    _shopify(con, "customers/create", _customer(7, t1), now - timedelta(minutes=3))
    _shopify(con, "orders/create", _guest_order(1, t3), now - timedelta(minutes=2))
    assert con.execute("SELECT order_id, customer_id FROM orders").fetchall() == [("1", "7")]
    _shopify(con, "customers/update", _customer(7, t2, first_name="Anna"), now - timedelta(minutes=1))
    assert con.execute("SELECT customer_id, email, phone, first_name FROM contacts").fetchall() == [
        ("7", "ann@other.com", "+998901234567", "Anna")]


def test_a_shopify_guest_first_then_the_customer_registers():
    con = duckdb.connect()
    create_tables(con)
    now = datetime.now(UTC)
    _shopify(con, "orders/create", _guest_order(1, now), now)
    _shopify(con, "customers/create", _customer(7, now), now)
    assert con.execute("SELECT order_id, customer_id FROM orders").fetchall() == [("1", "7")]
    assert con.execute("SELECT customer_id, email, phone FROM contacts").fetchall() == [
        ("7", "ann@other.com", "+998901234567")]


# --------------------------------------------------------------------------- the store's rules

def _order(oid: str, cust: str, day: int = 1) -> Order:
    return Order(order_id=oid, customer_id=cust, ordered_at=datetime(2025, 6, day, 12, tzinfo=UTC),
                 amount=Decimal("10"))


def _merge(con, orders=(), contacts=(), origin: str = "webhook", full: bool = False, **kw) -> PullResult:
    stage_records(con, orders, contacts)
    result = PullResult(full_refresh=full)
    merge_staged(con, result, origin=origin, **kw)
    return result


def _state(con) -> tuple[dict[str, str], list[tuple]]:
    return (dict(con.execute("SELECT order_id, customer_id FROM orders").fetchall()),
            con.execute("SELECT customer_id, email, phone, marketing_consent FROM contacts ORDER BY 1").fetchall())


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_tables(con)
    return con


@pytest.mark.parametrize("guest_first", [True, False], ids=["guest-first", "customer-first"])
def test_a_guest_never_gives_the_customer_its_phone_or_email(guest_first):
    """Review #2: joined by its e-mail, a guest's phone does not fill the customer's empty phone (a shop's phone
    typed on the guest's order would stay his); joined by its phone, its e-mail is not the customer's either."""
    batches = [([_order("g1", "anna@x.com")], [Contact("anna@x.com", email="anna@x.com", phone="+998712000000")]),
               ([_order("c1", "c9", 2)], [Contact("c9", email="anna@x.com")])]
    con = _con()
    for batch in batches if guest_first else batches[::-1]:
        _merge(con, *batch)
    assert _state(con) == ({"g1": "c9", "c1": "c9"}, [("c9", "anna@x.com", None, "unknown")])
    con = _con()
    _merge(con, [_order("c1", "c9")], [Contact("c9", phone="+998901112233")])
    _merge(con, [_order("g2", "+998901112233", 2)], [Contact("+998901112233", email="g@x.com", phone="+998901112233")])
    assert _state(con) == ({"g2": "c9", "c1": "c9"}, [("c9", None, "+998901112233", "unknown")])


def _shop_phone_guests(n: int = 6) -> tuple[list[Order], list[Contact]]:
    """``n`` guests, each its own e-mail, all typing the shop's phone."""
    return ([_order(f"g{i}", f"guest{i}@x.com", i + 1) for i in range(n)],
            [Contact(f"guest{i}@x.com", email=f"guest{i}@x.com", phone="+998712000000") for i in range(n)])


@pytest.mark.parametrize("together", [False, True], ids=["later", "same-batch"])
def test_a_shops_phone_on_many_guests_links_none_of_them_to_the_customer_who_registers_with_it(together):
    """Review #3 (rule 4): six guests with their own e-mails and the shop's phone are six customers, and the
    customer who registers with that phone (the shop's manager) gets none of their orders."""
    con = _con()
    orders, contacts = _shop_phone_guests()
    manager = ([_order("m1", "c1", 20)], [Contact("c1", email="boss@shop.uz", phone="+998712000000")])
    if together:
        result = _merge(con, orders + manager[0], contacts + manager[1])
    else:
        _merge(con, orders, contacts)
        result = _merge(con, *manager)
    owners = _state(con)[0]
    assert owners == {**{f"g{i}": f"guest{i}@x.com" for i in range(6)}, "m1": "c1"}
    assert result.identity.to_json()["ignored_identifiers"] == [{"value": "+998712000000", "customers": 7}]


def test_a_full_refresh_relinks_no_guest_the_rules_refused():
    """Review #5: a link by the shop's phone learned while one guest had it; the export read again (full refresh)
    holds six guests with that phone: apply_links counted only the registered carrier (one) and moved them all to
    him. They stay six guests."""
    con = _con()
    _merge(con, [_order("c", "c1", 20)], [Contact("c1", email="boss@shop.uz", phone="+998712000000")])
    _merge(con, [_order("g0", "guest0@x.com")], [Contact("guest0@x.com", email="guest0@x.com", phone="+998712000000")])
    assert _state(con)[0]["g0"] == "c1"  # one guest with that phone: linked (a link the store remembers)
    orders, contacts = _shop_phone_guests()
    _merge(con, orders, contacts, origin="pull", full=True)
    owners = _state(con)[0]
    assert {o: owners[o] for o in owners if o.startswith("g")} == {f"g{i}": f"guest{i}@x.com" for i in range(6)}


def test_a_same_address_guests_yes_never_overrides_the_customers_no():
    """Review #6: the customer said no; a guest checkout with his e-mail says yes (a box ticked by default, another
    member of the family): joining never subscribes him. A customer whose consent is unknown takes a same-address
    guest's yes (it was given for his address)."""
    for customer, expected in ((Consent.NO, "no"), (Consent.UNKNOWN, "yes")):
        for guest_first in (True, False):
            con = _con()
            batches = [([_order("g1", "anna@x.com")],
                        [Contact("anna@x.com", email="anna@x.com", marketing_consent=Consent.YES)]),
                       ([_order("c1", "c9", 2)], [Contact("c9", email="anna@x.com", marketing_consent=customer)])]
            for batch in batches if guest_first else batches[::-1]:
                _merge(con, *batch)
            assert _state(con) == ({"g1": "c9", "c1": "c9"}, [("c9", "anna@x.com", None, expected)]), \
                (customer, guest_first)


def test_a_store_whose_links_table_predates_the_guest_key_keeps_its_links_and_remembers_new_ones():
    """An older store's identity_links has no guest column: the merge adds it, its links hold, and a guest linked
    from then on is remembered (its next order of the e-mail alone joins the customer)."""
    con = _con()
    con.execute("CREATE TABLE identity_links (order_id VARCHAR PRIMARY KEY, identifier VARCHAR NOT NULL, "
                "customer_id VARCHAR NOT NULL, linked_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    con.execute("INSERT INTO identity_links VALUES ('old', 'x@x.com', 'c1', now())")
    _merge(con, [_order("c", "c1", 20)], [Contact("c1", email="boss@x.com", phone="+998901112233")])
    _merge(con, [_order("g1", "anna@x.com")], [Contact("anna@x.com", phone="+998901112233")])
    _merge(con, [_order("g2", "anna@x.com", 2)])
    assert _state(con)[0] == {"c": "c1", "g1": "c1", "g2": "c1"}
    assert con.execute("SELECT order_id, identifier, customer_id, guest FROM identity_links ORDER BY 1").fetchall() == [
        ("g1", "+998901112233", "c1", "anna@x.com"), ("g2", "+998901112233", "c1", "anna@x.com"),
        ("old", "x@x.com", "c1", None)]
