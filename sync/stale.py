"""The stale-data warning: the newest purchase long before the as-of (an old export scored as of today)."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb

#: a purchase: a cancelled order, or a deleted order's tombstone dated by when the CRM deleted it, is none
PURCHASE = "status IN ('completed', 'refunded')"


def stale_warning(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str, stale_days: int,
                  today: date | None = None) -> str | None:
    """A warning when the newest purchase (a completed or refunded order: a cancelled one, or a deleted order's
    tombstone dated by the vendor's modification time, is no activity of the shop's customers and made an old store
    look fresh) on or before the local day ``as_of`` is more than ``stale_days`` days older than ``as_of``, or than
    ``today`` when the as-of is after it (``[guards] stale_days``; 0 turns it off): the data are an old export scored
    as of today, so every customer looks that much less recent. An as-of in the future has its own line
    (:func:`segmentation.as_of.future_line`): an export 100 days old run as of tomorrow gets both.

    The newest order of any status first (the column's statistics answer it), then the newest purchase in the
    ``stale_days`` before it (its row groups only), the whole table only when there is none (a status filter over
    the whole table took ~0.15 s on 10 M orders, these ~2-25 ms)."""
    if stale_days <= 0:
        return None
    newest = _newest(con, as_of, timezone)
    if newest is not None:
        newest = _newest(con, as_of, timezone, PURCHASE, newest - timedelta(days=stale_days)) or _newest(
            con, as_of, timezone, PURCHASE)
    age = None if newest is None else (min(as_of, today or as_of) - newest).days
    if age is None or age <= stale_days:
        return None
    behind = (as_of - newest).days
    return (f"stale data: the newest order is {age} days old ({newest}) but the segments are computed as of "
            f"{as_of}, so every customer looks {behind} days less recent than they are; if this is an old export, "
            f"run with --as-of {newest} ([guards] stale_days = {stale_days})")


def _newest(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str, where: str = "TRUE",
            since: date | None = None) -> date | None:
    """The local day of the newest order matching ``where`` on or before the local day ``as_of`` (and on or after
    the local day ``since``, when given)."""
    if since is not None:
        where += " AND ordered_at >= CAST($since::DATE AS TIMESTAMP) AT TIME ZONE $tz"
    return con.execute(f"""SELECT CAST(max(ordered_at) AT TIME ZONE $tz AS DATE) FROM orders
                            WHERE ordered_at < CAST($as_of::DATE + 1 AS TIMESTAMP) AT TIME ZONE $tz AND {where}""",
                       {"tz": timezone, "as_of": as_of, **({"since": since} if since else {})}).fetchall()[0][0]
