"""The webhook events an older rfmsync's intake queued under content keys, as the queue's dedupe must see them.

Before per-record keys (hook30) an intake queued each event under its record and a digest of its content
(``order:<id>:<32 hex>``, ``contact:<id>:<32 hex>``; the contact an order carried inside the order's event), and
a server of that version sharing the ledger during an upgrade still does. The latest event of a record's key
(``order:<id>``) does not see those: a state such an intake queued after it (a consent yes after this version's
no) would make the no delivered again a "repeat" of the no before it. :class:`ContentKeyed` tells the queue
(:meth:`sync.ledger.queue.EventQueue.enqueue_events`) the newest of them, so that no event older than it is taken
for the latest state of its record.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from sqlalchemy import and_, func, or_, select

from .schema import events

#: the content keys' shapes (LIKE), then the digest that ends one (a key ending in ':' and 32 other characters, a
#: customer id such as ``email:<address>``, is not one)
CONTENT_KEYS = tuple(f"{kind}:%:{'_' * 32}" for kind in ("order", "contact"))
_DIGEST = re.compile(r":[0-9a-f]{32}$")
#: the ids below the last one looked at that are looked at again (an older intake's row may commit after later ids)
LATE_COMMITS = 1000
_PAGE = 500


class ContentKeyed:
    """The newest content-keyed event of a ledger, looked at once (a ledger written before the upgrade: one scan of
    its keys), then only among the events queued since, and the :data:`LATE_COMMITS` ids before. Thread-safe."""

    def __init__(self) -> None:
        self._newest = self._looked = 0  # the newest one's id (0: none); the id up to which the events were looked at
        self._lock = threading.Lock()

    def newest(self, conn: Any) -> int:
        """The id of the newest event queued under a content key, 0 when there is none (read in ``conn``)."""
        t = events
        with self._lock:
            start = max(0, self._looked - LATE_COMMITS) if self._looked else 0
        top = int(conn.execute(select(func.max(t.c.id))).scalar() or 0)
        shaped = and_(t.c.id > start, t.c.id <= top, or_(*(t.c.dedupe_key.like(k) for k in CONTENT_KEYS)))
        found, below = 0, top + 1
        while not found:  # newest first, in pages, until one ends in a digest
            page = conn.execute(select(t.c.id, t.c.dedupe_key).where(shaped, t.c.id < below)
                                .order_by(t.c.id.desc()).limit(_PAGE)).all()
            found = next((i for i, key in page if _DIGEST.search(key)), 0)
            if len(page) < _PAGE:
                break
            below = page[-1][0]
        with self._lock:
            self._newest, self._looked = max(self._newest, found), max(self._looked, top)
            return self._newest


__all__ = ["CONTENT_KEYS", "LATE_COMMITS", "ContentKeyed"]
