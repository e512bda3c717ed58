"""Apply: execute one destination's plan under its ledger lock, recording each call's outcome as it completes.

Every item's outcome is folded into the ledger as its API call completes, so a failed item stays pending (the
next run plans it again) and a process killed mid-run resumes without repeating completed calls. A second run
with no data change plans nothing and makes zero write calls.

Planning is :mod:`sync.planning`, the ESP clients :mod:`sync.destinations`; the full sync that strings
pull → segment → plan → apply together is :func:`sync.api.run_sync`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from .destinations.base import Destination
from .errors import LockBusyError
from .ledger import Ledger, Locks, owner_process_gone
from .model import ItemResult
from .planning.plan import Plan, apply_results_to_state

log = logging.getLogger(__name__)

@contextmanager
def destination_lock(ledger: Locks, name: str, ttl_seconds: float = 3600) -> Iterator[str]:
    """A ledger lock (a destination's, the scheduler's) that a killed process on this host cannot block: its
    lock is taken over."""
    try:
        owner = ledger.acquire_lock(name, ttl_seconds=ttl_seconds)
    except LockBusyError as exc:
        holder = getattr(exc, "holder", "")
        if not holder or not owner_process_gone(holder):
            raise
        log.warning("taking over lock %s from %s (process no longer exists)", name, holder)
        ledger.release_lock(name, holder)
        owner = ledger.acquire_lock(name, ttl_seconds=ttl_seconds)
    try:
        yield owner
    finally:
        ledger.release_lock(name, owner)


#: plans of at most this many contacts read their ledger rows by key when applied, larger ones all at once
KEYED_READ_LIMIT = 20_000


@dataclass
class ApplyReport:
    destination: str
    run_id: int
    status: str
    counts: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def execute_plan(plan: Plan, client: Destination, ledger: Ledger, *, kind: str = "sync",
                 replan: Callable[[], Plan] | None = None, data: Mapping[str, Any] | None = None) -> ApplyReport:
    """Apply one destination's plan under its ledger lock, recording each call's outcome as it completes.

    With ``replan``: once the lock is held, a ledger revision that moved since the plan was made (another run
    wrote this destination meanwhile) makes the plan stale; ``replan()`` gives the plan against the ledger as it
    is now (or raises), so an operation is never sent twice and older state is never pushed back.
    ``data``: counts of the input (orders, bad rows, customers) recorded with the run."""
    with destination_lock(ledger, f"sync:{plan.destination}"):
        if replan is not None:
            now = ledger.state_revision(plan.destination)
            if now != plan.ledger_revision:
                log.info("sync %s: the ledger moved while waiting (revision %d → %d): planning again",
                         plan.destination, plan.ledger_revision, now)
                plan = replan()
        run_id = ledger.start_run(kind, plan.destination)
        counts = {**(data or {}), "planned": len(plan.changes), "skipped": len(plan.skipped), "ok": 0, "failed": 0}
        errors: list[str] = []
        if plan.is_empty:
            ledger.finish_run(run_id, "succeeded", counts)
            return ApplyReport(plan.destination, run_id, "succeeded", counts)
        by_key = {c.key: c for c in plan.changes}
        # only the plan's contacts are updated: a small plan (a webhook resync) reads just their rows
        state = (ledger.load_state_of(plan.destination, by_key) if len(by_key) <= KEYED_READ_LIMIT
                 else ledger.load_state(plan.destination))

        def on_results(results: Sequence[ItemResult]) -> None:
            results = list(results)
            touched = apply_results_to_state(state, by_key, results)
            if touched:
                ledger.save_states(plan.destination, run_id, [state[k] for k in touched])
            ledger.record_results(plan.destination, run_id, results)
            for r in results:
                counts["ok" if r.ok else "failed"] += 1
                if not r.ok and len(errors) < 20:
                    errors.append(f"{r.key} {r.op}: {r.error}")

        try:
            client.prepare(plan.managed_tags, plan.fields)
            client.apply(plan.changes, on_results)
        except Exception as exc:
            ledger.finish_run(run_id, "failed", counts, error=str(exc))
            raise
        status = "succeeded" if counts["failed"] == 0 else "partial"
        ledger.finish_run(run_id, status, counts, error="; ".join(errors[:5]) or None)
        log.info("sync %s: %d changes, %d ok, %d failed, %d skipped", plan.destination, len(plan.changes),
                 counts["ok"], counts["failed"], counts["skipped"])
        return ApplyReport(plan.destination, run_id, status, counts, errors)
