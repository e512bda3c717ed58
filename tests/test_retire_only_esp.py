"""A destination kept only to retire its tags (docs/sync.md#removed-destination), once they are off, on the
stateful fakes of Mailchimp, SendGrid and Unisender: its plans make no change and its syncs no write call, run
after run, and the ledger's revision of it stays where it is (it is not recorded and forgotten again each run)."""

from __future__ import annotations

import json

import pytest

from sync.ledger import Ledger
from sync.planning.target import TARGET_CURSOR
from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, _ours, make_shop, plan_json, shop  # noqa: F401

FINISHED = "only retires tags and fields and none is left on the contacts rfmsync put it on"


def _held(esp: str, fake, email: str) -> set[str]:
    """The tags (Mailchimp) or lists the contact holds in the ESP, named as the ledger and the warning name them."""
    if esp == "mailchimp":
        return fake.tags_of(email, "aud1")
    contact = fake.contacts[email]
    if esp == "sendgrid":
        return {fake.lists[lid] for lid in contact["list_ids"]}
    return {f"list:{fake.lists[lid]}" for lid in contact["lists"] - contact.get("excluded", set())}


def test_a_finished_retire_only_destination_writes_nothing_run_after_run(shop, ledger_url):  # noqa: F811
    esp, fake, cfg = shop
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text[:text.index("[destinations.segments]")], encoding="utf-8")  # nothing mapped
    warning = next(w for w in plan_json(cfg)["warnings"] if "add retire_tags = [" in w)  # what it says to do
    retire = warning[warning.index("retire_tags = ["):].split("]")[0] + "]\n"
    fields = 'retire_fields = ["RFM_SEG", "RFM_CODE"]\n'  # and its fields: its values cleared too
    cfg.write_text(cfg.read_text(encoding="utf-8") + retire + fields, encoding="utf-8")
    retired = set(json.loads(retire.split("=", 1)[1]))
    assert any(_held(esp, fake, e) & retired for e in _ours(fake, esp))
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")  # its tags off: the ledger forgets it
    assert not any(_held(esp, fake, e) & retired for e in _ours(fake, esp))
    contacts = sorted(_ours(fake, esp))
    assert contacts
    counters = []
    for _ in range(2):
        writes = fake.write_calls
        plan = plan_json(cfg)["plans"][0]
        assert plan["changes"] == [] and plan["skipped"] == [] and plan["totals"]["new"] == 0, plan["totals"]
        assert [n for n in plan["notes"] if FINISHED in n and "remove it from the config" in n], plan["notes"]
        said = cli("sync", "--config", str(cfg), "--as-of", AS_OF).output
        assert "0 changes, 0 operations" in said, said
        assert fake.write_calls == writes
        with Ledger.connect(ledger_url) as ledger:
            counters.append(ledger.state_counter(plan["destination"]))
            assert plan["destination"] not in ledger.state_destinations()
    assert counters[0] == counters[1]
    assert sorted(_ours(fake, esp)) == contacts


@pytest.fixture(params=["mailchimp", "sendgrid"])
def tagged_shop(request, tmp_path, monkeypatch, ledger_url):  # noqa: F811
    esp = request.param
    fake = request.getfixturevalue(f"{esp}_fake")
    return esp, fake, make_shop(esp, fake, tmp_path, monkeypatch, ledger_url)


def test_a_fields_only_retiring_destination_is_not_finished_while_its_contacts_hold_its_old_tags(
        tagged_shop, ledger_url):  # noqa: F811
    """A destination that mapped segments and fields, then only retires its fields: once they are cleared, the
    tags rfmsync gave its contacts are still on them. It is not finished (no "remove it" note, the ledger keeps it:
    removed, its rows would warn of those tags), and its note says what to add; done, the tags come off and only
    then is it finished and forgotten."""
    esp, fake, cfg = tagged_shop
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    text = cfg.read_text(encoding="utf-8")
    head = text[:text.index("[destinations.segments]")]  # nothing mapped: it only retires the fields
    cfg.write_text(head + 'retire_fields = ["RFM_SEG", "RFM_CODE"]\n', encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")  # the fields cleared
    tagged = [e for e in _ours(fake, esp) if _held(esp, fake, e)]
    assert tagged
    plan = plan_json(cfg)["plans"][0]
    assert plan["changes"] == [] and not [n for n in plan["notes"] if "remove it from the config" in n]
    note = next(n for n in plan["notes"] if "it is not finished" in n)
    with Ledger.connect(ledger_url) as ledger:
        assert plan["destination"] in ledger.state_destinations()
    retire = note[note.index("retire_tags = ["):].split("]")[0] + "]\n"  # what the note says to add
    cfg.write_text(cfg.read_text(encoding="utf-8") + retire, encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert not any(_held(esp, fake, e) for e in tagged)
    plan = plan_json(cfg)["plans"][0]
    assert plan["changes"] == [] and [n for n in plan["notes"] if "tags and fields and none is left" in n]
    with Ledger.connect(ledger_url) as ledger:
        assert plan["destination"] not in ledger.state_destinations()


def test_a_tags_only_retiring_destination_is_not_finished_nor_forgotten_while_its_fields_hold_values(
        tagged_shop, ledger_url):  # noqa: F811
    """The other way round: one that mapped segments and fields, then only retires its tags. Once they are off, the
    values rfmsync wrote in its fields are still in the ESP: the ledger does not forget that it wrote them (it is
    not finished, its note says what to add); done, they are cleared, and only then is it finished and forgotten."""
    esp, fake, cfg = tagged_shop
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text[:text.index("[destinations.segments]")], encoding="utf-8")  # nothing mapped
    warning = next(w for w in plan_json(cfg)["warnings"] if "add retire_tags = [" in w)
    cfg.write_text(cfg.read_text(encoding="utf-8") + warning[warning.index("retire_tags = ["):].split("]")[0] + "]\n",
                   encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")  # the tags off
    assert not any(_held(esp, fake, e) for e in _ours(fake, esp))
    plan = plan_json(cfg)["plans"][0]
    assert plan["changes"] == [] and not [n for n in plan["notes"] if "remove it from the config" in n]
    note = next(n for n in plan["notes"] if "it is not finished" in n)
    with Ledger.connect(ledger_url) as ledger:
        assert [s for s in ledger.load_state(plan["destination"]).values() if s.fields.get("RFM_SEG")]
    retire = note[note.index("retire_fields = ["):].split("]")[0] + "]\n"
    assert json.loads(retire.split("=", 1)[1]) == ["RFM_CODE", "RFM_SEG"]
    cfg.write_text(cfg.read_text(encoding="utf-8") + retire, encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")  # the values cleared
    plan = plan_json(cfg)["plans"][0]
    assert plan["changes"] == [] and [n for n in plan["notes"] if "tags and fields and none is left" in n]
    with Ledger.connect(ledger_url) as ledger:
        assert plan["destination"] not in ledger.state_destinations()


def test_a_finished_retire_only_destination_leaves_no_audience_behind(tmp_path, mailchimp_fake, monkeypatch,
                                                                       ledger_url):  # noqa: F811
    """Once finished, the ledger holds nothing of the destination, not even its audience: removed from the config,
    'rfmsync forget' finds nothing to forget, and its name used again for another audience is a new destination
    there (not refused as a move from an audience the ledger holds nothing of)."""
    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    mailchimp_fake.add_list("aud2", "Second shop audience")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    text = cfg.read_text(encoding="utf-8")
    head = text[:text.index("[destinations.segments]")]
    cfg.write_text(head + 'retire_tags = ["VIP", "Welcome", "Winback", "Winback soft"]\n'
                   'retire_fields = ["RFM_SEG", "RFM_CODE"]\n', encoding="utf-8")
    for _ in range(2):  # finished and forgotten, then left in the config for a run
        cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    name = plan_json(cfg)["plans"][0]["destination"]
    with Ledger.connect(ledger_url) as ledger:
        assert name not in ledger.held_destinations(TARGET_CURSOR)
        ledger.set_cursor(TARGET_CURSOR, name, "mailchimp:aud1")  # as an older rfmsync's run recorded it
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)  # forgotten once
    with Ledger.connect(ledger_url) as ledger:
        assert name not in ledger.held_destinations(TARGET_CURSOR)
    cfg.write_text(text[:text.index("[[destinations]]")], encoding="utf-8")  # removed from the config
    said = cli("forget", "--config", str(cfg), "--destination", name, code=2).output
    assert f"the ledger holds nothing under destination {name!r}" in said, said
    cfg.write_text(text.replace('audience = "aud1"', 'audience = "aud2"'), encoding="utf-8")  # the name used again
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    assert mailchimp_fake.lists["aud2"].members
