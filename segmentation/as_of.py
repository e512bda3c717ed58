"""An as-of date that does not fit the orders: before every completed order (nobody to score), or in the future
(every customer looks less recent than today); or orders none of which is completed (every one refunded or
cancelled: nobody to score either): a warning line each.

Orders after the as-of never count (:mod:`segmentation.metrics` keeps those ordered before the day after it
starts in the shop's time zone), so no recency is ever negative: an as-of before the first order scored nobody
and printed a table of zeros, and one in the future scored every customer as of a day no order can reach yet.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import duckdb


def before_orders_line(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str,
                       orders: str = "orders") -> str | None:
    """A warning when ``orders`` has completed orders but none on or before the local day ``as_of`` (for a run that
    scored nobody: one aggregate, only then), naming the as-of and the orders' first and last local days; else
    None. A warning, not an error: a webhook resync or a scheduled sync as of today goes on (nobody to score)."""
    first, last = con.execute(f"SELECT min(ordered_at), max(ordered_at) FROM {orders} "
                              "WHERE status = 'completed'").fetchall()[0]
    if first is None:
        return none_completed_line(con, orders)
    zone = ZoneInfo(timezone)
    first_day, last_day = first.astimezone(zone).date(), last.astimezone(zone).date()
    if first_day <= as_of:
        return None
    return (f"the as-of {as_of} is before every completed order: the first is of {first_day} (the orders run to "
            f"{last_day}, days in {timezone}), so no customer has bought by then and every segment is empty; "
            f"compute as of {first_day} or later (or leave --as-of out: today)")


def none_completed_line(con: duckdb.DuckDBPyConnection, orders: str = "orders") -> str | None:
    """A warning when ``orders`` holds orders but not one completed (every one refunded or cancelled), counting
    them by status; None when it holds none at all (the store's own error says that)."""
    counts = con.execute(f"SELECT status, count(*) FROM {orders} GROUP BY status ORDER BY 2 DESC, 1").fetchall()
    if not counts:
        return None
    total = sum(n for _, n in counts)
    statuses = ", ".join(f"{n} {status}" for status, n in counts)
    return (f"no completed order in the store ({total} order{'s' if total > 1 else ''}: {statuses}), so no customer "
            "is scored, every segment is empty and there are no cut points (only a completed order makes a customer "
            "count)")


def future_line(as_of: date, today: date, timezone: str, con: duckdb.DuckDBPyConnection,
                orders: str = "orders") -> str | None:
    """A warning when ``as_of`` is after ``today`` (the day in the config's time zone), else None. That no order is
    that recent, and every customer looks at least that many days less recent than today, is said only when the
    newest order of ``orders`` (any status; one aggregate, only for such an as-of) is on or before today: orders
    after today (a CRM clock ahead of this host's, pre-orders) are named instead."""
    if as_of <= today:
        return None
    ahead = (as_of - today).days
    days = f"{ahead} day{'s' if ahead > 1 else ''}"
    newest = con.execute(f"SELECT max(ordered_at) FROM {orders}").fetchall()[0][0]
    head = f"the as-of {as_of} is in the future: today is {today} in {timezone}, {days} before it, "
    tail = "; leave --as-of out to compute as of today"
    last = newest.astimezone(ZoneInfo(timezone)).date() if newest is not None else None
    if last is not None and last > today:
        return (head + f"but the orders run to {last}, after today (a CRM clock ahead of this host's, or "
                "pre-orders?): those up to the as-of count, and recency, R score, segment and the predictions count "
                "from the as-of" + tail)
    return (head + f"and no order is that recent, so every customer looks at least {days} less recent than today "
            "(recency, R score, segment, and the predictions count from the as-of)" + tail)
