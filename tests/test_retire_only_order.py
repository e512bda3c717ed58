"""A retire-only destination with nothing planned (never synced, or finished and forgotten) listed before a live
destination: the whole run goes through, end to end on the Mailchimp fake. Its planning once left a DuckDB result
unfinished on the connection the destinations share, and the next destination's planning failed on it (exit 70,
"Resource In Use")."""

from __future__ import annotations

import json

import pytest

from sync.ledger import Ledger
from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, make_shop, plan_json

RETIRES = {"tags": 'retire_tags = ["VIP", "Welcome", "Winback", "Winback soft"]\n',
           "fields": 'retire_fields = ["RFM_SEG", "RFM_CODE"]\n'}
LIVE = ('\n[[destinations]]\nname = "live"\ntype = "mailchimp"\naudience = "aud1"\nnew_contacts = "transactional"\n'
        '[destinations.segments]\n"Best active" = "rfm:live-vip"\n')


@pytest.mark.parametrize("retires", ["tags", "fields"])
@pytest.mark.parametrize("synced", [False, True], ids=["never-synced", "finished"])
def test_a_retire_only_destination_with_nothing_to_do_before_a_live_one(
        retires, synced, tmp_path, mailchimp_fake, monkeypatch, ledger_url):  # noqa: F811
    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    text = cfg.read_text(encoding="utf-8")
    head = text[:text.index("[destinations.segments]")]  # the demo destination, nothing mapped
    if synced:  # it mapped segments and fields; retiring both finishes it, and the ledger forgets it
        cli("sync", "--config", str(cfg), "--as-of", AS_OF)
        cfg.write_text(head + RETIRES["tags"] + RETIRES["fields"], encoding="utf-8")
        cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    else:
        head = head.replace('name = "mailchimp-demo"', 'name = "old"')
    cfg.write_text(head + RETIRES[retires] + LIVE, encoding="utf-8")
    name = "mailchimp-demo" if synced else "old"
    with Ledger.connect(ledger_url) as ledger:
        assert name not in ledger.state_destinations()  # nothing of it: its plan has nothing to do
    said = cli("-v", "sync", "--config", str(cfg), "--as-of", AS_OF, code=(0, 70))
    assert said.exit_code == 0, said.output[-1500:]
    vip = [e for e in mailchimp_fake.lists["aud1"].members if "rfm:live-vip" in mailchimp_fake.tags_of(e, "aud1")]
    assert vip  # the live destination, planned after it, synced
    doc = plan_json(cfg)
    first, live = doc["plans"]
    assert (first["destination"], first["changes"], first["pushed_to"]) == (name, [], None)
    assert live["destination"] == "live" and live["changes"] == [], json.dumps(live)[:500]
