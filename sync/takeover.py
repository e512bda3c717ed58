"""A destination renamed (its ``name`` changed, its type and audience kept, and ``renamed_from = "OLD"`` set;
docs/sync.md#removed-destination): once the new name applied successfully, it takes over what the ledger holds
under the old one (:meth:`sync.ledger.Ledger.take_over`), so that its plans take the old rows' managed tags off the
contacts who left its segments, its left-behind warning names the others, and the old name's rows, which nothing
writes any more, are neither warned of nor read again.

Only the user can say a destination is a rename: one on the same audience may be another config sharing the ledger,
or one commented out for a while, and a SendGrid or Unisender target names no account (another account's contacts
would be believed pushed). So the successor of a destination the config no longer has is the configured one whose
``renamed_from`` names it, of the same recorded target when one is recorded (:func:`successor`); with none, nothing
is taken over and :func:`sync.planning.retired.removed_destinations` warns of its tags.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import TYPE_CHECKING, Callable, Iterable

from .destinations.overlap import audience_of
from .engine import destination_lock
from .errors import LockBusyError
from .ledger.locks import apply_lock
from .planning.retired import managed_beside, retired_what, retires_only
from .planning.target import TARGET_CURSOR, describe, known_target, target_of

if TYPE_CHECKING:
    from .config import Config, DestinationConfig
    from .engine import ApplyReport
    from .ledger import Ledger
    from .ledger.cursors import Cursors

log = logging.getLogger(__name__)

#: the destinations' locks a takeover or a forgetting holds (one ledger transaction: seconds at most)
LOCK_TTL = 600


def _under_locks(ledger: "Ledger", names: list[str], what: str, do: Callable[[tuple[str, str]], int]) -> int | None:
    """``do`` (given the first lock's ``(name, owner)``) under the sync locks of the destinations ``names``; None,
    with an info line, when one is busy (left for the next run)."""
    try:
        with ExitStack() as stack:
            held = [stack.enter_context(destination_lock(ledger, apply_lock(n), LOCK_TTL)) for n in names]
            return do((held[0].name, held[0].owner))
    except LockBusyError as exc:
        log.info("destination %r: %s waits for the next run (%s)", names[0], what, exc)
        return None


def successor(cfg: "Config", ledger: "Cursors", name: str) -> "DestinationConfig | None":
    """The destination of ``cfg`` that takes over destination ``name``, which the config no longer has: the one
    whose ``renamed_from`` is ``name``, pushing to ``name``'s recorded target if one is recorded (None: ``name`` is
    configured, or no destination says it was renamed from it)."""
    if any(d.name == name for d in cfg.destinations):
        return None
    target = known_target(ledger, name)
    same = [d for d in cfg.destinations if d.renamed_from == name and (target is None or target_of(d) == target)]
    return same[0] if len(same) == 1 else None


def take_over_removed(cfg: "Config", ledger: "Ledger", done: set[str]) -> None:
    """After applies: each destination ``done`` (applied successfully), to the target the ledger records for it,
    takes over what the ledger holds under each removed destination it succeeds (its rows, or only failures, lost
    tags or a recorded target once its contacts are all gone: the old name is never held for good), under both
    names' locks (one busy: left for the next run), with an info line."""
    if not done:
        return
    for name in ledger.held_destinations(TARGET_CURSOR):
        dest = successor(cfg, ledger, name)
        if dest is None or dest.name not in done or known_target(ledger, dest.name) != target_of(dest):
            continue
        taken = _under_locks(ledger, [dest.name, name], f"taking over the ledger of {name!r}",
                             lambda lock: ledger.take_over(name, dest.name, (TARGET_CURSOR, name), lock=lock))
        if taken is not None:
            log.info("destination %r takes over what rfmsync pushed to %s under the name %r, no longer in the "
                     "config (%d contacts): the ledger no longer holds that name", dest.name,
                     describe(target_of(dest)), name, taken)


def end_retired(cfg: "Config", ledger: "Ledger", done: set[str]) -> None:
    """After applies: a destination that only retires tags or fields (:func:`retires_only`), once an apply of it
    succeeded (``done``), no row of it holds a tag or a field value any more (retired or not) and no add of a tag
    is in doubt there (a killed run's, an answer lost: the contact may hold it though no row says so; forgotten,
    nothing would remember it: its plan names it, ``retire_tags`` takes it off), has nothing left to do: the ledger forgets it (its rows kept with no tag would be read by every plan's removed-destination check
    once it is removed from the config), with an info line. Both are judged under the destination's lock, from
    what the ledger holds then (in the forgetting's transaction, a query each: no load of its state): another sync of the destination (another
    host, a config mapping the field again) may have written since this one applied, and what it wrote is never
    forgotten. Tags and fields another destination of its audience manages now are that one's
    (:func:`~sync.planning.retired.managed_beside`): held, they do not keep it. Whom it created subscribed
    (``subscribed_by_us``: they still are, in the ESP) goes to another destination of its target (:func:`heir_of`),
    under both locks, so that its plans name them when they withdraw; with none, the record goes with it. Once forgotten, its later runs plan nothing (:func:`~sync.planning.retired.retiring`) and record
    nothing, not even its target (:func:`~sync.planning.retired.holds_nothing`): its revision counter no longer moves
    on run after run. A target such a run recorded before (an older rfmsync) is forgotten once."""
    held = set(ledger.state_destinations()) if done else set()
    for dest in cfg.destinations:
        if dest.name not in done or not retires_only(dest):
            continue
        if dest.name not in held and known_target(ledger, dest.name) is None:
            continue  # forgotten already: its plans push nowhere (no target recorded), nothing moves on
        # a tag or a value left (a clear that did not go, or not yet planned; one written since: the next sync's)
        # keeps it, but in a tag or field another destination of its audience manages now: that one's
        kept = managed_beside(cfg.destinations, dest)
        heir = heir_of(cfg, ledger, dest)
        deleted = _under_locks(ledger, [dest.name, *([heir] if heir else [])], "forgetting its ledger",
                               lambda lock, dest=dest, kept=kept, heir=heir: ledger.forget_destination(
                                   dest.name, (TARGET_CURSOR, dest.name), lock=lock, unvalued=True,
                                   undoubted=True, kept=kept, heir=heir))
        if deleted is not None and deleted > 0:
            log.info("destination %r only retires %s and every one is off the contacts rfmsync put it on (but for tags "
                     "and fields another destination of its audience manages now): the ledger forgets its %d "
                     "contacts (remove it from the config)%s", dest.name, retired_what(dest), deleted,
                     f"; destination {heir!r} keeps its record of whom rfmsync created subscribed" if heir else "")


def heir_of(cfg: "Config", ledger: "Ledger", dest: "DestinationConfig") -> str | None:
    """The destination that takes over whom the retire-only ``dest`` created subscribed when it is forgotten
    (:func:`end_retired`): the first configured one, not retire-only, of its audience
    (:func:`~sync.destinations.overlap.audience_of`) pushing to the target the ledger records for ``dest``. None:
    no such destination, or ``dest`` recorded nobody."""
    target = known_target(ledger, dest.name)
    if target is None or not ledger.has_subscribed(dest.name, exact=True):
        return None
    return next((d.name for d in cfg.destinations if d.name != dest.name and not retires_only(d)
                 and audience_of(d) == audience_of(dest) and target_of(d) == target), None)


def after_applies(cfg: "Config", ledger: "Ledger", reports: Iterable["ApplyReport"]) -> None:
    """What the ledger settles once ``reports`` are in: :func:`take_over_removed`, then :func:`end_retired`, for the
    destinations that applied successfully."""
    done = {r.destination for r in reports if r.status == "succeeded"}
    take_over_removed(cfg, ledger, done)
    end_retired(cfg, ledger, done)


__all__ = ["after_applies", "end_retired", "heir_of", "retires_only", "successor", "take_over_removed"]
