"""Dates and money as locales write them: two-digit years, offsets after a space, thousands separators and the
accounting forms of negative amounts are read as what they mean, or reported as bad rows, never misread."""

from __future__ import annotations

import datetime as dt
import tomllib
from decimal import Decimal

import openpyxl
import pytest

from connectors.diagnose import EARLY_DATE
from connectors.errors import BadFileError

from tests.builders import run_cli
from tests.test_files import UTC, orders, pull, write_csv

COLS = {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a", "status": "s"}


def _csv(tmp_path, rows, delim=";"):
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a", "s"], *rows], delim)


def test_two_digit_years_are_this_century_and_dates_before_1970_are_bad_rows(tmp_path):
    _csv(tmp_path, [["1", "x", "05.01.24", "1", ""], ["2", "x", "15.11.24 14:30", "1", ""],
                    ["3", "x", "15.11.24 14:30:15", "1", ""], ["4", "x", "03.12.2024", "1", ""],
                    ["5", "x", "05.01.1924", "1", ""], ["6", "x", "01.01.0024", "1", ""]])
    result, con = pull(tmp_path, columns=COLS)
    got = {k: v[1] for k, v in orders(con).items()}
    assert got == {"1": dt.datetime(2024, 1, 5, tzinfo=UTC), "2": dt.datetime(2024, 11, 15, 14, 30, tzinfo=UTC),
                   "3": dt.datetime(2024, 11, 15, 14, 30, 15, tzinfo=UTC), "4": dt.datetime(2024, 12, 3, tzinfo=UTC)}
    assert [(b.row, b.field, b.value, b.reason) for b in result.bad_rows] == [
        (6, "ordered_at", "05.01.1924", EARLY_DATE), (7, "ordered_at", "01.01.0024", EARLY_DATE)]


@pytest.mark.parametrize("timezone", ["UTC", "Asia/Tashkent", "Europe/Moscow"])
def test_the_epochs_day_is_a_bad_row_not_an_order(tmp_path, timezone):
    """1970-01-01 is what a POS writes for a date it never set (Unix time 0, shown in the shop's zone): taken as
    an order it made its customer 20 000 days silent, due to reorder decades ahead, and moved every fit."""
    epoch = ["01.01.1970", "01.01.1970 00:00", "01.01.1970 05:00:00", "1970-01-01", "1970-01-01 00:00:00",
             "1970-01-01T00:00:00Z", "1970-01-01 05:00:00 +0500", "01.01.70"]
    good = [[str(i), "x", f"{i:02d}.01.2024", "1", ""] for i in range(2, 12)]
    _csv(tmp_path, [["1", "x", "02.01.1970 00:00", "1", ""], *good,
                    *[[str(20 + i), "x", value, "1", ""] for i, value in enumerate(epoch)]])
    result, con = pull(tmp_path, columns=COLS, timezone=timezone)
    assert sorted(orders(con), key=int) == [str(i) for i in range(1, 12)]
    assert [(b.row, b.field, b.value, b.reason) for b in result.bad_rows] == [
        (13 + i, "ordered_at", value, EARLY_DATE) for i, value in enumerate(epoch)]
    assert EARLY_DATE == "a date on or before 1970-01-01: a POS default or a misread year"


def test_a_file_dated_on_the_epoch_says_so(tmp_path):
    """A whole export on 1970-01-01 (the POS never set its dates) is refused as such, not with a suggestion to
    set the very date_format that reads them."""
    _csv(tmp_path, [[str(i), "x", "01.01.1970 00:00", "1", ""] for i in range(5)] + [["9", "x", "05.01.2024", "1", ""]])
    with pytest.raises(BadFileError) as exc:
        pull(tmp_path, columns=COLS)
    msg = str(exc.value)
    assert "sales.csv: 5 of 6 rows have a date in column 'd' before 1970-01-02 (e.g. '01.01.1970 00:00')" in msg
    assert "date_format" not in msg


def test_a_file_dated_on_the_epoch_in_the_configured_date_format_says_so(tmp_path):
    """The configured date_format reads the dates as 1970-01-01: refused as such, not as a format that cannot
    read them."""
    _csv(tmp_path, [[str(i), "x", "01/01/1970 00:00", "1", ""] for i in range(5)]
         + [["9", "x", "12/03/2024 10:00", "1", ""]])
    with pytest.raises(BadFileError) as exc:
        pull(tmp_path, columns=COLS, date_format="%m/%d/%Y %H:%M")
    msg = str(exc.value)
    assert "sales.csv: 5 of 6 rows have a date in column 'd' before 1970-01-02 (e.g. '01/01/1970 00:00')" in msg
    assert "cannot read" not in msg and "date_format" not in msg


def test_an_excel_file_of_serial_days_of_the_epoch_says_so(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["id", "c", "d", "a"])
    for i in range(5):
        ws.append([i, "x", 25569, 100])  # 1970-01-01
    ws.append([9, "x", 45600, 100])
    wb.save(tmp_path / "sales.xlsx")
    with pytest.raises(BadFileError) as exc:
        pull(tmp_path, orders="sales.xlsx", columns={k: v for k, v in COLS.items() if k != "status"})
    msg = str(exc.value)
    assert "sales.xlsx: 5 of 6 rows have a date in column 'd' before 1970-01-02 (e.g. '25569')" in msg
    assert "cannot be read" not in msg and "date_format" not in msg


def test_an_excel_serial_day_of_the_epoch_is_a_bad_row(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["id", "c", "d", "a"])
    ws.append([1, "x", 25569, 100])  # 1970-01-01
    ws.append([2, "x", 25570, 100])  # 1970-01-02
    wb.save(tmp_path / "sales.xlsx")
    result, con = pull(tmp_path, orders="sales.xlsx", columns={k: v for k, v in COLS.items() if k != "status"})
    assert list(orders(con)) == ["2"]
    assert [(b.row, b.field, b.reason) for b in result.bad_rows] == [(2, "ordered_at", EARLY_DATE)]


@pytest.mark.parametrize("fmt,good,value,expected", [
    ("%d/%m/%y", "06/01/24", "05/01/24", dt.datetime(2024, 1, 5, tzinfo=UTC)),
    ("%d/%m/%y %H:%M", "06/01/24 10:00", "05/01/24 14:30", dt.datetime(2024, 1, 5, 14, 30, tzinfo=UTC)),
    ("%d/%m/%Y", "06/01/2024", "05/01/24", None),  # DuckDB's %Y reads "24" as the year 24: a bad row instead
])
def test_a_date_format_never_gives_a_year_before_1970(tmp_path, fmt, good, value, expected):
    _csv(tmp_path, [["1", "x", good, "1", ""], ["2", "x", value, "1", ""]])
    result, con = pull(tmp_path, columns=COLS, date_format=fmt)
    assert orders(con).get("2", (None, None))[1] == expected
    assert [(b.row, b.value) for b in result.bad_rows] == ([] if expected else [(3, value)])


def test_xlsx_text_cells_with_two_digit_years(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["id", "c", "d", "a"])
    ws.append([1, "x", "05.01.24", 100])
    ws.append([2, "x", "15.11.24 14:30", 100])
    wb.save(tmp_path / "sales.xlsx")
    result, con = pull(tmp_path, orders="sales.xlsx", columns={k: v for k, v in COLS.items() if k != "status"})
    assert result.bad_row_count == 0, result.bad_rows
    assert {k: v[1] for k, v in orders(con).items()} == {"1": dt.datetime(2024, 1, 5, tzinfo=UTC),
                                                         "2": dt.datetime(2024, 11, 15, 14, 30, tzinfo=UTC)}


def test_an_offset_after_a_space_is_that_instant(tmp_path):
    _csv(tmp_path, [["1", "x", "2024-01-31 10:00:00 +0500", "1", ""], ["2", "x", "2024-01-31 10:00:00 +05:00", "1", ""],
                    ["3", "x", "2024-01-31 10:00:00 -0400", "1", ""], ["4", "x", "2024-01-31 10:00:00", "1", ""],
                    ["5", "x", "24-01-31 10:00:00+05:00", "1", ""], ["6", "x", "1969-01-31 10:00:00 +0500", "1", ""]])
    result, con = pull(tmp_path, columns=COLS, timezone="Europe/Berlin")
    assert [(b.row, b.value) for b in result.bad_rows] == [(6, "24-01-31 10:00:00+05:00"),
                                                           (7, "1969-01-31 10:00:00 +0500")]
    assert {k: v[1] for k, v in orders(con).items()} == {
        "1": dt.datetime(2024, 1, 31, 5, tzinfo=UTC), "2": dt.datetime(2024, 1, 31, 5, tzinfo=UTC),
        "3": dt.datetime(2024, 1, 31, 14, tzinfo=UTC), "4": dt.datetime(2024, 1, 31, 9, tzinfo=UTC)}


def test_a_date_format_with_an_offset_is_honoured(tmp_path):
    _csv(tmp_path, [["1", "x", "31.01.2024 10:00 +0500", "1", ""], ["2", "x", "31.01.2024 10:00 -0400", "1", ""],
                    ["3", "x", "31.01.2024 10:00", "1", ""]])
    result, con = pull(tmp_path, columns=COLS, timezone="Asia/Tashkent", date_format="%d.%m.%Y %H:%M %z")
    assert {k: v[1] for k, v in orders(con).items()} == {"1": dt.datetime(2024, 1, 31, 5, tzinfo=UTC),
                                                         "2": dt.datetime(2024, 1, 31, 14, tzinfo=UTC)}
    assert [(b.row, b.value) for b in result.bad_rows] == [(4, "31.01.2024 10:00")]  # no offset: not the format



def test_a_date_format_with_a_zone_name_is_honoured(tmp_path):
    _csv(tmp_path, [["1", "x", "31.01.2024 10:00 UTC", "1", ""],
                    ["2", "x", "31.01.2024 10:00 America/New_York", "1", ""]])
    result, con = pull(tmp_path, columns=COLS, timezone="Asia/Tashkent", date_format="%d.%m.%Y %H:%M %Z")
    assert {k: v[1] for k, v in orders(con).items()} == {"1": dt.datetime(2024, 1, 31, 10, tzinfo=UTC),
                                                         "2": dt.datetime(2024, 1, 31, 15, tzinfo=UTC)}


@pytest.mark.parametrize("fmt,zone,epoch,next_day", [
    ("%Y-%m-%d %H:%M:%S%z", "+0000", ["1970-01-01 23:00:00-0300", "1970-01-01 23:00:00-03:00",
                                       "1969-12-31 21:00:00-0300", "1970-01-01 00:00:00+0000"],
     ("1970-01-02 03:00:00+0500", dt.datetime(1970, 1, 1, 22))),
    ("%Y-%m-%d %H:%M:%S %Z", " UTC", ["1970-01-01 23:00:00 America/New_York", "1970-01-01 23:00:00 UTC"],
     ("1970-01-02 03:00:00 Asia/Tashkent", dt.datetime(1970, 1, 1, 21))),
])
def test_with_an_offset_in_the_date_format_the_epochs_day_is_the_values_own(tmp_path, fmt, zone, epoch, next_day):
    """As without a date_format: any time of 1970-01-01 with its offset is a bad row (23:00 at -03:00 is 02:00 UTC
    the next day), and 1970-01-02 with its offset is an order (03:00 at +05:00 is 22:00 UTC the day before)."""
    good = [[str(i), "x", f"2024-01-{i:02d} 10:00:00{zone}", "1", ""] for i in range(10, 25)]
    _csv(tmp_path, [*good, ["n", "x", next_day[0], "1", ""],
                    *[[f"e{i}", "x", v, "1", ""] for i, v in enumerate(epoch)]])
    result, con = pull(tmp_path, columns=COLS, date_format=fmt)
    assert {k: v[1] for k, v in orders(con).items() if not k.isdigit()} == {"n": next_day[1].replace(tzinfo=UTC)}
    assert [(b.row, b.value) for b in result.bad_rows] == [(18 + i, v) for i, v in enumerate(epoch)]


@pytest.mark.parametrize("decimal,second,want", [(None, "12.500", "12500"), (",", "12.5", "12.5")])
def test_iso_dates_do_not_skip_the_money_rule_or_the_decimal_setting(tmp_path, decimal, second, want):
    """A file DuckDB could read typed (ISO dates, numbers it takes as DOUBLE) reads ``150.000`` as the text path
    does (money: 150000), and honours an explicit ``decimal``; plain amounts keep the typed fast path."""
    _csv(tmp_path, [["1", "x", "2024-01-05 10:00:00", "150.000", ""], ["2", "x", "2024-01-05 10:00:00", second, ""]])
    result, con = pull(tmp_path, columns=COLS, **({"decimal": decimal} if decimal else {}))
    assert {k: v[2] for k, v in orders(con).items()} == {"1": Decimal("150000"), "2": Decimal(want)}
    assert not result.fast_path
    _csv(tmp_path, [["1", "x", "2024-01-05 10:00:00", "150.00", ""], ["2", "x", "2024-01-05 10:00:00", "0.500", ""]])
    result, con = pull(tmp_path, columns=COLS)
    assert {k: v[2] for k, v in orders(con).items()} == {"1": Decimal("150"), "2": Decimal("0.5")}
    assert result.fast_path


def test_a_quantity_with_no_decisive_value_takes_the_mark_of_the_money(tmp_path):
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "p", "q"], ["1", "x", "05.01.2024", "1,299.99", "1"],
                                       ["2", "y", "05.01.2024", "0.50", "1,000"],
                                       ["3", "z", "05.01.2024", "2.00", "1,500"]], ";")
    result, con = pull(tmp_path, columns={"order_id": "id", "customer_id": "c", "ordered_at": "d", "price": "p",
                                          "quantity": "q"})
    assert {k: v[2] for k, v in orders(con).items()} == {"1": Decimal("1299.99"), "2": Decimal("500"),
                                                         "3": Decimal("3000")}  # a thousand units, not 1.000

@pytest.mark.parametrize("text", ["(1 234,50)", "1234,50-", "−1 234,50", "(1 234,50 сум)"])
def test_accounting_negatives_are_refunds_not_unreadable(tmp_path, text):
    _csv(tmp_path, [["1", "x", "05.01.2024", text, "Возврат"], ["2", "x", "05.01.2024", text, ""],
                    ["3", "x", "05.01.2024", "10,00", ""]])
    result, con = pull(tmp_path, columns=COLS)
    got = orders(con)
    assert got["1"][2] == Decimal("1234.50") and got["1"][4] == "refunded"
    assert [(b.row, b.field, b.reason) for b in result.bad_rows] == [
        (3, "amount", "negative amount without a refund status")]


@pytest.mark.parametrize("values,expected", [
    (["1,250", "15,000", "2,400", "1,299.99"], ["1250.00", "15000.00", "2400.00", "1299.99"]),  # en, one decisive
    (["1,250", "15,000"], ["1250.00", "15000.00"]),                  # only ambiguous: money groups thousands
    (["150.000", "85.000", "1.250.000"], ["150000.00", "85000.00", "1250000.00"]),  # repeated dot groups
    (["150,000", "1,250,000"], ["150000.00", "1250000.00"]),
    (["1 234,50", "1,250"], ["1234.50", "1.25"]),                    # a decisive decimal comma wins
])
def test_thousands_separators_are_not_read_as_decimals(tmp_path, values, expected):
    _csv(tmp_path, [[str(i), "x", "2024-01-05", v, ""] for i, v in enumerate(values, 1)])
    result, con = pull(tmp_path, columns=COLS)
    assert result.bad_row_count == 0, result.bad_rows
    got = orders(con)
    assert [got[str(i)][2] for i in range(1, len(values) + 1)] == [Decimal(e) for e in expected]


def test_init_writes_a_dot_decimal_for_us_amounts_with_thousands_commas(tmp_path):
    export = tmp_path / "us.csv"
    export.write_text('Order,Customer,Date,Total\n1001,C00401,2024-03-01,"1,250"\n1002,C00402,2024-03-02,"15,000"\n'
                      '1003,C00403,2024-03-03,"2,400"\n1004,C00401,2024-03-04,"1,299.99"\n', encoding="utf-8")
    cfg = tmp_path / "rfmsync.toml"
    run_cli("init", str(export), "-o", str(cfg))
    assert tomllib.loads(cfg.read_text(encoding="utf-8"))["source"]["decimal"] == "."


def test_parquet_int96_dates_stop_naming_the_column_and_int64_ones_read(tmp_path):
    """INT96 (Spark's and Impala's legacy timestamp) says nothing of its zone: main read Spark's UTC instants as
    local times, 5 hours off in Tashkent, without a word. An INT96 column not mapped as a date is no problem."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    at = pa.array([dt.datetime(2024, 1, 5, 10, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
    table = pa.table({"id": ["1"], "c": ["x"], "a": ["10.50"], "d": at, "seen": at})
    cols = {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"}
    pq.write_table(table, tmp_path / "sales.parquet", use_deprecated_int96_timestamps=True)
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, orders="sales.parquet", columns=cols, timezone="Asia/Tashkent")
    assert str(e.value).startswith(f"{tmp_path / 'sales.parquet'}: column 'd' (ordered_at) holds INT96 timestamps")
    pq.write_table(table.set_column(3, "d", pa.array(["2024-01-05 15:00:00"])), tmp_path / "sales.parquet",
                   use_deprecated_int96_timestamps=True)
    result, _ = pull(tmp_path, orders="sales.parquet", columns=cols, attributes={"seen": "seen"},
                     timezone="Asia/Tashkent")
    assert result.orders == 1 and result.bad_row_count == 0  # the INT96 attribute is read as its text
    pq.write_table(table, tmp_path / "sales.parquet")  # INT64 with isAdjustedToUTC: the instant itself
    _, con = pull(tmp_path, orders="sales.parquet", columns=cols, timezone="Asia/Tashkent")
    assert orders(con)["1"][1] == dt.datetime(2024, 1, 5, 10, tzinfo=UTC)
