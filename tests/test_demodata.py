"""The demo shop generator: deterministic, parseable, realistic, and every preset segment reachable."""

from __future__ import annotations

import csv
import re
import tomllib
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import phonenumbers
import pyarrow as pa
import pytest

from sync.demodata import (CLIENTS_HEADER, HISTORY_DAYS, ORDERS_HEADER, generate_orders_csv, generate_shop)

AS_OF = date(2026, 1, 15)
DATE_RE = re.compile(r"^\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}$")
MONEY_RE = re.compile(r"^-?\d{1,3}(?:\u00a0\d{3})*,\d{2}$")
STATUS = {"Продажа": "completed", "Возврат": "refunded", "Отмена": "cancelled"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh, delimiter=";"))


def _money(text: str) -> Decimal:
    return Decimal(text.replace("\u00a0", "").replace(",", "."))


def _parse_date(text: str) -> datetime | None:
    if not DATE_RE.match(text):
        return None
    try:
        return datetime.strptime(text, "%d.%m.%Y %H:%M")
    except ValueError:
        return None


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shop(tmp_path_factory.mktemp("shop"), customers=3000, seed=42, as_of=AS_OF)


@pytest.fixture(scope="module")
def orders(shop: Path) -> list[dict[str, str]]:
    return _rows(shop.parent / "orders.csv")


def _bad(rows: list[dict[str, str]]) -> list[tuple[int, str]]:
    """(1-based data row, field) of every row our own strict parse rejects."""
    out = []
    for i, r in enumerate(rows, 1):
        if _parse_date(r["Дата"]) is None:
            out.append((i, "ordered_at"))
        elif not MONEY_RE.match(r["Сумма"]):
            out.append((i, "amount"))
    return out


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate_shop(tmp_path / "a", customers=400, seed=7, as_of=AS_OF)
    b = generate_shop(tmp_path / "b", customers=400, seed=7, as_of=AS_OF)
    c = generate_shop(tmp_path / "c", customers=400, seed=8, as_of=AS_OF)
    for name in ("orders.csv", "clients.csv", "rfmsync.toml", "AS_OF"):
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes(), name
    assert (a.parent / "orders.csv").read_bytes() != (c.parent / "orders.csv").read_bytes()


def test_orders_file_is_a_russian_pos_export(shop: Path, orders: list[dict[str, str]]) -> None:
    raw = (shop.parent / "orders.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw.decode("utf-8-sig").splitlines()[0] == ";".join(ORDERS_HEADER)
    assert {r["Статус"] for r in orders} == set(STATUS)
    good = [r for r in orders if _parse_date(r["Дата"]) and MONEY_RE.match(r["Сумма"])]
    assert any("\u00a0" in r["Сумма"] for r in good)  # thousands separator is a non-breaking space
    assert len({r["Чек №"] for r in orders}) == len(orders)  # every receipt, refunds included, has its own number
    stamps = [_parse_date(r["Дата"]) for r in good]
    assert min(stamps) >= datetime.combine(AS_OF - timedelta(days=HISTORY_DAYS), datetime.min.time())
    assert max(stamps) < datetime.combine(AS_OF, datetime.min.time())
    assert all(9 <= s.hour < 22 for s in stamps)  # shop hours, local time
    assert stamps == sorted(stamps)  # a POS export is chronological
    amounts = sorted(_money(r["Сумма"]) for r in good if r["Статус"] == "Продажа")
    assert Decimal(180_000) < amounts[len(amounts) // 2] < Decimal(330_000)  # median around 250 000 UZS
    refunds = [_money(r["Сумма"]) for r in good if r["Статус"] == "Возврат"]
    assert any(x < 0 for x in refunds) and any(x > 0 for x in refunds)
    discounts = [r["Скидка"] for r in good if r["Скидка"]]
    assert discounts and all(MONEY_RE.match(d) for d in discounts)


def test_a_handful_of_deliberately_bad_rows(orders: list[dict[str, str]]) -> None:
    bad = _bad(orders)
    assert [f for _, f in bad].count("ordered_at") == 3
    assert [f for _, f in bad].count("amount") == 3
    assert all(orders[i - 1]["Сумма"] == "n/a" for i, f in bad if f == "amount")


def test_realistic_buying_mix(orders: list[dict[str, str]]) -> None:
    sales: dict[str, int] = {}
    last: dict[str, datetime] = {}
    first: dict[str, datetime] = {}
    n_sales = n_refunds = n_cancel = 0
    for r in orders:
        ts = _parse_date(r["Дата"])
        if ts is None or not MONEY_RE.match(r["Сумма"]):
            continue
        if r["Статус"] == "Продажа":
            n_sales += 1
            sales[r["Клиент"]] = sales.get(r["Клиент"], 0) + 1
            last[r["Клиент"]] = max(last.get(r["Клиент"], ts), ts)
            first[r["Клиент"]] = min(first.get(r["Клиент"], ts), ts)
        elif r["Статус"] == "Возврат":
            n_refunds += 1
        else:
            n_cancel += 1
    buyers = len(sales)
    one_time = sum(1 for v in sales.values() if v == 1) / buyers
    assert 0.40 <= one_time <= 0.65
    assert 0.015 <= n_refunds / n_sales <= 0.06
    assert 0.003 <= n_cancel / n_sales <= 0.03
    assert sum(1 for v in sales.values() if v >= 10) / buyers >= 0.05  # a loyal frequent core
    end = datetime.combine(AS_OF, datetime.min.time())
    assert sum(1 for t in first.values() if end - t < timedelta(days=60)) / buyers >= 0.04  # newcomers
    assert sum(1 for t in last.values() if end - t > timedelta(days=365)) / buyers >= 0.10  # sleepers


def test_clients_file(shop: Path, orders: list[dict[str, str]]) -> None:
    clients = _rows(shop.parent / "clients.csv")
    assert tuple(clients[0].keys()) == CLIENTS_HEADER
    assert len(clients) == 3000
    assert {r["Клиент"] for r in orders} <= {c["Код клиента"] for c in clients}
    phones = [c["Телефон"] for c in clients if c["Телефон"]]
    assert len(set(phones)) > 100 and len(phones) < len(clients)
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(p, "UZ")) for p in phones)
    assert all(phonenumbers.parse(p, "UZ").country_code == 998 for p in phones)
    assert len({re.sub(r"\d", "9", p) for p in phones}) >= 4  # mixed formats
    emails = [c["Email"] for c in clients]
    missing = sum(1 for e in emails if not e) / len(emails)
    invalid = sum(1 for e in emails if e and not re.match(r"^[^@\s]+@[^@\s]+\.[a-z]+$", e)) / len(emails)
    assert 0.10 <= missing <= 0.40 and 0.01 <= invalid <= 0.08
    assert all(e.endswith(("@example.com", "@example.org", "@example.net")) for e in emails if "@" in e
               and re.match(r"^[^@\s]+@[^@\s]+\.[a-z]+$", e))  # never a real mailbox
    assert {c["Согласие на рассылку"] for c in clients} == {"да", "нет", ""}
    # order rows only carry valid e-mails, and the same one as the client card
    card = {c["Код клиента"]: c for c in clients}
    assert all(r["E-mail"] == card[r["Клиент"]]["Email"] for r in orders if r["E-mail"])


def test_config_is_ready_to_use(shop: Path) -> None:
    cfg = tomllib.loads(shop.read_text(encoding="utf-8"))
    src = cfg["source"]
    assert src["type"] == "file" and src["orders"] == "orders.csv" and src["contacts"] == "clients.csv"
    assert (src["encoding"], src["timezone"], src["phone_region"], src["currency"]) == \
        ("auto", "Asia/Tashkent", "UZ", "UZS")
    assert set(src["columns"].values()) <= set(ORDERS_HEADER)
    assert set(src["contact_columns"].values()) <= set(CLIENTS_HEADER)
    assert cfg["segmentation"]["preset"] == "tracks"
    assert (shop.parent / "AS_OF").read_text().strip() == AS_OF.isoformat()
    dest = cfg["destinations"][0]
    assert dest["type"] == "mailchimp" and dest["audience"] == "demo000001"
    assert dest["segments"]["Best active"] == "VIP" and dest["fields"] == {"RFM_SEG": "segment", "RFM_CODE": "rfm"}
    from sync.config import load_config

    loaded = load_config(shop)
    assert loaded.timezone == "Asia/Tashkent" and loaded.destinations[0].name == "mailchimp-demo"


@pytest.fixture(scope="module")
def orders_table(orders: list[dict[str, str]]) -> pa.Table:
    """Our own strict parse of the export into canonical order columns (independent of connectors.files)."""
    tz = ZoneInfo("Asia/Tashkent")
    good = [r for r in orders if _parse_date(r["Дата"]) and MONEY_RE.match(r["Сумма"])]
    return pa.table({
        "order_id": [r["Чек №"] for r in good],
        "customer_id": [r["Клиент"] for r in good],
        "ordered_at": pa.array([_parse_date(r["Дата"]).replace(tzinfo=tz) for r in good],
                               type=pa.timestamp("us", tz="UTC")),
        "amount": pa.array([_money(r["Сумма"]) for r in good], type=pa.decimal128(18, 2)),
        "status": [STATUS[r["Статус"]] for r in good],
    })


@pytest.mark.parametrize("preset", ["tracks", "crm-4", "classic-5"])
def test_every_preset_segment_is_reachable(orders_table: pa.Table, preset: str) -> None:
    from segmentation.config import SegmentationConfig
    from segmentation.engine import run_segmentation

    con = duckdb.connect()
    con.register("orders", orders_table)
    res = run_segmentation(con, SegmentationConfig(preset=preset), AS_OF, "Asia/Tashkent", with_boundary=False)
    counts = {r["segment"]: r["customers"] for r in res.summary if r["segment"] != "Total"}
    rule_segments = [n for n in res.segment_names if n != "Other"]
    assert all(counts[n] > 0 for n in rule_segments), counts


def test_generate_orders_csv_exact_sizes(tmp_path: Path) -> None:
    path = generate_orders_csv(tmp_path / "big.csv", orders=50_000, customers=5_000, seed=3)
    con = duckdb.connect()
    n, c, one, lo, hi, med = con.execute(f"""
        WITH o AS (SELECT * FROM read_csv('{path}', header = true)),
             per AS (SELECT customer_id, count(*) AS k FROM o GROUP BY 1)
        SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM per),
               (SELECT avg(CAST(k = 1 AS DOUBLE)) FROM per),
               (SELECT min(ordered_at) FROM o), (SELECT max(ordered_at) FROM o),
               (SELECT median(amount) FROM o)
    """).fetchone()
    assert (n, c) == (50_000, 5_000)
    assert 0.35 <= one <= 0.60
    assert lo >= datetime(2024, 1, 2) and hi < datetime(2026, 1, 1)
    assert 150_000 < med < 400_000
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header == "order_id,customer_id,ordered_at,amount,status"
    again = generate_orders_csv(tmp_path / "again.csv", orders=50_000, customers=5_000, seed=3)
    assert again.read_bytes() == path.read_bytes()


def test_generate_orders_csv_rejects_impossible_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="customers"):
        generate_orders_csv(tmp_path / "x.csv", orders=10, customers=20)


def test_file_connector_reads_the_shop_with_exactly_the_planted_bad_rows(shop: Path, orders: list[dict[str, str]],
                                                                        orders_table: pa.Table) -> None:
    from connectors.tables import create_tables
    from sync.config import load_config
    from sync.pipeline import configured_source

    con = duckdb.connect()
    create_tables(con)
    res = configured_source(load_config(shop)).pull(con)
    # spreadsheet numbering: the header is row 1, so data row i is row i + 1
    assert sorted((b.row, b.field) for b in res.bad_rows) == [(i + 1, f) for i, f in _bad(orders)]
    assert res.bad_row_count == 6 and all(b.source.endswith("orders.csv") for b in res.bad_rows)
    assert res.orders == len(orders) - 6 == orders_table.num_rows
    assert res.contacts == 3000
    con.register("ours", orders_table)
    differ = con.execute("""
        SELECT count(*) FROM staged_orders s FULL OUTER JOIN ours o USING (order_id)
        WHERE s.customer_id IS DISTINCT FROM o.customer_id OR s.ordered_at IS DISTINCT FROM o.ordered_at
           OR s.status IS DISTINCT FROM o.status OR abs(s.amount) IS DISTINCT FROM abs(o.amount)""").fetchone()
    assert differ == (0,)
    clients = _rows(shop.parent / "clients.csv")
    consent = dict(con.execute("SELECT marketing_consent, count(*) FROM staged_contacts GROUP BY 1").fetchall())
    assert consent == {"yes": sum(c["Согласие на рассылку"] == "да" for c in clients),
                       "no": sum(c["Согласие на рассылку"] == "нет" for c in clients),
                       "unknown": sum(c["Согласие на рассылку"] == "" for c in clients)}
    phones = [p for (p,) in con.execute("SELECT phone FROM staged_contacts WHERE phone IS NOT NULL").fetchall()]
    assert len(phones) == sum(1 for c in clients if c["Телефон"]) and all(re.match(r"^\+998\d{9}$", p) for p in phones)
    cities = con.execute("SELECT count(*) FROM staged_contacts WHERE attributes->>'city' = 'Ташкент'").fetchone()[0]
    assert cities == sum(c["Город"] == "Ташкент" for c in clients)


def test_demo_config_segments_end_to_end(shop: Path, orders_table: pa.Table) -> None:
    from segmentation.config import SegmentationConfig
    from segmentation.engine import run_segmentation
    from sync.config import load_config
    from sync.pipeline import compute_segments

    run = compute_segments(load_config(shop), as_of=AS_OF)
    try:
        got = {r["segment"]: r["customers"] for r in run.result.summary}
        assert run.bad_row_count == 6
    finally:
        run.close()
    con = duckdb.connect()
    con.register("orders", orders_table)
    ours = run_segmentation(con, SegmentationConfig(preset="tracks"), AS_OF, "Asia/Tashkent", with_boundary=False)
    assert got == {r["segment"]: r["customers"] for r in ours.summary}
    assert all(got[s] > 0 for s in ("Best active", "Falling asleep", "Churn", "Beginners"))


# --------------------------------------------------------------------------- bench helpers and pandas reference
def _bench():
    import importlib
    import sys

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("bench.segments"), importlib.import_module("bench.common")


@pytest.fixture(scope="module")
def bench_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    segments, _ = _bench()
    return generate_orders_csv(tmp_path_factory.mktemp("bench") / "orders.csv", orders=30_000, customers=3_000,
                               seed=11, as_of=segments.AS_OF)


@pytest.mark.parametrize("preset", ["tracks", "crm-4", "classic-5"])
def test_pandas_reference_matches_rfmsync_per_customer(bench_csv: Path, tmp_path: Path, preset: str) -> None:
    from segmentation.config import SegmentationConfig
    from segmentation.engine import run_segmentation

    segments, _ = _bench()
    out = tmp_path / "pandas.parquet"
    counts = segments.pandas_segments(bench_csv, out, segments.AS_OF, preset)
    con = duckdb.connect()
    con.execute(f"""CREATE TABLE orders AS
        SELECT CAST(order_id AS VARCHAR) AS order_id, customer_id, CAST(ordered_at AS TIMESTAMPTZ) AS ordered_at,
               CAST(amount AS DECIMAL(18,2)) AS amount, status FROM read_csv('{bench_csv}')""")
    res = run_segmentation(con, SegmentationConfig(preset=preset), segments.AS_OF, "UTC", with_boundary=False)
    expected = {r["segment"]: r["customers"] for r in res.summary if r["segment"] != "Total" and r["customers"]}
    assert counts == expected
    differ = con.execute(f"""
        SELECT count(*) FROM customer_segments s FULL OUTER JOIN read_parquet('{out}') p USING (customer_id)
        WHERE s.segment IS DISTINCT FROM p.segment OR s.r <> p.r OR s.f <> p.f OR s.m <> p.m
           OR s.recency_days <> p.recency_days OR s.frequency <> p.frequency OR s.monetary <> p.monetary""").fetchone()
    assert differ == (0,)


def test_tie_aware_scores_keep_ties_together() -> None:
    import pandas as pd

    _bench()  # bench/ importable
    from bench.pandas_lean import tie_aware_scores

    freq = pd.Series([1, 1, 1, 1, 1, 1, 2, 2, 3, 9])
    assert tie_aware_scores(freq, 5, worse_is_larger=False).tolist() == [1] * 6 + [4, 4, 5, 5]
    rec = pd.Series([400, 10, 10, 30])
    assert tie_aware_scores(rec, 4, worse_is_larger=True).tolist() == [1, 3, 3, 2]


def test_bench_common_helpers() -> None:
    _, common = _bench()
    assert [common.parse_size(s) for s in ("1m", "10M", "250k", "1.5m", "5000")] == \
        [1_000_000, 10_000_000, 250_000, 1_500_000, 5000]
    with pytest.raises(ValueError, match="not a size"):
        common.parse_size("lots")
    assert common.size_label(10_000_000) == "10m" and common.size_label(1234) == "1234"
    assert common.human_bytes(3 * 1024 ** 3) == "3.00 GB" and common.human_bytes(200 * 1024 ** 2) == "200 MB"
    table = common.format_table([{"a": "x", "n": "1.50"}, {"a": "longer", "n": "12.00"}], [("a", "A"), ("n", "N")])
    assert table.splitlines() == ["A           N", "------  -----", "x        1.50", "longer  12.00"]


def test_run_child_reports_result_and_failure(tmp_path: Path) -> None:
    import sys

    _, common = _bench()
    root = str(Path(__file__).resolve().parents[1])
    ok = common.run_child([sys.executable, "-c", "from bench.common import emit_result; "
                           "b = bytearray(64 * 1024 * 1024); emit_result({'x': 1})"], cwd=root)
    assert ok["x"] == 1 and ok["peak_rss"] >= 64 * 1024 * 1024 and ok["process_seconds"] > 0
    with pytest.raises(common.ChildFailed, match="boom"):
        common.run_child([sys.executable, "-c", "raise SystemExit('boom')"], cwd=root)


@pytest.mark.slow
def test_benchmark_end_to_end_small(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "bench" / "segments.py"), "--sizes", "5k", "--no-floor",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("orders"))
    rows = [ln.split() for ln in lines[header + 2:header + 5]]
    assert [r[2] for r in rows] == ["rfmsync", "pandas-checked", "pandas"]
    assert all(r[0] == "5,000" and r[1] == "500" and r[-1] == "yes" for r in rows)
    assert rows[0][-3].endswith("×") and rows[0][-2].endswith("×")  # against the same-work and the lean pandas
    assert (tmp_path / "orders-5k-s42.csv").exists() and not list(tmp_path.glob("customers-*.parquet"))


def test_the_default_as_of_is_today_in_the_shop_s_timezone_not_the_host_s(tmp_path: Path) -> None:
    """`rfmsync demo` on a host whose date is not Tashkent's (Kiritimati, UTC+14, in the evening UTC) wrote the host's
    date as AS_OF, and the demo then warned that its own as-of was in the future. The host's zone here is one whose
    date differs from Tashkent's now (UTC+14 from 16:00 in Tashkent, else UTC-12), set in a child's ``TZ``."""
    import os
    import subprocess
    import sys

    tashkent = ZoneInfo("Asia/Tashkent")
    before = datetime.now(tashkent)
    host = "Etc/GMT-14" if before.hour >= 16 else "Etc/GMT+12"  # (Etc's signs are POSIX's: GMT-14 is UTC+14)
    code = ("import sys; from datetime import date; from sync.demodata import generate_shop; "
            "generate_shop(sys.argv[1], customers=20); print(date.today())")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "TZ": host})
    assert proc.returncode == 0, proc.stderr[-2000:]
    tashkent_days = {before.date(), datetime.now(tashkent).date()}
    assert date.fromisoformat(proc.stdout.strip()) not in tashkent_days  # the host's date is another day
    assert date.fromisoformat((tmp_path / "AS_OF").read_text().strip()) in tashkent_days
