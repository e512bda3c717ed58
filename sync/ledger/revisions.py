"""Each destination's revision counter (``state_revisions``), and a ledger restored from a backup found and told.

Every save or forget of a destination's pushed state bumps its revision; the plans' cached copies
(:mod:`sync.ledger.statecache`) name the counter's *epoch* and the revision they were read at. A ledger restored
from an older backup (a SQLite file put back, a PostgreSQL dump restored) goes back to an older revision of the
same epoch, and the revisions written after the restore are numbered again: a copy of the undone history at one
of those numbers would pass for the state. It is found by whoever sees the ledger behind what it saw before: a
cached copy on this host ahead of the ledger (at a plan's read, or at the first save of a process), or a counter
behind the one this ledger object's own earlier save found. Whoever finds it gives the counter a new epoch, in
the ledger, and a revision past the undone history's, so every copy kept before, on every host sharing the ledger
(each PostgreSQL host keeps its own beside its order store), and every plan saved before, is someone else's from
then on and read in full, the same way for both engines; and it says so (a warning:
run ``rfmsync sync --full-refresh`` once, docs/ledger.md#restored-ledger). Every revision the counter takes also
gets a random token (``state_tokens``, the recent revisions' only), and a copy names its revision's token: a
restore nobody saw before other hosts saved the destination back up to a copy's revision or past it is found by
that copy's next read, where the ledger holds another token for the copy's revision.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import case, delete, select, update

from ..errors import LedgerError
from .schema import state_revisions, state_tokens
from .statecache import Counter, went_back

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .db import LedgerDB
    from .statecache import StateCache, WrittenRevisions

log = logging.getLogger("sync.ledger.statecache")

#: the revisions of a destination whose tokens the ledger keeps (a copy older than that is read in full once: no
#: proof it is of the ledger's history); older ones are deleted every PRUNE_EVERY revisions
TOKENS_KEPT = 100_000
PRUNE_EVERY = 1000
#: how far two hosts' clocks (the ``pushed_at`` their saves stamp) may disagree: a re-plan after a restore names
#: the rows saved this much before its first plan was made too (:meth:`PushedStates.written_since`)
CLOCK_SKEW = timedelta(minutes=5)


class Revisions:
    """The revision counters, a part of :class:`~sync.ledger.state.PushedStates`."""

    _db: "LedgerDB"
    _cache: "StateCache | None"
    _written: "WrittenRevisions"

    def _init_revisions(self) -> None:
        self._checked: set[str] = set()  # the destinations whose cached copy a first save checked
        #: destination → the ledger's revision (committed: the counter as a save of this object found it, before it
        #: took the next; a save rolled back gives its own number back) at this object's latest save
        self._seen: dict[str, Counter] = {}

    def state_revision(self, destination: str) -> int:
        """Counter bumped by every save/forget that changed ``destination``'s state (0 if never)."""
        with self._db.read() as conn:
            value = conn.execute(select(state_revisions.c.revision).where(
                state_revisions.c.destination == destination)).scalar()
        return int(value or 0)

    def state_counter(self, destination: str) -> Counter:
        """``destination``'s revision counter: its revision and epoch (0 and None if never written)."""
        with self._db.read() as conn:
            return self._counter(conn, destination)

    def ledger_now(self) -> datetime:
        """This process's clock now (its host's: the ledger's injectable ``clock``, not the database's), which this
        host's saves stamp ``pushed_at`` with (when a plan read the state). Other hosts' saves are stamped by their
        own clocks, within :data:`CLOCK_SKEW` of this one."""
        return self._db.clock()

    def _went_back(self, conn: "Connection", destination: str, made: Counter) -> bool:
        """Whether ``destination``'s counter is no longer of the history ``made`` was read in: under another epoch,
        behind its revision, or holding another token for it (the ledger restored from a backup since, found or
        not yet; or the destination forgotten)."""
        now = self._counter(conn, destination)
        if made.epoch is None:  # never written then: every row written since is past its revision 0
            return False
        if now.epoch != made.epoch or now.revision < made.revision:
            return True
        return made.token is not None and self._token_at(conn, destination, made.revision) not in (None, made.token)

    def _counter(self, conn: "Connection", destination: str) -> Counter:
        """The counter with its revision's token (None: made by an rfmsync before schema 11), in one query."""
        r, t = state_revisions, state_tokens
        row = conn.execute(select(r.c.revision, r.c.epoch, t.c.token).select_from(r.outerjoin(
            t, (t.c.destination == r.c.destination) & (t.c.revision == r.c.revision))).where(
            r.c.destination == destination)).first()
        return Counter(0, None) if row is None else Counter(int(row.revision), row.epoch, row.token)

    def _token_at(self, conn: "Connection", destination: str, revision: int) -> str | None:
        """The token of ``destination``'s ``revision`` as the ledger holds it (None: not kept, or never made)."""
        return conn.execute(select(state_tokens.c.token).where(
            state_tokens.c.destination == destination, state_tokens.c.revision == revision)).scalar()

    def _stamp(self, conn: "Connection", destination: str, revision: int) -> str:
        """A new random token for ``destination``'s ``revision``, written in the transaction that made the revision
        (replacing one a restored ledger holds of the undone history's revision of that number); the tokens of
        revisions :data:`TOKENS_KEPT` behind deleted now and then."""
        token = uuid.uuid4().hex
        conn.execute(self._db.insert(state_tokens).values(destination=destination, revision=revision, token=token)
                     .on_conflict_do_update(index_elements=[state_tokens.c.destination, state_tokens.c.revision],
                                            set_={"token": token}))
        if revision % PRUNE_EVERY == 0:
            conn.execute(delete(state_tokens).where(state_tokens.c.destination == destination,
                                                    state_tokens.c.revision <= revision - TOKENS_KEPT))
        return token

    def _next_counter(self, conn: "Connection", destination: str, *, new_epoch: bool = False) -> Counter:
        """The destination's counter moved on by one (a new one starts at 1 under a random epoch), its epoch
        renewed too with ``new_epoch`` (a forget: no host's cached copy of the state is of it)."""
        epoch = uuid.uuid4().hex
        moved = {"revision": state_revisions.c.revision + 1, **({"epoch": epoch} if new_epoch else {})}
        row = conn.execute(self._db.insert(state_revisions).values(
            destination=destination, revision=1, epoch=epoch).on_conflict_do_update(
            index_elements=[state_revisions.c.destination], set_=moved).returning(
            state_revisions.c.revision, state_revisions.c.epoch)).one()
        return Counter(int(row.revision), row.epoch, self._stamp(conn, destination, int(row.revision)))

    def _bump_revision(self, conn: "Connection", destination: str) -> int:
        """The destination's next revision (a new counter gets a random epoch). Taken before the rows are
        written, so on PostgreSQL concurrent writers of one destination commit in revision order. A ledger found
        restored (a copy on this host ahead of it, or of a revision the ledger holds another token for, checked
        at a process's first save; or a counter behind the one an earlier save of this object found) gets a new
        epoch in the same transaction. What this object remembers (the counter it found, the copy checked, the
        copy deleted, the warning) moves only once the transaction committed: a save rolled back (a constraint, a
        killed process) leaves the restore to be found again by the next one, which a note moved ahead of the
        ledger would skip."""
        moved = self._next_counter(conn, destination)
        revision, epoch = moved.revision, moved.epoch
        before, seen = Counter(int(revision) - 1, epoch), self._seen.get(destination)
        told: list[tuple[int, str]] = []  # the restore found: (the revision seen of the undone history, by what)
        check = self._cache is not None and destination not in self._checked  # once a process: a copy ahead of
        if check and self._cache is not None:  # the ledger, or of a revision written again, is of an undone history
            undone = self._cache.undone(destination, before, lambda r: self._token_at(conn, destination, r))
            if undone is not None:
                told.append((undone[0], "rewritten" if undone[1] else "copy"))
        if seen is not None and seen.epoch == epoch and seen.revision > before.revision:
            told.append((seen.revision, "seen"))
        if told:  # past the highest revision seen of the undone history (a save's: the revision that save took)
            past = max(copied + 1 if by == "seen" else copied for copied, by in told)
            revision, epoch = self._new_epoch(conn, destination, before, past)

        def committed(revision: int = int(revision), epoch: str | None = epoch) -> None:
            if check:
                self._checked.add(destination)
            for copied, by in told:
                went_back(destination, before, copied, seen=by == "seen", rewritten=by == "rewritten")
                if by != "seen" and self._cache is not None:
                    self._cache.drop(destination)
            self._seen[destination] = Counter(revision - 1, epoch)

        self._db.after_commit(committed)
        return int(revision)

    def _restore_found(self, destination: str) -> None:
        """After a read: a copy on this host was found ahead of the ledger (:meth:`StateCache.load`). Unless the
        counter, read again, has since reached the copy in the same epoch (another process's save committed
        after the read's snapshot, and its plan kept the copy: no restore), the restore is told and the counter
        gets a new epoch, so no host's copy of the undone history is used (a write of its own)."""
        found = self._cache.behind.pop(destination, None) if self._cache is not None else None
        if found is not None:
            self._tell_restore(destination, *found)

    def saved_plan_restored(self, destination: str, made: Counter) -> bool:
        """A saved plan's counter ``made`` (``apply`` refusing it): whether the ledger's counter, of its epoch, is
        behind its revision, or holds another token for it (the ledger restored from a backup after the plan was
        made). If so, told and the counter given a new epoch, as a read finding a copy ahead does
        (:meth:`_restore_found`: the same transaction and checks), rather than left for the next plan or save."""
        if made.epoch is None:
            return False  # a plan file of an rfmsync before epochs: no proof
        with self._db.read() as conn:
            now = self._counter(conn, destination)
            if now.epoch != made.epoch:
                return False
            if now.revision < made.revision:
                token = None
            elif made.token is not None and self._token_at(conn, destination, made.revision) not in (None, made.token):
                token = made.token
            else:
                return False
        return self._tell_restore(destination, now, made.revision, token, plan=True)

    def _tell_restore(self, destination: str, counter: Counter, copied: int, token: str | None, *,
                      plan: bool = False) -> bool:
        """The restore a read found (``counter`` behind a copy at revision ``copied``, or holding another token
        than the copy's ``token`` for it; with ``plan``, the copy is a saved plan) told and the counter given a
        new epoch, in one write transaction that checks it first (:meth:`_still_behind`); on a ledger this
        process cannot write, told only. Whether it was (False: another process's save reached the copy, or
        another gave the new epoch, meanwhile)."""
        told = False
        try:
            with self._db.write() as conn:
                if not self._still_behind(conn, destination, counter, copied, token):
                    return False
                went_back(destination, counter, copied, rewritten=token is not None, plan=plan)
                told = True
                self._new_epoch(conn, destination, counter, copied)
        except LedgerError as exc:  # a ledger this process only reads (mode=ro, a standby): the read stands
            if not told:
                with self._db.read() as conn:
                    if not self._still_behind(conn, destination, counter, copied, token):
                        return False
                went_back(destination, counter, copied, rewritten=token is not None, plan=plan)
            log.warning("ledger: could not give destination %r's revision counter a new epoch (%s): other hosts' "
                        "copies are checked by their own reads", destination, exc)
        return True

    def _still_behind(self, conn: "Connection", destination: str, counter: Counter, copied: int,
                      token: str | None) -> bool:
        """Whether ``destination``'s counter, read now, is still of ``counter``'s epoch and behind the copy at
        revision ``copied`` (else another process's save reached it, or another's read gave the new epoch); with
        ``token`` (the copy's, not ahead), whether the ledger still holds another token for ``copied``."""
        now = self._counter(conn, destination)
        if now.epoch != counter.epoch:
            return False
        if token is None:
            return now.revision < copied
        return self._token_at(conn, destination, copied) not in (None, token)

    def _new_epoch(self, conn: "Connection", destination: str, counter: Counter, past: int) -> tuple[int, str | None]:
        """Give ``destination``'s counter a new epoch and a revision past ``past`` (the highest seen of the
        history a restore undid, so a plan saved at one of its revisions never matches the ledger again: ``apply``
        refuses it), unless another process did since ``counter`` was read (its counter then stands). The
        counter's revision and epoch now."""
        revision = state_revisions.c.revision
        if conn.execute(update(state_revisions).where(state_revisions.c.destination == destination,
                                                      state_revisions.c.epoch == counter.epoch)
                        .values(epoch=uuid.uuid4().hex,
                                revision=case((revision > past, revision), else_=past + 1))).rowcount:
            self._db.after_commit(lambda: self._forget_history(destination))
            self._stamp(conn, destination, self._counter(conn, destination).revision)  # (a new epoch's revision)
        now = self._counter(conn, destination)
        return now.revision, now.epoch

    def _forget_history(self, destination: str) -> None:
        """After a new epoch committed: the rows this object's revisions wrote, and this host's copy, are of
        another history."""
        self._written.drop(destination)
        if self._cache is not None:
            self._cache.drop(destination)
