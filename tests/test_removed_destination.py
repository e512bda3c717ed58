"""The warning of a destination removed from the config (docs/sync.md#removed-destination): which of its tags a
configured destination takes off, and which stay on the contacts with nobody to take them off."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

from tests.test_config_moved import AS_OF, SECOND, cli, plan_warnings, point_at, shop  # noqa: F401


def two_audiences(shop: Path) -> str:
    """The shop synced to aud1 and, with the same mapping, to a second destination in aud2; the config's text
    before the second was added."""
    text = shop.read_text(encoding="utf-8")
    mapping = text[text.index("[destinations.segments]"):].split("[destinations.fields]")[0]
    shop.write_text(text + SECOND + mapping, encoding="utf-8")
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    return text


def removed(shop: Path, name: str) -> list[str]:
    return [w for w in plan_warnings(shop) if f"destination {name!r} is no longer in the config" in w]


def test_a_destination_of_another_audience_does_not_excuse_the_removed_one_s_tags(shop, mailchimp_fake):  # noqa: F811
    text = two_audiences(shop)
    vip = sum("VIP" in mailchimp_fake.tags_of(k, "aud2") for k in mailchimp_fake.lists["aud2"].members)
    shop.write_text(text, encoding="utf-8")  # the aud2 one removed; aud1's, same mapping and contacts, stays
    said = removed(shop, "second")
    assert len(said) == 1 and f"'VIP' ({vip} contacts)" in said[0]


def test_a_ledger_that_recorded_no_audience_excuses_no_tag(shop, mailchimp_fake):  # noqa: F811
    text = two_audiences(shop)
    with sqlite3.connect(next(shop.parent.glob("*.db"))) as db:  # written before audiences were recorded
        db.execute("DELETE FROM cursors WHERE source = 'destination target'")
    shop.write_text(text, encoding="utf-8")
    said = removed(shop, "second")
    assert len(said) == 1 and "'VIP' (" in said[0] and " of mailchimp audience" not in said[0]


def drop_customer(folder: Path, email: str) -> None:
    """The customer's orders deleted: he leaves the customer base."""
    rows = list(csv.reader((folder / "clients.csv").open(encoding="utf-8-sig"), delimiter=";"))
    customer = next(r[0] for r in rows[1:] if r[4] == email)
    orders = folder / "orders.csv"
    lines = orders.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    orders.write_text("\ufeff" + "".join(line for line in lines if f";{customer};" not in line), encoding="utf-8")


def state_names(shop: Path) -> list[str]:
    with sqlite3.connect(next(shop.parent.glob("*.db"))) as db:
        return sorted(n for (n,) in db.execute("SELECT DISTINCT destination FROM pushed_state"))


def test_a_renamed_destination_takes_over_the_old_name_s_rows_once_synced(shop, mailchimp_fake):  # noqa: F811
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    vip = sorted(k for k in mailchimp_fake.lists["aud1"].members if "VIP" in mailchimp_fake.tags_of(k, "aud1"))[0]
    drop_customer(shop.parent, mailchimp_fake.member(vip, "aud1")["email_address"])
    point_at(shop, 'name = "mailchimp-demo"', 'name = "mc-main"')  # renamed, same audience and mapping
    said = removed(shop, "mailchimp-demo")  # not said to be a rename yet: the warning asks
    assert len(said) == 1 and "Destination 'mc-main' pushes there too: if it is this destination renamed, add " \
        'renamed_from = "mailchimp-demo" to it' in said[0] and "retire_tags" not in said[0]
    point_at(shop, 'name = "mc-main"', 'name = "mc-main"\nrenamed_from = "mailchimp-demo"')
    said = removed(shop, "mailchimp-demo")  # before it synced: said, with no remedy the config check refuses
    assert len(said) == 1 and "Destination 'mc-main' pushes there too: once it has synced" in said[0]
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")
    # the new name never pushed VIP to him: it holds the old name's row for him now, and nothing is warned of
    assert "VIP" in mailchimp_fake.tags_of(vip, "aud1") and state_names(shop) == ["mc-main"]
    assert not [w for w in plan_warnings(shop) if "no longer in the config" in w]
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")  # he left: VIP comes off him
    assert "VIP" not in mailchimp_fake.tags_of(vip, "aud1")


def test_a_destination_of_the_same_audience_not_said_to_be_a_rename_takes_nothing_over(shop, mailchimp_fake):  # noqa: F811
    """Another destination on the same audience may be another config sharing the ledger, or this one with the
    old one commented out for a while (or, on SendGrid or Unisender, whose target names no account, another
    account): only renamed_from makes it take the old name's rows over."""
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    point_at(shop, 'name = "mailchimp-demo"', 'name = "mc-main"')
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")
    assert state_names(shop) == ["mailchimp-demo", "mc-main"]


def test_the_rename_s_warning_does_not_come_back_once_the_new_name_took_a_tag_off(shop, mailchimp_fake):  # noqa: F811
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    point_at(shop, 'name = "mailchimp-demo"', 'name = "mc-main"\nrenamed_from = "mailchimp-demo"')
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    vip = sorted(k for k in mailchimp_fake.lists["aud1"].members if "VIP" in mailchimp_fake.tags_of(k, "aud1"))[0]
    drop_customer(shop.parent, mailchimp_fake.member(vip, "aud1")["email_address"])
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")  # mc-main takes VIP off him
    assert "VIP" not in mailchimp_fake.tags_of(vip, "aud1")
    assert not [w for w in plan_warnings(shop) if "no longer in the config" in w]


def test_the_remedy_names_no_tag_a_destination_of_the_same_audience_manages(shop, mailchimp_fake):  # noqa: F811
    text = two_audiences(shop)
    mapping = shop.read_text(encoding="utf-8")[len(text) + len(SECOND):]
    # "second" (aud2) removed; two destinations point at aud2 now: no successor, and 'x' manages its tags, so
    # putting "second" back with retire_tags (refused: two destinations would manage them there) is not offered
    shop.write_text(text + SECOND.replace('"second"', '"x"') + mapping + SECOND.replace('"second"', '"y"'),
                    encoding="utf-8")
    said = removed(shop, "second")
    assert len(said) == 1 and "retire_tags = [" not in said[0], said
    assert "Destination 'x' of the same audience manages 'VIP'" in said[0] and "--destination x --reconcile" in said[0]


def test_the_warning_names_no_heir_of_another_audience(shop, mailchimp_fake):  # noqa: F811
    """'renamed_from' on a destination of another audience makes it no heir (it takes nothing over there): the one
    destination beside the removed one is still asked to say whether it is a rename."""
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    point_at(shop, 'name = "mailchimp-demo"', 'name = "mc-main"')
    shop.write_text(shop.read_text(encoding="utf-8") + SECOND + 'renamed_from = "mailchimp-demo"\n', encoding="utf-8")
    said = removed(shop, "mailchimp-demo")
    assert len(said) == 1 and "Destination 'mc-main' pushes there too: if it is this destination renamed, add " \
        'renamed_from = "mailchimp-demo" to it' in said[0], said


def test_a_finished_retire_only_destination_plans_nothing_run_after_run(shop, mailchimp_fake):  # noqa: F811
    text = shop.read_text(encoding="utf-8")
    shop.write_text(text + SECOND + '[destinations.segments]\n"Churn" = "Lost"\n', encoding="utf-8")
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    shop.write_text(text + SECOND + 'retire_tags = ["Lost"]\n', encoding="utf-8")
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")  # Lost off; the ledger forgets it
    members = {k: mailchimp_fake.member(k, "aud2") for k in mailchimp_fake.lists["aud2"].members}
    mailchimp_fake.lists["aud2"].members.pop(sorted(members)[0])  # one deleted there: not created again
    db = next(shop.parent.glob("*.db"))
    revisions = []
    for _ in range(2):
        writes = mailchimp_fake.write_calls
        plan = json.loads(cli("plan", "--config", str(shop), "--as-of", AS_OF, "--format", "json").stdout)
        second = next(p for p in plan["plans"] if p["destination"] == "second")
        assert second["changes"] == [] and second["skipped"] == [] and second["totals"]["new"] == 0
        assert [n for n in second["notes"] if "only retires tags and none is left" in n
                and "remove it from the config" in n]
        sync = cli("sync", "--config", str(shop), "--as-of", AS_OF).output
        assert "second: run" in sync and "— 0 changes, 0 operations" in sync.split("second: run")[1]
        assert mailchimp_fake.write_calls == writes
        with sqlite3.connect(db) as conn:
            revisions.append(conn.execute("SELECT revision, epoch FROM state_revisions "
                                          "WHERE destination = 'second'").fetchone())
            assert not conn.execute("SELECT count(*) FROM pushed_state WHERE destination = 'second'").fetchone()[0]
    assert revisions[0] == revisions[1]  # not recorded and forgotten again: the counter stays
    assert sorted(mailchimp_fake.lists["aud2"].members) == sorted(members)[1:]
