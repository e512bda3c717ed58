"""store30: an XLSX cell merged over several line rows (a customer written once beside a receipt's lines) is each
row's value; a blank cell that is not merged stays blank (a bad row). Built with openpyxl's merge_cells, a real
merged range in the sheet's XML."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import openpyxl

from connectors.files import FileSource, FileSourceConfig

COLS = {"order_id": "Чек", "customer_id": "Клиент", "ordered_at": "Дата", "amount": "Сумма", "sku": "Товар"}


def _pull(folder: Path):
    con = duckdb.connect()
    result = FileSource(FileSourceConfig(type="file", orders="orders.xlsx", columns=COLS), folder).pull(con)
    orders = con.execute("SELECT order_id, customer_id, ordered_at::DATE::VARCHAR, amount FROM staged_orders"
                         " ORDER BY order_id").fetchall()
    return result, orders


def test_a_customer_merged_over_a_receipts_lines_fills_them_and_a_blank_cell_stays_blank(tmp_path):
    """The customer and the date merged over receipt 1's three lines made its second and third lines bad rows
    ("no customer id") and the receipt 100 instead of 160. Only merged ranges fill: the blank customer of row 8 is
    a bad row still; a title merged above the header, and a range merged across columns, fill nothing else."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Продажи за январь 2024"])
    ws.merge_cells("A1:E2")  # a title over two rows: above the header, filled into nothing
    ws.append([])
    ws.append(["Чек", "Клиент", "Дата", "Сумма", "Товар"])  # row 3
    ws.append([1, "c1", "05.01.2024", 100, "A"])  # row 4: c1 and the date merged down to row 6
    ws.append([1, None, None, 40, "B"])
    ws.append([1, None, None, 20, "C"])
    ws.append([2, "c2", "06.01.2024", 70, "D"])  # row 7
    ws.append([3, None, "06.01.2024", 30, "E"])  # row 8: blank, not merged
    ws.append([4, "c3", "07.01.2024", 10, "F"])  # row 9: the customer merged across to the date's column
    ws.merge_cells("B4:B6")
    ws.merge_cells("C4:C6")
    ws.merge_cells("B9:C9")
    wb.save(tmp_path / "orders.xlsx")
    result, orders = _pull(tmp_path)
    assert orders == [("1", "c1", "2024-01-05", Decimal("160.00")), ("2", "c2", "2024-01-06", Decimal("70.00"))]
    assert [(b.row, b.field) for b in result.bad_rows] == [(8, "customer_id"), (9, "ordered_at")]


def test_a_receipt_total_merged_over_its_lines_is_not_copied_onto_each_line(tmp_path):
    """fixst30 (review of store30): an amount cell merged over a receipt's three line rows (a receipt total written
    once beside its lines) was filled down like a customer: 160 on each line, the receipt 480 without a word. A
    number column's merged cell (amount, discount, quantity, price) is never filled: the receipt is its first
    line's 160, and its lines without an amount are bad rows naming the field, as before store30; the customer
    merged beside it still fills."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Чек", "Клиент", "Дата", "Сумма", "Товар"])
    ws.append([1, "c1", "05.01.2024", 160, "A"])
    ws.append([1, None, "05.01.2024", None, "B"])
    ws.append([1, None, "05.01.2024", None, "C"])
    ws.append([2, "c2", "06.01.2024", 70, "D"])
    ws.merge_cells("D2:D4")
    ws.merge_cells("B2:B4")
    wb.save(tmp_path / "orders.xlsx")
    result, orders = _pull(tmp_path)
    assert orders == [("1", "c1", "2024-01-05", Decimal("160.00")), ("2", "c2", "2024-01-06", Decimal("70.00"))]
    assert [(b.row, b.field) for b in result.bad_rows] == [(3, "amount"), (4, "amount")]


def test_a_line_under_a_merged_total_is_named_as_such_not_as_an_empty_amount(tmp_path):
    """file31: the lines under a receipt total merged over them were bad rows saying "unparseable or empty amount"
    (the user sees 160 beside each of them in Excel): the reason says the amount lies in a merged cell whose value
    is on another row, naming the sheet and the cells; a blank amount that is not merged (row 7), and one merged
    with an empty first cell (rows 8-9: no value to name), are empty amounts still."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Чеки"
    ws.append(["Отчёт"])  # a title row above the header
    ws.append(["Чек", "Клиент", "Дата", "Сумма", "Товар"])  # row 2
    ws.append([1, "c1", "05.01.2024", 160, "A"])  # row 3: the total merged down to row 5
    ws.append([1, "c1", "05.01.2024", None, "B"])
    ws.append([1, "c1", "05.01.2024", None, "C"])
    ws.append([2, "c2", "06.01.2024", 70, "D"])
    ws.append([3, "c3", "06.01.2024", None, "E"])  # row 7: blank, not merged
    ws.append([4, "c4", "07.01.2024", None, "F"])  # rows 8-9: merged, both empty
    ws.append([4, "c4", "07.01.2024", None, "G"])
    ws.merge_cells("D3:D5")
    ws.merge_cells("D8:D9")
    wb.save(tmp_path / "orders.xlsx")
    result, orders = _pull(tmp_path)
    assert orders == [("1", "c1", "2024-01-05", Decimal("160.00")), ("2", "c2", "2024-01-06", Decimal("70.00"))]
    path = tmp_path / "orders.xlsx"
    merged = ("its amount lies in a merged cell (sheet 'Чеки', cells D3:D5) whose value is on row 3: the row has no "
              "amount of its own (write each line's amount, or unmerge the cells, to count it)")
    assert [str(b) for b in result.bad_rows] == [
        f"{path}, row 4: amount: {merged}", f"{path}, row 5: amount: {merged}",
        *(f"{path}, row {row}: amount: unparseable or empty amount" for row in (7, 8, 9))]
