"""A tag a killed run may have added counts as a pushed one once no mapping gives it (hunt31a's a1_tag_renamed.py,
a4_removed_dest.py): the plans warn of it with its count, retire_tags takes it off and settles its doubts."""

from __future__ import annotations

import json

from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_in_flight import _killed_mid_apply
from tests.test_retire_fields import AS_OF, make_shop


def _plan(cfg) -> dict:
    return json.loads(cli("plan", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)


def _vip(fake) -> set[str]:
    return {m for s in fake.lists["aud1"].segments.values() if s["name"] == "VIP" for m in s["members"]}


def _edit(cfg, old: str, new: str) -> None:
    text = cfg.read_text(encoding="utf-8")
    assert old in text
    cfg.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_tag_a_killed_sync_may_have_added_is_warned_of_once_unmapped_and_retire_tags_settles_it(
        tmp_path, monkeypatch, mailchimp_fake, ledger_url):  # noqa: F811
    fake = mailchimp_fake
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    _killed_mid_apply(cfg, fake)
    vip = _vip(fake)
    assert vip, "the fake carried out no VIP add before the kill"
    _edit(cfg, '"Best active" = "VIP"', '"Best active" = "rfm:vip"')
    for _ in range(2):  # a dry run (the adds still in flight), then once they are pending failures
        warned = [w for w in _plan(cfg)["warnings"] if "no mapping of this destination gives any more" in w]
        assert len(warned) == 1 and f"'VIP' ({len(vip)} contact" in warned[0], warned
        cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert _vip(fake) == vip  # rfmsync does not touch a tag it no longer manages
    _edit(cfg, 'new_contacts = "transactional"\n', 'new_contacts = "transactional"\nretire_tags = ["VIP"]\n')
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert _vip(fake) == set()
    assert json.loads(cli("failures", "--config", str(cfg), "--format", "json").stdout) == []
    assert not any("'VIP'" in w for w in _plan(cfg)["warnings"])


def test_a_killed_destination_removed_from_the_config_is_warned_of_with_its_tags_in_doubt(
        tmp_path, monkeypatch, mailchimp_fake, ledger_url):  # noqa: F811
    fake = mailchimp_fake
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    _killed_mid_apply(cfg, fake)
    vip = _vip(fake)
    assert vip
    _edit(cfg, 'name = "mailchimp-demo"', 'name = "mc-new"')  # (no renamed_from: the old name is removed)
    warned = [w for w in _plan(cfg)["warnings"] if "'mailchimp-demo' is no longer in the config" in w]
    assert len(warned) == 1 and f"'VIP' ({len(vip)} contact" in warned[0], warned
