"""When a pull began, by the vendor's clock when the host's runs ahead (:class:`RunStart`), read from the ``Date``
header of the answers (:func:`server_date`). Used by :mod:`connectors.incremental`'s loops: the pass after a backfill
starts, and the bookmark is capped, at this time."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Callable

from .counts import counted

if TYPE_CHECKING:  # (the stager's module imports this one; the client's imports the retry layer, which imports this)
    from .http import HttpClient
    from .incremental import Stager

log = logging.getLogger(__name__)


def server_date(value: str | None, *, zoneless_utc: bool = False) -> datetime | None:
    """An answer's ``Date`` header (the server's clock, whole seconds) in UTC; None when there is none or it is not
    an HTTP date with its zone (``GMT``). With ``zoneless_utc``, a date without a zone (the asctime form ``Sun Nov  6
    08:49:37 1994``, or ``-0000``) is read as UTC, as HTTP reads every date (a ``Retry-After``: the wait it asks
    for); a ``Date`` without its zone stays None (it only ever moves a run start, and the host's clock is safe)."""
    if not value:
        return None
    try:  # (OverflowError: a zone that moves the date past year 9999, e.g. "Fri, 31 Dec 9999 23:59:59 -0100")
        date = parsedate_to_datetime(value)
        if date.tzinfo is None:
            return date.replace(tzinfo=timezone.utc) if zoneless_utc else None
        return date.astimezone(timezone.utc)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


#: How far behind the host's clock an answer's ``Date`` may be and still be taken for the vendor's clock when the pull
#: has no time the vendor stamped to judge it by (:class:`RunStart`): a host clock runs ahead by seconds or minutes
#: (drift), or by hours when a time zone is set wrong (at most 14: UTC+14); a Date more than a day behind is then
#: taken for a header that does not tell the time now (a cached answer, an appliance whose clock was never set).
MAX_VENDOR_LAG = timedelta(days=1)
#: How far a ``Date`` may be behind the newest time the vendor stamped and still be believed: the vendor's servers
#: (the one stamping records, the front dating answers) keep clocks a few seconds apart; a Date that much too early
#: only reads a little more again, while a stale or stuck header is hours or years behind.
STAMP_SLACK = timedelta(minutes=1)


class RunStart:
    """When a pull began: the host's clock, or earlier by as far as the host's clock runs ahead of the vendor's.

    Each accepted answer's ``Date`` header (:meth:`answered`) gives a skew: the host's time then − the Date. The run
    start is the host's start − the largest skew seen (only ever earlier; the host's start when no skew is
    positive). A host clock ahead of the vendor's would start the pass after a backfill, and cap the bookmark, past
    edits the vendor stamped before it: edits on pages already read, lost for good. A host clock behind only reads
    a little more again. A host ahead by a minute or more is logged once as a warning.

    A Date is judged by the times the vendor itself stamped that the pull knew when the next answer came (or the
    run start was asked): the previous bookmark and the modification times read (:meth:`Stager.saw`), all stamped
    before that Date. A Date earlier than those (by more than :data:`STAMP_SLACK`) cannot be the vendor's clock
    (a stale header from a cache, a stuck or unset clock): not used, logged once as a warning. However far the
    host is ahead, a Date after them is believed. Only with no such time yet is a Date more than
    :data:`MAX_VENDOR_LAG` behind the host's not used."""

    def __init__(self, host: datetime, source: str = "source", clock: Callable[[], datetime] | None = None,
                 stager: "Stager | None" = None) -> None:
        self.host, self.source, self.stager = host, source, stager
        self.clock = clock or (lambda: host)  # the host's time now
        self.skew: timedelta | None = None  # the largest skew of a believed Date; None before one
        self._pending: tuple[datetime, timedelta] | None = None  # the last Date and its skew, not judged yet
        self._told = self._doubted = False
        self._http: HttpClient | None = None  # the client whose answers it listens to (:meth:`of`)
        self._listener: Callable[[str | None], None] | None = None

    @classmethod
    def of(cls, http: HttpClient, clock: Callable[[], datetime], source: str) -> "RunStart":
        """A run start listening to ``http``'s answers (from now on, until :meth:`close`: the pull's end), by the
        host's ``clock``. The source that makes it closes it: ``with RunStart.of(...) as run_start:`` around its
        pull."""
        start = cls(clock(), source, clock)
        start._http, start._listener = http, lambda header: start.answered(server_date(header))
        http.on_date = start._listener
        return start

    def close(self) -> None:
        """The pull ended (done or failed): ``http`` stops telling this run start its answers' Dates. A later use of
        the same client (a ``check``, another pull's first calls, a webhook's resync) is no answer of this pull:
        judged against this pull's records, its Date was taken for a stale header and warned of."""
        if self._http is not None and self._http.on_date is self._listener:
            self._http.on_date = None
        self._http = self._listener = None

    def __enter__(self) -> "RunStart":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answered(self, date: datetime | None) -> None:
        if date is not None:
            self._judge()  # the Date before it, now that the pages of its answer were read
            self._pending = (date, self.clock() - date)

    def _judge(self) -> None:
        if self._pending is None:
            return
        (date, skew), self._pending = self._pending, None
        stamped = self.stager.newest if self.stager is not None else None
        if stamped is not None and stamped > date + skew + STAMP_SLACK:  # after this host's clock at the answer:
            stamped = None  # a record dated in the future (set through the API), not a time the vendor has reached
        if (date >= stamped - STAMP_SLACK) if stamped is not None else skew <= MAX_VENDOR_LAG:
            self.skew = skew if self.skew is None else max(self.skew, skew)
        elif not self._doubted:
            self._doubted = True
            why = (f"earlier than {stamped.isoformat()}, a time the vendor stamped (a bookmark, a record read)"
                   if stamped is not None else f"more than a day behind this host's clock ({self.host.isoformat()})")
            log.warning("%s: an answer's Date header says %s, %s: not used as the vendor's clock (a stale header "
                        "from a cache or a proxy, or a clock set wrong); the pull starts by this host's clock, and "
                        "if this host's clock is the wrong one, edits made during the pull may be missed",
                        self.source, date.isoformat(), why)

    def __call__(self) -> datetime:
        self._judge()
        if self.skew is None or self.skew <= timedelta(0):
            return self.host
        if self.skew >= timedelta(minutes=1) and not self._told:
            self._told = True
            log.warning("%s: this host's clock is %s ahead of the vendor's (the Date of its answers): the "
                        "pull starts by the vendor's clock; set this host's clock right (NTP)", self.source,
                        counted(self.skew // timedelta(minutes=1), "minute"))
        return self.host - self.skew


__all__ = ["server_date", "MAX_VENDOR_LAG", "STAMP_SLACK", "RunStart"]
