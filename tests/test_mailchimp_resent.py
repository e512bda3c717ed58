"""cross34: a Mailchimp create sent again after its answer was lost is rfmsync's when the lost send created him.

The retry layer sends a create batch again when its answer is lost (the connection dropped after Mailchimp did the
work, a timeout); Mailchimp answers the re-send ``ERROR_CONTACT_EXISTS`` for the members the first send created.
They were reported ``existed`` and never recorded in ``subscribed_by_us``, so a later withdrawal in the source was
never named. Now each such ``subscribed`` create is read once and recorded when its opt-in time is no earlier than
the lost send (sync.destinations.mailchimp_resent). Against the fake Mailchimp (official SDK over loopback), and
end to end through the CLI on both ledger engines."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from sync.destinations.mailchimp_api import Sent
from sync.destinations.mailchimp_resent import MemberOpt, created_since, since
from sync.ledger import Ledger
from tests import ledger_fixtures
from tests.builders import run_cli as cli
from tests.fakes.mailchimp import FakeMailchimp
from tests.fakes.mailchimp import mailchimp_fake  # noqa: F401  (fixture)
from tests.test_config_moved import shop  # noqa: F401  (fixture)
from tests.test_config_moved import AS_OF
from tests.test_mailchimp import BATCH, Recorder, change, make
from tests.test_mailchimp import sleeps  # noqa: F401  (fixture)
from tests.test_withdrawn_subscribed import NAME, _json, _set_consent, _yes_customers

ledger_url = ledger_fixtures.ledger_url  # the fixture: SQLite, and PostgreSQL when RFMSYNC_TEST_PG_URL is set
MEMBER = r"/lists/aud1/members/[0-9a-f]{32}$"


def _reads(fake: FakeMailchimp) -> int:
    return sum(n for call, n in fake.calls.items() if call.startswith("GET /lists/aud1/members/"))


@pytest.mark.parametrize("lost", ["dropped", "timeout"])
def test_a_create_whose_lost_send_created_him_is_reported_created(mailchimp_fake, sleeps, lost) -> None:
    """The first send created both (the connection dropped, or the answer came too late); the re-send answers
    them "already a member". The new one is created by rfmsync (not ``existed``), with no field update after it
    (the lost send carried this call's fields); the one the audience held before stays ``existed``."""
    fake = mailchimp_fake
    fake.add_member("old@example.com", status="subscribed")  # subscribed himself long ago
    if lost == "dropped":
        fake.drop(method="POST", path=f"^{BATCH}$")
    else:
        fake.stall(3.0, method="POST", path=f"^{BATCH}$")  # the work done, the answer later than the timeout
    dest = make(fake, sleeps, timeout=1.0)
    dest.prepare(["rfm:A"], {})
    rec = Recorder()
    dest.apply([change("new@example.com", status="subscribed", fields={"FNAME": "N"}, add={"rfm:A"}),
                change("old@example.com", status="subscribed", fields={"FNAME": "O"}, add={"rfm:A"})], rec)
    new, old = rec.results[("new@example.com", "upsert")], rec.results[("old@example.com", "upsert")]
    assert new.ok and not new.existed
    assert old.ok and old.existed
    assert fake.count("POST", BATCH) == 3  # the create, its re-send, the old member's field update alone
    updates = [body for method, path, _, body in fake.requests if method == "POST" and path == BATCH
               and body.get("update_existing")]
    assert [[m["email_address"] for m in body["members"]] for body in updates] == [["old@example.com"]]
    assert _reads(fake) == 2  # each subscribed create answered "exists" read once
    assert fake.member("new@example.com")["merge_fields"] == {"FNAME": "N"}
    assert fake.tags_of("new@example.com") == {"rfm:A"} and fake.tags_of("old@example.com") == {"rfm:A"}
    assert fake.member("old@example.com")["status"] == "subscribed" and fake.violations == []


def test_no_read_without_a_lost_answer_nor_after_throttling(mailchimp_fake, sleeps) -> None:
    """The reads are bounded: a create answered "exists" at its first send (the member was there), or after a
    429 (turned away before any work), is not read; nor is a transactional create after a lost answer."""
    fake = mailchimp_fake
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        fake.add_member(email, status="subscribed")
    dest = make(fake, sleeps)
    rec = Recorder()
    dest.apply([change("a@example.com", status="subscribed")], rec)
    fake.fail(429, method="POST", path=f"^{BATCH}$")
    dest.apply([change("b@example.com", status="subscribed")], rec)
    fake.drop(method="POST", path=f"^{BATCH}$")
    dest.apply([change("c@example.com", status="transactional"), change("d@example.com", status="transactional")],
               rec)
    assert len(sleeps) == 2 and _reads(fake) == 0
    # (d, created transactional by the lost send, is reported as found there: no record is kept of it either way)
    assert all(rec.results[(k, "upsert")].ok and rec.results[(k, "upsert")].existed
               for k in ("a@example.com", "b@example.com", "c@example.com", "d@example.com"))


def test_a_read_that_fails_records_nobody_says_so_and_loses_nothing(mailchimp_fake, sleeps, caplog) -> None:
    fake = mailchimp_fake
    fake.drop(method="POST", path=f"^{BATCH}$")
    fake.fail(500, times=None, fraction=1.0, method="GET", path=MEMBER)
    dest = make(fake, sleeps)
    dest.prepare(["rfm:A"], {})
    rec = Recorder()
    with caplog.at_level(logging.WARNING):
        dest.apply([change("new@example.com", status="subscribed", fields={"FNAME": "N"}, add={"rfm:A"})], rec)
    assert all(r.ok for r in rec.results.values()) and rec.results[("new@example.com", "upsert")].existed
    assert fake.member("new@example.com")["merge_fields"] == {"FNAME": "N"} and fake.tags_of("new@example.com")
    line = next(r.getMessage() for r in caplog.records if "sent again after its answer was lost" in r.getMessage())
    assert "new@example.com" in line and "not recorded as created by rfmsync" in line


def _member(status: str = "subscribed", opt: str = "", signup: str = "") -> MemberOpt:
    return MemberOpt(email_address="a@example.com", status=status, timestamp_opt=opt, timestamp_signup=signup)


def test_the_bound_is_the_vendors_clock_less_the_time_measured_since_the_lost_send() -> None:
    date = datetime(2026, 12, 7, 12, 0, 30, tzinfo=timezone.utc)
    bound = since(Sent(lost_at=100.0, answered=110.0, date=date))
    assert bound == date - timedelta(seconds=11) - timedelta(minutes=1)
    assert since(Sent(lost_at=100.0, answered=110.0, date=None)) is None  # no Date: nothing can be told
    assert created_since(_member(opt="2026-12-07T11:59:19+00:00"), bound)
    assert not created_since(_member(opt="2026-12-07T11:59:18+00:00"), bound)  # opted in before the lost send
    assert not created_since(_member(status="unsubscribed", opt="2026-12-07T12:00:20+00:00"), bound)
    # signed up before (a form's double opt-in) and confirmed meanwhile: not rfmsync's
    assert not created_since(_member(opt="2026-12-07T12:00:20+00:00", signup="2026-12-06T10:00:00+00:00"), bound)
    assert created_since(_member(opt="", signup=""), bound) is None  # his times tell nothing
    assert created_since(_member(opt="2026-12-07 12:00:20"), bound) is None  # no zone: not read


def test_a_withdrawal_after_a_create_whose_answer_was_lost_is_named(shop, mailchimp_fake, ledger_url,  # noqa: F811
                                                                   monkeypatch):
    """The first sync's create batch is carried out, its answer lost (the connection dropped); the retry answers
    every member "already a member". Those rfmsync created subscribed are recorded all the same, so when one of
    them says no in the source, the plan names him; a member who subscribed himself before is not."""
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    (c1, m1), (c2, m2) = _yes_customers(shop)[:2]
    mailchimp_fake.add_member(m2, status="subscribed", list_id="aud1")  # he subscribed himself before
    mailchimp_fake.drop(method="POST", path=r"^/lists/aud1$")  # the first create batch: done, its answer lost
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--format", "json")
    assert mailchimp_fake.count("POST", "/lists/aud1") >= 2 and mailchimp_fake.violations == []
    members = mailchimp_fake.lists["aud1"].members
    subscribed = sorted(k for k, m in members.items() if m["status"] == "subscribed" and k != m2)
    led = Ledger.connect(ledger_url)
    try:
        assert m1 in subscribed and sorted(led.subscribed_keys(NAME)) == subscribed
    finally:
        led.close()
    for customer in (c1, c2):
        _set_consent(shop, customer, "да", "нет")
    cli("pull", "--config", str(shop))
    doc = _json(cli("plan", "--config", str(shop), "--as-of", AS_OF, "--format", "json"))
    assert doc["plans"][0]["withdrawn_subscribed"] == [m1]
