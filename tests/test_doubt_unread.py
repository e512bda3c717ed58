"""A run killed after the next sync made its plan (while it still ran, so its operations in flight were no doubt
yet): that sync, once it holds the destination's lock, turns them into doubts and plans again, so what they may
have put on the contacts is settled by that one sync, not one sync later. End to end: a real ``rfmsync sync``
process SIGKILLed mid-apply on the Mailchimp fake, the next sync in this process (both ledger engines)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import date

from sync.api import run_sync
from sync.config import load_config
from sync.ledger import Ledger, open_ledger
from sync.ledger.locks import apply_lock
from sync.settings import load_settings
from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_in_flight import SEGMENT_ADD
from tests.test_retire_fields import AS_OF, make_shop
from tests.test_retire_fields_esp import _withdraw_consent


def _stalled_sync(cfg, fake) -> subprocess.Popen:
    """``rfmsync sync`` in a process whose tag adds Mailchimp carries out but answers only much later: it is
    returned running, its adds in flight (written in the ledger before the first call)."""
    fake.stall(120, times=10_000, method="POST", path=SEGMENT_ADD)
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sync", "--config", str(cfg), "--as-of", AS_OF],
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(k.startswith("POST") and k.split("/")[-2] == "segments" for k in list(fake.calls)):
        assert proc.poll() is None and time.monotonic() < deadline, "the sync ended before any tag add"
        time.sleep(0.05)
    time.sleep(0.3)  # (the other tags' calls reach the fake too)
    return proc


def test_a_run_killed_after_the_next_sync_planned_is_settled_by_that_sync(tmp_path, monkeypatch, mailchimp_fake,
                                                                         ledger_url):  # noqa: F811
    fake = mailchimp_fake
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    text = re.sub(r'new_contacts = "\w+"\n', "", cfg.read_text(encoding="utf-8"))  # only consent creates
    cfg.write_text(text.replace('type = "mailchimp"\n', 'type = "mailchimp"\nnew_contacts = "skip"\n', 1),
                   encoding="utf-8")
    proc = _stalled_sync(cfg, fake)
    try:
        tagged = sorted({m for s in fake.lists["aud1"].segments.values() for m in s["members"]})
        assert tagged, "the fake carried out no add"
        withdrawn = tagged[:3]  # they withdraw while the first sync still runs: the next one must take tags off
        for key in withdrawn:
            _withdraw_consent(cfg, key)
        killed = []

        def kill_the_first(_warnings: list[str]) -> None:
            """Called once the sync's plans are made, before its applies: the first sync dies now (OOM, kill -9)."""
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            fake._faults.clear()  # the ESP answers again
            killed.append(True)

        config, settings = load_config(cfg), load_settings()
        with open_ledger(config, settings) as ledger:
            dest = config.destinations[0].name
            assert ledger.in_flight_count(dest) and ledger.doubted_ops(dest) == []  # running: no doubt yet
            reports = run_sync(config, ledger, settings, as_of=date.fromisoformat(AS_OF), on_warnings=kill_the_first)
        assert killed, "the sync had no warning to report: the first one was never killed"
        assert [r.status for r in reports] == ["succeeded"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    # one sync settled it all: the tags the killed run may have put on the withdrawn are off, nothing pending
    assert not any(fake.tags_of(k) for k in withdrawn), {k: fake.tags_of(k) for k in withdrawn}
    assert json.loads(cli("failures", "--config", str(cfg), "--format", "json").stdout) == []
    with Ledger.connect(ledger_url) as ledger:
        assert ledger.doubted_ops(dest) == [] and ledger.in_flight_count(dest) == 0
    again = json.loads(cli("plan", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)["plans"][0]
    assert again["changes"] == []


ELSEWHERE = "web2/4026531836/aaaaaaaaaaaa.bbbbbbbbbbbb:4242:cafe0000"  # another machine: judged alive until its TTL


def test_another_hosts_run_whose_lock_lapsed_while_the_sync_planned_is_read_by_its_re_plan(
        tmp_path, monkeypatch, mailchimp_fake, ledger_url):  # noqa: F811
    """Its run still says ``running`` and its owner cannot be judged from here: only the lock, lapsed, says it is
    dead. The sync that holds the lock now re-plans with its operations as doubts (they are turned into pending
    failures first: read as in flight, a live-looking run's would be left out)."""
    fake = mailchimp_fake
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)
    config, settings = load_config(cfg), load_settings()
    dest = config.destinations[0].name
    segments = fake.lists["aud1"].segments
    key = sorted(m for s in segments.values() for m in s["members"])[0]
    sid, name = next((sid, s["name"]) for sid, s in segments.items() if key not in s["members"])
    segments[sid]["members"].add(key)  # the other host's add landed; its answer never came back
    with open_ledger(config, settings) as ledger:
        other = ledger.start_run("sync", dest)
        ledger.note_in_flight(dest, other, {f"tag+{name}": [key]})
        ledger.acquire_lock(apply_lock(dest), owner=ELSEWHERE, ttl_seconds=600)
        assert ledger.doubted_ops(dest) == []  # its lock held: a live run's operations

        def lapsed(_warnings: list[str]) -> None:
            """Called once the plans are made: the other host's lock lapses now (it died an hour ago)."""
            assert ledger.release_lock(apply_lock(dest), ELSEWHERE)

        reports = run_sync(config, ledger, settings, as_of=date.fromisoformat(AS_OF), on_warnings=lapsed)
        assert [r.status for r in reports] == ["succeeded"]
        assert ledger.pending_failures(dest) == [] and ledger.in_flight_count(dest) == 0
    assert name not in fake.tags_of(key)  # taken off by that one sync
