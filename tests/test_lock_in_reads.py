"""A destination lock lost during a long read phase is noticed before any write (sync.engine.execute_plan: a
client calls ``on_results([])`` between its reads; the engine checks the lock once the destination is prepared).

Unisender under ``new_contacts = "pending"`` first reads every changed known contact (``getContact``, one call
each: minutes to hours on a large change) and reported nothing meanwhile, so a lock taken by another run in that
phase still let the first import go out; SendGrid searches the contacts to remove (100 a call) before the first
removal. Real time as in tests/test_engine_lock.py: the lock's TTL is 1.5 s, refreshed every 0.5 s; the fakes
answer their reads slowly; another holder takes the lock during the reads (as after this process stalled past
the TTL). On SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
from typing import Callable

import pytest

from connectors.retry import RetryPolicy
from sync.destinations.sendgrid import SendGridDestination
from sync.destinations.unisender import UnisenderDestination
from sync.engine import execute_plan
from sync.errors import LockLostError
from sync.ledger import Ledger
from sync.model import ContactChange, ItemResult
from sync.planning.plan import Plan
from tests import ledger_fixtures, test_engine_lock

# the fixtures: two ledgers on one database (SQLite, and PostgreSQL when RFMSYNC_TEST_PG_URL is set)
ledger_url, ledgers = ledger_fixtures.ledger_url, test_engine_lock.ledgers

TTL = test_engine_lock.TTL
NEXT = "other-host:1:next"


def take_the_lock_when(other: Ledger, ready: Callable[[], bool]) -> threading.Thread:
    """Another run takes the destination's lock once ``ready()`` (polled), as after this one stalled past the
    TTL: the heartbeat's next refresh finds it taken."""
    def run() -> None:
        deadline = time.monotonic() + 10
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        holder = other.lock_holder("sync:dest")
        assert holder and other.release_lock("sync:dest", holder)
        other.acquire_lock("sync:dest", owner=NEXT, ttl_seconds=600)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def assert_stopped(mine: Ledger, other: Ledger) -> None:
    assert other.lock_holder("sync:dest") == NEXT  # the new holder's lock is left alone
    run = mine.recent_runs(1)[0]
    assert run["status"] == "failed" and "taken by another holder" in run["error"]


def test_unisender_stops_its_contact_reads_before_any_import_when_the_lock_is_lost(ledgers, unisender_fake):
    """Known contacts under new_contacts = pending, their segment field changed: each is read first (an import
    would re-create one deleted in Unisender as 'new'), 0.3 s a read."""
    mine, other = ledgers
    unisender_fake.fields["rfm_segment"] = "string"
    emails = [f"c{i}@example.com" for i in range(12)]
    for email in emails:
        unisender_fake.add_contact(email, rfm_segment="A")
    unisender_fake.stall(0.3, times=len(emails), method="getContact")
    changes = tuple(ContactChange(e, e, f"C{i}", "B", False, "pending", set_fields={"rfm_segment": "B"})
                    for i, e in enumerate(emails))
    plan = Plan("dest", "unisender", changes, (), (), {"rfm_segment": "segment"}, 0)
    client = UnisenderDestination("dest", unisender_fake.api_key, api_url=unisender_fake.api_url, timeout=5,
                                  retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))
    thief = take_the_lock_when(other, lambda: unisender_fake.calls["getContact"] >= 2)
    with pytest.raises(LockLostError, match="sync:dest"):
        execute_plan(plan, client, mine, lock_ttl=TTL)  # 3.6 s of reads; the loss is seen within 0.5 s
    thief.join()
    assert unisender_fake.calls["importContacts"] == 0 and unisender_fake.write_calls == 0  # nothing written
    assert unisender_fake.calls["getContact"] < len(emails)  # and the reads stopped too
    assert all(unisender_fake.contacts[e]["fields"]["rfm_segment"] == "A" for e in emails)
    assert mine.load_state("dest") == {}
    assert_stopped(mine, other)


def test_unisender_sends_no_subscribe_after_a_read_during_which_the_lock_was_lost(ledgers, unisender_fake):
    """New contacts under new_contacts = pending: each is read (getContact, 1 s here: longer than a refresh
    period), then invited (subscribe, not idempotent). The lock taken during the second read: no second
    invitation."""
    mine, other = ledgers
    unisender_fake.add_list("Champions")
    emails = [f"p{i}@example.com" for i in range(4)]
    unisender_fake.stall(1.0, times=len(emails), method="getContact")
    changes = tuple(ContactChange(e, e, f"P{i}", "A", True, "pending", add_tags=frozenset({"list:Champions"}))
                    for i, e in enumerate(emails))
    plan = Plan("dest", "unisender", changes, (), ("list:Champions",), {}, 0)
    client = UnisenderDestination("dest", unisender_fake.api_key, api_url=unisender_fake.api_url, timeout=5,
                                  retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))
    thief = take_the_lock_when(other, lambda: unisender_fake.calls["getContact"] >= 2)
    with pytest.raises(LockLostError, match="sync:dest"):
        execute_plan(plan, client, mine, lock_ttl=TTL)
    thief.join()
    assert unisender_fake.invitations == [emails[0]] and unisender_fake.calls["subscribe"] == 1
    assert set(mine.load_state("dest")) == {emails[0]}  # the one invited is recorded
    assert_stopped(mine, other)


def test_sendgrid_searches_the_contacts_to_remove_and_removes_none_once_the_lock_is_lost(ledgers, sendgrid_fake):
    """300 contacts leave a list: three searches by e-mail (100 a call), 0.8 s each, before the first removal."""
    mine, other = ledgers
    sendgrid_fake.add_list("RFM A")
    emails = [f"c{i}@example.com" for i in range(300)]
    for email in emails:
        sendgrid_fake.add_contact(email, lists=["RFM A"])
    sendgrid_fake.stall(0.8, times=3, method="POST", path=r"/search/emails$")
    changes = tuple(ContactChange(e, e, f"C{i}", "B", False, "subscribed", remove_tags=frozenset({"RFM A"}))
                    for i, e in enumerate(emails))
    plan = Plan("dest", "sendgrid", changes, (), ("RFM A",), {}, 0)
    client = SendGridDestination("dest", sendgrid_fake.api_key, api_url=sendgrid_fake.url, sleep=lambda s: None,
                                 poll_interval=0.01, timeout=5,
                                 retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))
    thief = take_the_lock_when(other, lambda: sendgrid_fake.count("POST", "/v3/marketing/contacts/search/emails") >= 1)
    with pytest.raises(LockLostError, match="sync:dest"):
        execute_plan(plan, client, mine, lock_ttl=TTL)
    thief.join()
    assert sendgrid_fake.members("RFM A") == set(emails) and sendgrid_fake.write_calls == 0  # nothing removed
    assert_stopped(mine, other)


def test_a_lock_lost_while_the_destination_is_prepared_starts_no_call(ledgers):
    """Mailchimp's and SendGrid's setup reads (fields, tags, lists) and creates what is missing in ``prepare``:
    a lock lost by then is seen before the apply's first call."""
    mine, other = ledgers
    sent: list[str] = []

    class SlowSetup:
        def prepare(self, managed_tags, fields, creating=None):
            take_the_lock_when(other, lambda: True).join()
            time.sleep(0.8)  # the heartbeat's next refresh (every 0.5 s) finds it taken
            return []

        def apply(self, changes, on_results):
            for ch in changes:
                sent.append(ch.key)
                on_results([ItemResult(ch.key, "upsert", True)])

    changes = tuple(ContactChange(f"c{i}@x", f"c{i}@x", f"C{i}", "A", True, "subscribed", set_fields={"S": "A"})
                    for i in range(3))
    with pytest.raises(LockLostError):
        execute_plan(Plan("dest", "mailchimp", changes, (), (), {"S": "segment"}, 0), SlowSetup(), mine,
                     lock_ttl=TTL)
    assert sent == [] and mine.load_state("dest") == {}
    assert_stopped(mine, other)
