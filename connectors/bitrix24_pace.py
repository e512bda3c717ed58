"""Bitrix24's operating-time pacing (sources.md §3.3): every answer's ``time.operating`` is the seconds of execution
its method has used within the current 10-minute window; past 480 s the portal blocks that method for 10 minutes
(HTTP 429 ``OPERATION_TIME_LIMIT``, :func:`connectors.bitrix24.blocked`). A pull that stopped there would keep
nothing and meet the block at the same page the next run, for ever; so :class:`OperatingPace` waits for the window
(``time.operating_reset_at``) before a method's next call could take it past the limit (fast_bitrix24 paces the
same way, ``operating_time_limit=480``): a backfill longer than one window finishes slowly, it does not stop. The
block itself stays the last resort (another application using up the method's time).

The same answers tell the portal's UTC offset (``time.date_start``, e.g. ``2025-09-09T16:31:11+03:00``), in which
:meth:`OperatingPace.modified_since` writes a ``>=DATE_MODIFY`` filter. The crm methods read a filter's datetime with
PHP's ``strtotime`` (its offset honoured) and then shift it into the calling user's own time zone
(``CRestUtil::unConvertDateTime($v, true)``); the column is the server's wall clock ("на уровне API все даты и
время хранятся с учетом параметров сервера", B24-DOC ``api-reference/data-types.md``), and an offset lost on the way
(a ``+`` read as a space in a query string: a forum report of a filter "with a time" not working) leaves the wall
clock read in the portal's zone. Written in the portal's own offset, the filter means the same instant either way.
Before the first answer tells it, the filter starts :data:`UNKNOWN_OFFSET_SLACK` earlier (UTC): an overlap, not a
gap, whatever zone (UTC−12 … UTC+14) its wall clock is read in; a page read so only widens its first page, whose
IDs the next pages (``>ID``) continue from, so nothing between the two filters is skipped."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Callable, Mapping

from .retry import retry_after_from

log = logging.getLogger(__name__)

OPERATING_LIMIT = 480.0  # seconds of one method's execution within WINDOW before the portal blocks it
WINDOW = 600.0  # the window's length: the longest wait (an operating_reset_at further off is not believed)
HEADROOM = 30.0  # seconds kept free below the limit at least; more when the method's calls are slow (2 × the longest)
#: how much earlier a ``>=DATE_MODIFY`` filter starts before an answer told the portal's offset: a wall clock in UTC
#: read in the westernmost zone (UTC−12) is 12 hours later
UNKNOWN_OFFSET_SLACK = timedelta(hours=12)


def _seconds(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


class OperatingPace:
    """Waits (with ``sleep``, the source's injectable one) when a method's operating time nears the limit."""

    def __init__(self, sleep: Callable[[float], None]) -> None:
        self.sleep = sleep
        self.longest: dict[str, float] = {}  # method -> its longest call's duration seen, seconds
        self.waited = 0.0  # seconds waited in all (the pull's log says it)
        self.offset: tzinfo | None = None  # the portal's UTC offset, as its last answer's time.date_start wrote it

    def modified_since(self, since: datetime) -> str:
        """``since`` for a ``>=DATE_MODIFY`` filter: in the portal's offset, whole seconds (rounded down); before an
        answer told the offset, :data:`UNKNOWN_OFFSET_SLACK` earlier in UTC (see the module doc)."""
        if self.offset is None:
            return (since - UNKNOWN_OFFSET_SLACK).astimezone(timezone.utc).replace(microsecond=0).isoformat()
        return since.astimezone(self.offset).replace(microsecond=0).isoformat()

    def after(self, method: str, timing: Any, headers: Mapping[str, str] | None = None) -> float:
        """After an answer of ``method`` carrying ``timing`` (its ``time`` object): wait for the window when the
        next call could take the method past :data:`OPERATING_LIMIT`. Returns the seconds waited (0 mostly)."""
        if not isinstance(timing, Mapping):
            return 0.0
        self._offset_of(timing.get("date_start"))
        operating = _seconds(timing.get("operating"))
        if operating is None:
            return 0.0
        longest = self.longest[method] = max(self.longest.get(method, 0.0), _seconds(timing.get("duration")) or 0.0)
        if operating + max(HEADROOM, 2 * longest) < OPERATING_LIMIT:
            return 0.0
        reset = timing.get("operating_reset_at")
        key = "X-Operating-Reset-At"  # (an epoch, measured by the answer's Date when believable)
        wait = retry_after_from({**(headers or {}), key: str(reset)}, key) if reset is not None else None
        wait = min(max(wait if wait is not None else WINDOW, 1.0), WINDOW)  # bounded: one window at most
        until = (datetime.now(timezone.utc) + timedelta(seconds=wait)).replace(microsecond=0)
        self.waited += wait
        log.warning("Bitrix24 %s has used %.0f s of its %.0f s operating time in this 10-minute window: waiting "
                    "%.0f s, until %s, before its next call so the portal does not block it (the pull goes on "
                    "then; %.0f s waited in this pull so far)", method, operating, OPERATING_LIMIT, wait,
                    until.isoformat(), self.waited)
        self.sleep(wait)
        return wait


    def _offset_of(self, stamp: Any) -> None:
        try:
            offset = datetime.fromisoformat(stamp).tzinfo if isinstance(stamp, str) else None
        except ValueError:
            offset = None
        if offset is not None:
            self.offset = offset


def batch_timing(data: Any) -> dict[str, Any] | None:
    """The sub-calls' ``time`` of a ``batch`` answer (``result.result_time``) as one: the highest ``operating``
    and longest ``duration`` of its sub-calls (all one method), with their ``operating_reset_at``."""
    result = data.get("result") if isinstance(data, Mapping) else None
    times = result.get("result_time") if isinstance(result, Mapping) else None
    rows = [t for t in (times.values() if isinstance(times, Mapping) else []) if isinstance(t, Mapping)
            and _seconds(t.get("operating")) is not None]
    if not rows:
        return None
    top = max(rows, key=lambda t: _seconds(t.get("operating")) or 0.0)
    return {"operating": top.get("operating"), "operating_reset_at": top.get("operating_reset_at"),
            "duration": max(_seconds(t.get("duration")) or 0.0 for t in rows)}
