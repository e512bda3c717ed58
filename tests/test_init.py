"""``rfmsync init EXPORT_FILE``: a config guessed from an export's header and sample, checked and segmented."""

from __future__ import annotations

import os
import time
import tomllib
from datetime import date
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from openpyxl import Workbook

from sync.cli import main
from sync.config import load_config
from sync.demodata import generate_shop
from tests.builders import run_cli as run

ROOT = Path(__file__).resolve().parents[1]




def init(export, cfg, *args, code=0):
    return run("init", str(export), "-o", str(cfg), *args, code=code)


def source(cfg: Path) -> dict:
    return tomllib.loads(cfg.read_text(encoding="utf-8"))["source"]


def test_billz_export_is_recognised_checked_and_segmented(tmp_path):
    cfg = tmp_path / "rfmsync.toml"
    out = init(ROOT / "examples/billz/sales-report.csv", cfg).output
    src = source(cfg)
    assert src["preset"] == "billz" and "columns" not in src
    assert src["delimiter"] == ";" and src["decimal"] == "," and src["encoding"] == "utf-8"
    assert src["phone_region"] == "UZ" and src["timezone"] == "Asia/Tashkent"
    assert Path(src["orders"]) == ROOT / "examples/billz/sales-report.csv"
    text = cfg.read_text(encoding="utf-8")
    assert 'decimal = ","' in text and "# guessed: check" in text and "Магазин, Продавец" in text
    assert "source file: 658 orders" in out and "Best active" in out and "Total" in out
    load_config(cfg)  # valid


def test_demo_shop_export_columns_are_guessed(tmp_path):
    shop = generate_shop(tmp_path / "shop", customers=120, seed=2, as_of=date(2025, 6, 30))
    cfg = tmp_path / "guessed.toml"
    out = init(shop.parent / "orders.csv", cfg).output
    src = source(cfg)
    assert "preset" not in src
    # "Клиент" holds codes (C00401) in this export: a customer id, not a name
    assert src["columns"] == {"ordered_at": "Дата", "order_id": "Чек №", "customer_id": "Клиент", "amount": "Сумма",
                              "phone": "Телефон", "email": "E-mail", "status": "Статус", "discount": "Скидка"}
    text = cfg.read_text(encoding="utf-8")
    assert 'amount = "Сумма"' in text and text.count("# guessed: check") >= 9
    assert "Best active" in out and "namesakes" not in out  # codes are ids: no word of names


def test_uzbek_cp1251_and_english_tsv_and_xlsx(tmp_path):
    uz = tmp_path / "savdo.csv"
    uz.write_text("Sana;Chek raqami;Mijoz;Telefon;Jami;Rozilik\n"
                  "05.06.2025 10:00;1;Aziz Karimov;+998901112233;120 000,50;ha\n"
                  "06.06.2025 11:30;2;Aziz Karimov;+998901112233;80 000,00;ha\n"
                  "07.06.2025 12:00;3;Olim Tursunov;+998935556677;45 000,00;yo'q\n", encoding="utf-8")
    cfg = tmp_path / "uz.toml"
    init(uz, cfg)
    assert source(cfg)["columns"] == {"ordered_at": "Sana", "order_id": "Chek raqami", "name": "Mijoz",
                                      "amount": "Jami", "phone": "Telefon", "marketing_consent": "Rozilik"}

    ru = tmp_path / "продажи.csv"
    ru.write_bytes("Дата продажи;Номер чека;Клиент;Телефон;Итого\n"
                   "01.06.2025;10;Иван Петров;+79161234567;1500,00\n".encode("cp1251"))
    init(ru, tmp_path / "ru.toml")
    src = source(tmp_path / "ru.toml")
    assert src["encoding"] == "cp1251" and src["phone_region"] == "RU" and src["decimal"] == ","
    assert src["columns"]["ordered_at"] == "Дата продажи" and src["columns"]["amount"] == "Итого"

    en = tmp_path / "orders.tsv"
    en.write_text("Date\tReceipt\tCustomer\tEmail\tTotal\n"
                  "06/15/2025 14:05\tR1\tAnn Lee\tann@example.com\t19.99\n"
                  "06/16/2025 09:00\tR2\tBob Ray\tbob@example.com\t5.50\n", encoding="utf-8")
    init(en, tmp_path / "en.toml")
    src = source(tmp_path / "en.toml")
    assert src["delimiter"] == "tab" and src["decimal"] == "." and src["date_format"] == "%m/%d/%Y %H:%M"
    assert src["timezone"] == "UTC" and src["columns"]["order_id"] == "Receipt"

    xlsx = tmp_path / "orders.xlsx"
    wb = Workbook()
    ws = wb.active
    ws.append(["Order date", "Order ID", "Customer", "Phone", "Amount"])
    ws.append(["2025-06-01 10:00", "A1", "Ann Lee", "+998901112233", 100.0])
    wb.save(xlsx)
    init(xlsx, tmp_path / "x.toml")
    src = source(tmp_path / "x.toml")
    assert "delimiter" not in src and src["columns"]["ordered_at"] == "Order date"


def test_existing_config_is_kept_without_force(tmp_path):
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text("# mine\n", encoding="utf-8")
    export = ROOT / "examples/billz/sales-report.csv"
    result = init(export, cfg, code=2)
    assert f"{cfg} exists: rerun with --force to overwrite it" in result.output
    assert cfg.read_text(encoding="utf-8") == "# mine\n"
    init(export, cfg, "--force")
    assert source(cfg)["preset"] == "billz"


def test_unguessable_headers_and_missing_file_are_exit_2(tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text("foo;bar\n1;2\n", encoding="utf-8")
    result = init(odd, tmp_path / "c.toml", code=2)
    assert "cannot tell which column is the order date nor the order total" in result.output
    assert "'foo', 'bar'" in result.output and not (tmp_path / "c.toml").exists()
    assert "no such file" in init(tmp_path / "nope.csv", tmp_path / "c.toml", code=2).output


@pytest.mark.parametrize("stdin", ["", "y\n"])
def test_never_prompts(tmp_path, stdin):
    cfg = tmp_path / "rfmsync.toml"
    result = CliRunner().invoke(main, ["init", str(ROOT / "examples/billz/sales-report.csv"), "-o", str(cfg)],
                                input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _init_rows(tmp_path, rows: list[str]) -> tuple[dict, str]:
    """`rfmsync init` on ``report.csv`` of these lines: the written [source] table and the command's output."""
    export, cfg = tmp_path / "report.csv", tmp_path / "rfmsync.toml"
    export.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = init(export, cfg).output
    return source(cfg), out


def test_a_title_above_the_header_is_skipped_and_written_as_skip_lines(tmp_path):
    """A 1C-style report: a title line and a blank line above the header."""
    src, out = _init_rows(tmp_path, ["Отчёт о продажах за ноябрь 2026;;;", ";;;", "Чек №;Клиент;Дата;Сумма",
            *(f"{i};C{i % 7};{1 + i % 28:02d}.11.2026;{100 + i},50" for i in range(1, 40))])
    assert src["skip_lines"] == 2 and src["delimiter"] == ";" and src["decimal"] == ","
    assert src["columns"]["ordered_at"] == "Дата" and src["columns"]["amount"] == "Сумма"
    assert "source file: 39 orders" in out


def test_init_finds_the_header_the_reader_finds_below_a_title_with_a_comma(tmp_path):
    """`Отчёт о продажах, магазин №1` above a `;` header: two cells read with ',', yet a title (one detector)."""
    src, out = _init_rows(tmp_path, ["Отчёт о продажах, магазин №1", "Чек №;Клиент;Дата;Сумма",
            *(f"{i};C{i % 7};{1 + i % 28:02d}.11.2026;{100 + i},50" for i in range(1, 40))])
    assert src["skip_lines"] == 1 and src["delimiter"] == ";" and src["columns"]["amount"] == "Сумма"
    assert "source file: 39 orders" in out


def test_init_takes_a_header_with_an_empty_cell_not_the_first_data_row(tmp_path):
    """1C's unnamed `№` column (a pandas `to_csv` header starts `,` too) below a title: the header holds fewer
    non-empty cells than each data row, yet it is the header (its field count is the rows')."""
    src, out = _init_rows(tmp_path, ["Отчёт о продажах", ";Чек;Клиент;Дата;Сумма",
            *(f"{i};{500 + i};C{i % 7};{1 + i % 28:02d}.11.2026;{100 + i},50" for i in range(1, 40))])
    assert src["skip_lines"] == 1 and src["delimiter"] == ";"
    assert src["columns"]["ordered_at"] == "Дата" and src["columns"]["amount"] == "Сумма"
    assert "source file: 39 orders" in out


_ROWS = "".join(f"{i};0{i}.11.2026;c{i};{i}00,50;2\n" for i in range(1, 6))
_HEADER = ["Номер", "Дата", "Клиент", "Сумма", "Кол"]


@pytest.mark.parametrize("text, skip, headers", [
    ("№;Дата;Клиент;Сумма;Кол\n" + _ROWS, 0, ["№", *_HEADER[1:]]),
    (";Дата;Клиент;Сумма;Кол\n" + _ROWS, 0, ["", *_HEADER[1:]]),
    (",id,date,customer,amount\n" + "".join(f"{i},{i},2026-11-0{i + 1},c{i},1{i}.5\n" for i in range(5)), 0,
     ["", "id", "date", "customer", "amount"]),
    ("Отчёт о продажах;;;;\n;;;;\nНомер;Дата;Клиент;Сумма;Кол\n" + _ROWS, 2, _HEADER),
    ("Период:;01.11.2026 - 30.11.2026;;;\nНомер;Дата;Клиент;Сумма;Кол\n" + _ROWS, 1, _HEADER),
    ("Отчёт о продажах;;;;\nОрганизация:;ООО Ромашка;;;\n;;;;\nНомер;Дата;Клиент;Сумма;Кол\n" + _ROWS, 3, _HEADER),
    ("Номер;Дата;Клиент;Сумма;Кол\n" + _ROWS.replace("\n", ";\n"), 0, _HEADER),
    ("Отчёт\nНомер;Дата;Клиент;Сумма;Кол\n" + _ROWS.replace("\n", ";\n"), 1, _HEADER),
    ("Период:;01.11.2026 - 30.11.2026;\nНомер;Дата;Сумма\n" + "".join(f"{i};0{i}.11.2026;{i}00,50\n"
                                                                      for i in range(1, 6)), 1, ["Номер", "Дата", "Сумма"]),
    (",,order_id,email,amount\n" + "".join(f"{i},x{i},O{i},c{i}@example.com,1{i}.5\n" for i in range(5)), 0,
     ["", "", "order_id", "email", "amount"]),
    ("Отчёт о продажах;;;;;\nЗаказ;Дата;;Клиент;;Сумма\n" + "".join(f"O{i};0{i}.11.2026;;c{i};;{i}00\n"
                                                                   for i in range(1, 6)), 1,
     ["Заказ", "Дата", "", "Клиент", "", "Сумма"]),
    ("Организация:;ООО Ромашка\nНомер;Дата;Сумма\n" + "".join(f"{i};0{i}.11.2026;{i}00,50\n" for i in range(1, 6)),
     1, ["Номер", "Дата", "Сумма"]),
    ("Отчёт о продажах;магазин №1\n\nНомер;Дата;Сумма\n" + "".join(f"{i};0{i}.11.2026;{i}00,50\n" for i in range(1, 6)),
     2, ["Номер", "Дата", "Сумма"]),
    ("Номер;Дата;Сумма\n" + "".join(f"{i};0{i}.11.2026;{i}00,50;x\n" for i in range(1, 6)), 0, ["Номер", "Дата", "Сумма"]),
], ids=["1c-numbered", "1c-unnamed-column", "pandas-index", "title-padded", "period-title-padded",
        "two-titles-padded", "rows-trailing-delimiter", "title-and-rows-trailing-delimiter", "period-above-3-columns",
        "two-unnamed-columns", "title-above-a-header-with-two-empty-cells", "2-cell-title-above-3-columns",
        "2-cell-title-and-blank-above-3-columns", "header-one-short-of-its-rows"])
def test_init_header_below_padded_titles_and_above_rows_ending_in_the_delimiter(tmp_path, text, skip, headers):
    """Excel titles padded with `;` hold fewer cells than the header; data rows ending in `;` hold an empty cell
    more than a header that does not; a 2-cell title of a period (mostly a date) above a 3-column table."""
    from connectors.guess import read_sample
    export = tmp_path / "s.csv"
    export.write_text(text, encoding="utf-8")
    sample = read_sample(export)
    assert (sample.skip, sample.headers) == (skip, headers)


def test_init_skips_a_padded_period_title(tmp_path):
    src, out = _init_rows(tmp_path, ["Период:;01.11.2026 - 30.11.2026;;", "Чек №;Клиент;Дата;Сумма",
            *(f"{i};C{i % 7};{1 + i % 28:02d}.11.2026;{100 + i},50" for i in range(1, 40))])
    assert src["skip_lines"] == 1 and src["columns"]["amount"] == "Сумма"
    assert "source file: 39 orders" in out


def test_init_skips_a_1c_title_block_of_16_lines(tmp_path):
    from tests.test_files import TITLE_BLOCK
    src, out = _init_rows(tmp_path, [*TITLE_BLOCK, "Чек №;Клиент;Дата;Сумма",
            *(f"{i};C{i % 7};{1 + i % 28:02d}.11.2026;{100 + i},50" for i in range(1, 40))])
    assert src["skip_lines"] == 16 and src["columns"]["amount"] == "Сумма"
    assert "source file: 39 orders" in out


_CASHIERS = ["Азиз", "Дилноза", "Бобур", "Севара"]
_NOTE_TABLES = {  # above the rows; the rows; the note typed beside one; the lines skipped; the header's cells
    "header": (["Номер;Клиент;Дата;Сумма;;"], [f"{i};C{i % 7};{1 + i % 28:02d}.11.2026;{100 + i},50;;"
                                               for i in range(1, 41)], "проверить", 0,
               ["Номер", "Клиент", "Дата", "Сумма", "", ""]),
    "no-header": ([], [f"{i};C{i % 7};{1 + i % 28:02d}.11.2026;{100 + i},50;;" for i in range(1, 41)], "проверить",
                  0, None),
    # BILLZ: half of each row is text (shop, cashier, product), so the row with the note is not mostly values
    "billz": (["Чек;Дата;Магазин;Кассир;Товар;Сумма"],
              [f"{1000 + i};{1 + i % 28:02d}.11.2026 14:03;Chilonzor;{_CASHIERS[i % 4]};Coca-Cola 1.5L;{12000 + i}"
               for i in range(1, 41)], ";;возврат", 0, ["Чек", "Дата", "Магазин", "Кассир", "Товар", "Сумма"]),
    # 1C: a title block above document rows of text
    "1c": (["Продажи за ноябрь 2026", "Организация:;ООО Ромашка", "", "Документ;Контрагент;Склад;Сумма"],
           [f"Реализация товаров {i:06d} от {1 + i % 28:02d}.11.2026;Иванов И.И.;Основной склад;{100 + i},50"
            for i in range(1, 41)], ";;см. претензию", 3, ["Документ", "Контрагент", "Склад", "Сумма"]),
}


@pytest.mark.parametrize("table", list(_NOTE_TABLES))
@pytest.mark.parametrize("at", [5, 30])
def test_init_header_is_no_data_row_with_a_note_beside_the_table(tmp_path, table, at):
    """A note typed two columns right of the table on one data row (Excel pads every row to the used range): that
    row spans furthest, yet it neither sets the width a header must reach (the most common span of the lines
    below does), even when its cells are mostly text (BILLZ, 1C documents), nor is taken as the header when no
    line reaches it; without a header line nothing is skipped."""
    from connectors.guess import read_sample
    above, rows, note, skip, headers = _NOTE_TABLES[table]
    rows = list(rows)
    rows[at - 1] += note
    export = tmp_path / "s.csv"
    export.write_text("\n".join([*above, *rows]) + "\n", encoding="utf-8")
    sample = read_sample(export)
    assert sample.skip == skip
    if headers:
        assert sample.headers == headers


@pytest.mark.parametrize("lines, skip, headers", [
    (["Отчет по продажам;", "Период:;01.11.2026 - 30.11.2026", "Склад:;Основной", "Менеджер:;Петров",
      "Дата;Клиент;Сумма;Скидка;Итого", "01.11.2026;Иван;100;0;100", "02.11.2026;Анна;50;5;45",
      "03.11.2026;Олег;70;0;70", "Итого:;220", "Подпись:;____", "Главбух:;____", "Дата печати:;30.11.2026"],
     4, ["Дата", "Клиент", "Сумма", "Скидка", "Итого"]),
    (["Организация:;ООО Ромашка", "Склад:;Основной", "Контрагент:;Все", "Валюта:;UZS", "",
      "Дата;Документ;Клиент;Сумма;Менеджер", "01.11.2026;Реализация 1;Иван;150.000;Петров"],
     5, ["Дата", "Документ", "Клиент", "Сумма", "Менеджер"]),
])
def test_init_header_of_a_small_report_is_not_a_two_cell_title_or_footer_line(tmp_path, lines, skip, headers):
    """A small 1C report: a title block of 2-cell lines (`Склад:;Основной`) and a signature footer outnumber its
    few table rows; they do not set the width a header must reach (only lines of 3 cells or more do), so the
    table's header is found, not a title line (before: skip 0 or 2, `Организация:`/`Склад:` taken as headers)."""
    from connectors.guess import read_sample
    export = tmp_path / "s.csv"
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sample = read_sample(export)
    assert sample.skip == skip and sample.headers[:5] == headers


@pytest.mark.parametrize("rows", [["вчера;Иван Петров;сто;примечание"],
                                  ["вчера;Иван Петров;сто;примечание", "сегодня;Анна;двести;x"]],
                         ids=["one-text-row", "two-text-rows"])
def test_init_header_above_text_only_data_rows_spanning_further_is_the_header(tmp_path, rows):
    """Data rows of text only (no number or date: `вчера`, `сто`) with a note beside them: by the lines' shapes
    the first row was the header below a 2-cell-short title, and init stopped with "cannot tell which column is the
    order date nor the order total from the headers 'вчера', 'Иван Петров', …"; the line of known header names is
    the header. Then the date that cannot be read is said (exit 3), the config written for the user to correct."""
    from connectors.guess import read_sample
    export, cfg = tmp_path / "report.csv", tmp_path / "rfmsync.toml"
    export.write_text("\n".join(["Дата;Клиент;Сумма", *rows]) + "\n", encoding="utf-8")
    sample = read_sample(export)
    assert (sample.skip, sample.headers) == (0, ["Дата", "Клиент", "Сумма"])
    out = init(export, cfg, code=3).output
    said = "1 of 1 row has" if len(rows) == 1 else f"{len(rows)} of {len(rows)} rows have"  # (singular, plural)
    assert f"{said} a date in column 'Дата' that cannot be read (e.g. 'вчера'" in out
    assert source(cfg)["columns"] == {"ordered_at": "Дата", "amount": "Сумма", "customer_id": "Клиент"}


def test_init_maps_a_names_only_customer_column_as_the_customer_id_and_says_so(tmp_path):
    """Customers named only (no code, e-mail or phone column): before, the column was mapped as `name` and the
    config written failed its own check ("must map customer_id, email or phone"); now it is the customer id, with a
    note saying namesakes are one customer, and the same said on screen. No customer column at all: exit 2 naming the headers, no config."""
    src, out = _init_rows(tmp_path, ["Дата;Клиент;Сумма", *(f"0{i}.11.2026;Иван Петров {i};{i}00" for i in range(1, 6))])
    assert src["columns"] == {"ordered_at": "Дата", "amount": "Сумма", "customer_id": "Клиент"}
    assert "source file: 5 orders" in out
    said = out[out.index("wrote "):]  # said on screen too, after the line naming the config written
    assert said.index("no customer code, e-mail or phone column found: the names in column 'Клиент' are the customer "
                      "ids, so namesakes count as one customer in the segments; map a code, e-mail or phone column "
                      "under [source.columns] if the export has one") < said.index("source file: 5 orders")
    text = (tmp_path / "rfmsync.toml").read_text(encoding="utf-8")
    assert 'customer_id = "Клиент"  # guessed: check (the names as customer ids, no code, e-mail or phone column ' \
           "found: namesakes are one customer)" in text
    export = tmp_path / "sales.csv"
    export.write_text("Дата;Сумма;Товар\n01.11.2026;100;хлеб\n", encoding="utf-8")
    result = init(export, tmp_path / "other.toml", code=2)
    assert (f"{export}: cannot tell which column identifies the customers (a customer code, e-mail or phone) from "
            "the headers 'Дата', 'Сумма', 'Товар'; map one under [source.columns]") in result.output
    assert not (tmp_path / "other.toml").exists()


@pytest.mark.parametrize("header", ["ФИО", "ФИО покупателя", "Покупатель", "Customer name", "Client name"])
def test_init_maps_a_names_only_column_under_another_name_header_as_the_customer_id(tmp_path, header):
    """Headers of a customer's full name (``ФИО``, ``Customer name``): before, not known, so init stopped with
    "cannot tell which column identifies the customers" (exit 2) though the names could be the ids, as under
    ``Клиент``."""
    src, out = _init_rows(tmp_path, [f"Дата;{header};Сумма", *(f"0{i}.11.2026;Иван Петров {i};{i}00" for i in range(1, 6))])
    assert src["columns"] == {"ordered_at": "Дата", "amount": "Сумма", "customer_id": header}
    assert f"the names in column '{header}' are the customer ids" in out


_ROWS = "order_id,date,amount,customer\n" + "".join(f"{i},2025-06-{1 + i % 28:02d},{100 + i}.50,c{i % 7}\n"
                                                   for i in range(1, 40))


def test_init_reads_a_fresh_8bit_export_ending_in_a_byte_utf8_begins_a_character_with(tmp_path, caplog):
    """A cp1251 export ASCII but for its last letter, «Д» (0xC4, which begins a 2-byte UTF-8 character), saved a
    moment ago without a final line break. Before, `init` wrote `encoding = "utf-8"  # detected`, then its `check`
    took the file for a UTF-8 copy cut short and exited 3 (an hour's wait, then a wrong encoding set): a file named
    on the command line is no copy under way, so it is read for what it is, the encoding marked as a guess."""
    export, cfg = tmp_path / "day.csv", tmp_path / "rfmsync.toml"
    export.write_bytes((_ROWS + "40,2025-06-12,140.50,A-17Д").encode("cp1251"))
    out = init(export, cfg).output
    assert source(cfg)["encoding"] == "auto"  # cp1251 or a UTF-8 copy cut short: decided again each run
    assert ('encoding = "auto"  # guessed: check (cp1251, or a UTF-8 copy cut short? auto decides again each run)'
            in cfg.read_text("utf-8"))
    assert "source file: 40 orders" in out and "0 bad rows" in out
    assert f"{export}: ASCII text but for its last row's byte(s) (c4)" in caplog.text
    assert "named on the command line, so it is no file cut short: read as cp1251" in caplog.text


def test_init_on_a_utf8_copy_ascii_until_a_cut_last_letter_writes_auto_so_the_finished_copy_reads_as_utf8(
        tmp_path, monkeypatch):
    """A UTF-8 export ASCII until its last row, copied a moment ago and cut after the first byte of «Д»: its
    bytes are those of a cp1251 file ending in «Р». Before, `init` wrote `encoding = "cp1251"  # guessed: check`
    (exit 0), and once the copy finished `pull` stored the names as mojibake with "0 bad records". Now it writes
    `encoding = "auto"`, so each run decides again: the finished copy reads as UTF-8."""
    monkeypatch.chdir(tmp_path)
    export, cfg = tmp_path / "day.csv", tmp_path / "rfmsync.toml"
    full = (_ROWS + "40,2025-06-12,140.50,Дмитрий Петров\n41,2025-06-13,99.00,Анна Смирнова\n").encode()
    export.write_bytes(full[:len((_ROWS + "40,2025-06-12,140.50,").encode()) + 1])
    init(export, cfg)
    assert source(cfg)["encoding"] == "auto"
    export.write_bytes(full)  # the copy finished
    old = time.time() - 7200
    os.utime(export, (old, old))
    assert "pulled 41 orders" in run("pull", "--config", str(cfg)).output
    with duckdb.connect(str(tmp_path / "rfmsync.duckdb"), read_only=True) as db:
        names = db.execute("SELECT customer_id FROM orders WHERE order_id IN ('40', '41') ORDER BY 1").fetchall()
    assert names == [("Анна Смирнова",), ("Дмитрий Петров",)]


def test_init_on_a_utf8_export_cut_inside_a_character_writes_no_config_and_says_why(tmp_path):
    """UTF-8 text cut after the first byte of «н»: before, `init` wrote the config, then its `check` exited 3 (a
    copy under way: run again in an hour), leaving a config for a file nobody can read. Now nothing is written
    and the error names the byte, its line and the file not written, without an hour's wait it would not need."""
    export, cfg = tmp_path / "day.csv", tmp_path / "rfmsync.toml"
    data = (_ROWS + "40,2025-06-12,140.50,Иван").encode()[:-1]
    export.write_bytes(data)
    out = init(export, cfg, code=3).output
    assert not cfg.exists()
    assert (f"{export}: the file ends inside a character at byte {len(data) - 1} (line 41: "
            f"'40,2025-06-12,140.50,Ива\ufffd'): it was cut short") in out
    assert f"{cfg} was not written" in out and "60 minutes" not in out
