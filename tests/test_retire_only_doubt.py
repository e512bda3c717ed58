"""A destination kept only to retire tags whose contacts may hold another tag rfmsync wrote: a killed run's add of
it is in doubt (the ESP may have carried it out). Once the retired tags are off, the destination is not finished:
the ledger keeps it and that doubt (forgetting them, nothing would ever remember the tag may be on the contact),
the plan names the tag and says what to add; retired too, it comes off, and only then is the destination finished
and forgotten. On the Mailchimp fake, both ledger engines (the forgetting is the ledger's, alike for every ESP)."""

from __future__ import annotations

import json
import re

from sync.ledger import Ledger
from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, make_shop, plan_json

OLD = "Old promo"  # a tag the destination once gave: a killed run's add of it to one contact is in doubt


def test_a_retire_only_destination_is_not_forgotten_while_a_tag_it_does_not_retire_is_in_doubt(
        tmp_path, monkeypatch, mailchimp_fake, ledger_url):  # noqa: F811
    fake = mailchimp_fake
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    name = plan_json(cfg)["plans"][0]["destination"]
    with Ledger.connect(ledger_url) as ledger:
        key = sorted(k for k, s in ledger.load_state(name).items() if s.tags)[0]
        dead = ledger.start_run("sync", name)
        ledger.note_in_flight(name, dead, {f"tag+{OLD}": [key]})  # sent, its answer never recorded: killed
        ledger.finish_run(dead, "failed", {}, error="killed")
    fake.add_segment(OLD, [key])  # the add was carried out
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text[:text.index("[destinations.segments]")]
                   + 'retire_tags = ["VIP", "Welcome", "Winback", "Winback soft"]\n'
                   'retire_fields = ["RFM_SEG", "RFM_CODE"]\n', encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")  # the retired tags and fields off

    assert fake.tags_of(key) == {OLD}  # never touched: not managed
    with Ledger.connect(ledger_url) as ledger:  # kept, with the doubt: the ledger still knows the tag may be there
        assert name in ledger.state_destinations()
        assert [(f["key"], f["op"]) for f in ledger.pending_failures(name)] == [(key, f"tag+{OLD}")]
    doc = plan_json(cfg)
    plan = doc["plans"][0]
    assert plan["changes"] == [] and not [n for n in plan["notes"] if "remove it from the config" in n]
    note = next(n for n in plan["notes"] if "it is not finished" in n)
    assert f"'{OLD}' (1 contact)" in note
    assert any(f"'{OLD}' (1 contact)" in w for w in doc["warnings"])
    retire = note[note.index("retire_tags = ["):].split("]")[0] + "]\n"  # what the note says to add
    assert OLD in json.loads(retire.split("=", 1)[1])
    cfg.write_text(re.sub(r"retire_tags = \[.*\]\n", lambda _: retire, cfg.read_text(encoding="utf-8")),
                   encoding="utf-8")  # the note's list instead
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")

    assert fake.tags_of(key) == set()  # taken off the contact the killed run may have put it on
    plan = plan_json(cfg)["plans"][0]
    assert [n for n in plan["notes"] if "none is left" in n and "remove it from the config" in n], plan["notes"]
    with Ledger.connect(ledger_url) as ledger:  # finished: forgotten, nothing pending
        assert name not in ledger.state_destinations() and ledger.pending_failures(name) == []
