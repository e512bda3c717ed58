"""An export caught while it is copied in, and the files beside it that are no export: a copy that set the file's
size first (its tail still NUL bytes), a UTF-16 export cut inside a code unit (the same retry-later error as a
UTF-8 one cut inside a character, :mod:`connectors.file_encoding`), Excel's owner file ``~$sales.xlsx`` of a
workbook open in Excel (left out, :func:`connectors.file_paths.office_file`), and a workbook or Parquet file under
a text name (a clear error naming it and what it looks like, not an encoding error asking to fix a line)."""

from __future__ import annotations

import codecs
import io
from pathlib import Path

import duckdb
import openpyxl
import pytest

from connectors.errors import BadFileError, TransientError
from connectors.file_encoding import SETTLED_SECONDS
from connectors.file_paths import office_file
from connectors.files import FileSource, FileSourceConfig
from tests.builders import run_cli
from tests.test_files_being_written import COLS, CONFIG, HEAD
from tests.test_files_cut_or_8bit import CUT, clock_ahead, export  # noqa: F401 (clock_ahead: the autouse fixture)

ROWS = "".join(f"{i},c{i},2025-06-{1 + i % 28:02d},{i}.50\n" for i in range(1, 2001))
SETTLED = SETTLED_SECONDS + 60


def _pull(folder: Path, orders: str = "exports/*.csv") -> list[str]:
    con = duckdb.connect()
    FileSource(FileSourceConfig(type="file", orders=orders, columns=COLS), folder).pull(con)
    return [r[0] for r in con.execute("SELECT order_id FROM staged_orders ORDER BY order_id::INT").fetchall()]


def _nul_tailed() -> bytes:
    data = (HEAD + ROWS).encode()
    cut = len(data) * 2 // 3
    return data[:cut] + b"\0" * (len(data) - cut)  # the size set first, two thirds written


def test_a_copy_that_set_the_size_first_is_a_retry_later_error_while_fresh(tmp_path):
    day = export(tmp_path, _nul_tailed())
    with pytest.raises(TransientError, match="ends in [0-9]+ NUL bytes .a copy under way"):
        _pull(tmp_path)
    out = run_cli("pull", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    assert f"{day}: the file ends in" in out and "run again once it is complete" in out
    assert not (tmp_path / "store.duckdb").exists() or duckdb.connect(str(tmp_path / "store.duckdb")).execute(
        "SELECT count(*) FROM orders").fetchone() == (0,)


def test_a_nul_tail_unchanged_for_an_hour_is_a_copy_that_stopped(tmp_path):
    export(tmp_path, _nul_tailed(), age=SETTLED)
    with pytest.raises(BadFileError, match="NUL bytes, and has not changed for 60 minutes: a copy that stopped"):
        _pull(tmp_path)


def test_a_finished_utf16_export_ending_in_a_zero_byte_is_no_nul_tail(tmp_path):
    """Little-endian UTF-16 text ends in a zero byte (``\\n`` is 0A 00): one is no NUL character."""
    export(tmp_path, codecs.BOM_UTF16_LE + (HEAD + ROWS).encode("utf-16-le"))
    assert len(_pull(tmp_path)) == 2000


def _utf16_cut() -> bytes:
    data = codecs.BOM_UTF16_LE + (HEAD + ROWS.replace("c1,", "Иван,")).encode("utf-16-le")
    return data[:len(data) // 2 * 2 - 41]  # an odd byte count: inside a code unit


def test_a_utf16_export_cut_inside_a_code_unit_is_the_retry_later_error_as_utf8(tmp_path):
    """Not the encoding error (exit 2, "fix that line", which ``serve`` never retries): a copy under way."""
    export(tmp_path, _utf16_cut())
    with pytest.raises(TransientError, match=CUT.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        _pull(tmp_path)
    assert CUT in run_cli("pull", "--config", str(tmp_path / "rfmsync.toml"), code=3).output


def test_a_utf16_export_cut_inside_a_surrogate_pair_is_cut_and_a_lone_low_surrogate_is_not(tmp_path):
    """``😀`` is two code units (D83D DE00): a file ending after the first is cut; one ending in a low surrogate
    alone is a bad code unit no bytes appended could fix: the encoding error naming its line (exit 2)."""
    data = codecs.BOM_UTF16_LE + (HEAD + ROWS + "2001,😀").encode("utf-16-le")
    export(tmp_path, data[:-2])  # the high surrogate written, the low one not yet
    with pytest.raises(TransientError, match="the file ends inside a character"):
        _pull(tmp_path)
    export(tmp_path, codecs.BOM_UTF16_LE + (HEAD + ROWS).encode("utf-16-le") + b"\x00\xdc")
    assert "fix that line" in run_cli("pull", "--config", str(tmp_path / "rfmsync.toml"), code=2).output


def test_a_utf16_export_cut_and_left_so_for_an_hour_was_cut_short(tmp_path):
    export(tmp_path, _utf16_cut(), age=SETTLED)
    cut = "ends inside a character at byte [0-9]+ .line 2001: '2000,c200.'.*has not changed"
    with pytest.raises(BadFileError, match=cut):
        _pull(tmp_path)


def _workbook() -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["order_id", "customer", "date", "amount"])
    for i in range(1, 6):
        ws.append([str(i), f"c{i}", f"2025-06-0{i}", 10 * i])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


#: Excel's owner file of ``sales.xlsx`` while it is open: 165 bytes, the user's name in it
OWNER = (bytes([5]) + b"alice" + b" " * 48 + bytes([5, 0]) + "alice".encode("utf-16-le") + b"\0" * 99)[:165]


def test_excels_owner_file_of_an_open_workbook_is_left_out_and_check_says_so(tmp_path, caplog):
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "sales.xlsx").write_bytes(_workbook())
    (tmp_path / "exports" / "~$sales.xlsx").write_bytes(OWNER)
    (tmp_path / "rfmsync.toml").write_text(CONFIG.replace("*.csv", "*.xlsx"), encoding="utf-8")
    with caplog.at_level("INFO", logger="connectors.file_paths"):
        assert _pull(tmp_path, "exports/*.xlsx") == ["1", "2", "3", "4", "5"]
    assert "~$sales.xlsx: left out: an Excel owner file" in caplog.text
    out = run_cli("check", "--offline", "--config", str(tmp_path / "rfmsync.toml")).output
    assert "~$sales.xlsx: left out: an Excel owner file (the workbook it names is open in Excel)" in out
    run_cli("pull", "--config", str(tmp_path / "rfmsync.toml"))


def test_excels_temporary_file_of_a_save_is_left_out_and_a_text_file_so_named_is_read(tmp_path):
    """``exports/*``: Excel saving ``sales.xlsx`` writes the workbook to ``3A7F01C2`` (no extension) first; a text
    export named by its date (``20250601``, hex digits too) is an export."""
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "3A7F01C2").write_bytes(_workbook())
    (tmp_path / "exports" / "20250601").write_text(HEAD + ROWS, encoding="utf-8")
    assert len(_pull(tmp_path, "exports/*")) == 2000
    assert office_file(tmp_path / "exports" / "20250601") is None
    assert office_file(Path(".~lock.sales.xlsx#")).startswith("a LibreOffice lock file")


@pytest.mark.parametrize("name, data, looks", [
    ("sales.csv", None, "a zip archive: an XLSX workbook?; nothing was stored: rename it to .xlsx"),
    ("old.xls", bytes.fromhex("D0CF11E0A1B11AE1") + bytes(range(256)) * 20,
     "a legacy Excel 97-2003 workbook (.xls); nothing was stored: open it in Excel and save it as .xlsx"),
    ("data.csv", b"PAR1" + bytes(range(256)) * 4 + b"PAR1",
     "a Parquet file; nothing was stored: rename it to .parquet"),
])
def test_a_workbook_or_parquet_file_under_a_text_name_is_named_for_what_it_looks_like(tmp_path, name, data, looks):
    """The docs' "mis-named file" (BadFileError, exit 3), not "not valid cp1251 text ...; fix that line" (exit 2)."""
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / name).write_bytes(data or _workbook())
    (tmp_path / "rfmsync.toml").write_text(CONFIG.replace("*.csv", "*"), encoding="utf-8")
    out = run_cli("pull", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    assert f"{tmp_path / 'exports' / name}: not a text (CSV) file: its first bytes are those of {looks}" in out
