from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mysql_backup_operator.api.backup import BackupPhase, Trigger
from mysql_backup_operator.api.common import SpecError
from mysql_backup_operator.retention import (
    DEFAULT_RETENTION,
    BackupInfo,
    RetentionSpec,
    parse_retention,
    plan,
)
from mysql_backup_operator.schedule import interval, parse_schedule, run_name, tick

UTC = dt.UTC
T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_invalid_schedule_and_zone_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="cron"):
        parse_schedule("61 * * * *")
    with pytest.raises(SpecError, match="IANA"):
        parse_schedule("@daily", "Mars/Olympus")


def test_tick_creates_only_the_latest_missed_run() -> None:
    s = parse_schedule("*/10 * * * *")
    # Last run at 12:00; the operator was down until 12:47: 12:10..12:40 were missed, only 12:40 runs.
    t = tick(s, now=T0 + dt.timedelta(minutes=47), last_scheduled=T0, created=T0, starting_deadline=None)
    assert t.due == T0 + dt.timedelta(minutes=40)
    assert t.next == T0 + dt.timedelta(minutes=50)


def test_tick_respects_starting_deadline() -> None:
    s = parse_schedule("*/10 * * * *")
    t = tick(
        s,
        now=T0 + dt.timedelta(minutes=47),
        last_scheduled=T0,
        created=T0,
        starting_deadline=dt.timedelta(minutes=5),
    )
    assert t.due is None and t.missed == T0 + dt.timedelta(minutes=40)


def test_tick_is_quiet_between_runs_and_after_creation() -> None:
    s = parse_schedule("*/10 * * * *")
    assert tick(s, now=T0 + dt.timedelta(minutes=5), last_scheduled=T0, created=T0, starting_deadline=None).due is None
    # A policy created at 12:05 does not run for 12:00.
    c = T0 + dt.timedelta(minutes=5)
    assert tick(s, now=c + dt.timedelta(seconds=30), last_scheduled=None, created=c, starting_deadline=None).due is None


def test_a_run_is_never_due_before_its_time() -> None:
    s = parse_schedule("* * * * *")
    just_before = T0 - dt.timedelta(microseconds=100_000)
    t = tick(s, now=just_before, last_scheduled=T0 - dt.timedelta(minutes=1), created=T0, starting_deadline=None)
    assert t.due is None and t.next == T0
    at = tick(s, now=T0, last_scheduled=T0 - dt.timedelta(minutes=1), created=T0, starting_deadline=None)
    assert at.due == T0 and at.next == T0 + dt.timedelta(minutes=1)


def test_time_zone_and_names() -> None:
    s = parse_schedule("0 2 * * *", "Europe/Berlin")
    t = tick(s, now=dt.datetime(2026, 7, 1, 0, 30, tzinfo=UTC), last_scheduled=None, created=T0, starting_deadline=None)
    assert t.due == dt.datetime(2026, 7, 1, 0, 0, tzinfo=UTC)  # 02:00 CEST
    assert run_name("nightly", t.due) == "nightly-202607010000"
    assert interval(parse_schedule("@hourly"), T0) == dt.timedelta(hours=1)


def b(name: str, hours_ago: float, phase: BackupPhase = BackupPhase.COMPLETED, **kw: object) -> BackupInfo:
    created = T0 - dt.timedelta(hours=hours_ago)
    return BackupInfo(
        name=name,
        trigger=kw.pop("trigger", Trigger.SCHEDULED),  # type: ignore[arg-type]
        phase=phase,
        created=created,
        completed=created + dt.timedelta(minutes=1),
        pinned=bool(kw.pop("pinned", False)),
    )


def test_keep_last_three_of_five() -> None:
    backups = [b(f"s{i}", i) for i in range(5)]
    assert plan(backups, RetentionSpec(keep_last=3), now=T0, tz=ZoneInfo("UTC")) == {"s3", "s4"}


def test_manual_pre_restore_pinned_and_active_are_never_pruned() -> None:
    backups = [
        b("s0", 0),
        b("m", 10, trigger=Trigger.MANUAL),
        b("p", 11, trigger=Trigger.PRE_RESTORE),
        b("pin", 12, pinned=True),
        b("run", 13, BackupPhase.RUNNING),
        b("old", 14),
    ]
    assert plan(backups, RetentionSpec(keep_last=1), now=T0, tz=ZoneInfo("UTC")) == {"old"}


def test_failed_backups_keep_failed() -> None:
    backups = [b("ok", 0)] + [b(f"f{i}", i + 1, BackupPhase.FAILED) for i in range(5)]
    assert plan(backups, RetentionSpec(keep_last=5, keep_failed=2), now=T0, tz=ZoneInfo("UTC")) == {"f2", "f3", "f4"}


def test_gfs_daily_keeps_newest_per_day() -> None:
    backups = [b(f"h{i}", i * 6) for i in range(12)]  # 4 per day over 3 days
    deleted = plan(backups, RetentionSpec(keep_daily=2), now=T0, tz=ZoneInfo("UTC"))
    kept = {x.name for x in backups} - deleted
    assert kept == {"h0", "h3"}  # newest of today (h0, h1, h2 finish 12:01, 06:01, 00:01) and of yesterday


def test_default_and_max_age() -> None:
    assert parse_retention(None) == DEFAULT_RETENTION
    spec = parse_retention({"maxAge": "2d"})
    backups = [b("new", 1), b("mid", 30), b("old", 72)]
    assert plan(backups, spec, now=T0, tz=ZoneInfo("UTC")) == {"old"}
    with pytest.raises(SpecError):
        parse_retention({"keepLast": -1})
    with pytest.raises(SpecError):
        parse_retention({"maxAge": "forever"})


backup_lists = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=24 * 400),
        st.sampled_from(list(BackupPhase)),
        st.sampled_from(list(Trigger)),
        st.booleans(),
    ),
    max_size=40,
).map(lambda xs: [b(f"b{i}", h, ph, trigger=tr, pinned=pin and i % 5 == 0) for i, (h, ph, tr, pin) in enumerate(xs)])
counts = st.one_of(st.none(), st.integers(min_value=0, max_value=10))
specs = st.builds(
    RetentionSpec,
    keep_last=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=counts,
    max_age=st.one_of(st.none(), st.timedeltas(min_value=dt.timedelta(hours=1), max_value=dt.timedelta(days=500))),
    keep_failed=st.integers(min_value=0, max_value=5),
)
TZ = ZoneInfo("Europe/Berlin")


@settings(max_examples=300)
@given(backup_lists, specs)
def test_never_deletes_the_newest_success_or_non_scheduled(backups: list[BackupInfo], spec: RetentionSpec) -> None:
    deleted = plan(backups, spec, now=T0, tz=TZ)
    ok = [x for x in backups if x.trigger == Trigger.SCHEDULED and x.phase == BackupPhase.COMPLETED]
    if ok:
        newest = max(ok, key=lambda x: (x.when, x.name))
        assert newest.name not in deleted
    for x in backups:
        if x.name in deleted:
            assert x.trigger == Trigger.SCHEDULED and x.phase in (BackupPhase.COMPLETED, BackupPhase.FAILED)
            assert not x.pinned


@settings(max_examples=300)
@given(backup_lists, specs, st.sampled_from(["keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"]))
def test_more_keep_never_deletes_more(backups: list[BackupInfo], spec: RetentionSpec, field: str) -> None:
    current = getattr(spec, field)
    if current is None:
        return  # None -> N changes the rule set itself (see has_counts), not "more of the same"
    more = RetentionSpec(**{**spec.__dict__, field: current + 1})
    assert plan(backups, more, now=T0, tz=TZ) <= plan(backups, spec, now=T0, tz=TZ)


@settings(max_examples=300)
@given(backup_lists, specs)
def test_plan_is_stable(backups: list[BackupInfo], spec: RetentionSpec) -> None:
    first = plan(backups, spec, now=T0, tz=TZ)
    rest = [x for x in backups if x.name not in first]
    assert plan(rest, spec, now=T0, tz=TZ) == set()
