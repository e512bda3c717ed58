"""A backfill whose listing the vendor ends early (a full page without its next link, a 204 mid-list, a Link
header lost on the way, a short page) skips nothing: the pass after it starts no later than the backfill's highest
time, and a full page without a next link is read on (connectors/incremental.py, amocrm.py, shopify.py)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from sync.store import merge_staged, open_store

from . import test_amocrm, test_bitrix24, test_shopify
from .test_amocrm import T0

rsps = test_amocrm.rsps
HOUR = timedelta(hours=1)


def stored_after_two_pulls(make_source, *, first_start, put_last) -> list[int]:
    """Backfill at ``first_start``, then one incremental pull a day later; the ids in the store."""
    with open_store(None) as con:
        first = make_source(clock=lambda: first_start).pull(con)
        merge_staged(con, first, origin="pull")
        put_last()
        later = make_source(clock=lambda: first_start + timedelta(days=1)).pull(con, first.cursor)
        merge_staged(con, later, origin="pull")
        return sorted(int(r[0]) for r in con.execute("SELECT order_id FROM orders").fetchall())


class AmoCut(test_amocrm.FakeAmo):
    """The first full page of a keyset read of leads comes without ``_links.next`` (``cut = "link"``), or the
    request after it is answered 204 (``cut = "204"``), once."""
    cut = "link"
    done = False

    def _list(self, entity):
        inner = super()._list(entity)

        def handler(q):
            status, body = inner(q)
            if entity != "leads" or self.done or q.get("with") == "only_deleted":
                return status, body
            if self.cut == "204" and "filter[updated_at][from]" in q:
                self.done = True
                return 204, None
            if self.cut == "link" and body and len(body["_embedded"]["leads"]) == int(q["limit"]) \
                    and "filter[updated_at][from]" in q:
                body["_links"].pop("next", None)
                self.done = True
            return status, body
        return handler


def amo_shop(rsps, cut: str) -> AmoCut:
    fake = AmoCut(rsps)
    fake.cut = cut
    fake.put_contact(10, "ann@example.com", at=T0)
    for i in range(1, 22):
        fake.put_order(i, 10, "100", at=T0 + i * HOUR)
    fake.put_order(21, 10, "100", at=T0 + timedelta(days=2, minutes=-5))  # edited just before the backfill ended
    return fake


def test_amocrm_a_full_page_without_a_next_link_is_read_on(rsps):
    fake = amo_shop(rsps, "link")
    start = T0 + timedelta(days=2)
    got = stored_after_two_pulls(test_amocrm.make_source, first_start=start, put_last=lambda: None)
    assert fake.done and got == list(range(1, 22))


def test_amocrm_a_204_mid_list_is_caught_by_the_pass_after_the_backfill(rsps):
    fake = amo_shop(rsps, "204")
    start = T0 + timedelta(days=2)
    with open_store(None) as con:
        first = test_amocrm.make_source(clock=lambda: start).pull(con)
        assert fake.done
        merge_staged(con, first, origin="pull")
        assert sorted(int(r[0]) for r in con.execute("SELECT order_id FROM orders").fetchall()) == list(range(1, 22))
        assert json.loads(first.cursor)["orders"] == (start - timedelta(minutes=5)).isoformat()


class ShopifyCut(test_shopify.FakeShopify):
    """The backfill's first page of ``cut`` (orders or customers) comes without its ``Link`` header, once. (The fake
    lists newest first unless ``since_id`` is given, as Shopify does.)"""
    cut = "orders"
    done = False

    def _list(self, res):
        inner = super()._list(res)

        def handler(q):
            body, headers = inner(q)
            if res == self.cut and "page_info" not in q and not q.get("updated_at_min") and not self.done:
                headers.pop("Link", None)
                self.done = True
            return body, headers
        return handler


def test_shopify_a_backfill_page_without_its_link_header_is_read_on_and_nothing_is_skipped():
    with test_shopify.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = ShopifyCut(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        for i in range(1, 11):
            fake.put_order(i, 10, "100", at=T0 + timedelta(days=3) - i * HOUR)  # later ids edited earlier
        fake.put_order(11, 10, "100", at=T0 + timedelta(days=4, minutes=-3))
        got = stored_after_two_pulls(test_shopify.make_source, first_start=T0 + timedelta(days=4), put_last=lambda: None)
        assert fake.done and got == list(range(1, 12))


def test_shopify_a_customers_page_without_its_link_header_is_read_on():
    with test_shopify.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = ShopifyCut(mock)
        fake.cut = "customers"
        for i in range(1, 8):
            fake.put_contact(i, f"c{i}@example.com", at=T0 + i * HOUR)  # newest first, the page after the cut is older
        with open_store(None) as con:
            test_shopify.make_source(clock=lambda: T0 + timedelta(days=4)).pull(con)
            got = sorted(int(r[0]) for r in con.execute("SELECT customer_id FROM staged_contacts").fetchall())
        assert fake.done and got == list(range(1, 8))


def test_shopify_an_exactly_full_last_page_costs_one_request_more():
    with test_shopify.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = test_shopify.FakeShopify(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        for i in range(1, 5):
            fake.put_order(i, 10, "100", at=T0 + i * HOUR)
        with open_store(None) as con:
            test_shopify.make_source(clock=lambda: T0 + timedelta(days=1)).pull(con)
        orders = [c.request.url for c in mock.calls if "/orders.json" in c.request.url]
        # backfill: 2 linked pages + 1 since_id (empty); the pass after it: 1 page of 1 order
        assert len(orders) == 4 and sum("since_id=4" in u for u in orders) == 1


class Bitrix24Short(test_bitrix24.FakeBitrix24):
    """The first full page of deals comes back short (30 of 50 rows), once."""
    done = False

    def _list(self, store):
        inner = super()._list(store)

        def handler(body):
            rows = inner(body)
            if store is self.deals and not self.done and len(rows) == 50:
                self.done = True
                return rows[:30]  # a short page mid-list
            return rows
        return handler


@pytest.mark.parametrize("edited", [80, 5], ids=["newest-deal-edited", "old-deal-edited"])
def test_bitrix24_a_short_page_mid_list_is_read_on(edited):
    """Deals are listed by ID, not by DATE_MODIFY (here later IDs were edited earlier): the pass after the backfill
    (from its highest DATE_MODIFY) cannot catch what a short page cut, so the list is read on to an empty page."""
    with test_bitrix24.responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = Bitrix24Short(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        for i in range(1, 81):
            fake.put_order(i, 10, "100", at=T0 + (81 - i) * timedelta(minutes=20))
        fake.put_order(edited, 10, "100", at=T0 + timedelta(days=2, minutes=-5))  # edited just before the end
        got = stored_after_two_pulls(lambda **kw: test_bitrix24.make_source(line_items=False, **kw),
                                     first_start=T0 + timedelta(days=2), put_last=lambda: None)
        assert fake.done and got == list(range(1, 81)), f"missing {sorted(set(range(1, 81)) - set(got))}"
