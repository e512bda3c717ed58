"""The office suites' own files that a pattern leaves out (:func:`connectors.file_paths.office_file`): Excel's
temporary file of a save lives seconds, so a workbook under an 8-hex-digit name without extension that has been
there longer is an export saved so (``exports/20251206``, a date), named for what it is, not left out without a
word; and a pattern matching left-out files only says which, and why."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import openpyxl
import pytest

from connectors import file_encoding
from connectors.errors import BadFileError, ConfigError
from connectors.files import FileSource, FileSourceConfig
from tests.builders import run_cli
from tests.test_files_being_written import COLS, CONFIG, HEAD


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


#: Excel's owner file of ``sales.xlsx`` while it is open (a few bytes naming who has it open)
OWNER = bytes([5]) + b"alice" + b" " * 100
OWNED = "an Excel owner file (the workbook it names is open in Excel)"


def test_a_pattern_matching_left_out_files_only_names_them(tmp_path):
    """``exports/*.xlsx`` matching only ``~$sales.xlsx`` (the workbook moved away, its owner file left behind): the
    error says which file the pattern matched and why it was left out, not that the folder holds no such file."""
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "~$sales.xlsx").write_bytes(OWNER)
    with pytest.raises(ConfigError) as err:
        _pull(tmp_path, "exports/*.xlsx")
    assert str(err.value) == (f"no file matches 'exports/*.xlsx' (looked in {tmp_path}); the only files it matches "
                              f"are left out, as no exports: {tmp_path / 'exports' / '~$sales.xlsx'}: {OWNED}")


def test_check_format_json_lists_the_files_left_out(tmp_path):
    """``check --format json``: ``left_out``, the lines ``check`` prints (empty when none), beside the fields kept."""
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "day.csv").write_text(HEAD + "1,c1,2025-06-01,10.00\n")
    (tmp_path / "exports" / "~$day.csv").write_bytes(OWNER)  # (LibreOffice/Excel open on a CSV)
    (tmp_path / "rfmsync.toml").write_text(CONFIG, encoding="utf-8")
    doc = json.loads(run_cli("check", "--offline", "--format", "json", "--config", str(tmp_path / "rfmsync.toml"))
                     .stdout)
    assert doc["left_out"] == [f"{tmp_path / 'exports' / '~$day.csv'}: left out: {OWNED}"]
    assert doc["counts"] == {"orders": 1, "contacts": 0, "bad_rows": 0} and doc["bad_rows"] == []
    (tmp_path / "exports" / "~$day.csv").unlink()
    doc = json.loads(run_cli("check", "--offline", "--format", "json", "--config", str(tmp_path / "rfmsync.toml"))
                     .stdout)
    assert doc["left_out"] == []
