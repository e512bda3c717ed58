"""A ledger restored from a backup while a full sync waits for a destination's lock, and another host's resync
writing a contact after the restore: its row's revision is numbered again from the restored counter, at or below
the revision the sync planned at, so ``Ledger.written_since(first plan's revision)`` does not name it and the
sync's re-plan (made from rows read before the resync's order) would undo what the resync wrote. End to end
against the fake Mailchimp, on both ledger engines (:mod:`sync.planning.replanned`)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from connectors.records import Order
from sync.config import load_config
from sync.ledger import Ledger
from sync.serve.resync import resync
from sync.settings import load_settings
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_ledger_statecache import _backup
from tests.test_replan_after_later_run import _churned, _state, _sync, shop  # noqa: F401
from tests.test_worker import AS_OF, DEST


def _order(customer: str, order_id: str) -> Order:
    return Order(order_id=order_id, customer_id=customer, amount=Decimal("9900000"),
                 ordered_at=datetime(2025, 6, 29, 12, tzinfo=timezone.utc))


def test_a_resync_written_after_a_restore_at_a_lower_revision_is_not_undone_by_the_re_plan(shop,  # noqa: F811
                                                                                       mailchimp_fake, tmp_path):
    """The sync planned at revision R; the ledger restored to a backup below R; another host's resync of x's new
    order saved at a revision ≤ R (that host holds no copy of the state: it cannot see the restore). The sync's
    re-plan, from its rows read before that order, must leave x as the resync wrote him (before the fix: moved back
    to Winback, in the ESP and the ledger; the rows saved after the plan was read are now named too)."""
    cfg, settings = load_config(shop), load_settings()
    url = os.environ["RFMSYNC_LEDGER_URL"]
    restore = _backup(url)  # the backup: the ledger as the first sync left it
    x = _churned(shop)
    others = [s for s in sorted(_state_all(shop).values(), key=lambda s: s.key)
              if s.tags == {"Winback"} and s.customer_id != x.customer_id][:3]
    with Ledger.connect(url) as ledger:  # three more writes: the sync below plans at a revision above them
        for n, other in enumerate(others):
            resync(cfg, ledger, settings, [_order(other.customer_id, f"WH-O{n}")], as_of=AS_OF)
        planned_at = ledger.state_revision(DEST)
    seen: dict[str, object] = {}

    def later(_sync_ledger: Ledger) -> None:  # while the sync waits: the backup restored, another host resyncs x
        restore()
        # another host (a SQLite ledger: a process keeping its copies elsewhere) with no copy of the state: it
        # cannot see the restore
        with Ledger.connect(url, state_cache=tmp_path / "host-b.state-cache") as host_b:
            resync(cfg, host_b, settings, [_order(x.customer_id, "WH-X")], as_of=AS_OF)
            seen["revision"] = host_b.state_revision(DEST)
        seen["state"] = _state(shop, x.key)

    _sync(shop, later)
    assert seen["revision"] <= planned_at  # the resync's row is numbered at or below the sync's plan
    moved = seen["state"]
    assert moved.tags != x.tags  # the resync moved him out of Winback
    assert _state(shop, x.key).tags == moved.tags, "the sync's re-plan undid the resync written after the restore"
    assert set(mailchimp_fake.tags_of(x.key, "aud1")) == set(moved.tags)


def _state_all(path: Path):
    from sync.ledger import open_ledger

    with open_ledger(load_config(path), load_settings()) as ledger:
        return ledger.load_state(DEST)
