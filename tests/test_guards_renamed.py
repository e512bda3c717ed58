"""The plan guards after the managed tags were renamed (a ``tag_prefix`` set, every mapped tag renamed): the old
names are no longer managed, but the contacts rfmsync gave them are still its managed contacts, so re-tagging them
all under the new names is a mass change (``max_change_pct``: exit 6 until ``--allow-mass-change``), not the first
sync of an empty destination. Before, the guard counted only the holders of the tags managed *now*: none, so 116
of 116 contacts were re-tagged with no guard (every "tag added" automation fired), while a reshuffle of 26 between
managed tags was refused. The old tags stay on the contacts until ``retire_tags`` takes them off. End to end
through the CLI against the fake Mailchimp; the rules on the ledger's rows (plan_stats, the webhook path's count)."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest

from sync.demodata import generate_shop
from sync.guards import PlanStats, plan_stats
from sync.ledger import Ledger
from sync.model import ContactChange, PushedState
from sync.planning.plan import Plan
from sync.serve.managed import ManagedCounts
from tests.builders import run_cli as cli

AS_OF = "2025-06-30"
DEST = "mailchimp-demo"
OLD = ('"Best active" = "VIP"\n"Falling asleep" = "Winback soft"\n"Churn" = "Winback"\n"Beginners" = "Welcome"')
EDITS = {"prefix": ('new_contacts = "transactional"', 'new_contacts = "transactional"\ntag_prefix = "rfm:"'),
         "renamed": (OLD, OLD.replace('VIP"', 'VIP2"').replace('soft"', 'soft2"').replace('"Winback"', '"Winback2"')
                     .replace('Welcome"', 'Welcome2"'))}


@pytest.fixture
def shop(tmp_path, mailchimp_fake, monkeypatch):
    cfg = generate_shop(tmp_path / "shop", customers=200, seed=3, as_of=date.fromisoformat(AS_OF))
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"'),
                   encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    return cfg


def tagged(fake) -> dict[str, frozenset[str]]:
    return {e: frozenset(fake.tags_of(e)) for e in fake.lists["aud1"].members if fake.tags_of(e)}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_renamed_managed_tags_are_a_mass_change_until_allowed_and_the_old_ones_retire(shop, mailchimp_fake, tmp_path,
                                                                                       edit):
    before, writes = tagged(mailchimp_fake), mailchimp_fake.write_calls
    old, new = EDITS[edit]
    text = shop.read_text(encoding="utf-8")
    assert old in text
    shop.write_text(text.replace(old, new), encoding="utf-8")
    refused = cli("sync", "--config", str(shop), "--as-of", AS_OF, code=6)
    assert (f"{DEST}: guard max_change_pct: {len(before)} of {len(before)} managed contacts (100 %) would change; "
            "limit 50 %") in refused.output
    assert tagged(mailchimp_fake) == before and mailchimp_fake.write_calls == writes  # nothing written
    saved = tmp_path / "plan.json"  # a saved plan is judged the same at apply (sync.run's count)
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    assert "guard max_change_pct" in cli("apply", "--config", str(shop), str(saved), code=6).output
    assert mailchimp_fake.write_calls == writes

    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")  # the wanted rename
    after = tagged(mailchimp_fake)
    assert after.keys() == before.keys() and all(len(after[e]) == 2 and before[e] < after[e] for e in before)
    # the old names stay (rfmsync no longer manages them); the plan names them and says how to retire them
    doc = json.loads(cli("plan", "--config", str(shop), "--as-of", AS_OF, "--format", "json").stdout)
    assert any("add retire_tags = [" in w and "max_change_pct where a contact keeps" in w for w in doc["warnings"])
    olds = sorted({t for tags in before.values() for t in tags})
    shop.write_text(shop.read_text(encoding="utf-8").replace(
        'new_contacts = "transactional"', f'new_contacts = "transactional"\nretire_tags = {json.dumps(olds)}'),
        encoding="utf-8")
    retiring = cli("sync", "--config", str(shop), "--as-of", AS_OF, code=6).output
    # every managed contact loses his old tag and keeps the new one: a change of all of them, not a removal
    assert "guard max_change_pct" in retiring and "guard max_removal_pct" not in retiring, retiring
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")
    assert {e: tags - after[e] for e, tags in tagged(mailchimp_fake).items()} == dict.fromkeys(before, frozenset())
    assert all(not (tags & set(olds)) for tags in tagged(mailchimp_fake).values())
    assert not mailchimp_fake.violations


def _state(key: str, *tags: str) -> PushedState:
    return PushedState(key, key, frozenset(tags), {})


def test_plan_stats_counts_the_holders_of_tags_no_longer_managed_as_managed_contacts():
    """The ledger holds the old names ("VIP", "Winback"); the plan manages "rfm:VIP", "rfm:Winback" and adds them."""
    state = {"a": _state("a", "VIP"), "b": _state("b", "Winback"), "c": _state("c", "VIP"), "d": _state("d")}
    plan = Plan(destination="mc", type="mailchimp", managed_tags=("rfm:VIP", "rfm:Winback"), fields={},
                ledger_revision=1, skipped=(), changes=tuple(
                    ContactChange(k, k, k, "S", False, None, add_tags=frozenset({f"rfm:{t}"}))
                    for k, t in (("a", "VIP"), ("b", "Winback"), ("c", "VIP"), ("n", "VIP"))))  # n: new contact
    assert plan_stats(plan, state) == PlanStats(managed=3, removed=0, changed=3, retagged=3)
    assert plan_stats(plan, state).to_json() == {"managed": 3, "withdrawn": 0, "removed": 0, "changed": 3,
                                                 "restored": 0, "retagged": 3}  # plan --format json's guard


def test_the_webhook_path_counts_the_holders_of_tags_no_longer_managed_that_its_plan_re_tags(tmp_path):
    """The cached count is of the holders of a managed tag (c); the plan's re-tagged contacts (a) are added to it by
    plan_stats, the others holding old names only (b) count for nothing, as on the full sync's path."""
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        ledger.save_states("mc", None, [_state("a", "VIP"), _state("b", "Winback"), _state("c", "rfm:VIP"),
                                        _state("d")])
        managed = ["rfm:VIP", "rfm:Winback"]
        held = ManagedCounts().count(ledger, "mc", managed, ledger.state_revision("mc"))[0]
        assert held == 1
        plan = Plan(destination="mc", type="mailchimp", managed_tags=tuple(managed), fields={}, ledger_revision=1,
                    skipped=(), changes=(ContactChange("a", "a", "a", "S", False, None,
                                                       add_tags=frozenset({"rfm:VIP"})),))
        last = ledger.load_states("mc", ["a"])
        assert plan_stats(plan, last, managed=held) == PlanStats(managed=2, removed=0, changed=1, retagged=1)


def test_old_tags_left_by_a_trimmed_mapping_do_not_let_a_mass_removal_through(shop, mailchimp_fake, tmp_path):
    """The mapping trimmed to "Falling asleep" = "Winback soft": the other tags stay on their contacts (until
    retire_tags). A bad day then loses the orders of every "Winback soft" holder: all of them would lose it, a mass
    removal (exit 6). Before, every contact holding any tag rfmsync pushed counted as managed (9 of 116: 7.8 %,
    applied). The sync's count (columnar) and the saved plan's at apply (the ledger's rows) say the same."""
    text = shop.read_text(encoding="utf-8")
    shop.write_text(text.replace(OLD, '"Falling asleep" = "Winback soft"'), encoding="utf-8")
    cli("sync", "--config", str(shop), "--as-of", AS_OF)  # the old tags stay: nothing removed, nothing changed
    soft = {e for e, tags in tagged(mailchimp_fake).items() if "Winback soft" in tags}
    assert soft and len(tagged(mailchimp_fake)) > 10 * len(soft)
    clients = (shop.parent / "clients.csv").read_text(encoding="utf-8-sig").splitlines()
    gone = {line.split(";")[0] for line in clients[1:] if line.split(";")[4].lower() in soft}
    orders = (shop.parent / "orders.csv").read_text(encoding="utf-8-sig").splitlines(keepends=True)
    (shop.parent / "orders.csv").write_text("".join(
        [orders[0], *(line for line in orders[1:] if line.split(";")[2] not in gone)]), encoding="utf-8-sig")
    writes = mailchimp_fake.write_calls
    refused = cli("sync", "--config", str(shop), "--as-of", AS_OF, code=6).output
    line = re.search(r"guard max_removal_pct: (\d+) of (\d+) managed contacts.*", refused)
    assert line and int(line[1]) == len(soft) and int(line[2]) < 2 * len(soft), refused
    # "9 of 12": the 3 managed contacts beyond the holders of "Winback soft" are the plan's re-tags (contacts holding
    # only old names who fall asleep now): the line says so, its share (and the refusal) as before
    retagged = re.search(r"; of the (\d+) managed contacts, (\d+) (is|are) re-tagged from tags no longer managed "
                         r"\(holding no managed tag yet\)$", line[0])
    assert retagged and retagged[1] == line[2] and int(line[2]) == len(soft) + int(retagged[2]), line[0]
    saved = tmp_path / "plan.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    assert line[0] in cli("apply", "--config", str(shop), str(saved), code=6).output
    assert mailchimp_fake.write_calls == writes and not mailchimp_fake.violations
