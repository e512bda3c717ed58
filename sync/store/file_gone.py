"""What the order store remembers of the files it no longer holds: the fingerprint and first read time of each
file whose rows left it (a file gone, renamed, or changed since), so that the same bytes coming back later (a file
moved out of the export folder and back, a rename, an export rolled back to an earlier version) keep the time of
their first read. A file's read time decides whether its rows win over a webhook's version of the same record
(:mod:`sync.store.merge`): a file that came back as "new" would undo a refund or a withdrawn consent received by
webhook while it was away."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Iterable

import duckdb

if TYPE_CHECKING:
    from .file_prints import Fingerprint

GONE_TABLE = "ingest_gone_files"
#: the most recent files remembered (one row per file whose rows left the store; a few hundred a year for a daily
#: export); an older one coming back counts as read now
GONE_KEEP = 10_000


def create_gone_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""CREATE TABLE IF NOT EXISTS {GONE_TABLE} (size BIGINT, mtime_ns BIGINT, head_tail VARCHAR,
        full_hash VARCHAR, read_at TIMESTAMPTZ NOT NULL, gone_at TIMESTAMPTZ NOT NULL)""")


def remembered(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """The files remembered, as rows with the stored catalogue's fingerprint columns and ``read_at``."""
    cur = con.execute(f"SELECT size, mtime_ns, head_tail, full_hash, read_at FROM {GONE_TABLE}")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def remember(con: duckdb.DuckDBPyConnection, rows: Iterable[dict], now: datetime) -> None:
    """Note the files whose rows leave the store now (``rows``: their catalogue rows), then keep the newest
    :data:`GONE_KEEP`. Run inside the transaction that removes their rows."""
    values = [(r["size"], r["mtime_ns"], r["head_tail"], r["full_hash"], r["read_at"], now) for r in rows]
    if not values:
        return
    con.executemany(f"INSERT INTO {GONE_TABLE} VALUES (?, ?, ?, ?, ?, ?)", values)
    con.execute(f"DELETE FROM {GONE_TABLE} WHERE rowid NOT IN (SELECT rowid FROM {GONE_TABLE} "
                f"ORDER BY gone_at DESC, read_at DESC LIMIT {GONE_KEEP})")


def same_bytes(row: dict | None, fp: Fingerprint) -> bool:
    """The file's bytes are the catalogue row's: size, mtime, head and tail; with ``--verify`` (``fp.full``) the
    whole-file hashes too (a file first read without it has none stored: its bytes are unknown, since a middle edit
    keeps size, mtime, head and tail)."""
    return row is not None and (row["size"], row["mtime_ns"], row["head_tail"]) == (
        fp.size, fp.mtime_ns, fp.head_tail) and (not fp.full or row["full_hash"] == fp.full)


def alike(row: dict, fp: Fingerprint) -> bool:
    """:func:`same_bytes`, but a whole-file hash on one side only is no difference: a file first read without
    ``--verify``, then read with it, is taken as the same bytes when its size, mtime, head and tail are. (Dating it
    now would let the first ``--verify`` on an unchanged export undo every refund and withdrawn consent received by
    webhook since its first read; a middle edit that kept all four is the rare case, and then the webhook's
    version stays until the file changes again.)"""
    return (row["size"], row["mtime_ns"], row["head_tail"]) == (fp.size, fp.mtime_ns, fp.head_tail) and (
        not fp.full or not row["full_hash"] or row["full_hash"] == fp.full)


def first_read(known: Iterable[dict], fp: Fingerprint, now: datetime) -> datetime:
    """When bytes such as ``fp``'s were first read: the earliest read time of the ``known`` files (catalogue rows
    and :func:`remembered` ones, under any path) with the same bytes (:func:`alike`), else ``now``."""
    return min((row["read_at"] for row in known if alike(row, fp)), default=now)
