"""Segment history around a run: record a run's segments in the order store (the tables and rules are in
:mod:`sync.store.history`; every run segments the store itself, so it reads the history there).

``sync`` records after its apply (:func:`snapshot` before the run closes, :func:`record_snapshot` after);
``segments --record`` records at once (:func:`record_run`); the webhook resync records its affected customers
once its guards passed and its apply ran (:func:`record_partial`): a refused resync records nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow

from .store import STORE_LOCK, connect_store
from .store import history
from .store.history_partial import current_mark

if TYPE_CHECKING:
    from .config import Config
    from .pipeline import SegmentsRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """A run's (customer_id, segment), kept in memory until the run is recorded, and the store's latest webhook
    record (:func:`~sync.store.history_partial.current_mark`) when it was taken: the customers a webhook
    records for the same day in between (during a sync's apply) keep the webhook's segment, which saw newer
    orders than this snapshot did."""

    segments: pyarrow.Table
    mark: int | None  # None: a webhook's partial record (the mark matters to full records only)


def snapshot(run: "SegmentsRun") -> Snapshot:
    """The run's (customer_id, segment) and the store's webhook mark, kept until the run is recorded."""
    return Snapshot(run.con.sql(f"SELECT customer_id, segment FROM {run.result.table}").to_arrow_table(),
                    current_mark(run.con))


def record_snapshot(cfg: "Config", snap: Snapshot, as_of: date, *, source: str,
                    wait_seconds: float = 30.0) -> history.RecordResult:
    """Record a snapshot in the config's order store (opened, and waited for, like every store writer)."""
    from .pipeline import store_path

    with STORE_LOCK:
        con = connect_store(store_path(cfg), wait_seconds=wait_seconds)
        try:
            con.register("_history_snap", snap.segments)
            return history.record(con, "_history_snap", as_of=as_of, preset=cfg.segmentation.preset,
                                  rules_hash=history.rules_hash(cfg.segmentation), source=source, mark=snap.mark)
        finally:
            con.close()


def record_run(cfg: "Config", run: "SegmentsRun", *, source: str = "segments") -> history.RecordResult:
    """Record a run's segments as of its date (``segments --record``); an earlier date than the last record is
    a :class:`~sync.store.history.HistoryOrderError` (exit 3)."""
    if run.result.preset != cfg.segmentation.preset:
        raise ValueError("record_run: the run was segmented with another preset than the config's")
    return record_snapshot(cfg, snapshot(run), run.result.as_of, source=source)


def _record_logged(cfg: "Config", snap: Snapshot, as_of: date, source: str, wait_seconds: float,
                   what: str) -> history.RecordResult | None:
    """:func:`record_snapshot`, a history problem logged: it never fails a run that wrote its ESPs."""
    from .errors import LockBusyError

    try:
        return record_snapshot(cfg, snap, as_of, source=source, wait_seconds=wait_seconds)
    except (history.HistoryOrderError, LockBusyError, duckdb.Error) as exc:  # e.g. a store with a foreign table
        log.warning("%s: %s", what, str(exc).splitlines()[0])
        return None


def record_after_sync(cfg: "Config", snap: Snapshot, as_of: date) -> history.RecordResult | None:
    """``sync`` records once its apply ran; a history problem never fails a sync that wrote its ESPs (logged)."""
    result = _record_logged(cfg, snap, as_of, "sync", 30.0, "segment history not recorded")
    if result is None:
        return None
    if result.new_line:
        log.info("segment history: line %d started on %s (preset %s)", result.line, as_of, cfg.segmentation.preset)
    return result


def record_partial(cfg: "Config", segments: pyarrow.Table, as_of: date,
                   wait_seconds: float = 60.0) -> history.RecordResult | None:
    """The webhook resync's record of its affected customers' (customer_id, segment) (a partial record, see
    :mod:`sync.store.history`), made once the resync's guards passed and its apply ran, as ``sync`` records after
    its apply: a refused resync's scores (collapsed recency scores, a plan refused) never enter the history,
    whose moves give the next syncs' transition tags. Never fails the resync (logged)."""
    result = _record_logged(cfg, Snapshot(segments, None), as_of, "webhook", wait_seconds,
                            "webhook resync: segment history not recorded")
    if result is not None and result.skipped:
        log.info("webhook resync: segment history not recorded: %s", result.skipped)
    return result


def open_history(cfg: "Config", *, write: bool = False) -> duckdb.DuckDBPyConnection | None:
    """A connection to the order store for ``rfmsync history``; None when there is no store yet (reading never
    creates it)."""
    from .pipeline import store_path

    path = store_path(cfg)
    if not path.exists() and not write:
        return None
    return connect_store(path)


def customer_segments(run: "SegmentsRun", customer_id: str) -> list[dict]:
    """One customer's segment history for ``rfmsync explain``: {line, segment, valid_from, valid_to} (ISO dates,
    ``valid_to`` None = still), oldest first; empty when nothing is recorded or the store is in use."""
    from .pipeline import store_path

    con, close = run.con, False
    if not history.has_history(con):
        path = store_path(run.config)
        if not path.exists() or _is_file(con, path):  # the store itself, with nothing recorded yet
            return []
        try:
            con, close = duckdb.connect(str(path), read_only=True), True
        except duckdb.Error as exc:
            log.warning("the order store %s is in use; segment history left out (%s)", path,
                        str(exc).splitlines()[0])
            return []
    try:
        rows = history.customer_history(con, customer_id)
    finally:
        if close:
            con.close()
    return [{**r, "valid_from": r["valid_from"].isoformat(),
             "valid_to": r["valid_to"].isoformat() if r["valid_to"] else None} for r in rows]


def _is_file(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """Whether ``con``'s database is the file ``path`` (a second connection to it in this process would fail)."""
    [(db,)] = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    return db is not None and Path(db).resolve() == path.resolve()


def history_report(cfg: "Config", *, since: date | None = None, matrix: bool = False,
                   date_from: date | None = None, date_to: date | None = None) -> dict:
    """What ``rfmsync history`` shows, JSON-ready: the lines (a new line = the preset or the rules changed),
    the recorded runs and the segment sizes at each; with ``matrix`` (or a date), the from → to matrix between
    two dates (default: the last two recorded dates of the current line)."""
    from .errors import DataError

    con = open_history(cfg)
    if con is None:
        return {"lines": [], "records": [], "sizes": []} if not matrix else _no_history()
    try:
        if not matrix:
            return {"lines": history.lines(con), "records": history.records(con, since),
                    "sizes": history.sizes(con, since)}
        dates = history.recorded_dates(con)
        if date_to is None:
            date_to = dates[-1] if dates else None
        if date_from is None and date_to is not None:
            earlier = [d for d in dates if d < date_to]
            date_from = earlier[-1] if earlier else None
        if date_from is None or date_to is None:
            raise DataError("history: fewer than two recorded dates on the current history line; record another "
                            "run (sync or segments --record), or give --from and --to")
        return {"from": date_from, "to": date_to, "line": history.line_on(con, date_to),
                "matrix": history.transition_matrix(con, date_from, date_to)}
    finally:
        con.close()


def _no_history() -> dict:
    from .errors import DataError

    raise DataError("history: nothing recorded yet (every sync records, and segments --record)")


def prune(cfg: "Config", before: date) -> dict[str, int]:
    """``rfmsync history --prune-before DATE``: drop the history that lies wholly before ``before``."""
    con = open_history(cfg)
    if con is None:
        return {"rows": 0, "records": 0, "lines": 0}
    try:
        return history.prune_before(con, before)
    finally:
        con.close()


__all__ = ["Snapshot", "customer_segments", "history_report", "open_history", "prune", "record_after_sync",
           "record_partial", "record_run", "record_snapshot", "snapshot"]
