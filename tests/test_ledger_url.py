"""[ledger] url and $RFMSYNC_LEDGER_URL; the old names [store] url and $RFMSYNC_STORE_URL still work, warned."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sync.config import load_config
from sync.errors import ConfigError
from sync.ledger import Ledger, ledger_url, open_ledger
from sync.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
OLD_KEY = "[store] url is deprecated: move it to [ledger] url"
OLD_ENV = "RFMSYNC_STORE_URL is deprecated: rename it to RFMSYNC_LEDGER_URL"


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # no stray .env

    def write(body: str = "") -> Path:
        path = tmp_path / "rfmsync.toml"
        path.write_text('[source]\ntype = "file"\npath = "orders.csv"\n' + body, encoding="utf-8")
        return path

    return write


def resolve(path: Path, caplog: pytest.LogCaptureFixture) -> tuple[str, list[str]]:
    """The ledger URL for this config and environment, and the warnings logged while resolving it."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sync.ledger"):
        url = ledger_url(load_config(path), load_settings())
    return url, [r.getMessage() for r in caplog.records]


def test_default_is_rfmsync_db_next_to_the_config(write_config, caplog) -> None:
    path = write_config()
    assert resolve(path, caplog) == (f"sqlite:///{path.resolve().parent / 'rfmsync.db'}", [])


def test_the_new_names_work_without_a_warning_and_the_environment_wins(write_config, monkeypatch, caplog) -> None:
    path = write_config('[ledger]\nurl = "sqlite:///from-file.db"\n')
    assert resolve(path, caplog) == (f"sqlite:///{path.parent / 'from-file.db'}", [])
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", "sqlite:///from-env.db")
    assert resolve(path, caplog) == ("sqlite:///from-env.db", [])


def test_the_old_names_still_work_and_warn(write_config, monkeypatch, caplog) -> None:
    path = write_config('[store]\nurl = "sqlite:///old-key.db"\norders = "orders.duckdb"\n')
    assert resolve(path, caplog) == (f"sqlite:///{path.parent / 'old-key.db'}", [f"{path.resolve()}: {OLD_KEY}"])
    monkeypatch.setenv("RFMSYNC_STORE_URL", "sqlite:///old-env.db")
    url, warnings = resolve(write_config(), caplog)
    assert (url, warnings) == ("sqlite:///old-env.db", [OLD_ENV])


def test_the_new_names_win_when_both_are_set(write_config, monkeypatch, caplog) -> None:
    path = write_config('[ledger]\nurl = "sqlite:///new-key.db"\n[store]\nurl = "sqlite:///old-key.db"\n')
    assert resolve(path, caplog) == (f"sqlite:///{path.parent / 'new-key.db'}",
                                     [f"{path.resolve()}: {OLD_KEY}; [ledger] url is set and wins"])
    monkeypatch.setenv("RFMSYNC_STORE_URL", "sqlite:///old-env.db")
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", "sqlite:///new-env.db")
    url, warnings = resolve(write_config(), caplog)
    assert (url, warnings) == ("sqlite:///new-env.db", [f"{OLD_ENV}; RFMSYNC_LEDGER_URL is set and wins"])


def test_the_old_environment_variable_still_wins_over_the_file(write_config, monkeypatch, caplog) -> None:
    monkeypatch.setenv("RFMSYNC_STORE_URL", "sqlite:///old-env.db")
    url, _ = resolve(write_config('[ledger]\nurl = "sqlite:///new-key.db"\n'), caplog)
    assert url == "sqlite:///old-env.db"  # as before the rename: the environment overrides the config file


def test_each_deprecation_is_logged_once_and_never_shows_the_url(write_config, monkeypatch, caplog) -> None:
    monkeypatch.setenv("RFMSYNC_STORE_URL", "postgresql+psycopg://rfm:top-secret@db/rfmsync")
    path = write_config('[store]\nurl = "postgresql+psycopg://rfm:also-secret@db/rfmsync"\n')
    _, first = resolve(path, caplog)
    _, second = resolve(path, caplog)
    assert len(first) == 2 and second == []
    assert not any("secret" in line or "postgresql" in line for line in first)


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process: warnings reach stderr through logging's last-resort handler."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RFMSYNC_")}
    return subprocess.run([sys.executable, "-m", "sync", *args], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_cli_warns_once_on_stderr_and_opens_the_ledger_the_names_point_at(write_config, tmp_path) -> None:
    path = write_config('[store]\nurl = "sqlite:///old/rfmsync.db"\n')
    with Ledger.connect(f"sqlite:///{tmp_path / 'new.db'}") as ledger:
        ledger.finish_run(ledger.start_run("sync", "mc"), "succeeded", {})
    result = cli("runs", "--config", str(path), "--format", "json", cwd=tmp_path,
                 RFMSYNC_STORE_URL="sqlite:///old.db", RFMSYNC_LEDGER_URL="sqlite:///new.db")
    assert result.returncode == 0, result.stderr
    assert [(r["kind"], r["destination"]) for r in json.loads(result.stdout)] == [("sync", "mc")]
    assert result.stderr.splitlines() == [f"{OLD_ENV}; RFMSYNC_LEDGER_URL is set and wins",
                                          f"{path.resolve()}: {OLD_KEY}"]
    assert not (tmp_path / "old.db").exists() and not (tmp_path / "old").exists()


def test_a_relative_sqlite_path_in_the_file_is_in_the_config_folder_wherever_rfmsync_runs(write_config, tmp_path,
                                                                                         monkeypatch, caplog) -> None:
    """A cron job or a service runs from another folder: the ledger the config names is still the one next to it,
    not a new, empty one in the working folder (whose first sync would re-send everything with no plan guard)."""
    path = write_config('[ledger]\nurl = "sqlite:///data/ledger.db?timeout=5"\n')
    elsewhere = tmp_path / "cron-home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert resolve(path, caplog) == (f"sqlite:///{tmp_path / 'data' / 'ledger.db'}?timeout=5", [])
    for url in ("sqlite://", "sqlite:///:memory:", f"sqlite:///{tmp_path / 'abs.db'}",
                "postgresql+psycopg://rfm:pw@db/rfmsync"):
        assert resolve(write_config(f'[ledger]\nurl = "{url}"\n'), caplog)[0] == url
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", "sqlite:///env.db")  # the environment's: the working folder's
    assert resolve(path, caplog)[0] == "sqlite:///env.db"
    monkeypatch.delenv("RFMSYNC_LEDGER_URL")
    path = write_config('[ledger]\nurl = "sqlite:///data/ledger.db?timeout=5"\n')
    # through the CLI, from the other folder: the runs are read from the config folder's ledger
    (tmp_path / "data").mkdir()
    with open_ledger(load_config(path), load_settings()) as ledger:
        ledger.finish_run(ledger.start_run("pull"), "succeeded", {})
    result = cli("runs", "--config", str(path), "--format", "json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert [r["kind"] for r in json.loads(result.stdout)] == ["pull"]
    assert (tmp_path / "data" / "ledger.db").is_file() and not (elsewhere / "data").exists()


def test_a_ledger_an_older_version_left_in_the_working_folder_is_named_not_replaced(write_config, tmp_path,
                                                                                    monkeypatch) -> None:
    path = write_config('[ledger]\nurl = "sqlite:///rfm.db"\n')
    elsewhere = tmp_path / "cron-home"
    elsewhere.mkdir()
    (elsewhere / "rfm.db").write_bytes(b"")  # where an older version put it when run from there
    result = cli("runs", "--config", str(path), cwd=elsewhere)
    assert result.returncode == 2, result.stderr
    assert f"a ledger is at {elsewhere / 'rfm.db'}" in result.stderr and str(tmp_path / "rfm.db") in result.stderr
    assert not (tmp_path / "rfm.db").exists()


def test_a_relative_path_in_the_environment_never_starts_an_empty_ledger_beside_a_used_one(write_config, tmp_path,
                                                                                          monkeypatch) -> None:
    """RFMSYNC_LEDGER_URL=sqlite:///rfmsync.db exported in a profile is the working folder's (as documented): run by
    hand from the config's folder, the ledger next to the config. The cron job, running from its home, would start
    a new, empty ledger there (its first sync re-sending every tag with no plan guard, and never taking a tag off
    a contact who left a segment): it stops instead (exit 2) naming both files, and creates none. A working
    folder with a ledger of its own uses it; a config folder whose file of that name was never used stops
    nothing."""
    path = write_config()
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", "sqlite:///rfmsync.db")
    with open_ledger(load_config(path), load_settings()) as ledger:  # by hand, from the config's folder
        ledger.finish_run(ledger.start_run("sync"), "succeeded", {})
    elsewhere = tmp_path / "cron-home"
    elsewhere.mkdir()
    result = cli("runs", "--config", str(path), cwd=elsewhere, RFMSYNC_LEDGER_URL="sqlite:///rfmsync.db")
    assert result.returncode == 2, result.stderr
    assert (f"RFMSYNC_LEDGER_URL names the relative path 'rfmsync.db', which is {elsewhere / 'rfmsync.db'}"
            in result.stderr and f"the config's folder has one at {tmp_path / 'rfmsync.db'}, holding runs but no "
            "pushed contacts" in result.stderr and f"sqlite:///{tmp_path / 'rfmsync.db'}" in result.stderr)
    assert not (elsewhere / "rfmsync.db").exists()
    monkeypatch.chdir(elsewhere)
    Ledger.connect(f"sqlite:///{elsewhere / 'rfmsync.db'}").close()  # the cron folder's own ledger
    assert ledger_url(load_config(path), load_settings()) == "sqlite:///rfmsync.db"
    (elsewhere / "rfmsync.db").unlink()
    (tmp_path / "rfmsync.db").unlink()
    Ledger.connect(f"sqlite:///{tmp_path / 'rfmsync.db'}").close()  # a ledger next to the config, never used
    assert ledger_url(load_config(path), load_settings()) == "sqlite:///rfmsync.db"


def test_planning_reads_a_sqlite_ledger_whose_url_has_a_query(write_config, tmp_path) -> None:
    """`plan`, `sync --dry-run`, `report` and `explain` open the ledger only if its file exists (planning creates
    none); a URL with a query (``?timeout=30``) was taken for a file named with it, never there: they planned
    against an empty ledger, every contact new."""
    from sync.api import existing_ledger

    path = write_config('[ledger]\nurl = "sqlite:///rfmsync.db?timeout=30"\n')
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        ledger.finish_run(ledger.start_run("sync", "mc"), "succeeded", {"customers": 3})
    assert (tmp_path / "rfmsync.db").is_file()
    ledger = existing_ledger(cfg, settings)
    try:
        assert [(r["destination"], r["status"]) for r in ledger.recent_runs()] == [("mc", "succeeded")]
    finally:
        ledger.close()
    assert not (tmp_path / "other.db").exists()
    missing = existing_ledger(load_config(write_config('[ledger]\nurl = "sqlite:///other.db?timeout=30"\n')),
                              settings)
    try:
        assert missing.recent_runs() == [] and not (tmp_path / "other.db").exists()  # still creates no file
    finally:
        missing.close()


@pytest.mark.parametrize("url, file", [
    ("sqlite:///file:x?mode=memory&uri=true", None),  # in memory, as the ledger's engine decides (db.is_memory)
    ("sqlite:///file::memory:?uri=true", None),  # SQLite's own in-memory URI, not a file named ':memory:'
    ("sqlite:///file::memory:?uri=true&cache=shared", None), ("sqlite:///file:%3Amemory%3A?uri=true", None),
    ("sqlite:///file:///:memory:?uri=true", "/:memory:"),  # a path /:memory: is a file to SQLite
    ("sqlite:///file:x.db?mode=MEMORY&uri=true", "x.db"),  # SQLite's modes are lower case: an error, not memory
    ("sqlite://", None), ("sqlite:///:memory:", None), ("postgresql+psycopg://u:p@db/x", None),
    ("sqlite:///file:data/l.db?uri=true", "data/l.db"),  # a URI filename names a file
    ("sqlite:///file:///srv/l.db?uri=true&mode=rw", "/srv/l.db"),
    ("sqlite:///file:x.db", "file:x.db"),  # without uri=true SQLite takes the name as it is
    ("sqlite:///data/l.db?timeout=30", "data/l.db"),
])
def test_sqlite_file_says_memory_or_file_as_the_ledger_does(url, file) -> None:
    from sqlalchemy.engine import make_url

    from sync.ledger.db import is_memory
    from sync.ledger.url import sqlite_file

    assert sqlite_file(url) == file
    if url.startswith("sqlite"):
        assert (file is None) == is_memory(make_url(url))


def test_an_in_memory_uri_ledger_is_no_file_and_a_uri_filename_is_in_the_config_folder(write_config, tmp_path,
                                                                                       monkeypatch, caplog) -> None:
    """The ledger-location upgrade check and ``existing_ledger`` ask whether the URL names a file: an in-memory URI
    (``?mode=memory&uri=true``) was taken for a file named ``x.db``, moved into the config folder, and a stray
    ``x.db`` in the working folder stopped the run as "a ledger an older version left"; a URI filename was left
    to the working folder, and planning created it."""
    from sqlalchemy.engine import make_url

    from sync.api import existing_ledger

    elsewhere = tmp_path / "cron-home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (elsewhere / "x.db").write_bytes(b"")
    memory = "sqlite:///file:x.db?mode=memory&uri=true"
    assert resolve(write_config(f'[ledger]\nurl = "{memory}"\n'), caplog)[0] == memory
    path = write_config('[ledger]\nurl = "sqlite:///file:data/l.db?uri=true"\n')
    resolved = make_url(resolve(path, caplog)[0])
    assert (resolved.database, dict(resolved.query)) == (f"file:{tmp_path / 'data' / 'l.db'}", {"uri": "true"})
    (tmp_path / "data").mkdir()
    ledger = existing_ledger(load_config(path), load_settings())
    ledger.close()
    assert not (tmp_path / "data" / "l.db").exists() and not (elsewhere / "data").exists()  # planning: no file
    with open_ledger(load_config(path), load_settings()) as ledger:
        ledger.finish_run(ledger.start_run("pull"), "succeeded", {})
    assert (tmp_path / "data" / "l.db").is_file() and not (elsewhere / "data").exists()


@pytest.mark.parametrize("url", ["sqlite:///file::memory:?uri=true", "sqlite:///file:l.db?mode=memory&uri=true"])
def test_an_in_memory_uri_ledger_keeps_nothing_on_disk(write_config, tmp_path, monkeypatch, caplog, url) -> None:
    """``file::memory:`` (SQLite's in-memory URI) was taken for a file named ``:memory:`` in the config folder: the
    ledger persisted there, and a second process saw the first one's runs."""
    monkeypatch.chdir(tmp_path)
    path = write_config(f'[ledger]\nurl = "{url}"\n')
    assert resolve(path, caplog)[0] == url
    for _ in range(2):
        with open_ledger(load_config(path), load_settings()) as ledger:
            assert ledger.recent_runs() == []  # the previous one's run is gone with it
            ledger.finish_run(ledger.start_run("pull"), "succeeded", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("url, said", [
    ("sqlite:///file:l.db?mode=MEMORY&uri=true", "no such access mode: MEMORY"),  # SQLite's modes are lower case
    ("sqlite:///l.db?mode=memory&uri=true", "mode=memory only in a URI filename"),  # SQLite: a file 'l.db?mode=memory'
    ("sqlite:///l.db?mode=memory", "mode=memory only in a URI filename"),  # pysqlite ignores mode: a file l.db
])
def test_a_memory_mode_sqlite_does_not_take_is_refused_not_a_file(write_config, tmp_path, monkeypatch, url,
                                                                   said) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_config(f'[ledger]\nurl = "{url}"\n')
    with pytest.raises(ConfigError, match=re.escape(said)):
        open_ledger(load_config(path), load_settings())
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
