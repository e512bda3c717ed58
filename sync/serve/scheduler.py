"""Scheduled full syncs for ``rfmsync serve``: ``[schedule] cron = "0 3 * * *"`` and/or ``every = "6h"``.

Fire times are deterministic, so several serve processes agree on them: cron is evaluated in the config's
timezone (``[source] timezone``, default UTC); ``every`` slots are aligned to the Unix epoch (``6h`` fires at
00:00, 06:00, 12:00, 18:00 UTC). When both are set, the earlier next time wins. At a fire time, one process
takes the ledger lock ``schedule`` and runs the same path as ``rfmsync sync`` (pull, segment, plan, guards,
apply: :func:`sync.api.run_sync`; a scheduled run never overrides a guard);
the fire time is then stored as a ledger cursor so another process that wakes up late does not run it again.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from ..config import Config, ScheduleConfig
from ..engine import ApplyReport, destination_lock
from ..errors import ConfigError, GuardRefusedError, LockBusyError
from ..ledger import Ledger
from ..api import run_sync
from ..settings import Settings
from .metrics import Metrics

log = logging.getLogger(__name__)

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_EVERY_RE = re.compile(r"(\d+)\s*([dhms])")
CURSOR = ("schedule", "last_fire")


def parse_every(text: str) -> timedelta:
    """``"6h"``, ``"30m"``, ``"1h30m"``, ``"1d"``, ``"90s"`` → timedelta; ConfigError naming the key otherwise."""
    compact = text.strip().lower().replace(" ", "")
    parts = _EVERY_RE.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"[schedule] every = {text!r}: use a duration like \"6h\", \"30m\", \"1h30m\" or \"1d\"")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds < 60:
        raise ConfigError(f"[schedule] every = {text!r}: the shortest interval is 1 minute")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Schedule:
    cron: str | None = None
    every: timedelta | None = None
    tz: str = "UTC"

    @classmethod
    def from_config(cls, sched: ScheduleConfig, tz: str = "UTC") -> Schedule:
        cron = sched.cron.strip() if sched.cron else None
        if cron:
            from croniter import croniter

            if not croniter.is_valid(cron):
                raise ConfigError(f"[schedule] cron = {sched.cron!r} is not a valid cron expression "
                                  f"(five fields: minute hour day month weekday, e.g. \"0 3 * * *\")")
        return cls(cron=cron, every=parse_every(sched.every) if sched.every else None, tz=tz)

    @property
    def enabled(self) -> bool:
        return bool(self.cron or self.every)

    def next_after(self, now: datetime) -> datetime | None:
        """The first fire time strictly after ``now`` (aware, UTC), or None when nothing is scheduled."""
        candidates = []
        if self.cron:
            from croniter import croniter

            local = now.astimezone(ZoneInfo(self.tz))
            candidates.append(croniter(self.cron, local).get_next(datetime).astimezone(timezone.utc))
        if self.every:
            step = int(self.every.total_seconds())
            ts = int(now.timestamp()) // step * step + step
            candidates.append(datetime.fromtimestamp(ts, timezone.utc))
        return min(candidates) if candidates else None


def run_full_sync(cfg: Config, ledger: Ledger, settings: Settings, *, as_of: date | None = None,
                  kind: str = "scheduled") -> list[ApplyReport]:
    """Exactly what ``rfmsync sync`` does (:func:`sync.api.run_sync`), guards included and never
    overridden: a refused run raises :class:`GuardRefusedError` and writes nothing."""
    return run_sync(cfg, ledger, settings, as_of=as_of, kind=kind)


class Scheduler:
    """Fires :func:`run_full_sync` on the schedule. ``tick(now)`` is the testable step; ``run_forever`` loops."""

    def __init__(self, cfg: Config, ledger: Ledger, settings: Settings, *, schedule: Schedule | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 job: Callable[[], object] | None = None, metrics: Metrics | None = None) -> None:
        self.cfg, self.ledger, self.settings = cfg, ledger, settings
        self.schedule = schedule or Schedule.from_config(cfg.schedule, cfg.timezone)
        self.clock = clock
        self.job = job or (lambda: run_full_sync(cfg, ledger, settings))
        self.metrics = metrics
        self.next_fire = self.schedule.next_after(clock())

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.scheduled_run(outcome)

    def tick(self, now: datetime | None = None) -> bool:
        """Run the sync if a fire time has passed; True when this process ran it."""
        now = now or self.clock()
        if self.next_fire is None or now < self.next_fire:
            return False
        fire, self.next_fire = self.next_fire, self.schedule.next_after(now)
        try:  # a lock left by a killed process of this host would block every fire time for its 6 h TTL
            with destination_lock(self.ledger, "schedule", ttl_seconds=6 * 3600):
                last = self.ledger.get_cursor(*CURSOR)
                if last is not None and datetime.fromisoformat(last) >= fire:
                    self._count("skipped")  # another process ran this one
                    return False
                log.info("scheduled sync (fire time %s)", fire.isoformat())
                try:
                    reports = self.job()
                    if self.metrics is not None and isinstance(reports, list):
                        self.metrics.sync_reports(reports)
                finally:
                    self.ledger.set_cursor(*CURSOR, fire.isoformat())
        except GuardRefusedError as exc:  # recorded as refused runs; nothing written; the next fire time checks again
            self._count("refused")
            if self.metrics is not None:
                self.metrics.guard_refused(exc.destinations)
            log.error("scheduled sync refused by a guard (nothing written): %s", "; ".join(exc.lines))
            return False
        except LockBusyError:
            self._count("skipped")
            log.info("scheduled sync of %s skipped: another process is running it", fire.isoformat())
            return False
        except Exception as exc:  # logged and counted; the next fire time tries again
            self._count("error")
            log.error("scheduled sync failed: %s", exc)
            return False
        self._count("ok")
        return True

    def run_forever(self, stop: threading.Event) -> None:
        if not self.schedule.enabled:
            return
        log.info("scheduler: next full sync at %s", self.next_fire.isoformat() if self.next_fire else "never")
        while not stop.is_set():
            wait = (self.next_fire - self.clock()).total_seconds() if self.next_fire else 3600.0
            if wait > 0:
                stop.wait(min(wait, 60.0))
                continue
            self.tick()
