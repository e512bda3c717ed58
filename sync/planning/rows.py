"""The customer rows a plan is made from, staged once per run in DuckDB (never as Python dicts).

:func:`stage_segments` stages the segments table joined to the contacts (the rows of every destination);
:func:`stage_dicts` stages rows given as mappings (the webhook resync, tests). Both give a
:class:`CustomerRows` with three temp tables in its connection:

* ``_plan_rows``: every row with an address, numbered ``_rn`` in planning order (by value: monetary
  descending, then customer id), with its normalised address ``_key`` (NULL when invalid);
* ``_plan_desired``: one row per address, the first in planning order (two customers sharing an address: the
  more recent/valuable row wins): a view of ``_plan_rows`` (flag ``_first``), not a second copy;
* ``_plan_invalid``: the rows whose address is invalid (reported as skipped, in planning order).

Addresses are normalised by :func:`connectors.email_phone.email_map`: the SQL twin of ``normalize_email``
(plain ASCII addresses in SQL, the rest through email-validator, each distinct address once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import duckdb

from connectors.email_phone import email_map
from connectors.normalize import ident

ROWS, DESIRED, INVALID, EMAILS = "_plan_rows", "_plan_desired", "_plan_invalid", "_plan_emails"
#: columns every staged row has (NULL when the source does not give them)
BASE_COLUMNS = {"customer_id": "VARCHAR", "email": "VARCHAR", "marketing_consent": "VARCHAR", "segment": "VARCHAR"}


@dataclass(frozen=True)
class CustomerRows:
    """Staged customer rows: their DuckDB connection and the column → DuckDB type of ``_plan_rows``."""

    con: duckdb.DuckDBPyConnection
    columns: Mapping[str, str]

    def desired_keys(self) -> list[str]:
        """Every desired contact's key (normalised address), in planning order."""
        return [k for (k,) in self.con.execute(f"SELECT _key FROM {DESIRED} ORDER BY _rn").fetchall()]

    def count(self) -> int:
        return self.con.execute(f"SELECT count(*) FROM {ROWS}").fetchall()[0][0]


def stage_segments(con: duckdb.DuckDBPyConnection, segments_table: str, columns: Iterable[str] | None = None
                   ) -> CustomerRows:
    """Each segmented customer with an address (``segments_table`` joined to ``contacts``), by value.

    The rows are streamed (Arrow) into a private in-memory DuckDB, so the plan can be made again (a sync that
    waited for a destination's lock re-plans) after the run's own connection is closed. ``columns``: the
    segments table's columns the plans read (the mapped fields' values; those it lacks are left out); all of
    them when None."""
    private = duckdb.connect()
    timezone = con.execute("SELECT current_setting('TimeZone')").fetchall()[0][0]
    private.execute(f"SET TimeZone = '{timezone}'")  # timestamps become the same local dates
    private.execute("SET allocator_flush_threshold = '32MB'")  # hand freed query memory back, not hold it
    if columns is None:
        picked = "s.*, c.phone"
    else:
        have = set(con.table(segments_table).columns) - {"customer_id", "segment"}
        picked = ", ".join(f"s.{ident(c)}" for c in ["customer_id", "segment", *sorted(have & set(columns))])
    # streamed as the join gives them and numbered here: the sort's memory is then the private DuckDB's,
    # which the plans reuse, not a second buffer pool's
    reader = con.sql(f"""
        SELECT s.monetary AS _by, {picked}, c.email, c.marketing_consent
        FROM {segments_table} s JOIN contacts c USING (customer_id)
        WHERE c.email IS NOT NULL AND trim(c.email) <> ''""").to_arrow_reader(100_000)
    private.register("_plan_source", reader)
    try:
        return _stage(private, "SELECT row_number() OVER (ORDER BY _by DESC, customer_id) AS _rn, * EXCLUDE (_by) "
                               "FROM _plan_source")
    finally:
        private.unregister("_plan_source")


def stage_dicts(rows: Iterable[Mapping[str, Any]], con: duckdb.DuckDBPyConnection | None = None) -> CustomerRows:
    """Rows given as mappings (customer_id, email, marketing_consent, segment, value columns), in their order."""
    import pyarrow as pa

    con = con or duckdb.connect()
    rows = [dict(r) for r in rows]
    names = list(dict.fromkeys(k for r in rows for k in r))
    data = {n: [r.get(n) for r in rows] for n in names}
    table = pa.table(data) if names else pa.table({"customer_id": pa.array([], pa.string())})
    for name, dtype in BASE_COLUMNS.items():
        if name not in table.column_names or table.schema.field(name).type == pa.null():
            column = pa.array([None] * table.num_rows, pa.string())
            table = (table.set_column(table.column_names.index(name), name, column)
                     if name in table.column_names else table.append_column(name, column))
    con.register("_plan_source", table)
    try:
        return _stage(con, """
            SELECT row_number() OVER () AS _rn, * REPLACE (CAST(customer_id AS VARCHAR) AS customer_id)
            FROM _plan_source WHERE email IS NOT NULL AND email <> ''""")
    finally:
        con.unregister("_plan_source")


def _stage(con: duckdb.DuckDBPyConnection, select: str) -> CustomerRows:
    con.execute(f"CREATE OR REPLACE TEMP TABLE _plan_staged AS {select}")
    email_map(con, "SELECT DISTINCT email AS raw FROM _plan_staged", EMAILS)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {ROWS} AS
        SELECT r.*, m.norm AS _key,
               m.norm IS NOT NULL AND row_number() OVER (PARTITION BY m.norm ORDER BY r._rn) = 1 AS _first
        FROM _plan_staged r LEFT JOIN {EMAILS} m ON m.raw = r.email""")
    con.execute("DROP TABLE _plan_staged")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {DESIRED} AS SELECT * FROM {ROWS} WHERE _first")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {INVALID} AS
        SELECT _rn, email, CAST(customer_id AS VARCHAR) AS customer_id, segment FROM {ROWS} WHERE _key IS NULL""")
    rel = con.table(ROWS)
    columns = {name: str(dtype) for name, dtype in zip(rel.columns, rel.types)}
    return CustomerRows(con, columns)


__all__ = ["CustomerRows", "DESIRED", "INVALID", "ROWS", "stage_dicts", "stage_segments"]
