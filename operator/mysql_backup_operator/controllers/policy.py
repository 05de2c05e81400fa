"""The BackupPolicy reconciler: schedules, retention, status roll-up and recovery from storage.

One pass each time the work queue hands us the policy (its own watch events, any change of one of
its Backups, or the wake-up it asked for: the next schedule time, the next sync, the moment the
overdue threshold passes). It reads the policy and its Backups from the watch-fed cache, so a pass
that changes nothing makes no API call. Each step is idempotent:
1. schedule: create the due scheduled Backup under its deterministic name (at most one catch-up;
   skipped and recorded while an earlier run of the same policy is still queued or running);
2. roll up counts, last success/failure and the BackupOverdue condition;
3. prune by retention, but only right after a *scheduled* backup succeeded, so that nothing is
   ever deleted while backups are failing;
4. with `storage.sync`, import dumps that have a valid manifest but no Backup, and flag Backups
   whose objects vanished (condition DataMissing).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from .. import jobs, metrics
from ..api import BACKUPS, GROUP, POLICIES
from ..api.backup import BackupPhase, Trigger
from ..api.common import SpecError, iso, parse_iso, set_condition
from ..api.policy import DEFAULT_SYNC_INTERVAL_SECONDS, DEFAULT_TIME_ZONE, PolicySpec, parse_policy
from ..retention import BackupInfo, RetentionSpec, parse_retention, plan
from ..schedule import Schedule, interval, parse_schedule, run_name, tick
from .cache import BackupRow
from .operation import Context, utcnow
from .pitr import PitrController
from .sync import SyncController

LOG = logging.getLogger(__name__)
COND_OVERDUE = "BackupOverdue"
COND_SCHEDULE = "ScheduleValid"


@dataclass(frozen=True)
class ScheduleSpec:
    schedule: Schedule | None
    suspend: bool
    starting_deadline: dt.timedelta | None


def parse_schedule_spec(spec: Mapping[str, Any]) -> ScheduleSpec:
    expr = spec.get("schedule")
    sched = parse_schedule(str(expr), str(spec.get("timeZone") or DEFAULT_TIME_ZONE)) if expr else None
    sds = spec.get("startingDeadlineSeconds")
    if sds is not None and (not isinstance(sds, int) or sds < 0):
        raise SpecError("spec.startingDeadlineSeconds must be a non-negative integer")
    return ScheduleSpec(
        schedule=sched,
        suspend=bool(spec.get("suspend", False)),
        starting_deadline=dt.timedelta(seconds=sds) if sds is not None else None,
    )


def _ts(s: str | None) -> dt.datetime | None:
    return parse_iso(s) if s else None


def backup_info(b: BackupRow) -> BackupInfo:
    return b.info()


def _seconds_until(t: dt.datetime | None, now: dt.datetime) -> float | None:
    return None if t is None else max(0.0, (t - now).total_seconds())


class PolicyController:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sync = SyncController(ctx)
        self.pitr = PitrController(ctx)
        self.kube = ctx.kube

    def reconcile(self, obj: dict[str, Any]) -> float | None:
        """One pass; returns the seconds after which the policy wants to be looked at again."""
        m = obj["metadata"]
        ns, name = m["namespace"], m["name"]
        gen = int(m.get("generation") or 1)
        status: dict[str, Any] = dict(obj.get("status") or {})
        now = utcnow()
        patch: dict[str, Any] = {"observedGeneration": gen}
        conditions = list(status.get("conditions") or [])
        try:
            policy = parse_policy(
                name=name, namespace=ns, spec=obj.get("spec") or {}, default_image=self.ctx.settings.agent_image
            )
            sched = parse_schedule_spec(obj.get("spec") or {})
            retention = parse_retention((obj.get("spec") or {}).get("retention"))
        except SpecError as e:
            conditions = set_condition(
                conditions,
                type_=COND_SCHEDULE,
                status=False,
                reason="InvalidSpec",
                message=str(e),
                generation=gen,
                now=now,
            )
            if status.get("reason") != "InvalidSpec" or status.get("message") != str(e):
                self.kube.event(obj, warning=True, reason="InvalidSpec", message=str(e))
            self._patch(obj, {**patch, "reason": "InvalidSpec", "message": str(e), "conditions": conditions})
            return None
        patch.update({"reason": None, "message": None})
        backups = self.ctx.cache.backups_of_policy(ns, name)
        wake: list[float | None] = []

        if sched.schedule is not None:
            conditions = set_condition(
                conditions, type_=COND_SCHEDULE, status=True, reason="Valid", message=sched.schedule.expression,
                generation=gen, now=now,
            )  # fmt: skip
            self._schedule(
                obj,
                policy=policy,
                sched=sched,
                schedule=sched.schedule,
                backups=backups,
                status=status,
                patch=patch,
                now=now,
            )
            wake.append(_seconds_until(_ts(patch.get("nextScheduleTime")), now))
        else:
            patch["nextScheduleTime"] = None

        patch.update(self._rollup(backups))
        self._observe(ns, name, backups)
        conditions, overdue_at = self._overdue(conditions, sched=sched, backups=backups, obj=obj, gen=gen, now=now)
        wake.append(_seconds_until(overdue_at, now))
        pruned = self._prune(obj, retention=retention, backups=backups, status=status, now=now)
        if pruned is not None:
            patch.update(pruned)
        spec_storage = (obj.get("spec") or {}).get("storage") or {}
        if spec_storage.get("sync"):
            every = int(spec_storage.get("syncIntervalSeconds") or DEFAULT_SYNC_INTERVAL_SECONDS)
            last = _ts(status.get("lastSyncTime"))
            if last is None or (now - last).total_seconds() >= every:
                patch.update(self.sync.run(obj, policy, now))
                last = now
            wake.append(_seconds_until(last + dt.timedelta(seconds=every), now))
        pitr_patch, conditions, pitr_wake = self.pitr.policy_pass(obj, policy, conditions, now)
        patch.update(pitr_patch)
        wake.append(pitr_wake)
        patch["conditions"] = conditions
        self._patch(obj, patch)
        due = [w for w in wake if w is not None]
        # A schedule due "now" was just handled: look again one second later, never in a hot loop.
        return max(1.0, min(due)) if due else None

    # ------------------------------------------------------------------ helpers

    def _patch(self, obj: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        current = obj.get("status") or {}
        changed = {k: v for k, v in patch.items() if current.get(k) != v and not (v is None and k not in current)}
        if changed:
            m = obj["metadata"]
            self.kube.patch_status(POLICIES, m["namespace"], m["name"], changed)

    def _schedule(
        self,
        obj: Mapping[str, Any],
        *,
        policy: PolicySpec,
        sched: ScheduleSpec,
        schedule: Schedule,
        backups: Sequence[BackupRow],
        status: Mapping[str, Any],
        patch: dict[str, Any],
        now: dt.datetime,
    ) -> None:
        m = obj["metadata"]
        t = tick(
            schedule,
            now=now,
            last_scheduled=_ts(status.get("lastScheduleTime")),
            created=parse_iso(m["creationTimestamp"]),
            starting_deadline=sched.starting_deadline,
        )
        patch["nextScheduleTime"] = None if sched.suspend else iso(t.next)
        if sched.suspend:
            return
        if t.missed is not None:
            patch["lastScheduleTime"] = iso(t.missed)
            patch["missedRuns"] = int(status.get("missedRuns") or 0) + 1
            msg = f"missed the run due at {iso(t.missed)}: more than startingDeadlineSeconds late"
            self.kube.event(obj, warning=True, reason="MissedSchedule", message=msg)
            return
        if t.due is None:
            return
        active = [b.name for b in backups if b.trigger == Trigger.SCHEDULED and not b.terminal]
        name = run_name(policy.name, t.due)
        patch["lastScheduleTime"] = iso(t.due)
        if active and name not in active:
            patch["skippedRuns"] = int(status.get("skippedRuns") or 0) + 1
            patch["lastSkippedTime"] = iso(t.due)
            msg = f"skipped the run due at {iso(t.due)}: {', '.join(active)} is still queued or running"
            self.kube.event(obj, warning=True, reason="ScheduleSkipped", message=msg)
            return
        body = jobs.render_backup(
            name=name,
            namespace=m["namespace"],
            policy=policy,
            trigger=Trigger.SCHEDULED,
            description=f"scheduled run for {iso(t.due)}",
            annotations={f"{GROUP}/scheduled-for": iso(t.due)},
        )
        if self.kube.create(BACKUPS, m["namespace"], body):
            LOG.info("BackupPolicy %s/%s: created scheduled Backup %s", m["namespace"], m["name"], name)
            self.kube.event(obj, warning=False, reason="Scheduled", message=f"created Backup {name}")

    @staticmethod
    def _observe(namespace: str, policy: str, backups: Sequence[BackupRow]) -> None:
        ok = sorted((b for b in backups if b.phase == BackupPhase.COMPLETED), key=lambda b: backup_info(b).when)
        last = ok[-1] if ok else None
        phases: dict[str, int] = {}
        for b in backups:
            phases[b.phase] = phases.get(b.phase, 0) + 1
        metrics.observe_policy(
            namespace=namespace,
            policy=policy,
            last_success=backup_info(last).when.timestamp() if last else None,
            duration=last.duration if last else None,
            dump_bytes=last.size_bytes if last else None,
            stored_bytes=last.stored_bytes if last else None,
            total_stored=sum(b.stored_bytes or 0 for b in ok),
            phases=phases,
        )

    @staticmethod
    def _rollup(backups: Sequence[BackupRow]) -> dict[str, Any]:
        infos = [(backup_info(b), b) for b in backups]
        ok = sorted((x for x in infos if x[0].phase == BackupPhase.COMPLETED), key=lambda x: (x[0].when, x[0].name))
        bad = sorted((x for x in infos if x[0].phase == BackupPhase.FAILED), key=lambda x: (x[0].when, x[0].name))
        out: dict[str, Any] = {
            "backupCount": len(infos),
            "completedCount": len(ok),
            "failedCount": len(bad),
            "storedBytes": sum(b.stored_bytes or 0 for _, b in ok),
        }
        if ok:
            out["lastSuccessfulBackup"] = ok[-1][0].name
            out["lastSuccessfulTime"] = iso(ok[-1][0].when)
        if bad:
            out["lastFailedBackup"] = bad[-1][0].name
            out["lastFailedTime"] = iso(bad[-1][0].when)
            out["lastFailureReason"] = bad[-1][1].reason
        return out

    def _overdue(
        self,
        conditions: list[dict[str, Any]],
        *,
        sched: ScheduleSpec,
        backups: Sequence[BackupRow],
        obj: Mapping[str, Any],
        gen: int,
        now: dt.datetime,
    ) -> tuple[list[dict[str, Any]], dt.datetime | None]:
        """The BackupOverdue condition, and when it would next turn True (a wake-up time)."""
        if sched.schedule is None or sched.suspend:
            return [c for c in conditions if c.get("type") != COND_OVERDUE], None
        ok = [backup_info(b) for b in backups if b.trigger == Trigger.SCHEDULED and b.phase == BackupPhase.COMPLETED]
        last = max((x.when for x in ok), default=None)
        since = last or parse_iso(obj["metadata"]["creationTimestamp"])
        limit = 2 * interval(sched.schedule, since)
        overdue = now - since > limit
        what = f"last successful scheduled backup at {iso(last)}" if last else "no successful scheduled backup yet"
        was = next((c for c in conditions if c.get("type") == COND_OVERDUE), {}).get("status") == "True"
        if overdue and not was:
            self.kube.event(obj, warning=True, reason="BackupOverdue", message=f"{what}; expected within {limit}")
        updated = set_condition(
            conditions,
            type_=COND_OVERDUE,
            status=overdue,
            reason="Overdue" if overdue else "UpToDate",
            message=f"{what} (threshold {limit}, twice the schedule interval)",
            generation=gen,
            now=now,
        )
        return updated, None if overdue else since + limit + dt.timedelta(seconds=1)

    def _prune(
        self,
        obj: Mapping[str, Any],
        *,
        retention: RetentionSpec,
        backups: Sequence[BackupRow],
        status: Mapping[str, Any],
        now: dt.datetime,
    ) -> dict[str, Any] | None:
        scheduled = sorted(
            (backup_info(b) for b in backups if b.trigger == Trigger.SCHEDULED),
            key=lambda x: (x.created, x.name),
        )
        finished = [x for x in scheduled if x.phase.terminal]
        if not finished or finished[-1].phase != BackupPhase.COMPLETED:
            return None  # nothing succeeded yet, or the newest run failed: never delete anything
        trigger_name = finished[-1].name
        if status.get("lastPrunedAfter") == trigger_name:
            return None
        tz = ZoneInfo(str((obj.get("spec") or {}).get("timeZone") or "UTC"))
        doomed = sorted(plan([backup_info(b) for b in backups], retention, now=now, tz=tz))
        for name in doomed:
            self.kube.delete(BACKUPS, obj["metadata"]["namespace"], name)
        if doomed:
            LOG.info("BackupPolicy %s: pruned %s", obj["metadata"]["name"], ", ".join(doomed))
            self.kube.event(obj, warning=False, reason="Pruned", message=f"retention removed {', '.join(doomed)}")
        return {
            "lastPrunedAfter": trigger_name,
            "lastPruneTime": iso(now),
            "prunedCount": int(status.get("prunedCount") or 0) + len(doomed),
        }
