"""Built-in column presets for common POS/CRM exports: canonical field → column header.

Select one with ``preset = "..."`` in ``[source]``; entries in ``[source.columns]`` override the
preset's. A preset column that is missing from a file is skipped, except the fields an order
cannot do without (``ordered_at``, ``amount``/``price``), which raise :class:`ConfigError`.

The exact headers of real BILLZ and 1C exports are not published; these follow the labels in the
project's source notes (BILLZ report UI labels, §1.6) and the usual Russian-locale 1C
"Реализация товаров и услуг" list export. They are assumptions until checked on a real export.
"""

from __future__ import annotations

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
}
