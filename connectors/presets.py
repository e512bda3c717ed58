"""Built-in column presets for common POS/CRM exports: canonical field → column header.

Select one with ``preset = "..."`` in ``[source]``; entries in ``[source.columns]`` override the
preset's. A preset column that is missing from a file is skipped, except the fields an order
cannot do without (``ordered_at``, ``amount``/``price``), which raise :class:`ConfigError`.
A preset may also say how its rows are read (:data:`READING`): its own statuses (under
``[source.statuses]``, which win) and whether an order's further rows are its line items alone.

The exact headers of real BILLZ and 1C exports are not published; these follow the labels in the
project's source notes (BILLZ report UI labels, §1.6) and the usual Russian-locale 1C
"Реализация товаров и услуг" list export. They are assumptions until checked on a real export.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRESETS: dict[str, dict[str, str]] = {
    # BILLZ 2.0 sales report (XLSX), one row per receipt line; customers are phone-first (no email).
    "billz": {
        "order_id": "Номер продажи",
        "ordered_at": "Дата",
        "name": "Клиент",
        "phone": "Телефон",
        "product": "Товар",
        "sku": "Артикул",
        "brand": "Бренд",
        "category": "Категория",
        "quantity": "Количество",
        "amount": "Чистые продажи",
    },
    # 1C:Retail / 1C:Trade export of sales documents, one row per document line.
    "1c": {
        "order_id": "Номер",
        "ordered_at": "Дата",
        "customer_id": "Контрагент",
        "name": "Контрагент",
        "phone": "Телефон",
        "email": "Электронная почта",
        "status": "Статус",
        "product": "Номенклатура",
        "sku": "Артикул",
        "quantity": "Количество",
        "price": "Цена",
        "amount": "Сумма",
        "currency": "Валюта",
    },
    # Shopify admin's own "Export orders" CSV: one row per line item; the order's columns (Total, Financial Status,
    # Accepts Marketing, …) on its first row only, the other rows of the same Name carry its line items.
    "shopify_orders_csv": {
        "order_id": "Name",
        "ordered_at": "Created at",
        "email": "Email",
        "phone": "Phone",
        "name": "Billing Name",
        "marketing_consent": "Accepts Marketing",
        "status": "Financial Status",
        "cancelled_at": "Cancelled at",
        "amount": "Total",
        "currency": "Currency",
        "discount": "Discount Amount",
        "product": "Lineitem name",
        "sku": "Lineitem sku",
        "brand": "Vendor",
        "quantity": "Lineitem quantity",
        "price": "Lineitem price",
    },
}


@dataclass(frozen=True)
class Reading:
    """How a preset's rows are read besides its columns.

    ``statuses``: raw status → canonical one, added to the built-in synonyms (``[source.statuses]`` wins).
    ``line_rows``: an order's rows after its first one that leave the order's columns empty (``amount`` and
    ``status``, ``cancelled_at``) are its further line items: they take the first row's customer, date, status
    and currency and add nothing to its amount (:mod:`connectors.file_heads`)."""

    statuses: dict[str, str] = field(default_factory=dict)
    line_rows: bool = False


READING: dict[str, Reading] = {
    # Financial Status: a refunded order is the sale itself, wholly refunded (not a refund of another order, as a
    # `refunded` row is), voided and expired ones were never paid: none is a purchase. Pending and authorized
    # orders are placed, not yet captured (cash on delivery, bank transfer); partial payments and refunds keep
    # the order. "Cancelled at" filled cancels any order.
    "shopify_orders_csv": Reading(
        statuses={"paid": "completed", "partially_paid": "completed", "partially_refunded": "completed",
                  "pending": "completed", "authorized": "completed", "refunded": "cancelled",
                  "voided": "cancelled", "expired": "cancelled"},
        line_rows=True),
}


def reading(preset: str | None) -> Reading:
    """The preset's :class:`Reading` (the default one: no own statuses, no line rows)."""
    return READING.get(preset or "", Reading())
