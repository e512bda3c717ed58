"""The apply records outcomes as they come (sync.engine + sync.outcomes), against the Mailchimp fake on 127.0.0.1:
a contact's state is written once its last operation answered, and the states held back are written however the
apply ends; a tag call waits for its new contacts' upserts, never for the others' (nor for a known member's update)."""

from __future__ import annotations

import random
import re
import threading

import pytest

from connectors.retry import RetryPolicy
from sync.destinations.mailchimp import MailchimpDestination
from sync.engine import execute_plan
from sync.errors import DestinationConfigError
from sync.ledger import Ledger
from sync.model import ContactChange, PushedState
from sync.planning.plan import Plan

from .fakes.mailchimp import FakeMailchimp


def change(i: int, tag: str = "rfm:A") -> ContactChange:
    email = f"c{i:04d}@example.com"
    return ContactChange(email, email, f"C{i}", "A", True, "transactional", add_tags=frozenset({tag}),
                         set_fields={"SEGMENT": "A"})


def plan_of(changes: list[ContactChange], tags=("rfm:A",)) -> Plan:
    return Plan("mc", "mailchimp", tuple(changes), (), tuple(tags), {"SEGMENT": "segment"}, 0)


@pytest.fixture
def client(mailchimp_fake: FakeMailchimp) -> MailchimpDestination:
    return MailchimpDestination("mc", "aud1", mailchimp_fake.api_key, api_url=mailchimp_fake.url, timeout=2,
                                batch_size=10, max_connections=2,
                                retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    led = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield led
    led.close()


def test_a_full_apply_records_each_contact_once_with_its_fields_and_tags(mailchimp_fake, client, ledger):
    from sync.engine import execute_plan

    report = execute_plan(plan_of([change(i) for i in range(35)]), client, ledger)
    assert report.status == "succeeded" and report.counts["ok"] == 70
    state = ledger.load_state("mc")
    assert len(state) == 35
    assert state["c0007@example.com"] == PushedState("c0007@example.com", "C7", frozenset({"rfm:A"}),
                                                     {"SEGMENT": "A"}, True)
    assert mailchimp_fake.count("POST", "/lists/aud1") == 4  # 35 contacts in batches of 10
    seg = next(iter(mailchimp_fake.lists["aud1"].segments))
    assert mailchimp_fake.count("POST", f"/lists/aud1/segments/{seg}") == 4


def test_an_apply_that_fails_midway_still_records_the_upserts_that_answered(mailchimp_fake, client, ledger):
    """The tag calls are refused (a revoked key: the apply stops with a config error): the contacts whose upsert
    answered are in the ledger (existing, with their fields, without the tag), so the next run only tags them."""
    from sync.engine import execute_plan

    mailchimp_fake.fail(401, times=None, fraction=1.0, path=r"/segments/\d+$")
    with pytest.raises(DestinationConfigError):
        execute_plan(plan_of([change(i) for i in range(25)]), client, ledger)
    state = ledger.load_state("mc")
    assert len(state) >= 10  # the calls in flight when the first tag call was refused still answered
    assert sorted(state) == sorted(mailchimp_fake.lists["aud1"].members)
    assert all(s.exists and s.fields == {"SEGMENT": "A"} and not s.tags for s in state.values())
    assert ledger.recent_runs(1)[0]["status"] == "failed"


def test_an_error_building_the_tag_calls_still_records_the_upserts_already_out(mailchimp_fake, client, ledger):
    """An internal error raised once the first upserts are out (here the tag calls' building: a tag that is not a
    text, which a plan file can no longer carry) stops the apply, but the upserts in flight answered and are
    recorded before the error goes up: a crash mid-apply does not forget what it pushed."""
    changes = [change(i) for i in range(25)]
    changes[20] = ContactChange(changes[20].key, changes[20].email, "C20", "A", True, "transactional",
                                add_tags=frozenset({1}), set_fields={"SEGMENT": "A"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        execute_plan(plan_of(changes), client, ledger)
    state = ledger.load_state("mc")
    assert mailchimp_fake.lists["aud1"].members, "the first upserts went out before the error"
    assert sorted(state) == sorted(mailchimp_fake.lists["aud1"].members)
    assert all(s.exists and s.fields == {"SEGMENT": "A"} and not s.tags for s in state.values())
    run = ledger.recent_runs(1)[0]
    assert run["status"] == "failed" and run["counts"]["ok"] == len(state)


def test_an_error_making_a_tag_call_still_records_the_upserts_in_flight(mailchimp_fake, client, ledger):
    """A tag call's own building can raise once upserts are out (its tag created there: ``POST .../segments``
    failing for good): the apply stops, but the upserts in flight answered and are recorded before the error goes
    up (the whole submit loop is under the pipeline's error rule, not only the tag calls' planning)."""
    mailchimp_fake.add_segment("rfm:A", list_id="aud1")
    mailchimp_fake.fail(500, None, fraction=1.0, method="POST", path=r"/segments$")
    mailchimp_fake.stall(0.6, method="POST", path=r"/lists/aud1$")  # the first upsert still out at the error
    changes = [change(i) for i in range(25)]
    for i in range(10, 13):  # (the second upsert's) a tag the plan does not prepare: created when its call is made
        changes[i] = ContactChange(changes[i].key, changes[i].email, f"C{i}", "A", True, "transactional",
                                   add_tags=frozenset({"rfm:A", "rfm:B"}), set_fields={"SEGMENT": "A"})
    with pytest.raises(Exception) as err:
        execute_plan(plan_of(changes), client, ledger)
    assert "rfm:B" in str(err.value)
    members = set(mailchimp_fake.lists["aud1"].members)
    state = ledger.load_state("mc")
    assert members, "upserts went out before the error"
    assert sorted(state) == sorted(members), (len(state), len(members))
    run = ledger.recent_runs(1)[0]
    assert run["status"] == "failed"


def test_a_tag_call_starts_once_its_own_contacts_are_upserted(mailchimp_fake, client, ledger):
    """With batches of 10 and contacts in tag order, the first tag call goes out before the last upsert."""
    from sync.engine import execute_plan

    changes = [change(i) for i in range(10)] + [change(i, "rfm:B") for i in range(10, 60)]
    execute_plan(plan_of(changes, ("rfm:A", "rfm:B")), client, ledger)
    order = [("upsert" if path == "/lists/aud1" else "tag") for method, path, _, _ in mailchimp_fake.requests
             if method == "POST" and (path == "/lists/aud1" or re.search(r"/segments/\d+$", path))]
    assert order.count("upsert") == 6 and order.count("tag") == 6
    assert order.index("tag") < len(order) - 1 - order[::-1].index("upsert")


class _StateReadSeen:
    """The ledger, saying when the apply has read the state of the plan's contacts."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger, self.read = ledger, threading.Event()

    def __getattr__(self, name: str):
        return getattr(self._ledger, name)

    def load_states(self, destination, keys):
        try:
            return self._ledger.load_states(destination, keys)
        finally:
            self.read.set()


def test_the_esp_setup_runs_while_the_apply_gets_ready(mailchimp_fake, client, ledger) -> None:
    """prepare (the ESP's setup calls) runs alongside the ledger read of the plan's contacts, not before it: here
    it waits for that read to happen meanwhile, which a prepare run first would wait for in vain."""
    seen = _StateReadSeen(ledger)
    original = client.prepare

    def prepare(managed_tags, fields, creating=None):
        if not seen.read.wait(5):
            raise AssertionError("prepare ran alone: the apply did not get ready meanwhile")
        return original(managed_tags, fields, creating)

    client.prepare = prepare  # the destination object's own method, wrapped: no rfmsync internals
    report = execute_plan(plan_of([change(i) for i in range(3)]), client, seen)
    assert report.status == "succeeded" and mailchimp_fake.tags_of("c0001@example.com") == {"rfm:A"}


class _SlowStateRead:
    """The ledger, whose read of the plan's contacts' state waits until the fake has received a batch call."""

    def __init__(self, ledger: Ledger, fake: FakeMailchimp, fail: bool = False) -> None:
        self._ledger, self._fake, self._fail = ledger, fake, fail

    def __getattr__(self, name: str):
        return getattr(self._ledger, name)

    def load_states(self, destination, keys):
        for _ in range(500):
            if self._fake.count("POST", "/lists/aud1"):
                break
            threading.Event().wait(0.01)
        else:
            raise AssertionError("no call went out while the state was being read")
        if self._fail:
            raise OSError("the ledger's disk went away")
        return self._ledger.load_states(destination, keys)


def test_the_first_calls_go_out_while_the_state_is_read(mailchimp_fake, client, ledger) -> None:
    """The state of the plan's contacts is read alongside the first calls (here it waits for one to be
    received); the outcomes are folded over it all the same: the fields pushed before are kept."""
    ledger.save_states("mc", None, [PushedState(f"c{i:04d}@example.com", f"C{i}", frozenset(), {"OLD": i}, True)
                                    for i in range(3)])
    report = execute_plan(plan_of([change(i) for i in range(3)]), client, _SlowStateRead(ledger, mailchimp_fake))
    assert report.status == "succeeded"
    state = ledger.load_state("mc")
    assert state["c0001@example.com"].fields == {"OLD": 1, **change(1).set_fields}
    assert state["c0001@example.com"].tags == {"rfm:A"}


def test_a_failed_state_read_fails_the_run_and_records_no_state(mailchimp_fake, client, ledger) -> None:
    with pytest.raises(OSError):
        execute_plan(plan_of([change(i) for i in range(3)]), client, _SlowStateRead(ledger, mailchimp_fake, True))
    assert ledger.load_state("mc") == {}
    assert [r["status"] for r in ledger.recent_runs(limit=1)] == ["failed"]


def test_a_failed_esp_setup_fails_the_run_and_writes_nothing(mailchimp_fake, client, ledger) -> None:
    mailchimp_fake.fail(401, times=5, path="/lists/aud1$")
    with pytest.raises(DestinationConfigError):
        execute_plan(plan_of([change(i) for i in range(3)]), client, ledger)
    assert ledger.load_state("mc") == {} and mailchimp_fake.write_calls == 0
    assert [r["status"] for r in ledger.recent_runs(limit=1)] == ["failed"]


def test_the_apply_s_read_of_many_keys_finds_exactly_the_stored_ones(tmp_path):
    """load_states with more keys than its chunked reads take (the bulk read): the states the ledger holds for
    them, none for a destination with no rows yet (a first sync), whatever else the ledger holds."""
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        run = ledger.start_run("sync", "d")
        held = [PushedState(f"c{i}@x.io", f"C{i}", frozenset({"rfm:A"}), {"R": i}, True) for i in range(3)]
        ledger.save_states("d", run, held + [PushedState("other@x.io", "O", frozenset(), {}, True)])
        ledger.save_states("e", run, held)
        keys = [f"c{i}@x.io" for i in range(25_000)]
        assert ledger.load_states("d", keys) == {s.key: s for s in held}
        assert ledger.load_states("new", keys) == {}
        # the keys as the apply passes them (the plan's changes by key), and a list that repeats some
        assert ledger.load_states("d", {k: None for k in keys}) == {s.key: s for s in held}
        assert ledger.load_states("d", keys + keys[:5]) == {s.key: s for s in held}
        assert ledger.load_states("d", iter(["c1@x.io", "c1@x.io"])) == {"c1@x.io": held[1]}
    finally:
        ledger.close()


def moved(i: int) -> ContactChange:
    """A contact the ledger knows is in the audience, moving from segment B to A (fields and both tags)."""
    email = f"m{i:04d}@example.com"
    return ContactChange(email, email, f"M{i}", "A", False, "transactional", add_tags=frozenset({"rfm:A"}),
                         remove_tags=frozenset({"rfm:B"}), set_fields={"SEGMENT": "A"})


def known_members(fake: FakeMailchimp, ledger: Ledger, n: int) -> None:
    fake.add_merge_field("SEGMENT")  # defined in the audience: prepare does not find it lost
    for i in range(n):
        email = f"m{i:04d}@example.com"
        fake.add_member(email, status="subscribed", merge_fields={"SEGMENT": "B"}, tags=["rfm:B"])
        ledger.save_states("mc", None, [PushedState(email, f"M{i}", frozenset({"rfm:B"}), {"SEGMENT": "B"})])


def test_a_known_members_tag_calls_go_in_the_first_round(mailchimp_fake, ledger):
    """Contacts that moved between segments: their tag calls do not wait for their field updates, so the two
    updates and the four tag calls (two tags, 20 contacts, batches of 10) are out at once (before: the tag
    calls went after the updates answered, four at most in flight)."""
    known_members(mailchimp_fake, ledger, 20)
    client = MailchimpDestination("mc", "aud1", mailchimp_fake.api_key, api_url=mailchimp_fake.url, timeout=5,
                                  batch_size=10, max_connections=6,
                                  retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))
    client.prepare(["rfm:A", "rfm:B"], {"SEGMENT": "segment"})
    mailchimp_fake.latency = 0.2  # the six calls overlap however slowly they are sent
    report = execute_plan(plan_of([moved(i) for i in range(20)], ("rfm:A", "rfm:B")), client, ledger)
    assert report.status == "succeeded" and report.counts["ok"] == 60
    assert mailchimp_fake.max_in_flight == 6
    assert ledger.load_state("mc")["m0003@example.com"] == PushedState(
        "m0003@example.com", "M3", frozenset({"rfm:A"}), {"SEGMENT": "A"}, True)
    assert mailchimp_fake.tags_of("m0003@example.com") == {"rfm:A"}
    assert mailchimp_fake.member("m0003@example.com")["merge_fields"] == {"SEGMENT": "A"}


def test_a_known_members_failed_update_keeps_its_old_fields_and_its_confirmed_tags(mailchimp_fake, client, ledger):
    """The field update is refused (400), the tag call is not: the ledger records the tags Mailchimp confirmed
    and the old fields, and keeps the update's failure, so the next run plans the fields again and only them."""
    known_members(mailchimp_fake, ledger, 3)
    mailchimp_fake.fail(400, method="POST", path="^/lists/aud1$")
    report = execute_plan(plan_of([moved(i) for i in range(3)], ("rfm:A", "rfm:B")), client, ledger)
    assert report.status == "partial" and report.counts == {**report.counts, "ok": 6, "failed": 3}
    state = ledger.load_state("mc")
    assert all(state[f"m{i:04d}@example.com"] == PushedState(f"m{i:04d}@example.com", f"M{i}",
                                                             frozenset({"rfm:A"}), {"SEGMENT": "B"}, True)
               for i in range(3))
    assert {(f["key"], f["op"]) for f in ledger.pending_failures("mc")} == {
        (f"m{i:04d}@example.com", "upsert") for i in range(3)}
    assert mailchimp_fake.tags_of("m0001@example.com") == {"rfm:A"}
    assert mailchimp_fake.member("m0001@example.com")["merge_fields"] == {"SEGMENT": "B"}


def test_a_known_member_gone_since_is_forgotten_and_never_created_by_its_tag_call(mailchimp_fake, client,
                                                                                   ledger):
    """Deleted in Mailchimp behind rfmsync's back: the update (no status) and the tag call, sent at once, both
    find it missing; nobody is subscribed, and the ledger forgets it so the next plan creates it (consent
    applies)."""
    known_members(mailchimp_fake, ledger, 2)
    mailchimp_fake.forget("m0000@example.com")
    report = execute_plan(plan_of([moved(i) for i in range(2)], ("rfm:A", "rfm:B")), client, ledger)
    assert report.status == "partial"
    assert "m0000@example.com" not in mailchimp_fake.lists["aud1"].members and mailchimp_fake.violations == []
    state = ledger.load_state("mc")
    assert state["m0000@example.com"] == PushedState("m0000@example.com", "M0", frozenset(), {}, False)
    assert state["m0001@example.com"] == PushedState("m0001@example.com", "M1", frozenset({"rfm:A"}),
                                                     {"SEGMENT": "A"}, True)


class Forgetful:
    """A destination client that returns without reporting on some operations (hunt28b #4: Unisender's
    ``batch_size = -1`` sent no batch and reported nothing): it writes the first 20 changes only, and drops the
    tag results of c0003. The ESP is the real client against the fake."""

    def __init__(self, inner: MailchimpDestination) -> None:
        self.inner = inner

    def prepare(self, *args, **kwargs):
        return self.inner.prepare(*args, **kwargs)

    def apply(self, changes, on_results) -> None:
        def report(results):
            on_results([r for r in results if not (r.key == "c0003@example.com" and r.op.startswith("tag"))])

        self.inner.apply(changes[:20], report)


def test_an_operation_the_client_never_reported_on_is_a_failure_not_done(mailchimp_fake, client, ledger):
    report = execute_plan(plan_of([change(i) for i in range(35)]), Forgetful(client), ledger)
    assert report.status == "partial"
    assert report.counts["ok"] == 39 and report.counts["failed"] == 31  # 15 contacts untouched, one tag unanswered
    pending = {(f["key"], f["op"]) for f in ledger.pending_failures("mc")}
    assert ("c0003@example.com", "tag+rfm:A") in pending and ("c0003@example.com", "upsert") not in pending
    assert {("c0034@example.com", "upsert"), ("c0034@example.com", "tag+rfm:A")} <= pending and len(pending) == 31
    assert all("no outcome" in f["last_error"] for f in ledger.pending_failures("mc"))
    state = ledger.load_state("mc")  # the answered operations are recorded; the rest are planned again
    assert len(state) == 20 and state["c0003@example.com"].tags == frozenset()
    assert state["c0003@example.com"].fields == {"SEGMENT": "A"}
