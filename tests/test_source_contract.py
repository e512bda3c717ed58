"""The contract every API source in :data:`connectors.registry.SOURCES` must pass.

Each case pairs a source with its vendor-shaped fake (from the vendor's test module). Fakes share
one small interface: ``put_contact(id, email, at=)``, ``put_order(id, customer, amount, at=, bad=)``,
``failures`` (answered first: ``(status, headers)``, or an exception the transport raises, e.g.
``requests.exceptions.ConnectionError``), ``bad_key``, ``auth_env`` and ``since_ok(old_cursor, lookback)``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Callable

import duckdb
import pytest
import requests
import responses
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st

from connectors.errors import AuthError, ConnectorError, TransientError
from connectors.records import Order, OrderStatus
from connectors.registry import SOURCES
from connectors.retry import RetryPolicy

from connectors import amocrm, bitrix24, retailcrm, retailcrm_mapping, shopify
from connectors.incremental import Stager, map_page

from . import test_amocrm, test_bitrix24, test_retailcrm, test_shopify

from tests.profiles import examples

T0 = datetime(2026, 1, 10, 9, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


@dataclass
class Case:
    fake: Callable[[responses.RequestsMock], Any]
    source: Callable[..., Any]  # (sleep=, clock=) -> Source
    lookback: timedelta
    secret: str
    #: vendors whose pulls cannot see a deletion: the delete webhook the vendor sends, parsed (order id, time)
    deletion_webhook: Callable[[int, datetime], list[Order]] | None = None


def _bitrix24_deleted(oid: int, at: datetime) -> list[Order]:
    body = test_bitrix24.event(name="ONCRMDEALDELETE", ts=at).replace(b"1185", str(oid).encode())
    return test_bitrix24.parse_webhook({}, body)[0]


def _shopify_deleted(oid: int, at: datetime) -> list[Order]:
    headers = {"X-Shopify-Topic": "orders/delete", "X-Shopify-Triggered-At": at.isoformat()}
    return test_shopify.parse_webhook(headers, json.dumps({"id": oid}).encode())[0]


CASES: dict[str, Case] = {
    "bitrix24": Case(test_bitrix24.FakeBitrix24, test_bitrix24.make_source, timedelta(minutes=10),
                     test_bitrix24.CODE, _bitrix24_deleted),
    "amocrm": Case(test_amocrm.FakeAmo, test_amocrm.make_source, timedelta(minutes=10), test_amocrm.TOKEN),
    "retailcrm": Case(test_retailcrm.FakeRetailCrm, test_retailcrm.make_source, timedelta(minutes=10),
                      test_retailcrm.KEY),
    "shopify": Case(test_shopify.FakeShopify, test_shopify.make_source, timedelta(minutes=5), test_shopify.TOKEN,
                    _shopify_deleted),
}
API_SOURCES = sorted(k for k in SOURCES if k != "file")


@pytest.fixture(params=API_SOURCES)
def case(request):
    assert request.param in CASES, f"add a contract case for source {request.param!r}"
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        c = CASES[request.param]
        yield request.param, c, c.fake(rsps), rsps


def seed(fake, orders: int = 25, contacts: int = 3, at: datetime = T0, stagger: bool = False) -> None:
    """Contacts and orders; with ``stagger`` order ``o`` was last updated ``o`` hours before ``at``."""
    for c in range(1, contacts + 1):
        fake.put_contact(c, f"c{c}@example.com", at=at - timedelta(hours=10 * stagger))
    for o in range(1, orders + 1):
        fake.put_order(o, 1 + o % contacts, f"{o}.50", at=at - timedelta(hours=o * stagger))


def ids(con, table="staged_orders", col="order_id") -> list[str]:
    return [r[0] for r in con.execute(f"SELECT {col} FROM {table} ORDER BY {col}").fetchall()]


def test_every_registered_api_source_has_a_case():
    assert set(API_SOURCES) <= set(CASES)


def test_first_pull_backfills_canonical_records_across_pages(case):
    name, c, fake, rsps = case
    seed(fake)
    con = duckdb.connect()
    calls: list[int] = []
    result = c.source(clock=lambda: T0 + DAY).pull(con, None, progress=calls.append)
    assert (result.orders, result.contacts, result.bad_row_count) == (25, 3, 0)
    assert len(ids(con)) == len(set(ids(con))) == 25
    assert ids(con, "staged_contacts", "customer_id") == ["1", "2", "3"]
    rows = con.execute("SELECT customer_id, ordered_at, amount, status FROM staged_orders").fetchall()
    # the vendor's instant; Bitrix24's CLOSEDATE is a date: its day at noon in the zone (UTC here)
    at = datetime(2026, 1, 10, 12, 0, tzinfo=timezone.utc) if name == "bitrix24" else T0
    assert all(r[1] == at and r[3] == OrderStatus.COMPLETED for r in rows)
    assert {r[0] for r in rows} <= {"1", "2", "3"}
    assert sum(calls) >= 28  # progress got every record
    # (RetailCRM and Shopify mark their orders keyed by this rfmsync's rules: connectors/rekey.py)
    assert set(json.loads(result.cursor)) == {"orders", "contacts"} | ({"keys"} if name in ("retailcrm", "shopify")
                                                                       else set())
    assert len(rsps.calls) < 40  # pagination ended


def test_cursor_advances_and_the_next_pull_reads_only_changes(case):
    name, c, fake, rsps = case
    seed(fake, orders=5, stagger=True)
    con = duckdb.connect()
    first = c.source(clock=lambda: T0 + DAY).pull(con)
    fake.put_order(100, 1, "7.00", at=T0 + DAY + timedelta(hours=1))
    fake.put_contact(9, "new@example.com", at=T0 + DAY + timedelta(hours=1))
    second = c.source(clock=lambda: T0 + 2 * DAY).pull(con, first.cursor)
    assert fake.since_ok(json.loads(first.cursor), c.lookback)
    # only the new records, plus at most the newest old ones inside the lookback window
    assert "100" in ids(con) and set(ids(con)) <= {"100", "1"}
    assert "9" in ids(con, "staged_contacts", "customer_id")
    assert set(ids(con, "staged_contacts", "customer_id")) <= {"9", "1", "2", "3"}
    assert second.cursor != first.cursor
    third = c.source(clock=lambda: T0 + 3 * DAY).pull(con, second.cursor)
    assert fake.since_ok(json.loads(second.cursor), c.lookback)
    assert third.orders <= 1  # at most the lookback window again


def test_repulling_the_same_data_adds_nothing_new(case):
    name, c, fake, rsps = case
    seed(fake, orders=6)
    con = duckdb.connect()
    first = c.source(clock=lambda: T0 + DAY).pull(con)
    con.execute("CREATE TABLE store_orders AS SELECT * FROM staged_orders")
    con.execute("CREATE TABLE store_contacts AS SELECT * FROM staged_contacts")
    for cursor in (first.cursor, None):
        c.source(clock=lambda: T0 + DAY).pull(con, cursor)
        assert con.execute("SELECT count(*) FROM (SELECT * FROM staged_orders EXCEPT "
                           "SELECT * FROM store_orders)").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM (SELECT * FROM staged_contacts EXCEPT "
                           "SELECT * FROM store_contacts)").fetchone() == (0,)


def merge(con, store: dict[str, dict]) -> None:
    """What the sync does with a pull: the store replaces orders and contacts by id."""
    for oid, amount, status in con.execute("SELECT order_id, amount, status FROM staged_orders").fetchall():
        store["orders"][oid] = (amount, status)
    for cid, email in con.execute("SELECT customer_id, email FROM staged_contacts").fetchall():
        store["contacts"][cid] = email


def test_live_edits_during_the_backfill_are_neither_skipped_nor_duplicated(case):
    """Between two backfill pages a manager edits an order of the first page (it moves to the end in
    ``updated_at`` order), deletes another and creates one: after the backfill and the next pull the store
    holds exactly what the vendor holds."""
    name, c, fake, rsps = case
    seed(fake, orders=60)
    now = T0 + DAY + timedelta(minutes=1)
    tombstones: list[Order] = []

    def live_edits() -> None:
        fake.put_order(1, 2, "99", at=now)
        fake.delete_order(2, at=now)
        fake.put_order(1000, 1, "7", at=now)
        if c.deletion_webhook is not None:  # the vendor's delete webhook, the only way these vendors tell
            tombstones.extend(c.deletion_webhook(2, now))

    fake.between_pages = live_edits
    con, store = duckdb.connect(), {"orders": {}, "contacts": {}}
    first = c.source(clock=lambda: T0 + DAY).pull(con)
    assert fake.between_pages is None, "the edits did not happen mid-backfill"
    merge(con, store)
    store["orders"].update((t.order_id, (t.amount, t.status)) for t in tombstones)
    c.source(clock=lambda: T0 + DAY + timedelta(hours=1)).pull(con, first.cursor)
    merge(con, store)
    completed = {oid: amount for oid, (amount, status) in store["orders"].items() if status == OrderStatus.COMPLETED}
    assert sorted(completed, key=int) == sorted((str(i) for i in fake.order_ids()), key=int)
    assert completed["1"] == Decimal("99") and completed["1000"] == Decimal("7")
    assert sorted(store["contacts"]) == ["1", "2", "3"]


def test_many_deletions_during_the_backfill_skip_no_other_record(case):
    """Between two backfill pages 30 orders are deleted, those already read first (more than any fixed
    overlap could absorb): every order still in the vendor is staged, once. (Bitrix24 and Shopify learn of
    deletions by webhook, so their deleted orders may stay staged as they were read.)"""
    name, c, fake, rsps = case
    seed(fake, orders=90)
    now = T0 + DAY + timedelta(minutes=1)
    fake.between_pages = lambda: [fake.delete_order(o, at=now) for o in range(1, 31)]
    con = duckdb.connect()
    c.source(clock=lambda: T0 + DAY).pull(con)
    assert fake.between_pages is None, "the deletions did not happen mid-backfill"
    rows = con.execute("SELECT order_id, status FROM staged_orders").fetchall()
    assert len(rows) == len({oid for oid, _ in rows})
    completed = {int(oid) for oid, status in rows if status == OrderStatus.COMPLETED}
    assert fake.order_ids() <= completed <= fake.order_ids() | set(range(1, 31))
    if c.deletion_webhook is None:  # the pull sees deletions
        assert completed == fake.order_ids()


def test_rate_limits_and_server_errors_are_retried_without_sleeping(case):
    name, c, fake, rsps = case
    seed(fake, orders=2)
    fake.failures = [(429, {"Retry-After": "3"}), (503, {}), (500, {})]
    waits: list[float] = []
    result = c.source(sleep=waits.append, clock=lambda: T0 + DAY).pull(duckdb.connect())
    assert result.orders == 2 and not fake.failures
    assert 3.0 in waits


#: the shortest wait of the default policy's back-off before attempts 2, 3, 4, 5 (0.5 s doubled, full jitter down to half)
BACKOFF_FLOORS = [0.25, 0.5, 1.0, 2.0]


def retry_waits(caplog) -> list[float]:
    """The seconds each retry of the shared layer waited (its log line's argument; the sleep is the throttle's too)."""
    return [r.args[3] for r in caplog.records if r.name == "connectors.retry" and r.msg.startswith("retrying")]


def http_date(at: datetime) -> str:
    return format_datetime(at.astimezone(timezone.utc), usegmt=True)


def test_a_retry_now_never_makes_a_wait_shorter_than_the_back_off(case, caplog):
    """``Retry-After: 0``, a negative one, a date already past, an ``X-RateLimit-Reset`` already past (a proxy's
    HTML 504 among them): each wait is still the policy's own back-off (six calls at once got the IP blocked)."""
    name, c, fake, rsps = case
    seed(fake, orders=2)
    now = datetime.now(timezone.utc)
    fake.failures = [(429, {"Retry-After": "0"}), (429, {"Retry-After": "-5"}),
                     (504, {"Retry-After": http_date(now - DAY), "Content-Type": "text/html"}, "<html>Gateway</html>"),
                     (429, {"X-RateLimit-Reset": str(int(now.timestamp()) - 60)})]
    caplog.set_level("DEBUG")
    result = c.source(sleep=lambda s: None, clock=lambda: T0 + DAY).pull(duckdb.connect())
    assert result.orders == 2 and not fake.failures
    waits = retry_waits(caplog)
    assert len(waits) == 4 and all(w >= floor for w, floor in zip(waits, BACKOFF_FLOORS)), waits
    assert c.secret not in caplog.text


def test_a_retry_after_date_is_read_by_the_answer_s_own_clock(case, caplog):
    """A ``Retry-After`` date means the server's clock: an answer dated an hour before this host's clock asking for
    20 s waits 20 s (read by the host's clock, it was an hour past: "retry now"); a Date of year 9999 or none at
    all falls back to the host's clock, a huge ask is capped."""
    name, c, fake, rsps = case
    seed(fake, orders=2)
    server = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    fake.failures = [(429, {"Date": http_date(server), "Retry-After": http_date(server + timedelta(seconds=20))}),
                     (429, {"Date": "Fri, 31 Dec 9999 23:59:59 GMT", "Retry-After": "7"}),
                     (503, {"Retry-After": http_date(datetime.now(timezone.utc) + 10 * DAY)})]
    caplog.set_level("INFO", logger="connectors.retry")
    result = c.source(sleep=lambda s: None, clock=lambda: T0 + DAY).pull(duckdb.connect())
    assert result.orders == 2 and not fake.failures
    assert retry_waits(caplog) == [20.0, 7.0, 30.0]  # the last: ten days asked, max_wait (30 s) waited


def test_an_html_200_carrying_retry_after_is_not_a_rate_limit(case, caplog):
    """A proxy's or captive portal's HTML page with HTTP 200 and ``Retry-After: 0`` is not the vendor's page and not a
    rate limit: one call, one error naming the source, no retry (six calls at once to a page that never changes)."""
    name, c, fake, rsps = case
    rsps.assert_all_requests_are_fired = False
    seed(fake, orders=2)
    fake.failures = [(200, {"Content-Type": "text/html", "Retry-After": "0"}, "<html>Please wait</html>")] * 6
    caplog.set_level("INFO", logger="connectors.retry")
    with pytest.raises(ConnectorError) as err:
        c.source(sleep=lambda s: None, clock=lambda: T0 + DAY).pull(duckdb.connect())
    assert not isinstance(err.value, TransientError) and len(fake.failures) == 5 and retry_waits(caplog) == []
    assert "not JSON" in str(err.value) and c.secret not in str(err.value)


TRANSPORT_ERRORS = {  # what requests raises when the vendor cannot be reached, or stops answering
    "connection-error": (lambda: requests.exceptions.ConnectionError("[Errno 111] Connection refused"),
                         "cannot connect"),
    "read-timeout": (lambda: requests.exceptions.ReadTimeout("Read timed out. (read timeout=30.0)"), "timed out"),
}


def retry_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "connectors.retry"]


@pytest.mark.parametrize("kind", sorted(TRANSPORT_ERRORS))
def test_connection_errors_and_timeouts_are_retried_through_the_shared_layer(case, kind, caplog):
    name, c, fake, rsps = case
    make_error, says = TRANSPORT_ERRORS[kind]
    seed(fake, orders=2)
    fake.failures = [make_error(), make_error()]
    caplog.set_level("INFO", logger="connectors.retry")
    result = c.source(sleep=lambda s: None, clock=lambda: T0 + DAY).pull(duckdb.connect())
    assert result.orders == 2 and result.contacts == 3 and not fake.failures
    lines = retry_lines(caplog)
    assert len(lines) == 2 and all(says in line for line in lines)  # RetryPolicy retried each one
    assert c.secret not in caplog.text


@pytest.mark.parametrize("kind", sorted(TRANSPORT_ERRORS))
def test_a_persistent_connection_error_ends_in_one_clear_error_naming_the_source(case, kind, caplog):
    name, c, fake, rsps = case
    rsps.assert_all_requests_are_fired = False
    make_error, says = TRANSPORT_ERRORS[kind]
    seed(fake, orders=2)
    fake.failures = [make_error() for _ in range(20)]
    caplog.set_level("INFO", logger="connectors.retry")
    attempts = RetryPolicy().attempts
    with pytest.raises(TransientError) as err:
        c.source(sleep=lambda s: None, clock=lambda: T0 + DAY).pull(duckdb.connect())
    message = str(err.value)
    assert message.lower().startswith(name) and says in message
    assert message.endswith(f"gave up after {attempts} attempts") and "\n" not in message
    assert len(fake.failures) == 20 - attempts and len(retry_lines(caplog)) == attempts - 1
    # no chained traceback to print, and no secret anywhere
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert c.secret not in message and c.secret not in repr(err.value.__dict__) and c.secret not in caplog.text


def test_bad_credentials_raise_one_auth_error_naming_the_variable(case):
    name, c, fake, rsps = case
    rsps.assert_all_requests_are_fired = False
    fake.bad_key = True
    with pytest.raises(AuthError) as err:
        c.source().pull(duckdb.connect())
    assert fake.auth_env in str(err.value)
    assert c.secret not in str(err.value) and c.secret not in repr(err.value.__dict__)
    source = c.source()
    assert c.secret not in repr(source.http) and c.secret not in repr(vars(source))
    assert len(rsps.calls) == 1  # not retried


#: what each CRM's credentials error says to do (amoCRM: a long-lived token's term ends; rfmsync renews nothing)
AUTH_ADVICE = {"amocrm": "make a new long-lived token in the account's private integration and set AMOCRM_TOKEN",
               "bitrix24": "once past its expiry date (when it was given one), deleted or its user deactivated, "
                           "and needs the crm scope: make a new one and set BITRIX24_WEBHOOK_URL",
               "retailcrm": "check it in RetailCRM's API keys settings",
               "shopify": "set the app's current Admin API access token"}


def test_credentials_refused_mid_backfill_keep_nothing_and_the_next_pull_reads_everything_once(case, caplog):
    """The token expires (or is revoked) after the first page of orders, while a manager edits an order read on
    it: the pull stops with the credentials error naming the CRM's variable, what to do and that nothing was
    kept (the whole backfill is read again), never the secret; with the credential renewed, the next pull reads
    every record once, the edited one in its new version."""
    name, c, fake, rsps = case
    rsps.assert_all_requests_are_fired = False
    seed(fake, orders=60)
    now = T0 + DAY + timedelta(minutes=1)

    def expire() -> None:
        fake.put_order(1, 2, "99", at=now)
        fake.bad_key = True

    fake.between_pages = expire
    caplog.set_level("DEBUG")
    con = duckdb.connect()
    with pytest.raises(AuthError) as err:
        c.source(clock=lambda: T0 + DAY).pull(con)
    message = str(err.value)
    assert fake.auth_env in message and message.lower().startswith(name)
    assert AUTH_ADVICE[name] in message
    assert message.endswith("nothing this pull read was kept: the next pull reads again from the saved cursor, "
                            "everything (the whole backfill) when none is saved"), message
    assert c.secret not in message and c.secret not in caplog.text and c.secret not in repr(err.value.__dict__)
    fake.bad_key = False
    con, store = duckdb.connect(), {"orders": {}, "contacts": {}}
    c.source(clock=lambda: T0 + DAY + timedelta(hours=1)).pull(con)
    rows = con.execute("SELECT order_id FROM staged_orders").fetchall()
    assert len(rows) == len(set(rows)) == 60
    merge(con, store)
    assert store["orders"]["1"] == (Decimal("99"), OrderStatus.COMPLETED)


def test_credentials_refused_on_an_incremental_pull_say_it_reads_again_from_the_saved_cursor(case):
    name, c, fake, rsps = case
    rsps.assert_all_requests_are_fired = False
    seed(fake, orders=2)
    first = c.source(clock=lambda: T0 + DAY).pull(duckdb.connect())
    fake.bad_key = True
    with pytest.raises(AuthError) as err:
        c.source(clock=lambda: T0 + 2 * DAY).pull(duckdb.connect(), first.cursor)
    assert str(err.value).endswith("nothing this pull read was kept: the next pull reads again from the last "
                                   "saved cursor"), str(err.value)


def test_a_bad_record_is_reported_with_its_id_and_the_rest_staged(case):
    name, c, fake, rsps = case
    seed(fake, orders=3)
    fake.put_order(99, 1, "5", at=T0, bad=True)
    con = duckdb.connect()
    result = c.source(clock=lambda: T0 + DAY).pull(con)
    assert ids(con) == ["1", "2", "3"]
    assert result.bad_row_count == 1
    (bad,) = result.bad_rows
    assert bad.row == "99" and bad.source == f"{name}:orders" and bad.field


#: what a vendor (or a proxy, a captive portal, a half-deployed release) may answer with HTTP 200 for a list page
NOT_A_PAGE = {
    "html": "<!DOCTYPE html><html><body><h1>Maintenance</h1></body></html>",
    "empty": "",
    "truncated-json": '{"result": [{"ID": "1", "OPPORTUNITY": "10',
    "null": "null",
    "a-list": '[{"id": 1}]',
    "a-string": '"ok"',
    "a-number": "42",
}


@pytest.mark.parametrize("body", sorted(NOT_A_PAGE))
def test_a_200_that_is_not_a_page_stops_the_pull_with_one_error_naming_the_source(case, body):
    """Believe nothing you did not validate: a page of the wrong shape is the vendor's error, never a crash
    (AttributeError, TypeError) and never the silent end of a list."""
    name, c, fake, rsps = case
    rsps.assert_all_requests_are_fired = False
    seed(fake, orders=2)
    fake.failures = [(200, {"Content-Type": "text/html" if body == "html" else "application/json"},
                      NOT_A_PAGE[body])]
    with pytest.raises(ConnectorError) as err:
        c.source(sleep=lambda s: None, clock=lambda: T0 + DAY).pull(duckdb.connect())
    message = str(err.value)
    assert message.lower().startswith(name) and "\n" not in message and c.secret not in message


#: each API source's `check` call (the fakes serve pulls only)
CHECK_CALLS = {"amocrm": ("GET", r".*/api/v4/account"), "bitrix24": ("POST", r".*profile\.json"),
               "retailcrm": ("GET", r".*/api/credentials"), "shopify": ("GET", r".*/shop\.json")}


@pytest.mark.parametrize("body", sorted(NOT_A_PAGE))
def test_a_check_answered_with_something_else_than_its_object_is_one_error_naming_the_source(case, body):
    """`rfmsync check`'s call answered 200 with HTML, nothing, or JSON of another shape: one error naming the
    source, not a traceback (AttributeError on a list) nor "? (?)" as if the account were fine."""
    import re

    name, c, fake, rsps = case
    rsps.assert_all_requests_are_fired = False
    method, url = CHECK_CALLS[name]
    rsps.add(method, re.compile(url), body=NOT_A_PAGE[body], status=200,
             content_type="text/html" if body == "html" else "application/json")
    with pytest.raises(ConnectorError) as err:
        c.source(sleep=lambda s: None, clock=lambda: T0 + DAY).check()
    message = str(err.value)
    assert message.lower().startswith(name) and "\n" not in message and c.secret not in message
    assert "cannot connect" not in message  # the answer was read


def test_a_garbled_cursor_is_a_config_error(case):
    name, c, fake, rsps = case
    rsps.assert_all_requests_are_fired = False
    from connectors.errors import ConfigError
    with pytest.raises(ConfigError, match="cursor"):
        c.source().pull(duckdb.connect(), "not json")


# every vendor record mapper (pulls and webhooks share them): a source's name → {what: mapper}
MAPPERS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "shopify": {"order": lambda r: shopify.map_order(r, shopify.ShopifyConfig(), []), "customer": shopify.map_customer},
    "amocrm": {"lead": lambda r: amocrm.map_lead(r, amocrm.AmoCrmConfig()), "contact": amocrm.map_contact},
    "bitrix24": {"deal": lambda r: bitrix24.map_deal(r, bitrix24.Bitrix24Config()), "contact": bitrix24.map_contact,
                 "product rows": lambda r: bitrix24.with_product_rows(
                     Order("1", "c", T0, Decimal(1)), r.get("rows") if isinstance(r.get("rows"), list) else [r])},
    "retailcrm": {"order": lambda r: retailcrm_mapping.map_order(r, retailcrm.RetailCrmConfig(), dropped=[]),
                  "customer": lambda r: retailcrm_mapping.map_customer(r, retailcrm.RetailCrmConfig())},
}
#: the vendors' field names (documented shapes, sources.md and the modules), nested at random below
VENDOR_KEYS = sorted({
    "id", "financial_status", "cancelled_at", "test", "customer", "email", "phone", "current_total_price",
    "total_price", "current_total_discounts", "total_discounts", "processed_at", "created_at", "currency",
    "line_items", "sku", "title", "name", "vendor", "quantity", "price", "updated_at", "email_marketing_consent",
    "state", "accepts_marketing", "default_address", "city", "country_code", "tags", "first_name", "last_name",
    "status_id", "pipeline_id", "closed_at", "is_deleted", "_embedded", "contacts", "is_main",
    "custom_fields_values", "custom_fields", "field_code", "code", "values", "value", "date_create", "ID",
    "STAGE_SEMANTIC_ID", "STAGE_ID", "CATEGORY_ID", "CONTACT_ID", "CLOSEDATE", "DATE_CREATE", "OPPORTUNITY",
    "CURRENCY_ID", "EMAIL", "PHONE", "VALUE", "NAME", "LAST_NAME", "ADDRESS_CITY", "SOURCE_ID", "TYPE_ID",
    "PRODUCT_ID", "PRODUCT_NAME", "QUANTITY", "PRICE", "DISCOUNT_SUM", "rows", "status", "site", "createdAt",
    "totalSumm", "discountManualAmount", "items", "offer", "article", "productName", "initialPrice",
    "discountTotal", "externalId", "firstName", "lastName", "phones", "number", "subscribed", "address",
    "source", "emailMarketingUnsubscribedAt", "customFields", "deleted", "combinedTo"})
_SCALARS = (st.none() | st.booleans() | st.integers(-10 ** 20, 10 ** 20) | st.floats() | st.text(max_size=8)
            | st.sampled_from(["", "1", "2026-01-01T00:00:00Z", "2026-01-01 10:00:00", "complete", "paid", "S",
                               "EMAIL", "PHONE", "a@example.com"]))
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.sampled_from(VENDOR_KEYS), inner, max_size=5), max_leaves=12)
VENDOR_ROWS = st.builds(lambda fields, rid: {**fields, "id": rid, "ID": str(rid)},
                        st.dictionaries(st.sampled_from(VENDOR_KEYS), _JSON, max_size=14), st.integers(1, 10 ** 6))


#: fields sent as another kind of value than the vendors' docs show
WRONG_SHAPES = {"customer": 5, "email_marketing_consent": "subscribed", "default_address": ["Tashkent"],
                "line_items": {"0": 1}, "phones": {"number": "1"}, "address": "Tashkent", "source": 3, "tags": 7,
                "EMAIL": True, "PHONE": 1, "_embedded": "contacts", "custom_fields_values": 3}


def test_every_api_source_has_its_record_mappers_fuzzed():
    assert set(API_SOURCES) <= set(MAPPERS)


@pytest.mark.parametrize("name, what", [(n, w) for n, ms in MAPPERS.items() for w in ms])
def test_a_vendor_record_of_any_shape_is_staged_or_a_bad_row_never_a_crash(name, what):
    """A field the vendor sent as a string, a list or a number where its docs show an object (or the other way
    round) is a bad row naming the record, and the page goes on: it stopped the whole pull with AttributeError."""
    mapper = MAPPERS[name][what]
    stager = Stager(duckdb.connect(), name)
    mapped: tuple[list, list] = ([], [])

    @hsettings(max_examples=examples(100), deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(VENDOR_ROWS)
    @example(dict(WRONG_SHAPES, id=1, ID="1"))  # found by this test at random before (AttributeError, TypeError)
    @example({"id": 2, "ID": "2", "financial_status": "paid", "total_price": "1", "created_at": "2026-01-01",
              "email": "a@example.com", "line_items": [5], "phones": [7], "tags": [True]})
    def check(row):
        for kept, new in zip(mapped, map_page(stager, f"{name}:{what}", [row], mapper)):
            kept.extend(new)

    check()
    stager.stage(*mapped)  # what was mapped is staged (every value fits its column)
    assert all(b.source == f"{name}:{what}" for b in stager.bad_rows)


# ---------------------------------------------------------------- the file source (when present)


@pytest.mark.skipif("file" not in SOURCES, reason="connectors.files is not in this checkout")
def test_file_source_stages_unique_records_reports_bad_rows_and_repulls_identically(tmp_path):
    (tmp_path / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount\n"
        "1,a,2026-01-10 10:00:00,10.50\n2,b,2026-01-11 11:00:00,20\n3,a,2026-01-12 12:00:00,oops\n",
        encoding="utf-8")
    model, factory = SOURCES["file"]
    source = factory(model.model_validate({"type": "file", "orders": "orders.csv", "columns": {
        "order_id": "order_id", "customer_id": "customer_id", "ordered_at": "ordered_at", "amount": "amount"}}), base_dir=tmp_path)
    con = duckdb.connect()
    result = source.pull(con)
    assert ids(con) == ["1", "2"] and result.orders == 2
    (bad,) = result.bad_rows
    assert (bad.field, bad.value) == ("amount", "oops") and bad.row is not None
    con.execute("CREATE TABLE store_orders AS SELECT * FROM staged_orders")
    source.pull(con, result.cursor)
    assert con.execute("SELECT count(*) FROM (SELECT * FROM staged_orders EXCEPT "
                       "SELECT * FROM store_orders)").fetchone() == (0,)


# ---------------------------------------------------------------- shared plumbing (connectors.http, incremental, registry)

from connectors.errors import ConfigError, FatalError  # noqa: E402
from connectors.http import Action, Throttle, action_for, redact  # noqa: E402
from connectors.incremental import PageGuard, bookmark, load_cursor  # noqa: E402
from connectors.registry import build_source, secrets_for  # noqa: E402
from connectors.webhooks import as_list, parse_php_form, tokens_equal  # noqa: E402


@pytest.mark.parametrize("status, action", [
    (200, Action.OK), (204, Action.OK), (400, Action.FATAL), (401, Action.AUTH), (403, Action.AUTH),
    (402, Action.CONFIG), (404, Action.CONFIG), (408, Action.RETRY), (422, Action.FATAL), (429, Action.RETRY),
    (500, Action.RETRY), (502, Action.RETRY), (503, Action.RETRY), (504, Action.RETRY), (599, Action.RETRY)])
def test_status_action_table(status, action):
    assert action_for(status) is action


def test_redaction_hides_known_secrets_and_secret_query_params():
    text = "GET https://x/rest/1/abcd1234/crm.deal.list?apiKey=zzz&page=2 token=qq"
    assert redact(text, ["abcd1234"]) == "GET https://x/rest/1/***/crm.deal.list?apiKey=***&page=2 token=***"


def test_page_guard_and_cursor_helpers():
    guard = PageGuard("x")
    guard.next("a")
    guard.next({"p": 2})
    with pytest.raises(FatalError, match="twice"):
        guard.next("a")
    with pytest.raises(ConfigError, match="cursor"):
        load_cursor('["orders"]', "x")
    assert load_cursor(None, "x") == {}
    start = T0 + DAY
    assert bookmark(T0 + 2 * DAY, start, None) == start  # never past the run start
    assert bookmark(T0 - DAY, start, T0) == T0  # never behind the previous bookmark
    assert bookmark(None, start, T0) == T0


def test_throttle_spaces_calls_and_honours_pauses():
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    bucket = Throttle(2.0, 2, sleep=sleep, clock=lambda: now[0])
    for _ in range(4):
        bucket.acquire()
    assert waits == [0.5, 0.5]  # burst of 2, then 2/s
    bucket.pause(3.0)
    bucket.acquire()
    assert waits[-1] == pytest.approx(3.0)


def test_php_form_parser_and_token_compare():
    form = parse_php_form(b"leads[add][0][id]=5&leads[add][1][id]=6&account[subdomain]=x")
    assert [x["id"] for x in as_list(form["leads"]["add"])] == ["5", "6"]
    assert form["account"] == {"subdomain": "x"}
    assert parse_php_form(b"") == {}
    assert tokens_equal("abc", "abc") and not tokens_equal("abc", "abd") and not tokens_equal(None, None)


def test_build_source_reads_settings_and_rejects_unknown_types(monkeypatch):
    class Settings:  # the lead's settings object, duck-typed
        shopify_shop = "from-settings"
        shopify_token = None
    monkeypatch.setenv("SHOPIFY_TOKEN", "env-token-1234")
    assert secrets_for("shopify", Settings()).shop == "from-settings"
    source = build_source({"type": "shopify", "page_size": 50}, settings=Settings())
    assert source.name == "shopify" and source.host == "from-settings.myshopify.com"
    with pytest.raises(ConfigError, match="type must be one of"):
        build_source({"type": "nope"})
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="extra"):
        build_source({"type": "amocrm", "colour": "red"})
