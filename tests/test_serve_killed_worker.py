"""A ``serve`` worker killed (SIGKILL) with deliveries claimed but not done, another worker beside it on the same
ledger: the other worker takes the deliveries over (at once when the killed worker was a process of this host;
once its lease lapses when it was on another host, which nobody can ask about its process) and resyncs them once;
the killed worker pushed nothing (it was waiting for the destination's lock). A real worker process against the
fake Mailchimp, on both ledger engines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from sync.config import load_config
from sync.ledger import open_ledger
from sync.ledger.db import build_engine, parse_url
from sync.ledger.schema import events
from sync.serve.worker import Worker
from sync.settings import load_settings
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_replan_after_later_run import shop  # noqa: F401
from tests.test_worker import AS_OF, DEST, queue_order

ROOT = Path(__file__).resolve().parents[1]
LEASE = 6.0  # seconds: the workers' stale_after (renewed every third of it while a batch runs)

_WORKER = """
import sys, threading
from datetime import date
from sync.config import load_config
from sync.ledger import open_ledger
from sync.serve.worker import Worker
from sync.settings import load_settings
cfg, settings = load_config(sys.argv[1]), load_settings()
with open_ledger(cfg, settings) as ledger:
    Worker(cfg, ledger, settings, name=sys.argv[2] or None, debounce_seconds=0, poll_seconds=0.1,
           stale_after=float(sys.argv[3]), as_of=lambda: date.fromisoformat(sys.argv[4])).run_forever(threading.Event())
"""


def _rows(url: str) -> list[dict]:
    engine = build_engine(parse_url(url))
    try:
        with engine.connect() as conn:
            return [r._asdict() for r in conn.execute(select(events.c.id, events.c.status, events.c.locked_by,
                                                             events.c.attempts, events.c.fails).order_by(events.c.id))]
    finally:
        engine.dispose()


def _until(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("host", ["this host", "another host"])
def test_deliveries_a_killed_worker_claimed_are_taken_over_and_done_once(shop, mailchimp_fake, host):  # noqa: F811
    cfg, settings = load_config(shop), load_settings()
    url = os.environ["RFMSYNC_LEDGER_URL"]
    with open_ledger(cfg, settings) as ledger:
        churned = [(k, s.customer_id) for k, s in sorted(ledger.load_state(DEST).items()) if s.tags == {"Winback"}][:2]
        for n, (_, customer) in enumerate(churned):
            queue_order(ledger, f"KILL-{n}", customer)
        runs_before = {r["id"] for r in ledger.recent_runs(100)}
        holder = ledger.acquire_lock(f"sync:{DEST}")  # a full sync applies the destination: the worker waits
        # this host's worker (named by its own process): its death is seen at once; another host's: only its lease says
        name = "" if host == "this host" else "otherhost:4242:killed"
        child = subprocess.Popen([sys.executable, "-c", _WORKER, str(shop), name, str(LEASE), AS_OF.isoformat()],
                                 cwd=ROOT, env=os.environ.copy())
        try:
            _until(lambda: [r["status"] for r in _rows(url)] == ["processing"] * 2, 120,
                   "the worker never claimed the deliveries")
            time.sleep(2 * LEASE / 3)  # past a heartbeat: its lease renewed while it waits for the lock
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        claimed = _rows(url)
        assert [r["status"] for r in claimed] == ["processing"] * 2
        [owner] = {r["locked_by"] for r in claimed}
        assert owner == name or (not name and owner.split(":")[1] == str(child.pid))
        # this host: claimable at once; another host: not before its lease lapses (its last beat ≤ LEASE/3 ago)
        assert ledger.claimable_count(LEASE) == (2 if host == "this host" else 0)
        ledger.release_lock(f"sync:{DEST}", holder)

        other = Worker(cfg, ledger, settings, debounce_seconds=0, stale_after=LEASE, as_of=lambda: AS_OF)
        done: list[int] = []

        def drained() -> bool:
            done.append(other.drain())
            return sum(done) == 2

        _until(drained, 120, "the other worker never took the deliveries over")
        rows = _rows(url)
        assert [(r["status"], r["attempts"], r["fails"]) for r in rows] == [("done", 2, 0)] * 2
        assert sorted(other.processed_ids) == [r["id"] for r in rows]  # each once, by the other worker
        runs = [r for r in ledger.recent_runs(100) if r["id"] not in runs_before]
        assert [(r["kind"], r["destination"], r["status"]) for r in runs] == [("webhook", DEST, "succeeded")]
        for key, _ in churned:  # their new order moved them out of Winback, in the ESP as in the ledger
            tags = set(mailchimp_fake.tags_of(key, "aud1"))
            assert tags != {"Winback"} and tags == set(ledger.load_state_of(DEST, {key})[key].tags)
        assert ledger.event_counts() == {"queued": 0, "processing": 0, "done": 2, "failed": 0}
