"""Pushed state: what rfmsync last wrote to each destination, by contact key, and its revision counter.

The planner diffs the desired state against this; every save or forget that changes a destination's state
bumps its revision, so a plan made before another run wrote the destination is known to be stale.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from typing import TYPE_CHECKING, Any, Callable, Container, Iterable, Mapping, Protocol

from sqlalchemy import case, delete, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..model import OwnerChange, PushedState
from .bulk import PAGE, STATE_COLUMNS, select_state_pg, select_state_sqlite
from .db import LedgerDB, chunks
from .locks import check_lock_held
from .schema import lost_tags, pushed_state, state_revisions
from .state_rows import dump_fields, save_rows_pg, save_rows_sqlite
from .statecache import Counter, StateCache, StateParts, WrittenRevisions, renewal_due, state_parts

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

class StateReader(Protocol):
    """Reads the pushed state of a destination and its revision (planning)."""

    def load_state(self, destination: str) -> dict[str, PushedState]: ...

    def load_states(self, destination: str, keys: Iterable[str]) -> dict[str, PushedState]: ...

    def state_table(self, destination: str, *, page: int = PAGE, cached: bool = True) -> "pa.Table": ...

    def state_parts(self, destination: str, *, page: int = PAGE) -> StateParts: ...

    def keep_copy_current(self, destination: str, *, page: int = PAGE) -> int: ...

    def state_revision(self, destination: str) -> int: ...

    def field_holders(self, destination: str, names: Iterable[str]) -> dict[str, int]: ...

    def lost_tags(self, destination: str, keys: Iterable[str] | None = None) -> dict[str, frozenset[str]]: ...


class StateWriter(Protocol):
    """Records what was pushed to, or forgotten from, a destination (applying a plan)."""

    def save_states(self, destination: str, run_id: int | None, states: Iterable[PushedState]) -> int: ...

    def forget(self, destination: str, keys: Iterable[str]) -> int: ...

    def forget_lost(self, destination: str, fields: Iterable[str], tags: Iterable[str],
                    lock: tuple[str, str] | None = None, leaving: Container[tuple[str, str]] = ()
                    ) -> dict[tuple[str, str], int]:
        ...

    def record_owners(self, destination: str, owners: Iterable[OwnerChange],
                      lock: tuple[str, str] | None = None) -> list[str]: ...

    def settle_lost(self, destination: str, revision: int, adds: Callable[[], Mapping[str, frozenset[str]]], *,
                    whole: bool, lock: tuple[str, str] | None = None) -> int: ...

    def refused_lost(self, destination: str, pairs: Iterable[tuple[str, str]]) -> int: ...


_encode = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


def _states(rows: Iterable[Any]) -> dict[str, PushedState]:
    """Ledger rows (key, customer_id, tags JSON, fields JSON, in_destination) → pushed states by key."""
    tag_sets: dict[str, frozenset[str]] = {}  # frozensets are immutable: share equal ones
    state: dict[str, PushedState] = {}
    for key, customer_id, tags, fields, present in rows:
        tag_set = tag_sets.get(tags)
        if tag_set is None:
            tag_set = tag_sets[tags] = frozenset(_decode(tags))
        state[key] = PushedState(key, customer_id, tag_set, _decode(fields), bool(present))
    return state


class PushedStates:
    """The ``pushed_state`` and ``state_revisions`` tables."""

    def __init__(self, db: LedgerDB, cache: StateCache | None = None) -> None:
        self._db = db
        self._cache = cache
        self._written = WrittenRevisions()  # the revisions this object's saves and forgets made

    def close(self) -> None:
        """Wait for the cached copies still being written (:meth:`state_parts` writes them on a thread)."""
        if self._cache is not None:
            self._cache.wait()

    def load_state(self, destination: str) -> dict[str, PushedState]:
        """Everything last pushed to ``destination``, by contact key (normalised email)."""
        t = pushed_state
        query = select(t.c.key, t.c.customer_id, t.c.tags, t.c.fields, t.c.in_destination).where(
            t.c.destination == destination)
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        return _states(rows)

    def load_states(self, destination: str, keys: Iterable[str]) -> dict[str, PushedState]:
        """The pushed state of ``keys`` only (those the ledger holds): what an apply folds its outcomes into.
        Few keys: chunked ``IN`` reads; many: one bulk read (:meth:`state_table`) filtered in Arrow."""
        keys = list(keys) if type(keys) is dict else list(dict.fromkeys(keys))  # a dict's keys are distinct
        if not keys:
            return {}
        t = pushed_state
        if len(keys) > 20_000:
            import pyarrow as pa
            import pyarrow.compute as pc

            table = self.state_table(destination, cached=False)
            if not table.num_rows:  # a first sync: nothing to look up (a million keys' Arrow array saved)
                return {}
            table = table.filter(pc.is_in(table.column("key"), value_set=pa.array(keys, pa.string())))
            rows = zip(*(table.column(c).to_pylist() for c in STATE_COLUMNS))
        else:
            found: list[Any] = []
            with self._db.read() as conn:
                for chunk in chunks(keys, 900):
                    found += conn.execute(select(t.c.key, t.c.customer_id, t.c.tags, t.c.fields, t.c.in_destination)
                                          .where(t.c.destination == destination, t.c.key.in_(chunk))).all()
            rows = iter(found)
        return _states(rows)

    def state_table(self, destination: str, *, page: int = PAGE, cached: bool = True) -> "pa.Table":
        """Everything last pushed to ``destination`` in one bulk read, as an Arrow table (key, customer_id,
        tags and fields as their stored JSON text, in_destination; in no particular order) for the columnar
        planner, with no Python object per row (:mod:`sync.ledger.bulk`: pages of ``page`` rows, each
        concatenated by the database into one blob that Arrow parses). ``cached``: through
        :meth:`state_parts`."""
        if not cached or self._cache is None:
            with self._db.snapshot() as conn:
                return _select_state(conn)(conn, destination, page)
        return self.state_parts(destination, page=page).merged()

    def state_parts(self, destination: str, *, page: int = PAGE) -> StateParts:
        """:meth:`state_table` in two parts (:class:`~sync.ledger.statecache.StateParts`): with a cache (a
        SQLite ledger's ``.state-cache`` folder), its copy and only the rows written since it
        (:mod:`sync.ledger.statecache`), so a plan after a small change reads little; else the full read."""
        with self._db.snapshot() as conn:
            select_state = _select_state(conn)
            if self._cache is None:
                table = select_state(conn, destination, page)
                return StateParts(table, table.schema.empty_table(), None, table.num_rows)
            return state_parts(
                self._cache, destination, self._counter(conn, destination),
                changed_since=lambda since: select_state(conn, destination, page, since),
                count=lambda: int(conn.execute(select(func.count()).select_from(pushed_state).where(
                    pushed_state.c.destination == destination)).scalar_one()),
                full=lambda: select_state(conn, destination, page))

    def keep_copy_current(self, destination: str, *, page: int = PAGE) -> int:
        """Renew ``destination``'s cached copy now when the next plan would (no copy yet, or the rows written
        since it reach a tenth of it: :func:`~sync.ledger.statecache.state_parts`), so that read is paid by the
        apply that wrote the rows, not by the next plan. The copy is made by :meth:`state_parts` itself: the
        same read, checks and file. The rows read from the ledger (0: nothing to renew, or no cache)."""
        if self._cache is None:
            return 0
        with self._db.snapshot() as conn:
            counter = self._counter(conn, destination)
            cached = self._cache.load(destination, counter)
            if cached is not None:
                base, since = cached
                if since == counter.revision:
                    return 0
                # the rows this object wrote since the copy bound the count: under a tenth, nothing to renew
                # (the same answer as the count below, which scans the destination's rows)
                bound = self._written.rows_at_most(destination, since, counter.revision)
                if bound is not None and not renewal_due(bound, base.num_rows):
                    return 0
                written = int(conn.execute(select(func.count()).select_from(pushed_state).where(
                    pushed_state.c.destination == destination, pushed_state.c.revision > since)).scalar_one())
                if not renewal_due(written, base.num_rows):
                    return 0
        return self.state_parts(destination, page=page).read

    def load_state_of(self, destination: str, keys: Iterable[str] = (), customer_ids: Iterable[str] = ()
                      ) -> dict[str, PushedState]:
        """The pushed state of ``destination`` for these contact keys and for any key held by these customers,
        read by key (the primary key and ``ix_pushed_state_customer``): a webhook resync reads its few
        customers' rows, not the destination's million."""
        t = pushed_state
        cols = (t.c.key, t.c.customer_id, t.c.tags, t.c.fields, t.c.in_destination)
        keys, customer_ids = sorted(set(keys)), sorted(set(customer_ids))
        state: dict[str, PushedState] = {}
        with self._db.read() as conn:
            for column, values in ((t.c.key, keys), (t.c.customer_id, customer_ids)):
                for chunk in chunks(values, 500):
                    for key, customer_id, tags, fields, present in conn.execute(
                            select(*cols).where(t.c.destination == destination, column.in_(chunk))):
                        state[key] = PushedState(key, customer_id, frozenset(_decode(tags)), _decode(fields),
                                                 bool(present))
        return state

    def tag_set_counts(self, destination: str) -> dict[frozenset[str], int]:
        """How many of ``destination``'s contacts hold each tag set (contacts without tags left out): one
        aggregate over its rows, grouped by their few distinct tag sets (the plan guards' managed count)."""
        t = pushed_state
        query = select(t.c.tags, func.count()).where(t.c.destination == destination,
                                                      t.c.tags != "[]").group_by(t.c.tags)
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        out: dict[frozenset[str], int] = {}
        for tags, n in rows:
            key = frozenset(_decode(tags))
            out[key] = out.get(key, 0) + n
        return out

    def field_holders(self, destination: str, names: Iterable[str]) -> dict[str, int]:
        """How many of ``destination``'s contacts hold each field of ``names`` in their pushed fields (names none
        holds left out): one scan, a count per name over the fields' text, matching the key as the ledger
        spells it (UTF-8, or escaped as rows written before 2026-12 are), case and all (``instr``/``strpos``:
        SQLite's LIKE would ignore case). For a field the ESP has lost since (prepare created it again), these
        are the contacts whose values are gone there."""
        t, wanted = pushed_state, list(dict.fromkeys(names))
        if not wanted:
            return {}
        with self._db.read() as conn:
            find = func.strpos if conn.dialect.name == "postgresql" else func.instr
            counts = [func.sum(case((or_(*(find(t.c.fields, text + ":") > 0 for text in _spellings(name))), 1),
                                    else_=0)) for name in wanted]
            row = conn.execute(select(*counts).where(t.c.destination == destination)).one()
        return {name: int(n) for name, n in zip(wanted, row) if n}

    def lost_tags(self, destination: str, keys: Iterable[str] | None = None) -> dict[str, frozenset[str]]:
        """The managed tags and lists the ESP lost that the ledger forgot for these contacts of ``destination``
        (:meth:`forget_lost`) and that were not given back to them since, by key (``keys``: these contacts only,
        read by key; none: all of them). The plan guards count adding one back as a change
        (:func:`sync.guards.plan_stats`)."""
        t = lost_tags
        query = select(t.c.key, t.c.tag).where(t.c.destination == destination)
        out: dict[str, set[str]] = {}
        with self._db.read() as conn:
            if keys is None:
                found = conn.execute(query).all()
            else:
                found = [row for chunk in chunks(sorted(set(keys)), 900)
                         for row in conn.execute(query.where(t.c.key.in_(chunk))).all()]
        for key, tag in found:
            out.setdefault(key, set()).add(tag)
        return {key: frozenset(tags) for key, tags in out.items()}

    def customer_states(self, customer_id: str) -> list[dict[str, Any]]:
        """What every destination holds for one customer (``rfmsync explain``): destination, key, tags (sorted),
        fields, in_destination, pushed_at, run_id, by destination and key."""
        t = pushed_state
        query = select(t.c.destination, t.c.key, t.c.tags, t.c.fields, t.c.in_destination, t.c.pushed_at,
                       t.c.run_id).where(t.c.customer_id == customer_id).order_by(t.c.destination, t.c.key)
        with self._db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**r, "tags": sorted(_decode(r["tags"])), "fields": _decode(r["fields"]),
                 "in_destination": bool(r["in_destination"])} for r in rows]

    def save_states(self, destination: str, run_id: int | None, states: Iterable[PushedState]) -> int:
        """Upsert pushed state (by destination and key); bumps :meth:`state_revision`. Returns rows written."""
        now = self._db.clock()
        rows: dict[str, tuple[str, str | None, str, str, bool]] = {}  # by key: the last one wins
        tag_json: dict[frozenset[str], str] = {}  # few distinct tag sets: encode each once
        untexted = False
        for s in states:
            key = s.key
            if not key:
                raise ValueError(f"pushed state for destination {destination!r} has an empty key")
            tags = tag_json.get(s.tags)
            if tags is None:
                tags = tag_json[s.tags] = _encode(sorted(s.tags))
            fields = s.fields_text  # the plan's text of exactly these fields, or None: encoded below
            if fields is None:
                fields, untexted = s.fields if type(s.fields) is dict else dict(s.fields), True
            rows[key] = (key, s.customer_id, tags, fields, bool(s.exists))
        if not rows:
            return 0
        if untexted:  # the fields that came without their text, encoded (a key's last state only)
            for key, row in rows.items():
                if type(row[3]) is dict:
                    rows[key] = (key, row[1], row[2], dump_fields(key, row[3]), row[4])
        # in key order: the rows of a group land on neighbouring pages of the primary key's B-tree (updates spread
        # over a large table: a quarter less CPU); an apply's groups mostly come in plan order, cheap to sort
        # (the rows' keys are distinct: tuples ordered by their first item)
        ordered = sorted(rows.values())
        try:
            with self._db.write() as conn:
                revision = self._bump_revision(conn, destination)  # first: the rows carry the new revision
                if conn.dialect.name == "postgresql":
                    save_rows_pg(conn, destination, run_id, now, revision, ordered)
                else:
                    save_rows_sqlite(conn, destination, run_id, now, revision, ordered)
                _given_back(conn, destination, rows)
        except (IntegrityError, sqlite3.IntegrityError):
            raise ValueError(f"save_states: run {run_id} does not exist in the ledger") from None
        self._written.note(destination, revision, len(rows))
        log.debug("ledger: saved %d states for %s", len(rows), destination)
        return len(rows)

    def forget(self, destination: str, keys: Iterable[str]) -> int:
        """Delete pushed state of ``keys``; bumps the revision if anything was deleted."""
        keys = list(dict.fromkeys(keys))
        deleted = 0
        with self._db.write() as conn:
            for chunk in chunks(keys, 1000):
                deleted += conn.execute(delete(pushed_state).where(
                    pushed_state.c.destination == destination, pushed_state.c.key.in_(chunk))).rowcount
                conn.execute(delete(lost_tags).where(lost_tags.c.destination == destination,
                                                     lost_tags.c.key.in_(chunk)))
            revision = self._bump_revision(conn, destination) if deleted else None
        if revision is not None:
            self._written.note(destination, revision, 0)
        return deleted

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
            near = [find(t.c.fields, text + ":") > 0 for name in fields for text in _spellings(name)] + \
                [find(t.c.tags, text) > 0 for name in tags for text in _spellings(name)]
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

    def record_owners(self, destination: str, owners: Iterable[OwnerChange],
                      lock: tuple[str, str] | None = None) -> list[str]:
        """Name each contact's new customer (the plan gives the contact another customer id: a shared address's
        new pick, a merged or renumbered customer) where the ledger still names ``was``, before any ESP call, in
        one transaction that bumps the revision when a row changes; tags, fields, ``in_destination``,
        ``pushed_at`` and run stay (what was pushed; a change's outcomes write the rest). Returns the keys of the
        rows changed. ``lock``: as for :meth:`forget_lost`."""
        wanted = {o.key: o for o in owners}
        if not wanted:
            return []
        t = pushed_state
        with self._db.write() as conn:
            if lock is not None:
                check_lock_held(conn, *lock)
            found: list[tuple[str, str]] = []  # the new customer, the key
            for chunk in chunks(sorted(wanted), 900):
                for key, customer_id in conn.execute(select(t.c.key, t.c.customer_id).where(
                        t.c.destination == destination, t.c.key.in_(chunk))):
                    if customer_id == wanted[key].was:
                        found.append((wanted[key].customer_id, key))
            if not found:
                return []
            revision = self._bump_revision(conn, destination)
            mark = "%s" if conn.dialect.name == "postgresql" else "?"
            conn.exec_driver_sql(f"UPDATE pushed_state SET customer_id = {mark}, revision = {mark} "
                                 f"WHERE destination = {mark} AND key = {mark} AND customer_id = {mark}",
                                 [(customer_id, revision, destination, key, wanted[key].was)
                                  for customer_id, key in found])
        self._written.note(destination, revision, len(found))
        return [key for _, key in found]

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

    def state_revision(self, destination: str) -> int:
        """Counter bumped by every save/forget that changed ``destination``'s state (0 if never)."""
        with self._db.read() as conn:
            value = conn.execute(select(state_revisions.c.revision).where(
                state_revisions.c.destination == destination)).scalar()
        return int(value or 0)

    def _counter(self, conn: Connection, destination: str) -> Counter:
        row = conn.execute(select(state_revisions.c.revision, state_revisions.c.epoch).where(
            state_revisions.c.destination == destination)).first()
        return Counter(0, None) if row is None else Counter(int(row.revision), row.epoch)

    def _bump_revision(self, conn: Connection, destination: str) -> int:
        """The destination's next revision (a new counter gets a random epoch). Taken before the rows are
        written, so on PostgreSQL concurrent writers of one destination commit in revision order."""
        ins = self._db.insert(state_revisions).values(destination=destination, revision=1, epoch=uuid.uuid4().hex)
        return int(conn.execute(ins.on_conflict_do_update(
            index_elements=[state_revisions.c.destination],
            set_={"revision": state_revisions.c.revision + 1}).returning(state_revisions.c.revision)).scalar_one())


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


def _given_back(conn: Connection, destination: str, rows: dict[str, tuple[str, str | None, str, Any, bool]]) -> None:
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


def _spellings(name: str) -> set[str]:
    """The JSON texts of ``name`` as the ledger may hold it: UTF-8, or escaped (tags always; fields of rows
    written before 2026-12)."""
    return {json.dumps(name, ensure_ascii=False), json.dumps(name)}


def _select_state(conn: Connection) -> Any:
    return select_state_pg if conn.dialect.name == "postgresql" else select_state_sqlite
