"""RetailCRM order keys: a guest's phone read with ``phone_region`` (it joins the customer with that phone), and a
store an older rfmsync keyed otherwise (B2B orders, guest e-mails as typed) told on every incremental pull until a
``rfmsync pull --full`` (connectors/rekey.py)."""

from __future__ import annotations

import json
from datetime import timedelta

import responses

from sync.pipeline import pull_into
from sync.store import open_store

from .test_retailcrm import T0, FakeRetailCrm, make_source


def _guest(fake: FakeRetailCrm, oid: int, amount: str, at=T0, **fields) -> None:
    fake.put_order(oid, 0, amount, at=at)
    del fake.orders[oid]["customer"]
    fake.orders[oid].update({"email": None} | fields)


def test_a_guest_order_keyed_by_a_national_format_phone_joins_the_customer_with_that_phone():
    """``8 (902) 001-58-38`` was the key as typed: identity takes a key for a phone only with a leading +, so the
    guest never joined customer 10, whose phone (read with phone_region) is +79020015838."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, open_store(None) as con:
        fake = FakeRetailCrm(rsps)
        fake.put_contact(10, "anna@example.com", at=T0, phones=[{"number": "+79020015838"}])
        fake.put_order(1, 10, "100", at=T0)
        _guest(fake, 2, "50", phone="8 (902) 001-58-38")
        _guest(fake, 3, "40", phone="+7 (911) 222-33-44")
        _guest(fake, 4, "30", phone="12-34")  # no possible number: a bad row naming it, never a key of junk
        result = pull_into(con, make_source(phone_region="RU"))
        keys = con.execute("SELECT order_id, customer_id FROM orders ORDER BY 1").fetchall()
    assert keys == [("1", "10"), ("2", "10"), ("3", "+79112223344")]
    assert result.bad_row_count == 1
    bad = result.bad_rows[0]
    assert (bad.row, bad.field, bad.value) == ("4", "phone", "12-34"), str(bad)


def _seed(fake: FakeRetailCrm) -> None:
    fake.put_contact(10, "anna@example.com", at=T0)
    fake.put_contact(77, "boris@acme.example", at=T0)
    fake.put_order(1, 10, "100", at=T0)
    fake.put_order(2, 77, "5000", at=T0)  # a B2B order: the company 10 (not customer 10), its contact person 77
    fake.orders[2].update(customer={"type": "customer_corporate", "id": 10}, contact={"type": "customer", "id": 77})
    _guest(fake, 3, "30", email="Guest@Example.com")


def _day(day: int):
    return make_source(clock=lambda: T0 + timedelta(days=day))


def _keys(con) -> list[tuple[str, list[str]]]:
    return con.execute("SELECT customer_id, list(order_id ORDER BY order_id) FROM orders GROUP BY 1 ORDER BY 1"
                       ).fetchall()


def test_a_store_keyed_by_an_older_rfmsync_is_told_until_a_full_pull_keys_it_anew():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, open_store(None) as con:
        fake = FakeRetailCrm(rsps)
        _seed(fake)
        first = pull_into(con, _day(1))
        # what an older rfmsync left: its keys in the store, its cursor without the mark
        con.execute("UPDATE orders SET customer_id = CASE order_id WHEN '2' THEN '10' ELSE 'Guest@Example.com' END "
                    "WHERE order_id IN ('2', '3')")
        old_cursor = json.dumps({k: v for k, v in json.loads(first.cursor).items() if k != "keys"})
        _guest(fake, 4, "40", T0 + timedelta(days=1, hours=12), email="guest@example.com")  # the guest again
        upgraded = pull_into(con, _day(2), old_cursor)
        assert len(upgraded.warnings) == 1 and "pull --full" in upgraded.warnings[0]
        assert "B2B order (customer_corporate)" in upgraded.warnings[0]
        assert "1 order is keyed by a guest's e-mail or phone as typed" in upgraded.warnings[0]
        again = pull_into(con, _day(3), upgraded.cursor)  # told on every incremental pull until then
        assert len(again.warnings) == 1
        full = pull_into(con, _day(4))  # rfmsync pull --full: every order keyed anew, the mark set
        assert full.warnings == [] and _keys(con) == [("10", ["1"]), ("77", ["2"]),
                                                      ("guest@example.com", ["3", "4"])]
        after = pull_into(con, _day(5), full.cursor)
        assert after.warnings == []


def test_a_fresh_store_is_never_told_to_pull_again():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, open_store(None) as con:
        fake = FakeRetailCrm(rsps)
        _seed(fake)
        first = pull_into(con, _day(1))
        second = pull_into(con, _day(2), first.cursor)
    assert (first.warnings, second.warnings) == ([], [])
    assert json.loads(second.cursor)["keys"] == "4"


def test_a_store_keyed_by_the_rules_before_guests_were_validated_is_told_too():
    """Keys version 2 (B2B orders by their contact person) kept a guest's e-mail the rules refuse (``anna@``) as a
    customer; version 3 reads guests by the contacts' rules, and the store marked 2 was not told."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, open_store(None) as con:
        fake = FakeRetailCrm(rsps)
        _seed(fake)
        first = pull_into(con, _day(1))
        con.execute("UPDATE orders SET customer_id = 'anna@' WHERE order_id = '3'")  # what version 2 stored
        old_cursor = json.dumps({**json.loads(first.cursor), "keys": "2"})
        upgraded = pull_into(con, _day(2), old_cursor)
        assert len(upgraded.warnings) == 1 and "pull --full" in upgraded.warnings[0], upgraded.warnings
        assert "1 order is keyed by a guest's e-mail or phone as typed" in upgraded.warnings[0]
        assert "B2B" not in upgraded.warnings[0]  # (version 2 keyed those anew already)


def test_a_store_pulled_before_guests_phones_were_kept_is_told_until_a_full_pull_joins_them():
    """Keys version 3 kept no phone of a guest keyed by its e-mail: the customer who registered later with that phone
    (pulled since) stays apart until ``pull --full`` reads the guest's order again (guest32). A store without such a
    guest is marked anew without a word."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, open_store(None) as con:
        fake = FakeRetailCrm(rsps)
        _guest(fake, 1, "30", email="anna@x.com", phone="+7 701 123 45 67")
        first = pull_into(con, _day(1))
        con.execute("DELETE FROM contacts")  # what version 3 stored: the guest's order, no contact
        old_cursor = json.dumps({**json.loads(first.cursor), "keys": "3"})
        fake.put_contact(10, "ann@other.com", at=T0 + timedelta(days=1, hours=12))  # phone +77011234567
        upgraded = pull_into(con, _day(2), old_cursor)
        assert len(upgraded.warnings) == 1, upgraded.warnings
        assert "1 order is keyed by a guest's e-mail, and the phone such a guest gave was not kept" in \
            upgraded.warnings[0] and "pull --full" in upgraded.warnings[0] and "B2B" not in upgraded.warnings[0]
        assert _keys(con) == [("anna@x.com", ["1"])]
        full = pull_into(con, _day(3))
        after = pull_into(con, _day(4), full.cursor)
        assert (full.warnings, after.warnings, _keys(con)) == ([], [], [("10", ["1"])])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, open_store(None) as con:
        fake = FakeRetailCrm(rsps)
        _seed(fake)
        first = pull_into(con, _day(1))
        con.execute("DELETE FROM orders WHERE contains(customer_id, '@')")
        quiet = pull_into(con, _day(2), json.dumps({**json.loads(first.cursor), "keys": "3"}))
        assert quiet.warnings == [] and json.loads(quiet.cursor)["keys"] == "4"
