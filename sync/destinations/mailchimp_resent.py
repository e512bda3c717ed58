"""A Mailchimp create sent again after its answer was lost: did the lost send create him?

A create batch (``update_existing=false``, ``status``) whose answer is lost (a timeout, a connection dropped, a
gateway's 5xx: :func:`~sync.destinations.mailchimp_api.may_have_landed`) is sent again by the retry layer. When
the lost send was carried out, Mailchimp answers the second one ``ERROR_CONTACT_EXISTS`` for every member it
created, as it does for a member the audience held before; only the first must be recorded as created
``subscribed`` by rfmsync (``subscribed_by_us``: the plan names him when the source says no later,
:mod:`sync.planning.withdrawn`). So each such member of a ``subscribed`` create is read once
(``GET /lists/{id}/members/{subscriber hash}``) and taken for rfmsync's when he is ``subscribed`` and opted in
(``timestamp_opt``; ``timestamp_signup`` too when set) no earlier than the lost send could have reached Mailchimp.

That time is on Mailchimp's clock, never the host's: the ``Date`` of the answer to the re-send, less the time the
host's monotonic clock measured from the lost send's start to that answer, less one second (both times are whole
seconds) and :data:`~connectors.runstart.STAMP_SLACK` (the vendor's servers, the one stamping members and the one
dating answers, keep clocks a few seconds apart). A member who was there before opted in earlier: not recorded.

Anything unclear is not recorded, as before: no ``Date``, a read that fails, a timestamp missing or unreadable
(one warning per call names them: a later withdrawal in the source will not be named for them); a member gone
meanwhile (404) or not ``subscribed`` (he unsubscribed) is simply not rfmsync's subscriber. Recording is the
side of a warning (a withdrawal named, someone asked to unsubscribe him in the ESP), not recording the side of
silence; the window (the retries' few seconds to minutes, plus the slack) is where a member who subscribed himself
could be taken for rfmsync's. The reads are bounded: only the ``subscribed`` creates of a call one of whose
attempts lost its answer, answered exists (at most a batch).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Sequence

from connectors.runstart import STAMP_SLACK

from ..errors import DestinationError
from ..model import ContactChange
from .mailchimp_answers import MemberInfo
from .mailchimp_api import Sent

if TYPE_CHECKING:
    from .mailchimp import MailchimpDestination

log = logging.getLogger(__name__)

#: the member's fields the check reads
FIELDS = ["email_address", "status", "timestamp_opt", "timestamp_signup"]


class MemberOpt(MemberInfo):
    """``GET /lists/{id}/members/{subscriber_hash}``, 200, with the times he signed up and opted in (ISO 8601;
    Mailchimp gives ``""`` for a time it does not know)."""

    timestamp_opt: str | None = None
    timestamp_signup: str | None = None


def since(sent: Sent) -> datetime | None:
    """The earliest time on Mailchimp's clock the lost send of ``sent`` can have created a member (see the module
    docstring); None when the answer carried no ``Date``."""
    if sent.date is None or sent.lost_at is None or sent.answered is None:
        return None
    return sent.date - timedelta(seconds=sent.answered - sent.lost_at + 1) - STAMP_SLACK


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
    earlier attempts lost its answer: ``sent``) that the lost attempt created, each read once."""
    bound = since(sent)
    mine: set[str] = set()
    unclear: list[str] = []
    for c in exists if bound is not None else ():
        subscriber = hashlib.md5(c.email.lower().encode()).hexdigest()
        try:
            member = dest._call(f"GET /lists/{dest.audience}/members/{subscriber}", dest._lists.get_list_member,
                                dest.audience, subscriber, fields=FIELDS, shape=MemberOpt)
        except DestinationError as exc:
            if exc.status != 404:  # (404: gone since, nobody's subscriber)
                unclear.append(c.email)
            continue
        ours = created_since(member, bound)
        if ours:
            mine.add(c.key)
        elif ours is None:
            unclear.append(c.email)
    if bound is None:
        unclear = [c.email for c in exists]
    if unclear:
        why = "its answer carried no Date" if bound is None else "the member could not be read or his times tell nothing"
        log.warning("mailchimp %s: %s was sent again after its answer was lost; %d of its subscribed creates answered "
                    "\"already a member\" (%s%s) could not be checked (%s): not recorded as created by rfmsync, so a "
                    "later withdrawal in the source will not be named for them", dest.name, what, len(unclear),
                    unclear[0], " and more" if len(unclear) > 1 else "", why)
    return mine


__all__ = ["MemberOpt", "created_since", "landed", "since"]
