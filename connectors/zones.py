"""``[source] timezone``: the shop's IANA time zone, one validated type for every source's config.

Segmentation counts purchases per customer per *local* day in this zone, and every command computes as of
today in it (``sync.config.Config.timezone``); a file export's and RetailCRM's naive times are read in it too.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
from pydantic import AfterValidator

#: a source's ``timezone`` when its config has none (the rest: UTC). Read by ``sync.config.Config.timezone``
#: without importing the connector (and its HTTP client): days are counted where the naive times are read.
DEFAULT_ZONES = {"retailcrm": "Europe/Moscow"}


def default_zone(kind: str) -> str:
    return DEFAULT_ZONES.get(kind, "UTC")


@lru_cache(maxsize=64)
def _icu_knows(value: str) -> bool:
    """DuckDB's ICU, which counts the local days, knows ``value`` (it refuses some names the tz database
    has, such as ``localtime``, ``posixrules`` and ``right/UTC``)."""
    con = duckdb.connect()
    try:
        con.execute("SELECT timezone(?, TIMESTAMPTZ '2026-01-05 20:00:00+00')", [value]).fetchone()
    except duckdb.Error:
        return False
    finally:
        con.close()
    return True


def _zone(value: str) -> str:
    """``value`` if it names an IANA zone DuckDB knows (connectors import no analytics code: segmentation's
    ``check_timezone`` says the same of the zone a run is given)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {value!r}: use an IANA name such as 'Europe/Berlin'") from None
    if not _icu_knows(value):
        raise ValueError(f"time zone {value!r} is not one DuckDB can count days in: use an IANA name such as "
                         "'Asia/Tashkent'")
    return value


#: ``timezone`` of a source config: an IANA name such as ``Asia/Tashkent`` (an unknown one is a config error)
TimeZone = Annotated[str, AfterValidator(_zone)]


def day_at_noon(value: Any, zone: str) -> datetime:
    """A date field that an API writes as an instant → noon of its calendar day in ``zone`` (aware, UTC), so
    its local day is that date in any zone.

    Bitrix24's ``CLOSEDATE`` example is ``2024-09-09T02:00:00+02:00``: midnight UTC in the portal's offset.
    Read as an instant, such a day moves to the day before in a zone west of the one it was written in.
    The day is the value's first 10 characters (a local midnight ``…T00:00:00+03:00`` and a bare date read
    the same), except at midnight UTC, where it is the UTC date (``2024-09-08T19:00:00-05:00`` is the 9th).
    """
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    try:
        day = date.fromisoformat(value[:10])
        at = datetime.fromisoformat(value.replace("Z", "+00:00")) if len(value) > 10 else None
    except ValueError:
        raise ValueError(f"not a date: {value[:40]!r}") from None
    if at is not None and at.tzinfo is not None and at.astimezone(timezone.utc).time() == time(0):
        day = at.astimezone(timezone.utc).date()
    return datetime.combine(day, time(12), ZoneInfo(zone)).astimezone(timezone.utc)


def same_rules(a: str, b: str) -> bool:
    """``a`` and ``b`` count the same days (``Europe/Kiev`` and ``Europe/Kyiv``, ``Asia/Calcutta`` and
    ``Asia/Kolkata``): the same UTC offset every 6 hours from 2000 to 2060. False when either is unknown."""
    if a == b:
        return True
    try:
        za, zb = ZoneInfo(a), ZoneInfo(b)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return False
    at, end, step = datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2060, 1, 1, tzinfo=timezone.utc), \
        timedelta(hours=6)
    while at < end:
        if at.astimezone(za).utcoffset() != at.astimezone(zb).utcoffset():
            return False
        at += step
    return True


__all__ = ["DEFAULT_ZONES", "TimeZone", "day_at_noon", "default_zone", "same_rules"]
