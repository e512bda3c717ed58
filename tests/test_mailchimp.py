"""MailchimpDestination against the stateful fake Mailchimp (official SDK over loopback) and `responses`."""

from __future__ import annotations

import dataclasses
import json
import logging
import random

import pytest
import responses
from hypothesis import given, settings as hsettings, strategies as st
from pydantic import SecretStr

from connectors.retry import RetryPolicy
from sync.destinations.mailchimp import MailchimpDestination, data_centre
from sync.destinations.mailchimp_api import EMPTY_BODY_ACTIONS, STATUS_ACTIONS, BatchRejected, action_for
from sync.errors import DestinationConfigError, DestinationError
from sync.model import ContactChange, ItemResult
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake  # noqa: F401  (fixture)
from tests.profiles import examples

BATCH = "/lists/aud1"


def change(email: str, *, create: bool = True, status: str | None = "transactional", fields=None,
           add=(), remove=()) -> ContactChange:
    return ContactChange(key=email.lower(), email=email, customer_id=email.split("@")[0], segment="s",
                         create=create, status_if_new=status, add_tags=frozenset(add),
                         remove_tags=frozenset(remove), set_fields=fields or {})


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[ItemResult]] = []

    def __call__(self, results) -> None:
        self.calls.append(list(results))

    @property
    def results(self) -> dict[tuple[str, str], ItemResult]:
        return {(r.key, r.op): r for batch in self.calls for r in batch}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def dest(mailchimp_fake: FakeMailchimp, sleeps: list[float]) -> MailchimpDestination:
    return make(mailchimp_fake, sleeps)


def make(fake: FakeMailchimp, sleeps: list[float], **kwargs) -> MailchimpDestination:
    kwargs.setdefault("retry", RetryPolicy(attempts=4, sleep=sleeps.append, rng=random.Random(0)))
    kwargs.setdefault("timeout", 2)
    return MailchimpDestination("mc", "aud1", kwargs.pop("api_key", fake.api_key), api_url=fake.url, **kwargs)


# ---------------------------------------------------------------------------------------------- config, table
@pytest.mark.parametrize("status, empty, action", [
    (429, False, "retry"), (429, True, "retry"), (500, False, "retry"), (502, False, "retry"),
    (503, False, "retry"), (504, False, "retry"), (599, False, "retry"), (401, False, "config"),
    (403, False, "config"), (403, True, "retry"), (404, False, "config"), (400, False, "record"),
    (422, False, "record"), (405, False, "fatal"), (418, False, "fatal"),
])
def test_status_action_table(status: int, empty: bool, action: str) -> None:
    assert action_for(status, empty_body=empty) == action
    if not empty and status in STATUS_ACTIONS:
        assert STATUS_ACTIONS[status] == action
    assert set(EMPTY_BODY_ACTIONS.values()) == {"retry"}


@pytest.mark.parametrize("status, exc_type, attempts", [
    (429, DestinationError, 4), (500, DestinationError, 4), (503, DestinationError, 4),
    (401, DestinationConfigError, 1), (403, DestinationConfigError, 1), (400, BatchRejected, 1),
    (405, DestinationError, 1),
])
def test_status_maps_to_error_end_to_end(mailchimp_fake, sleeps, status, exc_type, attempts) -> None:
    mailchimp_fake.fail(status, times=None, fraction=1.0)
    with pytest.raises(exc_type) as info:
        make(mailchimp_fake, sleeps).existing_members()
    assert type(info.value) is exc_type and info.value.status == status
    assert mailchimp_fake.count("GET", "/lists/aud1/members") == attempts
    assert len(sleeps) == attempts - 1


def test_key_without_data_centre_needs_api_url() -> None:
    with pytest.raises(DestinationConfigError, match="data-centre suffix") as info:
        MailchimpDestination("mc", "aud1", "0123456789abcdef")
    assert "0123456789abcdef" not in str(info.value)
    assert data_centre("abc-us21") == "us21" and data_centre("abc") is None and data_centre("a-b-us1") is None
    dest = MailchimpDestination("mc", "aud1", SecretStr("abcsecret-us21"))
    assert dest.api_url == "https://us21.api.mailchimp.com/3.0"
    assert "abcsecret" not in repr(dest) and "abcsecret" not in str(vars(dest))


# ---------------------------------------------------------------------------------------------- prepare
@pytest.mark.parametrize("tag, have, value", [("SEGMENT", "number", "segment"), ("LASTORD", "phone", "last_order"),
                                             ("SPEND", "date", "monetary")])
def test_prepare_refuses_a_merge_field_whose_type_cannot_take_the_values(mailchimp_fake, dest, tag, have, value):
    """hunt28b #3: a number merge field for the segment name (or a phone one for a date) was a warning, and every
    contact's upsert (and its tags) failed at every run. Refused now before any write, naming what is wrong."""
    mailchimp_fake.add_merge_field(tag, have)
    with pytest.raises(DestinationConfigError) as info:
        dest.prepare(["rfm:Champions"], {tag: value, "RECENCY": "recency_days"})
    assert (f"Mailchimp destination 'mc': field {tag!r} exists in Mailchimp as a {have} field, and rfmsync would "
            f"write {value!r} there") in str(info.value)
    assert mailchimp_fake.count("POST", "/lists/aud1/merge-fields") == 0  # nothing created: no write at all
    assert mailchimp_fake.count("POST", "/lists/aud1/segments") == 0


@pytest.mark.parametrize("have", ["dropdown", "radio"])
def test_prepare_leaves_a_dropdown_merge_field_to_its_warning(mailchimp_fake, dest, caplog, have):
    """The review of conf28: a shop's own dropdown (or radio) merge field whose choices are the segment names takes
    rfmsync's values, and main synced it with a warning; refusing every type the check does not know stopped that
    nightly sync. Such a field is warned about, not refused."""
    caplog.set_level(logging.WARNING)
    mailchimp_fake.add_merge_field("SEGMENT", have)
    dest.prepare(["rfm:Champions"], {"SEGMENT": "segment"})
    assert f"merge field SEGMENT is {have}" in caplog.text


@pytest.mark.parametrize("have, value", [("text", "monetary"), ("text", "last_order"), ("number", "recency_days"),
                                         ("number", "rfm"),  # the RFM code is digits: a number field takes it
                                         ("date", "last_order")])
def test_prepare_keeps_a_merge_field_whose_type_takes_the_values(mailchimp_fake, dest, have, value):
    mailchimp_fake.add_merge_field("F", have)
    dest.prepare([], {"F": value})
    assert mailchimp_fake.lists["aud1"].merge_fields["F"]["type"] == have


def test_prepare_creates_missing_fields_and_tags_and_leaves_others(mailchimp_fake, dest) -> None:
    fake = mailchimp_fake
    fake.add_merge_field("RECENCY", "number", name="Days since order (hand-made)")
    fake.add_member("ann@example.com", tags=["rfm:Champions", "VIP"])
    before_recency = dict(fake.lists["aud1"].merge_fields["RECENCY"])
    champions = next(s["id"] for s in fake.lists["aud1"].segments.values() if s["name"] == "rfm:Champions")

    dest.prepare(["rfm:Champions", "rfm:At risk"], {"RECENCY": "recency_days", "SEGMENT": "segment",
                                                    "MONEY": "monetary"})

    fields = fake.lists["aud1"].merge_fields
    assert fields["SEGMENT"]["type"] == "text" and fields["MONEY"]["type"] == "number"
    assert fields["RECENCY"] == before_recency and {"FNAME", "LNAME"} <= set(fields)
    assert fake.segment_names() == {"rfm:Champions", "VIP", "rfm:At risk"}
    assert fake.lists["aud1"].segments[champions]["members"] == {"ann@example.com"}
    assert fake.tags_of("ann@example.com") == {"rfm:Champions", "VIP"}
    assert fake.count("POST", "/lists/aud1/merge-fields") == 2 and fake.count("POST", "/lists/aud1/segments") == 1

    writes = fake.write_calls
    make(fake, []).prepare(["rfm:Champions", "rfm:At risk"], {"RECENCY": "recency_days", "SEGMENT": "segment"})
    assert fake.write_calls == writes  # second run: nothing to create


def test_prepare_unknown_audience(mailchimp_fake, sleeps) -> None:
    dest = MailchimpDestination("mc", "nope", mailchimp_fake.api_key, api_url=mailchimp_fake.url,
                                retry=RetryPolicy(sleep=sleeps.append))
    with pytest.raises(DestinationConfigError, match="audience 'nope' not found"):
        dest.prepare([], {})
    assert sleeps == []


def test_prepare_makes_its_reads_at_once_and_then_its_creates_at_once(mailchimp_fake, sleeps) -> None:
    """A first sync's setup (audience, merge fields and tags read; 3 fields and 4 tags created) takes two round
    trips of parallel calls, not ten sequential ones (within the connection limit)."""
    fake = mailchimp_fake
    fake.latency = 0.25  # long enough for parallel calls to overlap on a loaded machine (0.02 s did not, once)
    dest = make(fake, sleeps, max_connections=4)
    dest.prepare([f"rfm:T{i}" for i in range(4)], {"RECENCY": "recency_days", "SEGMENT": "segment",
                                                  "MONEY": "monetary"})
    assert fake.max_in_flight == 4  # never more than max_connections
    assert fake.segment_names() == {f"rfm:T{i}" for i in range(4)}
    assert {"RECENCY", "SEGMENT", "MONEY"} <= set(fake.lists["aud1"].merge_fields)
    fake.max_in_flight = 0
    make(fake, sleeps, max_connections=4).prepare([f"rfm:T{i}" for i in range(4)], {"RECENCY": "recency_days"})
    assert fake.max_in_flight == 3  # a second run: the three reads, together


def test_prepare_rejects_bad_merge_tag(dest) -> None:
    with pytest.raises(DestinationConfigError, match="merge tag 'RECENCY_DAYS'"):
        dest.prepare([], {"RECENCY_DAYS": "recency_days"})


# ---------------------------------------------------------------------------------------------- upsert
@pytest.mark.parametrize("status", ["subscribed", "unsubscribed", "cleaned", "pending", "transactional"])
def test_upsert_never_changes_an_existing_members_status(mailchimp_fake, dest, status) -> None:
    fake = mailchimp_fake
    fake.add_merge_field("SEGMENT")
    fake.add_member("Old@Example.com", status=status, merge_fields={"FNAME": "Old", "SEGMENT": "x"})
    rec = Recorder()
    dest.prepare([], {"SEGMENT": "segment"})
    dest.apply([change("Old@Example.com", status="subscribed", fields={"SEGMENT": "Champions"}),
                change("new@example.com", status="pending", fields={"SEGMENT": "New"}),
                change("quiet@example.com", status=None, create=True)], rec)

    old = fake.member("old@example.com")
    assert old["status"] == status and old["merge_fields"] == {"FNAME": "Old", "SEGMENT": "Champions"}
    assert fake.member("new@example.com")["status"] == "pending"
    assert fake.violations == [] and fake.ignored_fields == set()
    for _, _, _, body in fake.requests:
        if body and "update_existing" in body and body["update_existing"]:
            assert all("status" not in m for m in body["members"])
    assert rec.results[("old@example.com", "upsert")].ok and rec.results[("new@example.com", "upsert")].ok
    quiet = rec.results[("quiet@example.com", "upsert")]  # no status for a new contact: update-only, not created
    assert not quiet.ok and "status" in quiet.error and "quiet@example.com" not in fake.lists["aud1"].members


def test_field_names_or_value_names_both_land_in_the_merge_tag(mailchimp_fake, dest) -> None:
    dest.prepare([], {"RECENCY": "recency_days"})
    dest.apply([change("a@example.com", fields={"recency_days": 12}),
                change("b@example.com", fields={"RECENCY": None})], Recorder())
    assert mailchimp_fake.member("a@example.com")["merge_fields"] == {"RECENCY": 12}
    assert mailchimp_fake.member("b@example.com")["merge_fields"] == {"RECENCY": ""}


def test_1234_changes_take_3_upsert_calls_and_3_tag_calls(mailchimp_fake, dest) -> None:
    fake = mailchimp_fake
    changes = [change(f"c{i:04d}@example.com", fields={"FNAME": f"C{i}"}, add={"rfm:New"}) for i in range(1234)]
    rec = Recorder()
    dest.prepare(["rfm:New"], {})
    dest.apply(changes, rec)
    assert fake.count("POST", BATCH) == 3
    seg = next(iter(fake.lists["aud1"].segments))
    assert fake.count("POST", f"/lists/aud1/segments/{seg}") == 3
    sizes = [len(b["members"]) for m, p, _, b in fake.requests if (m, p) == ("POST", BATCH)]
    assert sorted(sizes) == [234, 500, 500]
    assert len(rec.calls) == 6 and all(r.ok for batch in rec.calls for r in batch)
    assert len(fake.lists["aud1"].members) == 1234 and len(fake.lists["aud1"].segments[seg]["members"]) == 1234


def test_existing_contacts_found_while_creating_get_their_fields_in_one_more_call(mailchimp_fake, dest) -> None:
    fake = mailchimp_fake
    fake.add_member("known@example.com", status="unsubscribed")
    rec = Recorder()
    dest.apply([change("known@example.com", status="subscribed", fields={"FNAME": "Kay"}),
                change("fresh@example.com", status="subscribed", fields={"FNAME": "Fay"})], rec)
    assert fake.count("POST", BATCH) == 2
    assert fake.member("known@example.com") == {"email_address": "known@example.com", "status": "unsubscribed",
                                                "merge_fields": {"FNAME": "Kay"}}
    assert [len(c) for c in rec.calls] == [1, 1] and all(r.ok for c in rec.calls for r in c)


def test_a_create_the_audience_already_held_is_reported_existed(mailchimp_fake, dest) -> None:
    """review-consent32 MUST 1: a create answered ERROR_CONTACT_EXISTS (no field to write: done at once; fields to
    write: done by the update pass) is a success flagged ``existed``, so the ledger does not record rfmsync as
    having subscribed him; a create listed in ``new_members`` is not flagged."""
    mailchimp_fake.add_member("bare@example.com", status="unsubscribed")
    mailchimp_fake.add_member("known@example.com", status="subscribed")
    rec = Recorder()
    dest.apply([change("bare@example.com", status="subscribed"),
                change("known@example.com", status="subscribed", fields={"FNAME": "Kay"}),
                change("fresh@example.com", status="subscribed", fields={"FNAME": "Fay"})], rec)
    got = {k: (r.ok, r.existed) for (k, op), r in rec.results.items() if op == "upsert"}
    assert got == {"bare@example.com": (True, True), "known@example.com": (True, True),
                   "fresh@example.com": (True, False)}
    assert mailchimp_fake.member("bare@example.com")["status"] == "unsubscribed"


def test_per_member_errors_are_reported_per_key(mailchimp_fake, dest) -> None:
    fake = mailchimp_fake
    fake.member_errors["bad@example.com"] = "Please provide a valid email address."
    fake.add_member("tagbad@example.com")
    rec = Recorder()
    dest.apply([change("ok@example.com", add={"rfm:A"}), change("bad@example.com", add={"rfm:A"}),
                change("tagbad@example.com", create=False, add={"rfm:A"})], rec)
    res = rec.results
    assert res[("ok@example.com", "upsert")].ok
    assert not res[("bad@example.com", "upsert")].ok
    assert "valid email" in res[("bad@example.com", "upsert")].error
    assert not res[("bad@example.com", "tag+rfm:A")].ok  # no tag call for a contact whose upsert failed
    assert res[("ok@example.com", "tag+rfm:A")].ok
    refusal = "tagbad@example.com was permanently deleted and cannot be re-imported."
    fake.member_errors["tagbad@example.com"] = refusal
    rec2 = Recorder()
    dest.apply([change("tagbad@example.com", create=False, add={"rfm:B"})], rec2)
    assert rec2.results[("tagbad@example.com", "tag+rfm:B")] == ItemResult(
        "tagbad@example.com", "tag+rfm:B", False, refusal, refused=True)  # named, about him: for good


def test_a_refused_batch_fails_its_items_and_the_sync_goes_on(mailchimp_fake, dest) -> None:
    mailchimp_fake.fail(400, path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change(f"x{i}@example.com", fields={"FNAME": "X"}) for i in range(3)], rec)
    assert [r.ok for r in rec.calls[0]] == [False] * 3 and "HTTP 400" in rec.calls[0][0].error
    dest.apply([change("y@example.com")], rec)
    assert rec.results[("y@example.com", "upsert")].ok


# ---------------------------------------------------------------------------------------------- tags
def test_tags_add_and_remove_only_touch_the_given_tags(mailchimp_fake, dest) -> None:
    fake = mailchimp_fake
    fake.add_member("ann@example.com", tags=["VIP", "rfm:Loyal"])
    fake.add_member("bob@example.com", tags=["rfm:Champions"])
    rec = Recorder()
    dest.prepare(["rfm:Loyal", "rfm:Champions"], {})
    dest.apply([change("ann@example.com", create=False, add={"rfm:Champions"}, remove={"rfm:Loyal"}),
                change("bob@example.com", create=False, add={"rfm:Loyal"}, remove={"rfm:Champions"})], rec)
    assert fake.tags_of("ann@example.com") == {"VIP", "rfm:Champions"}
    assert fake.tags_of("bob@example.com") == {"rfm:Loyal"}
    # one call per tag, carrying both its add and its remove; no upsert was needed
    assert fake.count("POST", BATCH) == 0 and fake.write_calls == 2
    assert {op for (_, op) in rec.results} == {"tag+rfm:Champions", "tag-rfm:Loyal", "tag+rfm:Loyal",
                                               "tag-rfm:Champions"}


def test_adds_and_removes_are_packed_into_the_fewest_calls(mailchimp_fake, dest) -> None:
    fake = mailchimp_fake
    for i in range(700):
        fake.add_member(f"m{i}@example.com", tags=["rfm:T"] if i < 300 else [])
    changes = [change(f"m{i}@example.com", create=False, remove={"rfm:T"}) for i in range(300)]
    changes += [change(f"m{i}@example.com", create=False, add={"rfm:T"}) for i in range(300, 700)]
    dest.apply(changes, Recorder())
    bodies = [b for m, p, _, b in fake.requests if m == "POST" and "/segments/" in p]
    assert len(bodies) == 1 and len(bodies[0]["members_to_add"]) == 400 and len(bodies[0]["members_to_remove"]) == 300
    changes = [change(f"m{i}@example.com", create=False, add={"rfm:T"}) for i in range(300)]
    changes += [change(f"m{i}@example.com", create=False, remove={"rfm:T"}) for i in range(300, 700)]
    dest.apply(changes, Recorder())
    assert len(fake.tags_of("m0@example.com")) == 1 and fake.tags_of("m699@example.com") == set()


def test_empty_204_tag_answer_is_not_believed(mailchimp_fake, dest) -> None:
    """The documented answer is 200 with members_added/members_removed/errors: a body-less 204 proves nothing,
    so the item fails (and is retried next run) even though the fake did the work."""
    mailchimp_fake.add_member("a@example.com")
    mailchimp_fake.empty_segment_answers = True
    rec = Recorder()
    dest.apply([change("a@example.com", create=False, add={"rfm:A"})], rec)
    result = rec.results[("a@example.com", "tag+rfm:A")]
    assert not result.ok and "empty body" in result.error


# ---------------------------------------------------------------------------------------------- reads
def test_existing_members_pages_by_1000(mailchimp_fake, dest) -> None:
    for i in range(2500):
        mailchimp_fake.add_member(f"P{i}@example.com", status="unsubscribed" if i % 2 else "subscribed")
    members = dest.existing_members()
    assert len(members) == 2500 and members["p1@example.com"] == "unsubscribed"
    assert mailchimp_fake.count("GET", "/lists/aud1/members") == 3
    assert dest.existing_members(["P2@example.com", "zz@example.com"]) == {"p2@example.com": "subscribed"}
    assert dest.existing_members([]) == {}


def test_the_fakes_audience_answer_counts_members_only_when_asked(mailchimp_fake) -> None:
    """The fake's ``GET /lists/{id}``: ``stats.member_count`` (subscribed members) unless ``fields`` leaves it
    out, as the API's partial answers do (the count over a million members is not made for ``prepare``'s check)."""
    import requests

    for i in range(5):
        mailchimp_fake.add_member(f"s{i}@example.com", status="unsubscribed" if i == 4 else "subscribed")
    url, auth = f"{mailchimp_fake.url}/lists/aud1", ("user", mailchimp_fake.api_key)
    assert requests.get(url, auth=auth, timeout=5).json()["stats"] == {"member_count": 4}
    assert requests.get(url, params={"fields": "stats.member_count"}, auth=auth, timeout=5).json()["stats"] == \
        {"member_count": 4}
    assert requests.get(url, params={"fields": "id,name"}, auth=auth, timeout=5).json() == \
        {"id": "aud1", "name": mailchimp_fake.lists["aud1"].name}


def test_the_fakes_batch_answers_show_each_member_as_it_is_now(mailchimp_fake) -> None:
    """The fake keeps each member's JSON up to its tags between calls: every answer still shows the member as
    ``json.dumps`` of its full view after each kind of change (created, fields updated, tagged, deleted and
    added again with another status)."""
    import requests

    fake, auth = mailchimp_fake, ("user", mailchimp_fake.api_key)
    seg = fake.add_segment("rfm:A")

    def post(path: str, body: dict) -> dict:
        return requests.post(f"{fake.url}/lists/aud1{path}", json=body, auth=auth, timeout=5).json()

    def view(email: str) -> dict:
        return json.loads(json.dumps(fake._member_view(fake.lists["aud1"], email)))

    answer = post("", {"members": [{"email_address": "a@example.com", "status": "subscribed",
                                    "merge_fields": {"FNAME": "Al"}}], "update_existing": False})
    assert answer["new_members"] == [view("a@example.com")]
    answer = post("", {"members": [{"email_address": "a@example.com", "merge_fields": {"FNAME": "Bo"}}],
                       "update_existing": True})
    assert answer["updated_members"] == [view("a@example.com")] and view("a@example.com")["merge_fields"] == \
        {"FNAME": "Bo"}
    added = post(f"/segments/{seg}", {"members_to_add": ["a@example.com"]})["members_added"]
    assert added == [view("a@example.com")] and added[0]["tags"] == [{"id": seg, "name": "rfm:A"}]
    fake.forget("a@example.com")
    fake.add_member("a@example.com", status="unsubscribed", merge_fields={"FNAME": "Cy"}, tags=["rfm:A"])
    removed = post(f"/segments/{seg}", {"members_to_remove": ["a@example.com"]})["members_removed"]
    assert removed == [view("a@example.com")] and (removed[0]["status"], removed[0]["merge_fields"]) == \
        ("unsubscribed", {"FNAME": "Cy"})


def test_the_loopback_fake_takes_an_applys_connections_at_once() -> None:
    """An apply opens its 10 connections at once: the fake's server queues 20 before accepting any (a listen
    backlog of 5 dropped SYNs, and each dropped one cost its call the kernel's 1 s retransmit)."""
    import socket

    from tests.fakes.http import LoopbackServer, Reply

    server = LoopbackServer(lambda req: Reply(204))  # listening, never accepting: the kernel's queue alone
    sockets = []
    try:
        for _ in range(20):
            sockets.append(socket.create_connection((server.host, server.port), timeout=2))
    finally:
        for sock in sockets:
            sock.close()
        server.stop()
    assert len(sockets) == 20


def test_read_managed_sees_every_status(mailchimp_fake, dest) -> None:
    for status in ("subscribed", "unsubscribed", "cleaned", "transactional"):
        mailchimp_fake.add_member(f"{status}@example.com", status=status, tags=["rfm:A"])
    mailchimp_fake.add_member("other@example.com", tags=["VIP"])
    got = dest.read_managed(["rfm:A", "rfm:missing"])
    assert got == {"rfm:A": {"subscribed@example.com", "unsubscribed@example.com", "cleaned@example.com",
                             "transactional@example.com"}, "rfm:missing": set()}
    assert "rfm:missing" not in mailchimp_fake.segment_names()


# ---------------------------------------------------------------------------------------------- retries
def test_429_with_retry_after_waits_that_long(mailchimp_fake, dest, sleeps) -> None:
    mailchimp_fake.fail(429, retry_after="7", path=f"^{BATCH}$")
    mailchimp_fake.fail(429, retry_after="3", empty_body=True, path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change("a@example.com")], rec)
    assert sleeps == [7.0, 3.0] and mailchimp_fake.count("POST", BATCH) == 3
    assert rec.results[("a@example.com", "upsert")].ok


def test_500_and_bodyless_403_are_retried(mailchimp_fake, dest, sleeps) -> None:
    mailchimp_fake.fail(500, times=2)
    mailchimp_fake.fail(403, empty_body=True)
    assert dest.existing_members() == {}
    assert len(sleeps) == 3 and mailchimp_fake.count("GET", "/lists/aud1/members") == 4


def test_timeout_is_retried_and_the_retry_is_harmless(mailchimp_fake, sleeps) -> None:
    dest = make(mailchimp_fake, sleeps, timeout=0.2)
    mailchimp_fake.stall(1.0, path=f"^{BATCH}$")  # the first call lands but answers too late
    rec = Recorder()
    dest.apply([change("late@example.com", status="subscribed", fields={"FNAME": "L"})], rec)
    assert len(sleeps) == 1 and rec.results[("late@example.com", "upsert")].ok
    assert mailchimp_fake.member("late@example.com")["status"] == "subscribed"
    assert mailchimp_fake.violations == []


def test_exhausted_retries_raise_after_reporting_what_finished(mailchimp_fake, dest) -> None:
    mailchimp_fake.fail(503, times=None, fraction=1.0, path="/segments/")
    rec = Recorder()
    with pytest.raises(DestinationError, match="still failing: .*gave up after") as info:
        dest.apply([change("a@example.com", add={"rfm:A"})], rec)
    assert info.value.status == 503
    assert rec.results[("a@example.com", "upsert")].ok and ("a@example.com", "tag+rfm:A") not in rec.results


def test_concurrency_is_bounded(mailchimp_fake, sleeps) -> None:
    fake = mailchimp_fake
    dest = make(fake, sleeps, max_connections=2)
    dest.prepare([f"rfm:T{i}" for i in range(6)], {})
    fake.latency = 0.05
    dest.apply([change("a@example.com", add={f"rfm:T{i}" for i in range(6)})], Recorder())
    assert fake.max_in_flight == 2 and fake.tags_of("a@example.com") == {f"rfm:T{i}" for i in range(6)}


def test_a_contact_in_several_tag_calls_gets_each_after_its_upsert(mailchimp_fake, dest) -> None:
    """Contacts that move (one tag added, another removed: two tag calls wait for the one upsert) beside
    contacts with one tag change: every tag call is made once its contacts' upserts answered, none left out."""
    for email in ("a@example.com", "b@example.com"):
        mailchimp_fake.add_member(email, tags=["rfm:B"])
    dest.prepare(["rfm:A", "rfm:B", "rfm:C"], {"RECENCY": "recency_days"})
    moving = [change(e, create=False, fields={"RECENCY": 2}, add={"rfm:A"}, remove={"rfm:B"})
              for e in ("a@example.com", "b@example.com")]
    new = [change(f"n{i}@example.com", fields={"RECENCY": i}, add={"rfm:C"}) for i in range(3)]
    rec = Recorder()
    dest.apply([*moving, *new], rec)
    assert len(rec.results) == 2 * 3 + 3 * 2 and all(r.ok for r in rec.results.values())
    assert {e: mailchimp_fake.tags_of(e) for e in ("a@example.com", "b@example.com", "n0@example.com")} == {
        "a@example.com": {"rfm:A"}, "b@example.com": {"rfm:A"}, "n0@example.com": {"rfm:C"}}


def test_tag_calls_made_ready_by_one_upsert_go_in_the_order_of_their_last_contact(mailchimp_fake, sleeps) -> None:
    """One call at a time: the upsert of n0 (A), n1 (B), n2 (A) readies tag A's call at n2 and B's at n1, so B's
    call goes first; n3, a contact in two tag calls (C, D), gets both after its own upsert, in tag order."""
    dest = make(mailchimp_fake, sleeps, max_connections=1, batch_size=3)
    tags = ["rfm:A", "rfm:B", "rfm:C", "rfm:D"]
    dest.prepare(tags, {})
    ids = dest._segment_ids(tags, create=False)
    contacts = [change("n0@example.com", add={"rfm:A"}), change("n1@example.com", add={"rfm:B"}),
                change("n2@example.com", add={"rfm:A"}), change("n3@example.com", add={"rfm:C", "rfm:D"})]
    rec = Recorder()
    dest.apply(contacts, rec)
    assert all(r.ok for r in rec.results.values()) and len(rec.results) == 4 + 5
    sent = [(path, body.get("members_to_add")) for method, path, _, body in mailchimp_fake.requests
            if method == "POST" and "/segments/" in path]
    assert sent == [(f"/lists/aud1/segments/{ids['rfm:B']}", ["n1@example.com"]),
                    (f"/lists/aud1/segments/{ids['rfm:A']}", ["n0@example.com", "n2@example.com"]),
                    (f"/lists/aud1/segments/{ids['rfm:C']}", ["n3@example.com"]),
                    (f"/lists/aud1/segments/{ids['rfm:D']}", ["n3@example.com"])]



class _TagsAfterUpserts(frozenset):
    """A change's tags whose reading (the tag calls' planning) waits until ``upserts`` batch upserts reached the
    fake, or ``timeout`` seconds; ``opened`` says which."""

    def __new__(cls, tags, fake, upserts: int, timeout: float = 5.0):
        self = super().__new__(cls, tags)
        self.fake, self.upserts, self.timeout, self.opened = fake, upserts, timeout, None
        return self

    def __iter__(self):
        import time

        if self.opened is None:
            end = time.monotonic() + self.timeout
            while self._sent() < self.upserts and time.monotonic() < end:
                time.sleep(0.01)
            self.opened = self._sent() >= self.upserts
        return super().__iter__()

    def _sent(self) -> int:
        return sum(1 for method, path, _, _ in list(self.fake.requests) if method == "POST" and path == BATCH)


def test_the_upserts_go_on_while_the_tag_calls_are_planned(mailchimp_fake, sleeps) -> None:
    """One connection, batches of 3: the tag calls' planning (here held until a second upsert reached Mailchimp)
    does not hold back the next upserts; the upserts answered before the tag calls existed still ready theirs,
    and every contact gets his tag once, after his upsert."""
    dest = make(mailchimp_fake, sleeps, max_connections=1, batch_size=3)
    dest.prepare(["rfm:A", "rfm:B"], {})
    ids = dest._segment_ids(["rfm:A", "rfm:B"], create=False)
    gate = _TagsAfterUpserts({"rfm:A"}, mailchimp_fake, upserts=3)
    contacts = [dataclasses.replace(change("n0@example.com"), add_tags=gate),  # change() copies its tags
                *(change(f"n{i}@example.com", add={"rfm:B" if i % 2 else "rfm:A"}) for i in range(1, 9))]
    rec = Recorder()
    dest.apply(contacts, rec)
    assert gate.opened  # three upserts were sent while the tag calls were planned
    assert len(rec.results) == 2 * 9 and all(r.ok for r in rec.results.values())
    assert {mailchimp_fake.tags_of(f"n{i}@example.com") == {"rfm:B" if i % 2 else "rfm:A"} for i in range(9)} == {True}
    posts = [(path, body) for method, path, _, body in mailchimp_fake.requests if method == "POST"]
    upserts = [i for i, (path, _) in enumerate(posts) if path == BATCH]
    assert len(upserts) == 3
    sent = {(path, tuple(body["members_to_add"])) for path, body in posts if "/segments/" in path}
    assert sent == {(f"/lists/aud1/segments/{ids['rfm:A']}", ("n0@example.com", "n2@example.com", "n4@example.com")),
                    (f"/lists/aud1/segments/{ids['rfm:A']}", ("n6@example.com", "n8@example.com")),
                    (f"/lists/aud1/segments/{ids['rfm:B']}", ("n1@example.com", "n3@example.com", "n5@example.com")),
                    (f"/lists/aud1/segments/{ids['rfm:B']}", ("n7@example.com",))}
    for i, (path, body) in enumerate(posts):  # each tag call after the upserts of its members
        if "/segments/" in path:
            members = set(body["members_to_add"])
            done = {m["email_address"] for j in upserts if j < i for m in posts[j][1]["members"]}
            assert members <= done


# ---------------------------------------------------------------------------------------------- secrets
def test_401_is_a_config_error_that_never_shows_the_key(mailchimp_fake, sleeps, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "deadbeefdeadbeefdeadbeef0badc0de-us1"
    dest = make(mailchimp_fake, sleeps, api_key=SecretStr(secret))
    with pytest.raises(DestinationConfigError) as info:
        dest.prepare(["rfm:A"], {})
    text = str(info.value) + repr(info.value) + str(info.value.body)
    assert "API key" in text and "'aud1'" in text and info.value.status == 401
    assert secret not in text and secret not in caplog.text and secret not in repr(dest)
    assert sleeps == []


def test_the_key_never_reaches_logs_during_a_busy_sync(mailchimp_fake, sleeps, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    mailchimp_fake.fail(429, retry_after="1")
    mailchimp_fake.fail(500)
    dest = make(mailchimp_fake, sleeps)
    dest.prepare(["rfm:A"], {"RECENCY": "recency_days"})
    dest.apply([change("a@example.com", add={"rfm:A"}, fields={"RECENCY": 3})], Recorder())
    assert "retrying" in caplog.text and "mailchimp" in caplog.text
    assert mailchimp_fake.api_key not in caplog.text
    assert mailchimp_fake.api_key.split("-")[0] not in caplog.text


# ---------------------------------------------------------------------------------------------- real host shape
def test_real_host_from_data_centre_and_sdk_quirks_with_responses(sleeps) -> None:
    dest = MailchimpDestination("mc", "aud1", "k3y-us21", retry=RetryPolicy(sleep=sleeps.append))
    base = "https://us21.api.mailchimp.com/3.0/lists/aud1"
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.add(responses.GET, base, status=429, body="")  # body-less: the SDK returns the Response
        rsps.add(responses.GET, base, json={"id": "aud1", "name": "Shop"})
        rsps.add(responses.GET, base + "/merge-fields", json={"merge_fields": [], "total_items": 0})
        rsps.add(responses.GET, base + "/segments", json={"segments": [], "total_items": 0})
        rsps.add(responses.POST, base + "/segments", status=204, body="")  # an empty answer: no id
        rsps.add(responses.GET, base + "/segments", status=401, content_type="application/problem+json",
                 body=json.dumps({"title": "API Key Invalid", "status": 401,
                                  "detail": "Your API key may be invalid."}))
        with pytest.raises(DestinationConfigError, match="API Key Invalid: Your API key may be invalid"):
            dest.prepare(["rfm:A"], {})  # looks the new tag up again, which is refused
        assert rsps.calls[0].request.headers["Authorization"].startswith("Basic ")
        assert "k3y" not in rsps.calls[0].request.url
    assert len(sleeps) == 1


def test_a_create_that_landed_before_its_timeout_is_not_created_twice(mailchimp_fake, sleeps) -> None:
    # the timeout leaves the retry room to be answered on a loaded machine; the stall outlasts it by far
    dest = make(mailchimp_fake, sleeps, timeout=0.6)
    mailchimp_fake.stall(2.5, path="/merge-fields$", method="POST")
    mailchimp_fake.stall(2.5, path="/segments$", method="POST")
    dest.prepare(["rfm:A"], {"RECENCY": "recency_days"})
    assert "RECENCY" in mailchimp_fake.lists["aud1"].merge_fields and mailchimp_fake.segment_names() == {"rfm:A"}
    assert mailchimp_fake.count("POST", "/lists/aud1/merge-fields") == 2 and len(sleeps) == 2


def test_a_seeded_fraction_of_failures_still_ends_in_sync(mailchimp_fake, sleeps) -> None:
    mailchimp_fake.fail(502, times=None, fraction=0.3)
    dest = make(mailchimp_fake, sleeps, retry=RetryPolicy(attempts=10, sleep=sleeps.append, rng=random.Random(1)))
    rec = Recorder()
    dest.apply([change(f"f{i}@example.com", add={f"rfm:T{i % 4}"}) for i in range(40)], rec)
    assert all(r.ok for c in rec.calls for r in c) and len(rec.results) == 80 and sleeps
    assert {mailchimp_fake.member(f"f{i}@example.com")["status"] for i in range(40)} == {"transactional"}


@pytest.mark.parametrize("content_type,body", [
    ("text/html", b"<html>maintenance</html>"), ("application/json", b'{"errors": "internal error"}'),
    ("application/json", b'{"members_added": [], "members_removed": [], "errors": null}'),
    ("application/json", b'{"members_added": [{"email_address": "a@exa'), ("application/json", b""),
])
def test_a_tag_call_answer_that_is_not_the_documented_shape_fails_the_tag(mailchimp_fake, dest, content_type,
                                                                          body) -> None:
    mailchimp_fake.add_member("a@example.com")
    mailchimp_fake.answer_raw(body, content_type, path=r"/segments/\d+$")
    rec = Recorder()
    dest.apply([change("a@example.com", create=False, add={"rfm:A"})], rec)  # no exception: a recorded failure
    result = rec.results[("a@example.com", "tag+rfm:A")]
    assert not result.ok and "answer not believed" in result.error and len(result.error) < 400
    assert not result.refused  # whether it was done is unknown: not Mailchimp refusing the contact


def test_only_a_member_error_naming_the_contact_refuses_his_tag_add(mailchimp_fake, dest) -> None:
    """review29 #1: a tag add ends a lost tag's wait (ItemResult.refused) only when Mailchimp names the contact in
    its errors: in the tag call's, or in his upsert's (esp14 #1: his add is skipped, refused with it: the wait
    ended never, and the plan guard counted him at every run); a whole tag call refused (HTTP 400) says nothing
    about him: he keeps waiting."""
    for email in ("a@example.com", "b@example.com"):
        mailchimp_fake.add_member(email)
    mailchimp_fake.member_errors["b@example.com"] = "b@example.com is in a compliance state"
    mailchimp_fake.fail(400, path=r"/segments/\d+$")  # the first tag call: refused as a whole
    rec = Recorder()
    dest.apply([change("a@example.com", create=False, add={"rfm:A"})], rec)
    dest.apply([change("b@example.com", create=False, add={"rfm:A"})], rec)
    mailchimp_fake.member_errors["c@example.com"] = "Please provide a valid email address."
    dest.apply([change("c@example.com", add={"rfm:A"})], rec)  # his upsert refused: his tag add skipped
    got = {k: (r.ok, r.refused) for (k, op), r in rec.results.items() if op == "tag+rfm:A"}
    assert got == {"a@example.com": (False, False), "b@example.com": (False, True), "c@example.com": (False, True)}
    assert rec.results[("c@example.com", "upsert")].refused


@pytest.mark.parametrize("error", ["c@example.com is in a compliance state due to unsubscribe, bounce, or "
                                   "compliance review and cannot be subscribed.",
                                   "c@example.com was permanently deleted and cannot be re-imported.",
                                   "c@example.com looks fake or invalid, please enter a real email address.",
                                   "Please provide a valid email address."])
def test_an_upsert_refused_by_name_refuses_the_new_contacts_tag_adds(mailchimp_fake, dest, error) -> None:
    """esp14 #1: Mailchimp's batch answer names the new contact in errors[] (Member In Compliance State, a
    forgotten email, an address that looks fake): his upsert and the tag adds skipped with it are refused for
    good; the contact beside him is tagged."""
    mailchimp_fake.member_errors["c@example.com"] = error
    rec = Recorder()
    dest.apply([change("c@example.com", add={"rfm:A", "rfm:B"}), change("d@example.com", add={"rfm:A"})], rec)
    got = {(k, op): (r.ok, r.refused) for (k, op), r in rec.results.items()}
    assert got == {("c@example.com", "upsert"): (False, True), ("c@example.com", "tag+rfm:A"): (False, True),
                   ("c@example.com", "tag+rfm:B"): (False, True), ("d@example.com", "upsert"): (True, False),
                   ("d@example.com", "tag+rfm:A"): (True, False)}
    assert "refused" in rec.results[("c@example.com", "tag+rfm:A")].error


@pytest.mark.parametrize("failure", ["whole-400", "unreadable", "500s"])
def test_an_upsert_failed_as_a_whole_keeps_the_new_contacts_tag_adds_waiting(mailchimp_fake, dest, failure) -> None:
    """fix25's rule kept: an upsert call refused as a whole (a 400 naming nobody), an answer that cannot be read,
    or one that never came: nothing names the contact, his skipped tag adds are not refusals."""
    if failure == "whole-400":
        mailchimp_fake.fail(400, path=f"^{BATCH}$")
    elif failure == "unreadable":
        mailchimp_fake.answer_raw(b"<html>bad gateway</html>", "text/html", path=f"^{BATCH}$")
    else:
        mailchimp_fake.fail(503, times=None, path=f"^{BATCH}$")
    rec = Recorder()
    try:
        dest.apply([change("c@example.com", add={"rfm:A"})], rec)
    except DestinationError:
        assert failure == "500s"  # gave up after the retries: the apply stops, nothing refused
    assert not any(r.refused for r in rec.results.values())
    assert failure == "500s" or not rec.results[("c@example.com", "tag+rfm:A")].ok


def test_a_400_naming_a_new_member_refuses_him_and_his_tag_adds(mailchimp_fake, dest) -> None:
    """A 400 whose errors[] names a member by his place (members.1.email_address) is about him: refused for good,
    his tag adds too; the others are sent again without him and tagged."""
    body = json.dumps({"title": "Invalid Resource", "status": 400, "detail": "bad member",
                       "errors": [{"field": "members.1.email_address", "message": "looks fake or invalid"}]})
    mailchimp_fake.answer_raw(body.encode(), "application/problem+json", status=400, path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change("a@example.com", add={"rfm:A"}), change("b@example.com", add={"rfm:A"})], rec)
    got = {(k, op): (r.ok, r.refused) for (k, op), r in rec.results.items()}
    assert got == {("a@example.com", "upsert"): (True, False), ("a@example.com", "tag+rfm:A"): (True, False),
                   ("b@example.com", "upsert"): (False, True), ("b@example.com", "tag+rfm:A"): (False, True)}


@pytest.mark.parametrize("error", ["c@example.com has signed up to a lot of lists very recently; we're not "
                                   "allowing more signups for now", "Your merge fields were invalid.",
                                   "Invalid Resource", "The resource submitted could not be validated."])
def test_an_error_that_is_not_about_the_member_fails_him_without_refusing_him(mailchimp_fake, dest, error) -> None:
    """rv32 #1: only Mailchimp's words about the member (MEMBER_REFUSALS) refuse him for good; a temporary
    anti-abuse limit, a list-wide merge-field error or an unknown ERROR_GENERIC fails him (sent again next run)
    and a lost tag he holds keeps waiting."""
    mailchimp_fake.member_errors["c@example.com"] = error
    rec = Recorder()
    dest.apply([change("c@example.com", add={"rfm:A"}), change("d@example.com", add={"rfm:A"})], rec)
    got = {(k, op): (r.ok, r.refused) for (k, op), r in rec.results.items()}
    assert got == {("c@example.com", "upsert"): (False, False), ("c@example.com", "tag+rfm:A"): (False, False),
                   ("d@example.com", "upsert"): (True, False), ("d@example.com", "tag+rfm:A"): (True, False)}
    mailchimp_fake.add_member("e@example.com")
    mailchimp_fake.member_errors["e@example.com"] = error  # the same in a tag call's errors[]
    dest.apply([change("e@example.com", create=False, add={"rfm:A"}), change("d@example.com", create=False,
                                                                               add={"rfm:B"})], rec)
    assert (rec.results[("e@example.com", "tag+rfm:A")].ok, rec.results[("e@example.com", "tag+rfm:A")].refused) \
        == (False, False)


def test_a_refusal_text_about_a_merge_field_refuses_nobody(mailchimp_fake, dest) -> None:
    """rv32 #1: Mailchimp's words about an address count only for an error naming no field or his
    ``email_address``: the same words about a merge field are not his refusal."""
    answer = {"new_members": [], "updated_members": [], "errors": [
        {"email_address": "c@example.com", "error": "Please provide a valid email address.",
         "error_code": "ERROR_GENERIC", "field": "merge_fields.SEGMENT", "field_message": "invalid"},
        {"email_address": "d@example.com", "error": "Please provide a valid email address.",
         "error_code": "ERROR_GENERIC", "field": "email_address", "field_message": "invalid"}]}
    mailchimp_fake.answer_raw(json.dumps(answer).encode(), "application/json", path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change("c@example.com"), change("d@example.com")], rec)
    assert {k: r.refused for (k, op), r in rec.results.items()} == {"c@example.com": False, "d@example.com": True}


@pytest.mark.parametrize(("words", "refused"), [
    ("{} was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list.",
     True),
    ("{} is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed.", True),
    ("{} looks fake or invalid, please enter a real email address.", True),
    ("Please provide a valid email address.", False)])
def test_an_error_given_to_every_member_of_a_call_refuses_them_only_when_it_names_each(mailchimp_fake, dest, words,
                                                                                       refused) -> None:
    """rv32 #1, rv34 #1: a call whose every member Mailchimp refuses, each by his own address (a batch of only the
    addresses an admin deleted for good), refuses each of them (else their lost-tag wait never ends); one text
    naming none of them, given to every member, is about the call and refuses nobody: upsert and tag call alike.
    The same text for one member of two refuses him."""
    for email in ("a@example.com", "b@example.com"):
        mailchimp_fake.member_errors[email] = words.format(email)
    rec = Recorder()
    dest.apply([change("a@example.com", add={"rfm:A"}), change("b@example.com", add={"rfm:A"})], rec)
    for email in ("a@example.com", "b@example.com"):
        mailchimp_fake.add_member(email)
    dest.apply([change("a@example.com", create=False, add={"rfm:B"}),
                change("b@example.com", create=False, add={"rfm:B"})], rec)
    assert {(k, op): (r.ok, r.refused) for (k, op), r in rec.results.items()} == {
        (k, op): (False, refused) for k in ("a@example.com", "b@example.com")
        for op in ("upsert", "tag+rfm:A", "tag+rfm:B")}
    del mailchimp_fake.member_errors["b@example.com"]
    dest.apply([change("a@example.com", create=False, add={"rfm:B"}),
                change("b@example.com", create=False, add={"rfm:B"})], rec)
    assert [(r.ok, r.refused) for r in (rec.results[(k, "tag+rfm:B")] for k in ("a@example.com", "b@example.com"))] \
        == [(False, True), (True, False)]


@pytest.mark.parametrize("field", ["EMAIL", "email", "address", None])
def test_a_refusal_about_a_field_mailchimp_does_not_document_still_refuses_him(mailchimp_fake, dest, field) -> None:
    """rv34 #4: only an error naming another member field (merge_fields, interests, status …) is not about his
    address: a field name Mailchimp does not document, given with words about a bad address, refuses him."""
    answer = {"new_members": [{"email_address": "d@example.com"}], "updated_members": [], "errors": [
        {"email_address": "c@example.com", "error": "c@example.com looks fake or invalid, please enter a real "
         "email address.", "error_code": "ERROR_GENERIC", "field": field, "field_message": "invalid"}]}
    mailchimp_fake.answer_raw(json.dumps(answer).encode(), "application/json", path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change("c@example.com"), change("d@example.com")], rec)
    assert {k: (r.ok, r.refused) for (k, op), r in rec.results.items()} == {"c@example.com": (False, True),
                                                                           "d@example.com": (True, False)}


@pytest.mark.parametrize("field", ["merge_fields", "interests.abc", "status", "MERGE_FIELDS.FNAME", "tags[0]"])
def test_a_refusal_text_about_another_member_field_refuses_nobody(mailchimp_fake, dest, field) -> None:
    """rv34 #4: the same words naming a documented member field other than his address refuse nobody."""
    answer = {"new_members": [{"email_address": "d@example.com"}], "updated_members": [], "errors": [
        {"email_address": "c@example.com", "error": "Please provide a valid email address.",
         "error_code": "ERROR_GENERIC", "field": field, "field_message": "invalid"}]}
    mailchimp_fake.answer_raw(json.dumps(answer).encode(), "application/json", path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change("c@example.com"), change("d@example.com")], rec)
    assert {k: (r.ok, r.refused) for (k, op), r in rec.results.items()} == {"c@example.com": (False, False),
                                                                           "d@example.com": (True, False)}


def _a_400_naming(mailchimp_fake, messages: list[str]) -> None:
    body = json.dumps({"title": "Invalid Resource", "status": 400, "detail": "x", "errors": [
        {"field": f"members.{i}.email_address", "message": m} for i, m in enumerate(messages)]})
    mailchimp_fake.answer_raw(body.encode(), "application/problem+json", status=400, path=f"^{BATCH}$")


def test_a_400_naming_every_member_refuses_each_by_the_same_rule_without_sending_again(mailchimp_fake,
                                                                                       dest) -> None:
    """rv34 #2: a 400 naming the only member of a batch, or every member, refuses each whose words are about him
    (one text naming nobody, given to all, refuses nobody), and the batch is not sent again."""
    _a_400_naming(mailchimp_fake, ["gone@example.com looks fake or invalid, please enter a real email address."])
    rec = Recorder()
    dest.apply([change("gone@example.com", add={"rfm:A"})], rec)
    assert {(k, op): (r.ok, r.refused) for (k, op), r in rec.results.items()} == {
        ("gone@example.com", "upsert"): (False, True), ("gone@example.com", "tag+rfm:A"): (False, True)}
    assert mailchimp_fake.count("POST", BATCH) == 1
    emails = ["a@example.com", "b@example.com"]
    _a_400_naming(mailchimp_fake, [f"{e} was permanently deleted and cannot be re-imported." for e in emails])
    rec = Recorder()
    dest.apply([change(e) for e in emails], rec)
    assert {k: (r.ok, r.refused) for (k, op), r in rec.results.items()} == {e: (False, True) for e in emails}
    _a_400_naming(mailchimp_fake, ["Please provide a valid email address."] * 2)
    rec = Recorder()
    dest.apply([change(e) for e in emails], rec)
    assert {k: (r.ok, r.refused) for (k, op), r in rec.results.items()} == {e: (False, False) for e in emails}
    assert mailchimp_fake.count("POST", BATCH) == 3
    assert "HTTP 400 refused a@example.com (members.0.email_address: Please provide" in \
        rec.results[("a@example.com", "upsert")].error


def test_a_400_naming_a_member_refuses_him_only_with_words_about_him_and_keeps_its_text_short(mailchimp_fake,
                                                                                               dest) -> None:
    """rv32 #1, #5: a 400 naming a member's merge field fails him without refusing him (the others are sent
    again and done); its text is kept cut to 200 characters, as every kept vendor text."""
    body = json.dumps({"title": "Invalid Resource", "status": 400, "detail": "bad member", "errors": [
        {"field": "members.0.merge_fields.SEGMENT", "message": "Please provide a valid email address. " * 8}]})
    assert len(body) < 500  # (an error keeps 500 characters of a body: a longer one names nobody)
    mailchimp_fake.answer_raw(body.encode(), "application/problem+json", status=400, path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change("a@example.com", add={"rfm:A"}), change("b@example.com", add={"rfm:A"})], rec)
    got = {(k, op): (r.ok, r.refused) for (k, op), r in rec.results.items()}
    assert got == {("a@example.com", "upsert"): (False, False), ("a@example.com", "tag+rfm:A"): (False, False),
                   ("b@example.com", "upsert"): (True, False), ("b@example.com", "tag+rfm:A"): (True, False)}
    error = rec.results[("a@example.com", "upsert")].error
    assert len(error) == 200 and error.startswith(f"Mailchimp POST {BATCH} (2 new members): HTTP 400 refused a@")


def test_a_tag_add_mailchimp_ignores_reports_the_contact_missing(mailchimp_fake, dest) -> None:
    """"Emails not on the list are ignored": an add the answer does not mention is a missing contact."""
    mailchimp_fake.answer_raw(b'{"members_added": [], "members_removed": [], "errors": [], "total_added": 0}',
                              "application/json", path=r"/segments/\d+$")
    rec = Recorder()
    dest.apply([change("gone@example.com", create=False, add={"rfm:A"})], rec)
    result = rec.results[("gone@example.com", "tag+rfm:A")]
    assert not result.ok and result.missing and "not a list member" in result.error


# ---------------------------------------------------------------------------------------------- batch bodies
MERGE_TAGS = {"RECENCY": "recency_days", "SEGMENT": "segment", "SCORE": "rfm"}


def documented_body(changes, create: bool) -> str:
    """The batch-subscribe body as the documented dict, encoded by ``json.dumps`` (compact): the reference. A field
    the mapping does not name (a retired one, ``retire_fields``) goes under its name upper-cased, as prepare makes
    every merge tag."""
    tag_of = {**{value: tag for tag, value in MERGE_TAGS.items()}, **{tag: tag for tag in MERGE_TAGS}}

    def value(v):
        if v is None or (isinstance(v, float) and v != v):
            return ""
        return ("yes" if v else "no") if isinstance(v, bool) else v

    members = [{"email_address": c.email, **({"status": c.status_if_new} if create else {}),
                **({"merge_fields": {tag_of.get(k, k.upper()): value(v) for k, v in c.set_fields.items()}}
                   if c.set_fields else {})} for c in changes]
    return json.dumps({"members": members, "update_existing": not create}, separators=(",", ":"))


def test_batch_bodies_sent_are_the_documented_members_byte_for_byte(sleeps) -> None:
    """Creates (status, no update) and updates (no status): every kind of field value, non-ASCII text, a
    contact without fields, and two keys naming one merge tag (the later value wins, as in a dict)."""
    dest = MailchimpDestination("mc", "aud1", "k3y-us21", retry=RetryPolicy(sleep=sleeps.append), batch_size=3)
    base = "https://us21.api.mailchimp.com/3.0/lists/aud1"
    creates = [change("Zoë@example.com", fields={"segment": "Champions \"A\"", "recency_days": 3, "rfm": 1.5}),
               change("b@example.com", status="subscribed", fields={"segment": None, "recency_days": True,
                                                                     "rfm": float("nan")}),
               change("c@example.com", fields={"recency_days": False, "rfm": 10 ** 20, "other": "x\u2028y"}),
               change("d@example.com", fields={})]
    updates = [change("e@example.com", create=False, fields={"segment": "Ünïcode", "SEGMENT": "wins"}),
               change("f@example.com", create=False, fields={"rfm": -0.0, "recency_days": 7})]
    bodies: list[bytes] = []

    def answer(request):
        bodies.append(request.body if isinstance(request.body, bytes) else request.body.encode("latin-1"))
        sent = json.loads(request.body)["members"]
        return 200, {}, json.dumps({"new_members": [{"email_address": m["email_address"]} for m in sent],
                                    "updated_members": [], "errors": []})

    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.add(responses.GET, base, json={"id": "aud1", "name": "Shop"})
        rsps.add(responses.GET, base + "/merge-fields", json={
            "merge_fields": [{"tag": t, "type": "text" if t == "SEGMENT" else "number"} for t in MERGE_TAGS],
            "total_items": len(MERGE_TAGS)})
        rsps.add(responses.GET, base + "/segments", json={"segments": [], "total_items": 0})
        rsps.add_callback(responses.POST, base, callback=answer)
        dest.prepare([], MERGE_TAGS)
        rec = Recorder()
        dest.apply([*creates, *updates], rec)
    assert all(r.ok for r in rec.results.values()) and len(rec.results) == 6
    assert bodies == [documented_body(creates[:3], True).encode(), documented_body(creates[3:], True).encode(),
                      documented_body(updates, False).encode()]


field_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text())


@hsettings(max_examples=examples(150), deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1), st.dictionaries(
    st.sampled_from([*MERGE_TAGS, *MERGE_TAGS.values(), "Other", "zoë"]), field_values)), max_size=6),
    st.booleans())
def test_batch_body_is_the_documented_dict_as_json_text(members, create) -> None:
    from sync.destinations.mailchimp_bodies import field_tags as _field_tags
    from sync.destinations.mailchimp_bodies import batch_body

    changes = [change(email, status="pending", fields=fields) for email, fields in members]
    assert batch_body(changes, create, _field_tags(MERGE_TAGS)) == documented_body(changes, create)


@hsettings(max_examples=examples(150), deadline=None)
@given(st.lists(st.text(min_size=1), max_size=40),
       st.lists(st.sampled_from([*MERGE_TAGS, *MERGE_TAGS.values(), "Other", "zoë", "50%", "%s"]), unique=True,
                max_size=4),
       st.lists(st.sampled_from(["text", "int", "mixed"]), min_size=4, max_size=4), st.booleans(), st.data())
def test_batch_body_of_members_with_the_same_fields_is_the_documented_dict(emails, names, kinds, create,
                                                                           data) -> None:
    """The usual batch (every member the same fields, each field all text or all whole numbers; written column
    by column) and its near misses (a column of mixed values, two names of one merge tag, a % in a name)."""
    from sync.destinations.mailchimp_bodies import field_tags as _field_tags
    from sync.destinations.mailchimp_bodies import batch_body

    values = {"text": st.text(), "int": st.integers(), "mixed": field_values}
    changes = [change(email, status=data.draw(st.sampled_from(["pending", "subscribed"])),
                      fields={n: data.draw(values[kind]) for n, kind in zip(names, kinds)}) for email in emails]
    assert batch_body(changes, create, _field_tags(MERGE_TAGS)) == documented_body(changes, create)


@hsettings(max_examples=examples(100), deadline=None)
@given(st.lists(st.text(min_size=1), max_size=20), st.lists(st.text(min_size=1), max_size=20))
def test_tag_call_body_is_the_documented_dict_as_json_text(add, remove) -> None:
    from sync.destinations.mailchimp_bodies import segment_body

    documented = {**({"members_to_add": add} if add else {}), **({"members_to_remove": remove} if remove else {})}
    assert segment_body([change(e) for e in add], [change(e) for e in remove]) == json.dumps(
        documented, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------- answers that lie
@pytest.mark.parametrize("body", [
    b"{}",  # a JSON object, but not a merge field
    b'{"type": "about:blank", "title": "Maintenance", "status": 503}',  # a problem document sent with a 200
    b'{"merge_id": 7, "tag": "OTHER", "name": "x", "type": "text"}',  # some other field
    b'{"merge_id": "7", "tag": "RECENCY", "name": "x", "type": "number"}',  # merge_id is an integer
])
def test_a_merge_field_create_answer_that_is_not_the_field_is_not_believed(mailchimp_fake, dest, body) -> None:
    """``POST /lists/{id}/merge-fields`` answers 200 with the Merge Field it made (merge_id, tag, ...). A 200 that
    is not that field (and the field is not there when read back) must not be reported as created: prepare fails
    naming the field and the audience, so no apply pushes values into a field that does not exist."""
    mailchimp_fake.answer_raw(body, "application/json", path=r"/merge-fields$")
    with pytest.raises(DestinationError, match=r"merge field RECENCY.*'aud1'"):
        dest.prepare([], {"RECENCY": "recency_days"})
    assert "RECENCY" not in mailchimp_fake.lists["aud1"].merge_fields


@pytest.mark.parametrize("body", [b"<html>gateway</html>", b"{}", b'{"merge_id": 3, "tag": "REC'])
def test_a_merge_field_made_but_answered_badly_is_found_by_reading_back(mailchimp_fake, dest, body) -> None:
    """The field was made and the answer mangled on the way back: read back, it is there, and prepare goes on."""
    mailchimp_fake.answer_raw(body, "application/json", path=r"/merge-fields$", work=True)
    assert dest.prepare([], {"RECENCY": "recency_days"}) == ["RECENCY"]
    assert mailchimp_fake.lists["aud1"].merge_fields["RECENCY"]["type"] == "number"


def _member(email: str) -> str:
    return f'{{"email_address": "{email}", "status": "transactional"}}'


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("counts", [
    '"total_created": 3, "total_updated": 0, "error_count": 1',  # an error it does not list
    '"total_created": 2, "total_updated": 0, "error_count": 0',  # a count of real changes only?
    '"total_created": 3, "total_updated": 1, "error_count": 0',
])
def test_a_batch_answer_whose_counts_differ_from_its_complete_lists_is_believed(mailchimp_fake, sleeps, caplog,
                                                                               counts) -> None:
    """Batch subscribe answers ``new_members``, ``updated_members``, ``errors`` and their counts
    (``total_created``, ``total_updated``, ``error_count``), which the spec does not say equal the lists'
    lengths. When the lists account for every address sent, they are believed: every member is pushed, and the
    mismatch is one warning per apply (two calls answering so: one warning), not a failure of 500 members on
    every run."""
    dest = make(mailchimp_fake, sleeps, batch_size=3, max_connections=1)  # the answers in order
    emails = [f"m{i}@example.com" for i in range(6)]
    for batch in (emails[:3], emails[3:]):
        body = f'{{"new_members": [{", ".join(map(_member, batch))}], "updated_members": [], "errors": [], {counts}}}'
        mailchimp_fake.answer_raw(body.encode(), "application/json", path=f"^{BATCH}$")
    rec = Recorder()
    with caplog.at_level(logging.DEBUG, logger="sync.destinations.mailchimp"):
        dest.apply([change(e, fields={"FNAME": "M"}) for e in emails], rec)
    assert {e: rec.results[(e, "upsert")].error for e in emails} == dict.fromkeys(emails)
    [warning] = _warnings(caplog)
    assert "counts that differ from its lists" in warning and "the lists are believed" in warning


def _apply_answered(fake, dest, emails: list[str], answer: str) -> "Recorder":
    """Apply an upsert of ``emails`` whose batch call is answered with ``{answer}`` (the members' JSON)."""
    fake.answer_raw(("{" + answer + "}").encode(), "application/json", path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change(e, fields={"FNAME": "M"}) for e in emails], rec)
    return rec


def test_a_batch_answer_that_leaves_out_an_address_fails_that_member_only(mailchimp_fake, dest, caplog) -> None:
    """Counts that agree with lists that leave out an address sent: that member fails (the answer does not
    mention it), the others are pushed."""
    emails = [f"m{i}@example.com" for i in range(3)]
    rec = _apply_answered(mailchimp_fake, dest, emails, f'"new_members": [{", ".join(map(_member, emails[:2]))}], '
                          '"updated_members": [], "errors": [], "total_created": 2, "total_updated": 0, '
                          '"error_count": 0')
    assert [rec.results[(e, "upsert")].ok for e in emails] == [True, True, False]
    assert "does not mention m2@example.com" in rec.results[(emails[2], "upsert")].error


def test_a_batch_answer_whose_counts_agree_is_believed(mailchimp_fake, dest, caplog) -> None:
    emails = [f"m{i}@example.com" for i in range(3)]
    rec = _apply_answered(mailchimp_fake, dest, emails, f'"new_members": [{", ".join(map(_member, emails[:2]))}], '
                          f'"updated_members": [{_member(emails[2])}], "errors": [], "total_created": 2, '
                          '"total_updated": 1, "error_count": 0')
    assert all(rec.results[(e, "upsert")].ok for e in emails)
    assert _warnings(caplog) == []


@pytest.mark.parametrize("counts", ['"total_added": 2, "total_removed": 0', '"total_added": 1, "total_removed": 1'])
def test_a_tag_call_answer_whose_counts_differ_from_its_complete_lists_is_believed(mailchimp_fake, dest, caplog,
                                                                                  counts) -> None:
    mailchimp_fake.add_member("a@example.com")
    mailchimp_fake.answer_raw(f'{{"members_added": [{_member("a@example.com")}], "members_removed": [], "errors": [], '
                              f'{counts}, "error_count": 0}}'.encode(), "application/json", path=r"/segments/\d+$")
    rec = Recorder()
    dest.apply([change("a@example.com", create=False, add={"rfm:A"})], rec)
    assert rec.results[("a@example.com", "tag+rfm:A")].ok
    [warning] = _warnings(caplog)
    assert "counts that differ from its lists" in warning and "total_" in warning


def test_an_answer_echoing_the_key_never_puts_it_in_an_error(mailchimp_fake, dest) -> None:
    """A proxy's debug page (200) that echoes the request's headers (basic auth: the key in base64) and the key
    itself: the failure recorded for each member keeps the start of the raw answer, with the key masked."""
    import base64

    basic = base64.b64encode(f"user:{mailchimp_fake.api_key}".encode()).decode()
    page = f"<pre>POST /3.0/lists/aud1\nAuthorization: Basic {basic}\napikey={mailchimp_fake.api_key}</pre>"
    mailchimp_fake.answer_raw(page.encode(), path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change("a@example.com")], rec)
    error = rec.results[("a@example.com", "upsert")].error
    assert "answer not believed" in error and "Basic ***" in error
    assert mailchimp_fake.api_key not in error and basic not in error


@pytest.mark.parametrize("field", ["members.1.merge_fields.SEGMENT", "members[1].email_address"])
def test_a_400_naming_one_member_fails_that_member_and_sends_the_others_again(mailchimp_fake, dest, field) -> None:
    """Mailchimp's 400 "Invalid Resource" may carry ``errors[{field, message}]`` (not in the spec's problem
    document; common in practice). When its fields name members of the batch by index, those members fail with
    the message and the others are sent once more without them, instead of one bad member failing its 499
    batch-mates on every run."""
    emails = [f"m{i}@example.com" for i in range(3)]
    problem = {"type": "https://mailchimp.com/developer/marketing/docs/errors/", "title": "Invalid Resource",
               "status": 400, "detail": "The resource submitted could not be validated.",
               "errors": [{"field": field, "message": "This value is not valid."}]}
    mailchimp_fake.answer_raw(json.dumps(problem).encode(), "application/problem+json", status=400,
                              path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change(e, fields={"FNAME": "M"}, add={"rfm:A"}) for e in emails], rec)
    bad = rec.results[(emails[1], "upsert")]
    assert not bad.ok and "HTTP 400" in bad.error and "not valid" in bad.error
    assert not rec.results[(emails[1], "tag+rfm:A")].ok  # no tag call for it
    for email in (emails[0], emails[2]):
        assert rec.results[(email, "upsert")].ok and rec.results[(email, "tag+rfm:A")].ok
        assert mailchimp_fake.member(email)["merge_fields"] == {"FNAME": "M"}
    assert emails[1] not in mailchimp_fake.lists["aud1"].members
    assert mailchimp_fake.count("POST", BATCH) == 2


def test_a_400_naming_no_member_still_fails_the_whole_batch_once(mailchimp_fake, dest) -> None:
    mailchimp_fake.answer_raw(b'{"title": "Invalid Resource", "status": 400, "errors": [{"field": "update_existing", '
                              b'"message": "must be a boolean"}]}', "application/problem+json", status=400,
                              path=f"^{BATCH}$")
    rec = Recorder()
    dest.apply([change(f"m{i}@example.com") for i in range(3)], rec)
    assert [r.ok for r in rec.results.values()] == [False] * 3 and mailchimp_fake.count("POST", BATCH) == 1
