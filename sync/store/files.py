"""A file source in the order store: each export file read once, remembered by its fingerprint.

Every file the source's patterns match is noted in ``ingest_files`` with its fingerprint (of the bytes its read
read: :mod:`sync.store.file_prints`): path, size, mtime and a hash of its first and last 64 KiB (plus a hash of the
whole file when read with ``verify``) and a hash of the ``[source]`` table it was read under. Each order in
``orders`` carries the file it came from (``file_id``).
A file's rows as read (bad ones included) are kept in a table of their own (``ingest_f<file id>``) only when a
rule crosses files; otherwise ``orders`` is the one copy (:mod:`sync.store.file_lean`).

On the next run a file whose fingerprint is unchanged is not read again:

* every file unchanged (and none gone): nothing is read or staged; the store's ``orders``/``contacts``/
  ``line_items`` are the export already, and the last staging's bad-row report is read back from
  ``ingest_bad_rows`` (per file and row), and its warnings (a repeated order id, a receipt total repeated on its
  lines) from its summary: every run that reads the files says them;
* a file new or changed: only that file is read; a changed file's rows are replaced (its old rows go);
* a file gone: its rows leave the store, and the run says so (:func:`gone_lines`); a file renamed (or moved)
  within the patterns, the same bytes now under another matched path, is named as renamed, not gone: its rows are
  read under the new name (a fresh read's);
* a file with rows bad as dated in the future (``ingest_files.future_at``: the earliest) is read again, as
  changed, once that date is no longer past the run's clock + the tolerance, so a warm run is a fresh one;
* an orders file with rows without an order id and the same bytes as another (a copy under a new name): every
  run names it (:func:`file_lines`), since those rows count twice.

The lean path (no contact or receipt-line fields, ids on every row, no order id in two files, no webhook
records) stages the new files alone and swaps rows by file id. Otherwise the files' rows, all of them in the order
of :meth:`~connectors.files.FileSource.files`, are staged exactly as a fresh read stages them (repeated order
ids, contacts shared across files, identity and bad rows are decided over every file, as a full read does) and
replace the store's rows (the webhook-records rule of :mod:`sync.store` holds); an unchanged file read the lean
way is then read again, once, for its table. ``reread`` reads every file again
(a file with the same fingerprint keeps its first ``read_at``).

Crash safety: the staged rows, the new fingerprints and the bad-row report are committed in one transaction
(:func:`~sync.store.merge.merge_staged`'s ``before_commit``, or the lean path's own). A file table written
before a crash or a refused merge is not in ``ingest_files``, so the next run drops it and reads the file again:
nothing is counted twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import duckdb

from connectors.file_sql import persist_loaded
from connectors.file_staging import FilePullResult, LoadedFile, drop_scratch, future_tolerance
from connectors.files import FileSource
from connectors.digits import digits
from connectors.errors import ConnectorError, TransientError
from connectors.file_paths import NothingMatches, check_gone, pattern_matches, vanished
from connectors.source import Progress

from .connection import store_transaction
from .file_gone import alike, create_gone_table, first_read, remember, remembered, same_bytes
from .file_lean import (LeanChange, commit_lean, drop_lean_indexes, drop_staged_view, file_counts, lean_source,
                        lean_store, stage_lean)
from .file_prints import Fingerprint, copied_files, early_print, fingerprint, read_printed  # noqa: F401
from .file_report import BAD_TABLE, FILES_TABLE, SUMMARY_TABLE, read_back, save_report
from .lookup import drop_lookup_indexes
from .merge import FileReads, merge_staged, unordered
from .scratch import scratch_dir

log = logging.getLogger(__name__)

TABLE_PREFIX = "ingest_f"
TEMP_PREFIX = "_ingest_t"  # a file read by the lean path: temp tables, gone once its rows are in ``orders``
READS_TABLE = "_ingest_reads"  # temp: each file's read time for the merge, the files read this run included
FORMAT = 11  # bumped when a file's stored rows change: all read again (8: unrecognised consent values are no,
# reported; 9: a consent's trailing punctuation and the unambiguous phrases read: "Да." is yes; 10: a returned
# receipt line's quantity negative, a receipt number of two customers two receipts, the last file's returns at a time;
# identity keys: a phone's extension kept and e-mails NFKC-folded, so rows read before and after split no customer;
# 11: a receipt's total repeated on each line counted once, a line's price from its amount when none is given, an
# XLSX cell merged over rows filling them, a receipt's lines a later file writes again read once)


@dataclass
class Ingested:
    """What :func:`ingest_files` did: the pull (read back from the store when nothing was read), the files
    read this run, the files gone since the last run (their rows removed)."""

    pull: FilePullResult
    read: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    lean: bool = False  # the new files' rows were staged alone (:mod:`sync.store.file_lean`)

    @property
    def warm(self) -> bool:
        return not self.read and not self.gone


def gone_lines(gone: list[str], renamed: list[tuple[str, str]] = ()) -> list[str]:
    """One warning per removed file, and one per file renamed (``(old, new)``: the same bytes under a new path)."""
    return [f"{path}: the file is gone; its rows were removed from the order store" for path in gone] + [
        f"{old} was renamed {new} (the same bytes): its rows are read under the new name" for old, new in renamed]


def file_lines(pull: object) -> list[str]:
    """The warnings of a file source's pull: its files' encoding guesses (read now or before), the files gone since
    the last run, and every orders file with the same bytes as one read before it (an order without an order id
    gets one made from its file and row: a copy counts it twice)."""
    return list(getattr(pull, "encoding_guesses", [])) + gone_lines(getattr(pull, "gone_files", []),
                                                                     getattr(pull, "renamed_files", [])) + [
        f"{earlier} and {later} have the same bytes: both files are read, so their rows without an order id "
        "count twice"
        for earlier, later in getattr(pull, "copied_files", [])]


def create_ingest_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""CREATE TABLE IF NOT EXISTS {FILES_TABLE} (file_id BIGINT PRIMARY KEY, role VARCHAR NOT NULL,
        path VARCHAR NOT NULL, size BIGINT, mtime_ns BIGINT, head_tail VARCHAR, full_hash VARCHAR,
        config VARCHAR, cols JSON, fast BOOLEAN, rows BIGINT, no_cust BIGINT, no_oid BIGINT,
        read_at TIMESTAMPTZ DEFAULT now(), lean BOOLEAN DEFAULT false)""")
    con.execute(f"ALTER TABLE {FILES_TABLE} ADD COLUMN IF NOT EXISTS lean BOOLEAN DEFAULT false")
    # the file's earliest order date that was a bad row as a date in the future: read again once it is not
    con.execute(f"ALTER TABLE {FILES_TABLE} ADD COLUMN IF NOT EXISTS future_at TIMESTAMPTZ")
    # its encoding guesses (connectors.file_guesses), a JSON list: said again by the runs that read its stored rows
    con.execute(f"ALTER TABLE {FILES_TABLE} ADD COLUMN IF NOT EXISTS guesses VARCHAR")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {BAD_TABLE} (file_id BIGINT NOT NULL, seq INTEGER NOT NULL,
        kind VARCHAR NOT NULL, row BIGINT, field VARCHAR, reason VARCHAR, value VARCHAR)""")
    con.execute(f"CREATE TABLE IF NOT EXISTS {SUMMARY_TABLE} (summary JSON)")
    create_gone_table(con)
    if not con.execute("SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() AND "
                       "schema_name = 'main' AND table_name = 'orders' AND column_name = 'file_id'").fetchall()[0][0]:
        drop_lookup_indexes(con)  # DuckDB alters no table that has an index
        con.execute("ALTER TABLE orders ADD COLUMN file_id BIGINT")  # the file an order came from (else NULL)


#: ``[source]`` keys the stored rows do not depend on (:func:`config_hash`)
_NOT_IN_ROWS = {"quiet_seconds"}


def config_hash(source: FileSource) -> str:
    """What the stored rows depend on besides the file: the ``[source]`` table and the stored format. Left out, the
    keys that change when a file is read, not its rows: ``quiet_seconds`` (so a store of a release before it keeps
    its files)."""
    text = json.dumps([FORMAT, source.cfg.model_dump(mode="json", exclude=_NOT_IN_ROWS), source._text_only],
                      sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def ingest_files(con: duckdb.DuckDBPyConnection, source: FileSource, *, reread: bool = False,
                 verify: bool = False, before_merge: Callable[[FilePullResult], None] | None = None,
                 progress: Progress = None) -> Ingested:
    """Bring the store up to date with the source's files, reading only the new and changed ones (see above).

    ``before_merge`` sees the staged pull first and may raise to leave the store as it was (the data guards).
    ``progress`` is told the rows of each file as it is read."""
    create_ingest_tables(con)
    _drop_orphans(con)
    started = datetime.now(timezone.utc)  # the files read now are as new as this (FileReads.read_started)
    try:
        orders, contacts = source.files()
    except NothingMatches as exc:
        raise matched_before(exc, source, _catalogue(con)) from None
    wanted = [("orders", p) for p in orders] + [("contacts", p) for p in contacts]
    stored = {(row["role"], row["path"]): row for row in _catalogue(con)}
    cfg = config_hash(source)
    try:  # (with ``verify``, every byte of a file whose quick fingerprint is unchanged: that decides whether it is)
        prints = {key: early_print(key[1], stored.get((key[0], str(key[1]))), verify and not reread, cfg)
                  for key in wanted}
    except FileNotFoundError as exc:
        raise vanished(exc.filename) from None
    latest = source.clock() + future_tolerance(source.cfg)  # a row dated up to this is no longer in the future
    keep = {key: stored[(key[0], str(key[1]))] for key in wanted
            if not reread and _unchanged(stored.get((key[0], str(key[1]))), prints[key], cfg, latest, verify)}
    gone = sorted({path for role, path in stored} - {str(p) for _, p in wanted})
    check_gone(gone)  # a mount point disconnected under the pattern: not gone, retried
    rows = con.execute(f"SELECT summary FROM {SUMMARY_TABLE}").fetchall()
    summary = json.loads(rows[0][0]) if rows else None
    # (a summary an older rfmsync saved keeps no warnings: staged once more from the rows the store keeps; on the
    # lean path, its orders' customer ids looked at: file_lean._zeros)
    if len(keep) == len(wanted) and len(stored) == len(keep) and summary is not None and "warnings" in summary:
        pull = read_back(con, summary)
        pull.copied_files = copied_files(prints, {key: row["no_oid"] for key, row in keep.items()})
        pull.encoding_guesses = _guesses(wanted, keep, {})
        return Ingested(pull)

    before = read_back(con, summary) if summary is not None else None
    next_id = con.execute(f"SELECT COALESCE(max(file_id), 0) + 1 FROM {FILES_TABLE}").fetchall()[0][0]
    ids = {key: row["file_id"] for key, row in keep.items()}
    for key in wanted:
        if key not in keep:
            ids[key], next_id = next_id, next_id + 1
    # a file read again with the same bytes ([source] edit, FORMAT bump, --reread) is as old as its first read:
    # its export must not now win over a webhook refund or consent accepted since; one that may have changed: now
    known = [*stored.values(), *remembered(con)]  # under any path: a file moved or renamed, or back again
    kept_ids = {row["file_id"] for row in keep.values()}
    dropped = [row for row in stored.values() if row["file_id"] not in kept_ids]  # changed or gone
    lean = lean_source(source) and lean_store(con, list(keep.values()), summary)
    new: dict[tuple[str, Path], LoadedFile] = {}
    relisted: list[int] = []  # unchanged files read the lean way before, read again now for their tables
    counts: dict[tuple[str, Path], tuple[int, int, int]] = {}
    try:
        with scratch_dir() as tmp:
            for key in wanted:
                if key not in keep:  # into temp tables: the store gets the rows once, or a copy (below)
                    table = f"{TEMP_PREFIX}{ids[key]}"
                    new[key], prints[key] = read_printed(source, con, key, table, Path(tmp), verify)
                    counts[key] = file_counts(con, new[key])
                    if progress is not None:
                        progress(counts[key][0])
            read_at = {key: first_read(known, prints[key], started) for key in new}  # the bytes read
            result, change = None, None
            if lean:
                change = LeanChange(new=list(new.values()), new_ids=[ids[k] for k in new],
                                    counts=[counts[k] for k in new], dropped=[r["file_id"] for r in dropped],
                                    dropped_paths={r["path"] for r in dropped},
                                    place={str(p): i for i, (_, p) in enumerate(wanted)},
                                    kept_places={r["file_id"]: i for i, k in enumerate(wanted) if (r := keep.get(k))},
                                    said=summary.get("warnings") if summary is not None else None,
                                    kept_fast=all(bool(r["fast"]) for r in keep.values()),
                                    kept_rows=sum(r["rows"] or 0 for r in keep.values()))
                result = stage_lean(con, source, change, before)  # staged_orders: a view over the rows read
                if result is None:
                    drop_staged_view(con)
                    drop_scratch(con)
            if result is None:
                change = None
                tables = {}
                for key in wanted:
                    name = f"{TABLE_PREFIX}{ids[key]}"
                    if key in new:  # the rows as read, with their row numbers: in any order (no rewrite at close)
                        with unordered(con):
                            tables[key] = persist_loaded(con, new[key], name)
                    elif keep[key]["lean"]:
                        lf, fp = read_printed(source, con, key, f"{TEMP_PREFIX}{ids[key]}", Path(tmp), False)
                        if not same_bytes(keep[key], fp):  # no longer the bytes its stored rows came from
                            raise TransientError(f"{key[1]}: the file changed while the export folder was read "
                                                 "(still being written or copied?); nothing was stored: run again")
                        with unordered(con):
                            tables[key] = persist_loaded(con, lf, name)
                        relisted.append(ids[key])
                        if progress is not None:
                            progress(keep[key]["rows"] or 0)
                    else:
                        tables[key] = _loaded(keep[key])
                if relisted:
                    log.info("file source: %d unchanged file(s) read again: their rows were kept in the order "
                             "store only, and this change is decided over every file's rows", len(relisted))
                drop_scratch(con)
                order_keys = [k for k in wanted if k[0] == "orders"]
                result = source.stage(con, [tables[k] for k in order_keys],
                                      [tables[k] for k in wanted if k[0] == "contacts"],
                                      file_ids=[ids[k] for k in wanted])  # orders files first
        if before_merge is not None:
            before_merge(result)

        def save(con: duckdb.DuckDBPyConnection) -> None:
            if dropped:
                con.execute(f"DELETE FROM {FILES_TABLE} WHERE file_id IN "
                            f"({', '.join(str(r['file_id']) for r in dropped)})")
                # the gone ones: a file read again with the same bytes (its future date came, [source] edited)
                # keeps its first read in its new catalogue row
                remember(con, [r for r in dropped if not any(alike(r, fp) for fp in prints.values())], started)
            if relisted:
                con.execute(f"UPDATE {FILES_TABLE} SET lean = false WHERE file_id IN "
                            f"({', '.join(str(i) for i in relisted)})")
            for key, lf in new.items():
                fp = prints[key]
                con.execute(f"INSERT INTO {FILES_TABLE} (file_id, role, path, size, mtime_ns, head_tail, full_hash,"
                            " config, cols, fast, rows, no_cust, no_oid, lean, read_at, future_at, guesses)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [ids[key], key[0], str(key[1]), fp.size, fp.mtime_ns, fp.head_tail, fp.full, cfg,
                             json.dumps(lf.cols), lf.fast, *counts[key], change is not None, read_at[key],
                             result.future.get(str(key[1])), json.dumps(list(lf.said))])
            save_report(con, result, {str(p): ids[(role, p)] for role, p in wanted})

        with unordered(con):
            if change is not None:
                drop_lean_indexes(con, change)
                _in_transaction(con, lambda: (commit_lean(con, change), save(con)))
            else:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {READS_TABLE} AS SELECT file_id, read_at FROM {FILES_TABLE}"
                            " UNION ALL SELECT * FROM (SELECT unnest(?::BIGINT[]) AS file_id,"
                            " unnest(?::TIMESTAMPTZ[]) AS read_at)", [[ids[k] for k in new], [read_at[k] for k in new]])
                reads = FileReads(READS_TABLE, tuple(ids[k] for k in wanted if k[0] == "contacts"), started)
                merge_staged(con, result, max_identity_group=source.max_identity_group, before_commit=save,
                             files=reads)
    except BaseException as exc:
        _clean(con)  # the files read this run are not noted, so the next run reads them again
        if isinstance(exc, FileNotFoundError):
            raise vanished(exc.filename) from None
        raise
    _clean(con)  # and the replaced and removed files' tables
    read = [str(p) for _, p in new]
    log.info("file source: read %d of %d files (%s unchanged), %d gone%s", len(read), len(wanted), len(keep),
             len(gone), " (lean)" if change is not None else "")
    renamed = _renamed(gone, stored, {str(key[1]): prints[key] for key in new})
    result.gone_files = [path for path in gone if path not in dict(renamed)]
    result.renamed_files = renamed
    result.copied_files = copied_files(prints, {**{key: row["no_oid"] for key, row in keep.items()},
                                                **{key: n[2] for key, n in counts.items()}})
    result.encoding_guesses = _guesses(wanted, keep, new)
    return Ingested(result, read, gone, lean=change is not None)


def _guesses(wanted: list[tuple[str, Path]], keep: dict, new: dict[tuple[str, Path], LoadedFile]) -> list[str]:
    """The files' encoding guesses, in the files' order: of those read now, and the ones kept with those not (a
    file an older rfmsync stored keeps none)."""
    return [line for key in wanted
            for line in (new[key].said if key in new else json.loads(keep[key].get("guesses") or "[]"))]


def _renamed(gone: list[str], stored: dict, read: dict) -> list[tuple[str, str]]:
    """The gone files whose bytes (:func:`~sync.store.file_gone.alike`) this run read under a new path, as
    ``(old, new)``: each new path pairs with one old one."""
    pairs, taken = [], set()
    for (_, path), row in sorted(stored.items(), key=lambda item: item[0][1]):
        new = next((p for p, fp in read.items() if p not in taken and alike(row, fp)), None) if path in gone else None
        if new is not None:
            pairs.append((path, new))
            taken.add(new)
    return pairs


def matched_before(exc: NothingMatches, source: FileSource, catalogue: list[dict]) -> ConnectorError:
    """A pattern matching nothing where the store holds files of its role (``orders``, ``contacts``) that it
    matches, read before: the export folder or the share it is on not there (not mounted, being copied), a
    retry-later error, nothing removed. Else (a first read, a pattern just added or edited that matches none of
    the files read before: a typo) the config error: waiting would never fix it."""
    role = "orders" if exc.pattern == source.cfg.orders else "contacts"  # (orders are matched first)
    stored = sum(1 for row in catalogue if row["role"] == role and pattern_matches(exc.full, row["path"]))
    if not stored:
        return exc
    return TransientError(f"{exc}, where {stored} file(s) were read before (the export folder or its network share "
                          "not there?); nothing was read or removed: run again once they are back, or fix the pattern")


def _clean(con: duckdb.DuckDBPyConnection) -> None:
    drop_staged_view(con)
    drop_scratch(con)
    con.execute(f"DROP TABLE IF EXISTS temp.{READS_TABLE}")
    for (name,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'temp'"
                               f" AND table_type = 'VIEW' AND table_name LIKE '{TEMP_PREFIX}%'").fetchall():
        con.execute(f"DROP VIEW IF EXISTS temp.{name}")
        con.execute(f"DROP TABLE IF EXISTS temp.{name}_data")
    _drop_orphans(con)


def _in_transaction(con: duckdb.DuckDBPyConnection, work: Callable[[], object]) -> None:
    with store_transaction(con):
        work()


def _unchanged(row: dict | None, fp: Fingerprint, cfg: str, latest: datetime, verify: bool = False) -> bool:
    """Nothing to read again: the same config and the same bytes (with ``verify``, the same whole-file hash: ``fp``
    carries it when the row has one to compare, :func:`~sync.store.file_prints.early_print`; a row without one is
    read again), and no row bad as dated in the future that ``latest`` (now + the tolerance) has reached."""
    return row is not None and row["config"] == cfg and same_bytes(row, fp) and (not verify or bool(fp.full)) and (
        row["future_at"] is None or row["future_at"] > latest)


def _catalogue(con: duckdb.DuckDBPyConnection) -> list[dict]:
    cur = con.execute(f"SELECT * FROM {FILES_TABLE} ORDER BY file_id")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _loaded(row: dict) -> LoadedFile:
    return LoadedFile(row["path"], f"{TABLE_PREFIX}{row['file_id']}", "_srow", json.loads(row["cols"]),
                      bool(row["fast"]))


def _drop_orphans(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the file tables ``ingest_files`` does not name (a file replaced, removed, or read by a run that
    did not commit), or names as lean (its rows are in ``orders`` only)."""
    known = {f"{TABLE_PREFIX}{i}" for (i,) in con.execute(f"SELECT file_id FROM {FILES_TABLE} WHERE NOT lean")
             .fetchall()}
    found = con.execute("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'main'"
                        f" AND table_name LIKE '{TABLE_PREFIX}%'").fetchall()
    for kind in ("VIEW", "BASE TABLE"):  # a view before the table it reads
        for name, typ in found:
            base = name.removesuffix("_data")
            if typ == kind and digits(base[len(TABLE_PREFIX):]) and base not in known:
                con.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} IF EXISTS {name}")
