"""Source cursors: where the last successful pull of each (source, object) got to (and the schedule's last
fire time). A cursor is saved only after its run succeeded."""

from __future__ import annotations

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


def write_cursor(db: LedgerDB, conn: Connection, source: str, obj: str, value: str) -> None:
    """Save a cursor inside ``conn``'s transaction (with the writes it belongs with)."""
    ins = db.insert(cursors).values(source=source, obj=obj, value=value, updated_at=db.clock())
    conn.execute(ins.on_conflict_do_update(
        index_elements=[cursors.c.source, cursors.c.obj],
        set_={"value": ins.excluded.value, "updated_at": ins.excluded.updated_at}))
