"""A Mailchimp create sent again after its answer was lost: did the lost send create him?

A create batch (``update_existing=false``, ``status``) whose answer is lost (a timeout, a connection dropped or its
answer cut off, a gateway's 5xx: :func:`~sync.destinations.mailchimp_api.may_have_landed`) is sent again by the
retry layer. When the lost send was carried out, Mailchimp answers the second one ``ERROR_CONTACT_EXISTS`` for every
member it created, as it does for a member the audience held before; only the first must be recorded as created
``subscribed`` by rfmsync (``subscribed_by_us``: the plan names him when the source says no later,
:mod:`sync.planning.withdrawn`). So the audience's members who opted in since the lost send are read in one list
read (``GET /lists/{id}/members?status=subscribed&since_timestamp_opt=…``, newest first, so the lost send's creates
come early; no upper bound: the answer's ``Date`` is not the clock that stamps members), and a ``subscribed``
create answered "exists" is taken for rfmsync's when he is listed ``subscribed`` and opted in (``timestamp_opt``;
``timestamp_signup`` too when set) no earlier than the lost send could have reached Mailchimp. Those the list read
leaves unsettled (a window crowded past :data:`READ_PAGES` pages by a large sync's own creates, one read over more
than one page, which may have changed under the paging by offset, or a list read that failed) are read one by one
(:func:`_read_each`).

That time is on Mailchimp's clock, never the host's: the ``Date`` of the answer to the re-send, less the time the
host's monotonic clock measured from the lost send's start to that answer, less one second (both times are whole
seconds) and :data:`~connectors.runstart.STAMP_SLACK` (the vendor's servers, the one stamping members and the one
dating answers, keep clocks a few seconds apart). A ``Date`` more than :data:`DATE_TRUST` from the host's clock is
not the vendor's clock now (a cached answer, a proxy's clock): nothing is read. One a little off (within it) could
still put the bound after the creates: a member who opted in within :data:`CLOCK_MARGIN` before the bound is
unclear (a WARNING), not "there before"; one earlier was there before.

Anything unclear is not recorded, as before: no ``Date`` or one not believed, reads that fail, a member's times
unreadable or within the margin (one warning per call names them: a later withdrawal in the source will not be
named for them); a member not listed in a window read whole in one page, or whose own read answers 404, shows him
there before or not ``subscribed``, is simply not rfmsync's subscriber. Recording is the side of a warning (a
withdrawal named, someone asked to unsubscribe him in the ESP), not recording the side of silence; the window
(the lost send's start less the slack, i.e. about a minute before it, to the re-send's answer: up to the retry
deadline, 360 s by default, after it) is where a member who subscribed himself could be taken for rfmsync's. The
reads are bounded in number and in time: only after a call one of whose attempts lost its answer, with
``subscribed`` creates answered exists; at most :data:`READ_PAGES` pages, each with at most :data:`READ_ATTEMPTS`
attempts, stopping at the first page that fails; then single reads of one attempt each, none started after
:data:`READ_BUDGET` seconds (so at most that plus one read's own timeout), stopping at the first that fails. A
``Date`` accepted but behind the members' clock (up to :data:`DATE_TRUST`) widens the window by as much.

A create sent again by a **later run** is checked the same way: its earlier send's answer was lost for good (the
retry gave up, an answer that could not be read, a run killed or failed with it in flight), which left a pending
``upsert`` failure; the engine passes, for the creates of its apply that have one, the host's time since which the
earlier send may have landed (``earlier``: :func:`sync.planning.doubt.earlier_sends`, the start of the run that
sent it). That time is put on Mailchimp's clock by this call's answer (its ``Date`` less the host's clock when it
arrived, so that answer's ``Date`` is read, and must be believed, whenever such a create is in the call), less one
second and the slack. The window then runs from that run's start to now, hours or days: a member who subscribed
himself in the ESP meanwhile, whom the source also says yes for, is taken for rfmsync's (the warning side). The
call's contacts are read in one list read from the earliest of their bounds, each judged by his own. Many such
creates (a killed large first sync) are judged instead from one read of their window made before the apply's first
create (:mod:`~sync.destinations.mailchimp_window`; ``dest._window``), those it could not list as above.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Mapping, Sequence

from connectors.counts import counted
from connectors.runstart import STAMP_SLACK

from ..errors import DestinationError
from ..model import ContactChange
from .answers import validate
from .mailchimp_answers import MemberInfo
from .mailchimp_api import PAGE_SIZE, Sent, subscriber_hash

if TYPE_CHECKING:
    from .mailchimp import MailchimpDestination

log = logging.getLogger(__name__)

#: the members' fields the check reads, in the list read and in a member's own read
FIELDS = ["members.email_address", "members.status", "members.timestamp_opt", "members.timestamp_signup",
          "total_items"]
FIELDS_ONE = ["email_address", "status", "timestamp_opt", "timestamp_signup"]
#: an answer's ``Date`` further than this from the host's clock is not taken for Mailchimp's clock (a proxy's or a
#: cache's): nothing is read, the creates are unclear (a WARNING)
DATE_TRUST = timedelta(minutes=5)
#: a member who signed up or opted in this little before the lost send could have reached Mailchimp may be its
#: create (the answer's Date a little off the clock stamping members): unclear (a WARNING), not "there before"
CLOCK_MARGIN = timedelta(minutes=10)
#: the members the list read leaves unsettled are read one by one; none is started after this many seconds
READ_BUDGET = 30.0
#: the most pages of members who opted in within the window read (newest first: the lost send's creates are on
#: the first unless other sign-ups, rfmsync's other batches among them, came between it and the re-send's answer)
READ_PAGES = 5
#: the most attempts of each page (the call's retry policy, cut short: a Mailchimp that lost an answer may be
#: failing, and the batch call, its tag calls and the destination wait for this read)
READ_ATTEMPTS = 2


class MemberOpt(MemberInfo):
    """A member of ``GET /lists/{id}/members``, with the times he signed up and opted in (ISO 8601; Mailchimp gives
    ``""`` for a time it does not know)."""

    timestamp_opt: str | None = None
    timestamp_signup: str | None = None


def believed(sent: Sent, now: datetime) -> bool:
    """Whether the answer's ``Date`` can be taken for Mailchimp's clock: there is one, within :data:`DATE_TRUST` of
    the host's clock ``now`` either way."""
    return sent.date is not None and abs(sent.date - now) <= DATE_TRUST


def since(sent: Sent, now: datetime | None = None, earlier: datetime | None = None) -> datetime | None:
    """The earliest time on Mailchimp's clock a lost send of ``sent``'s call can have created a member (see the
    module docstring): its own lost attempt's (``sent.lost_at``) and, with ``earlier``, an earlier run's send (the
    host's clock: :func:`~sync.planning.doubt.earlier_sends`) put on Mailchimp's clock by the answer's ``Date`` less
    the host's clock when it arrived (``sent.at``), less one second and the slack; the earlier of the two. None when
    there is neither, or the answer carried no ``Date`` or one not :func:`believed` (``now``: the host's clock)."""
    now = now or datetime.now(timezone.utc)
    if sent.answered is None or not believed(sent, now):
        return None
    assert sent.date is not None
    bounds = [] if sent.lost_at is None else [sent.date - timedelta(seconds=sent.answered - sent.lost_at + 1)]
    if earlier is not None:
        bounds.append(on_mailchimps_clock(earlier, sent.date - (sent.at or now)))
    return min(bounds) - STAMP_SLACK if bounds else None


def on_mailchimps_clock(earlier: datetime, skew: timedelta) -> datetime:
    """An earlier run's send (``earlier``: the host's clock) on Mailchimp's clock (``skew``: an answer's ``Date`` less
    the host's clock when it arrived), less one second (both are whole seconds); the slack is the caller's."""
    return earlier + skew - timedelta(seconds=1)


def _stamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def _time(value: str | None) -> datetime | None:
    try:
        t = datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
    return t if t is None or t.tzinfo is not None else None  # (a time without its zone is not read)


def created_since(member: MemberOpt, bound: datetime) -> bool | None:
    """Whether ``member`` was created ``subscribed`` at or after ``bound``: True; False (not subscribed, or he
    signed up or opted in more than :data:`CLOCK_MARGIN` before it: there before); None when his times cannot tell
    (missing, unreadable, or within the margin before ``bound``: a clock a little off cannot be told apart)."""
    if member.status != "subscribed":
        return False
    opted = _time(member.timestamp_opt)
    if opted is None:
        return None
    signed = _time(member.timestamp_signup)
    if member.timestamp_signup and signed is None:
        return None
    first = opted if signed is None else min(opted, signed)
    return True if first >= bound else None if first >= bound - CLOCK_MARGIN else False


def landed(dest: MailchimpDestination, exists: Sequence[ContactChange], sent: Sent, what: str,
           earlier: Mapping[str, datetime] | None = None) -> set[str]:
    """The keys of ``exists`` (``subscribed`` creates answered ``ERROR_CONTACT_EXISTS``) that a lost send created:
    an earlier attempt of this call whose answer was lost (``sent``), or an earlier run's send of the contact
    (``earlier``: by key, the host's time since which it may have landed). One list read from the earliest bound,
    each member judged by his own (:func:`since`), then the members it could not settle read one by one
    (:func:`_read_each`). A contact with neither is left out (not read)."""
    earlier = earlier or {}
    exists = [c for c in exists if sent.lost_at is not None or c.key in earlier]
    window, mine, unclear = dest._window, set[str](), list[str]()
    if window is not None and sent.lost_at is None:  # a large doubt's window, read once (mailchimp_window)
        left = []
        for c in exists:
            ours = window.judge(c.email, earlier[c.key])
            if ours == "unknown":  # not listed by a read that was not whole: this batch's own read decides
                left.append(c)
            else:
                _sort(ours, c, mine, unclear)
        if unclear:
            _unclear(dest, what, unclear, "a member's times tell nothing: they are missing, or within "
                     f"{int(CLOCK_MARGIN.total_seconds()) // 60} minutes before the earlier run", " in an earlier run")
        exists, unclear = left, []
    if not exists:
        return mine
    late = "" if sent.lost_at is not None else " in an earlier run"
    now = datetime.now(timezone.utc)
    bounds = {c.key: since(sent, now, earlier.get(c.key)) for c in exists}
    if sent.date is None or None in bounds.values():
        _unclear(dest, what, [c.email for c in exists], "its answer carried no Date" if sent.date is None else
                 f"its answer's Date ({sent.date.isoformat()}) is more than {int(DATE_TRUST.total_seconds()) // 60} "
                 "minutes from this host's clock", late)
        return mine
    wanted = {c.email.lower(): c for c in exists}
    bound = min(b for b in bounds.values() if b is not None)
    unclear = []
    settled = False  # the whole window read in one page: a member not listed did not opt in within it
    read = f"GET /lists/{dest.audience}/members (opted in since {_stamp(bound - CLOCK_MARGIN)})"
    listed = 0
    try:
        for listed, item in enumerate(dest._paged(
                read, dest._lists.get_list_members_info, (dest.audience,), "members", ("email_address",),
                attempts=READ_ATTEMPTS, fields=FIELDS, status="subscribed", sort_field="timestamp_opt", sort_dir="DESC",
                # (whether "since" takes the second in); no upper bound: the answer's Date is not the members' clock
                since_timestamp_opt=_stamp(bound - CLOCK_MARGIN - timedelta(seconds=1))), 1):
            member = validate(MemberOpt, item, f"Mailchimp {read}", secrets=dest._http._secrets)
            c = wanted.pop(member.email_address.lower(), None)
            if c is not None:
                _sort(created_since(member, bounds[c.key]), c, mine, unclear)
            if not wanted or listed >= READ_PAGES * PAGE_SIZE:
                break
        else:
            settled = listed < PAGE_SIZE
    except DestinationError as exc:  # (a BadAnswer too) the rest are read one by one
        log.debug("mailchimp %s: %s failed: %s", dest.name, read, exc)
    if wanted and not settled:  # the window crowded (a large sync's own creates), or paged while it changed
        why = _read_each(dest, list(wanted.values()), bounds, mine, unclear)
    else:
        why, wanted = "", {}
    if unclear:
        _unclear(dest, what, unclear, why or "a member's times tell nothing: they are missing, or within "
                 f"{int(CLOCK_MARGIN.total_seconds()) // 60} minutes before the lost send", late)
    return mine


def _sort(ours: bool | None, c: ContactChange, mine: set[str], unclear: list[str]) -> None:
    if ours:
        mine.add(c.key)
    elif ours is None:
        unclear.append(c.email)


def _read_each(dest: MailchimpDestination, left: list[ContactChange], bounds: Mapping[str, datetime | None],
               mine: set[str], unclear: list[str]) -> str:
    """Each of ``left`` read on his own (``GET /lists/{id}/members/{hash}``, one attempt) and judged by his bound,
    none started after :data:`READ_BUDGET` seconds, up to the first read that fails (404: not a member, not
    rfmsync's subscriber); those not read are unclear. Why some were not read ("" when all were)."""
    deadline = time.monotonic() + READ_BUDGET
    for i, c in enumerate(left):
        if time.monotonic() >= deadline:
            unclear.extend(x.email for x in left[i:])
            return f"{len(left) - i} not read within {READ_BUDGET:.0f} s"
        subscriber = subscriber_hash(c.email)
        try:
            member = dest._call(f"GET /lists/{dest.audience}/members/{subscriber}", dest._lists.get_list_member,
                                dest.audience, subscriber, attempts=1, shape=MemberOpt, fields=FIELDS_ONE)
        except DestinationError as exc:
            if exc.status == 404:
                continue
            unclear.extend(x.email for x in left[i:])
            return f"a member's read failed: {exc}"
        bound = bounds[c.key]
        assert bound is not None
        _sort(created_since(member, bound), c, mine, unclear)
    return ""


def unread(dest: MailchimpDestination, what: str, creates: Sequence[ContactChange]) -> None:
    """A WARNING for the ``subscribed`` ``creates`` of a create batch answered 2xx with what is not Mailchimp's answer
    (an HTML page, a body cut short: :class:`~sync.destinations.answers.BadAnswer`, not retried within the apply):
    they fail and the next run sends them again; if this call was carried out, that run finds them members already,
    and records them as rfmsync's only when their opt-in times say this run's send created them (their pending
    failures date it: :func:`landed`), else it warns."""
    if creates:
        log.warning("mailchimp %s: %s was answered with what is not Mailchimp's answer; its %s (%s%s) failed and "
                    "will be sent again next run; if Mailchimp carried this call out, that run finds them already "
                    "members and checks their opt-in times to record them as created by rfmsync (a WARNING names "
                    "those it cannot tell: a later withdrawal in the source would not be named for them)", dest.name,
                    what, counted(len(creates), "subscribed create"), creates[0].email,
                    " and more" if len(creates) > 1 else "")


def _unclear(dest: MailchimpDestination, what: str, emails: Sequence[str], why: str, late: str = "") -> None:
    log.warning("mailchimp %s: %s was sent again after its answer was lost%s; %d of its subscribed creates answered "
                "\"already a member\" (%s%s) could not be checked (%s): not recorded as created by rfmsync, so a "
                "later withdrawal in the source will not be named for them", dest.name, what, late, len(emails),
                emails[0], " and more" if len(emails) > 1 else "", why)


__all__ = ["CLOCK_MARGIN", "DATE_TRUST", "MemberOpt", "READ_ATTEMPTS", "READ_BUDGET", "READ_PAGES", "believed",
           "created_since", "landed", "on_mailchimps_clock", "since", "unread"]
