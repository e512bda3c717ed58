"""The plan's text of a contact's fields (ContactChange.fields_text → PushedState.fields_text), stored by the ledger
as it is: the rows are byte for byte those the ledger's own encoding writes, for every field type, on SQLite and
PostgreSQL; and a text belongs to exactly its fields value, so an apply whose field update failed, or that merged
the update into fields pushed before, never stores it."""

from __future__ import annotations

import random
import tempfile
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from connectors.retry import RetryPolicy
from sync.config import DestinationConfig
from sync.destinations.mailchimp import MailchimpDestination
from sync.engine import execute_plan
from sync.ledger import Ledger
from sync.ledger.bulk import state_schema
from sync.ledger.state_rows import fields_json
from sync.model import ContactChange, ItemResult, PushedState
from sync.outcomes import StateFold
from sync.planning.columnar import plan_columnar, stage_pushed
from sync.planning.plan import Plan
from sync.planning.rows import stage_dicts

from tests.profiles import examples

try:
    from tests import ledger_fixtures
except ImportError:  # tests/ itself on sys.path
    import ledger_fixtures  # type: ignore[no-redef]

# the ledger on each backend (SQLite; PostgreSQL when RFMSYNC_TEST_PG_URL is set)
clock, ledger_url, open_ledger, ledger = (ledger_fixtures.clock, ledger_fixtures.ledger_url,
                                          ledger_fixtures.open_ledger, ledger_fixtures.ledger)

#: one field of each kind the planner reads: text, integer, decimal, double, date, timestamp, boolean, and one
#: whose column the rows do not have (``clv``: null)
DEST = DestinationConfig(name="mc", type="mailchimp", audience="a1", tag_prefix="rfm:", segments={"A": "A"},
                         fields={"TEXT": "favourite_category", "INT": "r", "DEC": "monetary", "DBL": "p_alive",
                                 "DAY": "first_order", "TS": "last_order", "BOOL": "reorder_due", "NONE": "clv"})
# doubles around a rounding tie of the sixth decimal, where the plan has no sure text
TIES = [0.0000005, 2.5e-06, 1.0000005, 123.4567895, 0.1234565, -7.0000015, 1 / 3, 1e-7, -0.0, 12345.678901]
TEXTS = st.one_of(st.none(), st.text(st.characters(exclude_categories=["Cs"]), max_size=6),
                  st.text(st.characters(max_codepoint=127), max_size=6), st.sampled_from(['a"b\\c/', "é", "x\x7f"]))


def row(i: int, values: dict) -> dict:
    return {"customer_id": str(i), "email": f"c{i:04d}@x.io", "segment": "A", "marketing_consent": "yes", **values}


def first_sync_changes(rows: list[dict]) -> list[ContactChange]:
    staged = stage_dicts(rows)
    stage_pushed(staged.con, state_schema().empty_table())  # nothing pushed yet
    return list(plan_columnar(staged, DEST).changes)


def stored(led: Ledger, destination: str) -> dict[str, tuple]:
    table = led.state_table(destination, cached=False)
    return {r["key"]: (r["customer_id"], r["tags"], r["fields"], r["in_destination"]) for r in table.to_pylist()}


def assert_texts_stored_as_encoded(led: Ledger, changes: list[ContactChange]) -> None:
    """Every text is the ledger's encoding of its own values, and saving the changes' fields with their texts
    writes the same rows, byte for byte, as saving them as plain dicts."""
    for c in changes:
        if c.fields_text is not None:
            assert c.fields_text == fields_json(c.set_fields), c
    run = led.start_run("sync", "mc")
    led.save_states("text", run, [PushedState(c.key, c.customer_id, c.add_tags, c.set_fields, fields_text=c.fields_text)
                                  for c in changes])
    led.save_states("dict", run, [PushedState(c.key, c.customer_id, c.add_tags, dict(c.set_fields))
                                  for c in changes])
    assert stored(led, "text") == stored(led, "dict")
    assert {k: f for k, (_, _, f, _) in stored(led, "text").items()} == {
        c.key: fields_json(dict(c.set_fields)) for c in changes}


values_st = st.fixed_dictionaries({
    "favourite_category": TEXTS,
    "r": st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)),
    "monetary": st.one_of(st.none(), st.decimals(min_value=-10**15, max_value=10**15, places=4)),
    "p_alive": st.one_of(st.none(), st.sampled_from(TIES), st.floats(allow_nan=False, allow_infinity=False)),
    "first_order_at": st.one_of(st.none(), st.dates(min_value=date(1, 1, 1))),
    "last_order_at": st.one_of(st.none(), st.datetimes()),
    "reorder_due": st.one_of(st.none(), st.booleans())})


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values_st, min_size=1, max_size=12))
def test_the_plan_s_texts_are_the_ledger_s_own_encoding_byte_for_byte(values):
    changes = first_sync_changes([row(i, v) for i, v in enumerate(values)])
    assert len(changes) == len(values)
    with tempfile.TemporaryDirectory() as folder:
        led = Ledger.connect(f"sqlite:///{Path(folder) / 'ledger.db'}")
        try:
            assert_texts_stored_as_encoded(led, changes)
        finally:
            led.close()


def test_everyday_and_odd_fields_are_stored_alike_from_their_text(ledger):
    """On each backend: the usual values come with a text (stored as it is), the odd ones without (encoded by
    the ledger); both give the rows the ledger's own encoding gives."""
    usual = {"favourite_category": "Shoes & bags", "r": 2**62, "monetary": Decimal("1234.50"), "p_alive": 0.25,
             "first_order_at": date(2024, 2, 29), "last_order_at": datetime(2024, 3, 1, 23, 59),
             "reorder_due": True}
    usual_ru = {**usual, "favourite_category": "Обувь и сумки"}  # (UTF-8, as the ledger writes it)
    odd = [{"favourite_category": 'q"\\\n\x01'}, {"p_alive": 1.0000005},
           {"monetary": Decimal("0.00005")}, {"monetary": Decimal("-123456789012.3456")}, {"r": None},
           {"first_order_at": date(999, 1, 1)}]
    changes = first_sync_changes([row(0, usual), row(1, usual_ru)]
                                 + [row(i + 2, {**usual, **o}) for i, o in enumerate(odd)])
    assert [c.fields_text is not None for c in changes] == [True, True, False, False, False, False,
                                                                    True, False]
    assert_texts_stored_as_encoded(ledger, changes)


def test_a_state_s_text_is_stored_as_it_is_and_is_not_part_of_its_value(ledger):
    """The ledger stores a state's text without looking at its fields (the wrong text here is on purpose: the
    fold must hand over only the text of exactly the fields); a state without one is encoded; the text is no part
    of the state's value (a state read back, without it, equals the one saved)."""
    given = PushedState("a@x.io", "A", frozenset(), {"N": 2}, fields_text='{"N":1}')
    plain = PushedState("b@x.io", "B", frozenset(), {"N": 2})
    assert given == PushedState("a@x.io", "A", frozenset(), {"N": 2})
    ledger.save_states("mc", None, [given, plain])
    assert {k: f for k, (_, _, f, _) in stored(ledger, "mc").items()} == {"a@x.io": '{"N":1}', "b@x.io": '{"N":2}'}


def with_text(fields: dict) -> dict:
    return {"set_fields": fields, "fields_text": fields_json(fields)}


def test_the_fold_stores_a_text_only_where_the_fields_are_exactly_its_values(ledger):
    """Each contact's change brings its new fields with their text. Stored: the text where the upsert answered
    and nothing was pushed before; the fields pushed before merged with the update where some were (their own
    encoding, not the update's text); the old fields where the update failed; nothing where the ESP lost it."""
    before = {"merged@x.io": {"SEGMENT": "B", "OLD": 1}, "failed@x.io": {"SEGMENT": "B"},
              "missing@x.io": {"SEGMENT": "B"}, "same@x.io": {"SEGMENT": "B"}}
    ledger.save_states("mc", None, [PushedState(k, k, frozenset(), f) for k, f in before.items()])
    keys = [*before, "new@x.io"]
    changes = {k: ContactChange(k, k, k, "A", k == "new@x.io", "subscribed", add_tags=frozenset({"rfm:A"}),
                                **with_text({"SEGMENT": "A"})) for k in keys}
    fold = StateFold(ledger.load_states("mc", keys), changes)
    results = [ItemResult(k, "upsert", k not in ("failed@x.io", "missing@x.io"), missing=k == "missing@x.io")
               for k in keys] + [ItemResult(k, "tag+rfm:A", k != "missing@x.io") for k in keys]
    ledger.save_states("mc", None, fold(results) + fold.rest())
    assert {k: f for k, (_, _, f, _) in stored(ledger, "mc").items()} == {
        "merged@x.io": '{"OLD":1,"SEGMENT":"A"}', "failed@x.io": '{"SEGMENT":"B"}', "missing@x.io": "{}",
        "same@x.io": '{"SEGMENT":"A"}', "new@x.io": '{"SEGMENT":"A"}'}


def test_an_update_holding_every_field_pushed_before_keeps_its_text_and_no_other_merge_does():
    """A full refresh of contacts pushed before: where the update holds every key the ledger has (the merge is the
    update itself) the fold hands the plan's text on, as for a first sync; where an older key stays (merged in), no
    text: the ledger encodes the fields it is given (a failed update keeps the old fields: tested above)."""
    before = {"subset@x.io": {"SEGMENT": "B"}, "equal@x.io": {"SEGMENT": "B", "R": 2},
              "extra@x.io": {"SEGMENT": "B", "OLD": 1}}
    update = {"SEGMENT": "A", "R": 1}
    changes = {k: ContactChange(k, k, k, "A", False, None, **with_text(update)) for k in before}
    fold = StateFold({k: PushedState(k, k, frozenset(), f) for k, f in before.items()}, changes)
    released = {s.key: s for s in fold([ItemResult(k, "upsert", True) for k in before])}
    assert {k: (s.fields, s.fields_text) for k, s in released.items()} == {
        "subset@x.io": (update, '{"R":1,"SEGMENT":"A"}'), "equal@x.io": (update, '{"R":1,"SEGMENT":"A"}'),
        "extra@x.io": ({"SEGMENT": "A", "R": 1, "OLD": 1}, None)}


def test_a_refused_field_update_keeps_the_old_fields_text_through_a_real_apply(mailchimp_fake, tmp_path):
    """Against the Mailchimp fake: the member's field update is refused (400), its tag call is not; the ledger
    keeps the fields it had, not the text the plan brought for the refused ones."""
    led = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        mailchimp_fake.add_merge_field("SEGMENT")  # defined in the audience: prepare does not find it lost
        mailchimp_fake.add_member("m@x.io", status="subscribed", merge_fields={"SEGMENT": "B"}, tags=["rfm:B"])
        led.save_states("mc", None, [PushedState("m@x.io", "M", frozenset({"rfm:B"}), {"SEGMENT": "B"})])
        change = ContactChange("m@x.io", "m@x.io", "M", "A", False, None, add_tags=frozenset({"rfm:A"}),
                               **with_text({"SEGMENT": "A"}))
        client = MailchimpDestination("mc", "aud1", mailchimp_fake.api_key, api_url=mailchimp_fake.url, timeout=5,
                                      batch_size=10, max_connections=2,
                                      retry=RetryPolicy(attempts=1, sleep=lambda s: None, rng=random.Random(0)))
        mailchimp_fake.fail(400, method="POST", path="^/lists/aud1$")
        plan = Plan("mc", "mailchimp", (change,), (), ("rfm:A",), {"SEGMENT": "segment"}, 0)
        assert execute_plan(plan, client, led).status == "partial"
        assert stored(led, "mc")["m@x.io"][1:3] == ('["rfm:A","rfm:B"]', '{"SEGMENT":"B"}')
    finally:
        led.close()
