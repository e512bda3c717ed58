"""A destination moved to another audience or type (docs/sync.md#another-audience): what the ledger knew of the
old one is forgotten and the new target recorded, in one transaction, before the move's first ESP call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from sqlalchemy import delete

from .cursors import write_cursor
from .locks import check_lock_held
from .schema import failures, lost_tags, pushed_state

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .db import LedgerDB
    from .statecache import StateCache, WrittenRevisions


class StateMoves:
    """:meth:`move_state`, a part of :class:`~sync.ledger.state.PushedStates`."""

    _db: "LedgerDB"
    _cache: "StateCache | None"
    _written: "WrittenRevisions"

    _bump_revision: Callable[["Connection", str], int]  # PushedStates': the revision moved on, in the transaction

    def move_state(self, destination: str, cursor: tuple[str, str], target: str,
                   lock: tuple[str, str] | None = None) -> int:
        """Forget everything ``destination``'s ledger holds of what rfmsync pushed (its pushed state, the tags it
        lost, its failures, the cached copy) and save ``target`` as the cursor ``cursor`` (source, object), in
        one transaction that bumps the revision (a plan made before is stale). The rows forgotten. ``lock``:
        (name, owner) that must still hold the destination's lock."""
        with self._db.write() as conn:
            if lock is not None:
                check_lock_held(conn, *lock)
            deleted = conn.execute(delete(pushed_state).where(pushed_state.c.destination == destination)).rowcount
            for table in (lost_tags, failures):
                conn.execute(delete(table).where(table.c.destination == destination))
            revision = self._bump_revision(conn, destination)
            write_cursor(self._db, conn, *cursor, target)
        self._written.note(destination, revision, 0)
        if self._cache is not None:
            self._cache.drop(destination)
        return int(deleted)


__all__ = ["StateMoves"]
