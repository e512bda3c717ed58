"""How long the webhook queue keeps finished events (:meth:`sync.ledger.queue.EventQueue.purge_events`).

The queue's dedupe compares a delivery with the *latest* event of its record's key (``order:<id>``), however old
(a sender re-saving a record that did not change sends its state again a year later), and an older intake's
content-keyed events (:mod:`sync.ledger.content_keys`) with the latest one of their record. Neither ever reads an
event a later state of its record took the key from (:data:`~sync.ledger.queue.SUPERSEDED`): those are history
only, and they are what grows with the deliveries (one a change of a record), so they are purged.

A delivery that names records without their state (Bitrix24's ONCRM* events, amoCRM's leads, Shopify's pull
topics) queues one incremental pull under a key of its own (:data:`~sync.ledger.queue.PULL`: Bitrix24's handler,
time and id, else the body's digest), so each such delivery is a new key and none is ever superseded: done, they
are purged too. Their key only stops a sender's retry queuing the same pull twice while it is kept; a replay of
the delivery after the purge queues one more pull, which reads the source's *current* state from its saved cursor
(the same as the next delivery's pull would): nothing is applied twice nor undone (Bitrix24 and Shopify refuse a
stale delivery before the queue anyway).

A record's latest event, an older intake's event, an event still queued or processing, and a failed one
(:meth:`~sync.ledger.queue.EventQueue.requeue_failed_events` replays it) are never purged here.

Purged in batches of :data:`BATCH` events, each its own short write transaction (SQLite: the intake's write lock
is held for one batch's delete, never for the whole purge); the candidates are read outside it by id ranges of the
done events (the ``(status, id)`` index).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Sequence

from sqlalchemy import and_, delete, or_, select

from .db import LedgerDB
from .schema import events

#: the most events one purge transaction deletes (and the done events one read looks at)
BATCH = 1000


def purge_done(db: LedgerDB, prefixes: Sequence[str], older_than: timedelta, *, batch: int = BATCH,
               stop: threading.Event | None = None) -> int:
    """Delete the done events whose key starts with one of ``prefixes`` finished before now - ``older_than``,
    ``batch`` at a time (each batch its own transaction); returns how many. Stops early when ``stop`` is set (the
    server stopping): the rest go at the next purge."""
    cutoff = db.clock() - older_than
    t, after, purged = events, 0, 0
    old = and_(t.c.status == "done", t.c.finished_at < cutoff,
               or_(*(t.c.dedupe_key.startswith(p, autoescape=True) for p in prefixes)))
    while stop is None or not stop.is_set():
        with db.read() as conn:  # the next window of done events, by the (status, id) index
            ids = conn.execute(select(t.c.id).where(t.c.status == "done", t.c.id > after).order_by(t.c.id)
                               .limit(batch)).scalars().all()
        if not ids:
            break
        with db.write() as conn:  # conditions checked again: only what is still purgeable now
            purged += conn.execute(delete(t).where(t.c.id > after, t.c.id <= ids[-1], old)).rowcount
        if len(ids) < batch:
            break
        after = ids[-1]
    return purged


__all__ = ["BATCH", "purge_done"]
