"""The columnar planner (sync.planning.columnar) makes exactly the plan of the pure-Python one
(sync.planning.plan.plan_destination, which the webhook resync uses) on random desired and pushed states; the
ledger's bulk read feeds it."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from connectors.email_phone import normalize_email
from sync.config import DestinationConfig
from sync.model import PushedState
from sync.planning.columnar import plan_columnar, reconcile_pushed, stage_pushed
from sync.planning.rows import stage_dicts
from sync.planning import plan as ref  # the pure-Python planner (the webhook resync plans with it)
from sync.planning.planner import reconciled
from tests.builders import scratch_con
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.profiles import examples

DEST = DestinationConfig(name="mc", type="mailchimp", audience="a1", tag_prefix="rfm:",
                         segments={"Best active": "VIP", "Churn": "Winback", "Ünï": "Uni"},
                         fields={"SEG": "segment", "R": "r", "M": "monetary", "S": "p_alive", "D": "first_order",
                                 "X": "clv"})
MANAGED = ["rfm:Uni", "rfm:VIP", "rfm:Winback"]
SEGMENTS = ["Best active", "Churn", "Ünï", "Other"]
# a small pool of addresses, with case/space variants of the same contact and invalid ones
# (the fullwidth "a@ＳＨＯＰ.uz" is a's address once email-validator normalised it)
EMAILS = ["a@shop.uz", " A@Shop.UZ", "a@\uff33\uff28\uff2f\uff30.uz", "b@shop.uz", "c@shop.uz", "d@shop.uz",
          "not-an-email", "e@x.test", ""]
KEYS = ["a@shop.uz", "b@shop.uz", "c@shop.uz", "d@shop.uz", "gone@shop.uz"]

# values of each column, and pushed values that are (or look like) them: equal, another JSON type, other
R = [1, 2, 3]
M = [Decimal("5.00"), Decimal("5.50"), Decimal("7.25")]
S = [0.5, 1 / 3, 2.0]
D = [date(2024, 1, 2), date(2023, 12, 31)]
PUSHED_VALUES = {"SEG": SEGMENTS + [None, 1], "R": [1, 2, 1.0, "1", True, None], "M": [5, 5.5, 7.25, 5.0, "5.5"],
                 "S": [0.5, round(1 / 3, 6), 2.0, 2, 0.3333333], "D": ["2024-01-02", "2023-12-31", "2024-1-2"],
                 "X": [None, 0]}


def row_st():
    return st.fixed_dictionaries({
        "customer_id": st.sampled_from(["1", "2", "3", "4", "5", "6"]), "email": st.sampled_from(EMAILS),
        "segment": st.sampled_from(SEGMENTS), "marketing_consent": st.sampled_from(["yes", "no", "", None]),
        "r": st.sampled_from(R), "monetary": st.sampled_from(M), "p_alive": st.sampled_from(S),
        "first_order_at": st.sampled_from(D)})


def pushed_st():
    fields = st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in PUSHED_VALUES.items()})
    return st.builds(lambda k, cid, t, f, e: PushedState(k, cid, t, f, e), st.sampled_from(KEYS),
                     st.sampled_from([None, "1", "9"]),
                     st.frozensets(st.sampled_from(MANAGED + ["hand-added"]), max_size=3), fields, st.booleans())


def _long_floats(fields: dict) -> str:
    """Fields with their floats spelled with 17 digits and an exponent (``0.1`` as
    ``1.00000000000000006e-01``): another text of the same values."""
    def spell(v):
        finite = isinstance(v, float) and v == v and v not in (float("inf"), float("-inf"))
        return format(v, ".17e") if finite else json.dumps(v)
    return "{" + ",".join(f"{json.dumps(k)}:{spell(v)}" for k, v in sorted(fields.items())) + "}"


#: ways to spell the same pushed tags and fields as JSON: the ledger's own (sorted, compact; tags ASCII, fields
#: UTF-8; the diff recognises an unchanged contact by that text alone), and others whose text differs but values
#: do not ("ascii": the fields as ledgers before 2026-12 wrote them)
SPELLINGS = {
    "ledger": (lambda t: json.dumps(sorted(t), separators=(",", ":")),
               lambda f: json.dumps(f, sort_keys=True, separators=(",", ":"), ensure_ascii=False)),
    "spaced": (lambda t: json.dumps(sorted(t)), lambda f: json.dumps(f, sort_keys=True)),
    "key order": (lambda t: json.dumps(sorted(t, reverse=True), separators=(",", ":")),
                  lambda f: json.dumps(dict(sorted(f.items(), reverse=True)), separators=(",", ":"))),
    "unicode tags": (lambda t: json.dumps(sorted(t), separators=(",", ":"), ensure_ascii=False),
                     lambda f: json.dumps(f, sort_keys=True, separators=(",", ":"), ensure_ascii=False)),
    "ascii": (lambda t: json.dumps(sorted(t), separators=(",", ":")),
              lambda f: json.dumps(f, sort_keys=True, separators=(",", ":"))),
    "escaped slash": (lambda t: json.dumps(sorted(t), separators=(",", ":")).replace("/", "\\/"),
                      lambda f: json.dumps(f, sort_keys=True, separators=(",", ":")).replace("/", "\\/")),
    "long floats": (lambda t: json.dumps(sorted(t), separators=(",", ":")),
                    _long_floats),
}


def arrow_state(last: dict[str, PushedState], spelling: str = "ledger") -> pa.Table:
    """The pushed state as the ledger stores it (tags sorted JSON, fields JSON with sorted keys), or spelled
    another way (``SPELLINGS``)."""
    tags, fields = SPELLINGS[spelling]
    return pa.table({"key": pa.array(list(last), pa.string()),
                     "customer_id": pa.array([s.customer_id for s in last.values()], pa.string()),
                     "tags": pa.array([tags(s.tags) for s in last.values()], pa.string()),
                     "fields": pa.array([fields(dict(s.fields)) for s in last.values()], pa.string()),
                     "in_destination": pa.array([s.exists for s in last.values()], pa.bool_())})


def columnar(rows, last, dest, *, existing=None, full_refresh=False, actual=None, spelling="ledger", doubt=None):
    with scratch_con() as con:  # an empty connection, as a sync's planning gets one
        staged = stage_dicts(rows, con)
        stage_pushed(staged.con, arrow_state(last, spelling))
        if actual is not None:
            reconcile_pushed(staged.con, actual, sorted(MANAGED))
        return plan_columnar(staged, dest, revision=3, existing=existing, full_refresh=full_refresh, doubt=doubt)


def reference(rows, last, dest, *, existing=None, full_refresh=False, actual=None, doubt=None):
    desired, invalid = ref.desired_contacts(rows, dest)
    if actual is not None:
        last = reconciled(dict(last), actual, sorted(MANAGED))
    return ref.plan_destination(dest, desired, last, revision=3, existing=existing, full_refresh=full_refresh,
                                skipped=invalid, doubt=doubt)


#: the adds in doubt (sync.planning.doubt): of known contacts and of one the ledger never heard of, managed tags
#: and one rfmsync does not manage (never taken off)
DOUBT = st.one_of(st.none(), st.dictionaries(st.sampled_from(KEYS + ["never@shop.uz"]), st.frozensets(
    st.sampled_from(MANAGED + ["hand-added"]), min_size=1, max_size=2), max_size=3))


#: ``new_contacts`` of the reference-plan property test: skip a third of the time (most of it with withdrawn
#: consent), each other mode two ninths, about the share each had before the withdrawn case was added (a quarter)
MODES = ["skip"] * 3 + ["transactional", "pending", "subscribed"] * 2


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row_st(), max_size=8), st.lists(pushed_st(), max_size=5, unique_by=lambda s: s.key),
       st.sampled_from(MODES),
       st.one_of(st.none(), st.frozensets(st.sampled_from(KEYS))), st.booleans(),
       st.one_of(st.none(), st.dictionaries(st.sampled_from(MANAGED), st.frozensets(st.sampled_from(
           KEYS + ["B@Shop.uz"])), max_size=2)), st.sampled_from(sorted(SPELLINGS)), DOUBT, st.data())
def test_the_columnar_planner_makes_the_reference_plan(rows, last, mode, existing, full_refresh, actual, spelling,
                                                       doubt, data):
    """Whichever way the pushed JSON is spelled (the ledger's way, or another text of the same values). A third of
    the examples run ``skip``, and three in four of those withdraw the consent of contacts already pushed with
    their managed tags; the other modes get two ninths each."""
    withdrawn: dict[str, PushedState] = {}
    if mode == "skip" and data.draw(st.sampled_from([True, True, True, False])):
        rows, withdrawn = consent_withdrawn(rows, data)
        for key, state in withdrawn.items() if actual is not None else ():  # the ESP holds their tags too
            actual = {**actual, **{t: actual.get(t, frozenset()) | {key} for t in state.tags & set(MANAGED)}}
    dest = DEST.model_copy(update={"new_contacts": mode})
    last = {s.key: s for s in (near_desired(s, rows, dest, data) for s in last)} | withdrawn
    existing = None if existing is None else dict.fromkeys(existing, "subscribed")
    kwargs = {"existing": existing, "full_refresh": full_refresh, "actual": actual, "doubt": doubt}
    assert columnar(rows, last, dest, spelling=spelling, **kwargs) == reference(rows, last, dest, **kwargs)


@pytest.mark.parametrize("order", [1, -1])
def test_the_first_row_in_planning_order_wins_an_address_whichever_way_it_was_normalised(order):
    """Rows sharing an address once normalised, some plain ASCII (normalised in SQL as they are staged), some
    only email-validator normalises: the first in planning order is desired, the others are not, nor invalid."""
    rows = [{"customer_id": "1", "email": "a@\uff33\uff28\uff2f\uff30.uz"}, {"customer_id": "2", "email": " A@shop.uz"},
            {"customer_id": "3", "email": "\u00fc@shop.uz"}, {"customer_id": "4", "email": "\u00dc@Shop.uz "},
            {"customer_id": "5", "email": "a@shop.uz"}, {"customer_id": "6", "email": "bad@"}][::order]
    staged = stage_dicts(rows)
    desired = staged.con.execute("SELECT _key, customer_id FROM _plan_desired ORDER BY _rn").fetchall()
    firsts = {"a@shop.uz": "1" if order == 1 else "5", "\u00fc@shop.uz": "3" if order == 1 else "4"}
    assert desired == sorted(firsts.items(), key=lambda kv: [r["customer_id"] for r in rows].index(kv[1]))
    assert staged.desired_keys() == [k for k, _ in desired]
    assert staged.con.execute("SELECT customer_id FROM _plan_invalid").fetchall() == [("6",)]


COLUMN_OF = {"SEG": ("segment", SEGMENTS), "R": ("r", R), "M": ("monetary", M), "S": ("p_alive", S),
             "D": ("first_order_at", D), "X": ("clv", [None])}


@pytest.mark.parametrize("spelling", ["ledger", "ascii", "long floats"])  # the others: in the property test
@pytest.mark.parametrize("name", sorted(PUSHED_VALUES))
def test_each_field_is_compared_as_the_reference_compares_it(name, spelling):
    """One contact whose pushed state is what it wants but one field: every value of the column against every
    pushed value (equal, another JSON type or form, another value)."""
    column, values = COLUMN_OF[name]
    for value in values:
        row = {"customer_id": "1", "email": "a@shop.uz", "segment": "Churn", "r": 1, "monetary": M[0],
               "p_alive": S[0], "first_order_at": D[0], "marketing_consent": "yes", column: value}
        [d], _ = ref.desired_contacts([row], DEST)
        for pushed in PUSHED_VALUES[name]:
            last = {d.key: PushedState(d.key, "1", d.tags, {**d.fields, name: pushed}, True)}
            assert columnar([row], last, DEST, spelling=spelling) == reference([row], last, DEST), (value, pushed)


def consent_withdrawn(rows, data) -> tuple[list[dict], dict[str, PushedState]]:
    """The withdrawn-consent case (``plan.refused_consent``): one to three contacts pushed with their segment's
    managed tags (as when they had agreed) whose source consent is now ``no``. Returns the rows (those contacts
    first, every row of their addresses with consent ``no``) and their pushed states, which the plan must take
    the managed tags off."""
    tagged = st.sampled_from([seg for seg in SEGMENTS if seg in DEST.segments])
    keys = data.draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
    picked = [data.draw(row_st()) | {"email": key, "segment": data.draw(tagged)} for key in keys]
    agreed = DEST.model_copy(update={"new_contacts": "subscribed"})
    desired, _ = ref.desired_contacts([r | {"marketing_consent": "yes"} for r in picked], agreed)
    hand = data.draw(st.sampled_from([frozenset(), frozenset({"hand-added"})]))
    last = {d.key: PushedState(d.key, d.customer_id, d.tags | hand, dict(d.fields), True) for d in desired}
    rows = [r | {"marketing_consent": "no"} if r["email"] and normalize_email(r["email"]) in last else r
            for r in picked + rows]
    return rows, last


def near_desired(state: PushedState, rows, dest, data) -> PushedState:
    """Mostly what a desired contact wants (so "unchanged" is tested), a field or two another value or type."""
    desired, _ = ref.desired_contacts(rows, dest)
    if not desired or data.draw(st.booleans()):
        return state
    d = data.draw(st.sampled_from(desired))
    fields = dict(d.fields)
    for name in data.draw(st.frozensets(st.sampled_from(sorted(fields)), max_size=2)):
        if data.draw(st.booleans()):
            del fields[name]
        else:
            fields[name] = data.draw(st.sampled_from(PUSHED_VALUES[name]))
    tags = d.tags | (state.tags - set(MANAGED)) if data.draw(st.booleans()) else state.tags
    return PushedState(d.key, state.customer_id, tags, fields, state.exists)


def test_a_replan_after_applying_is_empty_and_unchanged_fields_are_not_sent_again():
    rows = [{"customer_id": "1", "email": "a@shop.uz", "segment": "Churn", "r": 2, "monetary": Decimal("5.50"),
             "p_alive": 1 / 3, "first_order_at": date(2024, 1, 2), "marketing_consent": "yes"}]
    pushed = {"a@shop.uz": PushedState("a@shop.uz", "1", frozenset({"rfm:Winback", "hand-added"}), {
        "SEG": "Churn", "R": 2, "M": 5.5, "S": round(1 / 3, 6), "D": "2024-01-02", "X": None})}
    assert columnar(rows, pushed, DEST).changes == ()
    pushed["a@shop.uz"] = PushedState("a@shop.uz", "1", frozenset({"rfm:VIP"}), {**pushed["a@shop.uz"].fields,
                                                                                  "R": 2.0})
    [change] = columnar(rows, pushed, DEST).changes
    assert (change.add_tags, change.remove_tags, dict(change.set_fields), change.create) == (
        frozenset({"rfm:Winback"}), frozenset({"rfm:VIP"}), {"R": 2}, False)


def test_extra_desired_tags_join_the_segment_tags():
    """Extra desired (customer_id, tag) rows (e.g. transition tags) are added and, once pushed, kept."""
    dest = DEST.model_copy(update={"fields": {}})
    staged = stage_dicts([{"customer_id": "1", "email": "a@shop.uz", "segment": "Churn", "marketing_consent": "yes"},
                          {"customer_id": "2", "email": "b@shop.uz", "segment": "Churn", "marketing_consent": "yes"}])
    staged.con.execute("CREATE TEMP TABLE moves AS SELECT '1' AS customer_id, 'rfm:VIP' AS tag")
    stage_pushed(staged.con, arrow_state({}))
    plan = plan_columnar(staged, dest, extra_tags="SELECT customer_id, tag FROM moves")
    assert [(c.key, sorted(c.add_tags)) for c in plan.changes] == [
        ("a@shop.uz", ["rfm:VIP", "rfm:Winback"]), ("b@shop.uz", ["rfm:Winback"])]
    pushed = {"a@shop.uz": PushedState("a@shop.uz", "1", frozenset({"rfm:VIP", "rfm:Winback"}), {}),
              "b@shop.uz": PushedState("b@shop.uz", "2", frozenset({"rfm:Winback", "rfm:VIP"}), {})}
    stage_pushed(staged.con, arrow_state(pushed))
    plan = plan_columnar(staged, dest, extra_tags="SELECT customer_id, tag FROM moves")
    assert [(c.key, sorted(c.remove_tags)) for c in plan.changes] == [("b@shop.uz", ["rfm:VIP"])]


def test_the_bulk_read_gives_what_load_state_gives(ledger_url):
    """On a fresh database of each backend (a throwaway PostgreSQL schema: the server's shared schema may hold a
    ledger of another version)."""
    from sync.ledger import Ledger

    ledger = Ledger.connect(ledger_url)
    dest = "bulk-read"
    try:
        assert ledger.state_table(dest).num_rows == 0
        run_id = ledger.start_run("sync", dest)
        states = [PushedState("a@x.io", "c1", frozenset({"rfm:b", "rfm:a"}), {"Q": 'say "hi",\nok', "N": 1.5}),
                  PushedState("b@x.io", None, frozenset(), {}, exists=False),
                  PushedState("c@x.io", "", frozenset({"x"}), {"E": ""})]
        ledger.save_states(dest, run_id, states)
        table = ledger.state_table(dest)
        got = {r["key"]: PushedState(r["key"], r["customer_id"], frozenset(json.loads(r["tags"])),
                                     json.loads(r["fields"]), r["in_destination"]) for r in table.to_pylist()}
        assert got == ledger.load_state(dest) == {s.key: s for s in states}
    finally:
        ledger.close()


def test_segments_are_staged_in_planning_order_by_value_then_customer():
    """stage_segments numbers the rows by monetary (descending), then customer id, across batches: of two
    customers sharing an address the more valuable one is desired, and of two as valuable the lower id."""
    import duckdb

    from sync.planning.rows import stage_segments

    con = duckdb.connect()
    n = 250_000  # more than one streamed batch
    con.execute(f"""CREATE TABLE contacts AS SELECT printf('C%06d', i) AS customer_id,
        CASE WHEN i IN (7, 8, 9) THEN 'shared@shop.uz' ELSE printf('c%06d@shop.uz', i) END AS email,
        NULL::VARCHAR AS phone, 'yes' AS marketing_consent FROM range({n}) t(i)""")
    con.execute(f"""CREATE TABLE segs AS SELECT printf('C%06d', i) AS customer_id, 'Churn' AS segment,
        CAST(CASE WHEN i IN (8, 9) THEN 100000 ELSE (i * 7919) % 5000 END AS DECIMAL(18, 2)) AS monetary
        FROM range({n}) t(i)""")
    staged = stage_segments(con, "segs", ["monetary"])
    rows = staged.con.execute("SELECT _rn, customer_id, monetary FROM _plan_rows ORDER BY _rn").fetchall()
    assert [r[0] for r in rows] == list(range(1, n + 1))
    assert [(r[2], r[1]) for r in rows] == sorted(((r[2], r[1]) for r in rows), key=lambda x: (-x[0], x[1]))
    assert staged.con.execute("SELECT customer_id FROM _plan_desired WHERE _key = 'shared@shop.uz'"
                              ).fetchall() == [("C000008",)]


@pytest.mark.parametrize("mode,yes,no", [("pending", "pending", "pending"), ("skip", "subscribed", None),
                                         ("transactional", "subscribed", "transactional")])
def test_a_known_contact_carries_the_status_it_would_be_created_with(mode, yes, no):
    """Both planners: a destination that finds a known contact deleted since (Unisender) may create it again only
    under the consent rules, so it is told them (None: never create)."""
    rows = [{"customer_id": cid, "email": f"{cid}@shop.uz", "segment": "Churn", "r": 2, "monetary": Decimal("5.50"),
             "p_alive": 1 / 3, "first_order_at": date(2024, 1, 2), "marketing_consent": consent}
            for cid, consent in (("y", "yes"), ("n", "no"))]
    pushed = {f"{c}@shop.uz": PushedState(f"{c}@shop.uz", c, frozenset({"rfm:VIP"}), {}) for c in "yn"}
    pushed["gone@shop.uz"] = PushedState("gone@shop.uz", "9", frozenset({"rfm:VIP"}), {})
    dest = DEST.model_copy(update={"new_contacts": mode})
    for plan in (columnar(rows, pushed, dest), reference(rows, pushed, dest)):
        status = {c.key: (c.create, c.status_if_new) for c in plan.changes}
        assert status == {"y@shop.uz": (False, yes), "n@shop.uz": (False, no), "gone@shop.uz": (False, None)}


@pytest.mark.parametrize("typed", ["İLHAM@Mail.az", "NIKOS.ΠΑΠΑΣ@mail.gr"])
def test_reconcile_keys_the_esps_addresses_as_the_ledger_does(typed):
    """What the ESP holds (``--reconcile``) meets the ledger under the key rfmsync gives the address everywhere
    (connectors.email_phone.lower_like_sql), not Python's own lower-casing: İ and a final Σ lowered by
    ``str.lower`` made a second contact, which the plan would then see as a member to strip."""
    from connectors.email_phone import lower_like_sql

    key = lower_like_sql(typed)
    last = {key: PushedState(key, "c1", frozenset({"rfm:VIP"}), {"SEG": "VIP"})}
    actual = {"rfm:Winback": {typed}}
    assert list(reconciled(dict(last), actual, sorted(MANAGED))) == [key]
    with scratch_con() as con:
        stage_pushed(con, arrow_state(last))
        reconcile_pushed(con, actual, sorted(MANAGED))
        assert con.execute("SELECT key, tags_json FROM _plan_reconciled").fetchall() == [(key, '["rfm:Winback"]')]
