"""When ``rfmsync serve``'s scheduler fires (:mod:`sync.serve.scheduler`): ``[schedule] cron`` in the config's
timezone, ``every`` aligned to the Unix epoch, and the durations of ``every`` and ``retry_wait``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from ..config import ScheduleConfig
from ..errors import ConfigError

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_EVERY_RE = re.compile(r"(\d+)\s*([dhms])")


def parse_every(text: str, key: str = "every") -> timedelta:
    """``"6h"``, ``"30m"``, ``"1h30m"``, ``"1d"``, ``"90s"`` → timedelta; ConfigError naming the key otherwise."""
    compact = text.strip().lower().replace(" ", "")
    parts = _EVERY_RE.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"[schedule] {key} = {text!r}: use a duration like \"6h\", \"30m\", \"1h30m\" or \"1d\"")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds < 60:
        raise ConfigError(f"[schedule] {key} = {text!r}: the shortest interval is 1 minute")
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
            candidates.append(self._cron_after(now))
        if self.every:
            step = int(self.every.total_seconds())
            ts = int(now.timestamp()) // step * step + step
            candidates.append(datetime.fromtimestamp(ts, timezone.utc))
        return min(candidates) if candidates else None


    def last_at_or_before(self, now: datetime) -> datetime | None:
        """The latest fire time at or before ``now`` (aware, UTC), or None when nothing is scheduled."""
        candidates = []
        if self.cron:
            from croniter import croniter

            zone = ZoneInfo(self.tz)
            fire = now + timedelta(seconds=1)  # (croniter's previous time is strictly before its start)
            while True:  # the same local times as next_after: a repeated hour's second time is none
                fire = croniter(self.cron, fire.astimezone(zone)).get_prev(datetime).astimezone(timezone.utc)
                if not fire.astimezone(zone).fold:
                    break
            candidates.append(fire)
        if self.every:
            step = int(self.every.total_seconds())
            candidates.append(datetime.fromtimestamp(int(now.timestamp()) // step * step, timezone.utc))
        return max(candidates) if candidates else None

    def _cron_after(self, now: datetime) -> datetime:
        """The cron's first fire time after ``now``, once per local wall time: on the night the clocks go back, a
        time of the repeated hour (its second occurrence, ``fold`` 1) is not a fire time again, as in cron(8); a
        time the clocks skip (02:30 on the night they go forward) fires at the first local time after it."""
        from croniter import croniter

        zone = ZoneInfo(self.tz)
        fire = now
        while True:
            fire = croniter(self.cron, fire.astimezone(zone)).get_next(datetime).astimezone(timezone.utc)
            if not fire.astimezone(zone).fold:
                return fire
