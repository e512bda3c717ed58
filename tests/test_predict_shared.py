"""The shared purchase-day table gives what each step computed on its own before.

Until the table was shared, the BG/NBD summary, the lifecycle fields, the holdout counts and the falling-asleep
boundary each grouped the orders by customer and local day themselves. The reference queries below are those
per-step queries as they were (the local day by ICU, ``ordered_at AT TIME ZONE tz``, the definition); every
step's output on the shared table must equal them, on the demo shop and on generated orders whose timestamps
cross daylight-saving changes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.tables import create_tables
from segmentation import btyd_models as M
from segmentation.triples import distinct_triples
from segmentation import holdout
from segmentation import predictive as P
from segmentation.boundary import _spells
from segmentation.btyd import btyd_summary, simulate_bgnbd
from segmentation.lifecycle import create_customer_totals, create_lifecycle_table
from segmentation.purchase_days import build_purchase_days, purchase_days_query

from tests.profiles import examples

ICU_DAY = "CAST((ordered_at AT TIME ZONE $tz) AS DATE)"

OLD_DAYS = f"""
    SELECT customer_id, day, sum(amount) AS day_amount
    FROM (SELECT customer_id, amount, {ICU_DAY} AS day FROM orders WHERE status = 'completed')
    WHERE day <= $as_of GROUP BY customer_id, day
"""

OLD_SUMMARY = f"""
    WITH days AS ({OLD_DAYS})
    SELECT customer_id, count(*) - 1 AS frequency, date_diff('day', min(day), max(day)) AS recency_days,
           date_diff('day', min(day), $as_of::DATE) AS t_days,
           CASE WHEN count(*) > 1 THEN CAST((sum(day_amount) - arg_min(day_amount, day)) / (count(*) - 1) AS DOUBLE)
                ELSE 0.0 END AS monetary
    FROM days GROUP BY customer_id ORDER BY customer_id
"""

#: the refunds of each customer's repeat purchase days up to $as_of (segmentation.refunds' rule, written another way:
#: each refund's day is its sale's, by id, else the latest purchase day on or before it, an ASOF join of the days)
OLD_REPEAT_REFUNDS = f"""
    WITH refunds AS (
        SELECT * FROM (SELECT customer_id, regexp_replace(order_id, '~return[0-9]*$', '') AS sale_id,
                              abs(amount) AS amount, {ICU_DAY} AS day FROM orders WHERE status = 'refunded')
        WHERE day <= $as_of),
    sales AS (SELECT * FROM (SELECT customer_id, order_id, {ICU_DAY} AS day FROM orders WHERE status = 'completed')
              WHERE day <= $as_of),
    days AS (SELECT customer_id, day, min(day) OVER (PARTITION BY customer_id) AS first_day
             FROM sales GROUP BY customer_id, day)
    SELECT r.customer_id, sum(r.amount) AS refunds
    FROM refunds r LEFT JOIN sales s ON s.customer_id = r.customer_id AND s.order_id = r.sale_id
    ASOF JOIN days d ON d.customer_id = r.customer_id AND r.day >= d.day
    WHERE coalesce(s.day, d.day) > d.first_day
    GROUP BY r.customer_id
"""

OLD_LATER_DAYS = f"""
    WITH days AS ({OLD_DAYS})
    SELECT customer_id, count(*) AS purchase_days FROM days WHERE day > $start GROUP BY customer_id
    ORDER BY customer_id
"""

OLD_LIFECYCLE = f"""
    WITH completed AS (
        SELECT * FROM (SELECT order_id, customer_id, discount, {ICU_DAY} AS day FROM orders
                       WHERE status = 'completed')
        WHERE day <= $as_of
    ),
    gaps AS (
        SELECT customer_id, day, date_diff('day', lag(day) OVER (PARTITION BY customer_id ORDER BY day), day) AS gap
        FROM (SELECT DISTINCT customer_id, day FROM completed)
    ),
    per_day AS (
        SELECT customer_id, min(day) AS first_day, max(day) AS last_day, count(*) AS purchase_days,
               count(gap) AS gaps, median(gap) AS median_gap_days
        FROM gaps GROUP BY customer_id
    ),
    per_order AS (
        SELECT customer_id, count(*) AS orders, count(*) FILTER (WHERE discount > 0) / count(*) AS discount_share
        FROM completed GROUP BY customer_id
    ),
    items AS (  -- net: each line signed by its quantity; a refunded order's lines when it has a returned one
        SELECT customer_id, category, brand, coalesce(quantity, 1) AS qty,
               coalesce(quantity, 1) * abs(coalesce(price, 0)) AS spend
        FROM (SELECT c.customer_id, li.* FROM completed c JOIN line_items li USING (order_id)
              UNION ALL BY NAME
              SELECT r.customer_id, li.* FROM orders r JOIN line_items li USING (order_id)
              WHERE r.status = 'refunded' AND {ICU_DAY} <= $as_of
                    AND EXISTS (SELECT 1 FROM line_items n WHERE n.order_id = r.order_id AND n.quantity < 0))
    ),
    cat AS (
        SELECT customer_id, category, row_number() OVER (PARTITION BY customer_id
                                                         ORDER BY sum(spend) DESC, sum(qty) DESC, category) AS rank
        FROM items WHERE category IS NOT NULL GROUP BY customer_id, category
        HAVING sum(spend) > 0 OR sum(spend) = 0 AND sum(qty) > 0
    ),
    brand AS (
        SELECT customer_id, brand, row_number() OVER (PARTITION BY customer_id
                                                      ORDER BY sum(spend) DESC, sum(qty) DESC, brand) AS rank
        FROM items WHERE brand IS NOT NULL GROUP BY customer_id, brand
        HAVING sum(spend) > 0 OR sum(spend) = 0 AND sum(qty) > 0
    )
    SELECT d.customer_id, d.first_day, d.last_day, d.purchase_days, o.orders, d.gaps, d.median_gap_days,
           CASE WHEN d.purchase_days > 1
                THEN round(date_diff('day', d.first_day, d.last_day) / (d.purchase_days - 1), 2) END,
           CAST(o.discount_share AS DOUBLE), (o.orders >= 2 AND o.discount_share >= $threshold),
           cat.category, brand.brand
    FROM per_day d JOIN per_order o USING (customer_id)
    LEFT JOIN cat ON cat.customer_id = d.customer_id AND cat.rank = 1
    LEFT JOIN brand ON brand.customer_id = d.customer_id AND brand.rank = 1
    ORDER BY d.customer_id
"""

OLD_SPELLS = f"""
    WITH days AS (SELECT DISTINCT customer_id, CAST({ICU_DAY} - DATE '1970-01-01' AS INTEGER) AS day
                  FROM orders WHERE status = 'completed' {{sample}}),
    spells AS (
        SELECT coalesce(lead(day) OVER w, $end_day) - day AS d, lead(day) OVER w IS NOT NULL AS event
        FROM days WHERE day <= $end_day WINDOW w AS (PARTITION BY customer_id ORDER BY day)
    )
    SELECT d, count(*) FILTER (WHERE event), count(*) FILTER (WHERE NOT event) FROM spells GROUP BY d ORDER BY d
"""


def _old(con, sql: str, **params) -> list[tuple]:
    used = {k: v for k, v in params.items() if f"${k}" in sql}
    return con.execute(sql, used).fetchall()


def _counted(s, later, row=None, customers=None) -> Counter:
    """(x, recency_days, t_days, later) → customers, from distinct summaries (and rows pointing at them)."""
    row = np.arange(len(s)) if row is None else row
    customers = s.weights if customers is None else customers
    out: Counter = Counter()
    for i, k, n in zip(row.tolist(), later.tolist(), customers.tolist()):
        out[(int(s.x[i]), int(s.recency_days[i]), int(s.t_days[i]), int(k))] += int(n)
    return out


def _assert_same_steps(con: duckdb.DuckDBPyConnection, as_of: date, tz: str, holdout_days: int = 30) -> None:
    """Each step on one shared table = the old per-step query; a table built as of ``as_of`` also serves any
    earlier day (the holdout's calibration end)."""
    days = build_purchase_days(con, as_of, tz)
    cal_end = as_of - timedelta(days=holdout_days)
    for day in (as_of, cal_end):
        s = btyd_summary(con, day, tz, "days", days=days)
        got = list(zip(s.customer_id.to_pylist(), s.frequency.tolist(), s.recency_days.tolist(), s.t_days.tolist()))
        want = _old(con, OLD_SUMMARY, as_of=day, tz=tz)
        assert got == [r[:4] for r in want]
        np.testing.assert_allclose(s.monetary, [r[4] for r in want], rtol=1e-12)
    later = con.execute(f"SELECT customer_id, count(*) FROM {days.table} WHERE day > ? GROUP BY 1 ORDER BY 1",
                        [cal_end]).fetchall()
    assert later == _old(con, OLD_LATER_DAYS, as_of=as_of, tz=tz, start=cal_end)
    create_lifecycle_table(con, as_of, tz, 0.5, days=days, calibration_end=cal_end)
    lifecycle = ("SELECT * EXCLUDE (monetary, cal_x, cal_recency_days, cal_t_days, cal_later) "
                 "FROM customer_lifecycle ORDER BY customer_id")
    assert con.execute(lifecycle).fetchall() == _old(con, OLD_LIFECYCLE, as_of=as_of, tz=tz, threshold=0.5)
    # `segments --customers` reads the same rows as a subquery, never written as a table: the same lifecycle
    whole = con.execute("SELECT * FROM customer_lifecycle ORDER BY customer_id").fetchall()
    create_lifecycle_table(con, as_of, tz, 0.5, days=purchase_days_query(con, as_of, tz), calibration_end=cal_end)
    assert con.execute("SELECT * FROM customer_lifecycle ORDER BY customer_id").fetchall() == whole
    # from kept totals (the store's, read by a warm run as of their last day or later): a view over them, the
    # holdout's calibration counted from each customer's list of days; the same rows
    create_customer_totals(con, days, "_kept_totals")
    last = con.execute("SELECT max(last_day) FROM _kept_totals").fetchall()[0][0]
    create_lifecycle_table(con, as_of, tz, 0.5, days=replace(days, totals="_kept_totals", last_day=last),
                           calibration_end=cal_end)
    assert con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'customer_lifecycle'").fetchall() == [(1,)]
    assert con.execute("SELECT * FROM customer_lifecycle ORDER BY customer_id").fetchall() == whole
    # the predictions read the summary from customer_lifecycle (its distinct rows) and the holdout from one
    # pass over the table: the same as the old summaries, as of as_of and as of the calibration end
    old = _old(con, OLD_SUMMARY, as_of=as_of, tz=tz)
    monetary = con.execute("SELECT monetary FROM customer_lifecycle ORDER BY customer_id").fetchall()
    refunds = dict(_old(con, OLD_REPEAT_REFUNDS, as_of=as_of, tz=tz))  # the mean spend is net of them
    net = [r[4] if r[0] not in refunds else max(r[4] - float(refunds[r[0]]) / r[1], 0.0) for r in old]
    np.testing.assert_allclose([m for (m,) in monetary], net, rtol=1e-12, atol=1e-9)
    s = P._summary(con, as_of, "days")
    assert _counted(s, np.zeros(len(s))) == Counter((r[1], r[2], r[3], 0) for r in old)
    cal = holdout.calibration(con, "days")
    later = dict(_old(con, OLD_LATER_DAYS, as_of=as_of, tz=tz, start=cal_end))
    assert _counted(cal.summary, cal.later, cal.row, cal.customers) == Counter(
        (r[1], r[2], r[3], later.get(r[0], 0)) for r in _old(con, OLD_SUMMARY, as_of=cal_end, tz=tz))
    end_day = (as_of - date(1970, 1, 1)).days
    for every in (1, 2):
        sample = f"AND hash(customer_id) % {every} = 0" if every > 1 else ""
        want = _old(con, OLD_SPELLS.format(sample=sample), tz=tz, end_day=end_day)
        shared = _spells(con, days, as_of, every)
        own = build_purchase_days(con, as_of, tz, sampled_every=every, table="_own_days")
        for durations, events, censored, *_ in (shared, _spells(con, own, as_of, every)):
            assert list(zip(durations.tolist(), events.tolist(), censored.tolist())) == want


def test_demo_shop_steps_equal_the_per_step_queries(tmp_path):
    from sync.config import load_config
    from sync.demodata import generate_shop
    from sync.pipeline import configured_source, pull_into
    from sync.store import connect_store

    as_of = date(2025, 6, 30)
    cfg = load_config(generate_shop(tmp_path, customers=400, seed=5, as_of=as_of))
    con = connect_store(None)  # an in-memory order store, the export ingested into it
    pull_into(con, configured_source(cfg))
    assert con.execute("SELECT count(*) FROM orders").fetchall()[0][0] > 1000
    for tz in (cfg.timezone, "Europe/Berlin"):  # the demo's own zone, and one with daylight saving
        _assert_same_steps(con, as_of, tz, holdout_days=90)
        assert len(_old(con, OLD_REPEAT_REFUNDS, as_of=as_of, tz=tz)) > 10  # refunds of repeat days netted


def test_demo_shop_run_shares_one_table_with_the_boundary(tmp_path):
    """`rfmsync predict` builds the table once: the boundary reuses it and gives what it gives on its own."""
    from sync.config import load_config
    from sync.demodata import generate_shop
    from sync.pipeline import compute_segments

    as_of = date(2025, 6, 30)
    cfg = load_config(generate_shop(tmp_path, customers=400, seed=5, as_of=as_of))
    run = compute_segments(cfg, as_of, predict=True, holdout=True)
    days = run.predictions.purchase_days
    assert days is not None and days.covers(as_of, cfg.timezone)
    alone = compute_segments(cfg, as_of)  # no predictions: the boundary builds its own (sampled) table
    assert alone.predictions is None
    assert run.result.boundary == alone.result.boundary and run.result.boundary["gaps"] > 30


def test_customers_file_run_holds_no_table_in_memory(tmp_path):
    """`segments --customers` has no boundary: no purchase-day table is held in memory (a TEMP table); the run
    keeps the per-customer totals in the order store (:mod:`sync.store.day_cache`), not the days, and a run on a
    connection it was given (no store of its own) builds none either."""
    from sync.config import load_config
    from sync.demodata import generate_shop
    from sync.pipeline import compute_segments
    from sync.store import connect_store

    cfg = load_config(generate_shop(tmp_path, customers=200, seed=5, as_of=date(2025, 6, 30)))
    run = compute_segments(cfg, date(2025, 6, 30), predict=True, boundary=False)
    temp = {r[0] for r in run.con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()}
    assert "customer_predictions" in temp and not any("purchase_days" in t for t in temp)
    assert run.predictions.purchase_days is None and run.result.boundary == {}
    stored = {r[0] for r in run.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "cache_customer_totals" in stored and "cache_purchase_days" not in stored  # the totals alone
    run.close()
    con = connect_store(None)
    con.execute("INSERT INTO orders SELECT * FROM read_parquet(?)", [str(_orders_parquet(cfg, tmp_path))])
    given = compute_segments(cfg, date(2025, 6, 30), con=con, predict=True, boundary=False)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "customer_predictions" in tables and not any("purchase_days" in t for t in tables)
    assert given.predictions.purchase_days is None


def _orders_parquet(cfg, tmp_path):
    """The store's orders (without the file id) as a Parquet file."""
    import duckdb as _duckdb

    from sync.pipeline import store_path

    out = tmp_path / "orders.parquet"
    with _duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        con.execute(f"COPY (SELECT * EXCLUDE (file_id) FROM orders) TO '{out}' (FORMAT PARQUET)")
    return out


def test_fit_on_distinct_triples_equals_the_fit_on_every_customer():
    rng = np.random.default_rng(9)
    T = rng.integers(0, 300, 20_000) / 7.0
    x, tx = simulate_bgnbd(0.25, 4.0, 0.8, 2.4, T, rng)
    tx = np.round(tx * 7) / 7  # whole days, as the summary gives: customers share triples
    u = distinct_triples(x, tx, T)
    weights = np.bincount(u[3]).astype(float)
    assert len(u[0]) < len(x) / 2
    every = M.fit_bgnbd(x, tx, T)
    distinct = M.fit_bgnbd(u[0], u[1], u[2], weights=weights)
    assert (distinct.r, distinct.alpha, distinct.a, distinct.b) == pytest.approx(
        (every.r, every.alpha, every.a, every.b), rel=1e-5)
    assert distinct.log_likelihood == pytest.approx(every.log_likelihood, rel=1e-12)


def test_a_fit_started_at_an_earlier_fit_finds_the_same_maximum():
    """`rfmsync predict` starts the holdout's refit at the full history's fit: the same parameters, fewer steps."""
    rng = np.random.default_rng(11)
    T = rng.integers(30, 400, 30_000) / 7.0
    x, tx = simulate_bgnbd(0.25, 4.0, 0.8, 2.4, T, rng)
    tx = np.round(tx * 7) / 7
    full = M.fit_bgnbd(x, tx, T)
    early = T - 60 / 7 >= 0  # the same customers 60 days earlier, roughly: fewer of them, shorter histories
    cal_x, cal_tx, cal_T = np.maximum(x[early] - 1, 0), np.minimum(tx[early], T[early] - 60 / 7), T[early] - 60 / 7
    cal_tx = np.where(cal_x > 0, cal_tx, 0.0)
    cold, warm = M.fit_bgnbd(cal_x, cal_tx, cal_T), M.fit_bgnbd(cal_x, cal_tx, cal_T, start=full)
    assert (warm.r, warm.alpha, warm.a, warm.b) == pytest.approx((cold.r, cold.alpha, cold.a, cold.b), rel=1e-5)
    assert warm.log_likelihood == pytest.approx(cold.log_likelihood, rel=1e-12)


# --------------------------------------------------------------------------- generated orders across DST

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Tashkent", "UTC"]
# instants within a day of the 2024 changes of the zones above (UTC), and a quiet stretch before them
ANCHORS = [datetime(2024, 3, 31, 1, tzinfo=timezone.utc), datetime(2024, 10, 27, 1, tzinfo=timezone.utc),
           datetime(2024, 3, 10, 7, tzinfo=timezone.utc), datetime(2024, 11, 3, 6, tzinfo=timezone.utc),
           datetime(2024, 4, 6, 15, tzinfo=timezone.utc), datetime(2024, 1, 15, 12, tzinfo=timezone.utc)]

order = st.tuples(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.sampled_from(ANCHORS),
    st.integers(-36 * 60, 36 * 60),  # minutes around the anchor
    st.integers(1, 500),
    st.sampled_from(["completed", "completed", "completed", "refunded", "cancelled"]),
    st.sampled_from([None, 0, 5]),
    st.sampled_from([None, ("Shoes", "Acme"), ("Hats", None), (None, "Zeta")]),
)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders=st.lists(order, min_size=1, max_size=40), tz=st.sampled_from(ZONES),
       as_of=st.sampled_from([date(2024, 3, 31), date(2024, 10, 27), date(2024, 11, 3), date(2024, 12, 31)]))
def test_generated_orders_across_dst_equal_the_per_step_queries(orders, tz, as_of):
    con = duckdb.connect()
    create_tables(con)
    con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, 'EUR', ?, ?)",
                    [(f"o{i}", c, anchor + timedelta(minutes=m), Decimal(amount), status, disc)
                     for i, (c, anchor, m, amount, status, disc, _) in enumerate(orders)])
    items = [(f"o{i}", 1, item[0], item[1], 1 + i % 3, 10 + i) for i, (*_, item) in enumerate(orders) if item]
    if items:
        con.executemany("INSERT INTO line_items VALUES (?, ?, NULL, NULL, ?, ?, ?, ?)", items)
    _assert_same_steps(con, as_of, tz, holdout_days=120)


def test_a_table_of_another_zone_or_a_sample_is_refused():
    con = duckdb.connect()
    create_tables(con)
    con.execute("INSERT INTO orders VALUES ('o1', 'a', TIMESTAMPTZ '2024-05-01 10:00+00', 10, 'EUR', 'completed', "
                "NULL)")
    berlin = build_purchase_days(con, date(2024, 6, 1), "Europe/Berlin")
    with pytest.raises(ValueError, match="does not cover"):
        btyd_summary(con, date(2024, 6, 1), "UTC", days=berlin)
    with pytest.raises(ValueError, match="does not cover"):
        create_lifecycle_table(con, date(2024, 7, 1), "Europe/Berlin", days=berlin)  # a later day
    sampled = build_purchase_days(con, date(2024, 6, 1), "UTC", sampled_every=2, table="_s")
    with pytest.raises(ValueError, match="sampled"):
        btyd_summary(con, date(2024, 6, 1), "UTC", days=sampled)
    report = P.predict_customers(con, date(2024, 6, 1), P.PredictConfig(holdout_days=0), timezone="UTC")
    assert report.purchase_days is not None and report.to_json().get("purchase_days") is None
