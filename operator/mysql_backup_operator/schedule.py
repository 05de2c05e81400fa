"""Schedule math: when is the next run due, and which missed run (at most one) to catch up.

Pure: takes the cron expression, the time zone, what already ran and `now`. CronJob semantics
with `concurrencyPolicy: Forbid`, and deliberately never more than one catch-up run, so an outage
cannot fire a storm of missed backups when the operator comes back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .api.common import SpecError


@dataclass(frozen=True)
class Schedule:
    expression: str
    tz: ZoneInfo


def parse_schedule(expression: str, time_zone: str = "UTC") -> Schedule:
    if not croniter.is_valid(expression):
        raise SpecError(f"spec.schedule: {expression!r} is not a valid cron expression")
    try:
        tz = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(f"spec.timeZone: {time_zone!r} is not an IANA time zone") from None
    return Schedule(expression, tz)


def next_after(s: Schedule, t: dt.datetime) -> dt.datetime:
    return croniter(s.expression, t.astimezone(s.tz)).get_next(dt.datetime).astimezone(dt.UTC)


def latest_at_or_before(s: Schedule, t: dt.datetime) -> dt.datetime:
    # croniter's get_prev excludes its start and works in whole seconds: start just after t, and
    # step back once more if that landed in t's own (future) fraction of a second.
    it = croniter(s.expression, t.astimezone(s.tz) + dt.timedelta(seconds=1))
    prev: dt.datetime = it.get_prev(dt.datetime)
    if prev > t:
        prev = it.get_prev(dt.datetime)
    return prev.astimezone(dt.UTC)


def interval(s: Schedule, around: dt.datetime) -> dt.timedelta:
    """The typical gap between runs near `around` (used for the BackupOverdue threshold)."""
    first = next_after(s, around)
    return next_after(s, first) - first


@dataclass(frozen=True)
class Tick:
    due: dt.datetime | None  # the run to create now, if any
    missed: dt.datetime | None  # a run that is due but too late to start (past the deadline)
    next: dt.datetime


def tick(
    s: Schedule,
    *,
    now: dt.datetime,
    last_scheduled: dt.datetime | None,
    created: dt.datetime,
    starting_deadline: dt.timedelta | None,
) -> Tick:
    """The most recent due time after the last run; earlier missed times are dropped on purpose."""
    since = last_scheduled or created
    latest = latest_at_or_before(s, now)
    nxt = next_after(s, now)
    if latest <= since:
        return Tick(due=None, missed=None, next=nxt)
    if starting_deadline is not None and now - latest > starting_deadline:
        return Tick(due=None, missed=latest, next=nxt)
    return Tick(due=latest, missed=None, next=nxt)


def run_name(policy: str, due: dt.datetime) -> str:
    """`<policy>-<YYYYMMDDHHMM>` in UTC: two operators computing the same run pick the same name."""
    return f"{policy}-{due.astimezone(dt.UTC).strftime('%Y%m%d%H%M')}"
