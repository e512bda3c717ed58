"""A retire-only destination (nothing mapped) and the webhook resync (serve): left to the full sync, so a webhook
never creates, subscribes or re-creates anyone there, even once the ledger has forgotten the destination."""
from __future__ import annotations

import csv
from datetime import datetime, timezone

from connectors.records import Consent, Contact
from sync.config import load_config
from sync.ledger import open_ledger
from sync.serve.resync import resync
from sync.settings import load_settings
from tests.builders import run_cli as cli
from tests.test_serve_resync import AS_OF, DEST, orders_for, synced_shop

RETIRE = 'retire_tags = ["VIP", "Winback soft", "Winback", "Welcome"]\nretire_fields = ["RFM_SEG", "RFM_CODE"]\n'


def retire_only(path):
    """The shop's destination with its mapping taken out and every tag and field it gave retired."""
    text = path.read_text(encoding="utf-8")
    head, tail = text[:text.index("[destinations.segments]")], text[text.index("[serve]"):]
    path.write_text(head + RETIRE + "\n" + tail, encoding="utf-8")


def customer_of(path, email: str) -> str:
    for row in csv.reader((path.parent / "clients.csv").open(encoding="utf-8-sig"), delimiter=";"):
        if row[4].lower() == email:
            return row[0]
    raise AssertionError(f"no customer of {email}")


def test_webhook_of_a_finished_retire_only_destination_creates_nobody(tmp_path, mailchimp_fake, monkeypatch):
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=60)
    retire_only(path)
    cli("sync", "--config", str(path), "--as-of", AS_OF.isoformat(), "--allow-mass-change")
    cfg, settings = load_config(path), load_settings()
    members = dict(mailchimp_fake.lists["aud1"].members)
    gone = sorted(members)[0]
    mailchimp_fake.lists["aud1"].members.pop(gone)  # erased in the ESP
    new = Contact(customer_id="NEW-1", email="new.customer@example.com", marketing_consent=Consent.YES,
                  updated_at=datetime(2025, 6, 29, tzinfo=timezone.utc))
    with open_ledger(cfg, settings) as ledger:
        assert DEST not in ledger.state_destinations()  # finished and forgotten
        writes = mailchimp_fake.write_calls
        report = resync(cfg, ledger, settings, orders_for([customer_of(path, gone), "NEW-1"], "W"),
                        contacts=[new], as_of=AS_OF)
        assert report.customers == 2 and report.reports == []  # re-scored, but no destination planned
        assert mailchimp_fake.write_calls == writes
        assert DEST not in ledger.state_destinations()  # the ledger holds no row of it again
    assert set(mailchimp_fake.lists["aud1"].members) == set(members) - {gone}  # no one created or re-created
