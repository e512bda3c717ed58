"""Per-item failures: items an ESP refused, kept (with attempts and the last error) until they succeed."""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime
from typing import Any, Iterable, Iterator, Protocol, Sequence

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from ..model import ItemResult, failed_results, ok_pairs
from .db import LedgerDB, chunks, clip
from .schema import failures, runs


def settled_pairs(pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """The ``(key, op)`` failures the operations ``pairs`` that succeeded settle: each one itself, and a removal
    (``tag-<name>``) the add of that tag too: an add whose outcome was unknown is in doubt
    (:func:`sync.planning.plan.in_doubt`) until it is done again or the tag is taken off."""
    for key, op in pairs:
        yield key, op
        if op.startswith("tag-"):
            yield key, "tag+" + op[4:]


class FailureRecorder(Protocol):
    """Folds each item's outcome into the ledger (an apply ``on_results`` callback)."""

    def record_results(self, destination: str, run_id: int | None, results: Iterable[ItemResult]) -> None: ...


class PendingFailures(Protocol):
    """Lists the failures still pending (``rfmsync failures``)."""

    def pending_failures(self, destination: str | None = None) -> list[dict[str, Any]]: ...


class FailureLog:
    """The ``failures`` table."""

    def __init__(self, db: LedgerDB) -> None:
        self._db = db

    def record_failures(self, destination: str, run_id: int | None, failures_: Iterable[ItemResult]) -> int:
        """Upsert failed items by (destination, key, op): attempts += 1, last error and time.

        Items with ``ok=True`` are ignored (see :meth:`record_results`). Returns rows recorded.
        """
        now = self._db.clock()
        rows = [{"destination": destination, "key": r.key, "op": r.op, "attempts": 1,
                 "last_error": clip(r.error), "first_failed_at": now, "last_failed_at": now,
                 "run_id": run_id} for r in failures_ if not r.ok and not r.kept_out]
        if not rows:
            return 0
        t = failures
        ins = self._db.insert(t)
        stmt = ins.on_conflict_do_update(
            index_elements=[t.c.destination, t.c.key, t.c.op],
            set_={"attempts": t.c.attempts + 1, "last_error": ins.excluded.last_error,
                  "last_failed_at": ins.excluded.last_failed_at, "run_id": ins.excluded.run_id})
        try:
            with self._db.write() as conn:
                for chunk in chunks(rows):
                    conn.execute(stmt, list(chunk))
        except IntegrityError:
            raise ValueError(f"record_failures: run {run_id} does not exist in the ledger") from None
        return len(rows)

    def resolve_failures(self, destination: str, keys_ops: Iterable[tuple[str, str]]) -> int:
        """Forget failures that have since succeeded; returns how many were pending."""
        return self._resolve(destination, self._pending(destination), keys_ops)

    def _pending(self, destination: str) -> set[tuple[str, str]]:
        t = failures
        with self._db.read() as conn:  # usually nothing is pending: one cheap read instead of big OR deletes
            return set(conn.execute(select(t.c.key, t.c.op).where(t.c.destination == destination)).all())

    def _resolve(self, destination: str, pending: set[tuple[str, str]], keys_ops: Iterable[tuple[str, str]]) -> int:
        if not pending:
            return 0
        pairs = [p for p in dict.fromkeys(keys_ops) if p in pending]
        if not pairs:
            return 0
        resolved = 0
        t = failures
        with self._db.write() as conn:
            for chunk in chunks(pairs, 500):
                cond = or_(*(and_(t.c.key == k, t.c.op == op) for k, op in chunk))
                resolved += conn.execute(delete(t).where(t.c.destination == destination, cond)).rowcount
        return resolved

    def record_results(self, destination: str, run_id: int | None, results: Iterable[ItemResult]) -> None:
        """Record failed items and resolve succeeded ones: usable as an apply ``on_results`` callback."""
        results = results if isinstance(results, Sequence) else list(results)
        self.record_failures(destination, run_id, failed_results(results))  # columns read as they are
        pending = self._pending(destination)
        if pending:  # usually none: then the successes are not even listed
            self._resolve(destination, pending, settled_pairs(ok_pairs(results)))

    def pending_failures(self, destination: str | None = None) -> list[dict[str, Any]]:
        """Unresolved failures (oldest first): destination, key, op, attempts, last_error,
        first_failed_at, last_failed_at, run_id."""
        query = select(failures).order_by(failures.c.destination, failures.c.first_failed_at,
                                          failures.c.key, failures.c.op)
        if destination is not None:
            query = query.where(failures.c.destination == destination)
        with self._db.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def doubted_ops(self, destination: str, keys: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """``(key, op)`` of the destination's pending adds (``tag+…``) and upserts: the operations in doubt
        (:mod:`sync.planning.doubt`), read without the rest of each row (a big outage leaves millions); of
        ``keys`` only when given, read by key (a webhook resync's few contacts)."""
        query = select(failures.c.key, failures.c.op).where(
            failures.c.destination == destination, or_(failures.c.op.like("tag+%"), failures.c.op == "upsert"))
        with self._db.read() as conn:
            if keys is None:
                return [(k, op) for k, op in conn.execute(query)]
            return [(k, op) for chunk in chunks(sorted(set(keys)), 500)
                    for k, op in conn.execute(query.where(failures.c.key.in_(chunk)))]

    def upsert_sent_since(self, destination: str, keys: Iterable[str] | None = None) -> dict[str, datetime]:
        """The destination's pending failed upserts (the retry gave up, an answer not read, in doubt after a run that
        ended without finishing), by key (of ``keys`` only when given: at most 500, one read), each with the earliest
        time (the ledger's clock: the host's) its lost send can have gone: the start of the run that sent it. That is
        the earlier of the failure's run (the last run it failed in; a doubt's: the run that left it in flight) and
        the run under way when it first failed (one that failed again in later runs); neither found (run rows deleted
        by hand): when it first failed. Usually none: one keyed read (the failures' primary key), the runs read only
        when some are pending. The driver's rows, each distinct pair of times worked out once (a big outage leaves a
        million failures, with a few hundred such pairs: SQLAlchemy's rows cost ~6 µs of CPU a failure)."""
        f, r = failures, runs
        query = select(f.c.key, f.c.first_failed_at, r.c.started_at).select_from(
            f.outerjoin(r, r.c.id == f.c.run_id)).where(f.c.destination == destination, f.c.op == "upsert")
        with self._db.read() as conn:
            raw = conn.execute(query if keys is None else query.where(f.c.key.in_(sorted(set(keys))))).cursor.fetchall()
            if not raw:
                return {}
            kind = f.c.first_failed_at.type.dialect_impl(conn.dialect)  # (SQLite: text; PostgreSQL: datetimes)
            convert = kind.result_processor(conn.dialect, None) or (lambda v: v)
            pairs: dict[tuple[Any, Any], Any] = dict.fromkeys((failed, started) for _, failed, started in raw)
            times = {v: convert(v) for v in {v for pair in pairs for v in pair}}
            failed_at = [times[failed] for failed, _ in pairs]
            floor = select(func.max(r.c.started_at)).where(r.c.destination == destination,
                                                           r.c.started_at <= min(failed_at)).scalar_subquery()
            # the starts of the runs under way when the failures first failed: from the one under way at the first
            starts = sorted(conn.execute(select(r.c.started_at).where(
                r.c.destination == destination, r.c.started_at <= max(failed_at),
                or_(r.c.started_at >= floor, floor.is_(None)))).scalars())
        for (failed, started) in pairs:
            i = bisect_right(starts, times[failed])
            pairs[failed, started] = min(t for t in (times[started], starts[i - 1] if i else None, times[failed])
                                         if t is not None)
        return {key: pairs[failed, started] for key, failed, started in raw}
