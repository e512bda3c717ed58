"""Where a destination's ledger state was pushed: its type and (Mailchimp) audience, kept in the ledger.

The pushed state (:mod:`sync.ledger.state`) is keyed by the destination's name. A config edited to point that name
at another audience (``audience = "aud2"``) or another type would be planned from what rfmsync pushed to the old
one: every contact believed in the new audience already, nobody pushed, exit 0. So the ledger remembers the
destination's target (a cursor, as the schedule's identity is kept), and a plan against another target is a
configuration error naming the key, unless ``--full-refresh`` moves the destination there: planned against nothing
known (as a new destination is: it reads who the ESP holds and pushes every tag and field), and applied after one
ledger transaction that records the new target and forgets what the ledger held of the old one
(:func:`move_if_planned`). A move stopped half-way leaves only what it pushed to the new target, which the next
plain sync finishes; going back is another move.

A saved plan (``plan -o``, ``apply``) names its target (``pushed_to``) and is applied only there, and only while
the contacts it creates get a status the destination's ``new_contacts`` gives now (:func:`check_saved`).
"""

from __future__ import annotations

import shlex
from collections import Counter
from typing import TYPE_CHECKING

from ..errors import ConfigError, PlanStaleError

if TYPE_CHECKING:
    from ..config import DestinationConfig
    from ..ledger import Ledger
    from ..ledger.cursors import Cursors
    from .plan import Plan

#: the ledger cursor (source, destination name) holding a destination's target
TARGET_CURSOR = "destination target"


def target_of(dest: "DestinationConfig") -> str:
    """``mailchimp:aud1`` for a destination that needs an audience, else its type (``sendgrid``: the API key,
    which rfmsync never stores, is the account)."""
    return f"{dest.type}:{dest.audience}" if dest.spec.needs_audience else dest.type


def known_target(ledger: "Cursors", name: str) -> str | None:
    """The target the ledger's pushed state of destination ``name`` describes (None: none recorded yet)."""
    return ledger.get_cursor(TARGET_CURSOR, name)


def record_target(ledger: "Cursors", name: str, target: str | None) -> None:
    """Record ``target`` as the one the pushed state of ``name`` describes (nothing for None or no change)."""
    if target is not None and known_target(ledger, name) != target:
        ledger.set_cursor(TARGET_CURSOR, name, target)


def moved_note(dest: "DestinationConfig", then: str) -> str:
    """The note of a full refresh that moves ``dest`` from the target ``then`` to the config's."""
    return (f"moves the destination from {describe(then)} to {describe(target_of(dest))}: planned as for a new "
            f"destination; applied, the ledger forgets what rfmsync pushed to {describe(then)}, whose contacts keep "
            f"rfmsync's tags (retire_tags can no longer take them off)")


def move_if_planned(ledger: "Ledger", name: str, target: str | None, lock: tuple[str, str], *,
                    moves_from: str | None = None, moves_unknown: bool = False) -> None:
    """Before an apply of ``name``'s plan for ``target`` (its ``pushed_to``; ``moves_from``: its ``moves_from``):
    record the target when the ledger has none yet (a first apply, or a ledger older than targets); when it has
    another, only a full refresh's plan made while the ledger's target was that one (``moves_from``: planned
    against nothing known) moves the destination: the ledger forgets the old target's state as it records the new
    one, in one transaction. Any other plan (a plain plan made before another run recorded another target, which
    does not move the revision) is stale: a :class:`~sync.errors.PlanStaleError`, and nothing is forgotten; so is a
    plan saved by an rfmsync older than ``moves_from`` (``moves_unknown``: whether it moves is not known), said so."""
    then = known_target(ledger, name)
    if target is None or then == target:
        return
    if then is None:
        record_target(ledger, name, target)
    elif moves_from == then:
        ledger.move_state(name, (TARGET_CURSOR, name), target, lock=lock)
    elif moves_unknown:
        raise PlanStaleError(f"this plan for destination {name!r} was made by an older rfmsync, which did not record "
                             f"whether it moves the destination from {describe(then)} (what its ledger holds) to "
                             f"{describe(target)}: applied, the ledger could mix what rfmsync pushed to both; "
                             f"make a new plan ('rfmsync plan --destination {shlex.quote(name)} --full-refresh -o "
                             f"FILE' to move it)")
    else:
        raise PlanStaleError(f"the ledger of destination {name!r} now holds what rfmsync pushed to {describe(then)} "
                             f"(another run recorded it since this plan for {describe(target)} was made): applied, "
                             f"the plan would forget that state and push only its own changes; make a new plan")


def check_target(ledger: "Cursors", dest: "DestinationConfig", *, full_refresh: bool = False) -> str:
    """``dest``'s target; a :class:`ConfigError` when the ledger's pushed state is of another one and the plan is
    not a full refresh (which moves the destination to the new target)."""
    return planned_target(ledger, dest, full_refresh=full_refresh)[0]


def planned_target(ledger: "Cursors", dest: "DestinationConfig", *, full_refresh: bool = False
                   ) -> tuple[str, str | None]:
    """:func:`check_target`'s target, and the one a full refresh moves ``dest`` from (the ledger's, when the
    config's is another; None when it is not moved: the same target, or none recorded yet), the ledger's cursor
    read once."""
    now, then = target_of(dest), known_target(ledger, dest.name)
    if then is None or then == now:
        return now, None
    if full_refresh:
        return now, then
    raise ConfigError(moved_message(dest, then))


def check_saved(ledger: "Cursors", dest: "DestinationConfig", plan: "Plan") -> None:
    """A saved plan is applied only to the target it was made for (its ``pushed_to``; None in a file written
    before it, then the ledger's target must be the config's), and creates contacts only with a status the
    destination's ``new_contacts`` gives now (a plan made under ``pending`` applied after a switch to ``skip``
    would invite contacts who never agreed); else a :class:`ConfigError`."""
    from .consent import status_for_new

    now = target_of(dest)
    if plan.pushed_to is None:
        check_target(ledger, dest)
    elif plan.pushed_to != now:
        raise ConfigError(f"destination {dest.name!r}: this plan was made for {describe(plan.pushed_to)}, but the "
                          f"config now points the destination at {describe(now)} ({_key(plan.pushed_to, now)} "
                          f"changed): applied there, its changes (made from what rfmsync pushed to the first) would "
                          f"be wrong; make a new plan")
    given = {status_for_new(consent, dest.new_contacts or "skip") for consent in ("yes", "no", "unknown")}
    refused = Counter(c.status_if_new for c in plan.changes if c.create and c.status_if_new not in given)
    if refused:
        counts = " and ".join(f"{n} as {status}" for status, n in sorted(refused.items()))
        raise ConfigError(f"destination {dest.name!r}: this plan creates contacts ({counts}) with a status "
                          f"new_contacts = \"{dest.new_contacts}\" in the config now gives no one (it changed since "
                          f"the plan was made): make a new plan")


def moved_message(dest: "DestinationConfig", then: str) -> str:
    """The refusal of a plan against another target than the ledger's (``then``)."""
    now = target_of(dest)
    return (f"destination {dest.name!r}: {_setting(now, then)} in the config now, but its ledger holds what rfmsync "
            f"pushed to {describe(then)}; planned from it, every contact would be taken for one {describe(now)} holds "
            f"already and nobody would be pushed there. To move the destination there, run 'rfmsync sync "
            f"--destination {shlex.quote(dest.name)} --full-refresh' once (it reads which contacts {describe(now)} "
            f"holds and pushes every tag and field; the ledger forgets what rfmsync pushed to {describe(then)}, whose "
            f"contacts keep rfmsync's tags: to have them taken off, set {_setting(then, now)} again, retire them "
            f"(retire_tags) and sync first); to keep syncing {describe(then)}, set {_setting(then, now)} again. "
            f"The other destinations wait until then (or sync them with --destination)")


def describe(target: str) -> str:
    """``mailchimp:aud1`` → ``mailchimp audience "aud1"``; ``sendgrid`` → ``sendgrid``."""
    kind, _, audience = target.partition(":")
    return f'{kind} audience "{audience}"' if audience else kind


def _key(then: str, now: str) -> str:
    """The config key that differs between two targets."""
    return "audience" if then.partition(":")[0] == now.partition(":")[0] else "type"


def _setting(target: str, other: str) -> str:
    """The config line(s) of ``target`` that differ from ``other``: ``audience = "aud1"``."""
    kind, _, audience = target.partition(":")
    if _key(target, other) == "audience":
        return f'audience = "{audience}"'
    return f'type = "{kind}"' + (f' (audience = "{audience}")' if audience else "")


__all__ = ["TARGET_CURSOR", "check_saved", "check_target", "describe", "known_target", "move_if_planned",
           "moved_message", "moved_note", "planned_target", "record_target", "target_of"]
