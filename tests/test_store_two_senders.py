"""One record's versions from two senders (a form posting a CRM customer's id to ``/webhooks/generic``, and the
CRM's own webhook): their vendor times are two clocks, so the store orders them by acceptance, and a contact's "no"
against the other sender's "yes" is kept on a doubt (sync.store.ordering.drop_older_versions, TWO_SENDERS). Before,
the vendor times were compared as one clock: a sender whose clock ran ahead held its "yes" against a later "no"."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from connectors.records import Consent, Contact, Order, OrderStatus
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.store import merge_staged, open_store

T = datetime(2025, 6, 29, 10, 0, tzinfo=timezone.utc)
S = timedelta(seconds=1)
DAY = datetime(2025, 6, 1, tzinfo=timezone.utc)


def _merge(con, sender: str, *, accepted: datetime, orders=(), contacts=()) -> dict[str, int]:
    stage_records(con, orders, contacts)
    keys = [("order", o.order_id) for o in orders] + [("contact", c.customer_id) for c in contacts]
    versions = {("order", o.order_id): o.updated_at for o in orders if o.updated_at} | {
        ("contact", c.customer_id): c.updated_at for c in contacts if c.updated_at}
    return merge_staged(con, PullResult(), origin="webhook", received_at=dict.fromkeys(keys, accepted),
                        versions=versions, senders=dict.fromkeys(keys, sender))


def _consent(con) -> str:
    return con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = 'C-1'").fetchall()[0][0]


def _contact(consent: Consent, at: datetime) -> Contact:
    return Contact("C-1", email="ann@example.com", marketing_consent=consent, updated_at=at)


def test_a_later_edit_from_a_sender_whose_clock_is_behind_is_merged():
    """Shopify's version dated 10:05 by a clock five minutes ahead (made 10:00, accepted 10:00:01); the shop's form
    sends his new address and "no" at 10:01 (its clock right), accepted 10:01:01: merged whole. Compared as one clock
    it was older and left out (its "no" still withdrew, as any stale "no" does; his new address was lost)."""
    with open_store(None) as con:
        _merge(con, "shopify", accepted=T + S, contacts=[_contact(Consent.YES, T + 5 * 60 * S)])
        new = Contact("C-1", email="ann@new.example", marketing_consent=Consent.NO, updated_at=T + 60 * S)
        left = _merge(con, "generic", accepted=T + 61 * S, contacts=[new])
        assert _consent(con) == "no" and "stale_contacts" not in left
        assert con.execute("SELECT email FROM contacts WHERE customer_id = 'C-1'").fetchone()[0] == "ann@new.example"


def test_an_older_yes_from_a_sender_whose_clock_is_ahead_does_not_undo_a_no():
    """The form's "no" at 10:00 (accepted 10:00:01); Shopify's "yes" made before it but dated 10:00:30 by its clock
    ahead, held back and merged after the "no" though accepted before it (10:00:00.5): the "no" is newer by
    acceptance, so the "yes" is left out. Compared as one clock the "yes" was newer and subscribed him again."""
    with open_store(None) as con:
        _merge(con, "generic", accepted=T + S, contacts=[_contact(Consent.NO, T)])
        left = _merge(con, "shopify", accepted=T + S / 2, contacts=[_contact(Consent.YES, T + 30 * S)])
        assert _consent(con) == "no" and left.get("stale_contacts") == 1


def test_a_version_older_by_acceptance_from_another_sender_is_left_out():
    """Acceptance decides between two senders: a version of the form's accepted before the stored Shopify one is
    older whatever the clocks say (its "no" still withdraws, as any stale "no" does; its other changes are left out)."""
    with open_store(None) as con:
        _merge(con, "shopify", accepted=T + 10 * S, contacts=[_contact(Consent.YES, T)])
        old = Contact("C-1", email="ann@old.example", marketing_consent=Consent.NO, updated_at=T + 60 * S)
        left = _merge(con, "generic", accepted=T, contacts=[old])
        assert left.get("stale_contacts") == 1 and _consent(con) == "no"
        assert con.execute("SELECT email FROM contacts WHERE customer_id = 'C-1'").fetchone()[0] == "ann@example.com"


def test_one_senders_versions_are_still_ordered_by_its_clock():
    """The same sender: its vendor times are one clock, a version it dated earlier is older whatever the
    acceptance."""
    with open_store(None) as con:
        _merge(con, "shopify", accepted=T, contacts=[_contact(Consent.YES, T + 60 * S)])
        left = _merge(con, "shopify", accepted=T + 90 * S, contacts=[_contact(Consent.YES, T + 30 * S)])
        assert left.get("stale_contacts") == 1


def test_an_orders_versions_from_two_senders_are_ordered_by_acceptance():
    """Order O-1 refunded by one sender (dated 10:05 by a clock ahead, accepted 10:00) and completed by another
    (10:01, accepted 10:02): the one accepted last is the store's; compared as one clock the refund stayed."""
    def order(status: OrderStatus, at: datetime) -> Order:
        return Order("O-1", "C-1", DAY, Decimal("0" if status is OrderStatus.REFUNDED else "100"), status=status,
                     updated_at=at)
    with open_store(None) as con:
        _merge(con, "shopify", accepted=T, orders=[order(OrderStatus.REFUNDED, T + 5 * 60 * S)])
        left = _merge(con, "generic", accepted=T + 120 * S, orders=[order(OrderStatus.COMPLETED, T + 60 * S)])
        assert con.execute("SELECT status FROM orders WHERE order_id = 'O-1'").fetchone()[0] == "completed"
        assert "stale_orders" not in left
