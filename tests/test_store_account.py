"""A store is one account's (sync.store.accounts): a pull of another account of the same CRM into a store that holds
one is refused before it reads anything, naming both accounts and what to do; the same account, and a source that
names no account, pull as before. amoCRM faked at the HTTP level (tests/test_amocrm.py's FakeAmo)."""

from __future__ import annotations

import duckdb
import pytest
import responses

from connectors.amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource
from connectors.bitrix24 import Bitrix24Config, Bitrix24Secrets, Bitrix24Source
from connectors.retailcrm import RetailCrmConfig, RetailCrmSecrets, RetailCrmSource
from connectors.shopify import ShopifyConfig, ShopifySecrets, ShopifySource
from sync.errors import ConfigError
from sync.pipeline import pull_into
from sync.store import open_store
from sync.store.accounts import account_of
from tests.test_amocrm import BASE, T0, TOKEN, FakeAmo, make_source


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _other(subdomain: str) -> AmoCrmSource:
    """Another account's settings, its calls answered by the same fake (an API URL override)."""
    return AmoCrmSource(AmoCrmConfig(page_size=4), AmoCrmSecrets(subdomain=subdomain, token=TOKEN, api_url=BASE),
                        sleep=lambda s: None, clock=lambda: T0)


def _customers(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("SELECT customer_id, email FROM contacts ORDER BY 1").fetchall()


def test_a_store_of_one_amocrm_account_refuses_another_before_reading_it(rsps):
    fake = FakeAmo(rsps)
    fake.put_contact(10, "ann@example.com", at=T0)
    fake.put_order(1, 10, "100", at=T0)
    with open_store(None) as con:
        pull_into(con, make_source())  # demoshop.amocrm.ru: noted
        before = _customers(con)
        calls = len(rsps.calls)
        fake.put_contact(10, "bob@other.example", at=T0)  # the other account's contact 10: another person
        with pytest.raises(ConfigError) as refused:
            pull_into(con, _other("othershop"))
        message = str(refused.value)
        assert "account demoshop (amoCRM subdomain), but [source] now reads othershop (amoCRM subdomain)" in message
        assert "set [store] path to a new file" in message and TOKEN not in message
        assert len(rsps.calls) == calls and _customers(con) == before  # nothing read, nothing merged
        pull_into(con, make_source())  # the store's own account pulls as before
        assert _customers(con) == [("10", "bob@other.example")]


def test_a_store_written_before_notes_its_account_at_its_next_pull_and_an_override_only_names_none(rsps):
    fake = FakeAmo(rsps)
    fake.put_contact(10, "ann@example.com", at=T0)
    with open_store(None) as con:
        unnamed = AmoCrmSource(AmoCrmConfig(page_size=4), AmoCrmSecrets(token=TOKEN, api_url=BASE),
                               sleep=lambda s: None, clock=lambda: T0)
        assert account_of(unnamed) is None
        pull_into(con, unnamed)  # no account named: nothing noted, nothing checked
        assert not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'source_accounts'").fetchall()
        pull_into(con, _other("firstshop"))  # the first pull that names one notes it
        with pytest.raises(ConfigError, match=r"account firstshop \(amoCRM subdomain\), but"):
            pull_into(con, make_source())


def test_each_crm_names_its_account_by_a_setting_never_a_secret():
    amo = AmoCrmSource(AmoCrmConfig(subdomain="https://Shop.kommo.com/leads/", domain="kommo.com"),
                       AmoCrmSecrets(token=TOKEN))
    assert account_of(amo) == "shop (amoCRM subdomain)"  # the same on amocrm.com: an account moved keeps it
    bitrix = Bitrix24Source(Bitrix24Config(), Bitrix24Secrets(webhook_url="https://Shop.bitrix24.ru/rest/1/s3cr3tc0de/"))
    assert account_of(bitrix) == "shop.bitrix24.ru"
    retail = RetailCrmSource(RetailCrmConfig(url="https://shop.retailcrm.ru"), RetailCrmSecrets(api_key="k"))
    assert account_of(retail) == "shop.retailcrm.ru"
    # review-self36: a proxy (an API URL override) is not the account; nor does a trailing dot make another one
    proxied = RetailCrmSource(RetailCrmConfig(url="https://shop.retailcrm.ru./"),
                              RetailCrmSecrets(api_key="k", api_url="https://crm-proxy.example.com"))
    assert account_of(proxied) == "shop.retailcrm.ru"
    assert account_of(ShopifySource(ShopifyConfig(shop="My-Shop"), ShopifySecrets(token="t"))) == "my-shop.myshopify.com"
    local = Bitrix24Source(Bitrix24Config(), Bitrix24Secrets(webhook_url="http://127.0.0.1:8123/rest/1/c0de/"))
    assert account_of(local) is None  # a test's or a local proxy's address: no account's name


def test_serves_pull_for_a_webhook_is_refused_the_same_way(rsps, monkeypatch, tmp_path):
    """serve's pull for a webhook (sync.serve.resync_staging) into a store of another account is refused before it
    reads anything (review-self36: untested)."""
    from sync.config import Config
    from sync.ledger import Ledger
    from sync.serve.resync_staging import _pull_staged
    from sync.settings import Settings

    fake = FakeAmo(rsps)
    fake.put_contact(10, "ann@example.com", at=T0)
    monkeypatch.setenv("AMOCRM_TOKEN", TOKEN)
    monkeypatch.setenv("AMOCRM_API_URL", BASE)
    cfg = Config(source={"type": "amocrm", "subdomain": "othershop", "page_size": 4})
    with open_store(None) as con, Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        pull_into(con, make_source())  # demoshop's store
        calls = len(rsps.calls)
        with pytest.raises(ConfigError, match=r"account demoshop \(amoCRM subdomain\), but \[source\] now reads "
                                              r"othershop"):
            _pull_staged(cfg, ledger, con, Settings(_env_file=None))
        assert len(rsps.calls) == calls
