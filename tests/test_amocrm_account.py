"""amoCRM's account as users paste it: ``[source] subdomain`` (or AMOCRM_SUBDOMAIN) given as a host or URL is read as
the name before the domain; anything else is a config error naming the setting; a failing address names the setting
that holds it."""

from __future__ import annotations

import pytest
import requests
import responses
from pydantic import ValidationError

from connectors.amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource
from connectors.errors import ConfigError, TransientError
from connectors.registry import build_source
from sync.config import format_validation_error

EXPECTED = "expected the part before .amocrm.ru / .amocrm.com / .kommo.com"


@pytest.mark.parametrize(("pasted", "subdomain", "domain"), [
    ("shop", "shop", "amocrm.ru"),
    (" Shop ", "shop", "amocrm.ru"),
    ("https://shop.amocrm.ru", "shop", "amocrm.ru"),
    ("https://shop.amocrm.ru/leads/pipeline/3177727/", "shop", "amocrm.ru"),
    ("shop.kommo.com", "shop", "kommo.com"),
    ("http://my-shop.amocrm.com", "my-shop", "amocrm.com"),
])
def test_a_pasted_host_or_url_is_read_as_the_account(pasted, subdomain, domain, monkeypatch):
    monkeypatch.setenv("AMOCRM_TOKEN", "tok")
    source = build_source({"type": "amocrm", "subdomain": pasted})
    assert (source.config.subdomain, source.config.domain) == (subdomain, domain)


@pytest.mark.parametrize("pasted", ["https://shop.example.com", "shop.amocrm.ru.evil.com", "shop_1", "https://",
                                    "-shop", "shop name"])
def test_anything_else_is_a_config_error_naming_subdomain(pasted):
    with pytest.raises(ValidationError) as err:
        AmoCrmConfig(subdomain=pasted)
    assert f"subdomain = {pasted!r} is not an amoCRM account: {EXPECTED}" in str(err.value)


def test_a_pasted_domain_contradicting_domain_is_a_config_error():
    with pytest.raises(ValidationError, match="is on amocrm.ru, but domain = 'kommo.com'"):
        AmoCrmConfig(subdomain="https://shop.amocrm.ru", domain="kommo.com")
    assert AmoCrmConfig(subdomain="shop.kommo.com", domain="kommo.com").subdomain == "shop"


def test_amocrm_subdomain_is_read_the_same_way_and_named_when_wrong():
    source = AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(subdomain="https://shop.amocrm.ru/", token="tok"))
    assert source.subdomain == "shop"
    with pytest.raises(ConfigError, match=f"AMOCRM_SUBDOMAIN = 'shop.example.com' is not an amoCRM account: {EXPECTED}"):
        AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(subdomain="shop.example.com", token="tok"))
    with pytest.raises(ConfigError, match="is on kommo.com, but \\[source\\] domain is 'amocrm.ru'"):
        AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(subdomain="shop.kommo.com", token="tok"))


@pytest.mark.parametrize(("config", "env", "named"), [
    ({"subdomain": "https://shop.amocrm.ru"}, None, "check [source] subdomain and domain"),
    ({}, "shop", "check AMOCRM_SUBDOMAIN and [source] domain"),
])
def test_an_address_that_cannot_be_reached_names_where_it_was_set(config, env, named):
    source = AmoCrmSource(AmoCrmConfig(**config), AmoCrmSecrets(subdomain=env, token="tok"), sleep=lambda s: None)
    with responses.RequestsMock() as rsps:
        rsps.add("GET", "https://shop.amocrm.ru/api/v4/account", body=requests.ConnectionError("no such host"))
        with pytest.raises(TransientError) as err:
            source.check()
    assert f"cannot connect (ConnectionError); {named};" in str(err.value)


JWT = ("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImp0aSI6IjEifQ.eyJhdWQiOiJjbGllbnQiLCJzdWIiOiI1MDQxNDEifQ."
       "c2lnbmF0dXJlX29mX3RoZV90b2tlbg")


@pytest.mark.parametrize("token", [JWT, "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4y5Z6a7B8c9D0e1F2"])
def test_a_token_set_as_the_subdomain_is_not_echoed(token):
    """AMOCRM_SUBDOMAIN and AMOCRM_TOKEN swapped (a long-lived token is a JWT; a client secret, 64 letters and
    digits): the error says the account is wrong without quoting it."""
    with pytest.raises(ConfigError) as err:
        AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(subdomain=token, token="shop"))
    with pytest.raises(ValidationError) as invalid:
        AmoCrmConfig(subdomain=token)
    for text in (str(err.value), format_validation_error(invalid.value, None)):  # (what the CLI says of it)
        assert "is not an amoCRM account" in text and "(a value that looks like a token, not shown)" in text
        assert token[:12] not in text, text
