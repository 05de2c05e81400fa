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
from .api.backup import Trigger
from .api.policy import PolicySpec

AGENT_CONTAINER = "agent"
AGENT_UID = 65532
# Exit codes the agent uses: 2 means "retrying cannot help" and fails the Job at once.
EXIT_PERMANENT = 2
CA_MOUNT = "/etc/mysql-backup/ca"
# Scratch space (the 0600 option file) on a small emptyDir, since the root filesystem is read-only.
# Deliberately not /tmp: nothing is gained by hiding whatever the image keeps there.
SCRATCH = "/var/lib/mysql-backup-agent"


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str
    uid: str


def agent_connection_config(policy: PolicySpec) -> dict[str, Any]:
    db = policy.database
    s3 = policy.s3
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
        "storage": {
            "bucket": s3.bucket,
            "endpoint": s3.endpoint,
            "region": s3.region,
            "forcePathStyle": s3.force_path_style,
            "caFile": f"{CA_MOUNT}/s3/{s3.ca_bundle.key}" if s3.ca_bundle else None,
        },
    }


def _secret_env(policy: PolicySpec) -> list[dict[str, Any]]:
    s3 = policy.s3

    def ref(name: str, key: str, optional: bool = False) -> dict[str, Any]:
        r: dict[str, Any] = {"name": name, "key": key}
        if optional:
            r["optional"] = True
        return {"valueFrom": {"secretKeyRef": r}}

    env = [
        {"name": "MBO_DB_PASSWORD", **ref(policy.database.password.name, policy.database.password.key)},
        {"name": "AWS_ACCESS_KEY_ID", **ref(s3.credentials_secret, s3.access_key_id_key)},
        {"name": "AWS_SECRET_ACCESS_KEY", **ref(s3.credentials_secret, s3.secret_access_key_key)},
    ]
    if s3.session_token_key:
        env.append({"name": "AWS_SESSION_TOKEN", **ref(s3.credentials_secret, s3.session_token_key)})
    return env


def _ca_volumes(policy: PolicySpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    vols: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH}]
    for label, ref in (("db", policy.database.tls_ca), ("s3", policy.s3.ca_bundle)):
        if ref is None:
            continue
        vols.append({"name": f"ca-{label}", "secret": {"secretName": ref.name, "defaultMode": 0o444}})
        mounts.append({"name": f"ca-{label}", "mountPath": f"{CA_MOUNT}/{label}", "readOnly": True})
    return vols, mounts


def render_job(
    *,
    name: str,
    namespace: str,
    owner: Owner,
    policy: PolicySpec,
    operation: str,
    agent_config: Mapping[str, Any],
    labels: Mapping[str, str],
) -> dict[str, Any]:
    jt = policy.job
    vols, mounts = _ca_volumes(policy)
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
    all_labels = {LABEL_MANAGED_BY: MANAGED_BY, **labels}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
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
        "template": {"metadata": {"labels": all_labels}, "spec": pod_spec},
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
    *, backup_name: str, backup_uid: str, namespace: str, trigger: str, policy: PolicySpec, db_key: str
) -> dict[str, Any]:
    directory = naming.storage_dir(
        prefix=policy.s3.prefix, namespace=namespace, policy=policy.name, backup=backup_name, uid=backup_uid
    )
    cfg = agent_connection_config(policy)
    cfg["storage"]["dumpKey"] = naming.dump_key(directory, policy.compression)
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
        "layout": policy.layout,
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
) -> dict[str, Any]:
    """A Backup the operator creates itself (scheduled run, pre-restore safety net, import)."""
    spec: dict[str, Any] = {"policyRef": {"name": policy.name}, "trigger": str(trigger), "description": description}
    if deletion_policy:
        spec["deletionPolicy"] = deletion_policy
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


def agent_result(pods: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The agent's JSON result from the newest terminated pod, or its raw message as an error."""
    finished = []
    for p in pods:
        for cs in (p.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if cs.get("name") == AGENT_CONTAINER and term:
                finished.append((p["metadata"].get("creationTimestamp") or "", term))
    if not finished:
        return None
    _, term = max(finished, key=lambda x: x[0])
    msg = (term.get("message") or "").strip()
    try:
        parsed = json.loads(msg)
        if isinstance(parsed, dict):
            return parsed
    except ValueError:
        pass
    detail = msg[-1500:] if msg else f"agent exited with code {term.get('exitCode')} ({term.get('reason')})"
    return {"ok": False, "reason": None, "message": detail, "exitCode": term.get("exitCode")}
