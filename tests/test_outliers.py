"""Amounts far beyond the shop's usual check (a barcode pasted into the amount column): warned of, naming the
customer, the order, its file and the typical check, and left out of the spend model's fit, which then equals the
fit on the orders without them; a real large order, or a second currency, is no outlier."""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.tables import create_tables
from segmentation import predictive as P
from segmentation.metrics import build_customer_metrics, negative_revenue
from segmentation.outliers import GAP_RATIO, OUTLIER_RATIO, ROUND_ZEROS, outlier_amounts
from sync.cli import main
from sync.demodata import generate_orders_csv, generate_shop
from tests.test_predictive import DATASETS, HOLDOUT_END

BARCODE = Decimal("4600000000000.00")  # an EAN-13 in the amount column
CFG = P.PredictConfig(holdout_days=0)


def cdnow(extra: list[tuple[str, str, str, Decimal]] = ()) -> duckdb.DuckDBPyConnection:
    """The CDNOW sample as orders (2 357 customers, the median order about 26, the largest 506.97) and ``extra``
    orders (order_id, customer_id, ISO day, amount)."""
    rows = [line.split() for line in (DATASETS / "CDNOW_sample.txt").read_text().splitlines() if line.strip()]
    rows = [(f"o{i}", str(int(r[1])), datetime.strptime(r[2], "%Y%m%d").date(), Decimal(r[4]))
            for i, r in enumerate(rows)] + [(o, c, date.fromisoformat(d), a) for o, c, d, a in extra]
    con = duckdb.connect()
    create_tables(con)
    con.register("_raw", pa.table({"o": [r[0] for r in rows], "c": [r[1] for r in rows],
                                   "d": pa.array([r[2] for r in rows], pa.date32()),
                                   "a": pa.array([r[3] for r in rows], pa.decimal128(18, 2))}))
    con.execute("INSERT INTO orders SELECT o, c, d::TIMESTAMPTZ, a, 'USD', 'completed', NULL FROM _raw")
    con.unregister("_raw")
    return con


def median_check(con: duckdb.DuckDBPyConnection, as_of: date) -> Decimal:
    amounts = [a for (a,) in con.execute("SELECT amount FROM orders WHERE amount > 0 AND ordered_at < ?",
                                         [as_of + timedelta(days=1)]).fetchall()]
    return statistics.median(amounts).quantize(Decimal("0.01"))


#: a customer of three purchase days, the second with two orders
REGULAR = [("t1", "typo", "1997-01-10", Decimal("20.00")), ("t2", "typo", "1997-03-01", Decimal("15.00")),
           ("t3", "typo", "1997-03-01", Decimal("12.00")), ("t4", "typo", "1997-06-01", Decimal("30.00"))]


def _predict(con: duckdb.DuckDBPyConnection) -> tuple[P.PredictReport, dict[str, tuple]]:
    report = P.predict_customers(con, HOLDOUT_END, CFG)
    rows = con.execute("SELECT customer_id, expected_aov, clv FROM customer_predictions WHERE customer_id <> 'typo'")
    return report, {c: (aov, clv) for c, aov, clv in rows.fetchall()}


@pytest.mark.parametrize("typo", ["t4", "t3", "t1"], ids=["a repeat day of its own", "a day with another order",
                                                          "the first day"])
def test_a_barcode_in_an_order_is_left_out_of_the_spend_fit_which_equals_the_fit_without_it(typo):
    """One order of 4.6·10¹² (10¹¹ times the median check) moved every CDNOW customer's CLV by a few per cent (the
    Gamma-Gamma fit); left out, the spend fit and every other customer's expected_aov are those of the shop without
    that order, whatever day of the customer's it falls on (the first day's spend counts in no mean, but without it
    the second day is the first). The purchase itself still counts for BG/NBD: where it shares its day with
    another order, the purchase days are those without it, and so is every other customer's clv."""
    orders = [(o, c, d, BARCODE if o == typo else a) for o, c, d, a in REGULAR]
    con = cdnow(orders)
    found = outlier_amounts(con, HOLDOUT_END)
    assert (found.orders, found.customers) == (1, 1)
    [o] = found.shown
    assert (o.customer_id, o.order_id, o.amount, o.currency) == ("typo", typo, BARCODE, "USD")
    assert o.typical == median_check(con, HOLDOUT_END)
    report, numbers = _predict(con)
    without, numbers_without = _predict(cdnow([row for row in REGULAR if row[0] != typo]))
    assert report.gamma_gamma == without.gamma_gamma and report.gamma_gamma_corr == without.gamma_gamma_corr
    assert report.to_json()["gamma_gamma"]["left_out_orders"] == 1
    assert without.to_json()["gamma_gamma"]["left_out_orders"] == 0
    assert {c: aov for c, (aov, _) in numbers.items()} == {c: aov for c, (aov, _) in numbers_without.items()}
    assert (report.bgnbd == without.bgnbd) == (typo == "t3")
    if typo == "t3":
        assert numbers == numbers_without


@pytest.mark.parametrize("extra, left_out", [
    ([("b1", "once", "1997-04-01", BARCODE)], 0),  # a one-time buyer's only order: never in the fit
    (REGULAR + [("b1", "typo", "1997-01-10", BARCODE)], 0),  # beside another order of the first day: in no mean
    (REGULAR + [("b1", "typo", "1997-01-10", BARCODE), ("b2", "typo", "1997-06-01", BARCODE)], 1),
    ([("b1", "twice", "1997-02-01", BARCODE), ("b2", "twice", "1997-05-01", Decimal("20.00"))], 1),  # alone, 1st day
], ids=["a one-time buyer", "the first day with another order", "one of two", "alone on the first day"])
def test_left_out_orders_counts_only_the_orders_the_spend_fit_really_left_out(extra, left_out):
    """``left_out_orders`` counted every outlier, also a one-time buyer's only order, which was never in the spend
    fit (the fit was that of the shop without it, left out or not): only those that were in it count."""
    report, _ = _predict(cdnow(extra))
    without, _ = _predict(cdnow([row for row in extra if row[3] != BARCODE]))
    assert report.gamma_gamma == without.gamma_gamma
    assert report.to_json()["gamma_gamma"]["left_out_orders"] == left_out


def test_a_barcode_typed_as_a_refund_is_the_refunds_warnings_and_two_orders_cannot_be_judged():
    """What the rule does not see (docs/predictions.md says so): a barcode in a refund, or in a negative completed
    amount, is no order above 0: the customer's refunds exceed his sales and the refunds warning names him; in a shop
    of two orders the median is half the barcode, so it is never 10 000 times it (three orders are enough)."""
    con = cdnow([("neg", "1", "1997-02-20", -BARCODE)])
    con.execute("INSERT INTO orders VALUES ('ref', '2', '1997-02-20', 4600000000000, 'USD', 'refunded', NULL)")
    assert not outlier_amounts(con, HOLDOUT_END)
    build_customer_metrics(con, HOLDOUT_END)
    found = negative_revenue(con, "customer_metrics")
    assert found.customers == 2 and found.monetary < -BARCODE + 10_000
    two = _shop("INSERT INTO orders VALUES ('a', 'c', '2025-01-01', 20, NULL, 'completed', NULL), "
                "('b', 'c', '2025-02-01', 4600000000000, NULL, 'completed', NULL)")
    assert not outlier_amounts(two, date(2026, 1, 1))
    two.execute("INSERT INTO orders VALUES ('c', 'd', '2025-03-01', 30, NULL, 'completed', NULL)")
    assert outlier_amounts(two, date(2026, 1, 1)).orders == 1


def test_the_orders_after_the_as_of_are_not_judged():
    con = cdnow([("late", "1", "1998-07-01", BARCODE)])
    assert not outlier_amounts(con, HOLDOUT_END)
    assert outlier_amounts(con, date(1998, 7, 1)).orders == 1


def test_large_real_orders_are_no_outliers():
    """A shop's largest real orders are tens of times its median check: CDNOW's 19×; a VIP's order of 1 000 times
    the median is not one either (the rule is 10 000 times)."""
    con = cdnow([("vip", "1", "1997-05-01", Decimal("26130.00")), ("vip2", "1", "1997-05-02", Decimal("261299.99"))])
    assert not outlier_amounts(con, HOLDOUT_END)
    assert con.execute("SELECT max(amount) / median(amount) FROM orders WHERE order_id LIKE 'o%'").fetchall()[0][0] < 20
    con.execute("INSERT INTO orders VALUES ('edge', '1', '1997-05-03', 261300.00, 'USD', 'completed', NULL)")
    # exactly 10 000 times the median, but within 100 times its customer's other orders (vip2): none
    assert not outlier_amounts(con, HOLDOUT_END)
    con.execute("DELETE FROM orders WHERE order_id = 'vip2'")
    # its customer's other large order is 26 130, a hundredth of it is 2 613 000: still none
    assert not outlier_amounts(con, HOLDOUT_END)
    con.execute("DELETE FROM orders WHERE order_id = 'vip'")
    # customer 1's other orders are CDNOW's: 506.97 at most, 515 times less
    assert outlier_amounts(con, HOLDOUT_END).orders == 1


def _shop(sql: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_tables(con)
    con.execute(sql)
    return con


#: a subscription shop: most completed orders are 1 ₽ trials, the plans 399 ₽ a month and 12 000 ₽ a year
TRIALS = """INSERT INTO orders SELECT 'o' || i, 'c' || (i % 300),
            TIMESTAMPTZ '2025-01-01' + i * INTERVAL 3 HOUR + (hash(i) % 7) * INTERVAL 1 DAY,
            CASE WHEN hash(i) % 5 < 3 THEN 1.00 WHEN hash(i) % 5 = 3 THEN 399 ELSE 12000 END, 'RUB', 'completed', NULL
            FROM range(3000) t(i)"""


def test_a_subscription_shop_of_one_ruble_trials_keeps_its_yearly_plans_in_the_spend_fit():
    """The median order of a shop of 1 ₽ trials is 1 ₽: its 12 000 ₽ yearly plans are 12 000 times it, but only 30
    times its 399 ₽ monthly plans; left out, the fitted mean spend fell from 2 544 to 99 and every customer's CLV
    with it. They are no outliers: the fit is the fit on every order."""
    con = _shop(TRIALS)
    assert con.execute("SELECT median(amount), max(amount) FROM orders").fetchall()[0] == (1, 12000)
    assert not outlier_amounts(con, date(2026, 1, 1))
    report = P.predict_customers(con, date(2026, 1, 1), CFG)
    g = report.gamma_gamma
    assert report.to_json()["gamma_gamma"]["left_out_orders"] == 0
    assert g.p * g.gamma / (g.q - 1) == pytest.approx(2544, rel=0.01)  # the fitted population mean spend
    # a barcode pasted among them is still found, against the same median
    con.execute("UPDATE orders SET amount = 4600000000000 WHERE order_id = 'o7'")
    found = outlier_amounts(con, date(2026, 1, 1))
    assert [(o.order_id, o.typical) for o in found.shown] == [("o7", 1)] and found.orders == 1


def test_a_cafe_with_a_wholesale_client_and_a_redenominated_currency_have_none():
    """A café of 2.00–3.00 checks with a catering client's 800 and 30 000 (12 000 times the median, 37 times the
    800), and a currency redenominated 10 000:1 (the old orders, 40 % of them, are 10 000 times the new): no
    outlier; a barcode among them is."""
    cafe = _shop("""INSERT INTO orders SELECT 'o' || i, 'c' || (i % 500),
                    TIMESTAMPTZ '2025-01-01' + i * INTERVAL 1 HOUR, 2.00 + (i % 3) * 0.5, 'EUR', 'completed', NULL
                    FROM range(5000) t(i);
                    INSERT INTO orders VALUES
                    ('w1', 'wholesale', TIMESTAMPTZ '2025-03-01', 30000, 'EUR', 'completed', NULL),
                    ('w2', 'wholesale', TIMESTAMPTZ '2025-04-01', 800, 'EUR', 'completed', NULL)""")
    redenominated = _shop("""INSERT INTO orders SELECT 'o' || i, 'c' || (i % 400),
                             TIMESTAMPTZ '2014-01-01' + i * INTERVAL 6 HOUR,
                             CASE WHEN i < 4000 THEN (30 + i % 50) * 10000 ELSE 30 + i % 50 END, NULL, 'completed',
                             NULL FROM range(10000) t(i)""")
    for con in (cafe, redenominated):
        assert con.execute("SELECT max(amount) / median(amount) FROM orders").fetchall()[0][0] >= OUTLIER_RATIO
        assert not outlier_amounts(con, date(2026, 1, 1))
        con.execute("UPDATE orders SET amount = 4600000000000 WHERE order_id = 'o9'")
        found = outlier_amounts(con, date(2026, 1, 1))
        assert [(o.order_id, o.typical) for o in found.shown] == [("o9", median_check(con, date(2026, 1, 1)))]
        assert found.orders == 1


def test_a_price_tier_with_nothing_between_and_a_caterers_orders_are_no_outliers():
    """The gap rule needed a middle tier: a shop of 1 ₽ trials selling only a 12 000 ₽ yearly plan had its yearly
    orders flagged and left out of the spend fit (its mean spend fell to the trials'), a café whose catering client
    ordered 30 000 and 28 000 (nothing between them and 3.00 checks) both. A price many customers pay, or a
    client's own repeated large orders, are no outliers; a barcode among them still is."""
    trials = _shop("""INSERT INTO orders SELECT 'o' || i, 'c' || (i % 300),
                      TIMESTAMPTZ '2025-01-01' + i * INTERVAL 3 HOUR, CASE WHEN hash(i) % 5 < 3 THEN 1.00 ELSE 12000 END, 'RUB', 'completed', NULL
                      FROM range(3000) t(i)""")
    cafe = _shop("""INSERT INTO orders SELECT 'o' || i, 'c' || (i % 500),
                    TIMESTAMPTZ '2025-01-01' + i * INTERVAL 1 HOUR, 2.00 + (i % 3) * 0.5, 'EUR', 'completed', NULL
                    FROM range(5000) t(i);
                    INSERT INTO orders VALUES
                    ('w1', 'wholesale', TIMESTAMPTZ '2025-03-01', 30000, 'EUR', 'completed', NULL),
                    ('w3', 'wholesale', TIMESTAMPTZ '2025-05-01', 28000, 'EUR', 'completed', NULL)""")
    assert trials.execute("SELECT median(amount), count(*) FILTER (amount = 12000) FROM orders").fetchall() == [
        (1, 1204)]
    for con in (trials, cafe):
        assert not outlier_amounts(con, date(2026, 1, 1))
    for con in (trials, cafe):
        con.execute("UPDATE orders SET amount = 4600000000000 WHERE order_id = 'o9'")
        found = outlier_amounts(con, date(2026, 1, 1))
        assert [o.order_id for o in found.shown] == ["o9"] and found.orders == 1


def test_one_typo_just_under_the_line_does_not_hide_a_pasted_id():
    """The gap was measured from the single largest order below the line: one typo of 9 999 999 (just under 10 000
    times a 1 025 check) hid a pasted 460 012 345 (46 times it) above. Measured from the 99th percentile of those
    orders, the id is found; the typo, below the line, is not judged."""
    con = _shop("""INSERT INTO orders SELECT 'o' || i, 'c' || (i % 300), TIMESTAMPTZ '2025-01-01' + i * INTERVAL 3 HOUR,
                   1000 + i % 50, 'RUB', 'completed', NULL FROM range(3000) t(i)""")
    con.execute("UPDATE orders SET amount = 460012345 WHERE order_id = 'o7'")
    con.execute("UPDATE orders SET amount = 9999999 WHERE order_id = 'o8'")
    found = outlier_amounts(con, date(2026, 1, 1))
    assert [(o.order_id, o.amount) for o in found.shown] == [("o7", 460012345)] and found.orders == 1


def test_the_benchmarks_generated_shop_has_none(tmp_path):
    path = generate_orders_csv(tmp_path / "orders.csv", orders=200_000, customers=20_000)
    con = duckdb.connect()
    create_tables(con)
    con.execute(f"INSERT INTO orders SELECT order_id, customer_id, ordered_at::TIMESTAMPTZ, amount, NULL, status, "
                f"NULL FROM read_csv('{path}')")
    assert not outlier_amounts(con, date(2026, 1, 1))


def test_each_currency_has_its_own_typical_check():
    """100 USD and 1 200 000 UZS are the same check: a shop in two currencies (warned of already) has no outliers
    from the larger unit's orders; a barcode among the UZS orders is judged against the UZS median."""
    con = duckdb.connect()
    create_tables(con)
    con.execute("""INSERT INTO orders SELECT 'o' || i, 'c' || (i % 40), TIMESTAMPTZ '2025-01-01' + i * INTERVAL 1 HOUR,
                   CASE WHEN i % 3 = 0 THEN (50 + i % 100) * 12000 ELSE 50 + i % 100 END,
                   CASE WHEN i % 3 = 0 THEN 'UZS' ELSE 'USD' END, 'completed', NULL FROM range(600) t(i)""")
    assert not outlier_amounts(con, date(2025, 3, 1))
    con.execute("UPDATE orders SET amount = 4600000000000 WHERE order_id IN ('o3', 'o4')")
    found = outlier_amounts(con, date(2025, 3, 1))
    assert found.orders == 2 and {(o.order_id, o.currency) for o in found.shown} == {("o3", "UZS"), ("o4", "USD")}
    medians = {cur: statistics.median(a for c, a in con.execute("SELECT currency, amount FROM orders").fetchall()
                                      if c == cur) for cur in ("UZS", "USD")}
    assert {o.currency: o.typical for o in found.shown} == medians


@settings(max_examples=60, deadline=None)
@example([(1, 0), (1, 0), (6, 0)], [(50_000, 1)])  # an even count: the lower middle alone under 50 000 / 10 000
@example([(1, 0), (1, 0), (1, 0)], [(10_000, 1), (1_000_000, 2)])  # both past both lines: two outliers
@example([(1, 0)] * 9, [(20_000, 1), (20_000, 2), (30_000, 3)])  # a price two customers paid; 30 000 alone is one
@example([(1, 0)] * 9, [(20_000, 1), (30_000, 1), (9_000_000, 1)])  # a client's own large orders; 9 000 000 is 300×
@example([(5, i % 5) for i in range(150)] + [(49_000, 1)], [(5_000_000, 2)])  # one order just under the line
@example([(1, 0)] * 9, [(4607001777779, 1), (4607001777779, 2), (4780000000014, 2)])  # barcodes: price, own
@example([(1, 0)] * 9, [(4607001777770, 1), (4607001777770, 2)])  # no check digit: a price
@example([(1, 0)] * 9, [(170_000_000_000, 1), (170_000_000_000, 2)])  # a check digit but round: a price (IRR)
@example([(1, 0)] * 9, [(36000291452, 1), (36000291453, 1)])  # 11 digits beside the client's own: his orders
@example([(1, 0)] * 9, [(36000291452, 1), (74479182116, 1)])  # 11 digits beside another barcode: two outliers
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 5)), min_size=1, max_size=150),
       st.lists(st.tuples(st.sampled_from([20_000, 30_000, 1_000_000, 4607001777779, 4780000000014, 36000291452,
                                           36000291453, 74479182116, 4607001777770, 170_000_000_000,
                                           96385074, 96385075])
                          | st.integers(1, 10_000_000),
                          st.integers(0, 5)), min_size=0, max_size=5))
def test_the_outliers_are_exactly_those_of_the_rule(small, large):
    """Whatever the amounts and customers (ties, an even count, no outlier, outliers half the orders, one order
    just under the line, a price several customers paid, a customer's own large orders), the orders found are
    those of at least 10 000 times the median and 100 times the 99th percentile of the orders below that, that
    no other customer paid the same, and at least 100 times their customer's other orders of other amounts (the
    shortcut that skips the median when the largest amount cannot be one gives the same answer); past the first
    two, an amount of 12 or 13 digits ending in its GS1 check digit and not round (a barcode) whatever the
    others, one of 11 digits (or an EAN-8's 8, where under 1 % of the orders are past both lines, EAN-8s aside)
    whoever else paid it but only where its customer's other orders as large (within 100 times) are barcodes too."""
    rows = small + large
    amounts = [a for a, _ in rows]
    con = duckdb.connect()
    create_tables(con)
    con.execute("INSERT INTO orders SELECT 'o' || row_number() OVER (), 'c' || c, TIMESTAMPTZ '2025-01-01', a, NULL, "
                "'completed', NULL FROM (SELECT unnest(?::BIGINT[]) AS a, unnest(?::BIGINT[]) AS c)",
                [amounts, [c for _, c in rows]])
    median = statistics.median(Decimal(a) for a in amounts)  # (integers: a median of .5 at most, exact)
    below = sorted(a for a in amounts if a < OUTLIER_RATIO * median)
    top = below[-(-len(below) * 99 // 100) - 1]  # the 99th percentile (the nearest rank) of the orders below the line
    past = [(a, c) for a, c in rows if a >= OUTLIER_RATIO * median and a >= GAP_RATIO * top]
    prices = {a for a, _ in past if len({c for b, c in past if b == a}) > 1}
    eights = sum(1 for a, _ in past if not _barcode(a, (8,))) < 0.01 * len(rows)  # the EAN-8s themselves not counted

    def code(a: int) -> bool:
        return _barcode(a) or eights and _barcode(a, (8,))

    expected = sum(1 for a, c in past if _barcode(a) and len(str(a)) > 11
                   or (code(a) or a not in prices)
                   and all(a >= GAP_RATIO * b or code(a) and code(b) for b, d in rows if d == c and b != a))
    assert outlier_amounts(con, date(2025, 1, 1)).orders == expected


def _barcode(amount: int, lengths: tuple[int, ...] = (11, 12, 13)) -> bool:
    """11 to 13 digits (``lengths``), the last the GS1 check digit of the others (weights 3, 1, 3, … from the
    right), not ending in ROUND_ZEROS zeros (a round price)."""
    digits = str(amount)
    check = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(reversed(digits)))
    return len(digits) in lengths and amount % 10 ** ROUND_ZEROS != 0 and check % 10 == 0


# --------------------------------------------------------------------------- the warning, through the CLI

def _cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _demo(folder: Path) -> tuple[Path, date]:
    as_of = date(2026, 1, 15)
    return generate_shop(folder, customers=600, seed=7, as_of=as_of), as_of


def _amounts_warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "far beyond the usual check" in line]


def test_the_demo_shop_has_none_and_a_pasted_barcode_is_named_with_its_file(tmp_path):
    cfg, as_of = _demo(tmp_path / "shop")
    args = ("--config", str(cfg), "--as-of", as_of.isoformat(), "--format", "json")
    assert _amounts_warnings(_cli("predict", *args)) == []

    orders = cfg.parent / "orders.csv"
    rows = list(csv.reader(orders.open(encoding="utf-8-sig"), delimiter=";"))
    sales = Counter(r[2] for r in rows[1:] if r[7] == "Продажа")
    customer = min(c for c, n in sales.items() if n >= 3)
    last = max(i for i, r in enumerate(rows) if i and r[2] == customer and r[7] == "Продажа")
    rows[last][5] = "4600000000000,00"
    with orders.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f, delimiter=";").writerows(rows)
    day = datetime.strptime(rows[last][1], "%d.%m.%Y %H:%M").date()

    seg = _cli("segments", *args)
    [line] = _amounts_warnings(seg)
    assert line.startswith(f"warning: an amount far beyond the usual check (the median order; the rule: 10 000 "
                           f"times it, 100 times the 99th percentile of the orders below that and 100 times the customer's "
                           f"other orders, of an amount no other customer paid; a barcode's 8 or 11 to 13 digits "
                           f"with their check digit need only the first two): customer {customer!r}, "
                           f"order {rows[last][0]!r} of {day} (file {orders}): "
                           "4 600 000 000 000.00 UZS, ")
    assert "times the typical check of " in line and "; it counts in the customer's monetary, M score and " \
           "segment; a barcode or an id pasted into the amount column? Fix the amount in the export" in line
    assert line.removeprefix("warning: ") in json.loads(seg.stdout)["warnings"]

    predict = _cli("predict", *args)
    [line] = _amounts_warnings(predict)
    assert "it counts in the customer's monetary, M score, segment, expected_aov and clv; the spend model's fit " \
           "leaves it out: other customers' expected_aov and clv are as without it; a barcode" in line
    assert json.loads(predict.stdout)["gamma_gamma"]["left_out_orders"] == 1
    # before that order's day there is nothing to say
    before = (day - timedelta(days=1)).isoformat()
    assert _amounts_warnings(_cli("segments", "--config", str(cfg), "--as-of", before)) == []
