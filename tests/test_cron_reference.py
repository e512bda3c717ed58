"""``[schedule] cron``'s wildcard jobs against a reference: a walk over every minute after the start, as the
clock of the config's zone reads it (both passes of a repeated hour), the first minute croniter matches. Around
the nights the clocks go back, when the job's next time would otherwise be a year on (docs/serve.md)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from sync.config import ScheduleConfig
from sync.schedule_times import Schedule

WALK = timedelta(days=2)  # how far the reference walks; a case whose time is further gives it as "local"


def walk(cron: str, zone: str, now: datetime) -> datetime | None:
    """The first whole minute after ``now`` (UTC) whose local time in ``zone`` the cron matches, within WALK."""
    at = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while at < now + WALK:
        if croniter.match(cron, at.astimezone(ZoneInfo(zone))):
            return at
        at += timedelta(minutes=1)
    return None


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.mark.parametrize("zone, cron, now, local", [
    # Berlin's clocks go back at 03:00 CEST (01:00 UTC) to 02:00 CET: from 02:45 CEST, the second pass's 02:00
    # (croniter's next time was next year's 02:00, a night the clocks go forward in between hiding the fall)
    ("Europe/Berlin", "*/30 2 25 10 *", utc(2026, 10, 25, 0, 45), "2026-10-25 02:00 CET"),
    ("Europe/Berlin", "*/30 2 25 10 *", utc(2026, 10, 25, 0, 59, 59), "2026-10-25 02:00 CET"),
    ("Europe/Berlin", "*/30 2 25 10 *", utc(2026, 10, 25, 1, 0), "2026-10-25 02:30 CET"),
    ("Europe/Berlin", "*/30 2 25 10 *", utc(2026, 10, 24, 12, 0), "2026-10-25 02:00 CEST"),
    ("Europe/Berlin", "*/30 2 * 10 *", utc(2026, 10, 25, 0, 45), "2026-10-25 02:00 CET"),
    ("America/New_York", "*/20 1 1 11 *", utc(2026, 11, 1, 5, 50), "2026-11-01 01:00 EST"),
    # started inside the second pass
    ("Europe/Berlin", "*/15 * * * *", utc(2026, 10, 25, 1, 20), "2026-10-25 02:30 CET"),
    ("Europe/Berlin", "0 * * * *", utc(2026, 10, 25, 1, 20), "2026-10-25 03:00 CET"),
    ("Australia/Lord_Howe", "*/7 * * * *", utc(2026, 4, 4, 15, 10), "2026-04-05 01:42 +1030"),
    # standard time moved back for good (Volgograd, +04 → +03 at 02:00 on 2020-12-27): started in the second
    # pass after its last 01:x0, the next is a year on
    ("Europe/Volgograd", "*/20 1 27 12 *", utc(2020, 12, 26, 22, 50), "2021-12-27 01:00 MSK"),
])
def test_a_wildcard_cron_fires_at_the_reference_s_time(zone, cron, now, local):
    fire = Schedule.from_config(ScheduleConfig(cron=cron), zone).next_after(now)
    assert fire is not None and f"{fire.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M %Z}" == local
    assert fire == (walk(cron, zone, now) or fire)  # the reference, when its walk reaches it
    assert croniter.match(cron, fire.astimezone(ZoneInfo(zone)))
