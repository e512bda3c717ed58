"""A managed field or tag deleted in the ESP behind rfmsync's back: the ledger still says its values were pushed,
so the plan would never send them again while ``prepare`` silently re-creates it empty. The run says so
(sync.engine.lost_in_destination): which field or tag, how many contacts lost it, and that the next sync pushes it
again (the ledger forgot it: tests/test_lost_repair.py); ``--full-refresh`` also pushes it again at once. Against
the Mailchimp fake on 127.0.0.1; the ledger's count on SQLite and PostgreSQL."""

from __future__ import annotations

import random

import pytest

from connectors.retry import RetryPolicy
from sync.destinations.mailchimp import MailchimpDestination
from sync.engine import execute_plan
from sync.ledger import Ledger
from sync.model import ContactChange, PushedState
from sync.planning.plan import Plan

from .fakes.mailchimp import FakeMailchimp

from tests import ledger_fixtures

ledger_url = ledger_fixtures.ledger_url  # the fixture: SQLite, and PostgreSQL when RFMSYNC_TEST_PG_URL is set


def change(i: int) -> ContactChange:
    email = f"c{i}@example.com"
    return ContactChange(email, email, f"C{i}", "A", True, "subscribed", add_tags=frozenset({"rfm:A"}),
                         set_fields={"SEGMENT": "A"})


def plan_of(changes: list[ContactChange]) -> Plan:
    return Plan("mc", "mailchimp", tuple(changes), (), ("rfm:A",), {"SEGMENT": "segment"}, 0)


def client(fake: FakeMailchimp) -> MailchimpDestination:  # one per run, as each run's process makes its own
    return MailchimpDestination("mc", "aud1", fake.api_key, api_url=fake.url, timeout=2, batch_size=10,
                                max_connections=2,
                                retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))


def delete_in_the_esp(fake: FakeMailchimp, field: str, tag: str) -> None:
    """What deleting a merge field and a tag in Mailchimp's web app does: the definitions and every value go."""
    lst = fake.lists["aud1"]
    del lst.merge_fields[field]
    for email, member in lst.members.items():
        member["merge_fields"].pop(field, None)
        lst.heads.pop(email, None)
    lst.segments = {i: s for i, s in lst.segments.items() if s["name"] != tag}


def test_a_field_and_tag_deleted_in_the_esp_are_reported_and_a_full_refresh_pushes_them_again(mailchimp_fake,
                                                                                                tmp_path):
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        first = execute_plan(plan_of([change(i) for i in range(5)]), client(mailchimp_fake), ledger)
        assert first.status == "succeeded" and not first.errors  # created for the first time: nothing lost
        delete_in_the_esp(mailchimp_fake, "SEGMENT", "rfm:A")

        second = execute_plan(plan_of([change(5)]), client(mailchimp_fake), ledger)  # one new customer
        assert second.status == "partial" and second.counts["failed"] == 0
        field, tag = second.errors[:2]
        assert "field 'SEGMENT'" in field and "the 5 contacts" in field and "next sync" in field
        assert "tag 'rfm:A'" in tag and "the 5 contacts" in tag
        assert mailchimp_fake.member("c0@example.com")["merge_fields"] == {}  # the ESP as the user left it
        run = ledger.recent_runs(1)[0]
        assert run["status"] == "partial" and "field 'SEGMENT'" in run["error"]

        # a full refresh sends every field and tag again at once (the next plan, from the ledger, would too:
        # tests/test_lost_repair.py)
        again = [ContactChange(c.key, c.email, c.customer_id, "A", False, "subscribed", add_tags=c.add_tags,
                               set_fields=c.set_fields) for c in map(change, range(6))]
        fixed = execute_plan(plan_of(again), client(mailchimp_fake), ledger)
        assert fixed.status == "succeeded" and not fixed.errors
        assert mailchimp_fake.member("c0@example.com")["merge_fields"] == {"SEGMENT": "A"}
        assert "rfm:A" in mailchimp_fake.tags_of("c0@example.com")
    finally:
        ledger.close()


@pytest.mark.parametrize("resent", [5, 4])
def test_a_run_sending_the_lost_field_and_tag_again_counts_only_the_contacts_it_does_not(mailchimp_fake, tmp_path,
                                                                                        resent):
    """A full refresh sends the field and tag to every contact again at once: nothing is lost, the run is not
    partial; with one contact left out, that one is counted."""
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        execute_plan(plan_of([change(i) for i in range(5)]), client(mailchimp_fake), ledger)
        delete_in_the_esp(mailchimp_fake, "SEGMENT", "rfm:A")
        again = [ContactChange(c.key, c.email, c.customer_id, "A", False, "subscribed", add_tags=c.add_tags,
                               set_fields=c.set_fields) for c in map(change, range(resent))]
        report = execute_plan(plan_of(again), client(mailchimp_fake), ledger)
        if resent == 5:
            assert report.status == "succeeded" and report.errors == []
        else:
            assert report.status == "partial" and len(report.errors) == 2
            assert all("the 1 contacts" in line for line in report.errors)  # c4, not sent again
        assert mailchimp_fake.member("c0@example.com")["merge_fields"] == {"SEGMENT": "A"}
    finally:
        ledger.close()


@pytest.mark.parametrize("move", ["into A", "out of A"])
def test_contacts_moving_with_the_lost_tag_are_counted_right(mailchimp_fake, tmp_path, move):
    """c0-c4 hold rfm:A, c5-c9 rfm:B; rfm:A is deleted in the ESP. The next run moves c5-c9 into A: those five
    get the tag, but c0-c4, who had it, still lost it (the count is theirs, not holders minus movers). Or it moves
    c0-c4 out of A: they are to lose it anyway, nothing is lost."""
    def moved(i: int, seg: str, create: bool) -> ContactChange:
        email = f"c{i}@example.com"
        other = {"A": "rfm:B", "B": "rfm:A"}[seg]
        return ContactChange(email, email, f"C{i}", seg, create, "subscribed", add_tags=frozenset({f"rfm:{seg}"}),
                             remove_tags=frozenset() if create else frozenset({other}))

    def plan(changes: list[ContactChange]) -> Plan:
        return Plan("mc", "mailchimp", tuple(changes), (), ("rfm:A", "rfm:B"), {}, 0)

    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        execute_plan(plan([moved(i, "A" if i < 5 else "B", True) for i in range(10)]), client(mailchimp_fake),
                     ledger)
        lst = mailchimp_fake.lists["aud1"]  # rfm:A deleted in Mailchimp's web app (no fields in this plan)
        lst.segments = {i: seg for i, seg in lst.segments.items() if seg["name"] != "rfm:A"}
        if move == "out of A":
            report = execute_plan(plan([moved(i, "B", False) for i in range(5)]), client(mailchimp_fake), ledger)
            assert report.status == "succeeded" and report.errors == []
            assert mailchimp_fake.tags_of("c0@example.com") == {"rfm:B"}
            return
        report = execute_plan(plan([moved(i, "A", False) for i in range(5, 10)]), client(mailchimp_fake), ledger)
        assert report.status == "partial" and len(report.errors) == 1
        assert "tag 'rfm:A'" in report.errors[0] and "the 5 contacts" in report.errors[0]
        assert mailchimp_fake.tags_of("c0@example.com") == set()  # as the user left them
    finally:
        ledger.close()


def test_field_holders_counts_the_contacts_holding_a_field_key_exactly(ledger_url):
    ledger = Ledger.connect(ledger_url)
    try:
        rows = [PushedState("a@x", "A", frozenset(), {"A_B": 1, "Сегмент": "x"}, True),
                PushedState("b@x", "B", frozenset(), {"AxB": 2, "note": '"A_B": inside a value'}, True),
                PushedState("c@x", "C", frozenset(), {"50%": 3}, True)]
        ledger.save_states("mc", None, rows)
        ledger.save_states("other", None, rows[:1])
        holders = ledger.field_holders("mc", ["A_B", "AxB", "Сегмент", "50%", "5", "missing", "a_b", "сегмент"])
        assert holders == {"A_B": 1, "AxB": 1, "Сегмент": 1, "50%": 1}  # case and all (SQLite's LIKE ignores it)
    finally:
        ledger.close()


@pytest.mark.parametrize("name", ["A_B", "Сегмент"])
def test_field_holders_finds_keys_of_rows_written_with_escaped_text(ledger_url, name):
    """Rows written before 2026-12 spelled non-ASCII keys as \\u escapes."""
    import json

    from sqlalchemy import update

    from sync.ledger.schema import pushed_state

    ledger = Ledger.connect(ledger_url)
    try:
        ledger.save_states("mc", None, [PushedState("a@x", "A", frozenset(), {name: 1}, True)])
        with ledger._write() as conn:
            conn.execute(update(pushed_state).values(fields=json.dumps({name: 1}, separators=(",", ":"))))
        assert ledger.field_holders("mc", [name]) == {name: 1}
    finally:
        ledger.close()
