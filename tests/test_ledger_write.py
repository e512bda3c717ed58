"""The ledger's bulk write of pushed states (sync.ledger.state.save_states): each row's fields are stored as the
one canonical JSON text (keys sorted, no spaces, what the planner compares), whichever way the rows travel to
the database, and a value JSON cannot hold is named."""

from __future__ import annotations

import json
import math

import pytest

from sync.ledger import Ledger
from sync.model import PushedState

try:
    from tests import ledger_fixtures
except ImportError:  # tests/ itself on sys.path
    import ledger_fixtures  # type: ignore[no-redef]

# the ledger on each backend (SQLite; PostgreSQL when RFMSYNC_TEST_PG_URL is set)
clock, ledger_url, open_ledger, ledger = (ledger_fixtures.clock, ledger_fixtures.ledger_url,
                                          ledger_fixtures.open_ledger, ledger_fixtures.ledger)

DEST = "write"
ODD_FIELDS = [
    {"b": 1.5, "a": 1e-07, "C": 1e20, "d": -0.0, "e": 12345678901234567890, "f": 0.1, "g": 1e300, "h": -5},
    {"s": 'é\u2028"\\\n\t\x01 😀', "e": "", "n": None, "t": True, "f": False, "é": 1, "Z": 3, "z": 2},
    {},
    {"x": 2.0, "y": "2.0"},
]


def canonical(fields) -> str:
    """The ledger's text of a contact's fields: sorted keys, compact, UTF-8."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stored_fields(ledger: Ledger) -> dict[str, str]:
    table = ledger.state_table(DEST)
    return dict(zip(table.column("key").to_pylist(), table.column("fields").to_pylist()))


def test_fields_are_stored_as_their_canonical_text(ledger: Ledger) -> None:
    states = [PushedState(f"k{i}@x.io", f"C{i}", frozenset({"t"}), f) for i, f in enumerate(ODD_FIELDS)]
    ledger.save_states(DEST, None, states)
    assert stored_fields(ledger) == {s.key: canonical(s.fields) for s in states}
    assert ledger.load_state(DEST) == {s.key: s for s in states}


def test_a_lone_surrogate_is_stored_escaped_and_read_back_as_it_was(ledger: Ledger) -> None:
    """A Python string may hold a lone surrogate (a CRM's JSON with a broken ``\\ud83d``); it has no UTF-8, so
    those fields are written with ``\\u`` escapes, in the same group as UTF-8 ones, and read back unchanged."""
    states = [PushedState("a@x.io", "A", frozenset(), {"s": "Обувь \ud83d", "n": 1}),
              PushedState("b@x.io", "B", frozenset(), {"s": "Обувь"})]
    ledger.save_states(DEST, None, states)
    assert stored_fields(ledger) == {"a@x.io": '{"n":1,"s":"\\u041e\\u0431\\u0443\\u0432\\u044c \\ud83d"}',
                                     "b@x.io": '{"s":"Обувь"}'}
    assert ledger.load_state(DEST) == {s.key: s for s in states}


def test_a_large_group_is_stored_the_same_whatever_the_statements_it_is_written_in(ledger: Ledger) -> None:
    """A group of thousands of rows is written a block of rows at a time (SQLite: one multi-row ``VALUES``
    statement each, the interpreter lock given up between them): every row is stored, as its canonical text,
    NaN rows included."""
    states = [PushedState(f"k{i:05d}@x.io", f"C{i}", frozenset({"t"}), ODD_FIELDS[i % len(ODD_FIELDS)])
              for i in range(2_600)]
    ledger.save_states(DEST, None, states)
    assert stored_fields(ledger) == {s.key: canonical(s.fields) for s in states}
    nan = [PushedState(f"n{i:05d}@x.io", None, frozenset(), {"m": float("nan") if i == 1_500 else i})
           for i in range(2_100)]
    ledger.save_states(DEST, None, nan)
    stored = stored_fields(ledger)
    assert stored["n01500@x.io"] == '{"m":NaN}' and stored["n02099@x.io"] == '{"m":2099}'
    assert len(stored) == 4_700


def test_a_save_writes_new_rows_same_customer_rows_and_moved_customer_rows_alike(ledger: Ledger) -> None:
    """Rows whose customer is unchanged are updated without touching the customer index, the others in full:
    every row ends as saved, stamped with the save's revision, and found by its (new) customer."""
    first = [PushedState(f"k{i}@x.io", f"C{i}" if i % 3 else None, frozenset({"t"}), {"n": i}) for i in range(9)]
    ledger.save_states(DEST, None, first)
    second = [PushedState(s.key, "MOVED" if i in (1, 3, 6) else s.customer_id, frozenset({"u"}), {"n": -i}, i != 4)
              for i, s in enumerate(first)] + [PushedState("new@x.io", None, frozenset(), {})]
    ledger.save_states(DEST, None, second)
    assert ledger.load_state(DEST) == {s.key: s for s in second}
    assert set(ledger.load_state_of(DEST, customer_ids=["MOVED"])) == {"k1@x.io", "k3@x.io", "k6@x.io"}
    assert set(ledger.load_state_of(DEST, customer_ids=["C1", "C3"])) == set()
    table = ledger.state_table(DEST, cached=False)
    assert set(table.column("key").to_pylist()) == {s.key for s in second}


def test_a_nan_field_is_stored_as_python_writes_it(ledger: Ledger) -> None:
    """JSON has no NaN, but Python writes one: the ledger stores Python's text."""
    states = [PushedState("a@x.io", "C1", frozenset(), {"m": float("nan"), "b": 1}),
              PushedState("b@x.io", "C2", frozenset(), {"m": 2})]
    ledger.save_states(DEST, None, states)
    assert stored_fields(ledger) == {"a@x.io": '{"b":1,"m":NaN}', "b@x.io": '{"m":2}'}
    assert math.isnan(ledger.load_state(DEST)["a@x.io"].fields["m"])


def test_a_field_json_cannot_hold_is_named_and_nothing_is_written(ledger: Ledger) -> None:
    states = [PushedState("a@x.io", "C1", frozenset(), {"m": 1}),
              PushedState("b@x.io", "C2", frozenset(), {"when": object()})]
    with pytest.raises(ValueError, match=r"pushed state for 'b@x.io': cannot store fields: object value"):
        ledger.save_states(DEST, None, states)
    assert ledger.load_state(DEST) == {}


def test_rows_of_every_tag_set_and_presence_are_stored_as_they_were(ledger: Ledger, ledger_url: str) -> None:
    """Rows of different tag sets and presence, interleaved in key order (SQLite writes each (tags, presence)
    group with one statement): each row's own columns, stored as the same texts and types as any other row."""
    tag_sets = [frozenset(), frozenset({"rfm:A"}), frozenset({"rfm:B", "rfm:A"}), frozenset({'q"é'})]
    states = [PushedState(f"k{i:03d}@x.io", f"C{i}" if i % 4 else None, tag_sets[i % 4], {"n": i, "s": f"v{i}"},
                          bool(i % 3)) for i in range(60)]
    ledger.save_states(DEST, None, states)
    assert ledger.load_state(DEST) == {s.key: s for s in states}
    table = ledger.state_table(DEST, cached=False)
    stored = {k: (t, p) for k, t, p in zip(*(table.column(c).to_pylist() for c in ("key", "tags", "in_destination")))}
    assert stored == {s.key: (json.dumps(sorted(s.tags), separators=(",", ":")), s.exists) for s in states}
    if ledger_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(ledger_url.removeprefix("sqlite:///")) as raw:
            kinds = set(raw.execute("SELECT typeof(key), typeof(customer_id), typeof(tags), typeof(fields),"
                                    " typeof(in_destination), in_destination FROM pushed_state"))
        assert kinds == {("text", t, "text", "text", "integer", p) for t in ("text", "null") for p in (0, 1)}
