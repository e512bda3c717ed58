"""A CSV that reads as UTF-8 but ends inside a character (connectors.file_encoding.cut_or_8bit): while it is fresh
(modified in the last SETTLED_SECONDS) it may be a copy under way, a retry-later error; once unchanged, a file that
is ASCII but for those last bytes is an 8-bit file (a cp1251 export whose only non-ASCII byte is its last letter,
read as cp1251 with a warning), and one with UTF-8 text before them a UTF-8 file cut short for good (a clear error
naming the byte, not retried forever). A file's age is this machine's clock (connectors.file_encoding.clock) set
ahead: nothing waits (a file's ctime, which the age counts from too, cannot be set back)."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from connectors import file_encoding
from connectors.errors import TransientError
from connectors.file_copying import QUIET_SECONDS
from connectors.file_encoding import SETTLED_SECONDS
from connectors.files import FileSource, FileSourceConfig
from tests.builders import run_cli
from tests.test_files_being_written import COLS, CONFIG

HEAD = "order_id,date,amount,customer\n"  # the customer code last: a file whose last byte is a letter


def row(i: int, customer: str) -> str:
    return f"{i},2025-06-{1 + i % 28:02d},{100 + i}.50,{customer}"


CUT = "the file ends inside a character (cut short: still being written or copied?)"


#: how far ahead of the real clock the test's clock is, set by :func:`export`
AHEAD = [0.0]


@pytest.fixture(autouse=True)
def clock_ahead(monkeypatch):
    """The encoding decision's clock: the real one, :data:`AHEAD` seconds ahead (0 at each test's start)."""
    AHEAD[0] = 0.0
    monkeypatch.setattr(file_encoding, "clock", lambda: time.time() + AHEAD[0])


def export(tmp_path: Path, data: bytes, *, age: float = 0, encoding: str | None = None) -> Path:
    """``exports/day.csv`` holding ``data``, last changed ``age`` seconds ago (the clock set ahead; a negative age:
    its mtime set ahead of the clock, a device's wrong clock); the config beside it."""
    config = CONFIG if encoding is None else CONFIG.replace('type = "file"', f'type = "file"\nencoding = "{encoding}"')
    (tmp_path / "rfmsync.toml").write_text(config, encoding="utf-8")
    (tmp_path / "exports").mkdir(exist_ok=True)
    day = tmp_path / "exports" / "day.csv"
    day.write_bytes(data)
    AHEAD[0] = max(age, 0)
    if age < 0:
        os.utime(day, (time.time() - age,) * 2)
    return day


def customers(folder: Path) -> list[str]:
    con = duckdb.connect()
    FileSource(FileSourceConfig(type="file", orders="exports/*.csv", columns=COLS), folder).pull(con)
    return [r[0] for r in con.execute("SELECT customer_id FROM staged_orders ORDER BY order_id::INT").fetchall()]


@pytest.mark.parametrize("rows", [3, 40_000])  # the whole file in the encoding sniff's first MB, or not
def test_a_cp1251_file_whose_only_non_ascii_byte_is_its_last_is_read_once_unchanged(tmp_path, rows, caplog):
    """Its last customer code ends in «Д» (cp1251 0xC4, a byte that starts a 2-byte UTF-8 character) and the file
    has no final line break. Before, every run took it for a UTF-8 file cut short and exited 3, forever."""
    text = HEAD + "".join(row(i, f"c{i % 97}") + "\n" for i in range(1, rows)) + row(rows, "A-17Д")
    day = export(tmp_path, text.encode("cp1251"))
    assert f"{day}: {CUT}" in run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    export(tmp_path, text.encode("cp1251"), age=SETTLED_SECONDS + 5)
    with caplog.at_level(logging.WARNING):
        got = customers(tmp_path)
    assert len(got) == rows and got[-1] == "A-17Д"
    assert f"{day}: ASCII text but for its last row's byte(s) (c4), which begin a UTF-8 character" in caplog.text
    assert "read as cp1251" in caplog.text
    run_cli("check", "--config", str(tmp_path / "rfmsync.toml"))


def test_a_utf8_file_cut_inside_its_last_character_and_left_so_is_an_error_naming_the_byte(tmp_path):
    """UTF-8 text before the cut: a UTF-8 file cut short; once unchanged, a BadFileError naming the byte and its
    line, not a retry-later error every run (the scheduler does not retry it every 10 minutes)."""
    data = (HEAD + row(1, "Пётр") + "\n" + row(2, "Иван")).encode()[:-1]
    day = export(tmp_path, data)
    assert CUT in run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    export(tmp_path, data, age=SETTLED_SECONDS + 5)
    out = run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    at = f"at byte {len(data) - 1} (line 3: '2,2025-06-03,102.50,Ива�'"
    assert f"{day}: the file ends inside a character {at}" in out
    assert f"and has not changed for {SETTLED_SECONDS // 60} minutes: it was cut short" in out and CUT not in out


def test_an_ascii_file_ending_inside_a_character_with_utf8_set_is_the_encoding_error_once_unchanged(tmp_path):
    """``encoding = "utf-8"`` set: a fresh file is still a retry-later error; an unchanged one is not valid UTF-8
    (exit 2), and the message names the encoding that reads it."""
    data = (HEAD + row(1, "A-17Д")).encode("cp1251")
    export(tmp_path, data, encoding="utf-8")
    assert CUT in run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    day = export(tmp_path, data, age=SETTLED_SECONDS + 5, encoding="utf-8")
    out = run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=2).output
    assert f"{day}: not valid utf-8 text at byte {len(data) - 1}" in out and '"cp1251"' in out


@pytest.mark.parametrize("age", [QUIET_SECONDS, SETTLED_SECONDS + 5])  # (fresher: a copy under way, no line break)
def test_a_file_ascii_past_its_first_mb_and_cp1251_after_is_read_as_cp1251_fresh_or_not(tmp_path, age, caplog):
    """Its first bad byte long before the end (ASCII rows past the encoding sniff's first MB, cp1251 rows after,
    the last ending in «Д»): ASCII before that byte's row, no UTF-8 text after it, bad bytes not only at the very
    end, so no file cut short: read as cp1251 at once, with a warning quoting a few of the bytes, not megabytes."""
    ascii_rows = "".join(row(i, f"c{i}") + "\n" for i in range(1, 40_000))
    text = HEAD + ascii_rows + row(40_000, "Иванов") + "\n" + row(40_001, "Д")
    day = export(tmp_path, text.encode("cp1251"), age=age)
    with caplog.at_level(logging.WARNING):
        assert customers(tmp_path)[-2:] == ["Иванов", "Д"]
    at = len((HEAD + ascii_rows + row(40_000, "")).encode())  # «И», a row before the last: no "last row's"
    assert (f"{day}: ASCII text but for the byte(s) from byte {at} on (line 40001: '{row(40_000, 'Иванов')}') "
            f"(c8 e2 e0 ed ee e2 c4), which are not UTF-8: read as cp1251") in caplog.text
    assert "last row" not in caplog.text and len(caplog.text) < 2000


@pytest.mark.parametrize("age", [0, SETTLED_SECONDS + 5])
def test_a_file_ascii_past_its_first_mb_a_stray_byte_then_utf8_text_is_the_encoding_error(tmp_path, age, caplog):
    """A stray cp1251 byte in a row past the first MB, UTF-8 Cyrillic rows after it: a UTF-8 file with a bad byte,
    not a cp1251 one (read so, its UTF-8 rows would be mojibake): the encoding error naming that byte's line."""
    ascii_rows = "".join(row(i, f"c{i}") + "\n" for i in range(1, 40_000))
    data = (HEAD + ascii_rows).encode() + row(40_000, "A-Д").encode("cp1251") + ("\n" + row(40_001, "Иванов")
                                                                                 + "\n" + row(40_002, "Д")).encode()
    day = export(tmp_path, data[:-1], age=age)
    with caplog.at_level(logging.WARNING):
        out = run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=2).output
    at = len((HEAD + ascii_rows + row(40_000, "A-")).encode())
    assert f"{day}: not valid utf-8 text at byte {at} (line 40001: " in out and CUT not in out
    assert "ASCII text but for" not in caplog.text


@pytest.mark.parametrize("minutes", [2, 20, 59])
def test_a_writer_paused_for_minutes_is_still_a_file_cut_short(tmp_path, minutes):
    """A UTF-8 export of Latin codes whose writer stopped inside «Ж» of the 50th row's customer (0xD0, also cp1251
    «Р») and has been quiet for minutes: still a retry-later error, nothing stored. Before (a 60 s quiet period),
    after a minute 50 rows were stored as cp1251, the last customer 'Р', and row 51 was lost."""
    full = (HEAD + "".join(row(i, f"c{i}") + "\n" for i in range(1, 50)) + row(50, "Жанна") + "\n").encode()
    day = export(tmp_path, full[:full.index("Жанна".encode()) + 1], age=minutes * 60)
    assert f"{day}: {CUT}" in run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    with pytest.raises(TransientError, match="a file unchanged for 60 minutes is taken as complete"):
        customers(tmp_path)
    export(tmp_path, full, age=minutes * 60)  # the writer finishes
    assert customers(tmp_path)[-1] == "Жанна"


def test_a_file_cut_short_whose_mtime_is_ahead_of_the_clock_says_so_and_what_to_do(tmp_path):
    """A device or share whose clock is a day ahead: the retry-later error names the file's modification time and
    what to do, not only 'run again' (it would say so for a day and an hour)."""
    data = (HEAD + row(1, "A-17Д")).encode("cp1251")
    day = export(tmp_path, data, age=-86_400)
    when = datetime.fromtimestamp(day.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    assert f"{day}: {CUT}" in out
    assert (f"its modification time, {when}, is ahead of this machine's clock (the clock of the device or share that "
            f"wrote it is wrong?), so it is taken as complete only 60 minutes after that: set that clock right and "
            f"save the file again, or set [source] encoding to the file's encoding") in " ".join(out.split())
    for age in (5, -2):  # a file of now, or a share whose clock is 2 s ahead of ours: no such words
        export(tmp_path, data, age=age)
        out = run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
        assert "ahead of" not in out and "ctime" not in out  # its ctime, now, is its mtime too


def test_a_cut_file_whose_mtime_a_copy_tool_set_back_is_still_a_file_cut_short(tmp_path):
    """A copy that keeps the source's mtime (a week old) and is not complete yet: cut inside «Ж» of its last row,
    a UTF-8 export of Latin codes. Its ctime says it changed just now: a retry-later error, nothing stored, until
    it has not changed for an hour. Before, the old mtime alone decided: read at once as cp1251, the last customer
    'Р' and the rest of the file lost."""
    full = (HEAD + "".join(row(i, f"c{i}") + "\n" for i in range(1, 50)) + row(50, "Жанна") + "\n").encode()
    day = export(tmp_path, full[:full.index("Жанна".encode()) + 1])
    week_ago = time.time() - 7 * 86_400
    os.utime(day, (week_ago, week_ago))
    out = " ".join(run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output.split())
    ctime, mtime = (datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                    for t in (day.stat().st_ctime, week_ago))
    assert f"{day}: {CUT}" in out
    assert (f"the hour counts from its change time (ctime), {ctime}, later than its modification time, {mtime} (a copy"
            f" tool that kept the source's time, or a rename, chmod or touch since: anything that moves the ctime"
            f" starts the hour again)") in out
    with pytest.raises(TransientError, match="a file unchanged for 60 minutes is taken as complete"):
        customers(tmp_path)
    AHEAD[0] = SETTLED_SECONDS - 60  # 59 minutes on: still
    assert f"{day}: {CUT}" in run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    AHEAD[0] = SETTLED_SECONDS + 5  # an hour on, unchanged: no copy under way; ASCII but for its last row
    assert customers(tmp_path)[-1] == "Р"
