"""The earlier runs' creates in doubt, when they are many: the audience's opt-ins since then read once.

A run killed during a large first sync leaves every create it had in flight in doubt (up to the whole sync); the
next run sends them all again, and each create batch answered "already a member" would run
:func:`~sync.destinations.mailchimp_resent.landed`'s list read (newest first, at most
:data:`~sync.destinations.mailchimp_resent.READ_PAGES` pages) over a window crowded by every member the killed run
created: most of the batch is not reached, up to :data:`~sync.destinations.mailchimp_resent.READ_BUDGET` seconds of
single reads per batch call follow, and most end unclear (a WARNING each call). So when the apply's ``earlier``
holds more keys than fit one page (:func:`prefetch_over`), the members who opted in since the
earliest of them are read ONCE, before the first create call: ``GET /lists/{id}/members?status=subscribed&
since_timestamp_opt=…&sort_field=timestamp_opt&sort_dir=ASC`` paged by offset to the end (oldest first: a sign-up
meanwhile is appended at the end, so the offsets stay valid), keeping only the members among ``earlier`` (memory
bounded by it). Its cost: (members who opted in since the killed run's start) / ``PAGE_SIZE`` pages.

The host's times are put on Mailchimp's clock by the first page's ``Date`` (as
:func:`~sync.destinations.mailchimp_resent.since` does); no ``Date``, or one not believed, a page failing twice,
more than :data:`PREFETCH_PAGES` pages or :data:`PREFETCH_BUDGET` seconds: no prefetch, every batch as before.
A member leaving the window while it is paged (``total_items`` going down between pages: someone unsubscribed)
may shift the offsets past someone: the read is then not complete, and a member it did not list is checked by the
batch's own read, as before; in a complete read, a member not listed did not opt in within the window (there
before, or not subscribed): not rfmsync's, nothing read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable, Mapping

from connectors.runstart import STAMP_SLACK

from ..errors import DestinationError
from . import mailchimp_api
from .answers import validate
from .mailchimp_api import Sent
from . import mailchimp_resent as resent

if TYPE_CHECKING:
    from .mailchimp import MailchimpDestination

log = logging.getLogger(__name__)

#: the most pages the prefetch reads (PAGE_SIZE each: 2 M opt-ins); past it, no prefetch
PREFETCH_PAGES = 2000
#: no page of the prefetch is started after this many seconds; past it, no prefetch (its pages are read one after
#: the other: 1,000 pages of 1,000 members, a killed 1 M sync's, take some 10-20 minutes; the per-batch path it
#: replaces costs up to 30 s per batch call answered exists, ~30 minutes at 10 connections for 600 such calls)
PREFETCH_BUDGET = 1800.0


def prefetch_over() -> int:
    """More keys in ``earlier`` than this (one page): the window is read once. A batch's own list read settles a
    member it does not list only when the whole window fits one page; with more creates in doubt than that (a
    window at least that full once they landed), each batch reads its absent members (there before, never
    landed) one by one, and past ``READ_PAGES`` pages every batch reads up to that many pages as well. The
    prefetch costs the window's pages once; a few doubts (a webhook resync's, a few failures) keep the batch's
    read, which costs nothing when no create is answered exists."""
    return mailchimp_api.PAGE_SIZE


@dataclass
class Window:
    """The members among ``earlier`` who opted in since its earliest bound (email, lower case -> member), the
    host's clock put on Mailchimp's (``skew``: Mailchimp's less the host's), and whether the read was whole."""

    members: dict[str, resent.MemberOpt] = field(default_factory=dict)
    skew: timedelta = timedelta(0)
    complete: bool = True

    def judge(self, email: str, earlier: datetime) -> bool | None | str:
        """Whether the earlier run's send (``earlier``: the host's time since which it may have landed) created
        ``email``: True, False, None (his times cannot tell: unclear), or ``"unknown"`` (not listed in a read not
        complete: the batch's own read decides)."""
        member = self.members.get(email.lower())
        if member is None:
            return False if self.complete else "unknown"
        return resent.created_since(member, resent.on_mailchimps_clock(earlier, self.skew) - STAMP_SLACK)


def prefetch(dest: MailchimpDestination, earlier: Mapping[str, datetime],
             between: Callable[[], None] = lambda: None) -> Window | None:
    """The window read once when ``earlier`` is large (see the module docstring); None: not read (small, or the
    read could not be made or believed: the batches check as before). ``between``: called before each page but
    the first (the apply's ``on_results([])``: it raises when the run is stopped or its lock lost, and nothing is
    created)."""
    if len(earlier) <= prefetch_over():
        return None
    wanted = {k.lower() for k in earlier}
    size = mailchimp_api.PAGE_SIZE
    window, offset, total, sent = Window(), 0, None, Sent(dated=True)
    deadline = time.monotonic() + PREFETCH_BUDGET
    read = f"GET /lists/{dest.audience}/members (opted in since the earlier runs, oldest first)"
    # the bound on the host's clock, widened by as much as a believed Date can be off it: every page asks the same
    start = min(earlier.values()) - resent.DATE_TRUST - STAMP_SLACK - resent.CLOCK_MARGIN - timedelta(seconds=2)
    params = {"status": "subscribed", "sort_field": "timestamp_opt", "sort_dir": "ASC",
              "since_timestamp_opt": resent._stamp(start)}
    page = 0
    try:
        for page in range(PREFETCH_PAGES):
            if time.monotonic() >= deadline:
                raise DestinationError(f"not done within {PREFETCH_BUDGET:.0f} s")
            if page:
                between()
            answer = dest._call(f"{read} offset={offset}", dest._lists.get_list_members_info, dest.audience,
                                count=size, offset=offset, attempts=resent.READ_ATTEMPTS, fields=resent.FIELDS,
                                sent=sent if page == 0 else None, **params)
            if page == 0:
                if sent.date is None or not resent.believed(sent, sent.at or datetime.now(timezone.utc)):
                    raise DestinationError("its answer's Date is missing or not believed")
                window.skew = sent.date - (sent.at or datetime.now(timezone.utc))
            items, now_total = answer.get("members", []), answer.get("total_items")
            if not isinstance(items, list) or not isinstance(now_total, int):
                raise DestinationError("members[] or total_items missing")
            if total is not None and now_total < total:  # someone left the window: offsets may skip someone
                window.complete = False
            total = now_total
            for item in items:
                member = validate(resent.MemberOpt, item, f"Mailchimp {read}", secrets=dest._http._secrets)
                if member.email_address.lower() in wanted:
                    window.members[member.email_address.lower()] = member
            offset += len(items)
            if len(items) < size or offset >= now_total:
                break
        else:
            raise DestinationError(f"more than {PREFETCH_PAGES} pages")
    except DestinationError as exc:  # (a BadAnswer too)
        log.warning("mailchimp %s: %s, for %d creates an earlier run may have carried out, failed (%s): each "
                    "create batch answered \"already a member\" checks its own", dest.name, read, len(earlier), exc)
        return None
    if not window.complete:
        log.warning("mailchimp %s: %s changed while it was paged (a member left it): the %d creates in doubt it "
                    "did not list are checked by their batches", dest.name, read, len(wanted) - len(window.members))
    log.info("mailchimp %s: %s: %d pages, %d of %d creates in doubt listed", dest.name, read, page + 1,
             len(window.members), len(earlier))
    return window
