"""The warning of a destination removed from the config (docs/sync.md#removed-destination): which of its tags a
configured destination takes off, and which stay on the contacts with nobody to take them off."""

from __future__ import annotations

import csv
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


def test_a_renamed_destination_excuses_only_the_tags_its_own_rows_hold(shop, mailchimp_fake):  # noqa: F811
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    vip = sorted(k for k in mailchimp_fake.lists["aud1"].members if "VIP" in mailchimp_fake.tags_of(k, "aud1"))[0]
    drop_customer(shop.parent, mailchimp_fake.member(vip, "aud1")["email_address"])
    point_at(shop, 'name = "mailchimp-demo"', 'name = "mc-main"')  # renamed, same audience and mapping
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--allow-mass-change")
    # the new name never pushed VIP to him, so it will not take it off: the old name's tag is said, for him alone
    # (and the tags of those whose segment moved with him gone: the new name did not push them either)
    assert "VIP" in mailchimp_fake.tags_of(vip, "aud1")
    said = removed(shop, "mailchimp-demo")
    assert len(said) == 1 and "stay on them: 'VIP' (1 contact)," in said[0]
