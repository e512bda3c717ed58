"""What a RetailCRM backfill keeps to prove it skipped nothing while its list moved (page numbers over a list
that records are created in and deleted from meanwhile): see ``connectors.retailcrm.RetailCrmSource._settle``;
and the checks that an answer is the page it must be (a page believed without them could end a backfill early)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .digits import digits
from .errors import FatalError
from .http import json_shape

#: rounds of re-reading the rows near the backfill's page boundaries before giving up (``RetailCrmSource._settle``)
MAX_REREADS = 3
#: attempts at reading the list's count with no record created or deleted around it
MAX_COUNTS = 5
_LIMITS = (20, 50, 100)  # the page sizes the list accepts


@dataclass
class _Feed:
    """What the history reads of one object saw."""

    head: int | None = None  # the highest entry id stamped at or before the run start: the new bookmark
    last: int | None = None  # the highest entry id read
    gone: set[str] = field(default_factory=set)  # ids deleted or merged away
    fetched: set[str] = field(default_factory=set)  # ids the re-fetch by id returned
    created: set[str] = field(default_factory=set)  # ids of entries flagged ``created``
    survivors: set[str] = field(default_factory=set)  # merges' survivors whose orders are still to be read again


@dataclass
class _Backfill:
    """The ids of each backfill page, in order, and every id a list read returned since."""

    pages: list[list[str]] = field(default_factory=list)
    read: set[str] = field(default_factory=set)

    def present(self, feed: _Feed) -> set[str]:
        """The records read (from the list or by id) and not deleted since: all are in the CRM."""
        return (self.read | feed.fetched) - feed.gone


def _boundary_pages(pages: int, size: int, below: int, above: int, total: int) -> list[tuple[int, int]]:
    """The ``(limit, page)`` reads covering the rows ``b - below + 1 … b + above`` around every boundary ``b``
    between two of the backfill's ``pages`` of ``size`` rows, in today's list of ``total`` rows; each merged
    span is read with the page size that needs fewest requests."""
    spans: list[list[int]] = []
    for b in range(size, pages * size, size):
        lo, hi = max(1, b - below + 1), min(total, b + above)
        if lo > hi:
            continue
        if spans and lo <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    reads: dict[tuple[int, int], None] = {}
    for lo, hi in spans:
        limit = min(_LIMITS, key=lambda n: ((hi - 1) // n - (lo - 1) // n, n))
        reads.update(((limit, page), None) for page in range((lo - 1) // limit + 1, (hi - 1) // limit + 2))
    return list(reads)


_AGAIN = "nothing was saved: run the pull again"


def page_rows(data: Mapping[str, Any], key: str, what: str) -> list[Any]:
    """The ``key`` list of a list or history answer; a FatalError when it has none (a page without its rows
    is no empty page: taken as one, it would end a backfill)."""
    rows = data.get(key)
    if not isinstance(rows, list):
        got = f"missing from {json_shape(data)}" if key not in data else "null" if rows is None else json_shape(rows)
        raise FatalError(f"{what}: the answer's {key!r} list is {got}; {_AGAIN}")
    return rows


def page_count(data: Mapping[str, Any], name: str, what: str) -> int:
    """``pagination[name]`` (``totalPageCount``, ``totalCount``); a FatalError when it is not a count: a backfill
    that took a missing page count for 0 stopped after its first page."""
    pagination = data.get("pagination")
    value = pagination.get(name) if isinstance(pagination, Mapping) else None
    if isinstance(value, bool) or not (isinstance(value, int) or digits(value)):
        got = (f"{str(value)[:40]!r}" if isinstance(pagination, Mapping) and name in pagination
               else "missing" if isinstance(pagination, Mapping) or pagination is None else json_shape(pagination))
        raise FatalError(f"{what}: the answer's pagination.{name} is {got}, not a count; {_AGAIN}")
    return int(value)


def history_entry(entry: Any, entity: str, what: str) -> tuple[int, Mapping[str, Any], Any]:
    """(id, the ``entity`` it names, ``combinedTo.id``) of one history entry; a FatalError naming the entry when
    it is not one (the feed is a keyset on these ids)."""
    eid = entry.get("id") if isinstance(entry, Mapping) else None
    ref = entry.get(entity) if isinstance(entry, Mapping) else None
    combined = entry.get("combinedTo") if isinstance(entry, Mapping) else None
    if (isinstance(eid, bool) or not (isinstance(eid, int) or digits(eid))
            or not isinstance(ref, (Mapping, type(None))) or not isinstance(combined, (Mapping, type(None)))):
        raise FatalError(f"{what}: a history entry that is not an object with an integer id and {entity!r} and "
                         f"'combinedTo' objects: {str(entry)[:100]}; {_AGAIN}")
    return int(eid), ref or {}, (combined or {}).get("id")
