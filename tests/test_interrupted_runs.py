"""A sync interrupted mid-apply (Ctrl-C: SIGINT; SIGTERM) records its run as ended, ``interrupted``, at once
(not ``running`` until the next run finds its process gone), while the operations it had in flight stay in
doubt: the next sync takes the tag off a contact who withdrew. End to end against the Mailchimp fake, both
ledger engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sync.errors import Terminated
from sync.ledger import Ledger
from sync.ledger.runs import ended_if_interrupted
from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, make_shop

SEGMENT_ADD = r"/segments/\d+$"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_sync_interrupted_mid_apply_is_recorded_interrupted_and_its_adds_stay_in_doubt(
        signum, tmp_path, monkeypatch, mailchimp_fake, ledger_url):  # noqa: F811
    fake = mailchimp_fake
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    fake.stall(3, times=10_000, method="POST", path=SEGMENT_ADD)  # the adds done, their answers late
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sync", "--config", str(cfg), "--as-of", AS_OF],
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(k.startswith("POST") and k.split("/")[-2] == "segments" for k in list(fake.calls)):
        assert proc.poll() is None and time.monotonic() < deadline, "the sync ended before any tag add"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    fake._faults.clear()
    runs = json.loads(cli("runs", "--config", str(cfg), "--format", "json").stdout)
    applied = [r for r in runs if r["kind"] == "sync"]
    assert [r["status"] for r in applied] == ["interrupted"], (applied, stderr.decode()[-2000:])
    assert applied[0]["finished_at"] and "interrupted" in applied[0]["error"]
    with Ledger.connect(ledger_url) as ledger:
        doubted = ledger.doubted_ops(applied[0]["destination"])
    assert any(op.startswith("tag+") for _, op in doubted)  # the adds sent stay in doubt
    # the exit as before: Ctrl-C click's "Aborted!" (1), SIGTERM the signal's own
    assert proc.returncode == (1 if signum == signal.SIGINT else -signal.SIGTERM), stderr.decode()[-2000:]

    cli("sync", "--config", str(cfg), "--as-of", AS_OF)  # the doubts settled, nothing left in flight
    runs = json.loads(cli("runs", "--config", str(cfg), "--format", "json").stdout)
    assert [r["status"] for r in runs if r["kind"] == "sync"] == ["succeeded", "interrupted"]
    with Ledger.connect(ledger_url) as ledger:
        assert ledger.doubted_ops(applied[0]["destination"]) == []


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, Terminated])
def test_a_run_left_by_an_interruption_is_recorded_interrupted_unless_it_had_ended(
        interruption, ledger_url):  # noqa: F811
    with Ledger.connect(ledger_url) as ledger:
        run = ledger.start_run("sync", "mc")
        with pytest.raises(interruption), ended_if_interrupted(ledger, run, {"ok": 3}, ": what it leaves"):
            raise interruption()
        got = ledger.get_run(run)
        how = "SIGTERM" if interruption is Terminated else "Ctrl-C (SIGINT)"
        assert (got["status"], got["counts"], got["error"]) == ("interrupted", {"ok": 3},
                                                                 f"interrupted by {how}: what it leaves")
        assert got["finished_at"] is not None
        done = ledger.start_run("sync", "mc")
        with pytest.raises(interruption), ended_if_interrupted(ledger, done, {}):
            ledger.finish_run(done, "succeeded", {"ok": 1})
            raise interruption()  # after the finish: the run keeps its status
        assert ledger.get_run(done)["status"] == "succeeded"
        failed = ledger.start_run("sync", "mc")
        with pytest.raises(ValueError), ended_if_interrupted(ledger, failed, {}):
            raise ValueError("an error is the caller's to record")
        assert ledger.get_run(failed)["status"] == "running"
        assert ledger.abandon_dead_runs() == []  # (this process lives)
