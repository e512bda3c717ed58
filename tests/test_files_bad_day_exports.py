"""XLSX and Parquet exports on a bad day: serial dates, numbers stored as text with a comma, a merged title row, a
hidden or an empty first sheet, number cells of three decimals; Parquet DECIMAL, dictionary-encoded and INT96
columns. Each is read right or refused naming the file, the sheet, the row or the column (the workbooks and Parquet
files are built here, a few kB each)."""

from __future__ import annotations

import datetime as dt
import tomllib
from decimal import Decimal
from pathlib import Path

import duckdb
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.errors import BadFileError
from connectors.files import FileSource, FileSourceConfig
from tests.builders import run_cli

H = ["Чек", "Клиент", "Дата", "Сумма"]
COLS = {"order_id": "Чек", "customer_id": "Клиент", "ordered_at": "Дата", "amount": "Сумма"}


def pull(folder: Path, name: str, **cfg):
    con = duckdb.connect()
    result = FileSource(FileSourceConfig(type="file", orders=name, columns=COLS, **cfg), folder).pull(con)
    rows = con.execute("SELECT order_id, customer_id, ordered_at::DATE::VARCHAR, amount FROM staged_orders"
                       " ORDER BY order_id::INT").fetchall()
    return result, rows


def workbook(path: Path, *sheets: tuple[str, list[list], str]) -> Path:
    """A workbook of ``sheets`` (title, rows, state: visible or hidden), the first visible one active."""
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for title, rows, state in sheets:
        ws = wb.create_sheet(title)
        for r in rows:
            ws.append(r)
        ws.sheet_state = state
    wb.active = next(i for i, (_, _, state) in enumerate(sheets) if state == "visible")
    wb.save(path)
    return path


SALES = [H, [1, "c1", "05.01.2024", 100], [2, "c2", "06.01.2024", "1 234,50"]]


def test_serial_dates_text_numbers_with_a_comma_and_a_merged_title_row_are_read(tmp_path):
    """A guard of what already worked: serial day numbers in General cells (and as text), amounts typed as text in
    a comma locale beside number cells, the header below a merged title and a blank row."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Отчёт о продажах за январь 2024"])
    ws.merge_cells("A1:D1")
    ws.append([])
    ws.append(H)
    for row in ([1, "c1", 45296, "1 234,50"], [2, "c2", 45297.75, "12,5"], [3, "c3", "45298", 99.9],
                [4, "c4", dt.datetime(2024, 1, 9, 10), "1,500"]):
        ws.append(row)
    wb.save(tmp_path / "report.xlsx")
    result, rows = pull(tmp_path, "report.xlsx")
    assert result.bad_row_count == 0
    assert rows == [("1", "c1", "2024-01-05", Decimal("1234.50")), ("2", "c2", "2024-01-06", Decimal("12.50")),
                    ("3", "c3", "2024-01-07", Decimal("99.90")), ("4", "c4", "2024-01-09", Decimal("1.50"))]


def test_a_hidden_first_sheet_is_not_read_as_the_orders(tmp_path):
    """A hidden first sheet (a lookup table, last month's rows kept out of sight) with the same headers: before,
    the reader read it (the first sheet), the rows the user sees left out without a word. Now the first visible
    sheet is read; `sheet` set to the hidden one still reads it."""
    workbook(tmp_path / "orders.xlsx", ("Старое", [H, [9, "old", "05.12.2023", 1]], "hidden"),
             ("Продажи", SALES, "visible"))
    result, rows = pull(tmp_path, "orders.xlsx")
    assert [r[:2] for r in rows] == [("1", "c1"), ("2", "c2")] and rows[1][3] == Decimal("1234.50")
    _, rows = pull(tmp_path, "orders.xlsx", sheet="Старое")
    assert rows == [("9", "old", "2023-12-05", Decimal("1.00"))]


def test_an_empty_first_sheet_is_passed_over(tmp_path):
    """An empty first sheet before the data: before, the read stopped with 'mapped column(s) not found … Columns in
    the file: ' (none); now the first sheet holding a value is read. A workbook of empty sheets only is refused
    naming the sheet read and the others."""
    workbook(tmp_path / "orders.xlsx", ("Лист1", [], "visible"), ("Продажи", SALES, "visible"))
    result, rows = pull(tmp_path, "orders.xlsx")
    assert result.bad_row_count == 0 and [r[0] for r in rows] == ["1", "2"]
    workbook(tmp_path / "orders.xlsx", ("Лист1", [], "visible"), ("Лист2", [], "visible"))
    with pytest.raises(Exception) as e:
        pull(tmp_path, "orders.xlsx")
    assert f"{tmp_path / 'orders.xlsx'}: mapped column(s) not found" in str(e.value)
    assert "(sheet 'Лист1'; the workbook's sheets: 'Лист1', 'Лист2'" in str(e.value)


def test_number_cells_of_three_decimals_are_numbers_not_thousands(tmp_path):
    """A price cell holding the number 123.456: its text `123.456` was an ambiguous `1.234` that a money column
    with no other say reads as thousands (123 456.00, silently). A cell's number has no locale: it reads as it is."""
    rows_in = [H, [1, "c1", "05.01.2024", 123.456], [2, "c2", "05.01.2024", 150.0],
               [3, "c3", "05.01.2024", 12.345]]
    workbook(tmp_path / "orders.xlsx", ("Продажи", rows_in, "visible"))
    result, rows = pull(tmp_path, "orders.xlsx")
    assert result.bad_row_count == 0
    assert [r[3] for r in rows] == [Decimal("123.46"), Decimal("150.00"), Decimal("12.35")]


def test_number_cells_of_an_id_column_keep_their_text_only_number_columns_are_rewritten(tmp_path):
    """Receipt and customer codes typed as numbers with three decimals (2024.015, 77.125): the number columns'
    rewriting (`123.456` → `123.4560`) made them `2024.0150` and `77.1250`, other ids than the same codes in a
    CSV or the clients file. Only the mapped number fields (amount, price, discount, quantity) are rewritten."""
    workbook(tmp_path / "orders.xlsx", ("Продажи", [H, [2024.015, 77.125, "05.01.2024", 123.456]], "visible"))
    result, rows = pull(tmp_path, "orders.xlsx")
    assert result.bad_row_count == 0
    assert rows == [("2024.015", "77.125", "2024-01-05", Decimal("123.46"))]


def _parquet(path: Path, amounts: pa.Array, dates: pa.Array | None = None, **kw) -> Path:
    n = len(amounts)
    dates = dates if dates is not None else pa.array([dt.datetime(2024, 1, 5, 10)] * n, pa.timestamp("us"))
    ids = [str(i) for i in range(1, n + 1)]
    pq.write_table(pa.table({"Чек": ids, "Клиент": [f"c{i}" for i in ids], "Дата": dates, "Сумма": amounts}), path,
                   **kw)
    return path


@pytest.mark.parametrize("decimal", [None, ","])
def test_parquet_decimal_amounts_of_three_places_are_numbers_not_thousands(tmp_path, decimal):
    """A DECIMAL(18,3) amount column of 150.000 and 85.000 (a shop's prices, three places): read as text, they were
    ambiguous `1.234` values and a money column reads those as thousands: 150 000.00 and 85 000.00, silently (and so
    with `decimal = ","` set, which says how a file's text writes numbers, not how Parquet stores them). A number
    column is read as the number it holds; so is a DOUBLE's 123.456."""
    three = [Decimal("150.000"), Decimal("85.000"), Decimal("12.345")]
    _parquet(tmp_path / "orders.parquet", pa.array(three, pa.decimal128(18, 3)))
    _, rows = pull(tmp_path, "orders.parquet", **({"decimal": decimal} if decimal else {}))
    assert [r[3] for r in rows] == [Decimal("150.00"), Decimal("85.00"), Decimal("12.35")]
    _parquet(tmp_path / "orders.parquet", pa.array([123.456, 12.345]))
    _, rows = pull(tmp_path, "orders.parquet", **({"decimal": decimal} if decimal else {}))
    assert [r[3] for r in rows] == [Decimal("123.46"), Decimal("12.35")]


def test_parquet_dictionary_encoded_amounts_are_read_and_int96_dates_refused_naming_the_column(tmp_path):
    """Guards: a dictionary-encoded amount column (numbers, or a locale's text) reads as a plain one; INT96
    timestamps (no zone) are refused naming the file and the column."""
    _parquet(tmp_path / "orders.parquet", pa.array([Decimal("150.00"), Decimal("85.00"), Decimal("150.00")],
                                                   pa.decimal128(18, 2)).dictionary_encode())
    _, rows = pull(tmp_path, "orders.parquet")
    assert [r[3] for r in rows] == [Decimal("150.00"), Decimal("85.00"), Decimal("150.00")]
    _parquet(tmp_path / "orders.parquet", pa.array(["1 234,50", "1,500", "1 234,50"]).dictionary_encode())
    _, rows = pull(tmp_path, "orders.parquet")
    assert [r[3] for r in rows] == [Decimal("1234.50"), Decimal("1.50"), Decimal("1234.50")]
    _parquet(tmp_path / "orders.parquet", pa.array([1.5, 2.5]), use_deprecated_int96_timestamps=True)
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, "orders.parquet")
    assert str(e.value).startswith(f"{tmp_path / 'orders.parquet'}: column 'Дата' (ordered_at) holds INT96 "
                                   f"timestamps")


def test_init_finds_the_header_below_a_merged_title_and_reads_the_sheet_the_reader_reads(tmp_path):
    """`init` took a workbook's first row for its header (a merged title: 'cannot tell which column is the order
    date', exit 2, where the reader finds the header below it) and guessed from the active sheet, while the reader
    read the first one (a hidden sheet's headers: check failed on the config init had just written)."""
    rows = [[i, f"c{i % 7}", dt.datetime(2024, 1, 1 + i % 28, 10), 100.5 + i] for i in range(1, 40)]
    titled = workbook(tmp_path / "titled.xlsx", ("Отчёт", [["Отчёт о продажах за январь"], [], H, *rows], "visible"))
    hidden = workbook(tmp_path / "hidden.xlsx", ("Справочник", [["Код", "Название"], [9, "x"]], "hidden"),
                      ("Продажи", [H, *rows], "visible"))
    for export in (titled, hidden):
        cfg = tmp_path / f"{export.stem}.toml"
        out = run_cli("init", str(export), "-o", str(cfg)).output
        assert "source file: 39 orders" in out and "0 bad rows" in out
        assert tomllib.loads(cfg.read_text(encoding="utf-8"))["source"]["columns"]["amount"] == "Сумма"


def _contacts(tmp_path: Path, lines: list[str]):
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    con = duckdb.connect()
    cols = {"order_id": "order_id", "customer_id": "customer", "email": "email", "ordered_at": "date",
            "amount": "amount", "marketing_consent": "consent"}
    result = FileSource(FileSourceConfig(type="file", orders="a.csv", columns=cols), tmp_path).pull(con)
    contacts = con.execute("SELECT customer_id, email, marketing_consent FROM staged_contacts ORDER BY 1").fetchall()
    return result, contacts


def test_a_second_exports_header_row_is_a_bad_row_and_makes_no_contact(tmp_path):
    """Two exports concatenated (`cat a.csv b.csv`): the second header row was a bad row (no date), yet its
    `customer` cell became a contact named `customer`, `consent` read as no: a bad row now gives no contact."""
    head = "order_id;customer;email;date;amount;consent"
    result, contacts = _contacts(tmp_path, [head, "1;c1;a@x.com;05.01.2024;1 200,50;да",
                                            "2;c2;b@x.com;06.01.2024;300,00;да", head,
                                            "3;c1;a@x.com;07.01.2024;100,00;да"])
    assert result.orders == 3 and result.bad_row_count == 1 and result.bad_rows[0].row == 4
    assert contacts == [("c1", "a@x.com", "yes"), ("c2", "b@x.com", "yes")]


def test_a_bad_row_gives_a_customer_no_value_but_a_withdrawn_consent_still_counts(tmp_path):
    """A bad row (its amount unreadable) of a known customer: its e-mail is not the customer's (a row the reader
    could not read says nothing certain), but a consent withdrawn on it is still the latest word: no subscription."""
    result, contacts = _contacts(tmp_path, ["order_id;customer;email;date;amount;consent",
                                            "1;c1;a@x.com;05.01.2024;10,00;да", "2;c2;b@x.com;05.01.2024;10,00;да",
                                            "3;c1;new@x.com;06.01.2024;n/a;да", "4;c2;;06.01.2024;n/a;нет"])
    assert result.orders == 2 and result.bad_row_count == 2
    assert contacts == [("c1", "a@x.com", "yes"), ("c2", "b@x.com", "no")]


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_an_epoch_ms_date_column_is_told_as_unix_timestamps_not_a_date_format_to_set(tmp_path, suffix):
    """store30: a date column of Unix milliseconds (an INT64 Parquet column, a CSV's numbers) was told "set [source]
    date_format (a strptime format such as ...)", which reads no number. The error says what they are, the instant
    the first one is, and how to write them."""
    stamps = [1704448800000, 1704535200000]
    path = tmp_path / f"orders.{suffix}"
    if suffix == "parquet":
        _parquet(path, pa.array([10.0, 20.0]), pa.array(stamps, pa.int64()))
    else:
        path.write_text(",".join(H) + "\n" + "".join(f"{i},c{i},{s},10\n" for i, s in enumerate(stamps)),
                        encoding="utf-8")
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, path.name)
    assert str(e.value) == (
        f"{path}: 2 of 2 rows have Unix timestamps in column 'Дата' (e.g. '1704448800000', '1704535200000': "
        "milliseconds since 1970-01-01 UTC; 1704448800000 is 2024-01-05 10:00:00 UTC), which no date_format reads "
        "(it reads dates written as text); write the column as a timestamp (in Parquet a timestamp type, e.g. "
        "pandas' pd.to_datetime(column, unit=\"ms\", utc=True) before to_parquet) or the dates as text "
        "(2024-01-05 10:00:00+00:00)")


@pytest.mark.parametrize(("stamps", "told"), [
    (["4601234567890", "4607001234567"], None),  # EAN-13 barcodes: "milliseconds" of 2115
    (["9161234567", "9031234567"], None),  # 10-digit phones: "seconds" of 2260
    (["1704448800000000000", "1704535200000000000"], "nanoseconds since 1970-01-01 UTC; 1704448800000000000 is "
                                                     "2024-01-05 10:00:00 UTC"),
])
def test_only_numbers_of_a_plausible_date_are_told_as_unix_timestamps(tmp_path, stamps, told):
    """fixst30 (review of store30): the Unix-timestamp message took any 10 or 13 digits for one (a column of
    barcodes was "milliseconds … 2115-10-23", one of phones "seconds … 2260"). Only timestamps of 1990 to a year
    from now are told so, nanoseconds (19 digits) too; other numbers are numbers that are no date: check the
    column mapped to ordered_at."""
    path = tmp_path / "orders.csv"
    path.write_text(",".join(H) + "\n" + "".join(f"{i},c{i},{s},10\n" for i, s in enumerate(stamps)),
                    encoding="utf-8")
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, path.name)
    examples = f"'{stamps[0]}', '{stamps[1]}'"
    if told:
        assert str(e.value).startswith(f"{path}: 2 of 2 rows have Unix timestamps in column 'Дата' (e.g. "
                                       f"{examples}: {told}), which no date_format reads")
        assert 'unit="ns"' in str(e.value)
    else:
        assert str(e.value) == (
            f"{path}: 2 of 2 rows have a number that is no date in column 'Дата' (e.g. {examples}: no date format "
            "reads it, nor is it a Unix timestamp of 1990 to a year from now); check the column mapped to ordered_at")


def test_an_int96_cancelled_at_is_read_only_whether_it_holds_a_date_counts(tmp_path):
    """store30, a guard: an INT96 `cancelled_at` column is read, not refused as an INT96 order date is: a date there
    only marks its order cancelled (its time is neither stored nor compared), so its zone, which INT96 does not
    say, cannot move anything."""
    pq.write_table(pa.table({"Чек": ["1", "2"], "Клиент": ["c1", "c2"], "Дата": ["05.01.2024", "06.01.2024"],
                             "Сумма": [10.0, 20.0], "Отмена": pa.array([dt.datetime(2024, 1, 6, 23, 30), None],
                                                                        pa.timestamp("us"))}),
                   tmp_path / "orders.parquet", use_deprecated_int96_timestamps=True)
    assert duckdb.sql(f"SELECT type FROM parquet_schema('{tmp_path / 'orders.parquet'}') WHERE name = 'Отмена'"
                      ).fetchall() == [("INT96",)]
    con = duckdb.connect()
    FileSource(FileSourceConfig(type="file", orders="orders.parquet", columns={**COLS, "cancelled_at": "Отмена"}),
               tmp_path).pull(con)
    assert con.execute("SELECT order_id, status FROM staged_orders ORDER BY 1").fetchall() == [
        ("1", "cancelled"), ("2", "completed")]
