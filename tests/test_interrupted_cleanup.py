"""An interrupted sync waits for nothing and is recorded ``interrupted`` however many signals follow: the engine's
small pool (the destination's setup, the ledger reads) is not waited for, the run is recorded as soon as the interruption reaches the apply (before its cleanup), and a second
signal during that one write is held until it is done, 1.5 s at most (sync.signal_hold)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.builders import run_cli as cli
from sync.ledger import Ledger
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, make_shop

MERGE_FIELDS = r"/lists/aud1/merge-fields$"


def _sync_stalled_in_prepare(fake, tmp_path, monkeypatch, ledger_url, seconds=30):  # noqa: F811
    """A ``sync`` subprocess once the apply's prepare asked for the merge fields, which the fake holds ``seconds``."""
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    before = fake.calls["GET /lists/aud1/merge-fields"]
    fake.stall(seconds, times=10_000, method="GET", path=MERGE_FIELDS)
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sync", "--config", str(cfg), "--as-of", AS_OF],
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while fake.calls["GET /lists/aud1/merge-fields"] == before:
        assert proc.poll() is None and time.monotonic() < deadline, "the sync ended before its prepare"
        time.sleep(0.05)
    time.sleep(0.3)
    return proc, cfg


def _sync_runs(cfg) -> list[str]:
    runs = json.loads(cli("runs", "--config", str(cfg), "--format", "json").stdout)
    return [r["status"] for r in runs if r["kind"] == "sync"]


def test_a_sigterm_while_the_destination_is_prepared_waits_for_none_of_its_reads(tmp_path, monkeypatch,
                                                                                 mailchimp_fake,
                                                                                 ledger_url):  # noqa: F811
    """(Before: the engine's pool waited for prepare's held read, 30 s, before the run was recorded.) Nothing is
    created once the run is interrupted, and no write call goes out."""
    fake = mailchimp_fake
    proc, cfg = _sync_stalled_in_prepare(fake, tmp_path, monkeypatch, ledger_url)
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    took = time.monotonic() - t
    fake._faults.clear()
    assert took < 10, (took, err.decode()[-1500:])
    assert proc.returncode == -signal.SIGTERM
    assert _sync_runs(cfg) == ["interrupted"]
    assert not [k for k in fake.calls if not k.startswith("GET")], fake.calls


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_during_the_cleanup_leaves_the_run_interrupted(signum, tmp_path, monkeypatch,
                                                                       mailchimp_fake, ledger_url):  # noqa: F811
    """(Before: the second signal ended the process while the first one's cleanup waited, the run left
    ``running``, marked ``abandoned`` by the next run.)"""
    if "postgres" in ledger_url and signum == signal.SIGINT:
        pytest.skip("one signal enough on PostgreSQL")
    fake = mailchimp_fake
    proc, cfg = _sync_stalled_in_prepare(fake, tmp_path, monkeypatch, ledger_url)
    proc.send_signal(signum)
    time.sleep(0.5)
    if proc.poll() is None:
        proc.send_signal(signum)
    proc.communicate(timeout=90)
    fake._faults.clear()
    assert _sync_runs(cfg) == ["interrupted"]


CHILD = textwrap.dedent("""
    import os, signal, sys
    from sync.ledger.runs import record_interrupted
    from sync.errors import Terminated

    class Ledger:  # the second SIGTERM comes while the run's record is written
        def interrupt_run(self, run_id, counts, error):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                sum(range(100))  # the write's bytecode, where a held signal's handler would run
            print("recorded:", error, flush=True)
            return True

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as the CLI leaves it after the first one
    record_interrupted(Ledger(), 1, {}, "", Terminated())
    print("after", flush=True)
""")


def test_a_second_signal_during_the_interrupted_record_is_held_until_it_is_written():
    """The process still ends by that signal, but after the record (before: it ended in the middle of it)."""
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines() == ["recorded: interrupted by SIGTERM"], proc.stderr
    assert proc.returncode == -signal.SIGTERM


HELD_CHILD = textwrap.dedent("""
    import signal, sys
    from sync.errors import Terminated
    from sync.ledger import Ledger
    from sync.ledger.runs import record_interrupted

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as the CLI leaves it after the first one
    with Ledger.connect(sys.argv[1]) as ledger:
        print("writing", flush=True)
        record_interrupted(ledger, int(sys.argv[2]), {}, "", Terminated())
        print("after", flush=True)
""")


@contextmanager
def _write_locked(url: str, run_id: int) -> Iterator[Callable[[], None]]:
    """Another connection holding the run's row for writing (SQLite: the database's write lock) until the callable
    given, or the block's end, lets it go."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(make_url(url).database, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
    else:
        con = create_engine(url).connect()
        con.execute(text("SELECT id FROM runs WHERE id = :id FOR UPDATE"), {"id": run_id})
    held = [True]

    def release() -> None:
        if held.pop() if held else False:
            con.rollback()

    try:
        yield release
    finally:
        release()
        con.close()


@pytest.mark.parametrize("released_after", [None, 0.3])
def test_a_second_signal_is_held_only_briefly_while_the_ledger_blocks_the_record(released_after,
                                                                                  ledger_url):  # noqa: F811
    """Another process holds the ledger's write lock (or the run's row) while the interrupted record is written: a
    second SIGTERM waits for it a moment (``BOUND``, 1.5 s): the record written if the lock is let go meanwhile,
    else the process ends by that signal all the same, the run left ``running`` (before: held as long as the write
    blocked, 30 s on SQLite, without end on a PostgreSQL row lock, then nothing written either)."""
    with Ledger.connect(ledger_url) as ledger:
        run_id = ledger.start_run("sync", "mc")
    with _write_locked(ledger_url, run_id) as release:
        proc = subprocess.Popen([sys.executable, "-c", HELD_CHILD, ledger_url, str(run_id)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        time.sleep(0.5)  # the write blocked
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        if released_after is not None:
            time.sleep(released_after)
            release()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        took = time.monotonic() - sent
    out, err = proc.communicate()
    assert proc.returncode == -signal.SIGTERM and "after" not in out, (proc.returncode, out, err)
    assert took < 10, took
    with Ledger.connect(ledger_url) as ledger:
        assert ledger.get_run(run_id)["status"] == ("running" if released_after is None else "interrupted")


def test_a_second_signal_while_the_last_outcomes_are_written_leaves_the_run_interrupted(tmp_path, monkeypatch,
                                                                                        mailchimp_fake,
                                                                                        ledger_url):  # noqa: F811
    """SIGTERM while the tag calls are held by the ESP, the contacts' states not writable (another connection
    holds ``pushed_state``): the apply's cleanup waits for its last outcome writes; a second SIGTERM then ends the
    process, the run already recorded ``interrupted`` (the record made as soon as the interruption reached the
    apply, before that cleanup; without it, the run was left ``running``). PostgreSQL only: SQLite's write lock is
    the whole database's, which would hold the run's own record too."""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("a lock on one table: PostgreSQL")
    fake = mailchimp_fake
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    fake.stall(120, times=10_000, method="POST", path=r"/lists/aud1/segments/")
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sync", "--config", str(cfg), "--as-of", AS_OF],
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(k.startswith("POST /lists/aud1/segments/") for k, n in list(fake.calls.items()) if n):
        assert proc.poll() is None and time.monotonic() < deadline, "the sync ended before its first tag call"
        time.sleep(0.05)
    con = create_engine(ledger_url).connect()
    try:
        con.execute(text("LOCK TABLE pushed_state IN EXCLUSIVE MODE"))  # reads go on, writes wait
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert proc.poll() is None, "the cleanup did not wait for the outcome writes: nothing held"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        con.rollback()
        con.close()
        fake._faults.clear()
    assert proc.returncode == -signal.SIGTERM
    assert _sync_runs(cfg) == ["interrupted"]


def test_a_third_signal_while_the_record_is_held_ends_the_process_at_once(ledger_url):  # noqa: F811
    """A signal held for the record's write (here for up to a minute) is not held again: the next one ends the
    process at once (before, every further signal was swallowed until the write ended)."""
    child = HELD_CHILD.replace("record_interrupted(ledger, int(sys.argv[2]), {}, \"\", Terminated())",
                               "written_held(lambda: ledger.interrupt_run(int(sys.argv[2]), {}, \"x\"), bound=60)")
    child = child.replace("import signal, sys", "import signal, sys\nfrom sync.signal_hold import written_held")
    with Ledger.connect(ledger_url) as ledger:
        run_id = ledger.start_run("sync", "mc")
    with _write_locked(ledger_url, run_id):
        proc = subprocess.Popen([sys.executable, "-c", child, ledger_url, str(run_id)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # held
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        took = time.monotonic() - sent
    proc.communicate()
    assert proc.returncode == -signal.SIGTERM and took < 10, (proc.returncode, took)
