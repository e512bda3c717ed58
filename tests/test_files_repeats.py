"""A repeated order id in a flat export (another customer's order, a sale's return, the same order again) and a
receipt of sale and return lines: no sale lost, net revenue as docs/segments.md defines it, every repeat named."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from connectors.errors import BadFileError
from connectors.files import FileSource, FileSourceConfig

COLS = {k: k for k in ("order_id", "customer_id", "ordered_at", "amount", "status")}


def _write(path: Path, rows: list[tuple[str, ...]], sku: bool = False) -> None:
    head = "order_id,customer_id,ordered_at,amount,status" + (",sku" if sku else "")
    path.write_text("\n".join([head, *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")


def _pull(tmp_path: Path, **columns: str):
    con = duckdb.connect()
    cfg = FileSourceConfig(type="file", orders="orders*.csv", columns={**COLS, **columns}, timezone="UTC")
    result = FileSource(cfg, tmp_path).pull(con)
    got = {oid: (cust, str(amount), status) for oid, cust, amount, status in con.execute(
        "SELECT order_id, customer_id, amount, status FROM staged_orders ORDER BY order_id").fetchall()}
    return result, got


def test_a_return_under_its_sales_id_and_another_customers_id_lose_no_sale_and_are_named(tmp_path):
    """Hunter 28a: a return booked under its sale's receipt number replaced the sale (its amount lost, the refund
    still subtracted) and a receipt number restarting in the next month's file dropped the first customer's order,
    with one line "3 rows repeat an earlier order id: the last one kept" naming nothing."""
    _write(tmp_path / "orders-01.csv", [
        ("5", "a", "2026-01-10 10:00", "100", "completed"),  # row 2
        ("6", "a", "2026-01-20 10:00", "300", "completed"),
        ("5", "a", "2026-01-12 10:00", "100", "refunded"),  # row 4: the return of receipt 5, under its number
        ("7", "b", "2026-01-10 10:00", "80", "completed"),
        ("7", "b", "2026-01-11 10:00", "-80", "refunded"),  # row 6
        ("1", "c", "2026-01-15 10:00", "50", "completed"),  # row 7
        ("8", "c", "2026-01-16 10:00", "20", "completed"),
        ("8", "c", "2026-01-17 10:00", "20", "cancelled")])  # row 9: the same order's status update: last wins
    _write(tmp_path / "orders-02.csv", [("1", "d", "2026-02-01 10:00", "70", "completed")])  # numbers restart
    result, got = _pull(tmp_path)
    assert got == {"5": ("a", "100.00", "completed"), "5~return": ("a", "100.00", "refunded"),
                   "6": ("a", "300.00", "completed"), "7": ("b", "80.00", "completed"),
                   "7~return": ("b", "80.00", "refunded"), "1": ("c", "50.00", "completed"),
                   "1~2": ("d", "70.00", "completed"), "8": ("c", "20.00", "cancelled")}
    assert result.orders == 8 and result.duplicate_orders == 4 and result.bad_row_count == 0
    one, two = tmp_path / "orders-01.csv", tmp_path / "orders-02.csv"
    lines = result.warnings
    assert lines == [
        "1 order id is written for more than one customer: each customer's rows are an order of their own, the next "
        f"customers' stored as ID~2, ID~3 … (receipt numbers restarting in another file?): '1' ({one} row 7; {two} "
        "row 2)",
        "2 order ids hold a sale and its return (a later refunded row of the same customer): the return kept beside "
        "the sale as ID~return (the sale counts, the customer's net revenue is the sale minus the return): "
        f"'5' ({one} rows 2, 4), '7' ({one} rows 5, 6)",
        "1 order is written again (at the same time, or for the same customer: a status update, a customer merge, or "
        f"export periods that overlap): the last row of each kept: '8' ({one} rows 8, 9)"]


def test_more_repeats_than_named_are_counted(tmp_path):
    _write(tmp_path / "orders.csv", [(str(i % 5), "c", f"2026-01-{1 + i:02d}", "10", "completed") for i in range(10)])
    result, got = _pull(tmp_path)
    assert sorted(got) == ["0", "1", "2", "3", "4"] and result.duplicate_orders == 5
    (line,) = result.warnings
    assert line.startswith("5 orders are written again (at the same time") and line.endswith("rows 4, 9), …")


def test_a_receipt_of_sale_and_return_lines_is_their_net(tmp_path):
    """Hunter 28a: a receipt's returned line was added (its amount made positive) and the receipt took its last
    line's status: a = (1 order, 120) and b = (2, 140) where the net is a = (2, 400) and b = (2, 60)."""
    _write(tmp_path / "orders.csv", [
        ("5", "a", "2026-01-10 10:00", "100", "completed", "A"),
        ("5", "a", "2026-01-10 10:00", "40", "completed", "B"),
        ("5", "a", "2026-01-12 10:00", "-40", "refunded", "B"),  # line B returned under receipt 5
        ("6", "a", "2026-01-20 10:00", "300", "completed", "A"),
        ("7", "b", "2026-01-15 10:00", "-40", "refunded", "B"),  # an exchange: B returned, C bought
        ("7", "b", "2026-01-15 10:00", "90", "completed", "C"),
        ("8", "b", "2026-01-05 10:00", "10", "completed", "A"),
        ("9", "b", "2026-01-16 10:00", "-90", "refunded", "C"),  # more returned than bought: a refund of the net
        ("9", "b", "2026-01-16 10:00", "30", "completed", "D"),
        ("10", "b", "2026-01-17 10:00", "-15", "refunded", "D")], sku=True)  # a return's receipt alone
    result, got = _pull(tmp_path, sku="sku")
    assert got == {"5": ("a", "100.00", "completed"), "6": ("a", "300.00", "completed"),
                   "7": ("b", "50.00", "completed"), "8": ("b", "10.00", "completed"),
                   "9": ("b", "60.00", "refunded"), "10": ("b", "15.00", "refunded")}
    assert result.bad_row_count == 0


def test_the_same_id_at_the_same_time_is_one_order_whoever_its_customer_and_status(tmp_path):
    """Review of seg28: an order moved to another customer in a later export (a CRM customer merge) counted for
    both, and a refund reversed in a later export (refunded, then completed at the same time) became a sale and its
    return. The same id at the same time is one order: its last row wins, and it is named."""
    _write(tmp_path / "orders-01.csv", [("5", "a", "2026-01-10 10:00", "100", "completed"),
                                        ("6", "b", "2026-01-11 10:00", "50", "completed"),
                                        ("9", "c", "2026-01-12 10:00", "40", "refunded")])
    _write(tmp_path / "orders-02.csv", [("5", "b", "2026-01-10 10:00", "100", "completed"),  # merged into b
                                        ("6", "b", "2026-01-11 10:00", "50", "completed"),
                                        ("9", "c", "2026-01-12 10:00", "40", "completed")])  # the refund reversed
    result, got = _pull(tmp_path)
    assert got == {"5": ("b", "100.00", "completed"), "6": ("b", "50.00", "completed"),
                   "9": ("c", "40.00", "completed")}
    assert result.orders == 3 and result.duplicate_orders == 3
    one, two = tmp_path / "orders-01.csv", tmp_path / "orders-02.csv"
    (line,) = result.warnings
    assert line.startswith("3 orders are written again (at the same time") and line.endswith(
        f"'5' ({one} row 2; {two} row 2), '6' ({one} row 3; {two} row 3), '9' ({one} row 4; {two} row 4)")


def test_returns_are_kept_only_after_a_sale_each_one_on_its_own(tmp_path):
    """Review of seg28: two partial returns under a sale's id lost one (net 80, not 50), and a cancelled order
    refunded later was told "a sale and its return" though it was never a sale; a refund before the sale is not its
    return either."""
    _write(tmp_path / "orders.csv", [("5", "a", "2026-01-10 10:00", "100", "completed"),
                                     ("5", "a", "2026-01-12 10:00", "-30", "refunded"),
                                     ("5", "a", "2026-01-15 10:00", "-20", "refunded"),
                                     ("6", "b", "2026-01-10 10:00", "100", "cancelled"),
                                     ("6", "b", "2026-01-12 10:00", "100", "refunded"),
                                     ("7", "c", "2026-01-10 10:00", "60", "refunded"),
                                     ("7", "c", "2026-01-12 10:00", "60", "completed")])
    result, got = _pull(tmp_path)
    assert got == {"5": ("a", "100.00", "completed"), "5~return": ("a", "30.00", "refunded"),
                   "5~return2": ("a", "20.00", "refunded"), "6": ("b", "100.00", "refunded"),
                   "7": ("c", "60.00", "completed")}


def test_an_id_made_for_a_repeat_that_the_export_holds_is_an_error(tmp_path):
    """Review of seg28: a real order id '5~2' was replaced by the id made for order 5's second customer (a customer
    silently dropped)."""
    _write(tmp_path / "orders-01.csv", [("5", "a", "2026-01-10 10:00", "100", "completed"),
                                        ("5~2", "c", "2026-01-11 10:00", "60", "completed")])
    _write(tmp_path / "orders-02.csv", [("5", "b", "2026-02-10 10:00", "70", "completed")])
    with pytest.raises(BadFileError) as raised:
        _pull(tmp_path)
    assert str(raised.value) == (f"{tmp_path / 'orders-02.csv'} row 2: its order id repeats an earlier one and would "
                                 f"be stored as '5~2', an order id of its own in {tmp_path / 'orders-01.csv'} row 3: "
                                 "rename one of them")


def test_two_returns_of_a_sale_at_the_same_time_both_count_a_file_read_twice_counts_them_once(tmp_path):
    """store29: two returned items of one sale booked as two rows at the same time were "the same order again" (same
    id and time): the last row won and the other return was lost (net 80, not 50). Rows of one file are rows of
    their own (an export writes a row once), so each refunded row is a return; the same rows in a later file (export
    periods that overlap) are the same returns again: the last file's rows at that time are the returns."""
    sale = [("5", "a", "2026-01-10 10:00", "100", "completed"),
            ("5", "a", "2026-01-12 10:00", "-30", "refunded"),
            ("5", "a", "2026-01-12 10:00", "-20", "refunded"),
            ("6", "b", "2026-01-10 10:00", "50", "completed"),
            ("6", "b", "2026-01-12 10:00", "-10", "refunded"),  # two equal returns at once: two items of one kind
            ("6", "b", "2026-01-12 10:00", "-10", "refunded")]
    _write(tmp_path / "orders-01.csv", sale)
    want = {"5": ("a", "100.00", "completed"), "5~return": ("a", "30.00", "refunded"),
            "5~return2": ("a", "20.00", "refunded"), "6": ("b", "50.00", "completed"),
            "6~return": ("b", "10.00", "refunded"), "6~return2": ("b", "10.00", "refunded")}
    result, got = _pull(tmp_path)
    assert got == want and result.duplicate_orders == 4
    lines = result.warnings
    assert len(lines) == 1 and lines[0].startswith("2 order ids hold a sale and its return")
    _write(tmp_path / "orders-02.csv", sale[1:3] + sale[4:])  # the next export's period overlaps: the same returns
    result, got = _pull(tmp_path)
    assert got == want and result.duplicate_orders == 8


def test_a_return_corrected_in_a_re_export_is_the_last_files_return_alone(tmp_path):
    """Review of store29: a re-export of the period in which a return's amount was corrected (30, then 25, the same
    id and time) counted both returns (net 45; before store29 the last row won: 75). At one id and time the last
    file's refunded rows are the returns, an earlier file's rows there are superseded; two returns booked in that
    file both count, and a return at another time in an earlier file only (a daily file's) still counts."""
    sale = ("5", "a", "2026-01-10 10:00", "100", "completed")
    _write(tmp_path / "orders-01.csv", [sale, ("5", "a", "2026-01-12 10:00", "-30", "refunded"),
                                        ("5", "a", "2026-01-11 09:00", "-5", "refunded")])
    _write(tmp_path / "orders-02.csv", [sale, ("5", "a", "2026-01-12 10:00", "-25", "refunded")])
    assert _pull(tmp_path)[1] == {"5": ("a", "100.00", "completed"), "5~return": ("a", "5.00", "refunded"),
                                  "5~return2": ("a", "25.00", "refunded")}
    _write(tmp_path / "orders-03.csv", [("5", "a", "2026-01-12 10:00", "-15", "refunded"),
                                        ("5", "a", "2026-01-12 10:00", "-10", "refunded")])  # split in two items
    assert _pull(tmp_path)[1] == {"5": ("a", "100.00", "completed"), "5~return": ("a", "5.00", "refunded"),
                                  "5~return2": ("a", "15.00", "refunded"), "5~return3": ("a", "10.00", "refunded")}


def test_a_status_update_at_the_same_time_still_replaces_a_return(tmp_path):
    """The same id at the same time is still one order when its rows are not all returns: a refund reversed (its
    last row completed) is the sale's row again, and a return's row moved to another customer is that customer's."""
    _write(tmp_path / "orders.csv", [("5", "a", "2026-01-10 10:00", "100", "completed"),
                                     ("5", "a", "2026-01-12 10:00", "-30", "refunded"),
                                     ("5", "a", "2026-01-12 10:00", "30", "completed"),  # the refund reversed
                                     ("6", "b", "2026-01-10 10:00", "50", "completed"),
                                     ("6", "b", "2026-01-12 10:00", "-10", "refunded"),
                                     ("6", "c", "2026-01-12 10:00", "-10", "refunded")])  # its customer merged
    result, got = _pull(tmp_path)
    assert got == {"5": ("a", "30.00", "completed"), "6": ("b", "50.00", "completed"),
                   "6~2": ("c", "10.00", "refunded")}


def test_a_receipt_number_of_two_customers_is_two_receipts_as_in_a_flat_export(tmp_path):
    """store29: receipt lines were grouped by the number alone: a number restarting in the next file (or another
    till's) merged two customers' lines into one receipt, the first customer's purchase lost to the last line's
    customer (b had one receipt of 130, a none)."""
    _write(tmp_path / "orders-01.csv", [("1", "a", "2026-01-10 10:00", "100", "completed", "A"),  # row 2
                                        ("1", "a", "2026-01-10 10:00", "40", "completed", "B"),
                                        ("2", "c", "2026-01-11 10:00", "5", "completed", "A"),
                                        ("2", "e", "2026-01-11 11:00", "7", "completed", "C")], sku=True)  # 2nd till
    _write(tmp_path / "orders-02.csv", [("1", "b", "2026-02-01 10:00", "-10", "refunded", "B"),
                                        ("1", "b", "2026-02-01 10:00", "130", "completed", "C")], sku=True)
    result, got = _pull(tmp_path, sku="sku")
    assert got == {"1": ("a", "140.00", "completed"), "1~2": ("b", "120.00", "completed"),
                   "2": ("c", "5.00", "completed"), "2~2": ("e", "7.00", "completed")}
    assert result.orders == 4 and result.bad_row_count == 0
    one, two = tmp_path / "orders-01.csv", tmp_path / "orders-02.csv"
    (line,) = result.warnings
    assert line == ("2 receipt numbers are written for more than one customer's receipt lines: each customer's lines "
                    "are a receipt of their own, the next customers' stored as ID~2, ID~3 … (receipt numbers "
                    f"restarting in another file, or another till's?): '1' ({one} rows 2, 3; {two} rows 2, 3), '2' "
                    f"({one} rows 4, 5)")


def test_a_receipt_line_keeps_its_receipt_and_line_number(tmp_path):
    con = duckdb.connect()
    _write(tmp_path / "orders-01.csv", [("1", "a", "2026-01-10 10:00", "100", "completed", "A"),
                                        ("1", "b", "2026-01-11 10:00", "7", "completed", "C"),
                                        ("1", "a", "2026-01-10 10:00", "40", "completed", "B")], sku=True)
    cfg = FileSourceConfig(type="file", orders="orders*.csv", columns={**COLS, "sku": "sku"}, timezone="UTC")
    FileSource(cfg, tmp_path).pull(con)
    assert con.execute("SELECT order_id, line_no, sku FROM staged_line_items ORDER BY ALL").fetchall() == [
        ("1", 1, "A"), ("1", 2, "B"), ("1~2", 1, "C")]
    assert con.execute("SELECT * FROM staged_orders").description[-1][0] != "_first"


def test_a_receipt_number_made_for_another_customer_that_the_export_holds_is_an_error(tmp_path):
    _write(tmp_path / "orders.csv", [("1", "a", "2026-01-10 10:00", "100", "completed", "A"),
                                     ("1~2", "c", "2026-01-10 10:00", "9", "completed", "A"),
                                     ("1", "b", "2026-01-11 10:00", "7", "completed", "C")], sku=True)
    with pytest.raises(BadFileError, match=r"orders.csv row 4: its receipt number is another customer's too and "
                                           r"would be stored as '1~2', an order id of its own in .*orders.csv row 3"):
        _pull(tmp_path, sku="sku")


def test_a_returned_receipt_line_is_stored_with_a_negative_quantity(tmp_path):
    """store29: a receipt's returned line was stored as a line bought (its quantity positive, or none), so the
    favourite category counted it as a purchase. Its quantity is negative now (−1 when the file gives none)."""
    con = duckdb.connect()
    (tmp_path / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount,status,sku,quantity\n"
        "5,a,2026-01-10 10:00,100,completed,A,1\n5,a,2026-01-10 10:00,40,completed,B,2\n"
        "5,a,2026-01-12 10:00,-40,refunded,B,2\n6,a,2026-01-13 10:00,-10,refunded,C,\n", encoding="utf-8")
    cfg = FileSourceConfig(type="file", orders="orders*.csv", timezone="UTC",
                           columns={**COLS, "sku": "sku", "quantity": "quantity"})
    FileSource(cfg, tmp_path).pull(con)
    assert con.execute("SELECT order_id, line_no, sku, quantity FROM staged_line_items ORDER BY ALL").fetchall() == [
        ("5", 1, "A", Decimal("1.000")), ("5", 2, "B", Decimal("2.000")), ("5", 3, "B", Decimal("-2.000")),
        ("6", 1, "C", Decimal("-1.000"))]


def _lines(tmp_path: Path, rows: list[str]):
    (tmp_path / "orders.csv").write_text("order_id,customer_id,ordered_at,amount,status,sku,quantity,price\n"
                                         + "\n".join(rows) + "\n", encoding="utf-8")
    return _pull(tmp_path, sku="sku", quantity="quantity", price="price")


def test_a_receipt_total_repeated_on_each_item_row_counts_once_and_its_return_nets(tmp_path):
    """store30: an export of one row per item that repeats the receipt's total in `amount` on every row (and the
    refund's total on every returned row) was summed per line: a sale of 100 with two items was 200, and the
    return of both for 40 in all netted 200 − 80 = 120 instead of 60. The same amount on every line of a receipt
    at one time while the lines' quantity × price differ is the total: counted once, warned of."""
    result, got = _lines(tmp_path, [
        "5,a,2026-01-10 10:00,100,completed,A,1,60", "5,a,2026-01-10 10:00,100,completed,B,2,20",
        "5,a,2026-01-12 10:00,40,refunded,A,1,25", "5,a,2026-01-12 10:00,40,refunded,B,1,15",
        "6,b,2026-01-10 10:00,30,completed,A,1,30", "6,b,2026-01-10 10:00,30,completed,B,3,10",  # lines: 60
        "7,b,2026-01-11 10:00,50,completed,A,1,60", "7,b,2026-01-11 10:00,20,completed,B,1,20"])  # discounted
    assert got == {"5": ("a", "60.00", "completed"), "6": ("b", "60.00", "completed"),
                   "7": ("b", "70.00", "completed")}
    assert result.bad_row_count == 0
    assert result.warnings == ["1 receipt has the same amount on every line while the lines' quantity × price "
                               "differ: the amount is the receipt's total repeated on each line, counted once: "
                               f"'5' ({tmp_path / 'orders.csv'} rows 2, 3, 4, 5)"]


@pytest.mark.parametrize(("rows", "columns"), [
    (["1,a,2024-01-10 10:00,99,completed,A,1,120", "1,a,2024-01-10 10:00,99,completed,B,1,150"],
     ("sku", "quantity", "price")),  # a promotion: every item 99, the price the list price
    (["1,a,2024-01-10 10:00,100,completed,A,3,33.33", "1,a,2024-01-10 10:00,100,completed,B,1,100"],
     ("sku", "quantity", "price")),  # "3 for 100": 99.99 and 100.00
    (["1,a,2024-01-10 10:00,50.02,completed,A,0.456,109.70", "1,a,2024-01-10 10:00,50.02,completed,B,0.5,100.04"],
     ("sku", "quantity", "price")),  # weighed goods at equal amounts
    (["1,a,2024-01-10 10:00,50,completed,A,25", "1,a,2024-01-10 10:00,50,completed,B,50"],
     ("sku", "price")),  # quantity not mapped: 2 × 25 and 1 × 50
], ids=["all-at-99", "3-for-100", "weighed", "no-quantity"])
def test_line_amounts_that_happen_to_be_equal_are_summed(tmp_path, rows, columns):
    """fixst30 (review of store30): the repeated-total rule took any receipt whose lines have one amount and
    different quantity × price for a total repeated on each line, and halved it with a warning. A total of two
    lines or more is larger than any one line's quantity × price; equal line amounts are not: summed, no warning."""
    (tmp_path / "orders.csv").write_text("order_id,customer_id,ordered_at,amount,status," + ",".join(columns) + "\n"
                                         + "\n".join(rows) + "\n", encoding="utf-8")
    result, got = _pull(tmp_path, **{c: c for c in columns})
    assert Decimal(got["1"][1]) == 2 * Decimal(rows[0].split(",")[3])
    assert result.warnings == []


def test_favourites_of_receipt_lines_with_an_amount_but_no_price_go_by_the_amount(tmp_path):
    """store30: a receipt-lines export with `amount` (the line's total) and no `price` stored no price, so every
    line's spend was 0 and the favourite went by quantity (socks, 3 pairs for 30, over a hat for 90). A line's unit
    price is its amount ÷ |quantity| when no price is given: spend by amount, each line's sign its quantity's (a
    returned shoe takes its 100 off: 100 of shoes kept beats 60 of bags)."""
    from connectors.tables import create_tables
    from segmentation.lifecycle import create_lifecycle_table
    (tmp_path / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount,status,category,quantity\n"
        "1,a,2024-01-10 10:00,90,completed,Hats,1\n1,a,2024-01-10 10:00,30,completed,Socks,3\n"
        "2,b,2024-01-10 10:00,200,completed,Shoes,2\n2,b,2024-01-10 10:00,60,completed,Bags,3\n"
        "3,b,2024-01-12 10:00,-100,refunded,Shoes,1\n", encoding="utf-8")
    con = duckdb.connect()
    cfg = FileSourceConfig(type="file", orders="orders*.csv", timezone="UTC",
                           columns={**COLS, "category": "category", "quantity": "quantity"})
    FileSource(cfg, tmp_path).pull(con)
    assert con.execute("SELECT order_id, line_no, quantity, price FROM staged_line_items ORDER BY ALL").fetchall() == [
        ("1", 1, Decimal("1.000"), Decimal("90.00")), ("1", 2, Decimal("3.000"), Decimal("10.00")),
        ("2", 1, Decimal("2.000"), Decimal("100.00")), ("2", 2, Decimal("3.000"), Decimal("20.00")),
        ("3", 1, Decimal("-1.000"), Decimal("100.00"))]
    create_tables(con)
    con.execute("INSERT INTO orders SELECT * FROM staged_orders")
    con.execute("INSERT INTO line_items SELECT * FROM staged_line_items")
    create_lifecycle_table(con, date(2024, 6, 30), "UTC", 0.5)
    assert con.execute("SELECT customer_id, favourite_category FROM customer_lifecycle ORDER BY 1").fetchall() == [
        ("a", "Hats"), ("b", "Shoes")]


def test_a_receipts_lines_written_again_by_a_later_file_count_once_and_a_receipt_cut_between_files_is_whole(
        tmp_path):
    """store30: receipt lines of one customer's number in two exports whose periods overlap were one receipt of
    both files' lines: receipt 5 (100) was 200. A later file writing every line of a receipt at its time again
    supersedes the earlier file's copy (warned of, naming both); a receipt whose lines the two files share out
    (6: an export cut by rows) keeps them all."""
    head = "order_id,customer_id,ordered_at,amount,status,sku,quantity\n"
    (tmp_path / "orders-01.csv").write_text(head + "5,a,2026-01-10 10:00,60,completed,A,1\n"
                                            "5,a,2026-01-10 10:00,40,completed,B,2\n"
                                            "6,b,2026-01-31 10:00,10,completed,A,1\n", encoding="utf-8")
    (tmp_path / "orders-02.csv").write_text(head + "6,b,2026-01-31 10:00,20,completed,B,1\n"
                                            "5,a,2026-01-10 10:00,60,completed,A,1\n"
                                            "5,a,2026-01-10 10:00,40,completed,B,2\n"
                                            "7,a,2026-02-10 10:00,15,completed,C,1\n", encoding="utf-8")
    result, got = _pull(tmp_path, sku="sku", quantity="quantity")
    assert got == {"5": ("a", "100.00", "completed"), "6": ("b", "30.00", "completed"),
                   "7": ("a", "15.00", "completed")}
    assert result.orders == 3 and result.bad_row_count == 0
    one, two = tmp_path / "orders-01.csv", tmp_path / "orders-02.csv"
    assert result.warnings == [
        "1 receipt's lines are written again by a later file (the same lines at the same time: export periods that "
        f"overlap): the last file's lines kept: '5' ({one} rows 2, 3; {two} rows 3, 4)"]


def test_a_receipt_cut_between_two_files_between_two_equal_lines_keeps_both(tmp_path):
    """fixst30 (review of store30): a later file holding every line of an earlier file's part of a receipt was
    taken for the same lines written again, and the earlier part dropped: an export cut by rows between two equal
    lines (milk scanned twice: file 1 milk, file 2 milk and bread) was 6.20, not 7.40, with an "overlap" warning.
    Only the same lines in both files (as many of each, and no other) are written again; 8 (the whole receipt in
    both, its milk twice) still is."""
    head = "order_id,customer_id,ordered_at,amount,status,sku,quantity\n"
    (tmp_path / "orders-01.csv").write_text(head + "6,b,2024-01-31 10:00,1.20,completed,MILK,1\n"
                                            "8,c,2024-01-30 10:00,1.20,completed,MILK,1\n"
                                            "8,c,2024-01-30 10:00,1.20,completed,MILK,1\n", encoding="utf-8")
    (tmp_path / "orders-02.csv").write_text(head + "6,b,2024-01-31 10:00,1.20,completed,MILK,1\n"
                                            "6,b,2024-01-31 10:00,5,completed,BREAD,1\n"
                                            "8,c,2024-01-30 10:00,1.20,completed,MILK,1\n"
                                            "8,c,2024-01-30 10:00,1.20,completed,MILK,1\n", encoding="utf-8")
    result, got = _pull(tmp_path, sku="sku", quantity="quantity")
    assert got == {"6": ("b", "7.40", "completed"), "8": ("c", "2.40", "completed")}
    assert result.bad_row_count == 0
    one, two = tmp_path / "orders-01.csv", tmp_path / "orders-02.csv"
    assert result.warnings == [
        "1 receipt's lines are written again by a later file (the same lines at the same time: export periods that "
        f"overlap): the last file's lines kept: '8' ({one} rows 3, 4; {two} rows 4, 5)"]


@pytest.mark.parametrize("price", [False, True], ids=["lines", "repeated-totals-rule"])
def test_a_receipt_too_large_only_for_its_lines_written_again_is_stored_and_one_too_large_still_is_not(tmp_path,
                                                                                                      price):
    """file31: the too-large-receipt check ran on every line read, before a receipt's lines written again by a later
    file were dropped: receipt 5 (8e15 in each file) was refused as adding up to 16e15, and 6 (truly too large) was
    told as twice its total, with the bad rows of both copies. The check runs on the lines read once now."""
    head = "order_id,customer_id,ordered_at,amount,status,sku,quantity" + (",price" if price else "") + "\n"
    end = (",{}" if price else "")
    rows = "".join(f"{oid},{who},2026-01-{day} 10:00,{amount},completed,{sku},1{end.format(amount)}\n"
                   for oid, who, day, amount, sku in (("5", "a", 10, "5000000000000000", "A"),
                                                      ("5", "a", 10, "3000000000000000", "B"),
                                                      ("6", "b", 11, "6000000000000000", "A"),
                                                      ("6", "b", 11, "5000000000000000", "B")))
    (tmp_path / "orders-01.csv").write_text(head + rows + f"7,c,2026-01-09 10:00,10,completed,A,1{end.format(10)}\n",
                                            encoding="utf-8")
    (tmp_path / "orders-02.csv").write_text(head + rows, encoding="utf-8")
    result, got = _pull(tmp_path, sku="sku", quantity="quantity", **({"price": "price"} if price else {}))
    assert got == {"5": ("a", "8000000000000000.00", "completed"), "7": ("c", "10.00", "completed")}
    one, two = tmp_path / "orders-01.csv", tmp_path / "orders-02.csv"
    reason = ("receipt '6': its lines add up to 11000000000000000.00, more than 16 digits before the point (is the "
              "price, quantity or discount column an id or a phone number?); the receipt is skipped")
    assert [(Path(b.source).name, b.row, b.reason) for b in result.bad_rows] == [
        ("orders-02.csv", 4, reason), ("orders-02.csv", 5, reason)] and result.bad_row_count == 2
    assert result.warnings == [
        "2 receipts' lines are written again by a later file (the same lines at the same time: export periods that "
        f"overlap): the last file's lines kept: '5' ({one} rows 2, 3; {two} rows 2, 3), '6' ({one} rows 4, 5; {two} "
        "rows 4, 5)"]
