"""``[source] timezone`` on amoCRM, Bitrix24 and Shopify: purchases are counted per local day of the shop.

End to end: a config with the source, `rfmsync pull` against the vendor's fake (``responses``, answering as the
vendor does: amoCRM Unix seconds, Bitrix24 ISO with the portal's +03:00, Shopify ISO with the shop's +05:00), then
the library's segments with predictions, which count one purchase per customer and local day.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses
from click.testing import CliRunner

from sync import api
from sync.cli import main
from sync.config import load_config
from tests import test_amocrm, test_bitrix24, test_shopify

TASHKENT = ZoneInfo("Asia/Tashkent")  # UTC+5, no daylight saving
#: one customer's two orders on one local day in Tashkent (2026-01-05), on two UTC days (the 4th and the 5th)
EARLY = datetime(2026, 1, 5, 0, 30, tzinfo=TASHKENT)
LATE = datetime(2026, 1, 5, 23, 30, tzinfo=TASHKENT)
AS_OF = date(2026, 1, 20)

#: source type → (the fake, the environment that points the source at it)
VENDORS = {
    "amocrm": (test_amocrm.FakeAmo, {"AMOCRM_SUBDOMAIN": test_amocrm.SUB, "AMOCRM_TOKEN": test_amocrm.TOKEN}),
    "bitrix24": (test_bitrix24.FakeBitrix24, {"BITRIX24_WEBHOOK_URL": test_bitrix24.HOOK}),
    "shopify": (test_shopify.FakeShopify, {"SHOPIFY_SHOP": test_shopify.SHOP, "SHOPIFY_TOKEN": test_shopify.TOKEN}),
}


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def shop(tmp_path: Path, monkeypatch, kind: str, extra: str = "") -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("RFMSYNC_STORE_URL", "RFMSYNC_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in VENDORS[kind][1].items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "rfmsync.toml"
    path.write_text(f'[source]\ntype = "{kind}"\n{extra}', encoding="utf-8")
    return path


def seed(fake) -> None:
    for cid in (1, 2, 3):
        fake.put_contact(cid, f"c{cid}@example.com", at=EARLY)
    fake.put_order(1, 1, "100", at=EARLY)
    fake.put_order(2, 1, "50", at=LATE)
    fake.put_order(3, 2, "70", at=datetime(2026, 1, 3, 12, 0, tzinfo=TASHKENT))
    fake.put_order(4, 3, "90", at=datetime(2026, 1, 8, 12, 0, tzinfo=TASHKENT))


def customer_one(path: Path) -> tuple:
    """Customer 1 as segmented with predictions: (frequency, gaps between purchase days, first and last
    local purchase day as explain tells them)."""
    cfg = load_config(path)
    run = api.segments(cfg, AS_OF, predict=True, boundary=False)
    try:
        frequency = run.con.execute(f"SELECT frequency FROM {run.result.table} WHERE customer_id = '1'").fetchone()[0]
        gaps = run.con.execute("SELECT gaps FROM customer_lifecycle WHERE customer_id = '1'").fetchone()[0]
    finally:
        run.close()
    orders = api.explain(cfg, "1", AS_OF)["orders"]
    return frequency, gaps, orders


@pytest.mark.parametrize("kind", sorted(VENDORS))
@pytest.mark.parametrize("zone", ["Asia/Tashkent", None])
def test_two_orders_on_one_local_day_are_one_purchase_day_in_the_shops_zone(kind, zone, rsps, tmp_path,
                                                                             monkeypatch):
    path = shop(tmp_path, monkeypatch, kind, f'timezone = "{zone}"\n' if zone else "")
    seed(VENDORS[kind][0](rsps))
    pulled = CliRunner().invoke(main, ["pull", "--config", str(path)])
    assert pulled.exit_code == 0, pulled.output
    assert "pulled 4 orders and 3 contacts" in pulled.output
    frequency, gaps, orders = customer_one(path)
    assert frequency == 2  # two completed orders either way
    if zone:  # 00:30 and 23:30 in Tashkent: one purchase day, no gap
        assert gaps == 0
        assert (orders["first_order"], orders["last_order"]) == ("2026-01-05", "2026-01-05")
    else:  # UTC (the default): the day is cut at 05:00 local, the 00:30 order falls on the 4th
        assert gaps == 1
        assert (orders["first_order"], orders["last_order"]) == ("2026-01-04", "2026-01-05")


@pytest.mark.parametrize("kind", sorted(VENDORS))
def test_an_unknown_zone_is_a_config_error_naming_the_key(kind, tmp_path, monkeypatch):
    path = shop(tmp_path, monkeypatch, kind, 'timezone = "Asia/Tashkand"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(path), "--offline"])
    assert result.exit_code == 2, result.output
    assert "source.timezone: unknown time zone 'Asia/Tashkand' (use an IANA name such as 'Asia/Tashkent')" \
        in result.output


def test_check_warns_when_the_shopify_shop_is_in_another_zone(rsps, tmp_path, monkeypatch):
    path = shop(tmp_path, monkeypatch, "shopify")  # timezone left at UTC; the shop says Asia/Tashkent
    test_shopify.FakeShopify(rsps, pull=False, check=True)
    result = CliRunner().invoke(main, ["check", "--config", str(path), "--offline", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    warning = ("source shopify: the shop's time zone is Asia/Tashkent but [source] timezone is 'UTC': purchase "
               "days and the as-of date are counted in UTC; set timezone = 'Asia/Tashkent' to count them in the "
               "shop's days")
    assert doc["warnings"] == [warning]
    assert doc["source"]["account"] == f"Demo Shop ({test_shopify.SHOP}.myshopify.com)"
    assert "warning: " + warning in result.stderr
    assert load_config(path).timezone == "UTC"  # told, not changed

    path.write_text('[source]\ntype = "shopify"\ntimezone = "Asia/Tashkent"\n', encoding="utf-8")
    same = CliRunner().invoke(main, ["check", "--config", str(path), "--offline", "--format", "json"])
    assert same.exit_code == 0 and json.loads(same.stdout)["warnings"] == [], same.output
