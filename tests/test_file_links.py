"""Links in a file source's export folder that lead nowhere: a share not mounted is a retry-later error naming the
link at whatever level of the pattern it is (a file or a folder), the store as it was; a link that can never lead
anywhere (a loop, a file used as a folder, a target without permission) is a config error naming it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sync.store import connect_store
from tests.builders import run_cli
from tests.test_ingest_once import AS_OF, CONFIG, outcome, shop, write_export as write_in


def write_export(folder: Path, name: str, data: list[tuple[str, ...]]) -> None:
    """``folder/exports/name``, its folders made."""
    folder.mkdir(parents=True, exist_ok=True)
    write_in(folder, name, data)


def monthly_shop(folder: Path) -> Path:
    """A shop whose exports are one folder a month, ``exports/<month>/orders.csv``; May's folder a link to a
    network share, June's a plain folder."""
    cfg = folder / "rfmsync.toml"
    cfg.write_text(CONFIG.format(store="rfmsync.duckdb").replace('"exports/*.csv"', '"exports/*/orders.csv"'),
                   encoding="utf-8")
    share = folder / "share"
    write_export(share, "orders.csv", [("1", "c1", "a@example.com", "2025-05-01", "10.00", "")])
    write_export(folder / "exports", "orders.csv", [("2", "c2", "b@example.com", "2025-06-02", "20.00", "")])
    (folder / "exports" / "exports").rename(folder / "exports" / "2025-06")
    (folder / "exports" / "2025-05").symlink_to(share / "exports", target_is_directory=True)
    return cfg


def stored_files(folder: Path) -> list[str]:
    with connect_store(folder / "rfmsync.duckdb") as con:
        return sorted(row[0] for row in con.execute("SELECT path FROM ingest_files").fetchall())


def test_a_folder_of_the_pattern_linked_to_a_share_not_mounted_stops_the_run_and_keeps_its_rows(tmp_path):
    """``exports/2025-05`` links to a share not mounted: before, the glob found no ``orders.csv`` under it, so
    May's file was 'gone', its orders removed and their customers' tags after them (exit 0)."""
    cfg = monthly_shop(tmp_path)
    before = outcome(cfg)
    assert len(before[1]) == 2
    files = stored_files(tmp_path)
    (tmp_path / "share").rename(tmp_path / "share.unmounted")
    link = tmp_path / "exports" / "2025-05"
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=3)
    assert f"error: {link}: a link to {tmp_path / 'share' / 'exports'}, which is not there (a network share not " \
           "mounted?); nothing was read: run again once it is, or remove the link" in result.output
    assert "gone" not in result.output and stored_files(tmp_path) == files
    (tmp_path / "share.unmounted").rename(tmp_path / "share")
    assert outcome(cfg) == before


def test_the_whole_export_folder_a_link_to_a_share_not_mounted_is_retried_later(tmp_path):
    """``exports`` itself a link (a literal level of the pattern): a retry-later error, nothing removed."""
    cfg = shop(tmp_path)
    write_export(tmp_path / "share", "day1.csv", [("1", "c1", "a@example.com", "2025-06-01", "10.00", "")])
    (tmp_path / "exports").symlink_to(tmp_path / "share" / "exports", target_is_directory=True)
    before = outcome(cfg)
    (tmp_path / "share").rename(tmp_path / "share.unmounted")
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=3)
    assert f"error: {tmp_path / 'exports'}: a link to " in result.output
    (tmp_path / "share.unmounted").rename(tmp_path / "share")
    assert outcome(cfg) == before


@pytest.mark.parametrize("code", ["ENOTCONN", "ESTALE", "EIO", "ETIMEDOUT"])
def test_a_folder_linked_to_a_share_disconnected_is_retried_later(tmp_path, monkeypatch, code):
    """A link into a dropped sshfs/rclone mount or a stale NFS handle: stat answers ENOTCONN, ESTALE, EIO or a
    timeout, not 'not found'. Waiting fixes it as it fixes a share not mounted: a retry-later error (exit 3), not a
    config error (exit 2, never retried); nothing read or removed. (No mount can be dropped here: ``os.stat`` of
    the link answers what the kernel does for one.)"""
    import errno

    cfg = monthly_shop(tmp_path)
    before = outcome(cfg)
    files = stored_files(tmp_path)
    link, real_stat = tmp_path / "exports" / "2025-05", os.stat
    number = getattr(errno, code)

    def stat(path, *args, **kwargs):
        if os.fspath(path) == str(link) and kwargs.get("follow_symlinks", True):
            raise OSError(number, os.strerror(number), os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=3)
    assert f"error: {link}: a link to {tmp_path / 'share' / 'exports'}, which cannot be reached now " \
           f"({os.strerror(number)}: a network share disconnected?); nothing was read" in result.output
    assert "gone" not in result.output and stored_files(tmp_path) == files
    monkeypatch.undo()
    assert outcome(cfg) == before


def test_a_month_folder_that_is_a_mount_point_disconnected_is_retried_later(tmp_path, monkeypatch):
    """``exports/2025-05`` is itself a network mount (no link) that dropped: the folder is still listed, but
    everything under it answers ENOTCONN, which glob swallows: May's file was 'gone' and its orders removed (exit
    0, the review of fix53). Now the file read before is checked: not 'no such file', so a retry-later error (exit
    3) naming it, nothing removed. (No mount can be dropped here: the OS calls under that folder answer what the
    kernel does for one.)"""
    import errno

    cfg = monthly_shop(tmp_path)
    (tmp_path / "exports" / "2025-05").unlink()
    shutil.copytree(tmp_path / "share" / "exports", tmp_path / "exports" / "2025-05")  # a plain folder (the mount)
    before = outcome(cfg)
    files = stored_files(tmp_path)
    mount = str(tmp_path / "exports" / "2025-05")
    real = {name: getattr(os, name) for name in ("stat", "lstat", "scandir")}

    def dropped(name):
        def call(path=".", *args, **kwargs):
            p = os.fsdecode(path) if not isinstance(path, int) else ""
            if p.startswith(mount + os.sep) or (p == mount and name != "lstat"):  # its own entry is still listed
                raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN), p)
            return real[name](path, *args, **kwargs)
        return call

    for name in real:
        monkeypatch.setattr(os, name, dropped(name))
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=3)
    assert f"error: {mount}{os.sep}orders.csv: read before, it cannot be reached now ({os.strerror(errno.ENOTCONN)}" \
           in result.output
    assert "gone" not in result.output
    monkeypatch.undo()
    assert stored_files(tmp_path) == files and outcome(cfg) == before


def test_a_share_mounted_empty_matches_nothing_and_removes_nothing(tmp_path):
    """The mount point is there but empty (the share itself missing): the pattern matches nothing where the store
    holds files read before, a retry-later error (exit 3, so ``serve`` runs it again soon) before the store is
    touched: no file is 'gone', no order removed, the next run as before. On a first read it is the config's
    (exit 2): a wrong pattern."""
    cfg = shop(tmp_path)
    (tmp_path / "exports").mkdir()
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=2)
    assert result.output.startswith("error: no file matches 'exports/*.csv'")
    write_export(tmp_path, "day1.csv", [("1", "c1", "a@example.com", "2025-06-01", "10.00", "")])
    write_export(tmp_path, "day2.csv", [("2", "c2", "b@example.com", "2025-06-02", "20.00", "")])
    before = outcome(cfg)
    files = stored_files(tmp_path)
    shutil.move(tmp_path / "exports", tmp_path / "away")
    (tmp_path / "exports").mkdir()
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=3)
    assert f"error: no file matches 'exports/*.csv' (looked in {tmp_path}), where 2 file(s) were read before (the " \
           "export folder or its network share not there?); nothing was read or removed: run again once they are " \
           "back, or fix the pattern" in result.output and "gone" not in result.output
    assert stored_files(tmp_path) == files
    (tmp_path / "exports").rmdir()
    shutil.move(tmp_path / "away", tmp_path / "exports")
    assert outcome(cfg) == before


@pytest.mark.parametrize("level", ["file", "folder"])
def test_a_link_loop_is_a_config_error_naming_it(tmp_path, level):
    """A link loop never resolves, however long one waits: a config error (exit 2) naming the link, not the
    retry-later 'network share not mounted?'."""
    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "a@example.com", "2025-06-01", "10.00", "")])
    if level == "folder":
        cfg.write_text(cfg.read_text(encoding="utf-8").replace('"exports/*.csv"', '"*/*.csv"'), encoding="utf-8")
    name = "day2.csv" if level == "file" else "more"
    (tmp_path / "exports" / name).symlink_to(tmp_path / "exports" / "loop")
    (tmp_path / "exports" / "loop").symlink_to(tmp_path / "exports" / name)
    target = tmp_path / "exports" if level == "file" else tmp_path
    (target / f"x{name}").symlink_to(target / f"x{name}")  # (a loop on itself too)
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=2)
    assert "which cannot be read (a link loop): fix the link or its target's permissions, or remove the link" \
        in result.output and "network share" not in result.output


def test_a_link_through_a_file_is_a_config_error_naming_it(tmp_path):
    """A link to ``day1.csv/x`` (a file used as a folder): 'Not a directory', a config error naming the link."""
    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "a@example.com", "2025-06-01", "10.00", "")])
    (tmp_path / "exports" / "day2.csv").symlink_to(tmp_path / "exports" / "day1.csv" / "x")
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=2)
    assert f"error: {tmp_path / 'exports' / 'day2.csv'}: a link to {tmp_path / 'exports' / 'day1.csv' / 'x'}, " \
           "which cannot be read (Not a directory)" in result.output


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads a folder without permission")
def test_a_link_into_a_folder_without_permission_is_a_config_error_naming_it(tmp_path):
    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "a@example.com", "2025-06-01", "10.00", "")])
    write_export(tmp_path / "closed", "day2.csv", [("2", "c2", "b@example.com", "2025-06-02", "20.00", "")])
    (tmp_path / "exports" / "day2.csv").symlink_to(tmp_path / "closed" / "exports" / "day2.csv")
    (tmp_path / "closed").chmod(0)
    try:
        result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=2)
    finally:
        (tmp_path / "closed").chmod(0o755)
    assert "which cannot be read (Permission denied)" in result.output


@pytest.mark.parametrize("edit, pattern", [
    (lambda text: text.replace('orders = "exports/*.csv"', 'orders = "exports/*.csv"\ncontacts = "contacts/*.csv"'),
     "contacts/*.csv"),  # a contacts pattern added, its files not there yet: no contacts file was ever read
    (lambda text: text.replace('"exports/*.csv"', '"exprots/*.csv"'), "exprots/*.csv"),  # a typo in an edit
    (lambda text: text.replace('"exports/*.csv"', '"exports/*.tsv"'), "exports/*.tsv"),  # matches no file read
])
def test_a_pattern_matching_none_of_the_files_read_before_is_a_config_error(tmp_path, edit, pattern):
    """Files read before make 'matches nothing' a retry-later error only when they are the pattern's own (its role,
    matched by it): a pattern just added or mistyped would be retried for ever (exit 3); it is the config's (exit 2)."""
    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "a@example.com", "2025-06-01", "10.00", "")])
    before = outcome(cfg)
    files = stored_files(tmp_path)
    cfg.write_text(edit(cfg.read_text(encoding="utf-8")), encoding="utf-8")
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=2)
    assert f"error: no file matches {pattern!r} (looked in {tmp_path})" in result.output
    assert "read before" not in result.output and stored_files(tmp_path) == files
    cfg.write_text(shop(tmp_path).read_text(encoding="utf-8"), encoding="utf-8")
    assert outcome(cfg) == before


def test_a_narrowed_pattern_still_matching_files_read_before_is_retried_later(tmp_path):
    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "a@example.com", "2025-06-01", "10.00", "")])
    write_export(tmp_path, "week.csv", [("2", "c2", "b@example.com", "2025-06-02", "20.00", "")])
    outcome(cfg)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('"exports/*.csv"', '"exports/day*.csv"'), encoding="utf-8")
    shutil.move(tmp_path / "exports", tmp_path / "away")
    (tmp_path / "exports").mkdir()
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=3)
    assert "where 1 file(s) were read before" in result.output


def test_pattern_matches_is_the_glob_of_the_pattern_by_name():
    from connectors.file_paths import pattern_matches

    assert pattern_matches("/s/exports/*/orders.csv", "/s/exports/2025-06/orders.csv")
    assert not pattern_matches("/s/exports/*.csv", "/s/exports/2025-06/orders.csv")  # * is one level
    assert not pattern_matches("/s/exports/**/*.csv", "/s/exports/a/b/orders.csv")  # not recursive
    assert not pattern_matches("/s/exports/*.csv", "/s/exports/.hidden.csv")
    assert pattern_matches("/s/exports/day[0-9].csv", "/s/exports/day1.csv")
    assert not pattern_matches("/s/exports/Day1.csv", "/s/exports/day1.csv")
