"""The Restore controller: Pending -> (lock) -> BackingUp (safety Backup) -> Restoring (Job) ->
Completed | Failed.

The safety rule lives here: every Restore first takes a pre-restore Backup of the same database,
under the Restore's own lock, and the restore Job is created only once that Backup completed. A
failed safety backup fails the Restore with the database untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import jobs, metrics, naming
from ..api import (
    BACKUPS,
    COND_DATA_MISSING,
    LABEL_DB_KEY,
    LABEL_MANAGED_BY,
    LABEL_POLICY,
    LABEL_RESTORE,
    LABEL_RESTORE_UID,
    MANAGED_BY,
    RESTORES,
    Reason,
)
from ..api.backup import BackupPhase, Trigger
from ..api.common import SpecError, parse_iso
from ..api.policy import PolicySpec
from ..api.restore import RestorePhase, RestoreSpec, RestoreStatus, parse_restore, restore_plan
from ..api.schema import from_wire
from .operation import OperationController, Step, phase_of, utcnow


class RestoreController(OperationController):
    kind = "Restore"
    plural = RESTORES
    what = "restore"

    def _terminal(self, phase: str) -> bool:
        return RestorePhase(phase).terminal

    def _status(self, obj: Mapping[str, Any]) -> RestoreStatus:
        return from_wire(RestoreStatus, obj.get("status"))

    def _count_failure(self, obj: Mapping[str, Any], reason: str) -> None:
        metrics.restore_finished(namespace=obj["metadata"]["namespace"], result="failed")

    def _agent_failure(self) -> Reason:
        return Reason.RESTORE_FAILED

    def reconcile(self, obj: dict[str, Any]) -> None:
        begun = self._begin(obj, parse_restore)
        if begun is None:
            return
        step, spec = begun
        pending = step.phase == RestorePhase.PENDING
        backup = self.kube.get_backup(step.namespace, spec.backup)
        if backup is None:
            held = None if pending else (obj["metadata"].get("labels") or {}).get(LABEL_DB_KEY)
            msg = f'Backup "{spec.backup}" not found in namespace {step.namespace}'
            return self._fail(obj, Reason.BACKUP_NOT_FOUND, msg, release=held)
        bstatus = backup.get("status") or {}
        if pending and not self._backup_usable(obj, step, spec, bstatus):
            return
        policy_name = (backup.get("spec") or {}).get("policyRef", {}).get("name", "")
        ok, policy = self._policy_or_fail(obj, policy_name)
        if not ok:
            return
        if policy is None:
            msg = f'BackupPolicy "{policy_name}" of Backup "{spec.backup}" not found'
            return self._fail(obj, Reason.POLICY_NOT_FOUND, msg, release=None)
        db_key = naming.database_key(policy.database.identity)
        try:
            databases, target = restore_plan(spec, tuple(bstatus.get("databases") or ()))
        except SpecError as e:
            return self._fail(obj, Reason.INVALID_SPEC, str(e), release=None)
        self._ensure_labels(
            obj, {LABEL_DB_KEY: db_key, LABEL_POLICY: naming.bounded(policy.name), LABEL_MANAGED_BY: MANAGED_BY}
        )
        if pending:
            if self._take_lock(obj, db_key, policy.database.identity):
                self._start(obj, step, policy, db_key=db_key)
            return
        if step.phase == RestorePhase.BACKING_UP:
            return self._after_safety_backup(
                obj, step, spec, policy, bstatus, db_key=db_key, databases=databases, target=target
            )
        self._follow(obj, step, policy, db_key=db_key, databases=databases)

    def _backup_usable(self, obj: dict[str, Any], step: Step, spec: RestoreSpec, bstatus: Mapping[str, Any]) -> bool:
        """Pending: the Backup to restore must be complete with its objects present; waits for a running one."""
        gone: Mapping[str, Any] = next(
            (c for c in bstatus.get("conditions") or [] if c.get("type") == COND_DATA_MISSING), {}
        )
        if gone.get("status") == "True":
            msg = f'Backup "{spec.backup}" has lost its objects in storage ({gone.get("message")}); not restoring'
            self._fail(obj, Reason.DATA_MISSING, msg, release=None)
            return False
        if bstatus.get("phase") == BackupPhase.COMPLETED:
            return True
        if bstatus.get("phase") == BackupPhase.FAILED:
            msg = f'Backup "{spec.backup}" failed; nothing to restore'
            self._fail(obj, Reason.BACKUP_NOT_COMPLETED, msg, release=None)
            return False
        msg = f'waiting for Backup "{spec.backup}" to complete'
        self._set(obj, self._status(obj).pending(message=msg, generation=step.generation))
        return False

    def _start(self, obj: dict[str, Any], step: Step, policy: PolicySpec, *, db_key: str) -> None:
        """Pending, lock held: check the Secrets, then ask for the safety backup."""
        problem, _ = self.ctx.missing_secrets(step.namespace, policy)
        if problem:
            return self._fail(obj, Reason.SECRET_NOT_FOUND, problem, release=db_key)
        safety = self._ensure_pre_restore_backup(obj, policy)
        now = utcnow()
        self._set(obj, self._status(obj).backing_up(pre_restore=safety, generation=step.generation, now=now))
        self.kube.event(obj, warning=False, reason="PreRestoreBackup", message=f"taking safety backup {safety} first")

    def _after_safety_backup(
        self,
        obj: dict[str, Any],
        step: Step,
        spec: RestoreSpec,
        policy: PolicySpec,
        bstatus: Mapping[str, Any],
        *,
        db_key: str,
        databases: tuple[str, ...],
        target: str | None,
    ) -> None:
        """BackingUp: once the safety Backup completed, create the restore Job."""
        pre_name = obj["status"].get("preRestoreBackup") or self._ensure_pre_restore_backup(obj, policy)
        pre = self.kube.get_backup(step.namespace, pre_name)
        if pre is None:
            self._ensure_pre_restore_backup(obj, policy)
            return
        pre_phase = phase_of(pre)
        if pre_phase == BackupPhase.FAILED:
            pst = pre.get("status") or {}
            return self._fail(
                obj,
                Reason.PRE_RESTORE_BACKUP_FAILED,
                f"pre-restore safety backup {pre_name} failed ({pst.get('reason')}: {pst.get('message')}); "
                "the database was not touched",
                release=db_key,
            )
        if pre_phase != BackupPhase.COMPLETED:
            return
        rendered = jobs.render_restore_job(
            restore_name=step.name,
            restore_uid=obj["metadata"]["uid"],
            namespace=step.namespace,
            policy=policy,
            location=bstatus["location"],
            manifest_location=bstatus["manifestLocation"],
            sha256=bstatus["sha256"],
            databases=databases,
            target=target,
            db_key=db_key,
            tables=spec.tables,
            parallelism=spec.parallelism,
        )
        created = self.kube.create_job(rendered)
        job_name = rendered["metadata"]["name"]
        self._set(obj, self._status(obj).restoring(job_name=job_name, databases=databases, generation=step.generation))
        if created:
            self.kube.event(obj, warning=False, reason="Restoring", message=f"restore Job {job_name} created")

    def _follow(
        self, obj: dict[str, Any], step: Step, policy: PolicySpec, *, db_key: str, databases: tuple[str, ...]
    ) -> None:
        """Restoring: follow the Job."""
        job_name = obj["status"].get("jobName") or naming.restore_job_name(step.name)
        try:
            end = self._job_end(step.namespace, job_name)
        except LookupError:
            return self._fail(obj, Reason.JOB_DELETED, f"restore Job {job_name} disappeared", release=db_key)
        if end is None:
            return
        if not end.ok:
            return self._fail_from_job(obj, policy, end, release=db_key)
        self._set(obj, self._status(obj).completed(generation=step.generation, now=utcnow()))
        metrics.restore_finished(namespace=step.namespace, result="completed")
        self.kube.event(obj, warning=False, reason="Completed", message=f"restored {', '.join(databases)}")
        self.ctx.release(db_key, obj)

    def _ensure_pre_restore_backup(self, restore: Mapping[str, Any], policy: PolicySpec) -> str:
        m = restore["metadata"]
        name = naming.pre_restore_backup_name(m["name"], parse_iso(m["creationTimestamp"]))
        body = jobs.render_backup(
            name=name,
            namespace=m["namespace"],
            policy=policy,
            trigger=Trigger.PRE_RESTORE,
            description=f"automatic safety backup before Restore {m['name']}",
            labels={LABEL_RESTORE: naming.bounded(m["name"]), LABEL_RESTORE_UID: m["uid"]},
            annotations={"mysqlbackup.dev/restore": m["name"]},
            # Retain, and deliberately no ownerReference: deleting the Restore never deletes its safety net.
            deletion_policy="Retain",
        )
        self.kube.create(BACKUPS, m["namespace"], body)
        return name
