"""A consent withdrawal goes out even when another plan guard holds the plan (docs/safety.md, "Consent
withdrawals"): when only plan guards other than the withdrawal rules trip (a mass removal, a segment reshuffle),
the withdrawn contacts' managed tags come off alone, the rest is refused (exit 6) and stays pending; a withdrawal
rule, a data guard or the scoring guard still holds everything. End to end against the fake Mailchimp: sync, plan,
apply, the scheduled sync and the webhook resync.

The shop: 20 demo customers, ``new_contacts = "skip"``, 7 managed contacts after the first sync. The guards are set
so that one customer leaving trips ``max_removal_pct`` (``min_mass_change = 1``: 1 of 7 is 14.3 %, over 10 %)
while one withdrawal trips no withdrawal rule (one never does; with the removal, 2 of 7 together is 28.6 %, under
``max_withdrawal_pct = 50``)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.records import Consent, Contact, Order
from sync.config import GuardsConfig, load_config
from sync.errors import GuardRefusedError
from sync.guards import PlanStats, judge_plan, plan_lines
from sync.ledger import open_ledger
from sync.model import ContactChange, OwnerChange
from sync.planning.plan import Plan
from sync.planning.withdrawals import alone_note, withdrawals_alone
from sync.serve.resync import resync
from sync.serve.scheduler import run_full_sync
from sync.settings import load_settings
from tests.test_guards import run_cli, runs_of, set_guards
from tests.test_guards_withdrawal import MANAGED, managed_contacts, set_consent
from tests.test_worker import AS_OF, DEST, audience, make_shop

DAY = AS_OF.isoformat()


@pytest.fixture
def shop(tmp_path, mailchimp_fake, monkeypatch) -> Path:
    """The small ``skip`` shop of the module docstring, synced once."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=20)
    path.write_text(path.read_text(encoding="utf-8").replace('new_contacts = "transactional"',
                                                              'new_contacts = "skip"'), encoding="utf-8")
    set_guards(path, max_bad_rows_pct=100, min_mass_change=1, max_withdrawal_pct=50)
    run_cli("sync", "--config", str(path), "--as-of", DAY)
    assert len(managed_contacts(path)) == 7
    return path


def drop_orders(path: Path, customer: str) -> None:
    """The customer's orders taken out of the export: he leaves the customer base (an ordinary removal)."""
    orders = path.parent / "orders.csv"
    header, *rows = orders.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    orders.write_text("\ufeff" + header + "".join(r for r in rows if f";{customer};" not in r), encoding="utf-8")


def add_order(path: Path, customer: str) -> None:
    """A new order of the customer on AS_OF: his RFM code (a mapped field, RFM_CODE) changes."""
    orders = path.parent / "orders.csv"
    text = orders.read_text(encoding="utf-8-sig")
    row = next(r for r in text.splitlines() if f";{customer};" in r and "Продажа" in r).split(";")
    row[0], row[1] = "999001", AS_OF.strftime("%d.%m.%Y") + " 10:00"
    orders.write_text("\ufeff" + text.rstrip("\n") + "\n" + ";".join(row) + "\n", encoding="utf-8")


def bad_day(path: Path) -> tuple[str, str, str]:
    """One managed customer withdraws his consent, another leaves: (withdrawn key, leaving key, leaving id)."""
    (key, cid), (gone, gone_id) = list(managed_contacts(path).items())[:2]
    set_consent(path, "нет", {cid})
    drop_orders(path, gone_id)
    return key, gone, gone_id


REMOVAL = "mailchimp-demo: guard max_removal_pct: 1 of 7 managed contacts (14.3 %) would lose their tags; limit 10 %"
WENT_OUT = ("1 consent withdrawal went out alone (mailchimp-demo 1): only the withdrawn contacts' managed "
            "tags/lists were taken off; the rest of the plan is held")


def changed(before: dict, after: dict) -> set[str]:
    return {e for e in set(before) | set(after) if before.get(e) != after.get(e)}


def test_a_mass_removal_holds_the_plan_but_not_a_withdrawal(shop, mailchimp_fake):
    """The bad day: a customer leaving trips max_removal_pct on the day another withdraws his consent. Before, the
    whole plan waited (exit 6) and the person who withdrew kept his campaign tags until someone overrode it."""
    key, gone, _ = bad_day(shop)
    plan = json.loads(run_cli("plan", "--config", str(shop), "--as-of", DAY, "--format", "json").stdout)["plans"][0]
    assert plan["withdrawn"] == [key]
    assert any(n.startswith("1 consent withdrawal would go out alone") for n in plan["notes"]), plan["notes"]
    before = audience(mailchimp_fake)
    result = run_cli("sync", "--config", str(shop), "--as-of", DAY, "--format", "json", code=6)
    doc = json.loads(result.stdout)
    assert doc["guards"] == [REMOVAL] and doc["error"].endswith(WENT_OUT)
    (sent,) = doc["withdrawals_applied"]
    assert sent["destination"] == DEST and sent["status"] == "succeeded"
    assert sent["counts"]["withdrawals_alone"] == 1 and sent["counts"]["planned"] == 1
    after = audience(mailchimp_fake)
    assert changed(before, after) == {key}  # the leaving customer keeps his tags: held
    assert not after[key][0] & MANAGED and after[key][1] == before[key][1]
    assert after[gone] == before[gone] and before[gone][0] & MANAGED
    now = managed_contacts(shop)  # the ledger records exactly what was applied
    assert key not in now and gone in now
    sync_runs = [r for r in runs_of(shop) if r["kind"] == "sync"]
    assert [r["status"] for r in sync_runs[:2]] == ["refused", "succeeded"]
    assert REMOVAL in sync_runs[0]["error"] and WENT_OUT in sync_runs[0]["error"]

    # the next sync: the held removal is planned again, the withdrawal is not sent twice
    writes = mailchimp_fake.write_calls
    again = run_cli("sync", "--config", str(shop), "--as-of", DAY, "--format", "json", code=6)
    assert json.loads(again.stdout)["withdrawals_applied"] == [] and "went out" not in again.stderr
    assert mailchimp_fake.write_calls == writes
    run_cli("sync", "--config", str(shop), "--as-of", DAY, "--allow-mass-change")
    assert not mailchimp_fake.tags_of(gone) & MANAGED


def test_a_mass_of_withdrawals_still_holds_everything(shop, mailchimp_fake):
    """Most of the list saying no (a mis-mapped consent column) with a customer leaving: max_withdrawal_pct trips,
    and nothing goes out, as before: sync, the scheduled sync."""
    set_consent(shop, "нет")
    drop_orders(shop, next(iter(managed_contacts(shop).values())))
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    result = run_cli("sync", "--config", str(shop), "--as-of", DAY, "--format", "json", code=6)
    doc = json.loads(result.stdout)
    assert any("guard max_withdrawal_pct" in line for line in doc["guards"]) and doc["withdrawals_applied"] == []
    assert "went out" not in doc["error"]
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger, pytest.raises(GuardRefusedError) as refused:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF)
    assert refused.value.applied == [] and refused.value.note is None
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes


def test_a_data_guard_holds_the_withdrawals_too(shop, mailchimp_fake):
    """The source itself is suspect (the customer count fell: max_customer_drop_pct, judged with the plans):
    nothing goes out, withdrawals included."""
    bad_day(shop)
    shop.write_text(shop.read_text(encoding="utf-8") + "max_customer_drop_pct = 1\n", encoding="utf-8")
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    result = run_cli("sync", "--config", str(shop), "--as-of", DAY, code=6)
    assert "guard max_customer_drop_pct" in result.output and REMOVAL in result.output
    assert "went out" not in result.output
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes


def test_the_scheduled_sync_sends_the_withdrawal_and_holds_the_rest(shop, mailchimp_fake):
    key, gone, _ = bad_day(shop)
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger, pytest.raises(GuardRefusedError) as refused:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF)
    assert refused.value.lines == [REMOVAL] and refused.value.note == WENT_OUT
    assert [r.destination for r in refused.value.applied] == [DEST]
    assert not mailchimp_fake.tags_of(key) & MANAGED and mailchimp_fake.tags_of(gone) & MANAGED
    assert [r["kind"] for r in runs_of(shop)[:2]] == ["scheduled", "scheduled"]


def test_a_withdrawn_contact_whose_other_change_is_held(shop, mailchimp_fake):
    """He withdrew and also ordered (his RFM code, a mapped field, changes): only his managed tags come off; the
    field waits with the rest of the plan, and goes out when it is let through."""
    key, gone, _ = bad_day(shop)
    add_order(shop, managed_contacts(shop)[key])
    plan = json.loads(run_cli("plan", "--config", str(shop), "--as-of", DAY, "--format", "json").stdout)["plans"][0]
    (mine,) = [c for c in plan["changes"] if c["key"] == key]
    assert mine["remove_tags"] and "RFM_CODE" in mine["set_fields"]
    before = audience(mailchimp_fake)
    run_cli("sync", "--config", str(shop), "--as-of", DAY, code=6)
    after = audience(mailchimp_fake)
    assert not after[key][0] & MANAGED and after[key][1] == before[key][1]  # the field is held
    run_cli("sync", "--config", str(shop), "--as-of", DAY, "--allow-mass-change")
    assert audience(mailchimp_fake)[key][1]["RFM_CODE"] == mine["set_fields"]["RFM_CODE"]


def test_two_destinations_one_refusing(tmp_path, mailchimp_fake, monkeypatch):
    """A second audience maps only the Beginners: the customer leaving (Churn) is none of its contacts, so its plan
    trips nothing; the first one's removal refuses the run. Each destination's withdrawal goes out alone, the
    rest waits in both, both runs are refused."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=20)
    mailchimp_fake.add_list("aud2")
    text = path.read_text(encoding="utf-8").replace('new_contacts = "transactional"', 'new_contacts = "skip"')
    path.write_text(text + '\n[[destinations]]\nname = "vip"\ntype = "mailchimp"\naudience = "aud2"\n'
                           'new_contacts = "skip"\n\n[destinations.segments]\n"Beginners" = "Welcome"\n'
                           '\n[destinations.fields]\nRFM_CODE = "rfm"\n', encoding="utf-8")
    set_guards(path, max_bad_rows_pct=100, min_mass_change=1, max_withdrawal_pct=50)
    run_cli("sync", "--config", str(path), "--as-of", DAY)
    beginners = {e for e in mailchimp_fake.lists["aud2"].members if mailchimp_fake.tags_of(e, "aud2")}
    managed = managed_contacts(path)
    key = next(k for k in managed if k in beginners)  # managed in both
    gone = next(k for k in managed if k not in beginners)  # in the first alone
    set_consent(path, "нет", {managed[key]})
    drop_orders(path, managed[gone])
    before = {lst: audience_of(mailchimp_fake, lst) for lst in ("aud1", "aud2")}
    doc = json.loads(run_cli("sync", "--config", str(path), "--as-of", DAY, "--format", "json", code=6).stdout)
    assert doc["guards"] == [REMOVAL]
    assert sorted((r["destination"], r["counts"]["planned"]) for r in doc["withdrawals_applied"]) == [
        (DEST, 1), ("vip", 1)]
    assert "2 consent withdrawals went out alone (mailchimp-demo 1, vip 1)" in doc["error"]
    for lst in ("aud1", "aud2"):
        after = audience_of(mailchimp_fake, lst)
        assert changed(before[lst], after) == {key} and not mailchimp_fake.tags_of(key, lst)
    assert mailchimp_fake.tags_of(gone) & MANAGED
    last = {r["destination"]: r["status"] for r in reversed(runs_of(path)) if r["destination"]}
    assert last == {DEST: "refused", "vip": "refused"}


def audience_of(fake, list_id: str) -> dict:
    lst = fake.lists[list_id]
    return {e: (frozenset(fake.tags_of(e, list_id)), dict(m["merge_fields"])) for e, m in lst.members.items()}


def test_a_withdrawal_in_a_refused_webhook_batch(shop, mailchimp_fake):
    """A webhook batch holds a withdrawal and another customer's new order, whose new RFM code (a mapped field)
    trips max_change_pct (set to 0, with min_mass_change = 1): the batch is refused (failed), as before, but the
    withdrawal goes out alone; the other customer's change waits."""
    shop.write_text(shop.read_text(encoding="utf-8") + "max_change_pct = 0\n", encoding="utf-8")
    (key, cid), (other, other_id) = list(managed_contacts(shop).items())[:2]
    order = Order(order_id="W-1", customer_id=other_id, ordered_at=datetime(2025, 6, 30, 12, tzinfo=timezone.utc),
                  amount=Decimal("99000000"))
    cfg, settings = load_config(shop), load_settings()
    before = audience(mailchimp_fake)
    with open_ledger(cfg, settings) as ledger, pytest.raises(GuardRefusedError) as refused:
        resync(cfg, ledger, settings, orders=[order],
               contacts=[Contact(cid, email=key, marketing_consent=Consent.NO)], as_of=AS_OF)
    assert refused.value.lines == [
        "mailchimp-demo: guard max_change_pct: 1 of 7 managed contacts (14.3 %) would change; limit 0 %"]
    assert refused.value.note == WENT_OUT
    after = audience(mailchimp_fake)
    assert changed(before, after) == {key} and not after[key][0] & MANAGED
    assert [(r["kind"], r["status"]) for r in runs_of(shop)[:2]] == [("webhook", "refused"), ("webhook", "succeeded")]


def test_apply_believes_a_saved_plan_s_withdrawn_only_as_before(shop, mailchimp_fake, tmp_path):
    """A key added to a saved plan's withdrawn by hand (a customer leaving) is no withdrawal: counted as a removal,
    it is held with the rest, and only the real withdrawal goes out."""
    key, gone, _ = bad_day(shop)
    saved = tmp_path / "plan.json"
    run_cli("plan", "--config", str(shop), "--as-of", DAY, "-o", str(saved))
    doc = json.loads(saved.read_text(encoding="utf-8"))
    doc["plans"][0]["withdrawn"] = sorted([key, gone])
    saved.write_text(json.dumps(doc), encoding="utf-8")
    before = audience(mailchimp_fake)
    result = run_cli("apply", "--config", str(shop), str(saved), "--format", "json", code=6)
    out = json.loads(result.stdout)
    assert out["guards"] == [REMOVAL] and [r["counts"]["planned"] for r in out["withdrawals_applied"]] == [1]
    assert changed(before, audience(mailchimp_fake)) == {key}


# ------------------------------------------------------------------------------------------- the parts


@pytest.mark.parametrize("stats, held", [
    (PlanStats(managed=100, removed=15, changed=0, withdrawn=1), []),  # a mass removal: the withdrawal goes
    # a mass removal over 25 % trips the line of the two together by itself: the withdrawal did not make the
    # difference, it goes out (the removals' lines hold the rest)
    (PlanStats(managed=100, removed=40, changed=0, withdrawn=1), []),
    # 20 % removed trips no withdrawal rule alone; the withdrawals tip the two together over 25 %: held
    (PlanStats(managed=100, removed=20, changed=0, withdrawn=10),
     ["guard max_withdrawal_pct (withdrawals and removals together): 30 of 100"]),
    (PlanStats(managed=100, removed=0, changed=90, withdrawn=3), []),  # a reshuffle
    # removals exactly at the limit (25 %: they trip max_removal_pct, not the line of the two together) and one
    # withdrawal tipping that line over: fewer withdrawals than the rule's floor never hold a sync back
    (PlanStats(managed=20, removed=5, changed=0, withdrawn=1), []),
    (PlanStats(managed=100, removed=24, changed=0, withdrawn=2), []),
    (PlanStats(managed=200, removed=0, changed=0, withdrawn=150), ["guard max_withdrawal_pct: 150 of 200"]),
    (PlanStats(managed=100, removed=20, changed=0, withdrawn=20),
     ["guard max_withdrawal_pct (withdrawals and removals together): 40 of 100"]),
])
def test_withdrawal_lines_are_the_withdrawal_rules_of_plan_lines(stats, held):
    lines = list(judge_plan(GuardsConfig(), stats).withdrawal_lines)
    assert [line[:len(h)] for line, h in zip(lines, held)] == held and len(lines) == len(held)
    assert set(lines) <= set(plan_lines(GuardsConfig(), stats))


def test_a_mass_removal_over_the_combined_limit_lets_one_withdrawal_out():
    """The line of the two together trips (41 of 100, over 25 %) but the removals alone (40) trip it too: it is
    in plan_lines (the rest is held) and not a withdrawal rule (the withdrawal goes out)."""
    stats = PlanStats(managed=100, removed=40, changed=0, withdrawn=1)
    lines = plan_lines(GuardsConfig(), stats)
    assert [line.split(":")[0] for line in lines] == [
        "guard max_removal_pct", "guard max_withdrawal_pct (withdrawals and removals together)"]
    assert list(judge_plan(GuardsConfig(), stats).withdrawal_lines) == []


def test_withdrawals_alone_keeps_only_the_withdrawn_contacts_managed_removals():
    def change(key, **kw):
        base = dict(key=key, email=key, customer_id="c-" + key, segment="Churn", create=False, status_if_new=None)
        return ContactChange(**(base | kw))

    plan = Plan(destination="mc", type="mailchimp", managed_tags=("VIP", "Winback"), fields={"SEG": "segment"},
                ledger_revision=3, skipped=(), withdrawn=("a@x.uz", "b@x.uz"),
                owners=(OwnerChange("b@x.uz", "c-b@x.uz", "old-b"),),
                changes=(change("a@x.uz", remove_tags=frozenset({"VIP"}), set_fields={"SEG": "Churn"}),
                         change("b@x.uz", remove_tags=frozenset({"Winback"})),
                         change("c@x.uz", remove_tags=frozenset({"VIP"}), add_tags=frozenset({"Winback"})),
                         change("d@x.uz", create=True, status_if_new="subscribed", add_tags=frozenset({"VIP"}))))
    alone = withdrawals_alone(plan)
    assert [(c.key, c.remove_tags, c.add_tags, dict(c.set_fields), c.create, c.customer_id) for c in alone.changes] == [
        ("a@x.uz", {"VIP"}, frozenset(), {}, False, "c-a@x.uz"),
        ("b@x.uz", {"Winback"}, frozenset(), {}, False, "old-b")]  # his new owner waits with the plan
    assert alone.owners == () and alone.withdrawn == ("a@x.uz", "b@x.uz") and alone.ledger_revision == 3
    assert withdrawals_alone(replace(plan, withdrawn=())).is_empty
    # a move's withdrawals never go out alone: its apply would forget the old audience's state, refused or not
    assert withdrawals_alone(replace(plan, pushed_to="mailchimp:aud2", moves_from="mailchimp:aud1")).is_empty


def test_the_plans_alone_note_counts_what_goes_out_and_says_nothing_at_none():
    """``plan``'s note on the withdrawals a refused sync still sends counts those that would go out (the cut plan's
    changes), and is left off when none would: a withdrawn contact not yet in the ESP (a create) sends nothing (before:
    "0 consent withdrawals would go out alone")."""
    out = ContactChange("k1", "k1", "c1", "Best", False, None, remove_tags=frozenset({"VIP"}))
    new = ContactChange("k2", "k2", "c2", "Best", True, None)
    plan = Plan("mc", "mailchimp", (out, new), (), ("VIP",), {}, 0, withdrawn=("k1", "k2"))
    assert alone_note(plan).startswith("1 consent withdrawal would go out alone (only his managed tags/lists")
    assert alone_note(replace(plan, changes=(new,), withdrawn=("k2",))) is None
