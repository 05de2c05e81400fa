"""Level-based reconcilers for Backup and Restore.

Each call looks at the object's phase and does the one next step: take the lock, launch the Job,
read the result, release the lock. Every step is idempotent (deterministic names, "already
exists" is done, the lock is re-entrant), so an operator killed at any point picks up where it
stopped without running anything twice. A terminal phase is never left.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import conditions as cond
from .. import jobs, metrics, naming
from ..api import (
    ANNOTATION_IMPORTED_FROM,
    API_VERSION,
    BACKUPS,
    COND_DATA_MISSING,
    LABEL_DB_KEY,
    LABEL_MANAGED_BY,
    LABEL_POLICY,
    LABEL_RESTORE,
    LABEL_RESTORE_UID,
    LABEL_TRIGGER,
    MANAGED_BY,
    RESTORES,
    BackupPhase,
    Reason,
    RestorePhase,
    Trigger,
)
from ..contract.encryption import restore_key_problem
from ..k8s.kube import Kube
from ..k8s.locking import LeaseLock, Operation, acquire
from ..models import PolicySpec, SpecError, parse_backup, parse_policy, parse_restore, restore_plan
from ..objectstore import Location, StorageError, Store, result_from_manifest
from .cache import Cache, op_row

LOG = logging.getLogger(__name__)
# Held by every Backup until its objects are deleted (or kept, with deletionPolicy Retain). The
# operator manages it itself (no kopf on.delete handler), see docs/design-event-driven-core.md.
BACKUP_FINALIZER = "mysqlbackup.dev/delete-data"
AGENT_REASONS = {r.value for r in Reason}


@dataclass(frozen=True)
class Settings:
    lock_namespace: str
    agent_image: str
    # A Backup whose policy does not exist yet waits this long (GitOps may apply it first).
    missing_policy_grace_seconds: int = 60


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def scrub(text: str, secrets: list[str]) -> str:
    """Removes secret values (and password-looking assignments) from text shown to users."""
    for s in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
        text = text.replace(s, "****")
    return re.sub(r"(?i)(password|secret|token)(\s*[=:]\s*)\S+", r"\1\2****", text)


def _op(obj: Mapping[str, Any]) -> Operation:
    m = obj["metadata"]
    return Operation(
        created=m.get("creationTimestamp") or "",
        kind=obj["kind"],
        namespace=m["namespace"],
        name=m["name"],
        uid=m["uid"],
    )


def _phase(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "Pending")


Wake = Callable[[tuple[str, str, str]], None]


def _no_wake(_: tuple[str, str, str]) -> None:
    return None


class Reconciler:
    """The Backup and Restore state machines.

    `cache` is the watch-fed view (policies, the queue in front of each database lock); `wake`
    puts an object key (kind, namespace, name) on the work queue, used to hand a freed lock to the
    next operation at once instead of waiting for a safety-net pass.
    """

    def __init__(self, kube: Kube, settings: Settings, *, cache: Cache | None = None, wake: Wake = _no_wake) -> None:
        self.kube = kube
        self.settings = settings
        self.lock = LeaseLock(kube.coordination, settings.lock_namespace)
        self.cache = cache or Cache()
        self.wake = wake

    def release(self, db_key: str, obj: Mapping[str, Any]) -> None:
        """Releases our lock and wakes whoever waits for the database (first in line takes it)."""
        self.lock.release(db_key, _op(obj))
        self.wake_waiting(db_key)

    def wake_waiting(self, db_key: str) -> None:
        for row in sorted(self.cache.ops_for_database(db_key), key=lambda r: r.op):
            if row.waiting:
                self.wake((row.op.kind, row.op.namespace, row.op.name))

    # ================================================================ shared pieces

    def _set(self, plural: str, obj: dict[str, Any], status: Mapping[str, Any] | None) -> None:
        if status is None:
            return
        m = obj["metadata"]
        self.kube.patch_status(plural, m["namespace"], m["name"], status)
        old_phase = (obj.get("status") or {}).get("phase") or "Pending"
        if status.get("phase") and status["phase"] != old_phase:
            LOG.info("%s %s/%s: %s -> %s", obj.get("kind"), m["namespace"], m["name"], old_phase, status["phase"])
        # Keep the in-memory copy current so later steps in this same call see the new phase.
        st = obj.setdefault("status", {})
        for k, v in status.items():
            if v is None:
                st.pop(k, None)
            else:
                st[k] = v

    def _fail(
        self, plural: str, obj: dict[str, Any], reason: Reason | str, message: str, *, release: str | None
    ) -> None:
        gen = int(obj["metadata"].get("generation") or 1)
        self._set(
            plural,
            obj,
            cond.failed(obj.get("status") or {}, reason=reason, message=message, generation=gen, now=utcnow()),
        )
        self.kube.event(obj, warning=True, reason=str(reason), message=message)
        if plural == BACKUPS:
            policy = str((obj.get("spec") or {}).get("policyRef", {}).get("name", ""))
            metrics.backup_failed(namespace=obj["metadata"]["namespace"], policy=policy, reason=str(reason))
        else:
            metrics.restore_finished(namespace=obj["metadata"]["namespace"], result="failed")
        LOG.warning(
            "%s %s/%s failed: %s: %s",
            obj["kind"],
            obj["metadata"]["namespace"],
            obj["metadata"]["name"],
            reason,
            message,
        )
        if release:
            self.release(release, obj)

    def _policy(self, namespace: str, name: str) -> tuple[dict[str, Any] | None, PolicySpec | None]:
        # The watch-fed cache first; a policy created a moment ago may not be there yet.
        raw = self.cache.policy(namespace, name) or self.kube.get_policy(namespace, name)
        if raw is None:
            return None, None
        return raw, parse_policy(
            name=name, namespace=namespace, spec=raw.get("spec") or {}, default_image=self.settings.agent_image
        )

    def _missing_secrets(self, namespace: str, policy: PolicySpec) -> tuple[str | None, list[str]]:
        """Checks the Secrets a Job needs before launching it; returns (problem, secret values to scrub)."""
        values: list[str] = []
        refs = [
            (policy.database.password.name, policy.database.password.key),
            (policy.s3.credentials_secret, policy.s3.access_key_id_key),
            (policy.s3.credentials_secret, policy.s3.secret_access_key_key),
        ]
        if policy.s3.session_token_key:
            refs.append((policy.s3.credentials_secret, policy.s3.session_token_key))
        refs += [(r.name, r.key) for _, r in jobs.extra_secret_refs(policy)]
        cache: dict[str, dict[str, str] | None] = {}
        for name, key in refs:
            if name not in cache:
                cache[name] = self.kube.secret_values(namespace, name)
            data = cache[name]
            if data is None:
                return f'Secret "{name}" not found in namespace {namespace}', values
            if key not in data:
                return f'Secret "{name}" has no key "{key}"', values
            values.append(data[key])
        return None, values

    def _key_text(self, namespace: str, policy: PolicySpec) -> str | None:
        """The policy's client-side encryption key file (already checked to exist), or None."""
        ref = policy.encryption_key
        data = self.kube.secret_values(namespace, ref.name) if ref else None
        return data.get(ref.key) if data and ref else None

    def _is_alive(self, identity: str) -> bool:
        """A lock holder is alive while its object exists with the same uid and is not terminal."""
        parsed = Operation.parse_identity(identity)
        if not parsed:
            return False
        kind, ns, name, uid = parsed
        obj = self.kube.get_backup(ns, name) if kind == "Backup" else self.kube.get_restore(ns, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            return False
        phase = _phase(obj)
        terminal = BackupPhase(phase).terminal if kind == "Backup" else RestorePhase(phase).terminal
        return not terminal

    def _waiting(self, db_key: str) -> list[Operation]:
        """The queue in front of a database lock, from the watch-fed cache (no LIST per attempt).
        Until the cache has the initial listing (the first seconds after a start) it is read live,
        so an older waiter the cache does not know yet is never overtaken."""
        if self.cache.synced.is_set():
            return [row.op for row in self.cache.ops_for_database(db_key) if row.waiting]
        ops = []
        for plural, kind in ((BACKUPS, "Backup"), (RESTORES, "Restore")):
            for obj in self.kube.list_all(plural, f"{LABEL_DB_KEY}={db_key}"):
                row = op_row(kind, obj)
                if row.waiting:
                    ops.append(row.op)
        return ops

    def _take_lock(self, plural: str, obj: dict[str, Any], db_key: str, identity: str) -> bool:
        gen = int(obj["metadata"].get("generation") or 1)
        waiting = self._waiting(db_key)
        metrics.queue_length(identity, len(waiting))
        d = acquire(
            self.lock,
            db_key=db_key,
            identity_note=identity,
            me=_op(obj),
            waiting=waiting,
            is_alive=self._is_alive,
        )
        if d.acquire:
            return True
        assert d.reason is not None
        patch = cond.queued(
            obj.get("status") or {},
            holder=d.blocker,
            position=d.position,
            reason=d.reason,
            generation=gen,
            now=utcnow(),
        )
        if patch is not None:
            first = not (obj.get("status") or {}).get("queuePosition")
            self._set(plural, obj, patch)
            if first:
                self.kube.event(obj, warning=False, reason="Queued", message=patch["message"])
        return False

    def _ensure_labels(
        self, plural: str, obj: dict[str, Any], labels: Mapping[str, str], *, finalizer: str | None = None
    ) -> None:
        """Labels (and, for Backups, the data finalizer) in one patch, only when something is missing."""
        m = obj["metadata"]
        current = m.get("labels") or {}
        finalizers = list(m.get("finalizers") or [])
        need_finalizer = finalizer is not None and finalizer not in finalizers and not m.get("deletionTimestamp")
        if all(current.get(k) == v for k, v in labels.items()) and not need_finalizer:
            return
        self.kube.patch_metadata(
            plural,
            m["namespace"],
            m["name"],
            resource_version=m.get("resourceVersion") if need_finalizer else None,
            labels=labels,
            finalizers=[*finalizers, finalizer] if need_finalizer and finalizer else None,
        )
        m.setdefault("labels", {}).update(labels)
        if need_finalizer and finalizer:
            m["finalizers"] = [*finalizers, finalizer]

    # ================================================================ Backup

    def backup(self, obj: dict[str, Any]) -> None:
        obj.setdefault("status", {})
        obj.setdefault("kind", "Backup")
        obj.setdefault("apiVersion", API_VERSION)
        phase = BackupPhase(_phase(obj))
        if phase.terminal:
            return
        m = obj["metadata"]
        ns, name = m["namespace"], m["name"]
        gen = int(m.get("generation") or 1)
        try:
            spec = parse_backup(obj.get("spec") or {})
        except SpecError as e:
            return self._fail(BACKUPS, obj, Reason.INVALID_SPEC, str(e), release=None)
        try:
            _, policy = self._policy(ns, spec.policy)
        except SpecError as e:
            return self._fail(BACKUPS, obj, Reason.INVALID_SPEC, f"BackupPolicy {spec.policy}: {e}", release=None)
        if policy is None:
            age = (utcnow() - cond.parse_iso(m["creationTimestamp"])).total_seconds()
            msg = f'BackupPolicy "{spec.policy}" not found in namespace {ns}'
            if age < self.settings.missing_policy_grace_seconds and phase == BackupPhase.PENDING:
                self._set(BACKUPS, obj, cond.pending(obj["status"], message=f"waiting: {msg}", generation=gen))
                return
            return self._fail(BACKUPS, obj, Reason.POLICY_NOT_FOUND, msg, release=None)
        db_key = naming.database_key(policy.database.identity)
        self._ensure_labels(
            BACKUPS,
            obj,
            {
                LABEL_DB_KEY: db_key,
                LABEL_POLICY: naming.bounded(policy.name),
                LABEL_TRIGGER: str(spec.trigger),
                LABEL_MANAGED_BY: MANAGED_BY,
            },
            finalizer=BACKUP_FINALIZER,
        )
        if (m.get("annotations") or {}).get(ANNOTATION_IMPORTED_FROM):
            return  # created by recovery from storage; its status is written by the importer
        under_restore = self._parent_restore_holds_lock(obj, db_key)
        # The lock a failure must release: ours, unless we run under our Restore's lock.
        own_lock = None if under_restore else db_key

        if phase == BackupPhase.PENDING:
            if not under_restore and not self._take_lock(BACKUPS, obj, db_key, policy.database.identity):
                return
            problem, _ = self._missing_secrets(ns, policy)
            if problem:
                return self._fail(BACKUPS, obj, Reason.SECRET_NOT_FOUND, problem, release=own_lock)
            rendered = jobs.render_backup_job(
                backup_name=name,
                backup_uid=m["uid"],
                namespace=ns,
                trigger=str(spec.trigger),
                policy=policy,
                db_key=db_key,
            )
            created = self.kube.create_job(rendered)
            job_name = rendered["metadata"]["name"]
            running = cond.backup_running(obj["status"], job_name=job_name, generation=gen, now=utcnow())
            directory = naming.storage_dir(
                prefix=policy.s3.prefix, namespace=ns, policy=policy.name, backup=name, uid=m["uid"]
            )
            loc = Location.for_policy(
                policy, naming.dump_key(directory, policy.compression), naming.manifest_key(directory)
            )
            running["storage"] = loc.to_status()
            self._set(BACKUPS, obj, running)
            if created:
                self.kube.event(obj, warning=False, reason="Started", message=f"backup Job {job_name} created")
            return

        # Running: follow the Job.
        job_name = obj["status"].get("jobName") or naming.backup_job_name(name)
        job = self.kube.get_job(ns, job_name)
        if job is None:
            # The Job can be gone for good reasons (ttlSecondsAfterFinished while the operator was
            # down). Object storage is the source of truth: a manifest written by this very Backup
            # means the dump completed.
            recovered = self._result_from_storage(obj)
            if recovered is not None:
                done = cond.backup_completed(obj["status"], result=recovered, generation=gen, now=utcnow())
                done["message"] = f"Job {job_name} is gone; result recovered from its manifest"
                self._set(BACKUPS, obj, done)
                self.kube.event(obj, warning=False, reason="Completed", message=done["message"])
                if own_lock:
                    self.release(own_lock, obj)
                return
            return self._fail(
                BACKUPS,
                obj,
                Reason.JOB_DELETED,
                f"backup Job {job_name} disappeared before finishing, and no manifest was written",
                release=own_lock,
            )
        outcome, job_reason = jobs.job_outcome(job)
        if outcome == "running":
            return
        result = jobs.agent_result(self.kube.job_pods(ns, job_name)) or {}
        _, secret_values = self._missing_secrets(ns, policy)
        if outcome == "complete" and result.get("ok"):
            self._set(BACKUPS, obj, cond.backup_completed(obj["status"], result=result, generation=gen, now=utcnow()))
            size = result.get("storedBytes")
            self.kube.event(
                obj,
                warning=False,
                reason="Completed",
                message=f"backup stored at {result.get('location')} ({size} bytes)",
            )
            if own_lock:
                self.release(own_lock, obj)
            return
        reason, message = self._failure_from(result, job_reason, secret_values, what="backup")
        self._fail(BACKUPS, obj, reason, message, release=own_lock)

    def _result_from_storage(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        st = obj.get("status") or {}
        if not st.get("storage"):
            return None
        loc = Location.from_status(st["storage"])
        try:
            store = self.store(obj["metadata"]["namespace"], loc)
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

    def _failure_from(
        self, result: Mapping[str, Any], job_reason: str | None, secret_values: list[str], *, what: str
    ) -> tuple[str, str]:
        if job_reason == "DeadlineExceeded":
            return Reason.TIMEOUT, f"{what} Job exceeded its activeDeadlineSeconds and was stopped"
        reason = result.get("reason")
        fallback = (
            f"{what} Job failed ({job_reason})"
            if result
            else f"{what} Job failed ({job_reason}) and no pod is left to say why: was it deleted or evicted?"
        )
        message = scrub(str(result.get("message") or fallback), secret_values)
        if reason not in AGENT_REASONS:
            # No classified result: either the agent never started (no result, or the runtime's
            # StartError code 128) or it crashed before it could classify.
            agent_ran = bool(result) and result.get("exitCode") != 128
            reason = (
                (Reason.DUMP_FAILED if what == "backup" else Reason.RESTORE_FAILED) if agent_ran else Reason.JOB_FAILED
            )
        return str(reason), message

    def _parent_restore_holds_lock(self, obj: Mapping[str, Any], db_key: str) -> bool:
        """A pre-restore Backup runs under its Restore's lock instead of queueing behind it."""
        if (obj.get("spec") or {}).get("trigger") != Trigger.PRE_RESTORE:
            return False
        restore_uid = (obj["metadata"].get("labels") or {}).get(LABEL_RESTORE_UID)
        holder, _ = self.lock.holder(db_key)
        parsed = Operation.parse_identity(holder or "")
        return bool(parsed and parsed[0] == "Restore" and parsed[3] == restore_uid)

    # ================================================================ Restore

    def restore(self, obj: dict[str, Any]) -> None:
        obj.setdefault("status", {})
        obj.setdefault("kind", "Restore")
        obj.setdefault("apiVersion", API_VERSION)
        phase = RestorePhase(_phase(obj))
        if phase.terminal:
            return
        m = obj["metadata"]
        ns, name = m["namespace"], m["name"]
        gen = int(m.get("generation") or 1)
        try:
            spec = parse_restore(obj.get("spec") or {})
        except SpecError as e:
            return self._fail(RESTORES, obj, Reason.INVALID_SPEC, str(e), release=None)
        backup = self.kube.get_backup(ns, spec.backup)
        if backup is None:
            held = (m.get("labels") or {}).get(LABEL_DB_KEY) if phase != RestorePhase.PENDING else None
            return self._fail(
                RESTORES,
                obj,
                Reason.BACKUP_NOT_FOUND,
                f'Backup "{spec.backup}" not found in namespace {ns}',
                release=held,
            )
        bstatus = backup.get("status") or {}
        gone: Mapping[str, Any] = next(
            (c for c in bstatus.get("conditions") or [] if c.get("type") == COND_DATA_MISSING), {}
        )
        if phase == RestorePhase.PENDING and gone.get("status") == "True":
            return self._fail(
                RESTORES,
                obj,
                Reason.DATA_MISSING,
                f'Backup "{spec.backup}" has lost its objects in storage ({gone.get("message")}); not restoring',
                release=None,
            )
        if phase == RestorePhase.PENDING and bstatus.get("phase") != BackupPhase.COMPLETED:
            if bstatus.get("phase") == BackupPhase.FAILED:
                return self._fail(
                    RESTORES,
                    obj,
                    Reason.BACKUP_NOT_COMPLETED,
                    f'Backup "{spec.backup}" failed; nothing to restore',
                    release=None,
                )
            self._set(
                RESTORES,
                obj,
                cond.pending(obj["status"], message=f'waiting for Backup "{spec.backup}" to complete', generation=gen),
            )
            return
        policy_name = (backup.get("spec") or {}).get("policyRef", {}).get("name", "")
        try:
            _, policy = self._policy(ns, policy_name)
        except SpecError as e:
            return self._fail(RESTORES, obj, Reason.INVALID_SPEC, f"BackupPolicy {policy_name}: {e}", release=None)
        if policy is None:
            return self._fail(
                RESTORES,
                obj,
                Reason.POLICY_NOT_FOUND,
                f'BackupPolicy "{policy_name}" of Backup "{spec.backup}" not found',
                release=None,
            )
        db_key = naming.database_key(policy.database.identity)
        try:
            databases, target = restore_plan(spec, tuple(bstatus.get("databases") or ()))
        except SpecError as e:
            return self._fail(RESTORES, obj, Reason.INVALID_SPEC, str(e), release=None)
        self._ensure_labels(
            RESTORES,
            obj,
            {LABEL_DB_KEY: db_key, LABEL_POLICY: naming.bounded(policy.name), LABEL_MANAGED_BY: MANAGED_BY},
        )

        if phase == RestorePhase.PENDING:
            if not self._take_lock(RESTORES, obj, db_key, policy.database.identity):
                return
            problem, _ = self._missing_secrets(ns, policy)
            if problem:
                return self._fail(RESTORES, obj, Reason.SECRET_NOT_FOUND, problem, release=db_key)
            # A key that cannot decrypt the Backup fails now, not after a safety backup.
            key_problem = restore_key_problem(encryption=bstatus.get("encryption"), key_text=self._key_text(ns, policy))
            if key_problem:
                return self._fail(RESTORES, obj, key_problem[0], key_problem[1], release=db_key)
            safety = self._ensure_pre_restore_backup(obj, policy)
            self._set(
                RESTORES, obj, cond.restore_backing_up(obj["status"], pre_restore=safety, generation=gen, now=utcnow())
            )
            self.kube.event(
                obj, warning=False, reason="PreRestoreBackup", message=f"taking safety backup {safety} first"
            )
            return

        if phase == RestorePhase.BACKING_UP:
            pre_name = obj["status"].get("preRestoreBackup") or self._ensure_pre_restore_backup(obj, policy)
            pre = self.kube.get_backup(ns, pre_name)
            if pre is None:
                self._ensure_pre_restore_backup(obj, policy)
                return
            pre_phase = _phase(pre)
            if pre_phase == BackupPhase.FAILED:
                pst = pre.get("status") or {}
                return self._fail(
                    RESTORES,
                    obj,
                    Reason.PRE_RESTORE_BACKUP_FAILED,
                    f"pre-restore safety backup {pre_name} failed ({pst.get('reason')}: {pst.get('message')}); "
                    "the database was not touched",
                    release=db_key,
                )
            if pre_phase != BackupPhase.COMPLETED:
                return
            rendered = jobs.render_restore_job(
                restore_name=name,
                restore_uid=m["uid"],
                namespace=ns,
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
            self._set(
                RESTORES,
                obj,
                cond.restore_restoring(
                    obj["status"], job_name=job_name, databases=databases, generation=gen, now=utcnow()
                ),
            )
            if created:
                self.kube.event(obj, warning=False, reason="Restoring", message=f"restore Job {job_name} created")
            return

        # Restoring: follow the Job.
        job_name = obj["status"].get("jobName") or naming.restore_job_name(name)
        job = self.kube.get_job(ns, job_name)
        if job is None:
            return self._fail(RESTORES, obj, Reason.JOB_DELETED, f"restore Job {job_name} disappeared", release=db_key)
        outcome, job_reason = jobs.job_outcome(job)
        if outcome == "running":
            return
        result = jobs.agent_result(self.kube.job_pods(ns, job_name)) or {}
        if outcome == "complete" and result.get("ok"):
            self._set(RESTORES, obj, cond.restore_completed(obj["status"], generation=gen, now=utcnow()))
            metrics.restore_finished(namespace=ns, result="completed")
            self.kube.event(obj, warning=False, reason="Completed", message=f"restored {', '.join(databases)}")
            self.release(db_key, obj)
            return
        _, secret_values = self._missing_secrets(ns, policy)
        reason, message = self._failure_from(result, job_reason, secret_values, what="restore")
        self._fail(RESTORES, obj, reason, message, release=db_key)

    def _ensure_pre_restore_backup(self, restore: Mapping[str, Any], policy: PolicySpec) -> str:
        m = restore["metadata"]
        name = naming.pre_restore_backup_name(m["name"], cond.parse_iso(m["creationTimestamp"]))
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

    # ================================================================ storage-side operations

    def store(self, namespace: str, loc: Location) -> Store:
        """A client for a Backup's bucket, with the credentials from its Secret."""
        secret = self.kube.secret_values(namespace, loc.secret)
        if secret is None:
            raise StorageError(
                f'credentials Secret "{loc.secret}" not found in namespace {namespace}', no_credentials=True
            )
        ca = None
        if loc.ca_secret:
            ca_values = self.kube.secret_values(namespace, loc.ca_secret) or {}
            ca = ca_values.get(loc.ca_key or "ca.crt")
        return Store(loc, secret, ca)

    def delete_backup_data(self, obj: dict[str, Any]) -> str:
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
        store = self.store(ns, loc)
        try:
            # Manifest first: a dump without a manifest is never imported or restored.
            store.delete_backup(manifest_key=loc.manifest_key, dump_key=loc.dump_key)
        finally:
            store.close()
        LOG.info("Backup %s/%s: deleted s3://%s/%s", ns, name, loc.bucket, loc.dump_key)
        return f"deleted s3://{loc.bucket}/{loc.dump_key} and its manifest"
