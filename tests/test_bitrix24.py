"""Bitrix24 source: a fake REST portal behind an inbound-webhook URL (ID keyset, start=-1) and events."""

from __future__ import annotations

import json
import logging
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode

import duckdb
import pytest
import responses

from connectors.bitrix24 import (Bitrix24Config, Bitrix24Secrets, Bitrix24Source, parse_webhook, verify_webhook,
                                 webhook_refs)
from connectors.bitrix24_pace import UNKNOWN_OFFSET_SLACK
from connectors.errors import AuthError, ConfigError, FatalError
from connectors.records import OrderStatus

CODE = "k3yc0de9x7secret"
HOOK = f"https://demo.bitrix24.ru/rest/1/{CODE}/"
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=timezone.utc)
MSK = timezone(timedelta(hours=3))
NOON = datetime(2026, 1, 10, 12, 0, tzinfo=timezone.utc)  # a CLOSEDATE of T0's day, stored under timezone = "UTC"


def b24(at: datetime) -> str:
    return at.astimezone(MSK).isoformat()


def b24_date(at: datetime) -> str:
    """A date field (``CLOSEDATE``) as the portal writes it: its day at midnight UTC, in the portal's offset
    (the vendor's crm.deal.get example: ``2024-09-09T02:00:00+02:00``)."""
    return datetime.combine(at.astimezone(MSK).date(), time(0), timezone.utc).astimezone(MSK).isoformat()


class FakeBitrix24:
    auth_env = "BITRIX24_WEBHOOK_URL"
    close_dates = True  # False: deals put have no CLOSEDATE ("", as the portal sends an empty date field)

    def __init__(self, rsps: responses.RequestsMock, *, pull: bool = True, check: bool = False) -> None:
        self.deals: dict[int, dict] = {}
        self.contacts: dict[int, dict] = {}
        self.failures: list[tuple[int, dict] | Exception] = []  # an exception: raised as the transport's
        self.bad_key = False
        self.since_seen: list[str | None] = []
        self.stuck = False  # ignore the >ID filter (a misbehaving portal)
        self.product_rows: dict[int, list[dict]] = {}
        self.row_errors: dict[int, dict] = {}  # deal id -> {"error", "error_description"} of its sub-call
        self.batch_failures: list[str] = []  # error codes answered once for every sub-call of a batch
        self.batches: list[list[str]] = []  # the sub-calls of each batch, as sent
        self.between_pages = None  # called once, after the first page of deals is served
        self.zone = MSK  # the portal's offset: its answers' time.date_start
        self.offset_lost = False  # True: a >=DATE_MODIFY filter's wall clock is read in ``zone``, its offset lost
        for method, store in (("crm.deal.list", self.deals), ("crm.contact.list", self.contacts)) if pull else ():
            rsps.add_callback("POST", f"{HOOK}{method}.json", self._guard(self._list(store)))
        if pull:
            rsps.add_callback("POST", f"{HOOK}batch.json", self._guard(self._batch))
        if check:
            rsps.add_callback("POST", f"{HOOK}profile.json", self._guard(lambda body: {
                "ID": "1", "ADMIN": True, "NAME": "Ann", "LAST_NAME": "Admin"}))

    def put_contact(self, cid: int, email: str, *, at: datetime) -> None:
        self.contacts[cid] = {"ID": str(cid), "NAME": "Ann", "LAST_NAME": f"C{cid}", "TYPE_ID": "CLIENT",
                              "SOURCE_ID": "WEB", "ADDRESS_CITY": "Москва", "DATE_CREATE": b24(at),
                              "DATE_MODIFY": b24(at),
                              "EMAIL": [{"ID": "7", "VALUE_TYPE": "WORK", "VALUE": email, "TYPE_ID": "EMAIL"}],
                              "PHONE": [{"ID": "8", "VALUE_TYPE": "MOBILE", "VALUE": "+79161234567",
                                         "TYPE_ID": "PHONE"}]}

    def put_order(self, oid: int, cid: int, amount: str, *, at: datetime, bad: bool = False,
                  semantic: str = "S") -> None:
        self.deals[oid] = {"ID": str(oid), "TITLE": f"Deal #{oid}", "TYPE_ID": "SALE",
                           "STAGE_ID": {"S": "WON", "F": "LOSE", "P": "NEW"}[semantic], "STAGE_SEMANTIC_ID": semantic,
                           "CATEGORY_ID": "0", "CURRENCY_ID": "RUB", "OPPORTUNITY": "n/a" if bad else amount,
                           "CONTACT_ID": str(cid), "CLOSED": "Y" if semantic != "P" else "N",
                           "DATE_CREATE": b24(at), "DATE_MODIFY": b24(at),
                           "CLOSEDATE": b24_date(at) if self.close_dates else ""}
        self.product_rows[oid] = [product_row(oid, 450, "Товар #2", price=0 if bad else float(amount))]

    def order_ids(self) -> set[int]:
        return set(self.deals)

    def delete_order(self, oid: int, *, at: datetime) -> None:
        """A deleted deal disappears from crm.deal.list; only the ONCRMDEALDELETE event tells."""
        self.deals.pop(oid)

    def since_ok(self, old_cursor: dict, lookback: timedelta) -> bool:
        wanted = [datetime.fromisoformat(old_cursor[k]) for k in ("contacts", "orders")]
        got = [datetime.fromisoformat(s) for s in self.since_seen[-2:] if s]
        # the pull's first read starts UNKNOWN_OFFSET_SLACK earlier: no answer has told the portal's offset yet
        slack = [UNKNOWN_OFFSET_SLACK, timedelta(0)]
        return len(got) == 2 and all(w - lookback - d <= g <= w for w, g, d in zip(wanted, got, slack))

    def _guard(self, handler):
        def callback(request):
            if self.failures:
                if isinstance(self.failures[0], Exception):
                    return self.failures.pop(0)  # responses raises it, as requests would
                status, headers, *body = self.failures.pop(0)  # (status, headers[, body])
                return status, headers, body[0] if body else json.dumps({
                    "error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
            if self.bad_key:
                return 401, {}, json.dumps({"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"})
            result = handler(json.loads(request.body or b"{}"))
            return 200, {"Content-Type": "application/json"}, json.dumps({
                "result": result, "time": {"start": 1.0, "finish": 1.1, "duration": 0.1, "operating": 0,
                                           "date_start": T0.astimezone(self.zone).isoformat()}})
        return callback

    def _batch(self, body):
        """``batch``: ``{"halt": 0, "cmd": {key: "method?query"}}`` → per-key results and errors (200 always)."""
        cmd = body["cmd"]
        assert body.get("halt") in (0, False) and 0 < len(cmd) <= 50, "at most 50 sub-calls per batch"
        self.batches.append(list(cmd.values()))
        results, errors = {}, {}
        code = self.batch_failures.pop(0) if self.batch_failures else None
        for key, call in cmd.items():
            method, _, query = call.partition("?")
            assert method == "crm.deal.productrows.get"
            deal = int(dict(parse_qsl(query))["id"])
            if code:
                errors[key] = {"error": code, "error_description": "Too many requests"}
            elif deal in self.row_errors:
                errors[key] = self.row_errors[deal]
            elif deal not in self.deals:
                errors[key] = {"error": "", "error_description": "Not found"}
            else:
                results[key] = self.product_rows.get(deal, [])
        return {"result": results or [], "result_error": errors or [], "result_total": [], "result_next": [],
                "result_time": {k: {"start": 1.0, "finish": 1.1, "duration": 0.1} for k in results}}

    def _list(self, store: dict[int, dict]):
        def handler(body):
            flt = body["filter"]
            assert body["start"] == -1 and body["order"] == {"ID": "ASC"} and "ID" in body["select"]
            since = flt.get(">=DATE_MODIFY")
            if flt[">ID"] == 0:
                self.since_seen.append(since)
            at = None if since is None else datetime.fromisoformat(since)
            if at is not None and self.offset_lost:
                at = at.replace(tzinfo=self.zone)
            rows = [r for k, r in sorted(store.items())
                    if (self.stuck or k > flt[">ID"]) and (at is None or not isinstance(r, dict)  # (a row of another shape: sent)
                                                             or datetime.fromisoformat(r["DATE_MODIFY"]) >= at)]
            if store is self.deals and self.between_pages is not None:
                hook, self.between_pages = self.between_pages, None
                hook()
            return rows[:50]
        return handler


def product_row(deal: int, product: int, name: str, *, price: float, quantity: float = 1, discount: float = 0,
                row_id: int | None = None) -> dict:
    """A ``crm.deal.productrows.get`` row as the vendor documents it (PRICE = final unit price)."""
    return {"ID": str(row_id or deal * 10), "OWNER_ID": str(deal), "OWNER_TYPE": "D", "PRODUCT_ID": product,
            "PRODUCT_NAME": name, "ORIGINAL_PRODUCT_NAME": name, "PRODUCT_DESCRIPTION": None, "PRICE": price,
            "PRICE_EXCLUSIVE": price, "PRICE_NETTO": price + discount, "PRICE_BRUTTO": price + discount,
            "PRICE_ACCOUNT": f"{price:.2f}", "QUANTITY": quantity, "DISCOUNT_TYPE_ID": 2 if discount else 1,
            "DISCOUNT_RATE": 10 if discount else 0, "DISCOUNT_SUM": discount, "TAX_RATE": None,
            "TAX_INCLUDED": "Y", "CUSTOMIZED": "Y", "MEASURE_CODE": 796, "MEASURE_NAME": "шт", "SORT": 10,
            "XML_ID": f"sale_basket_{row_id or deal}", "TYPE": 1, "STORE_ID": 0}


def make_source(sleep=None, clock=None, **cfg) -> Bitrix24Source:
    return Bitrix24Source(Bitrix24Config(**cfg), Bitrix24Secrets(webhook_url=HOOK), sleep=sleep or (lambda s: None),
                          clock=clock or (lambda: T0 + timedelta(days=1)))


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def test_won_deals_are_orders_and_keyset_pages_end(rsps):
    fake = FakeBitrix24(rsps)
    for c in range(1, 121):
        fake.put_contact(c, f"C{c}@Example.com", at=T0)
    fake.put_order(1, 1, "1500.00", at=T0)
    fake.put_order(2, 1, "99.00", at=T0, semantic="F")
    fake.put_order(3, 1, "50.00", at=T0, semantic="P")
    con = duckdb.connect()
    result = make_source().pull(con)
    # 50 + 50 + 20 contacts and an empty page, one deal page and an empty one, one batch of product rows for the one
    # won deal; all of it again by the pass after the backfill, which starts at its highest DATE_MODIFY (T0, every
    # record's) − lookback
    assert result.contacts == 120 and len(rsps.calls) == (4 + 2 + 1) * 2
    assert fake.batches == [["crm.deal.productrows.get?id=1"]] * 2
    assert con.execute("SELECT order_id, customer_id, amount, currency, status, ordered_at FROM staged_orders "
                       "ORDER BY 1").fetchall() == [
        ("1", "1", Decimal("1500.00"), "RUB", "completed", NOON), ("2", "1", Decimal("99.00"), "RUB", "cancelled", NOON),
        ("3", "1", Decimal("50.00"), "RUB", "cancelled", NOON)]  # CLOSEDATE: T0's day, at noon in the zone (UTC)
    row = con.execute("SELECT email, phone, first_name, attributes FROM staged_contacts WHERE customer_id = '7'"
                      ).fetchone()
    assert row[:3] == ("c7@example.com", "+79161234567", "Ann")
    assert json.loads(row[3]) == {"city": "Москва", "source": "WEB", "type": "CLIENT"}


def test_won_deals_get_their_product_rows_one_batch_per_page(rsps):
    fake = FakeBitrix24(rsps)
    fake.put_contact(1, "a@example.com", at=T0)
    for d in range(1, 61):
        fake.put_order(d, 1, "100.00", at=T0)
    fake.put_order(61, 1, "5.00", at=T0, semantic="F")  # lost: its rows are never asked for
    fake.product_rows[1] = [  # the vendor's documented example, plus a free-form row (PRODUCT_ID 0)
        product_row(1, 450, "Товар #2", price=899.1, quantity=2, discount=99.9, row_id=5),
        product_row(1, 449, "Товар #1", price=100, row_id=4),
        product_row(1, 0, "Доставка", price=300, row_id=6)]
    con = duckdb.connect()
    result = make_source().pull(con)
    assert result.orders == 61 and result.bad_row_count == 0
    # 60 won deals on two pages (50 + 11 deals): two batches of 50 and 10 sub-calls, one request each
    assert [len(b) for b in fake.batches] == [50, 10] * 2  # (and again: the pass after the backfill reads from T0)
    assert not any("id=61" in call for b in fake.batches for call in b)
    assert con.execute("SELECT line_no, sku, name, quantity, price FROM staged_line_items WHERE order_id = '1' "
                       "ORDER BY line_no").fetchall() == [
        (1, "450", "Товар #2", Decimal("2.000"), Decimal("899.10")),
        (2, "449", "Товар #1", Decimal("1.000"), Decimal("100.00")),
        (3, None, "Доставка", Decimal("1.000"), Decimal("300.00"))]
    assert con.execute("SELECT discount FROM staged_orders WHERE order_id = '1'").fetchone() == (Decimal("199.80"),)
    assert con.execute("SELECT count(DISTINCT order_id) FROM staged_line_items").fetchone() == (60,)


def test_a_failed_product_row_sub_call_keeps_the_deal_and_reports_it(rsps):
    fake = FakeBitrix24(rsps)
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10", at=T0)
    fake.put_order(2, 1, "20", at=T0)
    fake.put_order(3, 1, "30", at=T0)
    fake.row_errors[2] = {"error": "", "error_description": "Access denied"}
    fake.product_rows[3] = [{**product_row(3, 7, "Чай", price=30), "QUANTITY": "lots"}]
    con = duckdb.connect()
    result = make_source().pull(con)
    assert [r[0] for r in con.execute("SELECT order_id FROM staged_orders ORDER BY 1").fetchall()] == ["1", "2", "3"]
    assert [r[0] for r in con.execute("SELECT DISTINCT order_id FROM staged_line_items").fetchall()] == ["1"]
    bad = {b.row: b for b in result.bad_rows}
    assert set(bad) == {"2", "3"} and result.bad_row_count == 2
    assert bad["2"].field == "productrows" and "Access denied" in bad["2"].reason
    assert (bad["3"].field, bad["3"].value) == ("productrows.QUANTITY", "lots")


def test_a_failed_product_row_sub_call_quoting_the_webhook_code_is_masked_in_the_bad_row_and_the_log(rsps, caplog):
    """A sub-call's error text went into the bad row's reason as the portal wrote it; bad-row reasons are logged
    and are the report's bad_row_reasons (the reason strings of the pull's bad rows)."""
    fake = FakeBitrix24(rsps)
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10", at=T0)
    fake.row_errors[1] = {"error": "ERROR_CORE", "error_description": f"Internal error at /rest/1/{CODE}/ " + "x" * 300}
    with caplog.at_level(logging.WARNING):
        result = make_source().pull(duckdb.connect())
    [bad] = result.bad_rows
    assert bad.field == "productrows" and bad.reason.startswith("line items not read (Internal error at /rest/1/")
    assert CODE not in bad.reason + str(bad) + caplog.text and "x" * 300 not in bad.reason
    assert "Internal error at /rest/1/" in caplog.text


def test_rate_limit_inside_a_batch_retries_the_batch_and_auth_errors_stop(rsps):
    fake = FakeBitrix24(rsps)
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10", at=T0)
    fake.batch_failures = ["QUERY_LIMIT_EXCEEDED"]  # HTTP 200, the error sits in result_error
    waits: list[float] = []
    con = duckdb.connect()
    make_source(sleep=waits.append).pull(con)
    assert len(fake.batches) == 3 and waits  # retried once, after a back-off (+ the pass after the backfill)
    assert con.execute("SELECT count(*) FROM staged_line_items").fetchone() == (1,)
    fake.batch_failures = ["insufficient_scope"]
    with pytest.raises(AuthError, match="BITRIX24_WEBHOOK_URL") as err:
        make_source().pull(duckdb.connect())
    assert CODE not in str(err.value) and AUTH_ADVICE in str(err.value)  # what to do, as for an HTTP 401


def test_line_items_can_be_switched_off(rsps):
    fake = FakeBitrix24(rsps)
    rsps.assert_all_requests_are_fired = False
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10", at=T0)
    con = duckdb.connect()
    make_source(line_items=False).pull(con)
    assert fake.batches == [] and con.execute("SELECT count(*) FROM staged_line_items").fetchone() == (0,)


def test_explicit_stage_ids_and_pipelines(rsps):
    fake = FakeBitrix24(rsps)
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10", at=T0, semantic="P")
    fake.deals[1]["STAGE_ID"] = "C2:PAID"
    fake.deals[1]["CATEGORY_ID"] = "2"
    con = duckdb.connect()
    make_source(won_stage_ids=["C2:PAID"], category_ids=[2]).pull(con)
    assert con.execute("SELECT status FROM staged_orders").fetchall() == [(OrderStatus.COMPLETED.value,)]


def test_a_portal_that_ignores_the_id_filter_cannot_loop(rsps):
    fake = FakeBitrix24(rsps)
    for c in range(1, 51):
        fake.put_contact(c, f"c{c}@example.com", at=T0)
    fake.stuck = True
    rsps.assert_all_requests_are_fired = False
    with pytest.raises(FatalError, match="twice"):
        make_source().pull(duckdb.connect())


#: what the credentials error says to do (sources.md §3.1: an inbound webhook can have an expiry date)
AUTH_ADVICE = ("an inbound webhook stops working once past its expiry date (when it was given one), deleted or its "
               "user deactivated, and needs the crm scope: make a new one and set BITRIX24_WEBHOOK_URL")


def envelope(code: str, description: str) -> tuple[int, dict, str]:
    """Bitrix24's error envelope answered with HTTP 200 (a box portal, a proxy in front of it)."""
    return 200, {"Content-Type": "application/json"}, json.dumps({"error": code, "error_description": description})


def test_an_error_envelope_answered_with_http_200_is_that_error(rsps):
    """A rate limit answered 200 is retried like the 503 it stands for; an expired code is the credentials error
    naming the variable; any other code stops the pull naming it and its description (was: "answer has no
    'result'" for all three, and a rate limit failed the pull at once)."""
    fake = FakeBitrix24(rsps)
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10", at=T0)
    fake.failures = [envelope("QUERY_LIMIT_EXCEEDED", "Too many requests")]
    waits: list[float] = []
    con = duckdb.connect()
    result = make_source(sleep=waits.append).pull(con)
    assert (result.orders, result.contacts) == (1, 1) and len(waits) == 1
    fake.failures = [envelope("expired_token", "The access token provided has expired.")]
    with pytest.raises(AuthError, match=r"Bitrix24 refused crm\.contact\.list \(expired_token\); check "
                                        r"BITRIX24_WEBHOOK_URL") as err:
        make_source().pull(duckdb.connect())
    assert AUTH_ADVICE in str(err.value)  # what to do, as for an HTTP 401
    fake.failures = [envelope("ERROR_CORE", f"Internal error at /rest/1/{CODE}/")]
    with pytest.raises(FatalError, match=r"Bitrix24 crm\.contact\.list: answered the error ERROR_CORE \(Internal "
                                         r"error at /rest/1/\*\*\*/\)") as fatal:
        make_source().pull(duckdb.connect())
    fake.failures = [envelope(f"/rest/1/{CODE}/ not found", "")]  # the code itself quoting the webhook URL
    with pytest.raises(FatalError, match=r"list: answered the error /rest/1/\*\*\*/ not found$") as code:
        make_source().pull(duckdb.connect())
    assert CODE not in str(err.value) + str(fatal.value) + str(code.value)


def test_check_and_the_webhook_code_never_leaks(rsps):
    fake = FakeBitrix24(rsps, pull=False, check=True)
    assert make_source().check() == "demo.bitrix24.ru (as Ann Admin)"
    fake.bad_key = True
    with pytest.raises(AuthError, match="BITRIX24_WEBHOOK_URL") as err:
        make_source().check()
    assert CODE not in str(err.value)


def test_malformed_webhook_url_is_a_config_error():
    with pytest.raises(ConfigError, match="BITRIX24_WEBHOOK_URL"):
        Bitrix24Source(Bitrix24Config(), Bitrix24Secrets(webhook_url="demo.bitrix24.ru"))


# ---------------------------------------------------------------- events

APP_TOKEN = "s6r8t2appToken"


def event(token: str = APP_TOKEN, ts: datetime = T0, name: str = "ONCRMDEALUPDATE") -> bytes:
    return urlencode({"event": name, "event_handler_id": "21", "data[FIELDS][ID]": "1185", "ts": int(ts.timestamp()),
                      "auth[domain]": "demo.bitrix24.ru", "auth[client_endpoint]": "https://demo.bitrix24.ru/rest/",
                      "auth[member_id]": "a223c6b3710f85df22e9377d6c4f7553",
                      "auth[application_token]": token}).encode()


def test_event_application_token_valid_forged_and_stale():
    now = T0 + timedelta(seconds=30)
    assert verify_webhook({}, event(), APP_TOKEN, now=now)
    assert not verify_webhook({}, event(token="forged-token"), APP_TOKEN, now=now)
    assert not verify_webhook({}, event(), APP_TOKEN, now=T0 + timedelta(days=1))  # stale / replayed later
    assert not verify_webhook({}, b"\xff\xfe garbage", APP_TOKEN, now=now)
    assert not verify_webhook({}, event(token=""), "", now=now)


def test_deal_delete_event_is_a_cancelled_tombstone():
    (order,), contacts = parse_webhook({}, event(name="ONCRMDEALDELETE"))
    assert contacts == []
    assert (order.order_id, order.status, order.amount, order.ordered_at) == (
        "1185", OrderStatus.CANCELLED, Decimal(0), T0)
    assert parse_webhook({}, event(name="ONCRMDEALUPDATE")) == ([], [])
    with pytest.raises(ValueError, match="not a deal id"):
        parse_webhook({}, event(name="ONCRMDEALDELETE").replace(b"1185", b"x1"))


def test_event_refs_and_parse():
    assert webhook_refs(event()) == [("ONCRMDEALUPDATE", "1185", f"21:{int(T0.timestamp())}:1185")]
    assert parse_webhook({}, event()) == ([], [])
    with pytest.raises(ValueError, match="unsupported event"):
        parse_webhook({}, event(name="ONTASKADD"))
    with pytest.raises(ValueError, match="data\\[FIELDS\\]\\[ID\\]"):
        parse_webhook({}, b"event=ONCRMDEALADD")


@pytest.mark.parametrize("offset_lost", [False, True])
@pytest.mark.parametrize("hours", [-5, 3, 14])
def test_an_incremental_pull_overlaps_the_lookback_in_any_portal_zone(rsps, hours, offset_lost):
    """The ``>=DATE_MODIFY`` filter is written in the portal's offset (its answers' ``time.date_start``; before the
    first answer, 12 hours earlier in UTC), so a deal and a contact modified within the lookback before the cursor
    are read again whether the portal honours the filter's offset or reads its wall clock in its own zone (the
    offset lost). Before (main at resync29's start): the cursor in UTC; a portal west of UTC reading its wall clock
    skipped them (a gap): the case UTC-05:00 with the offset lost fails on the records read (nothing staged); the
    other five read both records on main too (an offset honoured, or a zone east of UTC: a longer overlap) and
    fail only on the last line, the filter written in UTC rather than in the portal's offset."""
    fake = FakeBitrix24(rsps)
    fake.zone, fake.offset_lost = timezone(timedelta(hours=hours)), offset_lost
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10.00", at=T0)
    con = duckdb.connect()
    first = make_source().pull(con)  # the backfill: the cursor is T0, every record's DATE_MODIFY
    assert json.loads(first.cursor) == {"contacts": T0.isoformat(), "orders": T0.isoformat()}
    late = T0 - timedelta(minutes=5)  # committed late: within the 10-minute lookback
    fake.put_contact(2, "b@example.com", at=late)
    fake.put_order(2, 2, "20.00", at=late)
    make_source().pull(con, first.cursor)
    assert [r[0] for r in con.execute("SELECT order_id FROM staged_orders ORDER BY 1").fetchall()] == ["1", "2"]
    assert [r[0] for r in con.execute("SELECT customer_id FROM staged_contacts ORDER BY 1").fetchall()] == ["1", "2"]
    orders_since = datetime.fromisoformat(fake.since_seen[-1])
    assert orders_since == T0 - timedelta(minutes=10) and orders_since.utcoffset() == timedelta(hours=hours)
