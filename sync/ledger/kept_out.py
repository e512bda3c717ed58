"""Operations kept out by the contact's own choice in the ESP (the ``kept_out`` table): he unsubscribed from the list
or from all mailings, the ESP blocked his address, Mailchimp holds it in a compliance state.

Not failures: an apply reports them with :attr:`sync.model.ItemResult.kept_out`; they are recorded here (and a
failure an older run recorded for the same operation is resolved), counted as ``kept_out`` in the run, never listed
as pending by ``rfmsync failures``, and the next plans leave the operation out
(:func:`sync.planning.kept_out.without_kept_out`), whatever the source says of his consent later: rfmsync never
resubscribes anyone. A full refresh (``--full-refresh``) plans them again: the ESP is asked once more. A row is
deleted once its operation succeeds (the apply's outcome writer: he came back himself and a full refresh or a
re-entry found him) or is no longer wanted (the planner: he left the segment, the tag is no longer desired), so a
contact who re-enters the segment is read once again.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

from sqlalchemy import and_, delete, or_, select

from ..model import ItemResult
from .db import LedgerDB, chunks, clip
from .schema import failures, kept_out


#: a ``kept_out_ops`` asked for more contacts than this reads the destination's rows once instead of by key
BY_KEY_LIMIT = 5000


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

    def kept_out_ops(self, destination: str, keys: Iterable[str] | None = None) -> dict[str, frozenset[str]]:
        """The operations kept out of ``destination``, by contact key (usually none: one small read); with ``keys``,
        only those contacts' rows, read by key (a webhook resync's few contacts, not the whole table; past
        :data:`BY_KEY_LIMIT` keys, the destination's rows read once and filtered)."""
        out: dict[str, set[str]] = {}
        t = kept_out
        query = select(t.c.key, t.c.op).where(t.c.destination == destination)
        wanted = None if keys is None else sorted(set(keys))
        with self._db.read() as conn:
            if wanted is None or len(wanted) > BY_KEY_LIMIT:
                found = conn.execute(query).all()
            else:
                found = [row for chunk in chunks(wanted, 500) for row in conn.execute(query.where(t.c.key.in_(chunk)))]
        only = None if wanted is None or len(wanted) <= BY_KEY_LIMIT else set(wanted)
        for key, op in found:
            if only is None or key in only:
                out.setdefault(key, set()).add(op)
        return {key: frozenset(ops) for key, ops in out.items()}

    def has_kept_out(self, destination: str) -> bool:
        """Whether any operation is kept out of ``destination`` (one indexed look-up)."""
        t = kept_out
        with self._db.read() as conn:
            return conn.execute(select(t.c.key).where(t.c.destination == destination).limit(1)).first() is not None

    def forget_kept_out(self, destination: str, keys_ops: Iterable[tuple[str, str]]) -> int:
        """Delete these ``(key, op)`` rows of ``destination``: the operation has since succeeded (he came back
        himself, a full refresh or a re-entry read him and put him there) or is no longer wanted (he left the
        segment): a later add of it is planned, read and sent again. Returns the rows deleted."""
        pairs = list(dict.fromkeys(keys_ops))
        if not pairs:
            return 0
        t, gone = kept_out, 0
        with self._db.write() as conn:
            for chunk in chunks(pairs, 500):
                cond = or_(*(and_(t.c.key == k, t.c.op == op) for k, op in chunk))
                gone += conn.execute(delete(t).where(t.c.destination == destination, cond)).rowcount
        return gone

    def kept_out_list(self, destination: str | None = None, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every operation kept out (oldest first): destination, key, op, reason, kept_at, run_id; with ``keys``,
        only those contacts' (``rfmsync explain``: one customer's, read by key)."""
        t = kept_out
        query = select(t).order_by(t.c.destination, t.c.kept_at, t.c.key, t.c.op)
        if destination is not None:
            query = query.where(t.c.destination == destination)
        wanted = None if keys is None else sorted(set(keys))
        with self._db.read() as conn:
            if wanted is None:
                return [dict(r) for r in conn.execute(query).mappings()]
            rows = [dict(r) for chunk in chunks(wanted, 500) for r in conn.execute(query.where(t.c.key.in_(chunk)))
                    .mappings()]
        return sorted(rows, key=lambda r: (r["destination"], r["kept_at"], r["key"], r["op"]))


__all__ = ["KeptOutLog", "KeptOutRecorder"]
