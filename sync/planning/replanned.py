"""What a full sync's re-plan leaves out: the contacts another run wrote after the first plan was made.

A sync plans every destination from the segments it read, then applies them one by one, each under its lock; a
destination whose ledger moved while the sync waited is planned again (:func:`sync.engine.execute_plan`) from the
same segments. Whoever wrote it meanwhile (a webhook resync of a new order or a withdrawn consent, another sync)
wrote after this run planned, but may have read the store before or after this run did: its rows of those
contacts may be newer than this run's (planned from this run's, a customer's new order is undone, a consent
withdrawn by a webhook gets the managed tags put back) or older (it read the store first). Which, the ledger does
not say: the contacts it wrote are left out and keep what it wrote, also when that is the older state, until the
next sync plans them from data read after both. A ledger restored from an older backup meanwhile numbers the saves
after the restore again from the backup's revision, at or below the first plan's: those saved since the first plan
read the ledger are left out too (:meth:`sync.ledger.state.PushedStates.written_since`: by the time each save stamps,
its own host's clock, against this host's, less ``CLOCK_SKEW``).

Only removals still go out for them, those no run's data would undo:

- consent first: a contact this run's data says withdrew (``Plan.withdrawn``) has his managed tags taken off (and
  nothing else: the cut of :func:`~sync.planning.withdrawals.withdrawals_alone`): whichever run's data is the
  newer, a removal sends no campaign to anyone who did not consent;
- a retired tag (``retire_tags``), which a webhook resync never takes off (:mod:`sync.serve.resync_scope`): the
  config gives it to nobody, so its removal is the same from either run's data.

Predictive fields are not sent for them: a webhook resync never writes them, but another sync does, from a model
fitted on data newer or older than this run's; they wait for the next full sync (docs/safety.md). Retired fields
(``retire_fields``) are cleared for them as for every contact (:func:`~.retired_fields.clear_retired`, after
this cut).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import replace

from .plan import Plan
from .withdrawals import removals_only, withdrawals_alone

log = logging.getLogger("sync.planning.planner")


def leave_written(plan: Plan, written: Collection[str], since: int, retired: Collection[str] = ()) -> Plan:
    """``plan`` without the changes and new owners of the contacts in ``written`` (keys whose ledger rows another
    run wrote after revision ``since``, the first plan's), but their removals of managed tags that are consent
    withdrawals, and their removals of the ``retired`` tags (``retire_tags``); said in a note and at INFO. A move
    to another audience (``plan.moves_from``) forgets the old one's rows as a whole: nothing is left out of it."""
    left = {c.key for c in plan.changes} & set(written)
    left |= {o.key for o in plan.owners if o.key in written}
    return leave_out(plan, left, retired, lambda withdrawn, retiring: _note(len(left), withdrawn, retiring, since))


def leave_out(plan: Plan, left: Collection[str], retired: Collection[str],
              note: Callable[[int, int], str]) -> Plan:
    """``plan`` without the changes and new owners of the contacts ``left`` (keys) but their consent withdrawals
    and their removals of the ``retired`` tags, the cut of :func:`leave_written`; ``note(withdrawn, retiring)``
    says it (in the plan's notes and at INFO). Nothing is left out of a move to another audience."""
    if not left or plan.moves_from is not None:
        return plan
    withdrawn = withdrawals_alone(replace(plan, withdrawn=tuple(k for k in plan.withdrawn if k in left))).changes
    out = {c.key: c for c in withdrawn}
    retiring = {c.key: c for c in removals_only(plan, set(left) - set(out), frozenset(retired))}
    out.update(retiring)
    changes = tuple(out.get(c.key, c) for c in plan.changes if c.key not in left or c.key in out)
    kept = {c.key for c in changes}
    said = note(len(withdrawn), len(retiring))
    log.info("sync %s: %s", plan.destination, said)
    return replace(plan, changes=changes, owners=tuple(o for o in plan.owners if o.key not in left),
                   withdrawn=tuple(k for k in plan.withdrawn if k in kept), notes=(*plan.notes, said))


def _note(left: int, withdrawn: int, retiring: int, since: int) -> str:
    """The note of :func:`leave_written`: ``left`` contacts another run wrote, ``withdrawn`` of them with their
    consent withdrawal and ``retiring`` with their retired tags' removal still sent."""
    them, n = ("them", "s") if left != 1 else ("it", "")
    note = (f"{left} contact{n} left out of the re-plan: another run wrote {them} since this run planned (ledger "
            f"revision {since}), from data read before or after this run's (which is newer is not known here); "
            f"kept as that run wrote {them} until the next sync plans {them} again")
    return with_removals(note, left, withdrawn, retiring)


def with_removals(note: str, left: int, withdrawn: int, retiring: int) -> str:
    """``note`` (of ``left`` contacts left out) and the removals still sent for ``withdrawn`` and ``retiring`` of
    them (:func:`leave_out`)."""
    them = "them" if left != 1 else "it"
    removals = [f"{k} {what}{'s' if k != 1 else ''} ({off})" for k, what, off in (
        (withdrawn, "consent withdrawal", "managed tags/lists off"), (retiring, "retired tag removal", "retire_tags"))
        if k]
    if not removals:
        return note
    whom = them if withdrawn + retiring == left else f"{withdrawn + retiring} of them"
    return f"{note}; only removals still go out for {whom}: {' and '.join(removals)}"


__all__ = ["leave_out", "leave_written", "with_removals"]
