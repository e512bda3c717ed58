"""The config edited between two runs: a destination pointed at another audience or type keeps no ledger state of
the old one (docs/sync.md#another-audience), through the CLI against the stateful fake Mailchimp."""

from __future__ import annotations

import csv
import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from sync.demodata import generate_shop
from sync.ledger import Ledger
from sync.planning.target import TARGET_CURSOR

from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401

AS_OF = "2025-06-30"


@pytest.fixture
def shop(tmp_path, mailchimp_fake, monkeypatch):
    mailchimp_fake.add_list("aud2", "Second shop audience")
    cfg = generate_shop(tmp_path / "shop", customers=80, seed=5, as_of=date.fromisoformat(AS_OF))
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"'),
                   encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    return cfg


def point_at(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text(encoding="utf-8")
    assert old in text
    cfg.write_text(text.replace(old, new), encoding="utf-8")


def audience(fake, list_id: str) -> dict[str, tuple[set[str], dict]]:
    """Every member of the audience: its tags and merge fields."""
    return {key: (fake.tags_of(key, list_id), fake.member(key, list_id)["merge_fields"])
            for key in fake.lists[list_id].members}


def test_a_destination_pointed_at_another_audience_is_refused_until_a_full_refresh_moves_it(shop, mailchimp_fake):
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    first = audience(mailchimp_fake, "aud1")
    assert first and any(tags for tags, _ in first.values())
    point_at(shop, 'audience = "aud1"', 'audience = "aud2"')
    writes = mailchimp_fake.write_calls

    # planned from aud1's ledger, every contact would be believed in aud2 already: nothing pushed, exit 0
    for command in ("plan", "sync"):
        refused = cli(command, "--config", str(shop), "--as-of", AS_OF, code=2).output
        assert "destination 'mailchimp-demo': audience = \"aud2\" in the config now" in refused
        assert 'pushed to mailchimp audience "aud1"' in refused
        assert "run 'rfmsync sync --destination mailchimp-demo --full-refresh' once" in refused
        assert "The other destinations wait until then" in refused
    assert mailchimp_fake.write_calls == writes and not mailchimp_fake.lists["aud2"].members

    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--full-refresh")
    assert audience(mailchimp_fake, "aud2") == first  # every contact, its tags and fields
    assert audience(mailchimp_fake, "aud1") == first  # the old audience is left as it was
    writes = mailchimp_fake.write_calls
    cli("sync", "--config", str(shop), "--as-of", AS_OF)  # the ledger is aud2's now
    assert mailchimp_fake.write_calls == writes

    point_at(shop, 'audience = "aud2"', 'audience = "aud1"')  # and back: aud1 did not follow meanwhile
    back = cli("sync", "--config", str(shop), "--as-of", AS_OF, code=2).output
    assert 'audience = "aud1" in the config now' in back and 'set audience = "aud2" again' in back


def test_a_move_stopped_half_way_is_finished_by_the_next_sync_and_going_back_is_another_move(shop, mailchimp_fake):
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    point_at(shop, 'audience = "aud1"', 'audience = "aud2"')
    rejected = sorted(mailchimp_fake.lists["aud1"].members)[0]
    mailchimp_fake.member_errors[rejected] = "Invalid Resource"
    said = cli("plan", "--config", str(shop), "--as-of", AS_OF, "--full-refresh").output
    assert 'moves the destination from mailchimp audience "aud1" to mailchimp audience "aud2"' in said
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--full-refresh", code=4)  # one contact failed
    assert rejected not in mailchimp_fake.lists["aud2"].members
    # the move was recorded as it started: the ledger holds only what was pushed to aud2, and a plain run
    # finishes it (the failed contact pushed), no refusal
    mailchimp_fake.member_errors.clear()
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    assert audience(mailchimp_fake, "aud2") == audience(mailchimp_fake, "aud1")

    point_at(shop, '"Best active" = "VIP"\n"Falling asleep" = "Winback soft"',
             '"Best active" = "Winback soft"\n"Falling asleep" = "VIP"')  # aud2 follows the mapping
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")
    point_at(shop, 'audience = "aud2"', 'audience = "aud1"')  # and back: aud1 did not follow meanwhile
    back = cli("sync", "--config", str(shop), "--as-of", AS_OF, code=2).output
    assert 'set audience = "aud2" again' in back
    # a move again, planned against nothing known: --reconcile reads who holds the managed tags in aud1
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--full-refresh", "--reconcile", "--allow-mass-change")
    now, then = audience(mailchimp_fake, "aud1"), audience(mailchimp_fake, "aud2")
    assert {k: now[k] for k in then} == then  # every field and tag as the config says now, no VIP left stale
    writes = mailchimp_fake.write_calls
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    assert mailchimp_fake.write_calls == writes


def test_a_saved_plan_is_not_applied_to_the_audience_the_config_points_at_since(shop, mailchimp_fake, tmp_path):
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    saved = tmp_path / "again.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "--full-refresh", "-o", str(saved))
    point_at(shop, 'audience = "aud1"', 'audience = "aud2"')
    writes = mailchimp_fake.write_calls

    refused = cli("apply", "--config", str(shop), str(saved), code=2).output
    assert 'this plan was made for mailchimp audience "aud1"' in refused and "make a new plan" in refused
    plan = json.loads(saved.read_text())["plans"][0]
    assert plan["pushed_to"] == "mailchimp:aud1" and plan["changes"]
    # a plan file written before plans named their audience: the ledger's audience decides
    del plan["pushed_to"]
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "plans": [plan]}))
    assert 'audience = "aud2" in the config now' in cli("apply", "--config", str(shop), str(saved), code=2).output
    assert mailchimp_fake.write_calls == writes and not mailchimp_fake.lists["aud2"].members

    point_at(shop, 'audience = "aud2"', 'audience = "aud1"')  # back where it was made for: applied
    cli("apply", "--config", str(shop), str(saved))
    assert mailchimp_fake.write_calls > writes


def test_a_destination_given_another_type_under_its_name_is_refused(shop, mailchimp_fake):
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    point_at(shop, 'type = "mailchimp"\naudience = "aud1"', 'type = "sendgrid"')
    refused = cli("plan", "--config", str(shop), "--as-of", AS_OF, code=2).output
    assert "destination 'mailchimp-demo': type = \"sendgrid\" in the config now" in refused
    assert 'set type = "mailchimp" (audience = "aud1") again' in refused


def test_a_webhook_resync_waits_for_the_full_refresh_of_a_destination_pointed_elsewhere(tmp_path, mailchimp_fake,
                                                                                       monkeypatch):
    from sync.config import load_config
    from sync.errors import ConfigError
    from sync.ledger import open_ledger
    from sync.serve.resync import resync
    from sync.settings import load_settings
    from tests.test_serve_resync import AS_OF as SYNCED, orders_for, synced_shop

    mailchimp_fake.add_list("aud2", "Second shop audience")
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=60)
    point_at(path, 'audience = "aud1"', 'audience = "aud2"')
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        someone = next(s.customer_id for s in ledger.load_state("mailchimp-demo").values() if s.customer_id)
        writes = mailchimp_fake.write_calls
        with pytest.raises(ConfigError, match='audience = "aud2" in the config now'):
            resync(cfg, ledger, settings, orders_for([someone], "W"), as_of=SYNCED)
    assert mailchimp_fake.write_calls == writes and not mailchimp_fake.lists["aud2"].members


SECOND = '''
[[destinations]]
name = "second"
type = "mailchimp"
audience = "aud2"
'''


def plan_warnings(cfg: Path) -> list[str]:
    return json.loads(cli("plan", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)["warnings"]


def test_a_destination_removed_from_the_config_is_said_until_its_tags_are_taken_off(shop, mailchimp_fake):
    text = shop.read_text(encoding="utf-8")
    shop.write_text(text + SECOND + '[destinations.segments]\n"Churn" = "Lost"\n', encoding="utf-8")
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    lost = {k for k in mailchimp_fake.lists["aud2"].members if mailchimp_fake.tags_of(k, "aud2") == {"Lost"}}
    assert lost

    shop.write_text(text, encoding="utf-8")  # the second destination's table removed
    said = [w for w in plan_warnings(shop) if "'second'" in w]
    assert len(said) == 1 and said[0].startswith(
        f"destination 'second' is no longer in the config, but the tags/lists rfmsync gave the contacts of "
        f"mailchimp audience \"aud2\" stay on them: 'Lost' ({len(lost)} contacts)")
    assert 'retire_tags = ["Lost"]' in said[0]
    writes = mailchimp_fake.write_calls
    sync = cli("sync", "--config", str(shop), "--as-of", AS_OF).output
    assert "destination 'second' is no longer in the config" in sync and mailchimp_fake.write_calls == writes

    # what the warning says to do takes them off, and the warning goes with them
    shop.write_text(text + SECOND + 'retire_tags = ["Lost"]\n', encoding="utf-8")
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")
    assert not any(mailchimp_fake.tags_of(k, "aud2") for k in mailchimp_fake.lists["aud2"].members)
    # and the ledger forgets it, so that no plan reads its rows again
    with sqlite3.connect(next(shop.parent.glob("*.db"))) as db:
        held = db.execute("SELECT count(*) FROM pushed_state WHERE destination = 'second'").fetchone()[0]
    assert held == 0  # its revision counter stays, moved on (a plan saved before is stale): it holds no name
    with Ledger.connect(f"sqlite:///{next(shop.parent.glob('*.db'))}") as ledger:
        assert "second" not in ledger.state_destinations() + ledger.held_destinations(TARGET_CURSOR)
    shop.write_text(text, encoding="utf-8")
    assert not [w for w in plan_warnings(shop) if "no longer in the config" in w]


def test_a_renamed_destination_leaves_behind_only_the_tags_it_no_longer_manages(shop, mailchimp_fake):
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    point_at(shop, 'name = "mailchimp-demo"', 'name = "mc-main"\nrenamed_from = "mailchimp-demo"')  # same tags
    assert [w for w in plan_warnings(shop) if "'mailchimp-demo' is no longer" in w]  # until it synced once
    cli("sync", "--config", str(shop), "--as-of", AS_OF)  # its rows hold the tags: it takes them off now
    assert not [w for w in plan_warnings(shop) if "no longer in the config" in w]
    vip = sum("VIP" in mailchimp_fake.tags_of(k) for k in mailchimp_fake.lists["aud1"].members)
    point_at(shop, '"Best active" = "VIP"', '"Best active" = "rfm:vip"')  # and its tag renamed too
    said = plan_warnings(shop)  # the renamed one holds VIP in its rows: its own warning says it, once
    assert not [w for w in said if "no longer in the config" in w]
    assert [w for w in said if w.startswith("mc-main: ") and f"'VIP' ({vip} contacts)" in w], said


def test_a_move_forgets_the_old_audience_s_state_and_records_the_new_one_at_once(ledger_url):  # noqa: F811
    from sync.ledger import Ledger
    from sync.model import ItemResult, PushedState
    from sync.planning.target import TARGET_CURSOR, known_target, move_if_planned

    with Ledger.connect(ledger_url) as ledger:
        run = ledger.start_run("sync", "mc")
        ledger.save_states("mc", run, [PushedState(f"{i}@x.io", str(i), frozenset({"VIP"}), {}, True)
                                       for i in range(3)])
        ledger.save_states("other", run, [PushedState("0@x.io", "0", frozenset({"VIP"}), {}, True)])
        ledger.record_results("mc", run, [ItemResult("1@x.io", "upsert", False, "Invalid Resource")])
        move_if_planned(ledger, "mc", "mailchimp:aud1", ("sync:mc", "me"))  # a first apply: recorded
        assert known_target(ledger, "mc") == "mailchimp:aud1" and len(ledger.load_state("mc")) == 3
        revision = ledger.state_revision("mc")
        assert ledger.acquire_lock("sync:mc", "me", 60)
        move_if_planned(ledger, "mc", "mailchimp:aud2", ("sync:mc", "me"), moves_from="mailchimp:aud1")
        assert known_target(ledger, "mc") == "mailchimp:aud2"
        assert ledger.load_state("mc") == {} and ledger.pending_failures("mc") == []
        assert ledger.state_revision("mc") > revision  # a plan made before is stale
        assert list(ledger.load_state("other")) == ["0@x.io"]  # another destination's state is kept
        assert ledger.get_cursor(TARGET_CURSOR, "mc") == "mailchimp:aud2"


def test_the_ledger_lists_the_destinations_it_holds_state_of_and_their_targets(ledger_url):  # noqa: F811
    from sync.ledger import Ledger
    from sync.model import PushedState
    from sync.planning.target import known_target, record_target

    with Ledger.connect(ledger_url) as ledger:
        assert ledger.state_destinations() == []
        for name in ("mc-b", "mc-a"):
            ledger.save_states(name, None, [PushedState("a@x.io", "1", frozenset({"VIP"}), {}, True)])
        record_target(ledger, "mc-a", "mailchimp:aud1")
        assert ledger.state_destinations() == ["mc-a", "mc-b"]
        assert (known_target(ledger, "mc-a"), known_target(ledger, "mc-b")) == ("mailchimp:aud1", None)
        assert ledger.tag_set_counts("mc-b") == {frozenset({"VIP"}): 1}


def test_a_saved_plan_creates_nobody_with_a_status_new_contacts_no_longer_gives(shop, mailchimp_fake, tmp_path):
    point_at(shop, 'new_contacts = "transactional"', 'new_contacts = "pending"')
    saved = tmp_path / "invite.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    creates = sum(c["create"] for c in json.loads(saved.read_text())["plans"][0]["changes"])
    assert creates
    for now in ("skip", "transactional"):  # the shop stops inviting: an old plan's invitations would go out
        point_at(shop, 'new_contacts = "pending"', f'new_contacts = "{now}"')
        refused = cli("apply", "--config", str(shop), str(saved), code=2).output
        assert (f"destination 'mailchimp-demo': this plan creates contacts ({creates} as pending) with a status "
                f"new_contacts = \"{now}\" in the config now gives no one") in refused
        point_at(shop, f'new_contacts = "{now}"', 'new_contacts = "pending"')
    assert mailchimp_fake.write_calls == 0 and not mailchimp_fake.lists["aud1"].members
    cli("apply", "--config", str(shop), str(saved))
    assert {m["status"] for m in mailchimp_fake.lists["aud1"].members.values()} == {"pending"}


def set_consent(folder: Path, emails: set[str], value: str) -> None:
    """The shop's clients.csv with these customers' consent column set to ``value``."""
    path = folder / "clients.csv"
    rows = list(csv.reader(path.open(encoding="utf-8-sig"), delimiter=";"))
    for row in rows[1:]:
        if row[4] in emails:
            row[5] = value
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("\ufeff")
        csv.writer(f, delimiter=";").writerows(rows)


def test_under_skip_one_full_refresh_moves_the_destination_and_the_next_syncs_go_on(shop, mailchimp_fake):
    point_at(shop, 'new_contacts = "transactional"', 'new_contacts = "skip"')
    rows = list(csv.reader((shop.parent / "clients.csv").open(encoding="utf-8-sig"), delimiter=";"))
    theirs = {r[4] for r in rows[1:] if r[5] != "да" and r[4]}
    assert theirs
    for email in theirs:  # the shop's own members of aud1, whose consent rfmsync's source does not know
        mailchimp_fake.add_member(email, status="transactional", list_id="aud1")
    set_consent(shop.parent, theirs, "")
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    who = sorted(theirs)[0].lower()
    assert mailchimp_fake.tags_of(who, "aud1")  # tagged in aud1, never created anywhere

    point_at(shop, 'audience = "aud1"', 'audience = "aud2"')
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--full-refresh", "--allow-mass-change")  # exit 0: moved
    assert who not in mailchimp_fake.lists["aud2"].members  # skip: not created without consent
    writes = mailchimp_fake.write_calls
    cli("sync", "--config", str(shop), "--as-of", AS_OF)  # the ledger is aud2's: nothing more to do
    assert mailchimp_fake.write_calls == writes
    set_consent(shop.parent, {e for e in theirs if e.lower() == who}, "да")  # he agreed since
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    assert mailchimp_fake.member(who, "aud2")["status"] == "subscribed" and mailchimp_fake.tags_of(who, "aud2")


def test_a_plain_plan_is_stale_when_another_run_recorded_another_target_since(ledger_url):  # noqa: F811
    # a diff plan made while the ledger had no target (a ledger older than targets, a first sync), applied after
    # another run recorded another one (which does not move the revision): refused, nothing forgotten
    from sync.errors import PlanStaleError
    from sync.ledger import Ledger
    from sync.model import PushedState
    from sync.planning.target import known_target, move_if_planned, record_target

    with Ledger.connect(ledger_url) as ledger:
        ledger.save_states("mc", None, [PushedState(f"{i}@x.io", str(i), frozenset({"VIP"}), {}, True)
                                        for i in range(3)])
        planned_at = ledger.state_revision("mc")  # run A (config aud1) plans a plain sync here
        record_target(ledger, "mc", "mailchimp:aud2")  # run B (config aud2): an empty apply records its target
        assert ledger.state_revision("mc") == planned_at and ledger.acquire_lock("sync:mc", "A", 60)
        with pytest.raises(PlanStaleError, match="make a new plan"):
            move_if_planned(ledger, "mc", "mailchimp:aud1", ("sync:mc", "A"))  # A's apply
        # nor a move's plan made from another target than the ledger's now
        with pytest.raises(PlanStaleError):
            move_if_planned(ledger, "mc", "mailchimp:aud1", ("sync:mc", "A"), moves_from="mailchimp:aud3")
        assert len(ledger.load_state("mc")) == 3 and known_target(ledger, "mc") == "mailchimp:aud2"


def test_a_renamed_destination_takes_over_the_old_name_s_rows_in_one_transaction(ledger_url):  # noqa: F811
    from sync.ledger import Ledger
    from sync.model import ItemResult, PushedState
    from sync.planning.target import TARGET_CURSOR, known_target, record_target

    with Ledger.connect(ledger_url) as ledger:
        run = ledger.start_run("sync", "old")
        ledger.save_states("old", run, [PushedState("a@x.io", "1", frozenset({"VIP", "Lost"}), {"F": "1"}, True),
                                        PushedState("b@x.io", "2", frozenset({"VIP"}), {}, True)])
        ledger.record_results("old", run, [ItemResult("b@x.io", "upsert", False, "Invalid Resource")])
        ledger.save_states("new", run, [PushedState("a@x.io", "1", frozenset({"vip"}), {"F": "2"}, True)])
        for name in ("old", "new"):
            record_target(ledger, name, "mailchimp:aud1")
        revision = ledger.state_revision("new")
        assert ledger.acquire_lock("sync:new", "me", 60)
        assert ledger.take_over("old", "new", (TARGET_CURSOR, "old"), lock=("sync:new", "me")) == 2
        state = ledger.load_state("new")
        # a: new's row, with the tag only old's held (VIP is vip but for case); b: old's row
        assert state["a@x.io"].tags == {"vip", "Lost"} and state["a@x.io"].fields == {"F": "2"}
        assert state["b@x.io"].tags == {"VIP"} and ledger.state_revision("new") > revision
        assert ledger.load_state("old") == {} and ledger.state_destinations() == ["new"]
        assert known_target(ledger, "old") is None and ledger.pending_failures("old") == []


def test_a_renamed_destination_keeps_what_the_contacts_own_choice_keeps_out(ledger_url):  # noqa: F811
    """fixu27 #7: the kept-out operations of the old name are the new name's (the same ESP target: his unsubscribe
    holds there); they were deleted with the old name, so the renamed destination read and sent them again."""
    from sync.ledger import Ledger
    from sync.model import ItemResult, PushedState
    from sync.planning.target import TARGET_CURSOR

    def kept(key, op, why):
        return ItemResult(key, op, False, why, refused=True, kept_out=True)

    with Ledger.connect(ledger_url) as ledger:
        ledger.save_states("old", None, [PushedState("a@x.io", "1", frozenset(), {}, True)])
        ledger.record_kept_out("old", None, [kept("a@x.io", "tag+VIP", "old a"), kept("b@x.io", "upsert", "old b")])
        ledger.record_kept_out("new", None, [kept("b@x.io", "upsert", "new b")])
        ledger.take_over("old", "new", (TARGET_CURSOR, "old"))
        assert {(r["key"], r["op"], r["reason"]) for r in ledger.kept_out_list()} == {
            ("a@x.io", "tag+VIP", "old a"), ("b@x.io", "upsert", "new b")}


def test_a_destination_is_forgotten_only_while_none_of_its_rows_holds_a_tag(ledger_url):  # noqa: F811
    from sync.ledger import Ledger
    from sync.model import PushedState
    from sync.planning.target import TARGET_CURSOR, known_target, record_target

    with Ledger.connect(ledger_url) as ledger:
        ledger.save_states("second", None, [PushedState("a@x.io", "1", frozenset(), {}, True),
                                           PushedState("b@x.io", "2", frozenset({"Lost"}), {}, True)])
        record_target(ledger, "second", "mailchimp:aud2")
        assert ledger.forget_destination("second", (TARGET_CURSOR, "second")) == -1  # b still holds Lost
        assert len(ledger.load_state("second")) == 2 and known_target(ledger, "second") == "mailchimp:aud2"
        ledger.save_states("second", None, [PushedState("b@x.io", "2", frozenset(), {}, True)])
        assert ledger.forget_destination("second", (TARGET_CURSOR, "second")) == 2
        assert ledger.load_state("second") == {} and ledger.state_destinations() == []
        assert known_target(ledger, "second") is None


def test_reconcile_says_how_many_members_of_an_adopted_tag_rfmsync_did_not_add(shop, mailchimp_fake):
    """sync29 #4: a tag that existed before rfmsync managed it keeps its own members until ``--reconcile``, which
    takes it off every member outside its segment (docs/sync.md#reconcile): the plan says so, naming the
    destination and the tag, with how many (no address); the members rfmsync tagged itself are not counted."""
    hand = [f"hand{i}@elsewhere.example" for i in range(3)]
    for email in hand:
        mailchimp_fake.add_member(email, tags=["VIP"], list_id="aud1")
    cli("sync", "--config", str(shop), "--as-of", AS_OF)  # adopts VIP; its own members stay on it
    assert all("VIP" in mailchimp_fake.tags_of(e, "aud1") for e in hand)
    plain = json.loads(cli("sync", "--config", str(shop), "--as-of", AS_OF, "--dry-run", "--format", "json").stdout)
    assert not any("rfmsync did not add" in w for w in plain["warnings"])
    doc = json.loads(cli("sync", "--config", str(shop), "--as-of", AS_OF, "--dry-run", "--reconcile",
                         "--format", "json").stdout)
    [line] = [w for w in doc["warnings"] if "rfmsync did not add" in w]
    name = doc["plans"][0]["destination"]
    assert line.startswith(f"{name}: --reconcile takes the managed tag/list 'VIP' off 3 of its members rfmsync did "
                           "not add"), line
    assert not any(e in line for e in hand)
    removed = [c for c in doc["plans"][0]["changes"] if "VIP" in c["remove_tags"]]
    assert {c["key"] for c in removed} == set(hand)  # what the plan does: the count is theirs
