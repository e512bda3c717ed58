"""Opening the order store file: DuckDB allows one writing process per file, so a second one waits for it."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from connectors.tables import create_tables

from ..errors import LockBusyError

log = logging.getLogger(__name__)

#: One DuckDB writer per process: the serve worker threads and the scheduler take turns on the store file.
STORE_LOCK = threading.Lock()


def store_tables(con: duckdb.DuckDBPyConnection, *names: str) -> set[str]:
    """Which of ``names`` are tables of the store itself (schema ``main`` of the open database, not TEMP ones):
    the kept tables a run finds, or not, before it reads them."""
    return {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND list_contains(?, table_name)", [list(names)]).fetchall()}


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


@contextmanager
def store_transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction of the store: committed when the block ends, rolled back when it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
