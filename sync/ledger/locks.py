"""Named locks with a TTL (a destination's sync, the scheduler): one holder at a time, across processes
and hosts sharing the ledger. An expired lock can be taken over; the holder refreshes it on long runs."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator, Protocol

from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import Connection

from ..errors import LedgerError, LockBusyError, LockLostError
from .db import LedgerDB
from .owners import default_owner
from .schema import locks

log = logging.getLogger(__name__)

#: a release that met a transient ledger failure (the connection lost mid-statement) is tried once more after this
#: long: left in place, the lock would keep every run of its destination out for its TTL (an hour), also the next
#: resyncs of a ``serve`` that is still alive (its own live process is never taken over)
RELEASE_RETRY_SECONDS = 0.5


def apply_lock(destination: str) -> str:
    """The name of the lock every apply of ``destination`` holds (``sync:<destination>``)."""
    return f"sync:{destination}"


class Locks(Protocol):
    """Takes and releases a named lock (refreshing it on long runs)."""

    def acquire_lock(self, name: str, owner: str | None = None, ttl_seconds: float = 3600) -> str: ...

    def refresh_lock(self, name: str, owner: str, ttl_seconds: float = 3600) -> bool: ...

    def release_lock(self, name: str, owner: str) -> bool: ...


class LockTable:
    """The ``locks`` table."""

    def __init__(self, db: LedgerDB, sleep: Callable[[float], None] = time.sleep) -> None:
        self._db = db
        self.sleep = sleep  #: the wait before a release is tried again (tests record it instead of waiting)

    def acquire_lock(self, name: str, owner: str | None = None, ttl_seconds: float = 3600) -> str:
        """Take the named lock; returns the owner token. Raises :class:`LockBusyError` if another
        owner holds it and it has not expired. The same owner re-acquiring refreshes the TTL."""
        owner = owner or default_owner()
        now = self._db.clock()
        t = locks
        ins = self._db.insert(t).values(name=name, owner=owner, acquired_at=now,
                                        expires_at=now + timedelta(seconds=ttl_seconds))
        stmt = ins.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={"owner": ins.excluded.owner, "acquired_at": ins.excluded.acquired_at,
                  "expires_at": ins.excluded.expires_at},
            where=or_(t.c.expires_at <= now, t.c.owner == owner),
        ).returning(t.c.owner)
        with self._db.write() as conn:
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
        with self._db.read() as conn:
            return conn.execute(select(locks.c.owner).where(locks.c.name == name)).scalar()

    def refresh_lock(self, name: str, owner: str, ttl_seconds: float = 3600) -> bool:
        """Extend a lock this owner holds (long runs); False if it is no longer ours."""
        with self._db.write() as conn:
            return bool(conn.execute(update(locks).where(locks.c.name == name, locks.c.owner == owner).values(
                expires_at=self._db.clock() + timedelta(seconds=ttl_seconds))).rowcount)

    def release_lock(self, name: str, owner: str) -> bool:
        """Release the lock if ``owner`` still holds it; returns whether it did."""
        stmt = delete(locks).where(locks.c.name == name, locks.c.owner == owner)
        try:
            with self._db.write() as conn:
                released = conn.execute(stmt).rowcount
        except LedgerError as exc:
            if not exc.transient:
                raise
            log.warning("ledger: lock %s could not be released (%s); trying again", name, exc)
            self.sleep(RELEASE_RETRY_SECONDS)
            with self._db.write() as conn:
                released = conn.execute(stmt).rowcount
            if not released:  # the first DELETE may have committed, its answer lost with the connection
                log.info("ledger: lock %s is not held: its first release went through, or %s no longer held it",
                         name, owner)
                return False
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


def check_lock_held(conn: Connection, name: str, owner: str) -> None:
    """Raise :class:`LockLostError` unless ``owner`` holds the lock ``name`` (PostgreSQL: its row stays locked
    until the transaction ends, so it cannot be taken over before the writes commit)."""
    query = select(locks.c.owner).where(locks.c.name == name)
    holder = conn.execute(query.with_for_update() if conn.dialect.name == "postgresql" else query).scalar()
    if holder != owner:
        raise LockLostError(f"{name}: the lock was taken by another holder while this run held it; stopped "
                            "before the ledger was written, the next run plans the rest")
