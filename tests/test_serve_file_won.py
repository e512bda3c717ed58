"""``file_won_records`` is pruned by the webhook resync once no webhook version older than a row can come, and an
older batch merged again while it still can is still left out."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from connectors.records import Order, OrderStatus
from sync.ledger import Ledger
from sync.pipeline import store_path
from sync.serve.resync import CLOCK_MARGIN, resync
from sync.settings import load_settings
from sync.store import open_store
from sync.store.webhooks import FILE_WON_TABLE, prune_file_won

try:
    from tests import ledger_fixtures, test_store_webhook_age as age
except ImportError:  # tests/ itself on sys.path
    import ledger_fixtures  # type: ignore[no-redef]
    import test_store_webhook_age as age  # type: ignore[no-redef]

clock, ledger_url = ledger_fixtures.clock, ledger_fixtures.ledger_url  # fixtures


def _file_won_shop(tmp_path):
    """A webhook order (accepted ``accepted``) that the next export then holds refunded: the export's read took it
    over (a ``file_won_records`` row as new as that read). Returns cfg, the batch, accepted, the read's time."""
    cfg, (oid, cid, at, amount) = age._ingested_shop(tmp_path)
    accepted = datetime.now(timezone.utc) - timedelta(hours=3)
    batch = [Order(oid, cid, at, amount, status=OrderStatus.COMPLETED)]
    age._webhook(cfg, batch, [], received_at=accepted)
    day1 = tmp_path / "shop" / "exports" / "2025-06-29.csv"
    lines = day1.read_text(encoding="utf-8-sig").splitlines()
    lines = [row.rsplit(";", 1)[0] + ";Возврат" if row.startswith(oid + ";") else row for row in lines]
    day1.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    age._ingest(cfg)
    with open_store(store_path(cfg)) as con:
        (read_at,), = con.execute(f"SELECT read_at FROM {FILE_WON_TABLE}").fetchall()
    assert age._state(cfg, oid, cid)[0] == [("refunded", 1)]
    return cfg, batch, accepted, read_at


def _rows(cfg) -> int:
    with open_store(store_path(cfg)) as con:
        return con.execute(f"SELECT count(*) FROM {FILE_WON_TABLE}").fetchall()[0][0]


def test_a_file_won_row_is_kept_while_an_older_batch_can_come_and_the_batch_still_loses(tmp_path):
    cfg, batch, accepted, read_at = _file_won_shop(tmp_path)
    with open_store(store_path(cfg)) as con:
        assert prune_file_won(con, accepted) == 0  # the older batch (accepted then) is still queued
    age._webhook(cfg, batch, [], received_at=accepted)  # re-claimed and merged again: left out
    assert age._state(cfg, batch[0].order_id, batch[0].customer_id)[0] == [("refunded", 1)]
    with open_store(store_path(cfg)) as con:
        assert prune_file_won(con, read_at - timedelta(seconds=1)) == 0
        assert prune_file_won(con, read_at) == 1  # nothing older than the read can come: useless now
    assert _rows(cfg) == 0


def test_the_webhook_resync_prunes_by_the_ledgers_oldest_unsettled_event(tmp_path):
    """The resync prunes with the ledger's oldest queued, processing or failed event (less an hour for the hosts'
    clocks): a failed event accepted before the read keeps the row (it can be replayed); once it is settled, the
    next resync an hour after the read drops it."""
    cfg, batch, accepted, read_at = _file_won_shop(tmp_path)
    settings = load_settings()
    later = read_at + CLOCK_MARGIN + timedelta(minutes=1)
    with Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}", clock=lambda: accepted) as ledger:
        ledger.enqueue_event("generic", "old", "[]")
        (ev,) = ledger.claim_events("w")
        ledger.fail_events([ev.id], "a bug", max_attempts=1, worker="w")  # failed, kept: it can be replayed
        resync(cfg, ledger, settings, as_of=age.AS_OF, now=lambda: later)
        assert _rows(cfg) == 1
        ledger.requeue_failed_events()
        (ev,) = ledger.claim_events("w")
        ledger.complete_events([ev.id], worker="w")
        resync(cfg, ledger, settings, as_of=age.AS_OF, now=lambda: read_at)  # within the clocks' margin: kept
        assert _rows(cfg) == 1
        resync(cfg, ledger, settings, as_of=age.AS_OF, now=lambda: later)
        assert _rows(cfg) == 0


def test_the_oldest_unsettled_event_counts_queued_processing_and_failed_ones_not_done(ledger_url, clock):
    with Ledger.connect(ledger_url, clock=clock) as ledger:
        assert ledger.oldest_unsettled() is None
        times = []
        for key in ("done", "failed", "processing", "queued"):
            times.append(clock())
            ledger.enqueue_event("generic", key, "[]")
            clock.advance(minutes=1)
        done, failed, processing, _ = ledger.claim_events("w", limit=3) + [None]
        ledger.complete_events([done.id], worker="w")
        assert ledger.oldest_unsettled() == times[1]
        ledger.fail_events([failed.id], "bug", max_attempts=1, worker="w")
        assert ledger.oldest_unsettled() == times[1]  # failed: it can be replayed
        ledger.complete_events([processing.id], worker="w")
        ledger.purge_events(timedelta(0))
        assert ledger.oldest_unsettled() == times[1]


def test_a_failed_event_holds_the_prune_for_the_requeue_window_only_and_a_held_prune_is_logged(tmp_path,
                                                                                                    caplog):
    """A failed event (a poison, a guard's refusal, a 6 h give-up) is never purged: it held the prune for ever.
    Within the requeue window (7 days) it holds it, with one WARNING once it is a day old; older, it no longer does
    (the row goes), and replaying it is refused unless forced (its version would undo the newer file's)."""
    import logging

    from sync.ledger.queue import REQUEUE_WINDOW

    cfg, _, _, read_at = _file_won_shop(tmp_path)
    settings = load_settings()
    failed_at = read_at - timedelta(days=2)
    wall = [failed_at]
    with Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}", clock=lambda: wall[0]) as ledger, \
            caplog.at_level(logging.WARNING):
        ledger.enqueue_event("generic", "poison", "[]")
        (ev,) = ledger.claim_events("w")
        ledger.fail_events([ev.id], "a bug", max_attempts=1, worker="w")
        wall[0] = read_at + CLOCK_MARGIN + timedelta(minutes=1)
        for _ in range(2):
            resync(cfg, ledger, settings, as_of=age.AS_OF, now=lambda: wall[0])
        assert _rows(cfg) == 1  # two days old: it can still be replayed, the row is kept
        assert caplog.text.count("keeps the file versions' ages read since") == 1
        wall[0] = failed_at + REQUEUE_WINDOW + timedelta(minutes=1)
        resync(cfg, ledger, settings, as_of=age.AS_OF, now=lambda: wall[0])
        assert _rows(cfg) == 0  # past the requeue window: it no longer holds the prune
        caplog.clear()
        with pytest.raises(ValueError, match=r"1 failed events were accepted more than 7 days ago .* nothing "
                                             r"requeued. requeue_failed_events\(force=True\) replays them anyway"):
            ledger.requeue_failed_events()
        assert ledger.event_counts()["failed"] == 1
        assert ledger.requeue_failed_events(force=True) == 1
        assert "1 of the 1 failed events replayed (forced) were accepted more than 7 days ago" in caplog.text


def test_the_oldest_unsettled_event_leaves_out_failed_ones_past_the_requeue_window(ledger_url, clock):
    from sync.ledger.queue import REQUEUE_WINDOW

    with Ledger.connect(ledger_url, clock=clock) as ledger:
        first = clock()
        ledger.enqueue_event("generic", "failed", "[]")
        (ev,) = ledger.claim_events("w")
        ledger.fail_events([ev.id], "bug", max_attempts=1, worker="w")
        clock.advance(days=1)
        queued_at = clock()
        ledger.enqueue_event("generic", "queued", "[]")
        assert ledger.oldest_unsettled() == first
        clock.advance(days=REQUEUE_WINDOW.days)
        assert ledger.oldest_unsettled() == queued_at
