"""A workbook sheet's merged cells: a customer (or any text) cell merged down over several line rows fills them.

Excel shows a cell merged over rows A2:A4 as one value beside each of those rows, and a user reads each row as
holding it (a 1C or POS report writes a customer, a receipt number or a date once, merged over the receipt's
lines). The workbook stores the value in the range's top-left cell only: read as it is stored, the rows below
are rows without a customer, bad rows. The value of a merged range's top-left cell is filled down its first column,
in the data rows below the header only; a blank cell that is not merged stays blank (no general fill-down). A
number column's (amount, discount, quantity, price) merged cell is not filled: a receipt's total merged over its
three lines is one total, and copied onto each line it was counted three times; the rows below its first one are
bad rows for want of an amount, named as rows whose amount lies in a merged cell whose value is on another row
(:func:`merged_under`).

The ranges are listed after a sheet's rows in its XML (``<mergeCells>``), which openpyxl's read-only mode does not
keep: they are read from the sheet's part of the archive, inflated once more (no XML parse: a search for the
``mergeCell`` elements), and applied to the columns read.
"""

from __future__ import annotations

import bisect
import re

#: a ``<mergeCell ref="B2:B4"/>`` element (any namespace prefix, either quote)
_MERGE = re.compile(rb"""<(?:[A-Za-z_][\w.-]*:)?mergeCell\b[^>]*?\bref\s*=\s*["']([A-Za-z]+\d+:[A-Za-z]+\d+)["']""")
_CHUNK = 1 << 20
#: a range's first row (``D2:D4``: 2)
_TOP = re.compile(r"[A-Za-z]+([0-9]+)")


def merged_down(ws) -> list[tuple[int, int, int]]:
    """The ranges of a read-only sheet ``ws`` merged over more than one row: (column index from 0, first row, last
    row), rows numbered from 1. Empty when openpyxl's read-only sheet does not say where its part is."""
    from openpyxl.utils.cell import range_boundaries  # (the reader's: openpyxl is imported by XLSX reads only)

    source = getattr(ws, "_get_source", None)  # (openpyxl's ReadOnlyWorksheet: the sheet's part in the archive)
    if source is None:
        return []
    found: list[tuple[int, int, int]] = []
    tail = b""
    with source() as part:
        while chunk := part.read(_CHUNK):
            text = tail + chunk
            if b"mergeCell" in text:
                last = 0
                for m in _MERGE.finditer(text):
                    col, top, _, bottom = range_boundaries(m.group(1).decode("ascii").upper())
                    if bottom > top:
                        found.append((col - 1, top, bottom))
                    last = m.end()
                text = text[last:]
            tail = text[-200:]
    return sorted(set(found))


def fill_merged(ranges: list[tuple[int, int, int]], data: list[list[str | None]], srow: list[int],
                header: int, numbers: frozenset[int] = frozenset()) -> None:
    """Fill each range's first column (``data``: columns of the rows kept, ``srow``: their sheet rows, ascending)
    down from its top-left cell's value, in the rows below ``header`` (the header's sheet row) only; never the
    columns ``numbers`` (those of the mapped amount, discount, quantity and price: a receipt's total merged over
    its lines is one amount, not one per line)."""
    for col, top, bottom in ranges:
        if top <= header or col >= len(data) or col in numbers:
            continue
        at = bisect.bisect_left(srow, top)
        if at == len(srow) or srow[at] != top:  # (its top row was blank: nothing to fill)
            continue
        value = data[col][at]
        end = bisect.bisect_right(srow, bottom)
        for i in range(at + 1, end):
            if data[col][i] is None:
                data[col][i] = value


def merged_under(ranges: list[tuple[int, int, int]], data: list[list[str | None]], srow: list[int], header: int,
                 col: int, sheet: str) -> list[str | None] | None:
    """For each row kept (``data``, ``srow`` as :func:`fill_merged` takes them): where column ``col`` (the amount's,
    never filled) is a merged range's below its first row, and empty, the range as ``Sheet!D2:D4`` (its value on
    row 2); ``None`` elsewhere, and ``None`` for all when no row is such (a range whose first row is blank, or
    empty, holds no value to name)."""
    from openpyxl.utils.cell import get_column_letter

    found: list[str | None] = [None] * len(srow)
    named = False
    for c, top, bottom in ranges:
        if c != col or top <= header or col >= len(data):
            continue
        at = bisect.bisect_left(srow, top)
        if at == len(srow) or srow[at] != top or data[col][at] is None:
            continue
        letter = get_column_letter(col + 1)
        for i in range(at + 1, bisect.bisect_right(srow, bottom)):
            if data[col][i] is None:
                found[i] = f"{sheet}!{letter}{top}:{letter}{bottom}"
                named = True
    return found if named else None


def merged_reason(where: str) -> str:
    """A bad row's reason for an amount in a merged cell (``where``: :func:`merged_under`'s ``Sheet!D2:D4``)."""
    sheet, ref = where.rsplit("!", 1)
    top = int(_TOP.match(ref).group(1))
    return (f"its amount lies in a merged cell (sheet {sheet!r}, cells {ref}) whose value is on row {top}: the row "
            "has no amount of its own (write each line's amount, or unmerge the cells, to count it)")


__all__ = ["merged_down", "fill_merged", "merged_under", "merged_reason"]
