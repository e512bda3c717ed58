"""Two webhook resyncs of one customer at once (two workers, or two deliveries in a row: an order, then its
refund): the batch that read the order store first and took the destination's lock last must not push its older
state over the newer one. Under the lock, a resync whose customers' store rows moved since it read them (another
batch merged after it) reads them again before it plans (:mod:`sync.serve.resync_store`). End to end against the
fake Mailchimp, two threads with a ledger each, on both ledger engines."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

import pytest

from connectors.records import Consent, Contact, Order, OrderStatus
from sync.config import load_config
from sync.ledger import open_ledger
from sync.model import PushedState
from sync.pipeline import store_path
from sync.serve.resync import resync
from sync.settings import load_settings
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_guards import set_guards
from tests.test_replan_after_later_run import _sync, shop  # noqa: F401
from tests.test_worker import AS_OF, DEST, make_shop

LOCK = f"sync:{DEST}"


def _state(path: Path, dest: str = DEST) -> dict[str, PushedState]:
    with open_ledger(load_config(path), load_settings()) as ledger:
        return ledger.load_state(dest)


def _order(customer: str, order_id: str, amount: str, day: int, updated: int) -> Order:
    return Order(order_id=order_id, customer_id=customer, amount=Decimal(amount),
                 ordered_at=datetime(2025, 6, day, 12, tzinfo=timezone.utc),
                 updated_at=datetime(2025, 6, 30, updated, tzinfo=timezone.utc))


def _older_waits_for_the_lock(path: Path, older: list[Order | Contact], newer: list[Order | Contact], *,
                              then: list[Order] | None = None, meanwhile: Callable[[], None] | None = None,
                              failing: bool = False) -> list[BaseException]:
    """``older`` resyncs in a thread: it merges and reads the store, plans, and waits for the destination's lock
    (held by another run); the lock freed, ``newer`` resyncs (merged after ``older``, applied first); then the
    older batch takes the lock and applies. ``then``: after ``newer``, more resyncs (one order each) until the
    store file's size is the one ``older`` read it at, and its modification time set back to that read's (the same
    (inode, size, mtime) after two writes: a 1-second clock, another host's write behind an NFS attribute cache)."""
    cfg, settings = load_config(path), load_settings()
    waiting, go, errors = threading.Event(), threading.Event(), []

    def sleep(_seconds: float) -> None:  # the resync's wait for a busy lock
        waiting.set()
        go.wait(60)

    def run_older() -> None:
        try:
            with open_ledger(cfg, settings) as ledger:
                resync(cfg, ledger, settings, *_records(older), as_of=AS_OF, sleep=sleep)
        except BaseException as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    with open_ledger(cfg, settings) as holder:
        owner = holder.acquire_lock(LOCK)  # another run (a full sync) applies the destination
        thread = threading.Thread(target=run_older)
        thread.start()
        try:
            assert waiting.wait(120), "the older batch never waited for the lock"
            holder.release_lock(LOCK, owner)
            if meanwhile is not None:
                meanwhile()
            store = [store_path(cfg), Path(f"{store_path(cfg)}.wal")]
            before = {p: p.stat() for p in store if p.exists()}
            with open_ledger(cfg, settings) as ledger:
                resync(cfg, ledger, settings, *_records(newer), as_of=AS_OF)
                for order in then or ():
                    if then is None or _stat(store) == {p: (st.st_ino, st.st_size) for p, st in before.items()}:
                        break
                    resync(cfg, ledger, settings, [order], as_of=AS_OF)
            if then is not None:
                assert _stat(store) == {p: (st.st_ino, st.st_size) for p, st in before.items()}, "size not repeated"
                for p, st in before.items():
                    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            go.set()
            thread.join(120)
    assert failing or not errors, errors
    return errors


def _records(batch: list) -> tuple[list[Order], list[Contact]]:
    """A batch's orders and contacts."""
    return [r for r in batch if isinstance(r, Order)], [r for r in batch if isinstance(r, Contact)]


def _stat(files: list[Path]) -> dict[Path, tuple[int, int]]:
    return {p: (st.st_ino, st.st_size) for p in files if p.exists() and (st := p.stat())}


def _churned(path: Path) -> PushedState:
    return next(s for _, s in sorted(_state(path).items()) if s.tags == {"Winback"})


def test_a_refund_applied_first_is_not_undone_by_its_orders_resync_applied_after(shop, mailchimp_fake):  # noqa: F811
    """The order's batch read the store before its refund was merged, and waited for the lock; the refund's
    resync planned nothing (the customer is back where the ledger has him) and moved no revision. The order's
    push then came last: it put the order's segment on a customer whose order was refunded."""
    x = _churned(shop)
    order = _order(x.customer_id, "WH-1", "9900000", 29, 1)
    refund = replace(order, status=OrderStatus.REFUNDED, updated_at=datetime(2025, 6, 30, 2, tzinfo=timezone.utc))
    _older_waits_for_the_lock(shop, [order], [refund])
    assert _state(shop)[x.key].tags == {"Winback"}
    assert set(mailchimp_fake.tags_of(x.key, "aud1")) == {"Winback"}


def test_the_newer_batchs_segment_is_not_regressed_by_the_older_batchs_re_plan(shop, mailchimp_fake):  # noqa: F811
    """The newer batch (the big order refunded, a small one placed) moved the customer and the ledger's revision:
    the older batch's re-plan under the lock was made from the rows it read before (the big order's segment)."""
    x = _churned(shop)
    big = _order(x.customer_id, "WH-1", "9900000", 29, 1)
    refunded = replace(big, status=OrderStatus.REFUNDED, updated_at=datetime(2025, 6, 30, 2, tzinfo=timezone.utc))
    small = _order(x.customer_id, "WH-2", "10", 29, 2)
    cfg, settings = load_config(shop), load_settings()
    _older_waits_for_the_lock(shop, [big], [refunded, small])
    final = _state(shop)[x.key]
    assert final.tags != {"Winback"}  # the small order moved him: the newer batch wrote the destination
    assert set(mailchimp_fake.tags_of(x.key, "aud1")) == set(final.tags)
    # the store's state now (both batches merged) gives him what the ledger holds: a resync of him plans nothing
    with open_ledger(cfg, settings) as ledger:
        again = resync(cfg, ledger, settings, [small], as_of=AS_OF)
    assert sum(r.counts.get("planned", 0) for r in again.reports) == 0, "the ledger held the older batch's state"
    assert _state(shop)[x.key] == final


SECOND = """
[[destinations]]
name = "mailchimp-two"
type = "mailchimp"
audience = "aud2"
new_contacts = "transactional"

[destinations.segments]
"Best active" = "VIP"
"Falling asleep" = "Winback soft"
"Churn" = "Winback"
"Beginners" = "Welcome"
"""


@pytest.fixture
def two_destinations(tmp_path, mailchimp_fake, monkeypatch, ledger_url):  # noqa: F811
    """A shop synced to two audiences (the second planned after the first)."""
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    mailchimp_fake.add_list("aud2", "Second")
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=60)
    text = path.read_text(encoding="utf-8")
    i = text.index("[serve]")
    path.write_text(text[:i] + SECOND + "\n" + text[i:], encoding="utf-8")
    set_guards(path, max_bad_rows_pct=100)
    _sync(path)
    return path


def test_the_older_batch_pushes_its_old_state_to_no_destination(two_destinations, mailchimp_fake):
    """Under the first destination's lock the older batch read its customers again (the refund merged meanwhile);
    the second destination's plan had been made from the rows read before, and its ledger did not move (the
    refund's resync planned nothing there either): it is planned again from the rows read again, not pushed."""
    path = two_destinations
    x = _churned(path)
    assert _state(path, "mailchimp-two")[x.key].tags == {"Winback"}
    order = _order(x.customer_id, "WH-1", "9900000", 29, 1)
    refund = replace(order, status=OrderStatus.REFUNDED, updated_at=datetime(2025, 6, 30, 2, tzinfo=timezone.utc))
    _older_waits_for_the_lock(path, [order], [refund])
    for dest, audience in ((DEST, "aud1"), ("mailchimp-two", "aud2")):
        assert _state(path, dest)[x.key].tags == {"Winback"}, dest
        assert set(mailchimp_fake.tags_of(x.key, audience)) == {"Winback"}, dest


def test_a_merge_that_leaves_the_store_files_as_they_were_is_seen(shop, mailchimp_fake):  # noqa: F811
    """The refund's merge (and more writes after it) left the store file at the inode, size and modification time
    the order's batch read it at (the size alternates between checkpoints; a 1-second clock or another host's NFS
    attribute cache keeps the time): the order's batch still sees that its customer moved on (the store's
    generation, read under the lock) and does not push the refunded order's segment."""
    x = _churned(shop)
    others = [s.customer_id for _, s in sorted(_state(shop).items()) if s.customer_id != x.customer_id]
    order = _order(x.customer_id, "WH-1", "9900000", 29, 1)
    refund = replace(order, status=OrderStatus.REFUNDED, updated_at=datetime(2025, 6, 30, 2, tzinfo=timezone.utc))
    small = [_order(c, f"WH-{i}", "10", 29, 1) for i, c in enumerate(others[:16], start=2)]
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:  # the store's lookup indexes built, its file grown to its size
        for warm in small[:3]:
            resync(cfg, ledger, settings, [warm], as_of=AS_OF)
    _older_waits_for_the_lock(shop, [order], [refund], then=small[3:])
    assert _state(shop)[x.key].tags == {"Winback"}
    assert set(mailchimp_fake.tags_of(x.key, "aud1")) == {"Winback"}


def _collapsed(path: Path) -> None:
    """A full run saved cut points whose recency scores collapsed (the guard ``recency_scores``)."""
    import duckdb

    con = duckdb.connect(str(store_path(load_config(path))))
    try:
        con.execute("INSERT INTO segmentation_runs (as_of, preset, levels, cut_points, customers, created_at, "
                    "recency_collapse) SELECT as_of, preset, levels, cut_points, customers, "
                    "created_at + INTERVAL 1 HOUR, ? FROM segmentation_runs ORDER BY created_at DESC LIMIT 1",
                    ['{"customers": 59, "total": 60, "days": 0, "score": 1, "levels": 5}'])
    finally:
        con.close()


def test_a_batch_read_again_under_collapsed_recency_scores_is_refused(shop, mailchimp_fake):  # noqa: F811
    """Another merge (another customer's order pulled) while the order's batch waited for the lock, and a full run
    saved cut points whose recency scores collapsed: reading its customers again re-scores them against those,
    which the recency guard refuses, as it refuses the resync that reads them first (before, they were pushed
    scored by the collapse). (The merge is a pull's, not an empty batch's: a merge of nothing moves no
    generation.)"""
    from sync.errors import GuardRefusedError
    from tests.test_sync_store_moved import _pulled

    x = _churned(shop)
    y = next(s for _, s in sorted(_state(shop).items()) if s.tags == {"Winback"} and s.key != x.key)
    order = _order(x.customer_id, "WH-1", "9900000", 29, 1)

    def meanwhile() -> None:
        _pulled(shop, [_order(y.customer_id, "PULL-1", "5", 29, 1)])
        _collapsed(shop)

    errors = _older_waits_for_the_lock(shop, [order], [], meanwhile=meanwhile, failing=True)
    assert len(errors) == 1 and isinstance(errors[0], GuardRefusedError), errors
    assert "recency" in str(errors[0])
    assert _state(shop)[x.key].tags == {"Winback"}
    assert set(mailchimp_fake.tags_of(x.key, "aud1")) == {"Winback"}


def test_a_re_keyed_customer_s_older_batch_pushes_nothing_old(shop, mailchimp_fake):  # noqa: F811
    """The older batch (the card saved again, nothing changed: it plans nothing) waits for the lock; the newer one
    moves the card to a new e-mail and pushes it. The older batch, applied last, leaves the new address and the
    old one as the newer batch left them."""
    x = _churned(shop)
    new = f"new-{x.key}"
    same = Contact(x.customer_id, email=x.key, marketing_consent=Consent.YES,
                   updated_at=datetime(2025, 6, 30, 1, tzinfo=timezone.utc))
    moved = replace(same, email=new, updated_at=datetime(2025, 6, 30, 2, tzinfo=timezone.utc))
    _older_waits_for_the_lock(shop, [same], [moved])
    state = _state(shop)
    assert state[new].tags == {"Winback"} and set(mailchimp_fake.tags_of(new, "aud1")) == {"Winback"}
    assert x.key not in state or not state[x.key].tags
    assert not set(mailchimp_fake.tags_of(x.key, "aud1")) & {"Winback"}
