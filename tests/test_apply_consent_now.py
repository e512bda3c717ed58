"""``apply`` of a saved plan reads the consent again (docs/sync.md#consent): a contact whose consent was
withdrawn after ``plan -o`` (the export pulled again with its consent column now *no*) is not subscribed, nor tagged
under ``skip``; he is left out, counted as skipped with the card that refuses, nothing recorded for him, and the
next plan decides again. Through the CLI against the fake Mailchimp, the store fed by the real file pull."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.builders import run_cli as cli
from tests.test_config_moved import AS_OF, point_at, shop  # noqa: F401

NAME = "mailchimp-demo"


def _saved(shop: Path, tmp_path: Path) -> tuple[Path, dict]:  # noqa: F811
    saved = tmp_path / "plan.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    return saved, json.loads(saved.read_text(encoding="utf-8"))


def _withdraw(shop: Path, customer: str) -> None:  # noqa: F811
    """The export's card of ``customer`` says *no* now, and the store learns it by the file pull."""
    clients = shop.parent / "clients.csv"
    lines = clients.read_text(encoding="utf-8").split("\n")
    row = next(i for i, line in enumerate(lines) if line.startswith(f"{customer};"))
    assert ";да;" in lines[row], lines[row]
    lines[row] = lines[row].replace(";да;", ";нет;")
    clients.write_text("\n".join(lines), encoding="utf-8")
    cli("pull", "--config", str(shop))


def test_a_consent_withdrawn_after_the_plan_was_saved_is_not_subscribed_by_apply(shop, mailchimp_fake,  # noqa: F811
                                                                                 tmp_path):
    saved, doc = _saved(shop, tmp_path)
    subscribed = [c for c in doc["plans"][0]["changes"] if c["create"] and c["status_if_new"] == "subscribed"]
    assert len(subscribed) > 1
    gone = subscribed[0]
    _withdraw(shop, gone["customer_id"])

    out = cli("apply", "--config", str(shop), str(saved), "--format", "json").output
    result = json.loads(out[out.index("{\n"):])
    assert gone["key"] not in mailchimp_fake.lists["aud1"].members, "subscribed against a withdrawn consent"
    assert mailchimp_fake.member(subscribed[1]["key"], "aud1")["status"] == "subscribed"  # the others applied
    line = next(w for w in result["warnings"] if "left out" in w)
    assert line.startswith(f"{NAME}: 1 contact of this plan left out") and gone["key"] in line
    assert "consent no now" in line and "his own card says no" in line
    dest = result["destinations"][0]
    assert dest["counts"]["skipped"] == sum(1 for _ in doc["plans"][0]["skipped"]) + 1
    assert dest["counts"]["planned"] == len(doc["plans"][0]["changes"]) - 1

    # nothing recorded for him: the next plan decides again, on the consent now (created transactional)
    again, doc2 = _saved(shop, tmp_path)
    change = next(c for c in doc2["plans"][0]["changes"] if c["key"] == gone["key"])
    assert change["create"] and change["status_if_new"] == "transactional"
    cli("apply", "--config", str(shop), str(again))
    assert mailchimp_fake.member(gone["key"], "aud1")["status"] == "transactional"


def test_under_skip_a_withdrawn_consent_gets_no_managed_tag_from_a_saved_plan(shop, mailchimp_fake,  # noqa: F811
                                                                            tmp_path):
    point_at(shop, 'new_contacts = "transactional"', 'new_contacts = "skip"')
    cli("sync", "--config", str(shop), "--as-of", "2025-03-31")  # members with their tags of March
    saved, doc = _saved(shop, tmp_path)
    moved = next(c for c in doc["plans"][0]["changes"] if not c["create"] and c["add_tags"])
    _withdraw(shop, moved["customer_id"])
    before = mailchimp_fake.tags_of(moved["key"], "aud1")

    out = cli("apply", "--config", str(shop), str(saved), "--allow-mass-change").output
    assert f"{NAME}: 1 contact of this plan left out" in out and moved["key"] in out, out
    after = mailchimp_fake.tags_of(moved["key"], "aud1")
    managed = set(doc["plans"][0]["managed_tags"])
    assert before & managed and moved["remove_tags"], "he had a managed tag for the plan to take off"
    assert not after & set(moved["add_tags"]), "tagged against a withdrawn consent under skip"
    # all his managed tags come off at the ESP (sync29 #1: only the add is left out, his old segment's tag still
    # goes), his other tags kept
    assert not after & managed, f"managed tags left on a withdrawn contact under skip: {after & managed}"
    assert after == before - managed
    # the next plan, made on the consent now (a no), adds him none and leaves him without any
    again, doc2 = _saved(shop, tmp_path)
    change = next((c for c in doc2["plans"][0]["changes"] if c["key"] == moved["key"]), None)
    assert change is None or not change["add_tags"]
    cli("apply", "--config", str(shop), str(again), "--allow-mass-change")
    assert not mailchimp_fake.tags_of(moved["key"], "aud1") & managed


def test_apply_on_a_host_without_the_store_refuses_a_plan_that_subscribes(shop, mailchimp_fake,  # noqa: F811
                                                                        tmp_path):
    saved, _ = _saved(shop, tmp_path)
    store = shop.parent / "rfmsync.duckdb"
    assert store.exists()
    store.rename(tmp_path / "elsewhere.duckdb")
    writes = mailchimp_fake.write_calls
    out = cli("apply", "--config", str(shop), str(saved), code=2).output
    assert mailchimp_fake.write_calls == writes, "nothing may be sent without the consent read again"
    assert "order store" in out and "this host has none" in out and str(store) in out.replace("\n", ""), out
    assert "rfmsync pull" in out


def test_a_plan_subscribing_nobody_applies_without_the_store(shop, mailchimp_fake, tmp_path):  # noqa: F811
    """A plan with nothing the consent decides (no subscribe, no tag under skip) needs no store."""
    point_at(shop, 'new_contacts = "transactional"', 'new_contacts = "pending"')
    saved, doc = _saved(shop, tmp_path)
    assert doc["plans"][0]["changes"]
    (shop.parent / "rfmsync.duckdb").rename(tmp_path / "elsewhere.duckdb")
    cli("apply", "--config", str(shop), str(saved))
    assert mailchimp_fake.lists["aud1"].members


def test_a_known_unisender_contact_whose_consent_was_withdrawn_is_not_put_on_a_new_list(unisender_fake, tmp_path,
                                                                                         monkeypatch):
    """Under ``new_contacts = "subscribed"`` Unisender's import subscribes a known contact to the lists it names
    without confirmation: a saved plan that only moves him to another list (a list renamed in the config: no field,
    no create) waits on his consent as a subscribe does."""
    from tests.test_retire_fields import make_shop

    uni = make_shop("unisender", unisender_fake, tmp_path, monkeypatch)
    point_at(uni, 'new_contacts = "skip"', 'new_contacts = "subscribed"')
    cli("sync", "--config", str(uni), "--as-of", AS_OF, code=(0, 4))  # (no consent: not added, a failure)
    assert unisender_fake.members("VIP")
    point_at(uni, '"Best active" = "VIP"', '"Best active" = "VIP gold"')
    saved, doc = _saved(uni, tmp_path)
    joins = [c for c in doc["plans"][0]["changes"]
             if "list:VIP gold" in c["add_tags"] and not c["create"] and not c["set_fields"]]
    assert len(joins) > 1 and all(c["status_if_new"] == "subscribed" for c in joins)
    gone = joins[0]
    _withdraw(uni, gone["customer_id"])

    out = cli("apply", "--config", str(uni), str(saved), "--allow-mass-change", code=(0, 4)).output
    assert gone["key"] not in unisender_fake.members("VIP gold"), "put on a list against a withdrawn consent"
    assert "1 contact of this plan left out" in out and gone["key"] in out and "his own card says no" in out, out
    assert joins[1]["key"] in unisender_fake.members("VIP gold")  # the others applied


def test_a_withdrawn_unisender_contact_still_leaves_his_old_list(unisender_fake, tmp_path, monkeypatch):
    """sync29 #1: the consent read again leaves out only what subscribes (his add to the new segment's list); his
    removal from the old segment's list still goes out (Unisender keeps no campaign list of his without it), and
    he is not created nor put on the new list."""
    from tests.test_retire_fields import make_shop

    uni = make_shop("unisender", unisender_fake, tmp_path, monkeypatch)
    point_at(uni, 'new_contacts = "skip"', 'new_contacts = "subscribed"')
    cli("sync", "--config", str(uni), "--as-of", "2025-03-31", code=(0, 4))
    saved, doc = _saved(uni, tmp_path)
    moves = [c for c in doc["plans"][0]["changes"] if not c["create"] and c["status_if_new"] == "subscribed"
             and any(t.startswith("list:") for t in c["add_tags"]) and c["remove_tags"]]
    assert len(moves) > 1, "the demo shop moves known contacts between segment lists"
    gone = moves[0]
    old = [t[5:] for t in gone["remove_tags"] if t.startswith("list:")]
    new = [t[5:] for t in gone["add_tags"] if t.startswith("list:")]
    assert old and all(gone["key"] in unisender_fake.members(t) for t in old)
    _withdraw(uni, gone["customer_id"])

    out = cli("apply", "--config", str(uni), str(saved), "--allow-mass-change", code=(0, 4)).output
    assert all(gone["key"] not in unisender_fake.members(t) for t in new), "put on a list against his consent"
    assert all(gone["key"] not in unisender_fake.members(t) for t in old), "his old list's removal was dropped"
    assert "1 contact of this plan left out" in out and gone["key"] in out, out
    assert "1 still has what subscribes nobody sent: his tag/list removals" in out.replace("\n", " "), out
    assert moves[1]["key"] in unisender_fake.members(moves[1]["add_tags"][0][5:])  # the others applied
    # sync29 #3: the known contacts an import puts on a list are counted among those the plan subscribes
    changes = [c for c in doc["plans"][0]["changes"] if c["status_if_new"] == "subscribed"]
    new_ones = sum(c["create"] for c in changes)
    known = sum(not c["create"] and any(not t.startswith("tag:") for t in c["add_tags"]) for c in changes)
    assert known >= len(moves) and new_ones
    assert (f"this plan (made 0 min ago) subscribes {new_ones} new contact{'s' if new_ones > 1 else ''} and "
            f"{known} known contacts (put on a list: its import subscribes them): apply reads their consent again"
            in out.replace("\n", " ")), out


@pytest.mark.parametrize("mode", ["subscribed", "skip"])
def test_a_withdrawn_known_unisender_contact_the_esp_lost_is_not_created_again_by_apply(unisender_fake, tmp_path,
                                                                                          monkeypatch, mode):
    """What still goes of a left-out known contact's change (his removals, field updates) never creates him: when
    Unisender lost him since the plan was made (deleted there), apply of the saved plan does not import him back,
    whatever ``new_contacts`` says (under ``subscribed`` an import of his row would, without his consent)."""
    from tests.test_retire_fields import make_shop

    uni = make_shop("unisender", unisender_fake, tmp_path, monkeypatch)
    point_at(uni, 'new_contacts = "skip"', f'new_contacts = "{mode}"')
    cli("sync", "--config", str(uni), "--as-of", "2025-03-31", code=(0, 4))
    saved, doc = _saved(uni, tmp_path)
    moves = [c for c in doc["plans"][0]["changes"] if not c["create"] and c["add_tags"] and c["remove_tags"]
             and c["set_fields"] and c["key"] in unisender_fake.contacts]
    assert moves, "the demo shop moves known contacts, their fields updated, between segment lists"
    gone = moves[0]
    _withdraw(uni, gone["customer_id"])
    unisender_fake.forget(gone["key"])

    out = cli("apply", "--config", str(uni), str(saved), "--allow-mass-change", code=(0, 4)).output
    assert "1 contact of this plan left out" in out and gone["key"] in out, out
    assert gone["key"] not in unisender_fake.contacts, "a contact Unisender lost was created again against a no"
