"""The kept totals built straight from the orders (segmentation.purchase_days.build_customer_totals) are the
lifecycle's totals over the purchase-day table (segmentation.lifecycle.create_customer_totals): the order store
builds them the first way, a run without the store and the cache's update the second."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.tables import create_tables
from segmentation.lifecycle import create_customer_totals
from segmentation.localtime import local_day_sql
from segmentation.metrics import TOTALS_SQL, local_times_sql
from segmentation.purchase_days import ALL_DAYS, build_customer_totals, build_purchase_days

from tests.profiles import examples

START = datetime(2024, 3, 28, 21, 30, tzinfo=timezone.utc)  # days around Europe/Berlin's switch to summer time
TOTALS = "SELECT * REPLACE (list_sort(day_list) AS day_list) FROM {} ORDER BY customer_id"

orders_strategy = st.lists(
    st.tuples(st.sampled_from("abcde"), st.integers(0, 12), st.integers(0, 23),  # customer, day, hour
              st.integers(-500, 5000), st.sampled_from([None, Decimal(0), Decimal("1.50")]),  # cents, discount
              st.sampled_from(["completed", "completed", "completed", "cancelled"])),
    min_size=1, max_size=60)


@settings(max_examples=examples(60), deadline=None)
@given(orders=orders_strategy, tz=st.sampled_from(["UTC", "Europe/Berlin", "America/Los_Angeles"]),
       as_of=st.sampled_from([ALL_DAYS, date(2024, 4, 3), date(2024, 3, 20)]))
def test_totals_from_the_orders_equal_the_totals_of_the_days(orders, tz, as_of):
    """Several orders on one local day (one purchase day; the first day's amounts summed for ``monetary``),
    cancelled orders, discounts NULL / zero / positive, negative amounts, a daylight-saving switch, an ``as_of``
    cutting some days off or all of them: the same rows, columns and types, whatever the orders' order."""
    con = duckdb.connect()
    create_tables(con)
    con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, 'EUR', ?, ?)",
                    [(f"o{i}", c, START + timedelta(days=day, hours=hour), Decimal(cents) / 100, status, discount)
                     for i, (c, day, hour, cents, discount, status) in enumerate(orders)])
    days = build_purchase_days(con, as_of, tz)
    create_customer_totals(con, days, "_of_the_days")
    build_customer_totals(con, "_of_the_orders", as_of, tz, day_sql=days.day_sql)
    assert con.execute(TOTALS.format("_of_the_orders")).fetchall() == con.execute(
        TOTALS.format("_of_the_days")).fetchall()
    assert con.execute("DESCRIBE _of_the_orders").fetchall() == con.execute("DESCRIBE _of_the_days").fetchall()


@settings(max_examples=examples(80), deadline=None)
@given(orders=st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 12), st.integers(0, 23),
                                 st.integers(-500, 5000), st.sampled_from([None, Decimal(0), Decimal("1.50")]),
                                 st.sampled_from(["completed", "completed", "refunded", "cancelled"])),
                       min_size=1, max_size=60),
       tz=st.sampled_from(["UTC", "Europe/Berlin", "America/Los_Angeles"]), with_rfm=st.booleans())
def test_the_stores_one_grouping_gives_the_tables_of_their_own_groupings(orders, tz, with_rfm):
    """The order store's cold build of the totals alone (sync.store.day_cache.build_totals_and_checks: the
    customers' checks of every order, the totals of their completed ones and, when not current, the RFM totals of
    their completed and refunded ones, from one grouping) writes the tables their own groupings write: customers
    whose orders are all cancelled have checks only, all refunded checks and RFM totals."""
    from sync.store.day_cache import _CHECK_SQL, CHECK_TABLE, GROUPED, TOTALS_TABLE, build_totals_and_checks
    from sync.store.rfm_totals import TABLE as RFM_TABLE
    from sync.store.rfm_totals import current_totals, stale_key

    con = duckdb.connect()
    create_tables(con)
    con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, 'EUR', ?, ?)",
                    [(f"o{i}", c, START + timedelta(days=day, hours=hour), Decimal(cents) / 100, status, discount)
                     for i, (c, day, hour, cents, discount, status) in enumerate(orders)])
    day_sql = local_day_sql(con, "ordered_at", tz)
    build_totals_and_checks(con, day_sql, stale_key(con, tz) if with_rfm else None)
    build_customer_totals(con, "_totals_alone", ALL_DAYS, tz, day_sql=day_sql)
    con.execute(f"CREATE TABLE _checks_alone AS {_CHECK_SQL}")
    in_order = "SELECT * FROM {} ORDER BY ALL"
    pairs = [(TOTALS_TABLE, "_totals_alone", TOTALS), (CHECK_TABLE, "_checks_alone", in_order)]
    for one, alone, order in pairs:
        assert con.execute(order.format(one)).fetchall() == con.execute(order.format(alone)).fetchall()
        assert con.execute(f"DESCRIBE {one}").fetchall() == con.execute(f"DESCRIBE {alone}").fetchall()
    assert (current_totals(con) == tz) is with_rfm  # written under the key of the orders now
    if with_rfm:
        rfm_alone = f"(SELECT *, {local_times_sql(tz)} FROM ({TOTALS_SQL.format(orders='orders', where='true')}))"
        assert con.execute(in_order.format(RFM_TABLE)).fetchall() == con.execute(in_order.format(rfm_alone)).fetchall()
    assert not con.execute(f"SELECT * FROM duckdb_tables() WHERE table_name = '{GROUPED}'").fetchall()  # dropped
