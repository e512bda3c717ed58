"""A failed or interrupted apply leaves in doubt exactly what its calls carried (sync.dispatch): the operations of
calls never sent are plainly pending (planned again, not read back or taken off first, not counted in doubt). A
process killed before it can say so (kill -9 while its first call is out) leaves all of them in doubt, the safe
side. Against each ESP's fake at the HTTP level, on both ledger engines."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from connectors.retry import RetryPolicy
from sync.engine import execute_plan
from sync.errors import DestinationConfigError, DestinationError
from sync.ledger import Ledger
from sync.ledger.inflight import in_flight_ops
from sync.model import ContactChange
from sync.planning.plan import Plan
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, make_shop

RETRY = RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0))


def _changes(n: int, tag: str) -> list[ContactChange]:
    return [ContactChange(f"c{i:04d}@example.com", f"c{i:04d}@example.com", f"C{i}", "A", True, "subscribed",
                          add_tags=frozenset({tag})) for i in range(n)]


def _client_failing_its_first_write(esp: str, fake):
    """A client of batches of 10, one call at a time, whose ESP refuses its first write call for good (a revoked
    key, an account out of money): the apply stops there; the tag named as the vendor's own."""
    if esp == "mailchimp":
        from sync.destinations.mailchimp import MailchimpDestination

        fake.fail(401, times=None, fraction=1.0, method="POST", path=r"/lists/aud1$")
        return "rfm:A", DestinationConfigError, MailchimpDestination(
            "mc", "aud1", fake.api_key, api_url=fake.url, timeout=5, batch_size=10, max_connections=1, retry=RETRY)
    if esp == "sendgrid":
        from sync.destinations.sendgrid import SendGridDestination

        fake.pending_polls = 0
        fake.fail(401, times=100, method="PUT", path=r"/marketing/contacts$")
        return "rfm:A", DestinationConfigError, SendGridDestination(
            "mc", fake.api_key, api_url=fake.url, retry=RETRY, timeout=5, sleep=RETRY.sleep, poll_interval=0.01,
            batch_size=10)
    from sync.destinations.unisender import UnisenderDestination

    fake.fail("not_enough_money", times=100, method="importContacts")
    return "tag:rfm-a", DestinationError, UnisenderDestination("mc", fake.api_key, api_url=fake.api_url,
                                                               retry=RETRY, timeout=5, batch_size=10)


@pytest.mark.parametrize("esp", ["mailchimp", "sendgrid", "unisender"])
def test_a_failed_apply_leaves_in_doubt_only_what_its_calls_carried(esp, request, ledger_url):  # noqa: F811
    """25 new contacts in batches of 10; the ESP refuses the first call for good: only what it carried of its 10
    contacts is in doubt (their creates; SendGrid's and Unisender's adds ride with them, Mailchimp's go in tag calls
    never sent), the 15 others' are not (before: all 50 operations were, so the next sync read them back or took
    their tags off first, and ``failures`` counted 50 in doubt)."""
    fake = request.getfixturevalue(f"{esp}_fake")
    tag, error, client = _client_failing_its_first_write(esp, fake)
    changes = _changes(25, tag)
    plan = Plan("mc", esp, tuple(changes), (), (tag,), {}, 0)
    with Ledger.connect(ledger_url) as ledger:
        with pytest.raises(error):
            execute_plan(plan, client, ledger)
        assert ledger.recent_runs(1)[0]["status"] == "failed"
        sent = {c.key for c in changes[:10]}
        doubted = set(ledger.in_flight.stale_ops("mc"))
        carried = ("upsert",) if esp == "mailchimp" else ("upsert", f"tag+{tag}")  # (Mailchimp's adds: tag calls)
        assert doubted == {(k, op) for k in sent for op in carried}, sorted(doubted)[:6]
        # the next apply turns them, and only them, into pending failures (in doubt)
        nxt = ledger.start_run("sync", "mc")
        ledger.doubt_in_flight("mc", nxt, lambda ks: ledger.load_states("mc", ks))
        assert {f["key"] for f in ledger.pending_failures("mc")} == sent


def test_a_sync_killed_before_its_calls_went_out_leaves_them_all_in_doubt(tmp_path, monkeypatch, mailchimp_fake,
                                                                          ledger_url):  # noqa: F811
    """kill -9 while the first create call is held by the ESP: the tag adds never sent are in doubt all the same
    (the process could not say they were not sent: the safe side)."""
    fake = mailchimp_fake
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    plan = json.loads(subprocess.run([sys.executable, "-m", "sync", "plan", "--config", str(cfg), "--as-of", AS_OF,
                                      "--format", "json"], env=dict(os.environ), capture_output=True, check=True,
                                     ).stdout)["plans"][0]
    proc = _sync_held(fake, cfg, "POST /lists/aud1", "upsert",  # the upserts' answers held
                      120, times=10_000, method="POST", path=r"/lists/aud1$")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    fake._faults.clear()
    assert not any("/segments/" in k for k in fake.calls if k.startswith("POST"))  # no tag add went out
    changes = [ContactChange(c["key"], c["key"], None, None, c["create"], None, add_tags=frozenset(c["add_tags"]))
               for c in plan["changes"]]
    noted = {(k, op) for op, keys in in_flight_ops(changes).items() for k in keys}
    assert any(op.startswith("tag+") for _, op in noted)
    with Ledger.connect(ledger_url) as ledger:
        assert set(ledger.doubted_ops(plan["destination"])) == noted


def test_a_sync_interrupted_while_its_first_creates_are_held_leaves_in_doubt_only_what_they_carried(
        tmp_path, monkeypatch, mailchimp_fake, ledger_url):  # noqa: F811
    """SIGTERM while the first create calls are held: the process lives on to record the run, so its row keeps the
    creates those calls carried and nothing else (the tag adds and the creates never sent are plainly pending;
    before, every noted operation was in doubt, as after kill -9)."""
    fake = mailchimp_fake
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    proc = _sync_held(fake, cfg, "POST /lists/aud1", "upsert", 120, times=10_000, method="POST",
                      path=r"/lists/aud1$")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    fake._faults.clear()
    sent = {m["email_address"] for method, path, _, body in list(fake.requests)
            if method == "POST" and path == "/lists/aud1" for m in body["members"]}
    with Ledger.connect(ledger_url) as ledger:
        run = ledger.recent_runs(1)[0]
        assert run["status"] == "interrupted"
        doubted = set(ledger.doubted_ops(run["destination"]))
    assert sent and doubted == {(k, "upsert") for k in sent}, (len(sent), sorted(doubted)[:4])


def test_a_sync_interrupted_during_unisender_s_held_check_leaves_its_creates_in_doubt(
        tmp_path, monkeypatch, unisender_fake, ledger_url):  # noqa: F811
    """Unisender's e-mail-only check import (unisender_probe.HeldCheck) creates the addresses it does not know:
    SIGTERM while it is held leaves those creates in doubt (before, it was not reported, so the narrowing took
    every one out: the fake held them, the ledger in doubt of none)."""
    fake = unisender_fake
    cfg = make_shop("unisender", fake, tmp_path, monkeypatch, ledger_url)
    # the first importContacts: the e-mail-only check
    proc = _sync_held(fake, cfg, "importContacts", "import", 60, times=1, method="importContacts")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    fake._faults.clear()
    first = fake.requests[[m for m, _ in fake.requests].index("importContacts")][1]
    assert [v for k, v in first.items() if k.startswith("field_names")] == ["email"]  # the check, not an import
    carried = {v.lower() for k, v in first.items() if k.startswith("data[")}
    assert carried and carried <= set(fake.contacts)  # it created them
    with Ledger.connect(ledger_url) as ledger:
        run = ledger.recent_runs(1)[0]
        assert run["status"] == "interrupted"
        doubted = set(ledger.doubted_ops(run["destination"]))
    assert doubted == {(k, "upsert") for k in carried}, (len(carried), sorted(doubted)[:4])


def test_a_sync_interrupted_during_a_unisender_invitation_leaves_that_contact_in_doubt(
        tmp_path, monkeypatch, unisender_fake, ledger_url):  # noqa: F811
    """``new_contacts = "pending"``: each new contact is invited by a ``subscribe`` of his own, which creates him
    and puts him on his lists: SIGTERM while the first one is held leaves that contact's create and adds in doubt,
    no other contact's."""
    fake = unisender_fake
    cfg = make_shop("unisender", fake, tmp_path, monkeypatch, ledger_url)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('new_contacts = "skip"', 'new_contacts = "pending"'),
                   encoding="utf-8")
    plan = json.loads(subprocess.run([sys.executable, "-m", "sync", "plan", "--config", str(cfg), "--as-of", AS_OF,
                                      "--format", "json"], env=dict(os.environ), capture_output=True, check=True,
                                     ).stdout)["plans"][0]
    proc = _sync_held(fake, cfg, "subscribe", "invitation", 60, times=1, method="subscribe")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    fake._faults.clear()
    assert fake.calls["subscribe"] == 1 and not fake.calls["importContacts"]
    invited = next(p for m, p in fake.requests if m == "subscribe")["fields[email]"].lower()
    change = next(c for c in plan["changes"] if c["key"] == invited)
    ops = in_flight_ops([ContactChange(invited, invited, None, None, change["create"], None,
                                       add_tags=frozenset(change["add_tags"]))])
    with Ledger.connect(ledger_url) as ledger:
        run = ledger.recent_runs(1)[0]
        assert run["status"] == "interrupted"
        doubted = set(ledger.doubted_ops(run["destination"]))
    assert "upsert" in ops and doubted == {(invited, op) for op in ops}, sorted(doubted)[:4]


def _sync_held(fake, cfg, call: str, what: str, *stall, **where) -> subprocess.Popen:
    """`rfmsync sync` in a process of its own, once the fake holds the answer of its first ``call`` (``stall``,
    ``where``: the fake's stall); fails if the sync ended before it."""
    fake.stall(*stall, **where)
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sync", "--config", str(cfg), "--as-of", AS_OF],
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not fake.calls[call]:
        assert proc.poll() is None and time.monotonic() < deadline, f"the sync ended before its first {what}"
        time.sleep(0.05)
    return proc
