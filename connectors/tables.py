"""The canonical DuckDB tables every source writes and segmentation reads.

A source's ``pull`` stages what it read into the ``staged_*`` temp tables of the
DuckDB connection it is given (same columns as the main tables). The order store
(:mod:`sync.store`) then merges staged rows into ``orders``, ``contacts`` and
``line_items`` (latest version wins) or, for a full refresh, replaces them.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Iterable

import duckdb

from .records import UNDATED, Contact, Order

ORDERS_COLUMNS = """
    order_id     VARCHAR NOT NULL,
    customer_id  VARCHAR NOT NULL,
    ordered_at   TIMESTAMPTZ NOT NULL,
    amount       DECIMAL(18,2) NOT NULL,
    currency     VARCHAR,
    status       VARCHAR NOT NULL,
    discount     DECIMAL(18,2)
"""

CONTACTS_COLUMNS = """
    customer_id        VARCHAR NOT NULL,
    email              VARCHAR,
    phone              VARCHAR,
    first_name         VARCHAR,
    last_name          VARCHAR,
    marketing_consent  VARCHAR NOT NULL,
    created_at         TIMESTAMPTZ,
    attributes         JSON
"""

LINE_ITEMS_COLUMNS = """
    order_id  VARCHAR NOT NULL,
    line_no   INTEGER NOT NULL,
    sku       VARCHAR,
    name      VARCHAR,
    category  VARCHAR,
    brand     VARCHAR,
    quantity  DECIMAL(18,3),
    price     DECIMAL(18,2)
"""

TABLES = {"orders": ORDERS_COLUMNS, "contacts": CONTACTS_COLUMNS, "line_items": LINE_ITEMS_COLUMNS}

#: Columns a database file stores without compression. An order's ids are near-unique strings: DuckDB's
#: dictionary + FSST compression of them took ~40 % of the CPU of a bulk insert of orders (a cold file ingest)
#: to shrink the store file by a third; the metrics read them no slower uncompressed.
UNCOMPRESSED = {"orders": ("order_id", "customer_id")}


def stored_columns(name: str) -> str:
    """The column list of table ``name`` in a database file (:data:`UNCOMPRESSED` ids)."""
    cols = TABLES[name]
    for col in UNCOMPRESSED.get(name, ()):
        cols = re.sub(rf"^(\s*{col}\s+VARCHAR)", r"\1 USING COMPRESSION uncompressed", cols, count=1, flags=re.M)
    return cols


def create_tables(con: duckdb.DuckDBPyConnection, prefix: str = "", temp: bool = False) -> None:
    """Create empty canonical tables (``prefix`` + name) if they do not exist (temp ones: nothing to compress)."""
    kind = "TEMP TABLE" if temp else "TABLE"
    for name in TABLES:
        con.execute(f"CREATE {kind} IF NOT EXISTS {prefix}{name} ({TABLES[name] if temp else stored_columns(name)})")


def create_staging(con: duckdb.DuckDBPyConnection) -> None:
    """Fresh, empty ``staged_orders``/``staged_contacts``/``staged_line_items`` temp tables."""
    for name, cols in TABLES.items():
        con.execute(f"CREATE OR REPLACE TEMP TABLE staged_{name} ({cols})")


#: the staged orders whose last staged version is a tombstone that only retires a stored order
#: (:attr:`~connectors.records.Order.if_stored`): :func:`stage_records` keeps it, the store's merge leaves out every
#: staged version of those it holds no order of (:func:`sync.store.merge.merge_staged`), then drops it. Not
#: ``staged_*``: it is no store table, and :func:`create_staging` leaves it (a webhook batch's records set aside
#: while a pull stages, then staged again, keep theirs: :func:`sync.serve.resync_staging.pull_after_webhook_records`;
#: a mark of an id not staged leaves nothing out).
STAGED_TOMBSTONES = "_staged_tombstones"


def _note_tombstones(con: duckdb.DuckDBPyConnection, orders: list[Order]) -> None:
    """Keep :data:`STAGED_TOMBSTONES` to the ids whose last staged version (``orders``' last of each, appended now)
    retires a stored order only: a later version that is not one takes its id out. One statement for a page holding
    such a tombstone, a count for a page after one (none before: the usual pull)."""
    last = {o.order_id: o.if_stored for o in orders}
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {STAGED_TOMBSTONES} (order_id VARCHAR NOT NULL)")
    if not any(last.values()) and not con.execute(f"SELECT 1 FROM {STAGED_TOMBSTONES} LIMIT 1").fetchall():
        return
    con.execute(f"DELETE FROM {STAGED_TOMBSTONES} WHERE order_id IN (SELECT unnest($ids::VARCHAR[]))",
                {"ids": list(last)})
    con.execute(f"INSERT INTO {STAGED_TOMBSTONES} SELECT unnest($ids::VARCHAR[])",
                {"ids": [i for i, flagged in last.items() if flagged]})


#: a value's largest magnitude that every decimal column holds (quantity: DECIMAL(18,3))
MAX_DECIMAL = Decimal(10) ** 15


def _plain(value: Decimal | None) -> str | None:
    """A decimal as plain text (``1E+3`` → ``1000``), cast to its column's scale by DuckDB, which rounds half away
    from zero as it does for a file's amounts (:func:`connectors.amounts.amount_sql`)."""
    return None if value is None else format(value, "f")


#: the staged decimal columns (name → SQL type, as :data:`TABLES` declares them), cast from each value's text
_DECIMALS = {name: kind for cols in TABLES.values()
             for name, kind in re.findall(r"^\s*(\w+)\s+(DECIMAL\(\d+,\d+\))", cols, re.M)}


def _cast_sql(con: duckdb.DuckDBPyConnection, source: str, columns: list[str], what: str) -> str:
    """The ``SELECT`` of ``source``'s rows with its decimal columns cast from their text; a value no column of its
    type holds (too large, not finite) is a ValueError naming the record (``what``: the SQL of its name)."""
    casts = {c: f"TRY_CAST({c} AS {_DECIMALS[c]})" for c in columns if c in _DECIMALS}
    misfits = [f"CASE WHEN {c} IS NOT NULL AND {cast} IS NULL THEN '{c} ' || {c} || ' does not fit {_DECIMALS[c]}' END"
               for c, cast in casts.items()]
    found = con.execute(f"SELECT {what} || ': ' || concat_ws(', ', {', '.join(misfits)}) FROM {source} "
                        f"WHERE {' OR '.join(m + ' IS NOT NULL' for m in misfits)} LIMIT 3").fetchall()
    if found:
        raise ValueError("; ".join(text for (text,) in found))
    return f"SELECT {', '.join(casts.get(c, c) for c in columns)} FROM {source}"


#: the vendor's modification time of each record an API pull staged that has one (``kind`` 'order' | 'contact',
#: ``id``, ``updated_at``): :class:`connectors.incremental.Stager` writes it, the store's merge of the pull notes it
#: (:mod:`sync.store`). Not ``staged_*``: it is no store table.
STAGED_VERSIONS = "_staged_versions"


def create_staged_versions(con: duckdb.DuckDBPyConnection, replace: bool = True) -> None:
    """A fresh, empty :data:`STAGED_VERSIONS` table (``replace=False``: unless there is one)."""
    con.execute(f"CREATE {'OR REPLACE ' if replace else ''}TEMP TABLE {'' if replace else 'IF NOT EXISTS '}"
                f"{STAGED_VERSIONS} (kind VARCHAR NOT NULL, id VARCHAR NOT NULL, updated_at TIMESTAMPTZ)")


def append_versions(con: duckdb.DuckDBPyConnection, rows: list[tuple[str, str, datetime | None]]) -> None:
    """Append ``(kind, id, updated_at or None)`` rows to :data:`STAGED_VERSIONS` (created when missing). Nothing is
    deleted: a record's last row is its time (:func:`sync.store.pulled.settle_staged` reads the last of each)."""
    import pyarrow as pa

    if not rows:
        return
    create_staged_versions(con, replace=False)
    con.register("_stage_versions", pa.table({
        "kind": [k for k, _, _ in rows], "id": [i for _, i, _ in rows],
        "updated_at": pa.array([t for _, _, t in rows], type=pa.timestamp("us", tz="UTC"))}))
    try:
        con.execute(f"INSERT INTO {STAGED_VERSIONS} SELECT * FROM _stage_versions")
    finally:
        con.unregister("_stage_versions")


def stage_records(con: duckdb.DuckDBPyConnection, orders: Iterable[Order] = (),
                  contacts: Iterable[Contact] = ()) -> tuple[int, int]:
    """Append records (from an API page or a webhook) to the staging tables.

    Creates the staging tables when missing. Returns (orders, contacts) appended. Amounts, discounts and prices
    are kept to 2 decimals and quantities to 3, rounded half away from zero as a file's are; a value too large
    for its column is a ValueError naming the order, and nothing of the call is staged. A tombstone the vendor gave
    no date (:data:`~connectors.records.UNDATED`) is dated by :func:`_date_undated`; one that only retires a stored
    order is noted in :data:`STAGED_TOMBSTONES`.
    """
    import pyarrow as pa  # API pages and webhooks only; a file export is read by DuckDB itself

    for name, cols in TABLES.items():
        con.execute(f"CREATE TEMP TABLE IF NOT EXISTS staged_{name} ({cols})")
    orders = list(orders)
    contacts = list(contacts)
    if orders:
        items = [(o.order_id, i, it) for o in orders for i, it in enumerate(o.items, 1)]
        tables = {"staged_orders": ("_stage_orders", "'order ' || order_id", pa.table({
            "order_id": [o.order_id for o in orders],
            "customer_id": [o.customer_id for o in orders],
            "ordered_at": pa.array([o.ordered_at for o in orders], type=pa.timestamp("us", tz="UTC")),
            "amount": pa.array([_plain(o.amount) for o in orders], type=pa.string()),
            "currency": [o.currency for o in orders],
            "status": [str(o.status) for o in orders],
            "discount": pa.array([_plain(o.discount) for o in orders], type=pa.string()),
        }))}
        if items:
            tables["staged_line_items"] = ("_stage_items", "'order ' || order_id || ' item ' || line_no", pa.table({
                "order_id": [oid for oid, _, _ in items],
                "line_no": pa.array([i for _, i, _ in items], type=pa.int32()),
                "sku": [it.sku for _, _, it in items], "name": [it.name for _, _, it in items],
                "category": [it.category for _, _, it in items], "brand": [it.brand for _, _, it in items],
                "quantity": pa.array([_plain(it.quantity) for _, _, it in items], type=pa.string()),
                "price": pa.array([_plain(it.price) for _, _, it in items], type=pa.string()),
            }))
        for source, _, tbl in tables.values():
            con.register(source, tbl)
        try:  # every row checked before any is staged
            selects = {table: _cast_sql(con, source, tbl.schema.names, what)
                       for table, (source, what, tbl) in tables.items()}
            for table, select in selects.items():
                con.execute(f"INSERT INTO {table} {select}")
        finally:
            for source, _, _ in tables.values():
                con.unregister(source)
        if any(o.ordered_at == UNDATED for o in orders):
            _date_undated(con)
        _note_tombstones(con, orders)
    if contacts:
        tbl = pa.table({
            "customer_id": [c.customer_id for c in contacts],
            "email": [c.email for c in contacts],
            "phone": [c.phone for c in contacts],
            "first_name": [c.first_name for c in contacts],
            "last_name": [c.last_name for c in contacts],
            "marketing_consent": [str(c.marketing_consent) for c in contacts],
            "created_at": pa.array([c.created_at for c in contacts], type=pa.timestamp("us", tz="UTC")),
            "attributes": [json.dumps(dict(c.attributes), ensure_ascii=False) if c.attributes else None
                           for c in contacts],
        })
        con.register("_stage_contacts", tbl)
        con.execute("INSERT INTO staged_contacts SELECT * EXCLUDE (attributes), attributes::JSON FROM _stage_contacts")
        con.unregister("_stage_contacts")
    return len(orders), len(contacts)


def _date_undated(con: duckdb.DuckDBPyConnection) -> None:
    """Date the staged tombstones the vendor gave no date (:data:`~connectors.records.UNDATED`) by the stored order
    each cancels, else by its dated version staged in the same batch, else by the store's oldest order, else by the oldest dated order staged, else now (nothing
    stored nor staged: no order to look newer than). Never the newest of a store (a cancellation the CRM did not
    date is no fresh activity: it hid the stale-data warning), the same on every read (stored, it dates itself),
    and never the mark (1970 would stretch the orders' range every local-day step reads). Only a tombstone (amount
    0, cancelled or deleted) so dated is one. A few aggregates per batch holding one (none for any other batch)."""
    stored = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'orders' "
                         "AND NOT temporary").fetchall()[0][0] > 0
    oldest = con.execute("SELECT min(ordered_at) FROM orders").fetchall()[0][0] if stored else None
    if oldest is None:
        oldest = con.execute("SELECT min(ordered_at) FROM staged_orders WHERE ordered_at <> $u",
                             {"u": UNDATED}).fetchall()[0][0] or datetime.now(timezone.utc)
    own = ("(SELECT max(o.ordered_at) FROM orders AS o WHERE o.order_id = s.order_id)" if stored else "NULL")
    # an order created and cancelled within one batch: its dated version staged beside it
    here = "(SELECT max(t.ordered_at) FROM staged_orders AS t WHERE t.order_id = s.order_id AND t.ordered_at <> $u)"
    con.execute(f"""UPDATE staged_orders AS s SET ordered_at = coalesce({own}, {here}, $oldest)
                     WHERE s.ordered_at = $u AND s.amount = 0 AND s.status IN ('cancelled', 'deleted')""",
                {"u": UNDATED, "oldest": oldest})


def unchanged_staged(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(orders, contacts) staged exactly as the order store already holds them (every column, an order's line items
    too): an incremental pull's lookback window reads the last records of the pull before again, and they are
    neither new nor changed (its count leaves them out). (0, 0) when the store's tables are not on ``con``."""
    present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    orders = contacts = 0
    if {"staged_orders", "orders", "staged_line_items", "line_items"} <= present:
        # an order's items differ when a row of one side is not in the other (NULLs alike; the stager keeps one
        # version of an order, its lines numbered once): two set differences, not a list of each order's items
        # per side (that took 53 s and 2.9 GB for 1 M orders read again)
        items = "order_id, line_no, sku, name, category, brand, quantity, price"
        (orders,) = con.execute(f"""
            WITH stored AS (SELECT {items} FROM line_items WHERE order_id IN (SELECT order_id FROM staged_orders)),
                 changed AS (SELECT order_id FROM (SELECT {items} FROM staged_line_items EXCEPT FROM stored)
                             UNION ALL SELECT order_id FROM (FROM stored EXCEPT SELECT {items} FROM staged_line_items))
            SELECT count(*) FROM staged_orders s JOIN orders o USING (order_id)
            WHERE (s.customer_id, s.ordered_at, s.amount, s.status) = (o.customer_id, o.ordered_at, o.amount, o.status)
              AND s.currency IS NOT DISTINCT FROM o.currency AND s.discount IS NOT DISTINCT FROM o.discount
              AND s.order_id NOT IN (SELECT order_id FROM changed)""").fetchone()
    if {"staged_contacts", "contacts"} <= present:
        same = " AND ".join(f"s.{c} IS NOT DISTINCT FROM o.{c}" for c in (
            "email", "phone", "first_name", "last_name", "marketing_consent", "created_at"))
        (contacts,) = con.execute(f"""
            SELECT count(*) FROM staged_contacts s JOIN contacts o USING (customer_id)
            WHERE {same} AND s.attributes::VARCHAR IS NOT DISTINCT FROM o.attributes::VARCHAR""").fetchone()
    return orders, contacts
