"""Events that failed alone before, resynced apart (:class:`Apart`, a part of :class:`sync.serve.worker.Worker`).

An event spends a failure (``events.fails``) only for a failure it met alone, so one claimed with ``fails > 0`` is
known bad (not ``attempts > 1``: a worker killed mid-claim, its lease lapsed, leaves every event of its claim one
claim more, none of them failed): put back in the batch, it would fail it again and the bisection
would spend the claim's resyncs finding it once more. In a queue that is almost all bad events (1 000 events,
990 bad) the good ones were found two or three a claim, and a worker that saw no resync go through lately backs
off at each claim (it cannot tell them from our own bug), so they reached the 6 h give-up. Now the known bad are
resynced apart, each alone (each failure the attempt it needs to be given up); the claim's other events are
resynced together, and when they fail too (a queue dense with bad events) tried one by one from the oldest (each
failure again an attempt the event needs anyway) until one goes through: the rest may hold few bad events, it is
resynced together and bisected. It is all within the claim's ``2·⌈log2 n⌉ + 2`` resyncs; the known bad take at
most half of them while other events failed too; those not tried wait uncounted for the next claim, and so do
they all once :data:`ALIKE` failed alone with the claim's one error while nothing went through (our own bug: it
fails a few events a claim, the others wait for the fix). An event failing 5xx alone before any resync of the claim
went through is an outage, or its own 5xx: one other event resynced alone tells (as the bisection's
:meth:`~sync.serve.isolate.Bisection._alone`): it goes through, the first is a suspect; it fails too, the claim's
events not settled wait uncounted for the outage to end.
"""

from __future__ import annotations

from typing import Callable

from .batches import _Later, _Part, _suspect, retry_later

#: events failing alone alike (the claim's first error, nothing going through) after which a claim tries no more
ALIKE = 3


class Apart:
    """The worker's resyncs of known bad events; the worker and its bisection give ``_try_unless_stopping``,
    ``_lone_failed``, ``_rest``, ``_suspects_wait``, ``_poisons``, ``_synced`` and ``_unsettled``."""

    _poisons: set[int]
    _synced: int
    _named: bool
    _lone: list | None
    _unsettled: list[tuple[list[_Part], Exception | None]]
    # (annotations only: the worker's own, and its bisection's, are the ones called)
    _try_unless_stopping: Callable[[list[_Part]], Exception | None]
    _lone_failed: Callable[[list[_Part], Exception], None]
    _rest: Callable[[list[_Part], Exception, list[int]], _Later]
    _suspects_wait: Callable[[list[_Part], Exception], None]

    def _apart(self, known: list[_Part], failed: list[_Part], budget: list[int]) -> _Later:
        """Resync each of ``known`` alone, those nearest their last attempt first, within ``budget`` (half of it
        when ``failed``, the claim's other events, failed together: the rest is theirs). Returns, when an outage
        began (or the worker is stopping), the known events not settled and that failure; else None."""
        known = sorted(known, key=lambda p: -p[0].fails)
        share = budget[0] // 2 if failed else budget[0]
        i = 0
        while i < len(known):
            part = known[i]
            if i >= share or budget[0] < 1 or self._alike():  # these wait uncounted for the next claim
                self._unsettled.append((known[i:], None))
                return None
            budget[0] -= 1
            f = self._try_unless_stopping([part])
            if f is None:
                i += 1
                continue
            outage, probed = self._one_failed(part, f, known[i + 1:] + failed, budget)
            # the probes settled: out of the events still to try (``failed`` is the caller's list: in place)
            known = known[:i + 1] + _without(known[i + 1:], probed)
            failed[:] = _without(failed, probed)
            if outage:
                return known[i:], f
            i += 1
        return None

    def _singles(self, parts: list[_Part], failure: Exception, budget: list[int]) -> _Later:
        """``parts`` failed together (``failure``) in a claim holding known bad events: a queue dense with bad
        events, where halving would fail at every level. Each is resynced alone from the oldest until one goes
        through; the rest is then resynced together and bisected (:meth:`_rest`). Out of resyncs, the events not
        tried wait uncounted. Returns, when an outage began, the events not settled and that failure."""
        i = 0
        while i < len(parts):
            part = parts[i]
            if budget[0] < 1 or self._alike():
                self._unsettled.append((parts[i:], failure))
                return None
            budget[0] -= 1
            synced = self._synced
            f = self._try_unless_stopping([part])
            probed: list[_Part] = []
            if f is not None:
                outage, probed = self._one_failed(part, f, parts[i + 1:], budget)
                if outage:
                    return [part] + _without(parts[i + 1:], probed), f
            if self._synced > synced:  # one went through (it, or a probe): the rest together
                rest = _without(parts[i + 1:], probed)
                return self._rest(rest, failure, budget) if rest else None
            parts = parts[:i + 1] + _without(parts[i + 1:], probed)
            i += 1
        return None

    def _alike(self) -> bool:
        """:data:`ALIKE` events failed alone in this claim with its first error, and nothing else happened (no
        resync went through, no error of an event's own): our own bug, or bad events that do not name themselves,
        as the bisection would take them; the claim tries no more events alone (they wait uncounted), so that our
        own bug fails a few events a claim, not every one it can try (they wait for the fix instead)."""
        return not self._synced and not self._named and len(self._lone or ()) >= ALIKE

    def _one_failed(self, part: _Part, failure: Exception, others: list[_Part], budget: list[int]
                    ) -> tuple[bool, list[_Part]]:
        """``part`` failed alone: its own fault (counted), or a 5xx while another resync of the claim went through
        (a suspect, waiting apart). A 5xx before any went through is an outage or its own: ``others`` are
        resynced alone from the first (probes, within ``budget``) until one goes through (done: ``part`` is a
        suspect); one failing with an error of its own is counted and the next one tried; one failing the
        transient way (or none left to try) makes it an outage. Returns (an outage: a 5xx so, a timeout, a stop;
        the caller stops there, what is not settled waits), and the probes settled (the caller tries them no
        more)."""
        probed: list[_Part] = []
        for other in others if _suspect(failure) and not self._synced else ():
            if budget[0] < 1 or self._alike():
                break
            budget[0] -= 1
            f = self._try_unless_stopping([other])
            if f is not None and retry_later(f):
                break
            probed.append(other)
            if f is None:
                break
            self._lone_failed([other], f)
        if retry_later(failure) and not (_suspect(failure) and self._synced):
            return True, probed
        if _suspect(failure):
            self._poisons.add(part[0].id)
            self._suspects_wait([part], failure)
        else:
            self._lone_failed([part], failure)
        return False, probed


def _without(parts: list[_Part], settled: list[_Part]) -> list[_Part]:
    """``parts`` but those of ``settled`` (by identity)."""
    return [p for p in parts if all(p is not s for s in settled)]
