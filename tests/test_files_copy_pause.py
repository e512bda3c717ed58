"""A copy under way that stalls (:func:`connectors.file_copying.copy_under_way`): a CSV/TSV file whose last line has
no line break and that changed less than ``[source] quiet_seconds`` (60 by default) ago is not read: a retry-later
error (exit 3; ``serve`` tries again) naming it and when it will be read. The reader used to watch such a file for
half a second only: a copy paused longer (a share's retries) was read as finished, its last value cut (a clients
file's consent ``yo'q``, no, cut to ``y``: yes). A file's age is set by its mtime and this machine's clock
(``file_encoding.clock``) set ahead of its change time (its ctime, which no test can set back): nothing sleeps."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import duckdb
import pytest

from connectors import file_copying, file_encoding
from connectors.errors import TransientError
from connectors.file_encoding import changed_at
from connectors.files import FileSource, FileSourceConfig
from tests.builders import run_cli
from tests.test_files_being_written import COLS, CONFIG, HEAD

DAYS = 20
CLIENTS = "id,mail,name,consent\nc1,a@example.com,Aziz,ha\nc2,b@example.com,Bobur,yo'q\n"
#: the clients file of a copy stalled after the first byte of ``yo'q``: ``y``, a yes word
CUT = CLIENTS[:CLIENTS.index("yo'q") + 1]


def _aged(monkeypatch, path: Path, seconds: float) -> None:
    """``path`` last modified ``seconds`` ago: its mtime set back, the clock set that far past its ctime."""
    changed = changed_at(path)
    os.utime(path, (changed - seconds,) * 2)
    monkeypatch.setattr(file_encoding, "clock", lambda: changed_at(path) + seconds)


def _shop(tmp_path: Path, clients: str, **cfg) -> tuple[FileSource, Path]:
    (tmp_path / "exports").mkdir(exist_ok=True)
    (tmp_path / "exports" / "day1.csv").write_text(HEAD + "1,c1,2025-06-01,10.00\n2,c2,2025-06-02,20.00\n")
    (tmp_path / "clients.csv").write_text(clients, encoding="utf-8")
    config = FileSourceConfig(type="file", orders="exports/*.csv", contacts="clients.csv", columns=COLS,
                              contact_columns={"customer_id": "id", "email": "mail", "marketing_consent": "consent"},
                              **cfg)
    return FileSource(config, tmp_path), tmp_path / "clients.csv"


def _consents(source: FileSource) -> list[tuple[str, str]]:
    con = duckdb.connect()
    source.pull(con)
    return con.execute("SELECT customer_id, marketing_consent FROM staged_contacts ORDER BY 1").fetchall()


def test_a_copy_stalled_for_seconds_with_its_last_consent_cut_is_not_read_until_it_is_whole(tmp_path, monkeypatch):
    """The copy stalled 5 s ago after ``y`` of ``yo'q``: before, read as finished (c2's consent yes). Now a
    retry-later error naming the file and when it will be read; once the copy writes the rest, c2 is no."""
    source, clients = _shop(tmp_path, CUT)
    _aged(monkeypatch, clients, 5)
    with pytest.raises(TransientError) as e:
        _consents(source)
    msg = str(e.value)
    assert msg.startswith(f"{clients}: its last line has no line break and the file changed 5 s ago: a copy or "
                          "export still under way?")
    assert re.search(r"it is read once it ends in a line break or has not changed for 60 s, from "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\[source\] quiet_seconds\)\. A finished file saved without a "
                     r"final line break \(a spreadsheet's CSV download\): add one at its end, or set \[source\] "
                     r"quiet_seconds = 0, and run the same command again$", msg)
    with open(clients, "a", encoding="utf-8") as f:  # the copy goes on: the file changes, ends in a line break
        f.write("o'q\n")
    assert _consents(source) == [("c1", "yes"), ("c2", "no")]


@pytest.mark.parametrize("age, quiet, read", [(59, None, False), (60, None, True), (3000, None, True),
                                              (120, 300, False), (0, 0, True)])
def test_a_file_without_a_final_line_break_is_read_once_left_alone_for_quiet_seconds(tmp_path, monkeypatch, age,
                                                                                     quiet, read):
    """Many finished exports end without a line break: one unchanged for ``quiet_seconds`` is read as it is
    (its last value as written, whatever it is); ``quiet_seconds = 0`` reads it at once."""
    source, clients = _shop(tmp_path, CUT, **({} if quiet is None else {"quiet_seconds": quiet}))
    _aged(monkeypatch, clients, age)
    if read:
        assert _consents(source) == [("c1", "yes"), ("c2", "yes")]
    else:
        with pytest.raises(TransientError, match="its last line has no line break"):
            _consents(source)


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_a_fresh_file_ending_in_a_line_break_is_read_at_once(tmp_path, monkeypatch, end):
    source, clients = _shop(tmp_path, CLIENTS.replace("\n", end))
    _aged(monkeypatch, clients, 0)
    assert _consents(source) == [("c1", "yes"), ("c2", "no")]


def _days(tmp_path: Path) -> list[Path]:
    """``exports/day01.csv`` … ``day20.csv``: finished exports, none ending in a line break."""
    (tmp_path / "exports").mkdir()
    paths = []
    for k in range(1, DAYS + 1):
        paths.append(tmp_path / "exports" / f"day{k:02d}.csv")
        paths[-1].write_text(HEAD + "\n".join(f"{k}-{i},c{i},2025-06-{k:02d},{i}.50" for i in range(1, 51)))
    return paths


def test_a_folder_copied_in_just_now_is_read_once_quiet_and_the_cli_exits_3_naming_a_file(tmp_path, monkeypatch):
    """``rfmsync pull`` right after the copy: exit 3 naming the first file, nothing stored; a minute later every
    file is read."""
    paths = _days(tmp_path)
    (tmp_path / "rfmsync.toml").write_text(CONFIG, encoding="utf-8")
    now = max(changed_at(p) for p in paths)
    monkeypatch.setattr(file_encoding, "clock", lambda: now + 1)
    out = run_cli("pull", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    assert f"{paths[0]}: its last line has no line break and the file changed" in out
    assert not (tmp_path / "store.duckdb").exists() or duckdb.connect(str(tmp_path / "store.duckdb")).execute(
        "SELECT count(*) FROM orders").fetchone() == (0,)
    monkeypatch.setattr(file_encoding, "clock", lambda: now + file_copying.QUIET_SECONDS)
    con = duckdb.connect()
    FileSource(FileSourceConfig(type="file", orders="exports/*.csv", columns=COLS), tmp_path).pull(con)
    assert con.execute("SELECT count(*) FROM staged_orders").fetchone() == (DAYS * 50,)


def test_init_reads_the_export_it_is_given_though_just_saved_without_a_final_line_break(tmp_path, monkeypatch):
    """A spreadsheet's CSV download seconds old, no final line break: ``rfmsync init`` wrote the config, then
    stopped (exit 3, a copy under way?), and run again refused to overwrite its config. The file the user names is
    not a copy under way: init reads it; a later ``check`` waits for it as for any file."""
    paths = _days(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(file_encoding, "clock", lambda: changed_at(paths[0]) + 1)
    out = run_cli("init", str(paths[0]), code=0).output
    assert "its last line has no line break" not in out and (tmp_path / "rfmsync.toml").exists()
    out = run_cli("check", "--config", "rfmsync.toml", code=3).output
    assert "its last line has no line break" in out and "run the same command again" in out


def _ahead_by(path: Path, seconds: float) -> None:
    ahead = time.time() + seconds
    os.utime(path, (ahead, ahead))


def test_a_file_dated_hours_ahead_waits_quiet_seconds_from_its_ctime_not_from_its_mtime(tmp_path, monkeypatch):
    """A device stamping its local time as UTC, ``touch -d "+3 hours"``: the file was refused until its mtime and a
    minute had passed (three hours; every day for such a device). Its ctime, by this machine's or the share's clock,
    counts instead, and the message names the mtime and the wrong clock."""
    source, clients = _shop(tmp_path, CUT)
    _ahead_by(clients, 3 * 3600)
    ctime = clients.stat().st_ctime
    monkeypatch.setattr(file_encoding, "clock", lambda: ctime + 2)
    with pytest.raises(TransientError) as e:
        _consents(source)
    assert re.search(r"the file changed 2 s ago: .*; its modification time, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, is ahead "
                     r"of this machine's clock \(the clock of the device or share that wrote it is wrong\?\), so the 60 s "
                     r"count from its change time \(ctime\), .*: set that clock right and save the file again\.",
                     str(e.value))
    monkeypatch.setattr(file_encoding, "clock", lambda: ctime + 60)
    assert _consents(source) == [("c1", "yes"), ("c2", "yes")]


def test_a_file_whose_times_are_all_ahead_of_this_machines_clock_is_read(tmp_path, monkeypatch):
    """This machine's clock hours behind the share's (or a time no clock here set): the file's age is unknown, and a
    wait would last as long as the clock is wrong; it is read, as before files28."""
    source, clients = _shop(tmp_path, CUT)
    monkeypatch.setattr(file_encoding, "clock", lambda: changed_at(clients) - 3 * 3600)
    assert _consents(source) == [("c1", "yes"), ("c2", "yes")]


def test_a_file_touched_by_a_chmod_names_the_ctime_the_wait_counts_from(tmp_path, monkeypatch):
    """An old export (mtime an hour back) whose ctime a chmod moved a second ago: "changed 1 s ago" alone read as
    wrong; the message says the wait counts from the ctime, later than the mtime."""
    source, clients = _shop(tmp_path, CUT)
    os.utime(clients, (changed_at(clients) - 3600,) * 2)
    monkeypatch.setattr(file_encoding, "clock", lambda: changed_at(clients) + 1)
    with pytest.raises(TransientError) as e:
        _consents(source)
    assert "the file changed 1 s ago" in str(e.value)
    assert re.search(r"the 60 s counts from its change time \(ctime\), .* UTC, later than its modification time, .* "
                     r"\(a copy tool that kept the source's time, or a rename, chmod or touch since", str(e.value))


def test_a_copy_stalled_inside_a_quoted_field_is_a_copy_under_way_not_a_bad_file(tmp_path, monkeypatch):
    """Stalled inside a quoted address: DuckDB's sniffer fails on the open quote, a BadFileError (exit 2, which
    ``serve`` does not retry). The copy check comes first: exit 3, the read's error named; once the copy is done
    the file reads."""
    (tmp_path / "exports").mkdir()
    day = tmp_path / "exports" / "day.csv"
    whole = HEAD.replace("\n", ",address\n") + "".join(
        f'{i},c{i},2025-06-01,10.00,"Tashkent, Chilonzor {i}"\n' for i in range(1, 201))
    day.write_text(whole[:whole.rindex("Chilonzor")])
    monkeypatch.setattr(file_encoding, "clock", lambda: changed_at(day) + 5)
    source = FileSource(FileSourceConfig(type="file", orders="exports/*.csv", columns=COLS), tmp_path)
    with pytest.raises(TransientError) as e:
        source.pull(duckdb.connect())
    assert str(e.value).startswith(f"{day}: its last line has no line break and the file changed 5 s ago: a copy or "
                                   f"export still under way? (its last value may be cut short); reading it as it is "
                                   f"failed: {day}: cannot read as CSV")
    day.write_text(whole)
    con = duckdb.connect()
    source.pull(con)
    assert con.execute("SELECT count(*) FROM staged_orders").fetchone() == (200,)
