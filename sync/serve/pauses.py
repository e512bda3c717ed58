"""One ESP's rate limit pauses its own work only (:class:`Pauses`, a part of :class:`sync.serve.worker.Worker`).

A resync is every destination's: when destination A answers 429 (or a 503 with ``Retry-After``) after the retry
layer's own tries, the worker used to back off as a whole, so destination B's events waited A's ``Retry-After``
too (up to 30 minutes). Now A alone is paused: its ``Retry-After`` (at most
:data:`sync.serve.worker.RETRY_AFTER_MAX`), else the worker's back-off doubling with A's rate limits in a row. The
batch is resynced at once for the other destinations (:func:`sync.serve.resync.resync`'s ``destinations``), and
while A is paused every batch is resynced for them only; its events then go back to the queue uncounted, not
claimed before A's pause is over (``events.not_before``), when they are resynced for every destination (the others
plan nothing: their ledger rows say it is pushed). With a single destination (or every other one paused too) the
worker backs off as before.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

from ..config import Config
from ..errors import DestinationError
from .batches import Batch, _text
from .schedule_retry import transient

log = logging.getLogger("sync.serve.worker")


def rate_limited(exc: BaseException) -> str | None:
    """The destination that answered ``exc``, when it is a rate limit (a 429, or a 5xx with ``Retry-After``) that
    the retry layer did not get past: that destination's work alone waits. Else None."""
    name = getattr(exc, "destination", None)
    if not (isinstance(exc, DestinationError) and transient(exc) and isinstance(name, str)):
        return None
    status, told = getattr(exc, "status", None), getattr(exc, "retry_after", None)
    return name if status == 429 or told is not None and isinstance(status, int) and status >= 500 else None


class Pauses:
    """The worker's paused destinations; the worker gives ``cfg``, ``_clock``, ``_wait_for`` (the back-off after
    the n-th failure in a row) and ``_waited`` (events released uncounted, with a wait)."""

    cfg: Config
    _clock: Callable[[], float]

    def _init_pauses(self) -> None:
        self._paused: dict[str, float] = {}  # destination → (clock) its work waits until then
        self._limits: Counter[str] = Counter()  # destination → its rate limits in a row
        #: the destinations this claim resyncs (None: every one, nothing paused)
        self.only: list[str] | None = None

    def _wait_for(self, failure: BaseException, in_a_row: int) -> float:
        raise NotImplementedError

    def _waited(self, batch: Batch, ids: list[int], error: str, why: str = "another run",
                wait: float | None = None) -> None:
        raise NotImplementedError

    def paused(self) -> dict[str, float]:
        """Paused destinations → seconds left (those whose pause is over are dropped)."""
        now = self._clock()
        self._paused = {name: until for name, until in self._paused.items() if until > now}
        return {name: until - now for name, until in self._paused.items()}

    def _claim_destinations(self) -> None:
        """At a claim: the destinations it resyncs (:attr:`only`), every one when none is paused."""
        paused = self.paused()
        # (never none left: the last destination not paused is not paused, the worker backs off instead)
        self.only = [d.name for d in self.cfg.destinations if d.name not in paused] or None if paused else None

    def _pause(self, failure: BaseException) -> bool:
        """``failure`` is a destination's rate limit while others are left: pause that one (its work waits, the
        others' goes on: the caller resyncs for them) and return True; else False (the worker backs off)."""
        name = rate_limited(failure)
        names = self.only if self.only is not None else [d.name for d in self.cfg.destinations]
        others = [n for n in names if n != name]
        if name is None or name not in names or not others:
            return False
        self._limits[name] += 1
        wait = self._wait_for(failure, self._limits[name])
        self._paused[name] = self._clock() + wait
        self.only = others
        told = getattr(failure, "retry_after", None)
        asked = "" if told is None else f" (it asked to wait {float(told):.0f} s)"
        log.warning("resync: %s is rate limited%s: its work waits %.0f s, the others' (%s) goes on: %s",
                    name, asked, wait, ", ".join(others), _text(failure))
        return True

    def _went_through(self, batch: Batch, ids: list[int]) -> bool:
        """A resync of ``batch`` succeeded: its destinations' rate limits in a row are over. When it left paused
        destinations out, its events wait for them uncounted (released, not claimed before the first of those
        pauses is over; at once if it ended meanwhile): returns True; False when they are done."""
        for name in self.only if self.only is not None else list(self._limits):
            self._limits.pop(name, None)
        if self.only is None:
            return False
        left = [d.name for d in self.cfg.destinations if d.name not in self.only]
        paused = self.paused()
        wait = min((paused[name] for name in left if name in paused), default=None)
        names = ", ".join(left)
        self._waited(batch, ids, f"synced to {', '.join(self.only)}; {names} paused (rate limited)",
                     f"{names} (rate limited)", wait)
        return True
