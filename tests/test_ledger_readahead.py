"""The read-back of a large apply takes the pages read while its calls ran (sync.ledger.readahead) only when they
still hold the ledger's rows: the copy is exactly the ledger's state at the end, and only the pages written
again since (or never read ahead) are read at the end."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from sync import engine
from sync.engine import execute_plan
from sync.ledger import Ledger
from sync.ledger.readahead import ReadAhead
from sync.ledger.statecache import StateCache
from sync.model import ItemResult

try:
    from tests.ledger_fixtures import Clock, clock, ledger_url, open_ledger  # noqa: F401
    from tests.test_ledger_statecache import _backup, as_states, read_both, state
    from tests.test_state_copy_after_apply import AcceptingDestination, plan
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import Clock, clock, ledger_url, open_ledger  # type: ignore # noqa: F401
    from test_ledger_statecache import _backup, as_states, read_both, state  # type: ignore
    from test_state_copy_after_apply import AcceptingDestination, plan  # type: ignore

PAGE = 10
KEYS = [f"k{i:03d}@x.io" for i in range(45)]  # pages of 10 rowids: 5 pages, the last one still being filled


@pytest.fixture
def cached_ledger(open_ledger: Callable[..., Ledger], tmp_path: Path) -> Ledger:
    return open_ledger(state_cache=tmp_path / "cache")


@pytest.fixture
def page_reads() -> Iterator[list[str]]:
    """The SQL every SQLite ledger connection runs while the test runs, the bulk read's own statements too (sent
    on the driver's cursor: SQLite's trace callback, set on each connection as it is taken from the pool)."""
    sent: list[str] = []

    def trace(conn) -> None:  # noqa: ANN001
        raw = conn.connection.driver_connection
        if hasattr(raw, "set_trace_callback"):  # each statement behind the name of the thread that sent it
            raw.set_trace_callback(lambda sql: sent.append(f"{threading.current_thread().name}: {sql}"))

    event.listen(Engine, "engine_connect", trace)
    yield sent
    event.remove(Engine, "engine_connect", trace)


def _blob_reads(sent: list[str], thread: str = "") -> int:
    """The pages read (one blob of rows each; a page's check reads its keys, not its rows), by the
    thread named ``thread`` when given."""
    return sum("group_concat" in s and "json_quote(customer_id)" in s and s.startswith(thread) for s in list(sent))


def _ahead(ledger: Ledger, dest: str) -> ReadAhead:
    """A read-ahead whose pages are read when the test says (:meth:`ReadAhead.read_written`), not by its thread."""
    states = ledger.state
    return ReadAhead(states._db, dest, lambda conn: states._counter(conn, dest), PAGE)


def test_the_pages_read_ahead_and_unchanged_are_not_read_again_and_the_copy_is_the_ledgers(
        cached_ledger: Ledger, page_reads: list[str]) -> None:
    if cached_ledger.state._db.dialect != "sqlite":
        pytest.skip("a SQLite ledger's read-ahead (no state cache on PostgreSQL)")
    dest = f"ahead-{uuid.uuid4().hex[:8]}"
    for i in range(0, len(KEYS), 5):  # a run's groups, one save each
        cached_ledger.save_states(dest, None, [state(k, 1) for k in KEYS[i:i + 5]])
    ahead = _ahead(cached_ledger, dest)
    assert ahead.read_written() == 4  # the four pages the writer has written past; not the last one
    cached_ledger.save_states(dest, None, [state(KEYS[12], 7)])  # page 2 written again after it was read
    cached_ledger.forget(dest, [KEYS[33]])  # and page 4 loses a row
    cached_ledger.save_states(dest, None, [state(f"new{i}@x.io", 2) for i in range(3)])  # new rows: last page
    page_reads.clear()
    assert cached_ledger.keep_copy_current(dest, page=PAGE, ahead=ahead) == len(KEYS) + 2
    assert _blob_reads(page_reads) == 3  # pages 2 and 4 again, and the last page; pages 1 and 3 from ahead
    through_cache, full = read_both(cached_ledger, dest)
    assert through_cache == full and len(full) == len(KEYS) + 2
    assert full[KEYS[12]] == state(KEYS[12], 7) and KEYS[33] not in full
    assert cached_ledger.state_parts(dest).read == 0  # the copy is current: the next plan reads nothing


def test_pages_read_at_a_revision_the_ledger_no_longer_holds_are_not_used(cached_ledger: Ledger, ledger_url: str,
                                                                          page_reads: list[str]) -> None:
    """A page is taken from the read-ahead only with the token of the revision it was read at: a ledger restored
    from an older backup and written again since holds the same rowids, keys, count and latest revision in each
    page, but another history (other rows at that revision, another token): every page is read at the end."""
    if cached_ledger.state._db.dialect != "sqlite":
        pytest.skip("a SQLite ledger's read-ahead (no state cache on PostgreSQL)")
    dest = f"token-{uuid.uuid4().hex[:8]}"
    cached_ledger.save_states(dest, None, [state(k, 1) for k in KEYS])
    restore = _backup(ledger_url)  # the ledger at its first revision
    cached_ledger.save_states(dest, None, [state(k, 2) for k in KEYS])  # every row again, kept its rowid
    ahead = _ahead(cached_ledger, dest)
    assert ahead.read_written() == 4
    restore()  # back to the first revision (the rows are put back under the same rowids)...
    cached_ledger.save_states(dest, None, [state(k, 3) for k in KEYS])  # ...and its second written otherwise
    page_reads.clear()
    assert cached_ledger.keep_copy_current(dest, page=PAGE, ahead=ahead) == len(KEYS)
    assert _blob_reads(page_reads) == 5
    through_cache, full = read_both(cached_ledger, dest)
    assert through_cache == full and full[KEYS[0]] == state(KEYS[0], 3)


@pytest.mark.parametrize("renumber", ["reload", "vacuum"])
def test_a_page_whose_rows_got_other_rowids_is_read_again(cached_ledger: Ledger, ledger_url: str,
                                                         page_reads: list[str], renumber: str) -> None:
    """A ledger reloaded from a dump (a logical restore of a backup taken after the read-ahead: same rows,
    revisions and tokens) holds each page's rows under other rowids, and VACUUM may renumber them too: as many
    rows, none written since, the token the same, but other keys in each page. Such pages are read again, no key
    read twice or missing."""
    if cached_ledger.state._db.dialect != "sqlite":
        pytest.skip("a SQLite ledger's read-ahead (no state cache on PostgreSQL)")
    dest = f"rowid-{uuid.uuid4().hex[:8]}"
    cached_ledger.save_states("other", None, [state(f"o{i:03d}@x.io", 1) for i in range(20)])  # rowids 1..20
    cached_ledger.forget("other", [f"o{i:03d}@x.io" for i in range(5)])  # a gap of 5 rowids
    cached_ledger.save_states(dest, None, [state(k, 1) for k in KEYS])  # rowids 21..65
    ahead = _ahead(cached_ledger, dest)
    assert ahead.read_written() == 6  # the pages at rowids 0 .. 50 (not the one at 60, still being filled)
    if renumber == "reload":
        _backup(ledger_url)()  # a backup taken now, restored at once: the rows put back from rowid 1 on
    else:
        raw = sqlite3.connect(ledger_url.removeprefix("sqlite:///"))
        raw.execute("VACUUM")  # a maintenance job (or a backup made by VACUUM INTO, put back)
        raw.close()
    page_reads.clear()
    assert cached_ledger.keep_copy_current(dest, page=PAGE, ahead=ahead) == len(KEYS)
    through_cache, full = read_both(cached_ledger, dest)
    assert through_cache == full and len(full) == len(KEYS)


def test_a_big_apply_reads_ahead_and_leaves_the_copy_exact(cached_ledger: Ledger) -> None:
    """Through the engine: the apply's read-back with its read-ahead (a destination the Protocol's, answering
    every change), then the next plan reads nothing from the ledger and the copy is the ledger's state."""
    dest = f"apply-{uuid.uuid4().hex[:8]}"
    assert execute_plan(plan(dest, engine.COPY_AFTER), AcceptingDestination(dest), cached_ledger).status == \
        "succeeded"
    parts = cached_ledger.state_parts(dest)
    assert parts.read == 0
    through_cache, full = read_both(cached_ledger, dest)
    assert len(full) == engine.COPY_AFTER and through_cache == full
    assert as_states(parts.base) == full


def test_a_page_with_a_key_holding_a_line_break_is_read_again(cached_ledger: Ledger,
                                                              page_reads: list[str]) -> None:
    """A line break is the separator of the keys a page's check compares: a page with a key holding one proves
    nothing (two lists of keys could read the same), and is read again at the end."""
    if cached_ledger.state._db.dialect != "sqlite":
        pytest.skip("a SQLite ledger's read-ahead (no state cache on PostgreSQL)")
    dest = f"break-{uuid.uuid4().hex[:8]}"
    keys = ["k000\nk@x.io", *KEYS[1:]]  # in the first page
    cached_ledger.save_states(dest, None, [state(k, 1) for k in keys])
    ahead = _ahead(cached_ledger, dest)
    assert ahead.read_written() == 4
    page_reads.clear()
    assert cached_ledger.keep_copy_current(dest, page=PAGE, ahead=ahead) == len(keys)
    assert _blob_reads(page_reads) == 2  # the first page (its line break) and the last
    through_cache, full = read_both(cached_ledger, dest)
    assert through_cache == full and set(full) == set(keys)


class AnsweringInCalls(AcceptingDestination):
    """Answers a call of 1 000 changes at a time; once it answered ``pause_after``, it waits (up to 60 s) for the
    read-ahead thread to read ``pages`` pages (SQLite's trace of the test's connections, ``sent``) before the
    rest: a long apply, on which the read-ahead reads the pages written past while the calls still run."""

    def __init__(self, name: str, sent: list[str], pause_after: int, pages: int) -> None:
        super().__init__(name)
        self.sent, self.pause_after, self.pages = sent, pause_after, pages

    def apply(self, changes, on_results) -> None:  # noqa: ANN001
        changes = list(changes)
        for i in range(0, len(changes), 1000):
            on_results([ItemResult(c.key, "upsert", True) for c in changes[i:i + 1000]])
            if i < self.pause_after <= i + 1000:
                deadline = time.monotonic() + 60
                while _blob_reads(self.sent, ReadAhead.THREAD) < self.pages and time.monotonic() < deadline:
                    time.sleep(0.05)


@pytest.mark.slow
def test_a_long_apply_reads_pages_ahead_and_its_read_back_takes_them(cached_ledger: Ledger,
                                                                     page_reads: list[str]) -> None:
    """Through the engine: 120 000 changes answered 1 000 a call. The read-ahead reads the two pages of 50 000
    rowids the writer has written past while the calls run; the read-back after the last call reads only the
    third (the one still being filled), and the copy is exactly the ledger's state."""
    if cached_ledger.state._db.dialect != "sqlite":
        pytest.skip("a SQLite ledger's read-ahead (no state cache on PostgreSQL)")
    dest = f"long-{uuid.uuid4().hex[:8]}"
    n = 120_000  # rowids 1 .. 120 000: the pages at 0 and 50 000 are written past, the one at 100 000 is not
    destination = AnsweringInCalls(dest, page_reads, pause_after=110_000, pages=2)
    assert execute_plan(plan(dest, n), destination, cached_ledger).status == "succeeded"
    assert _blob_reads(page_reads, ReadAhead.THREAD) == 2
    assert _blob_reads(page_reads, threading.main_thread().name) == 1  # the page still filled when the calls ended
    parts = cached_ledger.state_parts(dest)
    assert parts.read == 0
    through_cache, full = read_both(cached_ledger, dest)
    assert len(full) == n and through_cache == full and as_states(parts.base) == full


def test_no_read_ahead_for_a_destination_with_a_copy_or_a_ledger_without_a_cache(
        cached_ledger: Ledger, open_ledger: Callable[..., Ledger]) -> None:
    dest = f"copy-{uuid.uuid4().hex[:8]}"
    cached_ledger.save_states(dest, None, [state(k, 1) for k in KEYS])
    ahead = cached_ledger.read_ahead(dest)
    if cached_ledger.state._db.dialect != "sqlite":
        assert ahead is None
        return
    assert ahead is not None  # no copy yet: the read-back will read it all
    ahead.stop()
    cached_ledger.keep_copy_current(dest, ahead=ahead)
    assert cached_ledger.read_ahead(dest) is None  # a copy: the next read-back reads only what changes
    memory = Ledger.connect("sqlite://")  # no cache: nothing to read back
    try:
        memory.save_states(dest, None, [state(k, 1) for k in KEYS])
        assert memory.read_ahead(dest) is None
    finally:
        memory.close()


def test_the_read_ahead_stops_when_the_ledger_write_fails(cached_ledger: Ledger, ledger_url: str) -> None:
    """The apply fails on its ledger write (a disk full, an I/O error: here a trigger refusing the rows): it leaves
    no read-ahead thread behind (serve's process would keep one per failed sync, each reading every half second)."""
    if cached_ledger.state._db.dialect != "sqlite":
        pytest.skip("a SQLite ledger's read-ahead (no state cache on PostgreSQL)")
    dest = f"fails-{uuid.uuid4().hex[:8]}"
    raw = sqlite3.connect(ledger_url.removeprefix("sqlite:///"))
    raw.execute("CREATE TRIGGER refuse BEFORE INSERT ON pushed_state BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    raw.commit()
    raw.close()
    before = set(threading.enumerate())
    with pytest.raises(Exception, match="disk full"):
        execute_plan(plan(dest, engine.COPY_AFTER), AcceptingDestination(dest), cached_ledger)
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert "rfmsync-state-read-ahead" not in left


def test_no_read_ahead_while_the_plans_copy_is_still_being_written(cached_ledger: Ledger,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan has just renewed the copy, still being written (a slow disk) when the apply starts: the apply
    does not wait for that write to start its calls, and reads nothing ahead (the read-back reads what changes
    after that copy)."""
    if cached_ledger.state._db.dialect != "sqlite":
        pytest.skip("a SQLite ledger's read-ahead (no state cache on PostgreSQL)")
    dest = f"writing-{uuid.uuid4().hex[:8]}"
    cached_ledger.save_states(dest, None, [state(k, 1) for k in KEYS])
    written, slow_write = threading.Event(), StateCache._write

    def slow_disk(cache: StateCache, path: Path, table) -> None:  # noqa: ANN001
        written.wait(30)
        slow_write(cache, path, table)

    monkeypatch.setattr(StateCache, "_write", slow_disk)
    assert cached_ledger.state_parts(dest).read == len(KEYS)  # the plan's read: no copy yet, one is written
    started = time.monotonic()
    try:
        ahead = cached_ledger.read_ahead(dest)
        took = time.monotonic() - started
    finally:
        written.set()
    assert ahead is None and took < 10
    assert cached_ledger.keep_copy_current(dest) == 0  # the plan's copy, once written, is current
