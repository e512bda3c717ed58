"""Behavioural per-customer fields, in DuckDB SQL (no per-customer Python).

As of a local day ``as_of`` (inclusive, in the shop's time zone), over completed orders:

* ``avg_days_between_orders``: (last − first purchase day) / (purchase days − 1); NULL
  with a single purchase day (several orders on one day count as one purchase day);
* ``median_gap_days`` / ``gaps``: median and number of gaps between consecutive purchase days;
* ``discount_share``: share of completed orders with ``discount > 0``;
* ``discount_hunter``: ``discount_share ≥ threshold`` and at least 2 completed orders
  (one discounted first order is a welcome coupon, not a habit);
* ``favourite_category`` / ``favourite_brand``: the one with the most net line-item spend (quantity × |unit price|,
  NULL quantity = 1, NULL price = 0) over the lines of completed and refunded orders, each line's sign taken from
  its quantity alone (a returned line, as the file reader stores a receipt's, is negative; an exchange receipt
  netting a refund keeps its bought line), a refunded order with no negative line left out (a sale wholly
  refunded: an older store's CRM order, a generic webhook's), among those with a positive net spend (or, all
  prices unknown, a positive net quantity): a category bought and returned is none; ties go to the larger net
  quantity, then the alphabetically first name; NULL without items;
* ``monetary``: the BTYD mean spend of the repeat purchase days (:mod:`segmentation.btyd`), computed in the same
  pass so that the predictions read the summary from this table instead of grouping the days again, less the
  refunds of those days' purchases (:mod:`segmentation.refunds`: the spend model's mean spend is of what was kept).

:func:`create_predictions_table` adds the next-order rule: ``next_order_date`` = last
purchase day + the customer's own median gap (rounded to whole days) when they have ≥ 2
gaps, else ``as_of`` + the model's days until a purchase becomes more likely than not
(NULL when the model has no such day, or when that day is more than ``horizon_days`` after
``as_of``: a one-time buyer has P(alive) = 1 under BG/NBD and gets a date a year or more ahead, which no reminder
should be built on), and ``reorder_due`` = ``as_of`` ≥ ``next_order_date`` − ``remind_days_before``.
``next_order_reason`` says why a ``next_order_date`` is NULL: ``beyond_horizon``, ``unlikely`` (P(alive) ≤ 0.5)
or ``no_model`` (the model was not fitted); NULL when there is a date.
"""

from __future__ import annotations

import numbers
import re
from datetime import date, datetime

import duckdb

from .purchase_days import PurchaseDays, purchase_days_for
from .refunds import TABLE as REFUNDS, create_refunds, net_monetary_sql

#: the holdout check's per-customer numbers (:mod:`segmentation.holdout`), when asked for: the BTYD summary as of
#: $cal_end (cal_t_days < 0: no purchase day by then) and the purchase days after it
CALIBRATION_SQL = """,
               count(*) FILTER (WHERE day <= $cal_end) - 1       AS cal_x,
               max(day) FILTER (WHERE day <= $cal_end) - min(day) AS cal_recency_days,
               $cal_end::DATE - min(day)                          AS cal_t_days,
               count(*) FILTER (WHERE day > $cal_end)             AS cal_later"""
CALIBRATION_COLUMNS = ", d.cal_x, d.cal_recency_days, d.cal_t_days, d.cal_later"

#: the BTYD mean spend of a customer's repeat purchase days (the first day's amount left out), over rows of
#: ``day`` and ``day_amount`` grouped by customer
MONETARY_SQL = """CASE WHEN count(*) > 1
                    THEN CAST((sum(day_amount) - arg_min(day_amount, day)) / (count(*) - 1) AS DOUBLE)
                    ELSE 0.0 END"""
#: the per-customer aggregates of the purchase days up to $as_of (also kept over every day in the order store:
#: :func:`create_customer_totals`)
PER_CUSTOMER_SQL = """
        SELECT customer_id, min(day) AS first_day, min(day) FILTER (WHERE gap IS NOT NULL) AS second_day,
               max(day) AS last_day, count(*) AS purchase_days,
               {gaps},
               CAST(sum(orders) AS BIGINT) AS orders, sum(discounted) / sum(orders) AS discount_share,
               """ + MONETARY_SQL + """ AS monetary{calibration}
        FROM {days} WHERE day <= $as_of GROUP BY customer_id
"""
GAPS_SQL = "count(gap) AS gaps, median(gap) AS median_gap_days"
#: what the kept totals add to those aggregates: the customer's purchase days themselves (in no particular order),
#: from which the holdout's calibration numbers of any calibration end are counted without the day table or the
#: orders (a few dates per customer, beside the totals' row instead of a row per customer and day)
TOTALS_DAYS_SQL = """,
               list(day) AS day_list"""

#: the same rows from the totals of every day (no purchase day after $as_of)
TOTALS_SQL = """
        SELECT t.* EXCLUDE (day_list) FROM {totals} t
"""
#: ... with the calibration numbers, from each customer's list of days: only a customer who bought after $cal_end
#: has days to filter (one filter: the days up to $cal_end; the others are the later ones, purchase_days in all); a
#: customer whose first purchase day came after $cal_end gets cal_t_days < 0 (not in the calibration period)
TOTALS_CALIBRATION_SQL = """
        SELECT t.* EXCLUDE (day_list, cal_days, later, last_cal),
               t.purchase_days - t.later - 1 AS cal_x,
               CASE WHEN t.later = 0 THEN t.last_day - t.first_day ELSE t.last_cal - t.first_day END
                   AS cal_recency_days,
               $cal_end::DATE - t.first_day AS cal_t_days,
               t.later AS cal_later
        FROM (SELECT *, CASE WHEN cal_days IS NULL THEN 0 ELSE purchase_days - len(cal_days) END AS later,
                     list_max(cal_days) AS last_cal
              FROM (SELECT *, CASE WHEN last_day > $cal_end THEN list_filter(day_list, lambda d: d <= $cal_end) END
                                  AS cal_days
                    FROM {totals})) t
"""


#: each customer's favourite category and brand by net spend (rows only for customers with line items of completed
#: or refunded orders up to $as_of, each line's sign its quantity's: a returned line is negative; a refunded order
#: with no returned line is a sale wholly refunded, left out), of those they kept something of: a table of its own,
#: so that ``customer_lifecycle`` can be a view (:func:`create_lifecycle_table`)
FAVOURITES_SQL = """
    CREATE OR REPLACE TEMP TABLE customer_favourites AS
    WITH items AS (
        SELECT c.customer_id, li.category, li.brand, coalesce(li.quantity, 1) AS qty,
               coalesce(li.quantity, 1) * abs(coalesce(li.price, 0)) AS spend
        FROM line_items li
        JOIN (SELECT order_id, customer_id, status FROM {orders}
              WHERE status IN ('completed', 'refunded') AND {day} <= $as_of) c
        USING (order_id)
        WHERE c.status = 'completed' OR li.order_id IN (SELECT order_id FROM line_items WHERE quantity < 0)
    ),
    cat AS (
        SELECT customer_id, category,
               row_number() OVER (PARTITION BY customer_id
                                  ORDER BY sum(spend) DESC, sum(qty) DESC, category) AS rank
        FROM items WHERE category IS NOT NULL GROUP BY customer_id, category
        HAVING sum(spend) > 0 OR sum(spend) = 0 AND sum(qty) > 0
    ),
    brand AS (
        SELECT customer_id, brand,
               row_number() OVER (PARTITION BY customer_id
                                  ORDER BY sum(spend) DESC, sum(qty) DESC, brand) AS rank
        FROM items WHERE brand IS NOT NULL GROUP BY customer_id, brand
        HAVING sum(spend) > 0 OR sum(spend) = 0 AND sum(qty) > 0
    )
    SELECT customer_id, cat.category AS favourite_category, brand.brand AS favourite_brand
    FROM (SELECT customer_id, category FROM cat WHERE rank = 1) cat
    FULL JOIN (SELECT customer_id, brand FROM brand WHERE rank = 1) brand USING (customer_id)
"""

# From the per-customer aggregates ({per_day}) and the favourites; a TABLE, or a VIEW over the store's kept totals
# (no parameters then: $threshold and $cal_end are written into its text)
LIFECYCLE_SQL = """
    CREATE TEMP {kind} customer_lifecycle AS
    WITH per_day AS ({per_day})
    SELECT d.customer_id, d.first_day, d.last_day, d.purchase_days, d.orders, d.gaps, d.median_gap_days,
           CASE WHEN d.purchase_days > 1
                THEN round(date_diff('day', d.first_day, d.last_day) / (d.purchase_days - 1), 2)
           END AS avg_days_between_orders,
           CAST(d.discount_share AS DOUBLE) AS discount_share,
           (d.orders >= 2 AND d.discount_share >= $threshold) AS discount_hunter,
           f.favourite_category, f.favourite_brand, {monetary} AS monetary{calibration_columns}
    FROM per_day d
    LEFT JOIN customer_favourites f ON f.customer_id = d.customer_id{refunds}
"""

PREDICTIONS_SQL = """
    CREATE TEMP TABLE customer_predictions AS
    WITH model_next AS (
        SELECT l.*, m.p_alive, m.expected_purchases, m.churn_probability, m.clv_per_aov,
               ceil(m.days_to_next_order) AS model_days,
               CASE WHEN m.p_alive IS NOT NULL THEN {aov} END AS expected_aov
        FROM customer_lifecycle l
        LEFT JOIN {model} m ON {join}
    ),
    nxt AS (
        SELECT *,
               CASE WHEN gaps >= 2
                    THEN last_day + CAST(round(median_gap_days) AS INTEGER)
                    WHEN model_days <= $horizon
                    THEN $as_of::DATE + CAST(model_days AS INTEGER)
               END AS next_order_date,
               -- the same rule is counted in numpy for PredictReport.next_order_beyond_horizon
               -- (segmentation.predictive._model_table): change both together
               CASE WHEN gaps >= 2 THEN NULL
                    WHEN model_days > $horizon THEN 'beyond_horizon'
                    WHEN model_days IS NOT NULL THEN NULL
                    WHEN p_alive IS NULL THEN 'no_model'
                    ELSE 'unlikely'
               END AS next_order_reason
        FROM model_next
    )
    SELECT customer_id, p_alive, expected_purchases, churn_probability,
           CASE WHEN churn_probability < $low THEN 'low' WHEN churn_probability <= $high THEN 'medium'
                WHEN churn_probability IS NOT NULL THEN 'high' END AS churn_risk,
           TRY_CAST(expected_aov AS DECIMAL(18, 2)) AS expected_aov,
           TRY_CAST(clv_per_aov * expected_aov AS DECIMAL(18, 2)) AS clv,  -- past 16 digits: empty (clv_overflow)
           CAST(next_order_date AS DATE) AS next_order_date,
           ($as_of::DATE >= next_order_date - CAST($remind AS INTEGER)) AS reorder_due,
           avg_days_between_orders, discount_share, discount_hunter, favourite_category, favourite_brand,
           next_order_reason
    FROM nxt
"""

#: a customer's row of the model relation (its BTYD summary)
_MODEL_JOIN = ("m.x = l.purchase_days - 1 AND m.recency_days = l.last_day - l.first_day"
               " AND m.t_days = $as_of::DATE - l.first_day")

#: Gamma-Gamma E[mean spend | x, m̄] (note 025 eq. 5), written as :func:`segmentation.btyd_models.expected_aov`
#: computes it, operation for operation, so that the doubles are the same
_WEIGHT = "$gg_p * CAST(m.x AS DOUBLE) / ($gg_p * CAST(m.x AS DOUBLE) + $gg_q - 1)"
AOV_SQL = f"(1 - {_WEIGHT}) * ($gg_g * $gg_p / ($gg_q - 1)) + {_WEIGHT} * l.monetary"


def create_lifecycle_table(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str = "UTC",
                           discount_hunter_threshold: float = 0.5, days: PurchaseDays | None = None, *,
                           calibration_end: date | None = None) -> None:
    """Create TEMP ``customer_lifecycle`` (one row per customer with a completed order) and TEMP table
    ``customer_favourites`` (its favourite category and brand, for customers with line items).
    ``monetary``: the mean spend of the repeat purchase days less their refunds (:mod:`segmentation.refunds`, a
    TEMP table of them when the orders hold refunds).

    ``days``: the run's purchase-day table, if built (it must cover ``as_of``); else one is built here.
    ``calibration_end``: also count, in the same pass, the holdout check's calibration summary as of that day and
    the purchase days after it (``cal_x, cal_recency_days, cal_t_days, cal_later``).

    When the store's kept totals are those as of ``as_of`` (``days.totals_for``), ``customer_lifecycle`` is a VIEW
    over them: each of its readers (the BTYD summary, the spend fit's rows, the holdout's calibration, the
    predictions table) scans the million rows it would have scanned in the table, and only its own columns (the
    calibration's filters of every customer's days only for the holdout); copying them first into a table cost
    0.15–0.4 CPU s on 10 M orders. The view reads the totals as they are when read: it is the run's, made after
    they were brought up to date. Otherwise (aggregates of the purchase days) it is a TABLE."""
    days = purchase_days_for(con, as_of, timezone, days)
    cal = calibration_end is not None
    totals = days.totals_for(as_of)
    if totals:  # the store's totals: no pass over the days (the holdout counts each customer's list of days)
        per_day = (TOTALS_CALIBRATION_SQL if cal else TOTALS_SQL).format(totals=totals)
    else:
        per_day = PER_CUSTOMER_SQL.format(days=days.table, gaps=GAPS_SQL, calibration=CALIBRATION_SQL if cal else "")
    con.execute(FAVOURITES_SQL.format(orders=days.orders, day=days.day_sql), {"as_of": as_of})
    refunds = create_refunds(con, as_of, days.orders, days.day_sql, days.key)
    sql = LIFECYCLE_SQL.format(
        kind="VIEW" if totals else "TABLE", per_day=per_day, calibration_columns=CALIBRATION_COLUMNS if cal else "",
        monetary=net_monetary_sql() if refunds else "d.monetary",
        refunds=f"\n    LEFT JOIN {REFUNDS} r ON r.customer_id = d.customer_id" if refunds else "")
    params = {"threshold": discount_hunter_threshold} | ({"cal_end": calibration_end} if cal else {})
    drop_temp(con, "customer_lifecycle")
    if totals:
        con.execute(with_values(sql, params))
    else:
        con.execute(sql, params | {"as_of": as_of})


def with_values(sql: str, params: dict[str, object]) -> str:
    """``sql`` with each ``$name`` of ``params`` written as a literal of the type it binds as (a view has no
    parameters): a date as a DATE, an integer as itself, a float as the DOUBLE its ``repr`` parses to (the same
    double: ``repr`` round-trips). Any other type (text, a bool, a datetime, which bind as VARCHAR, BOOLEAN and
    TIMESTAMP) is refused with a TypeError rather than written as something else."""
    def literal(value: object) -> str:
        if isinstance(value, bool) or isinstance(value, datetime):
            raise TypeError(f"no literal for {value!r}")
        if isinstance(value, date):
            return f"DATE '{value.isoformat()}'"
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return str(int(value))
        if isinstance(value, numbers.Real):
            return f"CAST('{float(value)!r}' AS DOUBLE)"
        raise TypeError(f"no literal for {value!r}")

    def value_of(match: re.Match[str]) -> str:
        return literal(params[match.group(1)]) if match.group(1) in params else match.group(0)

    return re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)\b", value_of, sql)


def has_relation(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """A table or a view ``name`` exists (``customer_predictions`` and ``customer_lifecycle`` may be either)."""
    return bool(con.execute("SELECT count(*) FROM (SELECT view_name FROM duckdb_views() WHERE view_name = $n "
                            "UNION ALL SELECT table_name FROM duckdb_tables() WHERE table_name = $n)",
                            {"n": name}).fetchall()[0][0])


def drop_temp(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop the TEMP table or view ``name``, if there is one (a run may have left either)."""
    kinds = con.execute("SELECT 'VIEW' FROM duckdb_views() WHERE temporary AND view_name = $n UNION ALL "
                        "SELECT 'TABLE' FROM duckdb_tables() WHERE temporary AND table_name = $n",
                        {"n": name}).fetchall()
    for (kind,) in kinds:
        con.execute(f"DROP {kind} temp.main.{name}")


def customer_totals_sql(days: str) -> str:
    """The SELECT of the kept totals over the purchase-day relation ``days`` (it binds ``$as_of``):
    :data:`PER_CUSTOMER_SQL` and each customer's list of days (:data:`TOTALS_DAYS_SQL`). The order store's
    build of the totals alone computes the same from the orders
    (:data:`segmentation.purchase_days.CUSTOMER_TOTALS_SQL`)."""
    return PER_CUSTOMER_SQL.format(days=days, gaps=GAPS_SQL, calibration=TOTALS_DAYS_SQL)


def create_customer_totals(con: duckdb.DuckDBPyConnection, days: PurchaseDays, table: str, *,
                           temp: bool = True) -> None:
    """(Re)create ``table``: :func:`customer_totals_sql` over every row of ``days`` (``days.totals`` then names
    it). ``temp=False``: a table of the database (the order store's cache, :mod:`sync.store.day_cache`, writes
    :func:`customer_totals_sql` into a table of its own layout instead)."""
    if not table.isidentifier():
        raise ValueError(f"table name must be an identifier, got {table!r}")
    con.execute(f"CREATE OR REPLACE {'TEMP ' if temp else ''}TABLE {table} AS "
                + customer_totals_sql(days.table), {"as_of": days.as_of})


def create_predictions_table(con: duckdb.DuckDBPyConnection, model: str, as_of: date,
                             remind_days_before: int, horizon_days: int | None = None, *,
                             spend: tuple[float, float, float] | None = None,
                             churn_risk_cut_points: tuple[float, float] = (0.33, 0.66), view: bool = False
                             ) -> str | None:
    """Create TEMP table (``view``: TEMP VIEW) ``customer_predictions`` from ``customer_lifecycle`` and a model
    relation.

    ``model`` names a registered relation with one row per distinct BTYD summary ``x, recency_days, t_days``
    (repeat purchase days, last − first purchase day, ``as_of`` − first purchase day) and the BG/NBD numbers
    for it: ``p_alive, expected_purchases, churn_probability, days_to_next_order, clv_per_aov`` (NULLs allowed;
    a summary without a row gets NULLs). Customers sharing a summary share these numbers, so they are computed
    once per summary and joined here. ``spend``: the Gamma-Gamma ``(p, q, gamma)`` for ``expected_aov`` (and
    ``clv`` = ``clv_per_aov`` × ``expected_aov``); None leaves both NULL. ``churn_risk`` buckets
    ``churn_probability``: low < c1 ≤ medium ≤ c2 < high.

    ``horizon_days``: a model-based ``next_order_date`` further ahead is NULL (``next_order_reason`` =
    ``beyond_horizon``); None keeps every model date.

    ``view``: a TEMP VIEW instead (``model`` must then be a table that outlives it): for a run that reads it once or
    twice (the per-customer file, ``rfmsync predict``'s counts), each read computes only the columns it reads; a
    table of all fifteen for a million customers cost 0.3 CPU s more than it saves them.

    Returns :func:`clv_overflow`'s warning line, or None.
    """
    if not model.isidentifier():
        raise ValueError(f"model relation name must be an identifier, got {model!r}")
    sql = PREDICTIONS_SQL.format(model=model, aov=AOV_SQL if spend is not None else "NULL", join=_MODEL_JOIN)
    params = {"as_of": as_of, "remind": remind_days_before,
              "horizon": horizon_days if horizon_days is not None else 2**31 - 1,
              "low": churn_risk_cut_points[0], "high": churn_risk_cut_points[1]}
    if spend is not None:
        params |= dict(zip(("gg_p", "gg_q", "gg_g"), spend))
    drop_temp(con, "customer_predictions")
    if view:
        con.execute(with_values(sql.replace("TEMP TABLE", "TEMP VIEW", 1), params))
    else:
        con.execute(sql, params)
    return clv_overflow(con, model, params) if spend is not None else None


def clv_overflow(con: duckdb.DuckDBPyConnection, model: str, params: dict[str, object]) -> str | None:
    """The warning line when some customers' ``clv`` has more than 16 digits before the point (DECIMAL(18, 2)
    holds no more: left empty), naming how many and the largest; None when none has. A bound first (the largest
    ``clv_per_aov`` times the largest of the population's and the customers' mean spends, of which ``expected_aov``
    is a weighted mean): the customers are counted only when it does not rule an overflow out."""
    (per, spend), (pop,) = con.execute(
        f"SELECT (SELECT max(abs(clv_per_aov)) FROM {model}), (SELECT max(abs(monetary)) FROM customer_lifecycle)"
    ).fetchall()[0], con.execute("SELECT abs($gg_g * $gg_p / ($gg_q - 1))",
                                 {k: params[k] for k in ("gg_p", "gg_q", "gg_g")}).fetchall()[0]
    if per is None or (per * max(spend or 0, pop or 0) < 1e15 and per == per):  # (NaN compares unequal)
        return None
    raw = f"m.clv_per_aov * ({AOV_SQL})"
    n, who, most = con.execute(with_values(
        f"""SELECT count(*), arg_max(customer_id, abs(clv)), max(abs(clv)) FROM (
                SELECT l.customer_id, {raw} AS clv FROM customer_lifecycle l JOIN {model} m ON {_MODEL_JOIN}
                WHERE m.p_alive IS NOT NULL)
            WHERE clv IS NOT NULL AND NOT (abs(clv) < 9999999999999999.995)""", params)).fetchall()[0]
    if not n:
        return None
    return (f"clv left empty for {n} {'customer' if n == 1 else 'customers'}: the expected spend over "
            f"clv_horizon_days has more than 16 digits before the decimal point (the largest: customer {who!r}, "
            f"{most:.4g}); amounts that large are not a real check (ids or phone numbers in the amount column?): fix "
            "the amounts in the export")
