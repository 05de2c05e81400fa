"""Retention math: which scheduled Backups to delete. Pure and property-tested.

Grandfather-father-son: `keepLast` newest successes, plus the newest success in each of the
newest `keepDaily` days, `keepWeekly` ISO weeks, `keepMonthly` months and `keepYearly` years
(periods in the policy's time zone). `maxAge` caps age on top. Safety is built in, not configured:
- only `scheduled` backups are candidates (manual and pre-restore ones are never pruned);
- the newest successful backup and anything annotated `mysqlbackup.dev/keep: "true"` are kept;
- running and pending backups are never touched;
- with no count rule set, successful backups are removed only by `maxAge`.
Callers additionally prune only right after a scheduled backup succeeded (see controllers/policy.py).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from .api.backup import BackupPhase, Trigger
from .api.common import SpecError
from .api.policy import DEFAULT_KEEP_FAILED

_DURATION = re.compile(r"^([1-9][0-9]*)(m|h|d|w)$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class RetentionSpec:
    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    max_age: dt.timedelta | None = None
    keep_failed: int = DEFAULT_KEEP_FAILED

    @property
    def has_counts(self) -> bool:
        return any(
            v is not None
            for v in (self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly, self.keep_yearly)
        )


DEFAULT_RETENTION = RetentionSpec(keep_daily=30, keep_weekly=13)


def parse_duration(s: str) -> dt.timedelta:
    m = _DURATION.match(s)
    if not m:
        raise SpecError(f"retention.maxAge: {s!r} is not a duration like 90d, 12w, 36h or 30m")
    return dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def parse_retention(raw: Mapping[str, Any] | None) -> RetentionSpec:
    if raw is None:
        return DEFAULT_RETENTION

    def count(key: str) -> int | None:
        v = raw.get(key)
        if v is None:
            return None
        if not isinstance(v, int) or v < 0:
            raise SpecError(f"retention.{key} must be a non-negative integer")
        return v

    kf = count("keepFailed")
    return RetentionSpec(
        keep_last=count("keepLast"),
        keep_daily=count("keepDaily"),
        keep_weekly=count("keepWeekly"),
        keep_monthly=count("keepMonthly"),
        keep_yearly=count("keepYearly"),
        max_age=parse_duration(raw["maxAge"]) if raw.get("maxAge") else None,
        keep_failed=3 if kf is None else kf,
    )


@dataclass(frozen=True)
class BackupInfo:
    name: str
    trigger: Trigger
    phase: BackupPhase
    created: dt.datetime
    completed: dt.datetime | None = None
    pinned: bool = False

    @property
    def when(self) -> dt.datetime:
        return self.completed or self.created


def _newest_per_period(
    backups: list[BackupInfo], n: int | None, period: Callable[[dt.datetime], object], tz: ZoneInfo
) -> set[str]:
    if not n:
        return set()
    kept: set[str] = set()
    seen: list[object] = []
    for b in backups:  # newest first
        p = period(b.when.astimezone(tz))
        if p in seen:
            continue
        seen.append(p)
        kept.add(b.name)
        if len(seen) >= n:
            break
    return kept


def plan(backups: Iterable[BackupInfo], spec: RetentionSpec, *, now: dt.datetime, tz: ZoneInfo) -> set[str]:
    """Names of Backups to delete. Never the newest success, never a pinned or active one."""
    scheduled = [b for b in backups if b.trigger == Trigger.SCHEDULED]
    ok = sorted(
        (b for b in scheduled if b.phase == BackupPhase.COMPLETED), key=lambda b: (b.when, b.name), reverse=True
    )
    failed = sorted(
        (b for b in scheduled if b.phase == BackupPhase.FAILED), key=lambda b: (b.when, b.name), reverse=True
    )
    delete: set[str] = set()
    if ok:
        keep = {ok[0].name} | {b.name for b in ok if b.pinned}
        if spec.has_counts:
            keep |= {b.name for b in ok[: spec.keep_last or 0]}
            keep |= _newest_per_period(ok, spec.keep_daily, lambda t: t.date(), tz)
            keep |= _newest_per_period(ok, spec.keep_weekly, lambda t: t.isocalendar()[:2], tz)
            keep |= _newest_per_period(ok, spec.keep_monthly, lambda t: (t.year, t.month), tz)
            keep |= _newest_per_period(ok, spec.keep_yearly, lambda t: t.year, tz)
            delete |= {b.name for b in ok if b.name not in keep}
        if spec.max_age is not None:
            delete |= {b.name for b in ok if now - b.when > spec.max_age and b.name != ok[0].name and not b.pinned}
    delete |= {b.name for b in failed[spec.keep_failed :] if not b.pinned}
    return delete
