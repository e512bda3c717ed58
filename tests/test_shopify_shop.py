"""Shopify's shop read as users paste it (``[source] shop`` or SHOPIFY_SHOP): a name, a host, a URL of the shop or of
its admin; anything else a clear error, and errors name the setting the value came from."""

from __future__ import annotations

import pytest
import requests
import responses
from pydantic import ValidationError

from connectors.errors import ConfigError, TransientError
from connectors.shopify import ShopifyConfig, ShopifySecrets, ShopifySource
from sync.config import format_validation_error
from sync.store import open_store

from .test_shopify import SHOP, T0, TOKEN, FakeShopify


@pytest.mark.parametrize("pasted", [SHOP, f"{SHOP}.myshopify.com", f"https://{SHOP}.myshopify.com/admin",
                                    f" HTTPS://{SHOP.upper()}.myshopify.com/admin/orders/ ",
                                    f"https://admin.shopify.com/store/{SHOP}/orders?inContextTimeframe=today"])
@pytest.mark.parametrize("where", ["config", "env"])
def test_the_shop_pasted_as_a_url_is_read_as_its_host(pasted, where):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakeShopify(mock)
        fake.put_contact(10, "ann@example.com", at=T0)
        fake.put_order(1, 10, "100.00", at=T0)
        config, secrets = (ShopifyConfig(shop=pasted), ShopifySecrets(token=TOKEN)) if where == "config" else (
            ShopifyConfig(), ShopifySecrets(shop=pasted, token=TOKEN))
        with open_store(None) as con:
            result = ShopifySource(config, secrets, sleep=lambda s: None).pull(con)
    assert (result.orders, result.contacts, result.bad_row_count) == (1, 1, 0)


@pytest.mark.parametrize("pasted", ["my shop", "https://admin.shopify.com/", "https://", "shop_1.myshopify.com"])
def test_a_shop_that_is_none_is_an_error_naming_where_it_was_set(pasted, monkeypatch):
    with pytest.raises(ValidationError, match=r"shop = .* is not a Shopify shop: expected its name"):
        ShopifyConfig(shop=pasted)
    monkeypatch.delenv("SHOPIFY_SHOP", raising=False)
    with pytest.raises(ConfigError, match=r"^shopify: SHOPIFY_SHOP = .* is not a Shopify shop"):
        ShopifySource(ShopifyConfig(), ShopifySecrets(shop=pasted, token=TOKEN))


@pytest.mark.parametrize(("config", "secrets", "named"), [
    ({"shop": "gone-shop"}, {"shop": "env-shop"}, r"check \[source\] shop;"),  # (the config file's wins)
    ({}, {"shop": "gone-shop"}, "check SHOPIFY_SHOP;")])
def test_a_shop_that_cannot_be_reached_names_the_setting_that_gave_it(config, secrets, named):
    with responses.RequestsMock() as mock:
        mock.add("GET", "https://gone-shop.myshopify.com/admin/api/2025-10/shop.json",
                 body=requests.ConnectionError("no such host"))
        source = ShopifySource(ShopifyConfig(**config), ShopifySecrets(token=TOKEN, **secrets),
                               sleep=lambda s: None)
        with pytest.raises(TransientError, match=named):
            source.check()


@pytest.mark.parametrize("token", [TOKEN, "shpca_0123456789abcdef", "shppa_x", "shpss_0123456789abcdef"])
def test_a_token_set_as_the_shop_is_not_echoed(token, monkeypatch):
    """SHOPIFY_SHOP and SHOPIFY_TOKEN swapped: the error says the shop is wrong without quoting the token."""
    monkeypatch.delenv("SHOPIFY_SHOP", raising=False)
    with pytest.raises(ConfigError) as err:
        ShopifySource(ShopifyConfig(), ShopifySecrets(shop=token, token=SHOP))
    with pytest.raises(ValidationError) as invalid:
        ShopifyConfig(shop=f" {token}\n")
    for text in (str(err.value), format_validation_error(invalid.value, None)):  # (what the CLI says of it)
        assert "is not a Shopify shop" in text and "(a value that looks like a token, not shown)" in text
        assert token[:6] not in text, text


@pytest.mark.parametrize("wrapped", ["'{t}'", '"{t}"', "Bearer {t}", "https://{t}.myshopify.com", "x{t}"])
def test_a_token_set_as_the_shop_in_quotes_or_a_url_is_not_echoed(wrapped, monkeypatch):
    """The token kept in its quotes (``docker --env-file``), after ``Bearer`` or in a URL: still a token, not shown
    (the session's re-read: only a value beginning with the token was recognised)."""
    monkeypatch.delenv("SHOPIFY_SHOP", raising=False)
    token = "shpat_0123456789abcdef0123456789abcdef"
    with pytest.raises(ConfigError) as err:
        ShopifySource(ShopifyConfig(), ShopifySecrets(shop=wrapped.format(t=token), token=SHOP))
    assert "0123456789abcdef" not in str(err.value), str(err.value)


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_shop_in_the_config_is_unset_and_shopify_shop_gives_it(blank):
    """``shop = ""`` (an old config's) was read as SHOPIFY_SHOP's default before the shop was validated."""
    assert ShopifyConfig(shop=blank).shop is None
    source = ShopifySource(ShopifyConfig(shop=blank), ShopifySecrets(shop=SHOP, token=TOKEN))
    assert source.host == f"{SHOP}.myshopify.com"
