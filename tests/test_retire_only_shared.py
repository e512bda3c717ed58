"""A retire-only destination whose contacts hold tags or field values another destination of the same audience
manages now (docs/sync.md#removed-destination): those are that destination's. They do not keep it from being
finished, and its note never names them in a config line, which the config would refuse (two destinations of one
audience managing one tag or field). End to end on the Mailchimp fake."""

from __future__ import annotations

import json

from sync.config import load_config
from sync.ledger import Ledger
from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, make_shop, plan_json

OWNER = ('\n[[destinations]]\nname = "owner"\ntype = "mailchimp"\naudience = "aud1"\nnew_contacts = "transactional"\n'
         '[destinations.segments]\n')
RETIRE_TAGS = 'retire_tags = ["VIP", "Welcome", "Winback", "Winback soft"]\n'


def _demo(plan_doc: dict) -> dict:
    return next(p for p in plan_doc["plans"] if p["destination"] == "mailchimp-demo")


def _finished(cfg, ledger_url: str) -> None:  # noqa: F811
    plan = _demo(plan_json(cfg))
    assert plan["changes"] == [] and [n for n in plan["notes"] if "remove it from the config" in n], plan["notes"]
    assert not [n for n in plan["notes"] if "it is not finished" in n]
    with Ledger.connect(ledger_url) as ledger:
        assert "mailchimp-demo" not in ledger.state_destinations()


def test_fields_another_destination_maps_do_not_keep_a_tags_only_one(tmp_path, mailchimp_fake, monkeypatch,
                                                                     ledger_url):  # noqa: F811
    """It retires its tags; the fields it wrote, RFM_CODE and RFM_SEG, another destination there maps now. Its note
    names only a field no one maps (RFM_OLD); following it, it is finished and forgotten, and the owner's values
    stay."""
    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace('RFM_CODE = "rfm"\n', 'RFM_CODE = "rfm"\nRFM_OLD = "segment"\n'), encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    head = text[:text.index("[destinations.segments]")]
    owner = OWNER + '"Best active" = "rfm:vip"\n[destinations.fields]\nRFM_SEG = "segment"\nRFM_CODE = "rfm"\n'
    cfg.write_text(head + RETIRE_TAGS + owner, encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")  # its tags off
    note = next(n for n in _demo(plan_json(cfg))["notes"] if "it is not finished" in n)
    line = note[note.index("retire_fields = ["):].split("]")[0] + "]\n"
    assert json.loads(line.split("=", 1)[1]) == ["RFM_OLD"], note
    cfg.write_text(head + RETIRE_TAGS + line + owner, encoding="utf-8")
    load_config(cfg)  # what the note says is a config
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    _finished(cfg, ledger_url)
    members = mailchimp_fake.lists["aud1"].members
    assert any(m["merge_fields"].get("RFM_SEG") for m in members.values())  # the owner's, untouched
    assert not any(m["merge_fields"].get("RFM_OLD") for m in members.values())


def test_tags_another_destination_manages_do_not_keep_a_fields_only_one(tmp_path, mailchimp_fake, monkeypatch,
                                                                        ledger_url):  # noqa: F811
    """It retires its fields; of the tags it gave, another destination there manages VIP now. Its note names the
    others, not VIP; following it, it is finished and forgotten, and VIP stays where it is."""
    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    text = cfg.read_text(encoding="utf-8")
    head = text[:text.index("[destinations.segments]")]
    owner = OWNER + '"Best active" = "VIP"\n'
    cfg.write_text(head + 'retire_fields = ["RFM_SEG", "RFM_CODE"]\n' + owner, encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")  # its fields cleared
    note = next(n for n in _demo(plan_json(cfg))["notes"] if "it is not finished" in n)
    line = note[note.index("retire_tags = ["):].split("]")[0] + "]\n"
    named = json.loads(line.split("=", 1)[1])
    assert named and "VIP" not in named, note
    cfg.write_text(head + 'retire_fields = ["RFM_SEG", "RFM_CODE"]\n' + line + owner, encoding="utf-8")
    load_config(cfg)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    _finished(cfg, ledger_url)
    tags = {t for e in mailchimp_fake.lists["aud1"].members for t in mailchimp_fake.tags_of(e, "aud1")}
    assert "VIP" in tags and not tags & set(named)


def test_a_tag_another_destination_only_retires_keeps_a_retire_only_one_until_it_is_off(
        tmp_path, mailchimp_fake, monkeypatch, ledger_url):  # noqa: F811
    """Another destination there retires 'Winback soft' too: it takes it off only the contacts its own ledger rows
    say it gave it, none of ours. So ours is not finished, nor forgotten, while its contacts hold it; its note names
    it in a retire_tags line the config takes (two destinations that only retire a tag do not undo each other), and
    following it, the tag comes off and ours is finished and forgotten."""
    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    members = mailchimp_fake.lists["aud1"].members
    soft = {e for e in members if "Winback soft" in mailchimp_fake.tags_of(e, "aud1")}
    assert soft
    text = cfg.read_text(encoding="utf-8")
    head = text[:text.index("[destinations.segments]")]
    fields = 'retire_fields = ["RFM_SEG", "RFM_CODE"]\n'
    owner = OWNER.replace("\n[destinations.segments]\n", '\nretire_tags = ["Winback soft"]\n[destinations.segments]\n'
                          ) + '"Best active" = "rfm:vip"\n'
    ours = 'retire_tags = ["VIP", "Welcome", "Winback"]\n'
    cfg.write_text(head + ours + fields + owner, encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert {e for e in members if "Winback soft" in mailchimp_fake.tags_of(e, "aud1")} == soft  # still held
    with Ledger.connect(ledger_url) as ledger:
        assert "mailchimp-demo" in ledger.state_destinations()  # not forgotten while they hold it
    note = next(n for n in _demo(plan_json(cfg))["notes"] if "it is not finished" in n)
    line = note[note.index("retire_tags = ["):].split("]")[0] + "]\n"
    assert "Winback soft" in json.loads(line.split("=", 1)[1]), note
    cfg.write_text(head + line + fields + owner, encoding="utf-8")
    load_config(cfg)  # what the note says is a config
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    _finished(cfg, ledger_url)
    assert not any("Winback soft" in mailchimp_fake.tags_of(e, "aud1") for e in members)


def test_whom_a_retire_only_destination_created_subscribed_goes_to_the_destination_of_its_audience(
        tmp_path, mailchimp_fake, monkeypatch, ledger_url):  # noqa: F811
    """reread32's crossing 5: the destination that created contacts subscribed is put back retire-only beside the
    audience's new destination ('owner', whose own upserts of them are answered "exists": no record of its own).
    Finished and forgotten, its record of whom rfmsync created subscribed (they still are, in the ESP) goes to the
    owner, so that the owner's plan names one who withdraws in the source. Before, it was forgotten with it."""
    from tests.test_withdrawn_subscribed import _set_consent

    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    with Ledger.connect(ledger_url) as ledger:
        created = sorted(ledger.subscribed_keys("mailchimp-demo"))
    assert created
    text = cfg.read_text(encoding="utf-8")
    head = text[:text.index("[destinations.segments]")]
    cfg.write_text(head + RETIRE_TAGS + 'retire_fields = ["RFM_SEG", "RFM_CODE"]\n' + OWNER
                   + '"Best active" = "rfm:vip"\n', encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    _finished(cfg, ledger_url)
    with Ledger.connect(ledger_url) as ledger:
        assert sorted(ledger.subscribed_keys("owner")) == created
        assert not ledger.has_subscribed("mailchimp-demo")
    gone = created[0]
    clients = (cfg.parent / "clients.csv").read_text(encoding="utf-8").split("\n")
    customer = next(line.split(";")[0].lstrip("\ufeff") for line in clients if f";{gone};" in line.lower())
    _set_consent(cfg, customer, "да", "нет")  # he withdraws in the source
    cli("pull", "--config", str(cfg))
    owner = next(p for p in plan_json(cfg)["plans"] if p["destination"] == "owner")
    assert owner["withdrawn_subscribed"] == [gone]
    assert mailchimp_fake.member(gone, "aud1")["status"] == "subscribed"
