"""Shopify ``[source]`` settings and secrets; the shop read as users paste it (``my-shop``,
``my-shop.myshopify.com``, ``https://my-shop.myshopify.com/admin``, the admin's
``https://admin.shopify.com/store/my-shop/orders``) as the host its Admin API is on, with a clear error naming where
it was set for anything else. Re-exported by :mod:`connectors.shopify`."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .blank import BlankIsUnset
from .contacts import PhoneRegion
from .errors import ConfigError
from .secrets import Secret, shown
from .zones import TimeZone

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: the host of Shopify's admin, whose URLs name the shop in their path: ``/store/<name>/...``
ADMIN_HOST = "admin.shopify.com"


def shop_host(value: str, where: str) -> str:
    """The host of the shop's Admin API from what a user set as the shop (``where``: the setting, for the error): a
    name, a host (the ``myshopify.com`` one, or the shop's own domain: the calls are then redirected, and the error
    says which host to set), a URL of either, or an admin URL. A ValueError naming ``where`` else."""
    text = value.strip().lower()
    if re.search(r"[./:]", text):
        url = urlsplit(text if "//" in text else f"//{text}")
        try:
            host = url.hostname or ""
        except ValueError:  # (a bad port)
            host = ""
        if host == ADMIN_HOST:
            store = re.match(r"/store/([^/]+)", url.path)
            host = f"{store.group(1)}.myshopify.com" if store else ""
    else:
        host = f"{text}.myshopify.com"
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels) or host == ADMIN_HOST:
        raise ValueError(f"{where} = {shown(value)} is not a Shopify shop: expected its name or its myshopify.com "
                         "host, e.g. \"my-shop\" or \"my-shop.myshopify.com\" (a URL of the shop or of its admin, "
                         "https://admin.shopify.com/store/my-shop, works too)")
    return host


class ShopifyConfig(BlankIsUnset):
    model_config = ConfigDict(extra="forbid")
    type: Literal["shopify"] = "shopify"
    shop: str | None = None  # "demo", "demo.myshopify.com" or a URL of either; default SHOPIFY_SHOP
    api_version: str = "2025-10"
    paid_statuses: list[str] = Field(default_factory=lambda: ["paid", "partially_refunded"])
    refunded_statuses: list[str] = Field(default_factory=lambda: ["refunded"])
    include_test_orders: bool = False
    currency: str | None = None  # used when an order carries no currency
    page_size: int = Field(250, ge=1, le=250)
    lookback_minutes: int = Field(5, ge=0)
    requests_per_second: float = Field(2.0, gt=0)
    call_limit_headroom: int = Field(5, ge=0)
    phone_region: PhoneRegion = None  # default country of phones written without one, e.g. "UZ"
    timezone: TimeZone = "UTC"  # the shop's zone (shop.json iana_timezone): purchases counted per local day

    @field_validator("shop")
    @classmethod
    def _shop(cls, value: str | None) -> str | None:
        """``shop`` pasted as a host or URL: its Admin API host; blank (``shop = ""``, as older configs have it) is
        unset: SHOPIFY_SHOP gives it."""
        return shop_host(value, "shop") if value is not None and value.strip() else None


class ShopifySecrets(BlankIsUnset, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOPIFY_", extra="ignore", env_ignore_empty=True)
    shop: str | None = None
    token: Secret | None = None
    api_url: str | None = None  # base-URL override (tests, proxies)
    webhook_secret: Secret | None = None


def configured_shop(config: ShopifyConfig, secrets: ShopifySecrets) -> tuple[str | None, str]:
    """(the shop's host, the setting that gave it: ``[source] shop`` or ``SHOPIFY_SHOP``, for errors to name);
    SHOPIFY_SHOP read as :func:`shop_host` reads ``[source] shop`` (the config file's wins), a ConfigError naming
    the variable when it is not a shop."""
    if config.shop:
        return config.shop, "[source] shop"
    if not secrets.shop:
        return None, "SHOPIFY_SHOP"
    try:
        return shop_host(secrets.shop, "SHOPIFY_SHOP"), "SHOPIFY_SHOP"
    except ValueError as exc:
        raise ConfigError(f"shopify: {exc}") from None


__all__ = ["ShopifyConfig", "ShopifySecrets", "ADMIN_HOST", "shop_host", "configured_shop"]
