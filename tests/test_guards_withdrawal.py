"""The plan guards and consent withdrawals, and small shops (docs/safety.md): a withdrawal under
``new_contacts = "skip"`` is judged apart from the other removals (``max_withdrawal_pct``), and fewer contacts than
``min_mass_change`` never trip a percentage plan guard; a consent column that says ``no`` for most contacts is
still refused. Through `rfmsync` (plan, sync, apply), the scheduled sync and the webhook resync, against the fake
Mailchimp."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from connectors.records import Consent, Contact
from sync.config import GuardsConfig, load_config
from sync.errors import GuardRefusedError
from sync.guards import PlanStats, plan_lines
from sync.ledger import open_ledger
from sync.serve.resync import resync
from sync.serve.scheduler import run_full_sync
from sync.settings import load_settings
from tests.test_guards import run_cli, runs_of, set_guards
from tests.test_worker import AS_OF, DEST, audience, make_shop

MANAGED = {"VIP", "Winback soft", "Winback", "Welcome"}


# ------------------------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("stats, expected", [
    # one person withdrawing in a shop of 8 managed contacts: 12.5 %, over max_removal_pct, is no removal
    (PlanStats(managed=8, removed=0, changed=0, withdrawn=1), []),
    (PlanStats(managed=100, removed=0, changed=0, withdrawn=25), []),  # the limit itself passes
    (PlanStats(managed=200, removed=0, changed=0, withdrawn=150),
     ["guard max_withdrawal_pct: 150 of 200 managed contacts (75 %) would lose their tags for a marketing consent "
      "the source says is no; limit 25 %: is [source] marketing_consent mapped to the consent column?"]),
    # withdrawals count in neither of the other two, which judge the rest as before
    (PlanStats(managed=100, removed=11, changed=11, withdrawn=10),
     ["guard max_removal_pct: 11 of 100 managed contacts (11 %) would lose their tags; limit 10 %"]),
    # fewer than min_mass_change (5) contacts never trip a percentage plan guard while they are a minority
    (PlanStats(managed=8, removed=0, changed=4, withdrawn=4), []),
    (PlanStats(managed=20, removed=1, changed=4, withdrawn=3), []),
    (PlanStats(managed=6, removed=5, changed=5, withdrawn=0),
     ["guard max_removal_pct: 5 of 6 managed contacts (83.3 %) would lose their tags; limit 10 %",
      "guard max_change_pct: 5 of 6 managed contacts (83.3 %) would change; limit 50 %"]),
])
def test_withdrawals_and_the_floor(stats, expected):
    assert plan_lines(GuardsConfig(), stats) == expected


def test_the_floor_is_configurable_and_zero_judges_every_contact():
    one = PlanStats(managed=6, removed=1, changed=1)
    assert plan_lines(GuardsConfig(min_mass_change=0), one) == [
        "guard max_removal_pct: 1 of 6 managed contacts (16.7 %) would lose their tags; limit 10 %"]
    assert plan_lines(GuardsConfig(min_mass_change=2), one) == []


@pytest.mark.parametrize("text, message", [
    ("max_withdrawl_pct = 30", "did you mean 'max_withdrawal_pct'"),
    ("min_mass_changes = 3", "did you mean 'min_mass_change'"),
    ("max_withdrawal_pct = 101", "max_withdrawal_pct"),
    ("min_mass_change = -1", "min_mass_change"),
    ("min_mass_change = 101", "min_mass_change"),
])
def test_the_new_keys_are_validated(tmp_path, mailchimp_fake, monkeypatch, text, message):
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=20)
    path.write_text(path.read_text(encoding="utf-8") + f"\n[guards]\n{text}\n", encoding="utf-8")
    result = run_cli("plan", "--config", str(path), "--as-of", AS_OF.isoformat(), code=2)
    assert message in result.output, result.output


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def small_shop(tmp_path, mailchimp_fake, monkeypatch) -> Path:
    """A 20-customer demo shop whose destination creates only those who consented (``skip``), synced once:
    7 managed contacts (the demo's 6 bad rows are a large share of so few: max_bad_rows_pct is lifted)."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=20)
    path.write_text(path.read_text(encoding="utf-8").replace('new_contacts = "transactional"',
                                                              'new_contacts = "skip"'), encoding="utf-8")
    set_guards(path, max_bad_rows_pct=100)
    run_cli("sync", "--config", str(path), "--as-of", AS_OF.isoformat())
    assert len(managed_contacts(path)) == 7
    return path


def more_guards(path: Path, **values) -> None:
    """Add keys to the [guards] table set_guards appended last."""
    path.write_text(path.read_text(encoding="utf-8") + "".join(f"{k} = {v}\n" for k, v in values.items()),
                    encoding="utf-8")


def managed_contacts(path: Path) -> dict[str, str]:
    """key → customer id of the contacts holding a managed tag, by the ledger."""
    with open_ledger(load_config(path), load_settings()) as ledger:
        return {k: s.customer_id for k, s in sorted(ledger.load_state(DEST).items()) if s.tags & MANAGED}


def set_consent(path: Path, value: str, customers: set[str] | None = None) -> None:
    """Write ``value`` in the contacts file's consent column for ``customers`` (everyone when None)."""
    contacts = path.parent / "clients.csv"
    header, *rows = contacts.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    column = header.split(";").index("Согласие на рассылку")
    out = []
    for row in rows:
        cells = row.split(";")
        if customers is None or cells[0] in customers:
            cells[column] = value
        out.append(";".join(cells))
    contacts.write_text("\ufeff" + header + "".join(out), encoding="utf-8")


def plan_doc(path: Path) -> dict:
    return json.loads(run_cli("plan", "--config", str(path), "--as-of", AS_OF.isoformat(), "--format",
                              "json").stdout)


def test_one_withdrawal_in_a_small_shop_is_synced_and_the_plan_shows_it_apart(small_shop, mailchimp_fake):
    """The bad day: one of 7 managed contacts withdraws his consent (14.3 %, over max_removal_pct's 10 %). Before,
    the sync was refused (exit 6), and every scheduled one, so he kept the tags of the segment campaigns."""
    key, cid = next(iter(managed_contacts(small_shop).items()))
    set_consent(small_shop, "нет", {cid})
    doc = plan_doc(small_shop)
    plan = doc["plans"][0]
    assert plan["withdrawn"] == [key]
    assert plan["guard"] == {"managed": 7, "withdrawn": 1, "removed": 0, "changed": 0, "restored": 0, "retagged": 0}
    assert not [w for w in doc["warnings"] if "guard " in w]
    table = run_cli("plan", "--config", str(small_shop), "--as-of", AS_OF.isoformat()).output
    assert "Plan guards" in table and "consent withdrawn" in table and "other removals" in table
    assert re.search(r"│ mailchimp-demo │ +7 │ +1 \(14\.3 %\) │ +0 \(0 %\) │ +0 \(0 %\) │", table), table

    before = audience(mailchimp_fake)
    run_cli("sync", "--config", str(small_shop), "--as-of", AS_OF.isoformat())
    after = audience(mailchimp_fake)
    assert before[key][0] & MANAGED and not after[key][0] & MANAGED  # his segment tag is off
    assert {e for e in before if before[e] != after[e]} == {key}  # nobody else touched
    assert next(r for r in runs_of(small_shop) if r["kind"] == "sync")["status"] == "succeeded"
    assert key not in managed_contacts(small_shop)


def test_a_withdrawal_by_webhook_and_by_the_scheduled_sync_is_judged_apart_with_no_floor(small_shop, mailchimp_fake):
    """With the floor off (min_mass_change = 1: one contact can trip a guard), a withdrawal is still no removal:
    the webhook resync and the scheduled sync (which never override) push it; a customer who leaves the shop (an
    ordinary removal, 1 of 6: 16.7 %) is refused by max_removal_pct as before."""
    more_guards(small_shop, min_mass_change=1)
    (first, first_id), (second, second_id) = list(managed_contacts(small_shop).items())[:2]
    cfg, settings = load_config(small_shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        resync(cfg, ledger, settings, contacts=[Contact(first_id, email=first, marketing_consent=Consent.NO)],
               as_of=AS_OF)
        assert ledger.recent_runs(1)[0]["status"] == "succeeded"
    assert not mailchimp_fake.tags_of(first) & MANAGED
    set_consent(small_shop, "нет", {first_id})  # the export says so too (a full sync reads it)
    set_consent(small_shop, "нет", {second_id})
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF)  # kind "scheduled": never overrides
    assert not mailchimp_fake.tags_of(second) & MANAGED

    gone, gone_id = next(iter(managed_contacts(small_shop).items()))  # 5 managed now
    orders = small_shop.parent / "orders.csv"
    header, *rows = orders.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    orders.write_text("\ufeff" + header + "".join(r for r in rows if f";{gone_id};" not in r), encoding="utf-8")
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    refused = run_cli("sync", "--config", str(small_shop), "--as-of", AS_OF.isoformat(), code=6)
    assert "guard max_removal_pct: 1 of 5 managed contacts (20 %) would lose their tags; limit 10 %" \
        in refused.output
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes
    # the default floor (5) lets one contact leaving a small shop through
    small_shop.write_text(small_shop.read_text(encoding="utf-8").replace("min_mass_change = 1\n", ""),
                          encoding="utf-8")
    plan = plan_doc(small_shop)["plans"][0]
    assert plan["guard"] == {"managed": 5, "withdrawn": 0, "removed": 1, "changed": 1, "restored": 0, "retagged": 0}
    run_cli("sync", "--config", str(small_shop), "--as-of", AS_OF.isoformat())
    assert not mailchimp_fake.tags_of(gone) & MANAGED


def test_a_consent_column_saying_no_for_most_contacts_is_still_refused(small_shop, mailchimp_fake, tmp_path):
    """A consent column mis-mapped (or its values inverted) so that everyone says no: the withdrawals guard refuses
    it in sync, apply and the scheduled sync, and the ESP keeps every tag; the plan shows why."""
    set_consent(small_shop, "нет")
    line = ("guard max_withdrawal_pct: 7 of 7 managed contacts (100 %) would lose their tags for a marketing "
            "consent the source says is no; limit 25 %")
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    refused = run_cli("sync", "--config", str(small_shop), "--as-of", AS_OF.isoformat(), code=6)
    assert line in refused.output and "max_removal_pct" not in refused.output
    assert runs_of(small_shop)[0]["status"] == "refused" and line in runs_of(small_shop)[0]["error"]
    saved = tmp_path / "plan.json"
    doc = json.loads(run_cli("plan", "--config", str(small_shop), "--as-of", AS_OF.isoformat(), "-o", str(saved),
                             "--format", "json").stdout)
    assert doc["plans"][0]["guard"] == {"managed": 7, "withdrawn": 7, "removed": 0, "changed": 0, "restored": 0, "retagged": 0}
    assert any(line in w for w in doc["warnings"])
    assert line in run_cli("apply", "--config", str(small_shop), str(saved), code=6).output
    cfg, settings = load_config(small_shop), load_settings()
    with open_ledger(cfg, settings) as ledger, pytest.raises(GuardRefusedError, match="max_withdrawal_pct"):
        run_full_sync(cfg, ledger, settings, as_of=AS_OF)
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes
