"""What bounds the order store's two tables of version notes (sync/store/deletes.py, sync/store/pulled.py), whatever
a shop's webhooks, deletes, pulls, identity links and file refreshes do in whatever order: ``deleted_orders`` holds
each id once, and only ids of the cancelled rows the store keeps for them (never more rows than the store's
tombstones, so pruning it would save less than those rows cost); ``pulled_versions`` holds one row per record, of
a record the store holds, and never under an e-mail or phone (the key identity linking re-keys): a pull's contacts
are keyed by the vendor's own ids (Shopify's and amoCRM's numeric ids), which linking never re-keys, so a linked
contact leaves no pulled row behind."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.records import Consent, Contact, Order
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.store import merge_staged, open_store
from tests.profiles import examples
from tests.test_store_deletes import _delete
from tests.test_store_pulled_versions import S, T0, _hook, _pulled

GUEST = "guest@example.com"  # a guest checkout's order and contact are keyed by its e-mail until linked

_orders = st.sampled_from(["11", "12", "13"])
_times = st.integers(0, 20).map(lambda m: T0 + 60 * m * S)
_steps = st.one_of(
    st.tuples(st.just("hook"), _orders, _times | st.none()),
    st.tuples(st.just("delete"), _orders, _times | st.none()),
    st.tuples(st.just("pull"), _orders, _times),
    st.tuples(st.just("guest"), st.just(""), _times | st.none()),  # a guest's order and contact, by webhook
    st.tuples(st.just("customer"), st.just(""), _times),  # the pull of the customer with the guest's e-mail
    st.tuples(st.just("refresh"), st.sampled_from(["11", "12", "11,13"]), st.none()),  # a file's full refresh
)


def _run(con, step: tuple, n: int) -> None:
    kind, oid, at = step
    accepted = T0 + (7200 + 10 * n) * S  # each step accepted after the one before
    if kind == "hook":
        _hook(con, orders=[Order(oid, "7", T0, Decimal(100 + n), updated_at=at)], accepted=accepted)
    elif kind == "delete":
        _hook(con, orders=_delete(oid, at), accepted=accepted)
    elif kind == "pull":
        _pulled(con, orders=[Order(oid, "7", T0, Decimal(200 + n), updated_at=at)], pulled_at=accepted)
    elif kind == "guest":
        _hook(con, orders=[Order(f"g{n}", GUEST, T0, Decimal(50), updated_at=at)],
              contacts=[Contact(GUEST, email=GUEST, marketing_consent=Consent.YES, updated_at=at)], accepted=accepted)
    elif kind == "customer":
        _pulled(con, contacts=[Contact("9", email=GUEST, updated_at=at)], pulled_at=accepted)
    else:
        stage_records(con, [Order(o, "7", T0, Decimal(10)) for o in oid.split(",")], [])
        merge_staged(con, PullResult(full_refresh=True), origin="pull")


@settings(max_examples=examples(30), deadline=None)
@given(st.lists(_steps, min_size=1, max_size=8))
def test_deleted_and_pulled_notes_stay_within_the_records_the_store_holds(steps):
    with open_store(None) as con:
        for n, step in enumerate(steps):
            _run(con, step, n)
            deleted = [i for (i,) in con.execute("SELECT order_id FROM deleted_orders").fetchall()]
            assert len(deleted) == len(set(deleted))
            assert con.execute("SELECT count(*) FROM deleted_orders d LEFT JOIN orders o USING (order_id) "
                               "WHERE o.status IS DISTINCT FROM 'cancelled' OR o.amount <> 0").fetchall() == [(0,)]
            pulled = con.execute("SELECT kind, id FROM pulled_versions").fetchall()
            assert len(pulled) == len(set(pulled))
            held = {("order", i) for (i,) in con.execute("SELECT order_id FROM orders").fetchall()} | {
                ("contact", i) for (i,) in con.execute("SELECT customer_id FROM contacts").fetchall()}
            assert set(pulled) <= held
            assert not [i for _, i in pulled if "@" in i or i.startswith("+")]


def test_a_guest_linked_to_a_pulled_customer_leaves_no_pulled_row_behind():
    """A guest's order and contact by webhook (keyed by the e-mail), then the pull of customer 9 with that e-mail:
    linked (rule 2), the guest's rows are customer 9's; the only pulled row is 9's, and it orders a later delivery
    of 9 (an older one is left out). The other way round (pulled first) too."""
    for guest_first in (True, False):
        with open_store(None) as con:
            steps = [("guest", "", T0), ("customer", "", T0 + 300 * S)]
            for n, step in enumerate(steps if guest_first else steps[::-1]):
                _run(con, step, n)
            assert con.execute("SELECT DISTINCT customer_id FROM orders UNION ALL SELECT customer_id FROM contacts"
                               ).fetchall() == [("9",), ("9",)]
            assert con.execute("SELECT kind, id FROM pulled_versions").fetchall() == [("contact", "9")]
            older = _hook(con, contacts=[Contact("9", marketing_consent=Consent.YES, updated_at=T0 + 60 * S)],
                          accepted=T0 + 9000 * S)
            assert older.get("stale_contacts") == 1
