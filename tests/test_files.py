"""File connector: small export files written into tmp_path, read through FileSource.pull."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from connectors.errors import BadFileError, ConfigError
from connectors.file_staging import FilePullResult
from connectors.files import FileSource, FileSourceConfig
from connectors.http import to_decimal
from connectors.presets import PRESETS
from tests.builders import run_cli

UTC = dt.timezone.utc
COLS = {"order_id": "Чек №", "customer_id": "Клиент", "ordered_at": "Дата", "amount": "Сумма",
        "status": "Статус", "email": "E-mail", "phone": "Телефон"}
HEADER = ["Чек №", "Клиент", "Дата", "Сумма", "Статус", "E-mail", "Телефон"]


def write_csv(path: Path, rows: list[list[str]], delim: str = ";", encoding: str = "utf-8") -> Path:
    path.write_bytes("\n".join(delim.join(r) for r in rows).encode(encoding) + b"\n")
    return path


def pull(tmp_path: Path, **cfg) -> tuple[FilePullResult, duckdb.DuckDBPyConnection]:
    cfg.setdefault("columns", COLS)
    cfg.setdefault("orders", "sales.csv")
    con = duckdb.connect()
    result = FileSource(FileSourceConfig(type="file", **cfg), tmp_path).pull(con)
    return result, con


def orders(con) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in con.execute("SELECT * FROM staged_orders ORDER BY order_id").fetchall()}


def contacts(con) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in con.execute("SELECT * FROM staged_contacts").fetchall()}


RU_ROWS = [HEADER,
           ["1", "c1", "02.01.2024 10:30", "1 234,50 сум", "Продажа", " Anna@Example.COM ", "90 123 45 67"],
           ["2", "c2", "03.01.2024", "1\u00a0000,00", "", "", "+998 33 123 45 67"],
           ["3", "c1", "04.01.2024 09:15:30", "12\u202f500,75 so'm", "оплачен", "", ""]]


@pytest.mark.parametrize("encoding,bom", [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("cp1251", b"")])
@pytest.mark.parametrize("delim", [";", ",", "\t"])
def test_encodings_and_delimiters_are_detected(tmp_path, encoding, bom, delim):
    rows = [[c.replace(",", ".") if delim == "," else c for c in r] for r in RU_ROWS]
    if delim == ",":  # with a comma delimiter the decimals are dots
        rows = [[c.replace(" ", "") if i == 3 else c for i, c in enumerate(r)] for r in rows]
    if encoding == "cp1251":  # cp1251 has U+00A0 but no U+202F
        rows = [[c.replace("\u202f", "\u00a0") for c in r] for r in rows]
    path = write_csv(tmp_path / "sales.csv", rows, delim, encoding)
    path.write_bytes(bom + path.read_bytes())
    result, con = pull(tmp_path, timezone="Asia/Tashkent", phone_region="UZ")
    assert result.bad_row_count == 0, result.bad_rows
    got = orders(con)
    assert got["1"][2] == Decimal("1234.50")
    assert got["2"][2] == Decimal("1000.00")
    assert got["3"][2] == Decimal("12500.75")
    assert got["1"][1] == dt.datetime(2024, 1, 2, 5, 30, tzinfo=UTC)  # 10:30 in Tashkent (UTC+5)
    assert got["2"][1] == dt.datetime(2024, 1, 2, 19, 0, tzinfo=UTC)
    assert got["3"][1] == dt.datetime(2024, 1, 4, 4, 15, 30, tzinfo=UTC)
    people = contacts(con)
    assert people["c1"][:2] == ("anna@example.com", "+998901234567")
    assert people["c2"][:2] == (None, "+998331234567")
    assert result.full_refresh and result.orders == 3 and result.contacts == 2


@pytest.mark.parametrize("text,expected", [
    ("1 234,50 ₸", "1234.50"), ("$12.5", "12.50"), ("1.234,56 руб.", "1234.56"), ("1,234.56 USD", "1234.56"),
    ("€7", "7.00"), ("150 000 so'm", "150000.00"), ("99,9 ₽", "99.90"), ("2\u202f000 UZS", "2000.00"),
])
def test_amounts_with_currency_and_separators(tmp_path, text, expected):
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a"], ["1", "x", "2024-01-01", text]], ";")
    result, con = pull(tmp_path, columns={"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"},
                       decimal="," if "," in text and "." not in text.replace("руб.", "") else None)
    assert result.bad_row_count == 0, result.bad_rows
    assert orders(con)["1"][2] == Decimal(expected)


def test_currency_symbol_sets_currency_and_config_currency_wins(tmp_path):
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a"], ["1", "x", "2024-01-01", "5 ₸"],
                                       ["2", "x", "2024-01-01", "7 сум"]])
    cols = {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"}
    _, con = pull(tmp_path, columns=cols)
    assert {k: v[3] for k, v in orders(con).items()} == {"1": "KZT", "2": "UZS"}
    _, con = pull(tmp_path, columns=cols, currency="usd")
    assert {v[3] for v in orders(con).values()} == {"USD"}


def test_iso_offsets_and_utc_default(tmp_path):
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a"], ["1", "x", "2024-03-01T10:00:00+03:00", "1"],
                                       ["2", "x", "2024-03-01 10:00", "1"], ["3", "x", "2024-03-01T10:00:00Z", "1"]])
    _, con = pull(tmp_path, columns={"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"})
    got = {k: v[1] for k, v in orders(con).items()}
    assert got == {"1": dt.datetime(2024, 3, 1, 7, tzinfo=UTC), "2": dt.datetime(2024, 3, 1, 10, tzinfo=UTC),
                   "3": dt.datetime(2024, 3, 1, 10, tzinfo=UTC)}


def test_dst_zone_uses_the_right_offset(tmp_path):
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a"], ["w", "x", "15.01.2024 12:00", "1"],
                                       ["s", "x", "15.07.2024 12:00", "1"]])
    _, con = pull(tmp_path, columns={"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"},
                  timezone="Europe/Berlin")
    got = {k: v[1] for k, v in orders(con).items()}
    assert got == {"w": dt.datetime(2024, 1, 15, 11, tzinfo=UTC), "s": dt.datetime(2024, 7, 15, 10, tzinfo=UTC)}


def test_bad_rows_are_reported_with_row_numbers_and_excluded(tmp_path):
    write_csv(tmp_path / "sales.csv", [
        HEADER,
        ["1", "c1", "02.01.2024", "100", "", "", ""],           # row 2: fine
        ["2", "c1", "31.02.2024", "100", "", "", ""],           # row 3: impossible date
        ["3", "c1", "02.01.2024", "сто", "", "", ""],           # row 4: amount
        ["4", "", "02.01.2024", "100", "", "", ""],             # row 5: no customer key at all
        ["5", "c2", "02.01.2024", "-50", "", "", ""],           # row 6: negative, not a refund
        ["6", "c2", "02.01.2024", "-50", "Возврат", "", ""],    # row 7: refund → stored as 50
        ["7", "c2", "02.01.2024", "10", "в пути", "", ""],      # row 8: unknown status
    ])
    result, con = pull(tmp_path)
    assert [(b.row, b.field, b.value) for b in result.bad_rows] == [
        (3, "ordered_at", "31.02.2024"), (4, "amount", "сто"), (5, "customer_id", None), (6, "amount", "-50"),
        (8, "status", "в пути")]
    assert result.bad_row_count == 5
    assert all(b.source == str(tmp_path / "sales.csv") for b in result.bad_rows)
    assert str(result.bad_rows[0]).startswith(f"{tmp_path / 'sales.csv'}, row 3: ordered_at: ")
    got = orders(con)
    assert set(got) == {"1", "6"}
    assert got["6"][2:5] == (Decimal("50.00"), None, "refunded")


def test_status_overrides_and_counting_is_exact(tmp_path):
    write_csv(tmp_path / "sales.csv", [HEADER,
                                       ["1", "c1", "02.01.2024", "10", "в пути", "", ""],
                                       ["2", "c1", "02.01.2024", "10", "Отменён клиентом", "", ""],
                                       ["3", "c1", "02.01.2024", "10", "weird", "", ""]])
    result, con = pull(tmp_path, statuses={"в пути": "completed"})
    assert [(b.row, b.field, b.value) for b in result.bad_rows] == [(4, "status", "weird")]
    assert {k: v[4] for k, v in orders(con).items()} == {"1": "completed", "2": "cancelled"}


def test_bad_row_list_is_capped_but_counted(tmp_path):
    rows = [["id", "c", "d", "a"]] + [[str(i), "x", "2024-01-02", "nope"] for i in range(1200)]  # bad amounts
    write_csv(tmp_path / "sales.csv", rows)
    result, _ = pull(tmp_path, columns={"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"})
    assert result.bad_row_count == 1200 and len(result.bad_rows) == 1000
    assert result.bad_rows[-1].row == 1001


def test_invalid_email_and_phone_become_null_and_are_reported(tmp_path):
    write_csv(tmp_path / "sales.csv", [HEADER, ["1", "c1", "02.01.2024", "1", "", "not-an-email", "12"],
                                       ["2", "c2", "02.01.2024", "1", "", "b@x.test", "90 123 45 67"]])
    result, con = pull(tmp_path, phone_region="UZ")
    assert result.bad_row_count == 0 and result.orders == 2
    assert contacts(con)["c1"][:2] == (None, None)
    assert contacts(con)["c2"][:2] == (None, "+998901234567")
    assert sorted((i.row, i.field, i.value) for i in result.issues) == [
        (2, "email", "not-an-email"), (2, "phone", "12"), (3, "email", "b@x.test")]
    assert result.issue_count == 3


def test_flat_contacts_take_latest_non_empty_values_and_attributes(tmp_path):
    write_csv(tmp_path / "sales.csv", [
        HEADER + ["ФИО", "Согласие", "Город"],
        ["1", "c1", "01.01.2024", "1", "", "old@example.com", "", "Иванов Иван Иванович", "да", "Ташкент"],
        ["2", "c1", "05.01.2024", "1", "", "new@example.com", "", "", "", ""],
        ["3", "c2", "05.01.2024", "1", "", "", "", "John Smith", "нет", ""]])
    _, con = pull(tmp_path, columns={**COLS, "name": "ФИО", "marketing_consent": "Согласие"},
                  attributes={"city": "Город"})
    people = contacts(con)
    assert people["c1"][0] == "new@example.com"
    assert people["c1"][2:5] == ("Иван", "Иванов", "yes")
    assert json.loads(people["c1"][6]) == {"city": "Ташкент"}
    assert people["c2"][2:5] == ("John", "Smith", "no") and people["c2"][6] is None


def test_duplicate_order_ids_last_row_wins_and_is_counted(tmp_path):
    write_csv(tmp_path / "sales.csv", [HEADER, ["1", "c1", "02.01.2024", "10", "", "", ""],
                                       ["1", "c1", "03.01.2024", "20", "", "", ""],
                                       ["2", "c1", "03.01.2024", "5", "", "", ""]])
    result, con = pull(tmp_path)
    assert result.duplicate_orders == 1 and result.bad_row_count == 0
    assert orders(con)["1"][2] == Decimal("20.00")


def test_receipt_lines_are_grouped_into_orders(tmp_path):
    write_csv(tmp_path / "sales.csv", [
        ["Чек", "Клиент", "Дата", "Товар", "Артикул", "Кол-во", "Цена"],
        ["A", "c1", "02.01.2024", "Чай", "T1", "2", "1,50"],
        ["A", "c1", "02.01.2024", "Кофе", "K1", "1", "3,00"],
        ["B", "c2", "03.01.2024", "Чай", "T1", "", "1,50"]])
    result, con = pull(tmp_path, columns={"order_id": "Чек", "customer_id": "Клиент", "ordered_at": "Дата",
                                          "product": "Товар", "sku": "Артикул", "quantity": "Кол-во",
                                          "price": "Цена"})
    assert result.bad_row_count == 0
    assert {k: v[2] for k, v in orders(con).items()} == {"A": Decimal("6.00"), "B": Decimal("1.50")}
    lines = con.execute("SELECT order_id, line_no, sku, name, quantity, price FROM staged_line_items "
                        "ORDER BY order_id, line_no").fetchall()
    assert lines == [("A", 1, "T1", "Чай", Decimal("2.000"), Decimal("1.50")),
                     ("A", 2, "K1", "Кофе", Decimal("1.000"), Decimal("3.00")),
                     ("B", 1, "T1", "Чай", None, Decimal("1.50"))]


LINE_COLS = {"order_id": "Чек", "customer_id": "Клиент", "ordered_at": "Дата", "sku": "Артикул",
             "quantity": "Кол-во", "price": "Цена"}
LINE_HEADER = ["Чек", "Клиент", "Дата", "Артикул", "Кол-во", "Цена"]


def test_a_receipt_line_whose_total_has_no_room_is_a_bad_row_and_big_prices_are_multiplied_exactly(tmp_path):
    """Price × quantity is multiplied wide: a 14-digit price times a quantity used to overflow DuckDB's
    DECIMAL(18) product and fail the whole file ("cannot read as CSV: Out of Range Error"); a line total of more
    than 16 digits before the point is a bad row naming it, and the file's other receipts are staged."""
    write_csv(tmp_path / "sales.csv", [
        LINE_HEADER,
        ["A", "c1", "02.01.2024", "T1", "1000", "9999999999999999"],  # row 2: a 20-digit line total
        ["B", "c2", "02.01.2024", "T1", "3", "12345678901234,55"],  # 14 digits × 3: fits (37037036703703.65)
        ["C", "c3", "02.01.2024", "T1", "", "1,50"],
    ])
    result, con = pull(tmp_path, columns=LINE_COLS)
    assert [(b.row, b.field, b.reason, b.value) for b in result.bad_rows] == [
        (2, "amount", "out of range (at most 16 digits before the point)", "9999999999999999000.00")]
    assert {k: v[2] for k, v in orders(con).items()} == {"B": Decimal("37037036703703.65"), "C": Decimal("1.50")}


def test_a_receipt_whose_lines_add_up_past_the_amount_column_is_bad_rows_and_the_others_are_staged(tmp_path):
    """Each line fits, their sum does not (a price column of ids or phones): the receipt's lines are bad rows
    naming the receipt and its total, the file's other receipts are staged (it stopped the whole read)."""
    write_csv(tmp_path / "sales.csv", [
        LINE_HEADER,
        ["B", "c2", "02.01.2024", "T1", "1", "1,50"],
        ["A", "c1", "02.01.2024", "T1", "1", "9999999999999999"],
        ["A", "c1", "02.01.2024", "T2", "1", "9999999999999999"],  # each line fits, their sum does not
        ["C", "c3", "02.01.2024", "T1", "", "zwei"],  # an ordinary bad row, listed in row order with them
    ])
    result, con = pull(tmp_path, columns=LINE_COLS)
    reason = ("receipt 'A': its lines add up to 19999999999999998.00, more than 16 digits before the point (is "
              "the price, quantity or discount column an id or a phone number?); the receipt is skipped")
    assert [(b.source, b.row, b.field, b.reason, b.value) for b in result.bad_rows][:2] == [
        (str(tmp_path / "sales.csv"), 3, "amount", reason, "9999999999999999.00"),
        (str(tmp_path / "sales.csv"), 4, "amount", reason, "9999999999999999.00")]
    assert [b.row for b in result.bad_rows] == [3, 4, 5] and result.bad_row_count == 3
    assert {k: v[2] for k, v in orders(con).items()} == {"B": Decimal("1.50")}
    assert con.execute("SELECT DISTINCT order_id FROM staged_line_items").fetchall() == [("B",)]
    assert result.orders == 1


def test_without_order_id_and_customer_id_ids_are_synthetic_and_keys_fall_back(tmp_path):
    write_csv(tmp_path / "sales.csv", [["Дата", "Сумма", "E-mail", "Телефон"],
                                       ["02.01.2024", "10", "A@x.com", ""],
                                       ["02.01.2024", "10", "", "90 123 45 67"],
                                       ["02.01.2024", "10", "", ""]])
    cols = {"ordered_at": "Дата", "amount": "Сумма", "email": "E-mail", "phone": "Телефон"}
    result, con = pull(tmp_path, columns=cols, phone_region="UZ")
    assert [(b.row, b.field) for b in result.bad_rows] == [(4, "customer_id")]
    got = con.execute("SELECT order_id, customer_id FROM staged_orders ORDER BY customer_id").fetchall()
    assert [c for _, c in got] == ["+998901234567", "a@x.com"]
    assert all(o.startswith("h") and len(o) == 17 for o, _ in got)
    _, con2 = pull(tmp_path, columns=cols, phone_region="UZ")  # stable across reads
    assert con2.execute("SELECT order_id FROM staged_orders ORDER BY customer_id").fetchall() == [(o,) for o, _ in got]
    assert contacts(con)["a@x.com"][0] == "a@x.com"


def test_contacts_file_with_its_own_mapping_wins_over_order_rows(tmp_path):
    write_csv(tmp_path / "sales.csv", [HEADER, ["1", "c1", "02.01.2024", "10", "", "old@x.com", ""],
                                       ["2", "c9", "02.01.2024", "10", "", "", ""]])
    write_csv(tmp_path / "clients.csv", [["Код", "Почта", "Имя", "Город"], ["c1", "new@x.com", "Анна", "Бухара"],
                                         ["", "", "Никто", ""]])
    result, con = pull(tmp_path, contacts="clients.csv", attributes={"city": "Город"},
                       contact_columns={"customer_id": "Код", "email": "Почта", "first_name": "Имя"})
    people = contacts(con)
    assert people["c1"][0] == "new@x.com" and people["c1"][2] == "Анна"
    assert json.loads(people["c1"][6]) == {"city": "Бухара"}
    assert "c9" in people  # customers only seen in orders still get a contact
    assert [(b.source.endswith("clients.csv"), b.row, b.field) for b in result.bad_rows] == [(True, 3, "customer_id")]


def test_contacts_file_reuses_columns_when_no_contact_columns(tmp_path):
    write_csv(tmp_path / "sales.csv", [["Клиент", "Дата", "Сумма"], ["c1", "02.01.2024", "10"]])
    write_csv(tmp_path / "clients.csv", [["Клиент", "E-mail"], ["c1", "a@x.com"]])
    _, con = pull(tmp_path, contacts="clients.csv",
                  columns={"customer_id": "Клиент", "ordered_at": "Дата", "amount": "Сумма", "email": "E-mail"})
    assert contacts(con)["c1"][0] == "a@x.com"


def test_missing_columns_raise_one_config_error_listing_found_columns(tmp_path):
    write_csv(tmp_path / "sales.csv", [["Чек №", "Дата", "Итог"], ["1", "02.01.2024", "1"]])
    with pytest.raises(ConfigError) as err:
        pull(tmp_path)
    msg = str(err.value)
    for part in ("sales.csv", "amount = 'Сумма'", "customer_id = 'Клиент'", "'Итог'", "'Чек №'"):
        assert part in msg


def test_glob_reads_all_matches_and_no_match_names_the_pattern(tmp_path):
    (tmp_path / "exports").mkdir()
    for i in (1, 2):
        write_csv(tmp_path / "exports" / f"sales-{i}.csv", [HEADER, [str(i), "c1", "02.01.2024", "10", "", "", ""]])
    result, con = pull(tmp_path, orders="exports/sales-*.csv")
    assert set(orders(con)) == {"1", "2"}
    with pytest.raises(ConfigError, match=r"exports/nothing-\*\.csv"):
        pull(tmp_path, orders="exports/nothing-*.csv")


def test_xlsx_with_title_rows_date_cells_and_serial_dates(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Отчёт о продажах"])
    ws.append(HEADER)
    ws.append([1, "c1", dt.datetime(2024, 1, 2, 10, 30), 1234.5, "Продажа", "a@x.com", "90 123 45 67"])
    ws.append([2, "c2", 45300, "99,90 сум", None, None, None])  # 45300 = 2024-01-09 as an Excel serial
    ws.append([None] * 7)
    ws.append([3, "c3", "когда-то", 5, None, None, None])
    wb.save(tmp_path / "sales.xlsx")
    result, con = pull(tmp_path, orders="sales.xlsx", timezone="Asia/Tashkent", phone_region="UZ")
    got = orders(con)
    assert got["1"][1:3] == (dt.datetime(2024, 1, 2, 5, 30, tzinfo=UTC), Decimal("1234.50"))
    assert got["2"][1:3] == (dt.datetime(2024, 1, 8, 19, 0, tzinfo=UTC), Decimal("99.90"))
    assert [(b.row, b.field, b.value) for b in result.bad_rows] == [(6, "ordered_at", "когда-то")]


def test_a_field_beginning_with_a_quoted_word_names_its_line_and_the_fix(tmp_path):
    """`"Ромашка" ООО` (a company name, common in Russian exports) on line 1502 of 3 000: DuckDB's sniffer refused
    the file with neither line nor cause; the error names both, and how such a field is written in CSV."""
    rows = [HEADER] + [[str(i), f"c{i}", "02.01.2024", "10", "", "", ""] for i in range(1, 3000)]
    rows[1501][1] = '"Ромашка" ООО'
    write_csv(tmp_path / "sales.csv", rows)
    with pytest.raises(BadFileError) as e:
        pull(tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'sales.csv'}: cannot read as CSV: line 1502 has a field that begins with a quote")
    assert "'1501;\"Ромашка\" ООО;02.01.2024;10;;;'" in msg and '"""Ромашка"" ООО"' in msg
    rows[1501][1] = '"""Ромашка"" ООО"'  # quoted whole: read
    write_csv(tmp_path / "sales.csv", rows)
    _, con = pull(tmp_path)
    assert orders(con)["1501"][0] == '"Ромашка" ООО'
    rows[1501][1] = '"Ромашка" ООО'  # below a title line: the line in the file, not in the copy without it
    write_csv(tmp_path / "sales.csv", [["Продажи за май"], *rows])
    with pytest.raises(BadFileError, match="line 1503 has a field that begins with a quote"):
        pull(tmp_path)


def test_a_quote_never_closed_is_not_blamed_on_valid_quoted_fields(tmp_path):
    """Valid quoted fields (JSON with doubled quotes, a `;` inside quotes) above a quote never closed: the error
    may not name a valid line as the stray quote (it names none: where a quote opened the reader cannot say)."""
    rows = [HEADER] + [[str(i), f"c{i}", "02.01.2024", "10", "", "", ""] for i in range(1, 3000)]
    rows[2][1] = '"{""sku"":1,""qty"":2}"'
    rows[3][1] = '"a; b"'
    rows[1999][1] = '"never closed'
    write_csv(tmp_path / "sales.csv", rows)
    with pytest.raises(BadFileError) as e:
        pull(tmp_path)
    assert "cannot read as CSV" in str(e.value) and "begins with a quote" not in str(e.value)


def test_a_mac_1904_workbooks_serial_dates_are_read_in_its_own_date_system(tmp_path):
    """Mac Excel's 1904 date system: serial 44348 is 2025-06-02 there (day 0 is 1904-01-01), 2021-06-01 in the
    1900 system the reader assumed: 4 years off, silently. Its date cells were right, and stay right; an amount
    that is a number is not shifted."""
    from openpyxl.utils.datetime import CALENDAR_MAC_1904

    wb = openpyxl.Workbook()
    wb.epoch = CALENDAR_MAC_1904
    ws = wb.active
    ws.append(HEADER)
    ws.append([1, "c1", dt.datetime(2025, 6, 1, 12), 44348, None, None, None])  # a date cell
    ws.append([2, "c2", 44348.5, 10, None, None, None])  # a serial day in a General cell: 2025-06-02 12:00
    ws.append([3, "c3", "44348", 10, None, None, None])  # a serial day in a text cell
    ws.append([4, "c4", 20250602, 10, None, None, None])  # a number no serial reading gives a real date
    wb.save(tmp_path / "sales.xlsx")
    result, con = pull(tmp_path, orders="sales.xlsx")
    got = orders(con)
    assert got["1"][1:3] == (dt.datetime(2025, 6, 1, 12, tzinfo=UTC), Decimal("44348.00"))
    assert got["2"][1] == dt.datetime(2025, 6, 2, 12, tzinfo=UTC)
    assert got["3"][1] == dt.datetime(2025, 6, 2, tzinfo=UTC)
    assert [(b.row, b.value) for b in result.bad_rows] == [(5, "20250602")]  # quoted as written, not shifted
    result, con = pull(tmp_path, orders="sales.xlsx", date_format="%Y%m%d")  # a number read by the format
    assert orders(con)["4"][1] == dt.datetime(2025, 6, 2, tzinfo=UTC)


@pytest.mark.parametrize("system", ["1900", "1904"])
def test_an_unset_or_epoch_day_date_cell_is_a_bad_row_in_either_date_system(tmp_path, system):
    """A workbook's unset date (an empty cell, a date cell holding 0: a time alone, 00:00, as openpyxl reads it; 0 in a
    General cell) and the Unix epoch's day in its own serials (25569 in the 1900 system, 24107 in the 1904 one) are
    bad rows; the next day (25570 / 24108) is an order. 25569 in a 1904 workbook is 1974-01-02, an order."""
    from openpyxl.utils.datetime import CALENDAR_MAC_1904

    epoch_day = 25569 if system == "1900" else 24107
    wb = openpyxl.Workbook()
    if system == "1904":
        wb.epoch = CALENDAR_MAC_1904
    ws = wb.active
    ws.append(HEADER)
    for i, when in enumerate([0, None, "zero", epoch_day, epoch_day + 0.5, epoch_day + 1, 25569], start=1):
        ws.append([i, f"c{i}", 0 if when == "zero" else when, 10, None, None, None])
    ws["C4"].number_format = "yyyy-mm-dd"  # the date cell holding 0
    for i in range(8, 30):
        ws.append([i, f"c{i}", dt.datetime(2025, 6, 1, 12), 10, None, None, None])
    wb.save(tmp_path / "sales.xlsx")
    result, con = pull(tmp_path, orders="sales.xlsx")
    got = orders(con)
    early = "a date on or before 1970-01-01: a POS default or a misread year"
    assert [(b.row, b.value, b.reason) for b in result.bad_rows] == [
        (2, "0", early), (3, None, "unparseable or empty date"), (4, "00:00:00", "unparseable or empty date"),
        (5, str(epoch_day), early), (6, f"{epoch_day}.5", early)] + ([(8, "25569", early)] if system == "1900" else [])
    assert got["6"][1] == dt.datetime(1970, 1, 2, tzinfo=UTC)
    assert system == "1900" or got["7"][1] == dt.datetime(1974, 1, 2, tzinfo=UTC)


def test_parquet_with_typed_columns(tmp_path):
    pq.write_table(pa.table({
        "order_id": ["1", "2"], "customer_id": ["c1", "c2"],
        "ordered_at": pa.array([dt.datetime(2024, 1, 2, 10), dt.datetime(2024, 1, 3)], pa.timestamp("us")),
        "amount": pa.array([Decimal("10.50"), Decimal("-3")], pa.decimal128(10, 2)),
        "status": ["paid", "refund"]}), tmp_path / "sales.parquet")
    result, con = pull(tmp_path, orders="sales.parquet", timezone="Asia/Tashkent",
                       columns={k: k for k in ("order_id", "customer_id", "ordered_at", "amount", "status")})
    assert result.bad_row_count == 0
    assert orders(con) == {"1": ("c1", dt.datetime(2024, 1, 2, 5, tzinfo=UTC), Decimal("10.50"), None, "completed", None),
                           "2": ("c2", dt.datetime(2024, 1, 2, 19, tzinfo=UTC), Decimal("3.00"), None, "refunded", None)}


def test_billz_preset_reads_a_billz_style_report(tmp_path):
    cols = PRESETS["billz"]
    header = [cols[k] for k in ("ordered_at", "order_id", "name", "phone", "product", "brand", "category",
                                "quantity", "amount")]
    write_csv(tmp_path / "sales.csv", [header,
                                       ["02.01.2024 10:00", "1001", "Каримов Алишер", "+998 90 123 45 67", "Кеды",
                                        "Nike", "Обувь", "1", "450 000"],
                                       ["02.01.2024 10:00", "1001", "Каримов Алишер", "+998 90 123 45 67", "Носки",
                                        "Nike", "Аксессуары", "2", "50 000"]])
    result, con = pull(tmp_path, preset="billz", columns={}, phone_region="UZ", currency="UZS")
    assert result.bad_row_count == 0
    assert orders(con)["1001"][:3] == ("+998901234567", dt.datetime(2024, 1, 2, 10, tzinfo=UTC), Decimal("500000.00"))
    assert contacts(con)["+998901234567"][2:4] == ("Каримов", "Алишер")
    assert con.execute("SELECT count(*), count(brand) FROM staged_line_items").fetchall() == [(2, 2)]


def test_1c_preset_with_user_override(tmp_path):
    write_csv(tmp_path / "sales.csv", [["Номер", "Дата", "Покупатель", "Номенклатура", "Количество", "Цена", "Сумма"],
                                       ["00-17", "02.01.2024 12:00:00", "ООО Ромашка", "Молоко", "2", "80,00",
                                        "160,00"]], encoding="cp1251")
    result, con = pull(tmp_path, preset="1c", columns={"customer_id": "Покупатель", "name": "Покупатель"})
    assert result.bad_row_count == 0
    assert orders(con)["00-17"][:3] == ("ООО Ромашка", dt.datetime(2024, 1, 2, 12, tzinfo=UTC), Decimal("160.00"))


def test_config_validation_errors_are_clear():
    with pytest.raises(ValidationError, match="unknown canonical field"):
        FileSourceConfig(type="file", orders="x.csv", columns={"colour": "Цвет"})
    with pytest.raises(ValidationError, match="unknown preset"):
        FileSourceConfig(type="file", orders="x.csv", preset="nope")
    with pytest.raises(ValidationError, match="time zone"):
        FileSourceConfig(type="file", orders="x.csv", timezone="Mars/Base")
    with pytest.raises(ValidationError):
        FileSourceConfig(type="file", orders="x.csv", surprise=1)
    with pytest.raises(ConfigError, match="ordered_at"):
        FileSource(FileSourceConfig(type="file", orders="x.csv", columns={"customer_id": "c"}), Path("."))


def test_an_amount_too_long_to_store_is_out_of_range_not_unparseable(tmp_path):
    write_csv(tmp_path / "sales.csv", [
        HEADER,
        ["1", "c1", "02.01.2024", "12345678901234567", "", "", ""],  # row 2: 17 digits (an id mapped as the amount)
        ["2", "c1", "02.01.2024", "12 345 678 901 234 567,00 сум", "", "", ""],  # row 3: with separators, currency
        ["3", "c1", "02.01.2024", "-998901234567890123", "Возврат", "", ""],  # row 4: a refund's, 18 digits
        ["4", "c1", "02.01.2024", "1234567890123456", "", "", ""],  # 16 digits: stored
        ["5", "c1", "02.01.2024", "0000000000000000012", "", "", ""],  # leading zeros: 12
        ["6", "c1", "02.01.2024", "сто", "", "", ""],  # row 7: not a number
        ["7", "c1", "02.01.2024", "1.2.3.4.5.6.7.8.9.0.1.2.3.4.5.6.7", "", "", ""],  # row 8: not a number either
    ])
    result, con = pull(tmp_path)
    too_big = "out of range (at most 16 digits before the point)"
    assert [(b.row, b.reason) for b in result.bad_rows] == [
        (2, too_big), (3, too_big), (4, too_big), (7, "unparseable or empty amount"),
        (8, "unparseable or empty amount")]
    assert str(result.bad_rows[0]).endswith(f"amount: {too_big} ('12345678901234567')")
    assert {k: v[2] for k, v in orders(con).items()} == {"4": Decimal("1234567890123456.00"), "5": Decimal("12.00")}
    with pytest.raises(ValueError, match="out of range"):  # the API sources' word for it
        to_decimal("12345678901234567")
    rows = [ISO_ROWS[0], ["1", "c1", "2024-03-30 23:30:00", "12345678901234567", "completed", ""],
            ["2", "c1", "2024-03-30 23:30:00", "", "completed", ""]]
    write_csv(tmp_path / "sales.csv", rows, ",")
    for text_only in (False, True):
        got = _pull_iso(tmp_path, text_only)[0].bad_rows
        assert [(b.row, b.reason) for b in got] == [(2, too_big), (3, "unparseable or empty amount")]


def test_an_amount_with_malformed_digit_groups_is_a_bad_row_naming_file_row_and_value(tmp_path):
    write_csv(tmp_path / "sales.csv", [
        HEADER,
        ["1", "c1", "02.01.2024", "1.234.5", "", "", ""],  # row 2: was 12345, silently
        ["2", "c1", "02.01.2024", "1 23", "", "", ""],  # row 3: was 123
        ["3", "c1", "02.01.2024", "1 234,50", "", "", ""],  # a well-grouped amount: stored
    ])
    result, con = pull(tmp_path)
    assert [(b.row, b.reason) for b in result.bad_rows] == [(2, "unparseable or empty amount"),
                                                           (3, "unparseable or empty amount")]
    assert str(result.bad_rows[0]).startswith(str(tmp_path / "sales.csv"))
    assert str(result.bad_rows[0]).endswith("amount: unparseable or empty amount ('1.234.5')")
    assert {k: v[2] for k, v in orders(con).items()} == {"3": Decimal("1234.50")}


# ------------------------------------------------------------------------------ typed CSV fast path

ISO_COLS = {"order_id": "order_id", "customer_id": "customer_id", "ordered_at": "ordered_at", "amount": "amount",
            "status": "status", "email": "email"}
ISO_ROWS = [["order_id", "customer_id", "ordered_at", "amount", "status", "email"],
            ["1", "c1", "2024-03-30 23:30:00", "100.50", "completed", "a@example.com"],
            ["2", "c2", "2024-03-31 02:30:00", "-20.00", "refunded", ""],
            ["3", "", "2024-04-01 10:00:00", "5", "completed", ""],  # no key → bad row 4
            ["4", "c1", "2024-04-02 10:00:00", "-7.25", "completed", ""],  # negative, not a refund → row 5
            ["5", "c3", "2024-04-03 10:00:00", "3.333", "weird", ""],  # unknown status → row 6
            ["2", "c2", "2024-04-04 10:00:00", "30", "completed", "b@example.com"],  # after its refund: last wins
            ["6", "c3", "", "1", "completed", ""],  # empty date → row 8
            ["7", "c3", "2010-06-01 12:00:00", "", "completed", ""]]  # empty amount → row 9


def _pull_iso(tmp_path: Path, text_only: bool, **cfg) -> tuple[FilePullResult, duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    src = FileSource(FileSourceConfig(type="file", orders="sales.csv", columns=ISO_COLS, **cfg), tmp_path)
    src._text_only = text_only
    return src.pull(con), con


@pytest.mark.parametrize("tz", ["Europe/Berlin", "Asia/Tashkent", "UTC"])
def test_clean_iso_csv_takes_the_fast_path_with_the_same_rows_as_the_text_path(tmp_path, tz):
    write_csv(tmp_path / "sales.csv", ISO_ROWS, ",")
    fast, fcon = _pull_iso(tmp_path, False, timezone=tz)
    slow, scon = _pull_iso(tmp_path, True, timezone=tz)
    assert fast.fast_path and not slow.fast_path
    for table in ("staged_orders", "staged_contacts"):
        q = f"SELECT * FROM {table} ORDER BY ALL"
        assert fcon.execute(q).fetchall() == scon.execute(q).fetchall()
    assert fast.bad_rows == slow.bad_rows
    assert [(b.row, b.field) for b in fast.bad_rows] == [
        (4, "customer_id"), (5, "amount"), (6, "status"), (8, "ordered_at"), (9, "amount")]
    assert fast.bad_rows[1].value == "-7.25"
    assert fast.duplicate_orders == slow.duplicate_orders == 1
    got = orders(fcon)
    assert (got["2"][2], got["2"][4]) == (Decimal("30.00"), "completed")
    assert got["1"][2] == Decimal("100.50")
    if tz == "Europe/Berlin":  # DST starts 2024-03-31 02:00 (the DST zone takes timezone(), not the shift)
        assert got["1"][1] == dt.datetime(2024, 3, 30, 22, 30, tzinfo=UTC)
    if tz == "Asia/Tashkent":
        assert got["1"][1] == dt.datetime(2024, 3, 30, 18, 30, tzinfo=UTC)


def _big_iso(path: Path, n: int, late: tuple[int, str] | None = None) -> None:
    lines = ["order_id,customer_id,ordered_at,amount,status"]
    lines += [f"{i},c{i % 97},2024-01-{1 + i % 28:02d} 10:{i % 60:02d}:00,{i % 500}.25,completed" for i in range(n)]
    if late:
        i, date = late
        lines[i + 1] = f"{i},c1,{date},10.00,completed"
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("late_value", ["31.12.2024", "2024-01-05 10:00:00+05:00", "not a date"])
def test_one_odd_date_late_in_a_clean_file_falls_back_with_the_right_row(tmp_path, caplog, late_value):
    _big_iso(tmp_path / "sales.csv", 30_000, late=(29_000, late_value))  # past DuckDB's sniffing sample
    cols = {k: k for k in ("order_id", "customer_id", "ordered_at", "amount", "status")}
    with caplog.at_level("DEBUG", logger="connectors.files"):
        result, con = pull(tmp_path, columns=cols, timezone="Asia/Tashkent")
    assert not result.fast_path
    assert "typed read failed" in caplog.text  # the typed read was tried, rejected the value, and fell back
    assert result.orders == 30_000 - result.bad_row_count
    if late_value == "not a date":
        assert [(b.row, b.field, b.value) for b in result.bad_rows] == [(29_002, "ordered_at", "not a date")]
    else:
        assert result.bad_row_count == 0
        want = {"31.12.2024": dt.datetime(2024, 12, 30, 19, 0, tzinfo=UTC),
                "2024-01-05 10:00:00+05:00": dt.datetime(2024, 1, 5, 5, 0, tzinfo=UTC)}[late_value]
        assert orders(con)["29000"][1] == want


def test_non_iso_or_offset_dates_never_take_the_fast_path(tmp_path):
    rows = [["order_id", "customer_id", "ordered_at", "amount", "status"],
            ["1", "c1", "2024-01-02 10:00:00+03:00", "1.00", "completed"],
            ["2", "c1", "2024-01-03 10:00:00+03:00", "2.00", "completed"]]
    write_csv(tmp_path / "sales.csv", rows, ",")
    cols = {k: k for k in rows[0]}
    result, con = pull(tmp_path, columns=cols, timezone="Asia/Tashkent")
    assert not result.fast_path
    assert orders(con)["1"][1] == dt.datetime(2024, 1, 2, 7, 0, tzinfo=UTC)
    write_csv(tmp_path / "sales.csv", [[c.replace("2024-01-0", "0").replace(" 10:00:00+03:00", ".01.2024")
                                        for c in r] for r in rows], ",")
    result, con = pull(tmp_path, columns=cols, timezone="UTC")
    assert not result.fast_path and orders(con)["1"][1] == dt.datetime(2024, 1, 2, tzinfo=UTC)


def _staged(con) -> tuple[list, list]:
    return (con.execute("SELECT * FROM staged_orders ORDER BY ALL").fetchall(),
            con.execute("SELECT * FROM staged_contacts ORDER BY ALL").fetchall())


@pytest.mark.parametrize("ids", [
    ["1", "2", "3", "4", "5", "2", "6", "7"],  # ISO_ROWS as they are: one repeat (whole numbers)
    ["1", "2", "3", "4", "5", "8", "6", "7"],  # no repeat: staged_orders is a view over the rows read
    ["A-1", "A-2", "A-3", "A-4", "A-5", "A-2", "A-6", "A-7"],  # text ids: the hash check
    ["7", "07", "3", "4", "5", "007", "6", "8"],  # equal as numbers, distinct as ids: a false alarm
])
def test_in_place_pull_stages_the_same_rows_and_counts_as_a_copy(tmp_path, ids):
    rows = [ISO_ROWS[0]] + [[i, *r[1:]] for i, r in zip(ids, ISO_ROWS[1:])]
    write_csv(tmp_path / "sales.csv", rows, ",")
    src = FileSource(FileSourceConfig(type="file", orders="sales.csv", columns=ISO_COLS), tmp_path)
    copy_con, place_con = duckdb.connect(), duckdb.connect()
    copy, place = src.pull(copy_con), src.pull(place_con, in_place=True)
    assert _staged(place_con) == _staged(copy_con)
    assert (place.orders, place.contacts, place.bad_row_count, place.duplicate_orders) == \
           (copy.orders, copy.contacts, copy.bad_row_count, copy.duplicate_orders)
    assert place.duplicate_orders == (1 if len(set(ids)) < len(ids) else 0)
    # bad rows 4, 5, 6, 8, 9; a repeat of "2": c2's refund, then a sale (not the sale's return: last wins)
    assert place.orders == len(set(ids) - {ids[2], ids[3], ids[4], ids[6], ids[7]})
    if len({int(i) if i.isdigit() else i for i in ids}) == len(ids):  # nothing to rebuild
        kind = place_con.execute("SELECT table_type FROM information_schema.tables"
                                 " WHERE table_name = 'staged_orders'").fetchall()[0][0]
        assert kind == "VIEW"


def test_repeat_of_whole_number_ids_far_apart_is_found(tmp_path):
    write_csv(tmp_path / "sales.csv", [HEADER, ["1", "c1", "02.01.2024", "10", "", "", ""],
                                       ["900000000000", "c1", "03.01.2024", "20", "", "", ""],
                                       ["900000000000", "c1", "04.01.2024", "30", "", "", ""]])
    result, con = pull(tmp_path)
    assert result.duplicate_orders == 1
    assert orders(con)["900000000000"][:3] == ("c1", dt.datetime(2024, 1, 4, tzinfo=UTC), Decimal("30.00"))


def test_receipts_without_contact_fields_stage_no_contacts(tmp_path):
    write_csv(tmp_path / "sales.csv", [["order_id", "customer_id", "ordered_at", "amount"],
                                       ["1", "c1", "2024-01-02", "10"], ["2", "c2", "2024-01-03", "5"]], ",")
    cols = {"order_id": "order_id", "customer_id": "customer_id", "ordered_at": "ordered_at", "amount": "amount"}
    result, con = pull(tmp_path, columns=cols)
    assert (result.orders, result.contacts) == (2, 0)
    assert contacts(con) == {}


def test_a_receipt_whose_discounts_add_up_past_the_column_names_them(tmp_path):
    write_csv(tmp_path / "sales.csv", [
        LINE_HEADER + ["Скидка"],
        ["A", "c1", "02.01.2024", "T1", "1", "10", "9999999999999999"],
        ["A", "c1", "02.01.2024", "T2", "1", "10", "9999999999999999"],  # each discount fits, their sum does not
        ["B", "c2", "02.01.2024", "T1", "1", "10", "1"],
    ])
    result, con = pull(tmp_path, columns={**LINE_COLS, "discount": "Скидка"})
    assert [(b.row, b.field, b.value) for b in result.bad_rows] == [(2, "discount", "9999999999999999.00"),
                                                                     (3, "discount", "9999999999999999.00")]
    assert result.bad_rows[0].reason.startswith("receipt 'A': its lines' discounts add up to 19999999999999998.00,")
    assert list(orders(con)) == ["B"]




def test_a_quantity_or_discount_that_is_not_a_number_is_a_bad_row_and_a_return_line_shows_its_total(tmp_path):
    """A quantity of "x" used to count as 1 (a bad row now) and a discount of "n/a" as none, silently (an issue
    now); a return line's total was shown with the product's five decimals (-31.50000)."""
    write_csv(tmp_path / "sales.csv", [
        LINE_HEADER + ["Скидка"],
        ["A", "c1", "02.01.2024", "T1", "-3", "10,50", ""],  # a return without a refund status: its total shown
        ["B", "c2", "02.01.2024", "T1", "x", "2", ""],
        ["C", "c3", "02.01.2024", "T1", "2", "5", "n/a"],
        ["D", "c4", "02.01.2024", "T1", "2", "5", "1"],
        ["D", "c4", "02.01.2024", "T2", "", "5", ""],  # an empty quantity is 1, an empty discount none
    ])
    result, con = pull(tmp_path, columns={**LINE_COLS, "discount": "Скидка"})
    assert [(b.row, b.field, b.reason, b.value) for b in result.bad_rows] == [
        (2, "amount", "negative amount without a refund status", "-31.50"),
        (3, "quantity", "unparseable quantity", "x")]
    # a discount that is not a number keeps its order (its amount is whole), without the discount, and is reported
    assert [(b.row, b.field, b.reason, b.value) for b in result.issues] == [
        (4, "discount", "unparseable discount; the order is kept without it", "n/a")]
    assert result.issue_count == 1
    (line,) = result.warnings
    assert line.startswith("1 row has no number as discount, kept without it") and "row 4" in line
    assert sorted(orders(con)) == ["C", "D"]
    assert con.execute("SELECT order_id, amount, discount FROM staged_orders ORDER BY 1").fetchall() == [
        ("C", Decimal("10.00"), None), ("D", Decimal("15.00"), Decimal("1.00"))]


def test_an_order_dated_after_the_read_is_a_bad_row_naming_its_date(tmp_path):
    """A date in the future (a day/month swap, a mistyped year) is not an order; a day's margin is allowed."""
    write_csv(tmp_path / "sales.csv", [
        HEADER,
        ["1", "c1", "04.12.2026 10:00", "100", "", "", ""],   # row 2: yesterday
        ["2", "c1", "06.12.2026 11:59", "100", "", "", ""],   # row 3: within a day of the read (time zones)
        ["3", "c2", "04.03.2027", "100", "", "", ""],         # row 4: 3 April 2026 with day and month swapped?
        ["4", "c2", "05.12.2062", "100", "", "", ""],         # row 5: a mistyped year
        ["5", "c2", "06.12.2026 13:00", "100", "", "", ""],   # row 6: just past the margin
    ])
    read_at = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.timezone.utc)
    con = duckdb.connect()
    source = FileSource(FileSourceConfig(type="file", orders="sales.csv", columns=COLS, timezone="UTC"), tmp_path,
                        clock=lambda: read_at)
    result = source.pull(con)
    assert [(b.row, b.field, b.value) for b in result.bad_rows] == [
        (4, "ordered_at", "2027-03-04 00:00:00"), (5, "ordered_at", "2062-12-05 00:00:00"),
        (6, "ordered_at", "2026-12-06 13:00:00")]
    assert result.bad_rows[0].source == str(tmp_path / "sales.csv")
    assert "in the future (more than a day after the file was read)" in result.bad_rows[0].reason
    assert set(orders(con)) == {"1", "2"}


def test_title_lines_above_a_csv_header_are_skipped_with_a_warning_and_rows_keep_their_file_lines(tmp_path, caplog):
    """1C/BILLZ put a report title (one cell) above the header; the rows' numbers stay the file's lines."""
    lines = ["Отчёт о продажах за ноябрь 2026;;;;;;", "", ";".join(HEADER),
             "1;c1;02.11.2026;100;;;", "2;c1;сегодня;100;;;", "3;c2;03.11.2026;200;;;"]
    (tmp_path / "sales.csv").write_bytes("\n".join(lines).encode("cp1251") + b"\n")
    result, con = pull(tmp_path)
    assert set(orders(con)) == {"1", "3"}
    assert [(b.row, b.field, b.value) for b in result.bad_rows] == [(5, "ordered_at", "сегодня")]
    assert f"{tmp_path / 'sales.csv'}: lines 1-2 above the header (line 3) skipped as a title" in caplog.text


#: a 1C report's title block: company, period, filters, blank lines (16 lines, each one cell at most)
TITLE_BLOCK = ["Отчёт о продажах;;;;;;", "", 'ООО "Ромашка";;;;;;', "", "Период: 01.11.2026 - 30.11.2026;;;;;;", "",
               "Отбор: Склад = Основной;;;;;;", "Отбор: Контрагент = все;;;;;;", "", "Группировка: Документ;;;;;;",
               "", "Валюта: сум;;;;;;", "", "Сформирован: 01.12.2026 10:00;;;;;;", "", ""]


def test_a_1c_title_block_of_16_lines_is_skipped_with_a_warning(tmp_path, caplog):
    """The header on line 17 (main looked at the first 10 lines only and read the title as the header)."""
    lines = [*TITLE_BLOCK, ";".join(HEADER), "1;c1;02.11.2026;100;;;", "2;c1;сегодня;100;;;", "3;c2;03.11.2026;200;;;"]
    (tmp_path / "sales.csv").write_bytes("\n".join(lines).encode("cp1251") + b"\n")
    result, con = pull(tmp_path)
    assert set(orders(con)) == {"1", "3"}
    assert [(b.row, b.field, b.value) for b in result.bad_rows] == [(19, "ordered_at", "сегодня")]
    assert f"{tmp_path / 'sales.csv'}: lines 1-16 above the header (line 17) skipped as a title" in caplog.text


def test_a_line_above_the_header_that_is_not_a_title_stops_naming_it_and_skip_lines_reads_the_file(tmp_path):
    write_csv(tmp_path / "sales.csv", [["Магазин", "Ташкент"], HEADER, ["1", "c1", "02.11.2026", "100", "", "", ""]])
    with pytest.raises(ConfigError) as e:
        pull(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'sales.csv'}: the header is on line 2, and line 1 above it is not "
                                   "a title ('Магазин;Ташкент'); set [source] skip_lines = 1")
    result, con = pull(tmp_path, skip_lines=1)
    assert set(orders(con)) == {"1"} and result.bad_row_count == 0
    write_csv(tmp_path / "sales.csv", [["Магазин", "Ташкент"], HEADER, ["1", "c1", "02.11.2026", "100", "", "", ""],
                                       ["2", "c1", "02.11.2026", "сто", "", "", ""]])
    assert [b.row for b in pull(tmp_path, skip_lines=1)[0].bad_rows] == [4]


def _sales(tmp_path, kind: str, header: list[str], row: list[str]):
    """``sales.csv`` or ``sales.xlsx`` of one header and one row; the workbook (None for a CSV)."""
    if kind == "csv":
        write_csv(tmp_path / "sales.csv", [header, row])
        return None
    wb = openpyxl.Workbook()
    wb.active.append(header)
    wb.active.append(row)
    wb.save(tmp_path / "sales.xlsx")
    return wb


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_a_mapped_header_written_twice_stops_naming_it_and_both_columns(tmp_path, kind):
    """Two `Сумма` (with and without the discount): which one is the amount cannot be told."""
    header = ["Чек №", "Клиент", "Дата", "Сумма", "Скидка", "сумма ", "Примечание", "Примечание"]
    row = ["1", "c1", "02.11.2026", "100", "10", "90", "", ""]
    wb = _sales(tmp_path, kind, header, row)
    cols = {"order_id": "Чек №", "customer_id": "Клиент", "ordered_at": "Дата", "amount": "Сумма"}
    with pytest.raises(ConfigError) as e:
        pull(tmp_path, orders=f"sales.{kind}", columns=cols)
    assert str(e.value).startswith(f"{tmp_path / f'sales.{kind}'}: the header 'Сумма' is in columns 4 and 6: ")
    header[5] = "Сумма без скидки"  # a repeated header nothing maps (Примечание) is no problem
    if kind == "csv":
        write_csv(tmp_path / "sales.csv", [header, row])
    else:
        wb.active["F1"] = header[5]
        wb.save(tmp_path / "sales.xlsx")
    assert orders(pull(tmp_path, orders=f"sales.{kind}", columns=cols)[1])["1"][2] == Decimal("100.00")


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_a_repeated_header_mapped_by_the_readers_name_of_the_second_reads_each(tmp_path, kind):
    """Two `Сумма`: the message names the second one as the reader names it, and a mapping naming both so reads
    each column (a config that main read right keeps working)."""
    header, row = ["Чек", "Клиент", "Дата", "Сумма", "Сумма"], ["1", "c1", "02.11.2026", "100", "90"]
    _sales(tmp_path, kind, header, row)
    cols = {"order_id": "Чек", "customer_id": "Клиент", "ordered_at": "Дата", "amount": "Сумма"}
    with pytest.raises(ConfigError) as e:
        pull(tmp_path, orders=f"sales.{kind}", columns=cols)
    second = re.search(r"or map the second one as '([^']+)' \(the reader's name for that column: naming it picks it\)$", str(e.value))
    assert second and second[1] != "Сумма"
    got = orders(pull(tmp_path, orders=f"sales.{kind}", columns={**cols, "price": "Сумма", "amount": second[1]})[1])
    assert got["1"][2] == Decimal("90.00")


@pytest.mark.parametrize("blank", [False, True])
def test_rows_below_a_title_keep_their_file_lines_in_the_order_store_too(tmp_path, blank):
    """A title line read by the parallel scanner (or, with a blank line among the rows, the numbered read): the
    bad rows name the file's lines, also when the store keeps the file's rows (a contact field is mapped)."""
    from sync.store import connect_store
    from sync.store.files import ingest_files

    rows = ["Отчёт о продажах, магазин №1", ";".join(HEADER), "1;c1;02.11.2026;100;;a@example.com;",
            *([""] if blank else []), "2;c1;сегодня;100;;;", "3;c2;03.11.2026;200;;;"]
    (tmp_path / "sales.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    line = 5 if blank else 4
    assert [b.row for b in pull(tmp_path)[0].bad_rows] == [line]
    con = connect_store(tmp_path / "store.duckdb")
    source = FileSource(FileSourceConfig(type="file", orders="*.csv", columns=COLS), tmp_path)
    assert [b.row for b in ingest_files(con, source).pull.bad_rows] == [line]
    (tmp_path / "more.csv").write_text(";".join(HEADER) + "\n4;c3;01.11.2026;1;;;\n5;c3;01.11.2026;x;;;\n",
                                       encoding="utf-8")
    assert [(Path(b.source).name, b.row) for b in ingest_files(con, source).pull.bad_rows] == [
        ("more.csv", 3), ("sales.csv", line)]  # the kept file's rows, staged again from the store's table


def test_max_days_ahead_lets_scheduled_orders_count_and_skip_lines_is_refused_for_xlsx_and_parquet(tmp_path):
    """Pre-orders 10 days ahead: bad rows by default, orders with `max_days_ahead = 14`."""
    write_csv(tmp_path / "sales.csv", [HEADER, ["1", "c1", "15.12.2026", "100", "", "", ""],
                                       ["2", "c1", "20.12.2026", "100", "", "", ""]])
    cfg = {"type": "file", "orders": "sales.csv", "columns": COLS, "timezone": "UTC"}
    at = dt.datetime(2026, 12, 5, 12, tzinfo=dt.timezone.utc)
    result = FileSource(FileSourceConfig(**cfg), tmp_path, clock=lambda: at).pull(duckdb.connect())
    ahead = "a date in the future (more than a day after the file was read)"
    assert [(b.row, b.reason.split(":")[0]) for b in result.bad_rows] == [(2, ahead), (3, ahead)]
    con = duckdb.connect()
    result = FileSource(FileSourceConfig(**cfg, max_days_ahead=14), tmp_path, clock=lambda: at).pull(con)
    assert set(orders(con)) == {"1"} and [(b.row, b.reason.split(":")[0]) for b in result.bad_rows] == [
        (3, "a date in the future (more than 14 days after the file was read)")]
    wb = openpyxl.Workbook()
    wb.active.append(HEADER)
    wb.active.append(["1", "c1", "01.12.2026", "100", "", "", ""])
    wb.save(tmp_path / "sales.xlsx")
    with pytest.raises(ConfigError) as e:
        pull(tmp_path, orders="sales.xlsx", skip_lines=1)
    assert str(e.value) == (f"{tmp_path / 'sales.xlsx'}: [source] skip_lines = 1 applies to CSV files only (an XLSX "
                            "file's header is found among its sheet's first 30 rows, title rows above it skipped): "
                            "remove it")
    pq.write_table(pa.table({h: ["1"] for h in HEADER}), tmp_path / "sales.parquet")
    with pytest.raises(ConfigError) as e:
        pull(tmp_path, orders="sales.parquet", skip_lines=1)
    assert str(e.value).endswith("skip_lines = 1 applies to CSV files only (a Parquet file names its columns "
                                 "itself): remove it")


def test_a_huge_max_days_ahead_is_a_config_error_naming_the_key(tmp_path):
    """`max_days_ahead = 3000000` overflowed the date arithmetic at run time; it is refused when the config loads."""
    write_csv(tmp_path / "sales.csv", [HEADER, ["1", "c1", "01.11.2026", "100", "", "", ""]])
    for days, code in ((3660, 0), (3_000_000, 2), (10**9, 2)):
        (tmp_path / "rfmsync.toml").write_text(
            f'[source]\ntype = "file"\norders = "sales.csv"\ntimezone = "UTC"\nmax_days_ahead = {days}\n'
            "[source.columns]\n" + "".join(f'{k} = "{v}"\n' for k, v in COLS.items()), encoding="utf-8")
        out = run_cli("pull", "--config", str(tmp_path / "rfmsync.toml"), code=code).output
        if code:
            assert "source.max_days_ahead: Input should be less than or equal to 3660" in out
