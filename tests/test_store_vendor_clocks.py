"""The vendor's clock against the hosts': a pull's start is never taken for a vendor time (a withdrawal the vendor
dated before it, accepted after it, is applied)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from connectors.records import Consent, Contact
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.store import merge_staged, open_store
from tests.test_store_webhook_versions import _merge

T = datetime(2025, 6, 29, 10, 0, tzinfo=timezone.utc)
S = timedelta(seconds=1)


def _consent(con) -> str:
    return con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = 'C-1'").fetchall()[0][0]


def _pull(con, contacts, pulled_at: datetime) -> None:
    stage_records(con, (), contacts)
    merge_staged(con, PullResult(), origin="pull", pulled_at=pulled_at)


def test_a_withdrawal_dated_in_the_second_a_pull_started_is_applied():
    """amoCRM dates in whole seconds: the pull starts at 10:00:00.4 (still `yes`), the contact withdraws at
    10:00:00.6 (vendor time 10:00:00), delivered at 10:00:02."""
    with open_store(None) as con:
        _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.YES, updated_at=T - 60 * S)],
               accepted=T - 60 * S)
        _pull(con, [Contact("C-1", marketing_consent=Consent.YES)], pulled_at=T + timedelta(milliseconds=400))
        left = _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.NO, updated_at=T)], accepted=T + 2 * S)
        assert _consent(con) == "no" and "stale_contacts" not in left


def test_a_withdrawal_from_a_vendor_clock_behind_the_hosts_is_applied():
    """The vendor's clock 30 s behind: a withdrawal made 10 s after the pull started reads 20 s before it."""
    with open_store(None) as con:
        _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.YES, updated_at=T - 600 * S)],
               accepted=T - 600 * S)
        _pull(con, [Contact("C-1", marketing_consent=Consent.YES)], pulled_at=T)
        assert con.execute("SELECT updated_at FROM webhook_records").fetchall() == [(None,)]
        _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.NO, updated_at=T - 20 * S)],
               accepted=T + 11 * S)
        assert _consent(con) == "no"
