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

from connectors.zones import day_at_noon, same_rules
from sync import api
from sync.cli import main
from sync.config import load_config
from tests import test_amocrm, test_bitrix24, test_retailcrm, test_shopify

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
    fake = VENDORS[kind][0](rsps)
    fake.close_dates = False  # Bitrix24: deals without CLOSEDATE (a date field), dated by DATE_CREATE's time
    seed(fake)
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
    assert "source.timezone: unknown time zone 'Asia/Tashkand': use an IANA name such as 'Europe/Berlin'" \
        in result.output


@pytest.mark.parametrize("name", ["localtime", "posixrules", "right/UTC"])
def test_a_zone_the_tz_database_has_but_duckdb_refuses_is_a_config_error(name, tmp_path, monkeypatch):
    ZoneInfo(name)  # Python takes it; DuckDB's ICU, which counts the days, does not
    path = shop(tmp_path, monkeypatch, "amocrm", f'timezone = "{name}"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(path), "--offline"])
    assert result.exit_code == 2, result.output
    assert (f"source.timezone: time zone '{name}' is not one DuckDB can count days in: use an IANA name such as "
            "'Asia/Tashkent'") in result.output


@pytest.mark.parametrize("zone", ["America/New_York", "UTC", "Asia/Tashkent"])
def test_a_bitrix24_closedate_is_its_calendar_day_in_any_zone(zone, rsps, tmp_path, monkeypatch):
    """CLOSEDATE is a date, sent as midnight UTC in the portal's +03:00 (``2026-01-05T03:00:00+03:00``): read
    as an instant it is the 4th in New York."""
    path = shop(tmp_path, monkeypatch, "bitrix24", f'timezone = "{zone}"\n')
    fake = test_bitrix24.FakeBitrix24(rsps)
    seed(fake)
    moscow = ZoneInfo("Europe/Moscow")
    fake.put_order(1, 1, "100", at=datetime(2026, 1, 5, 12, 0, tzinfo=moscow))
    fake.put_order(2, 1, "50", at=datetime(2026, 1, 7, 12, 0, tzinfo=moscow))
    assert fake.deals[1]["CLOSEDATE"] == "2026-01-05T03:00:00+03:00"
    pulled = CliRunner().invoke(main, ["pull", "--config", str(path)])
    assert pulled.exit_code == 0, pulled.output
    frequency, gaps, orders = customer_one(path)
    assert (frequency, gaps) == (2, 1)  # two purchase days
    assert (orders["first_order"], orders["last_order"]) == ("2026-01-05", "2026-01-07")


@pytest.mark.parametrize("value, day", [
    ("2024-09-09T02:00:00+02:00", "2024-09-09"),  # the vendor's crm.deal.get example (midnight UTC, +02:00)
    ("2024-09-08T19:00:00-05:00", "2024-09-09"),  # midnight UTC written west of Greenwich
    ("2024-09-09T00:00:00+03:00", "2024-09-09"),  # a local midnight
    ("2024-09-09T00:00:00-05:00", "2024-09-09"),
    ("2024-09-09", "2024-09-09"),
])
@pytest.mark.parametrize("zone", ["America/Los_Angeles", "UTC", "Pacific/Kiritimati", "Asia/Kolkata"])
def test_day_at_noon_keeps_the_calendar_day_in_every_zone(value, day, zone):
    local = day_at_noon(value, zone).astimezone(ZoneInfo(zone))
    assert (local.date().isoformat(), local.time().isoformat()) == (day, "12:00:00")


@pytest.mark.parametrize("value", ["", "05.01.2026", None, 20260105, "2026-13-01T00:00:00+03:00"])
def test_day_at_noon_refuses_what_is_not_a_date(value):
    with pytest.raises(ValueError, match="not a date"):
        day_at_noon(value, "UTC")


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


def test_retailcrm_without_timezone_counts_moscow_days_and_rebuilds_the_utc_caches(tmp_path, monkeypatch):
    """RetailCRM's API times are read as Moscow (its default ``timezone``): days are counted there too, and a
    store whose caches were built under UTC (a config that said UTC, or an earlier version) is recounted."""
    monkeypatch.chdir(tmp_path)
    for name in ("RFMSYNC_STORE_URL", "RFMSYNC_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RETAILCRM_URL", test_retailcrm.BASE)
    monkeypatch.setenv("RETAILCRM_API_KEY", test_retailcrm.KEY)
    path = tmp_path / "rfmsync.toml"
    path.write_text('[source]\ntype = "retailcrm"\n', encoding="utf-8")
    moscow = ZoneInfo("Europe/Moscow")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = test_retailcrm.FakeRetailCrm(rsps)
        for cid in (1, 2, 3):
            fake.put_contact(cid, f"c{cid}@example.com", at=datetime(2026, 1, 5, 12, 0, tzinfo=moscow))
        fake.put_order(1, 1, "100", at=datetime(2026, 1, 5, 1, 30, tzinfo=moscow))  # 22:30 UTC on the 4th
        fake.put_order(2, 1, "50", at=datetime(2026, 1, 5, 20, 0, tzinfo=moscow))
        fake.put_order(3, 2, "70", at=datetime(2026, 1, 3, 12, 0, tzinfo=moscow))
        fake.put_order(4, 3, "90", at=datetime(2026, 1, 8, 12, 0, tzinfo=moscow))
        pulled = CliRunner().invoke(main, ["pull", "--config", str(path)])
        assert pulled.exit_code == 0, pulled.output
    path.write_text('[source]\ntype = "retailcrm"\ntimezone = "UTC"\n', encoding="utf-8")  # the old days
    _, utc_gaps, utc_orders = customer_one(path)  # builds the day caches under UTC, from the same stored times
    assert (utc_gaps, utc_orders["first_order"], utc_orders["last_order"]) == (1, "2026-01-04", "2026-01-05")

    path.write_text('[source]\ntype = "retailcrm"\n', encoding="utf-8")  # timezone left out: RetailCRM's own
    assert load_config(path).timezone == "Europe/Moscow"
    _, gaps, orders = customer_one(path)
    assert (gaps, orders["first_order"], orders["last_order"]) == (0, "2026-01-05", "2026-01-05")


def test_the_other_sources_still_default_to_utc(tmp_path, monkeypatch):
    for kind in ("file", *VENDORS):
        path = tmp_path / f"{kind}.toml"
        path.write_text(f'[source]\ntype = "{kind}"\n', encoding="utf-8")
        assert load_config(path).timezone == "UTC"


@pytest.mark.parametrize("shop_zone, configured", [("Europe/Kiev", "Europe/Kyiv"), ("Asia/Calcutta", "Asia/Kolkata"),
                                                   ("Asia/Kolkata", "Asia/Calcutta")])
def test_check_does_not_warn_about_two_names_of_one_zone(shop_zone, configured, rsps, tmp_path, monkeypatch):
    path = shop(tmp_path, monkeypatch, "shopify", f'timezone = "{configured}"\n')
    test_shopify.FakeShopify(rsps, pull=False, check=True).iana_timezone = shop_zone
    result = CliRunner().invoke(main, ["check", "--config", str(path), "--offline", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"] == [] and "warning" not in result.stderr


@pytest.mark.parametrize("a, b, same", [
    ("Europe/Kiev", "Europe/Kyiv", True), ("Asia/Calcutta", "Asia/Kolkata", True), ("UTC", "Etc/UTC", True),
    ("Europe/Moscow", "Europe/Minsk", False),  # one offset since 2014, not before
    ("America/New_York", "America/Chicago", False), ("Asia/Tashkent", "UTC", False), ("Asia/Tashkand", "UTC", False),
])
def test_same_rules_compares_offsets_not_names(a, b, same):
    assert same_rules(a, b) is same and same_rules(b, a) is same
