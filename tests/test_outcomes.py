"""The outcome writer (sync.outcomes): an apply's results reach the ledger group-committed, the last state of a
contact wins within a group, and a failed write is raised to the apply instead of being lost."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.ledger.state_rows import fields_json
from sync.model import CallResults, ContactChange, ItemResult, PushedState
from sync.outcomes import OutcomeWriter, StateFold
from sync.planning.plan import apply_results_to_state

from tests.profiles import examples


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

    def has_kept_out(self, destination):  # nothing kept out: the writer looks once, then forgets nothing
        return False

    def refused_lost(self, destination, pairs):
        return 0


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


def test_small_groups_linger_for_more_and_close_ends_the_wait():
    """Outcomes arriving within the linger are one transaction; closing writes them at once (no waiting out
    the linger); a group of min_rows results is written without lingering."""
    ledger = RecordingLedger()
    writer = OutcomeWriter(ledger, "mc", 1, linger=30, min_rows=100, linger_share=None)
    for key in ("a@x.io", "b@x.io", "c@x.io"):
        writer.submit([state(key, "one")], [ItemResult(key, "upsert", True)])
    started = time.monotonic()
    writer.close()
    assert time.monotonic() - started < 10  # not the 30 s linger
    assert [[s.key for s in group] for group in ledger.saved] == [["a@x.io", "b@x.io", "c@x.io"]]
    assert writer.transactions == 1

    full = RecordingLedger()
    writer = OutcomeWriter(full, "mc", 1, linger=30, min_rows=2, linger_share=None)
    writer.submit([state("a@x.io", "one")],
                  [ItemResult("a@x.io", "upsert", True), ItemResult("a@x.io", "tag+one", True)])
    assert full.entered.wait(10)  # written before close: a full group does not linger
    writer.close()


def test_a_young_writer_lingers_only_a_share_of_its_age():
    """A group waits at most a share of the time the writer has run: the first outcomes of an apply are written
    as they come (before close, not 30 s later), so a short apply is not left with its last groups to write."""
    ledger = RecordingLedger()
    writer = OutcomeWriter(ledger, "mc", 1, linger=30, min_rows=100, linger_share=0.1)
    writer.submit([state("a@x.io", "one")], [ItemResult("a@x.io", "upsert", True)])
    assert ledger.entered.wait(10)  # not the 30 s linger: a tenth of the writer's age when the outcome came
    writer.close()
    assert [[s.key for s in group] for group in ledger.saved] == [["a@x.io"]]


def test_a_failed_write_reaches_the_apply():
    writer = OutcomeWriter(RecordingLedger(fail=True), "mc", 1)
    writer.submit([state("a@x.io", "one")], [])
    with pytest.raises(OSError, match="disk full"):
        writer.close()


# ---------------------------------------------------------------------------------------------- the fold
KEYS = ("a@x.io", "b@x.io", "c@x.io")
TAGS = ("rfm:A", "rfm:B")


# the strategies fold_case draws from, made once: built anew in every example, hypothesis validated them again
# each time (half the fold tests' time); the same strategies drawn in the same order give the same examples
_SOME_KEYS = st.sets(st.sampled_from(KEYS))
_PUSHED_ID = {k: st.sampled_from([None, f"id-{k}"]) for k in KEYS}
_TAG_SET = st.sets(st.sampled_from(TAGS))
_PUSHED_FIELDS = st.dictionaries(st.sampled_from(["R", "F"]), st.integers(1, 5))
_SET_FIELDS = st.dictionaries(st.sampled_from(["R", "M"]), st.integers(1, 5))
_OPS = st.sampled_from(["upsert"] + [f"tag{s}{t}" for s in "+-" for t in TAGS])
_BATCHES = st.lists(st.lists(st.builds(ItemResult, st.sampled_from(KEYS), _OPS, st.booleans(), st.none(),
                                       missing=st.booleans()), max_size=6), max_size=4)


@st.composite
def fold_case(draw):
    """A pushed state, a plan's changes and a stream of item results over a few contacts and tags."""
    state = {k: PushedState(k, draw(_PUSHED_ID[k]), frozenset(draw(_TAG_SET)), draw(_PUSHED_FIELDS),
                            draw(st.booleans()))
             for k in draw(_SOME_KEYS)}
    changes = {}
    for k in draw(_SOME_KEYS):
        fields = draw(_SET_FIELDS)  # with the plan's text of them, or none (the plan was not sure of it)
        add = frozenset(draw(_TAG_SET))  # a contact of several operations is held until the last one answered
        changes[k] = ContactChange(k, k, f"cust-{k}", "seg", draw(st.booleans()), "transactional",
                                   add_tags=add, remove_tags=frozenset(draw(_TAG_SET)) - add, set_fields=fields,
                                   fields_text=fields_json(fields) if draw(st.booleans()) else None)
    return state, changes, draw(_BATCHES)


@settings(max_examples=examples(300), deadline=None)
@given(fold_case())
def test_the_state_fold_ends_where_apply_results_to_state_ends(case):
    """StateFold is the apply's cheap form of apply_results_to_state: whatever the results, once every state it
    holds is released, the same states, and exactly the contacts that changed are written."""
    state, changes, batches = case
    expected, folded = dict(state), dict(state)
    fold = StateFold(folded, changes)
    touched: set[str] = set()
    written = []
    for results in batches:
        touched |= apply_results_to_state(expected, changes, results)
        written += fold(results)
    written += fold.rest()
    assert {s.key for s in written} == touched
    assert {**state, **{s.key: s for s in written}} == expected  # the last one written is the state
    assert folded == state  # read, not changed
    # a state handed over with a text is exactly the fields that text spells (the ledger stores it as it is)
    assert all(s.fields_text == fields_json(s.fields) for s in written if s.fields_text is not None)


def by_key(s: PushedState) -> str:
    return s.key


def in_columns(results: list[ItemResult]) -> CallResults:
    """The results as a destination answers a call in columns: the successes grouped by operation."""
    groups: dict[str, list[str]] = {}
    for r in results:
        if r.ok and not r.missing and not r.error:
            groups.setdefault(r.op, []).append(r.key)
    return CallResults(list(groups.items()), [r for r in results if not (r.ok and not r.missing and not r.error)])


@settings(max_examples=examples(300), deadline=None)
@given(fold_case())
def test_results_in_columns_fold_like_the_same_results_one_by_one(case):
    """A call's results given as CallResults (the successes as key columns per operation) end in the states the
    same results give item by item, in the order the columns are read, and count the same contacts done."""
    state, changes, batches = case
    expected = dict(state)
    fold, plain = StateFold(state, changes), StateFold(state, changes)
    touched: set[str] = set()
    written = []
    for batch in batches:
        columns = in_columns(batch)
        touched |= apply_results_to_state(expected, changes, list(columns))
        now = fold(columns)
        # the same states released at the same point (in the order of a contact's first result in the call or of
        # its last one: the writer takes a call's states by key, each contact released once)
        assert sorted(now, key=by_key) == sorted(plain(list(columns)), key=by_key)
        written += now
        assert fold.done == plain.done
    written += fold.rest()
    assert {s.key for s in written} == touched
    assert {**state, **{s.key: s for s in written}} == expected


def test_call_results_read_as_the_items_they_stand_for():
    results = CallResults([("upsert", ["a@x.io", "b@x.io"]), ("tag-rfm:A", [])],
                          [ItemResult("c@x.io", "upsert", False, "refused")])
    assert len(results) == 3
    assert list(results) == [ItemResult("a@x.io", "upsert", True), ItemResult("b@x.io", "upsert", True),
                             ItemResult("c@x.io", "upsert", False, "refused")]
    assert results[1] == ItemResult("b@x.io", "upsert", True)
    assert results.failed == [ItemResult("c@x.io", "upsert", False, "refused")]


def test_the_fold_counts_a_contact_done_at_its_last_operation_or_its_first_failure():
    a = ContactChange("a@x.io", "a@x.io", "A", "seg", True, "transactional", add_tags=frozenset({"rfm:A"}))
    b = ContactChange("b@x.io", "b@x.io", "B", "seg", True, "transactional", add_tags=frozenset({"rfm:B"}))
    fold = StateFold({}, {"a@x.io": a, "b@x.io": b})
    assert fold.done == 0
    fold(CallResults([("upsert", ["a@x.io"])], [ItemResult("b@x.io", "upsert", False, "refused")]))
    assert fold.done == 1  # b: its first operation failed, the rest is not attempted
    fold(CallResults([("tag+rfm:A", ["a@x.io"])], [ItemResult("b@x.io", "tag+rfm:B", False, "skipped")]))
    assert fold.done == 2


def test_a_contact_is_written_once_its_last_operation_answered():
    a = ContactChange("a@x.io", "a@x.io", "A", "seg", True, "transactional", add_tags=frozenset({"rfm:A"}),
                      set_fields={"R": 5})
    b = ContactChange("b@x.io", "b@x.io", "B", "seg", True, "transactional", add_tags=frozenset({"rfm:B"}))
    fold = StateFold({}, {"a@x.io": a, "b@x.io": b})
    assert fold([ItemResult("a@x.io", "upsert", True), ItemResult("b@x.io", "upsert", False, "refused")]) == []
    (written,) = fold([ItemResult("a@x.io", "tag+rfm:A", True), ItemResult("b@x.io", "tag+rfm:B", False)])
    assert written == PushedState("a@x.io", "A", frozenset({"rfm:A"}), {"R": 5}, True)
    assert fold.rest() == []  # b failed throughout: nothing to write (its failures are recorded apart)
    c = ContactChange("c@x.io", "c@x.io", "C", "seg", True, "transactional", add_tags=frozenset({"rfm:C"}))
    fold = StateFold({}, {"c@x.io": c})
    assert fold([ItemResult("c@x.io", "upsert", True)]) == []  # its tag call never answered (the apply failed)
    assert fold.rest() == [PushedState("c@x.io", "C", frozenset(), {}, True)]


def test_the_fold_s_states_are_the_dataclass_s_own():
    """The fold makes its states without the frozen dataclass's __init__ (a million per apply): the same value,
    as frozen, as the constructor's."""
    from dataclasses import FrozenInstanceError

    from sync.outcomes import _pushed_state

    for exists in (True, False):  # False: not the field's default, which a missing attribute would read
        made = _pushed_state("a@x.io", None, frozenset({"rfm:A"}), {"R": 5}, exists)
        built = PushedState("a@x.io", None, frozenset({"rfm:A"}), {"R": 5}, exists)
        assert made == built and vars(made) == vars(built) and type(made) is PushedState
    with pytest.raises(FrozenInstanceError):
        made.exists = False  # type: ignore[misc]


def test_a_first_outcome_in_columns_starts_from_the_pushed_state():
    """A contact's first outcome given in columns (a call that did everything: the usual upsert of a full sync)
    makes its slot from the pushed state at once: fields merged, tags and customer id carried, held until its
    last operation answered (or the apply ends)."""
    pushed = PushedState("a@x.io", "old-id", frozenset({"rfm:B"}), {"F": 1, "R": 1}, True)
    a = ContactChange("a@x.io", "a@x.io", "A", "seg", False, None, add_tags=frozenset({"rfm:A"}),
                      remove_tags=frozenset({"rfm:B"}), set_fields={"R": 2})
    fold = StateFold({"a@x.io": pushed}, {"a@x.io": a})
    assert fold(CallResults([("upsert", ["a@x.io"])])) == []
    assert fold(CallResults([("tag+rfm:A", ["a@x.io"])])) == []  # its removal has not answered yet
    assert fold.rest() == [PushedState("a@x.io", "A", frozenset({"rfm:A", "rfm:B"}), {"F": 1, "R": 2}, True)]
    assert fold.rest() == []  # released once
    fresh = StateFold({}, {"a@x.io": a})
    (written,) = fresh(CallResults([("tag-rfm:B", ["a@x.io"]), ("tag+rfm:A", ["a@x.io"]), ("upsert", ["a@x.io"])]))
    assert written == PushedState("a@x.io", "A", frozenset({"rfm:A"}), {"R": 2}, True)
    assert written.fields is a.set_fields and fresh.done == 1 and fresh.rest() == []


def test_a_contact_without_operations_is_done_from_the_start():
    def change(key: str, create: bool = False, fields=None, add=(), remove=()) -> ContactChange:
        return ContactChange(key, key, key.upper(), "seg", create, "transactional", add_tags=frozenset(add),
                             remove_tags=frozenset(remove), set_fields=fields or {})

    plan = [change("a@x.io"), change("b@x.io", remove={"rfm:A"}), change("c@x.io", add={"rfm:A"}),
            change("d@x.io", fields={"R": 1}), change("e@x.io", create=True)]
    assert StateFold({}, {c.key: c for c in plan}).done == 1  # a alone: nothing to send


def test_a_fold_interrupted_midway_still_gives_the_states_it_holds():
    """An error or a Ctrl-C inside a call's fold: the contacts it took in are counted (done, held), so the apply's
    final :meth:`StateFold.rest` writes them."""

    class Interrupting(dict):  # the pushed state, read for each contact's first outcome: Ctrl-C lands at c@x.io
        def get(self, key, default=None):
            if key == "c@x.io":
                raise KeyboardInterrupt
            return dict.get(self, key, default)

    tagged = {k: ContactChange(k, k, k[0].upper(), "seg", True, "transactional", add_tags=frozenset({"rfm:A"}))
              for k in ("a@x.io", "c@x.io")}
    only_fields = ContactChange("b@x.io", "b@x.io", "B", "seg", False, None, set_fields={"R": 1})
    fold = StateFold(Interrupting(), {**tagged, "b@x.io": only_fields})
    with pytest.raises(KeyboardInterrupt):
        fold(CallResults([("upsert", ["a@x.io", "b@x.io", "c@x.io"])]))
    assert sorted(fold.rest(), key=lambda s: s.key) == [PushedState("a@x.io", "A", frozenset(), {}, True),
                                                        PushedState("b@x.io", "B", frozenset(), {"R": 1}, True)]
    assert fold.done == 1  # b: its one operation answered
