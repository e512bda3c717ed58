"""Write the BILLZ-style example export of the README walkthrough (deterministic).

    .venv/bin/python examples/billz/make_export.py

It takes the 200-customer demo shop of ``sync.demodata.generate_shop`` (seed 7, history up to 2025-06-30) and
rewrites it the way a BILLZ POS exports it: ``sales-report.csv`` has one row per receipt line with the headers
of the ``billz`` preset (connectors/presets.py) plus two columns rfmsync does not need (Магазин, Продавец),
no customer id (the phone is the key), net sales per line; ``clients.csv`` is the client base (name, phone,
e-mail, consent). Sales are kept; returns and cancelled receipts are left out. A few walk-in sales carry no
phone and one row has an impossible date, so ``rfmsync check`` has bad rows to show.
"""

from __future__ import annotations

import csv
import random
import tempfile
from datetime import date, datetime
from pathlib import Path

from sync.demodata import generate_shop

HERE = Path(__file__).resolve().parent
AS_OF = date(2025, 6, 30)
CATALOG = [  # product, SKU, brand, category, unit price (UZS)
    ("Футболка базовая", "TS-101", "Uzbek Cotton", "Футболки", 89_000),
    ("Рубашка льняная", "SH-214", "Linen&Co", "Рубашки", 249_000),
    ("Джинсы прямые", "JN-330", "Denim Lab", "Джинсы", 319_000),
    ("Платье миди", "DR-412", "Atlas Silk", "Платья", 459_000),
    ("Кроссовки беговые", "SN-507", "Stride", "Обувь", 529_000),
    ("Куртка демисезонная", "JK-618", "Nord", "Верхняя одежда", 890_000),
    ("Ремень кожаный", "BL-702", "Leatherhouse", "Аксессуары", 129_000),
    ("Носки (3 пары)", "SC-808", "Uzbek Cotton", "Аксессуары", 39_000),
]
STORES = ["Chilonzor", "Yunusobod", "Samarqand Darvoza"]
SELLERS = ["Дилноза", "Тимур", "Малика", "Сардор"]
SALES_HEADER = ["Номер продажи", "Дата", "Магазин", "Продавец", "Клиент", "Телефон", "Товар", "Артикул", "Бренд",
                "Категория", "Количество", "Чистые продажи"]


def money(value: int) -> str:
    return f"{value:,}".replace(",", " ") + ",00"


def readable(value: str) -> bool:
    try:
        return bool(datetime.strptime(value, "%d.%m.%Y %H:%M"))
    except ValueError:  # the demo's deliberately broken dates
        return False


def read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh, delimiter=";"))


def write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        out = csv.writer(fh, delimiter=";", lineterminator="\n")
        out.writerow(header)
        out.writerows(rows)


def main() -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        generate_shop(Path(tmp), customers=200, seed=7, as_of=AS_OF)
        orders, clients = read(Path(tmp, "orders.csv")), read(Path(tmp, "clients.csv"))
    cards = {c["Код клиента"]: c for c in clients}
    lines: list[list[str]] = []
    for order in orders:
        if order["Статус"] != "Продажа" or order["Сумма"] == "n/a" or not readable(order["Дата"]):
            continue
        card = cards[order["Клиент"]]
        name, phone = f'{card["Фамилия"]} {card["Имя"]}', card["Телефон"] or "+9989071" + order["Клиент"][1:]
        if rng.random() < 0.01:  # a walk-in sale: the cashier did not ask for the phone
            name = phone = ""
        total = int(float(order["Сумма"].replace("\u00a0", "").replace(" ", "").replace(",", ".")))
        items = rng.sample(CATALOG, rng.choice([1, 1, 1, 2, 2, 3]))
        weights = [item[4] for item in items]
        shares = [round(total * w / sum(weights), -3) for w in weights[:-1]]
        store, seller = rng.choice(STORES), rng.choice(SELLERS)
        for (product, sku, brand, category, _), amount in zip(items, [*shares, total - sum(shares)]):
            lines.append([order["Чек №"], order["Дата"], store, seller, name, phone, product, sku, brand, category,
                          "2" if rng.random() < 0.1 else "1", money(int(amount))])
    lines[len(lines) // 3][1] = "31.02.2025 14:10"  # an impossible date, as tills sometimes write
    write(HERE / "sales-report.csv", SALES_HEADER, lines)
    write(HERE / "clients.csv", ["Клиент", "Телефон", "E-mail", "Согласие на рассылку", "Дата регистрации"],
          [[f'{c["Фамилия"]} {c["Имя"]}', c["Телефон"], c["Email"], c["Согласие на рассылку"],
            c["Дата регистрации"]] for c in clients])


if __name__ == "__main__":
    main()
