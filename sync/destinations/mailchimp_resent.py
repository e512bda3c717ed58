"""A Mailchimp create sent again after its answer was lost: did the lost send create him?

A create batch (``update_existing=false``, ``status``) whose answer is lost (a timeout, a connection dropped or its
answer cut off, a gateway's 5xx: :func:`~sync.destinations.mailchimp_api.may_have_landed`) is sent again by the
retry layer. When the lost send was carried out, Mailchimp answers the second one ``ERROR_CONTACT_EXISTS`` for every
member it created, as it does for a member the audience held before; only the first must be recorded as created
``subscribed`` by rfmsync (``subscribed_by_us``: the plan names him when the source says no later,
:mod:`sync.planning.withdrawn`). So the audience's members who opted in since the lost send are read in one list
read (``GET /lists/{id}/members?status=subscribed&since_timestamp_opt=…&before_timestamp_opt=…``, newest first, so
the lost send's creates come on its first page) and a ``subscribed`` create answered "exists" is taken for
rfmsync's when he is listed ``subscribed`` and opted in (``timestamp_opt``; ``timestamp_signup`` too when set) no
earlier than the lost send could have reached Mailchimp.

That time is on Mailchimp's clock, never the host's: the ``Date`` of the answer to the re-send, less the time the
host's monotonic clock measured from the lost send's start to that answer, less one second (both times are whole
seconds) and :data:`~connectors.runstart.STAMP_SLACK` (the vendor's servers, the one stamping members and the one
dating answers, keep clocks a few seconds apart). A member who was there before opted in earlier: not listed, not
recorded. A ``Date`` more than :data:`~connectors.runstart.MAX_VENDOR_LAG` from the host's clock is not the
vendor's clock now (a cached answer, a proxy's clock): nothing is read.

Anything unclear is not recorded, as before: no ``Date`` or one not believed, a list read that fails, a page limit
reached, a listed member's times unreadable (one warning per call names them: a later withdrawal in the source will
not be named for them); a member not listed (there before, or unsubscribed or deleted since) is simply not
rfmsync's subscriber. Recording is the side of a warning (a withdrawal named, someone asked to unsubscribe him in
the ESP), not recording the side of silence; the window (the lost send's start less the slack, i.e. about a minute
before it, to the re-send's answer: up to the retry deadline, 360 s by default, after it) is where a member who
subscribed himself could be taken for rfmsync's. The read is bounded in number and in time: only after a call one
of whose attempts lost its answer, with ``subscribed`` creates answered exists; at most :data:`READ_PAGES` pages,
each with at most :data:`READ_ATTEMPTS` attempts, and it stops at the first page that fails.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Sequence

from connectors.counts import counted
from connectors.runstart import MAX_VENDOR_LAG, STAMP_SLACK

from ..errors import DestinationError
from ..model import ContactChange
from .answers import validate
from .mailchimp_answers import MemberInfo
from .mailchimp_api import PAGE_SIZE, Sent

if TYPE_CHECKING:
    from .mailchimp import MailchimpDestination

log = logging.getLogger(__name__)

#: the members' fields the check reads
FIELDS = ["members.email_address", "members.status", "members.timestamp_opt", "members.timestamp_signup",
          "total_items"]
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
    """Whether the answer's ``Date`` can be taken for Mailchimp's clock: there is one, within
    :data:`~connectors.runstart.MAX_VENDOR_LAG` of the host's clock ``now`` either way."""
    return sent.date is not None and abs(sent.date - now) <= MAX_VENDOR_LAG


def since(sent: Sent, now: datetime | None = None) -> datetime | None:
    """The earliest time on Mailchimp's clock the lost send of ``sent`` can have created a member (see the module
    docstring); None when the answer carried no ``Date`` or one not :func:`believed` (``now``: the host's clock)."""
    if sent.lost_at is None or sent.answered is None or not believed(sent, now or datetime.now(timezone.utc)):
        return None
    assert sent.date is not None
    return sent.date - timedelta(seconds=sent.answered - sent.lost_at + 1) - STAMP_SLACK


def _stamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def _time(value: str | None) -> datetime | None:
    try:
        t = datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
    return t if t is None or t.tzinfo is not None else None  # (a time without its zone is not read)


def created_since(member: MemberOpt, bound: datetime) -> bool | None:
    """Whether ``member`` was created ``subscribed`` at or after ``bound``: True, False, or None when his times
    cannot tell (his opt-in time missing or unreadable)."""
    if member.status != "subscribed":
        return False
    opted = _time(member.timestamp_opt)
    if opted is None:
        return None
    signed = _time(member.timestamp_signup)
    if member.timestamp_signup and signed is None:
        return None
    return opted >= bound and (signed is None or signed >= bound)


def landed(dest: MailchimpDestination, exists: Sequence[ContactChange], sent: Sent, what: str) -> set[str]:
    """The keys of ``exists`` (``subscribed`` creates answered ``ERROR_CONTACT_EXISTS`` by a call one of whose
    earlier attempts lost its answer: ``sent``) that the lost attempt created, read in one list read."""
    if not exists:
        return set()
    bound = since(sent)
    if bound is None or sent.date is None:
        _unclear(dest, what, [c.email for c in exists], "its answer carried no Date" if sent.date is None else
                 f"its answer's Date ({sent.date.isoformat()}) is more than a day from this host's clock")
        return set()
    wanted = {c.email.lower(): c for c in exists}
    mine: set[str] = set()
    unclear: list[str] = []
    why = "a member's times tell nothing"
    read = f"GET /lists/{dest.audience}/members (opted in since {_stamp(bound)})"
    try:
        for listed, item in enumerate(dest._paged(
                read, dest._lists.get_list_members_info, (dest.audience,), "members", ("email_address",),
                attempts=READ_ATTEMPTS, fields=FIELDS, status="subscribed", sort_field="timestamp_opt", sort_dir="DESC",
                since_timestamp_opt=_stamp(bound - timedelta(seconds=1)),  # (whether "since" takes the second in)
                before_timestamp_opt=_stamp(sent.date + STAMP_SLACK)), 1):
            member = validate(MemberOpt, item, f"Mailchimp {read}")
            c = wanted.pop(member.email_address.lower(), None)
            ours = created_since(member, bound) if c is not None else False
            if c is not None and ours:
                mine.add(c.key)
            elif c is not None and ours is None:
                unclear.append(c.email)
            if not wanted:
                break
            if listed >= READ_PAGES * PAGE_SIZE:
                why = f"more than {listed} members opted in meanwhile, not all read"
                break
        else:  # the whole window read: those not listed were there before (or left since), not rfmsync's
            wanted = {}
    except DestinationError as exc:  # (a BadAnswer too) the rest cannot be told
        why = f"the members who opted in since could not be read: {exc}"
    unclear.extend(c.email for c in wanted.values())
    if unclear:
        _unclear(dest, what, unclear, why)
    return mine


def unread(dest: MailchimpDestination, what: str, creates: Sequence[ContactChange]) -> None:
    """A WARNING for the ``subscribed`` ``creates`` of a create batch answered 2xx with what is not Mailchimp's answer
    (an HTML page, a body cut short: :class:`~sync.destinations.answers.BadAnswer`, not retried within the apply):
    they fail and the next run sends them again; if this call was carried out, that run finds them members already
    and cannot record them as rfmsync's (it knows nothing of this call), so a later withdrawal is not named."""
    if creates:
        log.warning("mailchimp %s: %s was answered with what is not Mailchimp's answer; its %s (%s%s) failed and "
                    "will be sent again next run, but if Mailchimp carried this call out, that run finds them already "
                    "members and cannot record them as created by rfmsync: a later withdrawal in the source will not "
                    "be named for them (check them in Mailchimp)", dest.name, what, counted(len(creates),
                    "subscribed create"), creates[0].email, " and more" if len(creates) > 1 else "")


def _unclear(dest: MailchimpDestination, what: str, emails: Sequence[str], why: str) -> None:
    log.warning("mailchimp %s: %s was sent again after its answer was lost; %d of its subscribed creates answered "
                "\"already a member\" (%s%s) could not be checked (%s): not recorded as created by rfmsync, so a "
                "later withdrawal in the source will not be named for them", dest.name, what, len(emails),
                emails[0], " and more" if len(emails) > 1 else "", why)


__all__ = ["MemberOpt", "READ_ATTEMPTS", "READ_PAGES", "believed", "created_since", "landed", "since", "unread"]
