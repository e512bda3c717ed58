"""Operations in flight: what an apply is sending, durable before its first ESP call.

An apply's outcomes reach the ledger as its calls answer (:mod:`sync.outcomes`); a process killed (SIGKILL, the
OOM killer, a crash) after the ESP carried out an add but before its outcome was written leaves no trace of it:
the ledger says nothing was pushed, and the tag would stay on a contact who later withdraws or leaves for ever. So
:func:`sync.engine.execute_plan`, under the destination's lock and before any ESP call, writes the operations the
ESP may carry out for good (the adds ``tag+<name>``, a list's too, and the upserts that create a contact) as one
``in_flight`` row of its run, and deletes that row when the apply ends normally (every call answered, its outcome
written) or fails before its first write call; one that fails or is interrupted past it keeps only the operations
its calls carried (:meth:`InFlight.narrow_in_flight`: the others were never sent; a process killed keeps them all).
Durable against the process's end, not always against a power cut: SQLite's WAL with ``synchronous = NORMAL``
(:mod:`sync.ledger.db`) may lose the transactions committed since its last sync to disk, this row among them;
PostgreSQL (``synchronous_commit`` on) keeps it.

A row left behind is a run killed, or one that failed, was stopped or interrupted with calls out (a call that
raised may have been carried out though no outcome says so): its operations are in doubt. The plans read them as
they read the pending failed adds (:meth:`InFlight.stale_ops`, with
:meth:`~sync.ledger.failures.FailureLog.doubted_ops`: :mod:`sync.planning.doubt`), and the next apply of the
destination, holding its lock (so no other run of it is sending), turns them into pending failures
(:meth:`InFlight.doubt_in_flight`), the path of an add whose answer was lost: taken off once no longer his, settled
by that removal or by the add done again. The operations whose outcome the killed run did record (the ledger's
pushed state holds the tag, the contact; or the ESP kept it out, or kept out the contact's create: ``kept_out``)
are left out.

One row per run (its keys compressed, :func:`_pack`), not one per operation: a first sync of a million contacts
writes and deletes one row, not two million (~1 CPU s against ~9: BENCHMARKS.md, "inflight30").
"""

from __future__ import annotations

import json
import logging
import zlib
from datetime import datetime
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Mapping

from sqlalchemy import delete, func, select

from ..model import PushedState
from .db import LedgerDB
from .owners import owner_process_gone
from .locks import apply_lock
from .schema import failures, in_flight, kept_out, locks, runs

log = logging.getLogger(__name__)

#: pending failures written per statement by :meth:`InFlight.doubt_in_flight`
DOUBT_ROWS = 10_000


def in_flight_ops(changes: Iterable[Any]) -> dict[str, list[str]]:
    """The operations of ``changes`` (:class:`~sync.model.ContactChange`) the ESP may carry out though rfmsync
    never learns it, by op: each add (``tag+<name>``) and each upsert that creates the contact (``upsert``).
    A removal or a field's write is left out: done again, or left undone, it keeps or takes nothing away."""
    ops: dict[str, list[str]] = {}  # in the order each op first comes (an upsert before its contact's adds)
    creates: list[str] | None = None
    adds: dict[str, list[str]] = {}  # by tag: no op name made, no list made and dropped, for each add
    for c in changes:
        if c.create:
            if creates is None:
                creates = ops["upsert"] = []
            creates.append(c.key)
        if c.add_tags:
            for tag in c.add_tags:
                keys = adds.get(tag)
                if keys is None:
                    keys = adds[tag] = ops[f"tag+{tag}"] = []
                keys.append(c.key)
    return ops


def _pack(ops: Mapping[str, list[str]]) -> bytes:
    """``{op: keys}`` compressed (zlib): a JSON header line ``[[op, its key count], ...]``, then each op's keys, one
    a line (a million keys joined and encoded in C: a JSON array of them costs twice the time); a key holding a line
    break (no normalised address or phone does) is written in the header as a list instead."""
    header, parts = [], []
    for op, keys in ops.items():
        text = "\n".join(keys)
        if text.count("\n") == len(keys) - 1:
            header.append([op, len(keys)])
            parts.append(text)
        else:
            header.append([op, list(keys)])
    # compressed part by part (the same stream as the whole body's): no copy of a million keys joined again
    packer = zlib.compressobj(1)
    out = [packer.compress(json.dumps(header, separators=(",", ":")).encode("utf-8", "surrogatepass"))]
    for text in parts:
        out += [packer.compress(b"\n"), packer.compress(text.encode("utf-8", "surrogatepass"))]
    out.append(packer.flush())
    return b"".join(out)


def _unpack(blob: bytes) -> Iterator[tuple[str, str]]:
    head, _, rest = zlib.decompress(bytes(blob)).decode("utf-8", "surrogatepass").partition("\n")
    lines = iter(rest.split("\n")) if rest else iter(())
    for op, keys in json.loads(head):
        for key in (keys if isinstance(keys, list) else (next(lines) for _ in range(keys))):
            yield key, op


class InFlight:
    """The ``in_flight`` table."""

    def __init__(self, db: LedgerDB) -> None:
        self._db = db

    def note_in_flight(self, destination: str, run_id: int, ops: Mapping[str, list[str]]) -> int:
        """Write run ``run_id``'s operations in flight (:func:`in_flight_ops`) in one row; the count written."""
        count = sum(map(len, ops.values()))
        if count:
            with self._db.write() as conn:
                conn.execute(in_flight.insert().values(destination=destination, run_id=run_id, ops=count,
                                                       pairs=_pack(ops)))
        return count

    def clear_in_flight(self, destination: str, run_id: int) -> None:
        """The run's apply ended normally (or before its first write call): its operations are no longer in
        flight."""
        t = in_flight
        with self._db.write() as conn:
            conn.execute(delete(t).where(t.c.destination == destination, t.c.run_id == run_id))

    def narrow_in_flight(self, destination: str, run_id: int, ops: Mapping[str, list[str]]) -> int:
        """Run ``run_id``'s apply failed or was interrupted past its first write call: its row keeps only ``ops``,
        the operations its calls carried (:mod:`sync.dispatch`; the others were never sent: plainly pending, not in
        doubt), none left: the row is deleted. The count kept."""
        count = sum(map(len, ops.values()))
        t = in_flight
        with self._db.write() as conn:
            mine = (t.c.destination == destination) & (t.c.run_id == run_id)
            if count:
                conn.execute(t.update().where(mine).values(ops=count, pairs=_pack(ops)))
            else:
                conn.execute(delete(t).where(mine))
        return count

    def in_flight_count(self, destination: str) -> int:
        """How many operations the destination's rows hold (a killed run's: in doubt; a running apply's)."""
        with self._db.read() as conn:
            return int(conn.execute(select(func.coalesce(func.sum(in_flight.c.ops), 0)).where(
                in_flight.c.destination == destination)).scalar() or 0)

    def doubted_destinations(self) -> list[str]:
        """The destinations holding an operation that may be in doubt: a pending failed add or upsert, or a row
        in flight (a killed run's, a running apply's), sorted; the removed ones' are warned of
        (:func:`sync.planning.retired.removed_destinations`)."""
        f = failures
        with self._db.read() as conn:
            names = set(conn.execute(select(f.c.destination).where(
                f.c.op.like("tag+%") | (f.c.op == "upsert")).distinct()).scalars())
            names.update(conn.execute(select(in_flight.c.destination).distinct()).scalars())
        return sorted(names)

    def stale_ops(self, destination: str, keys: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """``(key, op)`` left in flight by the destination's runs that ended without finishing, of ``keys`` only
        when given (a webhook resync's): :meth:`stale`'s operations."""
        return self.stale(destination, keys)[0]

    def stale(self, destination: str, keys: Iterable[str] | None = None
              ) -> tuple[list[tuple[str, str]], frozenset[int]]:
        """``(key, op)`` left in flight by the destination's runs that ended without finishing, of ``keys`` only
        when given (a webhook resync's), and the ids of those runs (read in one go: a plan records which it read,
        :attr:`~sync.planning.plan.Plan.in_flight_read`). A run's row is written and deleted under the
        destination's lock (:func:`apply_lock`), so every row is stale once nobody holds that lock (released, or
        its time to live lapsed: a killed process of another host too), and so is a row of a run recorded as
        ended, or ``running`` but owned by a process of this host that no longer exists. Read only: a dry run's
        plan sees them too."""
        t, r, lk = in_flight, runs, locks
        with self._db.read() as conn:
            if conn.execute(select(t.c.run_id).where(t.c.destination == destination).limit(1)).first() is None:
                return [], frozenset()  # nearly always: one keyed look
            rows = conn.execute(select(t.c.run_id, t.c.pairs, r.c.status, r.c.owner).select_from(
                t.outerjoin(r, r.c.id == t.c.run_id)).where(t.c.destination == destination)).all()
            lock = conn.execute(select(lk.c.owner, lk.c.expires_at).where(lk.c.name == apply_lock(destination))
                                ).first()
        held = lock is not None and lock.expires_at > self._db.clock() and not owner_process_gone(lock.owner)
        wanted = None if keys is None else set(keys)
        dead = [(run_id, pairs) for run_id, pairs, status, owner in rows
                if not held or status != "running" or (owner is not None and owner_process_gone(owner))]
        return ([(key, op) for _, pairs in dead for key, op in _unpack(pairs) if wanted is None or key in wanted],
                frozenset(run_id for run_id, _ in dead))

    def in_flight_runs(self, destination: str) -> frozenset[int]:
        """The ids of the runs whose operations in flight the destination holds (one keyed read)."""
        with self._db.read() as conn:
            return frozenset(conn.execute(select(in_flight.c.run_id).where(
                in_flight.c.destination == destination)).scalars())

    def doubt_in_flight(self, destination: str, run_id: int | None,
                        states: Callable[[list[str]], Mapping[str, PushedState]]) -> int:
        """Turn the operations the destination's other runs left in flight into pending failures (in doubt:
        :mod:`sync.planning.doubt`) and delete their rows; called under the destination's lock by run ``run_id``
        (None: an apply before its run is started, which has no row yet), so no other run of it is sending. An operation whose outcome the ledger holds (``states(keys)``: the
        pushed state holds the tag, or the contact for an upsert) is left out, and so is one that run's answers kept
        out (``kept_out``: the contact's own choice in the ESP), or whose contact's create they kept out (the ESP
        holds no such contact: no tag was put on him); a failure already pending keeps its row. A doubt first failed
        when its run started (its send was no earlier: a later run's check of a create in doubt,
        :meth:`~sync.ledger.failures.FailureLog.upsert_sent_since`, dates the send by it, however often it fails
        again). The failures written.

        A killed first sync of a million contacts leaves two million: they go in ``executemany`` blocks of
        :data:`DOUBT_ROWS` rows, each a tuple (the run's constants bound once: no dict, text or date conversion
        a row), unpacked again for the write rather than kept: ~3 CPU s and +130 MB at 200 k contacts, against
        ~8 and +300 through SQLAlchemy's executemany of dicts (BENCHMARKS.md, "fixi30")."""
        t, r = in_flight, runs
        with self._db.read() as conn:
            rows = conn.execute(select(t.c.run_id, t.c.pairs, r.c.id, r.c.started_at).select_from(
                t.outerjoin(r, r.c.id == t.c.run_id)).where(
                t.c.destination == destination, *(() if run_id is None else (t.c.run_id != run_id,)))).all()
        if not rows:
            return 0
        state = states(list(dict.fromkeys(key for _, pairs, _, _ in rows for key, _ in _unpack(pairs))))
        kept = self._kept_out_by(destination, [d for d, _, _, _ in rows])
        doubted = 0
        with self._db.write() as conn:
            to_db = failures.c.first_failed_at.type.bind_processor(conn.dialect)  # converted once, not a row
            mark = "%s" if conn.dialect.name == "postgresql" else "?"

            def db_time(when: datetime) -> Any:
                v = to_db(when) if to_db else when
                return v.isoformat(" ") if mark == "?" and isinstance(v, datetime) else v
            now = self._db.clock()
            at = db_time(now)
            sql = (f"INSERT INTO failures (destination, key, op, attempts, last_error, first_failed_at, "
                   f"last_failed_at, run_id) VALUES ({', '.join([mark] * 8)}) "
                   f"ON CONFLICT (destination, key, op) DO NOTHING")
            for dead, pairs, known, began in rows:  # (a run row deleted since: the failure names none)
                first = at if began is None else db_time(min(began, now))  # in doubt since its run began
                error = (f"in doubt: run {dead} ended without finishing (killed, or stopped on an error) while "
                         f"this operation was in flight: whether the ESP carried it out is unknown")
                refused = kept.get(dead, {})
                left = ((destination, key, op, 1, error, first, at, known) for key, op in _unpack(pairs)
                        if not _recorded(state.get(key), op) and not _kept_out(refused.get(key), op))
                while block := list(islice(left, DOUBT_ROWS)):
                    conn.exec_driver_sql(sql, block)
                    doubted += len(block)
            conn.execute(delete(t).where(t.c.destination == destination, t.c.run_id.in_([d for d, _, _, _ in rows])))
        if doubted:
            log.warning("sync %s: %d operations of runs that ended without finishing (%s) are in doubt: the ESP may "
                        "have carried them out; the plans take those tags off whoever no longer gets them",
                        destination, doubted, ", ".join(str(d) for d, _, _, _ in rows))
        return doubted


    def _kept_out_by(self, destination: str, run_ids: list[int]) -> dict[int, dict[str, set[str]]]:
        """The operations the ESP kept out (``kept_out``: the contact's own choice) by the answers of runs
        ``run_ids``, by run and key: their outcomes are recorded (usually none: one keyed read)."""
        t, out = kept_out, {}
        with self._db.read() as conn:
            for run_id, key, op in conn.execute(select(t.c.run_id, t.c.key, t.c.op).where(
                    t.c.destination == destination, t.c.run_id.in_(run_ids))):
                out.setdefault(run_id, {}).setdefault(key, set()).add(op)
        return out


def _kept_out(ops: set[str] | None, op: str) -> bool:
    """Whether the run's answers kept ``op`` out (``ops``: what they kept out of the contact): the operation
    itself, or his create (``upsert``: the ESP holds no such contact, so no tag of his was added either)."""
    return ops is not None and (op in ops or "upsert" in ops)


def _recorded(prev: PushedState | None, op: str) -> bool:
    """Whether the ledger holds ``op``'s outcome: the tag among his pushed tags, or (an upsert) the contact."""
    if prev is None:
        return False
    return op[4:] in prev.tags if op.startswith("tag+") else prev.exists
