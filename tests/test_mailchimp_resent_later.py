"""cross35: a Mailchimp create sent again by a LATER run after its answer was lost is recorded as rfmsync's.

A create batch whose every attempt lost its answer (the retry gave up), one answered with an HTML page, or one in
flight when its run was killed, is sent again by the next run: Mailchimp answers it ``ERROR_CONTACT_EXISTS`` when
the earlier send was carried out, and the contact was reported ``existed`` and never recorded in
``subscribed_by_us``, so a later withdrawal in the source was never named. Now the engine hands the destination,
for the creates with a pending ``upsert`` failure, the start of the run that sent them
(:func:`sync.planning.doubt.earlier_sends`), and Mailchimp checks their opt-in times against it
(:mod:`sync.destinations.mailchimp_resent`). Against the fake Mailchimp, on both ledger engines, through the CLI
and through :func:`sync.engine.execute_plan`."""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from connectors.retry import RetryPolicy
from sync.destinations.mailchimp import MailchimpDestination
from sync.destinations.mailchimp_api import Sent
from sync.destinations.mailchimp_resent import since
from sync.engine import execute_plan
from sync.ledger import Ledger
from sync.model import ContactChange, ItemResult
from sync.planning.doubt import earlier_sends
from sync.planning.plan import Plan
from tests import ledger_fixtures
from tests.builders import run_cli as cli
from tests.fakes.mailchimp import FakeMailchimp, now
from tests.fakes.mailchimp import mailchimp_fake  # noqa: F401  (fixture)
from tests.test_config_moved import shop  # noqa: F401  (fixture)
from tests.test_config_moved import AS_OF
from tests.test_mailchimp_resent import _reads
from tests.test_withdrawn_subscribed import NAME, _json, _set_consent, _yes_customers

ledger_url = ledger_fixtures.ledger_url  # the fixture: SQLite, and PostgreSQL when RFMSYNC_TEST_PG_URL is set
WARNED = "sent again after its answer was lost in an earlier run"


def _create(email: str, status: str = "subscribed") -> ContactChange:
    return ContactChange(email, email, f"C-{email}", "A", True, status, add_tags=frozenset({"rfm:A"}),
                         set_fields={"SEGMENT": "A"})


def _plan(changes: list[ContactChange]) -> Plan:
    return Plan("mc", "mailchimp", tuple(changes), (), ("rfm:A",), {"SEGMENT": "segment"}, 0)


@pytest.fixture
def client(mailchimp_fake: FakeMailchimp) -> MailchimpDestination:  # noqa: F811
    return MailchimpDestination("mc", "aud1", mailchimp_fake.api_key, api_url=mailchimp_fake.url, timeout=2,
                                batch_size=10, max_connections=2,
                                retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:  # noqa: F811
    led = Ledger.connect(ledger_url)  # the host's clock: the runs' starts are compared with Mailchimp's
    yield led
    led.close()


def _killed_with_creates_in_flight(ledger: Ledger, keys: list[str]) -> int:
    """A run that ended without finishing with these creates in flight (as a kill leaves it, once found)."""
    dead = ledger.start_run("sync", "mc")
    ledger.note_in_flight("mc", dead, {"upsert": list(keys)})
    ledger.finish_run(dead, "failed", {})
    return dead


def test_a_create_every_attempt_of_which_lost_its_answer_is_recorded_by_the_next_run(  # noqa: F811
        shop, mailchimp_fake, ledger_url, monkeypatch):
    """The first sync's create batch is carried out and both its attempts lose their answers: the retry gives up,
    its creates fail (pending ``upsert`` failures). The second sync creates them again; Mailchimp answers "already
    a member". Those the first sync created subscribed are recorded as rfmsync's all the same, so when one of them
    says no in the source, the plan names him; the member who subscribed himself long before is not recorded.
    Fails without the fix: the second sync reported every one ``existed`` and recorded none."""
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    monkeypatch.setenv("RFMSYNC_HTTP_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("RFMSYNC_HTTP_MAX_WAIT_SECONDS", "0.2")
    (c1, m1), (c2, m2) = _yes_customers(shop)[:2]
    mailchimp_fake.add_member(m2, status="subscribed", list_id="aud1")  # subscribed himself in 2024
    mailchimp_fake.drop(times=10, method="POST", path=r"^/lists/aud1$")  # every create batch: done, unanswered
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--format", "json", code=4)  # gave up: the run failed
    mailchimp_fake._faults.clear()  # Mailchimp answers again
    members = mailchimp_fake.lists["aud1"].members
    subscribed = sorted(k for k, m in members.items() if m["status"] == "subscribed" and k != m2)
    assert m1 in subscribed
    with Ledger.connect(ledger_url) as led:
        assert led.subscribed_keys(NAME) == []
        assert {key for key, op in led.doubted_ops(NAME) if op == "upsert"} >= {m1, m2}  # in doubt
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--format", "json")
    assert mailchimp_fake.violations == []
    with Ledger.connect(ledger_url) as led:
        assert sorted(led.subscribed_keys(NAME)) == subscribed  # m2 not among them
        assert led.pending_failures(NAME) == []
    for customer in (c1, c2):
        _set_consent(shop, customer, "да", "нет")
    cli("pull", "--config", str(shop))
    doc = _json(cli("plan", "--config", str(shop), "--as-of", AS_OF, "--format", "json"))
    assert doc["plans"][0]["withdrawn_subscribed"] == [m1]


def test_a_killed_runs_create_is_recorded_by_the_next_apply_with_this_plans_fields(
        mailchimp_fake, client, ledger):  # noqa: F811
    """A run killed with two subscribed creates in flight: Mailchimp created one of them after that run started
    (without the fields this plan writes); the other subscribed himself long before. The next apply turns them
    into pending failures, and its create of each is answered "already a member": the first is recorded as
    rfmsync's, his fields written (that run's send may have carried other values) and tagged; the other is not
    recorded. Fails without the fix (neither recorded)."""
    fake = mailchimp_fake
    _killed_with_creates_in_flight(ledger, ["new@example.com", "old@example.com"])
    fake.add_member("new@example.com", status="subscribed", since=now())  # the killed run's send, carried out
    fake.add_member("old@example.com", status="subscribed")  # in 2024
    report = execute_plan(_plan([_create("new@example.com"), _create("old@example.com")]), client, ledger)
    assert report.status == "succeeded" and report.counts["failed"] == 0, report.errors
    assert ledger.subscribed_keys("mc") == ["new@example.com"]
    assert ledger.pending_failures("mc") == []  # the doubts settled by the upserts and adds that succeeded
    assert _reads(fake) == 1  # one list read for the call's two
    assert fake.member("new@example.com")["merge_fields"] == {"SEGMENT": "A"}
    assert fake.tags_of("new@example.com") == {"rfm:A"} and fake.tags_of("old@example.com") == {"rfm:A"}
    state = ledger.load_state("mc")
    assert state["new@example.com"].exists and state["new@example.com"].fields == {"SEGMENT": "A"}
    assert fake.violations == []


def test_a_doubt_sent_again_and_lost_again_is_still_dated_from_the_killed_runs_start(
        mailchimp_fake, client, ledger_url):  # noqa: F811
    """Run K, an hour ago, killed with x's create in flight, carried out (x opted in then). Run D sends it again and
    is answered with an HTML page after Mailchimp did the work: its failure is the same pending upsert, now of run
    D. Run E sends it again, answered "already a member": x is recorded. Fails without the doubt dated from K's
    start (review-cross35): the doubt was dated when D found it, inside D, so E's check started at D's start and
    took x, there for an hour, for one there before, silently."""
    shift = [timedelta(hours=-1)]
    led = Ledger.connect(ledger_url, clock=lambda: datetime.now(timezone.utc) + shift[0])
    try:
        fake = mailchimp_fake
        _killed_with_creates_in_flight(led, ["x@example.com"])  # K, an hour ago
        fake.add_member("x@example.com", status="subscribed", since=time.strftime(  # K's send, carried out
            "%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3590)))
        shift[0] = timedelta(0)
        fake.answer_raw(b"<html><body>Service busy</body></html>", path=r"^/lists/aud1$", work=True)
        execute_plan(_plan([_create("x@example.com")]), client, led)  # D: the upsert fails again
        assert [key for key, op in led.doubted_ops("mc") if op == "upsert"] == ["x@example.com"]
        fake._faults.clear()
        report = execute_plan(_plan([_create("x@example.com")]), client, led)  # E
        assert report.status == "succeeded", report.errors
        assert led.subscribed_keys("mc") == ["x@example.com"]
    finally:
        led.close()


def test_no_pending_upsert_failure_no_member_read_and_one_ledger_read(mailchimp_fake, client, ledger):  # noqa: F811
    """A normal run: the create of a member there before is answered "already a member" and not read (the fake
    counts no member read), and the ledger is asked once, by the failures' key, whether any upsert is pending."""
    mailchimp_fake.add_member("old@example.com", status="subscribed")
    sent: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        sent.append(statement.lower())

    event.listen(Engine, "before_cursor_execute", note)
    try:
        report = execute_plan(_plan([_create("old@example.com"), _create("new@example.com")]), client, ledger)
    finally:
        event.remove(Engine, "before_cursor_execute", note)
    assert report.status == "succeeded"
    assert _reads(mailchimp_fake) == 0
    assert ledger.subscribed_keys("mc") == ["new@example.com"]
    asked = [s for s in sent if "first_failed_at" in s and "started_at" in s]
    assert len(asked) == 1 and "failures.destination =" in asked[0]
    assert not any("max(runs.started_at)" in s for s in sent)


def test_a_date_not_believed_records_nobody_and_warns(mailchimp_fake, client, ledger, caplog):  # noqa: F811
    """The answer to the next run's create carries a Date an hour off the host's clock (a proxy's): the earlier
    run's start cannot be put on Mailchimp's clock, so nothing is read and nobody recorded; a WARNING says so."""
    fake = mailchimp_fake
    _killed_with_creates_in_flight(ledger, ["new@example.com"])
    fake.add_member("new@example.com", status="subscribed", since=now())
    fake.date_offset = 3600.0
    with caplog.at_level(logging.WARNING):
        execute_plan(_plan([_create("new@example.com")]), client, ledger)
    assert ledger.subscribed_keys("mc") == [] and _reads(fake) == 0
    line = next(r.getMessage() for r in caplog.records if WARNED in r.getMessage())
    assert "new@example.com" in line and "more than 5 minutes from this host's clock" in line


def test_a_member_who_opted_in_just_before_the_earlier_run_is_unclear_and_warned_of(
        mailchimp_fake, client, ledger, caplog):  # noqa: F811
    """A member who opted in a few minutes before the earlier run started (within the clock margin): not told
    apart from that run's create, so not recorded, and a WARNING names him (not "there before" in silence)."""
    fake = mailchimp_fake
    fake.add_member("near@example.com", status="subscribed",
                    since=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 300)))
    _killed_with_creates_in_flight(ledger, ["near@example.com"])
    with caplog.at_level(logging.WARNING):
        execute_plan(_plan([_create("near@example.com")]), client, ledger)
    assert ledger.subscribed_keys("mc") == []
    line = next(r.getMessage() for r in caplog.records if WARNED in r.getMessage())
    assert "near@example.com" in line and "times tell nothing" in line


def test_the_earliest_send_is_the_start_of_the_run_that_sent_it(ledger):  # noqa: F811
    """A failure that failed again in a later run (its run id the later one's): the first run's start; a killed
    run's create in doubt (made a failure by the next run): the killed run's start, not the doubt's time; a
    failure naming no run: the start of the run under way when it first failed, or (none) when it first failed."""
    first = ledger.start_run("sync", "mc")
    ledger.record_failures("mc", first, [ItemResult("again@x.io", "upsert", False, "timeout")])
    ledger.record_failures("mc", None, [ItemResult("orphan@x.io", "upsert", False, "timeout")])
    ledger.finish_run(first, "partial", {})
    killed = ledger.start_run("sync", "mc")
    ledger.note_in_flight("mc", killed, {"upsert": ["doubt@x.io"], "tag+VIP": ["tag@x.io"]})
    ledger.finish_run(killed, "failed", {})
    nxt = ledger.start_run("sync", "mc")
    ledger.doubt_in_flight("mc", nxt, lambda keys: {})
    ledger.record_failures("mc", nxt, [ItemResult("again@x.io", "upsert", False, "timeout")])
    ledger.record_failures("other", nxt, [ItemResult("else@x.io", "upsert", False, "timeout")])
    starts = {r["id"]: r["started_at"] for r in ledger.recent_runs(10)}
    orphan = next(f for f in ledger.pending_failures("mc") if f["key"] == "orphan@x.io")
    assert ledger.upsert_sent_since("mc") == {"again@x.io": starts[first], "doubt@x.io": starts[killed],
                                              "orphan@x.io": starts[first]}
    assert orphan["first_failed_at"] >= starts[first]
    assert ledger.upsert_sent_since("nobody") == {}
    assert ledger.upsert_sent_since("mc", ["doubt@x.io", "else@x.io"]) == {"doubt@x.io": starts[killed]}
    ledger.record_failures("lone", None, [ItemResult("lone@x.io", "upsert", False, "timeout")])
    assert ledger.upsert_sent_since("lone") == {"lone@x.io": ledger.pending_failures("lone")[0]["first_failed_at"]}


def test_only_a_client_that_checks_is_asked_and_only_for_subscribed_creates(monkeypatch) -> None:
    """SendGrid and Unisender cannot tell a create from an update (every create is recorded): the ledger is not
    even read for them; for Mailchimp, only the plan's subscribed creates with a pending upsert are handed over,
    asked of the ledger by key for a small plan (a webhook resync's: none asked without a subscribed create), of
    the whole destination for a large one (its changes not walked first)."""
    from sync.planning import doubt

    at = datetime(2026, 12, 8, 1, 0, tzinfo=timezone.utc)
    asked: list[list[str] | None] = []

    class Ledger_:
        def upsert_sent_since(self, destination: str, keys: list[str] | None = None) -> dict[str, datetime]:
            assert destination == "mc"
            asked.append(keys)
            return {"a@x.io": at, "tx@x.io": at, "upd@x.io": at}

    class Checks:
        checks_earlier_creates = True

    update = ContactChange("upd@x.io", "upd@x.io", "C", "A", False, None, set_fields={"SEGMENT": "A"})
    plan = _plan([_create("a@x.io"), _create("tx@x.io", "transactional"), _create("b@x.io"), update])
    assert earlier_sends(Ledger_(), plan, Checks()) == {"a@x.io": at}
    assert asked == [["a@x.io", "b@x.io"]]
    assert earlier_sends(None, plan, object()) == {}  # (None: a read would fail)
    assert earlier_sends(None, _plan([update, _create("tx@x.io", "transactional")]), Checks()) == {}
    monkeypatch.setattr(doubt, "BY_KEY", 3)
    assert earlier_sends(Ledger_(), plan, Checks()) == {"a@x.io": at} and asked[-1] is None


def test_the_bound_is_the_earlier_runs_start_on_mailchimps_clock() -> None:
    """The earlier run's start (the host's clock) moved by how far the answer's Date is from the host's clock when
    it arrived, less a second and the slack; with a lost attempt of this call too, the earlier of the two."""
    date = datetime(2026, 12, 8, 2, 0, 30, tzinfo=timezone.utc)
    at = date + timedelta(seconds=20)  # Mailchimp's clock 20 s behind the host's
    start = datetime(2026, 12, 8, 1, 0, 0, tzinfo=timezone.utc)
    dated = Sent(answered=110.0, date=date, dated=True, at=at)
    assert since(dated, now=at, earlier=start) == start - timedelta(seconds=21) - timedelta(minutes=1)
    assert since(dated, now=at) is None  # no lost attempt, no earlier run: nothing to bound
    both = Sent(lost_at=100.0, answered=110.0, date=date, dated=True, at=at)
    assert since(both, now=at, earlier=start) == start - timedelta(seconds=81)
    assert since(both, now=at, earlier=at) == date - timedelta(seconds=11) - timedelta(minutes=1)
    assert since(dated, now=at + timedelta(minutes=6), earlier=start) is None  # the Date not believed

