"""What a RetailCRM pull tells its run start (:class:`connectors.runstart.RunStart`) of the CRM's clock: the
``createdAt`` of every row it reads (the CRM stamped it), whether or not the row becomes a record (another store's,
a bad row), and never a date a record got from this host (0045975)."""

from __future__ import annotations

import logging
from datetime import timedelta

import duckdb
import responses

from .test_crm_clock_skew import VendorClock
from .test_retailcrm import T0, FakeRetailCrm, make_source


def test_rows_of_another_store_still_tell_the_run_start_the_crm_s_clock(caplog):
    """A host 25 hours fast and a first customers page of another store's customers only (a CRM that ignores
    ``filter[sites][]``): their createdAt are the CRM's clock, so the page's Date, after them, is believed. Told only
    the records' dates, the run start knew no time the CRM stamped and took that Date, more than a day behind this
    host's, for a stale header (a false WARNING)."""
    host_start = T0 + timedelta(days=3)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeRetailCrm(rsps)
        fake.ignore_sites = True
        for cid in range(1, 21):
            fake.put_contact(cid, f"c{cid}@example.com", at=T0, site="other-shop")
        fake.put_contact(30, "ann@example.com", at=T0 + timedelta(hours=1))
        fake.put_order(1, 30, "100", at=T0 + timedelta(hours=1))
        VendorClock(rsps, host_start - timedelta(hours=25))
        with caplog.at_level(logging.WARNING, logger="connectors.runstart"):
            result = make_source(clock=lambda: host_start, site="shop-main").pull(duckdb.connect())
    assert (result.orders, result.contacts) == (1, 1)
    assert "retailcrm: this host's clock is 1500 minutes ahead of the vendor's" in caplog.text
    assert "Date header" not in caplog.text, caplog.text
