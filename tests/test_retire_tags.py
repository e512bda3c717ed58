"""A removed (or renamed) mapping leaves its tag on the contacts rfmsync gave it: the plan says so (table and JSON
``warnings``, with how many contacts still carry it and how to act), and ``retire_tags`` takes it off exactly
those contacts (never one tagged by hand), the plan guards counting the removals. End to end, through the CLI,
against the stateful fake Mailchimp."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from sync.demodata import generate_shop
from tests.builders import config_error, run_cli as cli

AS_OF = "2025-06-30"


@pytest.fixture
def shop(tmp_path, mailchimp_fake, monkeypatch):
    cfg = generate_shop(tmp_path / "shop", customers=250, seed=3, as_of=date.fromisoformat(AS_OF))
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"'),
                   encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    return cfg


def plan_json(cfg: Path) -> dict:
    return json.loads(cli("plan", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)


def holders(fake, tag: str, emails) -> set[str]:
    return {e for e in emails if tag in fake.tags_of(e)}


def test_a_removed_mapping_is_warned_about_and_retire_tags_takes_the_old_tag_off_only_rfmsync_s_contacts(
        shop, mailchimp_fake):
    first = plan_json(shop)["plans"][0]
    emails = [c["key"] for c in first["changes"]]
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    ours = holders(mailchimp_fake, "VIP", emails)
    assert ours
    hand = next(e for e in emails if e not in ours)  # tagged VIP by hand in the ESP: not rfmsync's
    mailchimp_fake.add_member(hand, tags=["VIP"])
    # the mapping removed: VIP stays on every contact rfmsync gave it, the plan says so and nothing removes it
    text = shop.read_text(encoding="utf-8")
    shop.write_text(text.replace('"Best active" = "VIP"\n', ''), encoding="utf-8")
    doc = plan_json(shop)
    warning = next(w for w in doc["warnings"] if "no mapping of this destination gives" in w)
    assert warning.startswith("mailchimp-demo: tags/lists rfmsync pushed")
    assert f"'VIP' ({len(ours)} contacts)" in warning
    assert "add retire_tags = [\"VIP\"] to destination 'mailchimp-demo'" in warning
    assert doc["plans"][0]["warnings"] == [warning.removeprefix("mailchimp-demo: ")]
    assert not any("VIP" in c["remove_tags"] for c in doc["plans"][0]["changes"])
    table = cli("plan", "--config", str(shop), "--as-of", AS_OF)
    assert f"'VIP' ({len(ours)} contacts)" in table.stderr
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    assert holders(mailchimp_fake, "VIP", emails) == ours | {hand}  # the mapping's removal alone removed nothing

    # retired: taken off the contacts rfmsync put it on, counted by the plan guards like any removal
    shop.write_text(shop.read_text(encoding="utf-8").replace(
        'new_contacts = "transactional"', 'new_contacts = "transactional"\nretire_tags = ["VIP"]'), encoding="utf-8")
    doc = plan_json(shop)
    assert not any("no mapping of this destination gives" in w for w in doc["warnings"])
    assert {c["key"] for c in doc["plans"][0]["changes"] if "VIP" in c["remove_tags"]} == ours
    assert "VIP" in doc["plans"][0]["managed_tags"]
    # more than max_removal_pct (10 %) of the managed contacts would be left without any managed tag
    refused = cli("sync", "--config", str(shop), "--as-of", AS_OF, code=6)
    assert f"guard max_removal_pct: {len(ours)} of" in refused.output
    assert holders(mailchimp_fake, "VIP", emails) == ours | {hand}
    # --reconcile reads what the ESP holds of the managed tags, not of a retired one: its members there are
    # whoever tagged them, and only the ledger says which rfmsync did
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change", "--reconcile")
    assert holders(mailchimp_fake, "VIP", emails) == {hand}  # the hand-tagged contact keeps it
    assert not mailchimp_fake.violations
    doc = plan_json(shop)
    assert doc["plans"][0]["changes"] == [] and doc["warnings"] == []


def write(tmp_path: Path, dest: str) -> Path:
    path = tmp_path / "rfmsync.toml"
    path.write_text(f'[segmentation]\npreset = "tracks"\n[[destinations]]\nname = "mc"\ntype = "mailchimp"\n'
                    f'audience = "a1"\n{dest}\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("dest, message", [
    ('retire_tags = ["VIP"]\n[destinations.segments]\n"Best active" = "VIP"',
     "destination 'mc': retire_tags: 'VIP' is still given by a mapping of this destination"),
    ('tag_prefix = "rfm:"\nretire_tags = ["rfm:vip"]\n[destinations.transitions]\n"* -> Churn" = "vip"',
     "retire_tags: 'rfm:vip' is still given by a mapping"),
    ('retire_tags = [" "]', "retire_tags: ' ' is empty"),
    # a case-only rename: add vip / remove VIP for one contact, and an ESP that folds case leaves him untagged
    ('retire_tags = ["VIP"]\n[destinations.segments]\n"Best active" = "vip"',
     "retire_tags: 'VIP' is the tag/list 'vip' that a mapping of this destination gives, but for case or spaces"),
    ('retire_tags = ["vip "]\n[destinations.segments]\n"Best active" = "vip"', "'vip ' is the tag/list 'vip'"),
    ('tag_prefix = "rfm:"\nretire_tags = ["RFM:Vip"]\n[destinations.transitions]\n"* -> Churn" = "vip"',
     "'RFM:Vip' is the tag/list 'rfm:vip'"),
])
def test_a_retired_tag_still_given_is_a_config_error(tmp_path, dest, message):
    error, out = config_error(write(tmp_path, dest))
    assert message in error


def test_a_tag_one_destination_retires_and_another_of_the_audience_manages_is_a_fight(tmp_path):
    path = write(tmp_path, 'retire_tags = ["VIP"]\n[[destinations]]\nname = "mc2"\ntype = "mailchimp"\n'
                           'audience = "a1"\n[destinations.segments]\n"Best active" = "VIP"')
    error, _ = config_error(path)
    assert "destinations 'mc' and 'mc2' both manage the tag/list 'VIP' in Mailchimp audience 'a1'" in error


def test_two_destinations_of_the_audience_may_both_retire_a_tag(tmp_path):
    """Neither gives it back: each takes it off the contacts its own rows say it gave them (a retire-only one's
    contacts may hold a tag another one there retires: it must be able to name it too)."""
    from sync.config import load_config

    path = write(tmp_path, 'retire_tags = ["VIP"]\n[[destinations]]\nname = "mc2"\ntype = "mailchimp"\n'
                           'audience = "a1"\nretire_tags = ["vip"]\n[destinations.segments]\n"Best active" = "Gold"')
    assert [d.retire_tags for d in load_config(path).destinations] == [["VIP"], ["vip"]]


def test_the_row_planner_retires_as_the_columnar_one():
    from sync.config import DestinationConfig
    from sync.model import PushedState
    from sync.planning.plan import desired_contacts, plan_destination
    from tests.test_shared_audience import columnar_plan

    dest = DestinationConfig(name="mc", type="mailchimp", audience="a1", segments={"Churn": "Winback"},
                             retire_tags=["VIP"])
    rows = [{"customer_id": "1", "email": "a@shop.uz", "segment": "Churn", "marketing_consent": "yes"},
            {"customer_id": "2", "email": "b@shop.uz", "segment": "Other", "marketing_consent": "yes"}]
    last = {"a@shop.uz": PushedState("a@shop.uz", "1", frozenset({"VIP", "Winback", "hand"}), {}, True),
            "b@shop.uz": PushedState("b@shop.uz", "2", frozenset(), {}, True),
            "gone@shop.uz": PushedState("gone@shop.uz", "3", frozenset({"VIP"}), {}, True)}
    desired, _ = desired_contacts(rows, dest)
    for plan in (plan_destination(dest, desired, last), columnar_plan(rows, last, dest)):
        assert [(c.key, sorted(c.add_tags), sorted(c.remove_tags)) for c in plan.changes] == [
            ("a@shop.uz", [], ["VIP"]), ("gone@shop.uz", [], ["VIP"])]


def test_the_warning_after_a_case_only_rename_offers_no_retire_tags_line_for_it():
    """``retire_tags`` refuses a case variant of a mapped tag (see above), so the warning must not tell the user
    to write one; a tag really left behind is still offered."""
    from sync.config import DestinationConfig
    from sync.planning.retired import left_behind_warning

    dest = DestinationConfig(name="mc", type="mailchimp", audience="a1", segments={"Champions": "vip"})
    warning = left_behind_warning(dest, [("VIP", 3), ("Old", 1)])
    assert "'VIP' (3 contacts), 'Old' (1 contact)" in warning
    assert 'add retire_tags = ["Old"] to destination \'mc\'' in warning
    assert "'VIP' is 'vip' but for case or spaces" in warning and "map it under its old name" in warning
    only = left_behind_warning(dest, [("VIP", 3)])
    assert "retire_tags =" not in only and "'VIP' is 'vip' but for case" in only


def test_the_warning_s_retire_tags_line_is_valid_toml_for_any_tag_name():
    """The suggested line is pasted into the config: a tag holding ``"`` or ``\\`` was quoted as f'"{tag}"', which
    TOML reads as another string or not at all."""
    import re
    import tomllib

    from sync.config import DestinationConfig
    from sync.planning.retired import left_behind_warning

    tags = ['say "hi"', "C:\\old", "ВИП\x7f", "plain"]
    dest = DestinationConfig(name="mc", type="mailchimp", audience="a1", segments={"Champions": "vip"})
    warning = left_behind_warning(dest, [(tag, 1) for tag in tags])
    line = re.search(r"add (retire_tags = \[.*\]) to destination 'mc'", warning).group(1)
    assert tomllib.loads(line) == {"retire_tags": tags}
    DestinationConfig(name="mc", type="mailchimp", audience="a1", segments={"Champions": "vip"},
                      **tomllib.loads(line))  # and the config takes it


def test_the_warning_offers_no_retire_tags_line_for_a_tag_another_destination_of_the_audience_gives():
    """The config refuses a retire_tags naming a tag another destination of the audience gives: the warning names
    that destination for it instead, and offers the line for the others only (one another destination only
    retires, too: both may retire it)."""
    import re
    import tomllib

    from sync.config import DestinationConfig
    from sync.destinations.overlap import check_shared_audiences
    from sync.planning.retired import left_behind_warning

    dest = DestinationConfig(name="mc", type="mailchimp", audience="a1", segments={"Champions": "Gold"})
    owner = DestinationConfig(name="owner", type="mailchimp", audience="a1", segments={"Best active": "vip"},
                              retire_tags=["Old"])
    elsewhere = DestinationConfig(name="other", type="mailchimp", audience="a2", segments={"Churn": "Lost"})
    warning = left_behind_warning(dest, [("VIP", 3), ("Old", 1), ("Lost", 2)], [dest, owner, elsewhere])
    assert "'VIP' (3 contacts), 'Old' (1 contact), 'Lost' (2 contacts)" in warning
    line = re.search(r"add (retire_tags = \[.*?\]) to destination 'mc'", warning).group(1)
    assert tomllib.loads(line) == {"retire_tags": ["Old", "Lost"]}
    assert "Destination 'owner' of the same audience manages 'VIP'" in warning
    check_shared_audiences([dest.model_copy(update=tomllib.loads(line)), owner, elsewhere])  # the config takes it
    only = left_behind_warning(dest, [("VIP", 3)], [dest, owner])
    assert "retire_tags = [" not in only and "Destination 'owner' of the same audience manages 'VIP'" in only


def test_the_plan_s_warning_names_the_destination_that_gives_a_tag_left_behind_now(shop):
    """Its mapping moved to another destination of the audience: the plan's warning offers no retire_tags line
    for it (the config would refuse it) but names that destination."""
    from sync.config import load_config

    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    text = shop.read_text(encoding="utf-8").replace('"Best active" = "VIP"\n', "")
    shop.write_text(text + '\n[[destinations]]\nname = "owner"\ntype = "mailchimp"\naudience = "aud1"\n'
                           'new_contacts = "transactional"\n[destinations.segments]\n"Best active" = "VIP"\n',
                    encoding="utf-8")
    warning = next(w for w in plan_json(shop)["warnings"] if w.startswith("mailchimp-demo: tags/lists rfmsync"))
    assert "'VIP' (" in warning and 'retire_tags = ["VIP"' not in warning, warning
    assert "Destination 'owner' of the same audience manages 'VIP'" in warning, warning
    load_config(shop)


def test_a_tag_retired_in_another_case_comes_off_as_mailchimp_holds_it(shop, mailchimp_fake):
    """Mailchimp holds one tag whatever its case: ``retire_tags = ["vip"]`` retires the ``VIP`` rfmsync gave (as
    the ledger and the ESP spell it), from the contacts rfmsync gave it only, and no ``vip`` tag is made there."""
    first = plan_json(shop)["plans"][0]
    emails = [c["key"] for c in first["changes"]]
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    ours = holders(mailchimp_fake, "VIP", emails)
    hand = next(e for e in emails if e not in ours)
    mailchimp_fake.add_member(hand, tags=["VIP"])
    text = shop.read_text(encoding="utf-8").replace('"Best active" = "VIP"\n', '')
    shop.write_text(text.replace('new_contacts = "transactional"', 'new_contacts = "transactional"\n'
                                 'retire_tags = ["vip"]'), encoding="utf-8")
    doc = plan_json(shop)
    assert not any("no mapping of this destination gives" in w for w in doc["warnings"]), doc["warnings"]
    assert {c["key"] for c in doc["plans"][0]["changes"] if "VIP" in c["remove_tags"]} == ours
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")
    assert holders(mailchimp_fake, "VIP", emails) == {hand}
    assert "vip" not in mailchimp_fake.segment_names("aud1")
    assert plan_json(shop)["plans"][0]["changes"] == []


def test_a_tag_retired_in_another_case_is_another_list_where_names_are_exact():
    """SendGrid's and Unisender's list names are taken as spelled (nothing says they fold case): ``vip`` retired
    leaves ``VIP`` alone, and the warning offers a line for it (the config takes both)."""
    import re
    import tomllib

    from sync.config import DestinationConfig
    from sync.destinations.overlap import check_shared_audiences
    from sync.planning.retired import left_behind_warning, retired_as_held

    dest = DestinationConfig(name="sg", type="sendgrid", segments={"Champions": "Gold"}, retire_tags=["vip"])
    planned, left = retired_as_held(dest, [("VIP", 3)])
    assert planned.retire_tags == ["vip"] and left == [("VIP", 3)]
    warning = left_behind_warning(planned, left)
    line = re.search(r"add (retire_tags = \[.*?\]) to destination 'sg'", warning).group(1)
    assert tomllib.loads(line) == {"retire_tags": ["VIP"]}
    check_shared_audiences([dest.model_copy(update={"retire_tags": ["vip", "VIP"]})])
    mc = DestinationConfig(name="mc", type="mailchimp", audience="a1", segments={"Champions": "Gold"},
                           retire_tags=["vip", "Old"])
    planned, left = retired_as_held(mc, [("VIP", 3), ("Vip ", 1), ("Lost", 2)])
    assert planned.retire_tags == ["VIP", "Vip ", "Old"] and left == [("Lost", 2)]
