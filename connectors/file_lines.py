"""The lines of a CSV export: how they are split (:func:`newline_of`), title lines above its header
(:func:`title_lines`, :func:`header_line`, shared with ``rfmsync init``; :func:`without_lines`) and its rows
numbered by their line in the file (:func:`line_count`, :func:`record_lines`, :func:`numbered_src`). A part of
:mod:`connectors.file_readers`."""

from __future__ import annotations

import itertools
import logging
import re
import sys
from array import array
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING
from .counts import counted
from .normalize import decimal_vote

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("connectors.file_readers")


# ---------------------------------------------------------------------------------------------- title lines

#: the first lines of a CSV looked at for its header when title lines stand above it (a 1C report's title block
#: of company, period, filters and blank lines runs to 12-20)
TITLE_SCAN = 50


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
    two non-empty cells or more whose last non-empty cell is at most one short of the most common span of the
    non-blank lines below it (an Excel title padded with ``;`` ends early; a header with empty cells, 1C's
    unnamed ``№`` or pandas' ``,,id,date``, does not; one data row with a note beside the table is no measure) and not
    mostly numbers or dates itself (a data row; ``Период:;01.11.2026 - 30.11.2026``) comes first, unless it is one
    short and the next non-blank line spans more, with two cells or more and no number or date (the header below a
    2-cell title ``Организация:;ООО Ромашка`` of a 3-column table; a header one short of its rows has rows below).
    Else, as with ``headers``, the line with the most cells that count, never one mostly of values."""
    wanted = {h.strip().casefold() for h in headers} if headers is not None else None

    def counted(cell: str) -> bool:
        return cell.strip().casefold() in wanted if wanted is not None else bool(cell.strip())
    lines = [line.rstrip("\r\n") for line in lines]
    scores = [max((sum(map(counted, _cells(line, d))), d) for d in (";", "\t", ",", "|")) for line in lines]
    if wanted is None:  # a line's span: up to its last non-empty cell (a padded title's ends early)
        spans = [max((i + 1 for i, c in enumerate(_cells(line, d)) if c.strip()), default=0)
                 for line, (_, d) in zip(lines, scores)]
        filled = [[c for c in _cells(line, d) if c.strip()] for line, (_, d) in zip(lines, scores)]
        rows = [_mostly_values(cells) for cells in filled]  # data rows (and blank lines): no header, no title

        def table(i: int) -> int:  # the most common span below line i (not a row's with a note beside it)
            below = Counter(spans[j] for j in range(i + 1, len(lines)) if len(filled[j]) >= 3)
            return max(below, key=lambda n: (below[n], n), default=0)
        first = next((i for i, (n, d) in enumerate(scores) if n >= 2 and not rows[i] and spans[i] >= table(i) - 1),
                     None)
        after = next((j for j in range(first + 1, len(lines)) if filled[j]), None) if first is not None else None
        if after is not None and spans[first] < spans[after] and len(filled[after]) >= 2 and not any(
                _VALUE_RE.fullmatch(c.strip()) for c in filled[after]):
            first = after  # a 2-cell title above a 3-column table's header, whose next line holds no value either
        if first is not None:
            return first, scores[first][1]
        scores = [(0, d) if row else (n, d) for (n, d), row in zip(scores, rows)]  # a data row is never the header
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
    """The first ``n`` lines of a UTF-8 file, split as :func:`record_lines` splits them (:func:`_newline`)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline=newline_of(path)) as f:
        return [line.rstrip("\r\n") for line in itertools.islice(f, n)]


def newline_of(path: Path) -> str:
    """``open``'s ``newline`` that splits a CSV's lines as the reader counts them: at ``\\n`` when its first MB
    has one (a lone CR inside a quoted field is no line break), else at ``\\r`` (CR-only line breaks)."""
    with open(path, "rb") as f:  # in 64 KiB blocks up to the first \n: each of a read's calls costs a block, not a MB
        for _ in range(16):
            if b"\n" in f.read(1 << 16):
                return "\n"
    return ""


def _cells(line: str, delim: str) -> list[str]:
    import csv

    try:
        return next(csv.reader([line], delimiter=delim, quotechar='"'), [])
    except csv.Error:  # a field past Python's csv limit (no header holds one)
        return line.split(delim)


#: the slices :func:`spread_cells` reads across a file, and the bytes it reads from each (every whole line in them,
#: so a slice samples as many lines as the file holds there: a block of long lines is not oversampled)
SLICES, SLICE_BYTES = 64, 1 << 12
#: the least share of the slices that must yield a value, and the fewest values, for the slices to stand for the
#: file: rows with a quoted line break (an address) never split into the header's cells, so a file of such rows
#: gives values from a few slices only; below ~1 000 values (lines of 260 bytes or more on average) the slices
#: are too few to say a column holds no ambiguous value (3/1 000 rows could)
TRUST_SLICES, TRUST_VALUES = 0.75, 1000


def spread_cells(path: Path, delim: str, header: str) -> list[str]:
    """The cells under ``header`` in the whole lines within :data:`SLICES` windows of :data:`SLICE_BYTES` read from
    offsets spread evenly across a UTF-8 CSV (the first at its start), a sample of the whole file without reading
    it: each slice skips the (partial) line it starts in and its last, unfinished one; a line that does not split
    into the header's cells (trailing empty cells aside; a line inside a quoted field) is left out. ``[]`` when no
    header cell is ``header``, or when the slices do not stand for the file (:data:`TRUST_SLICES`,
    :data:`TRUST_VALUES`), or when a line that does not fit holds an ambiguous number (``150.000``: a row with a
    quoted line break may hold the column's ambiguous values, which the slices would not see as its)."""
    head = header_cells(path, delim)
    if header not in head:
        return []
    at, sep = head.index(header), "\n" if newline_of(path) == "\n" else "\r"
    size, out, yielded, hidden = path.stat().st_size, [], 0, False
    with open(path, "rb") as f:
        for k in range(SLICES):
            f.seek(size * k // SLICES)
            before = len(out)
            for line in f.read(SLICE_BYTES).decode("utf-8", "replace").split(sep)[1:-1]:
                line = line.rstrip("\r")  # a line without a quote splits as the csv module splits it, faster
                cells = line.split(delim) if '"' not in line else _cells(line, delim)
                if _fits(cells, head):
                    out.append(cells[at])
                elif not hidden:  # a piece of a row with a quoted line break: its amount is not seen as one
                    hidden = any((vote := decimal_vote(c)) is not None and not vote[1] for c in cells)
            yielded += len(out) > before
    if yielded < TRUST_SLICES * SLICES or len(out) < TRUST_VALUES or hidden:
        log.debug("%s: %d of %d slices gave %s under %r: too few to stand for the file", path, yielded,
                  SLICES, counted(len(out), "value"), header)
        return []
    return out


def _fits(cells: list[str], head: list[str]) -> bool:
    """Whether a line's ``cells`` are a row under the header's ``head``: as many, but for empty cells at the end of
    the longer (a row ending in a delimiter the header lacks, or the reverse)."""
    short, long = sorted((cells, head), key=len)
    return not any(c.strip() for c in long[len(short):])


def without_lines(path: Path, k: int, tmp: Path) -> Path:
    """A copy of ``path`` (UTF-8) in ``tmp`` without its first ``k`` lines, as :func:`_first_lines` splits them
    (a CR-only file's too)."""
    import shutil

    out = tmp / (path.stem + ".body.csv")
    with open(path, encoding="utf-8", errors="surrogateescape", newline=newline_of(path)) as f:
        skipped = sum(len(f.readline().encode("utf-8", "surrogateescape")) for _ in range(k))
    with open(path, "rb") as src, open(out, "wb") as dst:
        src.seek(skipped)
        shutil.copyfileobj(src, dst, 1 << 22)
    return out


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

    newline = newline_of(path)
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
