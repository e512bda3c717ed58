"""The reader's watch of a fresh text file that ends mid-line (:func:`connectors.file_copying.quiet_after_read`):
it catches a writer at work now, so only a file changed in the last ``WATCH_SECONDS`` is watched, and one wait
serves every file changed before it. A folder of 20 finished daily exports without a final line break copied in
just before a run made every pull wait half a second per file (12.2 s instead of 1.3 s; a year's archive copied in
at onboarding: three minutes per check, pull or --reread), and so for an hour after the copy (their ctime). The
clock (``file_encoding.clock``) is a test clock that the pause (``file_copying.pause``) moves on."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from connectors import file_copying, file_encoding
from connectors.file_encoding import changed_at
from connectors.files import FileSource, FileSourceConfig
from tests.test_files_being_written import COLS, HEAD

DAYS = 20


@pytest.fixture
def clock(monkeypatch) -> tuple[list[float], list[float]]:
    """(the test clock's time, in a list to set it; the pauses, each its seconds): a pause moves the clock on."""
    now, pauses = [0.0], []

    def wait(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(file_encoding, "clock", lambda: now[0])
    monkeypatch.setattr(file_copying, "pause", wait)
    return now, pauses


def _days(tmp_path: Path) -> list[Path]:
    """``exports/day01.csv`` … ``day20.csv``: finished exports, none ending in a line break."""
    (tmp_path / "exports").mkdir()
    paths = []
    for k in range(1, DAYS + 1):
        paths.append(tmp_path / "exports" / f"day{k:02d}.csv")
        paths[-1].write_text(HEAD + "\n".join(f"{k}-{i},c{i},2025-06-{k:02d},{i}.50" for i in range(1, 51)))
    return paths


def _pull(folder: Path) -> int:
    con = duckdb.connect()
    FileSource(FileSourceConfig(type="file", orders="exports/*.csv", columns=COLS), folder).pull(con)
    return con.execute("SELECT count(*) FROM staged_orders").fetchone()[0]


def test_a_folder_of_finished_files_copied_in_just_now_costs_one_pause_at_most(tmp_path, clock):
    """The run starts as the last file is copied in: the first file waits, and the wait counts for all the others
    (each left alone for half a second once it is over). It paused 20 times, once per file."""
    now, pauses = clock
    now[0] = max(changed_at(p) for p in _days(tmp_path)) + 0.001
    assert _pull(tmp_path) == DAYS * 50
    assert pauses == [file_copying.QUIET_SECONDS]


@pytest.mark.parametrize("age", [file_copying.WATCH_SECONDS, 30, 59 * 60])
def test_files_left_alone_for_seconds_are_not_watched(tmp_path, clock, age):
    """A folder copied in ``WATCH_SECONDS`` or more before the run: no writer is at work on it now, no pause (it
    paused once per file for an hour after the copy)."""
    now, pauses = clock
    now[0] = max(changed_at(p) for p in _days(tmp_path)) + age
    assert _pull(tmp_path) == DAYS * 50
    assert pauses == []


def test_a_file_still_being_copied_is_caught_among_finished_ones(tmp_path, clock):
    """The copy is at the last file, writing a part of it in each pause (its mtime the test clock's: a writer at work
    now) and the last part in the pause after that file's read: that file is read again, whole; the finished files
    before it were waited for once."""
    now, pauses = clock
    paths = _days(tmp_path)
    last = paths[-1].read_text()
    parts = [last[:len(last) // 3], last[:len(last) * 2 // 3], last]  # each cut inside a row but the last
    paths[-1].write_text(parts[0])
    now[0] = max(changed_at(p) for p in paths) + 0.001

    def copy_goes_on(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds
        if len(pauses) < len(parts):
            paths[-1].write_text(parts[len(pauses)])
            os.utime(paths[-1], ns=(int(now[0] * 1e9),) * 2)

    file_copying.pause = copy_goes_on  # (monkeypatched by the fixture: set back after the test)
    assert _pull(tmp_path) == DAYS * 50  # (a cut read: fewer rows, or a bad row's error)
    # day01 (the copy writes on), day20 as cut (the copy ends), day20 whole (no change: taken)
    assert pauses == [file_copying.QUIET_SECONDS] * 3
