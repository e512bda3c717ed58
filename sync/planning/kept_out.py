"""A plan without the operations the contacts' own choice in the ESP keeps out (:mod:`sync.ledger.kept_out`).

An add (``tag+<name>``) a contact is kept out of is left out of his change (he unsubscribed from that list, his
address is blocked): it is not read again nor sent every night, and a later ``yes`` in the source does not bring it
back (rfmsync never resubscribes). A create (``upsert`` of a new contact) kept out (Mailchimp's compliance state:
the address unsubscribed or bounced before it left the audience) leaves his whole change out: nothing of it may
reach the ESP. The rest of a change (field updates, removals, other adds) goes on. A full refresh keeps them all:
the ESP is asked again. An operation the plan no longer wants (he left the segment) is forgotten
(:func:`unwanted_kept_out`): if he comes back, he is read once again.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, Mapping

from ..errors import LedgerError
from .plan import Plan

log = logging.getLogger(__name__)


def without_kept_out(plan: Plan, kept: Mapping[str, frozenset[str]]) -> Plan:
    """``plan`` without the operations ``kept`` (contact key → ops kept out) names; the plan itself when none of
    its changes has one (the usual case: one look-up a kept-out contact, none a change)."""
    if not kept or not plan.changes:
        return plan
    index = {c.key: i for i, c in enumerate(plan.changes)} if len(kept) * 4 < len(plan.changes) else None
    hits = [i for i in (index.get(k) for k in kept) if i is not None] if index is not None else \
        [i for i, c in enumerate(plan.changes) if c.key in kept]
    if not hits:
        return plan
    changes = list(plan.changes)
    dropped: set[int] = set()
    for i in hits:
        c = changes[i]
        ops = kept[c.key]
        if c.create and "upsert" in ops:
            dropped.add(i)
            continue
        adds = frozenset(t for t in c.add_tags if f"tag+{t}" not in ops)
        if adds == c.add_tags:
            continue
        c = changes[i] = replace(c, add_tags=adds)
        if not (c.create or c.set_fields or c.add_tags or c.remove_tags):
            dropped.add(i)
    return replace(plan, changes=tuple(c for i, c in enumerate(changes) if i not in dropped))


def unwanted_kept_out(plan: Plan, kept: Mapping[str, frozenset[str]]) -> list[tuple[str, str]]:
    """``(key, op)`` of the operations ``kept`` names that ``plan`` (a plan of every contact, before
    :func:`without_kept_out`) no longer wants: he left the segment, the tag is no longer desired, he is no longer
    to be created. Their rows go (:meth:`~sync.ledger.kept_out.KeptOutLog.forget_kept_out`), so if he comes back
    to it his add is planned and he is read once again (he may have subscribed again himself meanwhile)."""
    if not kept:
        return []
    by_key = {c.key: c for c in plan.changes if c.key in kept} if plan.changes else {}
    out = []
    for key, ops in kept.items():
        c = by_key.get(key)
        for op in ops:
            if c is None or not ((op == "upsert" and c.create) or (op.startswith("tag+") and op[4:] in c.add_tags)):
                out.append((key, op))
    return out


def forget_unwanted(ledger: Any, destination: str, plan: Plan, kept: Mapping[str, frozenset[str]]) -> None:
    """Delete the ``kept_out`` rows :func:`unwanted_kept_out` names (see :func:`forget_or_say`)."""
    forget_or_say(ledger.forget_kept_out, destination, unwanted_kept_out(plan, kept),
                  "kept-out operation(s) no longer wanted")


def forget_or_say(forget: Callable[[str, list[tuple[str, str]]], Any], destination: str,
                  rows: list[tuple[str, str]], what: str) -> None:
    """``forget(destination, rows)`` (none: no write) when a sync plans; a ledger this process only reads (a dry run
    on a standby, ``mode=ro``) keeps them: said, and the next sync forgets them."""
    if rows:
        try:
            forget(destination, rows)
        except LedgerError as exc:
            log.warning("ledger: %s: %d %s not forgotten (%s): the next sync forgets them", destination, len(rows),
                        what, exc)


__all__ = ["forget_or_say", "forget_unwanted", "unwanted_kept_out", "without_kept_out"]
