"""The webhook events an older rfmsync's intake queued under content keys, as the queue's dedupe must see them.

Before per-record keys (hook30) an intake queued each event under its record and a digest of its content
(``order:<id>:<32 hex>``, ``contact:<id>:<32 hex>``; the contact an order carried inside the order's event), and
a server of that version sharing the ledger during an upgrade still does. The latest event of a record's key
(``order:<id>``) does not see those: a state such an intake queued after it (a consent yes after this version's
no) would make the no delivered again a "repeat" of the no before it. :func:`queued_after` tells the queue
(:meth:`sync.ledger.queue.EventQueue.enqueue_events`) whether one was, for the records a delivery repeats the
latest event of.

An older intake's event is told by its key: the record's key, ``:`` and the first 32 hex digits of the SHA-256 of
its payload (that version's ``_digest``). A key of this version that only looks like one (a customer id
``guest:<md5>``, an order id ``shop:<uuid hex>``) is not one: its suffix is not its payload's digest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import bindparam, select, text

from .migrations import OLDER_ORDER_KEYS_SQL
from .schema import EVENT_STATUSES, events

#: PostgreSQL: the events' keys compared byte by byte (a key range under a linguistic collation is not the keys
#: starting with a prefix), by the index migration 14 made for it
KEY_COLLATION = "C"
#: the ids before a contact's latest event among which an older intake's order event carrying it that finished
#: after it is looked for (one still waiting is found wherever it is)
FINISHED_BEFORE = 2000
_HEX = frozenset("0123456789abcdef")


def digest(payload: str) -> str:
    """The digest an older intake ended an event's key with (``git show c954c4e^:sync/serve/webhooks.py``)."""
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _older(key: str, payload: str) -> bool:
    """Whether an event was queued by an older intake: its key ends in ``:`` and its payload's digest."""
    tail = key[-33:]
    return len(key) > 33 and tail[0] == ":" and set(tail[1:]) <= _HEX and tail[1:] == digest(payload)


def _processed_after(older: Any, latest: Any) -> bool:
    """Whether a worker processes (or processed) an older intake's event after this intake's latest of its record
    (rows with ``id``, ``status``, ``finished_at``): claimed oldest first, so one queued after it, or one before it
    still waiting while the latest was claimed (PostgreSQL: an id taken before, committed after), or one finished
    after it."""
    if older.id > latest.id:
        return True
    if older.status in ("queued", "processing"):
        return latest.status != "queued"
    return (latest.status in ("done", "failed") and older.finished_at is not None
            and latest.finished_at is not None and older.finished_at > latest.finished_at)


_ROW = (events.c.id, events.c.source, events.c.dedupe_key, events.c.payload, events.c.status, events.c.finished_at)


def _own(keys: Any) -> Any:
    return select(*_ROW).where(events.c.source == bindparam("source"), keys >= bindparam("low"),
                               keys < bindparam("high"))


# built once (SQLAlchemy keys its statement cache by the statement: building one per call cost milliseconds)
#: a record's events by a key range (PostgreSQL: byte order, schema 14's index), the older intake's order events
#: after an id, and those still waiting (schema 14's partial index)
_OWN = {"postgresql": _own(events.c.dedupe_key.collate(KEY_COLLATION)), "": _own(events.c.dedupe_key)}
_OLDER_ORDERS = select(*_ROW).where(text(OLDER_ORDER_KEYS_SQL))
_OLDER_AFTER = _OLDER_ORDERS.where(events.c.status.in_(EVENT_STATUSES), events.c.id > bindparam("low"))
_OLDER_WAITING = _OLDER_ORDERS.where(events.c.status.in_(("queued", "processing")))


def queued_after(conn: Any, repeats: list[tuple[str, str, int, str]]) -> set[tuple[str, str]]:
    """Of these (source, key, id of its latest event, payload repeating it), the (source, key)s whose record
    (``order:<id>``, ``contact:<id>``) has an event of an older intake with another state that a worker processes
    after that latest one (:func:`_processed_after`), read in ``conn``. Its own events: the keys starting with
    ``key + ':'`` (an index range each); a contact's, also an older intake's order events that carried it
    (:func:`_carried_by_orders`, one read a group)."""
    own_query, later = _OWN.get(conn.dialect.name, _OWN[""]), set()
    rows = {}  # the latest events' rows, read when an older intake's event of their record is found
    for source, key, latest, payload in repeats:
        own = [r for r in conn.execute(own_query, {"source": source, "low": key + ":", "high": key + ";"})
               if r.payload != payload and _older(r.dedupe_key, r.payload)]
        if own and any(_processed_after(r, _row(conn, rows, latest)) for r in own):
            later.add((source, key))
    contacts = [(s, k, latest) for s, k, latest, _ in repeats if k.startswith("contact:") and (s, k) not in later]
    if contacts:
        later |= _carried_by_orders(conn, contacts, rows)
    return later


def _row(conn: Any, rows: dict[int, Any], event_id: int) -> Any:
    if event_id not in rows:
        rows[event_id] = conn.execute(select(*_ROW).where(events.c.id == event_id)).one()
    return rows[event_id]


def _carried_by_orders(conn: Any, contacts: list[tuple[str, str, int]], rows: dict[int, Any]
                       ) -> set[tuple[str, str]]:
    """The contacts an older intake's order event carried that a worker processes after their latest one: of its
    order events (migration 14's partial index), the ones after a contact's latest, the ones still waiting, and
    the ones of the :data:`FINISHED_BEFORE` ids before it (when they finished after it)."""
    low = min(latest for _, _, latest in contacts) - FINISHED_BEFORE
    found = {r.id: r for r in [*conn.execute(_OLDER_AFTER, {"low": low}), *conn.execute(_OLDER_WAITING)]}
    carried: dict[tuple[str, str], list[Any]] = {}  # (source, customer id) → an older intake's order events
    for r in found.values():
        if _older(r.dedupe_key, r.payload):
            for customer in _carried(r.payload):
                carried.setdefault((r.source, customer), []).append(r)
    later = set()
    for s, k, latest in contacts:
        if any(_processed_after(r, _row(conn, rows, latest)) for r in carried.get((s, k[len("contact:"):]), ())
               if r.id > latest - FINISHED_BEFORE or r.status in ("queued", "processing")):
            later.add((s, k))
    return later


def _carried(payload: str) -> list[str]:
    """The customer ids of the contacts an older intake's order event carried (its codec's ``contacts``, read
    loosely: an older version's fields may differ from this one's)."""
    try:
        contacts = json.loads(payload).get("contacts") or []
        return [str(c["customer_id"]) for c in contacts if isinstance(c, dict) and "customer_id" in c]
    except (ValueError, AttributeError, TypeError):
        return []


__all__ = ["FINISHED_BEFORE", "KEY_COLLATION", "digest", "queued_after"]
