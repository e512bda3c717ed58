"""A sync's forgets (moot upserts, kept-out rows) run after a killed run's in-flight operations became pending
failures (``doubt_in_flight``), also when the sync planned again under the lock because the order store or the
ledger moved while it waited: a re-plan hands its forgets back to the apply instead of running them at once (they
ran before the doubts were pending, and the killed run's moot upsert stayed pending one more sync)."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from connectors.records import Order
from sync.config import load_config
from sync.ledger import open_ledger
from sync.settings import load_settings
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_replan_after_later_run import _sync, shop  # noqa: F401
from tests.test_sync_store_moved import _pulled, _winback
from tests.test_worker import DEST


GONE = "left.long.ago@example.org"


def _pending(path):
    with open_ledger(load_config(path), load_settings()) as ledger:
        return sorted((f["key"], f["op"]) for f in ledger.pending_failures(DEST))


@pytest.mark.parametrize("moved", [False, True, "ledger"])
def test_a_killed_runs_moot_upsert_is_forgotten_by_the_next_sync_replanned_or_not(shop, mailchimp_fake, moved):  # noqa: F811
    x, y = _winback(shop, 2)
    with open_ledger(load_config(shop), load_settings()) as ledger:
        dead = ledger.start_run("sync", DEST)
        ledger.note_in_flight(DEST, dead, {"upsert": [GONE]})
        ledger.interrupt_run(dead, {}, "interrupted by Ctrl-C (SIGINT)")
        assert (GONE, "upsert") in ledger.doubted_ops(DEST)
    pulled = Order(order_id="PULL-1", customer_id=y.customer_id, amount=Decimal("5"),
                   ordered_at=datetime(2025, 6, 29, 8, tzinfo=timezone.utc))
    _sync(shop, (lambda ledger: ledger.forget(DEST, [y.key])) if moved == "ledger" else
          (lambda ledger: _pulled(shop, [pulled])) if moved else None)
    assert (GONE, "upsert") not in _pending(shop)
