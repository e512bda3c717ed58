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
