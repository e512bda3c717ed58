"""RetailCRM backfill under live edits: the list pages by page number, so records created or deleted while it
pages shift the rest; whatever their number, nothing may be skipped or staged twice (the vendor-shaped fake of
:mod:`tests.test_retailcrm`, served through ``responses``)."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

import duckdb
import pytest
import responses
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from connectors.errors import TransientError
from connectors.records import OrderStatus
from connectors.retailcrm import _boundary_pages

from .test_retailcrm import T0, FakeRetailCrm, make_source

from tests.profiles import examples

RUN = T0 + timedelta(days=1)  # the source's clock: the run start
NOW = RUN + timedelta(seconds=30)  # when the managers' changes are stamped


def shop(rsps, orders: range, **fake) -> FakeRetailCrm:
    crm = FakeRetailCrm(rsps)
    for name, value in fake.items():
        setattr(crm, name, value)
    crm.put_contact(1, "c1@example.com", at=T0)
    for oid in orders:
        crm.put_order(oid, 1, f"{oid}.00", at=T0)
    return crm


def staged(con) -> dict[str, tuple[Decimal, str]]:
    """order id -> (amount, status) of the staged orders, each staged once."""
    rows = con.execute("SELECT order_id, amount, status FROM staged_orders").fetchall()
    assert len(rows) == len({r[0] for r in rows}), "an order was staged twice"
    return {oid: (amount, status) for oid, amount, status in rows}


def completed(con) -> dict[str, Decimal]:
    return {oid: amount for oid, (amount, status) in staged(con).items() if status == OrderStatus.COMPLETED}


def in_crm(crm: FakeRetailCrm) -> dict[str, Decimal]:
    return {str(oid): Decimal(str(o["totalSumm"])).quantize(Decimal("0.01")) for oid, o in crm.orders.items()}


def list_pages(crm: FakeRetailCrm) -> list[tuple[str, str]]:
    """(limit, page) of every list read that is not a read by ids."""
    return [(dict(q)["limit"], dict(q).get("page", "1")) for q in crm.list_queries
            if not any(k == "filter[ids][]" for k, _ in q)]


def test_25_deletions_between_two_pages_skip_nothing():
    """25 orders of the first page are deleted before the second is read: the 25 that follow move onto the
    first page (already read). Re-reading the 20 rows before each boundary missed 15 of them."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        crm = shop(rsps, range(1, 151))
        crm.between_pages = lambda: [crm.delete_order(oid, at=NOW) for oid in range(1, 26)]
        con = duckdb.connect()
        make_source(page_size=50, clock=lambda: RUN).pull(con)
    assert crm.between_pages is None, "the deletions did not happen mid-backfill"
    assert completed(con) == in_crm(crm)  # 26…150, none skipped
    deleted = con.execute("SELECT order_id FROM staged_orders WHERE status = 'cancelled' ORDER BY 1").fetchall()
    assert sorted(int(r[0]) for r in deleted) == list(range(1, 26))


def test_25_customers_deleted_or_merged_between_two_pages_skip_no_other_customer():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        crm = FakeRetailCrm(rsps)
        for cid in range(1, 151):
            crm.put_contact(cid, f"c{cid}@example.com", at=T0)
        served = []

        def change(path: str) -> None:
            served.append(path)
            if served.count("/api/v5/customers") == 2:  # right before the second page is served
                for cid in range(1, 26):
                    crm.delete_customer(cid, at=NOW, combined_to=150 if cid % 2 else None)

        crm.before_request = change
        con = duckdb.connect()
        make_source(page_size=50, clock=lambda: RUN).pull(con)
    rows = con.execute("SELECT customer_id, email FROM staged_contacts").fetchall()
    assert len(rows) == len({r[0] for r in rows}) == 150
    assert {int(cid) for cid, email in rows if email} == set(crm.customers) == set(range(26, 151))


def test_a_creation_that_shifts_nothing_costs_one_count_and_no_reread():
    """A new order lands at the end of the list (ids ascending): the count proves nothing was skipped."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        crm = shop(rsps, range(1, 61))
        crm.between_pages = lambda: crm.put_order(61, 1, "5", at=NOW)
        con = duckdb.connect()
        make_source(clock=lambda: RUN).pull(con)
    assert completed(con) == in_crm(crm)
    backfill = [("20", str(p)) for p in (1, 2, 3, 4)]  # 61 rows when page 2 was read: 4 pages of 20
    assert list_pages(crm) == [("20", "1")] + backfill + [("20", "1")]  # contacts, orders, the count


def test_a_crm_that_keeps_changing_ends_in_a_clear_transient_error():
    """An order is created before every request: the list's count can never be taken between two quiet
    history reads, so the pull gives up (and saves nothing) instead of guessing."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        crm = shop(rsps, range(1, 41))
        new = iter(range(1000, 2000))
        crm.between_pages = lambda: crm.delete_order(1, at=NOW)

        def busy(path: str) -> None:
            if crm.between_pages is None:  # from the second page on
                crm.put_order(next(new), 1, "5", at=NOW)

        crm.before_request = busy
        with pytest.raises(TransientError, match="changed faster than it could be read.*run the pull again"):
            make_source(clock=lambda: RUN).pull(duckdb.connect())


def test_boundary_pages_cover_every_row_near_a_boundary_with_few_reads():
    # 3 pages of 50: boundaries after rows 50 and 100; 4 rows before and 4 after each, 200 rows today
    reads = _boundary_pages(3, 50, 4, 4, 200)
    covered = {(page - 1) * limit + i for limit, page in reads for i in range(1, limit + 1)}
    assert set(range(47, 55)) | set(range(97, 105)) <= covered
    assert reads == [(20, 3), (20, 5), (20, 6)]
    assert _boundary_pages(3, 100, 25, 0, 300) == [(50, 2), (50, 4)]  # deletions only: the rows before
    assert _boundary_pages(1, 100, 30, 30, 100) == []  # one page: no boundary
    assert _boundary_pages(2, 20, 1000, 1000, 45) == [(50, 1)]  # capped at today's count


# ---------------------------------------------------------------- property: any interleaving


class Rereads(logging.Handler):
    """Counts the source's log lines announcing a round of re-reads (how often the property gets there)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.rounds = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.rounds += "re-reading" in record.getMessage()


CHANGE = st.tuples(st.integers(2, 6) | st.integers(0, 16),  # the request before which it happens (2: orders p. 1)
                   st.sampled_from(["delete", "create", "edit"]),
                   st.integers(0, 10_000),  # which order (an index into the live ones) or which new id
                   st.integers(1, 40))  # how many times in a row


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders=st.integers(40, 250), page_size=st.sampled_from([20, 50, 100]), descending=st.booleans(),
       changes=st.lists(CHANGE, max_size=12))
def test_any_interleaving_of_changes_leaves_the_crms_final_state(orders, page_size, descending, changes):
    """Orders are deleted, created (at any place in the list: new ids fill gaps) and edited before any list or
    history request of the backfill: it skips no order that was there all along and stages none twice, and
    with the next pull (which reads the changes made after the backfill's last history read) the store is
    exactly the CRM's final state, every deleted order stored as cancelled."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        crm = shop(rsps, range(10, 10 * orders + 1, 10), descending=descending)
        plan = sorted(changes, key=lambda c: c[0])
        requests, touched, deleted = [0], set(), set()

        def change(path: str) -> None:
            while plan and plan[0][0] <= requests[0]:
                _, kind, first, times = plan.pop(0)
                for i in range(times):  # deletions of neighbours; creations and edits of the next ids
                    one(kind, first if kind == "delete" else first + i)
            requests[0] += 1

        def one(kind: str, pick: int) -> None:
            live = sorted(crm.orders)
            if kind == "create":
                if pick > 0 and pick not in crm.orders and str(pick) not in deleted:
                    crm.put_order(pick, 1, f"{pick % 97}.00", at=NOW)
                    touched.add(str(pick))
            elif live:
                oid = live[pick % len(live)]
                touched.add(str(oid))
                if kind == "delete":
                    crm.delete_order(oid, at=NOW)
                    deleted.add(str(oid))
                else:
                    crm.put_order(oid, 1, f"{pick % 89}.00", at=NOW)

        crm.before_request = change
        untouched = set(in_crm(crm))
        con, store = duckdb.connect(), {}
        log, rereads = logging.getLogger("connectors.retailcrm"), Rereads()
        level = log.level
        log.addHandler(rereads)
        log.setLevel(logging.INFO)
        try:
            first = make_source(page_size=page_size, clock=lambda: RUN).pull(con)
        except TransientError:  # allowed when changes kept coming around each count; nothing is saved
            assert len({c[0] for c in changes}) >= 3
            event("the pull gave up")
            return
        finally:
            log.removeHandler(rereads)
            log.setLevel(level)
        event(f"rounds of re-reads: {rereads.rounds}")
        crm.before_request = None
        assert set(completed(con)) >= untouched - touched  # nothing skipped
        store.update(staged(con))
        make_source(page_size=page_size, clock=lambda: RUN + timedelta(hours=1)).pull(con, first.cursor)
        store.update(staged(con))  # what a sync does: the latest version of each id replaces the stored one
        assert {k: v[0] for k, v in store.items() if v[1] == OrderStatus.COMPLETED} == in_crm(crm)
        assert {k for k, v in store.items() if v[1] != OrderStatus.COMPLETED} == deleted
