"""A record's state that comes back through the webhooks, end to end on both ledger engines: the HTTP intake
(uvicorn on loopback), the ledger's queue, the worker, the order store and the fake Mailchimp. The queue drops a
delivery only when it repeats the latest event of its record (a sender's retry); an earlier state that comes back
after another (consent no → yes → no) is new work. An older version carrying ``updated_at`` still loses to the
newer one the store holds, however often it is retried."""

from __future__ import annotations

import json
import time

import pytest
import requests

from sync.config import load_config
from sync.ledger import open_ledger
from sync.pipeline import store_path
from sync.serve.app import create_app
from sync.serve.generic import sign_generic
from sync.serve.metrics import Metrics
from sync.serve.scheduler import run_full_sync
from sync.serve.webhooks import Intake
from sync.serve.worker import Worker
from sync.settings import load_settings
from sync.store import open_store
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_webhooks_generic import live_server
from tests.test_worker import AS_OF, make_shop

SECRET = "whsec-test"  # RFMSYNC_WEBHOOK_SECRET, set by make_shop
EMAIL = "late.news@example.com"


@pytest.fixture
def shop(tmp_path, mailchimp_fake, monkeypatch, ledger_url):  # noqa: F811
    """The demo shop synced once to the fake Mailchimp, its ledger on the engine of ``ledger_url``; only contacts
    who consented are created (``new_contacts = "skip"``)."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    path.write_text(path.read_text(encoding="utf-8").replace('new_contacts = "transactional"',
                                                              'new_contacts = "skip"'), encoding="utf-8")
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
    return path


def _post(base: str, consent: str, updated_at: str | None = None, order_id: str = "OOO-1") -> dict:
    contact = {"email": EMAIL, "marketing_consent": consent}
    if updated_at is not None:
        contact["updated_at"] = updated_at
    body = json.dumps({"order_id": order_id, "customer_id": "NEW-7", "ordered_at": "2025-06-29T12:00:00+05:00",
                       "amount": "990000", "contact": contact}).encode()
    headers = {"Content-Type": "application/json", **sign_generic(SECRET, body, int(time.time()))}
    reply = requests.post(f"{base}/webhooks/generic", data=body, headers=headers, timeout=10)
    assert reply.status_code == 202, reply.text
    return reply.json()


def _consent(cfg) -> str:
    with open_store(store_path(cfg)) as con:
        return con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = 'NEW-7'").fetchone()[0]


def test_a_consent_withdrawn_again_after_it_was_given_is_queued_and_takes_the_tags_off(shop, mailchimp_fake):
    """No, yes, no (no ``updated_at``): the third delivery repeats the first, not the latest. Before, the queue
    dropped it as a duplicate of the first (kept done): the store kept "yes" and he stayed tagged, through a full
    sync too. A retry of the third (the sender's) is still a duplicate."""
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            assert _post(base, "no")["queued"] == 1 and worker.drain() == 2  # the order, its contact
            assert _post(base, "yes")["queued"] == 1 and worker.drain() == 2  # the order, the contact
            assert _consent(cfg) == "yes" and mailchimp_fake.tags_of(EMAIL), "subscribed and tagged"
            assert _post(base, "no") == {"accepted": 1, "queued": 1, "duplicates": 0}
            assert worker.drain() == 2
            assert _consent(cfg) == "no" and mailchimp_fake.tags_of(EMAIL) == set()
            assert _post(base, "no") == {"accepted": 1, "queued": 0, "duplicates": 1}  # the sender's retry
        assert ledger.event_counts() == {"queued": 0, "processing": 0, "done": 6, "failed": 0}
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
    assert _consent(cfg) == "no" and mailchimp_fake.tags_of(EMAIL) == set()


def test_an_older_version_retried_after_a_newer_one_is_queued_but_left_out_by_its_time(shop, mailchimp_fake):
    """With ``updated_at``: "yes" of 10:00, "no" of 10:05, then the 10:00 "yes" again (a late retry). It is no
    longer the latest event of the order, so it is queued, and the store leaves it out by its time (stale)."""
    cfg, settings = load_config(shop), load_settings()
    metrics = Metrics()
    with open_ledger(cfg, settings) as ledger:
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF, metrics=metrics)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            assert _post(base, "yes", "2025-06-29T10:00:00+00:00")["queued"] == 1 and worker.drain() == 2
            assert _post(base, "no", "2025-06-29T10:05:00+00:00")["queued"] == 1 and worker.drain() == 2
            assert _post(base, "yes", "2025-06-29T10:00:00+00:00")["queued"] == 1 and worker.drain() == 2
    assert _consent(cfg) == "no" and mailchimp_fake.tags_of(EMAIL) == set()
    assert metrics.snapshot()["stale"]["contact"] == 1


def test_a_consent_withdrawn_again_with_another_order_is_queued_and_takes_the_tags_off(shop, mailchimp_fake):
    """No with order 1, yes with order 2, then order 1 again with its "no": the contact's state comes back, though
    order 1's delivery repeats itself. Before, the contact travelled in the order's event and was checked against
    that order's latest event only: a duplicate, the store and Mailchimp kept "yes". Its contact is an event of its
    own now, checked against the contact's latest event (order 1 is unchanged: that part is the sender's retry)."""
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        worker = Worker(cfg, ledger, settings, as_of=lambda: AS_OF)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            assert _post(base, "no")["queued"] == 1 and worker.drain()
            assert _post(base, "yes", order_id="OOO-2")["queued"] == 1 and worker.drain()
            assert _consent(cfg) == "yes" and mailchimp_fake.tags_of(EMAIL), "subscribed and tagged"
            assert _post(base, "no") == {"accepted": 1, "queued": 1, "duplicates": 0}
            assert worker.drain() == 1  # the contact's "no" (order 1 unchanged)
            assert _consent(cfg) == "no" and mailchimp_fake.tags_of(EMAIL) == set()
            assert _post(base, "no") == {"accepted": 1, "queued": 0, "duplicates": 1}  # the sender's retry
