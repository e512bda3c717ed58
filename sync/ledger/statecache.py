"""A destination's pushed state cached beside the ledger, so a plan reads only the rows changed since.

Every save of a destination's state bumps its revision and stamps the rows it writes with it
(``pushed_state.revision``), so the state at revision *R* is a cached copy taken at *R* with the rows stamped
after *R* laid over it. Forgotten rows leave no stamp; they are caught by counting: the merged copy holds every
current row plus any forgotten since, so it is exact when its row count is the ledger's, and is read again in
full otherwise.

A copy is one Arrow IPC file per destination (memory-mapped when read), named by a hash of the destination,
in a folder beside a SQLite ledger (``<ledger file>.state-cache/``). It records the destination, the
revision it was read at and the *epoch* of the destination's revision counter (random, made when the counter
starts: another ledger has another; renewed when the destination is forgotten). It is used only when all three
match, the ledger's revision has not gone back (a ledger restored from an older copy: the counter then gets a
new epoch, :mod:`sync.ledger.revisions`) and the ledger holds the copy's token for its revision (else restored and
written again since: a new epoch too); anything else (no token to check: a copy of an older rfmsync, a revision
whose token is no longer kept), or a file that does not read, means the full read.
Deleting the folder is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

FORMAT = b"1"


@dataclass(frozen=True)
class Counter:
    """A destination's revision counter as the ledger holds it (epoch None: never written)."""

    revision: int
    epoch: str | None
    #: the token of this revision (:mod:`sync.ledger.revisions`; None: not known), not compared
    token: str | None = field(default=None, compare=False)


class StateCache:
    """Cached copies of destinations' pushed state in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writes: dict[Path, threading.Thread] = {}  # a copy being written, by file
        self._guard = threading.Lock()
        #: destination → (the ledger's counter that a read found behind its copy, the copy's revision, None): a
        #: restore, or another process's save committed after the read's snapshot, which the ledger's
        #: :class:`~sync.ledger.revisions.Revisions` tells apart (a restore: the counter gets a new epoch); or
        #: (the counter, the copy's revision, the copy's token) when the ledger holds another token for that
        #: revision: restored, then written again up to the copy's revision or past it
        self.behind: dict[str, tuple[Counter, int, str | None]] = {}

    def wait(self) -> None:
        """Until every copy being written is written (closing the ledger waits for them)."""
        with self._guard:
            writes = list(self._writes.values())
        for thread in writes:
            thread.join()

    def writing(self, destination: str) -> bool:
        """Whether a copy of ``destination`` is being written (reading it would wait for the write)."""
        with self._guard:
            thread = self._writes.get(self.path(destination))
        return thread is not None and thread.is_alive()

    def path(self, destination: str) -> Path:
        return self.folder / (hashlib.sha256(destination.encode()).hexdigest()[:32] + ".arrow")

    def load(self, destination: str, counter: Counter, token_at: "Callable[[int], str | None]" = lambda _: None
             ) -> "tuple[pa.Table, int] | None":
        """The cached copy of ``destination`` and the revision it was read at, when it belongs to
        ``counter``: same epoch, revision not ahead of it, and the token the ledger holds for that revision
        (``counter.token``, else ``token_at(revision)``: one keyed read) is the copy's; else None. A copy with no
        token (kept by an older rfmsync), or of a revision whose token the ledger no longer keeps, proves
        nothing: the full read."""
        import pyarrow as pa

        path = self.path(destination)
        self._join(path)
        try:
            reader = self._reader(destination, counter)
            if reader is None:
                return None
            meta = reader.schema.metadata
            revision = int(meta[b"revision"])
            if revision > counter.revision:  # a restore, or a save committed since this read's snapshot
                self.behind[destination] = (counter, revision, None)  # (told apart by the ledger's Revisions)
                return None
            token = meta.get(b"token", b"").decode()
            held = counter.token if revision == counter.revision else token_at(revision)
            if not token or held is None:
                log.debug("ledger: state cache %s not used: no token of revision %d to check it by", path, revision)
                return None
            if held != token:  # restored, and written again up to the copy's revision or past it
                self.behind[destination] = (counter, revision, token)
                return None
            return reader.read_all().replace_schema_metadata(None), revision
        except (OSError, ValueError, pa.ArrowException) as exc:
            log.debug("ledger: state cache %s not used: %s", path, exc)
            return None

    def undone(self, destination: str, counter: Counter, token_at: "Callable[[int], str | None]"
               ) -> tuple[int, bool] | None:
        """``destination``'s copy of ``counter``'s epoch when it is of a history a restore undid: (its revision,
        False) when it is ahead of the counter's revision, (its revision, True) when the ledger holds another token
        for it (``token_at``: restored, then written again up to it or past it); None otherwise. The revisions the
        ledger writes again would make such a copy look current to the next plan: the caller deletes it once the
        counter's new epoch committed."""
        import pyarrow as pa

        path = self.path(destination)
        self._join(path)
        try:
            reader = self._reader(destination, counter)
            if reader is None:
                return None  # (one that does not read is not used)
            copied, token = int(reader.schema.metadata[b"revision"]), reader.schema.metadata.get(b"token")
        except (OSError, ValueError, pa.ArrowException):
            return None
        if copied > counter.revision:
            return copied, False
        held = token_at(copied) if token else None
        return (copied, True) if held is not None and held.encode() != token else None

    def drop(self, destination: str) -> None:
        """Delete ``destination``'s copy (its pushed state was forgotten: a destination moved elsewhere)."""
        path = self.path(destination)
        self._join(path)
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    def _reader(self, destination: str, counter: Counter) -> "pa.ipc.RecordBatchFileReader | None":
        """The copy of ``destination`` of ``counter``'s epoch (its footer read, not its rows); None if none."""
        import pyarrow as pa

        path = self.path(destination)
        if counter.epoch is None or not path.exists():
            return None
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        meta = reader.schema.metadata or {}
        if (meta.get(b"format") != FORMAT or meta.get(b"destination") != destination.encode()
                or meta.get(b"epoch") != counter.epoch.encode() or int(meta.get(b"revision", b"-1")) < 0):
            return None
        return reader

    def store(self, destination: str, counter: Counter, table: "pa.Table") -> None:
        """Keep ``table`` as ``destination``'s state at ``counter``: written on a thread of its own (the plan
        goes on meanwhile; Arrow writes without the interpreter lock) to a file aside, then renamed into
        place, so a reader sees the old copy or the new one, never half of one. A folder that cannot be
        written only costs the next plan a full read."""
        if counter.epoch is None:
            return
        path = self.path(destination)
        meta = {b"format": FORMAT, b"destination": destination.encode(), b"epoch": counter.epoch.encode(),
                b"revision": str(counter.revision).encode(), **({b"token": counter.token.encode()}
                                                                if counter.token else {})}
        self._join(path)  # one write per file at a time: the later copy lands last
        thread = threading.Thread(target=self._write, args=(path, table.replace_schema_metadata(meta)),
                                  name="rfmsync-state-cache")
        with self._guard:
            self._writes[path] = thread
        thread.start()

    def _join(self, path: Path) -> None:
        with self._guard:
            thread = self._writes.pop(path, None)
        if thread is not None:
            thread.join()

    def _write(self, path: Path, table: "pa.Table") -> None:
        import pyarrow as pa

        temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            os.replace(temp, path)
        except (OSError, pa.ArrowException) as exc:
            log.warning("ledger: could not keep the state cache %s (%s); the next plan reads the state in full",
                        path, exc)
            with contextlib.suppress(OSError):  # no folder, or not one: there is no temp file either
                temp.unlink(missing_ok=True)


def went_back(destination: str, counter: Counter, copy: int, *, seen: bool = False, rewritten: bool = False,
              plan: bool = False) -> None:
    """The warning: ``destination``'s counter is behind its copy at revision ``copy`` (a restored ledger); with
    ``seen``, behind the revision ``copy`` this process found before (a save's own check); with ``plan``, behind
    the saved plan made at revision ``copy`` (``apply`` refusing it); with ``rewritten``, the copy's (or plan's)
    revision was written again since (the ledger holds another token for it)."""
    if rewritten:
        since = (f"the plan saved at its revision {copy} was made: its history since then is not the plan's" if plan
                 else f"its cached copy (revision {copy}) was read: its history since then is not the copy's")
        where = f"at revision {counter.revision}, written again since {since}"
    else:
        ahead = (f"the revision {copy} this process found before" if seen else
                 f"the plan saved at its revision {copy}" if plan else
                 f"its cached copy (revision {copy})")
        where = f"at revision {counter.revision}, behind {ahead}"
    log.warning("ledger: the pushed state of destination %r is %s: the ledger was restored from an older copy of "
                "its file? What rfmsync pushed after that copy is not in it, so the ESP may hold tags and fields "
                "it does not know of; run 'rfmsync sync --full-refresh' once (docs/ledger.md#restored-ledger)",
                destination, where)


def cache_for(engine: "Engine", folder: Path | None = None) -> StateCache | None:
    """The cache in ``folder``; by default beside a SQLite ledger file (``<file>.state-cache``), none in
    memory or on PostgreSQL."""
    if folder is not None:
        return StateCache(Path(folder))
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:") or \
            str(engine.url.query.get("mode", "")) == "memory":
        return None
    path = Path(database).expanduser().resolve()
    return StateCache(path.with_name(path.name + ".state-cache"))


@dataclass(frozen=True)
class StateParts:
    """A destination's pushed state in two parts: ``base`` (a cached copy, or the full read) and ``changed``
    (the rows written since, each replacing ``base``'s row of the same key). The planner merges them as it
    copies them into its DuckDB (:func:`sync.planning.columnar.stage_pushed`); :meth:`merged` for the rest."""

    base: "pa.Table"
    changed: "pa.Table"
    #: the revision of the cached copy used (None: the state was read in full)
    since: int | None = None
    #: how many rows were read from the ledger (the changed rows, or all of them)
    read: int = 0

    def merged(self) -> "pa.Table":
        """The state as one table (in no particular order)."""
        if not self.changed.num_rows:
            return self.base
        import duckdb

        con = duckdb.connect()
        try:
            con.register("_state_base", self.base)
            con.register("_state_changed", self.changed)
            return con.sql(f"SELECT * FROM ({MERGE_SQL.format(base='_state_base', changed='_state_changed')})"
                           ).to_arrow_table().cast(self.base.schema)
        finally:
            con.close()


#: the state from its parts (DuckDB; ``{base}`` and ``{changed}``: the two relations)
MERGE_SQL = "SELECT * FROM {base} ANTI JOIN {changed} USING (key) UNION ALL SELECT * FROM {changed}"


def renewal_due(changed: int, copy: int) -> bool:
    """A copy of ``copy`` rows is renewed when ``changed`` rows were written since it: a tenth of it."""
    return changed * 10 >= max(copy, 1)


class WrittenRevisions:
    """The revisions one ledger object made, and how many rows each wrote, per destination: when every revision
    since a copy is among them, their rows bound what changed since it, and :func:`renewal_due` needs no count of
    the destination's rows (``PushedStates.keep_copy_current``). Thread-safe."""

    #: revisions remembered per destination (older ones are dropped: a revision not remembered only means the
    #: caller counts in the table)
    LIMIT = 10_000

    def __init__(self) -> None:
        self._noted: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()

    def note(self, destination: str, revision: int, rows: int) -> None:
        """Remember that ``revision`` (made by this object, committed) wrote ``rows`` rows."""
        with self._lock:
            noted = self._noted.setdefault(destination, {})
            if len(noted) >= self.LIMIT:
                noted.clear()
            noted[revision] = rows

    def drop(self, destination: str) -> None:
        """Forget ``destination``'s revisions (its counter has a new epoch: they are of another history)."""
        with self._lock:
            self._noted.pop(destination, None)

    def rows_at_most(self, destination: str, since: int, revision: int) -> int | None:
        """At most how many rows carry a revision after ``since`` (up to ``revision``), when every revision
        in between was noted (a forget's counts none: its rows are gone); else None. Forgets the revisions up
        to ``since``."""
        with self._lock:
            noted = self._noted.get(destination, {})
            for old in [r for r in noted if r <= since]:
                del noted[old]
            if revision - since > len(noted):
                return None
            rows = [noted.get(r) for r in range(since + 1, revision + 1)]
        return None if None in rows else sum(rows)  # type: ignore[arg-type]


def state_parts(cache: StateCache, destination: str, counter: Counter,
                changed_since: Callable[[int], "pa.Table"], count: Callable[[], int],
                full: Callable[[], "pa.Table"], token_at: Callable[[int], str | None] = lambda _: None
                ) -> StateParts:
    """``destination``'s state at ``counter``: the cached copy and the rows changed since it
    (``changed_since(revision)``) when together they hold exactly ``count()`` rows, else ``full()``. The copy
    is renewed when the changed rows reach a tenth of it (reading the changes costs a scan of the table,
    whatever their number; keeping a copy costs a write of it all). Called inside one read transaction (one
    snapshot of the ledger). ``token_at``: the ledger's token of a revision (:meth:`StateCache.load`)."""
    import pyarrow.compute as pc

    cached = cache.load(destination, counter, token_at)
    if cached is not None:
        base, since = cached
        if since == counter.revision:  # nothing written since: every save and every forget moves the revision
            return StateParts(base, base.schema.empty_table(), since, 0)
        changed = changed_since(since)
        replaced = pc.sum(pc.is_in(base.column("key"), value_set=changed.column("key"))).as_py() or 0
        if base.num_rows - replaced + changed.num_rows == count():
            parts = StateParts(base, changed, since, changed.num_rows)
            if renewal_due(changed.num_rows, base.num_rows):
                parts = StateParts(parts.merged(), base.schema.empty_table(), since, changed.num_rows)
                cache.store(destination, counter, parts.base)
            return parts
        log.debug("ledger: %s: rows were forgotten since revision %d; reading the state in full", destination,
                  since)
    table = full()
    cache.store(destination, counter, table)
    return StateParts(table, table.schema.empty_table(), None, table.num_rows)


__all__ = ["Counter", "MERGE_SQL", "StateCache", "StateParts", "cache_for", "renewal_due", "state_parts",
           "went_back"]
