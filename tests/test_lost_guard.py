"""A managed tag or list the ESP lost, added back by rfmsync, is a change the plan guards count: the ledger remembers
the contacts its forget took it from (``lost_tags``: :meth:`sync.ledger.state.PushedStates.forget_lost`) until it
is given back, they leave its segment or are forgotten, and :func:`sync.guards.plan_stats` counts each of them as a
managed contact, and giving it back as a change. With one tag or list per segment a holder holds no other managed
tag after the forget: without the memory the re-add to all of them went through unseen.

End to end through `rfmsync sync` against the stateful fake of every ESP on 127.0.0.1 (the contract battery's rig);
the ledger's part on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest

from sync.config import GuardsConfig
from sync.guards import plan_lines, plan_stats
from sync.model import ContactChange, PushedState
from sync.planning.plan import Plan
from tests import ledger_fixtures, test_destination_contract as contract
from tests.test_guards import set_guards
from tests.test_lost_repair import delete_in_the_esp, most_held_list

AS_OF, LATER = contract.AS_OF, contract.LATER
esp, make_rig, runs, shop = contract.esp, contract.make_rig, contract.runs, contract.shop
ledger_url = ledger_fixtures.ledger_url


def change(key: str, add=(), remove=(), fields=None) -> ContactChange:
    return ContactChange(key, key, key, "A", False, "subscribed", add_tags=frozenset(add),
                         remove_tags=frozenset(remove), set_fields=fields or {})


def test_fifty_of_sixty_holders_given_back_a_lost_tag_trip_max_change_pct():
    """One tag per segment: the 50 holders of the lost "vip" hold no managed tag in the ledger any more, yet they
    are managed contacts waiting for it, and giving it back to them is a change; 10 contacts of "loyal" stay."""
    managed = ("rfm:loyal", "rfm:vip")
    state = {f"v{i}": PushedState(f"v{i}", f"v{i}", frozenset(), {"SEG": "vip"}) for i in range(50)}
    state.update({f"l{i}": PushedState(f"l{i}", f"l{i}", frozenset({"rfm:loyal"}), {}) for i in range(10)})
    lost = {f"v{i}": frozenset({"rfm:vip"}) for i in range(50)}
    repair = Plan("mc", "mailchimp", tuple(change(f"v{i}", add={"rfm:vip"}) for i in range(50)), (), managed, {}, 0)
    stats = plan_stats(repair, state, lost)
    assert (stats.managed, stats.changed, stats.removed, stats.restored) == (60, 50, 0, 50)
    assert plan_lines(GuardsConfig(), stats) == [
        "guard max_change_pct: 50 of 60 managed contacts (83.3 %) would change (50 would get back tags the ESP "
        "lost: rfm:vip); limit 50 %"]
    # without the memory (the ledger alone) they were no managed contacts: nothing tripped
    assert plan_lines(GuardsConfig(), plan_stats(repair, state)) == []
    # under the limit: 20 of them back, and a field filled in is still no change
    few = Plan("mc", "mailchimp", tuple(change(f"v{i}", add={"rfm:vip"}) for i in range(20))
               + (change("l0", fields={"SEG": "loyal"}),), (), managed, {}, 0)
    assert plan_lines(GuardsConfig(), plan_stats(few, state, lost)) == []
    assert plan_stats(few, state, lost).changed == 20
    # a waiting contact the plan gives another tag (he left the lost tag's segment) changes, but gets nothing back
    moved = plan_stats(Plan("mc", "mailchimp", (change("v0", add={"rfm:loyal"}),), (), managed, {}, 0), state, lost)
    assert (moved.managed, moved.changed, moved.restored) == (60, 1, 0)


# ---------------------------------------------------------------------------------------------- end to end
def one_list_per_segment(esp) -> dict:
    """Unisender gives each segment a tag besides its list: none here, so a list is a holder's only managed name."""
    return {"tags": {}} if esp.type == "unisender" else {}


def lose_the_most_held_tag(esp, rig) -> tuple[str, set[str]]:
    """Synced, then the most held tag/list deleted in the ESP, and a run with changes (the engine: no guards) that
    has prepare create it again: the ledger forgets it for its holders and remembers them."""
    rig.converge(AS_OF)
    tag = most_held_list(rig.ledger, rig.dest.name, rig.plan(AS_OF)[0].plan.managed_tags)
    holders = {k for k, s in rig.ledger.load_state(rig.dest.name).items() if tag in s.tags}
    delete_in_the_esp(esp, esp.field_name("Segment"), tag)
    plan, _, report = rig.sync(LATER)
    assert any(line.startswith(f"tag {tag!r} was missing") for line in report.errors), report.errors
    waiting = rig.ledger.lost_tags(rig.dest.name)
    assert waiting and set(waiting) <= holders and all(tags == {tag} for tags in waiting.values())
    taken = {c.key for c in plan.changes if tag in c.remove_tags}  # this run moved them out of its segment
    assert taken and not taken & set(waiting)
    return tag, set(waiting)


def guard_line(output: str) -> str:
    found = re.findall(r"guard max_change_pct: .*", output)
    return found[0] if found else ""


def test_the_repair_of_a_lost_tag_over_the_limit_waits_for_a_person(esp, make_rig):
    rig = make_rig(**one_list_per_segment(esp))
    tag, waiting = lose_the_most_held_tag(esp, rig)
    set_guards(rig.path, max_change_pct=10)
    back = {c.key for c in rig.plan(LATER)[0].plan.changes if tag in c.add_tags}
    assert back and back <= waiting

    refused = rig.cli("sync", "--as-of", LATER.isoformat(), ok=False)
    assert refused.exit_code == 6, refused.output
    line = guard_line(refused.output)
    assert f"would change ({len(back)} would get back tags the ESP lost: {tag}); limit 10 %" in line, refused.output
    assert all(esp.managed_of(k, [tag]) == set() for k in back)  # nothing written

    rig.cli("sync", "--as-of", LATER.isoformat(), "--allow-mass-change")
    state = rig.ledger.load_state(rig.dest.name)
    assert all(tag in state[k].tags and esp.managed_of(k, [tag]) == {tag} for k in back)
    assert rig.ledger.lost_tags(rig.dest.name) == {}  # given back, or no longer meant to have it: nobody waits

    again = rig.cli("sync", "--as-of", LATER.isoformat())
    assert "guard max_" not in again.output and rig.plan(LATER)[0].plan.changes == ()
    assert not esp.violations()


def test_the_repair_of_a_lost_tag_under_the_limit_is_applied(esp, make_rig):
    rig = make_rig(**one_list_per_segment(esp))
    tag, waiting = lose_the_most_held_tag(esp, rig)
    plan = rig.plan(LATER)[0].plan
    back = {c.key for c in plan.changes if tag in c.add_tags}
    stats = plan_stats(plan, rig.ledger.load_state(rig.dest.name), rig.ledger.lost_tags(rig.dest.name))
    assert back and stats.restored == len(back) and stats.changed < stats.managed
    set_guards(rig.path, max_change_pct=100 * stats.changed // stats.managed + 1)  # just over the share
    done = rig.cli("sync", "--as-of", LATER.isoformat())
    assert "guard max_" not in done.output
    assert all(esp.managed_of(k, [tag]) == {tag} for k in back)
    assert rig.ledger.lost_tags(rig.dest.name) == {}
    assert not esp.violations()



def test_contacts_no_longer_meant_to_have_the_lost_tag_wait_no_longer(esp, make_rig):
    """The lost tag's segment is no longer mapped: the next applied plan (empty here) settles the memory, so the
    guards stop counting its holders as managed contacts waiting for it."""
    rig = make_rig(**one_list_per_segment(esp))
    tag, _ = lose_the_most_held_tag(esp, rig)
    segment = next(s for s, t in rig.dest.segments.items() if tag.endswith(t))
    unmapped = make_rig(**one_list_per_segment(esp),
                        segments={s: t for s, t in rig.dest.segments.items() if s != segment})
    assert tag not in unmapped.plan(LATER)[0].plan.managed_tags
    unmapped.sync(LATER)
    assert unmapped.ledger.lost_tags(unmapped.dest.name) == {}


def test_a_webhook_resync_giving_a_lost_tag_back_is_judged_the_same_way(tmp_path, mailchimp_fake, monkeypatch):
    """The webhook path's guard (its kept managed count, sync.serve.managed, and its plan's contacts): a holder of
    the lost tag given it back by a resync is a managed contact changed, with the reason on the line."""
    from connectors.records import Contact
    from sync.config import load_config
    from sync.errors import GuardRefusedError
    from sync.ledger import open_ledger
    from sync.serve.resync import resync
    from sync.settings import load_settings
    from tests.test_serve_resync import AS_OF as HOOK_DAY, DEST, customers_by_tag, orders_for, synced_shop

    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=120)
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        groups = customers_by_tag(ledger)
        lost, holders = max(((t, ids) for t, ids in groups.items() if "," not in t and t != "-"),
                            key=lambda x: len(x[1]))
        others = next(ids for t, ids in groups.items() if t != lost and len(ids) >= 3)
        lst = mailchimp_fake.lists["aud1"]  # the tag deleted in Mailchimp's web app
        lst.segments = {i: s for i, s in lst.segments.items() if s["name"] != lost}
        report = resync(cfg, ledger, settings, orders_for(others[:2], "L", amount="5000000"), as_of=HOOK_DAY)
        assert any(f"tag {lost!r} was missing" in line for line in report.reports[0].errors)
        assert len(ledger.lost_tags(DEST)) == len(holders)

        touch = [Contact(customer_id=holders[0])]  # a contact update: his segment stays, the tag comes back
        strict = cfg.model_copy(update={"guards": cfg.guards.model_copy(update={"max_change_pct": 0.5,
                                                                                  "min_mass_change": 1})})
        with pytest.raises(GuardRefusedError) as refused:
            resync(strict, ledger, settings, contacts=touch, as_of=HOOK_DAY)
        assert f"would change (1 would get back tags the ESP lost: {lost}); limit 0.5 %" in str(refused.value.lines)
        done = resync(cfg, ledger, settings, contacts=touch, as_of=HOOK_DAY)  # 50 %: applied
        assert done.reports[0].status == "succeeded"
        key = next(k for k, s in ledger.load_state(DEST).items() if s.customer_id == holders[0])
        assert lost in mailchimp_fake.tags_of(key) and key not in ledger.lost_tags(DEST)
        assert len(ledger.lost_tags(DEST)) == len(holders) - 1

# ---------------------------------------------------------------------------------------------- the ledger's part
def test_the_ledger_remembers_who_lost_a_tag_until_given_back_left_or_forgotten(ledger_url):
    from sync.ledger import Ledger

    with Ledger.connect(ledger_url, target_version=7):  # a ledger of the release before the table
        pass
    ledger = Ledger.connect(ledger_url)
    try:
        ledger.save_states("mc", None, [PushedState(k, k, frozenset({"vip", "hand"} if k < "c" else {"loyal"}), {})
                                        for k in ("a@x", "b@x", "c@x", "d@x", "e@x")])
        ledger.save_states("mc", None, [PushedState(k, k, frozenset({"vip"}), {}) for k in ("c@x", "d@x", "e@x")])
        ledger.save_states("other", None, [PushedState("a@x", "a", frozenset({"vip"}), {})])
        assert ledger.forget_lost("mc", [], ["vip"]) == {("tag", "vip"): 5}
        forgot_at = ledger.state_revision("mc")
        everyone = {k: frozenset({"vip"}) for k in ("a@x", "b@x", "c@x", "d@x", "e@x")}
        assert ledger.lost_tags("mc") == everyone and ledger.lost_tags("other") == {}
        assert ledger.lost_tags("mc", ["b@x", "z@x"]) == {"b@x": frozenset({"vip"})}

        # given back: the saved state holds it (in save_states' transaction); saved without it: still waiting
        ledger.save_states("mc", None, [PushedState("a@x", "a", frozenset({"vip", "hand"}), {}),
                                        PushedState("b@x", "b", frozenset({"hand"}), {"F": 1})])
        assert set(ledger.lost_tags("mc")) == {"b@x", "c@x", "d@x", "e@x"}
        # forgotten with the contact
        ledger.forget("mc", ["e@x"])
        assert set(ledger.lost_tags("mc")) == {"b@x", "c@x", "d@x"}

        # a plan made before the forget saw nothing: it settles nothing
        assert ledger.settle_lost("mc", forgot_at - 1, lambda: {}, whole=True) == 0
        # a webhook resync's plan of c and d: c is given vip back (waits for its outcome), d changes without it
        # (left vip's segment); b is not in the plan: still waiting
        revision = ledger.state_revision("mc")
        assert ledger.settle_lost("mc", revision, lambda: {"c@x": frozenset({"vip"}), "d@x": frozenset({"loyal"})},
                                  whole=False) == 1
        assert set(ledger.lost_tags("mc")) == {"b@x", "c@x"} and ledger.state_revision("mc") == revision + 1
        # a full sync's plan that gives c vip back and leaves b alone: b no longer waits
        assert ledger.settle_lost("mc", revision + 1, lambda: {"c@x": frozenset({"vip"})}, whole=True) == 1
        assert set(ledger.lost_tags("mc")) == {"c@x"}
        assert ledger.settle_lost("mc", revision + 2, lambda: {"c@x": frozenset({"vip"})}, whole=True) == 0
        assert ledger.state_revision("mc") == revision + 2  # nothing settled: no new revision
    finally:
        ledger.close()


def waiting_ledger(url: str, holders: int = 300):
    """A ledger whose "mc" destination lost "vip": ``holders`` contacts wait for it, 20 others hold "loyal"."""
    from sync.ledger import Ledger

    ledger = Ledger.connect(url)
    ledger.save_states("mc", None, [PushedState(f"v{i:04d}@x", f"v{i}", frozenset({"vip"}), {})
                                    for i in range(holders)]
                       + [PushedState(f"l{i:04d}@x", f"l{i}", frozenset({"loyal"}), {}) for i in range(20)])
    assert ledger.forget_lost("mc", [], ["vip"]) == {("tag", "vip"): holders}
    return ledger


@pytest.fixture
def lost_rows_read():
    """The rows every SELECT on lost_tags returns while the test runs (each run again on its connection)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    read: list[int] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.lstrip().lower().startswith("select") and "lost_tags" in statement.lower():
            again = conn.connection.cursor()
            again.execute(statement, parameters)
            read.append(len(again.fetchall()))
            again.close()

    event.listen(Engine, "after_cursor_execute", note)
    yield read
    event.remove(Engine, "after_cursor_execute", note)


def test_a_save_reads_only_its_own_contacts_waiting_rows(ledger_url, lost_rows_read):
    """review24 #2: a save while 300 contacts wait read all 300 rows in its write transaction (a repair in
    500-row saves: quadratic); it reads one probe row and its own contacts' rows. Nothing waits: the probe only."""
    ledger = waiting_ledger(ledger_url)
    try:
        lost_rows_read.clear()
        ledger.save_states("mc", None, [PushedState("v0001@x", "v1", frozenset({"vip"}), {}),
                                        PushedState("v0002@x", "v2", frozenset(), {"F": 1}),
                                        PushedState("n0001@x", "n1", frozenset({"loyal"}), {})])
        assert sum(lost_rows_read) <= 3, lost_rows_read  # the probe, v1's and v2's rows
        assert len(ledger.lost_tags("mc")) == 299 and "v0001@x" not in ledger.lost_tags("mc")
        ledger.save_states("mc", None, [PushedState(f"v{i:04d}@x", f"v{i}", frozenset({"vip"}), {})
                                        for i in range(300)])
        assert ledger.lost_tags("mc") == {}
        lost_rows_read.clear()
        ledger.save_states("mc", None, [PushedState("n0002@x", "n2", frozenset({"loyal"}), {})])
        assert lost_rows_read == [0]  # nothing waits: one empty probe
    finally:
        ledger.close()


def test_a_contact_deleted_in_the_esp_waits_no_longer(ledger_url):
    """review24 #4: the apply saves a contact the ESP no longer holds as missing (it does not forget him): his
    memory goes with it, so creating him again is a new contact, not a managed one given a lost tag back."""
    ledger = waiting_ledger(ledger_url, holders=3)
    try:
        ledger.save_states("mc", None, [PushedState("v0000@x", "v0", frozenset(), {}, exists=False)])
        assert set(ledger.lost_tags("mc")) == {"v0001@x", "v0002@x"}
        state = ledger.load_state("mc")
        again = Plan("mc", "mailchimp", (change("v0000@x", add={"vip"}),), (), ("loyal", "vip"), {}, 0)
        stats = plan_stats(again, state, ledger.lost_tags("mc"))
        assert (stats.changed, stats.restored, stats.managed) == (0, 0, 22)
    finally:
        ledger.close()


def test_a_re_add_the_esp_refuses_ends_the_wait_a_transient_failure_does_not(ledger_url):
    """review24 #3: a tag add the ESP refuses for good (consent withdrawn, unsubscribed) was remembered forever,
    the guards counting the contact as changed on every run; a transient failure keeps him waiting."""
    from sync.model import ItemResult
    from sync.outcomes import OutcomeWriter

    ledger = waiting_ledger(ledger_url, holders=4)
    try:
        revision = ledger.state_revision("mc")
        writer = OutcomeWriter(ledger, "mc", ledger.start_run("sync", "mc"))
        writer.submit([], [ItemResult("v0000@x", "tag+vip", False, "unsubscribed: not put on a list", refused=True),
                           ItemResult("v0001@x", "tag+vip", False, "timed out"),
                           ItemResult("v0002@x", "upsert", False, "refused"),
                           ItemResult("l0000@x", "tag+vip", False, "refused")])
        writer.close()
        assert set(ledger.lost_tags("mc")) == {"v0001@x", "v0002@x", "v0003@x"}
        assert ledger.state_revision("mc") == revision + 1  # the guards' count moved
        assert {f["key"] for f in ledger.pending_failures("mc")} == {"v0000@x", "v0001@x", "v0002@x", "l0000@x"}
    finally:
        ledger.close()


def test_settling_the_memory_confirms_the_lock(ledger_url):
    """review24 #7: settle_lost deletes in a transaction that confirms the caller still holds the lock."""
    from sync.errors import LockLostError

    ledger = waiting_ledger(ledger_url, holders=2)
    try:
        ledger.acquire_lock("sync:mc", "other-run")
        with pytest.raises(LockLostError):
            ledger.settle_lost("mc", ledger.state_revision("mc"), lambda: {}, whole=True, lock=("sync:mc", "me"))
        assert len(ledger.lost_tags("mc")) == 2
        assert ledger.settle_lost("mc", ledger.state_revision("mc"), lambda: {}, whole=True,
                                  lock=("sync:mc", "other-run")) == 2
    finally:
        ledger.close()


def test_the_webhook_count_keeps_the_waiting_contacts_with_the_revision(ledger_url, lost_rows_read):
    """review24 #1: while contacts wait for a lost tag, every webhook resync's count read all of them again; it is
    kept with the revision and moved by the applied plan's own contacts, like the holding count."""
    from sync.serve.managed import ManagedCounts

    ledger = waiting_ledger(ledger_url, holders=30)
    try:
        managed, counts = ("loyal", "vip"), ManagedCounts()
        revision = ledger.state_revision("mc")
        assert counts.count(ledger, "mc", managed, revision) == (50, 50)  # 20 holding, 30 waiting: all read
        lost_rows_read.clear()
        assert counts.count(ledger, "mc", managed, revision) == (50, 0)
        assert lost_rows_read == []  # not even the memory read again

        # a resync's plan of 3 waiting contacts: one given vip back, one deleted in the ESP, one moved to loyal
        keys = ["v0000@x", "v0001@x", "v0002@x"]
        before, lost_before = ledger.load_states("mc", keys), ledger.lost_tags("mc", keys)
        ledger.settle_lost("mc", revision, lambda: {"v0000@x": frozenset({"vip"}),
                                                    "v0002@x": frozenset({"loyal"})}, whole=False)
        ledger.save_states("mc", None, [PushedState("v0000@x", "v0", frozenset({"vip"}), {}),
                                        PushedState("v0001@x", "v1", frozenset(), {}, exists=False),
                                        PushedState("v0002@x", "v2", frozenset({"loyal"}), {})])
        now = ledger.state_revision("mc")
        counts.applied(ledger, "mc", managed, revision, before, ledger.load_states("mc", keys), now, lost_before,
                       ledger.lost_tags("mc", keys))
        assert counts.count(ledger, "mc", managed, now) == (49, 0)
        assert ManagedCounts().count(ledger, "mc", managed, now)[0] == 49  # counted afresh: the same
    finally:
        ledger.close()


@pytest.mark.parametrize("esp", ["unisender"], indirect=True)
def test_holders_who_withdrew_consent_do_not_keep_the_guard_tripped(esp, make_rig, runs):
    """review24 #3 end to end: 5 holders of the lost Unisender list withdrew consent and unsubscribed there.
    Under skip a withdrawn consent takes every managed list off them, so the repair never gives it back to them
    (Unisender used to refuse that add on every run): their wait ends with it, and the next plans no longer count
    them as managed contacts given the list back."""
    rig = make_rig(**one_list_per_segment(esp))
    rig.converge(AS_OF)
    tag = most_held_list(rig.ledger, rig.dest.name, rig.plan(AS_OF)[0].plan.managed_tags)
    delete_in_the_esp(esp, esp.field_name("Segment"), tag)
    rig.sync(LATER)  # prepare creates the list again: the ledger forgets it and remembers its holders
    victims = sorted(rig.ledger.lost_tags(rig.dest.name))[:5]
    assert len(victims) == 5
    for key in victims:
        esp.fake.contacts[key]["status"] = "unsubscribed"
        runs[LATER].con.execute("UPDATE contacts SET marketing_consent = 'no' WHERE lower(trim(email)) = ?", [key])
    before = plan_stats(rig.plan(LATER)[0].plan, rig.ledger.load_state(rig.dest.name),
                        rig.ledger.lost_tags(rig.dest.name))
    assert before.restored >= 5
    assert rig.dest.new_contacts == "skip"
    rig.sync(LATER)  # the repair: the others get it back, the victims are not given it (no consent now)
    assert not set(victims) & set(rig.ledger.lost_tags(rig.dest.name))
    plan = rig.plan(LATER)[0].plan
    assert not {c.key for c in plan.changes if tag in c.add_tags} & set(victims)  # never tried
    stats = plan_stats(plan, rig.ledger.load_state(rig.dest.name), rig.ledger.lost_tags(rig.dest.name))
    assert stats.restored == 0 and stats.changed == 0, stats
    assert all(esp.managed_of(k, [tag]) == set() for k in victims)
    assert not esp.violations()
