"""What a run's checks of its kept data read of the orders, in one scan.

The purchase-day cache (:mod:`.day_cache`) and the RFM totals (:mod:`.rfm_totals`) each check their key against
the orders as they are now: a count, the newest order and a checksum of the columns they read. Both checksums
come from the same scan of ``orders``, so a run reads :func:`order_facts` once and hands it to both (a 10 M-order
store: one scan of 10 M rows instead of two). The facts carry the store's generation when read: handed on after a
write to ``orders`` moved it (:mod:`.generation`), they are not used and the orders are scanned again. No other
process writes the store while a run has it open (DuckDB's one writer per file), so facts of the current
generation are those of the orders now, until this run writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from .generation import generation

#: the rfm totals' checksum reads (ordered_at, amount, status); the purchase days' also reads discount (only
#: when the run reads them: a run without predictions nor boundary checks the totals alone)
#: one order's part of the purchase days' checksum (:mod:`.day_cache` sums it per customer too: the same integers)
DAY_HASH = "hash(ordered_at, amount, discount, status)"
#: one order's part of the rfm totals' checksum
RFM_HASH = "hash(ordered_at, amount, status)"
FACTS_SQL = f"SELECT count(*), max(ordered_at), sum({RFM_HASH}){{days}} FROM orders"
DAYS_SQL = f", sum({DAY_HASH})"
#: the rfm totals' facts alone (:mod:`.rfm_totals` also reads them for one file's orders, with a WHERE after)
TOTALS_FACTS_SQL = FACTS_SQL.format(days="")


@dataclass(frozen=True)
class OrderFacts:
    rows: int
    newest: datetime | None
    #: sum(hash(ordered_at, amount, status)) (None without orders): the rfm totals' checksum
    checksum: int | None
    #: sum(hash(ordered_at, amount, discount, status)) (None without orders): the purchase days' checksum
    day_checksum: int | None
    generation: int
    #: whether ``day_checksum`` was read
    days: bool = True

    def current(self, con: duckdb.DuckDBPyConnection, days: bool = False) -> bool:
        """Whether no write to ``orders`` moved the store's generation since these were read (and the
        purchase days' checksum was read, if ``days``)."""
        return (self.days or not days) and self.generation == generation(con)


def order_facts(con: duckdb.DuckDBPyConnection, days: bool = True) -> OrderFacts:
    """The facts of the orders as they are now (one scan of four columns; ``days=False``: without the purchase
    days' checksum, three)."""
    got = con.execute(FACTS_SQL.format(days=DAYS_SQL if days else "")).fetchall()[0]
    return OrderFacts(got[0], got[1], got[2], got[3] if days else None, generation(con), days)


def current_facts(con: duckdb.DuckDBPyConnection, facts: OrderFacts | None, days: bool = False) -> OrderFacts:
    """``facts`` when they are current (:meth:`OrderFacts.current`), else the orders' facts read again."""
    return facts if facts is not None and facts.current(con, days) else order_facts(con, days)
