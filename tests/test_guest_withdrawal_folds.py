"""guest33's review (must-fix 1-3): a customer's "no" given through records keyed by his e-mail or phone is not lost.

1. Several records folding into one customer in one merge (two keys of his, two rows of one key), in a webhook's
   merge (``link_staged``) and a file's full refresh (``apply_links``): each key's last row counts, and a "no" any of
   them gives for his e-mail lands, whatever their order (an ``UPDATE … FROM`` matching several rows kept any one).
2. A record keyed by his e-mail that gives no ``email`` field (a generic order's contact): its key is its address
   (end to end: test_guest_withdrawal.py's guest order ``[without-an-email-field]``).
3. A stored guest's "no" gives way to the consent his staged version registers with only when that version is the
   newer: by the vendor's times when both are known, else by acceptance (docs/serve.md "Deliveries out of order")."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from connectors.records import Consent, Contact
from tests.test_guest_registers_later import _con, _merge, _order, _state

UTC = timezone.utc
ANNA, PHONE = "anna@x.com", "+998901112233"
T0 = datetime(2025, 6, 29, 10, 0, tzinfo=UTC)


def _records(shape: str, first: Consent, then: Consent) -> list[Contact]:
    """Two records of Anna's in one batch: keyed by her e-mail and by her phone (giving her e-mail), or two rows
    keyed by her e-mail (two checkouts)."""
    second = Contact(PHONE, email=ANNA, phone=PHONE, marketing_consent=then) if shape == "two-keys" else \
        Contact(ANNA, email=ANNA, marketing_consent=then)
    return [Contact(ANNA, email=ANNA, marketing_consent=first), second]


@pytest.mark.parametrize("batch", ["stored-customer", "same-batch"])
@pytest.mark.parametrize("shape, first, then, expected", [
    ("two-keys", Consent.YES, Consent.NO, "no"), ("two-keys", Consent.NO, Consent.YES, "no"),
    ("one-key", Consent.YES, Consent.NO, "no"), ("one-key", Consent.NO, Consent.YES, "yes")],
    ids=["two-keys-yes-then-no", "two-keys-no-then-yes", "one-key-yes-then-no", "one-key-no-then-yes"])
def test_several_records_of_his_in_one_merge_a_no_for_his_e_mail_lands(batch, shape, first, then, expected):
    """Anna said yes. One webhook batch folds two records into her: a "no" for her e-mail lands whichever came
    first; two rows of one key count as that key's last row (a "yes" after a "no": its latest word, as for her own
    contact's rows)."""
    con = _con()
    customer = ([_order("c1", "c9")], [Contact("c9", email=ANNA, phone=PHONE, marketing_consent=Consent.YES)])
    guests = ([_order("g1", ANNA, 2), _order("g2", PHONE if shape == "two-keys" else ANNA, 3)],
              _records(shape, first, then))
    if batch == "same-batch":
        _merge(con, customer[0] + guests[0], customer[1] + guests[1])
    else:
        _merge(con, *customer)
        _merge(con, *guests)
    assert _state(con) == ({"c1": "c9", "g1": "c9", "g2": "c9"}, [("c9", ANNA, PHONE, expected)])


@pytest.mark.parametrize("first, then", [(Consent.YES, Consent.NO), (Consent.NO, Consent.YES)],
                         ids=["yes-then-no", "no-then-yes"])
def test_an_exports_two_guest_rows_of_his_on_the_full_refresh_a_no_lands(first, then):
    """A file's full refresh (apply_links): the export keys Anna's earlier guest orders by her e-mail and her phone
    again, one contact row of each, one saying no: she is "no", whichever row comes first."""
    con = _con()
    _merge(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, phone=PHONE, marketing_consent=Consent.YES)])
    _merge(con, [_order("g1", ANNA, 2), _order("g2", PHONE, 3)], [])  # webhook guest orders: linked, remembered
    _merge(con, [_order("g1", ANNA, 2), _order("g2", PHONE, 3)], _records("two-keys", first, then), origin="pull",
           full=True)
    assert _state(con) == ({"c1": "c9", "g1": "c9", "g2": "c9"}, [("c9", ANNA, PHONE, "no")])


def test_a_record_keyed_by_his_e_mail_without_an_email_field_withdraws_him():
    """A contact record keyed by Anna's e-mail whose e-mail field is empty (the key says it) says no: it lands."""
    con = _con()
    _merge(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)])
    _merge(con, [_order("g1", ANNA, 2)], [Contact(ANNA, marketing_consent=Consent.NO)])
    assert _state(con) == ({"c1": "c9", "g1": "c9"}, [("c9", ANNA, None, "no")])


@pytest.mark.parametrize("guest_vt, his_vt, his_accepted, expected", [
    (5, 0, 7, "no"),        # his registration of 10:00 delivered after the guest's "no" of 10:05: the no is newer
    (5, 10, 7, "yes"),      # he registered at 10:10 with yes, after the no: his word is the newer
    (5, 5, 7, "no"),        # the same second: the withdrawal is the newer (the safe side)
    (None, None, 7, "yes"),  # no vendor times: by acceptance, his is the newer
    (None, None, 4, "no"),   # accepted before the guest's "no" (his batch held up): the no is newer
    (5, None, 4, "no")],     # one vendor time only: by acceptance
    ids=["older-registration", "newer-registration", "same-second", "accepted-later", "accepted-earlier",
         "one-vendor-time"])
def test_a_stored_guests_no_gives_way_only_to_his_newer_registration(guest_vt, his_vt, his_accepted, expected):
    """A record keyed by anna@x.com said no (stored: nobody carried the address); then c9's registration record with
    that e-mail says yes: his "yes" stands only when his version is newer than the guest's "no"."""
    con = _con()
    at = (lambda m: None if m is None else T0 + timedelta(minutes=m))
    _merge(con, [_order("g1", ANNA, 2)], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)],
           received_at={("contact", ANNA): at(6), ("order", "g1"): at(6)}, versions={("contact", ANNA): at(guest_vt)})
    _merge(con, [_order("c1", "c9", 3)], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)],
           received_at={("contact", "c9"): at(his_accepted), ("order", "c1"): at(his_accepted)},
           versions={("contact", "c9"): at(his_vt)})
    assert _state(con) == ({"g1": "c9", "c1": "c9"}, [("c9", ANNA, None, expected)])


@pytest.mark.parametrize("guest_first", [False, True], ids=["same-batch", "guest-stored-first"])
def test_a_guests_yes_for_his_old_address_never_reaches_his_new_one(guest_first):
    """review-fixguest33 MUST 1: his two staged rows (old@x.com, then new@x.com, consent unknown) and a guest keyed
    old@x.com saying yes — the yes was given for old@x.com only, so the row the merge keeps (new@x.com) stays
    unknown. Grouping the fill by customer wrote the yes onto every row of his: new@x.com would be subscribed."""
    old, new = "old@x.com", "new@x.com"
    guest = Contact(old, email=old, marketing_consent=Consent.YES)
    his = [Contact("c9", email=old, marketing_consent=Consent.UNKNOWN),
           Contact("c9", email=new, marketing_consent=Consent.UNKNOWN)]
    con = _con()
    if guest_first:
        _merge(con, [_order("g1", old, 2)], [guest])
        _merge(con, [_order("c1", "c9")], his)
    else:
        _merge(con, [_order("c1", "c9"), _order("g1", old, 2)], [*his, guest])
    assert [(c, e, k) for c, e, _, k in _state(con)[1] if c == "c9"] == [("c9", new, "unknown")]


@pytest.mark.parametrize("guest_from, guest_vt, guest_accepted, expected", [
    ("generic", 0, 8, "no"),   # A's clock behind: dated before his 10:05 "yes" by it, accepted after his
    ("shopify", 0, 8, "yes"),  # one clock: his 10:05 registration is the newer word, however late it came
    ("generic", 6, 4, "no"),   # his 10:05 "yes" retried (accepted after the "no"), not newer by the times: the no
    ("generic", 5, 4, "no"),   # the same second on two clocks: the no (a tie)
    ("generic", 2, 4, "yes")],  # his version is the newer both ways
    ids=["other-sender-accepted-later", "same-sender-older", "other-sender-dated-later", "other-sender-same-second",
         "other-sender-older-both-ways"])
def test_a_stored_guests_no_and_his_registration_from_two_senders_are_not_ordered_by_their_clocks(
        guest_from, guest_vt, guest_accepted, expected):
    """review-fixguest33 SHOULD: a record keyed by anna@x.com says no (a generic sender's form, or a Shopify guest
    checkout); c9 registers with that e-mail saying yes on Shopify (vendor time 10:05, accepted 10:07, merged after
    the guest's: his batch held up). Two senders' clocks say nothing of each other: the "no" accepted after his
    version stands though the form's clock dated it earlier (before, his "yes" won by the vendor's times); one
    sender's times still order them."""
    con = _con()
    at = (lambda m: T0 + timedelta(minutes=m))
    _merge(con, [_order("g1", ANNA, 2)], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)],
           received_at={("contact", ANNA): at(guest_accepted), ("order", "g1"): at(guest_accepted)},
           versions={("contact", ANNA): at(guest_vt)}, senders={("contact", ANNA): guest_from})
    _merge(con, [_order("c1", "c9", 3)], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)],
           received_at={("contact", "c9"): at(7), ("order", "c1"): at(7)}, versions={("contact", "c9"): at(5)},
           senders={("contact", "c9"): "shopify", ("order", "c1"): "shopify"})
    assert _state(con) == ({"g1": "c9", "c1": "c9"}, [("c9", ANNA, None, expected)])


def _at(minutes: int | None) -> datetime | None:
    return None if minutes is None else T0 + timedelta(minutes=minutes)


def _hook(con, orders, contacts, accepted: int, vendor: dict[str, int | None], sender: str = "shopify") -> None:
    """A webhook merge: every record accepted at ``accepted`` (minutes after T0), from ``sender``; the contacts'
    vendor times by id (minutes)."""
    keys = [("order", o.order_id) for o in orders] + [("contact", c.customer_id) for c in contacts]
    _merge(con, orders, contacts, received_at=dict.fromkeys(keys, _at(accepted)),
           versions={("contact", i): _at(m) for i, m in vendor.items()}, senders=dict.fromkeys(keys, sender))


@pytest.mark.parametrize("stored_by", ["pull", "webhook"])
@pytest.mark.parametrize("his_vt, his_accepted, his_from, expected", [
    (3, 4, "shopify", "no"),    # his 10:03 "yes" held back (accepted before the 10:05 "no"), merged after it
    (3, 8, "shopify", "no"),    # his 10:03 "yes" retried, accepted after the "no": older by one clock
    (3, 8, "generic", "no"),    # another sender's, accepted after: not newer by the times (stored_newer's rule)
    (9, 10, "shopify", "yes"),  # he subscribed again at 10:09: the newer word
    (None, 8, "shopify", "yes")],  # no vendor time, accepted after the "no": by acceptance, the newer word
    ids=["held-back", "retried-after", "other-sender-retried-after", "newer", "untimed-later"])
def test_a_guests_no_folded_into_him_is_not_undone_by_an_older_version_of_his(stored_by, his_vt, his_accepted,
                                                                             his_from, expected):
    """c9 said yes (stored by a pull, or by a webhook dated 10:00); a record keyed by anna@x.com says no (Shopify,
    10:05, accepted 10:06) and folds into him. A version of his own saying yes that is not newer than that "no" (by
    the rule a stored guest's "no" meets his registration with: sync.store.ordering.stored_newer) keeps the "no";
    a newer one is his word. Before, the "no" was noted under him by its
    acceptance only, and his older "yes" was ordered against his own stored version: the withdrawal was lost."""
    con = _con()
    his = [Contact("c9", email=ANNA, marketing_consent=Consent.YES)]
    if stored_by == "pull":
        _merge(con, [_order("c1", "c9")], his, origin="pull")
    else:
        _hook(con, [_order("c1", "c9")], his, 1, {"c9": 0})
    _hook(con, [_order("g1", ANNA, 2)], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)], 6, {ANNA: 5})
    assert _state(con)[1] == [("c9", ANNA, None, "no")]
    _hook(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], his_accepted, {"c9": his_vt}, his_from)
    assert _state(con)[1] == [("c9", ANNA, None, expected)]


def test_a_stored_guests_no_landing_on_his_registration_is_not_undone_by_his_next_older_version():
    """The guest's "no" (10:05) is stored; his registration saying yes (10:03, accepted after) gets it (the no is
    newer); his 10:04 "yes", retried, is newer than his registration but not than the "no": he stays "no"."""
    con = _con()
    _hook(con, [_order("g1", ANNA, 2)], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)], 6, {ANNA: 5})
    _hook(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 7, {"c9": 3})
    assert _state(con)[1] == [("c9", ANNA, None, "no")]
    _hook(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 9, {"c9": 4})
    assert _state(con)[1] == [("c9", ANNA, None, "no")]


def test_a_guests_withdrawal_is_noted_until_his_newer_version_or_a_pull_of_him():
    """The note of a guest's "no" folded into c9 (guest_withdrawals): kept while his versions are older, dropped by
    his newer one (it orders them itself from then on) and by a sync's pull of him (the newest word)."""
    con = _con()
    _merge(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], origin="pull")
    _hook(con, [_order("g1", ANNA, 2)], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)], 6, {ANNA: 5},
          "generic")
    noted = [("c9", _at(6), _at(5), "generic")]
    assert con.execute("SELECT * FROM guest_withdrawals").fetchall() == noted
    _hook(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 8, {"c9": 3})
    assert con.execute("SELECT * FROM guest_withdrawals").fetchall() == noted
    _hook(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 10, {"c9": 9})
    assert con.execute("SELECT * FROM guest_withdrawals").fetchall() == []
    _hook(con, [_order("g2", ANNA, 3)], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)], 12, {ANNA: 11},
          "generic")
    _merge(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], origin="pull")
    assert con.execute("SELECT * FROM guest_withdrawals").fetchall() == []
    _hook(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 14, {"c9": 10})
    assert _state(con)[1] == [("c9", ANNA, None, "yes")]  # the pull's "yes" was the newest word (as before)


@pytest.mark.parametrize("crm_vt, expected", [(-60, "no"), (20, "yes"), (None, "yes")],
                         ids=["crm-time-before-the-no", "crm-time-after-the-no", "no-crm-time"])
def test_the_workers_pull_of_him_for_a_batch_is_ordered_against_the_guests_no(crm_vt, expected):
    """review-order34 MUST 2 (docs/sources/common.md): the pull the worker runs for a batch (an amoCRM lead event)
    merges as a webhook: its record of c9 has the pull's start (10:30) as its acceptance and the CRM's vendor time
    (sender: the CRM). Against a guest's "no" folded into him (generic, 10:05, accepted 10:06) it is ordered like
    his deliveries, not taken as the newest word as a sync's pull is: a CRM time older than the "no" keeps "no" and
    the note (the CRM never saw the form's "no"); a later one, or none (acceptance: the pull started after), is his
    word."""
    con = _con()
    _merge(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], origin="pull")
    _hook(con, [_order("g1", ANNA, 2)], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)], 6, {ANNA: 5},
          "generic")
    _merge(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)],
           received_at={("contact", "c9"): _at(30)}, versions={("contact", "c9"): _at(crm_vt)},
           senders={("contact", "c9"): "amocrm"})
    assert _state(con)[1] == [("c9", ANNA, None, expected)]
    noted = con.execute("SELECT customer_id FROM guest_withdrawals").fetchall()
    assert noted == ([("c9",)] if expected == "no" else [])


def test_a_yes_kept_no_by_a_guests_withdrawal_is_logged_without_addresses(caplog):
    """review-order34 SHOULD: when a guest's "no" folded into c9 turns his older staged "yes" into "no", an INFO
    line says how many and the first customer's id (no e-mail address); his newer "yes" logs nothing of it."""
    con = _con()
    with caplog.at_level(logging.INFO):
        _merge(con, [_order("c1", "c9")], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], origin="pull")
        _hook(con, [_order("g1", ANNA, 2)], [Contact(ANNA, email=ANNA, marketing_consent=Consent.NO)], 6, {ANNA: 5})
        _hook(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 8, {"c9": 3})
        _hook(con, [], [Contact("c9", email=ANNA, marketing_consent=Consent.YES)], 10, {"c9": 9})
    kept = [r for r in caplog.records if 'kept "no"' in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in kept] == [
        (logging.INFO, 'webhook merge: 1 contact version(s) saying yes kept "no" (e.g. customer c9): not newer than '
                       "a guest's withdrawal folded into the customer")]
    assert not [r for r in caplog.records if ANNA in r.getMessage()]
    assert _state(con)[1] == [("c9", ANNA, None, "yes")]
