"""Lookup indexes: what lets a webhook resync read the store by key instead of scanning it.

A webhook batch touches a handful of customers of a store that may hold millions of orders. With an ART index on
``orders(customer_id)``, ``orders(order_id)``, ``contacts(customer_id)``, ``contacts(email)``,
``line_items(order_id)``, ``segment_history(customer_id)`` (when the store has a segment history) and
``contacts(phone)`` (once a batch held a phone-keyed record: :data:`PHONE_INDEX`), DuckDB
answers the resync's queries (``customer_id IN (SELECT ... FROM affected_customers)``, the merge's
``order_id IN (SELECT ... FROM staged_orders)``) with index scans and joins: the rows it reads are the affected
customers' rows, not the store (:mod:`sync.serve.resync` counts them).

The indexes cost disk (a 5 M-order store grows about sixfold) and make bulk writes slow: DuckDB maintains an ART
index row by row, so replacing millions of rows under one takes minutes. Hence they exist only where they pay:
:func:`ensure_lookup_indexes` builds them (the first webhook resync after a bulk load, a few seconds per million
orders) and :func:`drop_lookup_indexes` removes them before a bulk merge (a file's full refresh, a large pull),
see :func:`sync.store.merge.merge_staged`, and a full history record writing as many rows drops the history's.
A store that never receives webhooks never has them.
"""

from __future__ import annotations

import logging
import time

import duckdb

from connectors.email_phone import normalize_email

from .resynced import forget_kept_rows

log = logging.getLogger(__name__)

#: index name → (table, column)
LOOKUP_INDEXES = {
    "rfmsync_orders_customer": ("orders", "customer_id"),
    "rfmsync_orders_order": ("orders", "order_id"),
    "rfmsync_contacts_customer": ("contacts", "customer_id"),
    "rfmsync_contacts_email": ("contacts", "email"),  # another card of an address (sync.serve.resync_scope)
    "rfmsync_line_items_order": ("line_items", "order_id"),
    "rfmsync_history_customer": ("segment_history", "customer_id"),
    "rfmsync_contacts_phone": ("contacts", "phone"),  # a phone-keyed record's link (connectors.identity): see below
}
#: built only for a webhook batch holding a phone-keyed record (:func:`ensure_lookup_indexes` ``phones``), whose
#: identity link reads the contacts of its phones (resync29: 1 M contacts, the link 0.92–1.19 → 0.65–0.82 s, a
#: 20 k-contact upsert no slower, the build 3–8 s after each bulk load: BENCHMARKS.md); a store whose webhooks key
#: nobody by a phone never builds it
PHONE_INDEX = "rfmsync_contacts_phone"

#: up to this many keys (affected customers, staged orders) a join is answered from the indexes
LOOKUP_KEYS = 2_000
#: up to this many matching rows (the affected customers' orders) a filter is answered from an index
LOOKUP_ROWS = 50_000

#: a merge staging more rows than this drops the indexes first (maintaining them row by row costs more than
#: building them again)
BULK_ROWS = 50_000


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = "
                                      "current_database()").fetchall()}


def _present(con: duckdb.DuckDBPyConnection) -> set[str]:
    names = tuple(LOOKUP_INDEXES)
    rows = con.execute("SELECT index_name FROM duckdb_indexes() WHERE database_name = current_database() "
                       f"AND index_name IN ({', '.join('?' * len(names))})", list(names)).fetchall()
    return {r[0] for r in rows}


def ensure_lookup_indexes(con: duckdb.DuckDBPyConnection, phones: bool = False) -> int:
    """Create the missing lookup indexes (of the tables the store has; :data:`PHONE_INDEX` only with ``phones``: a
    batch holds a phone-keyed record); returns how many were built (0 when all were there)."""
    tables = _tables(con)
    missing = [n for n, (table, _) in LOOKUP_INDEXES.items() if n not in _present(con) and table in tables
               and (phones or n != PHONE_INDEX)]
    if not missing:
        return 0
    started = time.monotonic()
    if "rfmsync_contacts_email" in missing:  # before the index: an UPDATE under an ART index goes row by row
        normalise_emails(con, "contacts", plain_skipped=True)
    for name in missing:
        table, column = LOOKUP_INDEXES[name]
        con.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})")
    log.info("store: built %d lookup index(es) for webhook resyncs in %.1fs", len(missing),
             time.monotonic() - started)
    return len(missing)


def normalise_emails(con: duckdb.DuckDBPyConnection, table: str, plain_skipped: bool = False) -> int:
    """``table``'s e-mails in their normalised form (:func:`connectors.email_phone.normalize_email`; an invalid one
    as it is), as every write path stores them now; returns how many distinct values changed. The index on the
    contacts' e-mails is read by that exact value (:func:`sync.serve.resync_scope.store_holders`), and a store
    written before held the un-normalised e-mails a library caller handed ``resync()`` (``' FAM@Shop.UZ '``): they
    are normalised once, when that index is built (the first webhook resync after the upgrade, or after a bulk
    load). ``plain_skipped``: a value of lower-case ASCII letters, digits and ``. _ + @ -`` alone is its own normal
    form or invalid (kept as it is), so only the others are read into Python (one scan of a large table: about
    0.5 s for 1 M contacts on a loaded machine, half the cost of a check by
    :func:`~connectors.email_phone.email_fast_sql`). The store's generation stays (no plan reads an address but
    normalised: nothing a sync or a resync read before it differs); the rows the last full refresh kept, hashed
    with the e-mails, go (:func:`~.resynced.forget_kept_rows`)."""
    # (a punycode domain, ``xn--``, is plain ASCII but normalised to its Unicode form: read it too)
    plain = " AND (NOT regexp_full_match(email, '[a-z0-9._+@-]+') OR contains(email, 'xn--'))" if plain_skipped else ""
    fixed = [(raw, key) for (raw,) in con.execute(f"SELECT DISTINCT email FROM {table} WHERE email IS NOT NULL"
                                                  f"{plain}").fetchall()
             if (key := normalize_email(raw)) is not None and key != raw]
    if fixed:
        import pyarrow as pa

        if table == "contacts":  # the store's rows change, its generation does not: the kept rows become untrue
            forget_kept_rows(con)  # (first: a crash after the update would leave them, and nothing left to fix)
        con.register("_emails_fixed", pa.table({"raw": [r for r, _ in fixed], "norm": [k for _, k in fixed]}))
        try:
            con.execute(f"UPDATE {table} t SET email = f.norm FROM _emails_fixed f WHERE t.email = f.raw")
        finally:
            con.unregister("_emails_fixed")
        log.info("store: %d e-mail value(s) of %s normalised", len(fixed), table)
    return len(fixed)


def lookup_by_key(con: duckdb.DuckDBPyConnection, keys: int = LOOKUP_KEYS, rows: int = LOOKUP_ROWS) -> None:
    """Let this connection's joins with a small key table read through the indexes.

    DuckDB turns a hash join's build side into an ``IN (...)`` filter on the probe scan (which an index then
    answers) only up to ``dynamic_or_filter_threshold`` keys (default 50), and answers a filter from an index
    only when at most ``max(index_scan_max_count, 0.1 % of the table)`` rows match (default 2 048). A webhook
    batch may touch a few hundred customers with their few thousand orders, so both are raised here."""
    con.execute(f"SET dynamic_or_filter_threshold = {int(keys)}")
    con.execute(f"SET index_scan_max_count = {int(rows)}")


def drop_lookup_indexes(con: duckdb.DuckDBPyConnection, only: str | None = None) -> int:
    """Drop the lookup indexes (``only``: of that table) before a bulk write; returns how many there were."""
    present = {n for n in _present(con) if only is None or LOOKUP_INDEXES[n][0] == only}
    for name in present:
        con.execute(f"DROP INDEX IF EXISTS {name}")
    if present:
        log.info("store: dropped %d lookup index(es) before a bulk merge (the next webhook resync rebuilds them)",
                 len(present))
    return len(present)
