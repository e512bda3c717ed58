"""What a RetailCRM backfill keeps to prove it skipped nothing while its list moved (page numbers over a list
that records are created in and deleted from meanwhile): see ``connectors.retailcrm.RetailCrmSource._settle``."""

from __future__ import annotations

from dataclasses import dataclass, field

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
