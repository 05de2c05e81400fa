"""Renders the objects the operator creates: backup and restore Jobs, and child Backups.
Pure: same inputs, same manifest.

Secrets reach the pod only through `valueFrom.secretKeyRef` env and Secret volumes, never argv.
The pod meets the "restricted" Pod Security Standard and has no Kubernetes API access.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import naming
from .api import (
    ANNOTATION_OPERATION,
    API_VERSION,
    GROUP,
    LABEL_BACKUP,
    LABEL_DB_KEY,
    LABEL_MANAGED_BY,
    LABEL_POLICY,
    LABEL_RESTORE_JOB,
    LABEL_TRIGGER,
    MANAGED_BY,
)
from .api.backup import WHOLE, BackupScope, Trigger
from .api.policy import PolicySpec, SecretKeyRef
from .backends import CA_MOUNT, Target
from .contract.config import ENCRYPTION_FORMAT, ENV_ENCRYPTION_KEY, ENV_SSE_CUSTOMER_KEY, LAYOUT_PER_TABLE
from .contract.keys import ENCRYPTED_SUFFIX

AGENT_CONTAINER = "agent"
AGENT_UID = 65532
# Exit codes the agent uses: 2 means "retrying cannot help" and fails the Job at once.
EXIT_PERMANENT = 2
# Scratch space (the 0600 option file) on a small emptyDir, since the root filesystem is read-only.
# Deliberately not /tmp: nothing is gained by hiding whatever the image keeps there.
SCRATCH = "/var/lib/mysql-backup-agent"
# Binlog files (archiver, point-in-time replay): a disk-backed emptyDir, named to the agent by MBO_WORKDIR.
WORKDIR = "/var/lib/mysql-backup-binlogs"


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str
    uid: str


def agent_connection_config(policy: PolicySpec) -> dict[str, Any]:
    db = policy.database
    return {
        "database": {
            "host": db.host,
            "port": db.port,
            "user": db.user,
            "databases": list(db.databases),
            "tls": {
                "enabled": db.tls_enabled,
                "caFile": f"{CA_MOUNT}/db/{db.tls_ca.key}" if db.tls_ca else None,
            },
        },
        "storage": {**Target.of(policy).agent_config(), **_sse_config(policy)},
    }


def _sse_config(policy: PolicySpec) -> dict[str, Any]:
    """The non-secret part of S3 server-side encryption (none for other backends); an SSE-C key
    arrives as its own env var."""
    s3 = policy.s3
    if s3 is None or not s3.sse_mode:
        return {}
    return {"serverSideEncryption": {"mode": s3.sse_mode, "kmsKeyId": s3.sse_kms_key_id}}


def extra_secret_refs(policy: PolicySpec) -> list[tuple[str, SecretKeyRef]]:
    """(env var, Secret key) pairs beyond the database and S3 credentials: the client-side
    encryption key and the SSE-C customer key. One list for the Job's env and the operator's
    pre-flight Secret check, so the two cannot drift apart."""
    refs: list[tuple[str, SecretKeyRef]] = []
    if policy.encryption_key:
        refs.append((ENV_ENCRYPTION_KEY, policy.encryption_key))
    if policy.s3 is not None and policy.s3.sse_customer_key:
        refs.append((ENV_SSE_CUSTOMER_KEY, policy.s3.sse_customer_key))
    return refs


def _secret_env(policy: PolicySpec) -> list[dict[str, Any]]:
    def ref(name: str, key: str) -> dict[str, Any]:
        return {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}

    return [
        {"name": "MBO_DB_PASSWORD", **ref(policy.database.password.name, policy.database.password.key)},
        *({"name": e.env, **ref(e.secret, e.key)} for e in Target.of(policy).secret_env),
        *({"name": var, **ref(r.name, r.key)} for var, r in extra_secret_refs(policy)),
    ]


def _ca_volumes(policy: PolicySpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    vols: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH}]
    for label, ref in (("db", policy.database.tls_ca), ("s3", Target.of(policy).ca)):
        if ref is None:
            continue
        vols.append({"name": f"ca-{label}", "secret": {"secretName": ref.name, "defaultMode": 0o444}})
        mounts.append({"name": f"ca-{label}", "mountPath": f"{CA_MOUNT}/{label}", "readOnly": True})
    return vols, mounts


def agent_pod_spec(
    *,
    policy: PolicySpec,
    operation: str,
    agent_config: Mapping[str, Any],
    restart_policy: str = "Never",
    work_volume: str | None = None,
) -> dict[str, Any]:
    """The agent's pod spec (restricted, no API token, secrets from Secrets only), shared by the
    backup and restore Jobs and the binlog archiver's Deployment. `work_volume` mounts a disk-backed
    emptyDir at WORKDIR for binlog files (the scratch emptyDir is small and in memory)."""
    jt = policy.job
    vols, mounts = _ca_volumes(policy)
    extra_env = []
    if work_volume:
        vols.append({"name": work_volume, "emptyDir": {}})
        mounts.append({"name": work_volume, "mountPath": WORKDIR})
        extra_env.append({"name": "MBO_WORKDIR", "value": WORKDIR})
    container: dict[str, Any] = {
        "name": AGENT_CONTAINER,
        "image": jt.image,
        "command": ["mysql-backup-agent", operation],
        "env": [
            {"name": "MBO_AGENT_CONFIG", "value": json.dumps(agent_config, sort_keys=True, separators=(",", ":"))},
            {"name": "TMPDIR", "value": SCRATCH},
            # Upload and compression threads would each get a glibc malloc arena; with large part
            # buffers that fragments into RSS that grows with the dump. Two arenas keep it flat.
            {"name": "MALLOC_ARENA_MAX", "value": "2"},
            *extra_env,
            *_secret_env(policy),
        ],
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if jt.image_pull_policy:
        container["imagePullPolicy"] = jt.image_pull_policy
    if jt.resources:
        container["resources"] = dict(jt.resources)
    pod_spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "fsGroup": AGENT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": vols,
    }
    if jt.node_selector:
        pod_spec["nodeSelector"] = dict(jt.node_selector)
    if jt.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in jt.tolerations]
    return pod_spec


def render_job(
    *,
    name: str,
    namespace: str,
    owner: Owner,
    policy: PolicySpec,
    operation: str,
    agent_config: Mapping[str, Any],
    labels: Mapping[str, str],
    work_volume: str | None = None,
) -> dict[str, Any]:
    jt = policy.job
    all_labels = {LABEL_MANAGED_BY: MANAGED_BY, **labels}
    pod_spec = agent_pod_spec(policy=policy, operation=operation, agent_config=agent_config, work_volume=work_volume)
    spec: dict[str, Any] = {
        "backoffLimit": jt.backoff_limit,
        "activeDeadlineSeconds": jt.active_deadline_seconds,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": AGENT_CONTAINER, "operator": "In", "values": [EXIT_PERMANENT]},
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": {
            "metadata": {"labels": all_labels, "annotations": {ANNOTATION_OPERATION: f"{owner.kind}/{owner.name}"}},
            "spec": pod_spec,
        },
    }
    if jt.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = jt.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": all_labels,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": owner.kind,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def render_backup_job(
    *,
    backup_name: str,
    backup_uid: str,
    namespace: str,
    trigger: str,
    policy: PolicySpec,
    db_key: str,
    scope: BackupScope = WHOLE,
) -> dict[str, Any]:
    directory = naming.storage_dir(
        prefix=Target.of(policy).prefix, namespace=namespace, policy=policy.name, backup=backup_name, uid=backup_uid
    )
    cfg = agent_connection_config(policy)
    suffix = ENCRYPTED_SUFFIX if policy.encryption_key else ""
    cfg["storage"]["dumpKey"] = naming.dump_key(directory, policy.compression) + suffix
    cfg["storage"]["manifestKey"] = naming.manifest_key(directory)
    cfg["backup"] = {
        "name": backup_name,
        "namespace": namespace,
        "uid": backup_uid,
        "policy": policy.name,
        "trigger": trigger,
        "compression": str(policy.compression),
        "compressionLevel": policy.compression_level,
        "extraDumpArgs": list(policy.extra_dump_args),
        # A table-scoped backup is per table by nature: its manifest lists exactly those tables.
        "layout": LAYOUT_PER_TABLE if scope.tables else policy.layout,
        "scope": scope.to_spec(),
        **({"encryption": ENCRYPTION_FORMAT} if policy.encryption_key else {}),
    }
    return render_job(
        name=naming.backup_job_name(backup_name),
        namespace=namespace,
        owner=Owner("Backup", backup_name, backup_uid),
        policy=policy,
        operation="backup",
        agent_config=cfg,
        labels={
            LABEL_BACKUP: naming.bounded(backup_name),
            LABEL_POLICY: naming.bounded(policy.name),
            LABEL_DB_KEY: db_key,
        },
    )


def render_restore_job(
    *,
    restore_name: str,
    restore_uid: str,
    namespace: str,
    policy: PolicySpec,
    location: str,
    manifest_location: str,
    sha256: str,
    databases: Sequence[str],
    target: str | None,
    db_key: str,
    tables: Sequence[str] = (),
    parallelism: int | None = None,
    point_in_time: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    bucket, key = naming.parse_s3_url(location)
    _, mkey = naming.parse_s3_url(manifest_location)
    cfg = agent_connection_config(policy)
    cfg["storage"]["bucket"] = bucket
    cfg["storage"]["dumpKey"] = key
    cfg["storage"]["manifestKey"] = mkey
    cfg["restore"] = {
        "name": restore_name,
        "namespace": namespace,
        "uid": restore_uid,
        "expectedSha256": sha256,
        "databases": list(databases),
        "target": target,
        "tables": list(tables),
        "parallelism": parallelism,
    }
    if point_in_time:
        cfg["restore"]["pointInTime"] = dict(point_in_time)
    return render_job(
        name=naming.restore_job_name(restore_name),
        namespace=namespace,
        owner=Owner("Restore", restore_name, restore_uid),
        policy=policy,
        operation="restore",
        agent_config=cfg,
        labels={
            LABEL_RESTORE_JOB: naming.bounded(restore_name),
            LABEL_POLICY: naming.bounded(policy.name),
            LABEL_DB_KEY: db_key,
        },
        work_volume="replay" if point_in_time else None,
    )


def render_backup(
    *,
    name: str,
    namespace: str,
    policy: PolicySpec,
    trigger: Trigger | str,
    description: str,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    deletion_policy: str | None = None,
    scope: BackupScope = WHOLE,
) -> dict[str, Any]:
    """A Backup the operator creates itself (scheduled run, pre-restore safety net, import)."""
    spec: dict[str, Any] = {"policyRef": {"name": policy.name}, "trigger": str(trigger), "description": description}
    if deletion_policy:
        spec["deletionPolicy"] = deletion_policy
    if scope:
        spec["scope"] = scope.to_spec()
    return {
        "apiVersion": API_VERSION,
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                LABEL_POLICY: naming.bounded(policy.name),
                LABEL_TRIGGER: str(trigger),
                LABEL_DB_KEY: naming.database_key(policy.database.identity),
                LABEL_MANAGED_BY: MANAGED_BY,
                **(labels or {}),
            },
            "annotations": dict(annotations or {}),
            # Created with the data finalizer, so a new Backup needs no extra PATCH to get it.
            "finalizers": [f"{GROUP}/delete-data"],
        },
        "spec": spec,
    }


def job_outcome(job: Mapping[str, Any]) -> tuple[str, str | None]:
    """("running"|"complete"|"failed", the Job controller's reason). Only terminal conditions count."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            return "complete", c.get("reason")
        if c.get("type") == "Failed":
            return "failed", c.get("reason")
    return "running", None


def agent_succeeded(pods: Sequence[Mapping[str, Any]]) -> bool:
    """The agent container of a pod of the Job has exited 0 and left its result.

    Our Jobs have one completion and `restartPolicy: Never`, so that decides the Job: the
    container never runs again and the Job starts no other pod. Kubernetes says so twice more,
    each about a second later (measured on the local stack's kubelet 1.35): the kubelet reports
    the pod `Succeeded` only after its pod worker has stopped the sandbox, and the Job controller
    batches pod updates for its `SyncJobBatchPeriod` (1 s) before it writes `Complete`. Reading
    the container's state ends the operation ~2 s sooner. The result must be there too (the
    termination message, JSON, `ok`): without it, the Job's own end is waited for."""
    for p in pods:
        if (p.get("status") or {}).get("phase") == "Failed":
            continue
        term = _agent_terminated(p)
        if term and term.get("exitCode") == 0 and (_parsed(term) or {}).get("ok") is True:
            return True
    return False


def job_end_outcome(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """`job_outcome`, but "complete" as soon as the agent has succeeded (`agent_succeeded`)."""
    outcome, reason = job_outcome(job)
    if outcome == "running" and agent_succeeded(pods):
        return "complete", "AgentSucceeded"
    return outcome, reason


def operation_of_pod(pod: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(kind, namespace, name) of the Backup or Restore an agent pod works for, from the
    annotation `render_job` puts on its pods; None for any other pod."""
    m = pod.get("metadata") or {}
    kind, _, name = str((m.get("annotations") or {}).get(ANNOTATION_OPERATION) or "").partition("/")
    if kind not in ("Backup", "Restore") or not name or not m.get("namespace"):
        return None
    return kind, str(m["namespace"]), name


def _agent_terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The agent container's `terminated` state in a pod, or None while it has not ended."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if cs.get("name") == AGENT_CONTAINER and term:
            return dict(term)
    return None


def _parsed(term: Mapping[str, Any]) -> dict[str, Any] | None:
    """The agent's JSON result in a termination message, or None when it is not one."""
    try:
        parsed = json.loads((term.get("message") or "").strip())
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def agent_result(pods: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The agent's JSON result from the newest terminated pod, or its raw message as an error."""
    finished = [(p["metadata"].get("creationTimestamp") or "", term) for p in pods if (term := _agent_terminated(p))]
    if not finished:
        return None
    _, term = max(finished, key=lambda x: x[0])
    if (parsed := _parsed(term)) is not None:
        return parsed
    msg = (term.get("message") or "").strip()
    detail = msg[-1500:] if msg else f"agent exited with code {term.get('exitCode')} ({term.get('reason')})"
    return {"ok": False, "reason": None, "message": detail, "exitCode": term.get("exitCode")}
