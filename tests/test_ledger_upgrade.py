"""Upgrading to config-relative ledger paths (docs/ledger.md): a ledger an older version left in the working folder
is never silently replaced by another one next to the config, also once a command run from the config's folder
made one there; read-only commands create no ledger file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync.config import load_config
from sync.errors import ConfigError
from sync.ledger import Ledger, ledger_url, open_ledger
from sync.model import PushedState
from sync.settings import load_settings
from tests.test_ledger_url import cli, write_config  # noqa: F401 (a fixture)


def old_ledger(file: Path, *, pushed: bool, destination: str = "mc") -> None:
    """A ledger as an older version left it: a sync run, and the contacts it pushed when ``pushed``."""
    with Ledger.connect(f"sqlite:///{file}") as ledger:
        run = ledger.start_run("sync", destination)
        if pushed:
            ledger.save_states(destination, run, [PushedState("a@x.org", "1", frozenset({"VIP"}), {"SEG": "Best"})])
        ledger.finish_run(run, "succeeded", {"customers": 1})


@pytest.fixture
def cron(tmp_path: Path) -> Path:
    folder = tmp_path / "cron"
    folder.mkdir()
    return folder


def test_a_read_only_command_from_the_config_folder_does_not_let_the_cron_job_use_a_new_ledger(write_config,
                                                                                             tmp_path, cron):
    """The review's sequence: after the upgrade the cron job (run from cron/) stops; `rfmsync runs` and `failures`
    from the config's folder create no ledger there, so the cron job keeps stopping instead of using a new, empty
    one (everything re-sent, failures and lost tags gone)."""
    path = write_config('[ledger]\nurl = "sqlite:///ledger.db"\n')
    old_ledger(cron / "ledger.db", pushed=True)
    assert cli("runs", "--config", str(path), cwd=cron).returncode == 2
    for command in ("runs", "failures"):
        result = cli(command, "--config", str(path), "--format", "json", cwd=tmp_path)
        assert result.returncode == 0 and json.loads(result.stdout) == [], result.stderr
    assert not (tmp_path / "ledger.db").exists()
    result = cli("runs", "--config", str(path), cwd=cron)
    assert result.returncode == 2, result.stdout
    assert str(cron / "ledger.db") in result.stderr and str(tmp_path / "ledger.db") in result.stderr


def test_check_stops_where_sync_would(tmp_path, cron):
    """`rfmsync check && rfmsync sync` from the cron job's folder stops at check (exit 2, both paths named)."""
    from sync.demodata import generate_shop

    path = generate_shop(tmp_path / "shop", customers=250, seed=3)
    path.write_text(path.read_text(encoding="utf-8").replace(
        "[segmentation]", '[ledger]\nurl = "sqlite:///ledger.db"\n\n[segmentation]', 1), encoding="utf-8")
    assert cli("check", "--offline", "--config", str(path), cwd=path.parent).returncode == 0
    old_ledger(cron / "ledger.db", pushed=True)
    check = cli("check", "--offline", "--config", str(path), cwd=cron)
    assert check.returncode == 2, check.stdout + check.stderr
    assert str(cron / "ledger.db") in check.stderr and str(path.parent / "ledger.db") in check.stderr


@pytest.mark.parametrize("ours, theirs, stops", [
    ("nothing", "runs", True),  # made by a command since the upgrade, e.g. `rfmsync serve` started and stopped
    ("nothing", "pushed", True),
    ("runs", "pushed", True),  # `rfmsync pull` from the config's folder: runs and cursors, nobody pushed
    ("runs", "runs", False),
    ("pushed", "pushed", False),  # two configs both naming rfmsync.db: each its own
    ("pushed", "runs", False),
])
def test_a_ledger_next_to_the_config_that_holds_less_does_not_hide_the_older_one(write_config, tmp_path, cron,
                                                                                 monkeypatch, ours, theirs, stops):
    path = write_config('[ledger]\nurl = "sqlite:///ledger.db"\n')
    with open_ledger(load_config(path), load_settings()) as ledger:  # from the config's folder
        if ours != "nothing":
            ledger.finish_run(ledger.start_run("pull"), "succeeded", {})
    if ours == "pushed":
        old_ledger(tmp_path / "ledger.db", pushed=True)
    old_ledger(cron / "ledger.db", pushed=theirs == "pushed")
    monkeypatch.chdir(cron)
    message = _stop_message(path, tmp_path, stops)
    if message is None:
        return
    assert f"{path}: [ledger] url names the relative path 'ledger.db', which is {tmp_path / 'ledger.db'}" in message
    assert f"is at {cron / 'ledger.db'}" in message and "in place of the one there" in message
    assert "unless it is another config's ledger: then leave it" in message  # never move shop A's to shop B
    assert not list(cron.glob("ledger.db-*")), "reading the old ledger left files beside it"


def test_the_stop_names_the_deprecated_setting_the_url_came_from(write_config, cron, monkeypatch):
    path = write_config('[store]\nurl = "sqlite:///ledger.db"\n')
    old_ledger(cron / "ledger.db", pushed=False)
    monkeypatch.chdir(cron)
    with pytest.raises(ConfigError, match=r"\[store\] url names the relative path 'ledger.db'"):
        ledger_url(load_config(path), load_settings())


MC = '[ledger]\nurl = "sqlite:///ledger.db"\n\n[[destinations]]\nname = "mc"\ntype = "mailchimp"\naudience = "aud1"\n'


@pytest.mark.parametrize("newer, theirs_destination, stops", [
    ("theirs", "mc", True),  # the review's case: the cron job kept syncing mc in its folder; ours is an old copy
    ("ours", "mc", False),  # the old one left behind after a copy: ours was used since
    ("theirs", "other", False),  # two configs, each its own ledger and destinations, naming the same file
])
def test_both_ledgers_hold_pushed_contacts_the_one_used_later_for_this_configs_destinations_wins(
        write_config, tmp_path, cron, monkeypatch, newer, theirs_destination, stops):
    path = write_config(MC)
    made = [lambda: old_ledger(tmp_path / "ledger.db", pushed=True),
            lambda: old_ledger(cron / "ledger.db", pushed=True, destination=theirs_destination)]
    for make in made if newer == "theirs" else made[::-1]:
        make()
    monkeypatch.chdir(cron)
    message = _stop_message(path, tmp_path, stops)
    if message is None:
        return
    assert f"is at {cron / 'ledger.db'}" in message and "in place of the one there" in message
    assert ("unless it is another config's ledger: then leave it and write this config's one in [ledger] url as an "
            f"absolute path (sqlite:///{tmp_path.resolve() / 'ledger.db'})") in message
    assert not list(cron.glob("ledger.db-*")) and not list(tmp_path.glob("ledger.db-*"))


def test_a_ledger_whose_writer_died_is_read_whole_and_nothing_is_created_beside_it(tmp_path):
    """A -wal without its -shm (the writer killed, the -shm removed): the stop's reading sees the rows only the -wal
    holds and creates no -shm beside the file (fix43 did: SQLite makes one to read the -wal)."""
    import shutil
    import sqlite3

    from sync.ledger.url import _used

    old_ledger(tmp_path / "live.db", pushed=False)
    dead = tmp_path / "dead"
    dead.mkdir()
    writer = sqlite3.connect(tmp_path / "live.db")
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("INSERT INTO pushed_state VALUES ('mc', 'a@x.org', '1', '[]', '{}', 1, '2030-01-01', NULL, 0, NULL)")
        writer.commit()
        for name in ("live.db", "live.db-wal"):  # as the writer left them, but no -shm
            shutil.copyfile(tmp_path / name, dead / name.replace("live", "ledger"))
    finally:
        writer.close()
    assert _used(dead / "ledger.db", ("mc",)) == (True, True, "2030-01-01")
    assert sorted(p.name for p in dead.iterdir()) == ["ledger.db", "ledger.db-wal"]


def _stop_message(path, tmp_path, stops: bool) -> str | None:
    """The config's ledger URL when rfmsync goes on (None), else the stop's message."""
    if not stops:
        assert ledger_url(load_config(path), load_settings()) == f"sqlite:///{tmp_path / 'ledger.db'}"
        return None
    with pytest.raises(ConfigError) as error:
        ledger_url(load_config(path), load_settings())
    return str(error.value)
