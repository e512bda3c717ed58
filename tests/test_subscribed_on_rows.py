"""Schema 16: whom rfmsync created ``subscribed`` is recorded on the contact's own ``pushed_state`` row, written by
the state save (``subscribed``), and in the ``subscribed_by_us`` table only for a record without a row of his
(:mod:`sync.ledger.subscribed`). The record keeps the table's life: it outlives his state forgotten, goes to a
renamed destination and to a retire-only destination's heir, and a create under another status forgets it; a
ledger written before schema 16 keeps its records. SQLite and PostgreSQL (``ledger_url``)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, text

from sync.ledger import Ledger
from sync.ledger.subscribed import BY_KEY_LIMIT
from sync.model import ContactChange, ItemResult, PushedState
from sync.outcomes import OutcomeWriter, StateFold
from sync.planning.target import TARGET_CURSOR
from tests import ledger_fixtures

ledger_url = ledger_fixtures.ledger_url  # the fixture: SQLite, and PostgreSQL when RFMSYNC_TEST_PG_URL is set


def _states(*keys: str) -> list[PushedState]:
    return [PushedState(k, k.split("@")[0], frozenset({"Churn"}), {"n": 1}, True) for k in keys]


def _save(ledger: Ledger, dest: str, keys: list[str], yes: list[str] = (), gone: list[str] = ()) -> None:
    ledger.save_states(dest, ledger.start_run("sync", dest), _states(*keys), subscribed=(list(yes), list(gone)))


def _on_rows(url: str, dest: str) -> set[str]:
    """The keys whose own row holds the record (what the table does not hold)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT key FROM pushed_state WHERE destination = :d AND subscribed "
                                         "IS NOT NULL"), {"d": dest}).scalars())
    finally:
        engine.dispose()


def _marked(url: str, dest: str) -> bool:
    """Whether the table holds the destination's mark (its rows may hold records: sync.ledger.subscribed.MARK)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text("SELECT count(*) FROM subscribed_by_us WHERE destination = :d AND key = ''"),
                                     {"d": dest}).scalar())
    finally:
        engine.dispose()


def test_an_applys_records_are_on_the_rows_it_saves_and_a_create_under_another_status_forgets_them(ledger_url):
    with Ledger.connect(ledger_url) as ledger:
        _save(ledger, "mc", ["p@x.org"])  # a destination whose saves recorded nobody: nothing to read
        assert not ledger.has_subscribed("mc") and ledger.subscribed_keys("mc") == []
        _save(ledger, "mc", ["a@x.org", "b@x.org", "c@x.org"], yes=["a@x.org", "b@x.org"])
        assert _on_rows(ledger_url, "mc") == {"a@x.org", "b@x.org"}  # not a table row each
        assert ledger.has_subscribed("mc")
        assert ledger.subscribed_among("mc", ["a@x.org", "b@x.org", "c@x.org", "p@x.org"]) == {"a@x.org", "b@x.org"}
        # saved again (his tags moved): the record stays, with its first time; a create that is not in this save's
        # rows goes to the table
        _save(ledger, "mc", ["a@x.org"], yes=["d@x.org"])
        assert sorted(ledger.subscribed_keys("mc")) == ["a@x.org", "b@x.org", "d@x.org"]
        # the ESP lost him and rfmsync created him again transactional: forgotten, on his row and in the table
        _save(ledger, "mc", ["b@x.org"], gone=["b@x.org", "d@x.org"])
        assert sorted(ledger.subscribed_keys("mc")) == ["a@x.org"]
        assert ledger.forget_subscribed("mc", ["a@x.org", "zz@x.org"]) == 1
        assert ledger.subscribed_keys("mc") == []


def test_a_record_on_a_row_outlives_his_state_forgotten(ledger_url):
    """``PushedStates.forget`` (the ledger's API; an apply keeps a missing contact's row, ``in_destination`` false)
    deletes his pushed state: rfmsync subscribed him, and may still have (an archived member comes back
    subscribed): his record stays, as the table's did before schema 16. Fails without the copy to the table in
    ``forget``."""
    with Ledger.connect(ledger_url) as ledger:
        _save(ledger, "mc", ["a@x.org", "b@x.org"], yes=["a@x.org", "b@x.org"])
        assert ledger.forget("mc", ["a@x.org"]) == 1
        assert "a@x.org" not in ledger.load_state("mc")
        assert ledger.subscribed_among("mc", ["a@x.org", "b@x.org"]) == {"a@x.org", "b@x.org"}


def test_records_on_rows_go_to_a_renamed_destination_and_to_a_retire_only_ones_heir(ledger_url):
    """take_over and forget_destination(heir=...) moved the table's rows only: the records on the old name's rows
    would go with them. Fails without ``rows_to_table`` in moves.py."""
    with Ledger.connect(ledger_url) as ledger:
        _save(ledger, "old", ["a@x.org", "b@x.org", "c@x.org"], yes=["a@x.org", "b@x.org"])
        _save(ledger, "new", ["b@x.org"])  # a contact both hold: new keeps its row, and takes the record
        ledger.take_over("old", "new", (TARGET_CURSOR, "old"))
        assert not ledger.has_subscribed("old")
        assert sorted(ledger.subscribed_keys("new")) == ["a@x.org", "b@x.org"]
        assert ledger.subscribed_among("new", ["a@x.org", "b@x.org", "c@x.org"]) == {"a@x.org", "b@x.org"}
        _save(ledger, "retired", ["e@x.org", "f@x.org"], yes=["e@x.org"])
        _save(ledger, "owner", ["f@x.org"], yes=["f@x.org"])
        ledger.forget_destination("retired", (TARGET_CURSOR, "retired"), untagged=False, heir="owner")
        assert not ledger.has_subscribed("retired")
        assert sorted(ledger.subscribed_keys("owner")) == ["e@x.org", "f@x.org"]
        # a move to another audience forgets them all, on rows and in the table
        ledger.move_state("owner", (TARGET_CURSOR, "owner"), "mailchimp:aud2")
        assert not ledger.has_subscribed("owner") and ledger.subscribed_keys("owner") == []


def test_many_keys_asked_read_the_records_of_rows_and_table_at_once(ledger_url):
    keys = [f"k{i:05d}@x.org" for i in range(BY_KEY_LIMIT + 10)]
    with Ledger.connect(ledger_url) as ledger:
        _save(ledger, "mc", keys, yes=keys[::2])
        ledger.record_subscribed("mc", None, [keys[1]])  # a record without... a row's (the table's)
        assert ledger.subscribed_among("mc", keys) == set(keys[::2]) | {keys[1]}


def test_a_ledger_of_schema_15_keeps_its_records_and_records_on_rows_after_the_upgrade(tmp_path):
    """Before schema 16 every record was a table row: read as before; a create under another status forgets the
    table's row; the first save after the upgrade records on the rows."""
    from sync.ledger.db import migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    assert migrate(engine, lambda: datetime.now(timezone.utc), target=15) == (0, 15)
    with engine.begin() as conn:
        assert "subscribed" not in {c["name"] for c in conn.dialect.get_columns(conn, "pushed_state")}
        conn.execute(text("INSERT INTO subscribed_by_us (destination, key, subscribed_at) VALUES "
                          "('mc', 'a@x.org', '2026-11-01 00:00:00'), ('mc', 'b@x.org', '2026-11-01 00:00:00')"))
    engine.dispose()
    with Ledger.connect(url) as ledger:
        assert ledger.has_subscribed("mc")
        assert sorted(ledger.subscribed_keys("mc")) == ["a@x.org", "b@x.org"]
        _save(ledger, "mc", ["b@x.org", "c@x.org"], yes=["c@x.org"], gone=["b@x.org"])
        assert sorted(ledger.subscribed_keys("mc")) == ["a@x.org", "c@x.org"]
        assert _on_rows(url, "mc") == {"c@x.org"}


@pytest.mark.parametrize("first", ["yes", "other"])
def test_a_group_of_both_kinds_records_only_its_subscribed_creates(ledger_url, first):
    """A save whose rows are partly created subscribed writes them in two parts: each row saved once, with its
    values, the record only on those."""
    keys = [f"{i:03d}@x.org" for i in range(40)]
    yes = keys[::3] if first == "yes" else keys[1::3]
    with Ledger.connect(ledger_url) as ledger:
        _save(ledger, "mc", keys, yes=yes)
        assert sorted(ledger.load_state("mc")) == keys
        assert _on_rows(ledger_url, "mc") == set(yes)


def test_the_mark_says_nothing_once_its_records_are_gone_nor_moves_to_another_destination(ledger_url):
    """review-rec34 MUST: the table's mark (the destination's rows hold records) stayed after every record was
    forgotten, so ``has_subscribed`` said yes for nobody, and a rename or a retire-only destination's heir took it
    over (the heir's lock taken, an info line claiming a record kept; each later look read its rows). Fails
    without the look at the rows behind the mark (``exact``: who inherits asks it), and without leaving the mark
    out of the move (new's mark)."""
    with Ledger.connect(ledger_url) as ledger:
        _save(ledger, "mc", ["a@x.org"], yes=["a@x.org"])
        assert ledger.has_subscribed("mc")
        _save(ledger, "mc", ["a@x.org"], gone=["a@x.org"])  # created again under another status
        assert not ledger.has_subscribed("mc", exact=True) and ledger.subscribed_keys("mc") == []
        assert ledger.has_subscribed("mc")  # the plans' cheap question: the mark alone (a yes costs a keyed read)
        _save(ledger, "old", ["b@x.org"], yes=["b@x.org"])
        _save(ledger, "new", ["c@x.org"])
        ledger.take_over("old", "new", (TARGET_CURSOR, "old"))
        assert ledger.subscribed_keys("new") == ["b@x.org"] and not _marked(ledger_url, "new")
        ledger.forget_subscribed("new", ["b@x.org"])
        assert not ledger.has_subscribed("new")  # no mark of old's came with the record
        _save(ledger, "retired", ["d@x.org"], yes=["d@x.org"])
        ledger.forget_subscribed("retired", ["d@x.org"])
        _save(ledger, "owner", ["e@x.org"])
        ledger.forget_destination("retired", (TARGET_CURSOR, "retired"), untagged=False, heir="owner")
        assert not ledger.has_subscribed("owner")


def _table(url: str, dest: str) -> set[str]:
    """The keys the table holds for ``dest`` (its mark left out)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT key FROM subscribed_by_us WHERE destination = :d AND key <> ''"),
                                    {"d": dest}).scalars())
    finally:
        engine.dispose()


def _written(writer, count: int) -> None:
    deadline = time.monotonic() + 20
    while writer.transactions < count:
        assert time.monotonic() < deadline, "the outcome writer did not write the group"
        time.sleep(0.01)


def _created_subscribed(ledger: Ledger, keys: list[str]) -> tuple[OutcomeWriter, StateFold]:
    """An apply's writer and fold for ``keys`` (each created subscribed, then tagged ``vip``), their creates' answers
    submitted and written (no row yet: the tag calls hold them)."""
    changes = {k: ContactChange(k, k, k.split("@")[0], "Champions", True, "subscribed", frozenset({"vip"}))
               for k in keys}
    writer = OutcomeWriter(ledger, "mc", ledger.start_run("sync", "mc"), linger=0, rows=True, changes=changes)
    fold = StateFold({}, changes)
    created = [ItemResult(k, "upsert", True) for k in keys]
    writer.submit(fold.rows(created), created)
    _written(writer, 1)
    return writer, fold


def test_a_create_answered_a_write_group_before_its_row_is_recorded_on_that_row(ledger_url):
    """An apply's create answers (the upsert's result) in one write group, his row comes with his tag call's answer in
    a later one (the fold holds it until then): the record is carried to that row, not written to the table (rec34,
    before: a table row for each such record, ~45 % of a first sync's). A record whose row never comes (the apply
    ended before it) is in the table at the end: nothing lost."""
    keys = [f"k{i}@x.org" for i in range(5)]
    with Ledger.connect(ledger_url) as ledger:
        writer, fold = _created_subscribed(ledger, keys)
        assert _on_rows(ledger_url, "mc") == set() and _table(ledger_url, "mc") == set()  # carried, not written
        tagged = [ItemResult(k, "tag+vip", True) for k in keys[:4]]  # the last one's tag call never answers
        rows = fold.rows(tagged)
        assert set(rows) == set(keys[:4])
        writer.submit(rows, tagged)
        writer.close()
        assert _on_rows(ledger_url, "mc") == set(keys[:4])
        assert _table(ledger_url, "mc") == {keys[4]}  # his row never came: the table at the end
        assert ledger.subscribed_among("mc", keys) == set(keys) and ledger.has_subscribed("mc")


def test_a_record_whose_row_never_came_is_kept_when_the_writer_was_idle_at_the_end(ledger_url):
    """review-rec35 MUST: the apply closed the writer while it was idle (its last group written): the records
    carried whose row never came were dropped (the end's write ran only when the close came inside a group)."""
    keys = ["a@x.org", "b@x.org"]
    with Ledger.connect(ledger_url) as ledger:
        writer, fold = _created_subscribed(ledger, keys)
        tagged = [ItemResult("a@x.org", "tag+vip", True)]
        writer.submit(fold.rows(tagged), tagged)
        _written(writer, 2)  # idle: both groups written
        writer.close()
        assert _on_rows(ledger_url, "mc") == {"a@x.org"} and _table(ledger_url, "mc") == {"b@x.org"}
        assert ledger.subscribed_among("mc", keys) == set(keys)
