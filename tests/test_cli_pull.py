"""`rfmsync pull` and `rfmsync check` on CRM sources, against the per-vendor `responses` fakes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import responses
from click.testing import CliRunner

from sync.cli import main
from sync.ledger import Ledger
from tests.test_amocrm import SUB, TOKEN, FakeAmo
from tests.test_retailcrm import BASE, KEY, T0, FakeRetailCrm, fmt


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def shop(tmp_path, monkeypatch) -> Path:
    """A config whose source is RetailCRM; credentials from the environment, as in production."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("RFMSYNC_STORE_URL", raising=False)
    monkeypatch.setenv("RETAILCRM_URL", BASE)
    monkeypatch.setenv("RETAILCRM_API_KEY", KEY)
    path = tmp_path / "rfmsync.toml"
    path.write_text('[source]\ntype = "retailcrm"\npage_size = 20\n', encoding="utf-8")
    return path


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def cursor(shop: Path) -> str | None:
    with Ledger.connect(f"sqlite:///{shop.parent / 'rfmsync.db'}") as ledger:
        return ledger.get_cursor("retailcrm", "all")


def stored(shop: Path) -> list[tuple]:
    con = duckdb.connect(str(shop.parent / "rfmsync.duckdb"), read_only=True)
    try:
        return con.execute("SELECT order_id, customer_id, amount, status FROM orders ORDER BY 1").fetchall()
    finally:
        con.close()


def seeded(rsps) -> FakeRetailCrm:
    fake = FakeRetailCrm(rsps)
    fake.put_contact(10, "ann@example.com", at=T0)
    fake.put_contact(11, "bob@example.com", at=T0)
    fake.put_order(1, 10, "1500.50", at=T0)
    fake.put_order(2, 11, "99", at=T0)
    return fake


def test_pull_prints_counts_stores_rows_and_then_pulls_incrementally(rsps, shop):
    fake = seeded(rsps)
    first = run("pull", "--config", str(shop))
    assert first.exit_code == 0, first.output
    assert "pulled 2 orders and 2 contacts from retailcrm (0 bad records); the store now holds 2 orders and " \
           "2 contacts" in first.output
    assert stored(shop) == [("1", "10", Decimal("1500.50"), "completed"), ("2", "11", Decimal("99.00"), "completed")]
    saved = json.loads(cursor(shop))
    assert set(saved) == {"contacts", "orders", "keys"}  # (its orders keyed by this rfmsync: connectors/rekey.py)

    fake.put_order(3, 10, "10", at=datetime.now(timezone.utc))  # a new order after the first pull
    second = run("pull", "--config", str(shop), "--source", "retailcrm")
    assert second.exit_code == 0, second.output
    assert "pulled 1 order and 0 contacts" in second.output and "store now holds 3 orders" in second.output
    assert fake.fetched_ids == [3]  # only the changed order was fetched again
    start = datetime.fromisoformat(saved["orders"]) - timedelta(minutes=10)
    assert fake.since_seen[-1] == "startDate=" + fmt(start)  # the saved cursor minus the lookback


def test_pull_full_ignores_the_saved_cursor(rsps, shop):
    fake = seeded(rsps)
    assert run("pull", "--config", str(shop)).exit_code == 0
    incremental = run("pull", "--config", str(shop))
    assert "pulled 0 orders and 0 contacts" in incremental.output
    full = run("pull", "--config", str(shop), "--full")
    assert full.exit_code == 0, full.output
    assert "pulled 2 orders and 2 contacts" in full.output and "store now holds 2 orders" in full.output
    # a full pull lists everything (no history filter) before reading the feed from the run start
    lists = [c.request.url for c in rsps.calls if "/api/v5/orders?" in c.request.url]
    assert len(lists) == 2  # the first pull and the --full one; the incremental pull read only the history
    assert fake.fetched_ids == []


def test_pull_with_a_wrong_source_name_is_a_clear_configuration_error(shop):
    result = run("pull", "--config", str(shop), "--source", "shopify")
    assert result.exit_code == 2
    assert "unknown source 'shopify': this config's source is 'retailcrm'" in result.output
    assert not (shop.parent / "rfmsync.db").exists()  # refused before anything was opened


def test_a_failed_pull_leaves_the_saved_cursor_unchanged(rsps, shop, monkeypatch):
    fake = seeded(rsps)
    assert run("pull", "--config", str(shop)).exit_code == 0
    before = cursor(shop)
    fake.put_order(3, 10, "10", at=datetime.now(timezone.utc))
    fake.failures = [(503, {"Retry-After": "0"})] * 6  # every attempt of the retry layer: a persistent outage
    monkeypatch.setenv("RFMSYNC_HTTP_MAX_WAIT_SECONDS", "0")  # (a "retry now" still waits the back-off: none here)
    result = run("pull", "--config", str(shop))
    assert result.exit_code == 3, result.output  # a connector error: the source's exit code
    assert "HTTP 503; gave up after 6 attempts" in result.output and KEY not in result.output
    assert fake.failures == [] and cursor(shop) == before
    assert [r[0] for r in stored(shop)] == ["1", "2"]
    with Ledger.connect(f"sqlite:///{shop.parent / 'rfmsync.db'}") as ledger:
        assert [r["status"] for r in ledger.recent_runs(2)] == ["failed", "succeeded"]
    # the next pull resumes from the unchanged cursor and picks the order up
    again = run("pull", "--config", str(shop))
    assert again.exit_code == 0 and "pulled 1 order" in again.output


def test_a_key_refused_mid_backfill_stores_nothing_and_the_next_pull_stores_each_order_once(rsps, shop):
    """The key is deleted after the first page of the orders backfill (an order of that page edited meanwhile):
    exit 2 naming the variable and that the whole backfill is read again, no order stored, no cursor; with the
    key back, the next pull stores every order once, the edited one in its new version."""
    fake = seeded(rsps)
    rsps.assert_all_requests_are_fired = False
    for oid in range(3, 45):
        fake.put_order(oid, 10, "10", at=T0)

    def deleted_key() -> None:
        fake.put_order(1, 10, "99", at=datetime.now(timezone.utc))
        fake.bad_key = True

    fake.between_pages = deleted_key
    result = run("pull", "--config", str(shop))
    assert result.exit_code == 2, result.output
    assert "RetailCRM rejected the credentials (HTTP 401); check RETAILCRM_API_KEY" in result.output
    assert ("the next pull reads again from the saved cursor, everything (the whole backfill) when none is saved"
            in result.output)
    assert KEY not in result.output and fake.between_pages is None
    assert cursor(shop) is None and stored(shop) == []
    fake.bad_key = False
    assert run("pull", "--config", str(shop)).exit_code == 0
    orders = stored(shop)
    assert [int(o[0]) for o in orders] == sorted(range(1, 45), key=str) and orders[0][2] == Decimal("99")


def test_a_key_refused_during_pull_full_does_not_say_no_pull_finished_and_the_saved_cursor_stays(rsps, shop):
    """`pull --full` ignores the saved cursor (the source is handed none) but a pull finished before: refused
    part-way, the error must not claim that none did; the cursor stays, and the next plain pull reads from it."""
    fake = seeded(rsps)
    rsps.assert_all_requests_are_fired = False
    assert run("pull", "--config", str(shop)).exit_code == 0
    saved = cursor(shop)
    fake.bad_key = True
    result = run("pull", "--full", "--config", str(shop))
    assert result.exit_code == 2, result.output
    assert "no pull has finished" not in result.output and "reads everything again" not in result.output
    assert ("nothing this pull read was kept: the next pull reads again from the saved cursor, everything (the "
            "whole backfill) when none is saved") in " ".join(result.output.split())
    assert saved and cursor(shop) == saved and KEY not in result.output
    fake.bad_key = False
    again = run("pull", "--config", str(shop))
    assert again.exit_code == 0 and "pulled 0 orders and 0 contacts" in again.output  # from the saved cursor


def test_check_on_a_crm_source_does_one_cheap_read_and_reports_bad_credentials_as_exit_2(rsps, shop):
    fake = FakeRetailCrm(rsps, pull=False, check=True)
    ok = run("check", "--config", str(shop))
    assert ok.exit_code == 0, ok.output
    assert "source retailcrm: demo.retailcrm.ru (sites: shop-main)" in ok.output
    assert [c.request.url for c in rsps.calls] == [f"{BASE}/api/credentials"]
    fake.bad_key = True
    bad = run("check", "--config", str(shop))
    assert bad.exit_code == 2
    assert "RETAILCRM_API_KEY" in bad.output and KEY not in bad.output


def test_check_on_amocrm_reports_a_rejected_token_as_exit_2(rsps, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AMOCRM_SUBDOMAIN", SUB)
    monkeypatch.setenv("AMOCRM_TOKEN", TOKEN)
    shop = tmp_path / "rfmsync.toml"
    shop.write_text('[source]\ntype = "amocrm"\n', encoding="utf-8")
    fake = FakeAmo(rsps, pull=False, check=True)
    ok = run("check", "--config", str(shop))
    assert ok.exit_code == 0 and f"source amocrm: Demo Shop ({SUB})" in ok.output, ok.output
    fake.bad_key = True
    bad = run("check", "--config", str(shop))
    assert bad.exit_code == 2 and "AMOCRM_TOKEN" in bad.output and TOKEN not in bad.output
