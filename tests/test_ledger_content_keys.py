"""The queue's dedupe beside an older intake's content-keyed events (sync/ledger/content_keys.py): per record, a key
of this version that only looks like a content key, an older intake's event committed late on PostgreSQL; on SQLite
and (with RFMSYNC_TEST_PG_URL) on PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Callable

import pytest
from sqlalchemy import create_engine, insert

from sync.ledger import Ledger
from sync.ledger.schema import events

try:
    from tests.ledger_fixtures import Clock, clock, ledger, ledger_url, open_ledger  # noqa: F401
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import Clock, clock, ledger, ledger_url, open_ledger  # type: ignore # noqa: F401

NO = '{"contacts":[{"customer_id":"5","marketing_consent":"no"}]}'
YES = '{"contacts":[{"customer_id":"5","marketing_consent":"yes"}],"orders":[]}'


def _content_key(key: str, payload: str) -> str:
    """An older intake's key (git show c954c4e^:sync/serve/webhooks.py ``_digest``)."""
    return f"{key}:{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


def test_a_key_of_this_intake_ending_in_a_colon_and_32_hex_leaves_the_dedupe_on(ledger: Ledger) -> None:
    """A generic customer id ``guest:<md5>`` (or an order id ``shop:<uuid hex>``) queued by this intake is no older
    intake's content key (its suffix is no digest of its payload): a retry of any record is still a repeat."""
    assert ledger.enqueue_event("generic", "order:1", "p") is True
    guest = "guest:" + hashlib.md5(b"a@example.com").hexdigest()
    assert ledger.enqueue_event("generic", f"contact:{guest}", "c") is True
    assert ledger.enqueue_event("generic", f"order:shop:{'ab' * 16}", "o") is True
    assert ledger.enqueue_event("generic", "order:1", "p") is False
    assert ledger.enqueue_event("generic", f"contact:{guest}", "c") is False
    assert ledger.enqueue_event("generic", f"order:shop:{'ab' * 16}", "o") is False


def test_an_older_intakes_copy_of_the_same_state_leaves_the_retry_a_repeat(ledger: Ledger) -> None:
    """Both intakes accepted one delivery (the older one's copy after this one's): the worker ends on that state
    either way, so a retry is a repeat; another state queued by the older one after it is not."""
    assert ledger.enqueue_event("generic", "contact:5", NO) is True
    assert ledger.enqueue_event("generic", _content_key("contact:5", NO), NO) is True
    assert ledger.enqueue_event("generic", "contact:5", NO) is False
    assert ledger.enqueue_event("generic", _content_key("contact:5", YES), YES) is True
    assert ledger.enqueue_event("generic", "contact:5", NO) is True


def _older_intake(ledger_url: str):  # type: ignore[no-untyped-def]
    return create_engine(ledger_url.replace("postgresql://", "postgresql+psycopg://", 1))


def _insert_older(conn, payload: str, key: str = "order:1") -> None:  # type: ignore[no-untyped-def]
    conn.execute(insert(events).values(source="generic", dedupe_key=_content_key(key, payload), payload=payload,
                                       status="queued", received_at=datetime.now(timezone.utc), attempts=0))


def test_an_older_intakes_event_committed_after_a_big_group_is_seen(ledger_url: str,  # noqa: F811
                                                                   open_ledger: Callable[..., Ledger]) -> None:
    """PostgreSQL: the older intake's yes takes its id after this intake's no, and commits after a group of 1 190
    records of this intake: the no delivered again is a withdrawal after the yes (it was dropped: the worker ended on
    yes). (The review's test_old_intake_row_committed_late_is_missed_for_good.)"""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("SQLite commits its ids in order")
    new = open_ledger()
    assert new.enqueue_event("generic", "contact:5", NO) is True
    old = _older_intake(ledger_url)
    try:
        with old.connect() as conn:
            tx = conn.begin()
            _insert_older(conn, YES)
            assert all(new.enqueue_events([("generic", f"order:{i}", f"p{i}") for i in range(10, 1200)]))
            assert new.enqueue_event("generic", "order:10", "p10") is False
            tx.commit()
    finally:
        old.dispose()
    assert new.enqueue_event("generic", "contact:5", NO) is True
    assert new.enqueue_event("generic", "contact:5", NO) is False


@pytest.mark.parametrize("key", ["contact:5", "order:1"])  # the contact's own event, or an order's carrying it
def test_an_older_intakes_earlier_event_processed_after_the_latest_is_seen(ledger: Ledger, key: str) -> None:
    """The older intake's yes is queued before this intake's no, but its worker's try fails and it waits its retry
    while the no is processed: the yes comes last, so the no delivered again is queued (it was dropped: the store
    kept yes). Without that failure the worker ends on the no, and the retry stays a repeat."""
    assert ledger.enqueue_event("generic", _content_key(key, YES), YES) is True
    assert ledger.enqueue_event("generic", "contact:5", NO) is True
    assert ledger.enqueue_event("generic", "contact:5", NO) is False  # both waiting: the yes, then the no
    older, latest = ledger.claim_events("w", limit=2)
    assert older.payload == YES and latest.payload == NO
    ledger.fail_events([older.id], "ESP down", worker="w")  # back to the queue, after the no
    ledger.complete_events([latest.id], worker="w")
    assert ledger.enqueue_event("generic", "contact:5", NO) is True


def test_an_older_intakes_event_committed_after_the_latest_was_processed_is_seen(
        ledger_url: str, open_ledger: Callable[..., Ledger]) -> None:  # noqa: F811
    """PostgreSQL: the older intake's yes takes its id before this intake's no and commits after a worker processed
    the no: the yes comes last, so the no delivered again is queued, not taken for the first no's repeat."""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("SQLite commits its ids in order")
    new = open_ledger()
    old = _older_intake(ledger_url)
    try:
        with old.connect() as conn:
            tx = conn.begin()
            _insert_older(conn, YES)
            assert new.enqueue_event("generic", "contact:5", NO) is True
            [latest] = new.claim_events("w", limit=5)
            new.complete_events([latest.id], worker="w")
            tx.commit()
    finally:
        old.dispose()
    assert new.enqueue_event("generic", "contact:5", NO) is True


def test_a_contacts_repeat_is_judged_however_many_events_came_after_its_latest(ledger: Ledger) -> None:
    """A contact's latest event followed by thousands of others: a retry of it is a repeat (the older intake's
    order events are read by their own index, not among the newest events), and an older intake's order event that
    carried another state of it, thousands of events later still, is found."""
    assert ledger.enqueue_event("generic", "contact:5", NO) is True
    assert all(ledger.enqueue_events([("generic", f"order:{i}", f"p{i}") for i in range(10, 2600)]))
    assert ledger.enqueue_event("generic", "contact:5", NO) is False
    assert ledger.enqueue_event("generic", _content_key("order:1", YES), YES) is True
    assert all(ledger.enqueue_events([("generic", f"order:{i}", f"p{i}") for i in range(3000, 5600)]))
    assert ledger.enqueue_event("generic", "contact:5", NO) is True
