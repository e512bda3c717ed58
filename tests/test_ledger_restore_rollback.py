"""A save that finds a restored ledger (docs/ledger.md#restored-ledger) and is then rolled back (here: it names a
run that does not exist; or the process is killed before its commit) wrote nothing: neither its rows nor the
counter's new epoch. What the process remembers (the revision it saw, the copy it checked, the copy itself) must
not move either, or its next saves take the ledger back to the undone history's revisions under the old epoch: a
plan saved before the restore then matches the ledger again, and ``apply`` would send it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sync.ledger import Ledger

from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_ledger_statecache import DEST, KEYS, _backup, read_both, state


def _rolled_back_save(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="run 999 does not exist"):
        ledger.save_states(DEST, 999, [state(KEYS[0], 5)])


@pytest.mark.parametrize("found_by", ["copy", "seen"])
def test_a_restore_found_by_a_save_rolled_back_is_found_again(ledger_url: str, tmp_path: Path,  # noqa: F811
                                                              caplog, found_by: str) -> None:
    """``copy``: a new process's first save finds its cached copy (revision 3) ahead of the restored ledger (1);
    ``seen``: a running process's save finds the counter below the one its earlier save found. Either save is
    rolled back; two more saves bring the counter back to 3: it must be under another epoch than the one a plan
    saved at 3 recorded, and the warning told."""
    caplog.set_level(logging.WARNING, logger="sync")
    folder = tmp_path / "cache"
    a = Ledger.connect(ledger_url, state_cache=folder)
    try:
        a.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        restore = _backup(ledger_url)
        for n in (2, 3):
            a.save_states(DEST, None, [state(k, n) for k in KEYS[:3]])
        read_both(a, DEST)  # the copy at revision 3
        made_at = a.state_counter(DEST)  # what a plan saved now records (ledger_revision, ledger_epoch)
        if found_by == "copy":
            a.close()
            a = Ledger.connect(ledger_url, state_cache=folder)  # a new process: its first save checks the copy
        restore()
        caplog.clear()
        _rolled_back_save(a)
        for n in (7, 8):
            a.save_states(DEST, None, [state(KEYS[0], n)])
        now = a.state_counter(DEST)
        assert (now.revision, now.epoch) != (made_at.revision, made_at.epoch)
        assert now.epoch != made_at.epoch
        assert "--full-refresh" in caplog.text
        through_cache, full = read_both(a, DEST)
        assert through_cache == full and full["c@x.io"].fields == {"N": 1}
    finally:
        a.close()
