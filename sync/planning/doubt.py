"""Operations whose outcome is unknown: in doubt until answered.

An add (``tag+<name>``) or an upsert the ESP may have carried out though rfmsync never learnt it (its answer lost,
unreadable or not believed, a timeout after the send) is a pending failure in the ledger (``failures``). The
contact may hold that tag or list: the planners (:func:`sync.planning.plan.plan_destination`, its columnar twin)
take it off him once he no longer gets it (he left the segment or the customer base, withdrew consent), as they
do the tags the ledger knows he holds, and add it again while he still gets it. A removal is idempotent on every
ESP (a tag or list he lacks, a contact it does not hold: done, never a create), so a doubted add that was in fact
refused costs one call. The removal's success settles the add's failure
(:func:`sync.ledger.failures.settled_pairs`); an upsert no plan makes any more (he may not be created: no
consent; he left) is forgotten when a plan of every contact is applied, once its guards passed
(:func:`forget_moot_upserts`: :attr:`sync.planning.planner.PlannedDestination.forget`): rfmsync never unsubscribes.
So are the doubts of a contact whose create the ESP keeps out (he is not there: nothing was added to him).
A pending upsert's create sent again may be answered "already there" because the lost send made him: the apply
hands the destination when that send may have gone (:func:`earlier_sends`), so that he is recorded as rfmsync's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from .kept_out import forget_or_say
from .plan import Plan


def in_doubt(pending: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    """The tags each contact may hold though the ledger does not say so: his pending failed adds (``tag+<name>``
    of :meth:`~sync.ledger.Ledger.doubted_ops`' ``(key, op)``), by key."""
    out: dict[str, set[str]] = {}
    for key, op in pending:
        if op.startswith("tag+"):
            out.setdefault(key, set()).add(op[4:])
    return {k: frozenset(v) for k, v in out.items()}


def moot_upserts(plan: Plan, pending: Iterable[tuple[str, str]],
                 kept: Mapping[str, frozenset[str]] | None = None) -> list[tuple[str, str]]:
    """``(key, "upsert")`` of the pending failed upserts ``plan`` (a plan of every contact, before
    :func:`~sync.planning.kept_out.without_kept_out`) makes no upsert for any more: he is not to be created (no
    consent, he left) nor has a field to write. Nothing would ever answer them; what they may have put on him is in
    the adds' own failures (taken off when no longer his). And every pending ``(key, op)`` of a contact the plan
    creates whose create the ESP keeps out (``kept``: :meth:`~sync.ledger.Ledger.kept_out_ops`; Mailchimp's
    compliance state): the ESP holds no such contact, so no add of his was carried out, and nothing of his
    change is sent to settle it."""
    pending = list(pending)
    keys = {key for key, op in pending if op == "upsert"}
    held = {key for key, _ in pending if "upsert" in (kept or {}).get(key, ())}  # his create kept out
    if not keys and not held:
        return []  # nothing to forget: the plan's changes are not read (a plan of 1 M creates, every sync)
    refused = {c.key for c in plan.changes if c.key in held and c.create} if held else set()
    upserting = {c.key for c in plan.changes if c.key in keys and (c.create or c.set_fields)} - refused
    return sorted({(k, "upsert") for k in keys - upserting} | {(k, op) for k, op in pending if k in refused})


def forget_moot_upserts(ledger: Any, destination: str, plan: Plan, pending: Iterable[tuple[str, str]]) -> None:
    """Delete the failures :func:`moot_upserts` names (see :func:`~sync.planning.kept_out.forget_or_say`), the
    kept-out operations of the pending ones' contacts read first (none pending: nothing read)."""
    pending = list(pending)
    kept = ledger.kept_out_ops(destination, {key for key, _ in pending}) if pending else {}
    forget_or_say(ledger.resolve_failures, destination, moot_upserts(plan, pending, kept),
                  "failed operation(s) no longer planned")


def unread_runs(ledger: Any, plan: Plan) -> list[int]:
    """The runs whose operations left in flight the ledger holds now that ``plan`` did not read as doubts
    (:attr:`~sync.planning.plan.Plan.in_flight_read`: a run killed after the plan was made, still running then, so
    its operations were no doubt yet), sorted: an apply holding the destination's lock plans again, so that they are
    settled now, not one sync later. A plan that does not know what it read (a saved plan's): none (one keyed read
    otherwise)."""
    if plan.in_flight_read is None:
        return []
    return sorted(ledger.in_flight_runs(plan.destination) - plan.in_flight_read)


#: a plan of at most this many changes (a webhook resync's) asks the ledger of its own subscribed creates only (one
#: read by key, none when it has none); a larger one asks once of the destination, its changes not walked before
BY_KEY = 500


def earlier_sends(ledger: Any, plan: Plan, client: Any) -> dict[str, datetime]:
    """The ``subscribed`` creates of ``plan`` an earlier run may have carried out though its answer was lost for
    good (a pending ``upsert`` failure: the retry gave up, an answer not read, a run killed with it in flight, made
    a failure by :meth:`~sync.ledger.Ledger.doubt_in_flight` just before), by key, with the host's time since which
    that send may have landed (:meth:`~sync.ledger.Ledger.upsert_sent_since`): handed to a ``client`` that checks
    them (:data:`~sync.destinations.base.Earlier`: Mailchimp answers such a create "already a member"), so that one
    the earlier send made is recorded as rfmsync's. None pending (a normal run): one keyed read, a large plan not
    walked; a client without the check, a plan with no subscribed create: nothing read."""
    if not getattr(client, "checks_earlier_creates", False) or not plan.changes:
        return {}
    mine = None
    if len(plan.changes) <= BY_KEY:
        mine = [c.key for c in plan.changes if c.create and c.status_if_new == "subscribed"]
        if not mine:
            return {}
    pending = ledger.upsert_sent_since(plan.destination, mine)
    if not pending:
        return {}
    return {c.key: pending[c.key] for c in plan.changes
            if c.create and c.status_if_new == "subscribed" and c.key in pending}


def doubt_left(ledger: Any, destination: str) -> None:
    """A re-plan under the destination's lock, before it reads the doubts: every operation another run left in
    flight is a dead run's (no other run of it is sending), whatever its owner looks like from here (another host's
    run, still ``running``, whose lock lapsed): turned into pending failures at once
    (:meth:`~sync.ledger.Ledger.doubt_in_flight`, as the apply does next), so that the re-plan reads them."""
    ledger.doubt_in_flight(destination, None, lambda keys: ledger.load_states(destination, keys))


__all__ = ["BY_KEY", "doubt_left", "earlier_sends", "forget_moot_upserts", "in_doubt", "moot_upserts", "unread_runs"]
