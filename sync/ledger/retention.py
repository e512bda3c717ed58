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
is held for one batch's delete, never for the whole purge); the candidates are read outside it, :data:`SCAN` batches
of done events at a time by their ids (the ``(status, id)`` index), so done events that are all kept (a shop's
records' latest events) cost a few reads and open no write transaction.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any, Sequence

from sqlalchemy import and_, delete, func, or_, select

from .db import LedgerDB, chunks
from .schema import events

#: how many events one purge transaction deletes: those the read found, between the first and last one's ids (one
#: a later state superseded meanwhile in that range goes too)
BATCH = 1000
#: one read looks at this many batches' worth of done events for the ones that may go (most are kept: a record's
#: latest event), so a pass over events that are all kept costs a few reads and no write transaction
SCAN = 10


def _purgeable(cols: Any, cutoff: datetime, prefixes: Sequence[str]) -> Any:
    """Finished before ``cutoff``, under a key starting with one of ``prefixes`` (of a table or a subquery)."""
    return and_(cols.finished_at < cutoff, or_(*(cols.dedupe_key.startswith(p, autoescape=True) for p in prefixes)))


def purge_done(db: LedgerDB, prefixes: Sequence[str], older_than: timedelta, *, batch: int = BATCH,
               stop: threading.Event | None = None) -> int:
    """Delete the done events whose key starts with one of ``prefixes`` finished before now - ``older_than``,
    ``batch`` at a time (each batch its own transaction); returns how many. Stops early when ``stop`` is set (the
    server stopping): the rest go at the next purge."""
    cutoff = db.clock() - older_than
    t, after, purged = events, 0, 0
    while stop is None or not stop.is_set():
        def window(*cols: Any) -> Any:  # the next done events (the (status, id) index)
            return select(*cols).where(t.c.status == "done", t.c.id > after).order_by(t.c.id).limit(SCAN * batch
                                                                                                  ).subquery().c
        ids, rows = window(t.c.id), window(t.c.id, t.c.dedupe_key, t.c.finished_at)
        with db.read() as conn:  # the window's end and size (from the index alone), and which ones may go
            last, size = conn.execute(select(func.max(ids.id), func.count())).one()
            gone = conn.execute(select(rows.id).where(_purgeable(rows, cutoff, prefixes)).order_by(rows.id)
                                ).scalars().all() if size else []
        for chunk in chunks(gone, batch):  # conditions checked again inside: only what is still purgeable now
            if stop is not None and stop.is_set():
                return purged
            with db.write() as conn:
                purged += conn.execute(delete(t).where(t.c.id >= chunk[0], t.c.id <= chunk[-1],
                                                       t.c.status == "done", _purgeable(t.c, cutoff, prefixes))
                                       ).rowcount
        if size < SCAN * batch:
            break
        after = last
    return purged


__all__ = ["BATCH", "purge_done"]
