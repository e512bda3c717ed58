"""Runs: every sync, pull, scheduled or webhook run, with its status, counts and error.

A run is recorded ``running`` with its owner (``host:pid:run``); a process killed mid-run never finishes it,
so the next run started on that host marks it ``abandoned``. One interrupted (Ctrl-C, or SIGTERM to the CLI:
:class:`sync.errors.Terminated`) records itself ``interrupted`` on its way out (:func:`ended_if_interrupted`).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Protocol, Sequence

from sqlalchemy import select, update

from ..errors import Terminated
from ..signal_hold import written_held
from .db import LedgerDB, clip
from .owners import owner_process_gone, process_owner
from .schema import runs

log = logging.getLogger(__name__)

RUN_STATUSES = ("running", "succeeded", "partial", "failed", "refused", "stopped", "interrupted", "abandoned")
#: refused: a guard stopped it, nothing written; stopped: a stop asked for (serve's SIGTERM) ended it between two
#: batches; interrupted: Ctrl-C (or SIGTERM to the CLI) ended it at once, its calls out cut off
#: (:meth:`RunLog.interrupt_run`, not :meth:`RunLog.finish_run`)
FINISHED_STATUSES = ("succeeded", "partial", "failed", "refused", "stopped")


class RunRecorder(Protocol):
    """Records a run: start it, then finish it with a status and counts."""

    def start_run(self, kind: str, destination: str | None = None,
                  counts: Mapping[str, Any] | None = None) -> int: ...

    def finish_run(self, run_id: int, status: str, counts: Mapping[str, Any], error: str | None = None) -> None: ...

    def interrupt_run(self, run_id: int, counts: Mapping[str, Any], error: str) -> bool: ...


class RunHistory(Protocol):
    """Reads past runs (``rfmsync runs``, ``/runs``, the customer-drop guard)."""

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]: ...

    def last_run_counts(self, destination: str, key: str, statuses: Sequence[str] = ("succeeded", "partial"),
                        scan: int = 200) -> dict[str, Any] | None: ...

    def get_run(self, run_id: int) -> dict[str, Any] | None: ...


class RunLog:
    """The ``runs`` table."""

    def __init__(self, db: LedgerDB) -> None:
        self._db = db

    def start_run(self, kind: str, destination: str | None = None, counts: Mapping[str, Any] | None = None) -> int:
        """Record a run as ``running`` (owned by this process) with ``counts`` known at its start (the input's, a
        withdrawals-alone run's mark: an abandoned run keeps them); returns its id.

        Runs left ``running`` by a killed process of this host are marked ``abandoned`` first
        (see :meth:`abandon_dead_runs`), so every sync, scheduled or webhook run cleans up after a crash.
        """
        self.abandon_dead_runs()
        with self._db.write() as conn:
            run_id = conn.execute(runs.insert().values(
                kind=kind, destination=destination, status="running", started_at=self._db.clock(),
                counts=json.dumps(dict(counts or {}), sort_keys=True), owner=process_owner()
            ).returning(runs.c.id)).scalar_one()
        log.debug("ledger: run %d started (%s %s)", run_id, kind, destination or "")
        return int(run_id)

    def finish_run(self, run_id: int, status: str, counts: Mapping[str, Any],
                   error: str | None = None) -> None:
        """Close a run with ``succeeded``, ``partial``, ``failed`` or ``refused`` (a guard) and its counts."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"finish_run: status must be one of {', '.join(FINISHED_STATUSES)}, not {status!r}")
        with self._db.write() as conn:
            updated = conn.execute(update(runs).where(runs.c.id == run_id).values(
                status=status, finished_at=self._db.clock(), counts=json.dumps(dict(counts), sort_keys=True),
                error=clip(error))).rowcount
        if not updated:
            raise ValueError(f"finish_run: no run with id {run_id}")

    def interrupt_run(self, run_id: int, counts: Mapping[str, Any], error: str) -> bool:
        """Close run ``run_id`` as ``interrupted`` (with its counts so far) if it is still ``running``: a run
        already closed (the interrupt came after its finish) keeps its status. Whether it was closed here."""
        with self._db.write() as conn:
            return bool(conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "running").values(
                status="interrupted", finished_at=self._db.clock(),
                counts=json.dumps(dict(counts), sort_keys=True), error=clip(error))).rowcount)

    def abandon_dead_runs(self) -> list[int]:
        """Mark ``running`` runs whose process (on this host) no longer exists as ``abandoned``.

        A run records its owner ``host:pid``; a process killed mid-run (kill -9, OOM, power cut) never
        finishes it. Runs of other hosts cannot be checked from here and stay ``running`` until a
        process on their own host starts. Returns the ids marked. Runs from before schema version 4
        have no owner and are left alone.
        """
        with self._db.read() as conn:
            rows = conn.execute(select(runs.c.id, runs.c.owner).where(
                runs.c.status == "running", runs.c.owner.is_not(None))).all()
        gone = [(run_id, owner) for run_id, owner in rows if owner_process_gone(owner)]
        if not gone:
            return []
        found = f"{self._db.clock():%Y-%m-%d %H:%M:%S} UTC"
        with self._db.write() as conn:
            for run_id, owner in gone:  # finished_at stays empty: the run never finished
                conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "running").values(
                    status="abandoned",
                    error=f"abandoned: the process that ran it ({owner.rsplit(':', 1)[0]}) ended without "
                          f"finishing it (killed or crashed); found at {found}"))
        log.warning("ledger: marked %d runs of killed processes as abandoned: %s", len(gone),
                    ", ".join(str(r) for r, _ in gone))
        return [run_id for run_id, _ in gone]

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first: id, kind, destination, started_at, finished_at, duration_s, status, counts, error."""
        with self._db.read() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit)).mappings().all()
        return [_run_dict(r) for r in rows]

    def last_run_counts(self, destination: str, key: str, statuses: Sequence[str] = ("succeeded", "partial"),
                        scan: int = 200) -> dict[str, Any] | None:
        """The counts of the newest run of ``destination`` with one of ``statuses`` whose counts hold ``key``
        (e.g. the customer count a full sync records), looking at its last ``scan`` runs; None when none."""
        with self._db.read() as conn:
            rows = conn.execute(select(runs.c.counts).where(
                runs.c.destination == destination, runs.c.status.in_(list(statuses))
            ).order_by(runs.c.id.desc()).limit(scan)).scalars().all()
        for raw in rows:
            counts = json.loads(raw or "{}")
            if key in counts:
                return counts
        return None

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        with self._db.read() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        return None if row is None else _run_dict(row)


@contextmanager
def ended_if_interrupted(ledger: RunRecorder, run_id: int, counts: Mapping[str, Any],
                         what: str = "") -> Iterator[None]:
    """Run ``run_id`` is recorded ``interrupted`` (:meth:`RunLog.interrupt_run`) when the block is left by an
    interruption (KeyboardInterrupt: Ctrl-C; :class:`~sync.errors.Terminated`: SIGTERM to the CLI), not left
    ``running`` until the next run finds its process gone; an error (``Exception``) is the block's own to
    record. ``what``: what an interrupted run leaves behind, said in its error. A ledger that fails here is
    logged; the interruption is what is raised."""
    try:
        yield
    except Exception:
        raise
    except BaseException as exc:
        record_interrupted(ledger, run_id, counts, what, exc)
        raise


def record_interrupted(ledger: RunRecorder, run_id: int, counts: Mapping[str, Any], what: str,
                       exc: BaseException) -> None:
    """Record run ``run_id`` ``interrupted`` by ``exc`` (a run closed already keeps its status: an apply records
    it as soon as the interruption reaches it, before its cleanup's waits, :func:`ended_if_interrupted` again after
    them). A second SIGTERM or Ctrl-C while it writes is held until the write is done (:func:`written_held`),
    then ends the process as it would have: so the run is not left ``running`` by a second signal during its
    cleanup. It is held :data:`~sync.signal_hold.BOUND` seconds at most (a third signal, not at all): a write the
    ledger blocks longer (locked by another process, unreachable) is left unfinished, the run ``running`` until the
    next run marks it abandoned; one the ledger fails is logged, the same."""
    how = "SIGTERM" if isinstance(exc, Terminated) else \
        "Ctrl-C (SIGINT)" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__
    try:
        written_held(lambda: ledger.interrupt_run(run_id, counts, f"interrupted by {how}{what}"))
    except Exception as again:
        log.error("ledger: run %d was interrupted by %s but could not be recorded so (%s); the next run marks "
                  "it abandoned", run_id, how, type(again).__name__)


def _run_dict(r: Mapping[str, Any]) -> dict[str, Any]:
    started, finished = r["started_at"], r["finished_at"]
    return {
        "id": r["id"], "kind": r["kind"], "destination": r["destination"],
        "started_at": started, "finished_at": finished,
        "duration_s": (finished - started).total_seconds() if finished else None,
        "status": r["status"], "counts": json.loads(r["counts"]), "error": r["error"],
    }
