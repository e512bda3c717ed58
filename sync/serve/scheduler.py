"""Scheduled full syncs for ``rfmsync serve``: ``[schedule] cron = "0 3 * * *"`` and/or ``every = "6h"``.

Fire times are deterministic, so several serve processes agree on them: cron is evaluated in the config's
timezone (``[source] timezone``, default UTC), as Vixie cron does across daylight saving changes (a fixed time in
the hour repeated when the clocks go back fires once, a wildcard job through both passes: :class:`Schedule`);
``every`` slots are aligned to the Unix epoch (``6h`` fires at
00:00, 06:00, 12:00, 18:00 UTC). When both are set, the earlier next time wins. At a fire time, one process
takes the ledger lock ``schedule`` and runs the same path as ``rfmsync sync`` (pull, segment, plan, guards,
apply: :func:`sync.api.run_sync`; a scheduled run never overrides a guard);
the fire time is then stored as a ledger cursor so another process that wakes up late does not run it again.
A fire time that passed while no process ran (the cursor names an earlier one) is due at the next start, once,
when that start is nearer to it than to the next fire time (:meth:`Scheduler._missed`).

A run that fails the retry-later way (a CRM or ESP still timing out or answering 429/5xx after the client's own
retries: :func:`~sync.serve.schedule_retry.transient`) is run again ``[schedule] retry_wait`` later (10 minutes), doubling
each time, at most ``retries`` times (3), and never at or past the next fire time, which does the work anyway.
The pending retry is a ledger cursor too (:data:`RETRY_CURSOR`), so a process started after the one that planned
it stopped runs it; under the ``schedule`` lock, a retry runs only while the cursor still names it: once.
While a run is under way the cursor names it as a re-run due at once (:attr:`Retry.killed`), so a run killed
half-way (its process gone) is run again by the next process started, not left to the next fire time; once only
(:data:`KILLED_RERUNS`): a sync that itself kills the process (the OOM killer on a big export) would otherwise run
and die at every restart of ``serve``, for ever, taking the webhook intake down each time. A re-run of a killed run
keeps its retry number: it does not use up a retry.

The sync's applies check, between two batches (:func:`sync.engine.between_batches`), the scheduler's
:attr:`Scheduler.stop` (``serve`` stopping: SIGTERM) and that the ``schedule`` lock is still this process's (refreshed
once :data:`LOCK_CONFIRM_EVERY` passed on the wall clock: a process paused past the lock's life while another took
it over stops there). A stopped run is recorded ``stopped`` and named again as due at once, as it was (neither a
kill nor a retry); one stopped before its first batch (nothing applied) counts in its own counter
(:attr:`Retry.stops`): after :data:`EARLY_STOPS` in a row it is left to the next fire time; a run whose lock was
taken leaves the cursors to the new holder.
"""

from __future__ import annotations

import logging
import threading
from datetime import date, datetime, timedelta, timezone
from typing import Callable

from connectors.secrets import redact

from ..config import Config
from ..engine import ApplyReport, HeldLock, between_batches, destination_lock
from ..errors import GuardRefusedError, LockBusyError, LockLostError, RunStopped
from ..ledger import Ledger
from ..planning.withdrawals import alone_run
from ..api import run_sync
from ..settings import Settings
from .metrics import Metrics
from .schedule_retry import RETRY_CURSOR, SCHEDULE_LOCK_TTL, Retry, RetryPlanning
from ..schedule_times import Schedule, parse_every

log = logging.getLogger(__name__)

CURSOR = ("schedule", "last_fire")
#: the schedule (cron, every, timezone) whose fire time :data:`CURSOR` names: a start with another one catches up
#: nothing (its own last fire time was never due: ``0 3`` moved to ``0 9`` at 10:00)
IDENTITY_CURSOR = ("schedule", "identity")
#: the ledger's runs looked at for a full sync since a missed fire time (:meth:`Scheduler._synced_since`)
RUNS_LOOKED_AT = 500
KILLED_RERUNS = 1  # a run killed half-way is run again this many times, then left to the next fire time
#: runs stopped before their first batch in a row (SIGTERM at every start: a liveness probe, deploys during the
#: pull) after which the fire time is left to the next one (not run again at every start for ever)
EARLY_STOPS = 3
#: between two apply batches, the ``schedule`` lock is refreshed (and found lost) when this long passed on the wall
#: clock since it last was: a process paused longer (SIGSTOP, a suspended VM or laptop) checks before it goes on
LOCK_CONFIRM_EVERY = timedelta(seconds=30)
#: a tick that failed (the ledger unreachable or failing before a scheduled sync began: PostgreSQL restarting, a
#: disk full; a fire time that cannot be worked out) is tried again this much later, or at the next fire time when
#: that comes first: the scheduler's thread goes on, never in a busy loop (:meth:`Scheduler.step`)
TICK_PAUSE = timedelta(seconds=60)


def run_full_sync(cfg: Config, ledger: Ledger, settings: Settings, *, as_of: date | None = None,
                  kind: str = "scheduled") -> list[ApplyReport]:
    """Exactly what ``rfmsync sync`` does (:func:`sync.api.run_sync`), guards included and never
    overridden: a refused run raises :class:`GuardRefusedError` and writes nothing but the consent withdrawals
    that go out alone (:func:`sync.refusals.refuse_after_withdrawals`)."""
    return run_sync(cfg, ledger, settings, as_of=as_of, kind=kind)


class Scheduler(RetryPlanning):
    """Fires :func:`run_full_sync` on the schedule. ``tick(now)`` is the testable step; ``run_forever`` loops."""

    def __init__(self, cfg: Config, ledger: Ledger, settings: Settings, *, schedule: Schedule | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 job: Callable[[], object] | None = None, metrics: Metrics | None = None) -> None:
        self.cfg, self.ledger, self.settings = cfg, ledger, settings
        self.schedule = schedule or Schedule.from_config(cfg.schedule, cfg.timezone)
        self.clock = clock
        self.job = job or (lambda: run_full_sync(cfg, ledger, settings))
        self.metrics = metrics
        #: set to stop a sync under way between two apply batches (``run_forever``'s stop: SIGTERM)
        self.stop = threading.Event()
        self._looked_again: datetime | None = None  # the fire time whose skip for a held schedule lock is counted
        self._paused_until: datetime | None = None  # a failed tick's pause (:meth:`step`)
        self._failed_ticks = 0  # in a row
        self.next_fire = self.schedule.next_after(clock())
        self.retry_wait = parse_every(cfg.schedule.retry_wait, "retry_wait")
        # a retry planned before this process started (by a process since stopped, or another one): kept in the
        # ledger, run by whichever process takes the schedule lock first at its time
        pending = Retry.loads(ledger.get_cursor(*RETRY_CURSOR))
        self.retry = pending if pending and (self.next_fire is None or pending.at < self.next_fire) else None
        if self.retry is None:
            self.retry = self._missed(clock())

    def _missed(self, now: datetime) -> Retry | None:
        """The last fire time before this process started, when no process ran it (none was running then: a
        deploy, a reboot, a crash loop): due at once, run once, as cron's anacron does, when the start is nearer to
        it than to the next fire time (which does the work anyway). Not on a first start (no fire time ran yet),
        not when ``[schedule]`` changed since the last fire time ran (it was never this schedule's), and not when a
        full sync of every destination started since the missed time (the operator ran ``rfmsync sync``)."""
        last, missed = self.ledger.get_cursor(*CURSOR), self.schedule.last_at_or_before(now)
        if not last or missed is None or datetime.fromisoformat(last) >= missed or (
                self.next_fire is not None and now - missed >= self.next_fire - now):
            return None
        known = self.ledger.get_cursor(*IDENTITY_CURSOR)
        if known and known != self.schedule.identity():
            log.info("scheduled sync of %s not run at the start: [schedule] changed since the last one ran (%s)",
                     missed.isoformat(), last)
            return None
        if self._synced_since(missed):
            log.info("scheduled sync of %s not run at the start: a full sync of every destination started since "
                     "(rfmsync sync)", missed.isoformat())
            return None
        log.warning("scheduled sync of %s did not run (no serve was running at its time, the last one ran %s): "
                    "running it now", missed.isoformat(), last)
        return Retry(missed, 0, now)

    def _synced_since(self, since: datetime) -> bool:
        """A full sync (``rfmsync sync`` or a scheduled one) of every configured destination started at or after
        ``since`` and applied (succeeded or partial), in the ledger's last :data:`RUNS_LOOKED_AT` runs; a run that
        sent a refused plan's consent withdrawals alone is none (:func:`~sync.planning.withdrawals.alone_run`)."""
        done = {r["destination"] for r in self.ledger.recent_runs(RUNS_LOOKED_AT)
                if r["kind"] in ("sync", "scheduled") and r["status"] in ("succeeded", "partial")
                and r["started_at"] >= since and not alone_run(r)}
        names = [d.name for d in self.cfg.destinations]
        return all(name in done for name in names) if names else bool(done)

    def _done(self, fire: datetime) -> None:
        """The cursor names ``fire`` as run (or given up), by this schedule; no retry of it is pending (a failure
        plans the next one after this)."""
        self.ledger.set_cursor(*CURSOR, fire.isoformat())
        self.ledger.set_cursor(*IDENTITY_CURSOR, self.schedule.identity())
        self.ledger.set_cursor(*RETRY_CURSOR, "")

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.scheduled_run(outcome)

    def tick(self, now: datetime | None = None) -> bool:
        """Run the sync if a fire time (or a pending retry) has passed; True when this process ran it
        successfully."""
        now = now or self.clock()
        if self.next_fire is not None and now >= self.next_fire:
            fire, self.next_fire = self.next_fire, self.schedule.next_after(now)
            self.retry = None  # the new fire time does the work a pending retry would have done
            return self._run(fire, 0)
        if self.retry is not None and now >= self.retry.at:
            retry, self.retry = self.retry, None
            return self._run(retry.fire, retry.attempt, retry.killed, retry.stops, retry.recorded)
        return False

    def wake_at(self) -> datetime | None:
        """The next fire time or pending retry, whichever comes first."""
        times = [t for t in (self.next_fire, self.retry.at if self.retry else None) if t is not None]
        return min(times) if times else None

    def _run(self, fire: datetime, attempt: int, killed: int = 0, stops: int = 0, recorded: bool = True) -> bool:
        passed: list[int] = [0]  # checks the sync's applies passed: 0 when a stop came before any batch
        began = False  # the sync itself began (before it, only the ledger is used: its failure is the scheduler's)
        try:  # a lock left by a killed process of this host is taken over (else it blocks up to its TTL)
            with destination_lock(self.ledger, "schedule", ttl_seconds=SCHEDULE_LOCK_TTL) as held:
                if attempt or killed or stops:  # every run clears the retry cursor: one that no longer names it ran
                    pending = Retry.loads(self.ledger.get_cursor(*RETRY_CURSOR))
                    ran = pending is None or (pending.fire, pending.attempt, pending.killed, pending.stops) != (
                        fire, attempt, killed, stops)
                    if not recorded:  # the ledger failed to record it: still ours while the ledger names no newer
                        last = self.ledger.get_cursor(*CURSOR)  # state of its fire time than the failed run's
                        ran = not (pending.fire == fire and pending.attempt < attempt if pending else
                                   last is not None and datetime.fromisoformat(last) == fire)
                else:  # another process ran this fire time (or a later one)
                    last = self.ledger.get_cursor(*CURSOR)
                    ran = last is not None and datetime.fromisoformat(last) >= fire
                if ran:  # (a look-again that finds it done: its skip was counted when the lock was held)
                    if self._looked_again != fire:
                        self._count("skipped")
                    return False
                if killed > KILLED_RERUNS:  # it kills its process (OOM): running it again would only repeat that
                    self._done(fire)
                    self._count("killed")
                    log.error("scheduled sync of %s was killed half-way %d times (out of memory?): not run again; "
                              "the next fire time (%s) runs it", fire.isoformat(), killed,
                              self.next_fire.isoformat() if self.next_fire else "none")
                    return False
                if stops >= EARLY_STOPS:  # serve stopped at every start before it applied anything
                    self._done(fire)
                    self._count("stopped_early")
                    log.error("scheduled sync of %s was stopped before its first batch %d times in a row (serve "
                              "stopped during its pull at each start: a liveness probe, deploys?): not run again; "
                              "the next fire time (%s) runs it", fire.isoformat(), stops,
                              self.next_fire.isoformat() if self.next_fire else "none")
                    return False
                log.info("scheduled sync (fire time %s%s)", fire.isoformat(), self._attempt_text(attempt, killed))
                # until this run ends, the ledger names it as a re-run due now: a process killed here (OOM, a
                # deploy's kill -9) leaves it, and the serve started after it runs it at once instead of
                # waiting for the next fire time, once (the ``finally`` below clears it whatever else happens)
                self.ledger.set_cursor(*RETRY_CURSOR,
                                       Retry(fire, attempt, self.clock(), killed + 1, stops).dumps())
                ended = "done"
                try:
                    held.confirm()  # still ours: another process did not take it while this one was paused
                    began = True
                    with between_batches(self._between(held, fire, passed)):
                        reports = self.job()
                    if self.metrics is not None and isinstance(reports, list):
                        self.metrics.sync_reports(reports)
                except RunStopped:
                    ended = "stopped"
                    raise
                except LockLostError:
                    ended = "lost" if held.lost else ended
                    raise
                except Exception as exc:  # a destination failed before the stop stopped another: still a stop
                    stop = next((e for e in getattr(exc, "other_failures", ()) if isinstance(e, RunStopped)), None)
                    if stop is None:
                        raise
                    ended = "stopped"
                    raise stop from exc
                finally:
                    if ended == "stopped":  # run again by the next start (or look) as it was: same attempt and
                        # kills, so a deploy neither counts as a kill nor uses up a retry; stopped before its
                        # first batch, nothing applied: counted in its own counter (SIGTERM at every start, a
                        # liveness probe, would otherwise run it again for ever), reset by a batch applied
                        again = 0 if passed[0] else stops + 1
                        self.ledger.set_cursor(*RETRY_CURSOR, Retry(fire, attempt, self.clock(), killed, again).dumps())
                    elif ended != "lost":  # (a lost lock: the cursors are its new holder's now)
                        self._done(fire)  # (a failure plans the next retry below)
        except RunStopped as exc:
            self._count("stopped")
            first = f" (before the stop, a destination failed: {exc.__cause__})" if exc.__cause__ else ""
            if passed[0]:
                log.warning("scheduled sync of %s stopped between two batches (serve is stopping): what it applied "
                            "is recorded; the next start runs it again (not counted as a retry or a kill)%s",
                            fire.isoformat(), first)
            else:
                then = "is left to the next fire time" if stops + 1 >= EARLY_STOPS else "runs it again"
                log.warning("scheduled sync of %s stopped before its first batch (serve is stopping; nothing "
                            "applied): the next start %s (stopped so %d times in a row, run again up to %d)%s",
                            fire.isoformat(), then, stops + 1, EARLY_STOPS, first)
            return False
        except LockLostError as exc:
            if getattr(exc, "lock_name", None) != "schedule":  # a destination's lock: a failed run as any other
                return self._failed(exc, fire, attempt)
            self._count("error")
            log.error("scheduled sync of %s stopped: %s (this process was paused, or its clock is off?): another "
                      "process runs the fire time; what this one applied is recorded", fire.isoformat(), exc)
            return False
        except GuardRefusedError as exc:  # recorded as refused runs; nothing written but consent withdrawals alone
            self._count("refused")  # (said by the error's last line); the next fire time checks again
            if self.metrics is not None:
                self.metrics.guard_refused(exc.destinations)
            log.error("scheduled sync refused by a guard (%s): %s",
                      "only consent withdrawals written" if exc.applied else "nothing written",
                      "; ".join(exc.message_lines))
            return False
        except LockBusyError as exc:
            if getattr(exc, "lock_name", None) == "schedule":  # counted and logged at INFO once per fire time:
                # looking again every 5 min while another serve runs a 2 h sync is one skip, not 24
                once = self._looked_again != fire
                self._looked_again = fire
                if once:
                    self._count("skipped")
                log.log(logging.INFO if once else logging.DEBUG, "scheduled sync of %s skipped: another process "
                        "is running it%s", fire.isoformat(), self._look_again(fire, attempt, killed, recorded))
            else:
                self._count("skipped")  # a destination (or the store) busy with another run, a webhook resync say: try again soon
                log.info("scheduled sync of %s not run: %s%s", fire.isoformat(), exc,
                         self._plan_retry(exc, fire, attempt))
            return False
        except Exception as exc:  # logged and counted; a retry or the next fire time tries again
            if not began:  # the ledger failed before the sync began: this fire time is kept (in this process: the
                # ledger is what failed) and run again once the tick's pause is over (:meth:`step`)
                self.retry = Retry(fire, attempt, self.clock(), killed, stops, recorded)
                raise
            return self._failed(exc, fire, attempt)
        self._count("ok")
        return True

    def _failed(self, exc: Exception, fire: datetime, attempt: int) -> bool:
        self._count("error")
        log.error("scheduled sync failed: %s%s", exc, self._plan_retry(exc, fire, attempt))
        return False

    def _between(self, held: HeldLock, fire: datetime, passed: list[int]) -> Callable[[], None]:
        """What the sync's applies check between two batches (:func:`sync.engine.between_batches`): a stop asked
        for (:class:`RunStopped`), and the ``schedule`` lock still this process's (refreshed when
        :data:`LOCK_CONFIRM_EVERY` passed on the wall clock since the last check: :class:`LockLostError`).
        ``passed[0]`` counts the checks passed (an apply began)."""
        confirmed = [self.clock()]

        def check() -> None:
            if self.stop.is_set():
                raise RunStopped(f"scheduled sync of {fire.isoformat()}: stopped, serve is stopping")
            held.check()
            if self.clock() - confirmed[0] >= LOCK_CONFIRM_EVERY:
                held.confirm()
                confirmed[0] = self.clock()
            passed[0] += 1

        return check

    def _attempt_text(self, attempt: int, killed: int) -> str:
        retry = f", retry {attempt} of {self.cfg.schedule.retries}" if attempt else ""
        return retry + (", run again: the run before it was killed half-way" if killed else "")

    def run_forever(self, stop: threading.Event) -> None:
        self.stop = stop  # a sync under way stops between two batches when it is set
        if not self.schedule.enabled:
            return
        log.info("scheduler: next full sync at %s", self.next_fire.isoformat() if self.next_fire else "never")
        while not stop.is_set():
            wait = self.step()
            if wait > 0:
                stop.wait(min(wait, 60.0))

    def step(self) -> float:
        """One turn of :meth:`run_forever`: the seconds to wait before the next one, or :meth:`tick` when a fire
        time (or a retry) is due, guarded: a tick that raised is logged (ERROR, one line), counted
        (``scheduler_error``), shown in ``/healthz`` (:meth:`Metrics.scheduler_failed`) and tried again
        :data:`TICK_PAUSE` later (at the next fire time when that comes first), the thread alive."""
        now, wake = self.clock(), self.wake_at()
        if self._paused_until is not None and now < self._paused_until:  # a failed tick's pause
            return (self._paused_until - now).total_seconds()
        if wake is None or wake > now:
            return (wake - now).total_seconds() if wake else 3600.0
        try:
            self.tick()
        except Exception as exc:
            self._tick_failed(exc)
            return 0.0
        self._paused_until, self._failed_ticks = None, 0
        if self.metrics is not None:
            self.metrics.scheduler_ok()
        return 0.0

    def _tick_failed(self, exc: Exception) -> None:
        """The pause ends :data:`TICK_PAUSE` from now, or at the next fire time when it comes first."""
        now, nxt = self.clock(), self.next_fire
        self._paused_until = at = nxt if nxt is not None and now < nxt < now + TICK_PAUSE else now + TICK_PAUSE
        self._count("scheduler_error")
        lines = f"{type(exc).__name__}: {exc}".splitlines()
        error = redact(lines[0] if lines else type(exc).__name__,
                       self.settings.secret_values() if self.settings is not None else ())
        self._failed_ticks += 1
        if self.metrics is not None:
            self.metrics.scheduler_failed(error, now.timestamp(), self._failed_ticks)
        kept = f" (scheduled sync of {self.retry.fire.isoformat()} not begun)" if (
            self.retry and self.retry.at <= now) else ""
        log.error("scheduler: a tick failed (%d in a row)%s: %s; tried again at %s", self._failed_ticks, kept, error,
                  at.isoformat())
