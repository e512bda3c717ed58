"""A scheduled sync's retries (:mod:`sync.serve.scheduler`): which failures are the retry-later kind
(:func:`transient`, also read by the webhook worker), and the pending retry kept as a ledger cursor (:class:`Retry`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from connectors.errors import TransientError

from ..errors import LockBusyError

log = logging.getLogger("sync.serve.scheduler")  # (the scheduler's lines, under its name)

RETRY_CURSOR = ("schedule", "retry")  # the pending retry as JSON (fire, attempt, at, killed), "" when none
#: the ``schedule`` lock's time to live, refreshed every third of it while a run holds it (:class:`HeldLock`): a
#: holder this host cannot tell dead (another host, a renamed one, a container's new PID namespace) blocks the
#: schedule that long at most
SCHEDULE_LOCK_TTL = 15 * 60.0


def transient(exc: BaseException) -> bool:
    """Failed the retry-later way: a connector's :class:`TransientError`; an ESP call that kept failing so
    (``DestinationError.transient``: timeouts, 429, 5xx); or a destination (or the order store) busy with another
    run (a webhook resync holds ``sync:<destination>`` for seconds). When several destinations failed, any one of
    them (``other_failures``, :func:`sync.run.full_sync`) counts. A guard, a bad export, bad credentials or a 4xx
    answer are not: running again changes nothing until someone fixes them."""
    return any(isinstance(e, TransientError) or bool(getattr(e, "transient", False))
               or (isinstance(e, LockBusyError) and getattr(e, "lock_name", None) != "schedule")
               for e in (exc, *getattr(exc, "other_failures", ())))


@dataclass(frozen=True)
class Retry:
    """A failed fire time to run again at ``at``; ``attempt`` counts the retries (1 for the first); ``killed``
    counts the runs of this attempt that were killed half-way (the mark a run leaves while it is under way);
    ``stops`` the runs in a row stopped (serve stopping) before their first batch."""
    fire: datetime
    attempt: int
    at: datetime
    killed: int = 0
    stops: int = 0
    #: False: planned while the ledger failed, kept in this process only (:meth:`RetryPlanning._plan_retry`)
    recorded: bool = field(default=True, compare=False)

    def dumps(self) -> str:
        return json.dumps({"fire": self.fire.isoformat(), "attempt": self.attempt, "at": self.at.isoformat(),
                           "killed": self.killed, "stops": self.stops})

    @classmethod
    def loads(cls, text: str | None) -> Retry | None:
        try:
            d = json.loads(text or "null")
            return cls(datetime.fromisoformat(d["fire"]), int(d["attempt"]), datetime.fromisoformat(d["at"]),
                       int(d.get("killed", 0)), int(d.get("stops", 0)))
        except (TypeError, ValueError, KeyError):  # none pending (""), or not ours: nothing to retry
            return None


class RetryPlanning:
    """The :class:`~sync.serve.scheduler.Scheduler`'s retries planned after a run that did not go through (its
    ``cfg``, ``ledger``, ``clock``, ``next_fire``, ``retry`` and ``retry_wait``)."""

    def _look_again(self, fire: datetime, attempt: int, killed: int, recorded: bool = True) -> str:
        """The ``schedule`` lock is held: by a live process running this sync (it ran when we look again: skipped
        then), or by one that died unseen (a host renamed, a container restarted in a new PID namespace: its lock
        lapses within :data:`SCHEDULE_LOCK_TTL`). Look again a third of that later (never at or past the next fire
        time), not only at the next fire time: the run (a re-run of a killed one, a retry, the fire time) is not
        lost to a dead holder's lock. Kept in this process only: the ledger's cursor is the running one's."""
        at = self.clock() + timedelta(seconds=SCHEDULE_LOCK_TTL / 3)
        if self.next_fire is not None and at >= self.next_fire:
            return ""
        if self.retry is None or self.retry.at > at:
            self.retry = Retry(fire, attempt, at, killed, recorded=recorded)
        return f"; looking again at {at.isoformat()}"

    def _plan_retry(self, exc: Exception, fire: datetime, attempt: int) -> str:
        """Schedule the next retry of a transient failure, counted from now (the run may have taken long); the
        log line's tail saying when (or why not). Called in the scheduler's error handler: whatever goes wrong
        here is said in that tail, never raised (it ended the scheduler's thread, and scheduled syncs stopped
        with serve still up). A wait past the dates Python counts (an attempt's doubling, from a retry cursor
        another ``[schedule]`` wrote) comes after the next fire time."""
        if not transient(exc) or attempt >= self.cfg.schedule.retries:
            return ""
        try:
            asked = float(getattr(exc, "retry_after", None) or 0.0)  # the vendor's Retry-After: a day at most
            try:
                at: datetime | None = self.clock() + max(self.retry_wait * 2 ** attempt, timedelta(seconds=asked))
            except OverflowError:
                at = None
            if at is None or (self.next_fire is not None and at >= self.next_fire):
                return "; not retried: the next fire time comes first"
            self.retry = Retry(fire, attempt + 1, at)
        except Exception as planning:  # (a vendor's Retry-After that is no number of seconds, say)
            log.debug("planning the retry of %s failed", fire.isoformat(), exc_info=True)
            return f"; its retry could not be planned ({type(planning).__name__}: {planning})"
        when = f"; retry {attempt + 1} of {self.cfg.schedule.retries} at {at.isoformat()}"
        try:
            self.ledger.set_cursor(*RETRY_CURSOR, self.retry.dumps())
        except Exception as unrecorded:  # the ledger gone, say: the retry kept in this process is all there is
            log.debug("recording the retry of %s failed", fire.isoformat(), exc_info=True)
            self.retry = replace(self.retry, recorded=False)  # (run while the ledger names nothing newer)
            return (f"{when}, kept in this process only: the ledger did not record it: "
                    f"{type(unrecorded).__name__}: {unrecorded}")
        return when
