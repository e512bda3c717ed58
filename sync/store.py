"""The local order store: one DuckDB file holding the canonical orders, contacts and line items.

Every source lands here: file sources replace their history each run (``full_refresh``); API sources and
webhooks upsert by order id / customer id (latest version wins). Segmentation reads one place.

Webhook records survive a full refresh. A webhook order is usually newer than the last export, so a file
pull that replaced everything would drop it (and move its customer back) until a later export contains it.
``merge_staged(..., origin="webhook")`` therefore notes the ids it merged in ``webhook_records``; a full
refresh keeps those orders (with their line items) and those customers' contacts *unless the file has the
same order_id / customer_id*: then the file's version wins and the note is dropped. So the store holds one
copy of each order, and an order is never lost between its webhook and the export that catches up.

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

from connectors.identity import DEFAULT_MAX_GROUP, link_staged
from connectors.source import PullResult
from connectors.tables import TABLES, create_tables

from .errors import LockBusyError

log = logging.getLogger(__name__)

KEYS = {"orders": "order_id", "contacts": "customer_id", "line_items": "order_id"}
WEBHOOK_TABLE = "webhook_records"  # (kind 'order' | 'contact', id): rows that came by webhook, not by a pull
_KIND = {"orders": "order", "contacts": "contact"}


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


def _create_webhook_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE TABLE IF NOT EXISTS {WEBHOOK_TABLE} (kind VARCHAR NOT NULL, id VARCHAR NOT NULL, "
                "received_at TIMESTAMPTZ DEFAULT now(), PRIMARY KEY (kind, id))")


def merge_staged(con: duckdb.DuckDBPyConnection, pull: PullResult, *, origin: str = "pull",
                 max_identity_group: int = DEFAULT_MAX_GROUP) -> dict[str, int]:
    """Move the ``staged_*`` rows into the main tables in one transaction; returns rows per table.

    ``pull.full_refresh``: the staged rows replace the store, except webhook records the file does not
    contain yet (see the module docstring). ``origin="webhook"``: the merged order and customer ids are
    noted as webhook records. An incremental merge first links records keyed by an e-mail or phone to the
    customer with that e-mail/phone (:func:`connectors.identity.link_staged`); ``pull.identity`` says what it did.
    """
    if origin not in ("pull", "webhook"):
        raise ValueError(f"merge_staged: origin must be 'pull' or 'webhook', not {origin!r}")
    counts = {}
    con.execute("BEGIN TRANSACTION")
    try:
        _create_webhook_table(con)
        present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE "
                                             "'staged_%'").fetchall()}
        noted = con.execute(f"SELECT count(*) FROM {WEBHOOK_TABLE}").fetchall()[0][0] > 0
        if "staged_orders" in present and not pull.full_refresh:
            # a deleted order's tombstone often no longer says whose it was: it stays the same customer's
            con.execute("UPDATE staged_orders AS s SET customer_id = o.customer_id FROM orders AS o "
                        "WHERE s.customer_id = '' AND o.order_id = s.order_id")
        if not pull.full_refresh:  # a file export (full refresh) was resolved when it was read
            pull.identity = link_staged(con, max_identity_group)
        if pull.full_refresh and noted:
            _keep_webhook_rows(con, present)
        for name in TABLES:
            staged = f"staged_{name}"
            if staged not in present:
                continue
            key = KEYS[name]
            if pull.full_refresh:
                kept = "_kept_orders" if name == "line_items" else f"_kept_{name}"
                con.execute(f"DELETE FROM {name} WHERE {key} NOT IN (SELECT id FROM {kept})" if noted
                            else f"DELETE FROM {name}")
            elif name == "line_items":
                con.execute("DELETE FROM line_items WHERE order_id IN (SELECT order_id FROM staged_orders)")
            else:
                con.execute(f"DELETE FROM {name} WHERE {key} IN (SELECT {key} FROM {staged})")
            if name == "line_items":
                con.execute(f"INSERT INTO {name} SELECT * FROM {staged}")
            else:
                # latest version wins inside the batch too
                con.execute(f"INSERT INTO {name} SELECT * EXCLUDE (_rn) FROM "
                            f"(SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY rowid DESC) AS _rn "
                            f"FROM {staged}) WHERE _rn = 1")
                kind = _KIND[name]
                if origin == "webhook":
                    con.execute(f"INSERT INTO {WEBHOOK_TABLE} (kind, id) SELECT DISTINCT '{kind}', {key} "
                                f"FROM {staged} ON CONFLICT DO NOTHING")
                elif noted:  # pulled from the source: the source's version wins from now on
                    con.execute(f"DELETE FROM {WEBHOOK_TABLE} WHERE kind = '{kind}' AND id IN "
                                f"(SELECT {key} FROM {staged})")
            counts[name] = con.execute(f"SELECT count(*) FROM {staged}").fetchall()[0][0]
        for name in TABLES:
            con.execute(f"DROP TABLE IF EXISTS staged_{name}")
            con.execute(f"DROP TABLE IF EXISTS _kept_{name}")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return counts


def _keep_webhook_rows(con: duckdb.DuckDBPyConnection, present: set[str]) -> None:
    """``_kept_orders`` / ``_kept_contacts``: webhook ids the staged (file) rows do not contain (small)."""
    for name in ("orders", "contacts"):
        staged = f"staged_{name}"
        unless = f"AND id NOT IN (SELECT {KEYS[name]} FROM {staged})" if staged in present else ""
        con.execute(f"CREATE OR REPLACE TEMP TABLE _kept_{name} AS SELECT id FROM {WEBHOOK_TABLE} "
                    f"WHERE kind = '{_KIND[name]}' {unless}")


def webhook_records(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """The ids kept across full refreshes because they came by webhook: {"order": {...}, "contact": {...}}."""
    _create_webhook_table(con)
    out: dict[str, set[str]] = {"order": set(), "contact": set()}
    for kind, id_ in con.execute(f"SELECT kind, id FROM {WEBHOOK_TABLE}").fetchall():
        out.setdefault(kind, set()).add(id_)
    return out
