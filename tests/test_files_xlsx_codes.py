"""An XLSX export's customer codes stored as numbers in a cell formatted ``000000`` are read as the sheet shows
them (``000120``), so they match the same codes written as text in a clients file, a CSV or a CRM
(connectors.file_readers.read_xlsx)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import openpyxl

from connectors.files import FileSource, FileSourceConfig

D = Decimal("400.50")
COLS = {"order_id": "Чек", "customer_id": "Код клиента", "ordered_at": "Дата", "amount": "Сумма"}


def pull(folder: Path, **cfg):
    con = duckdb.connect()
    return FileSource(FileSourceConfig(type="file", columns=COLS, **cfg), folder).pull(con), con


def test_codes_formatted_with_leading_zeros_match_the_clients_file(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Чек", "Код клиента", "Дата", "Сумма"])
    rows = [(1, 120, "000000"), (2, 121, "000000"), (3, 120.0, "000000"), (4, 1234567, "000000"),
            (5, 122, "General"), (6, 7, "0")]
    for oid, code, fmt in rows:
        ws.append([oid, code, "2026-11-05", 400.5])
        ws.cell(ws.max_row, 2).number_format = fmt
    ws.cell(ws.max_row, 4).number_format = "000"  # an amount of 400.5 shown "401": the value is kept
    wb.save(tmp_path / "orders.xlsx")
    (tmp_path / "clients.csv").write_text("Код клиента;Email\n000120;a@mail.ru\n000121;b@mail.ru\n",
                                          encoding="utf-8")
    result, con = pull(tmp_path, orders="orders.xlsx", contacts="clients.csv",
                       contact_columns={"customer_id": "Код клиента", "email": "Email"})
    assert result.bad_row_count == 0
    assert con.execute("SELECT order_id, customer_id, amount FROM staged_orders ORDER BY 1").fetchall() == [
        ("1", "000120", D), ("2", "000121", D), ("3", "000120", D), ("4", "1234567", D),
        ("5", "122", D), ("6", "7", D)]
    # one contact per code: the clients file's e-mails reach the customers of the orders
    assert con.execute("SELECT customer_id, email FROM staged_contacts WHERE email IS NOT NULL ORDER BY 1"
                       ).fetchall() == [("000120", "a@mail.ru"), ("000121", "b@mail.ru")]
    assert con.execute("SELECT count(*) FROM staged_contacts").fetchall() == [(5,)]


def test_a_zero_format_written_in_single_quotes_is_found(tmp_path):
    """``formatCode='000000'`` (and spaces around ``=``) is as valid XML as Excel's double quotes."""
    import re
    import zipfile

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Чек", "Код клиента", "Дата", "Сумма"])
    ws.append([1, 120, "2026-11-05", 400.5])
    ws.cell(2, 2).number_format = "000000"
    wb.save(tmp_path / "excel.xlsx")
    with zipfile.ZipFile(tmp_path / "excel.xlsx") as zin, \
            zipfile.ZipFile(tmp_path / "orders.xlsx", "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "xl/styles.xml":
                data, n = re.subn(rb'formatCode="([^"]*)"', rb"formatCode = '\1'", data)
                assert n
            zout.writestr(item, data)
    assert openpyxl.load_workbook(tmp_path / "orders.xlsx", read_only=True).active["B2"].number_format == "000000"
    _, con = pull(tmp_path, orders="orders.xlsx")
    assert con.execute("SELECT customer_id FROM staged_orders").fetchall() == [("000120",)]


def test_codes_excel_turned_into_numbers_are_named_with_both_files(tmp_path):
    """Cells formatted General: the codes 120 and 121 lost their zeros and cannot be told from numbers; they stay
    as read, and a warning names both files and counts the ids that match only without their zeros (before: the
    clients file's e-mails reached nobody, and nothing said so)."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Чек", "Код клиента", "Дата", "Сумма"])
    for oid, code in ((1, 120), (2, 121), (3, 120), (4, 555), (5, "000777")):
        ws.append([oid, code, "2026-11-05", 400.5])
    wb.save(tmp_path / "orders.xlsx")
    (tmp_path / "clients.csv").write_text("Код клиента;Email\n000120;a@mail.ru\n000121;b@mail.ru\n00555x;c@mail.ru\n"
                                          "000777;d@mail.ru\n", encoding="utf-8")
    result, con = pull(tmp_path, orders="orders.xlsx", contacts="clients.csv",
                       contact_columns={"customer_id": "Код клиента", "email": "Email"})
    assert con.execute("SELECT DISTINCT customer_id FROM staged_orders ORDER BY 1").fetchall() == [
        ("000777",), ("120",), ("121",), ("555",)]
    (warning,) = result.warnings
    assert warning.startswith(f"2 customer ids in {tmp_path / 'clients.csv'} ('000120', …) match ids in "
                              f"{tmp_path / 'orders.xlsx'} ('120', …) only once their leading zeros are dropped: ")
    assert "format that column as text (or 000000)" in warning


def test_codes_without_their_zeros_in_one_file(tmp_path):
    """Both forms in one CSV (some rows typed by hand, some pasted from Excel): named once, as the file's. Codes
    that are not all digits, or only zeros, make no such pair."""
    (tmp_path / "orders.csv").write_text(
        "Чек;Код клиента;Дата;Сумма\n1;000120;2026-11-05;400\n2;120;2026-11-05;400\n3;A0120;2026-11-05;400\n"
        "4;0;2026-11-05;400\n5;0120;2026-11-05;400\n6;A120;2026-11-05;400\n7;00;2026-11-05;400\n", encoding="utf-8")
    (warning,) = pull(tmp_path, orders="orders.csv")[0].warnings
    assert warning.startswith(f"2 customer ids in {tmp_path / 'orders.csv'} ('000120', …) match other ids in it "
                              "('120', …) only once their leading zeros are dropped: they are read as other customers")
    (tmp_path / "orders.csv").write_text("Чек;Код клиента;Дата;Сумма\n1;000120;2026-11-05;400\n"
                                         "2;A120;2026-11-05;400\n3;0;2026-11-05;400\n", encoding="utf-8")
    assert pull(tmp_path, orders="orders.csv")[0].warnings == []
