"""Counting the rows a webhook resync reads: DuckDB's own profiler, statement by statement.

:class:`CountingConnection` wraps the resync's store connection and adds up each statement's
``total_rows_scanned`` (the rows its table and index scans read, as DuckDB reports them), so the figure is
what the engine did, not what the code meant to do. A statement's profile is read when the next one starts
(DuckDB streams results: a statement is finished once its result was fetched) and by :meth:`rows`.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb


class CountingConnection:
    """A DuckDB connection that counts the rows its statements scan. Use it like the connection it wraps."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._scanned = 0
        self._pending = False
        con.execute("SET enable_profiling = 'no_output'")
        con.execute("SET profiling_coverage = 'ALL'")

    def _collect(self) -> None:
        if not self._pending:
            return
        self._pending = False
        info = json.loads(self._con.get_profiling_information(format="json") or "{}")
        n = int((info.get("query") or {}).get("total_rows_scanned") or 0)
        self._scanned += n

    def _statement(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._collect()
        out = getattr(self._con, method)(*args, **kwargs)
        self._pending = True
        return out

    def execute(self, *args: Any, **kwargs: Any) -> "CountingConnection":
        self._statement("execute", *args, **kwargs)
        return self  # con.execute(...).fetchall() fetches from the wrapped connection

    def executemany(self, *args: Any, **kwargs: Any) -> "CountingConnection":
        self._statement("executemany", *args, **kwargs)
        return self

    def sql(self, *args: Any, **kwargs: Any) -> Any:
        return self._statement("sql", *args, **kwargs)

    def register(self, *args: Any, **kwargs: Any) -> Any:
        return self._statement("register", *args, **kwargs)

    def unregister(self, *args: Any, **kwargs: Any) -> Any:
        return self._statement("unregister", *args, **kwargs)

    def rows(self) -> int:
        """Rows scanned so far (the last statement's result must have been fetched)."""
        self._collect()
        return self._scanned

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)
