"""Scopes (RetailCRM ``site``, amoCRM ``pipeline_ids``, Bitrix24 ``category_ids``) hold on every read path,
and every CRM contact goes through the one normaliser (``phone_region``)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from connectors import email_phone as ep
from connectors.contacts import clean_contact
from connectors.records import Contact

from . import test_amocrm, test_bitrix24, test_retailcrm
from .test_retailcrm import T0, FakeRetailCrm, make_source

rsps = test_retailcrm.rsps
DAY = timedelta(days=1)


def orders(con) -> dict[str, str]:
    return dict(con.execute("SELECT order_id, status FROM staged_orders").fetchall())


def test_retailcrm_site_on_the_backfill_list_and_on_each_record(rsps):
    fake = FakeRetailCrm(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_contact(11, "b@example.com", at=T0, site="other-shop")
    fake.put_order(1, 10, "5", at=T0)
    fake.put_order(2, 11, "7", at=T0, site="other-shop")
    con = duckdb.connect()
    make_source(site="shop-main").pull(con)
    assert orders(con) == {"1": "completed"}
    assert [r[0] for r in con.execute("SELECT customer_id FROM staged_contacts").fetchall()] == ["10"]
    assert all(("filter[sites][]", "shop-main") in q for q in fake.list_queries)


def test_retailcrm_site_when_the_api_ignores_the_filter(rsps):
    fake = FakeRetailCrm(rsps)
    fake.ignore_sites = True
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "5", at=T0)
    fake.put_order(2, 10, "7", at=T0, site="other-shop")
    con = duckdb.connect()
    make_source(site="shop-main").pull(con)
    assert orders(con) == {"1": "completed"}  # the record's own site is checked


def test_retailcrm_site_on_the_history_re_read_by_ids_and_deletions(rsps):
    fake = FakeRetailCrm(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "5", at=T0)
    con = duckdb.connect()
    first = make_source(site="shop-main").pull(con)
    fake.put_order(3, 10, "9", at=T0 + DAY + timedelta(hours=1), site="other-shop")  # history names it
    fake.put_order(4, 10, "9", at=T0 + DAY + timedelta(hours=1), site="other-shop")
    fake.delete_order(4, at=T0 + DAY + timedelta(hours=2))  # its deletion snapshot is of the other store
    fake.put_order(5, 10, "9", at=T0 + DAY + timedelta(hours=1))
    con = duckdb.connect()
    make_source(site="shop-main", clock=lambda: T0 + 2 * DAY).pull(con, first.cursor)
    assert orders(con) == {"5": "completed"}
    by_ids = [q for q in fake.list_queries if any(k == "filter[ids][]" for k, _ in q)]
    assert by_ids and all(("filter[sites][]", "shop-main") in q for q in by_ids)


def test_retailcrm_site_on_webhooks():
    cfg = test_retailcrm.RetailCrmConfig(site="shop-main")
    body = json.dumps({"order": {"id": 7, "site": "other-shop", "status": "complete", "createdAt": "2026-01-10 12:00:00",
                                 "customer": {"id": 1}, "totalSumm": 5}}).encode()
    assert test_retailcrm.parse_webhook({}, body, cfg) == ([], [])
    ours = body.replace(b"other-shop", b"shop-main")
    assert [o.order_id for o in test_retailcrm.parse_webhook({}, ours, cfg)[0]] == ["7"]
    customer = json.dumps({"customer": {"id": 3, "site": "other-shop", "email": "x@example.com"}}).encode()
    assert test_retailcrm.parse_webhook({}, customer, cfg) == ([], [])


def test_amocrm_lead_outside_the_pipelines_stores_nothing_of_it(rsps):
    fake = test_amocrm.FakeAmo(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "10", at=T0)
    con = duckdb.connect()
    test_amocrm.make_source(pipeline_ids=[42]).pull(con)
    assert con.execute("SELECT order_id, customer_id, amount, status FROM staged_orders").fetchall() == [
        ("1", "", Decimal(0), "cancelled")]  # a tombstone only: a lead that left the pipelines leaves the history


def test_bitrix24_deal_outside_the_categories_stores_nothing_of_it(rsps):
    rsps.assert_all_requests_are_fired = False  # no won deal in scope: no product rows to read
    fake = test_bitrix24.FakeBitrix24(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "10", at=T0)
    con = duckdb.connect()
    test_bitrix24.make_source(category_ids=[5]).pull(con)
    assert con.execute("SELECT order_id, customer_id, amount, status FROM staged_orders").fetchall() == [
        ("1", "", Decimal(0), "cancelled")]


# ---------------------------------------------------------------- one contact normaliser

MESSY_PHONES = ["8 902 001 58 38", "7-904-003-1676", "+7 (916) 123-45-67", " 89161234567 ", "8(916)1234567",
                "90 123 45 67", "+998 33 123 45 67", "abc", "12", "+1 202 555 0143", "00 7 916 123 45 67",
                *(f"8 916 {i:03d} 45 67" for i in range(12))]  # a shape of 12: the SQL fast path
MESSY_EMAILS = [" Ann@Example.COM ", "\u00a0b@x.com", "bad@@x", "ü@exämple.de", "a@localhost", "a..b@x.com", "x@x.c"]


@pytest.mark.parametrize("region", ["RU", "UZ", None])
def test_python_and_sql_normalisers_agree_on_messy_values(region):
    con = duckdb.connect()
    con.register("p", pa.table({"raw": MESSY_PHONES}))
    con.register("e", pa.table({"raw": MESSY_EMAILS}))
    ep.phone_map(con, "SELECT raw FROM p", "pm", region)
    ep.email_map(con, "SELECT raw FROM e", "em")
    assert dict(con.execute("SELECT raw, norm FROM pm").fetchall()) == {
        v: ep.normalize_phone(v, region) for v in MESSY_PHONES}
    assert dict(con.execute("SELECT raw, norm FROM em").fetchall()) == {v: ep.normalize_email(v) for v in MESSY_EMAILS}


def test_crm_contacts_are_normalised_and_invalid_values_reported(rsps):
    fake = FakeRetailCrm(rsps)
    fake.put_contact(10, " Ann@Example.COM ", at=T0, phones=[{"number": "8 902 001 58 38"}])
    fake.put_contact(11, "bad@@x", at=T0, phones=[{"number": "12"}])
    con = duckdb.connect()
    result = make_source(phone_region="RU").pull(con)
    assert con.execute("SELECT customer_id, email, phone FROM staged_contacts ORDER BY 1").fetchall() == [
        ("10", "ann@example.com", "+79020015838"), ("11", None, None)]
    assert sorted((b.row, b.field, b.value) for b in result.issues) == [("11", "email", "bad@@x"),
                                                                        ("11", "phone", "12")]
    assert all("the contact is kept without it" in b.reason for b in result.issues)
    assert result.bad_rows == []  # (issues of a kept contact, not bad rows: docs/sources/common.md)


def test_phone_region_is_validated_and_one_normaliser_serves_every_source():
    from pydantic import ValidationError

    for model in (test_retailcrm.RetailCrmConfig, test_amocrm.AmoCrmConfig, test_bitrix24.Bitrix24Config):
        assert model(phone_region="ru").phone_region == "RU"
        with pytest.raises(ValidationError, match="unknown phone region"):
            model(phone_region="XX")
    contact, issues = clean_contact(Contact("1", phone="7-904-003-1676"), "RU", "x:contacts")
    assert contact.phone == "+79040031676" and issues == []
