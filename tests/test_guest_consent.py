"""A guest's consent is given for an address: a guest keyed by its phone, without an e-mail (an SMS opt-in, a
generic webhook's contact), never subscribes the e-mail of the customer it joins by that phone, whichever arrives
first, by a merge (webhook, pull) or by a file's full refresh applying the links learned before."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import duckdb
import pytest

from connectors.records import Consent, Contact, Order
from connectors.source import PullResult
from connectors.tables import create_tables, stage_records
from sync.store import merge_staged

PHONE = "+998901112233"
GUEST = Contact(PHONE, phone=PHONE, marketing_consent=Consent.YES)
C9 = Contact("c9", email="c9@x.com", phone=PHONE)


def _order(oid: str, cust: str, day: int = 1) -> Order:
    return Order(order_id=oid, customer_id=cust, ordered_at=datetime(2024, 1, day, 12, tzinfo=timezone.utc),
                 amount=Decimal("10"))


def _merge(con, orders=(), contacts=(), origin: str = "webhook", full: bool = False) -> None:
    stage_records(con, orders, contacts)
    merge_staged(con, PullResult(full_refresh=full), origin=origin)


def _state(con) -> tuple[dict[str, str], list[tuple]]:
    return (dict(con.execute("SELECT order_id, customer_id FROM orders").fetchall()),
            con.execute("SELECT customer_id, email, phone, marketing_consent FROM contacts ORDER BY 1").fetchall())


@pytest.mark.parametrize("together", [False, True], ids=["two-batches", "one-batch"])
@pytest.mark.parametrize("guest_first", [True, False], ids=["guest-first", "customer-first"])
def test_a_phone_only_guests_consent_never_subscribes_the_customers_email(guest_first, together):
    con = duckdb.connect()
    create_tables(con)
    batches = [([_order("g1", PHONE)], [GUEST]), ([_order("c1", "c9", 2)], [C9])]
    if not guest_first:
        batches.reverse()
    if together:
        batches = [tuple(a + b for a, b in zip(*batches))]
    for batch in batches:
        _merge(con, *batch)
    assert _state(con) == ({"g1": "c9", "c1": "c9"}, [("c9", "c9@x.com", PHONE, "unknown")])


def test_a_file_refresh_applying_a_learned_link_gives_no_phone_only_guests_consent():
    """The webhook linked the guest's order to c9 (noted in the store's links); the export read again keys it by
    the phone, its contact saying yes: c9 keeps the order and his unknown consent."""
    con = duckdb.connect()
    create_tables(con)
    _merge(con, [_order("c1", "c9", 2)], [C9])
    _merge(con, [_order("g1", PHONE)], [Contact(PHONE, phone=PHONE)])
    assert _state(con)[0] == {"g1": "c9", "c1": "c9"}
    for _ in range(2):
        _merge(con, [_order("g1", PHONE)], [GUEST], origin="pull", full=True)
        assert _state(con) == ({"g1": "c9", "c1": "c9"}, [("c9", "c9@x.com", PHONE, "unknown")])
