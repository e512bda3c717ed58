"""``[source] timezone``: the shop's IANA time zone, one validated type for every source's config.

Segmentation counts purchases per customer per *local* day in this zone, and every command computes as of
today in it (``sync.config.Config.timezone``); a file export's and RetailCRM's naive times are read in it too.
"""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Asia/Tashkent')") from None
    return value


#: ``timezone`` of a source config: an IANA name such as ``Asia/Tashkent`` (an unknown one is a config error)
TimeZone = Annotated[str, AfterValidator(_zone)]

__all__ = ["TimeZone"]
