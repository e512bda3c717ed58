"""A managed field and a managed tag/list deleted in the ESP behind rfmsync's back repair themselves: the run that
finds them created again (prepare) says so and the ledger forgets them for the contacts it had pushed them to
(sync.engine.lost_in_destination, sync.ledger.state.PushedStates.forget_lost), so the next plan, made from the
ledger, sends them again. End to end on the contract battery's rig (the real planner and engine) against the
stateful fake of every ESP on 127.0.0.1; the ledger's part on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from sync.engine import execute_plan
from sync.errors import DestinationError
from sync.ledger import Ledger
from sync.ledger.schema import pushed_state
from sync.model import PushedState
from sync.config import GuardsConfig
from sync.guards import plan_lines, plan_stats
from sync.model import ContactChange
from sync.planning.plan import Plan
from tests import ledger_fixtures, test_destination_contract as contract, test_sync_e2e as e2e
from tests.fakes.registry import FakeDestination

AS_OF, LATER = contract.AS_OF, contract.LATER
# the fixtures used here: the contract battery's rig and fake ESPs, the demo shop on the Mailchimp fake (CLI), the
# ledger tests' databases
esp, make_rig, rig, runs, shop = contract.esp, contract.make_rig, contract.rig, contract.runs, contract.shop
demo_shop = e2e.shop
ledger_url = ledger_fixtures.ledger_url


def delete_in_the_esp(esp: FakeDestination, field: str, tag: str) -> None:
    """What deleting a field and a tag/list in the ESP's web app does: the definition and every value go."""
    fake = esp.fake
    if esp.type == "mailchimp":
        lst = fake.lists[esp.audience]
        del lst.merge_fields[field.upper()]
        for email, member in lst.members.items():
            member["merge_fields"].pop(field.upper(), None)
            lst.heads.pop(email, None)
        lst.segments = {i: s for i, s in lst.segments.items() if s["name"] != tag}
    elif esp.type == "sendgrid":
        fid = next(fid for fid, (name, _) in fake.fields.items() if name.lower() == field.lower())
        lid = fake.list_id(tag)
        del fake.fields[fid], fake.lists[lid]
        for contact in fake.contacts.values():
            contact["custom_fields"].pop(fid, None)
            contact["list_ids"].discard(lid)
    else:
        lid = fake.list_id(tag.removeprefix("list:"))
        del fake.fields[field], fake.lists[lid]
        for contact in fake.contacts.values():
            contact["fields"].pop(field, None)
            contact["lists"].discard(lid)
            contact["excluded"].discard(lid)


def most_held_list(ledger: Ledger, destination: str, managed: list[str]) -> str:
    """The managed tag (a list on Unisender: its tags are never created, so their loss cannot be seen) the most
    contacts hold in the ledger."""
    counts: dict[str, int] = {}
    for tags, n in ledger.tag_set_counts(destination).items():
        for t in tags:
            counts[t] = counts.get(t, 0) + n
    return max((t for t in managed if not t.startswith("tag:")), key=lambda t: counts.get(t, 0))


def assert_esp_holds_the_ledger(esp: FakeDestination, ledger: Ledger, destination: str, field: str,
                                tag: str) -> None:
    """Every contact the ledger says holds the field / the tag holds it in the ESP, with that value."""
    state = ledger.load_state(destination)
    with_field = [k for k, s in state.items() if field in s.fields]
    with_tag = [k for k, s in state.items() if tag in s.tags]
    assert with_field and with_tag
    for key in with_field:
        assert str(esp.field(key, field)) == str(state[key].fields[field]), key
    for key, s in state.items():
        assert esp.managed_of(key, [tag]) == ({tag} & s.tags), key


def test_a_field_and_tag_deleted_in_the_esp_are_pushed_again_by_the_next_sync(esp, rig):
    rig.converge(AS_OF)
    field = esp.field_name("Segment")
    tag = most_held_list(rig.ledger, rig.dest.name, rig.plan(AS_OF)[0].plan.managed_tags)
    status = {k: esp.status(k) for k in rig.ledger.load_state(rig.dest.name)}
    delete_in_the_esp(esp, field, tag)

    _, doc, report = rig.sync(LATER)  # a run with changes: prepare creates both again
    assert report.status == "partial" and report.counts["failed"] == 0, report.errors
    lines = {line.split(" was ")[0]: line for line in report.errors}
    assert set(lines) == {f"field {field!r}", f"tag {tag!r}"}, report.errors
    assert all("was missing in the destination and was created again" in line and "next sync" in line
               for line in lines.values())

    plan, doc, report = rig.sync(LATER)  # the next run: made from the ledger, which forgot them
    assert report.status == "succeeded", report.errors
    assert any(field in c["set_fields"] for c in doc["changes"]) and any(tag in c["add_tags"] for c in doc["changes"])
    assert_esp_holds_the_ledger(esp, rig.ledger, rig.dest.name, field, tag)
    assert not any(tag in c["remove_tags"] for c in doc["changes"])
    # consent unchanged: nobody known before was subscribed or re-created by the repair
    assert {k: esp.status(k) for k in status} == status
    assert not esp.violations()
    assert rig.sync(LATER)[1]["changes"] == []  # and it is done


class KilledAfterPrepare:
    """The process killed once the destination was prepared (the ledger had forgotten what was lost): no call."""

    def __init__(self, client) -> None:
        self.client = client

    def prepare(self, managed_tags, fields, creating=None):
        return self.client.prepare(managed_tags, fields, creating)

    def apply(self, changes, on_results):
        raise KeyboardInterrupt("killed")


def test_a_run_killed_after_the_loss_was_found_still_repairs_it_next_time(esp, rig):
    rig.converge(AS_OF)
    field = esp.field_name("Segment")
    tag = most_held_list(rig.ledger, rig.dest.name, rig.plan(AS_OF)[0].plan.managed_tags)
    delete_in_the_esp(esp, field, tag)
    planned, _ = rig.plan(LATER)
    with pytest.raises(KeyboardInterrupt):
        execute_plan(planned.plan, KilledAfterPrepare(planned.client), rig.ledger)
    _, _, report = rig.sync(LATER)  # prepare finds both present now: nothing to say, but the plan sends them
    assert report.status == "succeeded" and report.errors == []
    assert_esp_holds_the_ledger(esp, rig.ledger, rig.dest.name, field, tag)


def fail_the_second_create(esp: FakeDestination) -> None:
    """The ESP refuses prepare's second create call (the first one, of the field or the list, went through)."""
    if esp.type == "mailchimp":  # the field and the segment are created at once; the segment's is refused
        esp.fake.fail(400, method="POST", path=r"/segments$")
    elif esp.type == "sendgrid":  # fields, then lists
        esp.fake.fail(500, method="POST", path=r"/marketing/lists$")
    else:  # Unisender: lists, then fields
        esp.fake.fail("unspecified", method="createField")


def test_a_prepare_failing_after_a_create_still_has_what_it_created_pushed_again(esp, rig):
    """The names prepare is about to create are forgotten before its create calls: a prepare (or a process)
    that dies after the first create leaves no name the ESP holds empty while the ledger says it is pushed."""
    rig.converge(AS_OF)
    field = esp.field_name("Segment")
    tag = most_held_list(rig.ledger, rig.dest.name, rig.plan(AS_OF)[0].plan.managed_tags)
    delete_in_the_esp(esp, field, tag)
    fail_the_second_create(esp)
    with pytest.raises(DestinationError):
        rig.sync(LATER)
    assert rig.ledger.recent_runs(1)[0]["status"] == "failed"
    for _ in range(2):  # prepare creates the other one; the values of both are sent again
        rig.sync(LATER)
    assert_esp_holds_the_ledger(esp, rig.ledger, rig.dest.name, field, tag)
    _, doc, report = rig.sync(LATER)
    assert report.status == "succeeded" and doc["changes"] == [], report.errors  # done
    assert not esp.violations()


def test_the_repair_is_not_refused_as_a_mass_change(demo_shop, mailchimp_fake):
    """Through `rfmsync sync` (its plan guards): re-sending a field the ledger forgot to every contact is filling
    it in, not changing it (max_change_pct, 50 % by default, would refuse the repair: exit 6)."""
    later = "2025-07-15"  # a run with changes, the data not stale
    e2e.cli("sync", "--config", str(demo_shop), "--as-of", e2e.AS_OF)
    lst = mailchimp_fake.lists["aud1"]
    del lst.merge_fields["RFM_CODE"]  # deleted in Mailchimp's web app: the definition and every value
    for email, member in lst.members.items():
        member["merge_fields"].pop("RFM_CODE", None)
        lst.heads.pop(email, None)
    found = e2e.cli("sync", "--config", str(demo_shop), "--as-of", later).output
    assert "field 'RFM_CODE' was missing in the destination and was created again" in found
    e2e.cli("sync", "--config", str(demo_shop), "--as-of", later)  # exit 0: not refused
    with Ledger.connect(f"sqlite:///{demo_shop.parent / 'rfmsync.db'}") as ledger:
        state = ledger.load_state("mailchimp-demo")
    holders = {k: s.fields["RFM_CODE"] for k, s in state.items() if "RFM_CODE" in s.fields}
    assert len(holders) > len(state) // 2
    assert all(str(mailchimp_fake.member(k)["merge_fields"].get("RFM_CODE")) == str(v) for k, v in holders.items())


def test_a_field_the_ledger_records_no_value_for_is_filled_in_not_changed():
    """The plan guards' count of changed managed contacts (sync.guards.plan_stats)."""
    def change(key: str, fields: dict, add=frozenset(), remove=frozenset()) -> ContactChange:
        return ContactChange(key, key, key, "A", False, "subscribed", add_tags=frozenset(add),
                             remove_tags=frozenset(remove), set_fields=fields)

    state = {k: PushedState(k, k, frozenset({"rfm:A"}), {"SEG": "A"}) for k in ("a", "b", "c", "d")}
    plan = Plan("mc", "mailchimp", (change("a", {"CODE": "111"}),  # not recorded: filled in
                                    change("b", {"SEG": "B"}),  # recorded, another value: changed
                                    change("c", {"SEG": "A", "CODE": "1"}),  # recorded, the same value
                                    change("d", {}, add={"rfm:B"}, remove={"rfm:A"})), (), ("rfm:A", "rfm:B"),
                {"SEG": "segment", "CODE": "rfm_code"}, 0)
    stats = plan_stats(plan, state)
    assert (stats.managed, stats.changed, stats.removed) == (4, 2, 0)


def test_a_lost_tag_added_again_is_a_change_the_guard_counts():
    """Unisender gives every segment the shop's list and a segment tag: once the list, lost in the ESP, was
    forgotten, adding it again to every contact fires the ESP's "tag added" automations for all of them: a mass
    change the plan guard refuses without --allow-mass-change (unlike a field filled in again)."""
    def change(key: str, add=(), remove=()) -> ContactChange:
        return ContactChange(key, key, key, "A", False, "subscribed", add_tags=frozenset(add),
                             remove_tags=frozenset(remove))

    state = {f"c{i}": PushedState(f"c{i}", f"c{i}", frozenset({"tag:champions" if i % 2 else "tag:loyal"}), {})
             for i in range(10)}  # list:Customers forgotten for all of them
    managed = ("list:Customers", "tag:champions", "tag:loyal", "tag:new")
    repair = Plan("uni", "unisender", tuple(change(f"c{i}", add={"list:Customers"}) for i in range(10)), (),
                  managed, {}, 0)
    stats = plan_stats(repair, state)
    assert (stats.managed, stats.changed, stats.removed) == (10, 10, 0)
    assert plan_lines(GuardsConfig(), stats) == [
        "guard max_change_pct: 10 of 10 managed contacts (100 %) would change; limit 50 %"]
    # one tag per segment: without the ledger's memory of who lost it (lost_tags: tests/test_lost_guard.py), a
    # contact whose only managed tag was lost would be no managed contact
    alone = {k: PushedState(k, k, frozenset(), {}) for k in state}
    assert plan_stats(repair, alone) == plan_stats(Plan("uni", "unisender", (), (), managed, {}, 0), alone)


# ---------------------------------------------------------------------------------------------- the ledger's part
def rows(ledger: Ledger, destination: str) -> dict[str, tuple]:
    with ledger._engine.connect() as conn:
        got = conn.execute(select(pushed_state.c.key, pushed_state.c.tags, pushed_state.c.fields,
                                  pushed_state.c.customer_id, pushed_state.c.in_destination,
                                  pushed_state.c.pushed_at, pushed_state.c.run_id)
                           .where(pushed_state.c.destination == destination)).all()
    return {r[0]: (set(json.loads(r[1])), json.loads(r[2]), *r[3:]) for r in got}


def test_forget_lost_takes_exactly_the_lost_keys_and_tags_out(ledger_url):
    ledger = Ledger.connect(ledger_url)
    try:
        states = [PushedState("a@x", "A", frozenset({"rfm:A", "rfm:a", "hand"}), {"A_B": 1, "Сегмент": "x"}),
                  PushedState("b@x", "B", frozenset({"rfm:A"}), {"AxB": 2, "note": '"A_B": inside a value'}, False),
                  PushedState("c@x", "C", frozenset({"Сегмент"}), {"a_b": 3, "сегмент": 4}),
                  PushedState("d@x", "D", frozenset(), {})]
        ledger.save_states("mc", None, states)
        ledger.save_states("other", None, states[:1])
        before, revision = rows(ledger, "mc"), ledger.state_revision("mc")

        held = ledger.forget_lost("mc", ["A_B", "Сегмент", "missing"], ["rfm:A", "Сегмент", "nobody"])
        assert held == {("field", "A_B"): 1, ("field", "Сегмент"): 1, ("tag", "rfm:A"): 2, ("tag", "Сегмент"): 1}
        after = rows(ledger, "mc")
        assert after["a@x"][:2] == ({"rfm:a", "hand"}, {})  # case and all: rfm:a is another tag
        assert after["b@x"][:2] == (set(), {"AxB": 2, "note": '"A_B": inside a value'})
        assert after["c@x"][:2] == (set(), {"a_b": 3, "сегмент": 4})
        assert after["d@x"] == before["d@x"]
        for key in after:  # customer, presence, pushed_at and run stay
            assert after[key][2:] == before[key][2:]
        assert ledger.state_revision("mc") == revision + 1
        assert rows(ledger, "other")["a@x"][:2] == ({"rfm:A", "rfm:a", "hand"}, {"A_B": 1, "Сегмент": "x"})
        # the bulk read of the planner (its cached copy on SQLite) sees the rows the forget changed
        table = ledger.state_table("mc")
        assert {k: json.loads(f) for k, f in zip(table.column("key").to_pylist(),
                                                   table.column("fields").to_pylist())}["a@x"] == {}
        assert ledger.forget_lost("mc", ["A_B"], ["rfm:A"]) == {}  # nothing left to forget: no new revision
        assert ledger.state_revision("mc") == revision + 1
    finally:
        ledger.close()
