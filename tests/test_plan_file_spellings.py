"""A saved plan retiring a tag or field rfmsync holds under another spelling of the retired name (the planner names
it as the ledger holds it) passes ``apply``'s check of what the config manages (sync.planning.plan_json)."""
from __future__ import annotations

import json

from tests.builders import run_cli as cli
from tests.test_retire_fields import make_shop
from tests.test_retire_tags import AS_OF, holders, plan_json, shop  # noqa: F401


def test_a_saved_plan_retiring_a_tag_held_in_another_case_applies_on_mailchimp(shop, mailchimp_fake,  # noqa: F811
                                                                                 tmp_path):
    emails = [c["key"] for c in plan_json(shop)["plans"][0]["changes"]]
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    assert holders(mailchimp_fake, "VIP", emails)
    text = shop.read_text(encoding="utf-8").replace('"Best active" = "VIP"\n', '')
    shop.write_text(text.replace('new_contacts = "transactional"', 'new_contacts = "transactional"\n'
                                 'retire_tags = ["vip"]'), encoding="utf-8")
    saved = tmp_path / "p.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    assert "VIP" in json.loads(saved.read_text())["plans"][0]["managed_tags"]  # as the ledger holds it
    out = cli("apply", "--config", str(shop), str(saved), "--allow-mass-change", code=(0, 1, 2, 3, 4, 5, 6, 70, 74))
    assert out.exit_code == 0, out.output
    assert holders(mailchimp_fake, "VIP", emails) == set()


def test_a_saved_plan_clearing_a_field_retired_in_another_spelling_applies(mailchimp_fake, tmp_path, monkeypatch):
    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('RFM_CODE = "rfm"', '"Straße" = "rfm"'), encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('"Straße" = "rfm"\n', "").replace(
        'name = "mailchimp-demo"\n', 'name = "mailchimp-demo"\nretire_fields = ["STRASSE"]\n'), encoding="utf-8")
    saved = tmp_path / "p.json"
    cli("plan", "--config", str(cfg), "--as-of", AS_OF, "-o", str(saved))
    doc = json.loads(saved.read_text())
    assert {k for c in doc["plans"][0]["changes"] for k in c["set_fields"]} == {"Straße"}
    edited = tmp_path / "edited.json"  # a field neither retired nor mapped, in any spelling: still refused
    first = doc["plans"][0]["changes"][0]
    edited.write_text(json.dumps({**doc, "plans": [{**doc["plans"][0], "changes": [
        {**first, "set_fields": {"Strasse2": None}}]}]}))
    out = cli("apply", "--config", str(cfg), str(edited), "--allow-mass-change", code=(0, 1, 2, 3, 4, 5, 6, 70, 74))
    assert out.exit_code == 2 and "'Strasse2'" in out.output, out.output
    out = cli("apply", "--config", str(cfg), str(saved), "--allow-mass-change", code=(0, 1, 2, 3, 4, 5, 6, 70, 74))
    assert out.exit_code == 0, out.output
