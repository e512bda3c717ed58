"""A sync whose order store moved while it waited for the destination lock (a pull or a webhook merge, the ledger
not moved) applies its plan without the merged customers: the ledger writes that plan leaves until it is applied
(a moot failed upsert, an unwanted kept-out row) are made all the same (they were dropped with the plan's
narrowing: a busy shop's scheduled syncs never forgot them)."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from connectors.records import Order
from sync.config import load_config
from sync.ledger import open_ledger
from sync.model import ItemResult
from sync.settings import load_settings
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_replan_after_later_run import _sync, shop  # noqa: F401
from tests.test_sync_store_moved import _pulled, _winback
from tests.test_worker import DEST


def _pending(path):
    with open_ledger(load_config(path), load_settings()) as ledger:
        return sorted((f["key"], f["op"]) for f in ledger.pending_failures(DEST))


@pytest.mark.parametrize("moved", [False, True])
def test_moot_upsert_forgotten_by_the_sync_even_when_the_store_moved(shop, mailchimp_fake, moved):  # noqa: F811
    x, y = _winback(shop, 2)
    with open_ledger(load_config(shop), load_settings()) as ledger:
        ledger.record_failures(DEST, None, [ItemResult(x.key, "upsert", False, "HTTP 200: an HTML page")])
    assert (x.key, "upsert") in _pending(shop)
    pulled = Order(order_id="PULL-1", customer_id=y.customer_id, amount=Decimal("5"),
                   ordered_at=datetime(2025, 6, 29, 8, tzinfo=timezone.utc))
    _sync(shop, (lambda ledger: _pulled(shop, [pulled])) if moved else None)
    assert (x.key, "upsert") not in _pending(shop)
