"""The consent withdrawals of a plan, alone: what goes out when a plan guard other than the withdrawal rules holds
the plan (docs/safety.md, "Consent withdrawals"; :func:`sync.refusals.refuse_after_withdrawals`).

A person who withdrew his consent must stop getting segment campaigns even on a day the rest of the plan waits for
a person (a mass removal, a segment reshuffle): his managed tags and lists come off, and nothing else of the plan
is written: not his field values, not a tag added, no contact created, no other contact's change, no new owner.
The ledger then records exactly those removals; the rest stays pending (the next plan has it again). Their run
carries :data:`ALONE` in its counts (:func:`alone_run`): it is no full sync (not the ``max_customer_drop_pct``
baseline, not the scheduler's catch-up), and ``rfmsync runs`` says so.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Collection, Mapping

from ..model import ContactChange
from .plan import Plan


#: the counts key of a run that applied a held plan's withdrawals alone (the withdrawn contacts sent); the run is
#: recorded with no input counts (``customers``: it is not the baseline of ``max_customer_drop_pct``)
ALONE = "withdrawals_alone"


def alone_run(run: Mapping[str, Any]) -> bool:
    """Whether ``run`` (a row of ``Ledger.recent_runs``) applied a held plan's withdrawals alone."""
    return ALONE in (run.get("counts") or {})


def withdrawals_alone(plan: Plan) -> Plan:
    """``plan`` cut down to the managed tags/lists it takes off the contacts it lists as withdrawn
    (``plan.withdrawn``: for a saved plan, the keys :func:`sync.guards.believed_withdrawals`): one change per
    withdrawn contact that exists in the ESP, its ``remove_tags`` of the managed tags alone. A contact whose
    customer changes keeps the customer the ledger names (his new owner is the held plan's). Its ``managed_tags``
    are the tags/lists it takes off and it has no ``fields``: the ESP's ``prepare`` creates nothing of the held
    plan (a new field or tag waits with it); whoever counts managed contacts by the plan's tags uses the held
    plan's. A move to another audience (``plan.moves_from``) sends none alone: its apply forgets the old audience's
    state, which only the whole plan may do."""
    keys = frozenset(plan.withdrawn) if plan.moves_from is None else frozenset()
    changes = removals_only(plan, keys, frozenset(plan.managed_tags))
    removed = frozenset().union(*(c.remove_tags for c in changes))
    return replace(plan, changes=changes, skipped=(), owners=(), notes=(), warnings=(),
                   withdrawn=tuple(c.key for c in changes), guard=None,
                   managed_tags=tuple(t for t in plan.managed_tags if t in removed), fields={})


def removals_only(plan: Plan, keys: Collection[str], tags: frozenset[str]) -> tuple[ContactChange, ...]:
    """The changes of ``plan`` for ``keys`` cut down to their removals of ``tags``: one per contact that exists in
    the ESP and loses one of them, nothing added, no field, under the customer the ledger names (a new owner is
    the whole plan's)."""
    was = {o.key: o.was for o in plan.owners}
    return tuple(ContactChange(key=c.key, email=c.email, customer_id=was.get(c.key) or c.customer_id,
                               segment=c.segment, create=False, status_if_new=c.status_if_new,
                               remove_tags=c.remove_tags & tags)
                 for c in plan.changes if c.key in keys and not c.create and c.remove_tags & tags)


def alone_note(plan: Plan) -> str | None:
    """The note of a plan whose own guards hold it but not its withdrawals (``plan``, ``sync --dry-run``); None
    when none would go out alone."""
    n = len(withdrawals_alone(plan).changes)
    return None if not n else (f"{n} consent withdrawal{'s' if n != 1 else ''} would go out alone (only {'their' if n != 1 else 'his'} "
            f"managed tags/lists taken off) while the guards hold the rest of this plan, unless a data or scoring "
            f"guard, or a withdrawal rule of another destination, holds the whole run")


__all__ = ["ALONE", "alone_note", "alone_run", "removals_only", "withdrawals_alone"]
