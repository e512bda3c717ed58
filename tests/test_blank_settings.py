"""A setting left blank is unset, in every CRM connector's ``[source]`` table and environment variables: a blank
``AMOCRM_SUBDOMAIN=`` as ``settings.example.env`` lists it, or ``subdomain = ""`` in the config, gives the usual
"set X" message (amoCRM's ``subdomain = ""`` was "'' is not an amoCRM account" while Shopify's blank ``shop`` was
unset; a blank RetailCRM URL or amoCRM/Shopify API URL was taken as the account's URL, a blank currency stored as
``''``, a blank RetailCRM ``site`` filtered on a site named ``''``)."""

from __future__ import annotations

import pytest

from connectors.errors import ConfigError
from connectors.registry import build_source

#: type → (the [source] table, its secrets' variables set, the blank setting: where, key, the message expected)
CASES = {
    "amocrm": ({}, {"AMOCRM_TOKEN": "t"}, "subdomain", "AMOCRM_SUBDOMAIN", "set AMOCRM_SUBDOMAIN"),
    "shopify": ({}, {"SHOPIFY_TOKEN": "t"}, "shop", "SHOPIFY_SHOP", "set SHOPIFY_SHOP"),
    "retailcrm": ({}, {"RETAILCRM_API_KEY": "k"}, "url", "RETAILCRM_URL", "set RETAILCRM_URL"),
    "bitrix24": ({}, {}, None, "BITRIX24_WEBHOOK_URL", "set BITRIX24_WEBHOOK_URL"),
}
BLANKS = ["", "  "]


@pytest.fixture(autouse=True)
def _no_vendor_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.split("_")[0] in ("AMOCRM", "SHOPIFY", "RETAILCRM", "BITRIX24"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("blank", BLANKS)
@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_blank_environment_variable_is_unset(kind, blank, monkeypatch):
    section, env, _, var, message = CASES[kind]
    for name, value in {**env, var: blank}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        build_source({"type": kind, **section})


@pytest.mark.parametrize("blank", BLANKS)
@pytest.mark.parametrize("kind", sorted(k for k, case in CASES.items() if case[2]))
def test_a_blank_config_setting_is_unset(kind, blank, monkeypatch):
    section, env, key, _, message = CASES[kind]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        build_source({"type": kind, **section, key: blank})


@pytest.mark.parametrize("kind,section,env,var", [
    ("amocrm", {"subdomain": "shop"}, {"AMOCRM_TOKEN": "t"}, "AMOCRM_API_URL"),
    ("shopify", {"shop": "my-shop"}, {"SHOPIFY_TOKEN": "t"}, "SHOPIFY_API_URL"),
    ("retailcrm", {"url": "https://shop.retailcrm.ru"}, {"RETAILCRM_API_KEY": "k"}, "RETAILCRM_API_URL"),
])
def test_a_blank_api_url_override_is_unset_the_account_s_url_is_used(kind, section, env, var, monkeypatch):
    for name, value in {**env, var: " "}.items():
        monkeypatch.setenv(name, value)
    source = build_source({"type": kind, **section})
    assert source.http.base_url.startswith("https://"), source.http.base_url


@pytest.mark.parametrize("kind,section,env,default", [
    ("amocrm", {"subdomain": "shop"}, {"AMOCRM_TOKEN": "t"}, "RUB"),
    ("shopify", {"shop": "my-shop"}, {"SHOPIFY_TOKEN": "t"}, None),
    ("retailcrm", {"url": "https://shop.retailcrm.ru"}, {"RETAILCRM_API_KEY": "k"}, None),
    ("bitrix24", {}, {"BITRIX24_WEBHOOK_URL": "https://p.bitrix24.ru/rest/1/abcdef123456/"}, None),
])
def test_a_blank_currency_is_its_default(kind, section, env, default, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert build_source({"type": kind, **section, "currency": ""}).config.currency == default


def test_a_blank_retailcrm_site_is_every_site(monkeypatch):
    monkeypatch.setenv("RETAILCRM_API_KEY", "k")
    assert build_source({"type": "retailcrm", "url": "https://shop.retailcrm.ru", "site": " "}).config.site is None


def test_a_blank_file_source_setting_is_unset_but_its_delimiter_is_a_value(tmp_path):
    """``preset = ""`` was "unknown preset ''", ``encoding = ""`` "unknown encoding ''" (a config written by hand from
    a template); a delimiter stays what it says: a blank one is no delimiter (a clear error), a tab one is read."""
    import duckdb
    from pydantic import ValidationError

    (tmp_path / "orders.csv").write_text("order_id,customer_id,ordered_at,amount\n1,c1,2025-01-01,10\n",
                                         encoding="utf-8")
    columns = {f: f for f in ("order_id", "customer_id", "ordered_at", "amount")}
    blanks = {k: " " for k in ("contacts", "encoding", "currency", "preset", "date_format", "sheet", "decimal",
                               "timezone", "phone_region")}  # (the last two were "unknown time zone ''" ...)
    source = build_source({"orders": "orders.csv", "columns": columns, **blanks}, base_dir=tmp_path)
    assert (source.cfg.timezone, source.cfg.phone_region) == ("UTC", None)
    assert source.pull(duckdb.connect()).orders == 1
    with pytest.raises(ValidationError, match="delimiter must be one character"):
        build_source({"orders": "orders.csv", "columns": columns, "delimiter": ""}, base_dir=tmp_path)
    assert build_source({"orders": "orders.csv", "columns": columns, "delimiter": "\t"},
                        base_dir=tmp_path).cfg.delimiter == "\t"
