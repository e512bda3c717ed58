"""When ``rfmsync serve``'s scheduler fires (:mod:`sync.serve.scheduler`): ``[schedule] cron`` in the config's
timezone, ``every`` aligned to the Unix epoch, and the durations of ``every`` and ``retry_wait``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .config import ScheduleConfig
from .errors import ConfigError

#: croniter's named schedules, as the five fields Vixie cron reads them as
_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
            "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_EVERY_RE = re.compile(r"(\d+)\s*([dhms])")
#: the longest ``every`` and ``retry_wait``: a year (a longer one, ``999999999d``, took serve's fire and retry
#: times past the dates Python counts: serve died, or its scheduler thread did, on its first fire or failure)
MAX_INTERVAL = timedelta(days=366)
#: a field croniter draws at random (``R``, ``R(0-5)``, ``R/15``) at every call: two serve processes (or two calls
#: of one) would not agree on a fire time
_RANDOM_RE = re.compile(r"(?:^|[\s,])r(?=$|[\s,(/])", re.IGNORECASE)


def parse_every(text: str, key: str = "every") -> timedelta:
    """``"6h"``, ``"30m"``, ``"1h30m"``, ``"1d"``, ``"90s"`` → timedelta; ConfigError naming the key otherwise."""
    compact = text.strip().lower().replace(" ", "")
    parts = _EVERY_RE.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"[schedule] {key} = {text!r}: use a duration like \"6h\", \"30m\", \"1h30m\" or \"1d\"")
    longest = int(MAX_INTERVAL.total_seconds())
    seconds = sum(int(n) * _UNITS[u] if len(n) <= 12 else longest + 1 for n, u in parts)  # (no 10**4300 digits)
    if seconds < 60:
        raise ConfigError(f"[schedule] {key} = {text!r}: the shortest interval is 1 minute")
    if seconds > longest:
        raise ConfigError(f"[schedule] {key} = {text!r}: the longest interval is {MAX_INTERVAL.days} days")
    return timedelta(seconds=seconds)


def check_schedule(sched: ScheduleConfig, tz: str = "UTC") -> None:
    """ConfigError naming the key when ``[schedule]`` holds what serve cannot read or run (run when the config
    loads): its first fire time and the last one before now are worked out as serve's scheduler does at its
    start, so a cron that never fires (``0 0 30 2 *``: croniter gives up) is the config's error, not serve's
    crash after it listens. ``tz`` is the config's zone; one that is no zone is the source's error (UTC here)."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        tz = "UTC"
    schedule = Schedule.from_config(sched, tz)
    if schedule.cron:
        from croniter import CroniterError

        now = datetime.now(timezone.utc)
        try:
            schedule.next_after(now)
            schedule.last_at_or_before(now)
        except (CroniterError, ValueError, OverflowError) as e:
            raise ConfigError(f"[schedule] cron = {sched.cron!r} has no fire time serve can find ({e}): a day "
                              f"no month has (30 February, 31 April)?") from None
    parse_every(sched.retry_wait, "retry_wait")


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

            fields = _fields(cron)
            if len(fields) != 5 or not croniter.is_valid(cron):  # croniter reads a 6th field as seconds, a 7th
                extra = f" (it has {len(fields)}: a seconds or year field is not read)" if len(fields) > 5 else ""
                raise ConfigError(f"[schedule] cron = {sched.cron!r} is not a valid cron expression "
                                  f"(five fields: minute hour day month weekday, e.g. \"0 3 * * *\"){extra}")
            if _RANDOM_RE.search(cron):
                raise ConfigError(f"[schedule] cron = {sched.cron!r}: a random field (R) is not read: fire times "
                                  f"are fixed, so every serve process agrees on them; write the minute and hour")
        return cls(cron=cron, every=parse_every(sched.every) if sched.every else None, tz=tz)

    def identity(self) -> str:
        """What the fire times depend on, as JSON (stored with the last fire time run: :mod:`.scheduler`)."""
        return json.dumps({"cron": self.cron, "every": int(self.every.total_seconds()) if self.every else None,
                           "timezone": self.tz}, sort_keys=True)

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
            at = now.astimezone(timezone.utc).replace(second=0, microsecond=0)  # fire times are whole minutes
            fire = None
            while at.astimezone(zone).fold:  # the repeated hour's second pass: croniter, from a time in it,
                if not self.once_per_wall_time and croniter.match(self.cron, at.astimezone(zone)):  # skips the
                    fire = at  # first pass's times (last year's instead): its minutes are looked at one by one
                    break
                at -= timedelta(minutes=1)
            if fire is None:  # (croniter's previous time is strictly before its start)
                local = croniter(self.cron, (at + timedelta(seconds=1)).astimezone(zone)).get_prev(datetime)
                local = local.astimezone(zone)
                fire = (local.replace(fold=0) if self.once_per_wall_time else local).astimezone(timezone.utc)
            candidates.append(fire)
        if self.every:
            step = int(self.every.total_seconds())
            candidates.append(datetime.fromtimestamp(int(now.timestamp()) // step * step, timezone.utc))
        return max(candidates) if candidates else None

    @property
    def once_per_wall_time(self) -> bool:
        """The cron fires at fixed local times (neither its minute nor its hour field a wildcard or a step, as
        Vixie cron tells its "wildcard" jobs apart): on the night the clocks go back, such a time in the repeated
        hour fires once. A wildcard job (``*/15 * * * *``, ``0 * * * *``) runs through the repeated hour as the
        clock reads it, both times."""
        fields = _fields(self.cron or "")
        return len(fields) >= 2 and not (fields[0].startswith("*") or fields[1].startswith("*"))

    def _cron_after(self, now: datetime) -> datetime:
        """The cron's first fire time after ``now``. On the night the clocks go back, a fixed time
        (:attr:`once_per_wall_time`) in the repeated hour fires on its first occurrence only (``fold`` 0), as in
        Vixie cron; a wildcard job's times in that hour fire both times. A time the clocks skip (02:30 on the night
        they go forward) fires at the first local time after it."""
        from croniter import croniter

        zone = ZoneInfo(self.tz)
        fire = now
        while True:
            fire = croniter(self.cron, fire.astimezone(zone)).get_next(datetime).astimezone(timezone.utc)
            if not self.once_per_wall_time:
                return self._second_pass(now, fire, zone)
            if not fire.astimezone(zone).fold:
                return fire

    def _second_pass(self, now: datetime, fire: datetime, zone: ZoneInfo) -> datetime:
        """A wildcard job's first time after ``now``, given croniter's ``fire``: when the clocks went back in
        between, croniter may have stepped over the repeated times' second pass (Lord Howe's clocks go back by 30
        minutes, 02:00 → 01:30: from 01:56 its next ``*/7`` time was 02:00, not the second pass's 01:35; Berlin's
        ``*/30 2 25 10 *`` from 02:45 CEST went to next year's 02:00), so the minutes of each second pass in
        between (the 30 or 60 minutes after the clocks went back) are looked at one by one; the rest is
        croniter's. Whether the clocks went back is asked of the zone, not told by wall time against real time:
        a night they go forward before croniter's time (next year's) makes up for it."""
        from croniter import croniter

        first = now.astimezone(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for back, repeated in _clocks_back(now, fire, zone):
            at = max(first, back + timedelta(seconds=59)).replace(second=0)  # the second pass's first whole minute
            while at < min(back + repeated, fire):
                if croniter.match(self.cron, at.astimezone(zone)):
                    return at
                at += timedelta(minutes=1)
        return fire


def _fields(cron: str) -> list[str]:
    """The cron's fields, a named schedule (``@daily``, in any case, as croniter reads it) as its five."""
    return _ALIASES.get(cron.strip().lower(), cron).split()


def _clocks_back(since: datetime, until: datetime, zone: ZoneInfo) -> list[tuple[datetime, timedelta]]:
    """Each moment (UTC) between ``since`` and ``until`` when ``zone``'s clocks go back, with by how much, in order:
    the offset is sampled daily (no zone changes its clocks twice within a day), and the day of a fall is bisected
    to the second."""
    def offset(t: datetime) -> timedelta:
        return t.astimezone(zone).utcoffset() or timedelta(0)

    found, lo = [], since.astimezone(timezone.utc)
    while lo < until:
        hi = min(lo + timedelta(days=1), until)
        if offset(hi) < offset(lo):
            a, b = lo, hi  # offset(a) is the old one, offset(b) the new
            while b - a > timedelta(seconds=1):
                mid = a + (b - a) / 2
                a, b = (mid, b) if offset(mid) == offset(lo) else (a, mid)
            found.append((b.replace(microsecond=0), offset(lo) - offset(hi)))
        lo = hi
    return found
