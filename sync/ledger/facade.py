"""The :class:`Ledger` facade: one object over the ledger's parts, for callers that need several of them.

SQLAlchemy 2 Core over SQLite (default, ``sqlite:///path/rfmsync.db``) or PostgreSQL
(``postgresql+psycopg://user:password@host/db``). ``Ledger.connect(url)`` opens the
database and migrates it to the newest schema (see :mod:`sync.ledger.schema`).

Each concern is its own small class over one :class:`~sync.ledger.db.LedgerDB` (state, runs, failures,
cursors, locks, queue), reachable as ``ledger.state``, ``ledger.runs``... The facade also offers their
methods directly (``ledger.load_state(...)`` is ``ledger.state.load_state(...)``), so code that needs one
concern can type against its small Protocol (:class:`~sync.ledger.cursors.Cursors`,
:class:`~sync.ledger.runs.RunHistory`...) and still be handed a Ledger.

Every public method runs in its own short transaction, so a crash never leaves half a
batch written. Times are timezone-aware UTC; an injectable ``clock`` makes lock TTLs and
queue staleness testable without sleeping. The URL is only ever shown with its
password hidden.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Concatenate, Generic, Iterable, ParamSpec, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from .cursors import CursorTable
from .db import LedgerDB, build_engine, is_memory, migrate, parse_url, safe_url, utcnow
from .dberrors import open_failure
from .failures import FailureLog
from .inflight import InFlight
from .kept_out import KeptOutLog
from .locks import LockTable
from .queue import EventQueue
from .runs import RunLog
from .schema import current_version
from .state import PushedStates
from .statecache import cache_for
from .subscribed import SubscribedByUs

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class _Via(Generic[P, R]):
    """``load_state = _Via("state", PushedStates.load_state)``: the method of the part named ``state``."""

    def __init__(self, part: str, method: Callable[Concatenate[Any, P], R]) -> None:
        self.part, self.name, self.__doc__ = part, method.__name__, method.__doc__

    def __get__(self, ledger: Any, owner: type | None = None) -> Callable[P, R]:
        if ledger is None:
            return self  # type: ignore[return-value]  # class access: the descriptor (help(), docs)
        return getattr(getattr(ledger, self.part), self.name)


class Ledger:
    """Operational state of rfmsync. Create with :meth:`connect`; close with :meth:`close`."""

    def __init__(self, engine: Engine, *, url_for_display: str,
                 clock: Callable[[], datetime] = utcnow, state_cache: Path | None = None) -> None:
        self._db = LedgerDB(engine, clock)
        self._url = url_for_display
        self._state_cache = state_cache
        self.state = PushedStates(self._db, cache_for(engine, state_cache))
        self.runs = RunLog(self._db)
        self.failures = FailureLog(self._db)
        self.kept_out = KeptOutLog(self._db)
        self.in_flight = InFlight(self._db)
        self.subscribed = SubscribedByUs(self._db)
        self.cursors = CursorTable(self._db)
        self.locks = LockTable(self._db)
        self.queue = EventQueue(self._db)

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def connect(cls, url: str, *, clock: Callable[[], datetime] = utcnow,
                target_version: int | None = None, state_cache: Path | None = None) -> Ledger:
        """Open (creating if needed) the ledger at ``url`` and migrate it to the newest schema.

        ``target_version`` stops migrating at an older version (tests and tooling only). ``state_cache``: the
        folder of the plans' cached copies of the pushed state (:mod:`sync.ledger.statecache`); by default
        ``<file>.state-cache`` beside a SQLite ledger file, none for PostgreSQL or an in-memory database.
        Raises :class:`sync.errors.ConfigError` for a bad URL, an unreachable database or a path that is no
        ledger; :class:`sync.errors.LedgerError` (transient) for a SQLite file another process keeps locked.
        """
        parsed = parse_url(url)
        shown = safe_url(parsed)
        engine = build_engine(parsed)
        try:
            before, after = migrate(engine, clock, target_version)
        except DBAPIError as exc:  # unreachable, bad credentials, no permission, locked past the busy timeout
            engine.dispose()
            raise open_failure(exc, parsed) from None
        except BaseException:
            engine.dispose()
            raise
        if before != after:
            log.info("ledger %s migrated from schema version %d to %d", shown, before, after)
        else:
            log.debug("ledger %s opened at schema version %d", shown, after)
        return cls(engine, url_for_display=shown, clock=clock, state_cache=state_cache)

    def close(self) -> None:
        self.state.close()
        self._db.engine.dispose()

    def sibling(self, *, autocheckpoint: bool = True) -> Ledger:
        """Another Ledger on the same database with its own connections (same clock, same in-process
        SQLite write mutex). ``autocheckpoint=False`` (SQLite): its commits never run a WAL checkpoint,
        whose fsync would otherwise land on whichever commit crossed the threshold; call
        :meth:`checkpoint` from a thread that can afford it. An in-memory database has no sibling: self."""
        url = self._db.engine.url
        if self.dialect == "sqlite" and is_memory(url):
            return self
        engine = build_engine(url)
        if self.dialect == "sqlite" and not autocheckpoint:
            @event.listens_for(engine, "connect")
            def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA wal_autocheckpoint = 0")

        return type(self)(engine, url_for_display=self._url, clock=self._db.clock, state_cache=self._state_cache)

    def checkpoint(self) -> None:
        """SQLite: copy the WAL into the database file without blocking anyone (PASSIVE). Else nothing."""
        if self.dialect != "sqlite":
            return
        with self._db.connection() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self._url!r})"

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.dialect

    def schema_version(self) -> int:
        with self._db.read() as conn:
            return current_version(conn)

    @property
    def _engine(self) -> Engine:  # the tests look at what each connection is set to
        return self._db.engine

    def _write(self) -> AbstractContextManager[Connection]:
        """One write transaction on this ledger's database (the tests hold SQLite's write lock with it)."""
        return self._db.write()

    # -- the parts' methods, offered directly ----------------------------------------------

    load_state = _Via("state", PushedStates.load_state)
    state_table = _Via("state", PushedStates.state_table)
    state_parts = _Via("state", PushedStates.state_parts)
    keep_copy_current = _Via("state", PushedStates.keep_copy_current)
    read_ahead = _Via("state", PushedStates.read_ahead)
    load_states = _Via("state", PushedStates.load_states)
    load_state_of = _Via("state", PushedStates.load_state_of)
    tag_set_counts = _Via("state", PushedStates.tag_set_counts)
    tag_sets_beside = _Via("state", PushedStates.tag_sets_beside)
    state_destinations = _Via("state", PushedStates.state_destinations)
    field_holders = _Via("state", PushedStates.field_holders)
    save_states = _Via("state", PushedStates.save_states)
    save_rows = _Via("state", PushedStates.save_rows)
    forget = _Via("state", PushedStates.forget)
    forget_lost = _Via("state", PushedStates.forget_lost)
    move_state = _Via("state", PushedStates.move_state)
    take_over = _Via("state", PushedStates.take_over)
    forget_destination = _Via("state", PushedStates.forget_destination)
    held_destinations = _Via("state", PushedStates.held_destinations)
    record_owners = _Via("state", PushedStates.record_owners)
    lost_tags = _Via("state", PushedStates.lost_tags)
    settle_lost = _Via("state", PushedStates.settle_lost)
    refused_lost = _Via("state", PushedStates.refused_lost)
    state_count = _Via("state", PushedStates.state_count)
    written_since = _Via("state", PushedStates.written_since)
    state_revision = _Via("state", PushedStates.state_revision)
    state_counter = _Via("state", PushedStates.state_counter)
    ledger_now = _Via("state", PushedStates.ledger_now)
    saved_plan_restored = _Via("state", PushedStates.saved_plan_restored)
    customer_states = _Via("state", PushedStates.customer_states)

    start_run = _Via("runs", RunLog.start_run)
    finish_run = _Via("runs", RunLog.finish_run)
    interrupt_run = _Via("runs", RunLog.interrupt_run)
    abandon_dead_runs = _Via("runs", RunLog.abandon_dead_runs)
    recent_runs = _Via("runs", RunLog.recent_runs)
    last_run_counts = _Via("runs", RunLog.last_run_counts)
    get_run = _Via("runs", RunLog.get_run)

    record_failures = _Via("failures", FailureLog.record_failures)
    resolve_failures = _Via("failures", FailureLog.resolve_failures)
    record_results = _Via("failures", FailureLog.record_results)
    pending_failures = _Via("failures", FailureLog.pending_failures)
    upsert_sent_since = _Via("failures", FailureLog.upsert_sent_since)

    def doubted_ops(self, destination: str, keys: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """``(key, op)`` of the operations in doubt (:mod:`sync.planning.doubt`): the pending failed adds and
        upserts, and those a run that ended without finishing left in flight (:mod:`sync.ledger.inflight`); of
        ``keys`` only when given (a webhook resync's contacts)."""
        return self.doubts(destination, keys)[0]

    def doubts(self, destination: str, keys: Iterable[str] | None = None
               ) -> tuple[list[tuple[str, str]], frozenset[int]]:
        """:meth:`doubted_ops`, and the ids of the runs whose operations left in flight are among them (a plan
        records them: an apply that finds another run's left re-plans, :func:`sync.planning.doubt.doubt_unread`)."""
        stale, dead = self.in_flight.stale(destination, keys)
        return self.failures.doubted_ops(destination, keys) + stale, dead

    note_in_flight = _Via("in_flight", InFlight.note_in_flight)
    clear_in_flight = _Via("in_flight", InFlight.clear_in_flight)
    narrow_in_flight = _Via("in_flight", InFlight.narrow_in_flight)
    doubt_in_flight = _Via("in_flight", InFlight.doubt_in_flight)
    in_flight_count = _Via("in_flight", InFlight.in_flight_count)
    in_flight_runs = _Via("in_flight", InFlight.in_flight_runs)
    doubted_destinations = _Via("in_flight", InFlight.doubted_destinations)

    record_kept_out = _Via("kept_out", KeptOutLog.record_kept_out)
    kept_out_ops = _Via("kept_out", KeptOutLog.kept_out_ops)
    kept_out_list = _Via("kept_out", KeptOutLog.kept_out_list)
    has_kept_out = _Via("kept_out", KeptOutLog.has_kept_out)
    forget_kept_out = _Via("kept_out", KeptOutLog.forget_kept_out)
    record_subscribed = _Via("subscribed", SubscribedByUs.record_subscribed)
    forget_subscribed = _Via("subscribed", SubscribedByUs.forget_subscribed)
    has_subscribed = _Via("subscribed", SubscribedByUs.has_subscribed)
    subscribed_among = _Via("subscribed", SubscribedByUs.subscribed_among)
    subscribed_keys = _Via("subscribed", SubscribedByUs.subscribed_keys)

    get_cursor = _Via("cursors", CursorTable.get_cursor)
    set_cursor = _Via("cursors", CursorTable.set_cursor)
    ledger_id = _Via("cursors", CursorTable.ledger_id)

    acquire_lock = _Via("locks", LockTable.acquire_lock)
    lock_holder = _Via("locks", LockTable.lock_holder)
    refresh_lock = _Via("locks", LockTable.refresh_lock)
    release_lock = _Via("locks", LockTable.release_lock)
    lock = _Via("locks", LockTable.lock)

    enqueue_event = _Via("queue", EventQueue.enqueue_event)
    enqueue_events = _Via("queue", EventQueue.enqueue_events)
    claim_events = _Via("queue", EventQueue.claim_events)
    claimable_count = _Via("queue", EventQueue.claimable_count)
    renew_claims = _Via("queue", EventQueue.renew_claims)
    complete_events = _Via("queue", EventQueue.complete_events)
    fail_events = _Via("queue", EventQueue.fail_events)
    release_events = _Via("queue", EventQueue.release_events)
    oldest_unsettled = _Via("queue", EventQueue.oldest_unsettled)
    requeue_failed_events = _Via("queue", EventQueue.requeue_failed_events)
    purge_events = _Via("queue", EventQueue.purge_events)
    queue_depth = _Via("queue", EventQueue.queue_depth)
    event_counts = _Via("queue", EventQueue.event_counts)
