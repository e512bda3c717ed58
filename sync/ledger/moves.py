"""A destination moved to another audience or type (docs/sync.md#another-audience): what the ledger knew of the
old one is forgotten and the new target recorded, in one transaction, before the move's first ESP call. And a
destination renamed (docs/sync.md#removed-destination): the new name takes over what the ledger holds under the
old one (:meth:`StateMoves.take_over`). And a destination forgotten (``rfmsync forget``, a retired one ended, the old
name of a rename taken over): its rows go, its revision counter does not (:meth:`StateMoves._forget_name`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

import json

from sqlalchemy import and_, delete, func, insert, literal, select, text

from ..model import fold
from .cursors import write_cursor
from .subscribed import MARK, rows_to_table
from .locks import check_lock_held
from .schema import (cursors, failures, in_flight, kept_out, lost_tags, pushed_state, state_revisions, state_tokens,
                     subscribed_by_us)

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.engine import Connection

    from .db import LedgerDB
    from .statecache import Counter, StateCache, WrittenRevisions


class Kept(NamedTuple):
    """What a destination's rows may still hold and the destination be forgotten all the same
    (:meth:`StateMoves.forget_destination`): tags/lists another destination of its audience gives now and fields
    it maps now (the tags as ``tag_key`` names them, the fields as ``key`` does: the ESP's comparisons; a tag's case
    is folded only where the ESP folds it, Mailchimp's). A tag another destination only retires is not among them
    (it is not that one's to keep)."""

    tags: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset()
    key: Callable[[str], str] = str
    tag_key: Callable[[str], str] = fold

    def has_tag(self, tag: str) -> bool:
        """Whether another destination of the audience gives ``tag`` (named as the ESP compares tags)."""
        return self.tag_key(tag) in self.tags

    def has_field(self, name: str) -> bool:
        """Whether another destination of the audience maps the field ``name`` (as ``key`` names it)."""
        return self.key(name) in self.fields


class StateMoves:
    """:meth:`move_state`, a part of :class:`~sync.ledger.state.PushedStates`."""

    _db: "LedgerDB"
    _cache: "StateCache | None"
    _written: "WrittenRevisions"

    _bump_revision: Callable[["Connection", str], int]  # PushedStates': the revision moved on, in the transaction
    _next_counter: Callable[..., "Counter"]  # Revisions': the counter moved on (its epoch renewed on request)

    def move_state(self, destination: str, cursor: tuple[str, str], target: str,
                   lock: tuple[str, str] | None = None) -> int:
        """Forget everything ``destination``'s ledger holds of what rfmsync pushed (its pushed state, the tags it
        lost, its failures, whom it subscribed, the cached copy) and save ``target`` as the cursor ``cursor``
        (source, object), in one transaction that bumps the revision (a plan made before is stale). The rows
        forgotten. ``lock``: (name, owner) that must still hold the destination's lock."""
        with self._db.write() as conn:
            if lock is not None:
                check_lock_held(conn, *lock)
            deleted = conn.execute(delete(pushed_state).where(pushed_state.c.destination == destination)).rowcount
            # kept out of the old audience: read again in the new; a killed run's operations in flight (in_flight):
            # the old audience's; whom rfmsync subscribed (subscribed_by_us): there, not in the new one
            for table in (lost_tags, failures, kept_out, in_flight, subscribed_by_us):
                conn.execute(delete(table).where(table.c.destination == destination))
            revision = self._bump_revision(conn, destination)
            write_cursor(self._db, conn, *cursor, target)
        self._written.note(destination, revision, 0)
        if self._cache is not None:
            self._cache.drop(destination)
        return int(deleted)

    def take_over(self, old: str, new: str, cursor: tuple[str, str], lock: tuple[str, str] | None = None) -> int:
        """Destination ``new`` (a rename of ``old``, pushing to the same target) takes over ``old``'s ledger rows,
        in one transaction that bumps ``new``'s revision: a contact only ``old`` holds gets ``old``'s row under
        ``new`` (``new`` then plans from what was pushed him: the managed tags of a customer who left come off
        him, the others are named by its left-behind warning); one both hold keeps ``new``'s row, with the tags
        only ``old``'s row holds added (whatever their case: a tag still on him that ``new`` did not push him).
        Its ``kept_out`` and ``subscribed_by_us`` rows become ``new``'s (the same ESP target: his choice holds
        there; one UPDATE), and so do
        its operations in doubt (pending failed adds and upserts, the rows a killed run left in flight). Then
        ``old``'s rows, lost tags, failures, cached copy and cursor ``cursor`` (source, object: its target) are
        deleted, and its revision counter moves on (:meth:`_forget_name`). The rows of ``old`` taken over (0: it
        held none). ``lock``: (name, owner) that must still hold ``new``'s lock."""
        with self._db.write() as conn:
            if lock is not None:
                check_lock_held(conn, *lock)
            taken = conn.execute(select(func.count()).where(pushed_state.c.destination == old)).scalar() or 0
            revision = self._take_rows(conn, old, new) if taken else None
            _move_keyed(conn, kept_out, old, new)  # his own choice in the ESP: the same target, still his
            # what may be on him though no outcome says so (in doubt: sync.planning.doubt): the same target, so
            # still on him there; new's plans take it off once no longer his
            _move_keyed(conn, failures, old, new, (failures.c.op.like("tag+%") | (failures.c.op == "upsert")))
            conn.execute(in_flight.update().where(in_flight.c.destination == old).values(destination=new))
            rows_to_table(conn, old)  # whom rfmsync subscribed there (on old's rows too): the same target
            _move_subscribed(conn, old, new)
            gone = self._forget_name(conn, old, cursor)
        if revision is not None:
            self._written.note(new, revision, int(taken))
        if gone is not None:
            self._written.note(old, gone, 0)
        if self._cache is not None:
            self._cache.drop(old)
        return int(taken)

    def _take_rows(self, conn: "Connection", old: str, new: str) -> int:
        """:meth:`take_over`'s rows of ``old`` given to ``new``, in ``conn``'s transaction: ``new``'s revision."""
        o, n = pushed_state.alias("old"), pushed_state.alias("new")
        both = and_(n.c.destination == new, n.c.key == o.c.key)
        revision = self._bump_revision(conn, new)
        cols = ("key", "customer_id", "tags", "fields", "in_destination", "pushed_at", "run_id")
        only_old = select(literal(new), *(o.c[c] for c in cols), literal(revision)).where(
            o.c.destination == old, ~select(n.c.key).where(both).exists())
        conn.execute(insert(pushed_state).from_select(["destination", *cols, "revision"], only_old))
        for key, theirs, ours in conn.execute(select(o.c.key, o.c.tags, n.c.tags).select_from(
                o.join(n, both)).where(o.c.destination == old, o.c.tags != n.c.tags, o.c.tags != "[]")).all():
            mine = set(json.loads(ours))
            held = {fold(t) for t in mine}
            added = {t for t in json.loads(theirs) if fold(t) not in held}
            if added:
                conn.execute(pushed_state.update().where(
                    pushed_state.c.destination == new, pushed_state.c.key == key).values(
                    tags=json.dumps(sorted(mine | added), separators=(",", ":")), revision=revision))
        return revision

    def forget_destination(self, name: str, cursor: tuple[str, str], lock: tuple[str, str] | None = None,
                           *, untagged: bool = True, unvalued: bool = False, undoubted: bool = False,
                           kept: Kept = Kept(), heir: str | None = None) -> int:
        """Delete everything the ledger holds under destination ``name`` (its rows, lost tags, failures, cached
        copy and the cursor ``cursor``: its target; its revision counter moves on: :meth:`_forget_name`), in one
        transaction; with ``untagged``, only while none of its rows holds a tag, with ``unvalued`` a value in
        a field, and with ``undoubted`` while no add of a tag is in doubt (:func:`_doubted`: a contact may hold it
        though no row says so), but those ``kept`` names (else nothing, and -1). ``heir``: another destination of
        the same ESP target (whose lock the caller holds too) that takes over its ``subscribed_by_us`` rows (whom
        rfmsync created subscribed there: still so in the ESP) in the same transaction, as :meth:`take_over` does.
        The rows deleted. ``lock``: (name, owner) that must still hold ``name``'s lock."""
        tagged = None if not kept.tags else (lambda tags: any(not kept.has_tag(t) for t in tags))
        with self._db.write() as conn:
            if lock is not None:
                check_lock_held(conn, *lock)
            if (untagged and _holds(conn, name, pushed_state.c.tags, "[]", tagged)) or (
                    unvalued and _holds_value(conn, name, kept)) or (undoubted and _doubted(conn, name, kept)):
                return -1
            deleted = conn.execute(select(func.count()).where(pushed_state.c.destination == name)).scalar() or 0
            if heir is not None:
                rows_to_table(conn, name)
                _move_subscribed(conn, name, heir)
            revision = self._forget_name(conn, name, cursor)
        if revision is not None:
            self._written.note(name, revision, 0)
        if self._cache is not None:
            self._cache.drop(name)
        return int(deleted)

    def state_destinations(self) -> list[str]:
        """The destinations whose pushed state holds a row, sorted: one counter each, and one keyed look at the
        state per counter (no scan; a forgotten destination's counter, kept, holds none)."""
        with self._db.read() as conn:
            return sorted(conn.execute(_with_rows()).scalars())

    def held_destinations(self, cursor_source: str) -> list[str]:
        """Every destination name the ledger holds anything under, sorted: pushed state, failures, lost tags, or
        a cursor of ``cursor_source`` (its recorded target): what :meth:`forget_destination` deletes."""
        with self._db.read() as conn:
            names = set(conn.execute(_with_rows()).scalars())
            names.update(n for table in (failures, lost_tags, kept_out, in_flight, subscribed_by_us)
                         for n in conn.execute(select(table.c.destination).distinct()).scalars())
            names.update(conn.execute(select(cursors.c.obj).where(cursors.c.source == cursor_source)).scalars())
        return sorted(names)

    def _forget_name(self, conn: "Connection", name: str, cursor: tuple[str, str]) -> int | None:
        """Delete everything the ledger holds under destination ``name``, in ``conn``'s transaction, but its
        revision counter: when anything was deleted, the counter moves on (a new one starts at 1) under a new epoch
        (no host's cached copy of the state is of it). It never goes back, so a plan saved before, whatever runs
        of the name come after, never matches its revision again (a counter deleted with the rows started afresh:
        a few syncs of the destination put back brought it to the saved plan's revision). The tokens of its
        revisions go too but the current one's (a name no longer saved never prunes them: up to 100 000 rows). The
        counter's revision (None: nothing was held)."""
        deleted = sum(conn.execute(delete(table).where(table.c.destination == name)).rowcount
                      for table in (pushed_state, lost_tags, failures, kept_out, in_flight, subscribed_by_us))
        deleted += conn.execute(delete(cursors).where(cursors.c.source == cursor[0],
                                                      cursors.c.obj == cursor[1])).rowcount
        revision = self._next_counter(conn, name, new_epoch=True).revision if deleted else None
        current = select(state_revisions.c.revision).where(state_revisions.c.destination == name).scalar_subquery()
        conn.execute(delete(state_tokens).where(state_tokens.c.destination == name, state_tokens.c.revision < current))
        return revision


def _move_keyed(conn: "Connection", table: Any, old: str, new: str, *where: Any) -> None:
    """``table``'s rows (keyed by destination, key, op) of ``old`` (and ``where``) become ``new``'s, one UPDATE;
    those ``new`` holds already stay ``old``'s (deleted with it)."""
    mine = table.alias("mine")
    theirs = select(mine.c.key).where(mine.c.destination == new, mine.c.key == table.c.key, mine.c.op == table.c.op)
    conn.execute(table.update().where(table.c.destination == old, *where, ~theirs.exists()).values(destination=new))


def _doubted(conn: "Connection", name: str, kept: Kept) -> bool:
    """Whether destination ``name`` holds an add of a tag in doubt (:mod:`sync.planning.doubt`) but in those ``kept``
    names: a pending failed ``tag+<name>``, or any operation a run left in flight (a killed run's, not yet turned
    into failures). Two keyed reads (the distinct tags pending: few)."""
    if conn.execute(select(in_flight.c.run_id).where(in_flight.c.destination == name).limit(1)).first() is not None:
        return True
    ops = conn.execute(select(failures.c.op).where(failures.c.destination == name, failures.c.op.like("tag+%"))
                       .distinct()).scalars()
    return any(not kept.has_tag(op[4:]) for op in ops)


def _move_subscribed(conn: "Connection", old: str, new: str) -> None:
    """``old``'s ``subscribed_by_us`` rows become ``new``'s, one UPDATE; those ``new`` holds already stay ``old``'s
    (deleted with it)."""
    t, mine = subscribed_by_us, subscribed_by_us.alias("mine")
    theirs = select(mine.c.key).where(mine.c.destination == new, mine.c.key == t.c.key)
    # not old's MARK (its rows' records are in the table now: rows_to_table), which would say new's rows hold some
    conn.execute(t.update().where(t.c.destination == old, t.c.key != MARK, ~theirs.exists()).values(destination=new))


def _holds(conn: "Connection", name: str, column: Any, empty: str, holds: Callable[[Any], bool] | None) -> bool:
    """Whether a row of destination ``name`` holds something in its JSON ``column`` (``empty`` when it holds
    nothing): any row, or, with ``holds``, one whose decoded value ``holds`` says so. Its distinct texts are read
    (a ledger has few distinct tag sets), up to the first that holds."""
    query = select(column).where(pushed_state.c.destination == name, column != empty)
    if holds is None:
        return conn.execute(query.limit(1)).first() is not None
    result = conn.execute(query.distinct())
    try:
        return any(holds(json.loads(text)) for text in result.scalars())
    finally:
        result.close()


#: distinct ``fields`` texts decoded in Python before the rest is judged in SQL (:func:`_holds_value`)
FEW_TEXTS = 1000
#: what :func:`_valued_fields` takes apart for a ``fields`` text not a JSON object: a value in a field no one maps
NOT_AN_OBJECT = '{"": 1}'


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's (key, value) pairs as written, a key written twice included (:func:`_holds_text`)."""


def _holds_text(text: str, kept: Kept) -> bool:
    """Whether the ``fields`` text ``text`` holds a value (not null, not ``""``) in a field ``kept`` does not name,
    as :func:`_valued_fields` judges it in SQL: a text not a JSON object (``null``, ``[]``, a string, a number: an
    old or hand-edited ledger) holds (never forgotten unseen); a key written twice holds if any of its values is
    one (SQLite's and PostgreSQL's ``json_each`` give every pair written)."""
    pairs = json.loads(text, object_pairs_hook=_Pairs)
    if not isinstance(pairs, _Pairs):
        return True
    return any(value not in (None, "") and not kept.has_field(k) for k, value in pairs)


def _holds_value(conn: "Connection", name: str, kept: Kept) -> bool:
    """Whether a row of destination ``name`` holds a value (not null, not ``""``) in a field ``kept`` does not
    name (or a ``fields`` text not a JSON object: :func:`_holds_text`). Its distinct ``fields`` texts are decoded up
    to the first that holds, while few (fields cleared are alike); past :data:`FEW_TEXTS` (values of a field
    another destination maps, one per contact, which never count), the rest is judged in SQL
    (:func:`_valued_fields`), not one text at a time in Python under the write lock."""
    result = conn.execute(select(pushed_state.c.fields).where(
        pushed_state.c.destination == name, pushed_state.c.fields != "{}").distinct().limit(FEW_TEXTS + 1))
    try:
        for n, fields in enumerate(result.scalars()):
            if n == FEW_TEXTS:
                break
            if _holds_text(fields, kept):
                return True
        else:
            return False
    finally:
        result.close()
    return any(not kept.has_field(k) for k in _valued_fields(conn, name))


def _valued_fields(conn: "Connection", name: str) -> Iterator[str]:
    """The field names in which a row of destination ``name`` holds a value (not null, not ``""``: as Python
    compares, 0 and false are values; every pair of a key written twice), each once, streamed (a caller stops at
    the first it counts): the JSON taken apart in SQL, the same way on either engine (``json_each`` of the text:
    on PostgreSQL as ``json``, no ``jsonb`` built per row). A text not a JSON object (:func:`_holds_text`) is taken
    apart as :data:`NOT_AN_OBJECT` (a value in a field named ``""``, which nothing maps: it counts)."""
    if conn.dialect.name == "postgresql":
        fields, typeof = "p.fields::json", "json_typeof(p.fields::json)"
        valued = "json_typeof(j.value) <> 'null' AND j.value::text <> '\"\"'"
    else:
        fields, typeof = "p.fields", "json_type(p.fields)"
        valued = "j.type <> 'null' AND NOT (j.type = 'text' AND j.atom = '')"
    obj = (f"CASE WHEN substr(p.fields, 1, 1) = '{{' THEN {fields} WHEN {typeof} = 'object' THEN {fields} "
           f"ELSE '{NOT_AN_OBJECT}' END")  # the type asked only of a text not starting with '{': rare
    result = conn.execute(text(
        f"SELECT DISTINCT j.key FROM {pushed_state.name} p, json_each({obj}) j "
        f"WHERE p.destination = :name AND p.fields <> '{{}}' AND {valued}").bindparams(name=name))
    try:
        yield from result.scalars()
    finally:
        result.close()


def _with_rows() -> "Select[tuple[str]]":
    """The names of the revision counters whose destination's pushed state holds a row."""
    return select(state_revisions.c.destination).where(
        select(pushed_state.c.key).where(pushed_state.c.destination == state_revisions.c.destination).exists())


__all__ = ["Kept", "StateMoves"]
