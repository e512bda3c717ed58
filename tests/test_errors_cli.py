"""Errors that never crash and never lose text: literal user text, broken files, "did you mean", env typos."""

from __future__ import annotations

import csv
import io
import logging
import tempfile
import zipfile
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from sync.cli import main
from sync.cli.output import visible

from tests.profiles import examples

AS_OF = "2025-03-01"
OK_CODES = {0, 2, 3}


def toml_str(s: str) -> str:
    """A TOML basic string holding exactly ``s`` (any Unicode, control characters escaped)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isascii() and ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def write_shop(folder: Path, *, amount: str = "amount", rows=None, extra: str = "", header=None) -> Path:
    header = header or ["client", "date", "amount"]
    rows = rows if rows is not None else [["a", "2025-01-01", "10"], ["b", "2025-02-01", "20"]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    (folder / "orders.csv").write_text(buf.getvalue(), encoding="utf-8")
    cfg = folder / "rfmsync.toml"
    if "[[destinations]]" not in extra:  # `plan` needs somewhere to sync to (no credentials: nothing is read)
        extra += '[[destinations]]\nname = "esp"\ntype = "sendgrid"\n'
    cfg.write_text(f'[source]\norders = "orders.csv"\n[source.columns]\ncustomer_id = "client"\n'
                   f'ordered_at = "date"\namount = {toml_str(amount)}\n{extra}', encoding="utf-8")
    return cfg


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_clean(result, codes=OK_CODES):
    assert result.exit_code in codes, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception


# ------------------------------------------------------------------------------ literal user text

def test_markup_in_a_column_name_is_printed_literally(tmp_path):
    cfg = write_shop(tmp_path, amount="Сумма [/сум]")  # the file's header is "amount": not found
    result = cli("check", "--config", str(cfg))
    assert_clean(result, {2})
    assert "amount = 'Сумма [/сум]'" in result.output
    assert "error: " in result.output and "internal error" not in result.output


def test_brackets_in_messages_are_not_lost(tmp_path):
    (tmp_path / "rfmsync.toml").write_text('[source]\norders = "o.csv"\n[source.columns]\nordered_atx = "d"\n',
                                           encoding="utf-8")
    result = cli("check", "--config", str(tmp_path / "rfmsync.toml"))
    assert_clean(result, {2})
    assert "(put other columns under [source.attributes])" in result.output
    assert "did you mean 'ordered_at'?" in result.output


def test_control_characters_are_shown_escaped_never_raw_or_dropped(tmp_path):
    name = "VIP\x1b[31m [/x]\x00\u202ez"
    extra = f"[[segmentation.rules]]\nname = {toml_str(name)}\nmatch = [\"R1\", \"R2\", \"R3\"]\n"
    result = cli("segments", "--config", str(write_shop(tmp_path, extra=extra)), "--as-of", AS_OF)
    assert_clean(result, {0})
    assert "\x1b" not in result.output and "\x00" not in result.output and "\u202e" not in result.output
    assert "VIP\\x1b[31m [/x]\\x00\\u202ez" in result.output


def test_visible_escapes_only_unsafe_characters():
    assert visible("Сумма [/сум] 😀 שלום\tx\n") == "Сумма [/сум] 😀 שלום\tx\n"
    assert visible("\x1b[2J\x00\x9b\r\u2066") == "\\x1b[2J\\x00\\x9b\\x0d\\u2066"


NASTY = ["Сумма [/сум]", "[bold]x", "[/]", "\x1b[31mred\x1b[0m", "a\x00b", "שלום [/x]", "😀 [/😀]", ":smile:",
         "\u202eevil", "tab\there", "line\nbreak"]
anything = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10)
names = st.one_of(anything, st.sampled_from(NASTY), st.tuples(anything, anything).map(lambda t: f"{t[0]}[/{t[1]}]"))\
    .filter(lambda s: s.strip() and s.strip().casefold() not in ("client", "date", "amount"))


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names)
def test_any_missing_column_name_is_named_literally_by_check_segments_and_plan(name):
    with tempfile.TemporaryDirectory() as d:
        cfg = write_shop(Path(d), amount=name)
        for args in (["check"], ["segments", "--as-of", AS_OF], ["plan", "--as-of", AS_OF]):
            result = cli(*args, "--config", str(cfg))
            assert_clean(result, {2})
            assert repr(name) in result.output  # repr shows control characters as escapes: never raw


table_names = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n"), min_size=1, max_size=8),
    st.sampled_from([n for n in NASTY if "\t" not in n and "\n" not in n])).map(str.strip).filter(
    lambda s: s and s not in ("Total", "Other", "Churn", "Beginners", "Best active", "Falling asleep"))


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segment=table_names, destination=table_names)
def test_segment_and_destination_names_appear_literally_in_segments_and_plan(segment, destination):
    extra = (f"[[segmentation.rules]]\nname = {toml_str(segment)}\nmatch = [\"R1\", \"R2\", \"R3\"]\n"
             f"[[destinations]]\nname = {toml_str(destination)}\ntype = \"sendgrid\"\n"
             f"[destinations.segments]\n{toml_str(segment)} = {toml_str(segment)}\n")
    with tempfile.TemporaryDirectory() as d:
        cfg = write_shop(Path(d), extra=extra)
        seg = cli("segments", "--config", str(cfg), "--as-of", AS_OF)
        assert_clean(seg)
        if seg.exit_code == 0:
            assert visible(segment) in seg.output
        plan = cli("plan", "--config", str(cfg), "--as-of", AS_OF)
        assert_clean(plan)
        if plan.exit_code == 0:
            assert visible(destination) in plan.output and visible(segment) in plan.output
        for text in (seg.output, plan.output):
            assert "\x1b" not in text and "\x00" not in text


values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                 min_size=1, max_size=12).map(str.strip).filter(bool)


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=values, value=values)
def test_any_header_and_cell_text_goes_through_check_without_a_crash(header, value):
    with tempfile.TemporaryDirectory() as d:
        rows = [[value, "2025-01-01", "10"], ["b", "2025-02-01", "20"], ["c", "2025-02-03", value]]
        cfg = write_shop(Path(d), header=["client", "date", header], amount=header, rows=rows)
        result = cli("check", "--config", str(cfg))
        assert_clean(result)
        if result.exit_code:
            assert str(Path(d) / "orders.csv") in result.output or "orders.csv" in result.output
        elif "amount: unparseable" in result.output:
            assert repr(value) in result.output
        assert "\x1b" not in result.output and "\x00" not in result.output


# ------------------------------------------------------------------------------ empty and broken files

def _xlsx_shop(tmp_path: Path, data: bytes) -> Path:
    (tmp_path / "orders.xlsx").write_bytes(data)
    cfg = write_shop(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("orders.csv", "orders.xlsx"), encoding="utf-8")
    return cfg


def _good_xlsx() -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["client", "date", "amount"])
    for i in range(500):
        ws.append([f"c{i}", "2025-01-01", i + 1])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


@pytest.mark.parametrize("case, data, words", [
    ("0-byte", b"", "the file is empty (0 bytes)"),
    ("not a zip", b"name,date\nx,y\n", "not a readable XLSX file"),
    ("truncated", None, "not a readable XLSX file"),
])
def test_broken_xlsx_is_one_line_exit_3(tmp_path, case, data, words):
    if data is None:
        good = _good_xlsx()
        data = good[: len(good) // 2]
    result = cli("check", "--config", str(_xlsx_shop(tmp_path, data)))
    assert_clean(result, {3})
    assert f"{tmp_path / 'orders.xlsx'}: {words}" in result.output


def test_truncated_xlsx_with_a_valid_directory_is_still_a_clear_error(tmp_path):
    good = io.BytesIO(_good_xlsx())
    broken = io.BytesIO()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            dst.writestr(item, body[: len(body) // 2] if item.filename.endswith("sheet1.xml") else body)
    result = cli("check", "--config", str(_xlsx_shop(tmp_path, broken.getvalue())))
    assert_clean(result, {3})
    assert f"{tmp_path / 'orders.xlsx'}: not a readable XLSX file" in result.output


def test_truncated_parquet_is_one_line_exit_3(tmp_path):
    full = tmp_path / "full.parquet"
    duckdb.sql(f"COPY (SELECT 'c' || range AS client, DATE '2025-01-01' AS date, range + 1 AS amount FROM range(500))"
               f" TO '{full}'")
    data = full.read_bytes()
    (tmp_path / "orders.parquet").write_bytes(data[: len(data) // 2])
    cfg = write_shop(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("orders.csv", "orders.parquet"), encoding="utf-8")
    result = cli("check", "--config", str(cfg))
    assert_clean(result, {3})
    assert f"{tmp_path / 'orders.parquet'}: not a readable Parquet file" in result.output


def test_zero_byte_csv_is_one_line_exit_3(tmp_path):
    cfg = write_shop(tmp_path)
    (tmp_path / "orders.csv").write_bytes(b"")
    result = cli("check", "--config", str(cfg))
    assert_clean(result, {3})
    assert f"{tmp_path / 'orders.csv'}: the file is empty (0 bytes)" in result.output


@pytest.mark.parametrize("command", [["check"], ["segments", "--as-of", AS_OF], ["plan", "--as-of", AS_OF]])
def test_header_only_csv_is_no_data_rows_not_a_table_of_zeros(tmp_path, command):
    cfg = write_shop(tmp_path, rows=[])
    result = cli(*command, "--config", str(cfg))
    assert_clean(result, {3})
    assert f"{tmp_path / 'orders.csv'}: no data rows (only a header)" in result.output


def test_cp1251_file_read_as_utf8_names_file_offset_and_encodings(tmp_path):
    cfg = write_shop(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("[source]\n", '[source]\nencoding = "utf-8"\n'),
                   encoding="utf-8")
    (tmp_path / "orders.csv").write_bytes("client,date,amount\nИван,2025-01-01,10\n".encode("cp1251"))
    result = cli("check", "--config", str(cfg))
    assert_clean(result, {2})
    assert (f'{tmp_path / "orders.csv"}: not valid utf-8 text at byte 19 (line 2: '
            f"'\ufffd\ufffd\ufffd\ufffd,2025-01-01,10'); set encoding = \"auto\" or \"cp1251\" in [source]") in result.output
    assert "Invalid Input Error" not in result.output


def test_first_bad_byte_is_the_file_offset_across_chunks(tmp_path):
    from connectors.file_encoding import first_bad_byte

    path = tmp_path / "x.csv"
    path.write_bytes(b"a" * (1 << 22) + b"\xff\xfe" + "я".encode("utf-8"))
    assert first_bad_byte(path, "utf-8") == 1 << 22
    assert first_bad_byte(path, "cp1251") is None


def test_mostly_unreadable_dates_suggest_date_format_with_two_examples(tmp_path):
    rows = [[f"c{i}", f"12/{10 + i}/2024", "10"] for i in range(10)] + [["z", "2025-01-01", "5"]]
    cfg = write_shop(tmp_path, rows=rows)
    for command in (["check"], ["segments", "--as-of", AS_OF]):
        result = cli(*command, "--config", str(cfg))
        assert_clean(result, {3})
        assert (f"{tmp_path / 'orders.csv'}: 10 of 11 rows have a date in column 'date' that cannot be read "
                f"(e.g. '12/") in result.output
        assert 'set [source] date_format = "%m/%d/%Y"' in result.output


def test_mostly_unreadable_dates_name_the_date_format_that_is_set_instead_of_asking_for_one(tmp_path):
    """A ``date_format`` set in [source] that does not read the dates: the message names it (and the format that
    would read them), never "set [source] date_format" as if none were set."""
    rows = [[f"c{i}", f"12/{10 + i}/2024", "10"] for i in range(10)]
    cfg = write_shop(tmp_path, rows=rows)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("[source]\n", '[source]\ndate_format = "%d.%m.%Y"\n', 1),
                   encoding="utf-8")
    result = cli("check", "--config", str(cfg))
    assert_clean(result, {3})
    assert (f"{tmp_path / 'orders.csv'}: 10 of 10 rows have a date in column 'date' that [source] date_format = "
            '"%d.%m.%Y" cannot read (e.g. \'12/') in result.output
    assert '"%m/%d/%Y" reads them' in result.output
    assert "set [source] date_format" not in result.output


@pytest.mark.parametrize("date_format", [None, "%d.%m.%Y"])
def test_excel_serial_day_numbers_in_a_csv_say_what_they_are_not_which_date_format_to_set(tmp_path, date_format):
    """A sheet saved as CSV with its dates formatted General: `45321`, `45322,5`. Before, the advice was to set
    date_format ("%m/%d/%Y"), which can never read a serial day: now the message says what the column holds and
    how to export it (dates as text, or the workbook as XLSX, whose serial days the reader reads)."""
    rows = [[f"c{i}", f"4532{i}" + (",5" if i == 1 else ""), "10"] for i in range(5)]
    cfg = write_shop(tmp_path, rows=rows)
    if date_format:
        text = cfg.read_text(encoding="utf-8")
        cfg.write_text(text.replace("[source]\n", f'[source]\ndate_format = "{date_format}"\n', 1), encoding="utf-8")
    result = cli("check", "--config", str(cfg))
    assert_clean(result, {3})
    assert (f"{tmp_path / 'orders.csv'}: 5 of 5 rows have Excel serial day numbers in column 'date' (e.g. '45320', "
            "'45321,5'; 45320 is 2024-01-29), which no date_format reads in a CSV file; export the dates as text "
            "(format the column as a date, e.g. dd.mm.yyyy, before saving the CSV), or save the workbook as XLSX and "
            "read that (its serial day numbers are read as dates)") in visible(result.output).replace("\n", " ")
    assert "%m/%d/%Y" not in result.output


def test_a_few_bad_dates_stay_bad_rows(tmp_path):
    rows = [[f"c{i}", "2025-01-0" + str(1 + i % 9), "10"] for i in range(30)] + [["z", "13/13/2024", "5"]]
    result = cli("check", "--config", str(write_shop(tmp_path, rows=rows)))
    assert_clean(result, {0})  # 1 of 31 rows (3.2 %): under [guards] max_bad_rows_pct
    assert "30 orders" in result.output and "1 bad row\n" in result.output  # (file31: not "1 bad rows")
    strict = cli("check", "--config", str(write_shop(tmp_path, rows=rows)), "--strict")
    assert_clean(strict, {3})
    assert strict.output.splitlines()[-1] == "error: 1 bad row"  # (before: "1 bad rows")


# ------------------------------------------------------------------------------ did you mean

@pytest.mark.parametrize("toml, expected", [
    ('[source]\nordres = "o.csv"\n', "source.ordres: unknown key 'ordres' (did you mean 'orders'?)"),
    ('[source]\norders = "o.csv"\n[source.columns]\nordered_at = "d"\namount = "a"\ncustomer_id = "c"\n'
     '[segmentation]\npreset = "trakcs"\n', "unknown preset 'trakcs' (did you mean 'tracks'?)"),
    ('[segmentation.boundary]\nwindw_days = 3\n',
     "segmentation.boundary.windw_days: unknown key 'windw_days' (did you mean 'window_days'?)"),
    ('[[destinations]]\nname = "x"\ntype = "mailchip"\naudience = "a"\n', "(did you mean 'mailchimp'?)"),
    ('[[destinations]]\nname = "x"\ntype = "sendgrid"\nlist_prefx = "a"\n',
     "destinations.0.list_prefx: unknown key 'list_prefx' (did you mean 'list_prefix'?)"),
    ('[stor]\nurl = "x"\n', "stor: unknown key 'stor' (did you mean 'store'?)"),
    ('[source]\ntype = "retailcmr"\n', "got 'retailcmr' (did you mean 'retailcrm'?)"),
    ('[source]\norders = "o.csv"\npreset = "bilz"\n[source.columns]\nordered_at = "d"\n',
     "unknown preset 'bilz' (did you mean 'billz'?)"),
    ('[source]\norders = "o.csv"\n[source.columns]\nordred_at = "d"\n', "'ordred_at' (did you mean 'ordered_at'?)"),
    ('[source]\ntype = "retailcrm"\nurl = "https://x.retailcrm.ru"\npage_sise = 3\n',
     "source.page_sise: unknown key 'page_sise' (did you mean 'page_size'?)"),
])
def test_did_you_mean_for_config_mistakes(tmp_path, toml, expected):
    (tmp_path / "rfmsync.toml").write_text(toml, encoding="utf-8")
    result = cli("check", "--config", str(tmp_path / "rfmsync.toml"))
    assert_clean(result, {2})
    assert expected in result.output


def test_closest_header_for_a_missing_mapped_column(tmp_path):
    result = cli("check", "--config", str(write_shop(tmp_path, amount="Amount ")))
    assert_clean(result, {0})  # case and surrounding spaces are ignored already
    result = cli("check", "--config", str(write_shop(tmp_path, amount="amont")))
    assert_clean(result, {2})
    assert "amount = 'amont' (closest header: 'amount')" in result.output


def test_closest_file_name_when_no_file_matches(tmp_path):
    cfg = write_shop(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('"orders.csv"', '"order.csv"'), encoding="utf-8")
    result = cli("check", "--config", str(cfg))
    assert_clean(result, {2})
    assert "no file matches 'order.csv'" in result.output and "(did you mean 'orders.csv'?)" in result.output


def test_unknown_variables_that_look_like_ours_are_warned_once_by_name(tmp_path, monkeypatch, caplog):
    import sync.settings as s

    monkeypatch.setattr(s, "_warned", set())
    monkeypatch.setenv("MAILCHIMP_KEY", "top-secret-value")
    monkeypatch.setenv("RFMSYNC_TEST_WHATEVER", "1")  # the suite's own variables are not settings
    monkeypatch.setenv("RFMSYNC_BENCH_KEY_ORDER", "random")  # nor the benchmarks' (bench/sync.py)
    (tmp_path / ".env").write_text("RFMSYNC_STORE=sqlite:///x.db\nSHOPIFY_TOKEN=ok\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sync.settings"):
        result = cli("check", "--config", str(write_shop(tmp_path)))  # any command warns, a file source too
        lines = [r.getMessage() for r in caplog.records]
        s.load_settings()  # once per process: no second warning
    assert_clean(result, {0})
    assert len(caplog.records) == len(lines)
    assert lines == ["environment variable MAILCHIMP_KEY is not used by rfmsync; did you mean MAILCHIMP_API_KEY?",
                     ".env variable RFMSYNC_STORE is not used by rfmsync; did you mean RFMSYNC_STORE_URL?"]
    assert not any("top-secret-value" in line or "sqlite:///x.db" in line for line in lines)


# ------------------------------------------------------------------------------ [source] type defaults to file

def test_source_without_type_is_a_file_source(tmp_path):
    cfg = write_shop(tmp_path)
    assert "type" not in cfg.read_text(encoding="utf-8").split("[source.columns]")[0]
    for command in (["check"], ["segments", "--as-of", AS_OF, "--format", "json"], ["plan", "--as-of", AS_OF]):
        result = cli(*command, "--config", str(cfg))
        assert_clean(result, {0})
    assert "source file: 2 orders" in cli("check", "--config", str(cfg)).output


@pytest.mark.parametrize("command", [["segments", "--no-predict"], ["segments"], ["plan"]])
def test_a_customer_revenue_too_large_for_its_column_is_one_line_exit_3(tmp_path, command):
    """An order may hold 16 digits before the point (DECIMAL(18,2)); a customer's revenue must fit the same
    column: one beyond is a data error naming the customer and the sum (an id or phone mapped as the amount?),
    not an internal error."""
    big = "9999999999999999.99"
    cfg = write_shop(tmp_path, rows=[["a", "2025-01-01", big], ["a", "2025-01-02", big], ["b", "2025-02-01", "20"]])
    for _ in range(2):  # the orders read, then the store's kept totals
        result = cli(*command, "--as-of", AS_OF, "--config", str(cfg))
        assert_clean(result, {3})
        assert ("customer 'a': net revenue 19999999999999999.98 has more than 16 digits before the decimal point"
                in result.output)
