"""The customer rows a plan is made from, staged once per run in DuckDB (never as Python dicts).

:func:`stage_segments` stages the segments table joined to the contacts (the rows of every destination);
:func:`stage_dicts` stages rows given as mappings (the webhook resync, tests). Both give a
:class:`CustomerRows` with three temp tables in its connection:

* ``_plan_rows``: every row with an address, numbered ``_rn`` in planning order (by value: monetary
  descending, then customer id), with its normalised address ``_key`` (NULL when invalid);
* ``_plan_desired``: one row per address, the first in planning order (two customers sharing an address: the
  more recent/valuable row wins, with the address's consent: :func:`~sync.planning.consent.address_consent`): a
  view of ``_plan_rows`` leaving out the later rows (``_plan_later``), not a second copy;
* ``_plan_invalid``: the rows whose address is invalid (reported as skipped, in planning order).

Addresses are normalised as :func:`connectors.email_phone.email_map` does (the SQL twin of
``normalize_email``): plain ASCII addresses in SQL on every row as it is staged, the rest through email_map
(email-validator, each distinct address once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import duckdb

from connectors.email_phone import email_fast_sql, email_map
from connectors.normalize import ident

from .consent import ADDRESS_CONSENT_SQL

if TYPE_CHECKING:
    import pyarrow as pa

ROWS, DESIRED, INVALID, EMAILS = "_plan_rows", "_plan_desired", "_plan_invalid", "_plan_emails"
LATER = "_plan_later"  # the _rn of rows whose address an earlier row has
SHARED = "_plan_shared"  # each address several rows have: its first row's _rn, the address's consent, who refuses
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

    def shared_note(self, shown: int = 3) -> str | None:
        """A note naming the addresses several customers share (a family account), each one contact synced as
        its first customer in planning order; None when every address is one customer's (``_plan_later`` is
        then empty, and nothing else is read)."""
        if not self.con.execute(f"SELECT EXISTS (SELECT 1 FROM {LATER})").fetchall()[0][0]:
            return None
        found = self.con.execute(f"""
            WITH k AS (SELECT DISTINCT r._key FROM {ROWS} r SEMI JOIN {LATER} l ON l._rn = r._rn)
            SELECT _key, list(CAST(customer_id AS VARCHAR) ORDER BY _rn), min(_rn) AS first,
                   count(*) OVER () AS n
            FROM {ROWS} SEMI JOIN k USING (_key) GROUP BY _key ORDER BY first LIMIT {int(shown)}""").fetchall()
        n = found[0][3]
        listed = "; ".join(f"{key}: customers {', '.join(ids)}" for key, ids, _, _ in found)
        more = f" and {n - len(found)} more" if n > len(found) else ""
        return (f"{n} address{'es are each' if n > 1 else ' is'} shared by several customers ({listed}{more}): "
                f"each is one contact, synced as the first of its customers (the most valuable); the others' "
                f"segments and fields are not synced")


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
    # ... and let the allocator's own threads give it back to the system as it goes (a plan's sorts and joins
    # free hundreds of MB just before a million changes are built in Python: without them, both stay resident)
    private.execute("SET allocator_background_threads = true")
    if columns is None:
        picked = "s.*, c.phone"
    else:
        have = set(con.table(segments_table).columns) - {"customer_id", "segment"}
        picked = ", ".join(f"s.{ident(c)}" for c in ["customer_id", "segment", *sorted(have & set(columns))])
    # sorted by the run's DuckDB (an ORDER BY sorts on every thread; a window's row_number over the whole
    # table numbers them on one) and numbered as the batches stream over, in that order
    reader = con.sql(f"""
        SELECT {picked}, c.email, c.marketing_consent
        FROM {segments_table} s JOIN contacts c USING (customer_id)
        WHERE c.email IS NOT NULL AND trim(c.email) <> ''
        ORDER BY s.monetary DESC, s.customer_id""").to_arrow_reader(100_000)
    private.register("_plan_source", numbered(reader))
    try:
        return _stage(private, "SELECT * FROM _plan_source")
    finally:
        private.unregister("_plan_source")


def numbered(reader: "pa.RecordBatchReader") -> "pa.RecordBatchReader":
    """``reader``'s batches with a first column ``_rn``: 1, 2, … in the order they come."""
    import numpy as np
    import pyarrow as pa

    def batches() -> Iterator[pa.RecordBatch]:
        start = 1
        for batch in reader:
            rn = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64))
            yield pa.RecordBatch.from_arrays([rn, *batch.columns], schema=schema)
            start += batch.num_rows

    schema = pa.schema([pa.field("_rn", pa.int64()), *reader.schema])
    return pa.RecordBatchReader.from_batches(schema, batches())


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
    # the plain-ASCII addresses are normalised on every row as the rows are numbered (one pass, no join); only
    # the others go through email_map (email-validator, each distinct address once) and are filled in after
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {ROWS} AS
        SELECT * EXCLUDE (_e), CASE WHEN {email_fast_sql('_e')} THEN _e END AS _key
        FROM (SELECT *, lower(trim(email)) AS _e FROM ({select}))""")
    email_map(con, f"SELECT DISTINCT email AS raw FROM {ROWS} WHERE _key IS NULL", EMAILS)
    con.execute(f"""UPDATE {ROWS} r SET _key = m.norm FROM {EMAILS} m
        WHERE r._key IS NULL AND m.raw = r.email AND m.norm IS NOT NULL""")
    # a later row with an address already planned is not desired (the first in planning order wins): found by
    # grouping the keys (few repeat), not by numbering every key's rows; the first row of a shared address carries
    # the address's consent, what all its customers say (a "no" on any wins: consent.address_consent)
    # (and the first card saying no, whose customer a skip's reason names when it is not the first card's)
    own = "coalesce(NULLIF(CAST(marketing_consent AS VARCHAR), ''), 'unknown')"
    consent, no = ADDRESS_CONSENT_SQL.format(c=own), f"{own} = 'no'"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {SHARED} AS SELECT _key, min(_rn) AS first, {consent} AS consent,
        CAST(arg_min(customer_id, _rn) FILTER (WHERE {no}) AS VARCHAR) AS refused_by
        FROM {ROWS} WHERE _key IS NOT NULL GROUP BY _key HAVING count(*) > 1""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {LATER} AS
        SELECT r._rn FROM {ROWS} r JOIN {SHARED} d ON d._key = r._key AND r._rn > d.first""")
    con.execute(f"""UPDATE {ROWS} r SET marketing_consent = s.consent FROM {SHARED} s
        WHERE r._rn = s.first AND r.marketing_consent IS DISTINCT FROM s.consent""")
    con.execute(f"""CREATE OR REPLACE TEMP VIEW {DESIRED} AS
        SELECT r.* FROM {ROWS} r ANTI JOIN {LATER} l ON l._rn = r._rn WHERE r._key IS NOT NULL""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {INVALID} AS
        SELECT _rn, email, CAST(customer_id AS VARCHAR) AS customer_id, segment FROM {ROWS} WHERE _key IS NULL""")
    rel = con.table(ROWS)
    columns = {name: str(dtype) for name, dtype in zip(rel.columns, rel.types)}
    return CustomerRows(con, columns)


__all__ = ["CustomerRows", "DESIRED", "INVALID", "ROWS", "SHARED", "stage_dicts", "stage_segments"]
