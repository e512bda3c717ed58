"""A host whose clock runs ahead of the vendor's: every API source's run start is the earlier of the two clocks.

The pass after a backfill reads from the run start − lookback, and the bookmark is capped at the run start. Taken
from a host clock 30 minutes fast, both were 30 minutes past the vendor's own time: an order edited on a page the
backfill had already read, 29 minutes before the host's "now" in the vendor's time, was read by no pass, and a
later edit moved the bookmark past it for good. The vendor's clock is its answers' ``Date`` header (faked here at
the HTTP level on every answer of each vendor-shaped fake).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime

import duckdb
import pytest
import responses

from connectors.errors import AuthError, ConfigError, FatalError
from connectors.http import HttpClient
from connectors.incremental import RunStart, Stager, server_date
from connectors.records import OrderStatus

from .test_cli_pull import rsps, run, seeded, shop  # noqa: F401  (fixtures)
from .test_source_contract import API_SOURCES, CASES, DAY, T0, merge, seed

HOST_AHEAD = timedelta(minutes=30)


class VendorClock:
    """Adds the vendor's ``Date`` header (RFC 9110 IMF-fixdate, whole seconds) to every answer of the fake that has
    none (a failure the fake answers may carry its own)."""

    def __init__(self, rsps: responses.RequestsMock, now: datetime) -> None:
        self.now = now
        for match in rsps.registered():
            match.callback = self._dated(match.callback)

    def _dated(self, inner):
        def callback(request):
            answer = inner(request)
            if isinstance(answer, Exception):
                return answer
            status, headers, body = answer
            return status, {"Date": format_datetime(self.now, usegmt=True), **headers}, body  # (a failure's own)
        return callback


@pytest.fixture(params=API_SOURCES)
def case(request):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        c = CASES[request.param]
        yield request.param, c, c.fake(rsps), rsps


def test_an_edit_during_a_backfill_by_a_host_clock_ahead_of_the_vendor_is_not_lost(case, caplog):
    """Between two backfill pages a manager edits order 1 (already read) and deletes order 2 at the vendor's 09:31,
    and order 1000 is created at 09:50 as the backfill goes on; the host's clock said 10:00 when the pull began, the
    vendor's 09:30. After the backfill and the next pull the store holds order 1's edit and not order 2."""
    name, c, fake, rsps = case
    seed(fake, orders=60)
    host_start = T0 + DAY
    vendor = VendorClock(rsps, host_start - HOST_AHEAD)
    tombstones = []

    def live_edits() -> None:
        edited = vendor.now + timedelta(minutes=1)
        fake.put_order(1, 2, "99", at=edited)
        fake.delete_order(2, at=edited)
        if c.deletion_webhook is not None:  # the vendor's delete webhook, the only way these vendors tell
            tombstones.extend(c.deletion_webhook(2, edited))
        fake.put_order(1000, 1, "7", at=vendor.now + timedelta(minutes=20))
        vendor.now += timedelta(minutes=20)

    fake.between_pages = live_edits
    con, store = duckdb.connect(), {"orders": {}, "contacts": {}}
    with caplog.at_level(logging.WARNING, logger="connectors.runstart"):
        first = c.source(clock=lambda: host_start).pull(con)
    assert fake.between_pages is None, "the edits did not happen mid-backfill"
    merge(con, store)
    store["orders"].update((t.order_id, (t.amount, t.status)) for t in tombstones)
    vendor.now += timedelta(minutes=30)
    c.source(clock=lambda: host_start + timedelta(hours=1)).pull(con, first.cursor)
    merge(con, store)
    completed = {oid: amount for oid, (amount, status) in store["orders"].items() if status == OrderStatus.COMPLETED}
    assert completed["1"] == Decimal("99") and completed["1000"] == Decimal("7")
    assert sorted(completed, key=int) == sorted((str(i) for i in fake.order_ids()), key=int)
    assert any("30 minutes ahead" in r.getMessage() for r in caplog.records), caplog.text


def backfill_with_live_edits(c, fake, vendor: VendorClock, clock, after=lambda: None) -> dict:
    """A backfill during which order 1 (on a page already read) is edited and order 2 deleted, then a pull an hour
    later: the store's completed orders (id -> amount)."""
    seed(fake, orders=60)
    tombstones = []

    def live_edits() -> None:
        edited = vendor.now + timedelta(minutes=1)
        fake.put_order(1, 2, "99", at=edited)
        fake.delete_order(2, at=edited)
        if c.deletion_webhook is not None:
            tombstones.extend(c.deletion_webhook(2, edited))
        vendor.now += timedelta(minutes=20)
        after()

    fake.between_pages = live_edits
    con, store = duckdb.connect(), {"orders": {}, "contacts": {}}
    first = c.source(clock=clock).pull(con)
    assert fake.between_pages is None, "the edits did not happen mid-backfill"
    merge(con, store)
    store["orders"].update((t.order_id, (t.amount, t.status)) for t in tombstones)
    vendor.now += timedelta(minutes=30)
    c.source(clock=lambda: clock() + timedelta(hours=1)).pull(con, first.cursor)
    merge(con, store)
    return {oid: amount for oid, (amount, status) in store["orders"].items() if status == OrderStatus.COMPLETED}


def test_a_host_clock_more_than_a_day_ahead_still_starts_the_pull_by_the_vendor_s(case, caplog):
    """A host 25 hours fast (a date set wrong): the vendor's Date, after every time it stamped, is its clock however
    far behind the host's it is (judged by the host's, it was ignored and order 1's edit lost on every source)."""
    name, c, fake, rsps = case
    host_start = T0 + 3 * DAY
    vendor = VendorClock(rsps, host_start - timedelta(hours=25))
    with caplog.at_level(logging.WARNING, logger="connectors.runstart"):
        completed = backfill_with_live_edits(c, fake, vendor, lambda: host_start)
    assert completed["1"] == Decimal("99") and "2" not in completed
    assert f"{name}: this host's clock is 1500 minutes ahead of the vendor's" in caplog.text
    assert "Date header" not in caplog.text


def test_answers_without_a_date_before_the_first_dated_one_still_start_the_pull_by_the_vendor_s_clock(case):
    """The backfill's first answers carry no Date (a front that adds none), later ones do. The run start was the
    vendor's time of the first dated answer, 20 minutes into the backfill: order 1's edit, on a page already read,
    was lost (RetailCRM). The host's clock (30 minutes fast, running) gives the skew: the pull starts 30 minutes
    before the host's start."""
    name, c, fake, rsps = case
    vendor = VendorClock(rsps, T0 + DAY - HOST_AHEAD)
    dated = []
    for match in rsps.registered():
        def undated(request, inner=match.callback):
            status, headers, body = inner(request)
            return status, headers if dated else {k: v for k, v in headers.items() if k != "Date"}, body
        match.callback = undated
    completed = backfill_with_live_edits(c, fake, vendor, lambda: vendor.now + HOST_AHEAD, lambda: dated.append(1))
    assert completed["1"] == Decimal("99") and "2" not in completed


def test_the_run_start_is_the_earlier_clock_and_a_dateless_or_garbled_answer_keeps_the_host_s():
    host = T0 + DAY
    assert RunStart(host)() == host  # no answer yet
    start = RunStart(host)
    start.answered(host + timedelta(minutes=3))  # the vendor's clock ahead: the host's earlier start stands
    assert start() == host
    start.answered(host - timedelta(hours=2))  # the host's clock seen 2 hours ahead: the largest skew counts
    start.answered(host - timedelta(hours=1))
    assert start() == host - timedelta(hours=2)
    behind = RunStart(host)
    behind.answered(None)  # an answer without a usable Date header
    behind.answered(host - HOST_AHEAD)
    assert behind() == host - HOST_AHEAD
    assert behind.skew == HOST_AHEAD


def test_a_date_earlier_than_a_time_the_vendor_stamped_is_not_used_however_near_the_host_s_clock(caplog):
    """A cached answer's Date two hours old, earlier than the previous bookmark: not the vendor's clock now (believed,
    it pulled the run start two hours back); a later Date after it is."""
    host = T0 + DAY
    stager = Stager(duckdb.connect(), "src")
    start = RunStart(host, "src", stager=stager)
    stager.saw(host - timedelta(minutes=5))  # the previous bookmark
    with caplog.at_level(logging.WARNING, logger="connectors.runstart"):
        start.answered(host - timedelta(hours=2))
        assert start() == host
    assert "src: an answer's Date header says 2026-01-11T07:00:00+00:00, earlier than 2026-01-11T08:55:00+00:00" \
        in caplog.text and "not used" in caplog.text
    start.answered(host - timedelta(minutes=3))
    assert start() == host - timedelta(minutes=3)
    near = RunStart(host, "src", stager=stager)  # 50 s before the bookmark: servers' clocks a little apart
    near.answered(host - timedelta(minutes=5, seconds=50))
    assert near() == host - timedelta(minutes=5, seconds=50)
    stale = RunStart(host, "src", stager=stager)  # 2 minutes before it: a stale header
    stale.answered(host - timedelta(minutes=7))
    assert stale() == host


def test_a_record_dated_in_the_future_does_not_turn_the_vendor_s_clock_off():
    """A lead whose updated_at an integration set to 2030 is read on every pull: a time later than this host's clock
    is not one the vendor has reached, so the Date of its answers is still judged and believed (the host 10 minutes
    ahead: the run starts 10 minutes earlier)."""
    host = T0 + DAY
    stager = Stager(duckdb.connect(), "src")
    start = RunStart(host, "src", stager=stager)
    stager.saw(host + timedelta(days=4 * 365))
    start.answered(host - timedelta(minutes=10))
    assert start() == host - timedelta(minutes=10)


def test_the_date_of_a_200_answer_that_is_not_json_is_not_the_vendor_s_clock():
    """A 200 HTML page (a captive portal, a proxy's login page) dates its sender's clock: its Date is not told to the
    run start; that of the vendor's JSON answer is."""
    client = HttpClient(base_url="https://crm.example", vendor="CRM", auth_env="CRM_TOKEN", url_env="CRM_URL")
    dates: list[str | None] = []
    client.on_date = dates.append
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, "https://crm.example/page", body="<html>sign in</html>", content_type="text/html",
                 headers={"Date": "Sun, 11 Jan 2026 06:30:00 GMT"})
        rsps.add(responses.GET, "https://crm.example/page", json={"rows": []},
                 headers={"Date": "Sun, 11 Jan 2026 08:30:00 GMT"})
        with pytest.raises(FatalError, match="not JSON"):
            client.fetch("GET", "page")
        assert dates == []
        assert client.fetch("GET", "page")[0] == {"rows": []}
    assert dates == ["Sun, 11 Jan 2026 08:30:00 GMT"]


def time_cursors(cursor: str) -> list[datetime]:
    """The bookmarks of a pull's cursor that are times (RetailCRM's are history ids once its feed has entries)."""
    return [datetime.fromisoformat(v) for v in json.loads(cursor).values() if not v.isdigit()]


def test_a_gateway_error_s_date_is_not_the_vendor_s_clock(case, caplog):
    """The pull's first answer is a proxy's 504 (retried) whose Date is its own clock, two hours behind; every answer
    after it is the vendor's, on the host's time. The run start and the bookmarks stay on the host's clock, and no
    warning blames it (on hunt22: the run start went two hours back, and the bookmarks with it)."""
    name, c, fake, rsps = case
    seed(fake, orders=6)
    host = T0 + timedelta(minutes=10)
    VendorClock(rsps, host)
    fake.failures = [(504, {"Date": format_datetime(host - timedelta(hours=2), usegmt=True),
                            "Content-Type": "text/html"}, "<html>gateway timeout</html>")]
    with caplog.at_level(logging.WARNING, logger="connectors.runstart"):
        result = c.source(sleep=lambda s: None, clock=lambda: host).pull(duckdb.connect())
    assert not fake.failures and result.orders == 6
    assert all(t >= T0 for t in time_cursors(result.cursor)), result.cursor  # (the orders were changed at T0)
    assert "ahead" not in caplog.text and "Date header" not in caplog.text


def test_a_date_header_stuck_far_in_the_past_is_not_used(case, caplog):
    """Every answer says 1 January 1970 (a vendor front whose Date never moves): believed, it was the run start and
    the bookmark of every pull, each pull read everything again, and the warning told of a host clock 29 million
    minutes ahead. It is not used, with a warning naming it; the next pull reads only the lookback again."""
    name, c, fake, rsps = case
    seed(fake, orders=6, stagger=True)
    VendorClock(rsps, datetime(1970, 1, 1, tzinfo=timezone.utc))
    con = duckdb.connect()
    with caplog.at_level(logging.WARNING, logger="connectors.runstart"):
        first = c.source(clock=lambda: T0 + DAY).pull(con)
        second = c.source(clock=lambda: T0 + 2 * DAY).pull(con, first.cursor)
    assert first.orders == 6 and second.orders <= 1, (first.cursor, second.cursor)
    assert all(t.year == 2026 for t in time_cursors(first.cursor) + time_cursors(second.cursor))
    warned = [r.getMessage() for r in caplog.records if "Date header" in r.getMessage()]
    assert len(warned) == 2 and f"{name}: an answer's Date header says 1970-01-01T00:00:00+00:00, earlier than 2026-" \
        in warned[0] and "not used" in warned[0] and "edits made during the pull may be missed" in warned[0], warned
    assert "ahead" not in caplog.text


def test_a_vendor_clock_more_than_a_day_behind_is_not_used_and_a_later_one_is():
    host = T0 + DAY
    start = RunStart(host)
    start.answered(host - DAY - timedelta(seconds=1))  # a stale header: waits for one that tells the time
    assert start() == host and start.skew is None
    start.answered(host - DAY)  # a day behind: still a clock (a host whose zone is set 14 hours wrong, and more)
    assert start() == host - DAY


@pytest.mark.parametrize("header, expected", [
    ("Sun, 11 Jan 2026 08:30:00 GMT", T0 + DAY - HOST_AHEAD),
    ("Sunday, 11-Jan-26 08:30:00 GMT", T0 + DAY - HOST_AHEAD),  # the obsolete RFC 850 form
    (None, None), ("", None), ("yesterday", None), ("Sun, 11 Jan 2026 08:30:00", None),  # no zone: not trusted
    ("Fri, 31 Dec 9999 23:59:59 -0100", None),  # in UTC past datetime's last year (was an OverflowError)
])
def test_server_date_reads_the_date_header(header, expected):
    assert server_date(header) == expected


def test_a_retailcrm_cursor_taken_when_the_history_was_quiet_is_the_vendor_s_time(caplog):
    """A RetailCRM backfill during which no customer changed saves the run start as the customers' cursor (there
    is no history id yet). By a host clock 30 minutes fast, the next pull's ``filter[startDate]`` skipped the
    customer created 5 minutes after the backfill in the vendor's time: never read, by any later pull either."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = CASES["retailcrm"].fake(rsps)
        seed(fake, orders=3)
        host_start = T0 + DAY
        vendor = VendorClock(rsps, host_start - HOST_AHEAD)
        con = duckdb.connect()
        first = CASES["retailcrm"].source(clock=lambda: host_start).pull(con)
        fake.put_contact(7, "late@example.com", at=vendor.now + timedelta(minutes=5))
        vendor.now += timedelta(minutes=40)
        CASES["retailcrm"].source(clock=lambda: host_start + timedelta(minutes=10)).pull(con, first.cursor)
        assert "7" in {r[0] for r in con.execute("SELECT customer_id FROM staged_contacts").fetchall()}


def test_rfmsync_pull_by_a_host_clock_ahead_stores_the_customer_created_after_a_quiet_pull(rsps, shop, caplog):
    """End to end (``rfmsync pull`` twice, RetailCRM): the customer created 5 minutes (vendor's time) after a pull
    that saw no change is in the order store after the next pull, and the pull warns of the host's clock."""
    fake = seeded(rsps)
    vendor = VendorClock(rsps, datetime.now(timezone.utc) - HOST_AHEAD)
    with caplog.at_level(logging.WARNING, logger="connectors.runstart"):
        first = run("pull", "--config", str(shop))
    assert first.exit_code == 0, first.output
    assert re.search(r"retailcrm: this host's clock is (29|30) minutes ahead of the vendor's", caplog.text)
    fake.put_contact(12, "late@example.com", at=vendor.now + timedelta(minutes=5))
    vendor.now += timedelta(minutes=10)
    second = run("pull", "--config", str(shop))
    assert second.exit_code == 0 and "pulled 0 orders and 1 contact" in second.output, second.output
    con = duckdb.connect(str(shop.parent / "rfmsync.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT email FROM contacts WHERE customer_id = '12'").fetchall() == [("late@example.com",)]
    finally:
        con.close()


def _answers_dated_1970_are_no_pull_s(source, vendor, rsps, caplog) -> None:
    """The client, its pull over, fetches again while the vendor's front answers a Date stuck in 1970: no pull's
    run start judges those answers, so no stale-header warning."""
    vendor.now = datetime(1970, 1, 1, tzinfo=timezone.utc)
    first = rsps.calls[0].request
    with caplog.at_level(logging.WARNING, logger="connectors.runstart"):
        for _ in range(2):
            source.http.fetch(first.method, first.url, json_body=json.loads(first.body) if first.body else None)
    assert "Date header" not in caplog.text


def test_a_finished_pull_stops_listening_to_the_client_s_answers(case, caplog):
    """After a pull, done or failed, the same client is used again (a ``check``, a webhook's fetch) while the vendor's
    front answers a Date stuck in 1970: those answers are no pull's. While the finished pull's run start still
    listened, it judged them against the pull's records and warned of a stale header in a pull that had ended."""
    name, c, fake, rsps = case
    rsps.assert_all_requests_are_fired = False
    seed(fake, orders=3)
    vendor = VendorClock(rsps, T0 + DAY)
    source = c.source(clock=lambda: T0 + DAY)
    source.pull(duckdb.connect())
    assert source.http.on_date is None
    fake.bad_key = True  # a pull that fails stops listening too
    with pytest.raises(AuthError):
        source.pull(duckdb.connect())
    assert source.http.on_date is None
    fake.bad_key = False
    source.pull(duckdb.connect())
    _answers_dated_1970_are_no_pull_s(source, vendor, rsps, caplog)


def test_a_pull_that_fails_on_its_saved_cursor_stops_listening_too(case, caplog):
    """A garbled saved cursor fails the pull before it reads anything (a ConfigError): its run start, already
    listening to the client, must stop too, or the client's next answers (a webhook's fetch, whose Date is stuck in
    1970) are judged as that failed pull's and warned of."""
    name, c, fake, rsps = case
    rsps.assert_all_requests_are_fired = False
    seed(fake, orders=3)
    vendor = VendorClock(rsps, T0 + DAY)
    source = c.source(clock=lambda: T0 + DAY)
    source.pull(duckdb.connect())
    with pytest.raises(ConfigError, match="cursor"):
        source.pull(duckdb.connect(), "not json")
    assert source.http.on_date is None
    _answers_dated_1970_are_no_pull_s(source, vendor, rsps, caplog)
