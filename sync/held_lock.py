"""The ledger locks an apply holds (a destination's, the scheduler's): taken over from a killed process of this
host, refreshed while held (:class:`HeldLock`), and the checks an apply makes between two batches
(:func:`between_batches`). :mod:`sync.engine` re-exports them.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

from .errors import LockBusyError, LockLostError
from .ledger import Locks, owner_process_gone

log = logging.getLogger(__name__)


class HeldLock:
    """A ledger lock held by this process, kept from expiring while it is held: a thread refreshes it every third
    of its time to live (a run longer than the TTL must not let the next run take it and apply the same
    destination at the same time). :meth:`check` raises :class:`LockLostError` once a refresh found the lock
    taken by another holder (this process stalled past the TTL, or the clocks of two hosts disagree)."""

    def __init__(self, ledger: Locks, name: str, owner: str, ttl_seconds: float) -> None:
        self.ledger, self.name, self.owner, self.ttl_seconds = ledger, name, owner, ttl_seconds
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"rfmsync-lock-{name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 3):
            try:
                held = self.ledger.refresh_lock(self.name, self.owner, ttl_seconds=self.ttl_seconds)
            except Exception as exc:  # the ledger unreachable for now: the lock holds until its TTL, try again
                log.warning("lock %s: could not be refreshed (%s); trying again", self.name, type(exc).__name__)
                continue
            if not held:
                self.lost = True
                log.error("lock %s: taken by another holder while this run held it; stopping", self.name)
                return

    def check(self) -> None:
        if self.lost:
            err = LockLostError(f"{self.name}: the lock was taken by another holder while this run held it "
                                "(it could not be refreshed in time); stopped, the next run plans the rest")
            err.lock_name = self.name  # type: ignore[attr-defined]
            raise err

    def confirm(self) -> None:
        """Refresh the lock now, whatever the heartbeat did: :class:`LockLostError` when another holder has it (this
        process was paused past the TTL: SIGSTOP, a suspended VM or laptop, and another took it over meanwhile)."""
        self.check()
        if not self.ledger.refresh_lock(self.name, self.owner, ttl_seconds=self.ttl_seconds):
            self.lost = True
            log.error("lock %s: taken by another holder while this run held it; stopping", self.name)
            self.check()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


#: what :func:`between_batches` asks every apply of this thread (context) to check between two batches
_BETWEEN: ContextVar[Callable[[], None] | None] = ContextVar("rfmsync_between_batches", default=None)


def between_check() -> Callable[[], None] | None:
    """The check :func:`between_batches` asks the applies of this thread (context) to make, or None."""
    return _BETWEEN.get()


@contextmanager
def between_batches(check: Callable[[], None]) -> Iterator[None]:
    """Every :func:`execute_plan` made inside this block (in this thread) calls ``check()`` before it starts and
    between two batches of ESP calls; ``check`` raises to stop it there (:class:`RunStopped`: a stop asked for,
    the run recorded ``stopped``; :class:`LockLostError`: a lock of the caller's lost, recorded ``failed``). The
    batches answered are recorded, as when a destination lock is lost: the next run plans the rest and sends
    nothing twice. The scheduler's hook for SIGTERM and for its own ``schedule`` lock."""
    token = _BETWEEN.set(check)
    try:
        yield
    finally:
        _BETWEEN.reset(token)


@contextmanager
def destination_lock(ledger: Locks, name: str, ttl_seconds: float = 3600) -> Iterator[HeldLock]:
    """A ledger lock (a destination's, the scheduler's), refreshed while held (:class:`HeldLock`), that a killed
    process on this host cannot block: its lock is taken over."""
    try:
        owner = ledger.acquire_lock(name, ttl_seconds=ttl_seconds)
    except LockBusyError as exc:
        holder = getattr(exc, "holder", "")
        if not holder or not owner_process_gone(holder):
            raise
        log.warning("taking over lock %s from %s (process no longer exists)", name, holder)
        ledger.release_lock(name, holder)
        owner = ledger.acquire_lock(name, ttl_seconds=ttl_seconds)
    held = HeldLock(ledger, name, owner, ttl_seconds)
    try:
        yield held
    finally:
        try:
            held.stop()
        finally:
            ledger.release_lock(name, owner)


__all__ = ["HeldLock", "between_batches", "between_check", "destination_lock"]
