"""One record's versions from two senders (a form posting a CRM customer's id to ``/webhooks/generic``, and the
CRM's own webhook): their vendor times are two clocks, so a contact's stored "no" against the other sender's version
that does not say "no" is kept when accepted later or not older by the times (sync.store.ordering.drop_older_versions,
TWO_SENDERS). Before, the times were compared as one clock: a sender whose clock ran ahead held its older "yes"
against a "no". Anything else keeps one clock (the record's latest vendor time): a sender's retried older version
after another sender's stays out."""

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


def test_an_older_yes_from_a_sender_whose_clock_is_ahead_does_not_undo_a_no():
    """The form's "no" at 10:00 (accepted 10:00:01); Shopify's "yes" made before it but dated 10:00:30 by its clock
    ahead, held back and merged after the "no" though accepted before it (10:00:00.5): the "no" is newer by
    acceptance, so the "yes" is left out. Compared as one clock the "yes" was newer and subscribed him again."""
    with open_store(None) as con:
        _merge(con, "generic", accepted=T + S, contacts=[_contact(Consent.NO, T)])
        left = _merge(con, "shopify", accepted=T + S / 2, contacts=[_contact(Consent.YES, T + 30 * S)])
        assert _consent(con) == "no" and left.get("stale_contacts") == 1


def test_one_senders_versions_are_still_ordered_by_its_clock():
    """The same sender: its vendor times are one clock, a version it dated earlier is older whatever the
    acceptance."""
    with open_store(None) as con:
        _merge(con, "shopify", accepted=T, contacts=[_contact(Consent.YES, T + 60 * S)])
        left = _merge(con, "shopify", accepted=T + 90 * S, contacts=[_contact(Consent.YES, T + 30 * S)])
        assert left.get("stale_contacts") == 1


def _order(status: OrderStatus, at: datetime) -> Order:
    return Order("O-1", "C-1", DAY, Decimal("0" if status is OrderStatus.REFUNDED else "100"), status=status,
                 updated_at=at)


def test_a_senders_retried_older_order_after_another_senders_version_stays_out():
    """review-self36: every clock right. Shopify refunds O-1 (10:20), the shop's form sends its version (10:22),
    then Shopify retries its older "paid" (10:15, accepted 10:25): older by the record's latest time, left out;
    ordering two senders' versions by acceptance had taken it (the refund undone)."""
    with open_store(None) as con:
        _merge(con, "shopify", accepted=T + 20 * 60 * S, orders=[_order(OrderStatus.REFUNDED, T + 20 * 60 * S)])
        _merge(con, "generic", accepted=T + 22 * 60 * S, orders=[_order(OrderStatus.REFUNDED, T + 22 * 60 * S)])
        left = _merge(con, "shopify", accepted=T + 25 * 60 * S, orders=[_order(OrderStatus.COMPLETED, T + 15 * 60 * S)])
        assert con.execute("SELECT status FROM orders WHERE order_id = 'O-1'").fetchone()[0] == "refunded"
        assert left.get("stale_orders") == 1


def test_a_senders_retried_older_contact_after_another_senders_yes_stays_out():
    """review-self36: Shopify's new address (10:20), the form's "yes" (10:22), Shopify's older version retried
    (10:15, old address, accepted 10:25): left out, his new address stays."""
    with open_store(None) as con:
        _merge(con, "shopify", accepted=T + 20 * 60 * S, contacts=[_contact(Consent.YES, T + 20 * 60 * S)])
        _merge(con, "generic", accepted=T + 22 * 60 * S, contacts=[_contact(Consent.YES, T + 22 * 60 * S)])
        old = Contact("C-1", email="ann@old.example", marketing_consent=Consent.YES, updated_at=T + 15 * 60 * S)
        left = _merge(con, "shopify", accepted=T + 25 * 60 * S, contacts=[old])
        assert left.get("stale_contacts") == 1
        assert con.execute("SELECT email FROM contacts WHERE customer_id = 'C-1'").fetchone()[0] == "ann@example.com"
