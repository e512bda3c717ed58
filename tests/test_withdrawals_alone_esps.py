"""The bad day of :mod:`tests.test_withdrawals_alone` (one managed customer withdraws his consent, another leaves;
``max_removal_pct`` holds the plan) against the SendGrid and the Unisender fakes, end to end through ``rfmsync
sync``: the withdrawn contact's managed lists (and Unisender tags) come off alone, the leaving customer keeps his,
the ESP's other lists, tags and fields are untouched, the ledger matches the ESP after, and a second run writes
nothing. (The Mailchimp cases are in :mod:`tests.test_withdrawals_alone` and ``…_runs``.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sync.config import load_config
from sync.ledger import open_ledger
from sync.settings import load_settings
from tests.fakes.registry import DESTINATIONS, UNMANAGED_LIST, UNMANAGED_TAG, FakeDestination
from tests.test_destination_contract import destination_table
from tests.test_guards import run_cli, runs_of, swap_tags
from tests.test_guards_withdrawal import set_consent
from tests.test_withdrawals_alone import DAY, drop_orders
from tests.test_worker import AS_OF

NAME = "esp"
SEGMENTS = {"Best active": "VIP", "Falling asleep": "Winback soft", "Churn": "Winback", "Beginners": "Welcome"}
#: Unisender: a tag as well as a list for the segments the 20-customer shop has, so that taking a withdrawn
#: contact's managed tag off (getContact, then the whole tag set again with overwrite_tags) is run too
TAGS = {"Churn": "rfm-churn", "Beginners": "rfm-new"}
REMOVAL = f"{NAME}: guard max_removal_pct: 1 of 7 managed contacts (14.3 %) would lose their tags; limit 10 %"
WENT_OUT = (f"1 consent withdrawal went out alone ({NAME} 1): only the withdrawn contacts' managed tags/lists were "
            "taken off; the rest of the plan is held")


@pytest.fixture(params=["sendgrid", "unisender"])
def esp(request, monkeypatch):
    with DESTINATIONS[request.param]() as harness:
        for name, value in harness.env().items():
            monkeypatch.setenv(name, value)
        yield harness


@pytest.fixture
def shop(tmp_path, esp: FakeDestination) -> Path:
    """The 20-customer demo shop under ``new_contacts = "skip"``, synced once to the fake: 7 managed contacts;
    ``min_mass_change = 1`` so that one customer leaving trips max_removal_pct."""
    from sync.demodata import generate_shop

    demo = generate_shop(tmp_path / "demo", customers=20, seed=3, as_of=AS_OF)
    dest = {**esp.destination(NAME, SEGMENTS, {"rfm_code": "rfm"}, tags=TAGS), "new_contacts": "skip"}
    head = demo.read_text(encoding="utf-8").split("[[destinations]]")[0]
    demo.write_text(head + destination_table(dest) + "\n[guards]\nmax_bad_rows_pct = 100\nmin_mass_change = 1\n"
                    "max_withdrawal_pct = 50\n", encoding="utf-8")
    run_cli("sync", "--config", str(demo), "--as-of", DAY)
    assert len(ledger_state(demo)) == 7
    return demo


def ledger_state(path: Path) -> dict[str, Any]:
    """key → pushed state of the contacts holding a managed tag/list, by the ledger."""
    with open_ledger(load_config(path), load_settings()) as ledger:
        return {k: s for k, s in sorted(ledger.load_state(NAME).items()) if s.exists and s.tags}


def managed_names(path: Path) -> set[str]:
    with open_ledger(load_config(path), load_settings()) as ledger:
        return {t for s in ledger.load_state(NAME).values() for t in s.tags}


def contacts(esp: FakeDestination) -> dict[str, str]:
    """Everything the fake holds per contact (lists, tags, fields, status), comparable."""
    return {e: json.dumps(c, sort_keys=True, default=sorted) for e, c in esp.fake.contacts.items()}


def give_unmanaged(esp: FakeDestination, key: str) -> None:
    """The contact also on a list (and, in Unisender, with a tag) that rfmsync does not manage."""
    c = esp.fake.contacts[key]
    lid = esp.fake.list_id(UNMANAGED_LIST)
    if esp.type == "sendgrid":
        c["list_ids"].add(lid)
    else:
        c["lists"].add(lid)
        c["tags"].append(UNMANAGED_TAG)


def on_unmanaged(esp: FakeDestination, key: str) -> bool:
    c = esp.fake.contacts[key]
    if esp.type == "sendgrid":
        return esp.fake.list_id(UNMANAGED_LIST) in c["list_ids"]
    return esp.fake.list_id(UNMANAGED_LIST) in c["lists"] and UNMANAGED_TAG in c["tags"]


def field_names(esp: FakeDestination) -> set[str]:
    """The custom fields the ESP has (SendGrid: id → (name, type); Unisender: name → type)."""
    return {n for n, _ in esp.fake.fields.values()} if esp.type == "sendgrid" else set(esp.fake.fields)


def assert_ledger_matches(path: Path, esp: FakeDestination) -> None:
    """Every contact the ledger records holds in the ESP exactly the managed names the ledger says."""
    managed = managed_names(path) | {f"tag:{t}" for t in TAGS.values()}
    with open_ledger(load_config(path), load_settings()) as ledger:
        state = ledger.load_state(NAME)
    assert {k: set(s.tags) for k, s in state.items() if s.exists} == {
        k: esp.managed_of(k, managed) for k, s in state.items() if s.exists}


def test_a_mass_removal_holds_the_plan_but_not_a_withdrawal(shop, esp):
    """The bad day: exit 6, the withdrawn contact's managed lists (and tag) off, his other list and tag, his
    status, the leaving customer and a bystander untouched; the ledger says what the ESP holds; the next sync writes
    nothing, and one let through takes the held removal off."""
    state = ledger_state(shop)
    (key, mine), (gone, theirs) = list(state.items())[:2]
    if esp.type == "unisender":
        assert any(t.startswith("tag:") for t in mine.tags), mine.tags  # his managed tag comes off too
    for contact in (key, gone):
        give_unmanaged(esp, contact)
    esp.seed("bystander@example.net", unsubscribed=False)
    set_consent(shop, "нет", {mine.customer_id})
    drop_orders(shop, theirs.customer_id)
    before, status = contacts(esp), esp.status(key)

    doc = json.loads(run_cli("sync", "--config", str(shop), "--as-of", DAY, "--format", "json", code=6).stdout)
    assert doc["guards"] == [REMOVAL] and doc["error"].endswith(WENT_OUT)
    (sent,) = doc["withdrawals_applied"]
    assert (sent["destination"], sent["status"]) == (NAME, "succeeded")
    assert sent["counts"]["withdrawals_alone"] == 1 and sent["counts"]["planned"] == 1
    after = contacts(esp)
    assert {e for e in before if before[e] != after[e]} == {key}  # the leaving customer is held, nobody else
    assert not esp.managed_of(key, mine.tags) and on_unmanaged(esp, key)
    assert esp.managed_of(gone, theirs.tags) == set(theirs.tags) and on_unmanaged(esp, gone)
    assert esp.unmanaged("bystander@example.net") == {"tag": True, "field": "Tashkent"}
    assert esp.status(key) == status and esp.violations() == []
    assert key not in ledger_state(shop) and gone in ledger_state(shop)
    assert_ledger_matches(shop, esp)
    assert [r["status"] for r in runs_of(shop)[:2]] == ["refused", "succeeded"]

    # the next sync: the removal is held again, the withdrawal is not sent twice: nothing written
    writes = esp.write_calls
    again = json.loads(run_cli("sync", "--config", str(shop), "--as-of", DAY, "--format", "json", code=6).stdout)
    assert again["guards"] == [REMOVAL.replace("1 of 7 managed contacts (14.3 %)", "1 of 6 managed contacts (16.7 %)")]
    assert again["withdrawals_applied"] == []
    assert esp.write_calls == writes and contacts(esp) == after

    run_cli("sync", "--config", str(shop), "--as-of", DAY, "--allow-mass-change")
    assert not esp.managed_of(gone, theirs.tags) and on_unmanaged(esp, gone)
    assert_ledger_matches(shop, esp)
    writes = esp.write_calls
    run_cli("sync", "--config", str(shop), "--as-of", DAY)
    assert esp.write_calls == writes


def test_the_withdrawals_alone_create_no_list_or_field_of_the_held_plan(shop, esp):
    """The held plan maps a new field and moves the Churn contacts to another list (max_change_pct holds it); the
    alone run takes the withdrawn contact's managed lists off and creates no field or list in the ESP."""
    text = shop.read_text(encoding="utf-8").replace('"rfm_code" = "rfm"', '"rfm_code" = "rfm"\n"rfm_r" = "r"')
    shop.write_text(text + "max_change_pct = 10\n", encoding="utf-8")
    swap_tags(shop)
    key, mine = next(iter(ledger_state(shop).items()))
    set_consent(shop, "нет", {mine.customer_id})
    lists, fields, field_names_before = dict(esp.fake.lists), dict(esp.fake.fields), field_names(esp)
    result = run_cli("sync", "--config", str(shop), "--as-of", DAY, code=6)
    assert f"{NAME}: guard max_change_pct: 2 of 7 managed contacts" in result.output and WENT_OUT in result.output
    assert not esp.managed_of(key, mine.tags) and key not in ledger_state(shop)
    assert esp.fake.lists == lists and esp.fake.fields == fields
    assert_ledger_matches(shop, esp)
    run_cli("sync", "--config", str(shop), "--as-of", DAY, "--allow-mass-change")  # the held plan creates them
    assert field_names(esp) == field_names_before | {"rfm_r"}
    assert_ledger_matches(shop, esp)
