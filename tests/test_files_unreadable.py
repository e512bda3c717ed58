"""File exports that were unreadable, garbled or misnumbered (review36, review38): quoted line breaks, cp866, a stray byte,
blank lines before a bad row, a workbook whose first sheet is not the orders."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import duckdb
import openpyxl
import pytest
from click.testing import CliRunner

from connectors.errors import ConfigError
from connectors.files import FileSource, FileSourceConfig
from sync.cli import main

COLS = {"order_id": "Чек №", "customer_id": "Клиент", "ordered_at": "Дата", "amount": "Сумма", "status": "Статус",
        "name": "Имя"}
HEADER = "Чек №;Клиент;Дата;Сумма;Статус;Имя\n"


def pull(folder: Path, orders: str = "sales.csv", **cfg):
    con = duckdb.connect()
    result = FileSource(FileSourceConfig(type="file", orders=orders, columns=cfg.pop("columns", COLS), **cfg),
                        folder).pull(con)
    return result, con


def staged(con) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in con.execute("SELECT order_id, customer_id, status FROM staged_orders").fetchall()}


def names(con) -> dict[str, str]:
    return {c: f"{f} {la}" for c, f, la in con.execute("SELECT customer_id, first_name, last_name FROM staged_contacts")
            .fetchall()}


def bad_rows(result) -> list[tuple]:
    return [(b.row, b.field, b.value) for b in result.bad_rows]


# dd.mm.yyyy dates take the text path; ISO dates and plain amounts the typed fast path
DATES = {"text": ("05.01.2024", False), "typed": ("2024-01-05 10:00:00", True)}


@pytest.mark.parametrize("path", DATES)
def test_a_line_break_inside_a_quoted_field_is_read_and_rows_keep_their_line_numbers(tmp_path, path):
    day, fast = DATES[path]
    (tmp_path / "sales.csv").write_text(
        HEADER + f'1;"c\n1";{day};100;;\n2;;{day};200;;\n3;c3;{day};300;;"a\r\nb"\n4;;{day};5;;\n',
        encoding="utf-8")
    result, con = pull(tmp_path)
    assert staged(con) == {"1": ("c\n1", "completed"), "3": ("c3", "completed")} and result.fast_path is fast
    # line 1 header, lines 2-3 order 1, line 4 order 2, lines 5-6 order 3, line 7 order 4
    assert bad_rows(result) == [(4, "customer_id", None), (7, "customer_id", None)]


def test_a_quoted_line_break_is_no_internal_error_in_check(tmp_path):
    (tmp_path / "orders.csv").write_text('client,date,amount\n"a\nb",2025-01-01,10\nc,2025-02-01,20\n',
                                         encoding="utf-8")
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text('[source]\norders = "orders.csv"\n[source.columns]\ncustomer_id = "client"\nordered_at = "date"\n'
                   'amount = "amount"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--config", str(cfg), "--offline"])
    assert result.exit_code == 0, result.output
    assert "2 orders" in result.output and "internal error" not in result.output


@pytest.mark.parametrize("path", DATES)
def test_blank_lines_before_a_bad_row_do_not_shift_its_number(tmp_path, path):
    day = DATES[path][0]
    (tmp_path / "sales.csv").write_text(
        HEADER + f"1;c1;{day};100;;\n\n2;;{day};2;;\n\n\n3;;{day};100;;\n4;c4;{day};1;;\n\n", encoding="utf-8")
    result, con = pull(tmp_path)
    assert set(staged(con)) == {"1", "4"} and result.fast_path is DATES[path][1]
    assert bad_rows(result) == [(4, "customer_id", None), (7, "customer_id", None)]  # the file's lines


def test_a_clean_file_keeps_header_plus_record_numbers(tmp_path):
    (tmp_path / "sales.csv").write_text(HEADER + "1;c1;2024-01-05 10:00:00;100;;\n2;c2;2024-01-05 10:00:00;-;;",
                                        encoding="utf-8")  # no line break after the last line
    result, _ = pull(tmp_path, quiet_seconds=0)  # read fresh (else a copy under way: test_files_copy_pause)
    assert bad_rows(result) == [(3, "amount", "-")]


ROWS866 = HEADER + "1;c1;05.01.2024;100;Продажа;Петрова Анна\n2;c2;05.01.2024;200;Возврат;Шишкин Ёлкин\n"


def test_auto_reads_cp866_by_where_its_letter_bytes_fall(tmp_path):
    (tmp_path / "sales.csv").write_bytes(ROWS866.encode("cp866"))  # 'Ш' is 0x98: no cp1251 letter at all
    result, con = pull(tmp_path)
    assert result.bad_row_count == 0
    assert staged(con) == {"1": ("c1", "completed"), "2": ("c2", "refunded")}
    assert names(con) == {"c1": "Петрова Анна", "c2": "Шишкин Ёлкин"}


def test_auto_still_reads_cp1251(tmp_path):
    (tmp_path / "sales.csv").write_bytes(ROWS866.encode("cp1251"))
    result, con = pull(tmp_path)
    assert result.bad_row_count == 0 and staged(con)["2"] == ("c2", "refunded")
    assert names(con) == {"c1": "Петрова Анна", "c2": "Шишкин Ёлкин"}


def test_a_cp866_file_read_as_utf8_names_cp866(tmp_path):
    (tmp_path / "sales.csv").write_bytes(ROWS866.encode("cp866"))
    with pytest.raises(ConfigError) as e:
        pull(tmp_path, encoding="utf-8")
    assert str(e.value).endswith('; set encoding = "auto" or "cp866" in [source]')


def test_a_stray_byte_names_and_quotes_its_line_and_no_auto_hint_when_auto_is_set(tmp_path):
    body = "".join(f"{i};Иванов {i};05.01.2024;100;;\n" for i in range(1, 40001))  # > 1 MB of UTF-8
    data = (HEADER + body).encode() + "40001;Щукин;05.01.2024;100;;\n".encode("cp1251") + b"40002;c;05.01.2024;1;;\n"
    (tmp_path / "sales.csv").write_bytes(data)
    with pytest.raises(ConfigError) as e:
        pull(tmp_path)
    at = len((HEADER + body).encode()) + len("40001;")
    assert str(e.value) == (f"{tmp_path / 'sales.csv'}: not valid utf-8 text at byte {at} (line 40002: "
                            f"'40001;\ufffd\ufffd\ufffd\ufffd\ufffd;05.01.2024;100;;'); fix that line, or set [source] "
                            f"encoding to the file's encoding")


def test_a_missing_column_in_a_workbook_of_several_sheets_names_the_sheets_and_the_option(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.title = "Сводка"
    wb.active.append(["Итого", 100])
    sales = wb.create_sheet("Продажи")
    sales.append(HEADER.strip().split(";"))
    sales.append(["1", "c1", "05.01.2024", "100", "", ""])
    wb.save(tmp_path / "sales.xlsx")
    with pytest.raises(ConfigError) as e:
        pull(tmp_path, orders="sales.xlsx")
    assert str(e.value).endswith("Columns in the file: 'Итого', '100' (sheet 'Сводка'; the workbook's sheets: "
                                 "'Сводка', 'Продажи': set [source] sheet = \"Продажи\" to read another)")
    result, _ = pull(tmp_path, orders="sales.xlsx", sheet="Продажи")
    assert result.orders == 1


LATIN_COLS = {"order_id": "id", "customer_id": "email", "ordered_at": "date", "amount": "amount", "name": "name"}


def test_auto_reads_a_mostly_latin_cp1251_export_with_nbsp_and_dashes_as_cp1251(tmp_path):
    """cp1251's nbsp, —, « and » sit where cp866 has the letters А–п: counting bytes by range read this as cp866."""
    rows = "".join(f"{i};c{i}@x.ru;05.01.2024;1\xa0{i % 900 + 100},50;Smith — «Acme» №{i}\n" for i in range(1, 200))
    (tmp_path / "sales.csv").write_bytes(("id;email;date;amount;name\n" + rows).encode("cp1251"))
    result, con = pull(tmp_path, columns=LATIN_COLS, decimal=",")
    assert result.orders == 199 and result.bad_row_count == 0
    assert con.execute("SELECT amount FROM staged_orders WHERE order_id = '1'").fetchone()[0] == Decimal("1101.50")


def test_auto_keeps_a_cp1251_name_with_a_dash_and_guillemets(tmp_path):
    rows = "".join(f"{i};c{i}@x.ru;05.01.2024;{i}00;Smith — «Acme»\n" for i in range(1, 20))
    (tmp_path / "sales.csv").write_bytes(("id;email;date;amount;name\n" + rows).encode("cp1251"))
    result, con = pull(tmp_path, columns=LATIN_COLS)
    assert result.bad_row_count == 0
    assert names(con)["c4@x.ru"] == "Smith — «Acme»"


@pytest.mark.parametrize("sep,end", [("\n", "\n"), ("\r\n", "\r\n\r\n"), ("\r", "")],
                         ids=["blank-line-at-end", "crlf-blanks-at-end", "cr-only"])
def test_blank_lines_at_the_end_or_cr_line_breaks_keep_the_parallel_read(tmp_path, caplog, sep, end):
    """DuckDB skips blank lines at the end and reads CR-only line breaks: neither shifts a row from its line, so
    neither is worth the single-threaded re-read that numbers rows by line."""
    body = HEADER + "1;c1;05.01.2024;100;;\n2;c2;05.01.2024;x;;\n3;c3;;100;;\n"
    (tmp_path / "sales.csv").write_bytes((body.replace("\n", sep) + end).encode())
    with caplog.at_level("DEBUG", logger="connectors.files"):
        result, _ = pull(tmp_path)
    assert [(b.row, b.field) for b in result.bad_rows] == [(3, "amount"), (4, "ordered_at")]
    assert "numbering the rows by line" not in caplog.text


def test_a_field_longer_than_pythons_csv_limit_keeps_rows_numbered_by_line(tmp_path):
    """Python's csv reader refuses a field over 131 072 characters unless told otherwise: the rows went back to
    record numbers (row 3 here) without a word."""
    (tmp_path / "sales.csv").write_text(HEADER + "1;c1;05.01.2024;100;;" + "z" * 140_000 + "\n\n2;c2;05.01.2024;x;;\n",
                                        encoding="utf-8")
    limit = csv.field_size_limit()
    result, _ = pull(tmp_path)
    assert [(b.row, b.field) for b in result.bad_rows] == [(4, "amount")]
    assert csv.field_size_limit() == limit  # the process-wide limit is put back


def test_a_lone_cr_inside_a_quoted_field_is_not_a_line(tmp_path):
    (tmp_path / "sales.csv").write_bytes((HEADER + '1;c1;05.01.2024;100;;"a\rb"\n\n2;c2;05.01.2024;x;;\n').encode())
    result, _ = pull(tmp_path)
    assert [(b.row, b.field) for b in result.bad_rows] == [(4, "amount")]  # not 5: the CR is inside the quotes


def encoding_error_text(folder: Path, data: bytes, encoding: str) -> str:
    (folder / "sales.csv").write_bytes(data)
    with pytest.raises(ConfigError) as e:
        pull(folder, encoding=encoding)
    return str(e.value)


def test_an_encoding_error_quotes_50_characters_each_side_of_the_bad_byte(tmp_path):
    line = b"9;c9;05.01.2024;100;;" + b"x" * 150 + b"\xff" + b"y" * 80
    text = encoding_error_text(tmp_path, HEADER.encode() + b"1;c1;05.01.2024;100;;\n" + line + b"\n", "utf-8")
    assert f"(line 3: '…{'x' * 50}\ufffd{'y' * 49}…')" in text


def test_an_encoding_error_in_a_cr_only_file_quotes_its_line_not_the_whole_file(tmp_path):
    rows = "1;c1;05.01.2024;100;;\r2;Иванов;05.01.2024;100;;\r3;c3;05.01.2024;100;;\r"
    text = encoding_error_text(tmp_path, HEADER.replace("\n", "\r").encode() + rows.encode("cp1251"), "utf-8")
    assert "(line 3: '2;\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd;05.01.2024;100;;')" in text


def test_an_encoding_error_in_utf16_quotes_whole_characters(tmp_path):
    data = "1;c1;05.01.2024;100;;\n2;c2;".encode("utf-16") + b"\x00\xd8" + "x;05.01.2024;100;;\n".encode("utf-16-le")
    text = encoding_error_text(tmp_path, data, "utf-16")
    assert "(line 2: '2;c2;\ufffdx;05.01.2024;100;;')" in text


def test_an_encoding_error_in_utf16_names_the_real_line_and_no_8_bit_encoding(tmp_path):
    """UTF-16 LE: `上` is the bytes 0A 4E and `Њ` 0A 04, not line breaks (main named line 749, not 251), and a
    UTF-16 file (its BOM) with a bad code unit is not offered cp1251, which "reads" any bytes."""
    rows = "".join(f"{i};Њикола上{i};05.01.2024;100;;\r\n" for i in range(1, 250))
    data = "\ufeff".encode("utf-16-le") + (HEADER.replace("\n", "\r\n") + rows).encode("utf-16-le")
    text = encoding_error_text(tmp_path, data + b"\x00\xd8" + "250;x;05.01.2024;100;;\r\n".encode("utf-16-le"),
                               "utf-16")
    assert "(line 251: '\ufffd250;x;05.01.2024;100;;')" in text
    assert text.endswith("fix that line, or set [source] encoding to the file's encoding") and "cp1251" not in text
    be = "\ufeff".encode("utf-16-be") + (HEADER + rows.replace("\r\n", "\n")).encode("utf-16-be")
    assert "(line 251: " in encoding_error_text(tmp_path, be + b"\xdc\x00", "auto")


def test_a_utf16_file_read_as_utf8_is_told_to_set_utf16_not_cp1251(tmp_path):
    """Excel's "Unicode text" (UTF-16 LE, BOM) with `encoding = "utf-8"` set: the error offers "utf-16", not an
    8-bit encoding that "reads" any bytes (cp1251 then fails to find the file's columns)."""
    data = "\ufeff".encode("utf-16-le") + HEADER.replace("\n", "\r\n").encode("utf-16-le") + \
        "".join(f"{i};Иван{i};05.01.2024;100;;\r\n" for i in range(1, 50)).encode("utf-16-le")
    text = encoding_error_text(tmp_path, data, "utf-8")
    assert text.endswith('set encoding = "auto" or "utf-16" in [source]') and "cp1251" not in text


def test_a_utf16_tsv_with_quoted_line_breaks_names_a_late_bad_rows_real_line(tmp_path):
    """Excel's "Unicode text": UTF-16 LE with a BOM, tabs, CRLF rows, LF inside quoted cells (a regression guard:
    main numbers these right too)."""
    name = {True: '"Иван\nПетров"', False: "Иван"}
    lines = ["Чек №\tКлиент\tДата\tСумма\tСтатус\tИмя"] + [
        f"{i}\tc{i}\t{'31.02.2024' if i == 2950 else '05.01.2024'}\t100\t\t{name[i % 7 == 0]}" for i in range(1, 3000)]
    (tmp_path / "sales.csv").write_bytes(b"\xff\xfe" + ("\r\n".join(lines) + "\r\n").encode("utf-16-le"))
    result, _ = pull(tmp_path)
    assert bad_rows(result) == [(2950 + 1 + 2949 // 7, "ordered_at", "31.02.2024")]  # a line more per quoted break


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_title_lines_above_the_header_of_a_cr_only_file_are_skipped(tmp_path, encoding):
    """CR-only line breaks (old Mac exports): the title lines are skipped as lines, not the whole file (main read
    past the file's end looking for a line feed and found no header), and rows keep their lines."""
    rows = ["Отчёт о продажах", "", HEADER.strip(), *(f"{i};c{i};05.01.2024;{'x' if i == 90 else 100};;"
                                                   for i in range(1, 100))]
    (tmp_path / "sales.csv").write_bytes(("\r".join(rows) + "\r").encode(encoding))
    result, _ = pull(tmp_path)
    assert result.orders == 98 and bad_rows(result) == [(93, "amount", "x")]
