"""Which cards the consent read again by ``apply`` counts (docs/sync.md#consent): the planners' rule for a shared
address (the contact's own card, and another card's *no* only when that customer has a segment at the plan's
as-of), an ``unknown`` card, an address no card gives any more; and which changes it decides (Unisender's list
adds of a known contact: an import subscribes him to the lists it names). Against an order store built here."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pytest

from connectors.tables import create_tables
from sync.config import Config
from sync.model import ContactChange
from sync.planning.consent_now import recheck_consent
from sync.planning.plan import Plan

AS_OF = date(2025, 6, 30)
BEFORE, AFTER = "2025-01-01 10:00:00+00", "2025-08-01 10:00:00+00"  # an order before / after the as-of
KEY = "family@x.io"


def _store(path: Path, cards: list[tuple[str, str, str]], orders: list[tuple[str, str, str]]) -> Path:
    """``cards``: (customer, e-mail, consent); ``orders``: (customer, ordered at, status)."""
    con = duckdb.connect(str(path))
    create_tables(con)
    for customer, email, consent in cards:
        con.execute("INSERT INTO contacts (customer_id, email, marketing_consent) VALUES (?, ?, ?)",
                    [customer, email, consent])
    for n, (customer, at, status) in enumerate(orders):
        con.execute("INSERT INTO orders (order_id, customer_id, ordered_at, status, amount) "
                    "VALUES (?, ?, ?::TIMESTAMPTZ, ?, 10)", [f"O{n}", customer, at, status])
    con.close()
    return path


def _config(kind: str = "mailchimp", new_contacts: str = "transactional") -> Config:
    dest = {"name": "d", "type": kind, "new_contacts": new_contacts, "segments": {"Churn": "W"}}
    if kind == "mailchimp":
        dest["audience"] = "a1"
    return Config.model_validate({"source": {"type": "file", "orders": "o.csv"}, "destinations": [dest]})


def _left(cfg: Config, store: Path, change: ContactChange) -> dict[str, str]:
    """The reasons ``apply`` leaves ``change`` out for (empty: applied)."""
    dest = cfg.destinations[0]
    plan = Plan(dest.name, dest.type, (change,), (), tuple(sorted(change.add_tags)), {}, 0)
    plans, left = recheck_consent(cfg, [plan], store, AS_OF)
    assert len(plans[0].changes) == (0 if left else 1)
    return left[0].reasons if left else {}


def _subscribe(own: str = "A") -> ContactChange:
    return ContactChange(KEY, KEY, own, "Churn", True, "subscribed", frozenset({"W"}))


@pytest.mark.parametrize(("b_orders", "refused"), [
    ([("B", BEFORE, "completed")], True),  # B has a segment at the as-of: his no is the address's
    ([], False),  # B has no orders: no segment, his card does not count (the planner reads only segmented cards)
    ([("B", AFTER, "completed")], False),  # his only order after the plan's as-of: no segment then
    ([("B", BEFORE, "refunded")], False),  # a refunded order alone: no segment
], ids=["segmented", "no-orders", "order-after-as-of", "refunded-only"])
def test_another_cards_no_counts_only_when_that_customer_has_a_segment(tmp_path, b_orders, refused):
    store = _store(tmp_path / "s.duckdb", [("A", KEY, "yes"), ("B", KEY, "no")],
                   [("A", BEFORE, "completed"), *b_orders])
    reasons = _left(_config(), store, _subscribe())
    if refused:
        assert reasons == {KEY: "consent no now (withdrawn since the plan was made: customer B's card says no)"}
    else:
        assert reasons == {}, "another customer's no without a segment refused the subscribe"


def test_under_skip_another_segmented_cards_no_keeps_the_tag_off_and_an_unsegmented_ones_does_not(tmp_path):
    tag = ContactChange(KEY, KEY, "A", "Churn", False, "subscribed", frozenset({"W"}))
    cfg = _config(new_contacts="skip")
    store = _store(tmp_path / "s.duckdb", [("A", KEY, "yes"), ("B", KEY, "no")],
                   [("A", BEFORE, "completed"), ("B", BEFORE, "completed")])
    assert "customer B's card says no" in _left(cfg, store, tag)[KEY]
    store = _store(tmp_path / "t.duckdb", [("A", KEY, "yes"), ("B", KEY, "no")], [("A", BEFORE, "completed")])
    assert _left(cfg, store, tag) == {}


def test_an_unknown_own_card_is_not_a_yes_and_an_address_no_card_gives_is_not_confirmed(tmp_path):
    store = _store(tmp_path / "s.duckdb", [("A", KEY, "unknown")], [("A", BEFORE, "completed")])
    assert _left(_config(), store, _subscribe()) == {
        KEY: "consent unknown now (withdrawn since the plan was made: his own card says unknown)"}
    store = _store(tmp_path / "t.duckdb", [("A", "other@x.io", "yes")], [("A", BEFORE, "completed")])
    assert "no card of the order store gives this address to customer A now" in _left(_config(), store,
                                                                                      _subscribe())[KEY]
    # his own yes, and another card's yes or unknown: a yes
    store = _store(tmp_path / "u.duckdb", [("A", KEY, "yes"), ("B", KEY, "unknown"), ("C", KEY, "yes")],
                   [("A", BEFORE, "completed"), ("B", BEFORE, "completed"), ("C", BEFORE, "completed")])
    assert _left(_config(), store, _subscribe()) == {}


def test_a_known_unisender_contact_joining_a_list_under_subscribed_is_read_again(tmp_path):
    """Unisender's import subscribes a known contact to the lists it names when his change is ``subscribed`` (no
    confirmation asked): a list add alone (no field, no create) waits on his consent too; a tag alone, or a
    Mailchimp tag, does not subscribe (his status is never changed) and is applied as planned."""
    store = _store(tmp_path / "s.duckdb", [("A", KEY, "no")], [("A", BEFORE, "completed")])
    joins = ContactChange(KEY, KEY, "A", "Churn", False, "subscribed", frozenset({"list:W"}))
    assert _left(_config("unisender", "subscribed"), store, joins) == {
        KEY: "consent no now (withdrawn since the plan was made: his own card says no)"}
    assert _left(_config("unisender", "subscribed"), store,
                 ContactChange(KEY, KEY, "A", "Churn", False, "subscribed", frozenset({"tag:W"}))) == {}
    assert _left(_config("mailchimp", "subscribed"), store,
                 ContactChange(KEY, KEY, "A", "Churn", False, "subscribed", frozenset({"W"}))) == {}
    yes = _store(tmp_path / "t.duckdb", [("A", KEY, "yes")], [("A", BEFORE, "completed")])
    assert _left(_config("unisender", "subscribed"), yes, joins) == {}


@pytest.mark.parametrize("mode", ["subscribed", "skip"])
def test_a_left_out_known_contact_keeps_his_removals_and_fields_not_what_subscribes(tmp_path, mode):
    """sync29 #1: only the subscribing part of a change the consent now refuses is left out: a known Unisender
    contact moving from list:A to list:W keeps his removal from list:A and his field update (never created:
    ``status_if_new`` None); a tag add that subscribes nobody goes on, except under ``skip`` (a *no* carries no
    managed tag). His change under its own owner; the contact still counted as skipped with the reason."""
    store = _store(tmp_path / "s.duckdb", [("A", KEY, "no")], [("A", BEFORE, "completed")])
    cfg = _config("unisender", mode)
    dest = cfg.destinations[0]
    move = ContactChange(KEY, KEY, "A", "Churn", False, "subscribed", frozenset({"list:W", "tag:vip"}),
                         frozenset({"list:A"}), {"rfm_code": "111"})
    plan = Plan(dest.name, dest.type, (move,), (), ("list:A", "list:W", "tag:vip"), {}, 0)
    plans, left = recheck_consent(cfg, plans=[plan], store=store, as_of=AS_OF)
    [rest] = plans[0].changes
    assert rest.remove_tags == {"list:A"} and rest.set_fields == {"rfm_code": "111"}
    assert rest.add_tags == (frozenset() if mode == "skip" else {"tag:vip"})
    assert rest.status_if_new is None and not rest.create
    assert [s.key for s in plans[0].skipped] == [KEY] and left[0].partly == 1
    went = "his tag/list removals and field updates" if mode == "skip" else \
        "his tag/list removals, field updates and tag/list adds"
    assert left[0].line().endswith(f"of him, 1 still has what subscribes nobody sent: {went}"), left[0].line()
    assert "nothing is recorded for them" not in left[0].line()
    # a new contact has nothing that goes on: his whole change is left out, as before
    new = ContactChange(KEY, KEY, "A", "Churn", True, "subscribed", frozenset({"list:W"}), frozenset(), {"x": 1})
    plans, left = recheck_consent(cfg, [Plan(dest.name, dest.type, (new,), (), ("list:W",), {}, 0)], store, AS_OF)
    assert plans[0].changes == () and left[0].partly == 0


def test_the_left_out_line_names_exactly_what_still_goes(tmp_path):
    """The warning says what of a left-out known contact's change is still sent, kind by kind: a Mailchimp
    contact whose update would have re-subscribed him keeps his field update and tag add (no removal to name)."""
    other = "other@x.io"
    store = _store(tmp_path / "s.duckdb", [("A", KEY, "no"), ("B", other, "no")], [])
    cfg = _config()
    dest = cfg.destinations[0]
    tagged = ContactChange(KEY, KEY, "A", "Churn", False, "subscribed", frozenset({"W"}), frozenset(), {"f": "1"})
    untagged = ContactChange(other, other, "B", "Churn", False, "subscribed", frozenset(), frozenset({"W"}),
                             {"f": "2"})

    def line(*changes: ContactChange) -> str:
        plan = Plan(dest.name, dest.type, changes, (), ("W",), {}, 0)
        _, left = recheck_consent(cfg, [plan], store, AS_OF)
        return left[0].line()

    one = line(tagged)
    assert one.endswith("; what it no longer allows is neither sent nor recorded, the next plan decides again; of "
                        "him, 1 still has what subscribes nobody sent: his field updates and tag/list adds"), one
    assert "removals" not in one
    two = line(tagged, untagged)
    assert two.endswith("of them, 2 still have what subscribes nobody sent: tag/list removals (1), field updates "
                        "(2), tag/list adds (1)"), two
