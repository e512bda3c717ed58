"""Whole-file checks made after an export is read and before its rows are staged.

A file that reads but cannot be meant as it is stops the pull with one :class:`BadFileError` line naming it,
instead of a silent table of zeros or thousands of bad rows:

* no data rows in any orders file (a header-only export);
* more than half of a file's rows without a usable order date (dates in another format than the reader
  understands, e.g. month-first; under a preset that reads an order's further rows as its line items, a row
  with an order id but no date nor amount, such a line, does not count): the message shows two of the raw
  values and suggests ``date_format``,
  naming a format that reads them when one of the usual ones does, or, when they all read as dates before
  ``normalize.EARLIEST`` (an export on the epoch's day, 1970-01-01; in the configured ``date_format`` first, or as
  Excel serial days in a spreadsheet), says so instead; in a CSV file, when they are all Excel serial day numbers
  (``45321``), which no ``date_format`` reads, it says what they are and how to export them; so it does of Unix
  timestamps (``1704448800000``, an epoch-ms column of a Parquet or CSV file: no ``date_format`` reads a number).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, Sequence
from zoneinfo import ZoneInfo

import duckdb

from .counts import agrees, counted
from .digits import digits
from .errors import BadFileError
from .normalize import DATE_FORMATS, EARLIEST, SPACE_OFFSET_RE
from .presets import reading

#: the bad-row reason of an order date that reads, but as a day before :data:`EARLIEST`
EARLY_DATE = "a date on or before 1970-01-01: a POS default or a misread year"
#: the Excel serial day of :data:`EARLIEST` (day 0 is 1899-12-30)
_EXCEL_EARLIEST = (datetime.fromisoformat(EARLIEST) - datetime(1899, 12, 30)).days
#: share of a file's rows whose date may fail before the file counts as misread
MAX_BAD_DATE_SHARE = 0.5

_FORMATS = ("%m/%d/%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M %p", "%m/%d/%y", "%m/%d/%y %H:%M",
            "%d/%m/%Y", "%d/%m/%Y %H:%M", "%d/%m/%y", "%m-%d-%Y", "%d-%m-%Y", "%m.%d.%Y", "%d.%m.%Y",
            "%Y/%m/%d", "%Y.%m.%d", "%d %b %Y", "%b %d, %Y", "%d %B %Y", "%B %d, %Y", "%Y%m%d")


class LoadedFile(Protocol):
    path: str
    table: str  # a view with ordered_at (parsed) and ordered_at_raw (the text where parsing failed)
    cols: dict[str, str]


def check_orders(con: duckdb.DuckDBPyConnection, files: Sequence[LoadedFile], pattern: str,
                 date_format: str | None = None, preset: str | None = None) -> None:
    """Raise BadFileError when the orders files hold no data rows, or a file's dates mostly failed to parse
    (``date_format``: the one ``[source]`` sets, named in the message instead of a suggestion to set one;
    ``preset``: the one ``[source]`` names: line rows are not counted only when it reads them)."""
    lines = reading(preset).line_rows
    counts = [con.execute(f"SELECT count(*), count(*) FILTER (WHERE ordered_at IS NULL) FROM {f.table}")
              .fetchall()[0] for f in files]
    if files and not any(n for n, _ in counts):
        where = files[0].path if len(files) == 1 else f"{len(files)} files matching {pattern!r}"
        raise BadFileError(f"{where}: no data rows (only a header)")
    for f, (n, bad) in zip(files, counts):
        if n and bad > n * MAX_BAD_DATE_SHARE and (not lines or (bad := bad - _line_rows(con, f))
                                                    > n * MAX_BAD_DATE_SHARE):
            raise BadFileError(_dates_message(con, f, n, bad, date_format))


def _line_rows(con: duckdb.DuckDBPyConnection, f: LoadedFile) -> int:
    """The rows with an order id and neither a date nor an amount: an order's further lines below its first row
    (Shopify's export writes the date there only), judged when staged (a line, or a bad row), no sign of misread
    dates. Counted only for a file whose dates look misread, so a good file pays nothing more."""
    return con.execute(f"SELECT count(*) FROM {f.table} WHERE ordered_at IS NULL AND ordered_at_raw IS NULL AND"
                       " amount IS NULL AND amount_raw IS NULL AND order_id IS NOT NULL").fetchall()[0][0]


def _dates_message(con: duckdb.DuckDBPyConnection, f: LoadedFile, n: int, bad: int,
                   date_format: str | None = None) -> str:
    sample = [v for (v,) in con.execute(f"SELECT DISTINCT ordered_at_raw FROM (SELECT ordered_at_raw FROM {f.table}"
                                        f" WHERE ordered_at_raw IS NOT NULL LIMIT 1000) LIMIT 20").fetchall()]
    header = f.cols.get("ordered_at", "ordered_at")
    rows, have = counted(n, "row"), agrees(bad, "has", "have")
    if not sample:
        return f"{f.path}: {bad} of {rows} {have} no date in column {header!r}; map ordered_at to the order date"
    examples = ", ".join(repr(v) for v in sample[:2])
    if all(early_date(v, date_format, is_excel(f.path)) for v in sample):
        return (f"{f.path}: {bad} of {rows} {have} a date in column {header!r} before {EARLIEST} (e.g. {examples}):"
                " the Unix epoch's day is what a POS writes for a date it never set, earlier ones are misread"
                " years; export the orders' real dates, or map ordered_at to the column that holds them")
    if not is_excel(f.path) and (day := serial_day(sample)):
        return (f"{f.path}: {bad} of {rows} {have} Excel serial day numbers in column {header!r} (e.g. {examples}; "
                f"{sample[0].strip()} is {day}), which no date_format reads in a CSV file; export the "
                f"dates as text (format the column as a date, e.g. dd.mm.yyyy, before saving the CSV), or save the "
                f"workbook as XLSX and read that (its serial day numbers are read as dates)")
    if stamp := unix_time(sample):
        instant, unit, short = stamp
        return (f"{f.path}: {bad} of {rows} {have} Unix timestamps in column {header!r} (e.g. {examples}: {unit} "
                f"since 1970-01-01 UTC; {sample[0].strip()} is {instant}), which no date_format reads (it reads dates "
                f"written as text); write the column as a timestamp (in Parquet a timestamp type, e.g. pandas' "
                f"pd.to_datetime(column, unit=\"{short}\", utc=True) before "
                f"to_parquet) or the dates as text (2024-01-05 10:00:00+00:00)")
    fmt = guess_format(sample)
    if not (fmt or date_format) and all(digits(v.strip()) for v in sample):  # a barcode
        return (f"{f.path}: {bad} of {rows} {have} a number that is no date in column {header!r} (e.g. {examples}: "
                f"no date format reads it, nor is it a Unix timestamp of 1990 to a year from now); check the "
                f"column mapped to ordered_at")
    if date_format:  # the one set does not read them: say so, and what would
        better = f'; "{fmt}" reads them' if fmt and fmt != date_format else "; check the column mapped to ordered_at"
        return (f"{f.path}: {bad} of {rows} {have} a date in column {header!r} that [source] date_format = "
                f'"{date_format}" cannot read (e.g. {examples}){better}')
    hint = f'date_format = "{fmt}"' if fmt else 'date_format (a strptime format such as "%m/%d/%Y")'
    return (f"{f.path}: {bad} of {rows} {have} a date in column {header!r} that cannot be read "
            f"(e.g. {examples}); set [source] {hint}")


def early_date(value: str, date_format: str | None = None, excel: bool = False) -> bool:
    """Whether ``value`` reads as a date before :data:`EARLIEST`: in ``date_format`` (the one ``[source]`` sets,
    tried first; with an offset, the value's own day), the reader's own formats or ISO, or, in an Excel file
    (``excel``), as a serial day number (25569 is 1970-01-01)."""
    text = value.strip()
    earliest = datetime.fromisoformat(EARLIEST)
    for fmt in ([date_format] if date_format else []) + list(DATE_FORMATS):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=None) < earliest
        except ValueError:
            continue
    if excel and re.fullmatch(r"[0-9]{1,6}(\.[0-9]+)?", text):
        return float(text) < _EXCEL_EARLIEST
    try:
        return datetime.fromisoformat(re.sub(SPACE_OFFSET_RE, r"\1", text)).replace(tzinfo=None) < earliest
    except ValueError:
        return False


def serial_day(values: Sequence[str]) -> str | None:
    """The day the first of ``values`` is as an Excel serial day number (1900 system), when all of them are such
    numbers of a day from 1970 to 2099 (``45321``, ``45322,5``: a time of day after the mark), else ``None``."""
    days = [re.fullmatch(r"([0-9]{5})([.,][0-9]+)?", v.strip()) for v in values]
    if not days or not all(d and _EXCEL_EARLIEST <= int(d[1]) <= _EXCEL_LAST for d in days):
        return None
    return f"{datetime(1899, 12, 30) + timedelta(days=int(days[0][1])):%Y-%m-%d}"  # type: ignore[index]


#: a Unix timestamp's digits → its unit, how many of it a second holds, and pandas' ``unit=`` name of it
_UNIX_UNITS = {10: ("seconds", 1, "s"), 13: ("milliseconds", 1000, "ms"), 16: ("microseconds", 1_000_000, "us"),
               19: ("nanoseconds", 1_000_000_000, "ns")}
#: the earliest instant a number is taken for a Unix timestamp of an order (the latest: a year from now)
_UNIX_EARLIEST = datetime(1990, 1, 1)


def unix_time(values: Sequence[str]) -> tuple[str, str, str] | None:
    """(the first of ``values`` as a UTC time, its unit, pandas' name of it) when all of them are whole Unix
    timestamps of one unit (seconds, milliseconds, microseconds or nanoseconds: 10, 13, 16 or 19 digits; an
    epoch-ms column of a Parquet file, a CSV's) of a plausible order date, from 1990 to a year from now, else
    ``None``: EAN-13 barcodes (13 digits, "milliseconds" of 2115) and 10-digit phones ("seconds" of 2260) are
    no timestamps."""
    texts = [v.strip() for v in values]
    if not texts or not all(digits(t) and len(t) == len(texts[0]) for t in texts):
        return None
    unit = _UNIX_UNITS.get(len(texts[0]))
    if unit is None:
        return None
    latest = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=366)
    times = [datetime(1970, 1, 1) + timedelta(seconds=int(t) / unit[1]) for t in texts]
    if not all(_UNIX_EARLIEST <= at <= latest for at in times):
        return None
    return f"{times[0]:%Y-%m-%d %H:%M:%S} UTC", unit[0], unit[2]


#: the Excel serial day of 2099-12-31, the last a serial day number in a CSV is taken for
_EXCEL_LAST = (datetime(2099, 12, 31) - datetime(1899, 12, 30)).days


def is_excel(path: str) -> bool:
    """Whether ``path`` is a spreadsheet, whose numbers in a date column are serial days."""
    return Path(path).suffix.lower() in (".xlsx", ".xlsm")


def guess_format(values: Sequence[str]) -> str | None:
    """The first usual date format that reads every value, if any."""
    for fmt in _FORMATS:
        try:
            for v in values:
                datetime.strptime(v.strip(), fmt)
        except ValueError:
            continue
        return fmt
    return None


def order_dt(value: Any, tz: str = "UTC") -> datetime:
    """:func:`parse_dt` of an order's date; one on or before 1970-01-01 in ``tz`` (Unix time 0: never set) is none.
    (Here beside the file rule, for the CRM clients: imported when called, so a file run imports no ``requests``.)"""
    from .http import parse_dt

    if (at := parse_dt(value, tz)) < datetime.fromisoformat(EARLIEST).replace(tzinfo=ZoneInfo(tz)):
        raise ValueError(f"{EARLY_DATE} ({at.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M:%S})")
    return at
