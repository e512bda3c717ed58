"""One e-mail address, two customers (a family account): the ESP contact is the customer the full plan picks (the
more valuable one), and a webhook resync of the other one does not take it over until the next full sync gives
it back, a flap per order (tags and fields written twice, an ESP automation on "tag added" started each time).
When the full plan's pick changes and nothing else does, the ledger is told the new customer without an ESP call, so
that the resync knows whose the contact is."""

from __future__ import annotations

import json
import logging

import pytest

from connectors.records import Contact
from sync.model import DesiredContact, PushedState
from sync.planning.plan import leave_shared_to_full_sync
from sync.config import load_config
from sync.ledger import Ledger, open_ledger
from sync.serve.resync import resync
from sync.serve.scheduler import run_full_sync
from sync.settings import load_settings

from tests.builders import run_cli
from tests import ledger_fixtures
from tests.test_serve_resync import AS_OF, DEST, orders_for, synced_shop

ledger_url = ledger_fixtures.ledger_url


def test_a_resync_of_the_other_customer_of_a_shared_address_leaves_it_to_the_full_sync(
        tmp_path, mailchimp_fake, monkeypatch, caplog):
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=120)
    cfg, settings = load_config(path), load_settings()
    caplog.set_level(logging.INFO, logger="sync.serve.resync")
    with open_ledger(cfg, settings) as ledger:
        state = ledger.load_state(DEST)
        shared, owner = next((k, s.customer_id) for k, s in sorted(state.items()) if s.tags == {"VIP"})
        old, other = next((k, s.customer_id) for k, s in sorted(state.items()) if s.tags == {"Winback"})
        # the churned customer now gives the VIP's address (the CRM's contact of a family member)
        report = resync(cfg, ledger, settings, contacts=[Contact(other, email=shared.upper())], as_of=AS_OF)
        assert report.customers == 1
        assert mailchimp_fake.tags_of(shared) == {"VIP"}  # still the VIP's segment ...
        assert ledger.load_state(DEST)[shared].customer_id == owner  # ... and his contact
        assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "sync.serve.resync"
                and "left to the full sync" in r.getMessage()] == [
            ("INFO", f"webhook resync of {DEST}: {shared} is customer {owner}'s contact and also customer {other}'s "
                     "address: left to the full sync, which picks the more valuable one")]
        assert mailchimp_fake.tags_of(old) == set()  # the other's old address lost rfmsync's tags (it left)
        # a small order of the other one: a resync again, still no take-over
        resync(cfg, ledger, settings, orders_for([other], "FAM", amount="100"), as_of=AS_OF)
        assert mailchimp_fake.tags_of(shared) == {"VIP"}
        fields = dict(mailchimp_fake.lists["aud1"].members[shared]["merge_fields"])
        assert fields["RFM_SEG"] == "Best active"
        # the full sync agrees: nothing to write for the shared address
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        assert mailchimp_fake.tags_of(shared) == {"VIP"}
        assert ledger.load_state(DEST)[shared].customer_id == owner
        # the VIP's e-mail changes: the address he left is the other's contact now, its tags are not taken off
        resync(cfg, ledger, settings, contacts=[Contact(owner, email="moved-" + shared)], as_of=AS_OF)
        assert mailchimp_fake.tags_of("moved-" + shared) == {"VIP"}
        assert mailchimp_fake.tags_of(shared) == {"VIP"}
        # the other's next resync takes the contact: the ledger's owner no longer gives the address
        resync(cfg, ledger, settings, orders_for([other], "FAM2", amount="100"), as_of=AS_OF)
        taken = ledger.load_state(DEST)[shared]
        assert taken.customer_id == other and mailchimp_fake.tags_of(shared) == set(taken.tags) != {"VIP"}
        # and the full sync agrees: the other's contact, nothing moves back
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        assert mailchimp_fake.tags_of(shared) == set(taken.tags)
        assert ledger.load_state(DEST)[shared].customer_id == other


def test_the_partial_plan_notes_the_address_it_leaves_and_takes_it_when_its_owner_is_resynced_too():
    want = [DesiredContact(key="fam@x.ru", customer_id="B", email="fam@x.ru", consent="yes", segment="Churn",
                           tags=frozenset({"Winback"}), fields={}),
            DesiredContact(key="b@x.ru", customer_id="C", email="b@x.ru", consent="yes", segment="Churn",
                           tags=frozenset({"Winback"}), fields={})]
    last = {"fam@x.ru": PushedState("fam@x.ru", "A", frozenset({"VIP"}), {}, True),
            "b@x.ru": PushedState("b@x.ru", None, frozenset(), {}, True)}  # no owner recorded: planned as before
    asked = []

    def store(keys, among):
        asked.append((keys, among))
        return {"fam@x.ru": {"A"}}

    kept, rest, notes = leave_shared_to_full_sync(want, last, {"B", "C"}, store)
    assert [d.key for d in kept] == ["b@x.ru"] and list(rest) == ["b@x.ru"]
    assert notes == ["fam@x.ru is customer A's contact and also customer B's address: left to the full sync, "
                     "which picks the more valuable one"]
    assert asked == [({"fam@x.ru"}, {"A"})]  # by id: is A still giving it?
    assert leave_shared_to_full_sync(want, last, {"A", "B", "C"}, store) == (want, last, [])
    assert len(asked) == 1  # nobody else named, nothing left: the store is not asked


def _want(key, customer, tags):
    return DesiredContact(key=key, customer_id=customer, email=key, consent="yes", segment="Churn",
                          tags=frozenset(tags), fields={})


def test_an_owner_the_store_no_longer_gives_the_address_to_does_not_hold_it():
    """The ledger's owner is the last customer written, not the full plan's pick: A moved to a new address, or
    was deleted, or was a guest id since merged into B. B's resync takes the contact (before, it was left "to
    the full sync" at every resync, naming A, and a full sync with nothing to write never changed the owner)."""
    last = {"fam@x.ru": PushedState("fam@x.ru", "A", frozenset({"VIP"}), {}, True)}
    want = [_want("fam@x.ru", "B", {"Winback"})]
    assert leave_shared_to_full_sync(want, last, {"B"}, lambda keys, among: {}) == (want, last, [])


def test_an_address_a_customer_left_keeps_its_tags_while_another_customer_gives_it():
    """A's resync after his e-mail changed: fam@x.ru, which B still gives, is B's contact now, not an address
    that left (whose managed tags the plan would take off): it is left to the full sync; an address nobody gives
    any more is still planned as one that left."""
    last = {"fam@x.ru": PushedState("fam@x.ru", "A", frozenset({"VIP"}), {}, True),
            "old@x.ru": PushedState("old@x.ru", "A", frozenset({"VIP"}), {}, True)}
    want = [_want("a@new.ru", "A", {"VIP"})]
    asked = []

    def store(keys, among):
        asked.append((keys, among))
        return {"fam@x.ru": {"B"}}

    kept, rest, notes = leave_shared_to_full_sync(want, last, {"A"}, store)
    assert asked == [({"fam@x.ru", "old@x.ru"}, None)]  # by address, among everyone
    assert kept == want and list(rest) == ["old@x.ru"]
    assert notes == ["fam@x.ru is no longer customer A's address but still customer B's: left to the full sync"]


def test_an_address_left_long_ago_does_not_ask_the_store_again():
    """An address a customer left, whose tags the plan already took off (no tags in the ledger): nothing to
    decide, so the store is not scanned for it at every later resync of that customer."""
    last = {"old@x.ru": PushedState("old@x.ru", "A", frozenset(), {"SEG": "VIP"}, True)}
    want = [_want("a@new.ru", "A", {"VIP"})]

    def store(keys, among):
        raise AssertionError(f"the store was asked about {keys}")

    assert leave_shared_to_full_sync(want, last, {"A"}, store) == (want, last, [])


def test_a_full_plan_says_which_addresses_several_customers_share(tmp_path):
    """The full plan keeps the first customer of an address in planning order (the more valuable); the others'
    segments never reach the ESP, and the plan says so instead of dropping them without a word."""
    from sync.config import Config
    from sync.ledger import Ledger
    from sync.planning.planner import plan_one

    cfg = Config(destinations=[{"name": "mc", "type": "mailchimp", "audience": "a", "segments": {"Churn": "W"}}])
    rows = [{"customer_id": "A", "email": "fam@x.ru", "segment": "Best active", "marketing_consent": "yes"},
            {"customer_id": "B", "email": "solo@x.ru", "segment": "Churn", "marketing_consent": "yes"},
            {"customer_id": "C", "email": " FAM@x.ru", "segment": "Churn", "marketing_consent": "yes"},
            {"customer_id": "D", "email": "two@x.ru", "segment": "Churn", "marketing_consent": "yes"},
            {"customer_id": "E", "email": "Two@X.ru", "segment": "Churn", "marketing_consent": "yes"}]
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        plan = plan_one(cfg, cfg.destinations[0], rows, ledger, None, None, full_refresh=False,
                        reconcile=False).plan
        alone = plan_one(cfg, cfg.destinations[0], rows[:2], ledger, None, None, full_refresh=False,
                         reconcile=False).plan
    finally:
        ledger.close()
    assert sorted(c.key for c in plan.changes) == ["fam@x.ru", "solo@x.ru", "two@x.ru"]
    assert ("2 addresses are each shared by several customers (fam@x.ru: customers A, C; two@x.ru: customers D, E):"
            " each is one contact, synced as the first of its customers (the most valuable); the others' segments"
            " and fields are not synced") in plan.notes
    assert not any("shared" in n for n in alone.notes)


def _taken_over(folder, fake, monkeypatch):
    """A synced shop where customer B, more valuable than A, now gives A's address too, their tags and fields
    the same (one segment, one RFM code; churned: an order moves A to another segment); B's resync left the
    address to the full sync. (config path, settings, the address, A, B, the ESP's contact as it is)."""
    from sync import api

    path = synced_shop(folder, fake, monkeypatch, customers=120)
    cfg, settings = load_config(path), load_settings()
    run = api.segments(cfg, AS_OF)
    try:
        value = dict(run.con.execute(f"SELECT customer_id, monetary FROM {run.result.table}").fetchall())
    finally:
        run.close()
    with open_ledger(cfg, settings) as ledger:
        groups: dict = {}
        for key, s in sorted(ledger.load_state(DEST).items()):
            if s.tags == {"Winback"}:
                groups.setdefault(tuple(sorted(s.fields.items())), []).append((value[s.customer_id], key,
                                                                               s.customer_id))
        (_, _, b), (_, shared, a) = next(sorted(found, reverse=True)[:2] for found in groups.values()
                                         if len(found) > 1)
        resync(cfg, ledger, settings, contacts=[Contact(b, email=shared)], as_of=AS_OF)
        assert ledger.load_state(DEST)[shared].customer_id == a
    contact = (fake.tags_of(shared), dict(fake.lists["aud1"].members[shared]["merge_fields"]))
    return path, settings, shared, a, b, contact


def api_segments(cfg):
    from sync import api

    return api.segments(cfg, AS_OF)


def _pushed(ledger, customer: str, key: str) -> list:
    """When and by which run ``key`` was last pushed, as the ledger lists ``customer``'s contacts (explain)."""
    return [(s["run_id"], s["pushed_at"]) for s in ledger.customer_states(customer) if s["key"] == key]


def test_a_more_valuable_customer_with_the_same_tags_takes_the_shared_address_in_the_ledger_without_an_esp_call(
        tmp_path, mailchimp_fake, monkeypatch, caplog):
    """B, more valuable than A, now gives A's address; their tags and fields are the same, so the full plan writes
    nothing to the ESP. Before, the ledger went on naming A, A's next resync treated the address as his own and
    pushed his new segment, and the full sync after it pushed B's back: a flap per order of A. The full sync
    records B as the owner in the ledger alone (no ESP call, counted as ledger-only, not as a change)."""
    path, settings, shared, a, b, held = _taken_over(tmp_path / "shop", mailchimp_fake, monkeypatch)
    cfg = load_config(path)
    caplog.set_level(logging.INFO, logger="sync.serve.resync")
    caplog.set_level(logging.INFO, logger="sync.engine")
    with open_ledger(cfg, settings) as ledger:
        writes, pushed = mailchimp_fake.write_calls, _pushed(ledger, a, shared)
        [report] = run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        assert mailchimp_fake.write_calls == writes  # B's tags and fields are A's: nothing to write
        assert report.counts["planned"] == 0 and report.counts["ledger_only"] == 1
        # the sync's one INFO line (all a scheduled sync says) counts it too
        assert f"sync {DEST} succeeded: 0 changes, 0 ok, 0 failed, 0 skipped, 1 recorded in the ledger only (new owner)" in [
            r.getMessage() for r in caplog.records if r.name == "sync.engine"]
        assert ledger.load_state(DEST)[shared].customer_id == b  # ... but the contact is B's now
        assert _pushed(ledger, a, shared) == [] and _pushed(ledger, b, shared) == pushed  # pushed when it was
        # a small order of A (a churned customer buying again: another segment): his resync leaves the address
        resync(cfg, ledger, settings, orders_for([a], "FAMA", amount="100"), as_of=AS_OF)
        assert mailchimp_fake.write_calls == writes
        assert (mailchimp_fake.tags_of(shared),
                dict(mailchimp_fake.lists["aud1"].members[shared]["merge_fields"])) == held
        assert any(f"{shared} is customer {b}'s contact and also customer {a}'s address" in r.getMessage()
                   for r in caplog.records)
        # and the next full sync has nothing to move back (A's order moved the cut points: others may move)
        [again] = run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        assert again.counts["ledger_only"] == 0 and _pushed(ledger, b, shared) == pushed
        assert (mailchimp_fake.tags_of(shared),
                dict(mailchimp_fake.lists["aud1"].members[shared]["merge_fields"])) == held


def test_a_saved_plan_carries_the_new_owner_and_only_its_apply_records_it(tmp_path, mailchimp_fake, monkeypatch):
    """``rfmsync plan -o`` writes nothing (the ledger still names A) and lists the owner change apart from the
    changes, with a note; ``rfmsync apply`` of that file records it in the ledger alone, as ``sync`` does."""
    path, settings, shared, a, b, held = _taken_over(tmp_path / "shop", mailchimp_fake, monkeypatch)
    cfg, saved = load_config(path), tmp_path / "plan.json"
    with open_ledger(cfg, settings) as ledger:
        revision = ledger.state_revision(DEST)
    shown = run_cli("plan", "--config", str(path), "--as-of", AS_OF.isoformat()).output
    assert "recorded in the ledger only when applied, no ESP call" in shown  # plan writes nothing
    run_cli("plan", "--config", str(path), "--as-of", AS_OF.isoformat(), "-o", str(saved))
    [plan] = json.loads(saved.read_text(encoding="utf-8"))["plans"]
    assert plan["owners"] == [{"key": shared, "customer_id": b, "was": a}]
    assert plan["changes"] == [] and plan["totals"]["updated"] == 0
    writes = mailchimp_fake.write_calls
    with open_ledger(cfg, settings) as ledger:
        assert ledger.state_revision(DEST) == revision and ledger.load_state(DEST)[shared].customer_id == a
    printed = run_cli("apply", "--config", str(path), str(saved)).output
    assert "0 changes" in printed and "1 recorded in the ledger only (new owner)" in printed
    assert mailchimp_fake.write_calls == writes
    with open_ledger(cfg, settings) as ledger:
        assert ledger.load_state(DEST)[shared].customer_id == b
    assert (mailchimp_fake.tags_of(shared), dict(mailchimp_fake.lists["aud1"].members[shared]["merge_fields"])) == held


def test_the_json_document_counts_the_new_owners_per_destination_and_in_the_totals(
        tmp_path, mailchimp_fake, monkeypatch):
    """``sync --format json``: ``ledger_only`` in the destination's counts and in the document's totals."""
    path, _, shared, a, b, held = _taken_over(tmp_path / "shop", mailchimp_fake, monkeypatch)
    doc = json.loads(run_cli("sync", "--config", str(path), "--as-of", AS_OF.isoformat(), "--format", "json").stdout)
    [dest] = doc["destinations"]
    assert dest["counts"]["ledger_only"] == 1 and dest["counts"]["planned"] == 0
    assert doc["counts"] == {"planned": 0, "ok": 0, "failed": 0, "skipped": 0, "ledger_only": 1, "kept_out": 0}


def test_a_change_whose_esp_calls_all_fail_still_names_its_new_customer(tmp_path, mailchimp_fake, monkeypatch):
    """B, more valuable than A and in another segment, now gives A's address: the full plan changes the contact
    to B's tags and fields. The ESP refuses every write; the ledger names B all the same (recorded before the ESP
    calls; tags and fields stay A's, as pushed), so A's next resync leaves the address instead of pushing his
    state, and the next full sync sends B's change again. Before, the ledger kept naming A until the retry."""
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=120)
    cfg, settings = load_config(path), load_settings()
    run = api_segments(cfg)
    try:
        value = dict(run.con.execute(f"SELECT customer_id, monetary FROM {run.result.table}").fetchall())
    finally:
        run.close()
    with open_ledger(cfg, settings) as ledger:
        state = ledger.load_state(DEST)
        ranked = sorted((value[s.customer_id], key) for key, s in state.items() if s.customer_id)
        _, shared = ranked[0]  # the least valuable customer's address
        a, held = state[shared].customer_id, state[shared]
        b = next(state[key].customer_id for _, key in reversed(ranked) if state[key].tags != held.tags)
        resync(cfg, ledger, settings, contacts=[Contact(b, email=shared)], as_of=AS_OF)
        assert ledger.load_state(DEST)[shared].customer_id == a  # left to the full sync
        writes = mailchimp_fake.write_calls
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            mailchimp_fake.fail(400, times=None, fraction=1.0, method=method)
        [report] = run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
        assert report.counts["failed"] > 0 and report.counts["ok"] == 0
        assert report.counts["ledger_only"] == 0  # B's contact is a change, not a new owner alone
        assert mailchimp_fake.write_calls > writes
        after = ledger.load_state(DEST)[shared]
        assert after.customer_id == b and (after.tags, after.fields, after.exists) == (held.tags, held.fields, True)


def test_the_ledger_names_the_new_owner_and_keeps_everything_else(ledger_url):
    """Only a row that still names ``was`` gets its new customer; its tags, fields, presence, run and time stay;
    the revision moves (the next plan's cached read sees the row); nothing to change: no revision bump; a lock
    another run took: nothing written."""
    from sync.errors import LockLostError
    from sync.model import OwnerChange

    ledger = Ledger.connect(ledger_url)
    try:
        run = ledger.start_run("sync", "mc")
        ledger.save_states("mc", run, [PushedState("fam@x.ru", "A", frozenset({"VIP"}), {"SEG": "x"}, True),
                                       PushedState("two@x.ru", "C", frozenset(), {}, False)])
        ledger.save_states("other", run, [PushedState("fam@x.ru", "A", frozenset(), {}, True)])
        before = {(s["destination"], s["key"]): s for s in ledger.customer_states("A")}
        ledger.state_parts("mc")  # a cached copy (SQLite), renewed from the rows the owner change stamps
        revision = ledger.state_revision("mc")
        owners = [OwnerChange("fam@x.ru", "B", "A"), OwnerChange("two@x.ru", "D", "X"),  # not X's: left
                  OwnerChange("nobody@x.ru", "E", "A")]
        assert ledger.record_owners("mc", owners) == ["fam@x.ru"]
        assert ledger.state_revision("mc") == revision + 1
        state = ledger.load_state("mc")
        assert state["fam@x.ru"] == PushedState("fam@x.ru", "B", frozenset({"VIP"}), {"SEG": "x"}, True)
        assert state["two@x.ru"].customer_id == "C" and ledger.load_state("other")["fam@x.ru"].customer_id == "A"
        [moved] = ledger.customer_states("B")
        assert moved == before[("mc", "fam@x.ru")]
        cached = ledger.state_parts("mc").merged().to_pylist()
        assert {r["key"]: r["customer_id"] for r in cached} == {"fam@x.ru": "B", "two@x.ru": "C"}
        assert ledger.record_owners("mc", owners) == [] and ledger.state_revision("mc") == revision + 1
        owner = ledger.acquire_lock("sync:mc", ttl_seconds=60)
        with pytest.raises(LockLostError):
            ledger.record_owners("mc", [OwnerChange("fam@x.ru", "A", "B")], lock=("sync:mc", owner + "-gone"))
        assert ledger.load_state("mc")["fam@x.ru"].customer_id == "B"
        ledger.finish_run(run, "succeeded", {})
    finally:
        ledger.close()


def test_a_contact_whose_customer_alone_changes_is_no_change_and_no_plan_guard_counts_it():
    """The pure planner (the webhook resync's) lists every contact whose customer id changes as an owner change
    (the apply names the new customer before any ESP call), the one whose tags change too also as a change; the
    note and the plan guards count only the change, not the owner change alone."""
    from sync.config import DestinationConfig
    from sync.guards import PlanStats, plan_stats
    from sync.model import OwnerChange
    from sync.planning.plan import plan_destination

    dest = DestinationConfig(name="mc", type="mailchimp", audience="a", segments={"Churn": "Winback"})
    last = {"fam@x.ru": PushedState("fam@x.ru", "A", frozenset({"Winback"}), {}, True),
            "two@x.ru": PushedState("two@x.ru", "C", frozenset(), {}, True)}
    plan = plan_destination(dest, [_want("fam@x.ru", "B", {"Winback"}), _want("two@x.ru", "D", {"Winback"})], last)
    assert [c.key for c in plan.changes] == ["two@x.ru"] and plan.changes[0].customer_id == "D"
    assert plan.owners == (OwnerChange("fam@x.ru", "B", "A"), OwnerChange("two@x.ru", "D", "C"))
    assert plan_stats(plan, last) == PlanStats(managed=1, removed=0, changed=0)
    [note] = [n for n in plan.notes if "recorded in the ledger only when applied" in n]
    assert note.startswith("1 contact is now another customer's with nothing to write to the ESP (the contact's "
                           "customer id changed: a shared address's new pick, or a merged or renumbered customer; "
                           "fam@x.ru, customer A → B)")
