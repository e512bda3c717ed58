"""The contacts rfmsync itself created ``subscribed`` in a destination.

An apply records a contact when its create succeeded with the status ``subscribed`` (the source said yes
when he was created: :func:`sync.planning.consent.status_for_new`). rfmsync never changes an existing contact's
status, so when the source's consent is ``no`` later he stays subscribed in the ESP: the plan names those
contacts (``withdrawn_subscribed``, :func:`sync.planning.withdrawn.withdrawn_subscribed`), and only this record
tells them from the contacts who subscribed in the ESP themselves (whose status is none of rfmsync's business).
Contacts created before schema 15 are not recorded. A destination forgotten forgets its records.

Where it is kept (schema 16): on the contact's own ``pushed_state`` row (``subscribed``: 1), written by the upsert
that saves his state anyway (a first sync records a million creates: a second table's insert apiece doubled the
outcome writer's CPU); and in the ``subscribed_by_us`` table for a record without a row of his (written before
schema 16, by :meth:`SubscribedByUs.record_subscribed`, his row forgotten since, or taken over from another
destination). A record is either; the table's row of the empty key (:data:`MARK`, never a contact's: the ledger
refuses an empty key) says that the destination's rows may hold some, so :meth:`~SubscribedByUs.has_subscribed` stays
one keyed look-up and a destination that never subscribed anyone reads no rows.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from datetime import datetime
from typing import Collection, Iterable, Sequence

from sqlalchemy import bindparam, delete, select, text, union
from sqlalchemy.engine import Connection

from .coltypes import UTCDateTime
from .db import LedgerDB, chunks
from .schema import pushed_state, subscribed_by_us
from .state_rows import group_cache

#: a ``subscribed_among`` asked for more contacts than this reads the destination's rows once instead of by key
BY_KEY_LIMIT = 5000
#: the keys a ``record_subscribed`` statement inserts
CHUNK = 20_000
#: the ``subscribed_by_us`` row of this key says the destination's ``pushed_state`` rows may hold records
MARK = ""
_INSERT_SQLITE = text("INSERT OR IGNORE INTO subscribed_by_us (destination, key, subscribed_at, run_id) "
                      "SELECT :d, value, :t, :r FROM json_each(:keys)")
_INSERT_PG = text("INSERT INTO subscribed_by_us (destination, key, subscribed_at, run_id) "
                  "SELECT :d, k, :t, :r FROM unnest(CAST(:keys AS text[])) AS u(k) ON CONFLICT DO NOTHING")


#: what an apply's write group records (created subscribed) and forgets (created again otherwise) there
Subscribed = tuple[Collection[str], Collection[str]]


def write_subscribed(conn: Connection, destination: str, run_id: int | None, now: datetime,
                     record: Iterable[str] = (), forget: Iterable[str] = (), marked: bool = False) -> int:
    """In ``conn``'s transaction (the outcome writer's state save: :meth:`~sync.ledger.state.PushedStates.save_rows`,
    so a process killed between the two cannot leave the record and the pushed state disagreeing): ``record``
    (keys whose row this save does not write) as created ``subscribed`` by rfmsync in the table (one already
    recorded keeps its first time; one statement per :data:`CHUNK` keys, in one parameter: a JSON array for SQLite,
    an array for PostgreSQL), the :data:`MARK` with ``marked`` (this save wrote records on rows), then ``forget``
    deleted from both. The keys recorded in the table."""
    # in key order (a group's keys land on neighbouring pages of the primary key's B-tree, as the state's rows do)
    unique = sorted(set(record) | ({MARK} if marked else set()))
    if unique:
        sqlite = conn.dialect.name == "sqlite"
        stmt = (_INSERT_SQLITE if sqlite else _INSERT_PG).bindparams(bindparam("t", type_=UTCDateTime()))
        # (SQLite: with the state's larger page cache, which save_rows_sqlite gave back before these rows)
        cursor = conn.connection.driver_connection.cursor() if sqlite else None
        with group_cache(cursor, len(unique)) if sqlite else nullcontext():
            for chunk in chunks(unique, CHUNK):
                conn.execute(stmt, {"d": destination, "t": now, "r": run_id,
                                    "keys": json.dumps(list(chunk)) if sqlite else list(chunk)})
    t, p = subscribed_by_us, pushed_state
    for chunk in chunks(sorted(set(forget) - {MARK}), 500):
        conn.execute(delete(t).where(t.c.destination == destination, t.c.key.in_(chunk)))
        conn.execute(p.update().where(p.c.destination == destination, p.c.key.in_(chunk),
                                      p.c.subscribed.is_not(None)).values(subscribed=None))
    return len(unique) - (1 if marked and MARK not in set(record) else 0)


def rows_to_table(conn: Connection, destination: str, keys: Sequence[str] | None = None) -> None:
    """In ``conn``'s transaction: the records on ``destination``'s ``pushed_state`` rows (of ``keys``; None: all)
    copied into the ``subscribed_by_us`` table (one there already stays), before those rows go (a contact's state
    forgotten) or the records go to another destination (a takeover, an heir): the table's life is its own."""
    p, t = pushed_state, subscribed_by_us
    held = select(t.c.key).where(t.c.destination == destination, t.c.key == p.c.key)
    for chunk in ([None] if keys is None else chunks(sorted(set(keys)), 500)):
        # (a row's record says no time: his row's last push, the latest it can be)
        rows = select(p.c.destination, p.c.key, p.c.pushed_at, p.c.run_id).where(
            p.c.destination == destination, p.c.subscribed.is_not(None), ~held.exists(),
            *(() if chunk is None else (p.c.key.in_(chunk),)))
        conn.execute(t.insert().from_select(["destination", "key", "subscribed_at", "run_id"], rows))


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
        t, p, gone = subscribed_by_us, pushed_state, 0
        with self._db.write() as conn:
            for chunk in chunks(sorted(set(keys) - {MARK}), 500):
                found = set(conn.execute(select(t.c.key).where(t.c.destination == destination,
                                                               t.c.key.in_(chunk))).scalars())
                found.update(conn.execute(select(p.c.key).where(p.c.destination == destination, p.c.key.in_(chunk),
                                                                p.c.subscribed.is_not(None))).scalars())
                write_subscribed(conn, destination, None, self._db.clock(), forget=chunk)
                gone += len(found)
        return gone

    def has_subscribed(self, destination: str, exact: bool = False) -> bool:
        """Whether rfmsync recorded any contact created ``subscribed`` in ``destination``: one keyed look-up of the
        table. Its :data:`MARK` alone says yes (the plans' and the outcome writer's question: a yes for nobody costs
        them a keyed read), or with ``exact`` (who inherits the records: :func:`sync.takeover.heir_of`) a look for a
        row holding a record (a mark whose records were all forgotten since reads the destination's rows)."""
        t, p = subscribed_by_us, pushed_state
        with self._db.read() as conn:
            held = set(conn.execute(select(t.c.key).where(t.c.destination == destination).limit(2)).scalars())
            if held - {MARK}:
                return True
            # the mark: the rows may hold records (a first one is found at once; a mark whose records were all
            # forgotten since reads the destination's rows, once per call)
            return MARK in held and (not exact or conn.execute(select(p.c.key).where(
                p.c.destination == destination, p.c.subscribed.is_not(None)).limit(1)).first() is not None)

    def subscribed_among(self, destination: str, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` rfmsync created ``subscribed`` in ``destination``: read by key, or past
        :data:`BY_KEY_LIMIT` keys the destination's records once and filtered."""
        wanted = list(set(keys) - {MARK})
        if not wanted:
            return set()
        if len(wanted) > BY_KEY_LIMIT:
            return set(self.subscribed_keys(destination)).intersection(wanted)
        t, p = subscribed_by_us, pushed_state
        with self._db.read() as conn:
            return {k for chunk in chunks(wanted, 500) for k in conn.execute(union(
                select(t.c.key).where(t.c.destination == destination, t.c.key.in_(chunk)),
                select(p.c.key).where(p.c.destination == destination, p.c.key.in_(chunk),
                                      p.c.subscribed.is_not(None)))).scalars()}

    def subscribed_keys(self, destination: str) -> list[str]:
        """Every key rfmsync created ``subscribed`` in ``destination`` (in no order), fetched at once: the
        table's, and the rows' when the table holds the :data:`MARK`."""
        t, p = subscribed_by_us, pushed_state
        with self._db.read() as conn:
            result = conn.execute(select(t.c.key).where(t.c.destination == destination))
            # the driver's rows (text keys, no conversion): SQLAlchemy's row objects cost most of the read
            keys = {k for (k,) in result.cursor.fetchall()}
            if MARK in keys:
                keys.discard(MARK)
                result = conn.execute(select(p.c.key).where(p.c.destination == destination,
                                                            p.c.subscribed.is_not(None)))
                keys.update(k for (k,) in result.cursor.fetchall())
            return list(keys)


__all__ = ["MARK", "Subscribed", "SubscribedByUs", "rows_to_table", "write_subscribed"]
