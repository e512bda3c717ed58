"""Finding the events at fault in a webhook batch that failed: the resync worker's bisection
(:class:`Bisection`, a part of :class:`sync.serve.worker.Worker`).

Several events that failed together for a reason of their own are tried in two halves, so that one poison event
does not hold the queue: the good ones are done, only the bad one spends an attempt; at most ``2·⌈log2 n⌉ + 2``
resyncs a claim (:func:`sync.serve.batches._resync_budget`).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from ..errors import GuardRefusedError, RunStopped
from .batches import (CONFIG_ERRORS, PROBE_AFTER, Batch, _batch, _Later, _Part, _resync_budget, _suspect,
                      _text, retry_later)

log = logging.getLogger("sync.serve.worker")
#: seconds: lone failures with errors of their own are progress (poison events) only when one of the worker's
#: resyncs went through within this long (:meth:`Bisection._went_lately`)
LATELY = 3600.0

class Bisection:
    """The worker's bisection; the worker gives ``_try`` (one resync of some events: None when done, else the
    failure), ``_counted`` (events that spend their attempt), ``_waited`` (events that wait uncounted),
    ``_back_off`` (its wait before the next claim), ``_suspects_wait`` (suspects' wait), its ``stopping``
    event, ``_outages`` (outages in a row), ``_poisons`` and ``_synced``."""

    stopping: threading.Event
    _outages: int
    _poisons: set[int]
    _synced: int  # events whose resync went through in the claim being bisected (:meth:`_try`)
    _went_at: float | None  # (clock) the worker's last resync that went through
    _clock: Callable[[], float]
    _first: str | None  # the text of the claim's first failure (of its events together, or of one alone)
    _first_exc: Exception | None  # that failure
    _named: bool  # an event of the claim failed alone with an error of its own (not :attr:`_first`'s text)
    _single: bool  # the claim holds one event: its first failure is that event's alone
    #: the event and text of the last failure of a claim holding one event: another event's failure is its own
    #: error only when its text differs (our own bug meets events one at a time with one same text)
    _last_single: tuple[int, str] | None = None
    #: events failed alone, counted at the claim's end (:meth:`_count_lone`; None: no claim being bisected)
    _lone: list[tuple[list[_Part], Exception]] | None = None
    _halved: bool  # this claim's bisection was logged (once a claim, not once a level)
    #: what this claim's resyncs could not settle, and why (None: not tried, the resyncs spent)
    _unsettled: list[tuple[list[_Part], Exception | None]]
    _suspects_wait: Callable[[list[_Part], Exception], None]  # (the worker's suspects')
    _apart: Callable[[list[_Part], list[_Part], list[int]], _Later]  # (:mod:`sync.serve.apart`)
    _singles: Callable[[list[_Part], Exception, list[int]], _Later]
    _one_failed: Callable[[_Part, Exception, list[_Part], list[int]], tuple[bool, list[_Part]]]

    def _try(self, parts: list[_Part]) -> Exception | None:
        raise NotImplementedError

    def _counted(self, batch: Batch, failure: Exception, wait: float | None = None, quiet: bool = False) -> int:
        raise NotImplementedError

    def _waited(self, batch: Batch, ids: list[int], error: str, why: str = "another run",
                wait: float | None = None) -> None:
        raise NotImplementedError

    def _back_off(self, failure: BaseException) -> float:
        raise NotImplementedError


    def _try_unless_stopping(self, parts: list[_Part]) -> Exception | None:
        """:meth:`_try`, unless the worker is stopping: then :class:`RunStopped` without a resync (the events not
        settled go back to the queue uncounted)."""
        return RunStopped("the worker is stopping") if self.stopping.is_set() else self._try(parts)

    def _isolate(self, parts: list[_Part], failure: Exception | None, known: list[_Part] | None = None) -> _Later:
        """``parts`` failed together (``failure``; None: none, or they went through). For a reason of the events'
        own (not :func:`retry_later`, not a config error), several events are tried in two halves (a bisection), so
        that one poison event does not hold the queue: the good ones are done, only the bad one spends an attempt.
        A 5xx (:func:`_suspect`) is an outage until :data:`PROBE_AFTER` of them came in a row; then it is bisected
        too: one event that the ESP always answers 500 would otherwise hold the whole queue for
        ``give_up_waiting_after`` (a real outage fails both halves: the batch waits); the event found failing 5xx
        alone is not counted but becomes a suspect, resynced apart (:meth:`sync.serve.worker.Worker._suspects`).
        ``known``: the claim's events that failed alone before, resynced apart, each alone, and ``parts`` one by
        one (:mod:`sync.serve.apart`). A claim makes at most ``2·⌈log2 n⌉ + 2`` resyncs (:func:`_resync_budget`);
        the events it could not settle within them wait uncounted for the next claim (:meth:`_claim_end`: released
        together at the claim's end; a claim none of whose resyncs went through backs the worker off first,
        failing lone events with the claim's one error is no progress: our own bug failing every batch would
        otherwise claim in a loop). An event spends an attempt only for a failure it met alone (a guard's refusal
        and a config error aside: every event of the batch): a failing group of several says that one of them at
        least is bad, not which, so many bad events in a batch (or our own bug failing every batch) never count the
        good ones."""
        known = known or []
        budget = [_resync_budget(len(parts) + len(known)) - (1 if parts else 0)]  # (the events' resync together)
        self._halved, self._unsettled = False, []
        self._first, self._first_exc = (None, None) if failure is None else (_text(failure), failure)
        self._named, self._lone = False, []
        self._single = len(parts) + len(known) == 1
        if failure is not None and retry_later(failure) and not (
                _suspect(failure) and len(parts) > 1 and self._outages >= PROBE_AFTER):
            return parts + known, failure  # an outage (5xx after 5xx: the batch is probed)
        try:
            later = self._apart(known, parts if failure is not None else [], budget)
            if later is not None:  # an outage met: what is not done waits (with the events failed together)
                later = (later[0] + (parts if failure is not None else []), later[1])
            elif failure is not None:
                later = (self._singles if known else self._split)(parts, failure, budget)
            wait = self._claim_end(back_off=later is None)  # (an outage met: the caller backs off)
        finally:  # (a claim that raised leaves no list behind for a suspect's lone resync)
            lone, self._lone = self._lone, None
        self._count_lone(lone, wait)
        return later

    def _count_lone(self, lone: list[tuple[list[_Part], Exception]], wait: float | None) -> None:
        """Count the events the claim saw fail alone, each with its own error, ``wait``: the claim's back-off
        (they wait it out unclaimed); one WARNING for them all."""
        if not lone:
            return
        by_error: dict[str, tuple[list[_Part], Exception]] = {}
        for parts, f in lone:
            by_error.setdefault(_text(f), ([], f))[0].extend(parts)
        given_up = sum(self._counted(_batch(parts), f, wait, quiet=True) for parts, f in by_error.values())
        errors = list(by_error)
        more = f" (and {len(errors) - 1} other errors, each its event's own)" if len(errors) > 1 else ""
        log.warning("resync of %d events failed alone (they stay queued, %d given up): %s%s",
                    sum(len(parts) for parts, _ in lone), given_up, errors[0], more)

    def _split(self, parts: list[_Part], failure: Exception, budget: list[int]) -> _Later:
        """Bisect ``parts`` (they failed with ``failure``) within the claim's ``budget`` of resyncs."""
        if retry_later(failure) and (not _suspect(failure) or budget[0] < 2 and len(parts) > 1):
            return parts, failure  # an outage (or, out of resyncs, maybe one): the events wait uncounted
        if len(parts) == 1 and _suspect(failure):  # a 5xx alone: its own, or the ESP's while the others' went
            self._poisons.add(parts[0][0].id)  # through (no call): a suspect, resynced apart from now on,
            return parts, failure  # never counted: it waits with its back-off up to the give-up
        if len(parts) == 1 or isinstance(failure, (GuardRefusedError, *CONFIG_ERRORS)):
            self._lone_failed(parts, failure)
            return None
        if budget[0] < 2:  # out of resyncs: the events wait uncounted for the next claim
            self._unsettled.append((parts, failure))
            return None
        if not self._halved:  # once a claim
            self._halved = True
            log.warning("resync of %d events failed (%s): resyncing them in halves to find the events at fault "
                        "(at most %d resyncs more)", len(parts), _text(failure), budget[0])
        halves = [parts[:len(parts) // 2], parts[len(parts) // 2:]]
        failed = []
        for i, half in enumerate(halves):
            budget[0] -= 1
            f = self._try_unless_stopping(half)
            if f is None:
                continue
            if retry_later(f) and not (_suspect(f) and _suspect(failure)):  # an outage began: what is not done
                return [p for h, _ in failed for p in h] + [p for h in halves[i:] for p in h], f  # waits
            failed.append((half, f))
        untried: list[list[_Part]] = []  # halves whose failure may be that of their event that failed alone
        if len(failed) == 2 and _suspect(failure):
            # both halves 5xx (an outage, or an event causing one in each half): one event of each is tried alone
            rest = [p for h, _ in failed for p in h]
            if all(len(half) == 1 for half, _ in failed):  # each failed alone already: settled so (a 5xx while
                # nothing went through: an outage, waiting uncounted), not resynced again
                waiting = [(half, f) for half, f in failed if self._one_failed(half[0], f, [], budget)[0]]
                return ([p for half, _ in waiting for p in half], waiting[0][1]) if waiting else None
            if budget[0] < len(failed):  # no resyncs left for that: maybe an outage, wait uncounted
                out = next((f for _, f in failed if retry_later(f)), None)  # (not a half's error of its own)
                if out is None:  # each half failed with an error of its own: no outage, the next claim's
                    self._unsettled.append((rest, failed[0][1]))
                    return None
                return rest, out
            alone = self._alone(failed, budget)
            went = [one for one, f in alone if f is None]
            # another event settled (it went through, or failed with an error of its own): a 5xx of the
            # other is its own event's (a suspect), not an outage
            answered = went or [one for one, f in alone if f is not None and not retry_later(f)]
            out = next((f for _, f in alone if f is not None and retry_later(f) and not (_suspect(f) and answered)),
                       None)
            if out is not None:  # an outage (both 5xx), or one began (or a stop): what is not done waits
                return [p for p in rest if all(p is not o for o in went)], out
            for (half, _), (one, f) in zip(failed, alone):  # not every batch: each event alone is settled
                half.remove(one)
                if f is None:
                    continue
                if _suspect(f):  # a 5xx alone while the other went through: a suspect, waiting apart
                    self._poisons.add(one[0].id)
                    self._suspects_wait([one], f)
                else:  # it failed alone: its own fault
                    self._lone_failed([one], f)
                untried.append(half)
            failed = [(half, f) for half, f in failed if half]
        for j, (half, f) in enumerate(failed):
            if any(half is h for h in untried):  # its rest, resynced on its own first (not counted with f)
                later = self._rest(half, f, budget)
            else:
                later = self._split(half, f, budget)
            if later is not None:
                return later[0] + [p for h, _ in failed[j + 1:] for p in h], later[1]
        return None

    def _rest(self, parts: list[_Part], failure: Exception, budget: list[int]) -> _Later:
        """The rest of a half whose event failed alone: resynced on its own (it may hold only good events),
        bisected if it fails; out of resyncs, it waits uncounted."""
        if budget[0] < 1:
            self._unsettled.append((parts, failure))
            return None
        budget[0] -= 1
        f = self._try_unless_stopping(parts)
        return None if f is None else self._split(parts, f, budget)

    def _lone_failed(self, parts: list[_Part], failure: Exception) -> None:
        """An event failed alone (or a guard's refusal, a config error: every event of ``parts``): counted, at the
        claim's end (:meth:`_count_lone`, waiting out the back-off if the claim makes one: no other worker claims
        it at once). Progress for :meth:`_claim_end` when its error is not the claim's first (:attr:`_first`): our
        own bug fails every group with one same error; poison events usually name themselves (their order, their
        field), so a batch dense with them is not taken for our bug and backed off claim after claim (its good
        events would be given up at the 6 h). A claim of one event fails it alone at once: its error is its own
        (else a warm worker would back off after every lone bad event, holding the good ones that follow) unless
        another event's one-event claim failed with its same text (our own bug meeting events one at a time)."""
        if self._lone is None or len(parts) > 1 or isinstance(failure, GuardRefusedError):  # (failed at once)
            self._counted(_batch(parts), failure)
            return
        text = _text(failure)
        if self._first is None:
            self._first, self._first_exc = text, failure
        own = False
        if self._single:  # its own error unless another event's one-event claim failed with this same text
            last, self._last_single = self._last_single, (parts[0][0].id, text)
            own = last is None or last[1] != text or last[0] == parts[0][0].id
        self._named = self._named or own or text != self._first
        self._lone.append((parts, failure))

    def _claim_end(self, back_off: bool) -> float | None:
        """The claim made its resyncs. When it made no progress (``back_off``: no outage met; no resync went
        through, no event failed alone with an error of its own, :meth:`_lone_failed`) while events failed alone
        or were left unsettled, the worker backs off first, its exponential back-off, and the claim's events wait
        it out unclaimed (``events.not_before``: no other worker thread or host claims them at once): events failing
        alone with the claim's one error are no progress (our own bug failing every batch fails one to three alone
        a claim, a batch of up to 4 events every one of them), claim after claim in a loop would resync the batch
        hundreds of times an hour. The events the resyncs did not settle (:attr:`_unsettled`) wait uncounted for
        the next claim (none failed alone), released together (one line). Returns the back-off's seconds (None:
        none)."""
        wait = None
        stuck = bool(self._unsettled or self._lone)
        if back_off and stuck and self._first_exc is not None and not self._synced \
                and not (self._named and self._went_lately()):
            wait = self._back_off(self._first_exc)
        if self._unsettled:
            parts = [p for group, _ in self._unsettled for p in group]
            error = next((_text(f) for _, f in self._unsettled if f is not None), "not resynced: the claim's "
                         "resyncs were spent")
            error += "" if wait is None else f" (looking again in {wait:.0f} s)"
            self._waited(_batch(parts), [p[0].id for p in parts], error,
                         "the next claim's bisection (this one's made its resyncs)", wait)
        return wait

    def _went_lately(self) -> bool:
        """A resync of this worker went through within :data:`LATELY` seconds: lone failures with errors of their
        own are then poison events (progress), not our own bug, whose error may name the record it fails on
        (``KeyError: 'O123'``) but which lets no resync through."""
        return self._went_at is not None and self._clock() - self._went_at < LATELY

    def _alone(self, failed: list[tuple[list[_Part], Exception]], budget: list[int]
               ) -> list[tuple[_Part, Exception | None]]:
        """Both halves failed 5xx: one event of each (its middle one: an incident can be replayed) resynced
        alone, with its failure (None: it went through, done). An outage fails both; else the halves hold events
        at fault of their own (one event causing a 5xx in each, say). Stopping: :class:`RunStopped`. The caller
        checked the budget."""
        picked = [half[len(half) // 2] for half, _ in failed]
        budget[0] -= len(failed)
        return [(one, self._try_unless_stopping([one]))
                for one in picked]
