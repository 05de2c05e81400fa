"""The Backup controller: Pending -> (lock) -> Running (Job) -> Completed | Failed.

A pre-restore Backup runs under its Restore's lock instead of queueing behind it. When the Job is
gone before the operator saw it finish, object storage decides: a manifest written by this very
Backup means the dump completed. The data finalizer's work (deleting the objects) lives here too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .. import jobs, metrics, naming
from ..api import (
    ANNOTATION_IMPORTED_FROM,
    BACKUPS,
    LABEL_DB_KEY,
    LABEL_MANAGED_BY,
    LABEL_POLICY,
    LABEL_RESTORE_UID,
    LABEL_TRIGGER,
    MANAGED_BY,
    Reason,
)
from ..api.backup import BackupPhase, BackupSpec, BackupStatus, Trigger, parse_backup
from ..api.common import parse_iso
from ..api.policy import PolicySpec
from ..api.schema import from_wire
from ..k8s.locking import Operation
from ..objectstore import Location, StorageError, result_from_manifest
from .operation import OperationController, Step, utcnow

LOG = logging.getLogger(__name__)
# Held by every Backup until its objects are deleted (or kept, with deletionPolicy Retain). The
# operator manages it itself (no kopf on.delete handler), see docs/design-event-driven-core.md.
BACKUP_FINALIZER = "mysqlbackup.dev/delete-data"


class BackupController(OperationController):
    kind = "Backup"
    plural = BACKUPS
    what = "backup"

    def _terminal(self, phase: str) -> bool:
        return BackupPhase(phase).terminal

    def _status(self, obj: Mapping[str, Any]) -> BackupStatus:
        return from_wire(BackupStatus, obj.get("status"))

    def _count_failure(self, obj: Mapping[str, Any], reason: str) -> None:
        policy = str((obj.get("spec") or {}).get("policyRef", {}).get("name", ""))
        metrics.backup_failed(namespace=obj["metadata"]["namespace"], policy=policy, reason=reason)

    def _agent_failure(self) -> Reason:
        return Reason.DUMP_FAILED

    def reconcile(self, obj: dict[str, Any]) -> None:
        begun = self._begin(obj, parse_backup)
        if begun is None:
            return
        step, spec = begun
        ok, policy = self._policy_or_fail(obj, spec.policy)
        if not ok:
            return
        if policy is None:
            age = (utcnow() - parse_iso(obj["metadata"]["creationTimestamp"])).total_seconds()
            msg = f'BackupPolicy "{spec.policy}" not found in namespace {step.namespace}'
            if age < self.ctx.settings.missing_policy_grace_seconds and step.phase == BackupPhase.PENDING:
                self._set(obj, self._status(obj).pending(message=f"waiting: {msg}", generation=step.generation))
                return
            return self._fail(obj, Reason.POLICY_NOT_FOUND, msg, release=None)
        db_key = naming.database_key(policy.database.identity)
        self._ensure_labels(
            obj,
            {
                LABEL_DB_KEY: db_key,
                LABEL_POLICY: naming.bounded(policy.name),
                LABEL_TRIGGER: str(spec.trigger),
                LABEL_MANAGED_BY: MANAGED_BY,
            },
            finalizer=BACKUP_FINALIZER,
        )
        if (obj["metadata"].get("annotations") or {}).get(ANNOTATION_IMPORTED_FROM):
            return  # created by recovery from storage; its status is written by the importer
        under_restore = self._parent_restore_holds_lock(obj, db_key)
        # The lock a failure must release: ours, unless we run under our Restore's lock.
        own_lock = None if under_restore else db_key
        if step.phase == BackupPhase.PENDING:
            if under_restore or self._take_lock(obj, db_key, policy.database.identity):
                self._start(obj, step, spec, policy, db_key=db_key, own_lock=own_lock)
            return
        self._follow(obj, step, policy, own_lock=own_lock)

    def _start(
        self,
        obj: dict[str, Any],
        step: Step,
        spec: BackupSpec,
        policy: PolicySpec,
        *,
        db_key: str,
        own_lock: str | None,
    ) -> None:
        """Pending, lock held: check the Secrets, create the Job, record where the dump will be."""
        problem, _ = self.ctx.missing_secrets(step.namespace, policy)
        if problem:
            return self._fail(obj, Reason.SECRET_NOT_FOUND, problem, release=own_lock)
        uid = obj["metadata"]["uid"]
        rendered = jobs.render_backup_job(
            backup_name=step.name,
            backup_uid=uid,
            namespace=step.namespace,
            trigger=str(spec.trigger),
            policy=policy,
            db_key=db_key,
        )
        created = self.kube.create_job(rendered)
        job_name = rendered["metadata"]["name"]
        running = self._status(obj).running(job_name=job_name, generation=step.generation, now=utcnow())
        directory = naming.storage_dir(
            prefix=policy.s3.prefix, namespace=step.namespace, policy=policy.name, backup=step.name, uid=uid
        )
        loc = Location.for_policy(
            policy, naming.dump_key(directory, policy.compression), naming.manifest_key(directory)
        )
        running["storage"] = loc.to_status()
        self._set(obj, running)
        if created:
            self.kube.event(obj, warning=False, reason="Started", message=f"backup Job {job_name} created")

    def _follow(self, obj: dict[str, Any], step: Step, policy: PolicySpec, *, own_lock: str | None) -> None:
        """Running: follow the Job."""
        job_name = obj["status"].get("jobName") or naming.backup_job_name(step.name)
        try:
            end = self._job_end(step.namespace, job_name)
        except LookupError:
            return self._job_gone(obj, step, job_name, own_lock=own_lock)
        if end is None:
            return
        if not end.ok:
            return self._fail_from_job(obj, policy, end, release=own_lock)
        result = end.result
        self._set(obj, self._status(obj).completed(result=result, generation=step.generation, now=utcnow()))
        size = result.get("storedBytes")
        self.kube.event(
            obj, warning=False, reason="Completed", message=f"backup stored at {result.get('location')} ({size} bytes)"
        )
        if own_lock:
            self.ctx.release(own_lock, obj)

    def _job_gone(self, obj: dict[str, Any], step: Step, job_name: str, *, own_lock: str | None) -> None:
        # The Job can be gone for good reasons (ttlSecondsAfterFinished while the operator was
        # down). Object storage is the source of truth: a manifest written by this very Backup
        # means the dump completed.
        recovered = self._result_from_storage(obj)
        if recovered is None:
            return self._fail(
                obj,
                Reason.JOB_DELETED,
                f"backup Job {job_name} disappeared before finishing, and no manifest was written",
                release=own_lock,
            )
        done = self._status(obj).completed(result=recovered, generation=step.generation, now=utcnow())
        done["message"] = f"Job {job_name} is gone; result recovered from its manifest"
        self._set(obj, done)
        self.kube.event(obj, warning=False, reason="Completed", message=done["message"])
        if own_lock:
            self.ctx.release(own_lock, obj)

    def _result_from_storage(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        st = obj.get("status") or {}
        if not st.get("storage"):
            return None
        loc = Location.from_status(st["storage"])
        try:
            store = self.ctx.store(obj["metadata"]["namespace"], loc)
        except StorageError:
            return None
        try:
            manifest = store.read_json(loc.manifest_key)
            if not manifest or (manifest.get("backup") or {}).get("uid") != obj["metadata"]["uid"]:
                return None
            if not store.holds_all_of(manifest):
                return None
        except StorageError:
            return None
        finally:
            store.close()
        return result_from_manifest(loc.bucket, loc.manifest_key, manifest)

    def _parent_restore_holds_lock(self, obj: Mapping[str, Any], db_key: str) -> bool:
        """A pre-restore Backup runs under its Restore's lock instead of queueing behind it."""
        if (obj.get("spec") or {}).get("trigger") != Trigger.PRE_RESTORE:
            return False
        restore_uid = (obj["metadata"].get("labels") or {}).get(LABEL_RESTORE_UID)
        holder, _ = self.ctx.lock.holder(db_key)
        parsed = Operation.parse_identity(holder or "")
        return bool(parsed and parsed[0] == "Restore" and parsed[3] == restore_uid)

    # ---------------------------------------------------------------- the data finalizer

    def delete_data(self, obj: dict[str, Any]) -> str:
        """The Backup finalizer's work. Raises StorageError to keep the finalizer and retry."""
        m = obj["metadata"]
        ns, name = m["namespace"], m["name"]
        spec, st = obj.get("spec") or {}, obj.get("status") or {}
        if spec.get("deletionPolicy", "Delete") == "Retain":
            return "deletionPolicy is Retain: objects kept"
        if not st.get("storage"):
            return "nothing was written to storage"
        job_name = st.get("jobName")
        if job_name and st.get("phase") in ("Pending", "Running"):
            job = self.kube.get_job(ns, job_name)
            if job is not None:
                # Stop the writer first, or it could publish a dump after we deleted it.
                self.kube.delete_job(ns, job_name)
                raise StorageError(f"waiting for Job {job_name} to stop before deleting data")
        loc = Location.from_status(st["storage"])
        store = self.ctx.store(ns, loc)
        try:
            # Manifest first: a dump without a manifest is never imported or restored.
            store.delete_backup(manifest_key=loc.manifest_key, dump_key=loc.dump_key)
        finally:
            store.close()
        LOG.info("Backup %s/%s: deleted s3://%s/%s", ns, name, loc.bucket, loc.dump_key)
        return f"deleted s3://{loc.bucket}/{loc.dump_key} and its manifest"
