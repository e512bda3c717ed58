"""bulk36: a killed LARGE first sync's creates in doubt are checked by one read of their window, not per batch.

A run killed during a large first sync leaves every create it had in flight in doubt; the next run sends them all
again, and each create batch answered "already a member" read its own window (newest first, READ_PAGES pages,
crowded by the killed run's other creates) and then its members one by one (up to 30 s a call), most ending
unclear. Now, when the creates in doubt are more than one batch's read reaches, Mailchimp reads the window once,
oldest first, before its first create (:mod:`sync.destinations.mailchimp_window`). The page size and the batch's
read are made small here (PAGE_SIZE 20, READ_PAGES 1: more than 20 creates in doubt are prefetched) so that a few
pages show it."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from sync.destinations import mailchimp_api, mailchimp_resent
from sync.engine import execute_plan
from tests.fakes.mailchimp import FakeMailchimp, now
from tests.fakes.mailchimp import mailchimp_fake  # noqa: F401  (fixture)
from tests.test_mailchimp_resent_later import _create, _killed_with_creates_in_flight, _plan
from tests.test_mailchimp_resent_later import client, ledger, ledger_url  # noqa: F401  (fixtures)

WARNED = "sent again after its answer was lost in an earlier run"


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(mailchimp_api, "PAGE_SIZE", 20)
    monkeypatch.setattr(mailchimp_resent, "PAGE_SIZE", 20)
    monkeypatch.setattr(mailchimp_resent, "READ_PAGES", 1)
    yield


def _killed_large_sync(fake: FakeMailchimp, ledger) -> tuple[list[str], list[str]]:  # noqa: ANN001
    """60 creates in flight when the run was killed: 30 carried out (members since its start), 10 subscribed
    themselves in 2024, 20 never reached Mailchimp. The landed ones and all the keys."""
    keys = [f"m{i:02d}@example.com" for i in range(60)]
    _killed_with_creates_in_flight(ledger, keys)
    for key in keys[:30]:
        fake.add_member(key, status="subscribed", since=now())
    for key in keys[30:40]:
        fake.add_member(key, status="subscribed")
    return keys[:30], keys


def _list_reads(fake: FakeMailchimp) -> list[dict[str, str]]:
    return [q for m, p, q, _ in fake.requests
            if m == "GET" and p == "/lists/aud1/members" and "since_timestamp_opt" in q]


def _single_reads(fake: FakeMailchimp) -> int:
    return sum(1 for m, p, _, _ in fake.requests if m == "GET" and p.startswith("/lists/aud1/members/"))


def test_a_killed_large_syncs_creates_are_checked_by_one_read_of_their_window(
        mailchimp_fake, client, ledger, caplog):  # noqa: F811
    """The next apply records exactly the 30 the killed run created, reading the window once (2 pages of 20,
    oldest first), with no batch's own list read, no single read, no WARNING. Fails without the prefetch: every
    batch answered "exists" read its window newest first, then its members one by one."""
    fake = mailchimp_fake
    landed, keys = _killed_large_sync(fake, ledger)
    with caplog.at_level(logging.WARNING):
        report = execute_plan(_plan([_create(k) for k in keys]), client, ledger)
    assert report.status == "succeeded" and report.counts["failed"] == 0, report.errors
    assert sorted(ledger.subscribed_keys("mc")) == sorted(landed + keys[40:])  # the 20 new ones created now
    reads = _list_reads(fake)
    assert [q["sort_dir"] for q in reads] == ["ASC", "ASC"] and [q["offset"] for q in reads] == ["0", "20"]
    assert _single_reads(fake) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("sync.destinations")], \
        caplog.text
    assert fake.violations == []


def test_a_member_leaving_the_window_mid_prefetch_is_no_silent_miss(
        mailchimp_fake, client, ledger, caplog):  # noqa: F811
    """A member of the window unsubscribes between the prefetch's two pages: the offsets shift and the first
    member of the second page is skipped. The read is not complete, says so, and the creates it did not list are
    checked by their batches: every landed one still subscribed is recorded, none taken for "there before"."""
    fake = mailchimp_fake
    landed, keys = _killed_large_sync(fake, ledger)
    done = []

    def leave(method: str, path: str, query: dict[str, str]) -> None:
        if path == "/lists/aud1/members" and query.get("sort_dir") == "ASC" and query.get("offset") == "0" \
                and not done:
            fake.member(landed[0])["status"] = "unsubscribed"  # the first listed leaves: page 2 starts one later
            done.append(1)

    fake.after = leave
    with caplog.at_level(logging.WARNING):
        report = execute_plan(_plan([_create(k) for k in keys]), client, ledger)
    assert report.status == "succeeded", report.errors
    mine = set(ledger.subscribed_keys("mc"))
    assert set(landed[1:]) <= mine and not mine & set(keys[30:40])  # m20, skipped by the offsets, recorded
    assert "changed while it was paged" in caplog.text


def test_a_prefetch_whose_date_is_not_believed_leaves_the_batches_as_before(
        mailchimp_fake, client, ledger, caplog):  # noqa: F811
    """The prefetch's answer carries a Date an hour off: no prefetch (a WARNING says so); each batch as before
    (its own Date not believed either: nobody recorded of the earlier run's, a WARNING)."""
    fake = mailchimp_fake
    _killed_large_sync(fake, ledger)
    fake.date_offset = 3600.0
    keys = [f"m{i:02d}@example.com" for i in range(60)]
    with caplog.at_level(logging.WARNING):
        execute_plan(_plan([_create(k) for k in keys]), client, ledger)
    assert "missing or not believed" in caplog.text and WARNED in caplog.text
    assert set(ledger.subscribed_keys("mc")) == set(keys[40:])
    assert [q.get("sort_dir") for q in _list_reads(fake)] == ["ASC"]  # the first page only


def test_a_prefetch_page_failing_twice_leaves_the_batches_as_before(
        mailchimp_fake, client, ledger, caplog):  # noqa: F811
    """The prefetch's first page fails twice (its 2 attempts): no prefetch, a WARNING says so, and each batch
    checks its own as before (its own list read, newest first): the landed ones are recorded all the same."""
    fake = mailchimp_fake
    landed, keys = _killed_large_sync(fake, ledger)
    fake.fail(500, times=2, method="GET", path=r"^/lists/aud1/members$")
    with caplog.at_level(logging.WARNING):
        report = execute_plan(_plan([_create(k) for k in keys]), client, ledger)
    assert report.status == "succeeded", report.errors
    assert "each create batch answered \"already a member\" checks its own" in caplog.text
    assert sorted(ledger.subscribed_keys("mc")) == sorted(landed + keys[40:])
    assert "DESC" in [q.get("sort_dir") for q in _list_reads(fake)]


def test_a_few_creates_in_doubt_are_checked_by_their_batch_as_before(mailchimp_fake, client, ledger):  # noqa: F811
    """No more creates in doubt than one page holds (20 here): no prefetch, the batch's own read."""
    fake = mailchimp_fake
    keys = [f"f{i:02d}@example.com" for i in range(20)]
    _killed_with_creates_in_flight(ledger, keys)
    for key in keys[:10]:
        fake.add_member(key, status="subscribed", since=now())
    report = execute_plan(_plan([_create(k) for k in keys]), client, ledger)
    assert report.status == "succeeded", report.errors
    assert sorted(ledger.subscribed_keys("mc")) == keys
    assert "ASC" not in [q.get("sort_dir") for q in _list_reads(fake)]


def test_a_stop_asked_during_the_prefetch_ends_it_and_nothing_is_created(mailchimp_fake, client, ledger):  # noqa: F811
    """The prefetch's pages are a read phase: the apply's caller is asked between them (``on_results([])``, which
    raises when the run is stopped or its lock lost), so a stop during a long prefetch (a 1 M window is ~1,000 pages)
    ends it there: no further page, no create call."""
    fake = mailchimp_fake
    _, keys = _killed_large_sync(fake, ledger)

    class Stopped(Exception):
        pass

    def on_results(results) -> None:  # noqa: ANN001
        if not results:
            raise Stopped

    since = datetime.now(timezone.utc) - timedelta(minutes=5)  # the killed run's start
    with pytest.raises(Stopped):
        client.apply([_create(k) for k in keys], on_results, earlier=dict.fromkeys(keys, since))
    assert len(_list_reads(fake)) == 1  # the first page, then asked: stopped
    assert not [p for m, p, _, _ in fake.requests if m == "POST"]
