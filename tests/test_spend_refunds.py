"""Refunds in the spend model (segmentation.refunds): a customer's mean spend is of what he kept.

A customer who bought five times 1 000 and returned everything had net revenue 0 and the shop's highest CLV: the
Gamma-Gamma model read the completed amounts alone. Each refund up to the as-of now comes off the purchase day it
refunds (its sale's, by the ``ID~return`` id; else the latest purchase day before it), so the returner's CLV is
below that of customers who kept their purchases, a partial return lowers the CLV, and a shop without refunds (the
published figures' CDNOW) gets what it got before. A wholly refunded day stays a purchase day for BG/NBD."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from segmentation import predictive as P
from sync.pipeline import compute_segments
from tests.test_day_cache import _assert_as_fresh, _config, _write
from tests.test_lifecycle import fields, shop
from tests.test_outliers import cdnow
from tests.test_predictive import HOLDOUT_END

CFG = P.PredictConfig(holdout_days=0)
#: five purchase days of 1 000 within CDNOW's history
DAYS = ("1997-11-03", "1998-01-05", "1998-02-09", "1998-04-06", "1998-06-01")


def _buyer(customer: str, amount: Decimal, returned: bool) -> list[tuple]:
    """``customer``'s five purchases of ``amount`` (cdnow's extra orders), each returned the same day under its
    sale's id (as the file source stores a return booked under its sale's receipt number: ``ID~return``)."""
    sales = [(f"{customer}{i}", customer, day, amount) for i, day in enumerate(DAYS)]
    return sales + ([(f"{o}~return", c, d, a) for o, c, d, a in sales] if returned else [])


def _predicted(extra: list[tuple]) -> tuple[P.PredictReport, dict[str, tuple]]:
    con = cdnow(extra)
    con.execute("UPDATE orders SET status = 'refunded' WHERE order_id LIKE '%~return'")
    report = P.predict_customers(con, HOLDOUT_END, CFG)
    rows = con.execute("SELECT p.customer_id, p.expected_aov, p.clv, l.purchase_days, l.monetary "
                       "FROM customer_predictions p JOIN customer_lifecycle l USING (customer_id)").fetchall()
    return report, {c: tuple(rest) for c, *rest in rows}


def test_a_customer_who_returned_every_purchase_gets_less_clv_than_those_who_kept_theirs():
    """The returner of five purchases of 1 000 had CDNOW's highest CLV (his mean spend 1 000, the median customer's
    about 30). Netted, his repeat days' spend is 0: he is in no spend fit (the fit is that of the shop without his
    orders), his expected_aov is the population's mean shrunk towards his 0, and his CLV is below that of a customer
    who bought as often and kept typical purchases of 30. His purchase days stay five (BG/NBD counts them)."""
    report, got = _predicted(_buyer("returner", Decimal("1000.00"), True) + _buyer("keeper", Decimal("30.00"), False))
    without, _ = _predicted(_buyer("keeper", Decimal("30.00"), False))
    aov, clv, purchase_days, monetary = got["returner"]
    assert (purchase_days, monetary) == (5, 0.0)
    assert report.gamma_gamma == without.gamma_gamma  # his days are no spend observation
    gg = report.gamma_gamma
    assert aov < Decimal(str(gg.gamma * gg.p / (gg.q - 1)))  # below the population's mean spend
    assert clv < got["keeper"][1]


def test_a_partial_return_lowers_the_clv():
    """The same customer with the sale of one repeat day half returned: his mean spend, expected_aov and CLV are
    lower; the purchase days and every other customer's are the same (one customer moves a CDNOW fit by little, so
    only his own figures are compared)."""
    sales = _buyer("partial", Decimal("40.00"), False)
    half = ("partial2~return", "partial", DAYS[2], Decimal("20.00"))
    _, kept = _predicted(sales)
    _, returned = _predicted([*sales, half])
    assert kept["partial"][2:] == (5, 40.0) and returned["partial"][2:] == (5, 35.0)  # (40·3 + 20) / 4
    assert returned["partial"][0] < kept["partial"][0] and returned["partial"][1] < kept["partial"][1]


def test_a_shop_without_refunds_gets_what_it_got_before():
    """No refund in the orders: the lifecycle's mean spend is the completed days' (CDNOW's published figures are
    tested untouched in tests/test_predictive.py)."""
    con = cdnow(_buyer("keeper", Decimal("30.00"), False))
    P.predict_customers(con, HOLDOUT_END, CFG)
    assert con.execute("SELECT monetary FROM customer_lifecycle WHERE customer_id = 'keeper'").fetchall() == [(30.0,)]


#: a customer of three purchase days (100, 40, 60): his mean spend of the repeat days is 50
KEPT = [("k1", "k", "2025-01-10", 100, "completed", None), ("k2", "k", "2025-02-10", 40, "completed", None),
        ("k3", "k", "2025-03-10", 60, "completed", None)]


@pytest.mark.parametrize("refund, monetary", [
    (("k2~return", "2025-02-20", 40), 30.0),  # the second day's sale returned: (0 + 60) / 2
    (("k3~return", "2025-03-12", 20), 40.0),  # a part of the third day's: (40 + 40) / 2
    (("k1~return", "2025-02-20", 100), 50.0),  # the first day's sale (by its id, after the second day): in no mean
    (("r9", "2025-02-20", 10), 45.0),  # a receipt of its own: of the latest purchase day before it, the second
    (("r9", "2025-02-10 18:00", 10), 45.0),  # ... on the same day
    (("r9", "2025-01-15", 10), 50.0),  # ... the first day's
    (("r9", "2024-12-01", 10), 50.0),  # before the first purchase: of a sale the data does not hold
    (("k3~return", "2025-07-05", 60), 50.0),  # after the as-of: not known yet
    (("k3~return", "2025-03-11", 500), 0.0),  # more than the customer ever spent: 0, not below
], ids=["second-day", "partial", "first-day-by-id", "own-receipt", "own-receipt-same-day", "own-receipt-first-day",
        "before-any-purchase", "after-as-of", "more-than-spent"])
def test_which_purchase_day_a_refund_is_of(refund, monetary):
    order_id, day, amount = refund
    got = fields(shop([*KEPT, (order_id, "k", day, amount, "refunded", None)]), as_of=date(2025, 6, 30))
    assert got["k"]["monetary"] == monetary
    assert (got["k"]["purchase_days"], got["k"]["orders"]) == (3, 3)  # the purchases themselves stay


def test_returns_read_from_an_export_are_netted_and_the_kept_tables_agree(tmp_path):
    """Through the file source (a return under its sale's receipt number is stored as ``ID~return``) and the order
    store: a run that builds or reads the kept purchase days gives what a run without them gives, as of a day
    before some of the returns too (they are not known yet)."""
    rows = []
    for c in range(60):
        for i, day in enumerate(("2025-01-05", "2025-02-11", "2025-03-20", "2025-05-02", "2025-06-18")[:2 + c % 4]):
            rows.append(f"s{c}-{i},c{c}@example.com,{day}T10:00:00+00:00,{20 + (c * 7 + i * 13) % 90}.00,completed")
            if (c + i) % 3 == 0:
                rows.append(f"s{c}-{i},c{c}@example.com,{day}T18:00:00+00:00,{5 + (c + i) % 20}.00,refunded")
    _write(tmp_path, "a.csv", rows)
    cfg = _config(tmp_path)
    _assert_as_fresh(cfg, date(2025, 6, 30), full=False)  # the totals alone
    _assert_as_fresh(cfg, date(2025, 6, 30))  # the day table, holdout and boundary
    _assert_as_fresh(cfg, date(2025, 4, 1))  # before the later returns
    for as_of, monetary in ((date(2025, 6, 30), 70.75), (date(2025, 4, 1), 60.5)):
        run = compute_segments(cfg, as_of, predict=True, holdout=False, boundary=False)
        try:  # c3: 41, 54, 67, 80 (11 returned on its day) and 93; the first day's return in no mean
            assert run.con.execute("SELECT monetary FROM customer_lifecycle WHERE customer_id = 'c3@example.com'"
                                   ).fetchall() == [(monetary,)]
            assert run.con.execute("SELECT count(*) FROM orders WHERE order_id LIKE '%~return'").fetchall()[0][0] > 30
        finally:
            run.close()


def test_an_outlier_customers_returns_are_netted_in_the_fit_without_the_outlier():
    """The spend fit counts the customers of outlier orders again without those orders
    (segmentation.outliers.spend_rows_sql): their returns are taken off there too, so the fit is that of the shop
    without the outlier order, returns and all."""
    buyer = [("t1", "typo", "1997-01-10", Decimal("20.00")), ("t2", "typo", "1997-03-01", Decimal("40.00")),
             ("t2~return", "typo", "1997-03-05", Decimal("30.00")), ("t4", "typo", "1997-06-01", Decimal("30.00"))]
    barcode = ("t5", "typo", "1997-08-01", Decimal("4600000000000.00"))
    report, _ = _predicted([*buyer, barcode])
    without, got = _predicted(buyer)
    assert got["typo"][3] == 20.0  # (40 − 30 + 30) / 2
    assert report.to_json()["gamma_gamma"]["left_out_orders"] == 1
    assert report.gamma_gamma == without.gamma_gamma


def test_a_mistyped_order_refunded_to_correct_it_leaves_the_fit_as_without_both():
    """A barcode typed into the amount, then refunded under its sale's id (the usual correction): the fit leaves
    the outlier order out and its refund with it (found by the refund's sale id), so it is that of the shop
    without either; before, the recount took the refund off the customer's other days and his net spend, clamped
    to 0, dropped him out of the fit."""
    buyer = [("t1", "typo", "1997-01-10", Decimal("20.00")), ("t2", "typo", "1997-03-01", Decimal("40.00")),
             ("t4", "typo", "1997-06-01", Decimal("30.00"))]
    barcode = ("t5", "typo", "1997-08-01", Decimal("4600000000000.00"))
    correction = ("t5~return", "typo", "1997-08-02", Decimal("4600000000000.00"))
    report, _ = _predicted([*buyer, barcode, correction])
    without, got = _predicted(buyer)
    assert got["typo"][3] == 35.0  # (40 + 30) / 2
    assert report.to_json()["gamma_gamma"]["left_out_orders"] == 1
    assert report.gamma_gamma == without.gamma_gamma


def test_the_refunds_kept_in_the_store_follow_the_as_of_and_new_files(tmp_path):
    """The order store keeps every refund beside its purchase days (a warm run reads them from there): a run as of
    a day before some of them, and a run after a new file with more returns (of its own sales and on receipts of
    their own), give what a run without any kept table gives."""
    rows = [f"s{c}-{i},c{c}@example.com,{day}T10:00:00+00:00,{30 + (c * 11 + i) % 70}.00,completed"
            for c in range(40) for i, day in enumerate(("2025-01-05", "2025-02-11", "2025-03-20", "2025-05-02"))]
    rows += [f"s{c}-2,c{c}@example.com,2025-03-21T09:00:00+00:00,{10 + c % 15}.00,refunded" for c in range(0, 40, 3)]
    _write(tmp_path, "a.csv", rows)
    cfg = _config(tmp_path)
    _assert_as_fresh(cfg, date(2025, 6, 30), full=False)  # built
    _assert_as_fresh(cfg, date(2025, 6, 30), full=False)  # read back
    _assert_as_fresh(cfg, date(2025, 3, 1), full=False)  # before every refund: none known yet
    _write(tmp_path, "b.csv", [*(f"n{c},c{c}@example.com,2025-06-01T10:00:00+00:00,80.00,completed"
                                 for c in range(0, 40, 2)),
                               *(f"n{c},c{c}@example.com,2025-06-02T10:00:00+00:00,60.00,refunded"
                                 for c in range(0, 40, 4)),
                               *(f"r{c},c{c}@example.com,2025-06-03T10:00:00+00:00,15.00,refunded"
                                 for c in range(1, 40, 5))])
    _assert_as_fresh(cfg, date(2025, 6, 30), full=False)
    _assert_as_fresh(cfg, date(2025, 5, 15), full=False)
    run = compute_segments(cfg, date(2025, 6, 30), predict=True, holdout=False, boundary=False)
    try:
        got = dict(run.con.execute("SELECT customer_id, monetary FROM customer_lifecycle").fetchall())
    finally:
        run.close()
    assert got["c0@example.com"] == (31 + 32 - 10 + 33 + 80 - 60) / 4  # 30 first; 10 of day 3, 60 of the new day
    assert got["c1@example.com"] == (42 + 43 + 44 - 15) / 3  # a receipt of its own: of his latest day, 2 May
