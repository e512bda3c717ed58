"""The local order store: one DuckDB file holding the canonical orders, contacts and line items.

Every source lands here: file sources replace their history each run (``full_refresh``); API sources and
webhooks upsert by order id / customer id (latest version wins). Segmentation reads one place.

DuckDB allows one writing process per file. When a cron ``rfmsync sync`` and ``rfmsync serve`` meet, the second
waits up to ``wait_seconds`` for the file, then stops with :class:`~sync.errors.LockBusyError` (exit 75). Every
merge runs in one transaction, so a crash never leaves a half-merged store.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from connectors.source import PullResult
from connectors.tables import TABLES, create_tables

from .errors import LockBusyError

log = logging.getLogger(__name__)

KEYS = {"orders": "order_id", "contacts": "customer_id", "line_items": "order_id"}


def _connect(path: str | Path, wait_seconds: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                if "lock" in str(exc).lower():
                    raise LockBusyError(f"the order store {path} is in use by another rfmsync process "
                                        f"(waited {wait_seconds:.0f}s); try again later") from None
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def connect_store(path: str | Path | None, wait_seconds: float = 30.0) -> duckdb.DuckDBPyConnection:
    """A connection to the store file with the canonical tables in place; the caller closes it."""
    con = duckdb.connect() if path is None else _connect(path, wait_seconds)
    create_tables(con)
    return con


@contextmanager
def open_store(path: str | Path | None, wait_seconds: float = 30.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open (creating if needed) the store file; ``None`` → a throw-away in-memory store."""
    con = connect_store(path, wait_seconds)
    try:
        yield con
    finally:
        con.close()


def merge_staged(con: duckdb.DuckDBPyConnection, pull: PullResult) -> dict[str, int]:
    """Move the ``staged_*`` rows into the main tables in one transaction; returns rows per table."""
    counts = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for name in TABLES:
            staged = f"staged_{name}"
            exists = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [staged]).fetchall()[0][0]
            if not exists:
                continue
            if pull.full_refresh:
                con.execute(f"DELETE FROM {name}")
            elif name == "line_items":
                con.execute(f"DELETE FROM line_items WHERE order_id IN (SELECT order_id FROM staged_orders)")
            else:
                key = KEYS[name]
                con.execute(f"DELETE FROM {name} WHERE {key} IN (SELECT {key} FROM {staged})")
            if name == "line_items":
                con.execute(f"INSERT INTO {name} SELECT * FROM {staged}")
            else:
                # latest version wins inside the batch too
                key = KEYS[name]
                con.execute(f"INSERT INTO {name} SELECT * EXCLUDE (_rn) FROM "
                            f"(SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY rowid DESC) AS _rn "
                            f"FROM {staged}) WHERE _rn = 1")
            counts[name] = con.execute(f"SELECT count(*) FROM {staged}").fetchall()[0][0]
        for name in TABLES:
            con.execute(f"DROP TABLE IF EXISTS staged_{name}")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return counts
