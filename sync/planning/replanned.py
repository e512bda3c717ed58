"""What a full sync's re-plan leaves out: the contacts another run wrote after the first plan was made.

A sync plans every destination from the segments it read, then applies them one by one, each under its lock; a
destination whose ledger moved while the sync waited is planned again (:func:`sync.engine.execute_plan`) from the
same segments. Whoever wrote it meanwhile (a webhook resync of a new order or a withdrawn consent, another sync)
wrote after this run planned: it read the store after this run did, and this run's rows of its contacts are the
older ones (planned from them, a customer's new order is undone, a consent withdrawn by a webhook gets the managed
tags put back), or before, and then what it read is in this run's rows too. Either way its contacts are current
enough: they are left out, and the next sync plans them from data read after both.

Consent first: a contact this run's data says withdrew (``Plan.withdrawn``) still has his managed tags taken
off (and nothing else: the cut of :func:`~sync.planning.withdrawals.withdrawals_alone`): whichever run's data is
the newer, a removal sends no campaign to anyone who did not consent.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import replace

from .plan import Plan
from .withdrawals import withdrawals_alone

log = logging.getLogger("sync.planning.planner")


def leave_written(plan: Plan, written: Collection[str], since: int) -> Plan:
    """``plan`` without the changes and new owners of the contacts in ``written`` (keys whose ledger rows another
    run wrote after revision ``since``, the first plan's), but their consent withdrawals' removals of managed
    tags; said in a note and at INFO. A move to another audience (``plan.moves_from``) forgets the old one's rows
    as a whole: nothing is left out of it."""
    left = {c.key for c in plan.changes} & set(written)
    left |= {o.key for o in plan.owners if o.key in written}
    if not left or plan.moves_from is not None:
        return plan
    withdrawn = withdrawals_alone(replace(plan, withdrawn=tuple(k for k in plan.withdrawn if k in left))).changes
    out = {c.key: c for c in withdrawn}
    changes = tuple(out.get(c.key, c) for c in plan.changes if c.key not in left or c.key in out)
    kept = {c.key for c in changes}
    n = len(left) - len(out)
    them = "them" if n != 1 else "it"
    note = (f"{n} contact{'s' if n != 1 else ''} left out of the re-plan: another run wrote {them} since this "
            f"run planned (ledger revision {since}): left as it wrote {them}, not undone by this run's older rows "
            f"(the next sync plans {them} again)"
            + (f"; {len(out)} consent withdrawal{'s' if len(out) != 1 else ''} among them still taken off"
               if out else ""))
    log.info("sync %s: %s", plan.destination, note)
    return replace(plan, changes=changes, owners=tuple(o for o in plan.owners if o.key not in left),
                   withdrawn=tuple(k for k in plan.withdrawn if k in kept), notes=(*plan.notes, note))


__all__ = ["leave_written"]
