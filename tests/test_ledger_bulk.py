"""The ledger's bulk read (sync.ledger.bulk): the columnar planner's view of the pushed state is exactly what
``load_state`` reads, whatever the keys, customer ids and values hold, across pages."""

from __future__ import annotations

import json

import pytest

from sync.ledger import Ledger
from sync.model import PushedState

try:
    from tests.ledger_fixtures import Clock, clock, ledger, ledger_url, open_ledger  # noqa: F401
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import Clock, clock, ledger, ledger_url, open_ledger  # type: ignore # noqa: F401

DEST = "bulk"
STATES = [
    PushedState("a@x.io", "c1", frozenset({"rfm:b", "rfm:a"}), {"Q": 'say "hi",\nok\x1f\ttab', "N": 1.5}),
    PushedState("b@x.io", None, frozenset(), {}, exists=False),
    PushedState("c@x.io", "", frozenset({"x"}), {"E": "", "Z": None, "B": True}),
    PushedState("d@x.io", 'id "with"\nnewline\x1fand\tunit;,', frozenset({"ünï \"q\""}), {"U": "ünï"}),
    PushedState("e@x.io", "null", frozenset({"x"}), {"I": 12345678901234567}),
]


def as_states(table) -> dict[str, PushedState]:
    return {r["key"]: PushedState(r["key"], r["customer_id"], frozenset(json.loads(r["tags"])),
                                  json.loads(r["fields"]), r["in_destination"]) for r in table.to_pylist()}


@pytest.mark.parametrize("page", [1, 2, 5, 200_000])
def test_the_bulk_read_is_load_state_on_every_page_size(ledger: Ledger, page: int) -> None:
    ledger.save_states(DEST, None, STATES)
    ledger.save_states("another", None, [PushedState("a@x.io", "other", frozenset({"y"}), {"Q": 1})])
    table = ledger.state_table(DEST, page=page)
    assert table.column_names == ["key", "customer_id", "tags", "fields", "in_destination"]
    assert as_states(table) == ledger.load_state(DEST) == {s.key: s for s in STATES}
    assert table.num_rows == len(STATES)


def test_a_key_with_a_control_character_is_read_row_by_row(ledger: Ledger) -> None:
    """A key holding a line break or the unit separator cannot go through the concatenated page: that page is
    read again row by row, and nothing is lost or split."""
    odd = [PushedState("line\nbreak@x.io", "1", frozenset({"t"}), {"F": 1}),
           PushedState("unit\x1fsep@x.io", "2", frozenset(), {}),
           PushedState("cr\rreturn@x.io", "3", frozenset({"t"}), {}),
           PushedState("\nleading@x.io", "4", frozenset(), {}), PushedState("trailing@x.io\n", "5", frozenset(), {})]
    ledger.save_states(DEST, None, STATES + odd)
    for page in (2, 100):
        assert as_states(ledger.state_table(DEST, page=page)) == {s.key: s for s in STATES + odd}


def test_an_empty_destination_reads_an_empty_table(ledger: Ledger) -> None:
    table = ledger.state_table("nobody")
    assert table.num_rows == 0
    assert table.column_names == ["key", "customer_id", "tags", "fields", "in_destination"]


def test_plain_customer_ids_read_back_exactly(ledger: Ledger) -> None:
    """Without any escaped character in a page the JSON literals are unquoted directly: NULL, "", "null" and
    non-ASCII ids stay what they were."""
    plain = [PushedState("a@x.io", None, frozenset(), {}), PushedState("b@x.io", "", frozenset(), {}),
             PushedState("c@x.io", "null", frozenset(), {}), PushedState("d@x.io", "Ünï 42", frozenset(), {})]
    ledger.save_states(DEST, None, plain)
    assert as_states(ledger.state_table(DEST)) == {s.key: s for s in plain}


def test_a_read_across_many_pages_gives_every_row_once(ledger: Ledger) -> None:
    """Enough rows for many pages (SQLite: of rowids; PostgreSQL: of heap blocks), another destination's rows
    between them: each of the destination's rows once, the other's never."""
    many = [PushedState(f"k{i:05d}@x.io", f"c{i}", frozenset({"t"}), {"N": i, "S": "x" * (i % 90)})
            for i in range(3000)]
    for part in range(0, 3000, 500):
        ledger.save_states(DEST, None, many[part:part + 500])
        ledger.save_states("another", None, [PushedState(f"o{part}@x.io", "o", frozenset(), {"Q": part})])
    for page in (50, 1_000):
        table = ledger.state_table(DEST, page=page, cached=False)
        assert table.num_rows == len(many)
        assert as_states(table) == {s.key: s for s in many}
