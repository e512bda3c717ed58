"""Suspects: events a bisection found failing 5xx alone while the others went through
(:class:`Suspects`, a part of :class:`sync.serve.worker.Worker`).

A 5xx alone may be the event's own fault or the ESP's (the one event needing a call while it is down): a suspect
spends no attempt; it is resynced alone, apart from the rest so that it does not hold them, with a back-off of its
own (the worker's is not touched), during which it is not claimed (released with a wait), up to the give-up.
"""

from __future__ import annotations

from typing import Callable

from .batches import _batch, _Later, _Part, _text


class Suspects:
    """The worker's suspects; the worker gives ``_try_unless_stopping``, ``_split``, ``_waited``, ``_wait_for``,
    its ``_clock`` and the suspects' state (``_suspect_fails``, ``_suspects_at``)."""

    _clock: Callable[[], float]
    _suspect_fails: int
    _suspects_at: float
    # (annotations only: the worker's own, and its bisection's, are the ones called)
    _try_unless_stopping: Callable[[list[_Part]], Exception | None]
    _split: Callable[[list[_Part], Exception, list[int]], _Later]
    _waited: Callable[..., None]
    _wait_for: Callable[[BaseException, int], float]
    only: list[str] | None  # the destinations this claim resyncs (None: every one)

    def _suspects(self, parts: list[_Part], later: _Later) -> None:
        """Resync each suspect (an event found failing 5xx alone while the others went through) alone, apart from
        the rest so that it does not hold them, with a back-off of its own (the worker's is not touched); a
        suspect failing 5xx again waits uncounted up to ``give_up_waiting_after``: the ESP's outage may be all
        the fault (a call of its own while the others needed none). ``later``: the rest met an outage, the
        suspects wait with it (added to it)."""
        if later is not None:
            later[0].extend(parts)
        if not parts or later is not None:
            return
        wait = self.suspects_back_off()
        if wait:
            self._waited(_batch(parts), [p[0].id for p in parts], f"a 5xx alone (tried again in {wait:.0f} s)",
                         "its 5xx to end", wait)
            return
        waiting, failure = [], None
        for part in parts:
            f = self._try_unless_stopping([part])
            if f is None:
                continue
            left = self._split([part], f, [2])  # not a 5xx: counted, or waits (an outage, a stop)
            if left is not None:
                waiting.append(part)
                failure = left[1]
        if failure is None:
            if self.only is None:  # (a paused destination left out says nothing of its 5xx)
                self._suspect_fails = 0
        else:
            self._suspects_wait(waiting, failure)

    def _suspects_wait(self, parts: list[_Part], failure: Exception) -> None:
        """These suspects failed (a 5xx alone): they wait uncounted with their own back-off."""
        self._suspect_fails += 1
        wait = self._wait_for(failure, self._suspect_fails)
        self._suspects_at = self._clock() + wait
        self._waited(_batch(parts), [p[0].id for p in parts], f"{_text(failure)} (alone; tried again in "
                     f"{wait:.0f} s)", "its 5xx to end", wait)

    def suspects_back_off(self) -> float:
        """Seconds left before suspects are resynced again (0: now)."""
        return max(0.0, self._suspects_at - self._clock()) if self._suspect_fails else 0.0

