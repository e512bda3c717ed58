"""Operations kept out by the contact's own choice in the ESP (the ``kept_out`` table): he unsubscribed from the list
or from all mailings, the ESP blocked his address, Mailchimp holds it in a compliance state.

Not failures: an apply reports them with :attr:`sync.model.ItemResult.kept_out`; they are recorded here (and a
failure an older run recorded for the same operation is resolved), counted as ``kept_out`` in the run, never listed
as pending by ``rfmsync failures``, and the next plans leave the operation out
(:func:`sync.planning.kept_out.without_kept_out`), whatever the source says of his consent later: rfmsync never
resubscribes anyone. A full refresh (``--full-refresh``) plans them again: the ESP is asked once more.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

from sqlalchemy import and_, delete, or_, select

from ..model import ItemResult
from .db import LedgerDB, chunks, clip
from .schema import failures, kept_out


class KeptOutRecorder(Protocol):
    def record_kept_out(self, destination: str, run_id: int | None, results: Iterable[ItemResult]) -> int: ...


class KeptOutLog:
    """The ``kept_out`` table."""

    def __init__(self, db: LedgerDB) -> None:
        self._db = db

    def record_kept_out(self, destination: str, run_id: int | None, results: Iterable[ItemResult]) -> int:
        """Record the results marked :attr:`~sync.model.ItemResult.kept_out` (the others are ignored), by
        (destination, key, op): the reason and time of the latest; a pending failure of the same operation is
        resolved. Returns the rows recorded."""
        now = self._db.clock()
        rows = {(r.key, r.op): {"destination": destination, "key": r.key, "op": r.op, "reason": clip(r.error),
                                "kept_at": now, "run_id": run_id} for r in results if r.kept_out}
        if not rows:
            return 0
        t = kept_out
        ins = self._db.insert(t)
        stmt = ins.on_conflict_do_update(index_elements=[t.c.destination, t.c.key, t.c.op],
                                         set_={"reason": ins.excluded.reason, "kept_at": ins.excluded.kept_at,
                                               "run_id": ins.excluded.run_id})
        f = failures
        with self._db.write() as conn:
            for chunk in chunks(list(rows.values())):
                conn.execute(stmt, list(chunk))
            for chunk in chunks(list(rows), 500):
                conn.execute(delete(f).where(f.c.destination == destination,
                                             or_(*(and_(f.c.key == k, f.c.op == op) for k, op in chunk))))
        return len(rows)

    def kept_out_ops(self, destination: str) -> dict[str, frozenset[str]]:
        """The operations kept out of ``destination``, by contact key (usually none: one small read)."""
        out: dict[str, set[str]] = {}
        t = kept_out
        with self._db.read() as conn:
            for key, op in conn.execute(select(t.c.key, t.c.op).where(t.c.destination == destination)).all():
                out.setdefault(key, set()).add(op)
        return {key: frozenset(ops) for key, ops in out.items()}

    def kept_out_list(self, destination: str | None = None) -> list[dict[str, Any]]:
        """Every operation kept out (oldest first): destination, key, op, reason, kept_at, run_id."""
        t = kept_out
        query = select(t).order_by(t.c.destination, t.c.kept_at, t.c.key, t.c.op)
        if destination is not None:
            query = query.where(t.c.destination == destination)
        with self._db.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]


__all__ = ["KeptOutLog", "KeptOutRecorder"]
