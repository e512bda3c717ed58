"""Shopify source: a stateful REST Admin fake (Link-header pages, call-limit header) and webhooks."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qsl, quote, urlsplit

import duckdb
import pytest
import responses

from connectors.errors import AuthError, ConfigError, FatalError, RecordError
from connectors.records import Consent, OrderStatus
from connectors.shopify import ShopifyConfig, ShopifySecrets, ShopifySource, parse_webhook, verify_webhook
from connectors.webhooks import ReplayGuard, hmac_sha256_base64

SHOP = "demo-shop"
BASE = f"https://{SHOP}.myshopify.com/admin/api/2025-10"
SCOPES = f"https://{SHOP}.myshopify.com/admin/oauth/access_scopes.json"
TOKEN = "shpat_secret_token_abc"
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=timezone.utc)


def z(at: datetime) -> str:
    return at.astimezone(timezone(timedelta(hours=5))).isoformat()  # shop-local offset, as Shopify sends


class FakeShopify:
    auth_env = "SHOPIFY_TOKEN"

    def __init__(self, rsps: responses.RequestsMock, *, pull: bool = True, check: bool = False,
                 call_limit: str | None = None) -> None:
        self.orders: dict[int, dict] = {}
        self.customers: dict[int, dict] = {}
        self.failures: list[tuple[int, dict] | Exception] = []  # an exception: raised as the transport's
        self.bad_key = False
        self.since_seen: list[str | None] = []
        self.call_limit = call_limit
        self.loop_page_info = False
        self.between_pages = None  # called once, after the first page of orders is served
        self.iana_timezone = "Asia/Tashkent"  # shop.json's: the shop's own zone (its admin's "Time zone")
        #: the token's scopes (access_scopes.json, read once per pull); an int: that HTTP status; a dict: that answer
        self.scopes: list[str] | int | dict = ["read_customers", "read_orders", "read_all_orders"]
        for res in ("orders", "customers") if pull else ():
            rsps.add_callback("GET", re.compile(rf"{BASE}/{res}\.json(\?.*)?$"), self._guard(self._list(res)))
        if pull:  # (no failures of its own: those set by a test are the order and customer reads')
            rsps.add_callback("GET", SCOPES, self._access_scopes)
        if check:
            rsps.add_callback("GET", f"{BASE}/shop.json", self._guard(lambda q: ({"shop": {
                "name": "Demo Shop", "myshopify_domain": f"{SHOP}.myshopify.com", "timezone": "(GMT+05:00) Tashkent",
                "iana_timezone": self.iana_timezone, "currency": "UZS"}}, {})))

    def _access_scopes(self, request):
        """``GET /admin/oauth/access_scopes.json`` as Shopify documents it: ``{"access_scopes": [{"handle": …}]}``."""
        if request.headers.get("X-Shopify-Access-Token") != TOKEN or self.bad_key:
            return 401, {}, json.dumps({"errors": "[API] Invalid API key or access token"})
        if isinstance(self.scopes, dict):  # another shape than the documented one
            return 200, {"Content-Type": "application/json"}, json.dumps(self.scopes)
        if isinstance(self.scopes, int):
            return self.scopes, {}, json.dumps({"errors": "[API] This action requires merchant approval for "
                                                          "read_access_scopes scope."})
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"access_scopes": [{"handle": h} for h in self.scopes]})

    def put_contact(self, cid: int, email: str, *, at: datetime, **fields) -> None:
        self.customers[cid] = {"id": cid, "email": email, "first_name": "Ann", "last_name": f"C{cid}",
                               "phone": "+998901234567", "created_at": z(at), "updated_at": z(at),
                               "tags": "vip, wholesale", "state": "enabled",
                               "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in"},
                               "default_address": {"city": "Tashkent", "country_code": "UZ"}, **fields}

    def put_order(self, oid: int, cid: int, amount: str, *, at: datetime, bad: bool = False,
                  financial_status: str = "paid", **fields) -> None:
        self.orders[oid] = {
            "id": oid, "name": f"#{1000 + oid}", "email": f"c{cid}@example.com", "created_at": z(at),
            "processed_at": z(at), "updated_at": z(at), "cancelled_at": None, "financial_status": financial_status,
            "currency": "UZS", "total_price": amount, "current_total_price": "oops" if bad else amount,
            "total_discounts": "0.00", "current_total_discounts": "0.00", "test": False,
            "customer": {"id": cid, "email": f"c{cid}@example.com"},
            "line_items": [{"id": oid * 10, "sku": "MUG-1", "title": "Mug", "vendor": "Acme", "quantity": 1,
                            "price": amount}], **fields}

    def order_ids(self) -> set[int]:
        return set(self.orders)

    def delete_order(self, oid: int, *, at: datetime) -> None:
        """A deleted order disappears from orders.json; only the orders/delete webhook tells."""
        self.orders.pop(oid)

    def since_ok(self, old_cursor: dict, lookback: timedelta) -> bool:
        wanted = [datetime.fromisoformat(old_cursor[k]) for k in ("contacts", "orders")]
        got = [datetime.fromisoformat(s) for s in self.since_seen[-2:]]
        return all(w - lookback <= g <= w for w, g in zip(wanted, got))

    def _guard(self, handler):
        def callback(request):
            if self.failures:
                if isinstance(self.failures[0], Exception):
                    return self.failures.pop(0)  # responses raises it, as requests would
                status, headers, *body = self.failures.pop(0)  # (status, headers[, body])
                default = json.dumps({"errors": "Exceeded 2 calls per second for api client."})
                return status, headers, body[0] if body else default
            if request.headers.get("X-Shopify-Access-Token") != TOKEN or self.bad_key:
                return 401, {}, json.dumps({"errors": "[API] Invalid API key or access token"})
            body, headers = handler(dict(parse_qsl(urlsplit(request.url).query)))
            if self.call_limit:
                headers["X-Shopify-Shop-Api-Call-Limit"] = self.call_limit
            return 200, {"Content-Type": "application/json", **headers}, json.dumps(body)
        return callback

    def _list(self, res: str):
        store = self.orders if res == "orders" else self.customers

        def handler(q):
            # page_info is an opaque keyset cursor (the filters and the last id served), as in the real API
            # as the real API: newest first (id descending) unless since_id is given, then id ascending from it;
            # a page_info cursor goes on in its first request's order
            if "page_info" in q:
                assert set(q) == {"page_info", "limit"}, "page_info must not be combined with filters"
                since, after, ascending = json.loads(q["page_info"])
            else:
                since, ascending = q.get("updated_at_min"), "since_id" in q
                after = int(q["since_id"]) if ascending else None
                if not after:  # (a read's first request: since_id=0 or none)
                    self.since_seen.append(since)
                if res == "orders":
                    assert q["status"] == "any"
            limit = int(q["limit"])
            assert limit <= 250
            keys = sorted(store, reverse=not ascending)
            rows = [store[k] for k in keys if (after is None or (k > after if ascending else k < after))
                    and (since is None or datetime.fromisoformat(store[k]["updated_at"]) >= datetime.fromisoformat(since))]
            page = rows[:limit]
            if res == "orders" and page and self.between_pages is not None:
                hook, self.between_pages = self.between_pages, None
                hook()
            headers = {}
            if len(rows) > limit:
                token = json.dumps([since, after if self.loop_page_info else page[-1]["id"], ascending])
                nxt = f"{BASE}/{res}.json?limit={limit}&page_info={quote(token)}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            return {res: page}, headers
        return handler


def make_source(sleep=None, clock=None, **cfg) -> ShopifySource:
    return ShopifySource(ShopifyConfig(**({"page_size": 2} | cfg)), ShopifySecrets(shop=SHOP, token=TOKEN),
                         sleep=sleep or (lambda s: None), clock=clock or (lambda: T0 + timedelta(days=1)))


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def test_pull_maps_orders_statuses_and_customers(rsps):
    fake = FakeShopify(rsps)
    fake.put_contact(7, "Ann@Example.COM", at=T0)
    fake.put_order(1, 7, "120000.50", at=T0)
    fake.put_order(2, 7, "50.00", at=T0, financial_status="refunded")
    fake.put_order(3, 7, "10.00", at=T0, cancelled_at=z(T0))
    fake.put_order(4, 7, "10.00", at=T0, financial_status="pending")
    fake.put_order(5, 7, "10.00", at=T0, test=True)
    con = duckdb.connect()
    result = make_source().pull(con)
    rows = con.execute("SELECT order_id, customer_id, amount, currency, status, ordered_at FROM staged_orders "
                       "ORDER BY 1").fetchall()
    assert [r[:5] for r in rows] == [
        ("1", "7", Decimal("120000.50"), "UZS", "completed"), ("2", "7", Decimal("50.00"), "UZS", "cancelled"),
        ("3", "7", Decimal("10.00"), "UZS", "cancelled"), ("4", "7", Decimal("10.00"), "UZS", "cancelled"),
        ("5", "7", Decimal("10.00"), "UZS", "cancelled")]
    assert rows[0][5] == T0
    assert con.execute("SELECT sku, name, brand FROM staged_line_items WHERE order_id = '1'").fetchall() == [
        ("MUG-1", "Mug", "Acme")]
    contact = con.execute("SELECT email, phone, marketing_consent, attributes FROM staged_contacts").fetchone()
    assert contact[:3] == ("ann@example.com", "+998901234567", "yes")
    assert json.loads(contact[3]) == {"city": "Tashkent", "country": "UZ", "tags": "vip, wholesale",
                                      "state": "enabled"}
    assert json.loads(result.cursor) == {"contacts": T0.isoformat(), "orders": T0.isoformat(), "keys": "2"}


def test_amounts_with_more_decimals_round_as_a_file_s_and_an_amount_out_of_range_is_a_bad_row(rsps):
    """A store in a three-decimal currency (or float arithmetic upstream) sends ``10.005``: staged as 10.01, as
    the file reader rounds it (half away from zero), not a failed page; an amount no column holds is reported
    with its order and field, and the rest of the page is staged."""
    from connectors.amounts import amount_sql

    fake = FakeShopify(rsps)
    fake.put_order(1, 7, "10.005", at=T0)
    fake.put_order(2, 7, "1e16", at=T0)
    fake.put_order(3, 7, "-0.125", at=T0, line_items=[{"id": 30, "sku": "K", "title": "Kg", "vendor": None,
                                                      "quantity": "2.0005", "price": "1.995"}])
    con = duckdb.connect()
    result = make_source().pull(con)
    assert con.execute("SELECT order_id, amount FROM staged_orders ORDER BY 1").fetchall() == [
        ("1", Decimal("10.01")), ("3", Decimal("-0.13"))]
    assert con.execute("SELECT [" + ", ".join(amount_sql(f"'{t}'") for t in ("10.005", "-0.125")) + "]"
                       ).fetchone()[0] == [Decimal("10.01"), Decimal("-0.13")]
    assert con.execute("SELECT quantity, price FROM staged_line_items WHERE order_id = '3'").fetchall() == [
        (Decimal("2.001"), Decimal("2.00"))]
    assert [(b.row, b.field) for b in result.bad_rows] == [("2", "current_total_price")]
    assert "out of range" in result.bad_rows[0].reason


def test_a_record_no_column_holds_stages_nothing_of_its_call_and_names_the_order_and_the_item():
    from connectors.records import LineItem, Order
    from connectors.tables import stage_records

    con = duckdb.connect()
    ok = Order("1", "7", T0, Decimal("5"))
    huge = Order("2", "7", T0, Decimal("5"), items=(LineItem(quantity=Decimal("1e16")),))
    with pytest.raises(ValueError, match=r"order 2 item 1: quantity 10000000000000000 does not fit DECIMAL\(18,3\)"):
        stage_records(con, [ok, huge])
    assert con.execute("SELECT count(*) FROM staged_orders").fetchone() == (0,)
    with pytest.raises(ValueError, match=r"order 1: amount NaN does not fit"):
        stage_records(con, [Order("1", "7", T0, Decimal("NaN"))])


def test_guest_order_falls_back_to_email(rsps):
    fake = FakeShopify(rsps)
    fake.put_order(1, 7, "5.00", at=T0, customer=None, email="Guest@Example.com")
    con = duckdb.connect()
    make_source().pull(con)
    assert con.execute("SELECT customer_id FROM staged_orders").fetchone() == ("guest@example.com",)


def test_call_limit_header_makes_the_client_back_off(rsps):
    fake = FakeShopify(rsps, call_limit="39/40")
    fake.put_contact(7, "a@example.com", at=T0)
    fake.put_order(1, 7, "5.00", at=T0)
    waits: list[float] = []
    make_source(sleep=waits.append).pull(duckdb.connect())
    # 39 used of 40 with headroom 5: 5 calls over the mark → pause 3 s (2 calls/s leak) before the next call
    assert max(waits) > 2.0
    fake.call_limit = "3/40"
    calm: list[float] = []
    make_source(sleep=calm.append).pull(duckdb.connect())
    assert max(calm, default=0) <= 0.5  # only the 2 requests/s pacing


def test_repeated_page_info_is_fatal(rsps):
    fake = FakeShopify(rsps)
    for i in range(1, 4):
        fake.put_contact(i, f"c{i}@example.com", at=T0)
    fake.loop_page_info = True
    rsps.assert_all_requests_are_fired = False  # orders are never reached
    with pytest.raises(FatalError, match="twice"):
        make_source(page_size=1).pull(duckdb.connect())


def test_check_names_the_shop_and_auth_error_names_the_env(rsps):
    fake = FakeShopify(rsps, pull=False, check=True)
    assert str(make_source(timezone="Asia/Tashkent").check()) == f"Demo Shop ({SHOP}.myshopify.com)"
    fake.bad_key = True
    with pytest.raises(AuthError) as err:
        make_source().check()
    assert "SHOPIFY_TOKEN" in str(err.value) and TOKEN not in str(err.value) and TOKEN not in (err.value.body or "")


def test_check_warns_when_the_shop_counts_days_in_another_zone_and_keeps_the_setting(rsps):
    FakeShopify(rsps, pull=False, check=True)
    same = make_source(timezone="Asia/Tashkent").check()
    assert same.warnings == ()
    other = make_source().check()  # [source] timezone left at its default, UTC
    assert str(other) == f"Demo Shop ({SHOP}.myshopify.com)"
    assert other.warnings == ("the shop's time zone is Asia/Tashkent but [source] timezone is 'UTC': purchase "
                              "days and the as-of date are counted in UTC; set timezone = 'Asia/Tashkent' to count "
                              "them in the shop's days",)


def test_missing_settings_are_config_errors(monkeypatch):
    for var in ("SHOPIFY_SHOP", "SHOPIFY_TOKEN", "SHOPIFY_API_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="SHOPIFY_SHOP"):
        ShopifySource(ShopifyConfig())
    monkeypatch.setenv("SHOPIFY_SHOP", "x")
    with pytest.raises(ConfigError, match="SHOPIFY_TOKEN"):
        ShopifySource(ShopifyConfig())


# ---------------------------------------------------------------- webhooks

SECRET = "whsec_app_client_secret"
ORDER_BODY = json.dumps({"id": 820982911946154508, "email": "jon@example.com", "created_at": "2026-01-10T14:00:00-05:00",
                         "processed_at": "2026-01-10T14:00:00-05:00", "financial_status": "paid",
                         "total_price": "403.00", "currency": "USD", "total_discounts": "5.00",
                         "customer": {"id": 115310627314723954},
                         "line_items": [{"sku": "IPOD2008BLACK", "title": "IPod Nano - 8gb", "vendor": None,
                                         "quantity": 1, "price": "199.00"}]}).encode()


def signed(body: bytes, *, secret: str = SECRET, at: datetime = T0, delivery: str = "b54557e4") -> dict[str, str]:
    return {"X-Shopify-Hmac-Sha256": hmac_sha256_base64(secret, body), "X-Shopify-Topic": "orders/create",
            "X-Shopify-Triggered-At": at.isoformat().replace("+00:00", "Z"), "X-Shopify-Webhook-Id": delivery,
            "Content-Type": "application/json"}


def test_webhook_signature_valid_forged_stale_and_replayed():
    now = T0 + timedelta(minutes=1)
    assert verify_webhook(signed(ORDER_BODY), ORDER_BODY, SECRET, now=now)
    lower = {k.lower(): v for k, v in signed(ORDER_BODY).items()}
    assert verify_webhook(lower, ORDER_BODY, SECRET, now=now)
    assert not verify_webhook(signed(ORDER_BODY, secret="other"), ORDER_BODY, SECRET, now=now)
    assert not verify_webhook(signed(ORDER_BODY), ORDER_BODY + b" ", SECRET, now=now)  # body tampered
    assert not verify_webhook({}, ORDER_BODY, SECRET, now=now)
    assert not verify_webhook(signed(ORDER_BODY), ORDER_BODY, SECRET, now=T0 + timedelta(hours=6))  # stale
    guard = ReplayGuard()
    assert verify_webhook(signed(ORDER_BODY), ORDER_BODY, SECRET, now=now, replay_guard=guard)
    assert not verify_webhook(signed(ORDER_BODY), ORDER_BODY, SECRET, now=now, replay_guard=guard)


def test_webhook_order_payload_maps_like_the_pull():
    (order,), contacts = parse_webhook(signed(ORDER_BODY), ORDER_BODY)
    assert contacts == []
    assert (order.order_id, order.customer_id, order.amount, order.discount, order.status) == (
        "820982911946154508", "115310627314723954", Decimal("403.00"), Decimal("5.00"), OrderStatus.COMPLETED)
    assert order.ordered_at == datetime(2026, 1, 10, 19, 0, tzinfo=timezone.utc)
    body = json.dumps({"id": 5, "email": "x@y.com", "accepts_marketing": False}).encode()
    _, (contact,) = parse_webhook({"X-Shopify-Topic": "customers/update"}, body)
    assert contact.marketing_consent is Consent.NO


def test_webhook_bad_payloads_raise_clear_errors():
    bad = json.dumps({"id": 9, "financial_status": "paid", "total_price": "x", "customer": {"id": 1},
                      "created_at": "2026-01-10T14:00:00Z"}).encode()
    with pytest.raises(RecordError, match="row 9: total_price"):
        parse_webhook({"X-Shopify-Topic": "orders/paid"}, bad)
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_webhook({"X-Shopify-Topic": "orders/paid"}, b"<html>")
    with pytest.raises(ValueError, match="unsupported topic"):
        parse_webhook({"X-Shopify-Topic": "products/create"}, b"{}")
    with pytest.raises(RecordError, match="order_id"):
        parse_webhook({"X-Shopify-Topic": "refunds/create"}, b'{"id": 1}')
    with pytest.raises(RecordError, match="orders/delete, row x: id"):
        parse_webhook({"X-Shopify-Topic": "orders/delete"}, b'{"id": "x"}')


# the refunds/create payload as Shopify documents it (the refund, not the order)
REFUND_BODY = json.dumps({
    "id": 509562969, "order_id": 820982911946154508, "created_at": "2026-01-11T11:00:00-05:00",
    "note": "it broke during shipping", "user_id": 548380009, "processed_at": "2026-01-11T11:00:00-05:00",
    "restock": True, "duties": [], "return": None, "admin_graphql_api_id": "gid://shopify/Refund/509562969",
    "refund_line_items": [{"id": 104689539, "quantity": 1, "line_item_id": 703073504, "location_id": 487838322,
                           "restock_type": "return", "subtotal": 195.67, "total_tax": 3.98,
                           "line_item": {"id": 703073504, "sku": "IPOD2008BLACK", "quantity": 1, "price": "199.00"}}],
    "transactions": [{"id": 179259969, "order_id": 820982911946154508, "kind": "refund", "gateway": "bogus",
                      "status": "success", "amount": "209.00", "currency": "USD"}],
    "order_adjustments": []}).encode()


def merge(con: duckdb.DuckDBPyConnection, orders) -> None:
    """Stage ``orders`` and merge them into the order store (sync.store), as a webhook's records are."""
    from connectors.source import PullResult
    from connectors.tables import create_tables, stage_records
    from sync.store import merge_staged

    create_tables(con)
    stage_records(con, orders)
    merge_staged(con, PullResult())


def test_orders_delete_webhook_takes_the_order_out_of_the_history():
    con = duckdb.connect()
    merge(con, parse_webhook(signed(ORDER_BODY), ORDER_BODY)[0])
    assert con.execute("SELECT status FROM orders").fetchall() == [("completed",)]
    assert con.execute("SELECT count(*) FROM line_items").fetchone() == (1,)
    body = json.dumps({"id": 820982911946154508}).encode()  # all Shopify sends for orders/delete
    headers = {**signed(body), "X-Shopify-Topic": "orders/delete"}
    assert verify_webhook(headers, body, SECRET, now=T0 + timedelta(minutes=1))
    (gone,), contacts = parse_webhook(headers, body)
    assert contacts == []
    assert (gone.order_id, gone.status, gone.amount, gone.ordered_at, gone.items) == (
        "820982911946154508", OrderStatus.DELETED, Decimal(0), T0, ())  # final: Shopify never brings it back
    merge(con, [gone])
    assert con.execute("SELECT order_id, status, amount FROM orders").fetchall() == [
        ("820982911946154508", "cancelled", Decimal("0.00"))]
    assert con.execute("SELECT count(*) FROM line_items").fetchone() == (0,)  # its lines went with it


def test_refund_webhook_maps_to_nothing_because_the_order_row_is_already_net():
    headers = {**signed(REFUND_BODY), "X-Shopify-Topic": "refunds/create"}
    assert verify_webhook(headers, REFUND_BODY, SECRET, now=T0 + timedelta(minutes=1))
    assert parse_webhook(headers, REFUND_BODY) == ([], [])
    # the order's own update after the refund carries the net amount and the new financial_status
    updated = json.loads(ORDER_BODY) | {"financial_status": "partially_refunded", "current_total_price": "194.00",
                                        "updated_at": "2026-01-11T11:00:01-05:00"}
    (order,), _ = parse_webhook({"X-Shopify-Topic": "orders/updated"}, json.dumps(updated).encode())
    assert (order.amount, order.status) == (Decimal("194.00"), OrderStatus.COMPLETED)
    full = updated | {"financial_status": "refunded", "current_total_price": "0.00"}
    (order,), _ = parse_webhook({"X-Shopify-Topic": "orders/updated"}, json.dumps(full).encode())
    assert (order.amount, order.status) == (Decimal("0.00"), OrderStatus.CANCELLED)  # wholly refunded: nets 0


def test_guests_keyed_by_the_raw_phone_before_are_told_until_a_full_pull(rsps):
    """An older rfmsync keyed a guest by the phone as typed (``+998 93 555-11-22``), this one in E.164: the guest's
    stored and new orders were two customers, and no pull said so (RetailCRM's upgrade warning, connectors/rekey.py)."""
    from sync.store import merge_staged, open_store
    with open_store(None) as con:
        fake = FakeShopify(rsps)
        fake.put_contact(1, "ann@example.com", at=T0)
        fake.put_order(1, 1, "10.00", at=T0)
        fake.put_order(2, 0, "35.00", at=T0, customer=None, email=None, phone="+998 93 555-11-22")
        first = make_source().pull(con)
        merge_staged(con, first, origin="pull")
        con.execute("UPDATE orders SET customer_id = '+998 93 555-11-22' WHERE order_id = '2'")  # the old key
        old_cursor = json.dumps({k: v for k, v in json.loads(first.cursor).items() if k != "keys"})
        fake.put_order(3, 0, "40.00", at=T0 + timedelta(days=1), customer=None, email=None, phone="+998 93 555-11-22")
        second = make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, old_cursor)
        merge_staged(con, second, origin="pull")
        assert len(second.warnings) == 1, second.warnings
        assert second.warnings[0].startswith("shopify: the order store was pulled by an older rfmsync")
        assert "1 order is keyed by a guest's e-mail or phone as typed" in second.warnings[0]
        assert "run `rfmsync pull --full` once" in second.warnings[0]
        full = make_source(clock=lambda: T0 + timedelta(days=3)).pull(con)
        merge_staged(con, full, origin="pull")
        again = make_source(clock=lambda: T0 + timedelta(days=4)).pull(con, full.cursor)
        keys = con.execute("SELECT DISTINCT customer_id FROM orders WHERE order_id IN ('2', '3')").fetchall()
    assert (full.warnings, again.warnings, keys) == ([], [], [("+998935551122",)])
