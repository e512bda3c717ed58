"""The operational ledger: pushed state, runs, failures, cursors, locks, webhook queue.

SQLAlchemy 2 Core over SQLite (default, ``sqlite:///path/rfmsync.db``) or PostgreSQL
(``postgresql+psycopg://user:password@host/db``). ``Ledger.connect(url)`` opens the
database and migrates it to the newest schema (see :mod:`sync.ledger_schema`).

Every public method runs in its own short transaction, so a crash never leaves half a
batch written. Times are timezone-aware UTC; an injectable ``clock`` makes lock TTLs and
queue staleness testable without sleeping. The URL is only ever shown with its
password hidden.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.schema import Table

from .errors import ConfigError, LockBusyError
from .ledger_db import migrate, parse_url, safe_url, build_engine, transaction
from .ledger_queue import EVENT_STATUSES, Event, EventQueueMixin, chunks as _chunks, clip as _clip
from .ledger_queue import owner_process_gone
from .ledger_schema import cursors, failures, locks, pushed_state, runs, state_revisions
from .ledger_schema import current_version
from .model import ItemResult, PushedState

__all__ = ["Ledger", "Event", "EVENT_STATUSES", "RUN_STATUSES", "default_owner", "owner_process_gone",
           "process_owner", "utcnow"]

log = logging.getLogger(__name__)

RUN_STATUSES = ("running", "succeeded", "partial", "failed", "refused", "abandoned")
FINISHED_STATUSES = ("succeeded", "partial", "failed", "refused")  # refused: a guard stopped it, nothing written
_STATE_UPDATE_COLUMNS = ("customer_id", "tags", "fields", "in_destination", "pushed_at", "run_id")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _json_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} value {value!r} is not a str, int, float, bool or None")


_encode_fields = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_json_default).encode
_encode = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


def _dump_fields(key: str, fields: Mapping[str, Any]) -> str:
    try:
        return _encode_fields(fields if type(fields) is dict else dict(fields))
    except TypeError as exc:
        raise ValueError(f"pushed state for {key!r}: cannot store fields: {exc}") from None


_SQLITE_WRITERS: dict[str, threading.Lock] = {}
_SQLITE_WRITERS_GUARD = threading.Lock()


def _sqlite_writer_mutex(engine: Engine) -> threading.Lock:
    """One mutex per SQLite database file in this process (shared by every Ledger on that file).

    SQLite lets one writer in at a time; a connection that finds the write lock taken waits in SQLite's
    busy handler, which *sleeps* in steps of up to 100 ms before it looks again. Threads of one process
    (webhook intake, resync workers, scheduler) therefore queue on this mutex instead: the next writer
    starts the moment the previous one commits. Other processes still meet on ``busy_timeout``.
    """
    key = os.path.abspath(engine.url.database) if engine.url.database and engine.url.database != ":memory:" \
        else f"memory:{id(engine)}"
    with _SQLITE_WRITERS_GUARD:
        return _SQLITE_WRITERS.setdefault(key, threading.Lock())


def default_owner() -> str:
    """host:pid:random, unique per lock holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def process_owner() -> str:
    """host:pid:run, the owner recorded on the runs this process starts."""
    return f"{socket.gethostname()}:{os.getpid()}:run"


class Ledger(EventQueueMixin):
    """Operational state of rfmsync. Create with :meth:`connect`; close with :meth:`close`.

    The webhook-queue methods come from :class:`sync.ledger_queue.EventQueueMixin`.
    """

    def __init__(self, engine: Engine, *, url_for_display: str,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self._url = url_for_display
        self._clock = clock
        self._writer = _sqlite_writer_mutex(engine) if engine.dialect.name == "sqlite" else nullcontext()

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def connect(cls, url: str, *, clock: Callable[[], datetime] = utcnow,
                target_version: int | None = None) -> Ledger:
        """Open (creating if needed) the ledger at ``url`` and migrate it to the newest schema.

        ``target_version`` stops migrating at an older version (tests and tooling only).
        Raises :class:`sync.errors.ConfigError` for a bad URL or an unreachable database.
        """
        parsed = parse_url(url)
        shown = safe_url(parsed)
        engine = build_engine(parsed)
        try:
            before, after = migrate(engine, clock, target_version)
        except DBAPIError as exc:  # unreachable, bad credentials, no permission to create tables
            engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
            raise ConfigError(f"cannot open ledger {shown}: {reason}") from None
        except BaseException:
            engine.dispose()
            raise
        if before != after:
            log.info("ledger %s migrated from schema version %d to %d", shown, before, after)
        else:
            log.debug("ledger %s opened at schema version %d", shown, after)
        return cls(engine, url_for_display=shown, clock=clock)

    def close(self) -> None:
        self._engine.dispose()

    def sibling(self, *, autocheckpoint: bool = True) -> Ledger:
        """Another Ledger on the same database with its own connections (same clock, same in-process
        SQLite write mutex). ``autocheckpoint=False`` (SQLite): its commits never run a WAL checkpoint,
        whose fsync would otherwise land on whichever commit crossed the threshold; call
        :meth:`checkpoint` from a thread that can afford it. An in-memory database has no sibling: self."""
        url = self._engine.url
        if self.dialect == "sqlite" and (url.database in (None, "", ":memory:")
                                         or str(url.query.get("mode", "")) == "memory"):
            return self
        engine = build_engine(url)
        if self.dialect == "sqlite" and not autocheckpoint:
            from sqlalchemy import event

            @event.listens_for(engine, "connect")
            def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA wal_autocheckpoint = 0")

        return type(self)(engine, url_for_display=self._url, clock=self._clock)

    def checkpoint(self) -> None:
        """SQLite: copy the WAL into the database file without blocking anyone (PASSIVE). Else nothing."""
        if self.dialect != "sqlite":
            return
        with self._engine.connect() as conn:
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
        return self._engine.dialect.name

    def schema_version(self) -> int:
        with transaction(self._engine, write=False) as conn:
            return current_version(conn)

    def _insert(self, table: Table) -> sqlite_dialect.Insert | pg_dialect.Insert:
        mod = pg_dialect if self.dialect == "postgresql" else sqlite_dialect
        return mod.insert(table)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer, transaction(self._engine, write=True) as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with transaction(self._engine, write=False) as conn:
            yield conn

    # -- pushed state ------------------------------------------------------------------

    def load_state(self, destination: str) -> dict[str, PushedState]:
        """Everything last pushed to ``destination``, by contact key (normalised email)."""
        t = pushed_state
        query = select(t.c.key, t.c.customer_id, t.c.tags, t.c.fields, t.c.in_destination).where(
            t.c.destination == destination)
        with self._read() as conn:
            rows = conn.execute(query).all()
        tag_sets: dict[str, frozenset[str]] = {}  # frozensets are immutable: share equal ones
        state: dict[str, PushedState] = {}
        for key, customer_id, tags, fields, present in rows:
            tag_set = tag_sets.get(tags)
            if tag_set is None:
                tag_set = tag_sets[tags] = frozenset(_decode(tags))
            state[key] = PushedState(key, customer_id, tag_set, _decode(fields), bool(present))
        return state

    def save_states(self, destination: str, run_id: int | None, states: Iterable[PushedState]) -> int:
        """Upsert pushed state (by destination and key); bumps :meth:`state_revision`. Returns rows written."""
        now = self._clock()
        rows: dict[str, tuple[str, str | None, str, str, bool]] = {}  # by key: the last one wins
        tag_json: dict[frozenset[str], str] = {}  # few distinct tag sets: encode each once
        for s in states:
            if not s.key:
                raise ValueError(f"pushed state for destination {destination!r} has an empty key")
            tags = tag_json.get(s.tags)
            if tags is None:
                tags = tag_json[s.tags] = _encode(sorted(s.tags))
            rows[s.key] = (s.key, s.customer_id, tags, _dump_fields(s.key, s.fields), bool(s.exists))
        if not rows:
            return 0
        try:
            with self._write() as conn:
                if conn.dialect.name == "postgresql":
                    self._save_rows_pg(conn, destination, run_id, now, list(rows.values()))
                else:
                    self._save_rows_sqlite(conn, destination, run_id, now, list(rows.values()))
                self._bump_revision(conn, destination)
        except IntegrityError:
            raise ValueError(f"save_states: run {run_id} does not exist in the ledger") from None
        log.debug("ledger: saved %d states for %s", len(rows), destination)
        return len(rows)

    # Bulk paths: pushed_at is the one typed value and the same on every row, so it is
    # converted once and the driver gets plain rows (SQLAlchemy's per-row processing
    # would triple the time of a 100k-contact save).

    def _save_rows_sqlite(self, conn: Connection, destination: str, run_id: int | None,
                          now: datetime, rows: list[tuple[Any, ...]]) -> None:
        to_db = pushed_state.c.pushed_at.type.bind_processor(conn.dialect)
        db_now = to_db(now) if to_db else now
        ins = sqlite_dialect.insert(pushed_state)
        stmt = ins.on_conflict_do_update(
            index_elements=[pushed_state.c.destination, pushed_state.c.key],
            set_={c: ins.excluded[c] for c in _STATE_UPDATE_COLUMNS})
        sql = str(stmt.compile(dialect=sqlite_dialect.dialect(paramstyle="named")))
        for chunk in _chunks(rows):
            conn.exec_driver_sql(sql, [
                {"destination": destination, "key": key, "customer_id": cid, "tags": tags,
                 "fields": fields, "in_destination": present, "pushed_at": db_now, "run_id": run_id}
                for key, cid, tags, fields, present in chunk])

    @staticmethod
    def _save_rows_pg(conn: Connection, destination: str, run_id: int | None,
                      now: datetime, rows: list[tuple[Any, ...]]) -> None:
        # One INSERT .. SELECT per chunk, the rows shipped as a single JSON document: psycopg
        # then sends one parameter instead of quoting 100k array elements in Python.
        sql = (
            "INSERT INTO pushed_state (destination, key, customer_id, tags, fields, in_destination,"
            " pushed_at, run_id) SELECT %(destination)s, r->>0, r->>1, r->>2, r->>3, (r->>4)::boolean,"
            " %(now)s, %(run_id)s FROM json_array_elements(%(rows)s::json) AS r"
            " ON CONFLICT (destination, key) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in _STATE_UPDATE_COLUMNS)
        )
        for chunk in _chunks(rows, 20_000):
            conn.exec_driver_sql(sql, {"destination": destination, "now": now, "run_id": run_id,
                                       "rows": json.dumps(chunk, separators=(",", ":"))})

    def forget(self, destination: str, keys: Iterable[str]) -> int:
        """Delete pushed state of ``keys``; bumps the revision if anything was deleted."""
        keys = list(dict.fromkeys(keys))
        deleted = 0
        with self._write() as conn:
            for chunk in _chunks(keys, 1000):
                deleted += conn.execute(delete(pushed_state).where(
                    pushed_state.c.destination == destination, pushed_state.c.key.in_(chunk))).rowcount
            if deleted:
                self._bump_revision(conn, destination)
        return deleted

    def state_revision(self, destination: str) -> int:
        """Counter bumped by every save/forget that changed ``destination``'s state (0 if never)."""
        with self._read() as conn:
            value = conn.execute(select(state_revisions.c.revision).where(
                state_revisions.c.destination == destination)).scalar()
        return int(value or 0)

    def _bump_revision(self, conn: Connection, destination: str) -> None:
        ins = self._insert(state_revisions).values(destination=destination, revision=1)
        conn.execute(ins.on_conflict_do_update(
            index_elements=[state_revisions.c.destination],
            set_={"revision": state_revisions.c.revision + 1}))

    # -- runs --------------------------------------------------------------------------

    def start_run(self, kind: str, destination: str | None = None) -> int:
        """Record a run as ``running`` (owned by this process); returns its id.

        Runs left ``running`` by a killed process of this host are marked ``abandoned`` first
        (see :meth:`abandon_dead_runs`), so every sync, scheduled or webhook run cleans up after a crash.
        """
        self.abandon_dead_runs()
        with self._write() as conn:
            run_id = conn.execute(runs.insert().values(
                kind=kind, destination=destination, status="running", started_at=self._clock(),
                counts="{}", owner=process_owner()).returning(runs.c.id)).scalar_one()
        log.debug("ledger: run %d started (%s %s)", run_id, kind, destination or "")
        return int(run_id)

    def finish_run(self, run_id: int, status: str, counts: Mapping[str, Any],
                   error: str | None = None) -> None:
        """Close a run with ``succeeded``, ``partial``, ``failed`` or ``refused`` (a guard) and its counts."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"finish_run: status must be one of {', '.join(FINISHED_STATUSES)}, not {status!r}")
        with self._write() as conn:
            updated = conn.execute(update(runs).where(runs.c.id == run_id).values(
                status=status, finished_at=self._clock(), counts=json.dumps(dict(counts), sort_keys=True),
                error=_clip(error))).rowcount
        if not updated:
            raise ValueError(f"finish_run: no run with id {run_id}")

    def abandon_dead_runs(self) -> list[int]:
        """Mark ``running`` runs whose process (on this host) no longer exists as ``abandoned``.

        A run records its owner ``host:pid``; a process killed mid-run (kill -9, OOM, power cut) never
        finishes it. Runs of other hosts cannot be checked from here and stay ``running`` until a
        process on their own host starts. Returns the ids marked. Runs from before schema version 4
        have no owner and are left alone.
        """
        with self._read() as conn:
            rows = conn.execute(select(runs.c.id, runs.c.owner).where(
                runs.c.status == "running", runs.c.owner.is_not(None))).all()
        gone = [(run_id, owner) for run_id, owner in rows if owner_process_gone(owner)]
        if not gone:
            return []
        found = f"{self._clock():%Y-%m-%d %H:%M:%S} UTC"
        with self._write() as conn:
            for run_id, owner in gone:  # finished_at stays empty: the run never finished
                conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "running").values(
                    status="abandoned",
                    error=f"abandoned: the process that ran it ({owner.rsplit(':', 1)[0]}) ended without "
                          f"finishing it (killed or crashed); found at {found}"))
        log.warning("ledger: marked %d runs of killed processes as abandoned: %s", len(gone),
                    ", ".join(str(r) for r, _ in gone))
        return [run_id for run_id, _ in gone]

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first: id, kind, destination, started_at, finished_at, duration_s, status, counts, error."""
        with self._read() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit)).mappings().all()
        return [self._run_dict(r) for r in rows]

    def last_run_counts(self, destination: str, key: str, statuses: Sequence[str] = ("succeeded", "partial"),
                        scan: int = 200) -> dict[str, Any] | None:
        """The counts of the newest run of ``destination`` with one of ``statuses`` whose counts hold ``key``
        (e.g. the customer count a full sync records), looking at its last ``scan`` runs; None when none."""
        with self._read() as conn:
            rows = conn.execute(select(runs.c.counts).where(
                runs.c.destination == destination, runs.c.status.in_(list(statuses))
            ).order_by(runs.c.id.desc()).limit(scan)).scalars().all()
        for raw in rows:
            counts = json.loads(raw or "{}")
            if key in counts:
                return counts
        return None

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        return None if row is None else self._run_dict(row)

    @staticmethod
    def _run_dict(r: Mapping[str, Any]) -> dict[str, Any]:
        started, finished = r["started_at"], r["finished_at"]
        return {
            "id": r["id"], "kind": r["kind"], "destination": r["destination"],
            "started_at": started, "finished_at": finished,
            "duration_s": (finished - started).total_seconds() if finished else None,
            "status": r["status"], "counts": json.loads(r["counts"]), "error": r["error"],
        }

    # -- per-item failures -------------------------------------------------------------

    def record_failures(self, destination: str, run_id: int | None, failures_: Iterable[ItemResult]) -> int:
        """Upsert failed items by (destination, key, op): attempts += 1, last error and time.

        Items with ``ok=True`` are ignored (see :meth:`record_results`). Returns rows recorded.
        """
        now = self._clock()
        rows = [{"destination": destination, "key": r.key, "op": r.op, "attempts": 1,
                 "last_error": _clip(r.error), "first_failed_at": now, "last_failed_at": now,
                 "run_id": run_id} for r in failures_ if not r.ok]
        if not rows:
            return 0
        t = failures
        ins = self._insert(t)
        stmt = ins.on_conflict_do_update(
            index_elements=[t.c.destination, t.c.key, t.c.op],
            set_={"attempts": t.c.attempts + 1, "last_error": ins.excluded.last_error,
                  "last_failed_at": ins.excluded.last_failed_at, "run_id": ins.excluded.run_id})
        try:
            with self._write() as conn:
                for chunk in _chunks(rows):
                    conn.execute(stmt, list(chunk))
        except IntegrityError:
            raise ValueError(f"record_failures: run {run_id} does not exist in the ledger") from None
        return len(rows)

    def resolve_failures(self, destination: str, keys_ops: Iterable[tuple[str, str]]) -> int:
        """Forget failures that have since succeeded; returns how many were pending."""
        pairs = list(dict.fromkeys(keys_ops))
        resolved = 0
        t = failures
        with self._read() as conn:  # usually nothing is pending: one cheap read instead of big OR deletes
            pending = set(conn.execute(select(t.c.key, t.c.op).where(t.c.destination == destination)).all())
        pairs = [p for p in pairs if p in pending]
        if not pairs:
            return 0
        with self._write() as conn:
            for chunk in _chunks(pairs, 500):
                cond = or_(*(and_(t.c.key == k, t.c.op == op) for k, op in chunk))
                resolved += conn.execute(delete(t).where(t.c.destination == destination, cond)).rowcount
        return resolved

    def record_results(self, destination: str, run_id: int | None, results: Iterable[ItemResult]) -> None:
        """Record failed items and resolve succeeded ones: usable as an apply ``on_results`` callback."""
        results = list(results)
        self.record_failures(destination, run_id, results)
        ok = [(r.key, r.op) for r in results if r.ok]
        if ok:
            self.resolve_failures(destination, ok)

    def pending_failures(self, destination: str | None = None) -> list[dict[str, Any]]:
        """Unresolved failures (oldest first): destination, key, op, attempts, last_error,
        first_failed_at, last_failed_at, run_id."""
        query = select(failures).order_by(failures.c.destination, failures.c.first_failed_at,
                                          failures.c.key, failures.c.op)
        if destination is not None:
            query = query.where(failures.c.destination == destination)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # -- source cursors ----------------------------------------------------------------

    def get_cursor(self, source: str, obj: str) -> str | None:
        with self._read() as conn:
            return conn.execute(select(cursors.c.value).where(
                cursors.c.source == source, cursors.c.obj == obj)).scalar()

    def set_cursor(self, source: str, obj: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"cursor value for {source}/{obj} must be a str, not {type(value).__name__}")
        ins = self._insert(cursors).values(source=source, obj=obj, value=value, updated_at=self._clock())
        with self._write() as conn:
            conn.execute(ins.on_conflict_do_update(
                index_elements=[cursors.c.source, cursors.c.obj],
                set_={"value": ins.excluded.value, "updated_at": ins.excluded.updated_at}))

    # -- locks -------------------------------------------------------------------------

    def acquire_lock(self, name: str, owner: str | None = None, ttl_seconds: float = 3600) -> str:
        """Take the named lock; returns the owner token. Raises :class:`LockBusyError` if another
        owner holds it and it has not expired. The same owner re-acquiring refreshes the TTL."""
        owner = owner or default_owner()
        now = self._clock()
        t = locks
        ins = self._insert(t).values(name=name, owner=owner, acquired_at=now,
                                     expires_at=now + timedelta(seconds=ttl_seconds))
        stmt = ins.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={"owner": ins.excluded.owner, "acquired_at": ins.excluded.acquired_at,
                  "expires_at": ins.excluded.expires_at},
            where=or_(t.c.expires_at <= now, t.c.owner == owner),
        ).returning(t.c.owner)
        with self._write() as conn:
            got = conn.execute(stmt).scalar()
            if got == owner:
                log.debug("ledger: lock %s taken by %s", name, owner)
                return owner
            holder = conn.execute(select(t.c.owner, t.c.acquired_at, t.c.expires_at).where(
                t.c.name == name)).one()
        err = LockBusyError(
            f"{name} is already running (held by {holder.owner} since "
            f"{holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC; the lock expires "
            f"{holder.expires_at:%Y-%m-%d %H:%M:%S} UTC)")
        err.lock_name, err.holder, err.since = name, holder.owner, holder.acquired_at  # type: ignore[attr-defined]
        raise err

    def lock_holder(self, name: str) -> str | None:
        """The owner of the named lock, or None when nobody holds it (expired locks included)."""
        with self._read() as conn:
            return conn.execute(select(locks.c.owner).where(locks.c.name == name)).scalar()

    def refresh_lock(self, name: str, owner: str, ttl_seconds: float = 3600) -> bool:
        """Extend a lock this owner holds (long runs); False if it is no longer ours."""
        with self._write() as conn:
            return bool(conn.execute(update(locks).where(locks.c.name == name, locks.c.owner == owner).values(
                expires_at=self._clock() + timedelta(seconds=ttl_seconds))).rowcount)

    def release_lock(self, name: str, owner: str) -> bool:
        """Release the lock if ``owner`` still holds it; returns whether it did."""
        with self._write() as conn:
            released = conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner)).rowcount
        if not released:
            log.warning("ledger: lock %s was no longer held by %s when released", name, owner)
        return bool(released)

    @contextmanager
    def lock(self, name: str, owner: str | None = None, ttl_seconds: float = 3600) -> Iterator[str]:
        """``with ledger.lock("sync:mailchimp"):`` -- released on exit, even on error."""
        token = self.acquire_lock(name, owner, ttl_seconds)
        try:
            yield token
        finally:
            self.release_lock(name, token)
