"""A deleted Shopify order stays deleted (sync/store/deletes.py): its ``orders/delete`` is final, so no later version
of the order (a delivery Shopify retries after the delete, a create that comes after it, a pull's page read before
it) is merged, whatever its time; each is counted as stale. A delete that can be undone (amoCRM's trash, a Bitrix24
deal) is ordered as before, and so is a file's full refresh and a store written before."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

import pytest

from connectors.bitrix24 import parse_webhook as bitrix_parse
from connectors.non_purchase import tombstone
from connectors.records import Order, OrderStatus
from connectors.shopify import parse_webhook as shopify_parse
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.store import merge_staged, open_store
from tests.test_store_pulled_versions import S, T0, _hook, _pulled

ROOT = Path(__file__).resolve().parents[1]


def _delete(order_id: str = "77", triggered: datetime | None = None) -> list[Order]:
    """Shopify's orders/delete delivery (only the id), with X-Shopify-Triggered-At or without."""
    headers = {"X-Shopify-Topic": "orders/delete"}
    if triggered is not None:
        headers["X-Shopify-Triggered-At"] = triggered.isoformat().replace("+00:00", "Z")
    orders, _ = shopify_parse(headers, json.dumps({"id": int(order_id)}).encode())
    return orders


def _paid(amount: str = "100", at: datetime | None = None, order_id: str = "77") -> Order:
    return Order(order_id, "7", T0, Decimal(amount), updated_at=at)


def _rows(con) -> list[tuple]:
    return con.execute("SELECT order_id, customer_id, status, amount FROM orders ORDER BY 1").fetchall()


GONE = [("77", "7", "cancelled", 0)]


@pytest.mark.parametrize("deleted_at", [None, T0 + 600 * S], ids=["untimed-delete", "timed-delete"])
@pytest.mark.parametrize("updated_at", [None, T0 + 60 * S, T0 + 900 * S],
                         ids=["untimed-update", "update-before", "update-after-by-its-time"])
def test_an_update_retried_after_the_delete_is_left_out_whatever_its_time(deleted_at, updated_at):
    """Order 77 paid (10:00), deleted, then an orders/updated Shopify made before the delete retries after it:
    left out and counted, the order stays deleted. With or without X-Shopify-Triggered-At on the delete, with or
    without a time on the update, and even when its time says later than the delete (no clock is trusted over a
    final delete). Before: applied (by acceptance, or by a time later than the one the store held) but in the one
    case where both times were known and the update's older."""
    with open_store(None) as con:
        _hook(con, orders=[_paid(at=T0)], accepted=T0 + 7200 * S)
        assert "stale_orders" not in _hook(con, orders=_delete(triggered=deleted_at), accepted=T0 + 7300 * S)
        assert _rows(con) == GONE
        counts = _hook(con, orders=[_paid("90", updated_at)], accepted=T0 + 7400 * S)
        assert counts.get("stale_orders") == 1
        assert _rows(con) == GONE


def test_a_delete_delivered_twice_keeps_the_order_deleted_noted_once():
    """Untimed deletes differ (each is dated when it arrives): the second is merged too, the order stays deleted,
    noted once, and the retried update after both is left out."""
    with open_store(None) as con:
        _hook(con, orders=[_paid(at=T0)])
        for accepted in (T0 + 7300 * S, T0 + 7350 * S):
            assert "stale_orders" not in _hook(con, orders=_delete(), accepted=accepted)
        assert _rows(con) == GONE
        assert con.execute("SELECT order_id FROM deleted_orders").fetchall() == [("77",)]
        assert _hook(con, orders=[_paid("90")], accepted=T0 + 7400 * S)["stale_orders"] == 1
        assert _rows(con) == GONE


def test_a_delete_before_the_order_was_stored_keeps_the_later_create_out():
    """The delete comes first (the order's create failed and is retried later): its tombstone is all the store holds
    of it (whose it was is unknown), and the create, accepted after it, is left out: customer 7 has no order."""
    with open_store(None) as con:
        _hook(con, orders=_delete(), accepted=T0 + 7300 * S)
        assert _hook(con, orders=[_paid(at=T0)], accepted=T0 + 7400 * S)["stale_orders"] == 1
        assert _rows(con) == [("77", "", "cancelled", 0)]
        assert con.execute("SELECT count(*) FROM line_items").fetchall() == [(0,)]


@pytest.mark.parametrize("delete_first", [True, False], ids=["delete-then-update", "update-then-delete"])
def test_a_delete_staged_with_another_version_of_the_order_wins_in_one_merge(delete_first):
    """One merge stages the delete and another version of the order (with its line items): whichever came last,
    the order is deleted, its items gone, and the other version counted as stale."""
    with open_store(None) as con:
        _hook(con, orders=[_paid(at=T0)])
        update = Order("77", "7", T0, Decimal(90), items=(), updated_at=T0 + 60 * S)
        batch = [*_delete(), update] if delete_first else [update, *_delete()]
        assert _hook(con, orders=batch, accepted=T0 + 7400 * S)["stale_orders"] == 1
        assert _rows(con) == GONE
        assert con.execute("SELECT count(*) FROM line_items").fetchall() == [(0,)]


def test_a_delete_older_than_the_version_held_by_its_time_or_its_acceptance_still_deletes():
    """Nothing of an order is newer than its delete: one whose X-Shopify-Triggered-At is earlier than the stored
    version's updated_at (two of Shopify's clocks), or accepted before the stored version and merged after it (a
    batch held up), deletes the order. Before: left out as stale, the order kept."""
    with open_store(None) as con:
        _hook(con, orders=[_paid(at=T0 + 600 * S)])
        assert "stale_orders" not in _hook(con, orders=_delete(triggered=T0 + 590 * S), accepted=T0 + 7300 * S)
        assert _rows(con) == GONE
    with open_store(None) as con:
        _hook(con, orders=[_paid()], accepted=T0 + 7300 * S)
        assert "stale_orders" not in _hook(con, orders=_delete(), accepted=T0 + 7200 * S)
        assert _rows(con) == GONE


def test_a_pull_page_read_before_the_delete_is_left_out_of_the_pull():
    """A pull merged after the delete still lists the order (its page read before it, or a list lagging behind it):
    left out of the pull and counted; the store keeps no pulled time of it (the delete forgot the first pull's, the
    second notes none); a later delivery is left out as well."""
    with open_store(None) as con:
        _pulled(con, orders=[_paid(at=T0)], pulled_at=T0 + 3600 * S)
        _hook(con, orders=_delete(), accepted=T0 + 7200 * S)
        counts = _pulled(con, orders=[_paid("90", T0 + 60 * S), _paid("5", T0, "88")], pulled_at=T0 + 7300 * S)
        assert counts["stale_pulled_orders"] == 1
        assert _rows(con) == [*GONE, ("88", "7", "completed", 5)]
        assert con.execute("SELECT id FROM pulled_versions WHERE kind = 'order'").fetchall() == [("88",)]  # 77: none
        assert _hook(con, orders=[_paid("80")], accepted=T0 + 7400 * S)["stale_orders"] == 1
        assert _rows(con)[0] == GONE[0]


def test_a_delete_that_can_be_undone_is_ordered_as_before():
    """amoCRM's trash (a lead can be restored) and Bitrix24's deals: their tombstones are not final, so the version
    a pull reads later (the lead restored) is stored. Bitrix24's ONCRMDEALDELETE has no vendor time even with its
    ``ts`` (the event's, or this host's clock without one, dates the cancelled row only: never compared)."""
    body = urlencode({"event": "ONCRMDEALDELETE", "data[FIELDS][ID]": "77", "ts": int(T0.timestamp()),
                      "auth[application_token]": "x"}).encode()
    [deal] = bitrix_parse({}, body)[0]
    assert (deal.status, deal.updated_at) == (OrderStatus.CANCELLED, None)
    for gone in (deal, tombstone("77", T0 + 300 * S, final=False)):
        with open_store(None) as con:
            _hook(con, orders=[_paid(at=T0)])
            _hook(con, orders=[gone], accepted=T0 + 7300 * S)
            assert _rows(con) == GONE
            assert "stale_pulled_orders" not in _pulled(con, orders=[_paid("90", T0 + 600 * S)],
                                                        pulled_at=T0 + 7400 * S)
            assert _rows(con) == [("77", "7", "completed", 90)]
            assert con.execute("SELECT count(*) FROM deleted_orders").fetchall() == [(0,)]


def test_a_file_full_refresh_is_unchanged_and_forgets_the_deletes_of_the_orders_it_replaced():
    """Files have no deletes: a full refresh whose file holds order 77 (read after the delete) takes it over as
    before, and the delete is forgotten with the webhook record (a later delivery of it is applied); one whose file
    does not hold 88 keeps its tombstone and its delete."""
    with open_store(None) as con:
        _hook(con, orders=[_paid(at=T0), _paid(at=T0, order_id="88")])
        _hook(con, orders=_delete("77") + _delete("88"), accepted=T0 + 7300 * S)
        stage_records(con, [_paid("60")], [])
        merge_staged(con, PullResult(full_refresh=True), origin="pull")
        assert _rows(con) == [("77", "7", "completed", 60), ("88", "7", "cancelled", 0)]
        assert con.execute("SELECT order_id FROM deleted_orders").fetchall() == [("88",)]
        assert _hook(con, orders=[_paid("50"), _paid("50", order_id="88")], accepted=T0 + 7400 * S)[
            "stale_orders"] == 1
        assert _rows(con) == [("77", "7", "completed", 50), ("88", "7", "cancelled", 0)]


def test_a_store_written_before_deletes_were_final_orders_its_tombstones_as_before():
    """An older rfmsync's store: no deleted_orders table, its tombstones cancelled (an event an older server
    queued decodes so too): a retried update is applied as before (no re-read could tell: a pull never lists a
    deleted order). The next merge creates the table, and a delete merged from then on is final."""
    with open_store(None) as con:
        _hook(con, orders=[_paid(at=T0)])
        _hook(con, orders=[tombstone("77", T0)], accepted=T0 + 7300 * S)  # as an older server parsed orders/delete
        con.execute("DROP TABLE deleted_orders")
        assert "stale_orders" not in _hook(con, orders=[_paid("90")], accepted=T0 + 7400 * S)
        assert _rows(con) == [("77", "7", "completed", 90)]
        _hook(con, orders=_delete(), accepted=T0 + 7500 * S)
        assert _hook(con, orders=[_paid("80")], accepted=T0 + 7600 * S)["stale_orders"] == 1
        assert _rows(con) == GONE


_CHILD = """
import os, signal, sys
from datetime import datetime
from connectors.shopify import parse_webhook
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.store import connect_store, merge_staged
con = connect_store(sys.argv[1])
stage_records(con, parse_webhook({"X-Shopify-Topic": "orders/delete"}, b'{"id": 77}')[0])
kill = lambda con: os.kill(os.getpid(), signal.SIGKILL)
merge_staged(con, PullResult(), origin="webhook", received_at=datetime.fromisoformat(sys.argv[2]),
             before_commit=kill if sys.argv[3] == "in-merge" else None)
os.kill(os.getpid(), signal.SIGKILL)  # after the commit: the store file is not closed (nor checkpointed)
"""


@pytest.mark.parametrize("killed", ["after-merge", "in-merge"])
def test_a_process_killed_between_the_delete_and_the_retried_update(tmp_path, killed):
    """kill -9 of the process that merged the delete, right after its commit: the delete holds (the store's log is
    replayed) and the update merged by the next process is left out. Killed inside the merge: nothing of it is
    there (the order is as it was); the delete's event, still queued, is merged again, and then the update is left
    out."""
    path = tmp_path / "store.duckdb"
    with open_store(path) as con:
        _hook(con, orders=[_paid(at=T0)])
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(_CHILD), str(path),
                            (T0 + 7300 * S).isoformat(), killed], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    with open_store(path) as con:
        if killed == "in-merge":
            assert _rows(con) == [("77", "7", "completed", 100)]
            _hook(con, orders=_delete(), accepted=T0 + 7300 * S)  # the event is claimed again
        assert _rows(con) == GONE
    with open_store(path) as con:
        assert _hook(con, orders=[_paid("90")], accepted=T0 + 7400 * S)["stale_orders"] == 1
        assert _rows(con) == GONE
