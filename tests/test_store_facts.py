"""One scan of the orders serves both kept tables' checks (sync.store.facts), and never once the orders moved.

A run reads the orders' count, newest order and both checksums once and hands them to the purchase-day cache's
check and the RFM totals' check. Facts read before a write to ``orders`` must not vouch for the kept tables after
it: the write moves the store's generation, and facts of an older generation are read again.
"""

from __future__ import annotations

import json
from datetime import date

import duckdb
import pytest

from connectors.tables import create_tables
from segmentation.metrics import TOTALS_SQL, local_times_sql
from sync.store.day_cache import TOTALS_TABLE, cache_key, cached_purchase_days, valid_purchase_days
from sync.store.facts import order_facts
from sync.store.generation import bump_generation
from sync.store.rfm_totals import TABLE, current_totals, rfm_totals

AS_OF = date(2025, 6, 30)
ORDERS = [(1, "c1", "2024-03-01 10:00:00+00", "10.00", None, "completed"),
          (2, "c1", "2024-09-01 10:00:00+00", "20.00", "5.00", "completed"),
          (3, "c2", "2025-02-14 23:30:00+00", "99.99", None, "completed"),
          (4, "c3", "2025-05-01 08:00:00+00", "15.00", None, "refunded")]


def _insert(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    """A write to ``orders`` as every writer of the store makes it: the generation moves in its transaction."""
    con.execute("BEGIN TRANSACTION")
    con.executemany("INSERT INTO orders (order_id, customer_id, ordered_at, amount, discount, status) "
                    "VALUES (?, ?, CAST(? AS TIMESTAMPTZ), CAST(? AS DECIMAL(18, 2)), CAST(? AS DECIMAL(18, 2)), ?)",
                    rows)
    bump_generation(con)
    con.execute("COMMIT")


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    create_tables(con)
    _insert(con, ORDERS)
    yield con
    con.close()


@pytest.mark.parametrize("days", [True, False], ids=["with-days-checksum", "without"])
def test_the_shared_facts_give_the_keys_of_the_checks_own_scans(con, days):
    facts = order_facts(con, days=days)
    assert cache_key(con, "UTC", facts=facts) == cache_key(con, "UTC")
    rows, checksum = con.execute("SELECT count(*), sum(hash(ordered_at, amount, discount, status)) FROM orders"
                                 ).fetchall()[0]
    assert [rows, str(checksum)] == json.loads(cache_key(con, "UTC", facts=facts))[3:5]
    assert rfm_totals(con, AS_OF, "UTC", facts) == TABLE
    assert current_totals(con) == "UTC"  # kept under the key of its own scan: the same


def test_facts_read_before_a_write_to_the_orders_do_not_vouch_for_the_kept_tables(con):
    facts = order_facts(con)
    cached_purchase_days(con, "UTC", days=False, facts=facts)
    assert rfm_totals(con, AS_OF, "UTC", facts) == TABLE
    assert valid_purchase_days(con, "UTC", facts=facts) is not None
    _insert(con, [(5, "c2", "2025-06-01 12:00:00+00", "40.00", None, "completed")])  # the orders move on
    assert valid_purchase_days(con, "UTC", facts=facts) is None  # the old facts are read again: stale
    days = cached_purchase_days(con, "UTC", days=False, facts=facts)  # rebuilt, c2's new day counted
    assert con.execute(f"SELECT purchase_days FROM {TOTALS_TABLE} WHERE customer_id = 'c2'").fetchall() == [(2,)]
    assert days.totals == TOTALS_TABLE
    assert rfm_totals(con, AS_OF, "UTC", facts) == TABLE  # rebuilt too
    fresh = con.execute(f"SELECT *, {local_times_sql('UTC')} FROM ({TOTALS_SQL.format(orders='orders', where='true')})"
                        " ORDER BY customer_id").fetchall()
    assert con.execute(f"SELECT * FROM {TABLE} ORDER BY customer_id").fetchall() == fresh
