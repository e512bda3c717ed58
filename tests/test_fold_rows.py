"""The apply's states handed to the ledger as its own rows (sync.outcomes.StateFold.rows, Ledger.save_rows): the
fold gives, for the same results, the rows ``save_states`` writes for the states it gives, and ``save_rows`` stores
them byte for byte as ``save_states`` does, on each backend."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from sync.ledger import Ledger
from sync.ledger.state_rows import fields_json
from sync.model import ContactChange, ItemResult, PushedState
from sync.outcomes import StateFold

from tests.profiles import examples
from tests.test_outcomes import fold_case, in_columns

try:
    from tests import ledger_fixtures
except ImportError:  # tests/ itself on sys.path
    import ledger_fixtures  # type: ignore[no-redef]

clock, ledger_url, open_ledger, ledger = (ledger_fixtures.clock, ledger_fixtures.ledger_url,
                                          ledger_fixtures.open_ledger, ledger_fixtures.ledger)


def stored(ledger: Ledger, destination: str) -> dict[str, tuple]:
    """Each row as the database holds it (the tags' and fields' texts as stored), by key."""
    table = ledger.state_table(destination)
    columns = [table.column(c).to_pylist() for c in ("key", "customer_id", "tags", "fields", "in_destination")]
    return {row[0]: row for row in zip(*columns)}


STATES = [
    PushedState("a@x.io", "A", frozenset({"rfm: Champions", "vip"}), {"R": 5, "M": 1.5}, True,
                fields_json({"R": 5, "M": 1.5})),  # with the plan's text
    PushedState("b@x.io", None, frozenset({"рфм: Спящие", "é"}), {"Сегмент": "Спящие", "z": None}, True),  # none
    PushedState("c@x.io", "C", frozenset(), {}, False),  # deleted in the ESP
    PushedState("a@x.io", "A2", frozenset({"rfm: Loyal"}), {"R": 4}, True),  # a later state of a: it wins
]


def as_rows(states: list[PushedState]) -> dict[str, tuple]:
    from sync.ledger.state_rows import tags_json

    return {s.key: (s.key, s.customer_id, tags_json(s.tags), s.fields_text or dict(s.fields), 1 if s.exists else 0)
            for s in states}


def test_save_rows_stores_what_save_states_stores(ledger: Ledger):
    """The same contacts saved as states to one destination and as rows to another: the same stored texts
    (non-ASCII tags escaped, fields sorted, UTF-8), the same in_destination, the same count and revision bump;
    the rows given are not changed."""
    rows = as_rows(STATES)
    given_rows = dict(rows)
    assert ledger.save_states("states", None, STATES) == 3
    revision = ledger.state_revision("rows")
    assert ledger.save_rows("rows", None, rows) == 3
    assert ledger.state_revision("rows") == revision + 1
    assert rows == given_rows  # the mapping encoded for the write, not in the caller's dict
    assert stored(ledger, "rows") == stored(ledger, "states")
    assert ledger.load_state("rows") == ledger.load_state("states") == {s.key: s for s in STATES[1:]}
    assert ledger.save_rows("rows", None, {}) == 0


def test_save_rows_refuses_what_save_states_refuses(ledger: Ledger):
    with pytest.raises(ValueError, match="has an empty key"):
        ledger.save_rows("rows", None, {"": ("", None, "[]", "{}", 1)})
    with pytest.raises(ValueError, match="cannot store fields"):
        ledger.save_rows("rows", None, {"a@x.io": ("a@x.io", None, "[]", {"R": object()}, 1)})
    with pytest.raises(ValueError, match="^save_states: run 999 does not exist in the ledger$"):
        ledger.save_rows("rows", 999, as_rows(STATES))
    assert ledger.load_state("rows") == {}


@settings(max_examples=examples(300), deadline=None)
@given(fold_case())
def test_the_fold_s_rows_are_the_rows_of_its_states(case):
    """Whatever the results (one by one or in columns), ``rows`` releases the same contacts at the same point as
    the fold's states, each as the row the ledger writes for that state, and ``rest_rows`` the ones held."""
    state, changes, batches = case
    for columns in (False, True):
        states, rows = StateFold(state, changes), StateFold(state, changes)
        for batch in batches:
            results = in_columns(batch) if columns else batch
            assert rows.rows(results) == as_rows(states(results))
            assert rows.done == states.done
        assert rows.rest_rows() == as_rows(states.rest())
        assert rows.rest_rows() == {}  # released once


def test_a_held_contact_s_row_at_the_apply_s_end():
    c = ContactChange("c@x.io", "c@x.io", "C", "seg", True, "transactional", add_tags=frozenset({"rfm:C"}),
                      set_fields={"R": 1}, fields_text='{"R":1}')
    fold = StateFold({}, {"c@x.io": c})
    assert fold.rows([ItemResult("c@x.io", "upsert", True)]) == {}  # its tag call never answered
    assert fold.rest_rows() == {"c@x.io": ("c@x.io", "C", "[]", '{"R":1}', 1)}


def test_a_closed_fold_lets_go_of_its_contacts():
    """``close`` (the apply's end, its rest written): the fold's per-contact objects are freed then, while an apply
    still holds the cyclic collector off (sync.gc_pause), so the collector does not walk them when it resumes;
    its count of contacts done stays."""
    import gc

    changes = {f"c{i}@x.io": ContactChange(f"c{i}@x.io", f"c{i}@x.io", f"C{i}", "seg", True, "subscribed",
                                           add_tags=frozenset({"rfm:C"}), set_fields={"R": i}) for i in range(2000)}
    fold = StateFold({}, changes)
    # every upsert answered, half the tag adds: 1 000 rows released, 1 000 contacts held
    assert len(fold.rows(in_columns([ItemResult(k, "upsert", True) for k in changes]))) == 0
    assert len(fold.rows(in_columns([ItemResult(k, "tag+rfm:C", True) for k in list(changes)[:1000]]))) == 1000
    done = fold.done
    tracked = len(gc.get_objects())
    fold.close()
    assert len(gc.get_objects()) <= tracked - 2000  # a slot each contact, gone
    assert fold.done == done == 1000
    assert fold.rest_rows() == {}  # the held ones too: the caller writes its rest first
