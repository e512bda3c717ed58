"""Incremental reads for the API sources (STYLE.md §7): cursor, lookback, dedupe, pagination that cannot loop.

A pull reads each object (``contacts``, then ``orders``) from its own bookmark. The saved cursor is a JSON
object of per-object strings (:func:`load_cursor` / :func:`dump_cursor`), e.g.
``{"contacts": "2026-01-10T09:00:00+00:00", "orders": "2026-01-10T08:59:12+00:00"}``.

:func:`pull_by_time` is the loop of the sources keyed on a modification time (amoCRM ``updated_at``, Shopify
``updated_at``, Bitrix24 ``DATE_MODIFY``), for each object:

1. ``read(object, since)`` with ``since`` = bookmark − lookback: the vendor lists are eventually consistent,
   so a small window is read again; on a first run (no bookmark) ``since`` is None: everything (the backfill);
2. after a backfill only, the same read again from min(the backfill's highest time, the run's start) − lookback:
   what was edited (or, for amoCRM's trash, deleted) while the backfill ran is caught by the same pull, and so is
   whatever a listing sorted by modification time (amoCRM's) that the vendor ended early never reached (from the
   run's start, the bookmark would jump past it; a complete backfill's highest time is its last edit, so little is
   read twice). Lists in id order (Bitrix24, Shopify) gain nothing from it (the same read, harmless): their
   readers read on to the vendor's end;
3. new bookmark = min(highest time seen, run start), never behind the previous one (:func:`bookmark`); the
   caller saves it only after the pull has been stored.

The run start (:class:`connectors.runstart.RunStart`) is the host's start moved back by as far as the host's clock was seen ahead of
the vendor's (the ``Date`` headers of the accepted answers, each judged by the times the vendor stamped): a host
clock running ahead would start step 2 and cap step 3 past edits the vendor stamped earlier.

A read reports the highest time it saw through a :class:`HighWater`. Records read twice (the lookback
window, the pass after a backfill, a page read again) are deduplicated by id when staged: :class:`Stager`
keeps the latest version of each id. :class:`PageGuard` makes every pagination unable to loop.

:func:`pull_objects` is the outer loop alone (load the cursor, one stager, one cursor part per object), for
sources with another kind of bookmark (RetailCRM's history ids).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Mapping

import duckdb

from .errors import AuthError, ConfigError, FatalError, RetryLaterError
from .runstart import MAX_VENDOR_LAG, STAMP_SLACK, RunStart, server_date  # (re-exported: the sources' import)
from .source import PullResult
from .stager import Progress, Stager, map_page, record_id  # (re-exported: the sources' import)

log = logging.getLogger(__name__)
#: the objects every API source reads, in this order
OBJECTS = ("contacts", "orders")


# ---------------------------------------------------------------- cursors


def load_cursor(cursor: str | None, source: str) -> dict[str, str]:
    """Parse the saved cursor: a JSON object of per-object cursors (empty on a first run)."""
    if not cursor:
        return {}
    try:
        value = json.loads(cursor)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{source}: the saved cursor is not a JSON object of strings: {cursor[:100]!r}")
    return value


def dump_cursor(parts: Mapping[str, str | None]) -> str:
    return json.dumps({k: v for k, v in sorted(parts.items()) if v is not None}, sort_keys=True)


def parse_time_cursor(source: str, obj: str, saved: str) -> datetime:
    """One object's saved ISO time; a ConfigError naming the source and the object when it is not one."""
    try:
        return datetime.fromisoformat(saved)
    except ValueError:
        raise ConfigError(f"{source}: bad {obj} cursor {saved!r}") from None


def bookmark(max_seen: datetime | None, run_start: datetime, previous: datetime | None) -> datetime | None:
    """New bookmark = min(max cursor seen, run start), never behind the previous bookmark."""
    if max_seen is None:
        return previous
    new = min(max_seen, run_start)
    return max(new, previous) if previous is not None else new


def iso(dt: datetime | None) -> str | None:
    return dt.astimezone(timezone.utc).isoformat() if dt else None


def utc_now() -> datetime:
    """The default clock of a source (tests inject their own)."""
    return datetime.now(timezone.utc)


class HighWater:
    """The highest cursor value (e.g. ``updated_at``) seen on the pages of one read (also told to ``stager``)."""

    def __init__(self, stager: "Stager | None" = None) -> None:
        self.value: datetime | None = None
        self.stager = stager

    def see(self, value: datetime) -> datetime:
        if self.value is None or value > self.value:
            self.value = value
        if self.stager is not None:
            self.stager.saw(value)
        return value


class PageGuard:
    """Stops pagination from looping: a repeated page token is a FatalError."""

    def __init__(self, what: str, max_pages: int = 1_000_000) -> None:
        self.what, self.max_pages, self.pages = what, max_pages, 0
        self._seen: set[str] = set()

    def next(self, token: object) -> None:
        key = json.dumps(token, sort_keys=True, default=str)
        if key in self._seen:
            raise FatalError(f"{self.what}: the server returned page {key} twice; pagination would loop")
        self._seen.add(key)
        self.pages += 1
        if self.pages > self.max_pages:
            raise FatalError(f"{self.what}: more than {self.max_pages} pages; giving up")


# ---------------------------------------------------------------- the per-object loop


def pull_objects(con: duckdb.DuckDBPyConnection, source: str, cursor: str | None, progress: Progress,
                 read_object: Callable[[str, str | None, Stager], str | None], run_start: RunStart) -> PullResult:
    """``read_object(object, its saved cursor or None, stager) -> its new cursor`` for each of :data:`OBJECTS`
    (``run_start`` judges Dates by the stager's times; the source that made it closes it when the pull ends).

    Credentials refused part-way (a token expired or revoked during a backfill), and a method the vendor blocks until
    a known time (:class:`~connectors.errors.RetryLaterError`), keep nothing of the pull: the
    store holds only whole pulls (segments, a webhook's resync, a plan never see half an order history) and the
    cursor moves only with them, so the next pull reads again from the last saved cursor, the whole backfill when
    none is saved (docs/sources/common.md#credentials-refused-part-way); the error says so."""
    saved = load_cursor(cursor, source)
    stager = Stager(con, source, progress)
    run_start.stager = stager
    try:
        new = {obj: read_object(obj, saved.get(obj), stager) for obj in OBJECTS}
    except (AuthError, RetryLaterError) as exc:
        # (no cursor here: a first pull, or a --full one while a cursor stays saved; this pull cannot tell which)
        again = "the next pull reads again from the last saved cursor" if saved else (
            "the next pull reads again from the saved cursor, everything (the whole backfill) when none is saved")
        exc.args = (f"{exc}; nothing this pull read was kept: {again}", *exc.args[1:])
        raise
    return stager.result(dump_cursor(new))


def pull_by_time(con: duckdb.DuckDBPyConnection, source: str, cursor: str | None, progress: Progress, *,
                 run_start: RunStart, lookback: timedelta,
                 read: Callable[[str, datetime | None, Stager], datetime | None]) -> PullResult:
    """The loop of a source keyed on a modification time (see the module doc).

    ``read(object, since, stager)`` stages what changed at or after ``since`` (everything when None) and
    returns the highest time it saw (None when it saw nothing). ``run_start`` is asked after each object's first
    read, when the vendor's answers have told its clock.
    """

    def read_object(obj: str, saved: str | None, stager: Stager) -> str | None:
        previous = parse_time_cursor(source, obj, saved) if saved else None
        stager.saw(previous)
        seen = [read(obj, None if previous is None else previous - lookback, stager)]
        start = run_start()
        if previous is None:  # after a backfill: what changed while it ran, and what its listing did not reach
            seen.append(read(obj, min(start, seen[0] or start) - lookback, stager))
        return iso(bookmark(latest(seen), start, previous))

    return pull_objects(con, source, cursor, progress, read_object, run_start)


def latest(times: Iterable[datetime | None]) -> datetime | None:
    """The highest of the times that are not None (None when there is none)."""
    return max((t for t in times if t is not None), default=None)


__all__ = ["OBJECTS", "Progress", "load_cursor", "dump_cursor", "parse_time_cursor", "bookmark", "iso", "utc_now",
           "server_date", "MAX_VENDOR_LAG", "STAMP_SLACK", "RunStart", "HighWater", "PageGuard", "Stager", "record_id",
           "map_page", "pull_objects", "pull_by_time", "latest"]
