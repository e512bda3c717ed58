"""Readers for file exports: delimiter sniffing, XLSX → Arrow and the typed-CSV sniff that decides whether a clean
CSV can skip text normalisation. The encoding side (detection, the UTF-8 copy, the error naming the line) is
:mod:`connectors.file_encoding`; a CSV's lines (title lines above its header, rows numbered by their file line)
are :mod:`connectors.file_lines`."""

from __future__ import annotations

import itertools
import json
import logging
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from . import normalize as nz
from .file_decimal import SAMPLE, typed_reads_as_text
from .errors import BadFileError, ConfigError
from .file_lines import spread_cells

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pyarrow as pa

log = logging.getLogger(__name__)


def sniff_delimiter(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        sample = f.read(1 << 16)
    # The header line decides: headers hold no decimal commas (which fool csv.Sniffer on ";" files).
    return line_delimiter(sample.splitlines()[0] if sample else "")


def line_delimiter(header: str) -> str:
    """The delimiter of a header line: the most frequent of ``; tab , |`` in it (ties in that order), else ``,``."""
    counts = {d: header.count(d) for d in (";", "\t", ",", "|")}
    best = max(counts, key=counts.get)  # ties keep this order
    return best if counts[best] else ","


#: the first rows of a sheet looked at for its header (titles may stand above it)
XLSX_HEADER_SCAN = 30
#: a :func:`read_xlsx` table's column of the rows whose amount cell lies in a merged range below its first row
#: (``Sheet!D2:D4``: :func:`connectors.file_merged.merged_under`); absent when no row's does
MERGED_COLUMN = "_smerged"


def read_xlsx(path: Path, columns: dict[str, str], sheet: str | None, numbers: Iterable[str] = ()) -> pa.Table:
    """The first sheet (or ``sheet``) as an all-string Arrow table plus ``_srow`` (spreadsheet row); its
    schema metadata holds ``sheets`` (every sheet's name, JSON) and ``sheet`` (the one read): :func:`sheets_hint`.

    The header row is the first of the first :data:`XLSX_HEADER_SCAN` rows holding most of the mapped headers (1C puts
    titles above it). Without ``sheet``, the first visible sheet holding a value (:func:`default_sheet`). Dates
    become ISO text; numbers keep full precision, those of the mapped number fields ``numbers`` (amount, price…)
    without an exponent or an ambiguous three decimals (:func:`number_text`); empty rows are skipped. A cell merged
    over rows fills them, but for a number column's (:mod:`connectors.file_merged`): the rows whose amount lies in
    such a range are named in :data:`MERGED_COLUMN`.
    """
    try:
        return _read_xlsx(path, columns, sheet, numbers)
    except (ConfigError, BadFileError):
        raise
    except Exception as e:  # openpyxl on a truncated, corrupt or mis-named file: zip, XML or key errors
        if _is_openpyxl_failure(e):
            raise BadFileError(f"{path}: not a readable XLSX file ({type(e).__name__}: {e}); is it truncated, "
                               f"or another format saved as .xlsx?") from None
        raise


def _is_openpyxl_failure(e: Exception) -> bool:
    import zipfile
    import zlib
    from xml.etree.ElementTree import ParseError

    from openpyxl.utils.exceptions import InvalidFileException

    return isinstance(e, (zipfile.BadZipFile, zlib.error, InvalidFileException, ParseError, KeyError, EOFError,
                          OSError)) or type(e).__module__.startswith(("lxml", "openpyxl", "zipfile", "xml"))


def _read_xlsx(path: Path, columns: dict[str, str], sheet: str | None, numbers: Iterable[str]) -> pa.Table:
    import openpyxl  # only XLSX exports need it (a slow import)
    import pyarrow as pa

    from .file_merged import fill_merged, merged_down, merged_under  # (imports openpyxl)

    padded = _has_zero_padded_format(path)
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        if sheet is not None and sheet not in wb.sheetnames:
            raise ConfigError(f"{path}: no sheet {sheet!r}; sheets: {', '.join(wb.sheetnames)}")
        ws = wb[sheet] if sheet else default_sheet(wb)
        sheets = list(wb.sheetnames)
        wanted = {h.strip().casefold() for h in columns.values()}
        rows = (map(_shown_values, ws.iter_rows()) if padded  # cells: their formats (slower: only when needed)
                else ws.iter_rows(values_only=True))
        head: list[tuple] = []
        for _ in range(XLSX_HEADER_SCAN):
            try:
                head.append(next(rows))
            except StopIteration:
                break
        scores = [sum(1 for c in r if isinstance(c, str) and c.strip().casefold() in wanted) for r in head]
        if not head or max(scores) == 0:
            at = next((i for i, r in enumerate(head) if any(c is not None for c in r)), 0)
        else:
            at = scores.index(max(scores))
        names = [str(c).strip() if c is not None else f"column{i}" for i, c in enumerate(head[at] if head else ())]
        data: list[list[str | None]] = [[] for _ in names]
        amounts = {columns[f].strip().casefold() for f in numbers if f in columns}  # an id's 2024.015 stays so
        texts = [_amount_text if n.casefold() in amounts else _cell_text for n in names]
        srow: list[int] = []
        for n, r in enumerate(itertools.chain(head[at + 1:], rows), start=at + 2):
            if not any(c is not None and c != "" for c in r):
                continue
            srow.append(n)
            for i in range(len(names)):
                data[i].append(texts[i](r[i]) if i < len(r) else None)
        under = None  # the rows whose amount lies in a merged cell above (MERGED_COLUMN)
        if merged := merged_down(ws):  # a customer merged over a receipt's lines: each line holds it (not a total)
            money = frozenset(i for i, n in enumerate(names) if n.casefold() in amounts)
            fill_merged(merged, data, srow, at + 1, money)
            total = next((i for i, n in enumerate(names) if n.casefold() == columns["amount"].strip().casefold()),
                         None) if "amount" in columns else None
            under = merged_under(merged, data, srow, at + 1, total, ws.title) if total is not None else None
        epoch = excel_epoch(wb)
    finally:
        wb.close()
    table = pa.table({**{name: pa.array(col, pa.string()) for name, col in zip(_dedupe(names), data)},
                      "_srow": pa.array(srow, pa.int64()),
                      **({MERGED_COLUMN: pa.array(under, pa.string())} if under is not None else {})})
    return table.replace_schema_metadata({"sheets": json.dumps(sheets), "sheet": ws.title,
                                          "headers": json.dumps(names), "epoch": epoch})


def default_sheet(wb):
    """The sheet read when ``[source] sheet`` is not set (the reader's and ``rfmsync init``'s): the first visible
    one that holds a value. A hidden sheet (a lookup table, an earlier export kept out of sight) is not the data the
    user sees, and an empty first sheet is no export: both were read before, the hidden one's rows as orders; the
    first sheet when none qualifies (its error names the sheets)."""
    visible = [ws for ws in wb.worksheets if ws.sheet_state == "visible"]
    return next((ws for ws in visible if _holds_a_value(ws)), wb.worksheets[0])


def _holds_a_value(ws) -> bool:
    """Whether a sheet holds a non-empty cell among its first :data:`XLSX_HEADER_SCAN` rows (where a header is
    looked for)."""
    rows = ws.iter_rows(max_row=XLSX_HEADER_SCAN, values_only=True)
    return any(c is not None and c != "" for r in rows for c in r)


def excel_epoch(wb) -> str:
    """The day a workbook's serial day numbers count from: 1899-12-30 (Windows Excel's 1900 system), or 1904-01-01
    for a workbook saved in Mac Excel's 1904 system (its date cells openpyxl reads right; a serial day number in a
    General or text cell read from 1899-12-30 would be 1 462 days early)."""
    from openpyxl.utils.datetime import CALENDAR_MAC_1904

    return "1904-01-01" if wb.epoch == CALENDAR_MAC_1904 else EXCEL_EPOCH


#: the day Excel's serial day numbers count from in the usual (1900) date system
EXCEL_EPOCH = "1899-12-30"


def xlsx_epoch(table: pa.Table) -> str:
    """The day a :func:`read_xlsx` table's serial day numbers count from (its workbook's date system)."""
    return (table.schema.metadata or {}).get(b"epoch", EXCEL_EPOCH.encode()).decode()


def xlsx_headers(table: pa.Table) -> list[str]:
    """The header row of a :func:`read_xlsx` table as written (its columns repeat no name: ``Сумма_2``)."""
    return json.loads((table.schema.metadata or {}).get(b"headers", b"[]"))


def sheets_hint(table: pa.Table) -> str:
    """For a workbook of several sheets (a :func:`read_xlsx` table): the sheet read, the others and the option
    that picks one, to add to a column error; "" for a single sheet."""
    meta = table.schema.metadata or {}
    sheets = json.loads(meta.get(b"sheets", b"[]"))
    if len(sheets) < 2:
        return ""
    read = meta.get(b"sheet", b"").decode()
    others = [s for s in sheets if s != read]
    name = others[0].replace("\\", "\\\\").replace('"', '\\"') if len(others) == 1 else "<name>"
    return (f" (sheet {read!r}; the workbook's sheets: {', '.join(map(repr, sheets))}: set [source] sheet ="
            f' "{name}" to read another)')


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _has_zero_padded_format(path: Path) -> bool:
    """Whether the workbook's styles define a number format of zeros only (``000000``: a code shown with its
    leading zeros, :func:`_shown_values`); a workbook without one is read by values alone, the fast way."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        try:
            styles = z.read("xl/styles.xml")
        except KeyError:
            return False
    return _ZERO_FORMAT.search(styles) is not None


#: a ``numFmt`` of zeros only in ``xl/styles.xml``, its attribute in either quotes, spaces around ``=`` (valid XML)
_ZERO_FORMAT = re.compile(rb"""\bformatCode\s*=\s*(["'])00+\1""")


def _shown_values(cells: tuple) -> tuple:
    """A row's values, a whole number in a cell formatted with zeros only (``000000``) as the sheet shows it:
    ``000123``, as Excel saves it to CSV and as a clients file or a CRM writes the code (read as 123, the
    customer would be another than the one of the same code elsewhere)."""
    out = []
    for c in cells:
        v = c.value
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and float(v).is_integer():
            fmt = getattr(c, "number_format", None) or ""
            if len(fmt) > 1 and not fmt.strip("0"):
                v = str(int(v)).zfill(len(fmt))
        out.append(v)
    return tuple(out)


def _cell_text(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    return str(v)


def _amount_text(v: object) -> str | None:
    """A cell of a mapped number column as text: a float's by :func:`number_text`, any other's :func:`_cell_text`."""
    return number_text(v) if isinstance(v, float) and not v.is_integer() else _cell_text(v)


def number_text(v: float) -> str:
    """A number cell's value as text the decimal-mark vote reads one way only (``.``): its shortest digits without
    an exponent (``1e+20`` is 100000000000000000000, out of range; ``1e-05`` is 0.00001), three decimals written
    with a fourth zero (``123.456`` → ``123.4560``). A cell holds a number, not text in a locale: ``123.456`` alone
    was an ambiguous ``1.234`` that a money column reads as thousands (123 456, silently)."""
    text = repr(v)
    if "e" in text:
        text = format(Decimal(text), "f")
    point = text.find(".")
    return text + "0" if point >= 0 and len(text) - point == 4 else text


def refuse_int96(con: duckdb.DuckDBPyConnection, path: str, cols: dict[str, str]) -> None:
    """BadFileError naming a mapped date column (``cols``: field → header) of a Parquet file stored as INT96:
    Parquet's legacy timestamp says nothing of its zone, and writers differ (Spark stores UTC instants, Impala
    local times), so a read as UTC or as local time (DuckDB's TIMESTAMP) may be hours off without a word."""
    dates = {cols[f]: f for f in ("ordered_at", "created_at") if f in cols}
    for (name,) in con.execute("SELECT name FROM parquet_schema(?) WHERE type = 'INT96'", [path]).fetchall():
        if name in dates:
            raise BadFileError(
                f"{path}: column {name!r} ({dates[name]}) holds INT96 timestamps, Parquet's legacy type, which does "
                f"not say whether they are UTC instants or local times (writers differ); write the file with INT64 "
                f"timestamps (Spark: spark.sql.parquet.outputTimestampType = TIMESTAMP_MICROS; pyarrow: without "
                f"use_deprecated_int96_timestamps) or the dates as text")


# ---------------------------------------------------------------------------------------------- typed CSV

_ISO_SHAPES = (  # (shape of a sample value, strict strptime format, DuckDB type)
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "%Y-%m-%d %H:%M:%S", "TIMESTAMP"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"), "%Y-%m-%dT%H:%M:%S", "TIMESTAMP"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"), "%Y-%m-%d %H:%M", "TIMESTAMP"),
    (re.compile(r"\d{4}-\d\d-\d\d"), "%Y-%m-%d", "DATE"),
)
NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
                 "FLOAT", "DOUBLE", "DECIMAL")


#: no comment lines: DuckDB's sniffer may take ``#`` for a comment mark when some rows begin with it (Shopify's order
#: names, ``#1001``) and others with an empty cell, and then drops every row that begins with it, silently. Both
#: reads pass it: the typed read's (its loss is caught by tests/test_files_hash_rows.py) and the sniff that only
#: chooses the column types (a safety: a ``#`` row that did not fit them would fall back to the text path anyway)
NO_COMMENT = "comment='', "


def csv_src(path: Path, delim: str, types: dict[str, str] | None = None, formats: dict[str, str] | None = None,
            parallel: bool = True, sample: bool = False) -> str:
    """``read_csv(...)`` over a UTF-8 file: every column VARCHAR except ``types`` (header → SQL type).
    ``parallel=False`` is for a file DuckDB's parallel scanner refuses (:func:`needs_serial_read`); ``sample=True``
    for a query of the file's first rows (``LIMIT``): read serially in :data:`SAMPLE_BUFFER` blocks, it reads a block
    or two, where a parallel scan read the whole file (and a serial one 32 MB) before the limit stopped it."""
    extra = "" if parallel and not sample else ", parallel=false"
    extra += f", buffer_size={SAMPLE_BUFFER}" if sample else ""
    if types:
        extra += ", types={" + ", ".join(f"{nz.lit(h)}: {nz.lit(t)}" for h, t in types.items()) + "}"
        extra += "".join(f", {k}={nz.lit(v)}" for k, v in (formats or {}).items())
    return (f"read_csv({nz.lit(str(path))}, delim={nz.lit(delim)}, header=true, all_varchar=true,"
            f" quote='\"', escape='\"', {NO_COMMENT}null_padding=true{extra})")


#: the block a sample query of a CSV's first rows reads it in (:func:`csv_src`): DuckDB's longest line, by default
SAMPLE_BUFFER = 1 << 21


@dataclass(frozen=True)
class TypedCsv:
    """A typed read of a clean CSV: ``src`` (a read_csv expression) and the canonical fields it types
    (field → ``"timestamp"`` for naive wall times, ``"number"`` for DECIMAL amounts)."""

    src: str
    fields: dict[str, str]


def needs_serial_read(e: duckdb.Error) -> bool:
    """DuckDB's parallel CSV scanner refused the file (a line break inside a quoted field, with the
    ``null_padding`` short rows need): read it again with ``parallel=false``, a single-threaded scan."""
    return "parallel=false" in str(e)


def typed_csv(con: duckdb.DuckDBPyConnection, path: Path, delim: str, cols: dict[str, str],
              dates: list[str], numbers: dict[str, int], parallel: bool = True,
              decimal: nz.Decimal_ | None = None) -> TypedCsv | None:
    """The typed read of ``path`` when DuckDB's sniffer types every mapped date column DATE/TIMESTAMP
    (ISO text, no offset) and every mapped number column as a number, else None. A number column also needs
    ``.`` as its decimal mark (``decimal``, the configured one, else sniffed from its first values as the text
    path does): a money column of only ``150.000`` / ``85.000`` groups thousands. With ``.`` as the mark the text
    path reads an ambiguous ``3.333`` as the typed read does, a decimal, unless the sample cannot tell that the
    whole column would not (:func:`connectors.file_decimal.typed_reads_as_text`): then the text path stops.

    Date columns get a strict ``timestampformat``/``dateformat`` taken from a sample value, so a
    later value in another shape (an offset, a dd.mm.yyyy date, garbage) makes the read fail rather
    than be misread; callers fall back to the text path on any error."""
    auto = (f"read_csv({nz.lit(str(path))}, delim={nz.lit(delim)}, header=true, quote='\"', escape='\"',"
            f" {NO_COMMENT}null_padding=true{'' if parallel else ', parallel=false'})")
    try:
        sniffed = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {auto}").fetchall()}
    except duckdb.Error:
        return None
    types: dict[str, str] = {}
    formats: dict[str, str] = {}
    fields: dict[str, str] = {}
    for f in dates:
        h = cols[f]
        if sniffed.get(h) not in ("DATE", "TIMESTAMP"):
            return None
        try:
            sample = con.execute(f"SELECT {nz.ident(h)} FROM {csv_src(path, delim, sample=True)}"
                                 f" WHERE {nz.ident(h)} IS NOT NULL LIMIT 1").fetchall()
        except duckdb.Error:  # the file cannot be read as the sniffer saw it: the text path says why
            return None
        shape = next((s for s in _ISO_SHAPES if sample and s[0].fullmatch(sample[0][0])), None)
        if shape is None:
            return None
        key = "dateformat" if shape[2] == "DATE" else "timestampformat"
        if formats.setdefault(key, shape[1]) != shape[1]:
            return None  # two date columns in different shapes: one format option cannot hold both
        types[h], fields[f] = shape[2], "timestamp"
    for f, scale in numbers.items():
        h = cols[f]
        if not str(sniffed.get(h, "")).startswith(NUMERIC_TYPES):
            return None
        try:
            sample = [v for (v,) in con.execute(f"SELECT {nz.ident(h)} FROM {csv_src(path, delim, sample=True)}"
                                                f" WHERE {nz.ident(h)} IS NOT NULL LIMIT {SAMPLE}").fetchall()]
        except duckdb.Error:
            return None
        if (decimal or nz.sniff_decimal(sample, money=f != "quantity")) != ".":  # 150.000 / 85.000: money in 1000s
            return None
        spread = spread_cells(path, delim, h) if not decimal and len(sample) >= SAMPLE else []  # (whole: none)
        try:
            if not decimal and not typed_reads_as_text(con, csv_src(path, delim, parallel=parallel), f, nz.ident(h),
                                                       sample, spread, "."):
                return None  # 150.000 next to too few 12.5 (3 decimals or thousands?): the text path stops
        except duckdb.Error:  # the whole column's vote could not read the file: the text path says why
            return None
        types[h], fields[f] = f"DECIMAL(18,{scale})", "number"
    if not any(v == "timestamp" for v in fields.values()):
        return None
    return TypedCsv(csv_src(path, delim, types, formats, parallel), fields)
