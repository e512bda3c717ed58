"""A pull's order count leaves out the tombstones the merge does not store (orders the store never held, deleted or
lost): "pulled 61 orders" for 1 stored and 60 such tombstones was wrong, and the data guards took 61 as their base.
The CLI, the pull's run in the ledger and the guards count the same orders; ``unstored_orders`` says how many were
read and not stored."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from sync.config import load_config
from sync.errors import GuardRefusedError
from sync.ingest import pull_to_store
from sync.ledger import Ledger, open_ledger
from sync.settings import load_settings
from sync.store import open_store

from .test_amocrm import SUB, TOKEN, FakeAmo
from .test_cli_pull import rsps, run  # noqa: F401 (fixture)


@pytest.fixture
def shop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RFMSYNC_STORE_URL", raising=False)
    monkeypatch.setenv("AMOCRM_SUBDOMAIN", SUB)
    monkeypatch.setenv("AMOCRM_TOKEN", TOKEN)
    path = tmp_path / "rfmsync.toml"
    path.write_text('[source]\ntype = "amocrm"\n', encoding="utf-8")
    return path


def seeded(rsps) -> FakeAmo:
    fake = FakeAmo(rsps)
    now = datetime.now(timezone.utc) - timedelta(days=1)
    fake.put_contact(10, "ann@example.com", at=now)
    fake.put_order(1, 10, "100", at=now)
    fake.put_order(2, 10, "100", at=now)
    return fake


def _lost(fake, *ids: int) -> None:
    """Leads created and deleted, or lost with no contact (unmappable), before any pull read them."""
    now = datetime.now(timezone.utc)
    for oid in ids:
        fake.put_order(oid, 10, "5", at=now)
        if oid % 2:
            fake.delete_order(oid, at=now)
        else:
            fake.put_order(oid, 10, "5", at=now, status_id=143)
            fake.leads[oid]["_embedded"]["contacts"] = []


def _lost_and_new(fake) -> None:
    """After a first pull: 1 new order, and 5 leads deleted or lost before any pull read them."""
    fake.put_order(3, 10, "10", at=datetime.now(timezone.utc))
    _lost(fake, *range(100, 105))


def test_a_pull_counts_the_orders_it_stores_not_the_tombstones_of_orders_never_stored(rsps, shop):  # noqa: F811
    fake = seeded(rsps)
    assert run("pull", "--config", str(shop)).exit_code == 0
    _lost_and_new(fake)
    second = run("pull", "--config", str(shop), "--format", "json")
    assert second.exit_code == 0, second.output
    counts = json.loads(second.output)["counts"]
    # (the two stored leads and the contact are read again, the pull's window overlapping the last one's: they are
    # not counted, tests/test_pull_reread_counts.py)
    assert (counts["orders"], counts["unstored_orders"], counts["stored_orders"]) == (1, 5, 3)
    assert (counts["unchanged_orders"], counts["unchanged_contacts"]) == (2, 1)
    with Ledger.connect(f"sqlite:///{shop.parent / 'rfmsync.db'}") as ledger:
        assert ledger.recent_runs(1)[0]["counts"] == {"orders": 1, "contacts": 0, "bad_rows": 0,
                                                     "unstored_orders": 5, "unchanged_orders": 2,
                                                     "unchanged_contacts": 1}
    fake.put_order(4, 10, "10", at=datetime.now(timezone.utc))
    _lost(fake, 201)
    third = run("pull", "--config", str(shop))
    assert "pulled 1 order and 0 contacts from amocrm (0 bad records; 6 deleted or lost orders never stored, " \
           "not stored; 2 records read again unchanged); the store now holds 4 orders" in third.output, third.output


def test_the_data_guards_count_the_orders_stored(rsps, shop, monkeypatch):  # noqa: F811
    """``min_orders = 6``: the store holds 2, the pull stores 1 (reads the 2 again unchanged, and 5 tombstones of
    orders never stored): 3 orders, refused (it passed as 10, then as 5 counting the re-read ones twice)."""
    fake = seeded(rsps)
    assert run("pull", "--config", str(shop)).exit_code == 0
    _lost_and_new(fake)
    shop.write_text(shop.read_text(encoding="utf-8") + "\n[guards]\nmin_orders = 6\n", encoding="utf-8")
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger, open_store(str(shop.parent / "rfmsync.duckdb")) as con:
        with pytest.raises(GuardRefusedError, match="min_orders: 3 valid orders"):
            pull_to_store(cfg, ledger, con, settings, guarded=True)
