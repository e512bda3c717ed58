"""The contacts rfmsync itself created ``subscribed`` in a destination (the ``subscribed_by_us`` table).

An apply records a contact here when its create succeeded with the status ``subscribed`` (the source said yes
when he was created: :func:`sync.planning.consent.status_for_new`). rfmsync never changes an existing contact's
status, so when the source's consent is ``no`` later he stays subscribed in the ESP: the plan names those
contacts (``withdrawn_subscribed``, :func:`sync.planning.withdrawn.withdrawn_subscribed`), and only this table
tells them from the contacts who subscribed in the ESP themselves (whose status is none of rfmsync's business).
Contacts created before this table existed (schema 15) are not in it. A destination forgotten forgets its rows.
"""

from __future__ import annotations

from typing import Iterable

import json

from sqlalchemy import bindparam, delete, select, text

from .coltypes import UTCDateTime
from .db import LedgerDB, chunks
from .schema import subscribed_by_us

#: a ``subscribed_among`` asked for more contacts than this reads the destination's rows once instead of by key
BY_KEY_LIMIT = 5000
#: the keys a ``record_subscribed`` statement inserts
CHUNK = 20_000
_INSERT_SQLITE = text("INSERT OR IGNORE INTO subscribed_by_us (destination, key, subscribed_at, run_id) "
                      "SELECT :d, value, :t, :r FROM json_each(:keys)")
_INSERT_PG = text("INSERT INTO subscribed_by_us (destination, key, subscribed_at, run_id) "
                  "SELECT :d, k, :t, :r FROM unnest(CAST(:keys AS text[])) AS u(k) ON CONFLICT DO NOTHING")


class SubscribedByUs:
    """The ``subscribed_by_us`` table."""

    def __init__(self, db: LedgerDB) -> None:
        self._db = db

    def record_subscribed(self, destination: str, run_id: int | None, keys: Iterable[str]) -> int:
        """Record ``keys`` as created ``subscribed`` by rfmsync in ``destination`` (one already recorded keeps its
        first time). Returns the keys given. One statement per :data:`CHUNK` keys, the keys in one parameter (a
        JSON array for SQLite, an array for PostgreSQL): a first sync records a create per contact, and a row
        bound apiece cost the outcome writer three times its own CPU."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return 0
        sqlite = self._db.dialect == "sqlite"
        stmt = (_INSERT_SQLITE if sqlite else _INSERT_PG).bindparams(bindparam("t", type_=UTCDateTime()))
        with self._db.write() as conn:
            for chunk in chunks(unique, CHUNK):
                conn.execute(stmt, {"d": destination, "t": self._db.clock(), "r": run_id,
                                    "keys": json.dumps(list(chunk)) if sqlite else list(chunk)})
        return len(unique)

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


__all__ = ["SubscribedByUs"]
