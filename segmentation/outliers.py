"""Order amounts far beyond the shop's usual check: a barcode, a phone number or an id pasted into the amount.

One such order moves its customer's monetary, M score and segment; on a repeat purchase day it also moves the
spend model's fit (Gamma-Gamma), so every customer's ``expected_aov`` and ``clv`` (one order of 10⁹ × the check
moved the median customer's CLV 5 % on CDNOW, some customers' by 29 %). The rule, per currency (NULL is the shop's
one currency when there is only one):

    a completed order is an *outlier* when its amount is at least :data:`OUTLIER_RATIO` (10 000) times the
    median amount of the completed orders with an amount above 0 ordered up to the as-of (the typical check),
    at least :data:`GAP_RATIO` (100) times the top of those orders below that line (their 99th percentile,
    :data:`TOP_QUANTILE`: one typo just below the line does not hide an id above it), not a price: no other
    customer paid that amount (a yearly plan of a shop of 1 ₽ trials with no tier between is many customers'),
    and at least :data:`GAP_RATIO` times its own customer's other orders of another amount (a client who orders
    that much: a café's caterer). An amount past the first two lines that reads as a barcode (a whole number of
    11 to 13 digits whose last is the GS1 check digit of the others: UPC-A, EAN-13, a UPC-A stored as a number
    that lost its leading 0, :func:`barcode_sql`, or an EAN-8's 8 where few orders are past both lines; not ending
    in :data:`ROUND_ZEROS` zeros: a round price, unless it has :data:`CODE_DIGITS` significant digits or more in a
    currency whose orders are less than :data:`ROUND_SHARE` round, :func:`round_code_sql`) is an outlier whoever
    else paid it; of :data:`STRONG_DIGITS` digits or more whatever its customer's other orders, of 11 or 8 digits
    or round only if its customer's other orders within :data:`GAP_RATIO` of it are barcodes too (a client's real
    orders of 11 digits or round ones end in a check digit one time in ten).

A real large order does not come near it: a shop's largest orders are tens of times its median check (CDNOW
19×, the demo shop 25×, the benchmarks' generated shop of 10 M orders 69×), a typed-in barcode 10⁶–10⁹ times. The
median is the check half the orders are below, so a handful of outliers cannot move it. The second test is for
shops whose median is not their check: a subscription shop whose orders are mostly 1 ₽ trials with plans at 399
and 12 000 ₽, a café of 2.50 checks with a wholesale client's 800 and 30 000, a currency redenominated 10 000:1
(the old orders are 10 000 times the new): their large orders sit within 100 times the orders below them, a
barcode is far above the top of everything else, and two customers' pasted ids are rarely the same amount. The
same barcode pasted for two customers, or two barcodes for one customer, pass for a price or a client's own large
orders; a barcode's check digit tells them apart: one amount in ten has it by chance, but a real order of 12 digits
is a large one even in Iranian rials (the smallest unit in use), mostly priced round (:data:`ROUND_ZEROS`), and must
still be 10 000 times the shop's median. A UPC-A whose first digit is 0 (most US and Canadian products') has 11
digits as an amount; its check digit is the same (the lost 0 weighs nothing), and an 11-digit order is still 10¹⁰
of the smallest unit. A barcode ending in 4 zeros (one in 10 000) passes for a round price; where the shop prices
nothing round (under 1 % of its orders end in 4 zeros: not a shop in rials or som) and it has 7 significant digits
or more (a price typed round has a few), it is a barcode too. An EAN-8's 8 digits are read as a barcode as 11 are,
but only in a currency whose orders past both lines, EAN-8s aside, are under 1 % of its orders (:data:`EAN8_DIGITS`):
the old orders of a currency redenominated 10⁶:1 (the Turkish lira) have 8, one in ten ends in a check digit by
chance, and they are many customers' prices, 10⁶ times the new median, not round: 40 % of its orders, not a few
pasted (the EAN-8s themselves not counted: two in a shop of 150 orders would be over 1 %). An id
or a phone number (no check digit) pasted so is still not found. A café of 2–3 € checks whose catering client
alone ordered 30 000 and 28 000, nothing between, is not warned of (each order is within 100 times the other); a client
whose only large order is 30 000 is: check that order.

:func:`outlier_amounts` finds them in DuckDB (a shop without any costs two aggregates the column statistics
mostly answer: the median is computed only when the largest amount could be one, the top of the other orders
only when it is 10 000 times the median; the repeats among the orders past both lines). The run warns of them
(:func:`outlier_line`); the spend model leaves them out of its fit (:func:`spend_rows_sql`): the fit equals the
fit on the orders without them. The customer's own monetary keeps the amount as recorded, and so do his
expected_aov and clv when it is on a repeat purchase day (a first day's spend is in no mean): fix it in the export.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Mapping

from zoneinfo import ZoneInfo

import duckdb

from .fitnotes import money
from .lifecycle import MONETARY_SQL
from .metrics import local_cutoff
from .purchase_days import DAY_ROWS_SQL
from .refunds import TABLE as REFUNDS, net_monetary_sql

#: an amount at least this many times the typical check (the median) is an outlier
OUTLIER_RATIO = 10_000
#: ... and at least this many times the top of the orders below that line (the top of the shop's other orders)
GAP_RATIO = 100
#: ... the top of those orders is this quantile of them (one typo just below the line does not hide an id above it)
TOP_QUANTILE = 0.99
#: an amount past both lines of these many digits with its GS1 check digit is a barcode (EAN-13, UPC-A, and a UPC-A
#: whose leading 0 was lost when it was stored as a number), an outlier even when another customer has it too or its
#: customer's other orders are as large (:func:`barcode_sql`)
BARCODE_DIGITS = (11, 12, 13)
#: ... of these many digits or more (EAN-13, UPC-A) whatever the others; of 11 digits, or round
#: (:func:`round_code_sql`), not when its customer's other orders as large are real orders (not barcodes)
STRONG_DIGITS = 12
#: an amount ending in this many zeros or more is a round price (Iranian rials are priced in thousands of tomans:
#: 10 000 rials), not read as a barcode (:func:`barcode_sql`): one in ten of them would end in a check digit by
#: chance, one real barcode in 10 000 ends so
ROUND_ZEROS = 4
#: ... but a round one with at least this many significant digits (a barcode ending in 4 zeros has 7 to 9; a price
#: typed round has a few) is a barcode in a currency whose orders are less than :data:`ROUND_SHARE` round (a shop
#: that does not price in round amounts: :func:`round_code_sql`)
CODE_DIGITS = 7
ROUND_SHARE = 0.01
#: an amount past both lines of these many digits with its GS1 check digit is an EAN-8, read as a barcode as one of
#: 11 digits is (its customer's own orders as large exempt it unless they are barcodes too), but only in a currency
#: whose orders past both lines are less than :data:`ROUND_SHARE` of its orders (:func:`_ean8_currencies`): a
#: currency redenominated 10⁶:1 has its old orders there, of 8 digits, one in ten with a check digit by chance
EAN8_DIGITS = 8
#: the TEMP table of every outlier order of the last :func:`outlier_amounts` (order_id, customer_id)
TABLE = "_rfmsync_outlier_orders"
#: the TEMP table of the orders past both lines, while :func:`outlier_amounts` sorts them
_PAST = "_rfmsync_outlier_candidates"
#: outlier orders named in the warning (the largest first); the others are counted
SHOWN = 3
#: the largest amount a DECIMAL(18, 2) order holds is below this
_DECIMAL_LIMIT = Decimal(10) ** 16

_WHERE = "status = 'completed' AND amount > 0 AND ordered_at < $cutoff"


@dataclass(frozen=True)
class OutlierOrder:
    customer_id: str
    order_id: str
    ordered_at: datetime
    amount: Decimal
    currency: str | None
    typical: Decimal  # the median check of its currency


@dataclass(frozen=True)
class OutlierAmounts:
    """The outlier orders up to an as-of: how many, of how many customers, the largest :data:`SHOWN`."""

    orders: int = 0
    customers: int = 0
    shown: tuple[OutlierOrder, ...] = ()

    def __bool__(self) -> bool:
        return self.orders > 0


def outlier_amounts(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str = "UTC",
                    orders: str = "orders") -> OutlierAmounts:
    """The completed orders of ``orders`` up to the local day ``as_of`` whose amount is an outlier (see the
    module's rule); every one is written to TEMP table :data:`TABLE` (dropped when there is none)."""
    params = {"cutoff": local_cutoff(as_of, timezone)}
    least, most = con.execute(f"SELECT min(currency), max(currency) FROM {orders}").fetchall()[0]
    several = least != most
    group = "currency" if several else "NULL"
    largest = con.execute(f"SELECT {group} AS currency, max(amount), count(*) FROM {orders} WHERE {_WHERE}"
                          + (" GROUP BY currency" if several else ""), params).fetchall()
    typical: list[tuple[str | None, Decimal, Decimal]] = []  # (currency, median, the least outlier amount)
    judged = {currency: n for currency, _, n in largest}  # currency (None unless several) → its orders judged
    for currency, most_amount, n in largest:
        if not n:
            continue
        match = "currency IS NOT DISTINCT FROM $currency" if several else "true"
        # the median is at most largest / ratio only when the lower middle order is: count those first
        which = params | ({"currency": currency} if several else {})
        low = con.execute(f"SELECT count(*) FROM {orders} WHERE {_WHERE} AND {match} AND amount <= $bound",
                          which | {"bound": most_amount / OUTLIER_RATIO}).fetchall()[0][0]
        if low < (n - 1) // 2 + 1:
            continue
        median = con.execute(f"SELECT median(amount) FROM {orders} WHERE {_WHERE} AND {match}",
                             which).fetchall()[0][0]
        if median * OUTLIER_RATIO >= _DECIMAL_LIMIT or most_amount < median * OUTLIER_RATIO:
            continue
        # the first test trips: is the largest amount also far above the top of the other orders?
        top = con.execute(f"SELECT quantile_disc(amount, {TOP_QUANTILE}) FROM {orders} WHERE {_WHERE} AND {match} "
                          "AND amount < $line", which | {"line": median * OUTLIER_RATIO}).fetchall()[0][0]
        threshold = max(median * OUTLIER_RATIO, top * GAP_RATIO)
        if most_amount >= threshold:
            typical.append((currency, median, threshold))
    con.execute(f"DROP TABLE IF EXISTS temp.main.{TABLE}")
    con.execute(f"DROP TABLE IF EXISTS temp.main.{_PAST}")
    if not typical:
        return OutlierAmounts()
    # one filtered scan per currency (a filter on amount, which the column's statistics can answer): no join
    parts = [f"SELECT order_id, customer_id, ordered_at, amount, currency, $typical{i}::DECIMAL(18, 2) AS typical "
             f"FROM {orders} WHERE {_WHERE} AND amount >= $threshold{i}"
             + (f" AND currency IS NOT DISTINCT FROM $cur{i}" if several else "") for i in range(len(typical))]
    values = {k: v for i, (cur, median, threshold) in enumerate(typical)
              for k, v in ((f"typical{i}", median), (f"threshold{i}", threshold))
              + (((f"cur{i}", cur),) if several else ())}
    con.execute(f"CREATE TEMP TABLE {_PAST} AS {' UNION ALL '.join(parts)}", params | values)
    codes = _round_code_currencies(con, orders, params, several)
    eights = _ean8_currencies(con, judged, several)
    # kept: an amount several customers paid (a price: a plan, a tier), and an order within GAP_RATIO of its own
    # customer's other orders of another amount (a client who orders that much: a café's caterer). A barcode of 12
    # or 13 digits is found whatever the others; a weaker one (11 or 8 digits, round) whoever else paid it, but not
    # among its customer's own orders as large unless those are barcodes too (``codes_only``: a client's real
    # orders of 11 digits or round ones end in a check digit one time in ten)
    code = _weak_code_sql("o.amount", "o.currency")
    con.execute(f"""CREATE TEMP TABLE {TABLE} AS WITH past AS (FROM {_PAST}),
        prices AS (SELECT currency, amount FROM past GROUP BY ALL HAVING count(DISTINCT customer_id) > 1),
        own AS (SELECT p.order_id, max(o.amount) AS top,
                       bool_and({code}) FILTER (WHERE o.amount * {GAP_RATIO} > p.amount) AS codes_only
                FROM past p JOIN {orders} o ON o.customer_id = p.customer_id
                AND o.currency IS NOT DISTINCT FROM p.currency AND o.amount <> p.amount
                WHERE o.status = 'completed' AND o.amount > 0 AND o.ordered_at < $cutoff GROUP BY p.order_id)
        SELECT past.* FROM past LEFT JOIN own USING (order_id)
        WHERE ({barcode_sql("past.amount")} AND past.amount >= {10 ** (STRONG_DIGITS - 1)})
        OR (({_weak_code_sql("past.amount", "past.currency")})
            AND (coalesce(past.amount >= own.top * {GAP_RATIO}, true) OR coalesce(own.codes_only, false)))
        OR (coalesce(past.amount >= own.top * {GAP_RATIO}, true)
        AND NOT EXISTS (SELECT 1 FROM prices x WHERE x.currency IS NOT DISTINCT FROM past.currency
                        AND x.amount = past.amount))""", params | {"codes": codes, "eights": eights})
    con.execute(f"DROP TABLE temp.main.{_PAST}")
    counts = con.execute(f"SELECT count(*), count(DISTINCT customer_id) FROM {TABLE}").fetchall()[0]
    if not counts[0]:
        con.execute(f"DROP TABLE temp.main.{TABLE}")
        return OutlierAmounts()
    shown = con.execute(f"SELECT customer_id, order_id, ordered_at, amount, currency, typical FROM {TABLE} "
                        f"ORDER BY amount / typical DESC, order_id LIMIT {SHOWN}").fetchall()
    return OutlierAmounts(counts[0], counts[1], tuple(OutlierOrder(*row) for row in shown))


def barcode_sql(amount: str, digits: tuple[int, int] = (min(BARCODE_DIGITS), max(BARCODE_DIGITS))) -> str:
    """Whether the DECIMAL ``amount`` reads as a barcode: a whole number of :data:`BARCODE_DIGITS` digits (``digits``:
    the fewest and the most) whose last digit is the GS1 check digit of the others (weights 3, 1, 3, … from the
    right: EAN-13, and UPC-A's 12 digits, 11 when its leading 0 was lost: the missing digit weighs nothing; EAN-8's
    8), not ending in :data:`ROUND_ZEROS` zeros (a round price)."""
    return f"({_gtin_sql(amount, *digits)} AND {amount}::BIGINT % {10 ** ROUND_ZEROS} <> 0)"


def round_code_sql(amount: str) -> str:
    """Whether the DECIMAL ``amount`` reads as a barcode ending in :data:`ROUND_ZEROS` zeros or more: a whole number of
    :data:`BARCODE_DIGITS` digits ending in its GS1 check digit, with :data:`CODE_DIGITS` significant digits or more
    (a price typed round has a few: 170 000 000 000 two). A barcode in a currency whose orders are rarely round
    (:func:`_round_code_currencies`)."""
    n = f"{amount}::BIGINT"
    return (f"({_gtin_sql(amount)} AND {n} % {10 ** ROUND_ZEROS} = 0 "
            f"AND {n} % (10 ** greatest(length({n}::VARCHAR) - {CODE_DIGITS - 1}, 0))::BIGINT <> 0)")


def _in_codes(currency: str, which: str = "codes") -> str:
    """Whether ``currency`` is one of ``$codes`` (the currencies where a round barcode is read as one), or of
    ``$eights`` (where an EAN-8 is: ``which``)."""
    return f"list_contains(${which}::VARCHAR[], coalesce({currency}, ''))"


def _weak_code_sql(amount: str, currency: str) -> str:
    """Whether ``amount`` (of ``currency``) reads as a barcode: :func:`barcode_sql`, a round one where the shop prices
    nothing round (``$codes``), an EAN-8 where few orders are past both lines (``$eights``)."""
    return (f"{barcode_sql(amount)} OR ({round_code_sql(amount)} AND {_in_codes(currency)}) "
            f"OR ({barcode_sql(amount, (EAN8_DIGITS, EAN8_DIGITS))} AND {_in_codes(currency, 'eights')})")


def _gtin_sql(amount: str, fewest: int = min(BARCODE_DIGITS), most: int = max(BARCODE_DIGITS)) -> str:
    """A whole number of ``fewest`` to ``most`` digits (:data:`BARCODE_DIGITS`) whose last is the GS1 check digit of
    the others."""
    n = f"{amount}::BIGINT"
    digits = " + ".join(f"({n} // {10 ** j}) % 10 * {3 if j % 2 else 1}" for j in range(most))
    return (f"{amount} = trunc({amount}) AND {amount} >= {10 ** (fewest - 1)} "
            f"AND {amount} < {10 ** most} AND ({digits}) % 10 = 0")


def _ean8_currencies(con: duckdb.DuckDBPyConnection, judged: dict, several: bool) -> list[str]:
    """The currencies ('' for NULL) with an amount past both lines in :data:`_PAST` that reads as an EAN-8 and fewer
    other amounts past both lines than :data:`ROUND_SHARE` of their orders (``judged``: currency → its orders judged,
    under None unless ``several``): a few pasted barcodes, not a redenominated currency's old orders (nine in ten of
    them no EAN-8). The EAN-8s themselves are not counted: two pasted in a shop of 150 orders are over 1 % of it."""
    ean8 = barcode_sql("amount", (EAN8_DIGITS, EAN8_DIGITS))
    found = con.execute(f"SELECT currency, count(*) FILTER (WHERE NOT ({ean8})) FROM {_PAST} GROUP BY currency "
                        f"HAVING bool_or({ean8})").fetchall()
    return ["" if currency is None else currency for currency, n in found
            if n < ROUND_SHARE * judged[currency if several else None]]


def _round_code_currencies(con: duckdb.DuckDBPyConnection, orders: str, params: dict, several: bool) -> list[str]:
    """The currencies ('' for NULL) of the amounts past both lines in :data:`_PAST` that read as round barcodes
    (:func:`round_code_sql`) whose completed orders are less than :data:`ROUND_SHARE` round: a shop that does not
    price round (an amount ending in 4 zeros there is no price of its). Only such an amount costs a scan."""
    found = con.execute(f"SELECT DISTINCT currency FROM {_PAST} WHERE {round_code_sql('amount')}").fetchall()
    codes = []
    for (currency,) in found:
        match = "currency IS NOT DISTINCT FROM $currency" if several else "true"
        share = con.execute(f"SELECT avg((amount::BIGINT % {10 ** ROUND_ZEROS} = 0 AND amount = trunc(amount))::INT) "
                            f"FROM {orders} WHERE {_WHERE} AND {match}",
                            params | ({"currency": currency} if several else {})).fetchall()[0][0]
        if share < ROUND_SHARE:
            codes.append("" if currency is None else currency)
    return codes


def spend_rows_sql(orders: str, day_sql: str, refunds: bool = False) -> str:
    """The spend fit's rows (``x``: repeat purchase days, ``monetary``: their mean spend) of the repeat buyers with
    spend, sorted: ``customer_lifecycle``'s, except that the customers of the outlier orders in :data:`TABLE` are
    counted again from their ``orders`` without those orders (``day_sql``: the local day of ``ordered_at``; binds
    ``$as_of``), as they would be in a shop without them (``refunds``: the orders hold refunds, TEMP table
    :data:`segmentation.refunds.TABLE` lists them: their mean spend is less the refunds of their repeat days too,
    except those of the orders left out, found by id: a mistyped amount refunded to correct it leaves neither).
    """
    without = (f"(SELECT * FROM {orders} WHERE customer_id IN (SELECT customer_id FROM {TABLE}) "
               f"AND order_id NOT IN (SELECT order_id FROM {TABLE}))")
    recounted = (f"SELECT customer_id, count(*) - 1 AS x, {MONETARY_SQL} AS monetary, count(*) AS purchase_days, "
                 "min(day) AS first_day, list_sort(list(day))[2] AS second_day "
                 f"FROM ({DAY_ROWS_SQL.format(day=day_sql, orders=without, sample='')}) GROUP BY customer_id")
    if refunds:  # (the refunds' table of the lifecycle: every customer's) less the refunds of the orders left out
        kept = (f"SELECT customer_id, list_filter(refunds, lambda one: one.sale IS NULL "
                f"OR NOT list_contains(o.ids, one.sale)) AS refunds FROM {REFUNDS} "
                f"JOIN (SELECT customer_id, list(order_id) AS ids FROM {TABLE} GROUP BY customer_id) o "
                "USING (customer_id)")
        recounted = (f"SELECT d.x, {net_monetary_sql()} AS monetary "
                     f"FROM ({recounted}) d LEFT JOIN ({kept}) r USING (customer_id)")
    return f"""
        SELECT x, monetary FROM (
            SELECT purchase_days - 1 AS x, monetary FROM customer_lifecycle
            WHERE customer_id NOT IN (SELECT customer_id FROM {TABLE})
            UNION ALL
            SELECT x, monetary FROM ({recounted}))
        WHERE x > 0 AND monetary > 0 ORDER BY x, monetary"""


def left_out_count(con: duckdb.DuckDBPyConnection, orders: str, day_sql: str) -> tuple[int, int]:
    """How many outlier orders of :data:`TABLE` the spend fit really left out: those that were in its rows with
    them (:func:`spend_rows_sql`): of a repeat buyer with spend (``customer_lifecycle``), on a repeat purchase day,
    or alone on the customer's first day (without it, the next day is the first). A one-time buyer's only order,
    or one that shares the first day with another order (the first day's spend counts in no mean), was never in.
    And how many of them are in their customers' own ``expected_aov`` and ``clv`` (his mean spend of his repeat
    purchase days, as recorded): those on a repeat purchase day only (a first day alone counts in no mean)."""
    left_out, own = con.execute(f"""
        WITH outliers AS (SELECT customer_id, order_id, {day_sql} AS day FROM {TABLE}),
        others AS (SELECT customer_id, {day_sql} AS day FROM {orders} WHERE status = 'completed'
                   AND customer_id IN (SELECT customer_id FROM {TABLE})
                   AND order_id NOT IN (SELECT order_id FROM {TABLE}))
        SELECT count(*), count(*) FILTER (WHERE o.day > l.first_day)
        FROM outliers o JOIN customer_lifecycle l USING (customer_id)
        WHERE l.purchase_days > 1 AND l.monetary > 0 AND (o.day > l.first_day OR NOT EXISTS (
            SELECT 1 FROM others x WHERE x.customer_id = o.customer_id AND x.day = o.day))""").fetchall()[0]
    return left_out, own


def outlier_line(found: OutlierAmounts, timezone: str, files: Mapping[str, str] | None = None,
                 predicted: bool = False, left_out: int | None = None, own: int | None = None) -> str:
    """The run's warning about ``found`` (not empty): the largest outlier orders, each with its customer, local
    day, file (``files``: order id → the file it was read from, where known), amount and its currency's typical
    check; what they move (``predicted``: a spend model was fitted; ``left_out``: how many of them it really left
    out, ``own``: how many are in their customers' own expected_aov and clv, both :func:`left_out_count`, None:
    all) and what to do. An order the fit never counted (a one-time buyer's, or one beside another order of its
    customer's first day) is in no customer's expected_aov either; one alone on a repeat buyer's first day is left
    out of the fit but is in no mean spend, his own neither."""
    files = files or {}
    named = []
    for o in found.shown:
        day = o.ordered_at.astimezone(ZoneInfo(timezone)).date()
        where = f" (file {files[o.order_id]})" if o.order_id in files else ""
        cur = f" {o.currency}" if o.currency else ""
        named.append(f"customer {o.customer_id!r}, order {o.order_id!r} of {day}{where}: {money(o.amount)}{cur}, "
                     f"{money(o.amount / o.typical, 0)} times the typical check of {money(o.typical)}{cur}")
    one = found.orders == 1
    it = "it" if one else "them"
    more = found.orders - len(found.shown)
    rule = (f"(the median order; the rule: {money(OUTLIER_RATIO, 0)} times it, {GAP_RATIO} times the 99th "
            f"percentile of the orders below that and {GAP_RATIO} times the customer's other orders, of an amount no "
            f"other customer paid; a barcode's {EAN8_DIGITS} or {min(BARCODE_DIGITS)} to {max(BARCODE_DIGITS)} digits "
            "with their check digit need only the first two)")
    head = (f"an amount far beyond the usual check {rule}: " if one else
            f"{found.orders} amounts of {found.customers} customer{'s' if found.customers > 1 else ''} far beyond "
            f"the usual check {rule}: ")
    fitted = found.orders if left_out is None else left_out
    own = found.orders if own is None else own
    counted = ("monetary, M score, segment, expected_aov and clv" if predicted and own == found.orders
               else "monetary, M score and segment")
    fit = ""
    if predicted:
        never = found.orders - fitted
        why = ("(a one-time buyer's order, or one beside another order of the customer's first day: that day's spend "
               "is in no mean spend)" if never == 1 else "(one-time buyers' orders, or orders beside another order "
               "of their customer's first day: that day's spend is in no mean spend)")
        what = (f"leaves {it} out" if not never else f"never counted {it} {why}" if not fitted
                else f"leaves {fitted} of them out and never counted the other{'' if never == 1 else 's'} {why}")
        fit = f"; the spend model's fit {what}: other customers' expected_aov and clv are as without {it}"
        if 0 < own < found.orders:
            counted += f", {own} of them in expected_aov and clv too"
    return (head + "; ".join(named) + (f"; and {more} more" if more > 0 else "")
            + "; " + ("it counts in the customer's " if one else "they count in their customers' ") + counted + fit
            + "; "
            "a barcode or an id pasted into the amount column? Fix the amount in the export")
