"""Pushed state: what rfmsync last wrote to each destination, by contact key, and its revision counter.

The planner diffs the desired state against this; every save or forget that changes a destination's state
bumps its revision, so a plan made before another run wrote the destination is known to be stale.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable, Container, Iterable, Mapping, Protocol, Sequence

from sqlalchemy import and_, case, delete, func, or_, select
from sqlalchemy.engine import Connection

from ..model import OwnerChange, PushedState
from .bulk import PAGE, STATE_COLUMNS, select_state_pg, select_state_sqlite
from .db import LedgerDB, chunks
from .dberrors import foreign_key_violation
from .locks import check_lock_held
from .lost import LostTagMemory, given_back, spellings
from .moves import StateMoves
from .readahead import ReadAhead, ReadsAhead
from .revisions import CLOCK_SKEW, Revisions
from .schema import lost_tags, pushed_state
from .state_rows import StateRow, dump_fields, read_states, save_rows_pg, save_rows_sqlite, tags_json
from .statecache import Counter, StateCache, StateParts, WrittenRevisions, renewal_due, state_parts
from .subscribed import Subscribed, rows_to_table, write_subscribed

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

class StateReader(Protocol):
    """Reads the pushed state of a destination and its revision (planning)."""

    def load_state(self, destination: str) -> dict[str, PushedState]: ...

    def load_states(self, destination: str, keys: Iterable[str]) -> dict[str, PushedState]: ...

    def state_table(self, destination: str, *, page: int = PAGE, cached: bool = True) -> "pa.Table": ...

    def state_parts(self, destination: str, *, page: int = PAGE, ahead: ReadAhead | None = None) -> StateParts: ...

    def keep_copy_current(self, destination: str, *, page: int = PAGE, ahead: ReadAhead | None = None) -> int: ...

    def state_count(self, destination: str) -> int: ...

    def state_revision(self, destination: str) -> int: ...

    def state_counter(self, destination: str) -> Counter: ...

    def field_holders(self, destination: str, names: Iterable[str]) -> dict[str, int]: ...

    def lost_tags(self, destination: str, keys: Iterable[str] | None = None) -> dict[str, frozenset[str]]: ...


class StateWriter(Protocol):
    """Records what was pushed to, or forgotten from, a destination (applying a plan)."""

    def save_states(self, destination: str, run_id: int | None, states: Iterable[PushedState]) -> int: ...

    def save_rows(self, destination: str, run_id: int | None, rows: Mapping[str, StateRow]) -> int: ...

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


_decode = json.JSONDecoder().decode
_fourth = itemgetter(3)


class PushedStates(Revisions, LostTagMemory, StateMoves, ReadsAhead):
    """The ``pushed_state`` and ``state_revisions`` tables."""

    def __init__(self, db: LedgerDB, cache: StateCache | None = None) -> None:
        self._db = db
        self._cache = cache
        self._written = WrittenRevisions()  # the revisions this object's saves and forgets made
        self._init_revisions()

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
        return read_states(rows, destination)

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
        return read_states(rows, destination)

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

    def state_parts(self, destination: str, *, page: int = PAGE, ahead: ReadAhead | None = None) -> StateParts:
        """:meth:`state_table` in two parts (:class:`~sync.ledger.statecache.StateParts`): with a cache (a
        SQLite ledger's ``.state-cache`` folder), its copy and only the rows written since it
        (:mod:`sync.ledger.statecache`), so a plan after a small change reads little; else the full read (with
        the pages ``ahead`` read that are still current: :mod:`sync.ledger.readahead`)."""
        with self._db.snapshot() as conn:
            select_state = _select_state(conn)
            if self._cache is None:
                table = select_state(conn, destination, page)
                return StateParts(table, table.schema.empty_table(), None, table.num_rows)
            parts = state_parts(
                self._cache, destination, self._counter(conn, destination),
                changed_since=lambda since: select_state(conn, destination, page, since),
                count=lambda: int(conn.execute(select(func.count()).select_from(pushed_state).where(
                    pushed_state.c.destination == destination)).scalar_one()),
                full=lambda: select_state(conn, destination, page, ahead=ahead and ahead.usable(
                    lambda revision: self._token_at(conn, destination, revision))),
                token_at=lambda revision: self._token_at(conn, destination, revision))
        self._restore_found(destination)  # a copy ahead of the ledger: every host's copy is another history's
        return parts

    def keep_copy_current(self, destination: str, *, page: int = PAGE, ahead: ReadAhead | None = None) -> int:
        """Renew ``destination``'s cached copy now when the next plan would (no copy yet, or the rows written
        since it reach a tenth of it: :func:`~sync.ledger.statecache.state_parts`), so that read is paid by the
        apply that wrote the rows, not by the next plan. The copy is made by :meth:`state_parts` itself: the
        same read, checks and file. The rows read from the ledger (0: nothing to renew, or no cache)."""
        if self._cache is None:
            return 0
        with self._db.snapshot() as conn:
            counter = self._counter(conn, destination)
            cached = self._cache.load(destination, counter, lambda r: self._token_at(conn, destination, r))
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
        return self.state_parts(destination, page=ahead.page_size if ahead else page, ahead=ahead).read

    def load_state_of(self, destination: str, keys: Iterable[str] = (), customer_ids: Iterable[str] = ()
                      ) -> dict[str, PushedState]:
        """The pushed state of ``destination`` for these contact keys and for any key held by these customers,
        read by key (the primary key and ``ix_pushed_state_customer``): a webhook resync reads its few
        customers' rows, not the destination's million."""
        t = pushed_state
        cols = (t.c.key, t.c.customer_id, t.c.tags, t.c.fields, t.c.in_destination)
        keys, customer_ids = sorted(set(keys)), sorted(set(customer_ids))
        found: list[Any] = []
        with self._db.read() as conn:
            for column, values in ((t.c.key, keys), (t.c.customer_id, customer_ids)):
                for chunk in chunks(values, 500):
                    found += conn.execute(select(*cols).where(t.c.destination == destination, column.in_(chunk)))
        return read_states(found, destination)

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

    def tag_sets_beside(self, destination: str, others: Sequence[str] = ()
                        ) -> dict[tuple[frozenset[str], ...], int]:
        """:meth:`tag_set_counts` of ``destination``'s contacts, grouped with the tag sets the rows of ``others``
        hold for the same contacts (empty when they hold none): ``(own, *others') → count``, in one query, each
        row of ``others`` read by its primary key (a destination removed from the config beside one renamed)."""
        t, aliases = pushed_state, [pushed_state.alias(f"beside{i}") for i in range(len(others))]
        joined: Any = t
        for alias, name in zip(aliases, others):
            joined = joined.outerjoin(alias, and_(alias.c.destination == name, alias.c.key == t.c.key))
        sets = (t.c.tags, *(a.c.tags for a in aliases))
        query = select(*sets, func.count()).select_from(joined).where(t.c.destination == destination,
                                                                      t.c.tags != "[]").group_by(*sets)
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        out: dict[tuple[frozenset[str], ...], int] = {}
        for *texts, n in rows:
            key = tuple(frozenset(_decode(text)) if text else frozenset() for text in texts)
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
            counts = [func.sum(case((or_(*(find(t.c.fields, text + ":") > 0 for text in spellings(name))), 1),
                                    else_=0)) for name in wanted]
            row = conn.execute(select(*counts).where(t.c.destination == destination)).one()
        return {name: int(n) for name, n in zip(wanted, row) if n}

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

    def save_states(self, destination: str, run_id: int | None, states: Iterable[PushedState],
                    subscribed: Subscribed = ((), ())) -> int:
        """Upsert pushed state (by destination and key); bumps :meth:`state_revision`; ``subscribed``: as for
        :meth:`save_rows`. Returns rows written."""
        rows: dict[str, StateRow] = {}  # by key: the last one wins
        tag_json: dict[frozenset[str], str] = {}  # few distinct tag sets: encode each once
        for s in states:
            tags = tag_json.get(s.tags)
            if tags is None:
                tags = tag_json[s.tags] = tags_json(s.tags)
            fields = s.fields_text  # the plan's text of exactly these fields, or None: encoded by save_rows
            # in_destination as the integer 1 or 0, the value SQLite stores for a bool: the sqlite3 module binds
            # an int at once, while a bool (not exactly an int) takes its adapter lookup, which raises and
            # formats an AttributeError inside (~0.35 µs a row, 13 % of a first sync's writer CPU)
            rows[s.key] = (s.key, s.customer_id, tags, s.fields if fields is None else fields, 1 if s.exists else 0)
        return self.save_rows(destination, run_id, rows, subscribed)

    def save_rows(self, destination: str, run_id: int | None, rows: Mapping[str, StateRow],
                  subscribed: Subscribed = ((), ())) -> int:
        """:meth:`save_states` of states given as the ledger's rows by key (key, customer_id, the tags' text
        (:func:`~sync.ledger.state_rows.tags_json`), the fields' text (:func:`~sync.ledger.state_rows.fields_json`)
        or their mapping (encoded here), in_destination as 1 or 0): what the apply's fold gives
        (:meth:`sync.outcomes.StateFold.rows`), no state object built for each contact. ``rows`` is not changed.
        ``subscribed``: the keys to record as created subscribed by rfmsync and to forget so, in the same
        transaction: on the rows written (``subscribed``), else in ``subscribed_by_us``
        (:func:`~sync.ledger.subscribed.write_subscribed`)."""
        if not rows:
            return 0
        if "" in rows:
            raise ValueError(f"pushed state for destination {destination!r} has an empty key")
        now = self._db.clock()
        if set(map(type, map(_fourth, rows.values()))) - {str}:  # fields without their text (a key's last row)
            rows = {key: row if type(row[3]) is str else (key, row[1], row[2], dump_fields(key, row[3]), row[4])
                    for key, row in rows.items()}
        # in key order: the rows of a group land on neighbouring pages of the primary key's B-tree (updates spread
        # over a large table: a quarter less CPU); an apply's groups mostly come in plan order, cheap to sort
        # (the rows' keys are distinct: tuples ordered by their first item)
        ordered = sorted(rows.values())
        record, gone = subscribed
        mine = rows.keys() & record  # recorded on the rows written; the others' records in subscribed_by_us
        # (an apply's are all on its rows: :meth:`sync.outcomes.OutcomeWriter._carry`; a million not looked at again)
        rest = [k for k in record if k not in mine] if len(mine) < len(record) else ()
        try:
            with self._db.write() as conn:
                revision = self._bump_revision(conn, destination)  # first: the rows carry the new revision
                if conn.dialect.name == "postgresql":
                    save_rows_pg(conn, destination, run_id, now, revision, ordered, mine)
                else:
                    save_rows_sqlite(conn, destination, run_id, now, revision, ordered, mine)
                given_back(conn, destination, rows)
                write_subscribed(conn, destination, run_id, now, rest, gone, marked=bool(mine))
        except Exception as exc:
            if not foreign_key_violation(exc):
                raise
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
                rows_to_table(conn, destination, chunk)  # whom rfmsync subscribed: still so in the ESP
                deleted += conn.execute(delete(pushed_state).where(
                    pushed_state.c.destination == destination, pushed_state.c.key.in_(chunk))).rowcount
                conn.execute(delete(lost_tags).where(lost_tags.c.destination == destination,
                                                     lost_tags.c.key.in_(chunk)))
            revision = self._bump_revision(conn, destination) if deleted else None
        if revision is not None:
            self._written.note(destination, revision, 0)
        return deleted

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

    def written_since(self, destination: str, revision: int, made: Counter | None = None,
                      at: datetime | None = None) -> set[str]:
        """The keys of ``destination`` whose pushed state a save after ``revision`` wrote (a re-plan's contacts
        another run wrote since the first plan was made: :func:`sync.planning.replanned.leave_written`). ``made``,
        ``at``: that plan's counter and when it was read (:meth:`ledger_now`); a ledger restored from an older
        backup since (:meth:`_went_back`) numbers the saves after the restore again from the backup's revision,
        at or below ``revision``: those saved after ``at`` (less :data:`CLOCK_SKEW`) are named too."""
        t = pushed_state
        with self._db.read() as conn:
            written = t.c.revision > revision
            if made is not None and at is not None and self._went_back(conn, destination, made):
                written = or_(written, t.c.pushed_at >= at - CLOCK_SKEW)
            return set(conn.execute(select(t.c.key).where(t.c.destination == destination, written)).scalars())

    def state_count(self, destination: str) -> int:
        """How many contacts' pushed state ``destination`` holds: one count, no row decoded."""
        with self._db.read() as conn:
            return int(conn.execute(select(func.count()).where(pushed_state.c.destination == destination)).scalar())


def _select_state(conn: Connection) -> Any:
    return select_state_pg if conn.dialect.name == "postgresql" else select_state_sqlite
