"""Each revision of a destination's counter has a random token in the ledger (``state_tokens``, schema 11), and a
cached copy names its revision's token (docs/ledger.md#restored-ledger). A ledger and a cache folder written by an
rfmsync before the tokens keep working: the migration gives each counter's revision a token, and a copy without one
proves nothing, so it is read in full once (and kept again, with the token). A copy of a revision whose token the
ledger no longer keeps is read in full too, and nothing is told."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pytest
from sqlalchemy import text

from sync.ledger import Ledger
from sync.ledger.db import build_engine, parse_url
from sync.ledger.schema import LATEST_VERSION
from sync.ledger.statecache import Counter, StateCache

from tests.ledger_fixtures import Clock, clock, ledger_url, open_ledger  # noqa: F401
from tests.test_ledger_statecache import DEST, KEYS, _backup, as_states, read_both, state


def _sql(url: str, statement: str, **params: object) -> list:
    engine = build_engine(parse_url(url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def test_a_ledger_and_a_cache_of_before_the_tokens_keep_working(open_ledger: Callable[..., Ledger],  # noqa: F811
                                                               ledger_url: str, clock: Clock,  # noqa: F811
                                                               tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="sync")
    folder = tmp_path / "cache"
    old = open_ledger(target_version=10)  # a ledger of schema 10, as the rfmsync before the tokens wrote it
    for key in ("ann@example.com", "bob@example.com"):
        _sql(ledger_url, "INSERT INTO pushed_state (destination, key, customer_id, tags, fields, in_destination,"
             " pushed_at, revision) VALUES (:d, :k, 'c', :tags, :fields, TRUE, :t, 4)",
             d=DEST, k=key, tags='["rfm:vip"]', fields='{"N":1}', t=clock().replace(tzinfo=None))
    _sql(ledger_url, "INSERT INTO state_revisions (destination, revision, epoch) VALUES (:d, 4, 'e0')", d=DEST)
    before = old.load_state(DEST)
    # ...and its cache folder: the copy at revision 4, with no token (as that rfmsync kept it)
    cache = StateCache(folder)
    cache.store(DEST, Counter(4, "e0"), old.state_table(DEST, cached=False))
    cache.wait()
    assert b"token" not in pa.ipc.open_file(str(cache.path(DEST))).schema.metadata
    old.close()

    ledger = open_ledger(state_cache=folder)
    assert ledger.schema_version() == LATEST_VERSION >= 11  # 12: kept_out (uni27)
    assert ledger.state_counter(DEST) == Counter(4, "e0") and ledger.state_counter(DEST).token  # seeded
    caplog.clear()
    parts = ledger.state_parts(DEST)
    assert parts.since is None and as_states(parts.merged()) == before  # no proof: read in full, once
    assert "restored" not in caplog.text and "no token of revision 4" in caplog.text
    ledger.state.close()
    parts = ledger.state_parts(DEST)  # the copy kept again, with the seeded token: used
    assert (parts.since, parts.read) == (4, 0)
    ledger.save_states(DEST, None, [state("cy@example.com", 2)])
    parts = ledger.state_parts(DEST)
    assert (parts.since, parts.read) == (4, 1)
    assert as_states(parts.merged()) == ledger.load_state(DEST) and len(ledger.load_state(DEST)) == 3
    assert "restored" not in caplog.text


def test_a_copy_whose_token_the_ledger_no_longer_keeps_is_read_in_full_and_nothing_told(
        ledger_url: str, tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Only the recent revisions' tokens are kept (here 3, pruned every 2 revisions): a copy older than that proves
    nothing: the full read, no warning, the counter's epoch kept; the copy kept again is used after."""
    from sync.ledger import revisions

    monkeypatch.setattr(revisions, "TOKENS_KEPT", 3)
    monkeypatch.setattr(revisions, "PRUNE_EVERY", 2)
    with Ledger.connect(ledger_url, state_cache=tmp_path / "cache") as ledger:
        ledger.save_states(DEST, None, [state(k, 1) for k in KEYS])
        read_both(ledger, DEST)  # the copy at revision 1
        for n in range(2, 8):
            ledger.save_states(DEST, None, [state(KEYS[0], n)])
        kept = sorted(r for (r,) in _sql(ledger_url, "SELECT revision FROM state_tokens WHERE destination = :d",
                                         d=DEST))
        assert kept[0] > 1 and kept[-1] == 7 and len(kept) <= 4
        epoch = ledger.state_counter(DEST).epoch
        caplog.clear()
        through_cache, full = read_both(ledger, DEST)
        assert through_cache == full and ledger.state_counter(DEST).epoch == epoch
        assert "restored" not in caplog.text
        ledger.state.close()
        ledger.save_states(DEST, None, [state(KEYS[1], 9)])
        parts = ledger.state_parts(DEST)
        assert (parts.since, parts.read) == (7, 1)


def test_a_process_that_only_saves_finds_the_restore_at_its_first_save(ledger_url: str, tmp_path: Path,  # noqa: F811
                                                                       caplog) -> None:
    """A webhook worker saves without reading the whole state: host A's copy at 3, the ledger restored to 1, host B
    saves it to 4; A's first save finds its copy's revision written again (another token), says so and gives the
    counter a new epoch, so host C's copy of the undone history, at 3 too, is read in full."""
    hosts = {h: tmp_path / f"{h}.state-cache" for h in "ABC"}
    with Ledger.connect(ledger_url, state_cache=hosts["A"]) as a, \
            Ledger.connect(ledger_url, state_cache=hosts["C"]) as c:
        a.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        restore = _backup(ledger_url)
        for n in (2, 3):
            a.save_states(DEST, None, [state(k, n) for k in KEYS[:3]])
        read_both(a, DEST)
        read_both(c, DEST)  # A's and C's copies at revision 3
        made_at = a.state_counter(DEST)
    restore()
    with Ledger.connect(ledger_url, state_cache=hosts["B"]) as b:
        for n in (7, 8, 9):
            b.save_states(DEST, None, [state(KEYS[0], n)])
    caplog.clear()
    with Ledger.connect(ledger_url, state_cache=hosts["A"]) as a:
        a.save_states(DEST, None, [state(KEYS[1], 10)])
        assert a.state_counter(DEST).epoch != made_at.epoch
    assert "written again since its cached copy (revision 3) was read" in caplog.text
    with Ledger.connect(ledger_url, state_cache=hosts["C"]) as c:
        through_cache, full = read_both(c, DEST)
        assert through_cache == full and full["c@x.io"].fields == {"N": 1} and full["b@x.io"].fields == {"N": 10}


def test_a_forgotten_or_taken_over_name_keeps_no_token_but_its_counters(ledger_url: str) -> None:  # noqa: F811
    """A name no longer saved never prunes its tokens: its forget (``rfmsync forget``, the old name of a rename
    taken over) deletes them all but the token of the revision its counter, kept, is at now."""
    def tokens(name: str) -> list:
        return _sql(ledger_url, "SELECT revision FROM state_tokens WHERE destination = :d", d=name)

    with Ledger.connect(ledger_url) as ledger:
        for name in ("gone", "old"):
            for n in range(5):
                ledger.save_states(name, None, [state(KEYS[n], n)])
        assert len(tokens("gone")) == len(tokens("old")) == 5
        assert ledger.forget_destination("gone", ("target", "gone"), untagged=False) == 5
        assert ledger.take_over("old", "new", ("target", "old")) == 5
        for name in ("gone", "old"):
            assert tokens(name) == [(ledger.state_revision(name),)] == [(6,)]
        assert ledger.forget_destination("gone", ("target", "gone"), untagged=False) == 0  # nothing held: no move
        assert tokens("gone") == [(6,)]
