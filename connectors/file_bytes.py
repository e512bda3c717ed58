"""Where things are in an export file's bytes, read in chunks: the first byte not valid in an encoding, the row
holding a byte, the file's last row, and the line around a byte quoted for an error. No decisions: those are
:mod:`connectors.file_encoding`'s."""

from __future__ import annotations

import codecs
import itertools
import re
from pathlib import Path


def first_bad_byte(path: Path, encoding: str) -> int | None:
    """The file offset of the first byte that is not valid ``encoding``, or None when the whole file is."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 22)
            pending = len(decoder.getstate()[0])  # undecoded bytes carried over from the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                return max(offset - pending + e.start, 0)
            if not chunk:
                return None
            offset += len(chunk)


#: the most of a file's last row read by :func:`last_row` (a "row" longer than this is taken from there)
ROW_MAX = 1 << 20
#: what a row holding nothing else is not a last row of (Excel's ``;;`` after the data included)
_BLANK = b"\r\n;,\t| "


def last_row(path: Path) -> tuple[int, bytes]:
    """The offset and bytes of the file's last row: from the line break (LF, CR or both) before its last line that
    is not empty or delimiters only (Excel's ``;;``) to the end of the file (the lines after it included), read
    backwards in 64 KiB blocks, at most :data:`ROW_MAX` bytes."""
    end = path.stat().st_size
    data = b""
    with open(path, "rb") as f:
        while end > 0 and len(data) < ROW_MAX:
            start = max(end - (1 << 16), 0)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
            body = data.rstrip(_BLANK)
            cut = max(body.rfind(b"\n"), body.rfind(b"\r"))  # CR alone ends a row too (classic Mac)
            if cut >= 0:
                return end + cut + 1, data[cut + 1:]
    return end, data


def row_start(path: Path, at: int) -> int:
    """The offset of the row holding byte ``at``: just after the last line break (LF or CR) before it, or 0; read
    backwards in 64 KiB blocks."""
    with open(path, "rb") as f:
        end = at
        while end > 0:
            start = max(end - (1 << 16), 0)
            f.seek(start)
            block = f.read(end - start)
            brk = max(block.rfind(b"\n"), block.rfind(b"\r"))
            if brk >= 0:
                return start + brk + 1
            end = start
    return 0


_QUOTED = 50  # characters quoted on each side of a bad byte
_LINE_BREAK = re.compile(r"[\r\n]")


def line_at(path: Path, offset: int, encoding: str) -> str:
    """`` (line N: '…')``: :func:`quoted_at`'s line and text."""
    line, shown = quoted_at(path, offset, encoding)
    return f" (line {line}: {shown!r})"


def quoted_at(path: Path, offset: int, encoding: str) -> tuple[int, str]:
    """The number of the line holding byte ``offset`` (lines end at ``\\n``, or at ``\\r`` in a file whose
    first chunk has no ``\\n``; in UTF-16, at those code units, not at bytes of that value: ``上`` is ``0A 4E``),
    counted in one chunked pass, and about 50 characters of it on each side of that byte, read from a window of the
    file alone (decoded with replacement; aligned to 2 bytes in UTF-16)."""
    import numpy as np

    width = 2 if encoding.startswith("utf-16") else 1
    line, start, sep = 1, 0, 0
    with open(path, "rb") as f:
        units = ">u2" if encoding == "utf-16-be" or (width == 2 and f.read(2) == codecs.BOM_UTF16_BE) else "<u2"
        f.seek(0)
        pos = 0
        while pos < offset:
            chunk = f.read(min(1 << 22, offset - pos))
            if not chunk:
                break
            # the line-break code units' places in the chunk (a UTF-16 chunk's odd last byte is no code unit)
            codes = np.frombuffer(chunk[:len(chunk) - len(chunk) % width], units if width == 2 else np.uint8)
            sep = sep or (13 if not (codes == 10).any() and (codes == 13).any() else 10)
            breaks = np.flatnonzero(codes == sep)
            line += len(breaks)
            if len(breaks):
                start = pos + width * (int(breaks[-1]) + 1)
            pos += len(chunk)
        lo = max(start, offset - 4 * _QUOTED)
        lo += (lo - offset) % width  # a whole number of code units before the bad byte
        f.seek(lo)
        data = f.read(offset - lo + 4 * _QUOTED)
    before = _LINE_BREAK.split(data[:offset - lo].decode(encoding, errors="replace"))[-1]
    after = _LINE_BREAK.split(data[offset - lo:].decode(encoding, errors="replace"), maxsplit=1)[0]
    shown = ("…" if len(before) > _QUOTED else "") + before[-_QUOTED:] + after[:_QUOTED] + (
        "…" if len(after) > _QUOTED else "")
    return line, shown



def stray_quote(path: Path, delim: str) -> tuple[int, str] | None:
    """The first line (number in ``path``, text cut to about 100 characters) where a field that begins with a quote
    goes on after its closing one (``;"Ромашка" ООО;``): no CSV reading of it holds. Found by the csv module's
    strict reader in one pass (only after a failed read); None when it reads the file, or fails otherwise (a quote
    never closed: where it opened the reader does not say)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=delim, quotechar='"', doublequote=True, strict=True)
        try:
            for _ in reader:
                pass
        except csv.Error as e:
            if "expected after" not in str(e):
                return None
            line = reader.line_num
        else:
            return None
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        text = next(itertools.islice(f, line - 1, None), "").rstrip("\r\n")
    at = max(text.find('"'), 0)
    return line, text[max(at - 50, 0):at + 50]
