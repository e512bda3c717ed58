"""A full sync's plan under each destination's lock: the customers merged into the order store since the sync read
it are left out.

The sync reads the store once (its generation then: :mod:`sync.store.generation`) and applies its destinations
one by one, each under its lock. A merge after that read moved some customers on: a webhook resync pushes its
customers from its own later read, under the same lock, before or after the sync's apply (when it planned nothing,
the ledger already holding their new state, no ledger revision moved, and the sync's older plan of them, pushed
last, was what the ESP kept: a refunded order's segment put back); an API pull's (or another sync's) customers
wait for the next sync. So under the lock the store's generation is read again; when it moved, the customers the
merges noted since (:func:`sync.store.resynced.moved_since`; an empty merge moves nobody) have nothing pushed by
this sync but the removals no run's data would undo (consent withdrawals, retired tags: the rule of a re-plan's
contacts another run wrote, :mod:`sync.planning.replanned`). Re-planning the destination from a fresh read instead
would segment the whole store again under the lock for a handful of customers (the full plan's seconds at 1 M
contacts, each time a webhook lands during a long sync). Big writes note whom they moved too (a merge of more than
50 000 rows, a file export's full refresh, a file swapped: :mod:`sync.store.resynced`). A write of the store since
that noted nobody (one that moved more than a million customers, a note dropped as too old) does not say whom it moved: the destination's consent
withdrawals go out alone and the rest is held (:class:`StoreMovedUnknown`, exit 5: a ``refused`` run recorded,
retried by serve's scheduler); the next sync plans it from a read after that write.

The check is one open of the store and a read of its generation per destination (the notes only when it moved).
The sync registers its read in the store (:mod:`sync.store.reads`: a full refresh pays for noting whom it moved
only while a read is outstanding), renews it at each check and takes it back when its applies are done
(:meth:`StoreRead.release`); a crashed sync's read lapses after :data:`sync.store.reads.LEASE`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Collection

import duckdb

from .config import Config
from .errors import PlanStaleError
from .ledger import Ledger
from .pipeline import store_path
from .planning.doubt import unread_runs
from .planning.plan import Plan
from .planning.replanned import leave_out, with_removals
from .store import STORE_LOCK, connect_store
from .store.generation import generation
from .store.reads import release_read, renew_read, take_read
from .store.resynced import moved_since

log = logging.getLogger("sync.run")
#: how long taking a sync's read back waits for a busy store (then it lapses: :data:`sync.store.reads.LEASE`)
RELEASE_WAIT = 5.0


class StoreMovedUnknown(PlanStaleError):
    """A write of the order store since the sync read it noted nobody: whom it moved is not known, the plan is held
    but its consent withdrawals (:func:`sync.run.full_sync` sends them alone and records a ``refused`` run). Serve's
    scheduler runs the sync again (``transient``): a read after that write plans it."""

    transient = True


@dataclass
class StoreRead:
    """The order store as a full sync read it (``generation``); ``moved``: the customers merged into it since, as
    the last check under a destination's lock found them."""

    cfg: Config
    generation: int
    moved: set[str] = field(default_factory=set)
    #: the read as registered in the store (:func:`sync.store.reads.take_read`)
    read_id: str | None = None

    @classmethod
    def taken(cls, cfg: Config, con: duckdb.DuckDBPyConnection) -> "StoreRead":
        """The sync's read of the store ``con`` it still holds (under :data:`STORE_LOCK`): its generation, and the
        read registered, so that a full refresh after it notes whom it moved (:mod:`sync.store.reads`)."""
        return cls(cfg, generation(con), read_id=take_read(con))

    def fresh(self) -> bool:
        """Whether no write moved the store since the sync read it (called under a destination's lock); the read
        is renewed."""
        with STORE_LOCK:
            con = connect_store(store_path(self.cfg))
            try:
                if self.read_id is not None:
                    renew_read(con, self.read_id)
                now, moved = moved_since(con, self.generation)
            finally:
                con.close()
        if moved is None:
            raise StoreMovedUnknown(
                f"the order store was written by another run since this sync read it (generation {self.generation} "
                f"→ {now}: a write too large to note whom it moved, or whose note is gone): its plan may "
                f"push older data over that run's; held (the next sync plans it from a later read)")
        self.moved = moved
        return now == self.generation

    def release(self) -> None:
        """The sync is done with the store as it read it: its read is taken back (a full refresh after it compares
        nothing). A store busy beyond :data:`RELEASE_WAIT` seconds, or failing, is logged: the read lapses."""
        if self.read_id is None:
            return
        try:
            if not STORE_LOCK.acquire(timeout=RELEASE_WAIT):  # another thread of serve holds the store
                raise TimeoutError(f"the store was busy in this process for {RELEASE_WAIT} s")
            try:
                con = connect_store(store_path(self.cfg), wait_seconds=RELEASE_WAIT)
                try:
                    release_read(con, self.read_id)
                finally:
                    con.close()
            finally:
                STORE_LOCK.release()
        except Exception as exc:  # the sync's outcome stands; the read lapses by itself
            log.warning("the order store read of this sync was not taken back (%s): full refreshes compare whom "
                        "they moved until it lapses", exc)
        self.read_id = None

    def replan(self, plan: Plan, ledger: Ledger, replan: Callable[[], Plan] | None,
               retired: Collection[str] = (), forget: Callable[[], None] | None = None,
               later: list[Callable[[], None]] | None = None) -> Callable[[], Plan]:
        """The re-plan :func:`sync.engine.execute_plan` asks for under the lock: ``replan()`` when the ledger moved
        (else ``plan`` itself), without the customers merged since the read (:meth:`fresh`). ``forget``: the
        ledger writes ``plan`` leaves until it is applied (:attr:`~sync.planning.planner.PlannedDestination.forget`),
        handed back in ``later`` when ``plan`` itself goes on (``execute_plan`` runs them after the in-flight doubts
        are pending; a re-plan from the ledger hands back its own)."""
        def again() -> Plan:
            # (nor did a run die since the plan was made, leaving operations in flight it did not read)
            made = plan.made_at(ledger.state_counter(plan.destination)) and not unread_runs(ledger, plan)
            if not made and replan is not None:
                return left_to_resyncs(replan(), self.moved, retired)
            if forget is not None and later is not None:  # (``plan`` goes on, but for the moved customers'
                later.append(forget)  # changes: forgotten by the apply, after the in-flight doubts are pending)
            return left_to_resyncs(plan, self.moved, retired)

        return again


def left_to_resyncs(plan: Plan, moved: set[str], retired: Collection[str] = ()) -> Plan:
    """``plan`` without the changes and new owners of the customers in ``moved`` (merged since the read) but the removals no run's data
    would undo (consent withdrawals, ``retired`` tags), as a re-plan leaves out the contacts another run wrote
    (:func:`~sync.planning.replanned.leave_out`); said in a note and at INFO."""
    left = {c.key for c in plan.changes if c.customer_id in moved}
    left |= {o.key for o in plan.owners if o.customer_id in moved or o.was in moved}
    n = len(left)
    head = (f"{n} contact{'s' if n != 1 else ''} of customers merged into the order store since this sync read it "
            f"left out (a webhook resync pushes {'them' if n != 1 else 'it'} from its later read, else the next sync)")
    return leave_out(plan, left, retired, lambda withdrawn, retiring: with_removals(head, n, withdrawn, retiring))


__all__ = ["StoreMovedUnknown", "StoreRead", "left_to_resyncs"]
