"""Shopify admin's own "Export orders" CSV read with the ``shopify_orders_csv`` preset: one order = one purchase."""

from __future__ import annotations

import csv
import datetime as dt
import io
import tomllib
from decimal import Decimal
from pathlib import Path

import duckdb

from connectors.files import FileSource, FileSourceConfig
from tests.builders import run_cli as run

#: the header of Shopify's orders export, as the admin writes it
HEADER = ("Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,Currency,Subtotal,"
          "Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,Created at,Lineitem quantity,"
          "Lineitem name,Lineitem price,Lineitem compare at price,Lineitem sku,Lineitem requires shipping,"
          "Lineitem taxable,Lineitem fulfillment status,Billing Name,Billing Street,Billing Address1,Billing Address2,"
          "Billing Company,Billing City,Billing Zip,Billing Province,Billing Country,Billing Phone,Shipping Name,"
          "Shipping Street,Shipping Address1,Shipping Address2,Shipping Company,Shipping City,Shipping Zip,"
          "Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,Cancelled at,Payment Method,"
          "Payment Reference,Refunded Amount,Vendor,Outstanding Balance,Employee,Location,Device ID,Id,Tags,"
          "Risk Level,Source,Lineitem discount,Tax 1 Name,Tax 1 Value,Tax 2 Name,Tax 2 Value,Tax 3 Name,Tax 3 Value,"
          "Tax 4 Name,Tax 4 Value,Tax 5 Name,Tax 5 Value,Phone,Receipt Number,Duties,Billing Province Name,"
          "Shipping Province Name,Payment ID,Payment Terms Name,Next Payment Due At,Payment References").split(",")


def order(name: str, email: str, status: str, created: str, total: str, items: list[tuple[str, str, str, str]],
          consent: str = "yes", cancelled: str = "", refunded: str = "0.00", phone: str = "", billing: str = "",
          repeat_created: bool = True) -> list[dict[str, str]]:
    """An order's rows as Shopify writes them: its columns on the first row; one more row per further line item
    (``items``: quantity, name, price, sku) carrying only the Name, the e-mail, the date (``repeat_created``) and
    the item."""
    first = {"Name": name, "Email": email, "Financial Status": status, "Paid at": created if status == "paid" else "",
             "Fulfillment Status": "fulfilled", "Accepts Marketing": consent, "Currency": "USD", "Subtotal": total,
             "Shipping": "0.00", "Taxes": "0.00", "Total": total, "Discount Amount": "0.00",
             "Shipping Method": "Standard", "Created at": created, "Billing Name": billing, "Cancelled at": cancelled,
             "Payment Method": "Shopify Payments", "Refunded Amount": refunded, "Vendor": "Acme",
             "Outstanding Balance": "0.00", "Id": str(5000 + int(name.strip("#"))), "Risk Level": "Low",
             "Source": "web", "Phone": phone}
    rows = []
    for i, (qty, item, price, sku) in enumerate(items):
        line = {"Lineitem quantity": qty, "Lineitem name": item, "Lineitem price": price, "Lineitem sku": sku,
                "Lineitem requires shipping": "true", "Lineitem taxable": "true",
                "Lineitem fulfillment status": "fulfilled", "Lineitem discount": "0.00"}
        base = first if i == 0 else {"Name": name, "Email": email, "Vendor": "Acme",
                                     "Created at": created if repeat_created else ""}
        rows.append({**base, **line})
    return rows


def export(*orders: list[dict[str, str]]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, HEADER, lineterminator="\n")
    w.writeheader()
    for rows in orders:
        w.writerows(rows)
    return out.getvalue()


# newest first, as the admin lists them
SHOP = export(
    order("#1009", "", "pending", "2025-06-20 18:00:00 -0400", "25.00", [("1", "Mug", "25.00", "MUG")],
          consent="no", phone="+1 415 555 0199", billing="Dee Moss"),  # cash on delivery, no e-mail: a purchase
    order("#1008", "cy@example.com", "paid", "2025-06-18 09:00:00 -0400", "15.00", [("1", "Card", "15.00", "CARD")],
          billing="Cy Twombly"),
    order("#1007", "cy@example.com", "voided", "2025-06-15 09:00:00 -0400", "90.00", [("1", "Lamp", "90.00", "LAMP")]),
    order("#1006", "bob@example.com", "paid", "2025-06-10 12:00:00 -0400", "60.00",
          [("1", "Hat", "20.00", "HAT"), ("2", "Scarf", "10.00", "SCARF"), ("1", "Belt", "20.00", "BELT")],
          consent="no", billing="Bob Ray", repeat_created=False),
    order("#1005", "ann@example.com", "partially_refunded", "2025-06-01 10:00:00 -0400", "50.00",
          [("1", "Dress", "30.00", "DRESS"), ("1", "Scarf", "20.00", "SCARF")], refunded="10.00", billing="Ann Lee"),
    order("#1004", "cy@example.com", "pending", "2025-05-20 10:00:00 -0400", "70.00", [("1", "Rug", "70.00", "RUG")],
          cancelled="2025-05-21 08:00:00 -0400"),  # cancelled before it was paid
    order("#1003", "ann@example.com", "refunded", "2025-05-10 11:00:00 -0400", "40.00", [("1", "Coat", "40.00", "CO")],
          refunded="40.00", billing="Ann Lee"),
    order("#1002", "bob@example.com", "paid", "2025-05-03 10:59:00 -0400", "20.00", [("1", "Hat", "20.00", "HAT")],
          consent="no", billing="Bob Ray"),
    order("#1001", "ann@example.com", "paid", "2025-05-01 09:59:00 -0400", "35.00",
          [("1", "Shirt", "10.00", "SH-1"), ("2", "Socks", "12.50", "SO-1")], consent="no", billing="Ann Lee"),
)


def pull(tmp_path: Path, text: str, **cfg) -> tuple[object, duckdb.DuckDBPyConnection]:
    (tmp_path / "orders_export.csv").write_text(text, encoding="utf-8")
    con = duckdb.connect()
    src = FileSource(FileSourceConfig(type="file", orders="orders_export.csv", preset="shopify_orders_csv", **cfg),
                     tmp_path, clock=lambda: dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc))
    return src.pull(con), con


def test_init_recognises_the_export_and_segments_count_one_purchase_per_paid_order(tmp_path):
    (tmp_path / "orders_export.csv").write_text(SHOP, encoding="utf-8")
    cfg = tmp_path / "rfmsync.toml"
    out = run("init", str(tmp_path / "orders_export.csv"), "-o", str(cfg)).output
    src = tomllib.loads(cfg.read_text(encoding="utf-8"))["source"]
    assert src["preset"] == "shopify_orders_csv" and "columns" not in src and "date_format" not in src
    assert "0 bad rows" in out  # an order's further line-item rows are no bad rows
    customers = tmp_path / "customers.csv"
    run("segments", "--config", str(cfg), "--as-of", "2025-06-30", "--customers", "--no-predict", "-o",
        str(customers))
    got = {r["email"] or r["phone"]: (int(r["frequency"]), Decimal(r["monetary"]))
           for r in csv.DictReader(customers.open(encoding="utf-8"))}
    assert got == {
        "ann@example.com": (2, Decimal("85.00")),  # #1001 (two items) + #1005 (its Total, partly refunded); #1003 not
        "bob@example.com": (2, Decimal("80.00")),  # #1002 + #1006 (three items, the date on its first row only)
        "cy@example.com": (1, Decimal("15.00")),   # #1008; #1007 voided, #1004 cancelled
        "+14155550199": (1, Decimal("25.00")),     # #1009, pending (cash on delivery)
    }


def test_orders_lines_statuses_and_consent(tmp_path):
    result, con = pull(tmp_path, SHOP)
    assert result.bad_row_count == 0 and result.duplicate_orders == 0
    staged = {r[0]: r[1:] for r in con.execute("SELECT order_id, customer_id, ordered_at, amount, currency, status"
                                                " FROM staged_orders").fetchall()}
    assert len(staged) == 9
    assert {k: v[4] for k, v in staged.items()} == {
        "#1001": "completed", "#1002": "completed", "#1003": "cancelled", "#1004": "cancelled", "#1005": "completed",
        "#1006": "completed", "#1007": "cancelled", "#1008": "completed", "#1009": "completed"}
    # the offset in "Created at" is the time's own; the whole Total of the first row; the currency kept
    assert staged["#1006"][1:4] == (dt.datetime(2025, 6, 10, 16, tzinfo=dt.timezone.utc), Decimal("60.00"), "USD")
    assert con.execute("SELECT line_no, sku, quantity, price FROM staged_line_items WHERE order_id = '#1006'"
                       " ORDER BY line_no").fetchall() == [(1, "HAT", Decimal("1.000"), Decimal("20.00")),
                                                           (2, "SCARF", Decimal("2.000"), Decimal("10.00")),
                                                           (3, "BELT", Decimal("1.000"), Decimal("20.00"))]
    people = {r[0]: r[1:] for r in con.execute("SELECT email, phone, first_name, marketing_consent"
                                                " FROM staged_contacts").fetchall()}
    # Ann's latest order (#1005, listed above #1001) says yes; Bob's every order no
    assert people["ann@example.com"] == (None, "Ann", "yes")
    assert people["bob@example.com"][2] == "no"
    assert people[None] == ("+14155550199", "Dee", "no")


def test_an_order_without_total_or_date_is_bad_rows_named_by_file_and_line(tmp_path):
    bad = export(order("#2002", "eve@example.com", "paid", "yesterday", "30.00", [("1", "Hat", "30.00", "HAT")]),
                 order("#2001", "eve@example.com", "paid", "2025-06-01 10:00:00 +0000", "",
                       [("1", "Shirt", "10.00", "SH"), ("1", "Socks", "5.00", "SO")]))
    result, con = pull(tmp_path, SHOP + bad.split("\n", 1)[1])
    assert result.bad_row_count == 3 and result.orders == 9
    path = str(tmp_path / "orders_export.csv")
    first = SHOP.count("\n") + 1  # the line of the first row appended
    assert [(b.source, b.row, b.field, b.value) for b in result.bad_rows] == [
        (path, first, "ordered_at", "yesterday"), (path, first + 1, "amount", None),
        (path, first + 2, "amount", None)]
    assert result.bad_rows[1].reason == "unparseable or empty amount"
    assert result.bad_rows[2].reason == (f"a line item of order '#2001', whose first row (row {first + 1}) is a bad "
                                         "row: unparseable or empty amount")
    assert not con.execute("SELECT count(*) FROM staged_orders WHERE order_id IN ('#2001', '#2002')").fetchone()[0]


def test_an_order_in_two_overlapping_exports_is_one_order_the_later_file_wins(tmp_path):
    may = [order("#1002", "bob@example.com", "paid", "2025-05-03 10:59:00 -0400", "20.00",
                 [("1", "Hat", "20.00", "H")]),
           order("#1001", "ann@example.com", "paid", "2025-05-01 09:59:00 -0400", "35.00",
                 [("1", "Shirt", "10.00", "SH-1"), ("2", "Socks", "12.50", "SO-1")])]
    (tmp_path / "orders_export_1.csv").write_text(export(*may), encoding="utf-8")
    # exported again later: #1001 refunded since, and listed twice (an export pasted below another)
    again = order("#1001", "ann@example.com", "refunded", "2025-05-01 09:59:00 -0400", "35.00",
                  [("1", "Shirt", "10.00", "SH-1"), ("2", "Socks", "12.50", "SO-1")], refunded="35.00")
    (tmp_path / "orders_export_2.csv").write_text(export(again) + export(again).split("\n", 1)[1], encoding="utf-8")
    con = duckdb.connect()
    src = FileSource(FileSourceConfig(type="file", orders="orders_export_*.csv", preset="shopify_orders_csv"), tmp_path,
                     clock=lambda: dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc))
    result = src.pull(con)
    assert result.bad_row_count == 0 and result.duplicate_orders == 2
    assert con.execute("SELECT order_id, amount, status FROM staged_orders ORDER BY 1").fetchall() == [
        ("#1001", Decimal("35.00"), "cancelled"), ("#1002", Decimal("20.00"), "completed")]
    assert con.execute("SELECT count(*) FROM staged_line_items WHERE order_id = '#1001'").fetchone()[0] == 2
    assert result.warnings == ["2 orders appear again further on (in a later export, or below in the same file); the "
                               "last one of each was kept"]


def test_orders_of_many_items_dated_on_their_first_row_only_are_read(tmp_path):
    items = [("1", f"Item {i}", "10.00", f"SKU-{i}") for i in range(4)]
    result, con = pull(tmp_path, export(order("#1", "a@example.com", "paid", "2025-05-01 10:00:00 +0000", "40.00",
                                              items, repeat_created=False),
                                        order("#2", "b@example.com", "paid", "2025-05-02 10:00:00 +0000", "20.00",
                                              items[:2], repeat_created=False)))
    # 4 of the 6 rows have no date: no misread dates (no "have no date in column 'Created at'" error), lines
    assert result.bad_row_count == 0
    assert con.execute("SELECT order_id, amount FROM staged_orders ORDER BY 1").fetchall() == [
        ("#1", Decimal("40.00")), ("#2", Decimal("20.00"))]


def _consent(tmp_path: Path, *orders: list[dict[str, str]]) -> list[tuple[str, str]]:
    (tmp_path / "orders_export.csv").write_text(export(*orders))
    con = duckdb.connect()
    FileSource(FileSourceConfig(orders="orders_export.csv", preset="shopify_orders_csv"), tmp_path).pull(con)
    return con.execute("SELECT email, marketing_consent FROM staged_contacts").fetchall()


def test_a_withdrawal_on_the_same_date_as_a_yes_wins(tmp_path):
    t = "2025-06-01 10:00:00 -0400"
    for first, second in (("no", "yes"), ("yes", "no")):  # newest first or oldest first: a tie either way
        assert _consent(tmp_path, order("#1002", "ann@example.com", "paid", t, "20.00", [("1", "Hat", "20.00", "H")],
                                        consent=first),
                        order("#1001", "ann@example.com", "paid", t, "10.00", [("1", "Cap", "10.00", "C")],
                              consent=second)) == [("ann@example.com", "no")]


def test_a_withdrawal_on_a_row_without_a_readable_date_is_not_overridden_by_a_dated_yes(tmp_path):
    for when in ("", "06/01/2025 10:00"):
        assert _consent(tmp_path, order("#1001", "ann@example.com", "paid", "2025-05-01 10:00:00 -0400", "10.00",
                                        [("1", "Cap", "10.00", "C")], consent="yes"),
                        order("#1002", "ann@example.com", "paid", when, "20.00", [("1", "Hat", "20.00", "H")],
                              consent="no")) == [("ann@example.com", "no")]


def test_a_further_row_with_another_customers_email_or_another_date_is_a_bad_row_not_a_line(tmp_path):
    for field, value, shown in (("Email", "zed@example.com", "e-mail zed@example.com"),
                                ("Created at", "2025-07-09 12:00:00 -0400", "date ")):
        rows = order("#1001", "ann@example.com", "paid", "2025-05-01 10:00:00 -0400", "35.00",
                     [("1", "Cap", "10.00", "CAP"), ("2", "Sock", "10.00", "SO")])
        rows[1][field] = value
        (tmp_path / "o.csv").write_text(export(rows))
        con = duckdb.connect()
        result = FileSource(FileSourceConfig(orders="o.csv", preset="shopify_orders_csv"), tmp_path).pull(con)
        assert [(Path(b.source).name, b.row, b.field) for b in result.bad_rows] == [("o.csv", 3, "order_id")]
        assert shown in result.bad_rows[0].value and "differs from the order's first row" in result.bad_rows[0].reason
        assert con.execute("SELECT email FROM staged_contacts").fetchall() == [("ann@example.com",)]
        assert con.execute("SELECT count(*) FROM staged_line_items").fetchone()[0] == 1


def test_an_export_split_in_the_middle_of_an_order_keeps_the_order(tmp_path):
    rows = order("#1001", "ann@example.com", "paid", "2025-05-01 10:00:00 -0400", "35.00",
                 [("1", "Cap", "10.00", "CAP"), ("2", "Sock", "10.00", "SO"), ("1", "Hat", "5.00", "HAT")])
    (tmp_path / "p_a.csv").write_text(export(rows[:1]))
    (tmp_path / "p_b.csv").write_text(export(rows[1:], order("#1000", "bob@example.com", "paid",
                                                             "2025-04-01 10:00:00 -0400", "5.00",
                                                             [("1", "Pen", "5.00", "PEN")])))
    con = duckdb.connect()
    result = FileSource(FileSourceConfig(orders="p_*.csv", preset="shopify_orders_csv"), tmp_path).pull(con)
    assert result.bad_rows == [] and result.duplicate_orders == 0
    assert con.execute("SELECT order_id, amount FROM staged_orders ORDER BY 1").fetchall() == [
        ("#1000", Decimal("5.00")), ("#1001", Decimal("35.00"))]
    assert con.execute("SELECT count(*) FROM staged_line_items WHERE order_id = '#1001'").fetchone()[0] == 3
    assert not any("appear again" in line for line in result.warnings)


def test_an_order_whose_only_rows_have_no_total_is_still_bad_rows(tmp_path):
    rows = order("#1001", "ann@example.com", "paid", "2025-05-01 10:00:00 -0400", "35.00",
                 [("1", "Cap", "10.00", "CAP"), ("2", "Sock", "10.00", "SO")])
    (tmp_path / "o.csv").write_text(export(rows[1:]))
    result = FileSource(FileSourceConfig(orders="o.csv", preset="shopify_orders_csv"), tmp_path).pull(duckdb.connect())
    assert [(b.row, b.field) for b in result.bad_rows] == [(2, "amount")]


def test_rows_without_a_name_are_orders_of_their_own_none_replaced_by_another(tmp_path):
    # a Name lost (a cell cleared by hand): such rows are no order id repeated, each is read as an order of its
    # own, as in any export (before, every one but the last was dropped as "appearing again further on")
    rows = [order(f"#{n}", f"{who}@example.com", "paid", "2025-05-01 10:00:00 -0400", total,
                  [("1", "Cap", total, "CAP")])[0] for n, who, total in ((1, "ann", "10.00"), (2, "bob", "20.00"))]
    for row in rows:
        row["Name"] = ""
    result, con = pull(tmp_path, SHOP + export(rows).split("\n", 1)[1])
    assert result.bad_row_count == 0 and result.duplicate_orders == 0 and result.orders == 11
    assert con.execute("SELECT customer_id, amount FROM staged_orders WHERE order_id NOT LIKE '#%' ORDER BY 2"
                       ).fetchall() == [("ann@example.com", Decimal("10.00")), ("bob@example.com", Decimal("20.00"))]
    assert not any("appear again" in line for line in result.warnings)


def test_a_line_row_whose_first_row_is_in_another_file_names_that_file(tmp_path):
    # exports split mid-order: each order's first row in p_a.csv, its further rows in p_b.csv
    other = order("#1000", "bob@example.com", "paid", "2025-04-01 10:00:00 -0400", "5.00", [("1", "Pen", "5.00", "P")])
    bad = order("#1001", "ann@example.com", "paid", "2025-05-01 10:00:00 -0400", "n/a",
                [("1", "Cap", "10.00", "CAP"), ("2", "Sock", "10.00", "SO")])
    clash = order("#1002", "cy@example.com", "paid", "2025-05-02 10:00:00 -0400", "20.00",
                  [("1", "Hat", "10.00", "HAT"), ("1", "Mug", "10.00", "MUG")])
    clash[1]["Email"] = "zed@example.com"  # a row of another customer's order given the same Name
    (tmp_path / "p_a.csv").write_text(export(other, bad[:1], clash[:1]))
    (tmp_path / "p_b.csv").write_text(export(bad[1:], clash[1:]))
    result = FileSource(FileSourceConfig(orders="p_*.csv", preset="shopify_orders_csv"), tmp_path).pull(
        duckdb.connect())
    a = str(tmp_path / "p_a.csv")
    assert [(Path(b.source).name, b.row, b.field) for b in result.bad_rows] == [
        ("p_a.csv", 3, "amount"), ("p_b.csv", 2, "amount"), ("p_b.csv", 3, "order_id")]
    assert result.bad_rows[1].reason == (f"a line item of order '#1001', whose first row (row 3 of {a}) is a bad row:"
                                         " unparseable or empty amount")
    assert result.bad_rows[2].value == f"#1002: e-mail zed@example.com, not cy@example.com (row 4 of {a})"


def test_an_e_mail_on_a_further_row_of_an_order_identified_by_phone_is_not_the_orders(tmp_path):
    # Shopify repeats the order's own Email on each of its rows: a POS order without one has none on any row. A
    # further row with an e-mail is then not a row of that order as exported: it is listed (its item left out),
    # the order stays its phone customer's, and the e-mail is given to nobody (nor the order's consent)
    rows = order("#1001", "", "paid", "2025-05-01 10:00:00 -0400", "35.00",
                 [("1", "Cap", "10.00", "CAP"), ("2", "Sock", "12.50", "SO")], phone="+1 415 555 0199")
    rows[1]["Email"] = "zed@example.com"
    result, con = pull(tmp_path, export(rows))
    assert [(b.row, b.field, b.value) for b in result.bad_rows] == [
        (3, "order_id", "#1001: e-mail zed@example.com, where the order's first row has none (row 2)")]
    assert con.execute("SELECT order_id, customer_id, amount FROM staged_orders").fetchall() == [
        ("#1001", "+14155550199", Decimal("35.00"))]
    assert con.execute("SELECT email, phone, marketing_consent FROM staged_contacts").fetchall() == [
        (None, "+14155550199", "yes")]
