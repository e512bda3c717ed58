"""A saved plan is checked before ``apply`` sends anything (docs/sync.md#saved-plans): every field of the file has
the type it must have (a text where a list of tags belongs was read letter by letter: tags L, a, p, s, e, d put on
the contact; numbers as tags crashed the apply part-way), and every tag, list and field a change touches is one the
config manages (a plan naming the user's own tag took it off in Mailchimp). Through the CLI against the fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_config_moved import AS_OF, point_at, shop  # noqa: F401

NAME = "mailchimp-demo"


def _saved(shop: Path, tmp_path: Path) -> tuple[Path, dict]:
    """A synced shop and ``plan -o`` of a plan that moves the Churn segment to the tag Lapsed."""
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    point_at(shop, '"Churn" = "Winback"', '"Churn" = "Lapsed"')
    saved = tmp_path / "plan.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    doc = json.loads(saved.read_text())
    assert doc["plans"][0]["changes"]
    return saved, doc


def _refused(shop: Path, saved: Path, doc: dict, fake, code: int = 2) -> str:
    saved.write_text(json.dumps(doc))
    writes = fake.write_calls
    out = cli("apply", "--config", str(shop), str(saved), code=code).output
    assert fake.write_calls == writes, "nothing may be sent for a plan refused"
    return out


@pytest.mark.parametrize("field, value, said", [
    ("add_tags", "Lapsed", '"add_tags" of change 1'),
    ("add_tags", [1, 2], '"add_tags" of change 1'),
    ("remove_tags", None, '"remove_tags" of change 1'),
    ("create", "yes", '"create" of change 1'),
    ("set_fields", {"RFM": [1]}, '"set_fields" of change 1'),
    ("set_fields", "x", '"set_fields" of change 1'),
    ("status_if_new", 1, '"status_if_new" of change 1'),
    ("key", 7, '"key" of change 1'),
])
def test_a_change_of_the_wrong_type_is_refused_naming_the_file_field_and_contact(shop, mailchimp_fake, tmp_path,
                                                                                 field, value, said):
    saved, doc = _saved(shop, tmp_path)
    change = doc["plans"][0]["changes"][0]
    change[field] = value
    out = _refused(shop, saved, doc, mailchimp_fake)
    assert str(saved) in out and "not an rfmsync plan file" in out and said in out, out
    assert f"destination {NAME!r}" in out
    if field != "key":
        assert f"(contact {change['key']!r})" in out
    assert "internal error" not in out


@pytest.mark.parametrize("field, value", [
    ("managed_tags", "Lapsed"), ("fields", {"RFM": 1}), ("ledger_revision", "3"), ("ledger_revision", True),
    ("skipped", {}), ("owners", [{"key": "a"}]), ("changes", {}), ("withdrawn", "a@b.c"), ("notes", [1]),
    ("remote_checked", "no"), ("ledger_epoch", 5),
])
def test_a_plan_field_of_the_wrong_type_is_refused(shop, mailchimp_fake, tmp_path, field, value):
    saved, doc = _saved(shop, tmp_path)
    doc["plans"][0][field] = value
    out = _refused(shop, saved, doc, mailchimp_fake)
    assert str(saved) in out and "not an rfmsync plan file" in out and f'"{field}"' in out, out


def test_a_plan_that_takes_off_a_tag_the_config_does_not_manage_is_refused(shop, mailchimp_fake, tmp_path):
    saved, doc = _saved(shop, tmp_path)
    change = doc["plans"][0]["changes"][0]
    who = change["email"]
    members = mailchimp_fake.lists["aud1"]
    segment = mailchimp_fake._segment_by_name(members, "OwnTag") or mailchimp_fake._create_segment(members, "OwnTag")
    segment["members"].add(who.lower())
    change["remove_tags"] = ["OwnTag"]
    out = _refused(shop, saved, doc, mailchimp_fake)
    assert f"contact {change['key']!r} touches the tag(s)/list(s) 'OwnTag'" in out, out
    assert "OwnTag" in mailchimp_fake.tags_of(who, "aud1")
    # named in the plan's own managed_tags too: the config does not manage it
    doc["plans"][0]["managed_tags"].append("OwnTag")
    out = _refused(shop, saved, doc, mailchimp_fake)
    assert "the plan manages the tag(s)/list(s) 'OwnTag', which the config does not manage" in out, out
    assert "OwnTag" in mailchimp_fake.tags_of(who, "aud1")


def test_a_plan_writing_a_field_the_config_does_not_map_is_refused(shop, mailchimp_fake, tmp_path):
    saved, doc = _saved(shop, tmp_path)
    plan = doc["plans"][0]
    change = next(c for c in plan["changes"])
    change["set_fields"] = {**change["set_fields"], "FNAME": "Eve"}
    out = _refused(shop, saved, doc, mailchimp_fake)
    assert "touches the field(s) 'FNAME'" in out, out
    plan["fields"]["FNAME"] = "segment"
    out = _refused(shop, saved, doc, mailchimp_fake)
    assert "the plan writes the field(s) FNAME = 'segment', which the config does not map" in out, out


def test_an_untouched_saved_plan_still_applies(shop, mailchimp_fake, tmp_path):
    saved, doc = _saved(shop, tmp_path)
    cli("apply", "--config", str(shop), str(saved))
    who = doc["plans"][0]["changes"][0]["email"]
    assert "Lapsed" in mailchimp_fake.tags_of(who, "aud1")


def _second_shop(tmp_path: Path) -> Path:
    """Another shop's config (its own store and ledger), pointed at the same audience under the same name."""
    from datetime import date

    from sync.demodata import generate_shop

    cfg = generate_shop(tmp_path / "other", customers=40, seed=9, as_of=date.fromisoformat(AS_OF))
    point_at(cfg, 'audience = "demo000001"', 'audience = "aud1"')
    return cfg


def test_a_plan_is_applied_only_to_the_ledger_it_was_made_against(shop, mailchimp_fake, tmp_path):
    """Shop A's plan applied with shop B's config (B's ledger never written: revision 0, no epoch, no token) pushed
    A's contacts into B's audience; the plan file names its ledger (``ledger_id``, made by ``plan -o``)."""
    saved = tmp_path / "plan.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))  # A: no ledger yet, made now
    doc = json.loads(saved.read_text())
    assert isinstance(doc["ledger_id"], str) and doc["plans"][0]["changes"]
    other = _second_shop(tmp_path)
    out = _refused(other, saved, doc, mailchimp_fake)
    assert "this plan was made against another ledger" in out and doc["ledger_id"] in out, out
    ledger = doc["ledger_id"]
    assert not mailchimp_fake.lists["aud1"].members

    # an older rfmsync's plan file (no ledger_id): refused against a ledger that never wrote the destination...
    del doc["ledger_id"]
    out = _refused(other, saved, doc, mailchimp_fake)
    assert "this plan file names no ledger" in out and "never wrote destination 'mailchimp-demo'" in out, out
    assert not mailchimp_fake.lists["aud1"].members
    # ...and with its ledger_id, against its own ledger (made by plan -o, still never written), it applies
    saved.write_text(json.dumps({**doc, "ledger_id": ledger}))
    cli("apply", "--config", str(shop), str(saved))
    assert len(mailchimp_fake.lists["aud1"].members) == sum(c["create"] for c in doc["plans"][0]["changes"])


def test_a_plan_without_ledger_id_still_applies_to_a_written_ledger(shop, mailchimp_fake, tmp_path):
    saved, doc = _saved(shop, tmp_path)
    del doc["ledger_id"]  # as an older rfmsync saved it
    saved.write_text(json.dumps(doc))
    cli("apply", "--config", str(shop), str(saved))
    assert "Lapsed" in mailchimp_fake.tags_of(doc["plans"][0]["changes"][0]["email"], "aud1")


def test_the_ledger_id_is_made_once_and_read_back_on_either_engine(ledger_url):  # noqa: F811
    from sync.ledger import Ledger

    with Ledger.connect(ledger_url) as first, Ledger.connect(ledger_url) as second:
        assert first.ledger_id() is None  # none made by reading
        made = first.ledger_id(create=True)
        assert isinstance(made, str) and len(made) == 32
        assert second.ledger_id(create=True) == made == second.ledger_id()


def test_apply_says_where_it_reads_again_the_consent_of_those_it_subscribes(shop, mailchimp_fake, tmp_path):
    """``apply`` reads the consent of those it subscribes again from the order store (tests/test_apply_consent_now.py),
    not from the source: it says so, with the plan's age, when the plan subscribes anyone."""
    point_at(shop, 'new_contacts = "transactional"', 'new_contacts = "subscribed"')
    saved = tmp_path / "plan.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    doc = json.loads(saved.read_text())
    n = sum(c["create"] and c["status_if_new"] == "subscribed" for c in doc["plans"][0]["changes"])
    assert n
    out = cli("apply", "--config", str(shop), str(saved)).output
    assert f"{NAME}: this plan (made 0 min ago) subscribes {n} new contacts: apply reads their consent again" in out
    assert "not yet pulled into the store (`rfmsync pull`" in out


def test_no_consent_warning_for_a_plan_that_subscribes_nobody(shop, mailchimp_fake, tmp_path):
    saved, doc = _saved(shop, tmp_path)  # new_contacts = "transactional": nobody subscribed
    assert "reads their consent again" not in cli("apply", "--config", str(shop), str(saved)).output
