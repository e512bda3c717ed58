"""The office suites' own files that a pattern leaves out (:func:`connectors.file_paths.office_file`): Excel's
temporary file of a save lives seconds, so a workbook under an 8-hex-digit name without extension that has been
there longer is an export saved so (``exports/20251206``, a date), named for what it is, not left out without a
word; and a pattern matching left-out files only says which, and why."""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import openpyxl
import pytest

from connectors import file_encoding
from connectors.errors import BadFileError
from connectors.files import FileSource, FileSourceConfig
from tests.test_files_being_written import COLS, HEAD


def _workbook() -> bytes:
    book = openpyxl.Workbook()
    book.active.append(["order_id", "customer", "date", "amount"])
    book.active.append(["1", "c1", "2025-06-01", 10])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _pull(folder: Path, orders: str) -> int:
    con = duckdb.connect()
    FileSource(FileSourceConfig(type="file", orders=orders, columns=COLS), folder).pull(con)
    return con.execute("SELECT count(*) FROM staged_orders").fetchone()[0]


def _exports(tmp_path: Path, name: str, age: float, monkeypatch) -> Path:
    """``exports/<name>`` holding a workbook, changed ``age`` seconds ago (the clock set ahead), beside a CSV."""
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / name).write_bytes(_workbook())
    (tmp_path / "exports" / "day.csv").write_text(HEAD + "2,c2,2025-06-02,5.00\n")
    changed = file_encoding.changed_at(tmp_path / "exports" / name)
    monkeypatch.setattr(file_encoding, "clock", lambda: changed + age)
    return tmp_path / "exports" / name


@pytest.mark.parametrize("name", ["20251206", "3A7F01C2"])
def test_a_workbook_under_a_hex_name_there_for_minutes_is_named_not_left_out(tmp_path, monkeypatch, name):
    """A workbook exported without extension under a date name (8 digits: hex digits too), there for two minutes:
    the clear error of a workbook under a text name (as ``2025-12-06`` gets), not left out without a word (its
    orders missing from every run, said at -v only)."""
    path = _exports(tmp_path, name, 120, monkeypatch)
    with pytest.raises(BadFileError, match="not a text") as err:
        _pull(tmp_path, "exports/*")
    assert str(err.value).startswith(f"{path}: not a text (CSV) file: its first bytes are those of a zip archive: "
                                     f"an XLSX workbook?; nothing was stored: rename it to .xlsx")


def test_excels_temporary_file_of_a_save_is_left_out_while_fresh(tmp_path, monkeypatch):
    """Changed within the last minute (``EXCEL_TEMP_SECONDS``): Excel's save under way, left out; the CSV is read."""
    _exports(tmp_path, "3A7F01C2", 30, monkeypatch)
    assert _pull(tmp_path, "exports/*") == 1
