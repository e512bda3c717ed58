"""The vendor's clock against the hosts': a pull's start is never taken for a vendor time (a withdrawal the vendor
dated before it, accepted after it, is applied), and a vendor time in the future is not taken for the version's."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from connectors.records import Consent, Contact, Order, OrderStatus
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.ledger.codec import encode_records
from sync.ledger.queue import Event
from sync.serve.batches import _batch
from sync.serve.generic import BadRequest, parse_generic
from sync.serve.resync_staging import coalesce_webhook_contacts
from sync.pipeline import store_path
from sync.store import merge_staged, open_store
from tests import test_store_webhook_age as age
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


def test_a_vendor_time_in_the_future_does_not_freeze_the_record(caplog):
    """A sender's clock a year ahead: its version is ordered by acceptance (logged), so the withdrawal that follows
    (timed correctly) is applied."""
    with open_store(None) as con:
        _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.YES, updated_at=T + timedelta(days=365))],
               accepted=T)
        assert con.execute("SELECT updated_at FROM webhook_records").fetchall() == [(None,)]
        assert "later than its acceptance: ignored" in caplog.text
        _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.NO, updated_at=T + 2 * S)], accepted=T + 3 * S)
        assert _consent(con) == "no"
        _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.YES, updated_at=T + 4 * 60 * S)],
               accepted=T)  # a few minutes ahead of its acceptance: within the margin, taken
        assert _consent(con) == "yes"


def test_the_generic_payload_refuses_an_updated_at_in_the_future_naming_the_field():
    body = {"order_id": "O-1", "customer_id": "C-1", "ordered_at": "2025-06-01T10:00:00Z", "amount": "10",
            "contact": {"marketing_consent": "no"}}
    ahead = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    for bad in ({**body, "updated_at": ahead}, {**body, "contact": {"marketing_consent": "no", "updated_at": ahead}}):
        with pytest.raises(BadRequest, match=r"updated_at: .* is in the future") as refused:
            parse_generic(json.dumps(bad).encode())
        assert refused.value.status == 400
    soon = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()  # a clock a minute fast: accepted
    [(order, _)] = parse_generic(json.dumps({**body, "updated_at": soon}).encode())
    assert order.updated_at == datetime.fromisoformat(soon)


def test_a_vendor_delivery_with_a_time_in_the_future_is_taken_untimed_and_logged(caplog):
    from connectors.shopify import parse_webhook as shopify_parse

    ahead = (datetime.now(timezone.utc) + timedelta(days=2)).isoformat()
    _, [customer] = shopify_parse({"X-Shopify-Topic": "customers/update"},
                                  json.dumps({"id": 7, "updated_at": ahead}).encode())
    assert customer.customer_id == "7" and customer.updated_at is None
    assert "is in the future: ignored" in caplog.text


def test_equal_vendor_times_keep_a_contacts_withdrawal_whichever_was_accepted_first():
    """Two edits in one second: a `yes` retried after the `no` does not give the consent back; a `no` merged after
    the `yes` it was accepted before (a re-claimed batch) still withdraws it."""
    with open_store(None) as con:
        _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.NO, updated_at=T)], accepted=T + S)
        left = _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.YES, updated_at=T)], accepted=T + 2 * S)
        assert _consent(con) == "no" and left["stale_contacts"] == 1
    with open_store(None) as con:
        _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.YES, updated_at=T)], accepted=T + 2 * S)
        _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.NO, updated_at=T)], accepted=T + S)
        assert _consent(con) == "no"
        _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.YES, updated_at=T + S)], accepted=T + 3 * S)
        assert _consent(con) == "yes"  # a later edit: applied


def _parts(versions):
    return [(Event(i, "generic", f"k{i}", encode_records((), [c]), T + i * S, 1), [], [c], False)
            for i, c in enumerate(versions)]


def test_equal_vendor_times_in_one_batch_keep_the_withdrawal():
    batch = _batch(_parts([Contact("C-1", marketing_consent=Consent.NO, updated_at=T),
                           Contact("C-1", marketing_consent=Consent.YES, updated_at=T)]))
    assert [c.marketing_consent for c in batch.contacts] == [Consent.NO] and batch.stale == {"contact": 1}


def test_a_shopify_customer_is_versioned_by_the_later_of_updated_at_and_its_consent_time():
    from connectors.shopify import parse_webhook as shopify_parse

    def parse(payload):
        return shopify_parse({"X-Shopify-Topic": "customers/update"}, json.dumps({"id": 7, **payload}).encode())[1][0]

    consent = {"state": "unsubscribed", "opt_in_level": None, "consent_updated_at": "2025-06-29T10:00:07Z"}
    later = parse({"updated_at": "2025-06-29T10:00:05Z", "email_marketing_consent": consent})
    assert later.updated_at == T + 7 * S and later.marketing_consent is Consent.NO
    assert parse({"updated_at": "2025-06-29T10:00:09Z", "email_marketing_consent": consent}).updated_at == T + 9 * S
    unset = {**consent, "consent_updated_at": None}
    assert parse({"updated_at": "2025-06-29T10:00:05Z", "email_marketing_consent": unset}).updated_at == T + 5 * S


def test_in_one_batch_an_untimed_version_is_as_new_as_the_timed_one_it_replaces_but_is_staged_untimed():
    """`yes`@10:05, `no` (untimed, accepted after), `yes`@10:00 retried: as across batches, the untimed `no` counts
    as at least as new as 10:05, so the retried `yes` is left out; the `no` is staged without a time, so the store
    orders it by its acceptance (given 10:05, it lost to a stored `yes` of 10:05: the next test)."""
    batch = _batch(_parts([Contact("C-1", marketing_consent=Consent.YES, updated_at=T + 300 * S),
                           Contact("C-1", marketing_consent=Consent.NO),
                           Contact("C-1", marketing_consent=Consent.YES, updated_at=T)]))
    assert [(c.marketing_consent, c.updated_at) for c in batch.contacts] == [(Consent.NO, None)]
    assert batch.stale == {"contact": 1}


def _worker_merge(con, versions_accepted):
    """A worker's batch of these (contact, accepted) events, staged and merged as the resync's store step does."""
    parts = [(Event(i, "generic", f"k{i}", encode_records((), [c]), at, 1), [], [c], False)
             for i, (c, at) in enumerate(versions_accepted)]
    batch = _batch(parts)
    stage_records(con, (), batch.contacts)
    coalesce_webhook_contacts(con)
    versions = {("contact", c.customer_id): c.updated_at for c in batch.contacts if c.updated_at}
    return merge_staged(con, PullResult(), origin="webhook", received_at=dict(batch.ages), versions=versions)


def _consent(con) -> str:
    return con.execute("SELECT marketing_consent FROM contacts").fetchall()[0][0]


def test_an_untimed_withdrawal_accepted_last_in_a_batch_with_an_old_retry_is_applied():
    """Stored: `yes`@10:05. One batch: an old `yes`@10:00 retried, then a `no` without a vendor time (a generic
    payload without updated_at, or a vendor time past the future margin) accepted last: `no`, as in a batch of its
    own (the review of fix52: the `no` took 10:00 from the retry in the batch and lost to the stored 10:05)."""
    with open_store(None) as con:
        _worker_merge(con, [(Contact("C-1", marketing_consent=Consent.YES, updated_at=T + 300 * S), T + 301 * S)])
        _worker_merge(con, [(Contact("C-1", marketing_consent=Consent.YES, updated_at=T), T + 400 * S),
                            (Contact("C-1", marketing_consent=Consent.NO), T + 401 * S)])
        assert _consent(con) == "no"


@pytest.mark.parametrize("one_batch", [False, True])
def test_a_later_edit_that_says_nothing_of_consent_does_not_hide_an_older_withdrawal(one_batch):
    """Stored `yes`@10:00. The sender withdraws at 10:00:02 and edits the name at 10:00:03 (no marketing_consent:
    keep the stored one); the edit is delivered first, the withdrawal after (a retry). The withdrawal is stale by
    the vendor's time, yet it still withdraws: `no` (never subscribe on a doubt), in separate batches and in one."""
    edit, withdrawal = (Contact("C-1", first_name="Ann", updated_at=T + 3 * S), T + 4 * S), \
        (Contact("C-1", marketing_consent=Consent.NO, updated_at=T + 2 * S), T + 9 * S)
    with open_store(None) as con:
        _worker_merge(con, [(Contact("C-1", marketing_consent=Consent.YES, updated_at=T), T + S)])
        counts = [_worker_merge(con, [edit, withdrawal])] if one_batch else [_worker_merge(con, [edit]),
                                                                            _worker_merge(con, [withdrawal])]
        assert _consent(con) == "no"
        assert con.execute("SELECT first_name FROM contacts").fetchall()[0][0] == "Ann"  # the edit is kept
        if not one_batch:
            assert counts[-1].get("stale_contacts") == 1


def _hook(cfg, order: Order, accepted: datetime) -> dict[str, int]:
    with open_store(store_path(cfg)) as con:
        stage_records(con, [order], [])
        return merge_staged(con, PullResult(), origin="webhook", received_at={("order", order.order_id): accepted},
                            versions={("order", order.order_id): order.updated_at},
                            senders={("order", order.order_id): "generic"})


def test_an_export_file_taking_a_record_over_keeps_its_webhook_versions_vendor_time(tmp_path):
    """A webhook refund (vendor time 3 h ago) is stored; the next export, read after it, holds it refunded too and
    takes it over (noting that time and its sender). The 'paid' delivery the vendor made before the refund, retried
    and accepted after that read, is older than the version the file replaced: left out. One the vendor made later
    but accepted before the read is older than the file (read after it): left out too."""
    cfg, (oid, cid, at, amount) = age._ingested_shop(tmp_path)
    now = datetime.now(timezone.utc)
    _hook(cfg, Order(oid, cid, at, amount, status=OrderStatus.REFUNDED, updated_at=now - timedelta(hours=3)),
          now - timedelta(hours=3))
    day1 = tmp_path / "shop" / "exports" / "2025-06-29.csv"
    lines = [r.rsplit(";", 1)[0] + ";Возврат" if r.startswith(oid + ";") else r
             for r in day1.read_text(encoding="utf-8-sig").splitlines()]
    day1.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    age._ingest(cfg)
    assert age._state(cfg, oid, cid)[0] == [("refunded", 1)]
    with open_store(store_path(cfg)) as con:  # the vendor time taken over with its sender (whose clock it is)
        assert con.execute("SELECT id, updated_at, sender FROM file_won_records").fetchall() == [
            (oid, now - timedelta(hours=3), "generic")]
    paid = Order(oid, cid, at, amount, status=OrderStatus.COMPLETED, updated_at=now - timedelta(hours=4))
    assert _hook(cfg, paid, datetime.now(timezone.utc))["stale_orders"] == 1
    held_up = Order(oid, cid, at, amount, status=OrderStatus.COMPLETED, updated_at=now - timedelta(hours=2))
    assert _hook(cfg, held_up, now - timedelta(hours=1))["stale_orders"] == 1
    assert age._state(cfg, oid, cid)[0] == [("refunded", 1)]


def test_an_order_store_written_before_file_won_records_kept_a_vendor_time_gets_the_column(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:  # the table as released before
        con.execute("CREATE TABLE file_won_records (kind VARCHAR NOT NULL, id VARCHAR NOT NULL, "
                    "read_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (kind, id))")
        con.execute("INSERT INTO file_won_records VALUES ('contact', 'C-1', ?)", [T])
    with open_store(path) as con:
        left = _merge(con, contacts=[Contact("C-1", marketing_consent=Consent.YES, updated_at=T)], accepted=T - S)
        assert left["stale_contacts"] == 1  # older than the file's read
        assert con.execute("SELECT id, read_at, updated_at FROM file_won_records").fetchall() == [("C-1", T, None)]
