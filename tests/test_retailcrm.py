"""RetailCRM v5 source: a stateful fake shaped after the API docs, served through ``responses``."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import duckdb
import pytest
import responses
from pydantic import ValidationError

from connectors.errors import AuthError, ConfigError, FatalError, RecordError
from connectors.records import Consent, OrderStatus
from connectors.retailcrm import RetailCrmConfig, RetailCrmSecrets, RetailCrmSource, parse_webhook, verify_webhook
from connectors.retailcrm_mapping import map_customer

BASE = "https://demo.retailcrm.ru"
KEY = "rcrm-secret-key-123"
MSK = ZoneInfo("Europe/Moscow")
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=timezone.utc)


def fmt(at: datetime) -> str:
    return at.astimezone(MSK).strftime("%Y-%m-%d %H:%M:%S")


class FakeRetailCrm:
    """Orders, customers and their history feeds; ``failures`` are answered first, in order."""

    auth_env = "RETAILCRM_API_KEY"

    def __init__(self, rsps: responses.RequestsMock, *, pull: bool = True, check: bool = False) -> None:
        self.orders: dict[int, dict] = {}
        self.customers: dict[int, dict] = {}
        self.history: dict[str, list[dict]] = {"orders": [], "customers": []}
        self.failures: list[tuple[int, dict] | Exception] = []  # an exception: raised as the transport's
        self.bad_key = False
        self.since_seen: list[str] = []
        self.fetched_ids: list[int] = []  # ids asked for with filter[ids][]
        self._next_history = 100
        self.between_pages = None  # called once, after the first page of the orders backfill is served
        self.list_queries: list[list[tuple[str, str]]] = []  # every list request's query, in order
        self.ignore_sites = False  # answer every store whatever filter[sites][] says
        self.before_request = None  # called with the path before each list or history request is answered
        self.descending = False  # the list's order: by id, ascending (default) or descending
        for obj in ("orders", "customers") if pull else ():
            rsps.add_callback("GET", re.compile(rf"{BASE}/api/v5/{obj}(\?.*)?$"), self._list(obj))
            rsps.add_callback("GET", re.compile(rf"{BASE}/api/v5/{obj}/history(\?.*)?$"), self._history(obj))
        if check:
            rsps.add_callback("GET", f"{BASE}/api/credentials", self._guard(lambda q: {
                "success": True, "credentials": ["/api/orders"], "siteAccess": "access_selective",
                "sitesAvailable": ["shop-main"]}))

    # -- data
    def _log(self, obj: str, rid: int, at: datetime, **extra) -> None:
        self._next_history += 1
        site = (self.orders if obj == "orders" else self.customers).get(rid, {}).get("site", "shop-main")
        self.history[obj].append({"id": self._next_history, "createdAt": fmt(at), "source": "api",
                                  "field": "status", obj[:-1]: {"id": rid, "site": site}, **extra})

    def _created(self, obj: str, rid: int) -> dict:
        """The history entry's ``created`` flag: the first entry of a new record."""
        return {} if any(e[obj[:-1]]["id"] == rid for e in self.history[obj]) else {"created": True}

    def put_contact(self, cid: int, email: str, *, at: datetime, **fields) -> None:
        self.customers[cid] = {"id": cid, "email": email, "firstName": "Ann", "lastName": f"C{cid}",
                               "phones": [{"number": "+77011234567"}], "createdAt": fmt(at), "site": "shop-main",
                               **fields}
        self._log("customers", cid, at, **self._created("customers", cid))

    def put_order(self, oid: int, cid: int, amount: str, *, at: datetime, bad: bool = False,
                  status: str = "complete", site: str = "shop-main") -> None:
        self.orders[oid] = {
            "id": oid, "number": f"{oid}A", "createdAt": fmt(at), "status": status, "site": site,
            "customer": {"type": "customer", "id": cid}, "email": f"c{cid}@example.com",
            "totalSumm": "not-a-number" if bad else float(amount), "currency": "RUB", "discountManualAmount": 0,
            "items": [{"id": oid * 10, "offer": {"id": 5, "name": "Tea", "article": "T-1"}, "productName": "Tea",
                       "quantity": 2, "initialPrice": float(amount) / 2, "discountTotal": 0}]}
        self._log("orders", oid, at, **self._created("orders", oid))

    def delete_order(self, oid: int, *, at: datetime) -> None:
        snapshot = self.orders.pop(oid)
        self._log("orders", oid, at, deleted=True)
        self.history["orders"][-1]["order"] = snapshot

    def delete_customer(self, cid: int, *, at: datetime, combined_to: int | None = None) -> None:
        """A deleted customer's history entry (``deleted: true``, the last snapshot); a merge also names
        the surviving customer in ``combinedTo``."""
        snapshot = self.customers.pop(cid)
        extra = {"deleted": True, "field": "id", "oldValue": cid, "newValue": None}
        if combined_to is not None:
            extra["combinedTo"] = {"id": combined_to, "externalId": f"ext-{combined_to}"}
        self._log("customers", cid, at, **extra)
        self.history["customers"][-1]["customer"] = snapshot

    def order_ids(self) -> set[int]:
        return set(self.orders)

    def since_ok(self, old_cursor: dict, lookback: timedelta) -> bool:
        # an id cursor re-reads the ordered history feed exactly after the saved id;
        # a time cursor (no history seen yet) re-reads from time − lookback
        def wanted(value: str) -> str:
            if value.isdigit():
                return f"sinceId={value}"
            return "startDate=" + fmt(datetime.fromisoformat(value) - lookback)
        return self.since_seen[-2:] == [wanted(old_cursor["contacts"]), wanted(old_cursor["orders"])]

    # -- HTTP
    def _guard(self, handler):
        def callback(request):
            if self.failures:
                if isinstance(self.failures[0], Exception):
                    return self.failures.pop(0)  # responses raises it, as requests would
                status, headers, *body = self.failures.pop(0)  # (status, headers[, body])
                default = json.dumps({"success": False, "errorMsg": "Service unavailable"})
                return status, headers, body[0] if body else default
            if request.headers.get("X-API-KEY") != KEY or self.bad_key:
                return 401, {}, json.dumps({"success": False, "errorMsg": "Wrong \"apiKey\" value."})
            query = parse_qsl(urlsplit(request.url).query)
            if self.before_request is not None:
                self.before_request(urlsplit(request.url).path)
            return 200, {"Content-Type": "application/json"}, json.dumps(handler(query))
        return callback

    def _list(self, obj: str):
        store = self.orders if obj == "orders" else self.customers

        def handler(query):
            q = dict(query)
            limit = int(q.get("limit", 20))
            assert limit in (20, 50, 100)
            self.list_queries.append(list(query))
            ids = [int(v) for k, v in query if k == "filter[ids][]"]
            sites = [v for k, v in query if k == "filter[sites][]"]
            self.fetched_ids += ids
            rows = [store[i] for i in ids if i in store] if ids else [
                store[k] for k in sorted(store, reverse=self.descending)]
            rows = [r for r in rows if not sites or self.ignore_sites or r.get("site") in sites]
            customers = [v for k, v in query if k == "filter[customerId]"]  # (orders: the customer's internal id)
            rows = [r for r in rows if not customers or str((r.get("customer") or {}).get("id")) in customers]
            page = int(q.get("page", 1))
            chunk = rows[(page - 1) * limit: page * limit]
            if obj == "orders" and not ids and self.between_pages is not None:
                hook, self.between_pages = self.between_pages, None
                hook()
            return {"success": True, obj: chunk, "pagination": {
                "limit": limit, "totalCount": len(rows), "currentPage": page,
                "totalPageCount": max(1, math.ceil(len(rows) / limit))}}
        return self._guard(handler)

    def _history(self, obj: str):
        def handler(query):
            q = dict(query)
            entries = self.history[obj]
            if "filter[sinceId]" in q:
                self.since_seen.append(f"sinceId={q['filter[sinceId]']}")
                entries = [e for e in entries if e["id"] > int(q["filter[sinceId]"])]
            elif "filter[startDate]" in q:
                self.since_seen.append(f"startDate={q['filter[startDate]']}")
                entries = [e for e in entries if e["createdAt"] >= q["filter[startDate]"]]
            limit = int(q.get("limit", 100))
            return {"success": True, "history": entries[:limit], "pagination": {
                "limit": limit, "totalCount": len(entries), "currentPage": 1,
                "totalPageCount": max(1, math.ceil(len(entries) / limit))}}
        return self._guard(handler)


def make_source(sleep=None, clock=None, **cfg) -> RetailCrmSource:
    return RetailCrmSource(RetailCrmConfig(**({"page_size": 20} | cfg)),
                           RetailCrmSecrets(url=BASE, api_key=KEY), sleep=sleep or (lambda s: None),
                           clock=clock or (lambda: T0 + timedelta(days=1)))


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def staged(con, table="staged_orders", cols="*"):
    return con.execute(f"SELECT {cols} FROM {table} ORDER BY 1").fetchall()


def test_backfill_maps_orders_items_and_customers(rsps):
    fake = FakeRetailCrm(rsps)
    fake.put_contact(10, "Ann@Example.com ", at=T0, subscribed=True, address={"city": "Almaty"},
                     tags=[{"name": "vip"}], source={"source": "instagram"})
    fake.put_order(1, 10, "1500.50", at=T0)
    fake.put_order(2, 10, "99", at=T0, status="new")  # open: not a purchase
    fake.put_order(3, 10, "10", at=T0, status="cancel-other")
    con = duckdb.connect()
    result = make_source().pull(con)
    rows = staged(con, cols="order_id, customer_id, amount, currency, status")
    assert rows == [("1", "10", Decimal("1500.50"), "RUB", "completed"), ("2", "10", Decimal("99.00"), "RUB",
                    "cancelled"), ("3", "10", Decimal("10.00"), "RUB", "cancelled")]
    assert staged(con, "staged_line_items", "order_id, sku, name, quantity, price")[0] == (
        "1", "T-1", "Tea", Decimal("2.000"), Decimal("750.25"))
    (contact,) = staged(con, "staged_contacts", "customer_id, email, phone, marketing_consent, attributes")
    assert contact[:4] == ("10", "ann@example.com", "+77011234567", "yes")
    assert json.loads(contact[4]) == {"city": "Almaty", "tags": "vip", "source": "instagram"}
    assert (result.orders, result.contacts) == (3, 1)
    # no history after the run start yet: the bookmark is the run start (re-read with lookback)
    start = (T0 + timedelta(days=1)).isoformat()
    assert json.loads(result.cursor) == {"contacts": start, "orders": start, "keys": "4"}  # (keyed anew: mark)


def test_order_dates_are_read_in_the_account_zone(rsps):
    fake = FakeRetailCrm(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "5", at=T0)
    con = duckdb.connect()
    make_source().pull(con)
    (at,) = con.execute("SELECT ordered_at FROM staged_orders").fetchone()
    assert at == T0


def test_deleted_order_leaves_history_as_cancelled(rsps):
    fake = FakeRetailCrm(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "5", at=T0)
    con = duckdb.connect()
    first = make_source().pull(con)
    fake.delete_order(1, at=T0 + timedelta(days=1, hours=1))
    second = make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, first.cursor)
    assert staged(con, cols="order_id, status, amount") == [("1", "cancelled", Decimal("5.00"))]
    assert json.loads(second.cursor)["orders"] == "103"


def test_deleted_and_merged_customers_leave_every_destination(rsps):
    from connectors.tables import create_tables
    from sync.store import merge_staged

    fake = FakeRetailCrm(rsps)
    fake.put_contact(10, "gone@example.com", at=T0, subscribed=True)
    fake.put_contact(11, "dup@example.com", at=T0, subscribed=True)
    fake.put_contact(12, "keep@example.com", at=T0, subscribed=True)
    fake.put_order(1, 10, "5", at=T0)
    con = duckdb.connect()
    create_tables(con)
    first = make_source().pull(con)
    merge_staged(con, first)
    later = T0 + timedelta(days=1, hours=1)
    fake.delete_customer(10, at=later)
    fake.delete_customer(11, at=later, combined_to=12)  # 11 merged into 12
    fake.fetched_ids.clear()
    second = make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, first.cursor)
    assert fake.fetched_ids == [12]  # the survivor is re-read; the deleted ones are not asked for
    rows = staged(con, "staged_contacts", "customer_id, email, phone, first_name, marketing_consent, attributes")
    assert [r[:5] for r in rows] == [("10", None, None, None, "no"), ("11", None, None, None, "no"),
                                     ("12", "keep@example.com", "+77011234567", "Ann", "yes")]
    assert [json.loads(r[5]) if r[5] else None for r in rows] == [
        {"deleted": "true"}, {"deleted": "true", "combined_to": "12"}, None]
    assert second.bad_row_count == 0
    merge_staged(con, second)
    # the store keeps the order under its customer id, but no address is left to sync to
    assert con.execute("SELECT customer_id, email, marketing_consent FROM contacts ORDER BY 1").fetchall() == [
        ("10", None, "no"), ("11", None, "no"), ("12", "keep@example.com", "yes")]
    assert con.execute("SELECT order_id, customer_id, status FROM orders").fetchall() == [("1", "10", "completed")]


def test_history_created_after_run_start_is_reread_next_time(rsps):
    fake = FakeRetailCrm(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    con = duckdb.connect()
    first = make_source().pull(con)
    fake.put_order(1, 10, "5", at=T0 + timedelta(days=1, hours=1))  # history 102
    fake.put_order(2, 10, "6", at=T0 + timedelta(days=5))  # 103, stamped after our run start (clock skew)
    second = make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, first.cursor)
    assert fake.since_seen[-1] == "startDate=" + fmt(T0 + timedelta(days=1) - timedelta(minutes=10))
    assert [r[0] for r in staged(con)] == ["1", "2"]
    assert json.loads(second.cursor)["orders"] == "102"  # 103 is read again next time
    make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, second.cursor)
    assert fake.since_seen[-1] == "sinceId=102"


def customers_page(fake: FakeRetailCrm, **answer) -> str:
    """The first page (20) of the customers list, as the vendor serves it, with ``answer``'s keys replaced."""
    rows = [fake.customers[k] for k in sorted(fake.customers)][:20]
    return json.dumps({"success": True, "customers": rows, "pagination": {
        "limit": 20, "totalCount": len(fake.customers), "currentPage": 1,
        "totalPageCount": math.ceil(len(fake.customers) / 20)}, **answer})


@pytest.mark.parametrize("answer, says", [
    ({"pagination": None}, "pagination.totalPageCount is missing"),  # a full first page and no count: more?
    ({"pagination": {"limit": 20, "currentPage": 1}}, "pagination.totalPageCount is missing"),
    ({"pagination": {"totalPageCount": "many"}}, "pagination.totalPageCount is 'many', not a count"),
    ({"customers": {"1": {"id": 1}}}, "'customers' list is a JSON object with keys '1'"),  # keyed by id: not rows
    ({"customers": None}, "'customers' list is null"),
])
def test_a_backfill_page_of_the_wrong_shape_stops_the_pull_and_is_never_its_last_page(rsps, answer, says):
    """A page without its page count ended the backfill after page 1: 5 of 25 customers were never read and,
    the history feed naming none of them, nothing checked it."""
    fake = FakeRetailCrm(rsps)
    rsps.assert_all_requests_are_fired = False
    for cid in range(1, 26):
        fake.put_contact(cid, f"c{cid}@example.com", at=T0 - timedelta(days=1))
    fake.failures = [(200, {"Content-Type": "application/json"}, customers_page(fake, **answer))]
    with pytest.raises(FatalError, match=rf"^RetailCRM api/v5/customers: page 1: .*{re.escape(says)}") as err:
        make_source().pull(duckdb.connect())
    assert KEY not in str(err.value) and not fake.failures


@pytest.mark.parametrize("entry", ["oops", {"id": None, "createdAt": "2026-01-11 11:59:00", "customer": {"id": 1}},
                                   {"id": "x17", "customer": {"id": 1}}, {"id": 200, "customer": "1"},
                                   {"id": 201, "customer": {"id": 1}, "combinedTo": 7}])
def test_a_history_entry_of_the_wrong_shape_stops_the_pull_naming_the_feed(rsps, entry):
    fake = FakeRetailCrm(rsps)
    rsps.assert_all_requests_are_fired = False
    fake.put_contact(10, "a@example.com", at=T0)
    first = make_source().pull(duckdb.connect())
    fake.failures = [(200, {}, json.dumps({"success": True, "history": [entry], "pagination": {
        "limit": 100, "totalCount": 1, "currentPage": 1, "totalPageCount": 1}}))]  # the next customers feed
    with pytest.raises(FatalError, match=r"^RetailCRM api/v5/customers/history: .*entry") as err:
        make_source(clock=lambda: T0 + timedelta(days=2)).pull(duckdb.connect(), first.cursor)
    assert str(entry)[:10] in str(err.value) and not fake.failures



def test_a_saved_cursor_of_other_digits_is_a_bad_cursor_named(rsps):
    """A history id is read with digits() (0-9 only): a cursor "²" (str.isdigit() took it, int() refused it: a bare
    ValueError) is a bad cursor, named as any other."""
    fake = FakeRetailCrm(rsps)
    rsps.assert_all_requests_are_fired = False
    fake.put_contact(10, "a@example.com", at=T0)
    first = make_source().pull(duckdb.connect())
    cursor = json.dumps(json.loads(first.cursor) | {"orders": "²"})
    with pytest.raises(ConfigError, match=r"^retailcrm: bad orders cursor '²'$"):
        make_source(clock=lambda: T0 + timedelta(days=2)).pull(duckdb.connect(), cursor)

def test_consent_prefers_explicit_unsubscribe():
    cfg = RetailCrmConfig()
    raw = {"id": 1, "subscribed": True, "emailMarketingUnsubscribedAt": "2026-01-01 10:00:00"}
    assert map_customer(raw, cfg).marketing_consent is Consent.NO
    raw = {"id": 1, "customerSubscriptions": [{"subscription": {"channel": "email"}, "subscribed": False}]}
    assert map_customer(raw, cfg).marketing_consent is Consent.NO
    assert map_customer({"id": 2}, cfg).marketing_consent is Consent.UNKNOWN


def _subs(*said):
    return [{"subscription": {"id": n, "channel": channel, "code": code, "name": code.title()}, "subscribed": yes}
            for n, (channel, code, yes) in enumerate(said, 1)]


@pytest.mark.parametrize("reverse", [False, True], ids=["news-first", "promo-first"])
def test_consent_reads_the_email_subscriptions_in_any_order(rsps, reverse):
    """hunt32b F4: the first e-mail ``customerSubscriptions`` entry decided, so news=yes, promo=no read yes and
    the same two listed the other way no. Any e-mail one saying no is now a no, whatever the order (an sms yes
    counts for nothing); ``marketing_subscription`` names the one that decides."""
    fake = FakeRetailCrm(rsps)
    rsps.assert_all_requests_are_fired = False
    both = _subs(("email", "news", True), ("email", "promo", False))
    news_only = _subs(("sms", "promo", True), ("email", "news", True))
    for cid, subs in ((10, both), (11, news_only), (12, _subs(("sms", "promo", False)))):
        fake.put_contact(cid, f"c{cid}@example.com", at=T0, subscribed=True,
                         customerSubscriptions=subs[::-1] if reverse else subs)
    for cfg, want in (({}, ["no", "yes", "yes"]), ({"marketing_subscription": "news"}, ["yes", "yes", "yes"]),
                      ({"marketing_subscription": "promo"}, ["no", "yes", "yes"])):
        con = duckdb.connect()
        make_source(**cfg).pull(con)
        assert [r[1] for r in staged(con, "staged_contacts", "customer_id, marketing_consent")] == want, cfg


def test_a_marketing_subscription_a_customer_lacks_reads_his_other_email_ones_and_is_warned(rsps, caplog):
    """review-consent32 MUST 3: with ``marketing_subscription`` set, a customer not listing that code fell back to
    ``subscribed`` and read yes although an e-mail subscription of his said false (a code misspelt, renamed in
    the CRM). Now the rule without the setting reads him (any e-mail one false: no) before ``subscribed``, and a
    pull none of whose customers lists the code warns once. A ``subscribed`` that is not true or false (the
    string "false" read as yes before) is a no, with an issue naming the customer and the field."""
    fake = FakeRetailCrm(rsps)
    rsps.assert_all_requests_are_fired = False
    fake.put_contact(20, "c20@example.com", at=T0, subscribed=True, customerSubscriptions=_subs(("email", "promo", False)))
    fake.put_contact(21, "c21@example.com", at=T0, subscribed=True, customerSubscriptions=_subs(("email", "news", True)))
    fake.put_contact(22, "c22@example.com", at=T0, subscribed=True, customerSubscriptions=_subs(("email", "news", "false")))
    for code, want, warned in (("Promo", ["no", "yes", "no"], True), ("promo", ["no", "yes", "no"], False)):
        caplog.clear()
        con = duckdb.connect()
        with caplog.at_level("WARNING", logger="connectors.retailcrm_mapping"):
            result = make_source(marketing_subscription=code).pull(con)
        assert [r[1] for r in staged(con, "staged_contacts", "customer_id, marketing_consent")] == want, code
        lines = [r.getMessage() for r in caplog.records if "marketing_subscription" in r.getMessage()]
        assert len(lines) == int(warned), lines
        if warned:
            assert "'Promo'" in lines[0] and "news, promo" in lines[0] and "3 customers" in lines[0]
        issues = [i for i in result.issues if i.field == "customerSubscriptions.subscribed"]
        assert [(i.row, i.value) for i in issues] == [("22", "false")], result.issues


def test_check_returns_the_host_and_sites(rsps):
    FakeRetailCrm(rsps, pull=False, check=True)
    assert make_source().check() == "demo.retailcrm.ru (sites: shop-main)"


def test_check_warns_when_the_site_is_none_of_the_accounts(rsps):
    """hunt28b #8: ``site = "shop-mian"`` (the account's one site is shop-main): check said nothing, and a pull
    staged no order without an error."""
    FakeRetailCrm(rsps, pull=False, check=True)
    found = make_source(site="shop-mian").check()
    assert str(found) == "demo.retailcrm.ru (sites: shop-main)"
    assert found.warnings == ("[source] site 'shop-mian' is not among the sites the key reaches (did you mean "
                              "'shop-main'?): shop-main; a pull would read no order of it",)


@pytest.mark.parametrize("sites", [[1, None, "shop-main"], "shop-main", {"a": 1}])
def test_check_of_an_odd_sites_list_says_what_came_back(rsps, sites):
    """sitesAvailable of numbers (shown as such), or not a list at all (one error naming it), not a TypeError."""
    rsps.add("GET", f"{BASE}/api/credentials", json={"success": True, "sitesAvailable": sites})
    if isinstance(sites, list):
        assert str(make_source().check()) == "demo.retailcrm.ru (sites: 1, shop-main)"
    else:
        with pytest.raises(FatalError, match="RetailCRM api/credentials: sitesAvailable is"):
            make_source().check()


@pytest.mark.parametrize("site", [None, "", "shop-main"])
def test_check_warns_when_no_site_is_set_on_an_account_of_several(rsps, site):
    """A blank ``site`` is unset, as an absent one: every site is read, which check says when the key reaches
    several (a single-site account, or a site set: no warning)."""
    from connectors.source import Account

    rsps.add("GET", f"{BASE}/api/credentials", json={"success": True, "sitesAvailable": ["shop-main", "outlet"]})
    rsps.add("GET", f"{BASE}/api/credentials", json={"success": True, "sitesAvailable": ["shop-main"]})
    source = make_source(**({} if site is None else {"site": site}))
    several, one = source.check(), source.check()
    assert str(several) == "demo.retailcrm.ru (sites: shop-main, outlet)"
    assert one == "demo.retailcrm.ru (sites: shop-main)"
    if site:
        assert several == "demo.retailcrm.ru (sites: shop-main, outlet)"
    else:
        assert isinstance(several, Account) and several.warnings == (
            "site is not set: the orders and customers of all 2 sites are read as one shop; set [source] site to one "
            "of them to read only its own",)


def test_auth_failure_names_the_env_variable_not_the_key(rsps):
    FakeRetailCrm(rsps, pull=False, check=True).bad_key = True
    with pytest.raises(AuthError) as err:
        make_source().check()
    assert "RETAILCRM_API_KEY" in str(err.value) and KEY not in str(err.value)


@pytest.mark.parametrize("url, hint", [("${RETAILCRM_URL}", "the config file expands no environment variable"),
                                       ("shop.retailcrm.ru", "")])
def test_a_source_url_that_is_no_url_is_a_config_error_never_retried(url, hint):
    """hunt28b #8: ``[source] url = "${RETAILCRM_URL}"`` won over RETAILCRM_URL, and requests' MissingSchema was
    retried 6 times as a connection error (~17 s), then blamed on RETAILCRM_URL."""
    with pytest.raises(ValidationError, match="is not an account URL like https://shop.retailcrm.ru") as err:
        RetailCrmConfig(url=url)
    assert hint in str(err.value)
    assert RetailCrmConfig(url=" https://shop.retailcrm.ru ").url == "https://shop.retailcrm.ru"
    waits: list[float] = []
    source = RetailCrmSource(RetailCrmConfig(), RetailCrmSecrets(url=url, api_key=KEY), sleep=waits.append)
    with pytest.raises(ConfigError, match=r"not a URL like https://host \(never retried\); check RETAILCRM_URL"):
        source.check()
    assert waits == []


# ---------------------------------------------------------------- webhooks


def test_webhook_path_token_is_compared_exactly():
    assert verify_webhook({}, b"{}", "s3cret-token", "s3cret-token")
    assert not verify_webhook({}, b"{}", "s3cret-token", "s3cret-tokeN")
    assert not verify_webhook({}, b"{}", "s3cret-token", None)
    assert not verify_webhook({}, b"{}", "", "")


def test_webhook_parses_order_json_and_form_bodies():
    order = {"id": 7, "status": "complete", "createdAt": "2026-01-10 12:00:00", "totalSumm": 100,
             "currency": "KZT", "customer": {"id": 3}}
    (o,), () = parse_webhook({}, json.dumps({"order": order}).encode())
    assert (o.order_id, o.customer_id, o.amount, o.status) == ("7", "3", Decimal("100"), OrderStatus.COMPLETED)
    form = ("customer=" + json.dumps({"id": 3, "email": "X@Y.kz"})).encode()
    (), (c,) = parse_webhook({}, form)
    assert c.email == "x@y.kz"


def test_webhook_bad_payloads_raise_clear_errors():
    with pytest.raises(RecordError, match="retailcrm:webhook, row 7: totalSumm"):
        parse_webhook({}, json.dumps({"order": {"id": 7, "status": "complete", "createdAt": "2026-01-10 12:00:00",
                                                 "totalSumm": "x", "customer": {"id": 3}}}).encode())
    with pytest.raises(RecordError, match=r"retailcrm:webhook, row 7: createdAt: a date on or before 1970-01-01"):
        parse_webhook({}, json.dumps({"order": {"id": 7, "status": "complete", "createdAt": "1970-01-01 05:00:00",
                                                 "totalSumm": 100, "customer": {"id": 3}}}).encode())
    with pytest.raises(ValueError, match="neither"):
        parse_webhook({}, b'{"hello": 1}')
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_webhook({}, b"{broken")
