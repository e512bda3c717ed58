"""The lean path (:mod:`sync.store.file_lean`) and the staging's one warning it can meet: customer codes with and
without their leading zeros (``000123`` beside ``123``). A shop whose export holds such a pair for good keeps the
lean path (before: every later file staged the whole history again and kept a copy of each file), and every run
says the warning as a fresh read of the same files does: the cold run, a warm run, a day that brings the pair's
other half, a run after the file holding it is gone, and the first run on a store whose summary an older rfmsync
saved without warnings (before: taken for "no warning", and saved so for good)."""

from __future__ import annotations

import json
from pathlib import Path

from sync.config import load_config
from sync.pipeline import configured_source
from sync.store import connect_store
from sync.store.files import ingest_files
from tests.builders import run_cli
from tests.test_ingest_once import file_tables, shop, write_export

OTHERS = [(str(i), f"c{i}", "", "2025-06-03", "5.00", "") for i in range(10, 14)]


def zeros(folder: Path, name: str, other: str = "other ids in it") -> str:
    """The start of the warning naming ``name`` as the file of the code with zeros."""
    return f"1 customer id in {folder / 'exports' / name} ('000123', …) matches {other} ('123', …) only once their"


def ingest(cfg: Path):
    with connect_store(cfg.parent / "rfmsync.duckdb") as con:
        return ingest_files(con, configured_source(load_config(cfg)))


def fresh_warnings(folder: Path) -> list[str]:
    """The warnings of the same files read into a brand-new store (``segments --format json``)."""
    cfg = folder / "fresh.toml"
    cfg.write_text((folder / "rfmsync.toml").read_text(encoding="utf-8").replace("rfmsync.duckdb", "fresh.duckdb"),
                   encoding="utf-8")
    (folder / "fresh.duckdb").unlink(missing_ok=True)
    return json_warnings(cfg)


def json_warnings(cfg: Path) -> list[str]:
    """The staging's warnings in ``segments --format json`` (not the segments' own, e.g. recency collapsed)."""
    said = json.loads(run_cli("segments", "--config", str(cfg), "--as-of", "2025-06-30", "--format", "json")
                      .stdout)["warnings"]
    return [w for w in said if "leading zeros" in w]


def test_a_shop_with_codes_without_their_zeros_keeps_the_lean_path_and_says_it_every_run(tmp_path):
    cfg = shop(tmp_path, contact_fields=False)
    write_export(tmp_path, "day1.csv", [("1", "000123", "", "2025-06-01", "10.00", ""),
                                        ("2", "123", "", "2025-06-02", "10.00", ""), *OTHERS])
    done = ingest(cfg)  # the cold run
    assert done.lean and file_tables(cfg.parent / "rfmsync.duckdb") == []
    (warning,) = done.pull.warnings
    assert warning.startswith(zeros(tmp_path, "day1.csv"))
    done = ingest(cfg)  # a warm run: nothing read, the warning kept with the store
    assert done.read == [] and done.pull.warnings == [warning]
    write_export(tmp_path, "day2.csv", [("3", "c20", "", "2025-06-04", "7.00", "")])
    done = ingest(cfg)  # a day added: its rows alone, no copy of any file
    assert done.lean and done.read == [str(tmp_path / "exports" / "day2.csv")] and done.pull.warnings == [warning]
    assert file_tables(cfg.parent / "rfmsync.duckdb") == []
    assert json_warnings(cfg) == [warning] == fresh_warnings(tmp_path)


def test_the_pair_split_across_files_is_said_when_the_second_half_comes_and_not_once_it_is_gone(tmp_path):
    cfg = shop(tmp_path, contact_fields=False)
    write_export(tmp_path, "day1.csv", [("1", "000123", "", "2025-06-01", "10.00", ""), *OTHERS])
    assert ingest(cfg).pull.warnings == []
    write_export(tmp_path, "day2.csv", [("2", "123", "", "2025-06-02", "10.00", "")])
    done = ingest(cfg)  # on the lean path, the kept file's codes (in the store's orders) meet the new file's
    assert done.lean
    (warning,) = done.pull.warnings
    assert warning.startswith(zeros(tmp_path, "day1.csv", f"ids in {tmp_path / 'exports' / 'day2.csv'}"))
    assert json_warnings(cfg) == [warning] == fresh_warnings(tmp_path)  # the warm run and a fresh read
    write_export(tmp_path, "day0.csv", [("5", "0000123", "", "2025-05-02", "10.00", "")])  # sorts first
    done = ingest(cfg)
    assert done.lean and done.pull.warnings == fresh_warnings(tmp_path)  # each file at its place: as a fresh read
    (warning,) = done.pull.warnings  # two pairs of one id each: the first file's named, both counted
    assert warning.startswith(f"1 customer id in {tmp_path / 'exports' / 'day0.csv'} ('0000123', …)")
    assert "dropped (2 in all files)" in warning
    (tmp_path / "exports" / "day2.csv").unlink()
    (tmp_path / "exports" / "day0.csv").unlink()
    done = ingest(cfg)  # the other halves gone: no warning left
    assert done.lean and done.pull.warnings == [] and json_warnings(cfg) == []


def test_a_summary_saved_without_warnings_is_not_taken_for_none(tmp_path):
    """An older rfmsync kept no warnings in its summary: the first run decides the warning over the stored orders
    (on the lean path: no file read again) and keeps it."""
    cfg = shop(tmp_path, contact_fields=False)
    write_export(tmp_path, "day1.csv", [("1", "000123", "", "2025-06-01", "10.00", ""),
                                        ("2", "123", "", "2025-06-02", "10.00", ""), *OTHERS])
    (warning,) = ingest(cfg).pull.warnings
    with connect_store(tmp_path / "rfmsync.duckdb") as con:  # the summary as the release before saved it
        summary = json.loads(con.execute("SELECT summary FROM ingest_summary").fetchone()[0])
        del summary["warnings"]
        con.execute("UPDATE ingest_summary SET summary = ?", [json.dumps(summary)])
    done = ingest(cfg)
    assert done.lean and done.read == [] and done.pull.warnings == [warning]
    assert json_warnings(cfg) == [warning]  # and kept: the next (warm) run says it too
