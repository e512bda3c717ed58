"""The outcome writer (sync.outcomes): an apply's results reach the ledger group-committed, the last state of a
contact wins within a group, and a failed write is raised to the apply instead of being lost."""

from __future__ import annotations

import threading

import pytest

from sync.model import ItemResult, PushedState
from sync.outcomes import OutcomeWriter


class RecordingLedger:
    def __init__(self, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.saved: list[list[PushedState]] = []
        self.results: list[list[ItemResult]] = []
        self.fail, self.gate = fail, gate
        self.entered = threading.Event()

    def save_states(self, destination, run_id, states):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise OSError("disk full")
        self.saved.append(list(states))
        return len(self.saved[-1])

    def record_results(self, destination, run_id, results):
        self.results.append(list(results))


def state(key: str, tag: str) -> PushedState:
    return PushedState(key, None, frozenset({tag}), {})


def test_outcomes_are_written_in_groups_and_a_later_state_of_a_contact_wins():
    gate = threading.Event()
    ledger = RecordingLedger(gate=gate)
    writer = OutcomeWriter(ledger, "mc", 1)
    writer.submit([state("a@x.io", "one")], [ItemResult("a@x.io", "upsert", True)])
    assert ledger.entered.wait(10)  # the first group is being written (held at the gate)
    for tag in ("two", "three"):  # queued while the first group is written: one group
        writer.submit([state("a@x.io", tag), state("b@x.io", tag)], [ItemResult("a@x.io", f"tag+{tag}", True)])
    gate.set()
    writer.close()
    assert [[(s.key, sorted(s.tags)) for s in group] for group in ledger.saved] == [
        [("a@x.io", ["one"])], [("a@x.io", ["three"]), ("b@x.io", ["three"])]]
    assert [len(r) for r in ledger.results] == [1, 2]
    assert writer.transactions == 2


def test_a_failed_write_reaches_the_apply():
    writer = OutcomeWriter(RecordingLedger(fail=True), "mc", 1)
    writer.submit([state("a@x.io", "one")], [])
    with pytest.raises(OSError, match="disk full"):
        writer.close()
