"""A field removed from ``[destinations.fields]`` keeps the last values rfmsync wrote in the ESP: the plan says so
(the destination, the field, how many contacts hold a value rfmsync put there, how to act), and
``retire_fields`` clears it on exactly those contacts (never a value rfmsync did not write, never a field it never
managed). End to end, through the CLI, against the stateful fakes of Mailchimp, SendGrid and Unisender."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from sync.config import load_config
from sync.demodata import generate_shop
from sync.ledger import open_ledger
from sync.settings import load_settings
from sync.takeover import end_retired
from tests.builders import config_error, run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_tags import write  # one config of a Mailchimp destination 'mc' with the given lines

AS_OF = "2025-06-30"
WARNED = "fields rfmsync wrote that [destinations.fields] no longer maps"


def _mailchimp(fake):
    return {"MAILCHIMP_API_KEY": fake.api_key, "MAILCHIMP_API_URL": fake.url}, 'type = "mailchimp"\naudience = "aud1"'


def _sendgrid(fake):
    return {"SENDGRID_API_KEY": fake.api_key, "SENDGRID_API_URL": fake.url}, 'type = "sendgrid"'


def _unisender(fake):
    return ({"UNISENDER_API_KEY": fake.api_key, "UNISENDER_API_URL": fake.api_url},
            'type = "unisender"\nnew_contacts = "skip"')


def _value(esp: str, fake, email: str, field: str):
    if esp == "mailchimp":
        return fake.lists["aud1"].members[email]["merge_fields"].get(field)
    if esp == "sendgrid":
        return fake.field_value(email, field)
    return fake.contacts[email]["fields"].get(field)


def _seed(esp: str, fake, email: str, field: str, value: str) -> None:
    """A value put in the field by someone else, on a contact rfmsync never wrote it for."""
    if esp == "mailchimp":
        fake.add_member(email, merge_fields={field: value})
    else:  # SendGrid's and Unisender's fakes take the field by name alike
        fake.add_contact(email, **{field: value})


def make_shop(esp: str, fake, tmp_path: Path, monkeypatch, ledger: str | None = None) -> Path:
    """The demo shop (120 customers) syncing to ``esp``'s fake; its config file."""
    env, dest = {"mailchimp": _mailchimp, "sendgrid": _sendgrid, "unisender": _unisender}[esp](fake)
    cfg = generate_shop(tmp_path / "shop", customers=120, seed=5, as_of=date.fromisoformat(AS_OF))
    text = cfg.read_text(encoding="utf-8").replace('type = "mailchimp"\naudience = "demo000001"', dest)
    if esp == "unisender":
        text = text.replace('new_contacts = "transactional"\n', "")
    cfg.write_text(text, encoding="utf-8")
    for k, v in {**env, **({"RFMSYNC_LEDGER_URL": ledger} if ledger else {})}.items():
        monkeypatch.setenv(k, v)
    return cfg


@pytest.fixture(params=["mailchimp", "sendgrid", "unisender"])
def shop(request, tmp_path, monkeypatch, ledger_url):  # noqa: F811
    esp = request.param
    fake = request.getfixturevalue(f"{esp}_fake")
    return esp, fake, make_shop(esp, fake, tmp_path, monkeypatch, ledger_url)


def plan_json(cfg: Path) -> dict:
    return json.loads(cli("plan", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)


def test_a_removed_field_is_warned_of_and_retire_fields_clears_only_what_rfmsync_wrote(shop):
    esp, fake, cfg = shop
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    written = plan_json(cfg)  # nothing to do, nothing to say
    assert written["plans"][0]["changes"] == [] and not any(WARNED in w for w in written["warnings"])
    field = "RFM_CODE"
    emails = sorted(e for e in _ours(fake, esp) if _value(esp, fake, e, field))
    assert emails
    name = json.loads(json.dumps(written["plans"][0]["destination"]))
    # the field removed from the mapping: its values stay, and the plan says so
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('RFM_CODE = "rfm"\n', ""), encoding="utf-8")
    hand = "someone@elsewhere.example"
    _seed(esp, fake, hand, field, "by hand")
    doc = plan_json(cfg)
    warning = next(w for w in doc["warnings"] if WARNED in w)
    assert warning.startswith(f"{name}: ") and f"'RFM_CODE' ({len(emails)} contacts)" in warning
    assert f"add retire_fields = [\"RFM_CODE\"] to destination {name!r}" in warning
    assert doc["plans"][0]["changes"] == []
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    assert all(_value(esp, fake, e, field) for e in emails)  # removing the mapping alone cleared nothing

    # retired: cleared on the contacts rfmsync wrote it for, and only those
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        'name = "mailchimp-demo"\n', 'name = "mailchimp-demo"\nretire_fields = ["RFM_CODE"]\n'), encoding="utf-8")
    doc = plan_json(cfg)
    assert not any(WARNED in w for w in doc["warnings"])
    cleared = {c["key"] for c in doc["plans"][0]["changes"] if field in c.get("set_fields", {})}
    assert cleared == set(emails)
    assert all(c["set_fields"] == {field: None} and not c["add_tags"] and not c["remove_tags"]
               for c in doc["plans"][0]["changes"])
    refused = cli("sync", "--config", str(cfg), "--as-of", AS_OF, code=6).output  # the plan guards count them
    assert "guard max_change_pct" in refused and all(_value(esp, fake, e, field) for e in emails)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert not any(_value(esp, fake, e, field) for e in emails)
    assert _value(esp, fake, hand, field) == "by hand"  # never rfmsync's: untouched
    assert all(_value(esp, fake, e, "RFM_SEG") for e in emails)  # the mapped field kept
    doc = plan_json(cfg)
    # done: nothing left to clear or say
    assert doc["plans"][0]["changes"] == [] and not any(WARNED in w for w in doc["warnings"])


def _ours(fake, esp: str) -> list[str]:
    if esp == "mailchimp":
        return list(fake.lists["aud1"].members)
    return list(fake.contacts)


@pytest.mark.parametrize("dest, message", [
    ('retire_fields = ["churn"]\n[destinations.fields]\nCHURN = "segment"',
     "destination 'mc': retire_fields: 'churn' is still mapped in [destinations.fields] (as 'CHURN')"),
    ('retire_fields = [" "]', "retire_fields: ' ' is empty"),
    ('retire_fields = ["CHURN"]\n[[destinations]]\nname = "mc2"\ntype = "mailchimp"\naudience = "a1"\n'
     '[destinations.fields]\nCHURN = "segment"',
     "retire_fields: 'CHURN' is mapped by destination 'mc2' of the same audience"),
])
def test_a_retired_field_still_mapped_is_a_config_error(tmp_path, dest, message):
    error, _ = config_error(write(tmp_path, dest))
    assert message in error


def test_a_field_of_the_same_name_in_another_audience_may_be_retired(tmp_path):
    from sync.config import load_config

    load_config(write(tmp_path, 'retire_fields = ["CHURN"]\n[[destinations]]\nname = "mc2"\ntype = "mailchimp"\n'
                                'audience = "a2"\n[destinations.fields]\nCHURN = "segment"'))


def test_a_retired_field_is_cleared_under_its_merge_tag_and_skipped_where_the_account_lost_it():
    """The ledger names a field as the config did (``churn``): Mailchimp's merge tag is ``CHURN``, which the
    mapping no longer gives the apply; a SendGrid field deleted in the account holds nothing left to clear."""
    from sync.destinations.mailchimp_bodies import batch_body
    from sync.destinations.sendgrid_bodies import contact_body
    from sync.model import ContactChange

    one = ContactChange("a@shop.uz", "a@shop.uz", "1", "Champions", False, None, set_fields={"churn": None})
    assert json.loads(batch_body([one], False, {}))["members"][0]["merge_fields"] == {"CHURN": ""}
    two = ContactChange("b@shop.uz", "b@shop.uz", "2", "Champions", False, None,
                        set_fields={"churn": None, "seg": "A"})
    assert json.loads(batch_body([one, two], False, {}))["members"][1]["merge_fields"] == {"CHURN": "", "SEG": "A"}
    assert contact_body(one, {"seg": "e1_T"}, {"seg": "Text"}, "sg") == {"email": "a@shop.uz"}


@pytest.fixture
def sendgrid_shop(tmp_path, monkeypatch, sendgrid_fake):
    env, dest = _sendgrid(sendgrid_fake)
    cfg = generate_shop(tmp_path / "shop", customers=120, seed=5, as_of=date.fromisoformat(AS_OF))
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('type = "mailchimp"\naudience = "demo000001"', dest)
                   .replace('RFM_CODE = "rfm"\n', 'RFM_CODE = "rfm"\nRECENCY = "recency_days"\n'), encoding="utf-8")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return cfg


def test_a_sendgrid_number_field_retired_is_refused_before_any_write_until_deleted_in_sendgrid(sendgrid_shop,
                                                                                                 sendgrid_fake):
    """SendGrid refuses null in a Number custom field and has no other empty value: the upsert would leave it out
    and the ledger would believe it cleared. Refused, naming the field and the remedy that works (delete the field
    in SendGrid: its values go with it), after which the retirement is recorded and the warning goes."""
    cfg = sendgrid_shop
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    fid = next(i for i, (n, t) in sendgrid_fake.fields.items() if n == "RECENCY")
    assert sendgrid_fake.fields[fid][1] == "Number"
    holders = [e for e, c in sendgrid_fake.contacts.items() if c["custom_fields"].get(fid) is not None]
    assert holders
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('RECENCY = "recency_days"\n', "").replace(
        'name = "mailchimp-demo"\n', 'name = "mailchimp-demo"\nretire_fields = ["RECENCY"]\n'), encoding="utf-8")
    writes = sendgrid_fake.write_calls
    refused = cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change", code=2).output
    assert "retire_fields: 'RECENCY' is a Number custom field" in refused and "delete the field in SendGrid" in refused
    assert sendgrid_fake.write_calls == writes  # nothing written
    assert len(plan_json(cfg)["plans"][0]["changes"]) == len(holders)  # the ledger still says they hold it
    del sendgrid_fake.fields[fid]  # deleted in SendGrid: its values with it
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    doc = plan_json(cfg)
    assert doc["plans"][0]["changes"] == [] and not any(WARNED in w for w in doc["warnings"])


@pytest.mark.parametrize("retired", ["STRASSE", "straße "])
def test_a_field_name_folded_by_casefold_alone_is_cleared_as_the_plan_names_it(mailchimp_fake, tmp_path,
                                                                             monkeypatch, retired):
    """Mapped as ``Straße`` (Mailchimp's merge tag ``STRASSE``), retired as Mailchimp shows it or as it was
    spelled with a space after it: the plan's fold of field names (``spec.field_key``: stripped, casefolded) decides
    which ledger values are cleared too (the SQL folded with ``lower(trim())``, ``straße`` ≠ ``strasse``: the
    warning went and nothing was cleared)."""
    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('RFM_CODE = "rfm"', '"Straße" = "rfm"'), encoding="utf-8")
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    emails = sorted(e for e in _ours(mailchimp_fake, "mailchimp") if _value("mailchimp", mailchimp_fake, e, "STRASSE"))
    assert emails
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('"Straße" = "rfm"\n', "").replace(
        'name = "mailchimp-demo"\n', f'name = "mailchimp-demo"\nretire_fields = ["{retired}"]\n'), encoding="utf-8")
    doc = plan_json(cfg)
    assert {c["key"] for c in doc["plans"][0]["changes"] if "Straße" in c.get("set_fields", {})} == set(emails)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert not any(_value("mailchimp", mailchimp_fake, e, "STRASSE") for e in emails)
    assert plan_json(cfg)["plans"][0]["changes"] == []


def test_the_field_names_are_read_once_and_the_list_decides_what_is_warned_of_and_cleared():
    """A plan reads the staged state's field names once (:func:`field_names`) and hands that list to the warning
    (``left_fields``) and to the clear (``clear_retired``), which each read them again before: a name the list does
    not hold is neither warned of nor cleared, whatever the staged rows hold."""
    from sync.config import DestinationConfig
    from sync.model import PushedState
    from sync.planning.columnar import stage_pushed
    from sync.planning.plan import Plan
    from sync.planning.retired_fields import clear_retired, field_names, left_fields
    from sync.planning.rows import stage_dicts
    from tests.builders import scratch_con
    from tests.test_plan_columnar import arrow_state

    dest = DestinationConfig(name="mc", type="mailchimp", audience="a1", fields={"SEG": "segment"},
                             retire_fields=["churn"])
    pushed = {"a@shop.uz": PushedState("a@shop.uz", "1", frozenset(), {"SEG": "A", "CHURN": "hi", "OLD": "x"}, True)}
    with scratch_con() as con:
        staged = stage_dicts([{"customer_id": "1", "email": "a@shop.uz", "segment": "A"}], con)
        stage_pushed(staged.con, arrow_state(pushed))
        held = field_names(staged.con)
        assert sorted(held) == ["CHURN", "OLD", "SEG"]
        assert left_fields(staged.con, dest, held) == [("OLD", 1)]  # SEG mapped, CHURN retired
        empty = Plan("mc", "mailchimp", (), (), (), {"SEG": "segment"}, 0)
        cleared = clear_retired(staged.con, dest, empty, held)
        assert [(c.key, c.set_fields) for c in cleared.changes] == [("a@shop.uz", {"CHURN": None})]
        assert left_fields(staged.con, dest, ["SEG"]) == []
        assert clear_retired(staged.con, dest, empty, ["SEG", "OLD"]).changes == ()


def test_a_destination_that_only_retires_fields_creates_nobody(tmp_path, mailchimp_fake, monkeypatch):
    """Nothing mapped and only retire_fields: it gives no one anything, so a customer new to it (out of the ESP
    and the ledger) is not created; it says it is finished only once no retired value is left."""
    cfg = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text[:text.index("[destinations.segments]")] + 'retire_fields = ["RFM_SEG", "RFM_CODE"]\n',
                   encoding="utf-8")
    new = sorted(mailchimp_fake.lists["aud1"].members)[0]
    mailchimp_fake.lists["aud1"].members.pop(new)  # as if never pushed: a customer new to this destination
    with sqlite3.connect(next(cfg.parent.glob("*.db"))) as db:
        db.execute("DELETE FROM pushed_state WHERE key = ?", (new,))
    finished = "only retires fields"  # said once nothing is left to change (not finished: its tags are held)
    plan = plan_json(cfg)["plans"][0]
    assert plan["changes"] and not any(c["create"] for c in plan["changes"])  # the others' values cleared
    assert not any(finished in n for n in plan["notes"])
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--allow-mass-change")
    assert new not in mailchimp_fake.lists["aud1"].members
    again = plan_json(cfg)["plans"][0]
    assert again["changes"] == [] and any(finished in n and "it is not finished" in n for n in again["notes"])


def test_a_fields_only_retiring_destination_is_forgotten_once_no_value_is_left(tmp_path, mailchimp_fake,
                                                                                monkeypatch):
    """The ledger forgets a destination that only retires fields (no tag held) once no contact holds a value
    rfmsync wrote in them, never before: with values left, its next sync still clears them."""
    path = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch)
    text = path.read_text(encoding="utf-8")
    head, fields = text[:text.index("[destinations.segments]")], text[text.index("[destinations.fields]"):]
    path.write_text(head + fields, encoding="utf-8")  # fields only: the ledger holds no tag
    cli("sync", "--config", str(path), "--as-of", AS_OF)
    members = mailchimp_fake.lists["aud1"].members
    emails = sorted(e for e in members if _value("mailchimp", mailchimp_fake, e, "RFM_SEG"))
    assert emails
    path.write_text(head + 'retire_fields = ["RFM_SEG", "RFM_CODE"]\n', encoding="utf-8")
    cfg, settings = load_config(path), load_settings()
    name = cfg.destinations[0].name
    with open_ledger(cfg, settings) as ledger:
        end_retired(cfg, ledger, {name})  # as after an apply that cleared nothing: values are left
        assert name in ledger.state_destinations()
    cli("sync", "--config", str(path), "--as-of", AS_OF, "--allow-mass-change")
    assert not any(_value("mailchimp", mailchimp_fake, e, "RFM_SEG") for e in emails)
    with open_ledger(cfg, settings) as ledger:
        assert name not in ledger.state_destinations()  # every value cleared: forgotten


def test_the_warning_offers_no_retire_fields_line_for_a_field_another_destination_of_the_audience_maps():
    """The config refuses a retire_fields naming a field another destination of the audience maps: the warning
    names that destination for it instead, and offers the line for the others only."""
    import re
    import tomllib

    from sync.config import DestinationConfig
    from sync.destinations.overlap import check_shared_audiences
    from sync.planning.retired_fields import left_fields_warning

    dest = DestinationConfig(name="mc", type="mailchimp", audience="a1", segments={"Champions": "Gold"})
    owner = DestinationConfig(name="owner", type="mailchimp", audience="a1", segments={"Best active": "vip"},
                              fields={"rfm_code": "rfm"})
    warning = left_fields_warning(dest, [("RFM_CODE", 3), ("CHURN", 1)], [dest, owner])
    assert "'RFM_CODE' (3 contacts), 'CHURN' (1 contact)" in warning
    line = re.search(r"add (retire_fields = \[.*?\]) to destination 'mc'", warning).group(1)
    assert tomllib.loads(line) == {"retire_fields": ["CHURN"]}
    assert "Destination 'owner' of the same audience maps 'RFM_CODE'" in warning
    check_shared_audiences([dest.model_copy(update=tomllib.loads(line)), owner])  # the config takes it
    only = left_fields_warning(dest, [("RFM_CODE", 3)], [dest, owner])
    assert "retire_fields = [" not in only and "Destination 'owner' of the same audience maps 'RFM_CODE'" in only
