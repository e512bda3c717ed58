"""A copy under way that stalls (:func:`connectors.file_copying.copy_under_way`): a CSV/TSV file whose last line has
no line break and that changed less than ``[source] quiet_seconds`` (60 by default) ago is not read: a retry-later
error (exit 3; ``serve`` tries again) naming it and when it will be read. The reader used to watch such a file for
half a second only: a copy paused longer (a share's retries) was read as finished, its last value cut (a clients
file's consent ``yo'q``, no, cut to ``y``: yes). A file's age is set by its mtime and this machine's clock
(``file_encoding.clock``) set ahead of its change time (its ctime, which no test can set back): nothing sleeps."""

from __future__ import annotations

import os
import re
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
                     r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\[source\] quiet_seconds\)$", msg)
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
