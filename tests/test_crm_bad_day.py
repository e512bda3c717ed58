"""A CRM pull on a bad day: a contact's mistyped e-mail or phone is an issue (the contact is kept without it, named
with its record and field), not a bad row; and ``max_bad_rows_pct`` judges a share only from ``min_bad_rows`` bad
rows on, so a quiet incremental window of three changed orders, one of them bad, does not refuse every sync for
ever (the cursor never moving past it), while a broken shape where most rows are bad is still refused."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from sync.config import GuardsConfig, load_config
from sync.errors import GuardRefusedError
from sync.guards import DataStats, data_lines
from sync.ingest import pull_to_store
from sync.ledger import open_ledger
from sync.settings import load_settings
from sync.store import open_store

from . import test_retailcrm
from .test_amocrm import FakeAmo
from .test_cli_pull import rsps, run  # noqa: F401 (fixture)
from .test_pull_unstored_counts import shop  # noqa: F401 (fixture)


def test_a_mistyped_email_or_phone_of_a_crm_contact_is_an_issue_not_a_bad_row():
    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = test_retailcrm.FakeRetailCrm(mock)
        t0 = test_retailcrm.T0
        fake.put_contact(10, "ann@example.com", at=t0)
        fake.put_contact(11, "boris@gmail", at=t0)  # a lead who never bought, as CRMs hold them
        fake.put_contact(12, "vera@example.com", at=t0, phones=[{"number": "8 902 001 58"}])
        fake.put_order(1, 10, "100", at=t0)
        result = test_retailcrm.make_source(phone_region="RU").pull(con)
        kept = dict(con.execute("SELECT customer_id, coalesce(email, '-') || ' ' || coalesce(phone, '-') "
                                "FROM staged_contacts").fetchall())
    assert (result.bad_row_count, result.bad_rows) == (0, [])
    assert result.issue_count == 2
    assert sorted((b.row, b.field, b.value) for b in result.issues) == [
        ("11", "email", "boris@gmail"), ("12", "phone", "8 902 001 58")]
    assert kept == {"10": "ann@example.com +77011234567", "11": "- +77011234567", "12": "vera@example.com -"}


def _pull(shop):  # noqa: F811
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger, open_store(str(shop.parent / "rfmsync.duckdb")) as con:
        return pull_to_store(cfg, ledger, con, settings, guarded=True)


def _seeded(rsps) -> tuple[FakeAmo, datetime]:  # noqa: F811
    """40 orders three days ago, the last one two days ago: an incremental pull's window reads only that one again."""
    fake = FakeAmo(rsps)
    now = datetime.now(timezone.utc)
    fake.put_contact(10, "ann@example.com", at=now - timedelta(days=3))
    for i in range(1, 40):
        fake.put_order(i, 10, "100", at=now - timedelta(days=3))
    fake.put_order(40, 10, "100", at=now - timedelta(days=2))
    return fake, now


def test_a_contact_edited_with_a_mistyped_phone_does_not_refuse_the_sync(rsps, shop):  # noqa: F811
    """The next pull reads that contact alone (no order changed): "1 of 1 rows (100 %) are bad" refused it, and
    every pull after it, on the same window."""
    fake, now = _seeded(rsps)
    _pull(shop)
    fake.contacts[10]["custom_fields_values"][0]["values"][0]["value"] = "8 902 001 58"
    fake.contacts[10]["updated_at"] = int((now - timedelta(hours=1)).timestamp())
    result = _pull(shop)
    assert (result.contacts, result.bad_row_count, result.issue_count) == (1, 0, 1)
    assert str(result.issues[0]) == ("amocrm:contacts, row 10: phone: invalid phone; the contact is kept without "
                                     "it ('8 902 001 58')")
    cfg = load_config(shop)
    with open_ledger(cfg, load_settings()) as ledger:  # the cursor moved on
        assert json.loads(ledger.get_cursor("amocrm", "all"))["contacts"] > (now - timedelta(hours=2)).isoformat()
    again = run("pull", "--config", str(shop), "--format", "json")
    counts = json.loads(again.output)["counts"]  # the window reads it again: unchanged, its issue told again
    assert again.exit_code == 0 and (counts["unchanged_contacts"], counts["cleaned_values"]) == (1, 1), again.output


def test_one_bad_order_in_a_small_window_passes_and_a_broken_day_is_still_refused(rsps, shop):  # noqa: F811
    fake, now = _seeded(rsps)
    _pull(shop)
    # day 1: three orders changed, one of them bad (33 % of a window of four with the one read again)
    fake.put_order(41, 10, "100", at=now - timedelta(hours=2))
    fake.put_order(42, 10, "100", at=now - timedelta(hours=2))
    fake.put_order(43, 10, "100", at=now - timedelta(hours=2), bad=True)
    day1 = _pull(shop)
    assert (day1.orders, day1.unchanged_orders, day1.bad_row_count) == (2, 1, 1)
    # day 2: a broken shape: most of the changed orders bad
    for i in range(44, 54):
        fake.put_order(i, 10, "100", at=now - timedelta(hours=1), bad=i > 45)
    with pytest.raises(GuardRefusedError, match=r"max_bad_rows_pct: 9 of 13 rows \(69.2 %\) are bad"):
        _pull(shop)


def test_every_changed_order_bad_on_a_quiet_day_is_refused_until_the_cause_is_fixed(rsps, shop):  # noqa: F811
    """4 of 4 changed orders bad (a broken mapping) passed under min_bad_rows = 5: the cursor moved past them and,
    once the cause was fixed, they were never read again (not stored until pull --full)."""
    fake, now = _seeded(rsps)
    _pull(shop)
    for i in (41, 42, 43, 44):
        fake.put_order(i, 10, "100", at=now - timedelta(hours=5), bad=True)
    with pytest.raises(GuardRefusedError, match=r"max_bad_rows_pct: 4 of 5 rows \(80 %\) are bad"):
        _pull(shop)
    for i in (41, 42, 43, 44):  # the cause fixed: the same records now map, the cursor had not moved past them
        fake.leads[i]["price"] = 100
    assert _pull(shop).orders == 4
    with open_store(str(shop.parent / "rfmsync.duckdb")) as con:
        stored = con.execute("SELECT count(*) FROM orders WHERE order_id IN ('41', '42', '43', '44')").fetchall()
    assert stored == [(4,)]


@pytest.mark.parametrize("rows, bad, least, refused", [
    (2, 1, 5, False),  # one bad order of three changed: under min_bad_rows
    (3, 3, 5, False),  # as many bad as valid: not yet outnumbering them
    (0, 4, 5, True),  # every changed order bad: a broken mapping on a quiet day, however few
    (1, 2, 5, True),  # bad rows outnumber the valid rows read
    (0, 5, 5, True),
    (94, 6, 5, True),
    (2, 1, 1, True),  # min_bad_rows = 1 (or 0): any share over the limit trips, as before
    (2, 1, 0, True),
    (100, 0, 0, False),
])
def test_min_bad_rows_is_where_the_share_starts_to_count(rows, bad, least, refused):
    stats = DataStats(orders=rows, rows=rows, bad_rows=bad, window=True)
    lines = data_lines(GuardsConfig(min_bad_rows=least, min_orders=0), stats)
    assert bool(lines) is refused, lines


@pytest.mark.parametrize("rows, bad", [(2, 1), (60, 4)])
def test_min_bad_rows_leaves_a_whole_history_to_the_share(rows, bad):
    """A file or a --full pull reads the whole history: 1 bad row of 3 is 33 % of it, refused as before."""
    lines = data_lines(GuardsConfig(min_orders=0), DataStats(orders=rows, rows=rows, bad_rows=bad))
    assert lines == [f"guard max_bad_rows_pct: {bad} of {rows + bad} rows ({round(100 * bad / (rows + bad), 1):g} %) "
                     f"{'is' if bad == 1 else 'are'} bad; limit 5 %"]


# ------------------------------------------------------------------------------------ walk-in sales (no customer)


def test_shopify_pos_walk_in_sales_are_counted_not_bad_rows():
    """Paid orders with no customer, e-mail or phone (sales at the till) were each a bad row: 2 of 20 (10 %) refused
    every sync of a shop with a till. Guests with neither key are counted, not segmented (sources.md)."""
    from . import test_shopify
    with test_shopify.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = test_shopify.FakeShopify(mock)
        for cid in range(1, 19):
            fake.put_contact(cid, f"c{cid}@example.com", at=test_shopify.T0)
            fake.put_order(cid, cid, "100.00", at=test_shopify.T0)
        for oid in (101, 102):
            fake.put_order(oid, 0, "35.00", at=test_shopify.T0, customer=None, email=None, phone=None,
                           source_name="pos")
        fake.put_order(103, 0, "35.00", at=test_shopify.T0, customer=None, email=None, phone="+998 90 123 45 67")
        result = test_shopify.make_source().pull(con)
        keys = [k for (k,) in con.execute("SELECT customer_id FROM staged_orders WHERE order_id LIKE '10_'").fetchall()]
    assert (result.orders, result.bad_row_count, result.anonymous_orders) == (19, 0, 2)
    assert keys == ["+998901234567"]  # a guest with a phone is still keyed by it (in E.164, as contacts' phones)
    assert data_lines(GuardsConfig(), DataStats(orders=19, rows=result.orders, bad_rows=result.bad_row_count)) == []


def test_a_walk_in_sale_is_counted_by_rfmsync_pull_and_its_run(rsps, tmp_path, monkeypatch):  # noqa: F811
    from . import test_cli_pull
    shop = test_cli_pull.shop.__wrapped__(tmp_path, monkeypatch)  # (the RetailCRM config of tests/test_cli_pull.py)
    fake = test_cli_pull.seeded(rsps)
    fake.put_order(3, 0, "35", at=test_retailcrm.T0)
    fake.orders[3].update(customer=None, email=None)
    text = run("pull", "--config", str(shop), "--full")
    assert text.exit_code == 0 and ("pulled 2 orders and 2 contacts from retailcrm (0 bad records; 1 sale with no "
                                    "customer, e-mail or phone (walk-in), not segmented)") in text.output, text.output
    doc = json.loads(run("pull", "--config", str(shop), "--full", "--format", "json").output)
    assert (doc["counts"]["anonymous_orders"], doc["counts"]["bad_records"]) == (1, 0)
    with open_ledger(load_config(shop), load_settings()) as ledger:
        assert ledger.recent_runs(1)[0]["counts"]["anonymous_orders"] == 1


def test_values_cleaned_and_walk_in_sales_are_in_the_pull_run_and_said_by_a_sync(rsps, tmp_path, monkeypatch):  # noqa: F811
    """``rfmsync pull`` said "1 value cleaned"; its run's counts and ``rfmsync sync`` (its warnings) said nothing."""
    from sync.ingest import segments_from_store
    from . import test_cli_pull
    shop = test_cli_pull.shop.__wrapped__(tmp_path, monkeypatch)
    fake = test_cli_pull.seeded(rsps)
    fake.customers[11]["phones"] = [{"number": "12-34"}]  # no possible number: dropped, the contact kept
    fake.put_order(3, 0, "35", at=test_retailcrm.T0)
    fake.orders[3].update(customer=None, email=None)
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        run_ = segments_from_store(cfg, ledger, settings, full=True)
        try:
            assert ("pulled from retailcrm: 1 value cleaned, the records kept; 1 sale with no customer, e-mail or "
                    "phone (walk-in), not segmented") in run_.warnings, run_.warnings
        finally:
            run_.close()
        counts = ledger.recent_runs(1)[0]["counts"]
    assert (counts["cleaned_values"], counts["anonymous_orders"]) == (1, 1)


def test_retailcrm_orders_of_nobody_are_counted_and_guests_keyed_by_email_else_phone():
    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = test_retailcrm.FakeRetailCrm(mock)
        t0 = test_retailcrm.T0
        fake.put_contact(10, "ann@example.com", at=t0)
        for oid in (1, 2, 3, 4):
            fake.put_order(oid, 10, "100", at=t0)
        for oid in (2, 3, 4):
            del fake.orders[oid]["customer"]
            fake.orders[oid]["email"] = None
        fake.orders[3]["phone"] = "+77011234567"
        fake.orders[4]["email"] = "guest@example.com"
        result = test_retailcrm.make_source().pull(con)
        keys = con.execute("SELECT order_id, customer_id FROM staged_orders ORDER BY 1").fetchall()
    assert (result.orders, result.bad_row_count, result.anonymous_orders) == (3, 0, 1)
    assert keys == [("1", "10"), ("3", "+77011234567"), ("4", "guest@example.com")]


def test_a_walk_in_sale_webhook_is_accepted_and_stores_nothing():
    from connectors.retailcrm import parse_webhook as retailcrm_webhook
    from connectors.shopify import parse_webhook as shopify_webhook
    from .test_shopify import signed
    body = json.dumps({"id": 9, "financial_status": "paid", "total_price": "35.00", "customer": None, "email": None,
                       "phone": None, "created_at": "2026-01-10T14:00:00Z", "source_name": "pos"}).encode()
    assert shopify_webhook(signed(body), body) == ([], [])
    order = {"id": 7, "status": "complete", "createdAt": "2026-01-10 12:00:00", "totalSumm": 100, "currency": "KZT"}
    assert retailcrm_webhook({}, json.dumps({"order": order}).encode()) == ([], [])


# ------------------------------------------------------------------------------------ a JSON shape not expected


def _fuzz_cases():
    """The shapes a read-only hunt found escaping the mappers as tracebacks (exit 70 on every later pull)."""
    from connectors import amocrm, retailcrm_mapping as rm, shopify
    from connectors.amocrm import AmoCrmConfig
    from connectors.retailcrm import RetailCrmConfig
    order = {"id": 1, "number": "1A", "createdAt": "2026-01-10 12:00:00", "status": "complete", "site": "s",
             "customer": {"type": "customer", "id": 10}, "email": "a@x.com", "totalSumm": 100.0, "currency": "RUB",
             "items": [{"id": 10, "offer": {"id": 5, "article": "T-1"}, "quantity": 2, "initialPrice": 50.0}]}
    cust = {"id": 10, "email": "a@x.com", "tags": [{"name": "vip"}],
            "customerSubscriptions": [{"subscription": {"channel": "email"}, "subscribed": True}]}
    amo = {"id": 7, "name": "A", "_embedded": {"tags": [{"name": "vip"}]}}
    sho = {"id": 11, "email": "a@x.com", "email_marketing_consent": {"state": "subscribed"}}
    r_order, r_cust = (lambda r: rm.map_order(r, RetailCrmConfig(), dropped=[])), (lambda r: rm.map_customer(r, RetailCrmConfig()))
    return [
        (r_order, order, ("items",), "x", "items"), (r_order, order, ("items",), 7, "items"),
        (r_order, order, ("items", 0), "x", "items"), (r_order, order, ("items", 0, "offer"), "x", "items.offer"),
        (r_cust, cust, ("tags", 0, "name"), 7, None),  # a number is a name: kept as "7"
        (r_cust, cust, ("customerSubscriptions",), "x", "customerSubscriptions"),
        (r_cust, cust, ("customerSubscriptions",), 7, "customerSubscriptions"),
        (r_cust, cust, ("customerSubscriptions", 0), "x", "customerSubscriptions"),
        (r_cust, cust, ("customerSubscriptions", 0, "subscription"), "x", "customerSubscriptions.subscription"),
        (amocrm.map_contact, amo, ("_embedded", "tags", 0, "name"), 7, None),
        (shopify.map_customer, sho, ("email_marketing_consent", "state"), ["x"], "email_marketing_consent.state"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_a_field_of_another_shape_is_a_field_error_naming_its_path(case):
    import copy

    from connectors.http import FieldError
    mapper, base, path, value, field = _fuzz_cases()[case]
    raw = copy.deepcopy(base)
    target = raw
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    if field is None:
        assert "7" in mapper(raw).attributes["tags"]
        return
    with pytest.raises(FieldError) as err:
        mapper(raw)
    assert err.value.field == field


def test_an_order_item_of_another_shape_is_a_bad_row_and_the_pull_goes_on(rsps, tmp_path, monkeypatch):  # noqa: F811
    """``offer`` a string (or ``items`` an object, as PHP encodes a sparse array): "internal error: 'str' object has
    no attribute 'get'", exit 70, on this pull and every later one."""
    from . import test_cli_pull
    shop = test_cli_pull.shop.__wrapped__(tmp_path, monkeypatch)
    fake = test_cli_pull.seeded(rsps)
    fake.orders[2]["items"][0]["offer"] = "T-2"
    fake.put_order(3, 10, "50", at=test_retailcrm.T0)
    fake.orders[3]["items"] = {"5": fake.orders[3]["items"][0]}
    done = run("pull", "--config", str(shop), "--format", "json")
    doc = json.loads(done.output)
    assert done.exit_code == 0 and (doc["counts"]["orders"], doc["counts"]["bad_records"]) == (1, 2), done.output
    assert test_cli_pull.stored(shop)[0][:2] == ("1", "10")


def test_a_webhook_of_another_shape_names_the_record_and_field():
    from connectors.errors import RecordError
    from connectors.retailcrm import parse_webhook
    order = {"id": 7, "status": "complete", "createdAt": "2026-01-10 12:00:00", "totalSumm": 100, "customer": {"id": 3},
             "items": [{"offer": "T-2", "quantity": 1}]}
    with pytest.raises(RecordError, match=r"row 7: items.offer: must be an object"):
        parse_webhook({}, json.dumps({"order": order}).encode())


def test_any_other_slip_of_a_mapper_is_a_bad_row_not_a_traceback(caplog):
    """The net under the mappers' own checks (connectors.shapes, in map_page): a slip nobody foresaw names the
    record, worded neutrally; the first one's traceback is logged once per pull, at DEBUG (a bug report's)."""
    import logging

    from connectors.incremental import Stager, map_page

    def careless(raw):
        return raw["deep"]["name"].upper()  # a KeyError, a TypeError, an AttributeError, by the row's shape

    caplog.set_level(logging.DEBUG, logger="connectors.shapes")
    with open_store(None) as con:
        stager = Stager(con, "x")
        assert map_page(stager, "x:orders", [{"id": 1}, {"id": 2, "deep": "s"}, {"id": 3, "deep": {"name": 5}}],
                        careless) == ([], [])
    assert [(b.row, b.field) for b in stager.bad_rows] == [("1", "(shape)"), ("2", "(shape)"), ("3", "(shape)")]
    assert str(stager.bad_rows[0]).endswith("(shape): a field is not of the shape rfmsync reads (KeyError: 'deep')"), \
        str(stager.bad_rows[0])
    traced = [r for r in caplog.records if r.name == "connectors.shapes"]
    # (the secrets filter may have masked the traceback into exc_text: connectors/secrets.py)
    assert len(traced) == 1 and traced[0].levelno == logging.DEBUG
    assert "KeyError: 'deep'" in (traced[0].exc_text or logging.Formatter().formatException(traced[0].exc_info))


def test_a_slip_of_rfmsync_s_own_code_after_the_mapper_is_not_taken_for_a_record_s_shape():
    """map_page's net covers the mapper's call only: what the source then does with the record (a contact's
    normalisation, its version's time) is rfmsync's code, and a slip there is a bug, not a bad row blaming the CRM."""
    from connectors.incremental import Stager, map_page
    from connectors.records import Contact

    def buggy(contact, raw):
        return raw["no such key"]

    with open_store(None) as con, pytest.raises(KeyError):
        map_page(Stager(con, "x"), "x:contacts", [{"id": 1}], lambda raw: Contact(customer_id="1"), keep=buggy)


# ------------------------------------------------------------------------------------ RetailCRM: whose order


def test_retailcrm_b2b_orders_are_their_contact_persons_not_the_private_customer_of_the_same_number():
    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = test_retailcrm.FakeRetailCrm(mock)
        t0 = test_retailcrm.T0
        fake.put_contact(10, "anna@example.com", at=t0)  # private customer 10: Anna
        fake.put_contact(77, "boris@acme.example", at=t0)  # Boris, contact person of ACME (corporate customer 10)
        for oid in (1, 2, 3):
            fake.put_order(oid, 10, "100", at=t0)
        fake.orders[2].update(customer={"type": "customer_corporate", "id": 10}, contact={"type": "customer", "id": 77},
                              orderType="eshop-legal")
        fake.orders[3].update(customer={"type": "customer_corporate", "id": 10}, email=None)  # no contact person
        test_retailcrm.make_source().pull(con)
        keys = con.execute("SELECT order_id, customer_id FROM staged_orders ORDER BY 1").fetchall()
    assert keys == [("1", "10"), ("2", "77"), ("3", "corporate-10")]


def test_retailcrm_guest_orders_are_keyed_by_the_lower_cased_email():
    with test_retailcrm.responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = test_retailcrm.FakeRetailCrm(mock)
        for oid, mail in ((1, "Anna@Example.com"), (2, "anna@example.com"), (3, "ＡＮＮＡ@example.com")):
            fake.put_order(oid, 0, "100", at=test_retailcrm.T0)
            del fake.orders[oid]["customer"]
            fake.orders[oid]["email"] = mail
        test_retailcrm.make_source().pull(con)
        keys = con.execute("SELECT DISTINCT customer_id FROM staged_orders").fetchall()
    assert keys == [("anna@example.com",)]
