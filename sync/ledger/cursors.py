"""Source cursors: where the last successful pull of each (source, object) got to (and the schedule's last
fire time). A cursor is saved only after its run succeeded."""

from __future__ import annotations

import uuid
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.engine import Connection

from .db import LedgerDB
from .schema import cursors


class Cursors(Protocol):
    """Reads and saves a bookmark by (source, object)."""

    def get_cursor(self, source: str, obj: str) -> str | None: ...

    def set_cursor(self, source: str, obj: str, value: str) -> None: ...


class CursorTable:
    """The ``cursors`` table."""

    def __init__(self, db: LedgerDB) -> None:
        self._db = db

    def get_cursor(self, source: str, obj: str) -> str | None:
        with self._db.read() as conn:
            return conn.execute(select(cursors.c.value).where(
                cursors.c.source == source, cursors.c.obj == obj)).scalar()

    def set_cursor(self, source: str, obj: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"cursor value for {source}/{obj} must be a str, not {type(value).__name__}")
        with self._db.write() as conn:
            write_cursor(self._db, conn, source, obj, value)

    def ledger_id(self, *, create: bool = False) -> str | None:
        """:func:`ledger_id`."""
        return ledger_id(self._db, create=create)


#: the ledger's identity, a cursor row: a random id made the first time a plan is saved or applied against it
#: (``plan -o`` and the library's ``api.plan_to_save``, which create the ledger for it if there is none yet;
#: ``apply``, :func:`sync.run.check_ledger_id`), carried in the plan file (``ledger_id``): a plan is applied only to
#: the ledger it was made against, not to another config's ledger holding nothing yet (docs/sync.md#plan)
LEDGER_ID = ("ledger", "id")


def ledger_id(db: LedgerDB, *, create: bool = False) -> str | None:
    """The ledger's random id (None: none made yet, and not ``create``). Made once: of two hosts making it at
    once, the first insert wins and both read it back."""
    source, obj = LEDGER_ID
    with db.read() as conn:
        found = conn.execute(select(cursors.c.value).where(cursors.c.source == source, cursors.c.obj == obj)).scalar()
    if found is not None or not create:
        return found
    with db.write() as conn:
        conn.execute(db.insert(cursors).values(source=source, obj=obj, value=uuid.uuid4().hex, updated_at=db.clock())
                     .on_conflict_do_nothing(index_elements=[cursors.c.source, cursors.c.obj]))
        return conn.execute(select(cursors.c.value).where(cursors.c.source == source, cursors.c.obj == obj)).scalar()


def write_cursor(db: LedgerDB, conn: Connection, source: str, obj: str, value: str) -> None:
    """Save a cursor inside ``conn``'s transaction (with the writes it belongs with)."""
    ins = db.insert(cursors).values(source=source, obj=obj, value=value, updated_at=db.clock())
    conn.execute(ins.on_conflict_do_update(
        index_elements=[cursors.c.source, cursors.c.obj],
        set_={"value": ins.excluded.value, "updated_at": ins.excluded.updated_at}))
