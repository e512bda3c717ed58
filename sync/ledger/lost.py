"""The lost-tag memory (the ``lost_tags`` table): the holders a managed tag or list was taken from when the ESP
lost it (deleted there by hand, created again empty: :func:`sync.engine.lost_in_destination`), remembered until it
is given back, so the plan guards count adding it back as a change (:func:`sync.guards.plan_stats`).

:class:`LostTagMemory` is a part of :class:`sync.ledger.state.PushedStates` (its ``_db``, ``_written`` and
``_bump_revision``); :func:`given_back` runs in ``save_states``' transaction.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Callable, Container, Iterable, Mapping

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection

from .db import chunks
from .locks import check_lock_held
from .schema import lost_tags, pushed_state
from .state_rows import dump_fields

if TYPE_CHECKING:
    from .db import LedgerDB
    from .statecache import WrittenRevisions

log = logging.getLogger("sync.ledger.state")

_encode = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


def spellings(name: str) -> set[str]:
    """The JSON texts of ``name`` as the ledger may hold it: UTF-8, or escaped (tags always; fields of rows
    written before 2026-12)."""
    return {json.dumps(name, ensure_ascii=False), json.dumps(name)}


class LostTagMemory:
    """The lost-tag methods of :class:`~sync.ledger.state.PushedStates`."""

    _db: "LedgerDB"
    _written: "WrittenRevisions"
    _bump_revision: Callable[[Connection, str], int]  # the destination's revision moved on, in the transaction

    def lost_tags(self, destination: str, keys: Iterable[str] | None = None) -> dict[str, frozenset[str]]:
        """The managed tags and lists the ESP lost that the ledger forgot for these contacts of ``destination``
        (:meth:`forget_lost`) and that were not given back to them since, by key (``keys``: these contacts only,
        read by key; none: all of them). The plan guards count adding one back as a change
        (:func:`sync.guards.plan_stats`)."""
        t = lost_tags
        out: dict[str, set[str]] = {}
        with self._db.read() as conn:
            if keys is None:
                found = conn.execute(select(t.c.key, t.c.tag).where(t.c.destination == destination)).all()
            else:
                found = _lost_of(conn, destination, sorted(set(keys)))
        for key, tag in found:
            out.setdefault(key, set()).add(tag)
        return {key: frozenset(tags) for key, tags in out.items()}

    def forget_lost(self, destination: str, fields: Iterable[str], tags: Iterable[str],
                    lock: tuple[str, str] | None = None, leaving: Container[tuple[str, str]] = ()
                    ) -> dict[tuple[str, str], int]:
        """Take these field keys out of the pushed fields, and these tags out of the pushed tag sets, of every
        ``destination`` contact holding them (the ESP lost them: deleted there by hand, created again empty), in
        one transaction that bumps the revision: the next plan then sends them again to the contacts still meant
        to have them, as to contacts never given them. Keys and tags match exactly (case and all); a row's
        customer, ``in_destination``, ``pushed_at`` and run stay. Returns how many contacts held each,
        by ``("field", key)`` / ``("tag", name)`` (none held: left out). ``lock``: ``(name, owner)`` of the lock
        the caller holds: the transaction writes nothing and raises :class:`LockLostError` when another owner
        holds it now. The holders of a tag are remembered (:meth:`lost_tags`) until it is given back, but for
        ``leaving``, the ``(key, tag)`` the caller's plan takes from them anyway."""
        fields, tags = list(dict.fromkeys(fields)), list(dict.fromkeys(tags))
        if not fields and not tags:
            return {}
        t = pushed_state
        held: dict[tuple[str, str], int] = {}
        with self._db.write() as conn:  # read and rewritten in one transaction (the destination's lock is held)
            if lock is not None:
                check_lock_held(conn, *lock)
            find = func.strpos if conn.dialect.name == "postgresql" else func.instr
            # a cheap text match finds the candidates (the JSON of the name, as UTF-8 or escaped); the decoded
            # rows decide
            near = [find(t.c.fields, text + ":") > 0 for name in fields for text in spellings(name)] + \
                [find(t.c.tags, text) > 0 for name in tags for text in spellings(name)]
            rows = conn.execute(select(t.c.key, t.c.tags, t.c.fields).where(t.c.destination == destination,
                                                                          or_(*near))).all()
            out: list[tuple[str, str, str]] = []  # the new tags and fields text of a key
            kept_tags: dict[str, tuple[str, list[str]]] = {}  # few distinct tag sets: each decoded once
            lost_fields, lost_names = set(fields), set(tags)
            for key, tag_text, field_text in rows:
                found = kept_tags.get(tag_text)
                if found is None:
                    tag_set = _decode(tag_text)
                    gone = [x for x in tag_set if x in lost_names]
                    found = kept_tags[tag_text] = (_encode(sorted(x for x in tag_set if x not in lost_names))
                                                   if gone else tag_text, gone)
                new_tags, gone = found
                old_fields = _decode(field_text) if lost_fields else {}
                gone_fields = [k for k in old_fields if k in lost_fields]
                if not gone and not gone_fields:  # the text matched inside a value, or another tag
                    continue
                for name in gone:
                    held[("tag", name)] = held.get(("tag", name), 0) + 1
                for name in gone_fields:
                    held[("field", name)] = held.get(("field", name), 0) + 1
                    del old_fields[name]
                out.append((new_tags, dump_fields(key, old_fields) if gone_fields else field_text, key))
            if not out:
                return {}
            revision = self._bump_revision(conn, destination)
            # one statement run for every row by the driver (no per-row parameter processing)
            mark = "%s" if conn.dialect.name == "postgresql" else "?"
            conn.exec_driver_sql(f"UPDATE pushed_state SET tags = {mark}, fields = {mark}, revision = {mark} "
                                 f"WHERE destination = {mark} AND key = {mark}",
                                 [(new_tags, new_fields, revision, destination, key)
                                  for new_tags, new_fields, key in out])
            # and who lost which tag, until it is given back (the plan guards count adding it back: lost_tags)
            taken = [(destination, key, tag, revision)
                     for key, tag_text, _ in rows for tag in kept_tags[tag_text][1] if (key, tag) not in leaving]
            if taken:  # the driver's own statement too (SQLite and PostgreSQL spell the upsert alike)
                conn.exec_driver_sql(f"INSERT INTO lost_tags (destination, key, tag, revision) VALUES ({mark}, "
                                     f"{mark}, {mark}, {mark}) ON CONFLICT (destination, key, tag) DO UPDATE SET "
                                     "revision = excluded.revision", taken)
        self._written.note(destination, revision, len(out))
        held = {what: held[what] for what in [*(("field", n) for n in fields), *(("tag", n) for n in tags)]
                if what in held}  # fields first, in the order asked
        log.info("ledger: %s forgotten for %d contacts of %s", ", ".join(f"{k} {n!r}" for k, n in held),
                 len(out), destination)
        return held

    def settle_lost(self, destination: str, revision: int, adds: Callable[[], Mapping[str, frozenset[str]]], *,
                    whole: bool, lock: tuple[str, str] | None = None) -> int:
        """What :meth:`lost_tags` remembers, settled by a plan made at ``revision`` that is being applied (under
        the destination's lock): ``adds()``, the tags it adds by contact key (called only when there is memory to
        settle). A contact it changes without adding his lost tag back is no longer meant to have it (he left its
        segment); with ``whole`` (the plan covers every contact of the destination: not a webhook resync's), nor
        is one it leaves alone. Memory the plan could not see (made after ``revision``) stays; a tag the plan
        adds stays until its outcome gives it back (:meth:`save_states`) or the ESP refuses it for good
        (:meth:`refused_lost`). Bumps the revision when it forgets anything (the guards' count moved). ``lock``:
        ``(name, owner)`` of the lock the caller holds, confirmed in the transaction (:meth:`forget_lost`).
        Returns the (contact, tag) pairs forgotten."""
        t = lost_tags
        query = select(t.c.key, t.c.tag).where(t.c.destination == destination, t.c.revision <= revision)
        with self._db.read() as conn:  # nothing remembered, the usual case: no write transaction
            if conn.execute(query.limit(1)).first() is None:
                return 0
        plan_adds = adds()
        with self._db.write() as conn:
            if lock is not None:
                check_lock_held(conn, *lock)
            gone = [(key, tag) for key, tag in conn.execute(query).all()
                    if (tag not in plan_adds[key] if key in plan_adds else whole)]
            if not gone:
                return 0
            _delete_lost(conn, destination, gone)
            new = self._bump_revision(conn, destination)
        self._written.note(destination, new, 0)
        log.info("ledger: %d contacts of %s no longer wait for a tag the ESP lost (the plan no longer gives it "
                 "to them)", len({key for key, _ in gone}), destination)
        return len(gone)

    def refused_lost(self, destination: str, pairs: Iterable[tuple[str, str]]) -> int:
        """``(key, tag)``: adds of a tag an apply's outcome says the ESP refused for good, naming the contact
        (:attr:`~sync.model.ItemResult.refused`: unsubscribed, awaiting confirmation, his row rejected): the
        contacts waiting to be given it back (:meth:`lost_tags`) wait no longer, or the plan guards would count
        them as changed on every run while the ESP keeps refusing. Any other failure keeps them waiting.
        Bumps the revision when it forgets anything. Returns the pairs forgotten."""
        wanted = set(pairs)
        if not wanted:
            return 0
        with self._db.read() as conn:  # nothing remembered, the usual case: one probe
            gone = [p for p in _lost_of(conn, destination, sorted({key for key, _ in wanted})) if p in wanted]
        if not gone:
            return 0
        with self._db.write() as conn:
            _delete_lost(conn, destination, gone)
            new = self._bump_revision(conn, destination)
        self._written.note(destination, new, 0)
        log.info("ledger: %d contacts of %s no longer wait for a tag the ESP lost (it refused to take it back)",
                 len({key for key, _ in gone}), destination)
        return len(gone)


def _delete_lost(conn: Connection, destination: str, pairs: list[tuple[str, str]]) -> None:
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    conn.exec_driver_sql(f"DELETE FROM lost_tags WHERE destination = {mark} AND key = {mark} AND tag = {mark}",
                         [(destination, key, tag) for key, tag in pairs])


def _lost_of(conn: Connection, destination: str, keys: list[str]) -> list[tuple[str, str]]:
    """The ``(key, tag)`` :meth:`PushedStates.lost_tags` remembers for these contacts of ``destination``: one
    indexed probe, empty but while a lost tag waits to be given back (the usual case: nothing else read), then
    only these keys' rows (chunked ``IN``; PostgreSQL: ``= ANY``), never the destination's other waiting rows.
    The driver's own statements: no compile per save."""
    pg = conn.dialect.name == "postgresql"
    mark = "%s" if pg else "?"
    if conn.exec_driver_sql(f"SELECT 1 FROM lost_tags WHERE destination = {mark} LIMIT 1",
                            (destination,)).first() is None:
        return []
    query = f"SELECT key, tag FROM lost_tags WHERE destination = {mark} AND key "
    if pg:
        return [(key, tag) for key, tag in conn.exec_driver_sql(query + "= ANY(%s)", (destination, keys))]
    return [(key, tag) for chunk in chunks(keys, 900)
            for key, tag in conn.exec_driver_sql(query + f"IN ({', '.join('?' * len(chunk))})", (destination, *chunk))]


def given_back(conn: Connection, destination: str, rows: dict[str, tuple[str, str | None, str, Any, int]]) -> None:
    """In :meth:`PushedStates.save_states`' transaction: the contacts saved holding a tag the ledger remembers
    they had lost (:meth:`PushedStates.lost_tags`) were given it back, and those saved missing in the ESP
    (deleted there: the next plan creates them again, a new contact) wait for nothing: forgotten."""
    found = _lost_of(conn, destination, list(rows))
    if not found:
        return
    decoded: dict[str, frozenset[str]] = {}
    back = []
    for key, tag in found:
        row = rows[key]
        if not row[4]:  # not in the destination any more
            back.append((key, tag))
            continue
        tags = decoded.get(row[2])
        if tags is None:
            tags = decoded[row[2]] = frozenset(_decode(row[2]))
        if tag in tags:
            back.append((key, tag))
    if back:
        _delete_lost(conn, destination, back)
