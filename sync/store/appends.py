"""Which writes to ``orders`` a kept table can catch up with by their customers alone, and what they changed.

Two kinds of write note, in their own transaction, the generation they made (:mod:`.generation`):

* a file added the lean way (:mod:`.file_lean`: its rows inserted, nothing deleted, no identity rewritten) notes
  its file ids (:func:`note_appended`): the orders that changed are exactly those files' rows;
* an incremental merge (:func:`.merge.merge_staged`: an API pull or a webhook batch) notes every customer whose
  orders it may have changed (its orders' customers, before and after, and both ids of every customer identity
  resolution moved orders between) and what it changed of the orders' count and checksums (its orders after it
  minus the same orders before it) (:func:`note_merged`). A merge of more than :data:`NOTED_ROWS` staged orders
  notes nothing.

A table kept under a key of an earlier generation (the purchase-day cache, :mod:`.day_cache`; the RFM totals,
:mod:`.rfm_totals`) asks :func:`changed_since`: when every generation since its key was noted, it replaces only
the noted customers' rows, after checking that its key's count and checksum plus what the writes noted are the
orders' now (:meth:`Changes.added`: an order edited in place without a merge fails this, and the table compares
or rebuilds as before). Any other write (a file export's full refresh, a replaced or removed file, a large merge)
leaves a generation without a note, and the answer is None. Notes of the latest :data:`KEEP` generations are kept,
and at most :data:`NOTED_CUSTOMERS` noted customers: a key further behind gets None too.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from .connection import store_tables
from .facts import DAY_HASH, RFM_HASH

TABLE = "store_appends"
MERGES = "store_merges"  # per merge generation: its changes of the orders' count and checksums
TOUCHED = "store_merged_customers"  # per merge generation: the customers whose orders it may have changed
#: generations whose notes are kept: a day of the webhook server's merges at its default debounce (one every 5 s:
#: 17 280), so that the nightly run after a day of webhooks catches up instead of rebuilding
KEEP = 20_000
#: a merge of more staged orders than this notes nothing (its kept tables rebuild)
NOTED_ROWS = 50_000
#: more noted customers than this: the older notes go (their kept tables rebuild)
NOTED_CUSTOMERS = 1_000_000
#: more customers changed than this share: a kept table is rebuilt instead of replacing theirs
MAX_CHANGED_SHARE = 0.25


def note_appended(con: duckdb.DuckDBPyConnection, generation: int, file_ids: list[int]) -> None:
    """Note that ``generation`` (just made, inside the transaction that inserted them) added the orders of
    ``file_ids`` and nothing else."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (generation BIGINT NOT NULL, file_id BIGINT NOT NULL)")
    con.execute(f"INSERT INTO {TABLE} SELECT ?, unnest(?::BIGINT[])", [generation, [int(i) for i in file_ids]])
    _forget(con, generation - KEEP)


def note_merged(con: duckdb.DuckDBPyConnection, generation: int, customers: list[str],
                change: tuple[int, int, int]) -> None:
    """Note that ``generation`` (just made, inside the merge's transaction) changed the orders of ``customers``
    alone, by ``change``: (orders, sum of their :data:`~.facts.RFM_HASH`, sum of their :data:`~.facts.DAY_HASH`)
    after minus before."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {MERGES} (generation BIGINT NOT NULL, rows HUGEINT NOT NULL, "
                "checksum HUGEINT NOT NULL, day_checksum HUGEINT NOT NULL)")
    con.execute(f"CREATE TABLE IF NOT EXISTS {TOUCHED} (generation BIGINT NOT NULL, customer_id VARCHAR)")
    con.execute(f"INSERT INTO {MERGES} VALUES (?, ?, ?, ?)", [generation, *(int(v) for v in change)])
    con.execute(f"INSERT INTO {TOUCHED} SELECT ?, unnest(?::VARCHAR[])", [generation, customers])
    _forget(con, generation - KEEP)
    if con.execute(f"SELECT count(*) FROM {TOUCHED}").fetchall()[0][0] > NOTED_CUSTOMERS:
        _forget(con, generation - 1)  # this merge's note stays: a key of the generation before it still catches up


def _forget(con: duckdb.DuckDBPyConnection, upto: int) -> None:
    """Drop the notes of the generations up to ``upto``."""
    for table in store_tables(con, TABLE, MERGES, TOUCHED):
        con.execute(f"DELETE FROM {table} WHERE generation <= ?", [upto])


@dataclass(frozen=True)
class Changes:
    """What the writes of the generations after ``since`` up to ``now`` noted (all of them did)."""

    since: int
    now: int
    files: tuple[int, ...]  # the files appended
    merged: tuple[int, int, int]  # the merges' changes summed: orders, RFM checksum, purchase days' checksum
    merges: int  # how many merges

    def _files_sql(self) -> str:
        return f"file_id IN ({', '.join(str(int(f)) for f in self.files)})"

    def customers_sql(self) -> str:
        """The customers whose orders changed (an SQL query of one column, ``customer_id``; may repeat one)."""
        parts = [f"SELECT customer_id FROM orders WHERE {self._files_sql()}"] if self.files else []
        if self.merges:
            parts.append(f"SELECT customer_id FROM {TOUCHED} WHERE generation > {int(self.since)} "
                         f"AND generation <= {int(self.now)}")
        return " UNION ALL ".join(parts) or "SELECT NULL::VARCHAR AS customer_id WHERE false"

    def added(self, con: duckdb.DuckDBPyConnection, days: bool) -> tuple[int, int]:
        """(orders, checksum) these writes added to the orders (``days``: the purchase days' checksum, else the
        RFM totals'): the appended files' orders as they are now plus what the merges noted."""
        rows, checksum = self.merged[0], self.merged[2 if days else 1]
        if self.files:
            n, h = con.execute(f"SELECT count(*), coalesce(sum({DAY_HASH if days else RFM_HASH}), 0) FROM orders "
                               f"WHERE {self._files_sql()}").fetchall()[0]
            rows, checksum = rows + n, checksum + int(h)
        return rows, checksum

    def __str__(self) -> str:
        return " and ".join(part for part in (self.files and f"{len(self.files)} file(s) appended",
                                              self.merges and f"{self.merges} merge(s)") if part)


def changed_since(con: duckdb.DuckDBPyConnection, since: int, now: int) -> Changes | None:
    """What the generations after ``since`` up to ``now`` changed, when each of them noted it (:func:`note_appended`,
    :func:`note_merged`); None when one did not, or nothing moved."""
    if now <= since:
        return None
    present = store_tables(con, TABLE, MERGES)
    files = con.execute(f"SELECT generation, file_id FROM {TABLE} WHERE generation > ? AND generation <= ?",
                        [since, now]).fetchall() if TABLE in present else []
    merges = con.execute(f"SELECT generation, rows, checksum, day_checksum FROM {MERGES} WHERE generation > ? AND "
                         "generation <= ?", [since, now]).fetchall() if MERGES in present else []
    if {g for g, _ in files} | {m[0] for m in merges} != set(range(since + 1, now + 1)):
        return None
    merged = tuple(sum(int(m[i]) for m in merges) for i in (1, 2, 3))
    return Changes(since, now, tuple(sorted({f for _, f in files})), merged, len(merges))

