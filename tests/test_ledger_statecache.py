"""The plans' cached copy of the pushed state (sync.ledger.statecache): a read through it is exactly the full
read, after any saves and forgets, on SQLite and PostgreSQL; a copy is never used for another ledger, for a
ledger that went back to an older revision, or when it does not read; a ledger of schema version 6 migrates
with its rows kept and is then read through the cache."""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from sync.ledger import Ledger
from sync.ledger.schema import LATEST_VERSION
from sync.model import PushedState

from tests.profiles import examples

try:
    from tests.ledger_fixtures import Clock, clock, ledger_url, open_ledger  # noqa: F401
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import Clock, clock, ledger_url, open_ledger  # type: ignore # noqa: F401

DEST = "cached"
V5_DUMP = Path(__file__).parent / "data" / "ledger_v5_before_split.sql"


def as_states(table) -> dict[str, PushedState]:
    rows = table.to_pylist()
    states = {r["key"]: PushedState(r["key"], r["customer_id"], frozenset(json.loads(r["tags"])),
                                    json.loads(r["fields"]), r["in_destination"]) for r in rows}
    assert len(states) == len(rows), "a key read twice"
    return states


def read_both(ledger: Ledger, destination: str) -> tuple[dict[str, PushedState], dict[str, PushedState]]:
    """(through the cache, the full read): the planner's two parts merged, and the plain bulk read."""
    return as_states(ledger.state_parts(destination).merged()), as_states(ledger.state_table(destination,
                                                                                            cached=False))


def state(key: str, n: int) -> PushedState:
    return PushedState(key, f"c-{key}", frozenset({f"rfm:{n % 3}"}), {"N": n}, exists=n % 5 != 0)


KEYS = [f"{c}@x.io" for c in "abcdefghijklmnopqrstuvwxyz"]
OPS = st.lists(st.one_of(
    st.tuples(st.just("save"), st.lists(st.sampled_from(KEYS), min_size=1, max_size=26), st.integers(0, 9)),
    st.tuples(st.just("forget"), st.lists(st.sampled_from(KEYS), max_size=8), st.just(0)),
    st.tuples(st.just("read"), st.just([]), st.just(0)),
    st.tuples(st.just("keep"), st.just([]), st.just(0))), max_size=14)  # keep: what a big apply does at its end


@pytest.fixture
def cached_ledger(open_ledger: Callable[..., Ledger], tmp_path: Path) -> Ledger:
    """A ledger with its cache in tmp_path/cache (explicit: PostgreSQL has none by default)."""
    return open_ledger(state_cache=tmp_path / "cache")


@hsettings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_a_read_through_the_cache_is_the_full_read_after_any_saves_and_forgets(cached_ledger: Ledger, ops) -> None:
    destination = f"d-{uuid.uuid4().hex[:8]}"  # one ledger for every example: a fresh destination each
    cached_ledger.save_states("neighbour", None, [state(k, 1) for k in KEYS[:5]])  # another destination's rows
    for op, keys, n in ops:
        if op == "save":
            cached_ledger.save_states(destination, None, [state(k, n + i) for i, k in enumerate(keys)])
        elif op == "forget":
            cached_ledger.forget(destination, keys)
        elif op == "keep":
            cached_ledger.keep_copy_current(destination)
        through_cache, full = read_both(cached_ledger, destination)
        assert through_cache == full == cached_ledger.load_state(destination)


def test_forgotten_rows_are_not_read_back_from_the_copy(cached_ledger: Ledger) -> None:
    cached_ledger.save_states(DEST, None, [state(k, 1) for k in KEYS])
    read_both(cached_ledger, DEST)  # the copy
    cached_ledger.forget(DEST, ["a@x.io"])
    cached_ledger.save_states(DEST, None, [state("new@x.io", 2)])  # as many rows as the copy holds
    through_cache, full = read_both(cached_ledger, DEST)
    assert "a@x.io" not in through_cache and through_cache == full


def test_a_copy_is_never_used_for_another_ledger(tmp_path: Path) -> None:
    """Two ledgers sharing a cache folder, the same destination at the same revision: the epoch tells them
    apart."""
    folder = tmp_path / "shared-cache"
    with Ledger.connect(f"sqlite:///{tmp_path / 'one.db'}", state_cache=folder) as one, \
            Ledger.connect(f"sqlite:///{tmp_path / 'two.db'}", state_cache=folder) as two:
        one.save_states(DEST, None, [state("a@x.io", 1)])
        two.save_states(DEST, None, [state("b@x.io", 2)])
        assert one.state_revision(DEST) == two.state_revision(DEST) == 1
        assert set(read_both(one, DEST)[0]) == {"a@x.io"}
        through_cache, full = read_both(two, DEST)
        assert set(through_cache) == set(full) == {"b@x.io"}


def test_a_ledger_restored_to_an_older_revision_is_read_in_full(tmp_path: Path) -> None:
    path, backup = tmp_path / "rfmsync.db", tmp_path / "backup.db"
    folder = tmp_path / "cache"
    with Ledger.connect(f"sqlite:///{path}", state_cache=folder) as ledger:
        ledger.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        ledger.checkpoint()
        shutil.copy(path, backup)
        ledger.save_states(DEST, None, [state(k, 2) for k in KEYS[:3]])
        assert read_both(ledger, DEST)[0]["a@x.io"].fields == {"N": 2}  # the copy, at revision 2
    shutil.copy(backup, path)  # the older file back (revision 1)
    with Ledger.connect(f"sqlite:///{path}", state_cache=folder) as ledger:
        through_cache, full = read_both(ledger, DEST)
        assert through_cache == full and through_cache["a@x.io"].fields == {"N": 1}


def test_a_restored_ledger_written_past_its_copy_before_any_plan_is_not_read_from_it(tmp_path: Path,
                                                                                      caplog) -> None:
    """Restored, then written again (webhook resyncs save without reading the whole state) up to the copy's
    revision and past it: the copy, of the history the restore undid, would pass for the state at its revision."""
    path, backup = tmp_path / "rfmsync.db", tmp_path / "backup.db"
    folder = tmp_path / "cache"
    with Ledger.connect(f"sqlite:///{path}", state_cache=folder) as ledger:
        ledger.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        ledger.checkpoint()
        shutil.copy(path, backup)
        for n in (2, 3):
            ledger.save_states(DEST, None, [state(k, n) for k in KEYS[:3]])
        assert read_both(ledger, DEST)[0]["a@x.io"].fields == {"N": 3}  # the copy, at revision 3
    shutil.copytree(folder, tmp_path / "copy-at-3")
    for saves in (2, 3):  # up to the copy's revision (3), and past it (4)
        shutil.copy(backup, path)  # the older file back (revision 1)
        shutil.rmtree(folder)  # (the copy at revision 3: the first case's restore gave the counter a new epoch)
        shutil.copytree(tmp_path / "copy-at-3", folder)
        caplog.clear()
        with Ledger.connect(f"sqlite:///{path}", state_cache=folder) as ledger:
            for n in range(saves):
                ledger.save_states(DEST, None, [state(KEYS[0], 7 + n)])
            through_cache, full = read_both(ledger, DEST)
            assert through_cache == full and through_cache["c@x.io"].fields == {"N": 1}
            assert ledger.state_revision(DEST) == 3 + saves  # the restore's found: the counter moved past the copy
        assert "behind its cached copy (revision 3)" in caplog.text and "--full-refresh" in caplog.text


def test_a_copy_that_does_not_read_means_the_full_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rfmsync.db'}"
    with Ledger.connect(url) as ledger:
        ledger.save_states(DEST, None, [state(k, 1) for k in KEYS[:4]])
        read_both(ledger, DEST)
    # closing waited for the copy (written on a thread), in the default folder beside the file, and nothing else
    (copy,) = (tmp_path / "rfmsync.db.state-cache").iterdir()
    copy.write_bytes(b"not an arrow file")
    with Ledger.connect(url) as ledger:
        ledger.save_states(DEST, None, [state("a@x.io", 3)])
        through_cache, full = read_both(ledger, DEST)
        assert through_cache == full and len(full) == 4


def test_a_version_6_ledger_migrates_keeping_its_rows_and_then_reads_through_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "rfmsync.db"
    with sqlite3.connect(path) as con:
        con.executescript(V5_DUMP.read_text(encoding="utf-8"))
    with Ledger.connect(f"sqlite:///{path}", target_version=6) as old:
        before = old.load_state("mailchimp-main")
        assert old.schema_version() == 6 and len(before) >= 2
    with Ledger.connect(f"sqlite:///{path}") as ledger:
        assert ledger.schema_version() == LATEST_VERSION
        assert ledger.load_state("mailchimp-main") == before and ledger.state_revision("mailchimp-main") == 1
        assert read_both(ledger, "mailchimp-main") == (before, before)  # the first read keeps a copy
        ledger.save_states("mailchimp-main", None, [PushedState("new@example.com", "c9", frozenset(), {})])
        through_cache, full = read_both(ledger, "mailchimp-main")
        assert through_cache == full == {**before, "new@example.com": full["new@example.com"]}
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM state_revisions WHERE epoch IS NULL").fetchone() == (0,)
        revisions = dict(con.execute("SELECT key, revision FROM pushed_state WHERE destination = 'mailchimp-main'"))
        assert revisions["new@example.com"] == 2 and set(revisions.values()) == {0, 2}


def test_a_version_6_ledger_migrates_on_either_backend_and_reads_through_the_cache(
        open_ledger: Callable[..., Ledger], ledger_url: str, clock: Clock, tmp_path: Path) -> None:
    from sqlalchemy import text

    from sync.ledger.db import build_engine, parse_url

    old = open_ledger(target_version=6)
    engine = build_engine(parse_url(ledger_url))
    try:
        with engine.begin() as conn:  # rows as rfmsync before version 7 wrote them (no revision column)
            for key in ("ann@example.com", "bob@example.com"):
                conn.execute(text("INSERT INTO pushed_state (destination, key, customer_id, tags, fields,"
                                  " in_destination, pushed_at) VALUES ('mc', :k, 'c', :tags, :fields, TRUE, :t)"),
                             {"k": key, "tags": '["rfm:vip"]', "fields": '{"N":1}', "t": clock().replace(tzinfo=None)})
            conn.execute(text("INSERT INTO state_revisions (destination, revision) VALUES ('mc', 4)"))
    finally:
        engine.dispose()
    before = old.load_state("mc")
    assert len(before) == 2
    ledger = open_ledger(state_cache=tmp_path / "cache")
    assert ledger.schema_version() == LATEST_VERSION and ledger.load_state("mc") == before
    assert ledger.state_revision("mc") == 4
    assert as_states(ledger.state_parts("mc").merged()) == before  # read in full, the copy kept
    ledger.save_states("mc", None, [state("cy@example.com", 2)])
    parts = ledger.state_parts("mc")
    assert (parts.since, parts.read) == (4, 1)  # only the row written since the copy
    assert as_states(parts.merged()) == ledger.load_state("mc") and len(ledger.load_state("mc")) == 3


def test_the_configured_ledger_keeps_its_copy_on_this_host_on_either_backend(ledger_url: str, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """What the commands open (open_ledger from the config): a SQLite ledger keeps its copy beside its file; a
    PostgreSQL one beside this host's order store, so its second plan reads only the rows written since."""
    from sync.config import load_config
    from sync.ledger import open_ledger as open_configured
    from sync.settings import load_settings

    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    config = tmp_path / "rfmsync.toml"
    config.write_text('[source]\ntype = "file"\npath = "orders.csv"\n[store]\norders = "shop.duckdb"\n',
                      encoding="utf-8")
    cfg = load_config(config)
    if ledger_url.startswith("sqlite"):
        folder = Path(ledger_url[len("sqlite:///"):]).with_name("rfmsync.db.state-cache")
    else:
        folder = tmp_path / "shop.duckdb.state-cache"
    with open_configured(cfg, load_settings()) as ledger:
        ledger.save_states(DEST, None, [state(k, 1) for k in KEYS])
        assert ledger.state_parts(DEST).since is None  # first read: in full, and the copy is kept
    assert list(folder.glob("*.arrow"))
    with open_configured(cfg, load_settings()) as ledger:
        ledger.save_states(DEST, None, [state(KEYS[0], 2)])
        parts = ledger.state_parts(DEST)
        assert parts.since is not None and parts.read == 1
        assert as_states(parts.merged()) == as_states(ledger.state_table(DEST, cached=False))


def _backup(url: str) -> Callable[[], None]:
    """A backup of the ledger's pushed state taken now; calling the result restores it (what a pg_dump and its
    restore, or a copy of the SQLite file put back, do to these tables)."""
    from sync.ledger.db import build_engine, parse_url
    from sync.ledger.schema import pushed_state, state_revisions, state_tokens

    tables = (state_revisions, state_tokens, pushed_state)
    engine = build_engine(parse_url(url))
    try:
        with engine.connect() as conn:
            saved = [[row._asdict() for row in conn.execute(t.select())] for t in tables]
    finally:
        engine.dispose()

    def restore() -> None:
        engine = build_engine(parse_url(url))
        try:
            with engine.begin() as conn:
                for table, rows in zip(tables, saved):
                    conn.execute(table.delete())
                    conn.execute(table.insert(), rows)
        finally:
            engine.dispose()

    return restore


@pytest.mark.parametrize("first", ["save", "read"])
def test_a_restored_ledger_shared_by_two_hosts_is_read_in_full_on_both(ledger_url: str, tmp_path: Path, caplog,
                                                                       first: str) -> None:
    """Two hosts share one ledger (PostgreSQL: each keeps its copy beside its own order store), both with a copy
    at revision 3. The ledger is restored from a backup at revision 1, and host A writes twice (a webhook
    resync: the ledger at revision 3 again) or reads first: A finds its copy ahead and says so. Host B's copy is
    of the undone history at the very revision the ledger now has: it must not pass for the state (before, B's
    plan read B's copy, c@x.io with the tags and fields of a history the restore undid, and the rows A wrote were
    not there). Whoever finds the restore gives the ledger's revision counter a new epoch: every host's copy is
    then someone else's, read in full and kept again."""
    hosts = {"A": tmp_path / "a.state-cache", "B": tmp_path / "b.state-cache"}
    with Ledger.connect(ledger_url, state_cache=hosts["A"]) as a, Ledger.connect(ledger_url,
                                                                                 state_cache=hosts["B"]) as b:
        a.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        restore = _backup(ledger_url)
        for n in (2, 3):
            b.save_states(DEST, None, [state(k, n) for k in KEYS[:3]])
        for host in (a, b):
            assert read_both(host, DEST)[0]["c@x.io"].fields == {"N": 3}  # each host's copy, at revision 3
    restore()
    caplog.clear()
    with Ledger.connect(ledger_url, state_cache=hosts["A"]) as a:
        if first == "read":
            assert read_both(a, DEST)[0]["c@x.io"].fields == {"N": 1}
        for n in (7, 8):
            a.save_states(DEST, None, [state(KEYS[0], n)])
        # the restore found, the counter moved past the copy's revision (4), then the two saves
        assert a.state_revision(DEST) == (5 if first == "save" else 6)
    assert "behind its cached copy (revision 3)" in caplog.text and "--full-refresh" in caplog.text
    with Ledger.connect(ledger_url, state_cache=hosts["B"]) as b:
        through_cache, full = read_both(b, DEST)
        assert full["c@x.io"].fields == {"N": 1} and full["a@x.io"].fields == {"N": 8}
        assert through_cache == full
        kept = b.state_revision(DEST)
        b.save_states(DEST, None, [state(KEYS[1], 9)])
        parts = b.state_parts(DEST)  # B's copy kept again, of the new epoch: a plan reads what changed only
        assert parts.since == kept and parts.read == 1
        assert as_states(parts.merged()) == as_states(b.state_table(DEST, cached=False))


def test_a_ledger_restored_under_a_running_process_is_found_by_its_next_save(ledger_url: str, tmp_path: Path,
                                                                            caplog) -> None:
    """A worker keeps running while its ledger is restored from a backup (its copy was checked at its first save,
    once a process): its next save finds the counter below the one its earlier save found. It says so and gives the
    counter a new epoch, so host B's copy of the undone history, at the revision the ledger reaches again, is
    not used."""
    hosts = {"A": tmp_path / "a.state-cache", "B": tmp_path / "b.state-cache"}
    with Ledger.connect(ledger_url, state_cache=hosts["A"]) as a:
        a.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        restore = _backup(ledger_url)
        with Ledger.connect(ledger_url, state_cache=hosts["B"]) as b:
            b.save_states(DEST, None, [state(k, 2) for k in KEYS[:3]])
            assert read_both(b, DEST)[0]["c@x.io"].fields == {"N": 2}  # B's copy, at revision 2
        a.save_states(DEST, None, [state(KEYS[1], 3)])  # revision 3: A found the counter at 2
        restore()
        caplog.clear()
        for n in (7, 8):
            a.save_states(DEST, None, [state(KEYS[0], n)])
        assert a.state_revision(DEST) == 5  # moved past the revision 3 its own save took, then the second save
        assert "behind the revision 2 this process found before" in caplog.text and "--full-refresh" in caplog.text
    with Ledger.connect(ledger_url, state_cache=hosts["B"]) as b:
        through_cache, full = read_both(b, DEST)
        assert full["c@x.io"].fields == {"N": 1} and through_cache == full


def test_a_save_rolled_back_is_no_restore(ledger_url: str, tmp_path: Path, caplog) -> None:
    """A save that fails inside its transaction, after its revision was taken (here a run that does not exist)
    gives its revision back: the next save is given the same number again, which is no restore (no warning, no new
    epoch: every host's copy kept)."""
    with Ledger.connect(ledger_url, state_cache=tmp_path / "a") as a:
        a.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        assert read_both(a, DEST)[0]["a@x.io"].fields == {"N": 1}  # the copy, at revision 1
        caplog.clear()
        with pytest.raises(ValueError, match="run 999 does not exist"):
            a.save_states(DEST, 999, [state(KEYS[0], 5)])
        a.save_states(DEST, None, [state(KEYS[0], 2)])
        assert a.state_revision(DEST) == 2 and "behind" not in caplog.text
        parts = a.state_parts(DEST)
        assert parts.since == 1 and parts.read == 1  # the copy still used: only the row written since


def test_a_restore_found_by_a_read_only_ledger_is_read_in_full_and_not_written(tmp_path: Path, caplog) -> None:
    """A plan on a ledger it may only read (a URI with mode=ro): the restore found, it cannot give the counter a
    new epoch, and says so; the plan reads the state in full as before, and nothing fails."""
    path, folder = tmp_path / "rfmsync.db", tmp_path / "cache"
    with Ledger.connect(f"sqlite:///{path}", state_cache=folder) as ledger:
        ledger.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        restore = _backup(f"sqlite:///{path}")
        ledger.save_states(DEST, None, [state(k, 2) for k in KEYS[:3]])
        read_both(ledger, DEST)  # the copy, at revision 2
    restore()
    with Ledger.connect(f"sqlite:///file:{path}?mode=ro&uri=true", state_cache=folder) as ledger:
        through_cache, full = read_both(ledger, DEST)
        assert through_cache == full and full["a@x.io"].fields == {"N": 1}
    assert "behind its cached copy (revision 2)" in caplog.text and "could not give destination" in caplog.text


def test_a_save_committed_during_another_plans_read_is_no_restore(ledger_url: str, tmp_path: Path, caplog) -> None:
    """Two processes share a ledger and one cache folder. Plan B reads the counter (revision 1) in its snapshot;
    before B opens the copy, process A commits a save (revision 2) and A's plan keeps its copy at 2. B finds the
    copy ahead of its snapshot, but the counter, read again, has reached it in the same epoch: a concurrent
    writer, not a restore. No warning, no new epoch (before: "restored?" told, and every host's next plan read the
    state in full); B's plan is its snapshot's state, and the copy stays in use."""
    folder = tmp_path / "cache"
    with Ledger.connect(ledger_url, state_cache=folder) as a, Ledger.connect(ledger_url, state_cache=folder) as b:
        a.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        a.state_parts(DEST)
        a.state.close()  # A's copy at revision 1, written
        load = b.state._cache.load

        def a_lands_between(destination, counter, *token_at):  # between B's counter read and its opening of the copy
            a.save_states(DEST, None, [state(KEYS[0], 2)])
            a.state_parts(DEST)
            a.state.close()  # A's plan keeps its copy at revision 2
            return load(destination, counter, *token_at)

        b.state._cache.load = a_lands_between
        caplog.clear()
        parts = b.state_parts(DEST)
        b.state._cache.load = load
        assert as_states(parts.merged())["a@x.io"].fields == {"N": 1}  # B's snapshot: before A's save
        assert "behind" not in caplog.text and "restored" not in caplog.text
        assert b.state_revision(DEST) == 2
        b.state.close()  # (B's plan keeps its own copy, at its snapshot's revision 1)
        parts = a.state_parts(DEST)
        assert parts.since is not None  # a copy still of the ledger's epoch: read from it, not in full
        assert as_states(parts.merged()) == as_states(a.state_table(DEST, cached=False))
