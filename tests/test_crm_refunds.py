"""A CRM order turning refunded nets 0 for its customer, as a file's sale and its return do (store29).

The order is the sale itself, wholly refunded: stored ``cancelled`` (no purchase, nothing taken off), as the Shopify
orders export's ``refunded`` is (docs/sources/files.md), never a ``refunded`` row of its full amount, which the
metrics subtract from the customer's other purchases (net −X with no sale: a loyal customer's revenue cut by an
order that never counted)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import duckdb

from connectors.records import OrderStatus
from connectors.retailcrm import RetailCrmConfig
from connectors.retailcrm_mapping import map_order as retailcrm_order
from connectors.shopify import map_order as shopify_order
from connectors.shopify_config import ShopifyConfig
from connectors.tables import create_tables, stage_records
from segmentation.metrics import build_customer_metrics

SHOPIFY = {"id": 11, "email": "ann@example.com", "created_at": "2026-01-10T14:00:00-05:00",
           "total_price": "40.00", "currency": "USD", "customer": {"id": 7}, "line_items": []}
RETAILCRM = {"id": 21, "status": "return", "createdAt": "2026-01-10 14:00:00", "totalSumm": 40, "currency": "RUB",
             "customer": {"id": 7}}


def _net(*orders) -> tuple[int, Decimal]:
    """The customer's (frequency, monetary) of a paid order of 100 and ``orders``."""
    con = duckdb.connect()
    create_tables(con)
    paid = shopify_order(SHOPIFY | {"id": 10, "financial_status": "paid", "total_price": "100.00"}, ShopifyConfig(), [])
    stage_records(con, [paid, *orders])
    con.execute("INSERT INTO orders SELECT * FROM staged_orders")
    build_customer_metrics(con, date(2026, 2, 1))
    return con.execute("SELECT frequency, monetary FROM customer_metrics").fetchone()


def test_a_shopify_order_refunded_whole_nets_zero():
    """store29: financial_status refunded was stored refunded at its total_price (an API version or a delivery without
    current_total_price): 100 paid − 40 refunded = 60, though the refunded order was never counted as a sale."""
    for body in (SHOPIFY, SHOPIFY | {"current_total_price": "0.00"}):
        order = shopify_order(body | {"financial_status": "refunded"}, ShopifyConfig(), [])
        assert order.status is OrderStatus.CANCELLED
        assert _net(order) == (1, Decimal("100.00"))


def test_a_retailcrm_order_in_a_refunded_status_nets_zero():
    """store29: an order in one of refunded_statuses was stored refunded at its totalSumm: 100 − 40 = 60."""
    order = retailcrm_order(RETAILCRM, RetailCrmConfig(refunded_statuses=["return"]), dropped=[])
    assert order.status is OrderStatus.CANCELLED
    assert _net(order) == (1, Decimal("100.00"))
    complete = retailcrm_order(RETAILCRM | {"status": "complete"}, RetailCrmConfig(), dropped=[])
    assert complete.status is OrderStatus.COMPLETED


def test_an_unmappable_refunded_order_leaves_the_history_as_a_cancelled_one_does():
    """A refunded order whose customer is gone is no bad row: it leaves the history (a tombstone), as any
    non-purchase."""
    body = {k: v for k, v in SHOPIFY.items() if k not in ("customer", "email")} | {"financial_status": "refunded"}
    assert shopify_order(body, ShopifyConfig(), []).status is OrderStatus.CANCELLED
