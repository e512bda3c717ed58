"""Ingest: pull a source into the order store, segment from the store, remember the score cut points.

The steps :func:`sync.api.pull` and :func:`sync.api.run_sync` take for API sources (and for a file source
synced by ``rfmsync sync``): the source's cursor is saved only after the store merge succeeded, the data
guards may refuse a staged pull before it touches the store, and the last full run's cut points are kept
for the webhook re-scoring (:mod:`sync.serve.resync`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date
from typing import Sequence

import duckdb

from connectors.source import Progress, PullResult
from segmentation import Thresholds
from segmentation.errors import interrupted_query
from segmentation.scoring import RecencyCollapse

from .config import Config
from .errors import GuardRefusedError
from .guards import DataStats, data_lines
from .ledger import Ledger
from .ledger.runs import ended_if_interrupted
from .pipeline import Reading, SegmentsRun, compute_segments, configured_source, pull_into, pull_lines, store_path
from .planning.planner import needs_predictions
from .settings import Settings
from .store import connect_store
from .store.gone import SweepLimit

#: the error of a pull interrupted (after ``interrupted by Ctrl-C (SIGINT)``, ``... SIGTERM``)
PULL_INTERRUPTED = ": the next pull reads again what it had not merged (its cursor moves after the merge)"


def pull_to_store(cfg: Config, ledger: Ledger, con: duckdb.DuckDBPyConnection, settings: Settings, *,
                  full: bool = False, progress: Progress = None, guarded: bool = False,
                  reading: Reading = Reading(), allow_mass_change: bool = False) -> PullResult:
    """Pull the source into the order store; the cursor is saved only after the store merge succeeded.

    ``guarded``: the data guards (``min_orders``, ``max_bad_rows_pct``) see the staged pull first; when one
    trips, the store and the cursor are left as they were and the pull run is recorded as ``refused``.
    ``reading``: how a file source's files are read (``--reread``, ``--verify``). A whole read empties the stored
    contacts the source's list no longer shows, no more than the guards allow unless ``allow_mass_change``."""
    source = configured_source(cfg, settings)
    name = str(cfg.source.get("type", "file"))
    cursor = None if full else ledger.get_cursor(name, "all")
    run_id = ledger.start_run("pull")

    def refuse_on_data_guards(result) -> None:
        stats = staged_stats(con, result)
        lines = data_lines(cfg.guards, stats)
        if lines:
            ledger.finish_run(run_id, "refused", stats.counts(), error="; ".join(lines))
            raise GuardRefusedError(lines)

    try:
        with ended_if_interrupted(ledger, run_id, {}, PULL_INTERRUPTED):  # Ctrl-C, SIGTERM: not left running
            result = pull_into(con, source, cursor, progress=progress, reading=reading,
                               before_merge=refuse_on_data_guards if guarded else None,
                               sweep_limit=SweepLimit(cfg.guards.min_mass_change, cfg.guards.max_removal_pct,
                                                      allow_mass_change))
    except GuardRefusedError:
        raise
    except Exception as exc:
        if interrupted_query(exc):  # Ctrl-C (SIGTERM) inside a DuckDB statement, which raised this instead
            ledger.interrupt_run(run_id, {}, f"interrupted inside a query{PULL_INTERRUPTED}")
        else:
            ledger.finish_run(run_id, "failed", {}, error=str(exc))
        raise
    if result.cursor is not None:
        ledger.set_cursor(name, "all", result.cursor)
    ledger.finish_run(run_id, "succeeded", {"orders": result.orders, "contacts": result.contacts,
                                            "bad_rows": result.bad_row_count,
                                            **{k: n for k, n in (("unstored_orders", result.unstored_orders),
                                                                 ("unchanged_orders", result.unchanged_orders),
                                                                 ("unchanged_contacts", result.unchanged_contacts),
                                                                 ("cleaned_values", result.issue_count),
                                                                 ("anonymous_orders", result.anonymous_orders))
                                               if n}})
    return result


def kept_apart(result: PullResult) -> list[str]:
    """What a pull read and kept apart but did not refuse, as ``rfmsync pull`` says it: values cleaned from kept
    records (an invalid e-mail or phone), sales of nobody (walk-in)."""
    from connectors.counts import counted

    return ([f"{counted(result.issue_count, 'value')} cleaned, the records kept"] if result.issue_count else []) + (
        [f"{counted(result.anonymous_orders, 'sale')} with no customer, e-mail or phone (walk-in), not segmented"]
        if result.anonymous_orders else [])


def staged_stats(con: duckdb.DuckDBPyConnection, result: PullResult) -> DataStats:
    """The data-guard numbers of a staged pull: orders the store will hold after the merge (a full refresh
    replaces it; an incremental pull adds at most its orders), the valid and bad rows read."""
    orders = result.orders
    if not result.full_refresh:
        orders += con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
    return DataStats(orders=orders, rows=rows_read(result), bad_rows=result.bad_row_count, window=result.incremental)


def rows_read(result: PullResult) -> int:
    """The valid order rows a pull read, the base of ``max_bad_rows_pct``: those an incremental pull's lookback
    read again unchanged too (its bad rows read again are counted: leaving the good ones out refused quiet pulls)."""
    return result.orders + result.unchanged_orders


def run_stats(run: SegmentsRun) -> DataStats:
    """The data-guard numbers of a segmented run (orders it segmented, rows read, customers)."""
    orders = run.con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
    rows = rows_read(run.pull) if run.pull is not None else orders
    return DataStats(orders=orders, rows=rows, bad_rows=run.bad_row_count, customers=run.result.customers,
                     recency=run.result.recency_collapse, window=run.pull is not None and run.pull.incremental)


def segments_from_store(cfg: Config, ledger: Ledger, settings: Settings, *, as_of: date | None = None,
                        destinations: Sequence[str] | None = None, pull: bool = True, full: bool = False,
                        guarded: bool = False, reading: Reading = Reading(),
                        allow_mass_change: bool = False) -> SegmentsRun:
    con = connect_store(store_path(cfg))
    try:
        result = pull_to_store(cfg, ledger, con, settings, full=full, guarded=guarded, reading=reading,
                               allow_mass_change=allow_mass_change) \
            if pull else None
        run = compute_segments(cfg, as_of, con=con, settings=settings,
                               predict=needs_predictions(cfg, destinations))
    except BaseException:
        con.close()
        raise
    run.pull = result
    run.warnings[:0] = pull_lines(result)
    # a CRM pull's values cleaned and walk-in sales, said as `rfmsync pull` says them (a file's issues: its lines)
    if result is not None and not result.full_refresh and (apart := kept_apart(result)):
        run.warnings.insert(0, f"pulled from {cfg.source.get('type')}: {'; '.join(apart)}")
    save_cut_points(con, run)
    return run


def save_cut_points(con: duckdb.DuckDBPyConnection, run: SegmentsRun) -> None:
    """Remember the last full run's score cut points in the store, for incremental (webhook) re-scoring, with
    the collapse of its recency scores (:func:`~segmentation.scoring.recency_collapse`), which refuses a resync.
    A run that scored nobody (no completed order, or none by its as-of) has no cut points: the last one that
    scored somebody stays (none yet: the next resync segments every customer once)."""
    res = run.result
    if not res.customers:
        return
    con.execute("CREATE TABLE IF NOT EXISTS segmentation_runs (as_of DATE, preset VARCHAR, levels INTEGER, "
                "cut_points JSON, customers BIGINT, created_at TIMESTAMPTZ DEFAULT now())")
    con.execute("ALTER TABLE segmentation_runs ADD COLUMN IF NOT EXISTS recency_collapse JSON")  # older stores
    collapse = json.dumps(asdict(res.recency_collapse)) if res.recency_collapse is not None else None
    con.execute("INSERT INTO segmentation_runs (as_of, preset, levels, cut_points, customers, recency_collapse) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [res.as_of, res.preset, res.levels, json.dumps(res.cut_points.model_dump()), res.customers, collapse])


def load_cut_points(con: duckdb.DuckDBPyConnection):
    """The cut points of the last full run, or None when there was none."""
    last = load_last_full_run(con)
    return last[0] if last is not None else None


def load_last_full_run(con: duckdb.DuckDBPyConnection) -> tuple[Thresholds, RecencyCollapse | None] | None:
    """The last full run's cut points and the collapse of its recency scores (None: they did not collapse, or
    the run was saved by an rfmsync that did not record it), or None when there was no full run."""
    exists = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'segmentation_runs'").fetchall()
    if not exists[0][0]:
        return None
    columns = {c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() "
                                         "WHERE table_name = 'segmentation_runs'").fetchall()}
    collapse = "recency_collapse" if "recency_collapse" in columns else "NULL"
    row = con.execute(f"SELECT cut_points, {collapse} FROM segmentation_runs ORDER BY created_at DESC LIMIT 1"
                      ).fetchall()
    if not row:
        return None
    cut_points, recency = row[0]
    return Thresholds(**json.loads(cut_points)), RecencyCollapse(**json.loads(recency)) if recency else None
