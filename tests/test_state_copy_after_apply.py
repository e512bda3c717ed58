"""A big apply leaves the destination's cached copy of the pushed state current (sync.engine.COPY_AFTER,
PushedStates.keep_copy_current), so the plan after it reads only what changed since, not every row that apply
wrote; a small apply (a webhook's resync) leaves the copy alone. The copy stays exactly the ledger's state."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from sync import engine
from sync.engine import execute_plan
from sync.ledger import Ledger
from sync.model import ContactChange, ItemResult
from sync.planning.plan import Plan

try:
    from tests.ledger_fixtures import Clock, clock, ledger_url, open_ledger  # noqa: F401
    from tests.test_ledger_statecache import KEYS, as_states, read_both, state
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import Clock, clock, ledger_url, open_ledger  # type: ignore # noqa: F401
    from test_ledger_statecache import KEYS, as_states, read_both, state  # type: ignore


class AcceptingDestination:
    """A destination (the Protocol, no ESP: what is tested is the engine and the ledger) that takes every change."""

    reads_existing_members = False
    reconciles = False

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self) -> str:
        return "ok"

    def prepare(self, managed_tags, fields, creating=None) -> None:
        pass

    def apply(self, changes, on_results) -> None:
        on_results([ItemResult(c.key, "upsert", True) for c in changes])

    def read_managed(self, managed_tags):
        return {}

    def existing_members(self, keys=None):
        return None


def plan(destination: str, n: int, value: str = "A") -> Plan:
    changes = tuple(ContactChange(f"c{i}@example.com", f"c{i}@example.com", f"C{i}", value, True, "subscribed",
                                  set_fields={"SEGMENT": value}) for i in range(n))
    return Plan(destination, "mailchimp", changes, (), (), {"SEGMENT": "segment"}, 0)


@pytest.fixture
def cached_ledger(open_ledger: Callable[..., Ledger], tmp_path: Path) -> Ledger:
    return open_ledger(state_cache=tmp_path / "cache")


def test_after_a_big_apply_the_next_read_takes_no_row_from_the_ledger(cached_ledger: Ledger) -> None:
    dest = f"big-{uuid.uuid4().hex[:8]}"
    assert execute_plan(plan(dest, engine.COPY_AFTER), AcceptingDestination(dest), cached_ledger).status == \
        "succeeded"
    parts = cached_ledger.state_parts(dest)
    assert parts.read == 0 and parts.since == cached_ledger.state_revision(dest)
    through_cache, full = read_both(cached_ledger, dest)
    assert len(full) == engine.COPY_AFTER and through_cache == full
    # a small apply after it (a webhook's resync) reads nothing back: the next plan reads its few rows
    small = plan(dest, 10, value="B")
    execute_plan(small, AcceptingDestination(dest), cached_ledger)
    parts = cached_ledger.state_parts(dest)
    assert parts.read == 10 and as_states(parts.merged()) == read_both(cached_ledger, dest)[1]


def test_a_small_apply_leaves_no_copy_behind(cached_ledger: Ledger) -> None:
    dest = f"small-{uuid.uuid4().hex[:8]}"
    execute_plan(plan(dest, 10), AcceptingDestination(dest), cached_ledger)
    parts = cached_ledger.state_parts(dest)
    assert parts.read == 10 and parts.since is None  # no copy was kept: the plan read it all


def test_keep_copy_current_renews_only_what_the_next_plan_would_and_stays_exact(cached_ledger: Ledger) -> None:
    dest = f"keep-{uuid.uuid4().hex[:8]}"
    cached_ledger.save_states(dest, None, [state(k, 1) for k in KEYS])
    assert cached_ledger.keep_copy_current(dest) == len(KEYS)  # no copy yet: read in full and kept
    assert cached_ledger.keep_copy_current(dest) == 0  # current already
    cached_ledger.save_states(dest, None, [state(KEYS[0], 7)])  # 1 of 26: under a tenth, left to the plan
    assert cached_ledger.keep_copy_current(dest) == 0
    assert cached_ledger.state_parts(dest).read == 1
    cached_ledger.save_states(dest, None, [state(k, 8) for k in KEYS[:3]])  # 3 more: a tenth reached
    assert cached_ledger.keep_copy_current(dest) == 3
    assert cached_ledger.state_parts(dest).read == 0
    cached_ledger.forget(dest, KEYS[:4])
    cached_ledger.save_states(dest, None, [state(f"new{i}@x.io", 9) for i in range(4)])  # same count, 4 forgotten
    assert cached_ledger.keep_copy_current(dest) == len(KEYS)  # the forgets are caught: read in full again
    through_cache, full = read_both(cached_ledger, dest)
    assert through_cache == full and not set(KEYS[:4]) & set(full)


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """The SQL every ledger sends while the test runs (lower-cased)."""
    sent: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        sent.append(statement.lower())

    event.listen(Engine, "before_cursor_execute", note)
    yield sent
    event.remove(Engine, "before_cursor_execute", note)


def _counts_state(sent: list[str]) -> list[str]:
    return [s for s in sent if "pushed_state" in s and "count(" in s]


def test_keep_copy_current_counts_nothing_when_its_own_writes_since_the_copy_are_under_a_tenth(
        cached_ledger: Ledger, statements: list[str]) -> None:
    """The rows this ledger wrote since the copy bound what a count would find: under a tenth of the copy, the
    answer (nothing to renew) is known without scanning the destination's rows."""
    dest = f"bound-{uuid.uuid4().hex[:8]}"
    cached_ledger.save_states(dest, None, [state(k, 1) for k in KEYS])
    assert cached_ledger.keep_copy_current(dest) == len(KEYS)
    cached_ledger.save_states(dest, None, [state(KEYS[0], 2)])
    cached_ledger.forget(dest, ["nobody@x.io"])  # deletes nothing: no revision
    statements.clear()
    assert cached_ledger.keep_copy_current(dest) == 0
    assert _counts_state(statements) == []
    assert cached_ledger.state_parts(dest).read == 1  # left to the plan, as before


def test_keep_copy_current_counts_when_another_ledger_wrote_since_the_copy(
        cached_ledger: Ledger, open_ledger: Callable[..., Ledger], tmp_path: Path, statements: list[str]) -> None:
    """Rows written by another process (here another Ledger on the same database and cache) are not known to
    this one: it counts, and renews the copy when they reach a tenth."""
    dest = f"other-{uuid.uuid4().hex[:8]}"
    other = open_ledger(state_cache=tmp_path / "cache")
    cached_ledger.save_states(dest, None, [state(k, 1) for k in KEYS])
    assert cached_ledger.keep_copy_current(dest) == len(KEYS)
    other.save_states(dest, None, [state(k, 3) for k in KEYS[1:4]])  # 3 rows this ledger did not write
    cached_ledger.save_states(dest, None, [state(KEYS[0], 2)])  # 1 that it did: 4 of 26, a tenth
    statements.clear()
    assert cached_ledger.keep_copy_current(dest) == 4
    assert _counts_state(statements)
    assert cached_ledger.state_parts(dest).read == 0
    through_cache, full = read_both(cached_ledger, dest)
    assert through_cache == full


def test_a_cache_folder_that_cannot_be_written_costs_a_full_read_not_the_sync(
        open_ledger: Callable[..., Ledger], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The cached copy is an optimisation: a folder that cannot be written (here a file stands where it should
    be) leaves the apply succeeded and recorded, says so once, and the next plan reads the state in full."""
    blocked = tmp_path / "cache"
    blocked.write_text("not a folder")
    led = open_ledger(state_cache=blocked)
    dest = f"blocked-{uuid.uuid4().hex[:8]}"
    with caplog.at_level("WARNING"):
        report = execute_plan(plan(dest, engine.COPY_AFTER), AcceptingDestination(dest), led)
        led.close()  # waits for the copy's write: its failure is logged by then
    assert report.status == "succeeded" and report.counts["ok"] == engine.COPY_AFTER
    assert any("could not keep the state cache" in r.getMessage() for r in caplog.records)
    assert blocked.read_text() == "not a folder"
    again = open_ledger(state_cache=blocked)
    parts = again.state_parts(dest)
    assert parts.since is None and parts.read == engine.COPY_AFTER  # read in full, and complete
    assert as_states(parts.merged()) == read_both(again, dest)[1]
