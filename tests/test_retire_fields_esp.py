"""``retire_fields`` against each ESP's own rules, on the stateful fakes: a clear never creates a contact without
consent deleted in the ESP since (an erasure; Unisender re-creates a consenting one, as any field update would),
a field the account no longer has is recorded cleared, field names compared as the ESP compares them, and what a
clear costs in calls."""

from __future__ import annotations

from pathlib import Path

from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, WARNED, _ours, _value, make_shop, plan_json, shop  # noqa: F401

RETIRE = 'name = "mailchimp-demo"\nretire_fields = ["RFM_CODE"]\n'


def _retire(cfg: Path) -> None:
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('RFM_CODE = "rfm"\n', "").replace(
        'name = "mailchimp-demo"\n', RETIRE), encoding="utf-8")


def _withdraw_consent(cfg: Path, email: str) -> None:
    """The customer's consent is now "нет" in the shop's export (he asked to be erased)."""
    csv = cfg.parent / "clients.csv"
    lines = csv.read_text(encoding="utf-8-sig").splitlines()
    lines = [line.replace(";да;", ";нет;") if email in line.lower() else line for line in lines]
    assert any(email in line.lower() and ";нет;" in line for line in lines)
    csv.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")


def _erase(esp: str, fake, email: str) -> None:
    if esp == "mailchimp":
        del fake.lists["aud1"].members[email]
    else:
        del fake.contacts[email]


def test_a_clear_never_creates_a_contact_deleted_in_the_esp(shop):
    """A contact rfmsync wrote the field for, deleted in the ESP since (an erasure by hand) and without consent
    now: the clear leaves him out (SendGrid: searched first; Mailchimp: an update never creates; Unisender: read
    first), and the ledger forgets him, so no plan clears or creates him again."""
    esp, fake, cfg = shop
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    holders = sorted(e for e in _ours(fake, esp) if _value(esp, fake, e, "RFM_CODE"))
    gone = next(e for e in holders if _consents(cfg, e))
    _erase(esp, fake, gone)
    _withdraw_consent(cfg, gone)
    _retire(cfg)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert gone not in _ours(fake, esp), f"{gone} re-created in {esp} by the clear"
    assert not any(_value(esp, fake, e, "RFM_CODE") for e in holders if e != gone)  # the others cleared
    doc = plan_json(cfg)
    assert not any(WARNED in w for w in doc["warnings"])
    # forgotten: nothing left to clear; only a create under the consent rules (Mailchimp's transactional here)
    assert all(c["key"] == gone and c["create"] and c["status_if_new"] == "transactional" and not c["set_fields"]
               .get("RFM_CODE") for c in doc["plans"][0]["changes"]), doc["plans"][0]["changes"]


def test_a_clear_of_a_consenting_contact_deleted_in_the_esp_recreates_him_only_in_unisender(shop):
    """The same erasure, the contact still consenting in the shop: Mailchimp (an update never creates) and
    SendGrid (searched first) leave him out and the ledger forgets him. Unisender re-creates him, as any field
    update of his would (an import creates the addresses it lacks, status ``new``): no ``getContact`` is spent on
    a consenting contact's clear (50 reads for 50 clears otherwise, 14 h at a million), as docs/sync.md says."""
    esp, fake, cfg = shop
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    holders = sorted(e for e in _ours(fake, esp) if _value(esp, fake, e, "RFM_CODE"))
    gone = next(e for e in holders if _consents(cfg, e))
    _erase(esp, fake, gone)
    _retire(cfg)
    reads = fake.calls["getContact"] if esp == "unisender" else 0
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert not any(_value(esp, fake, e, "RFM_CODE") for e in holders if e in _ours(fake, esp))  # all cleared
    if esp != "unisender":
        assert gone not in _ours(fake, esp), f"{gone} re-created in {esp} by the clear"
        return
    assert fake.contacts[gone]["status"] == "new"  # back, holding nothing rfmsync wrote
    assert fake.calls["getContact"] == reads  # not read first
    assert plan_json(cfg)["plans"][0]["changes"] == []  # and in the ledger: nothing left to do


def _synced_shop(esp: str, fake, tmp_path: Path, monkeypatch) -> Path:
    """The demo shop on ``esp``'s fake (the default SQLite ledger), synced once."""
    cfg = make_shop(esp, fake, tmp_path, monkeypatch)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    return cfg


def _consents(cfg: Path, email: str) -> bool:
    lines = (cfg.parent / "clients.csv").read_text(encoding="utf-8-sig").splitlines()
    return any(email in line.lower() and ";да;" in line for line in lines)


def test_a_unisender_field_deleted_there_is_recorded_cleared_and_the_tag_changes_still_go(tmp_path, monkeypatch,
                                                                                           unisender_fake):
    """A retired field deleted in Unisender (its values with it): importContacts refuses a whole call naming an
    unknown column, so the empty value is left out, the field recorded cleared, and a tag change of the same
    contacts still goes."""
    cfg = _synced_shop("unisender", unisender_fake, tmp_path, monkeypatch)
    holders = [e for e, c in unisender_fake.contacts.items() if c["fields"].get("RFM_CODE")]
    assert holders
    _retire(cfg)
    del unisender_fake.fields["RFM_CODE"]  # deleted in Unisender: its values go with it
    for c in unisender_fake.contacts.values():
        c["fields"].pop("RFM_CODE", None)
    # and a list the Beginners move to in the same sync: their clear and list change are one change each
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('"Beginners" = "Welcome"', '"Beginners" = "Hello"'),
                   encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    doc = plan_json(cfg)
    assert doc["plans"][0]["changes"] == [] and not any(WARNED in w for w in doc["warnings"])
    assert "RFM_CODE" not in unisender_fake.fields  # never created again
    hello = next(i for i, t in unisender_fake.lists.items() if t == "Hello")
    moved = [e for e in holders if hello in unisender_fake.contacts[e]["lists"]]
    assert moved  # the list adds of contacts whose field was cleared went


def test_a_unisender_field_renamed_only_in_case_is_warned_of_and_can_be_retired(tmp_path, monkeypatch,
                                                                                 unisender_fake):
    """Unisender's field names are case-sensitive (createField makes ``rfm_code`` beside ``RFM_CODE``): a mapping
    renamed only in case leaves the old field's values, warned of, and ``retire_fields`` clears them."""
    cfg = _synced_shop("unisender", unisender_fake, tmp_path, monkeypatch)
    holders = sorted(e for e, c in unisender_fake.contacts.items() if c["fields"].get("RFM_CODE"))
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('RFM_CODE = "rfm"\n', 'rfm_code = "rfm"\n'),
                   encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert {"RFM_CODE", "rfm_code"} <= set(unisender_fake.fields)
    warning = next(w for w in plan_json(cfg)["warnings"] if WARNED in w)
    assert f"'RFM_CODE' ({len(holders)} contacts)" in warning
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        'name = "mailchimp-demo"\n', 'name = "mailchimp-demo"\nretire_fields = [" RFM_CODE "]\n'), encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert not any(unisender_fake.contacts[e]["fields"].get("RFM_CODE") for e in holders)
    assert all(unisender_fake.contacts[e]["fields"].get("rfm_code") for e in holders)  # the mapped one kept
    doc = plan_json(cfg)
    assert doc["plans"][0]["changes"] == [] and not any(WARNED in w for w in doc["warnings"])


def test_unisender_reads_only_the_cleared_contacts_an_import_could_create_without_consent(tmp_path, monkeypatch,
                                                                                         unisender_fake):
    """A clear costs a ``getContact`` (one call a contact, 1200 a minute) only where an import could create the
    contact without consent: not for a consenting contact, whose clear goes as any field update of his."""
    cfg = _synced_shop("unisender", unisender_fake, tmp_path, monkeypatch)
    holders = sorted(e for e, c in unisender_fake.contacts.items() if c["fields"].get("RFM_CODE"))
    _withdraw_consent(cfg, holders[0])  # no consent now: his clear is imported only once he is found
    _retire(cfg)
    clears = [c for c in plan_json(cfg)["plans"][0]["changes"] if "RFM_CODE" in c["set_fields"]]
    assert len(clears) == len(holders) == 50
    before = unisender_fake.calls["getContact"]
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert unisender_fake.calls["getContact"] - before == 1  # 50 before the fix
    assert not any(unisender_fake.contacts[e]["fields"].get("RFM_CODE") for e in holders)


def test_a_mailchimp_merge_field_deleted_there_is_recorded_cleared_and_the_tag_changes_still_go(
        tmp_path, monkeypatch, mailchimp_fake):
    """Mailchimp refuses a member whose merge_fields name a merge field the audience lacks: a retired one deleted
    in Mailchimp is left out, recorded cleared, and the same contacts' tag changes go."""
    cfg = _synced_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch)
    audience = mailchimp_fake.lists["aud1"]
    holders = [e for e, m in audience.members.items() if m["merge_fields"].get("RFM_CODE")]
    _retire(cfg)
    del audience.merge_fields["RFM_CODE"]  # deleted in Mailchimp: its values go with it
    for m in audience.members.values():
        m["merge_fields"].pop("RFM_CODE", None)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('"Beginners" = "Welcome"', '"Beginners" = "Hello"'),
                   encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    doc = plan_json(cfg)
    assert doc["plans"][0]["changes"] == [] and not any(WARNED in w for w in doc["warnings"])
    assert "RFM_CODE" not in audience.merge_fields  # never created again
    hello = next(s for s in audience.segments.values() if s["name"] == "Hello")
    assert set(hello["members"]) & set(holders)  # the tag adds of contacts whose field was cleared went


def test_a_required_mailchimp_merge_field_retired_stops_before_any_write(tmp_path, monkeypatch, mailchimp_fake):
    """Mailchimp refuses an empty value of a required merge field: the sync stops before any write, naming the
    field and what to do; once it is optional there, the clear goes."""
    cfg = _synced_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch)
    audience = mailchimp_fake.lists["aud1"]
    holders = [e for e, m in audience.members.items() if m["merge_fields"].get("RFM_CODE")]
    _retire(cfg)
    audience.merge_fields["RFM_CODE"]["required"] = True
    writes = mailchimp_fake.write_calls
    refused = cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change", code=2).output
    assert "retire_fields: merge field 'RFM_CODE' is required in audience 'aud1'" in refused
    assert "make it optional in Mailchimp" in refused
    assert mailchimp_fake.write_calls == writes and all(audience.members[e]["merge_fields"]["RFM_CODE"]
                                                        for e in holders)
    audience.merge_fields["RFM_CODE"]["required"] = False
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert not any(audience.members[e]["merge_fields"].get("RFM_CODE") for e in holders)
