"""The stale-data warning is judged on the purchases' dates (completed or refunded orders): a tombstone dated by
the vendor's modification time (an old deal deleted today) or a deal lost today is no purchase, and made a store
whose last purchase is months old look fresh."""

from __future__ import annotations

from datetime import timedelta

import responses

from sync.pipeline import stale_warning
from sync.store import merge_staged, open_store

from .test_amocrm import FakeAmo, T0, make_source

LATER = T0 + timedelta(days=100)


def test_an_old_lead_deleted_or_lost_today_does_not_hide_the_stale_data_warning():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock, open_store(None) as con:
        fake = FakeAmo(mock)
        fake.put_contact(10, "a@example.com", at=T0)
        for oid in (1, 2, 3):
            fake.put_order(oid, 10, "100", at=T0)
        first = make_source().pull(con)
        merge_staged(con, first, origin="pull")
        fake.delete_order(2, at=LATER)  # in the trash today: its tombstone is dated today
        fake.put_order(3, 10, "100", at=LATER, status_id=143)  # lost today (a cancelled order of today)
        second = make_source(clock=lambda: LATER + timedelta(hours=1)).pull(con, first.cursor)
        merge_staged(con, second, origin="pull")
        assert con.execute("SELECT max(ordered_at) FROM orders").fetchall() == [(LATER,)]
        warning = stale_warning(con, LATER.date(), "UTC", 30, LATER.date())
    assert warning is not None and f"the newest order is 100 days old ({T0.date()})" in warning


def test_the_warning_names_the_newest_purchase_not_a_newer_cancellation():
    from decimal import Decimal

    from connectors.non_purchase import tombstone
    from connectors.records import Order, OrderStatus
    from connectors.source import PullResult
    from connectors.tables import stage_records

    with open_store(None) as con:
        stage_records(con, [Order("1", "c1", T0, Decimal(10)), Order("2", "c1", T0 + timedelta(days=20), Decimal(5)),
                            Order("3", "c1", T0 + timedelta(days=25), Decimal(5), status=OrderStatus.CANCELLED)])
        merge_staged(con, PullResult(), origin="pull")
        stage_records(con, [tombstone("1", T0 + timedelta(days=30), "c1")])
        merge_staged(con, PullResult(), origin="pull")
        as_of = (T0 + timedelta(days=60)).date()
        assert stale_warning(con, as_of, "UTC", 30, as_of) is not None
        assert "the newest order is 40 days old" in stale_warning(con, as_of, "UTC", 30, as_of)
        fresh = (T0 + timedelta(days=50)).date()  # the purchase 30 days before: not stale
        assert stale_warning(con, fresh, "UTC", 30, fresh) is None
