"""``rfmsync apply`` of a saved plan agrees with ``sync`` on what is in doubt (sync.planning.doubt): a failed upsert
the plan no longer makes is forgotten when the plan is applied (never by ``plan``), and a withdrawal that takes off
only tags the contact may hold (doubted adds) is a withdrawal, sent alone when other plan guards hold the rest."""

from __future__ import annotations

import json

from sync.config import load_config
from sync.guards import believed_withdrawals
from sync.ledger import Ledger, open_ledger
from sync.ledger.locks import apply_lock
from sync.model import ContactChange, ItemResult, PushedState
from sync.planning.plan import Plan
from sync.settings import load_settings
from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, make_shop
from tests.test_withdrawals_alone import shop  # noqa: F401


def _failures(cfg) -> list[tuple[str, str]]:
    return [(f["key"], f["op"]) for f in json.loads(cli("failures", "--config", str(cfg), "--format", "json").stdout)]


def test_apply_of_a_saved_plan_forgets_a_moot_upsert_as_sync_does(tmp_path, monkeypatch, mailchimp_fake,
                                                                  ledger_url):  # noqa: F811
    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    with Ledger.connect(ledger_url) as ledger:
        dest = ledger.recent_runs(1)[0]["destination"]
        key = sorted(ledger.load_state(dest))[0]  # synced: no plan upserts him again
        ledger.record_failures(dest, None, [ItemResult(key, "upsert", False, "HTTP 200: an HTML page")])
    saved = tmp_path / "plan.json"
    cli("plan", "--config", str(cfg), "--as-of", AS_OF, "-o", str(saved))
    assert _failures(cfg) == [(key, "upsert")]  # a plan forgets nothing
    with Ledger.connect(ledger_url) as ledger:  # another run applies the destination: the apply waits for nothing
        owner = ledger.acquire_lock(apply_lock(dest))
    cli("apply", "--config", str(cfg), str(saved), code=75)
    assert _failures(cfg) == [(key, "upsert")]  # an apply that never held the lock forgets nothing
    with Ledger.connect(ledger_url) as ledger:
        ledger.release_lock(apply_lock(dest), owner)
    cli("apply", "--config", str(cfg), str(saved))
    assert _failures(cfg) == []


def test_a_saved_plans_doubted_withdrawal_is_believed():
    """He withdrew (no consent, ``skip``): his change takes off a tag whose add was lost, which the ledger does not
    say he holds. The planners list him as withdrawn; apply believes it once it knows the doubt."""
    change = ContactChange(key="w@x.uz", email="w@x.uz", customer_id="1", segment="Best active", create=False,
                           status_if_new=None, remove_tags=frozenset({"VIP"}))
    plan = Plan(destination="mc", type="mailchimp", changes=(change,), skipped=(), managed_tags=("VIP",),
                fields={}, ledger_revision=1, withdrawn=("w@x.uz",))
    state = {"w@x.uz": PushedState("w@x.uz", "1", frozenset(), {}, True)}
    assert believed_withdrawals(plan, "skip", state, {"w@x.uz": frozenset({"VIP"})}) == ("w@x.uz",)
    held = {"w@x.uz": PushedState("w@x.uz", "1", frozenset({"VIP"}), {}, True)}
    assert believed_withdrawals(plan, "skip", held) == ("w@x.uz",)  # as a tag the ledger knows he holds


def test_a_saved_plans_doubted_withdrawal_goes_out_alone_when_a_guard_holds_the_rest(
        shop, mailchimp_fake):  # noqa: F811
    """Through ``apply``: a contact holds a tag in the ESP whose add's answer was lost (the ledger: a pending
    ``tag+`` failure, no tag pushed); he withdraws his consent on the day another customer leaves (the removal
    guard trips). Apply reads his doubt, believes his withdrawal and takes the tag off alone; the rest is held."""
    from tests.test_withdrawals_alone import DAY, DEST, drop_orders, managed_contacts, run_cli, set_consent

    (key, cid), (gone, gone_id) = list(managed_contacts(shop).items())[:2]
    tags = frozenset(mailchimp_fake.tags_of(key))
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:  # the adds' answers were lost: the ESP holds them, the ledger not
        held = ledger.load_state(DEST)[key]
        ledger.save_states(DEST, None, [PushedState(key, cid, frozenset(), held.fields, True)])
        ledger.record_failures(DEST, None, [ItemResult(key, f"tag+{t}", False, "HTTP 200: an HTML page")
                                            for t in tags])
    set_consent(shop, "нет", {cid})
    drop_orders(shop, gone_id)
    saved = shop.parent / "plan.json"
    run_cli("plan", "--config", str(shop), "--as-of", DAY, "-o", str(saved))
    assert json.loads(saved.read_text(encoding="utf-8"))["plans"][0]["withdrawn"] == [key]
    doc = json.loads(run_cli("apply", "--config", str(shop), str(saved), "--format", "json", code=6).stdout)
    assert any("guard max_removal_pct" in line for line in doc["guards"]), doc["guards"]
    assert [s["status"] for s in doc["withdrawals_applied"]] == ["succeeded"], doc
    assert not mailchimp_fake.tags_of(key) & tags  # his doubted tags came off
    assert mailchimp_fake.tags_of(gone)  # the leaving customer's removal is held


def test_a_sync_a_guard_refuses_forgets_no_moot_upsert(tmp_path, monkeypatch, mailchimp_fake,
                                                       ledger_url):  # noqa: F811
    """A failed upsert the plan no longer makes is forgotten by the sync that applies the plan, not by one a guard
    refused (exit 6: the ledger as it was, but for withdrawals sent alone); the sync that applies forgets it."""
    from tests.test_guards import set_guards, swap_tags

    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    with Ledger.connect(ledger_url) as ledger:
        dest = ledger.recent_runs(1)[0]["destination"]
        key = sorted(ledger.load_state(dest))[0]  # synced: no plan upserts him again
        ledger.record_failures(dest, None, [ItemResult(key, "upsert", False, "HTTP 200: an HTML page")])
    swap_tags(cfg)  # every contact of two segments changes tags: a mass change
    set_guards(cfg, max_change_pct=10)
    refused = cli("sync", "--config", str(cfg), "--as-of", AS_OF, code=6)
    assert "guard max_" in refused.output
    assert _failures(cfg) == [(key, "upsert")]  # refused: the ledger forgot nothing
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert _failures(cfg) == []


def test_a_sync_a_guard_refuses_keeps_a_kept_out_row_the_next_sync_forgets(tmp_path, monkeypatch, mailchimp_fake,
                                                                           ledger_url):  # noqa: F811
    """End to end through the CLI: a kept-out operation the plan no longer wants (a tag no mapping gives any more)
    stays in the ledger after a sync a guard refused (exit 6), and the next sync, applied, forgets it."""
    from tests.test_guards import set_guards, swap_tags

    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    with Ledger.connect(ledger_url) as ledger:
        dest = ledger.recent_runs(1)[0]["destination"]
        key = sorted(ledger.load_state(dest))[0]
        ledger.record_kept_out(dest, None, [ItemResult(key, "tag+rfm_Retired", False, "he unsubscribed",
                                                       refused=True, kept_out=True)])

    def kept() -> list[tuple[str, str]]:
        out = cli("failures", "--config", str(cfg), "--format", "json", "--kept-out").stdout
        return [(r["key"], r["op"]) for r in json.loads(out)]

    assert kept() == [(key, "tag+rfm_Retired")]
    swap_tags(cfg)  # every contact of two segments changes tags: a mass change
    set_guards(cfg, max_change_pct=10)
    assert "guard max_" in cli("sync", "--config", str(cfg), "--as-of", AS_OF, code=6).output
    assert kept() == [(key, "tag+rfm_Retired")]  # refused: the ledger forgot nothing
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert kept() == []
