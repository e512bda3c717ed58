"""A backfill page answered empty though the answer itself says more pages follow (a ``next`` link, a page count
past it): the records after it are neither taken as the end of the list nor lost.

On main each source took such a page for the end: the backfill stopped there, the pass after it read only what
changed since the run began, and the bookmark moved past every record of the pages never read (lost until each is
edited again). Shopify's ``Link`` is followed; an amoCRM page of no leads with a next link, or a RetailCRM page of
no rows before the page count its answer gives, stops the pull with a clear error, nothing saved. Faked at the HTTP
level through each vendor-shaped fake.
"""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import quote

import duckdb
import pytest
import responses

from connectors.errors import TransientError

from . import test_amocrm, test_retailcrm, test_shopify
from .test_source_contract import DAY, T0, seed


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def order_ids(con) -> set[int]:
    return {int(r[0]) for r in con.execute("SELECT order_id FROM staged_orders").fetchall()}


def test_shopify_follows_the_next_link_of_an_empty_page(rsps):
    fake = test_shopify.FakeShopify(rsps)
    seed(fake, orders=6)
    # page 2 comes back empty, its Link naming the page after the two orders read (the keyset: after id 2, in id order)
    nxt = f"{test_shopify.BASE}/orders.json?limit=2&page_info={quote(json.dumps([None, 2, True], separators=(',', ':')))}"
    fake.between_pages = lambda: fake.failures.append(
        (200, {"Content-Type": "application/json", "Link": f'<{nxt}>; rel="next"'}, json.dumps({"orders": []})))
    con = duckdb.connect()
    result = test_shopify.make_source(clock=lambda: T0 + DAY).pull(con)
    assert fake.between_pages is None and not fake.failures, "the empty page was not served mid-backfill"
    assert order_ids(con) == set(range(1, 7)) and result.orders == 6


def test_an_amocrm_page_of_no_leads_with_a_next_link_stops_the_pull(rsps):
    fake = test_amocrm.FakeAmo(rsps)
    seed(fake, orders=12, stagger=True)
    nxt = f"{test_amocrm.BASE}/api/v4/leads?page=2"
    fake.between_pages = lambda: fake.failures.append((200, {"Content-Type": "application/hal+json"}, json.dumps(
        {"_page": 2, "_links": {"self": {"href": nxt}, "next": {"href": nxt}}, "_embedded": {"leads": []}})))
    with pytest.raises(TransientError, match=r"amoCRM leads: a page of no leads with a next link.*nothing was "
                                             r"saved: run the pull again"):
        test_amocrm.make_source(clock=lambda: T0 + DAY).pull(duckdb.connect())
    assert fake.between_pages is None and not fake.failures, "the empty page was not served mid-backfill"


def test_a_retailcrm_page_of_no_rows_before_its_page_count_stops_the_pull(rsps):
    fake = test_retailcrm.FakeRetailCrm(rsps)
    seed(fake, orders=60)
    empty = {"success": True, "orders": [], "pagination": {"limit": 20, "totalCount": 60, "currentPage": 2,
                                                           "totalPageCount": 3}}
    fake.between_pages = lambda: fake.failures.append((200, {"Content-Type": "application/json"}, json.dumps(empty)))
    with pytest.raises(TransientError, match=r"RetailCRM api/v5/orders: page 2 has no rows though its answer counts "
                                             r"3 pages.*nothing was saved: run the pull again"):
        test_retailcrm.make_source(clock=lambda: T0 + DAY).pull(duckdb.connect())
    assert fake.between_pages is None and not fake.failures, "the empty page was not served mid-backfill"


def test_a_retailcrm_list_emptied_while_it_is_read_still_ends_by_its_own_count(rsps):
    """Every order deleted between two pages: page 2 comes back empty and its count says 0 pages. That is the end
    of the list, not a lie (the history feed tells the deletions)."""
    fake = test_retailcrm.FakeRetailCrm(rsps)
    seed(fake, orders=30)
    fake.between_pages = lambda: [fake.delete_order(o, at=T0 + DAY - timedelta(minutes=1)) for o in range(1, 31)]
    con = duckdb.connect()
    test_retailcrm.make_source(clock=lambda: T0 + DAY).pull(con)
    assert con.execute("SELECT DISTINCT status FROM staged_orders").fetchall() == [("cancelled",)]
