"""The contacts rfmsync itself created ``subscribed`` in a destination (the ``subscribed_by_us`` table).

An apply records a contact here when its create succeeded with the status ``subscribed`` (the source said yes
when he was created: :func:`sync.planning.consent.status_for_new`). rfmsync never changes an existing contact's
status, so when the source's consent is ``no`` later he stays subscribed in the ESP: the plan names those
contacts (``withdrawn_subscribed``, :func:`sync.planning.withdrawn.withdrawn_subscribed`), and only this table
tells them from the contacts who subscribed in the ESP themselves (whose status is none of rfmsync's business).
Contacts created before this table existed (schema 15) are not in it. A destination forgotten forgets its rows.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from datetime import datetime
from typing import Iterable, Sequence

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.engine import Connection

from .coltypes import UTCDateTime
from .db import LedgerDB, chunks
from .schema import subscribed_by_us
from .state_rows import group_cache

#: a ``subscribed_among`` asked for more contacts than this reads the destination's rows once instead of by key
BY_KEY_LIMIT = 5000
#: the keys a ``record_subscribed`` statement inserts
CHUNK = 20_000
_INSERT_SQLITE = text("INSERT OR IGNORE INTO subscribed_by_us (destination, key, subscribed_at, run_id) "
                      "SELECT :d, value, :t, :r FROM json_each(:keys)")
_INSERT_PG = text("INSERT INTO subscribed_by_us (destination, key, subscribed_at, run_id) "
                  "SELECT :d, k, :t, :r FROM unnest(CAST(:keys AS text[])) AS u(k) ON CONFLICT DO NOTHING")


#: what an apply's write group records (created subscribed) and forgets (created again otherwise) there
Subscribed = tuple[Sequence[str], Sequence[str]]


def write_subscribed(conn: Connection, destination: str, run_id: int | None, now: datetime,
                     record: Iterable[str] = (), forget: Iterable[str] = ()) -> int:
    """In ``conn``'s transaction (the outcome writer's state save: :meth:`~sync.ledger.state.PushedStates.save_rows`,
    so a process killed between the two cannot leave the record and the pushed state disagreeing): ``record`` as
    created ``subscribed`` by rfmsync (one already recorded keeps its first time; one statement per :data:`CHUNK`
    keys, in one parameter: a JSON array for SQLite, an array for PostgreSQL), then ``forget`` deleted. The keys
    recorded."""
    # in key order (a group's keys land on neighbouring pages of the primary key's B-tree, as the state's rows do)
    unique = sorted(set(record))
    if unique:
        sqlite = conn.dialect.name == "sqlite"
        stmt = (_INSERT_SQLITE if sqlite else _INSERT_PG).bindparams(bindparam("t", type_=UTCDateTime()))
        # (SQLite: with the state's larger page cache, which save_rows_sqlite gave back before these rows)
        cursor = conn.connection.driver_connection.cursor() if sqlite else None
        with group_cache(cursor, len(unique)) if sqlite else nullcontext():
            for chunk in chunks(unique, CHUNK):
                conn.execute(stmt, {"d": destination, "t": now, "r": run_id,
                                    "keys": json.dumps(list(chunk)) if sqlite else list(chunk)})
    t = subscribed_by_us
    for chunk in chunks(sorted(set(forget)), 500):
        conn.execute(delete(t).where(t.c.destination == destination, t.c.key.in_(chunk)))
    return len(unique)


class SubscribedByUs:
    """The ``subscribed_by_us`` table."""

    def __init__(self, db: LedgerDB) -> None:
        self._db = db

    def record_subscribed(self, destination: str, run_id: int | None, keys: Iterable[str]) -> int:
        """Record ``keys`` as created ``subscribed`` by rfmsync in ``destination`` (:func:`write_subscribed`, in a
        transaction of its own). Returns the keys given: a first sync records a create per contact, and a row
        bound apiece cost the outcome writer three times its own CPU."""
        with self._db.write() as conn:
            return write_subscribed(conn, destination, run_id, self._db.clock(), keys)

    def forget_subscribed(self, destination: str, keys: Iterable[str]) -> int:
        """Delete ``keys`` of ``destination`` (created again under another status). Returns the rows deleted."""
        t, gone = subscribed_by_us, 0
        with self._db.write() as conn:
            for chunk in chunks(sorted(set(keys)), 500):
                gone += conn.execute(delete(t).where(t.c.destination == destination, t.c.key.in_(chunk))).rowcount
        return gone

    def has_subscribed(self, destination: str) -> bool:
        """Whether rfmsync recorded any contact created ``subscribed`` in ``destination`` (one indexed look-up)."""
        t = subscribed_by_us
        with self._db.read() as conn:
            return conn.execute(select(t.c.key).where(t.c.destination == destination).limit(1)).first() is not None

    def subscribed_among(self, destination: str, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` rfmsync created ``subscribed`` in ``destination``: read by key, or past
        :data:`BY_KEY_LIMIT` keys the destination's rows once and filtered."""
        wanted = list(set(keys))
        if not wanted:
            return set()
        if len(wanted) > BY_KEY_LIMIT:
            return set(self.subscribed_keys(destination)).intersection(wanted)
        t = subscribed_by_us
        query = select(t.c.key).where(t.c.destination == destination)
        with self._db.read() as conn:
            return {k for chunk in chunks(wanted, 500) for k in conn.execute(query.where(t.c.key.in_(chunk))).scalars()}

    def subscribed_keys(self, destination: str) -> list[str]:
        """Every key rfmsync created ``subscribed`` in ``destination`` (in no order), fetched at once."""
        t = subscribed_by_us
        with self._db.read() as conn:
            result = conn.execute(select(t.c.key).where(t.c.destination == destination))
            # the driver's rows (text keys, no conversion): SQLAlchemy's row objects cost most of the read
            return [k for (k,) in result.cursor.fetchall()]


__all__ = ["Subscribed", "SubscribedByUs", "write_subscribed"]
