"""review-order34: a guest record's time is not lent to a customer's older version of his own.

A record keyed by his e-mail (a guest order's contact) re-keyed to the customer in a webhook merge is another of the
vendor's objects than his contact: its times say nothing of his versions. When the batch also holds a version of
his own, that version is judged by its own times, against a guest's "no" folded into him before
(:func:`sync.store.ordering.keep_withdrawals`) and against his stored version
(:func:`sync.store.ordering.drop_older_versions`): else a later guest record gave his retried older "yes" its newer
time, and the "no" was lost."""

from __future__ import annotations

import pytest

from connectors.records import Consent, Contact
from tests.test_guest_registers_later import _con, _merge, _order, _state
from tests.test_guest_withdrawal_folds import ANNA, _at, _hook


def _his_older_yes_and_a_later_guest_record(con, guest_consent: Consent, guest_from: str = "shopify") -> None:
    """One batch accepted at 10:08: c9's own Shopify "yes" of 10:03 (held back or retried) and a guest order keyed
    by his e-mail with its contact dated 10:07 (by ``guest_from``'s clock) saying ``guest_consent``."""
    keys = [("order", "g2"), ("contact", ANNA), ("contact", "c9")]
    _merge(con, [_order("g2", ANNA, 3)],
           [Contact("c9", email=ANNA, marketing_consent=Consent.YES),
            Contact(ANNA, email=ANNA, marketing_consent=guest_consent)],
           received_at=dict.fromkeys(keys, _at(8)), versions={("contact", "c9"): _at(3), ("contact", ANNA): _at(7)},
           senders={("contact", "c9"): "shopify", ("contact", ANNA): guest_from, ("order", "g2"): guest_from})


@pytest.mark.parametrize("guest_consent", [Consent.UNKNOWN, Consent.YES])
@pytest.mark.parametrize("guest_from", ["generic", "shopify"])
def test_a_later_guest_record_of_his_does_not_lend_its_time_to_his_older_yes_against_a_guests_no(guest_consent,
                                                                                                  guest_from):
    """review-order34 MUST 1: c9 stored (a pull, "yes"); a guest's "no" (generic, 10:05, accepted 10:06) folds into
    him and is noted. Then his own "yes" of 10:03 (older than the "no") comes with a later guest record of his
    e-mail (10:07) saying nothing or yes (joining never subscribes): he stays "no", and the note stays."""
    con = _con()
    _merge(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], origin="pull")
    _hook(con, [_order("g1", ANNA, 2)], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)], 6, {ANNA: 5},
          "generic")
    assert _state(con)[1] == [("c9", ANNA, None, "no")]
    _his_older_yes_and_a_later_guest_record(con, guest_consent, guest_from)
    assert _state(con)[1] == [("c9", ANNA, None, "no")]
    assert con.execute("SELECT customer_id FROM guest_withdrawals").fetchall() == [("c9",)]


@pytest.mark.parametrize("stored_by", ["shopify", "generic"])
def test_his_own_stored_no_is_not_undone_by_his_older_yes_with_a_later_guest_record(stored_by):
    """review-order34 SHOULD (on main too): c9's own "no" (10:05, accepted 10:06) is stored. One batch: his "yes" of
    10:03 (retried) and a guest order of his e-mail whose contact (10:07) says nothing. His "yes" is older than the
    stored "no" by his own times: it is left out (the guest's time was lent to his id, and the "yes" won)."""
    con = _con()
    _hook(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.NO)], 6, {"c9": 5},
          stored_by)
    _his_older_yes_and_a_later_guest_record(con, Consent.UNKNOWN, stored_by)
    assert _state(con) == ({"c1": "c9", "g2": "c9"}, [("c9", ANNA, None, "no")])


def test_a_guests_no_in_the_batch_of_his_older_version_still_lands():
    """c9's "yes" (10:05) is stored. One batch: his "yes" of 10:03 (retried) and a guest order of his e-mail whose
    contact (10:07) says no. His version, older than the stored one, is left out by its own times, but the guest's
    "no" folded into it still lands (a stale version that withdraws still withdraws: webhooks.withdraw_late). A
    guard for the rule above: it passes without it too."""
    con = _con()
    _hook(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 6, {"c9": 5})
    _his_older_yes_and_a_later_guest_record(con, Consent.NO)
    assert _state(con) == ({"c1": "c9", "g2": "c9"}, [("c9", ANNA, None, "no")])




@pytest.mark.parametrize("stored", [True, False], ids=["customer-stored", "customer-new"])
def test_a_guests_no_in_the_batch_of_his_version_is_not_undone_by_his_older_yes_retried(stored):
    """(The reviewer's guard.) One batch: a guest's "no" (generic, 10:05) and c9's own "yes" (Shopify, 10:01): the
    "no" lands on his version. Then his Shopify "yes" of 10:03 (made before the "no"), retried and accepted later:
    he stays "no" (his version is noted with the guest's later time: nothing else notes a "no" folded so)."""
    con = _con()
    if stored:
        _merge(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], origin="pull")
    keys = [("order", "g1"), ("contact", ANNA), ("contact", "c9")] + ([] if stored else [("order", "c1")])
    _merge(con, [_order("g1", ANNA, 2)] + ([] if stored else [_order("c1", "c9")]),
           [Contact("c9", email=ANNA, marketing_consent=Consent.YES),
            Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)],
           received_at=dict.fromkeys(keys, _at(6)), versions={("contact", ANNA): _at(5), ("contact", "c9"): _at(1)},
           senders={("contact", ANNA): "generic", ("contact", "c9"): "shopify", ("order", "g1"): "generic",
                    ("order", "c1"): "shopify"})
    assert _state(con)[1] == [("c9", ANNA, None, "no")]
    _hook(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 8, {"c9": 3})
    assert _state(con)[1] == [("c9", ANNA, None, "no")]


def _batch_with_guest(con, accepted, his_vt, his_from, his_consent, guest_vt, guest_from, guest_consent):
    keys = [("order", "g2"), ("contact", ANNA), ("contact", "c9")]
    _merge(con, [_order("g2", ANNA, 3)],
           [Contact("c9", email=ANNA, marketing_consent=his_consent),
            Contact(ANNA, email=ANNA, marketing_consent=guest_consent)],
           received_at=dict.fromkeys(keys, _at(accepted)),
           versions={("contact", "c9"): _at(his_vt), ("contact", ANNA): _at(guest_vt)},
           senders={("contact", "c9"): his_from, ("contact", ANNA): guest_from, ("order", "g2"): guest_from})


@pytest.mark.parametrize("his_from", ["generic", "shopify"])
def test_a_guests_no_folded_into_his_stale_version_survives_his_next_version_older_than_it(his_from):
    """review-fixorder34 MUST 1 (fixorder34 made it): c9 stored "yes" (10:05). B1 (10:08): his retried "yes" of 10:03 + a guest "no" (generic, 10:07) of his
    e-mail: his version is stale, the "no" lands by withdraw_late. B2 (10:10): his "yes" of 10:06 - older than the
    guest's "no" (one clock when his_from=generic). Expected: "no"."""
    con = _con()
    _hook(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 6, {"c9": 5},
          his_from)
    _batch_with_guest(con, 8, 3, his_from, Consent.YES, 7, "generic", Consent.NO)
    assert _state(con)[1] == [("c9", ANNA, None, "no")]
    _hook(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 10, {"c9": 6}, his_from)
    assert _state(con)[1] == [("c9", ANNA, None, "no")]


@pytest.mark.parametrize("guest_from", ["generic", "shopify"])
def test_a_guest_orders_time_does_not_hold_his_no_against_his_later_real_yes(guest_from):
    """review-fixorder34 MUST 2 (on main before this session too): c9's own "no" (Shopify 10:02) stored. B1 (10:10): his "no" of 10:03 + a guest order of his e-mail whose
    contact (10:09) says nothing. B2 (10:12): his real "yes" of 10:06 (after each of his own versions). Expected:
    "yes" (docs/serve.md: the guest record 'lends that version none of its times')."""
    con = _con()
    _hook(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.NO)], 4, {"c9": 2})
    _batch_with_guest(con, 10, 3, "shopify", Consent.NO, 9, guest_from, Consent.UNKNOWN)
    _hook(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 12, {"c9": 6})
    assert _state(con)[1] == [("c9", ANNA, None, "yes")]
