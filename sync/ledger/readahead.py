"""A large apply's pushed state read while its calls still run, for the cached copy it renews at its end.

After a first sync (no cached copy yet) the apply reads back the million rows it wrote, so the next plan reads
only what changes after it (:meth:`~sync.ledger.state.PushedStates.keep_copy_current`). That read ran after the
last call, with nothing else to do: seconds of the apply's wall, although almost all of it is SQLite and
Arrow, which let go of the interpreter lock. :class:`ReadAhead` reads, on a thread of its own while the calls
run, each page of rowids (:mod:`sync.ledger.bulk`) that the writer has written past, in a read transaction of
its own, noting the revision and its token it was read at. The read at the end (one snapshot, as before) takes
a page from here only when that page still holds exactly those rows (:func:`~sync.ledger.bulk.page_unchanged`:
the same keys in the same order, none stamped later; a ledger reloaded from a dump or vacuumed since may hold
other rows there) and the ledger still holds the token of that revision (else it was restored and
written again since); any other page is read as before. So the copy is the same table, read at the end's
snapshot; a page written again after it was read ahead (a contact's later outcome, a forget) costs its read twice.

SQLite only (the pages are rowid ranges); the read-ahead is off wherever there is no cache, and for a
destination that already has a copy (its changes are read by revision instead).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable

from .bulk import page_mark, page_starts, read_page_sqlite

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection

    from .db import LedgerDB
    from .statecache import Counter, StateCache

log = logging.getLogger(__name__)

#: seconds between two looks for pages the writer has written past
INTERVAL = 0.5
#: rowids a page, for the read-ahead and the read-back after it: the page the writer is still filling when the
#: calls end is read at the end (with the bulk read's 200 000, a first sync's last fifth)
PAGE_AHEAD = 50_000


class ReadAhead:
    """Pages of ``destination``'s pushed state read on a thread while an apply runs (:meth:`start`, :meth:`stop`)."""

    THREAD = "rfmsync-state-read-ahead"  # the thread's name

    def __init__(self, db: "LedgerDB", destination: str, counter: "Callable[[Connection], Counter]",
                 page_size: int = PAGE_AHEAD, interval: float = INTERVAL) -> None:
        self._db, self.destination, self._counter = db, destination, counter
        self.page_size, self.interval = page_size, interval
        #: page start -> (its rows, their :func:`~sync.ledger.bulk.page_mark`, the revision they were read at,
        #: that revision's token)
        self.pages: dict[int, tuple[pa.Table, tuple[int, int | None, bytes | None], int, str | None]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.THREAD, daemon=True)

    def start(self) -> "ReadAhead":
        self._thread.start()
        return self

    def stop(self) -> "ReadAhead":
        """No further page (one being read is finished first)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        return self

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.interval):
                self.read_written()
        except Exception as exc:  # only a cost: the pages not read here are read at the end
            log.debug("ledger: the read-ahead of %s's pushed state stopped: %s", self.destination, exc)

    def read_written(self) -> int:
        """Read the pages not read yet that rows have been written past (a page the writer still fills is left
        for later); the pages read."""
        read = 0
        with self._db.snapshot() as conn:
            cursor = conn.connection.driver_connection.cursor()
            starts = page_starts(cursor, self.page_size)
            if not starts:
                return 0
            counter = self._counter(conn)
            if counter.epoch is None:
                return 0
            for lo in starts[:-1]:  # the last page is the one rows are still added to
                if lo in self.pages or self._stopping.is_set():
                    continue
                self.pages[lo] = (read_page_sqlite(cursor, self.destination, lo, self.page_size),
                                  page_mark(cursor, self.destination, lo, self.page_size), counter.revision,
                                  counter.token)
                read += 1
        return read

    def usable(self, token_at: "Callable[[int], str | None]") -> "dict[int, tuple[pa.Table, Any]]":
        """The pages read at a revision whose token the ledger still holds (``token_at``, in the final read's
        snapshot), each with its mark: whether each still holds those rows is for the read itself to check."""
        tokens: dict[int, Any] = {}
        out = {}
        for lo, (table, mark, revision, token) in self.pages.items():
            if revision not in tokens:
                tokens[revision] = token_at(revision)
            if token is not None and tokens[revision] == token:
                out[lo] = (table, mark)
        return out


class ReadsAhead:
    """:meth:`read_ahead`, for :class:`~sync.ledger.state.PushedStates` (its database, cache and counters)."""

    _db: "LedgerDB"
    _cache: "StateCache | None"
    _counter: "Callable[[Connection, str], Counter]"
    _token_at: "Callable[[Connection, str, int], str | None]"

    def read_ahead(self, destination: str, *, page: int = PAGE_AHEAD) -> ReadAhead | None:
        """A started :class:`ReadAhead` of ``destination`` when the read-back at the end of an apply will read its
        state in full (a SQLite ledger with a state cache, no usable copy of ``destination`` and none being
        written); else None. The caller stops it and hands it to
        :meth:`~sync.ledger.state.PushedStates.keep_copy_current` (which reads in its pages)."""
        if self._cache is None or self._db.dialect != "sqlite":
            return None
        if self._cache.writing(destination):  # the plan just renewed the copy: the read-back reads what changes
            return None  # after it (loading it here would wait for the write, and the apply's first call with it)
        try:
            with self._db.snapshot() as conn:
                counter = self._counter(conn, destination)
                if self._cache.load(destination, counter, lambda r: self._token_at(conn, destination, r)) is not None:
                    return None
        except Exception as exc:  # only a cost: the read-back reads every page at the end, as without it
            log.debug("ledger: no read-ahead of %s's pushed state: %s", destination, exc)
            return None
        return ReadAhead(self._db, destination, lambda conn: self._counter(conn, destination), page).start()


__all__ = ["INTERVAL", "PAGE_AHEAD", "ReadAhead", "ReadsAhead"]
