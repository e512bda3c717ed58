"""A CRM pull's vendor time orders the webhook deliveries after it (sync/store/pulled.py): Shopify and amoCRM pulls
note each record's ``updated_at`` (the clock of their webhooks' payloads), so a delivery the vendor retries after the
pull, made before the change the pull read, is left out (counted as stale) instead of undoing it; and a pull's page
older than the webhook version the store holds is left out of the pull."""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

import responses

from connectors.amocrm import parse_webhook as amo_parse
from connectors.incremental import Stager
from connectors.records import Consent, Contact, Order
from connectors.shopify import parse_webhook as shopify_parse
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.config import load_config
from sync.ingest import segments_from_store
from sync.ledger import open_ledger
from sync.pipeline import store_path
from sync.serve.resync import resync
from sync.settings import load_settings
from sync.store import merge_staged, open_store
from tests import test_amocrm, test_shopify
from tests.test_worker import AS_OF

T0 = test_shopify.T0
S = timedelta(seconds=1)


@contextmanager
def crm_shop(folder: Path, monkeypatch, kind: str) -> Iterator[tuple]:
    """A Shopify or amoCRM shop against its fake API (responses): (cfg, settings, ledger, fake)."""
    fake_class, env = {"shopify": (test_shopify.FakeShopify, {"SHOPIFY_SHOP": test_shopify.SHOP,
                                                              "SHOPIFY_TOKEN": test_shopify.TOKEN}),
                       "amocrm": (test_amocrm.FakeAmo, {"AMOCRM_SUBDOMAIN": test_amocrm.SUB,
                                                        "AMOCRM_TOKEN": test_amocrm.TOKEN})}[kind]
    (folder / "rfmsync.toml").write_text(f'[source]\ntype = "{kind}"\ntimezone = "Asia/Tashkent"\n', encoding="utf-8")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg, settings = load_config(folder / "rfmsync.toml"), load_settings()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, open_ledger(cfg, settings) as ledger:
        yield cfg, settings, ledger, fake_class(rsps)


def _pull(cfg, ledger, settings) -> None:
    """The scheduled sync's pull (incremental from the saved cursor; a backfill the first time)."""
    segments_from_store(cfg, ledger, settings, as_of=AS_OF, pull=True).con.close()


def _shopify(topic: str, payload: dict, cfg) -> tuple[list, list]:
    return shopify_parse({"X-Shopify-Topic": topic}, json.dumps(payload).encode())


def _row(cfg, sql: str, *args) -> tuple:
    with open_store(store_path(cfg)) as con:
        return con.execute(sql, list(args)).fetchone()


def test_a_shopify_orders_paid_retried_after_the_pull_read_the_refund_is_left_out(tmp_path, monkeypatch):
    """The pull stores order 77 refunded (updated_at 10:05); Shopify retries the orders/paid delivery of 10:00 after
    it: left out and counted, the order stays refunded. A later orders/updated (10:10) is applied."""
    with crm_shop(tmp_path, monkeypatch, "shopify") as (cfg, settings, ledger, fake):
        fake.put_contact(7, "ann@example.com", at=T0)
        fake.put_order(77, 7, "100.00", at=T0)
        paid = copy.deepcopy(fake.orders[77])  # the delivery Shopify keeps retrying
        fake.put_order(77, 7, "100.00", at=T0, financial_status="refunded", updated_at=test_shopify.z(T0 + 300 * S))
        _pull(cfg, ledger, settings)
        assert _row(cfg, "SELECT status FROM orders WHERE order_id = '77'") == ("cancelled",)
        orders, _ = _shopify("orders/paid", paid, cfg)
        report = resync(cfg, ledger, settings, orders, as_of=AS_OF)
        assert report.stale == {"order": 1, "contact": 0}
        assert _row(cfg, "SELECT status FROM orders WHERE order_id = '77'") == ("cancelled",)
        newer = {**paid, "current_total_price": "80.00", "updated_at": test_shopify.z(T0 + 600 * S)}
        report = resync(cfg, ledger, settings, _shopify("orders/updated", newer, cfg)[0], as_of=AS_OF)
        assert report.stale == {"order": 0, "contact": 0}
        assert _row(cfg, "SELECT status, amount FROM orders WHERE order_id = '77'") == ("completed", 80)


def test_a_shopify_customer_update_retried_after_the_pull_read_the_withdrawal_does_not_subscribe(tmp_path,
                                                                                                 monkeypatch):
    """The pull reads customer 7 unsubscribed (consent_updated_at 10:05); the customers/update delivery of 10:00,
    still subscribed, retried after the pull: left out, the consent stays `no`."""
    with crm_shop(tmp_path, monkeypatch, "shopify") as (cfg, settings, ledger, fake):
        fake.put_contact(7, "ann@example.com", at=T0)
        subscribed = copy.deepcopy(fake.customers[7])
        fake.customers[7]["email_marketing_consent"] = {"state": "unsubscribed", "opt_in_level": "single_opt_in",
                                                        "consent_updated_at": test_shopify.z(T0 + 300 * S)}
        _pull(cfg, ledger, settings)
        assert _row(cfg, "SELECT marketing_consent FROM contacts WHERE customer_id = '7'") == ("no",)
        report = resync(cfg, ledger, settings, (), _shopify("customers/update", subscribed, cfg)[1], as_of=AS_OF)
        assert report.stale == {"order": 0, "contact": 1}
        assert _row(cfg, "SELECT marketing_consent FROM contacts WHERE customer_id = '7'") == ("no",)


def test_an_amocrm_contact_update_retried_after_the_pull_is_left_out(tmp_path, monkeypatch):
    """amoCRM: the pull reads contact 5 with its new e-mail (updated_at 10:05); the contacts[update] delivery of
    10:00 (the old e-mail) arrives after it: left out. A pull's vendor time is the lead's too."""
    with crm_shop(tmp_path, monkeypatch, "amocrm") as (cfg, settings, ledger, fake):
        fake.put_contact(5, "new@example.com", at=T0 + 300 * S)
        fake.put_order(70, 5, "100", at=T0)
        _pull(cfg, ledger, settings)
        old = {"contacts[update][0][id]": "5", "contacts[update][0][name]": "Ann C5",
               "contacts[update][0][updated_at]": str(int(T0.timestamp())),
               "contacts[update][0][custom_fields][0][code]": "EMAIL",
               "contacts[update][0][custom_fields][0][values][0][value]": "old@example.com",
               "account[subdomain]": test_amocrm.SUB}
        _, contacts = amo_parse({}, urlencode(old).encode())
        lead = Order("70", "5", T0, Decimal(1), updated_at=T0 - 60 * S)  # a version of the lead older than the pull's
        report = resync(cfg, ledger, settings, [lead], contacts, as_of=AS_OF)
        assert report.stale == {"order": 1, "contact": 1}
        assert _row(cfg, "SELECT email FROM contacts WHERE customer_id = '5'") == ("new@example.com",)
        assert _row(cfg, "SELECT amount FROM orders WHERE order_id = '70'") == (100,)


def test_a_backfill_page_older_than_the_webhook_version_held_is_left_out_of_the_pull(tmp_path, monkeypatch, caplog):
    """The store holds the webhook's refund of order 77 (10:05); the backfill's page (a list lagging behind the edit)
    still shows it paid (10:00): the pull leaves its version out, the refund stays. The next pull, reading a newer
    version (10:10), overwrites the order and its time."""
    caplog.set_level("INFO", logger="sync.store")
    with crm_shop(tmp_path, monkeypatch, "shopify") as (cfg, settings, ledger, fake):
        fake.put_contact(7, "ann@example.com", at=T0)
        fake.put_order(77, 7, "100.00", at=T0)
        refund = {**copy.deepcopy(fake.orders[77]), "financial_status": "refunded",
                  "updated_at": test_shopify.z(T0 + 300 * S)}
        resync(cfg, ledger, settings, _shopify("orders/updated", refund, cfg)[0], as_of=AS_OF)
        _pull(cfg, ledger, settings)
        assert _row(cfg, "SELECT status FROM orders WHERE order_id = '77'") == ("cancelled",)
        assert "pull merge: 1 orders left out as stale (e.g. 77)" in caplog.text
        fake.put_order(77, 7, "90.00", at=T0, updated_at=test_shopify.z(T0 + 600 * S))
        _pull(cfg, ledger, settings)
        assert _row(cfg, "SELECT status, amount FROM orders WHERE order_id = '77'") == ("completed", 90)
        late = {**refund, "updated_at": test_shopify.z(T0 + 480 * S)}  # 10:08, retried after that pull (10:10)
        assert resync(cfg, ledger, settings, _shopify("orders/updated", late, cfg)[0], as_of=AS_OF).stale["order"] == 1
        assert _row(cfg, "SELECT status, amount FROM orders WHERE order_id = '77'") == ("completed", 90)


# ---------------------------------------------------------------- the rules, at the store's merge


def _pulled(con, *, orders=(), contacts=(), pulled_at: datetime = T0 + 3600 * S) -> dict[str, int]:
    stager = Stager(con, "test pull")  # as a CRM pull stages its pages and their vendor times
    stager.stage(orders, contacts)
    return merge_staged(con, stager.result(cursor=""), origin="pull", pulled_at=pulled_at)


def _hook(con, *, orders=(), contacts=(), accepted: datetime = T0 + 7200 * S) -> dict[str, int]:
    stage_records(con, orders, contacts)
    records = [("order", o.order_id, o.updated_at) for o in orders] + \
        [("contact", c.customer_id, c.updated_at) for c in contacts]
    return merge_staged(con, PullResult(), origin="webhook", received_at={(k, i): accepted for k, i, _ in records},
                        versions={(k, i): t for k, i, t in records if t is not None})


def _order(amount: str, at: datetime | None) -> Order:
    return Order("77", "7", T0, Decimal(amount), updated_at=at)


def _consent(con) -> str:
    return con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = '7'").fetchall()[0][0]


def test_an_untimed_delivery_after_a_timed_pull_is_ordered_by_acceptance():
    """The host's clock is never compared with the vendor's: a delivery without a time, accepted after the pull,
    is applied, whatever the pulled version's vendor time."""
    with open_store(None) as con:
        _pulled(con, orders=[_order("100", T0 + 300 * S)])
        assert "stale_orders" not in _hook(con, orders=[_order("60", None)])
        assert con.execute("SELECT amount FROM orders").fetchall() == [(60,)]


def test_equal_times_keep_a_pulled_withdrawal_and_a_stale_withdrawal_still_withdraws():
    with open_store(None) as con:
        _pulled(con, contacts=[Contact("7", marketing_consent=Consent.NO, updated_at=T0)])
        assert _hook(con, contacts=[Contact("7", marketing_consent=Consent.YES, updated_at=T0)])["stale_contacts"] == 1
        assert _consent(con) == "no"
    with open_store(None) as con:  # the pull read a re-subscription (10:05); a withdrawal of 10:00 retried after it
        _pulled(con, contacts=[Contact("7", marketing_consent=Consent.YES, updated_at=T0 + 300 * S)])
        assert _hook(con, contacts=[Contact("7", marketing_consent=Consent.NO, updated_at=T0)])["stale_contacts"] == 1
        assert _consent(con) == "no"  # never subscribe on a doubt


def test_a_pull_without_a_time_for_the_record_keeps_the_last_pulled_time_and_a_later_pull_overwrites_it():
    with open_store(None) as con:
        _pulled(con, orders=[_order("100", T0 + 300 * S)])
        _pulled(con, orders=[_order("90", None)])  # no updated_at: its version is at least as new as 10:05
        assert _hook(con, orders=[_order("50", T0)])["stale_orders"] == 1
        _pulled(con, orders=[_order("80", T0 + 100 * S)])  # the vendor's current version says 10:01:40
        assert "stale_orders" not in _hook(con, orders=[_order("70", T0 + 200 * S)])
        assert con.execute("SELECT amount FROM orders").fetchall() == [(70,)]


def test_a_store_written_before_pulls_noted_times_orders_by_acceptance_as_before():
    """An older rfmsync's store: no pulled_versions table; its pulled records have no time (a delivery is applied),
    and the table is created by the next merge."""
    with open_store(None) as con:
        stage_records(con, [_order("100", None)], [])
        merge_staged(con, PullResult(), origin="pull", pulled_at=T0)
        con.execute("DROP TABLE pulled_versions")
        assert "stale_orders" not in _hook(con, orders=[_order("50", T0)])
        assert con.execute("SELECT amount FROM orders").fetchall() == [(50,)]
        _pulled(con, orders=[_order("80", T0 + 300 * S)], pulled_at=T0 + 7300 * S)  # the table is there again
        assert _hook(con, orders=[_order("60", T0 + 60 * S)], accepted=T0 + 7400 * S)["stale_orders"] == 1


def test_a_pulled_vendor_time_in_the_future_is_ignored_and_logged(tmp_path, monkeypatch, caplog):
    """A wrong clock or offset: the pulled order gets no time (a later delivery is ordered by acceptance)."""
    with crm_shop(tmp_path, monkeypatch, "shopify") as (cfg, settings, ledger, fake):
        fake.put_contact(7, "ann@example.com", at=T0)
        fake.put_order(77, 7, "100.00", at=T0,
                       updated_at=test_shopify.z(datetime.now(timezone.utc) + timedelta(days=2)))
        _pull(cfg, ledger, settings)
        delivery = {**fake.orders[77], "current_total_price": "60.00", "updated_at": test_shopify.z(T0 + 60 * S)}
        assert resync(cfg, ledger, settings, _shopify("orders/updated", delivery, cfg)[0], as_of=AS_OF).stale == {
            "order": 0, "contact": 0}  # not older than a time in the future: ordered by acceptance, applied
        assert _row(cfg, "SELECT amount FROM orders WHERE order_id = '77'") == (60,)
        assert "shopify pull: order 77's updated_at" in caplog.text and "is in the future: ignored" in caplog.text


def test_an_amocrm_pull_for_a_lead_event_keeps_the_contacts_vendor_time(tmp_path, monkeypatch):
    """A lead event makes the worker pull amoCRM: the contact it reads (its new e-mail, 10:05) keeps its vendor time
    (amoCRM's clock: its sender), so the contacts[update] delivery of 10:01 (the old e-mail), retried after that pull, is left out."""
    with crm_shop(tmp_path, monkeypatch, "amocrm") as (cfg, settings, ledger, fake):
        first = Contact("5", email="first@example.com", updated_at=T0)
        resync(cfg, ledger, settings, (), [first], as_of=AS_OF)
        fake.put_contact(5, "new@example.com", at=T0 + 300 * S)
        resync(cfg, ledger, settings, pull=True, as_of=AS_OF)  # the pull a leads[status] delivery queues
        assert _row(cfg, "SELECT email FROM contacts WHERE customer_id = '5'") == ("new@example.com",)
        # its time noted as amoCRM's clock (the sender of the version: sync.store.ordering.stored_newer)
        assert _row(cfg, "SELECT updated_at, sender FROM webhook_records WHERE id = '5'") == (T0 + 300 * S, "amocrm")
        retried = Contact("5", email="old@example.com", updated_at=T0 + 60 * S)
        report = resync(cfg, ledger, settings, (), [retried], as_of=AS_OF)
        assert report.stale == {"order": 0, "contact": 1}
        assert _row(cfg, "SELECT email FROM contacts WHERE customer_id = '5'") == ("new@example.com",)


def test_a_pull_older_than_the_delivery_held_keeps_its_withdrawal_and_on_equal_times_the_withdrawal():
    """The pull's side: a pulled `yes` with the time of the `no` the store holds leaves it `no`; a pulled `no` older
    than the `yes` held (a page lagging behind the re-subscription) still withdraws, as a stale delivery's does."""
    with open_store(None) as con:
        _hook(con, contacts=[Contact("7", first_name="Ann", marketing_consent=Consent.NO, updated_at=T0)])
        assert _pulled(con, contacts=[Contact("7", first_name="Anna", marketing_consent=Consent.YES,
                                              updated_at=T0)])["stale_pulled_contacts"] == 1
        assert _consent(con) == "no"
    with open_store(None) as con:
        _hook(con, contacts=[Contact("7", first_name="Ann", marketing_consent=Consent.YES, updated_at=T0 + 300 * S)])
        _pulled(con, contacts=[Contact("7", first_name="Anna", marketing_consent=Consent.NO, updated_at=T0)])
        assert con.execute("SELECT first_name, marketing_consent FROM contacts").fetchall() == [("Ann", "no")]
