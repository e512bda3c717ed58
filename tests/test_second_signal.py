"""A second SIGTERM (or Ctrl-C) while the first one's cleanup waits for calls in flight ends the process at once, by
that signal (it was ignored: the process ended only once the stalled calls answered, 20 s later)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, make_shop

SEGMENT_ADD = r"/segments/\d+$"


def _sync_stalled_in_tag_adds(fake, seconds, tmp_path, monkeypatch, ledger_url):
    """A ``sync`` subprocess (and its config) once its first tag add reached the fake, which holds every tag add ``seconds``."""
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    fake.stall(seconds, times=10_000, method="POST", path=SEGMENT_ADD)
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sync", "--config", str(cfg), "--as-of", AS_OF],
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(k.startswith("POST") and k.split("/")[-2] == "segments" for k in list(fake.calls)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return proc, cfg


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_ends_the_process_promptly(signum, tmp_path, monkeypatch, mailchimp_fake,
                                                 ledger_url):  # noqa: F811
    if "postgres" in ledger_url:
        pytest.skip("sqlite enough")
    fake = mailchimp_fake
    proc, _ = _sync_stalled_in_tag_adds(fake, 20, tmp_path, monkeypatch, ledger_url)
    proc.send_signal(signum)
    time.sleep(1)
    t = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=90)
    took = time.monotonic() - t
    fake._faults.clear()
    assert took < 5, (took, err.decode()[-1500:])
    assert proc.returncode == -signum


def test_a_sigterm_does_not_wait_for_the_calls_in_flight(tmp_path, monkeypatch, mailchimp_fake,
                                                        ledger_url):  # noqa: F811
    """The first SIGTERM alone ends a sync whose calls stall at once, recorded ``interrupted`` (it waited for the
    calls out, whose answers it throws away: 30 s here)."""
    if "postgres" in ledger_url:
        pytest.skip("sqlite enough")
    fake = mailchimp_fake
    proc, cfg = _sync_stalled_in_tag_adds(fake, 30, tmp_path, monkeypatch, ledger_url)
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    took = time.monotonic() - t
    fake._faults.clear()
    assert took < 10, (took, err.decode()[-1500:])
    assert proc.returncode == -signal.SIGTERM
    runs = json.loads(cli("runs", "--config", str(cfg), "--format", "json").stdout)
    assert [r["status"] for r in runs if r["kind"] == "sync"] == ["interrupted"]
