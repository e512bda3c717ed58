"""The first bytes of files that are no text (a workbook, a Parquet file): a file read as text (CSV/TSV) that begins
so is named for what it looks like (:func:`not_text`), and an Excel temporary file of a save is told by them
(:func:`~connectors.file_paths.office_file`). A part of :mod:`connectors.file_readers`."""

from __future__ import annotations

from pathlib import Path

from .errors import BadFileError

#: the first bytes of files that are no text, what they are and what to do (a workbook or Parquet file under a CSV
#: name, renamed or saved so by hand; a legacy .xls matched by ``exports/*``)
#: the first bytes of a workbook: an XLSX (a zip archive) and a legacy Excel 97-2003 one (OLE2)
XLSX, XLS = b"PK\x03\x04", bytes.fromhex("D0CF11E0A1B11AE1")
SIGNATURES = ((XLSX, "a zip archive: an XLSX workbook?", "rename it to .xlsx if it is one"),
              (XLS, "a legacy Excel 97-2003 workbook (.xls)",
               "open it in Excel and save it as .xlsx or as CSV UTF-8"),
              (b"PAR1", "a Parquet file", "rename it to .parquet"))


def not_text(path: Path) -> None:
    """A BadFileError for a file read as text (CSV/TSV) whose first bytes are a workbook's or a Parquet file's
    (:data:`SIGNATURES`): decoded as text it would be an encoding error asking to fix a line."""
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, what, fix in SIGNATURES:
        if head.startswith(magic):
            raise BadFileError(f"{path}: not a text (CSV) file: its first bytes are those of {what}; nothing was "
                               f"stored: {fix} (and have [source] orders or contacts match it)")
