"""amoCRM / Kommo v4 source: a HAL-shaped fake (pages, 204 past the end) and form-encoded webhooks."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode, urlsplit

import duckdb
import pytest
import responses

from connectors.amocrm import (AmoCrmConfig, AmoCrmSecrets, AmoCrmSource, parse_webhook, verify_webhook,
                               webhook_refs)
from connectors.diagnose import EARLY_DATE
from connectors.errors import AuthError, FatalError, RecordError, TransientError

SUB = "demoshop"
BASE = f"https://{SUB}.amocrm.ru"
TOKEN = "amo-long-lived-token-xyz"
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=timezone.utc)


class FakeAmo:
    auth_env = "AMOCRM_TOKEN"

    def __init__(self, rsps: responses.RequestsMock, *, pull: bool = True, check: bool = False) -> None:
        self.leads: dict[int, dict] = {}
        self.contacts: dict[int, dict] = {}
        self.failures: list[tuple[int, dict] | Exception] = []  # an exception: raised as the transport's
        self.bad_key = False
        self.since_seen: list[int | None] = []
        self.trash: dict[int, dict] = {}  # deleted leads, as ?with=only_deleted lists them
        self.trash_since_seen: list[int | None] = []
        self.between_pages = None  # called once, after the first page of leads is served
        self._last_max: dict[tuple[str, bool], int] = {}  # (entity, trash) -> max updated_at of the last page
        for entity in ("leads", "contacts") if pull else ():
            rsps.add_callback("GET", re.compile(rf"{BASE}/api/v4/{entity}(\?.*)?$"), self._guard(self._list(entity)))
        if check:
            rsps.add_callback("GET", f"{BASE}/api/v4/account", self._guard(lambda q: (200, {
                "id": 29062, "name": "Demo Shop", "subdomain": SUB, "currency": "RUB"})))

    def put_contact(self, cid: int, email: str, *, at: datetime) -> None:
        ts = int(at.timestamp())
        self.contacts[cid] = {
            "id": cid, "name": f"Ann C{cid}", "first_name": "Ann", "last_name": f"C{cid}", "created_at": ts,
            "updated_at": ts, "custom_fields_values": [
                {"field_id": 3, "field_name": "Телефон", "field_code": "PHONE", "field_type": "multitext",
                 "values": [{"value": "+7 701 123 45 67", "enum_id": 1, "enum_code": "WORK"}]},
                {"field_id": 5, "field_name": "Email", "field_code": "EMAIL", "field_type": "multitext",
                 "values": [{"value": email, "enum_id": 7, "enum_code": "WORK"}]}],
            "_embedded": {"tags": [{"id": 1, "name": "vip"}]}}

    def put_order(self, oid: int, cid: int, amount: str, *, at: datetime, bad: bool = False,
                  status_id: int = 142) -> None:
        ts = int(at.timestamp())
        self.leads[oid] = {
            "id": oid, "name": f"Deal {oid}", "price": "lots" if bad else int(Decimal(amount)),
            "status_id": status_id, "pipeline_id": 3177727, "created_at": ts, "updated_at": ts,
            "closed_at": ts if status_id in (142, 143) else None, "is_deleted": False, "account_id": 29062,
            "_embedded": {"tags": [], "contacts": [{"id": 999, "is_main": False}, {"id": cid, "is_main": True}]}}

    def delete_order(self, oid: int, *, at: datetime) -> None:
        """Move a lead to the trash: the list shows only id, updated_at/by and is_deleted from then on."""
        self.leads.pop(oid)
        self.trash[oid] = {"id": oid, "updated_at": int(at.timestamp()), "updated_by": 504141, "is_deleted": True,
                           "account_id": 29062, "_links": {"self": {"href": f"{BASE}/api/v4/leads/{oid}"}}}

    def order_ids(self) -> set[int]:
        return set(self.leads)

    def since_ok(self, old_cursor: dict, lookback: timedelta) -> bool:
        wanted = [datetime.fromisoformat(old_cursor[k]) for k in ("contacts", "orders")]
        got = self.since_seen[-2:]
        return all(g is not None and (w - lookback).timestamp() <= g <= w.timestamp() for w, g in zip(wanted, got))

    def _guard(self, handler):
        def callback(request):
            if self.failures:
                if isinstance(self.failures[0], Exception):
                    return self.failures.pop(0)  # responses raises it, as requests would
                status, headers, *body = self.failures.pop(0)  # (status, headers[, body])
                return status, headers, body[0] if body else ""
            if request.headers.get("Authorization") != f"Bearer {TOKEN}" or self.bad_key:
                return 401, {"Content-Type": "application/problem+json"}, json.dumps({
                    "title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401,
                    "detail": "Неверный логин или пароль"})
            status, body = handler(dict(parse_qsl(urlsplit(request.url).query)))
            return status, {"Content-Type": "application/hal+json"}, json.dumps(body) if body else ""
        return callback

    def _list(self, entity: str):
        """Pages as the API serves them: ``order[updated_at|id]=asc``, ``filter[updated_at][from|to]``
        (inclusive, Unix seconds), ``page``/``limit``; 204 past the end. A read's first request is logged."""
        def handler(q):
            page, limit = int(q.get("page", 1)), int(q["limit"])
            keys = [k[6:-1] for k in q if k.startswith("order[")]
            assert limit <= 250 and len(keys) == 1 and keys[0] in ("updated_at", "id") and q[f"order[{keys[0]}]"] == "asc"
            since = int(q["filter[updated_at][from]"]) if "filter[updated_at][from]" in q else None
            until = int(q["filter[updated_at][to]"]) if "filter[updated_at][to]" in q else None
            trash = q.get("with") == "only_deleted"
            store = self.trash if trash else self.leads if entity == "leads" else self.contacts
            key = (entity, trash)
            if page == 1 and until is None and (since is None or since != self._last_max.get(key)):
                (self.trash_since_seen if trash else self.since_seen).append(since)
            rows = sorted((r for r in store.values() if (since is None or r["updated_at"] >= since)
                           and (until is None or r["updated_at"] <= until)),
                          key=lambda r: (r[keys[0]], r["id"]))
            chunk = rows[(page - 1) * limit: page * limit]
            if chunk:
                self._last_max[key] = max(r["updated_at"] for r in chunk)
            if entity == "leads" and not trash and chunk and self.between_pages is not None:
                hook, self.between_pages = self.between_pages, None
                hook()
            if not chunk:
                return 204, None
            links = {"self": {"href": f"{BASE}/api/v4/{entity}?{urlencode(q)}"}}
            if page * limit < len(rows):
                links["next"] = {"href": f"{BASE}/api/v4/{entity}?{urlencode({**q, 'page': page + 1})}"}
            return 200, {"_page": page, "_links": links, "_embedded": {entity: chunk}}
        return handler


def make_source(sleep=None, clock=None, **cfg) -> AmoCrmSource:
    return AmoCrmSource(AmoCrmConfig(**({"page_size": 4} | cfg)), AmoCrmSecrets(subdomain=SUB, token=TOKEN),
                        sleep=sleep or (lambda s: None), clock=clock or (lambda: T0 + timedelta(days=1)))


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def test_won_leads_are_orders_with_the_main_contact(rsps):
    fake = FakeAmo(rsps)
    fake.put_contact(10, "Ann@Example.com", at=T0)
    fake.put_order(1, 10, "15000", at=T0)
    fake.put_order(2, 10, "500", at=T0, status_id=143)  # lost
    fake.put_order(3, 10, "700", at=T0, status_id=555)  # still open
    con = duckdb.connect()
    make_source(currency="KZT").pull(con)
    rows = con.execute("SELECT order_id, customer_id, amount, currency, status, ordered_at FROM staged_orders "
                       "ORDER BY 1").fetchall()
    assert [r[:5] for r in rows] == [("1", "10", Decimal("15000.00"), "KZT", "completed"),
                                     ("2", "10", Decimal("500.00"), "KZT", "cancelled"),
                                     ("3", "10", Decimal("700.00"), "KZT", "cancelled")]
    assert rows[0][5] == T0
    contact = con.execute("SELECT email, phone, first_name, marketing_consent, attributes FROM staged_contacts"
                          ).fetchone()
    assert contact[:4] == ("ann@example.com", "+77011234567", "Ann", "unknown")  # E.164, as file exports
    assert json.loads(contact[4]) == {"tags": "vip"}


def test_pipeline_filter_limits_what_counts(rsps):
    fake = FakeAmo(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "10", at=T0)
    con = duckdb.connect()
    make_source(pipeline_ids=[42]).pull(con)
    assert con.execute("SELECT status FROM staged_orders").fetchall() == [("cancelled",)]


def test_open_lead_without_contact_is_a_tombstone_but_a_won_one_is_counted_as_a_sale_of_nobody(rsps):
    fake = FakeAmo(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "10", at=T0, status_id=555)
    fake.put_order(2, 10, "10", at=T0)
    for lead in fake.leads.values():
        lead["_embedded"]["contacts"] = []
    con = duckdb.connect()
    result = make_source().pull(con)
    # (no purchase, and if it was one before, it leaves the history: tests/test_crm_leaving_won.py)
    assert con.execute("SELECT order_id, customer_id, amount, status FROM staged_orders").fetchall() == [
        ("1", "", Decimal("0.00"), "cancelled")]
    assert (result.bad_rows, result.anonymous_orders) == ([], 1)  # (a walk-in's: docs/sources/amocrm.md)


def test_a_deleted_lead_leaves_the_history(rsps):
    fake = FakeAmo(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "15000", at=T0)
    fake.put_order(2, 10, "700", at=T0)
    con = duckdb.connect()
    first = make_source().pull(con)
    # a first run takes back only what was deleted while it ran: the trash from its start (or the backfill's highest
    # updated_at, when earlier: a listing ended early is read on from there) − lookback
    assert fake.trash_since_seen == [int((T0 - timedelta(minutes=10)).timestamp())]
    fake.delete_order(1, at=T0 + timedelta(days=1, hours=1))
    second = make_source(clock=lambda: T0 + timedelta(days=2)).pull(con, first.cursor)
    assert con.execute("SELECT order_id, customer_id, status, amount FROM staged_orders ORDER BY 1").fetchall() == [
        ("1", "", "cancelled", Decimal("0.00")), ("2", "10", "completed", Decimal("700.00"))]  # 2: lookback
    # the trash is read from the same bookmark (minus the lookback) as the leads
    assert fake.trash_since_seen[-1] == fake.since_seen[-1]
    assert json.loads(second.cursor)["orders"] == (T0 + timedelta(days=1, hours=1)).isoformat()


def on_page(fake: FakeAmo, n: int, change) -> None:
    """Run ``change`` right after the ``n``-th page of leads (counting from 0) is served."""
    pages = iter(range(n + 1))

    def hook() -> None:
        if next(pages) == n:
            change()
        else:
            fake.between_pages = hook
    fake.between_pages = hook


def test_a_200_with_an_empty_body_mid_backfill_is_an_error_not_the_end_of_the_list(rsps):
    """Only HTTP 204 ends a list. A page answered 200 with no body (a proxy, a cut reply) taken as the end would
    stop the backfill after its first page, and the pass after the backfill, which sees a lead edited meanwhile,
    would move the bookmark to the run's start: the leads never read would never be read."""
    fake = FakeAmo(rsps)
    rsps.assert_all_requests_are_fired = False
    fake.put_contact(1, "c1@example.com", at=T0)
    for oid in range(1, 11):  # lead 10 oldest: pages of 4 in updated_at order
        fake.put_order(oid, 1, "10", at=T0 - timedelta(hours=oid))
    run_start = T0 + timedelta(days=1)

    def change() -> None:
        fake.leads[1]["updated_at"] = int((run_start - timedelta(minutes=1)).timestamp())  # edited while it ran
        fake.failures = [(200, {"Content-Type": "application/hal+json"}, "")]  # the next page: 200, no body

    on_page(fake, 0, change)
    con = duckdb.connect()
    with pytest.raises(FatalError, match=r"^amoCRM leads: HTTP 200 answered an empty body.*run the pull again"):
        make_source(clock=lambda: run_start).pull(con)
    assert not fake.failures


def test_a_short_page_with_a_next_link_is_not_the_end_of_the_list(rsps):
    """A page of fewer leads than the page size that still has ``_links.next`` (the docs promise paging stops only
    without one) was taken as the end: the backfill stopped, the pass after it saw a lead edited meanwhile and moved
    the bookmark to the run's start, and the leads after the short page were never read. The keyset goes on from
    the short page's last second."""
    fake = FakeAmo(rsps)
    fake.put_contact(1, "c1@example.com", at=T0)
    for oid in range(1, 11):  # lead 10 oldest: pages of 4 in updated_at order
        fake.put_order(oid, 1, "10", at=T0 - timedelta(hours=oid))
    run_start = T0 + timedelta(days=1)

    def change() -> None:
        fake.leads[1]["updated_at"] = int((run_start - timedelta(minutes=1)).timestamp())  # edited while it ran
        short = [fake.leads[7], fake.leads[6]]  # 2 of the 4 leads from lead 7's second on, and a next link
        nxt = {"href": f"{BASE}/api/v4/leads?page=2"}
        fake.failures = [(200, {"Content-Type": "application/hal+json"}, json.dumps(
            {"_page": 1, "_links": {"self": nxt, "next": nxt}, "_embedded": {"leads": short}}))]

    on_page(fake, 0, change)
    con = duckdb.connect()
    make_source(clock=lambda: run_start).pull(con)
    assert not fake.failures
    staged = {int(r[0]) for r in con.execute("SELECT order_id FROM staged_orders").fetchall()}
    assert staged == set(range(1, 11))


def test_a_next_link_on_every_page_even_the_last_still_ends_the_pull(rsps):
    """Were amoCRM to link a next page from its last one, the keyset (which only moves forward) still ends: a few
    requests more, no loop, every lead read once."""
    fake = FakeAmo(rsps)
    fake.put_contact(1, "c1@example.com", at=T0)
    for oid in range(1, 11):
        fake.put_order(oid, 1, "10", at=T0 - timedelta(hours=oid // 3))  # seconds shared by up to 3 leads

    def linked(inner):
        def callback(request):
            status, headers, body = inner(request)
            page = json.loads(body) if status == 200 and body else None
            if isinstance(page, dict) and "_links" in page:
                page["_links"]["next"] = {"href": f"{BASE}/api/v4/leads?page=99"}
                body = json.dumps(page)
            return status, headers, body
        return callback

    for match in rsps.registered():
        match.callback = linked(match.callback)
    con = duckdb.connect()
    make_source().pull(con)
    staged = [int(r[0]) for r in con.execute("SELECT order_id FROM staged_orders").fetchall()]
    assert sorted(staged) == list(range(1, 11)) and len(rsps.calls) < 40


def test_a_portal_answering_past_the_end_with_its_last_page_ends_a_crowded_second(rsps):
    """A crowded second is paged by number. A portal that answers a page number past the end with its last page
    (instead of 204), and links a next page from it, paged that second without end once a short page with a next
    link went on: the pass ends at a page that brings no lead it had not read, every lead read."""
    fake = FakeAmo(rsps)
    fake.put_contact(1, "c1@example.com", at=T0)
    for oid in range(1, 7):  # 6 leads of one second, pages of 4: the keyset's 2nd page is all that second
        fake.put_order(oid, 1, "10", at=T0)
    served: list[int] = []

    def clamped(inner):
        def callback(request):
            if len(served) >= 100:
                raise RuntimeError("100 requests: the pull does not end")
            query = dict(parse_qsl(urlsplit(request.url).query))
            page = int(query.get("page", 1))
            status, headers, body = inner(request)
            while status == 204 and page > 1:  # past the end: the last page again
                page -= 1
                request.url = f"{request.url.split('?')[0]}?{urlencode({**query, 'page': page})}"
                status, headers, body = inner(request)
            if status == 200:
                answer = json.loads(body)
                answer["_links"]["next"] = {"href": f"{BASE}/api/v4/leads?page={page + 1}"}
                body = json.dumps(answer)
            served.append(page)
            return status, headers, body
        return callback

    for match in rsps.registered():
        match.callback = clamped(match.callback)
    con = duckdb.connect()
    make_source().pull(con)
    staged = [int(r[0]) for r in con.execute("SELECT order_id FROM staged_orders").fetchall()]
    assert sorted(staged) == list(range(1, 7)) and len(served) < 40


def test_a_page_of_a_crowded_second_with_no_readable_id_is_an_error_not_the_end_of_the_pass(rsps):
    """A page of the crowded second whose rows are all nulls brought "no new lead" and ended the pass: both passes
    agreed, the leads on the pages after it (9-13 of 13) were never read and the pull succeeded."""
    fake = FakeAmo(rsps)
    fake.put_contact(1, "c1@example.com", at=T0)
    for oid in range(1, 14):  # 13 leads of one second, pages of 4
        fake.put_order(oid, 1, "10", at=T0)

    def nulls(inner):
        def callback(request):
            query = dict(parse_qsl(urlsplit(request.url).query))
            status, headers, body = inner(request)
            if status == 200 and query.get("order[id]") and query.get("page") == "2":
                answer = json.loads(body)
                answer["_embedded"]["leads"] = [None] * len(answer["_embedded"]["leads"])
                body = json.dumps(answer)
            return status, headers, body
        return callback

    for match in rsps.registered():
        match.callback = nulls(match.callback)
    with pytest.raises(TransientError, match=rf"^amoCRM leads: page 2 of second {int(T0.timestamp())} has no "
                                             r"lead with a readable id; nothing was saved: run the pull again$"):
        make_source().pull(duckdb.connect())


def test_a_lead_dated_past_any_clock_is_a_bad_row_and_the_pull_goes_on(rsps):
    fake = FakeAmo(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "15000", at=T0)
    fake.put_order(2, 10, "700", at=T0)
    fake.leads[2]["closed_at"] = 10 ** 20  # OverflowError in datetime.fromtimestamp, not ValueError
    con = duckdb.connect()
    result = make_source().pull(con)
    assert [(b.row, b.field) for b in result.bad_rows] == [("2", "closed_at")]
    assert con.execute("SELECT order_id FROM staged_orders").fetchall() == [("1",)]


def test_a_lead_closed_at_unix_time_0_is_a_bad_row_not_a_1970_order(rsps):
    """A date never set (Unix time 0, a second after it) was a 1970 order: 20 000 days of recency to the ESP."""
    fake = FakeAmo(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_order(1, 10, "15000", at=T0)
    fake.put_order(2, 10, "700", at=T0)
    fake.leads[2]["closed_at"] = 1
    con = duckdb.connect()
    result = make_source().pull(con)
    assert [(b.row, b.field, b.reason) for b in result.bad_rows] == [
        ("2", "closed_at", f"{EARLY_DATE} (1970-01-01 00:00:01)")]
    assert con.execute("SELECT order_id FROM staged_orders").fetchall() == [("1",)]


def test_leads_leaving_a_crowded_second_while_it_is_paged_skip_no_other_lead(rsps):
    """30 leads share one second (a robot's bulk edit), so that second is paged by number. Right after its
    first page, 6 leads of that page are deleted and 3 edited (both leave the second): the leads after them
    move up a page. The second is paged again until a pass finds every lead the one before it read."""
    fake = FakeAmo(rsps)
    fake.put_contact(1, "c1@example.com", at=T0)
    for oid in range(1, 31):
        fake.put_order(oid, 1, "10", at=T0)
    now = T0 + timedelta(days=1, seconds=30)

    def change() -> None:
        for oid in range(1, 7):
            fake.delete_order(oid, at=now)
        for oid in (7, 8, 9):
            fake.put_order(oid, 1, "99", at=now)

    on_page(fake, 2, change)  # pages: the first, the keyset from that second, the second's own page 1
    con = duckdb.connect()
    make_source().pull(con)
    assert fake.between_pages is None, "the changes did not happen mid-backfill"
    rows = con.execute("SELECT order_id, status, amount FROM staged_orders").fetchall()
    assert len(rows) == len({r[0] for r in rows}) == 30
    completed = {int(oid): amount for oid, status, amount in rows if status == "completed"}
    assert sorted(completed) == sorted(fake.order_ids()) == list(range(7, 31))
    assert {completed[oid] for oid in (7, 8, 9)} == {Decimal("99.00")}


def test_a_crowded_second_that_never_settles_is_a_clear_transient_error(rsps):
    fake = FakeAmo(rsps)
    fake.put_contact(1, "c1@example.com", at=T0)
    for oid in range(1, 60):
        fake.put_order(oid, 1, "10", at=T0)
    now = T0 + timedelta(days=1, seconds=30)
    left = iter(range(1, 60))

    def change() -> None:  # after every page from the third on, the lowest lead left leaves the second
        fake.put_order(next(left), 1, "99", at=now)
        fake.between_pages = change
    on_page(fake, 2, change)
    with pytest.raises(TransientError, match="kept changing.*run the pull again"):
        make_source().pull(duckdb.connect())


def test_check_and_auth_error(rsps):
    fake = FakeAmo(rsps, pull=False, check=True)
    assert make_source().check() == f"Demo Shop ({SUB})"
    fake.bad_key = True
    with pytest.raises(AuthError, match="AMOCRM_TOKEN") as err:
        make_source().check()
    assert TOKEN not in str(err.value)


# ---------------------------------------------------------------- webhooks

FORM = urlencode({
    "leads[status][0][id]": "25399013", "leads[status][0][status_id]": "142",
    "leads[status][0][pipeline_id]": "3177727", "leads[status][0][old_status_id]": "142677",
    "leads[status][0][price]": "15000",
    "contacts[update][0][id]": "10", "contacts[update][0][name]": "Ann",
    "contacts[update][0][custom_fields][0][id]": "5", "contacts[update][0][custom_fields][0][code]": "EMAIL",
    "contacts[update][0][custom_fields][0][values][0][value]": "Ann@Example.com",
    "contacts[update][0][custom_fields][0][values][0][enum]": "7",
    "account[subdomain]": SUB, "account[id]": "29062"}).encode()


def test_webhook_path_token_valid_and_forged():
    assert verify_webhook({}, FORM, "tok-123456", "tok-123456")
    assert not verify_webhook({}, FORM, "tok-123456", "tok-123457")
    assert not verify_webhook({}, FORM, "tok-123456", None)


def test_webhook_form_is_parsed_into_contacts_and_refs():
    orders, (contact,) = parse_webhook({}, FORM)
    assert orders == []
    assert (contact.customer_id, contact.email, contact.first_name) == ("10", "ann@example.com", "Ann")
    assert webhook_refs(FORM) == [("leads", "status", "25399013"), ("contacts", "update", "10")]


def test_webhook_deleted_leads_are_tombstones():
    body = urlencode({"leads[delete][0][id]": "25399013", "leads[delete][0][status_id]": "142",
                      "leads[delete][0][pipeline_id]": "3177727", "account[subdomain]": SUB,
                      "account[id]": "29062"}).encode()
    (order,), contacts = parse_webhook({}, body)
    assert contacts == [] and (order.order_id, order.status, order.amount) == ("25399013", "cancelled", 0)
    assert webhook_refs(body) == [("leads", "delete", "25399013")]
    with pytest.raises(RecordError, match="leads\\[delete\\].*id"):
        parse_webhook({}, b"leads[delete][0][status_id]=142")


def test_webhook_bad_payloads_raise_clear_errors():
    with pytest.raises(ValueError, match="no leads/contacts/account"):
        parse_webhook({}, b"hello=1")
    with pytest.raises(ValueError, match="both a value and a group"):
        parse_webhook({}, b"leads=1&leads[add][0][id]=2")
    with pytest.raises(RecordError, match="contacts\\[add\\].*id"):
        parse_webhook({}, b"contacts[add][0][name]=x")


@pytest.mark.parametrize("body, field", [
    (b"contacts[add][0][id]=5&contacts[add][0][custom_fields]=x", "custom_fields"),
    (b"contacts[add][0][id]=5&contacts[add][0][custom_fields][0]=x", "custom_fields"),
    (b"contacts[update][0][id]=5&contacts[update][0][_embedded]=x", "_embedded"),
    (b"contacts[update][0][id]=5&contacts[update][0][_embedded][tags]=vip", "_embedded.tags"),
])
def test_webhook_malformed_contact_fields_are_record_errors_naming_the_field(body, field):
    with pytest.raises(RecordError) as err:
        parse_webhook({}, body)
    bad = err.value.bad_row
    assert (bad.row, bad.field) == ("5", field) and "contacts[" in bad.source


def test_a_pulled_contact_with_malformed_custom_fields_is_a_bad_record_not_a_crash(rsps):
    fake = FakeAmo(rsps)
    fake.put_contact(10, "a@example.com", at=T0)
    fake.put_contact(11, "b@example.com", at=T0)
    fake.contacts[11]["custom_fields_values"] = ["EMAIL"]
    fake.contacts[10]["_embedded"] = {"tags": ["vip"]}
    con = duckdb.connect()
    result = make_source().pull(con)
    assert sorted((b.row, b.field) for b in result.bad_rows) == [("10", "_embedded.tags"),
                                                                 ("11", "custom_fields_values")]
    assert result.contacts == 0


@pytest.mark.parametrize("body", [b"contacts=x", b"leads=x&account[id]=1"])
def test_webhook_entity_without_action_groups_is_a_clear_value_error(body):
    entity = body.split(b"=")[0].decode()
    with pytest.raises(ValueError, match=f"{entity} must be grouped by action"):
        parse_webhook({}, body)
    with pytest.raises(ValueError, match=f"{entity} must be grouped by action"):
        webhook_refs(body)
