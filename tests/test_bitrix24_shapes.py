"""Bitrix24 records of a JSON shape rfmsync did not expect: each a bad row naming the record and field, the pull
going on (as amoCRM's, RetailCRM's and Shopify's: connectors/shapes.py), never the whole pull stopped nor a key of
junk."""

from __future__ import annotations

from datetime import timedelta

import pytest

from connectors.errors import FatalError
from sync.store import open_store

from .test_bitrix24 import FakeBitrix24, T0, make_source, responses


def _pull(change, **cfg):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = FakeBitrix24(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        for oid in (1, 2, 3):
            fake.put_order(oid, 10, "100", at=T0)
        change(fake)
        result = make_source(**cfg).pull(con)
        staged = con.execute("SELECT order_id, customer_id FROM staged_orders ORDER BY 1").fetchall()
    return result, staged


@pytest.mark.parametrize("row, field", [({"ID": "abc"}, "ID"), (["2"], None), ({"ID": [2]}, "ID")])
def test_a_deal_whose_id_is_unreadable_is_a_bad_row_and_the_keyset_goes_on(row, field):
    """``max(int(r["ID"]))`` over the page: one such row stopped the pull ("a page without usable IDs"), and every
    pull after it, after naming the row a bad one."""
    def change(fake):
        fake.deals[2] = row if isinstance(row, list) else {**fake.deals[2], **row}
    result, staged = _pull(change)
    assert staged == [("1", "10"), ("3", "10")]
    assert {b.field for b in result.bad_rows} == {field}, result.bad_rows


@pytest.mark.parametrize("row", [{"ID": "abc"}, {"ID": [3]}])
def test_the_newest_deal_with_an_unreadable_id_is_one_bad_row_and_the_list_ends(row):
    """The keyset went past such a row only when a readable one followed it: the newest deal unreadable came alone on
    the next ``>ID`` page (the portal filters on the ID it stores), and "no usable ID" stopped every pull."""
    def change(fake):
        fake.deals[3] = row if isinstance(row, list) else {**fake.deals[3], **row}
    result, staged = _pull(change)
    assert staged == [("1", "10"), ("2", "10")]
    assert len(result.bad_rows) == 1, result.bad_rows


def test_an_incremental_pull_whose_only_change_is_a_deal_with_an_unreadable_id_goes_on():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = FakeBitrix24(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "100", at=T0)
        first = make_source().pull(con)
        fake.put_order(2, 10, "100", at=T0 + timedelta(days=1))
        fake.deals[2]["ID"] = "n/a"
        second = make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, first.cursor)
    assert [(b.row, b.field) for b in second.bad_rows] == [("n/a", "ID")]


def test_a_full_page_where_no_deal_has_a_readable_id_cannot_be_read_past():
    def change(fake):
        for oid in range(1, 52):
            fake.put_order(oid, 10, "100", at=T0)
            fake.deals[oid]["ID"] = "n/a"
    with pytest.raises(FatalError, match=r"crm.deal.list: a page of 50 rows none of which has a usable ID"):
        _pull(change)


@pytest.mark.parametrize("field, value", [("CONTACT_ID", {"ID": 10}), ("CONTACT_ID", ["10"]),
                                          ("CATEGORY_ID", ["0"]), ("CATEGORY_ID", "main")])
def test_an_id_field_of_another_shape_is_a_bad_row_not_a_key_nor_another_pipeline(field, value):
    """``CONTACT_ID: {"ID": 10}`` became the customer ``{'ID': 10}``; a ``CATEGORY_ID`` no pipeline id was taken for
    another pipeline's, the deal retired from the history without a word."""
    def change(fake):
        fake.deals[2][field] = value
    result, staged = _pull(change, category_ids=[0])
    assert staged == [("1", "10"), ("3", "10")]
    assert [(b.row, b.field) for b in result.bad_rows] == [("2", field)]


def test_a_customer_id_of_another_shape_is_a_field_error_in_every_crm_never_a_key_of_its_text():
    """``{"id": {"id": 10}}`` was the customer ``{'id': 10}`` in amoCRM, RetailCRM and Shopify alike."""
    from connectors import amocrm, retailcrm_mapping, shopify
    from connectors.amocrm import AmoCrmConfig
    from connectors.http import FieldError
    from connectors.retailcrm import RetailCrmConfig
    from connectors.shopify import ShopifyConfig

    odd = {"id": 10}
    cases = [
        (lambda: amocrm.map_lead({"id": 1, "status_id": 142, "price": 5, "closed_at": 1767000000,
                                  "_embedded": {"contacts": [{"id": odd, "is_main": True}]}}, AmoCrmConfig()),
         "_embedded.contacts.id"),
        (lambda: retailcrm_mapping.map_order({"id": 1, "status": "complete", "createdAt": "2026-01-10 12:00:00",
                                              "totalSumm": 5, "customer": {"id": odd}}, RetailCrmConfig(),
                                             dropped=[]),
         "customer.id"),
        (lambda: shopify.map_order({"id": 1, "financial_status": "paid", "total_price": "5.00",
                                    "created_at": "2026-01-10T12:00:00Z", "customer": {"id": [10]}}, ShopifyConfig(), []),
         "customer.id"),
    ]
    for mapper, field in cases:
        with pytest.raises(FieldError) as err:
            mapper()
        assert err.value.field == field


@pytest.mark.parametrize("field, value", [("CATEGORY_ID", "main"), ("CATEGORY_ID", ["0"]), ("CONTACT_ID", {"ID": 10})])
def test_a_lost_deal_with_an_unreadable_id_field_leaves_the_history_whichever_field(field, value):
    """A lost deal's unreadable ``CONTACT_ID`` retired it (a tombstone) while its unreadable ``CATEGORY_ID`` was a bad
    row: not a purchase either way, so both retire it; only a won deal's is a bad row (above)."""
    def change(fake):
        fake.deals[2]["STAGE_SEMANTIC_ID"], fake.deals[2]["STAGE_ID"] = "F", "LOSE"
        fake.deals[2][field] = value
    result, staged = _pull(change, category_ids=[0])
    assert result.bad_rows == []
    assert [oid for oid, _ in staged] == ["1", "2", "3"]
