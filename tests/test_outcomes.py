"""The outcome writer (sync.outcomes): an apply's results reach the ledger group-committed, the last state of a
contact wins within a group, and a failed write is raised to the apply instead of being lost."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.model import ContactChange, ItemResult, PushedState
from sync.outcomes import OutcomeWriter, StateFold
from sync.planning.plan import apply_results_to_state


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


# ---------------------------------------------------------------------------------------------- the fold
KEYS = ("a@x.io", "b@x.io", "c@x.io")
TAGS = ("rfm:A", "rfm:B")


@st.composite
def fold_case(draw):
    """A pushed state, a plan's changes and a stream of item results over a few contacts and tags."""
    state = {k: PushedState(k, draw(st.sampled_from([None, f"id-{k}"])),
                            frozenset(draw(st.sets(st.sampled_from(TAGS)))),
                            draw(st.dictionaries(st.sampled_from(["R", "F"]), st.integers(1, 5))), draw(st.booleans()))
             for k in draw(st.sets(st.sampled_from(KEYS)))}
    changes = {k: ContactChange(k, k, f"cust-{k}", "seg", draw(st.booleans()), "transactional",
                                set_fields=draw(st.dictionaries(st.sampled_from(["R", "M"]), st.integers(1, 5))))
               for k in draw(st.sets(st.sampled_from(KEYS)))}
    ops = st.sampled_from(["upsert"] + [f"tag{s}{t}" for s in "+-" for t in TAGS])
    batches = draw(st.lists(st.lists(st.builds(ItemResult, st.sampled_from(KEYS), ops, st.booleans(),
                                               st.none(), missing=st.booleans()), max_size=6), max_size=4))
    return state, changes, batches


@settings(max_examples=300, deadline=None)
@given(fold_case())
def test_the_state_fold_gives_the_states_apply_results_to_state_gives(case):
    """StateFold is the apply's cheap form of apply_results_to_state: batch after batch, the same state and
    the same contacts touched."""
    state, changes, batches = case
    expected, folded = dict(state), dict(state)
    fold = StateFold(folded, changes)
    for results in batches:
        touched = apply_results_to_state(expected, changes, results)
        out = fold(results)
        assert {s.key for s in out} == touched
        assert all(folded[s.key] is s for s in out)
        assert folded == expected
