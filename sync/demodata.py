"""A realistic, seeded sample shop for demos, docs and benchmarks.

:func:`generate_shop` writes what a small Tashkent retailer would export from its
POS: ``orders.csv`` (Russian locale: ``;``-separated, UTF-8 with BOM, decimal comma
with non-breaking-space thousands, ``dd.mm.yyyy HH:MM`` local times, statuses
"Продажа"/"Возврат"/"Отмена", a handful of deliberately broken rows), a
``clients.csv`` card file (+998 phones in mixed formats, some missing or invalid
e-mails, consent "да"/"нет"/empty) and a ready ``rfmsync.toml``.

Buying follows a BG/NBD-like process: every customer has a gamma-distributed
purchase rate and, after each purchase, a beta-distributed chance of dropping out
for good; first purchases arrive over two years, more of them recently (a growing
shop). That yields about half one-time buyers, a loyal frequent core, sleepers
and recent newcomers, so every segment of the shipped presets is populated.

:func:`generate_orders_csv` is the bulk variant for benchmarks: millions of rows
in plain ISO format, generated with numpy and written by DuckDB ``COPY``.

E-mail addresses use the reserved ``example.*`` domains so a demo can never
reach a real mailbox. Everything is vectorised; 3,000 customers take well under
a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

__all__ = ["generate_shop", "generate_orders_csv", "ORDERS_HEADER", "CLIENTS_HEADER", "HISTORY_DAYS"]

HISTORY_DAYS = 730  # two years of history, ending the day before ``as_of``
TIMEZONE = "Asia/Tashkent"  # the sample shop's (its config's ``timezone``)
NBSP = "\u00a0"

ORDERS_HEADER = ("Чек №", "Дата", "Клиент", "Телефон", "E-mail", "Сумма", "Скидка", "Статус")
CLIENTS_HEADER = ("Код клиента", "Фамилия", "Имя", "Телефон", "Email", "Согласие на рассылку", "Город",
                  "Дата регистрации")

# canonical field -> header, as written into rfmsync.toml
ORDER_COLUMNS = {
    "order_id": "Чек №", "ordered_at": "Дата", "customer_id": "Клиент", "phone": "Телефон",
    "email": "E-mail", "amount": "Сумма", "discount": "Скидка", "status": "Статус",
}
CONTACT_COLUMNS = {
    "customer_id": "Код клиента", "last_name": "Фамилия", "first_name": "Имя", "phone": "Телефон",
    "email": "Email", "marketing_consent": "Согласие на рассылку", "created_at": "Дата регистрации",
}

SALE, REFUND, CANCEL = "Продажа", "Возврат", "Отмена"

# (Cyrillic, Latin) pairs; surnames get the feminine "-а" ending for women
_MALE = [("Азиз", "aziz"), ("Бахтиёр", "bakhtiyor"), ("Жахонгир", "jahongir"), ("Отабек", "otabek"),
         ("Тимур", "timur"), ("Шерзод", "sherzod"), ("Улугбек", "ulugbek"), ("Алексей", "aleksey"),
         ("Дмитрий", "dmitriy"), ("Сардор", "sardor"), ("Фарход", "farkhod"), ("Рустам", "rustam")]
_FEMALE = [("Дилноза", "dilnoza"), ("Гулнора", "gulnora"), ("Малика", "malika"), ("Нигора", "nigora"),
           ("Шахноза", "shakhnoza"), ("Севара", "sevara"), ("Мадина", "madina"), ("Анна", "anna"),
           ("Екатерина", "ekaterina"), ("Зарина", "zarina"), ("Камола", "kamola"), ("Ольга", "olga")]
_SURNAMES = [("Каримов", "karimov"), ("Юсупов", "yusupov"), ("Рахимов", "rakhimov"), ("Алиев", "aliev"),
             ("Ташкентов", "tashkentov"), ("Исмаилов", "ismailov"), ("Хасанов", "khasanov"),
             ("Абдуллаев", "abdullaev"), ("Назаров", "nazarov"), ("Иванов", "ivanov"), ("Петров", "petrov"),
             ("Усманов", "usmanov"), ("Турсунов", "tursunov"), ("Мирзаев", "mirzaev")]
_CITIES = ["Ташкент"] * 6 + ["Самарканд", "Бухара", "Наманган", "Андижан", "Фергана", ""]
_OPERATORS = np.array([90, 91, 93, 94, 95, 97, 98, 99, 33, 88, 77, 50])
_DOMAINS = ["example.com", "example.org", "example.net"]
_BAD_EMAILS = ["нет", "{u}@", "{u}.example.com", "{u}@example"]
_BAD_DATES = ["31.02.2025 14:10", "не указана", "2025/13/45 25:61"]
_BAD_AMOUNT = "n/a"


@dataclass(frozen=True)
class _Purchases:
    customer: np.ndarray  # int index per purchase
    day: np.ndarray  # float days since history start


def _simulate(rng: np.random.Generator, customers: int) -> tuple[np.ndarray, _Purchases]:
    """BG/NBD-like purchases over HISTORY_DAYS; returns (birth day per customer, purchases)."""
    h = float(HISTORY_DAYS)
    # growing shop: first purchases denser towards the end of the window
    birth = h * rng.beta(1.3, 1.0, customers)
    birth = np.minimum(birth, h - 1e-3)
    # heterogeneous purchase rates (per day): a gamma body plus a loyal core
    rate = rng.gamma(0.55, 1 / 45.0, customers)
    loyal = rng.random(customers) < 0.08
    rate[loyal] = rng.gamma(3.0, 1 / 60.0, loyal.sum())
    dropout = rng.beta(1.0, 2.2, customers)
    dropout[loyal] = rng.beta(1.0, 25.0, loyal.sum())
    who = [np.arange(customers)]
    when = [birth]
    t = birth.copy()
    active = np.arange(customers)
    while active.size:
        alive = rng.random(active.size) >= dropout[active]
        active, t_act = active[alive], t[alive]
        t_act = t_act + rng.exponential(1.0, active.size) / rate[active]
        keep = t_act < h
        active, t = active[keep], t_act[keep]
        who.append(active)
        when.append(t)
    return birth, _Purchases(np.concatenate(who), np.concatenate(when))


def _format_money(values: np.ndarray) -> list[str]:
    """1234.5 -> '1 234,50' (non-breaking-space thousands, decimal comma)."""
    return [f"{v:,.2f}".replace(",", NBSP).replace(".", ",") for v in values.tolist()]


def _format_phone(rng: np.random.Generator, n: int) -> np.ndarray:
    op = _OPERATORS[rng.integers(0, _OPERATORS.size, n)]
    sub = rng.integers(0, 10_000_000, n)
    style = rng.integers(0, 5, n)
    out = []
    for o, s, k in zip(op.tolist(), sub.tolist(), style.tolist()):
        d = f"{s:07d}"
        out.append((f"+998 {o} {d[:3]}-{d[3:5]}-{d[5:]}", f"998{o}{d}", f"({o}) {d[:3]}-{d[3:5]}-{d[5:]}",
                    f"{o}{d}", f"+998({o}){d}")[k])
    return np.array(out, dtype=object)


def _clients(rng: np.random.Generator, customers: int, birth: np.ndarray, start: datetime) -> dict[str, np.ndarray]:
    female = rng.random(customers) < 0.55
    fi = rng.integers(0, len(_FEMALE), customers)
    mi = rng.integers(0, len(_MALE), customers)
    si = rng.integers(0, len(_SURNAMES), customers)
    first = np.array([(_FEMALE[f] if w else _MALE[m]) for f, m, w in zip(fi, mi, female)], dtype=object)
    sur = np.array([_SURNAMES[s] for s in si], dtype=object)
    last_cyr = np.array([s[0] + ("а" if w else "") for s, w in zip(sur, female)], dtype=object)
    user = [f"{f[1]}.{s[1]}{'a' if w else ''}{n}" for f, s, w, n in
            zip(first, sur, female, rng.integers(1, 999, customers).tolist())]
    kind = rng.random(customers)
    email = np.empty(customers, dtype=object)
    valid = kind < 0.70
    invalid = (kind >= 0.70) & (kind < 0.74)
    dom = rng.integers(0, len(_DOMAINS), customers)
    badk = rng.integers(0, len(_BAD_EMAILS), customers)
    for i in range(customers):
        if valid[i]:
            email[i] = f"{user[i]}@{_DOMAINS[dom[i]]}"
        elif invalid[i]:
            email[i] = _BAD_EMAILS[badk[i]].format(u=user[i])
        else:
            email[i] = ""
    phone = _format_phone(rng, customers)
    phone[rng.random(customers) < 0.05] = ""
    consent = np.array(["да", "нет", ""], dtype=object)[rng.choice(3, customers, p=[0.6, 0.15, 0.25])]
    city = np.array(_CITIES, dtype=object)[rng.integers(0, len(_CITIES), customers)]
    reg_days = np.floor(birth - rng.exponential(20.0, customers))
    registered = [(start + timedelta(days=d)).strftime("%d.%m.%Y") for d in reg_days.tolist()]
    return {"first": np.array([f[0] for f in first], dtype=object), "last": last_cyr, "email": email,
            "email_ok": valid, "phone": phone, "consent": consent, "city": city,
            "registered": np.array(registered, dtype=object)}


def _write_csv(path: Path, header: tuple[str, ...], columns: list[list[str]]) -> None:
    lines = [";".join(header)]
    lines.extend(";".join(row) for row in zip(*columns))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config() -> str:
    cols = "\n".join(f"{k} = {_toml(v)}" for k, v in ORDER_COLUMNS.items())
    ccols = "\n".join(f"{k} = {_toml(v)}" for k, v in CONTACT_COLUMNS.items())
    return f"""# Sample shop written by `rfmsync demo` (sync.demodata.generate_shop).
[source]
type = "file"
orders = "orders.csv"
contacts = "clients.csv"
encoding = "auto"
timezone = "{TIMEZONE}"
phone_region = "UZ"
currency = "UZS"

[source.columns]
{cols}

[source.contact_columns]
{ccols}

[source.attributes]
city = "Город"

[segmentation]
preset = "tracks"

[[destinations]]
name = "mailchimp-demo"
type = "mailchimp"
audience = "demo000001"
new_contacts = "transactional"

[destinations.segments]
"Best active" = "VIP"
"Falling asleep" = "Winback soft"
"Churn" = "Winback"
"Beginners" = "Welcome"

[destinations.fields]
RFM_SEG = "segment"
RFM_CODE = "rfm"
"""


def _sales(rng: np.random.Generator, p: _Purchases, customers: int) -> dict[str, np.ndarray]:
    """One sale (or cancelled sale) per purchase: day, minute, amount paid, discount and status."""
    n = p.day.size
    # shop hours 09:00-21:59 local, amounts lognormal around 250 000 UZS with a per-customer level
    day = np.floor(p.day)
    minute = rng.integers(9 * 60, 22 * 60, n)
    level = rng.lognormal(0.0, 0.45, customers)
    gross = np.round(250_000 * level[p.customer] * rng.lognormal(0.0, 0.6, n), -3)
    gross = np.maximum(gross, 5_000)
    disc_share = np.where(rng.random(n) < 0.25, rng.choice([0.05, 0.10, 0.15], n), 0.0)
    discount = np.round(gross * disc_share, -2)
    paid = gross - discount
    status = np.where(rng.random(n) < 0.012, CANCEL, SALE).astype(object)
    return {"customer": p.customer, "day": day, "minute": minute, "amount": paid, "discount": discount,
            "status": status}


def _refunds(rng: np.random.Generator, sales: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Refunds of a few sales: own receipt, a few days after the sale, full or partial, sign varies by till."""
    day, minute, paid = sales["day"], sales["minute"], sales["amount"]
    n = day.size
    refunded = np.flatnonzero((sales["status"] == SALE) & (rng.random(n) < 0.035))
    r_day = np.minimum(day[refunded] + rng.integers(0, 15, refunded.size), HISTORY_DAYS - 1)
    r_amount = np.where(rng.random(refunded.size) < 0.7, paid[refunded],
                        np.round(paid[refunded] * rng.uniform(0.2, 0.8, refunded.size), -3))
    r_amount = np.where(rng.random(refunded.size) < 0.5, -r_amount, r_amount)
    r_minute = np.minimum(minute[refunded] + rng.integers(0, 120, refunded.size), 22 * 60 - 1)
    return {"customer": sales["customer"][refunded], "day": r_day, "minute": r_minute, "amount": r_amount,
            "discount": np.zeros(refunded.size), "status": np.full(refunded.size, REFUND, dtype=object)}


def _in_time_order(sales: dict[str, np.ndarray], refunds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sales and refunds as one set of rows, sorted by day and minute."""
    rows = {k: np.concatenate([sales[k], refunds[k]]) for k in sales}
    order = np.lexsort((rows["minute"], rows["day"]))
    return {k: v[order] for k, v in rows.items()}


def _order_columns(rng: np.random.Generator, rows: dict[str, np.ndarray], cl: dict[str, np.ndarray],
                   start: datetime) -> list[list[str]]:
    """The ``orders.csv`` columns (``ORDERS_HEADER``) of the rows, a handful of them deliberately broken."""
    cust, disc = rows["customer"], rows["discount"]
    n = cust.size
    dates = [(start + timedelta(days=d, minutes=m)).strftime("%d.%m.%Y %H:%M")
             for d, m in zip(rows["day"].astype(int).tolist(), rows["minute"].tolist())]
    receipt = [str(100_001 + i) for i in range(n)]
    client_id = [f"C{c + 1:05d}" for c in cust.tolist()]
    # the till captures the phone mostly, the e-mail sometimes (and only when it is valid)
    phone = np.where(rng.random(n) < 0.8, cl["phone"][cust], "")
    email = np.where((rng.random(n) < 0.4) & cl["email_ok"][cust], cl["email"][cust], "")
    money = _format_money(rows["amount"])
    disc_txt = [m if d else "" for m, d in zip(_format_money(disc), disc.tolist())]
    # a handful of broken rows so the demo shows the bad-row report
    bad = rng.choice(n, size=min(n, len(_BAD_DATES) + 3), replace=False)
    for k, i in enumerate(bad.tolist()):
        if k < len(_BAD_DATES):
            dates[i] = _BAD_DATES[k]
        else:
            money[i] = _BAD_AMOUNT
    return [receipt, dates, client_id, phone.tolist(), email.tolist(), money, disc_txt, rows["status"].tolist()]


def generate_shop(folder: Path, customers: int = 3000, seed: int = 42, as_of: date | None = None) -> Path:
    """Write ``orders.csv``, ``clients.csv``, ``rfmsync.toml`` and ``AS_OF`` into ``folder``; return the config.

    Deterministic for (customers, seed, as_of). Orders cover the ``HISTORY_DAYS`` days
    before ``as_of`` (default: today in the shop's timezone, :data:`TIMEZONE`), in its local time.
    """
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if as_of is None:  # the as-of rule of every command: today in the config's timezone, not the host's
        from .pipeline import today_in

        as_of = today_in(TIMEZONE)
    start = datetime.combine(as_of - timedelta(days=HISTORY_DAYS), datetime.min.time())
    rng = np.random.default_rng(seed)

    birth, p = _simulate(rng, customers)
    cl = _clients(rng, customers, birth, start)
    sales = _sales(rng, p, customers)
    refunds = _refunds(rng, sales)
    rows = _in_time_order(sales, refunds)
    _write_csv(folder / "orders.csv", ORDERS_HEADER, _order_columns(rng, rows, cl, start))
    _write_csv(folder / "clients.csv", CLIENTS_HEADER,
               [[f"C{i + 1:05d}" for i in range(customers)], cl["last"].tolist(), cl["first"].tolist(),
                cl["phone"].tolist(), cl["email"].tolist(), cl["consent"].tolist(), cl["city"].tolist(),
                cl["registered"].tolist()])
    config = folder / "rfmsync.toml"
    config.write_text(_config(), encoding="utf-8")
    # the date the history ends at; `rfmsync demo` segments "as of" it, so a re-run shows the same picture
    (folder / "AS_OF").write_text(as_of.isoformat() + "\n", encoding="utf-8")
    log.info("demo shop: %d customers, %d order rows (%d refunds) in %s", customers, rows["day"].size,
             refunds["day"].size, folder)
    return config


def generate_orders_csv(path: Path, orders: int, customers: int, seed: int = 42,
                        as_of: date = date(2026, 1, 1)) -> Path:
    """Stream a large synthetic ``orders`` CSV (ISO timestamps, ``.`` decimals) for benchmarks.

    Exactly ``orders`` rows and exactly ``customers`` distinct customers, all sales
    ("completed"), over the ``HISTORY_DAYS`` days before ``as_of`` (UTC). Per-customer
    counts are 1 + negative binomial (heavy tail, about half one-time buyers at 10 orders
    per customer); rows come out in time order like a real export.
    Columns: order_id, customer_id, ordered_at, amount, status.
    """
    if not 1 <= customers <= orders:
        raise ValueError(f"need 1 <= customers <= orders, got customers={customers}, orders={orders}")
    path = Path(path)
    rng = np.random.default_rng(seed)
    extra = orders - customers
    if extra:
        mean = extra / customers
        r = 0.18
        draws = rng.negative_binomial(r, r / (r + mean), customers).astype(np.float64)
        counts = np.floor(draws * (extra / max(draws.sum(), 1.0))).astype(np.int64)
        # hand the rounding remainder to repeat buyers so one-time buyers stay one-time
        repeat = np.flatnonzero(counts > 0)
        pool = repeat if repeat.size else np.arange(customers)
        counts += np.bincount(pool[rng.integers(0, pool.size, extra - int(counts.sum()))], minlength=customers)
    else:
        counts = np.zeros(customers, dtype=np.int64)
    counts += 1
    cust = np.repeat(np.arange(customers, dtype=np.int64), counts)
    h = HISTORY_DAYS * 86_400
    birth = (h * rng.beta(1.3, 1.0, customers)).astype(np.int64)
    first = np.zeros(orders, dtype=bool)
    first[np.concatenate([[0], np.cumsum(counts)[:-1]])] = True
    b = birth[cust]
    sec = np.where(first, b, b + (rng.random(orders) * (h - b)).astype(np.int64))
    amount_cents = (np.round(25_000_000 * rng.lognormal(0.0, 0.8, orders), -4)).astype(np.int64)
    order = np.argsort(sec, kind="stable")
    start = datetime.combine(as_of - timedelta(days=HISTORY_DAYS), datetime.min.time())
    start_us = int((start - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    tbl = pa.table({
        "order_id": pa.array(np.arange(1, orders + 1, dtype=np.int64)),
        "customer": pa.array(cust[order]),
        "ts": pa.array(start_us + sec[order] * 1_000_000, type=pa.timestamp("us")),
        "amount": pa.array(amount_cents[order]),
    })
    del cust, b, sec, amount_cents, order
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.register("gen", tbl)
        target = str(path).replace("'", "''")
        con.execute(f"""COPY (SELECT order_id, 'C' || customer AS customer_id,
                                     strftime(ts, '%Y-%m-%d %H:%M:%S') AS ordered_at,
                                     (amount / 100)::DECIMAL(18,2) AS amount, 'completed' AS status
                              FROM gen) TO '{target}' (HEADER, DELIMITER ',')""")
    finally:
        con.close()
    return path
