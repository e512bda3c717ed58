"""Shopify without ``read_all_orders`` lists only the last 60 days of orders, silently (sources.md §6.1): once per
pull the token's scopes are read (``GET /admin/oauth/access_scopes.json``, shaped as Shopify documents it), and a
pull wanting older orders without the scope carries a warning (the pull goes on: docs/sources/shopify.md); a token
that may not read its scopes does not crash the pull."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

from connectors.incremental import dump_cursor, iso
from sync.pipeline import pull_lines

from .test_shopify import SCOPES, T0, FakeShopify, make_source, rsps  # noqa: F401 (the fixture)

NOW = T0 + timedelta(days=1)  # make_source's clock


def pull(rsps, scopes, cursor=None):
    fake = FakeShopify(rsps)
    fake.scopes = scopes
    fake.put_contact(1, "a@example.com", at=T0)
    fake.put_order(1, 1, "10.00", at=T0)
    result = make_source().pull(duckdb.connect(), cursor)
    assert [c.request.url for c in rsps.calls].count(SCOPES) == 1  # once per pull
    return result


def test_a_backfill_without_read_all_orders_warns_that_it_holds_60_days(rsps, caplog):
    caplog.set_level("INFO", logger="connectors.shopify")
    result = pull(rsps, ["read_orders", "read_customers"])
    assert result.orders == 1  # the pull goes on
    (line,) = result.warnings
    assert "lacks the read_all_orders scope" in line and "last 60 days" in line and "since 2025-11-12" in line
    assert "backfill" in line and "rfmsync pull --full" in line
    assert line in pull_lines(result) and line in caplog.text  # told with the run's warnings, and logged


def test_a_backfill_with_read_all_orders_says_nothing(rsps):
    assert pull(rsps, ["read_orders", "read_all_orders", "read_customers"]).warnings == []


@pytest.mark.parametrize("scopes", [["read_orders"], 403], ids=["without_read_all_orders", "scopes_unreadable"])
@pytest.mark.parametrize("days, warned", [(10, False), (59, False), (75, True)])
def test_an_incremental_pull_warns_only_when_its_window_starts_past_60_days(rsps, days, warned, scopes):
    at = iso(NOW - timedelta(days=days))
    result = pull(rsps, scopes, dump_cursor({"orders": at, "contacts": at}))
    assert bool(result.warnings) is warned
    if warned:
        assert "orders changed since 2025-10-28" in result.warnings[0]


@pytest.mark.parametrize("scopes, why", [(403, "HTTP 403"), (404, "HTTP 404"), ({"oops": 1}, "an answer without")])
def test_a_token_that_may_not_read_its_scopes_pulls_and_says_the_window_is_unchecked(rsps, scopes, why):
    result = pull(rsps, scopes)
    assert result.orders == 1
    (line,) = result.warnings
    assert f"scopes could not be read ({why}" in line and "read_all_orders is not known" in line
