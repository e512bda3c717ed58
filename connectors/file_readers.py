"""Readers for file exports: delimiter sniffing, XLSX → Arrow, the typed-CSV sniff that decides whether a clean
CSV can skip text normalisation, and rows numbered by their file lines. The encoding side (detection, the UTF-8
copy, the error naming the line) is :mod:`connectors.file_encoding`."""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
from array import array
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from . import normalize as nz
from .file_decimal import SAMPLE, sample_undecided
from .errors import BadFileError, ConfigError

if TYPE_CHECKING:
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


def read_xlsx(path: Path, columns: dict[str, str], sheet: str | None) -> pa.Table:
    """The first sheet (or ``sheet``) as an all-string Arrow table plus ``_srow`` (spreadsheet row); its
    schema metadata holds ``sheets`` (every sheet's name, JSON) and ``sheet`` (the one read): :func:`sheets_hint`.

    The header row is the first of the first :data:`XLSX_HEADER_SCAN` rows holding most of the mapped headers (1C puts
    titles above it). Dates become ISO text; numbers keep full precision; empty rows are skipped.
    """
    try:
        return _read_xlsx(path, columns, sheet)
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


def _read_xlsx(path: Path, columns: dict[str, str], sheet: str | None) -> pa.Table:
    import openpyxl  # only XLSX exports need it (a slow import)
    import pyarrow as pa

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        if sheet is not None and sheet not in wb.sheetnames:
            raise ConfigError(f"{path}: no sheet {sheet!r}; sheets: {', '.join(wb.sheetnames)}")
        ws = wb[sheet] if sheet else wb.worksheets[0]
        sheets = list(wb.sheetnames)
        wanted = {h.strip().casefold() for h in columns.values()}
        rows = ws.iter_rows(values_only=True)
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
        srow: list[int] = []
        for n, r in enumerate(itertools.chain(head[at + 1:], rows), start=at + 2):
            if not any(c is not None and c != "" for c in r):
                continue
            srow.append(n)
            for i in range(len(names)):
                data[i].append(_cell_text(r[i]) if i < len(r) else None)
    finally:
        wb.close()
    table = pa.table({**{name: pa.array(col, pa.string()) for name, col in zip(_dedupe(names), data)},
                      "_srow": pa.array(srow, pa.int64())})
    return table.replace_schema_metadata({"sheets": json.dumps(sheets), "sheet": ws.title,
                                          "headers": json.dumps(names)})


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


# ---------------------------------------------------------------------------------------------- title lines

#: the first lines of a CSV looked at for its header when title lines stand above it
TITLE_SCAN = 10


def title_lines(path: Path, headers: list[str]) -> tuple[int, tuple[int, str] | None]:
    """``(k, above)`` for a UTF-8 CSV whose header may not be its first line (1C and BILLZ put a title such as
    "Отчёт о продажах за ноябрь 2026" above it): the header is the first of the first :data:`TITLE_SCAN` lines
    holding the most of the mapped ``headers`` (two at least, or all of them when fewer are mapped), read with
    that line's own delimiter; ``k`` lines stand above it. ``above`` is None when each of them holds at most one
    non-empty cell (a title, safe to skip), else the first that holds more: (its line number, its text)."""
    lines = _first_lines(path, TITLE_SCAN)
    best, delim = header_line(lines, headers)
    above = next(((i + 1, line) for i, line in enumerate(lines[:best])
                  if sum(bool(c.strip()) for c in _cells(line, delim)) > 1), None)
    return best, above


def header_line(lines: list[str], headers: list[str] | None = None) -> tuple[int, str]:
    """(index, delimiter) of the header among a CSV's first lines (the reader's :func:`title_lines` and
    ``rfmsync init`` share it): each line read with the delimiter that gives it the most cells that count (one of
    the mapped ``headers``; without them, a non-empty cell), the first line with the most of them; ``(0, …)``
    when it holds fewer than two (or than all of the fewer ``headers``). Without ``headers``, the first line with
    two non-empty cells or more whose last non-empty cell is at most one short of the widest line's (an Excel title
    padded with ``;`` ends early; a header with empty cells, 1C's unnamed ``№`` or pandas' ``,,id,date``, does not)
    and not mostly numbers or dates (a data row; ``Период:;01.11.2026 - 30.11.2026``) comes first."""
    wanted = {h.strip().casefold() for h in headers} if headers is not None else None

    def counted(cell: str) -> bool:
        return cell.strip().casefold() in wanted if wanted is not None else bool(cell.strip())
    lines = [line.rstrip("\r\n") for line in lines]
    scores = [max((sum(map(counted, _cells(line, d))), d) for d in (";", "\t", ",", "|")) for line in lines]
    if wanted is None:  # a line's span: up to its last non-empty cell (a padded title's ends early)
        spans = [max((i + 1 for i, c in enumerate(_cells(line, d)) if c.strip()), default=0)
                 for line, (_, d) in zip(lines, scores)]
        top = max(spans, default=0)
        first = next((i for i, (n, d) in enumerate(scores) if n >= 2 and spans[i] >= top - 1 and not _mostly_values(
            [c for c in _cells(lines[i], d) if c.strip()])), None)
        if first is not None:
            return first, scores[first][1]
    best = max(range(len(scores)), key=lambda i: (scores[i][0], -i), default=0)
    if not best or scores[best][0] < min(2, len(wanted) if wanted is not None else 2):
        return 0, scores[0][1] if scores else ","
    return best, scores[best][1]


def _mostly_values(cells: list[str]) -> bool:
    """Whether at least half of the non-empty ``cells`` are numbers or dates (a data row's, not a header's)."""
    return 2 * sum(bool(_VALUE_RE.fullmatch(c.strip())) for c in cells) >= len(cells)


_VALUE_RE = re.compile(r"[-+−]?[\d\s.,:/−-]*\d[\d\s.,:/−-]*")


def header_cells(path: Path, delim: str) -> list[str]:
    """The cells of a UTF-8 CSV's first line, as written (DuckDB renames a repeated header ``Сумма_1``)."""
    return _cells(next(iter(_first_lines(path, 1)), ""), delim)


def _first_lines(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        return [line.rstrip("\r\n") for line in itertools.islice(f, n)]


def _cells(line: str, delim: str) -> list[str]:
    import csv

    try:
        return next(csv.reader([line], delimiter=delim, quotechar='"'), [])
    except csv.Error:  # a field past Python's csv limit (no header holds one)
        return line.split(delim)


def without_lines(path: Path, k: int, tmp: Path) -> Path:
    """A copy of ``path`` in ``tmp`` without its first ``k`` lines."""
    import shutil

    out = tmp / (path.stem + ".body.csv")
    with open(path, "rb") as src, open(out, "wb") as dst:
        for _ in range(k):
            src.readline()
        shutil.copyfileobj(src, dst, 1 << 22)
    return out


# ---------------------------------------------------------------------------------------------- typed CSV

_ISO_SHAPES = (  # (shape of a sample value, strict strptime format, DuckDB type)
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "%Y-%m-%d %H:%M:%S", "TIMESTAMP"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"), "%Y-%m-%dT%H:%M:%S", "TIMESTAMP"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"), "%Y-%m-%d %H:%M", "TIMESTAMP"),
    (re.compile(r"\d{4}-\d\d-\d\d"), "%Y-%m-%d", "DATE"),
)
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "FLOAT", "DOUBLE", "DECIMAL")


def csv_src(path: Path, delim: str, types: dict[str, str] | None = None, formats: dict[str, str] | None = None,
            parallel: bool = True) -> str:
    """``read_csv(...)`` over a UTF-8 file: every column VARCHAR except ``types`` (header → SQL type).
    ``parallel=False`` is for a file DuckDB's parallel scanner refuses (:func:`needs_serial_read`)."""
    extra = "" if parallel else ", parallel=false"
    if types:
        extra += ", types={" + ", ".join(f"{nz.lit(h)}: {nz.lit(t)}" for h, t in types.items()) + "}"
        extra += "".join(f", {k}={nz.lit(v)}" for k, v in (formats or {}).items())
    return (f"read_csv({nz.lit(str(path))}, delim={nz.lit(delim)}, header=true, all_varchar=true,"
            f" quote='\"', escape='\"', null_padding=true{extra})")


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
    whole column would (:func:`connectors.file_decimal.sample_undecided`): then the text path weighs it.

    Date columns get a strict ``timestampformat``/``dateformat`` taken from a sample value, so a
    later value in another shape (an offset, a dd.mm.yyyy date, garbage) makes the read fail rather
    than be misread; callers fall back to the text path on any error."""
    auto = (f"read_csv({nz.lit(str(path))}, delim={nz.lit(delim)}, header=true,"
            f" quote='\"', escape='\"', null_padding=true{'' if parallel else ', parallel=false'})")
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
            sample = con.execute(f"SELECT {nz.ident(h)} FROM {csv_src(path, delim, parallel=parallel)}"
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
        if not str(sniffed.get(h, "")).startswith(_NUMERIC):
            return None
        try:
            sample = [v for (v,) in con.execute(f"SELECT {nz.ident(h)} FROM {csv_src(path, delim, parallel=parallel)}"
                                                f" WHERE {nz.ident(h)} IS NOT NULL LIMIT {SAMPLE}").fetchall()]
        except duckdb.Error:
            return None
        if (decimal or nz.sniff_decimal(sample, money=f != "quantity")) != ".":  # 150.000 / 85.000: money in 1000s
            return None
        if not decimal and sample_undecided(sample, ".", money=f != "quantity"):
            return None  # 150.000 next to a 12.5 (3 decimals or thousands?): the text path weighs the whole column
        types[h], fields[f] = f"DECIMAL(18,{scale})", "number"
    if not any(v == "timestamp" for v in fields.values()):
        return None
    return TypedCsv(csv_src(path, delim, types, formats, parallel), fields)


# ---------------------------------------------------------------------------------------------- line numbers

def line_count(path: Path) -> int:
    """The lines in ``path`` up to its last byte that is not a line break (blank lines at the end, which DuckDB
    skips, do not count; a last line without a line break does), by counting ``\\n`` in chunks, or ``\\r`` in a
    file whose first chunk has no ``\\n`` (CR-only line breaks): when a CSV holds more lines than header + rows,
    blank lines or quoted line breaks shift the row numbers ``rowid + 2`` gives from the file's line numbers."""
    n, tail, sep, content = 0, 0, b"", False
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            sep = sep or (b"\r" if b"\n" not in chunk and b"\r" in chunk else b"\n")
            text = chunk.rstrip(b"\r\n")
            breaks = chunk.count(sep)
            # tail: the line breaks after the last byte that is not one (trailing blank lines)
            tail = chunk.count(sep, len(text)) if text else tail + breaks
            n, content = n + breaks, content or bool(text)
    return n - tail + 1 if content else 0


def record_lines(path: Path, delim: str, offset: int = 0) -> pa.Table | None:
    """``rec`` (1-based data record, as DuckDB reads them) → ``line`` (the file line it starts on), from one
    pass of Python's csv reader, which skips blank lines and follows quoted line breaks as DuckDB does (with no
    field-size limit, and splitting lines only at ``\\n`` when the file has one, so that a lone CR inside a
    quoted field is not a line); None when it cannot read the file (the rows then keep record numbers).
    ``offset``: the lines of the original file above ``path`` (title lines :func:`without_lines` left out)."""
    import csv

    import numpy as np
    import pyarrow as pa

    with open(path, "rb") as f:
        newline = "\n" if b"\n" in f.read(1 << 20) else ""
    starts, prev = array("q"), 0  # 8 bytes a record, not a Python int each
    limit = csv.field_size_limit(sys.maxsize)
    try:
        with open(path, encoding="utf-8-sig", newline=newline) as f:
            reader = csv.reader(f, delimiter=delim, quotechar='"', doublequote=True)
            for rec in reader:
                if rec:
                    starts.append(prev + 1)
                prev = reader.line_num
    except (csv.Error, UnicodeDecodeError) as e:
        log.debug("%s: cannot number the rows by line (%s): they keep record numbers", path, e)
        return None
    finally:
        csv.field_size_limit(limit)
    lines = np.frombuffer(starts, dtype=np.int64)[1:]  # starts[0] is the header
    return pa.table({"rec": np.arange(1, len(lines) + 1, dtype=np.int64), "line": lines + offset})


def numbered_src(src: str, lines: str) -> str:
    """``src`` (a single-threaded read_csv) with ``_srow``: each record's line number from the table ``lines``
    (:func:`record_lines`), or its record number + 1 where the two readers disagree."""
    return (f"(SELECT c.* EXCLUDE (_rec), coalesce(m.line, c._rec + 1) AS _srow FROM "
            f"(SELECT *, row_number() OVER () AS _rec FROM {src}) c LEFT JOIN {lines} m ON m.rec = c._rec)")
