"""The Backup kind: one backup run of a BackupPolicy's database.

Spec (`BackupSpec`, parsed by `parse_backup`), status (`BackupStatus`, with the transitions
`running` and `completed` plus the shared `queued`, `pending` and `failed`), their enums, and the
schema `hack/gen-crds.py` renders into crds/backups.yaml.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from . import BACKUPS, COND_READY
from .common import CRD, OperationStatus, SpecError, Status, column, iso, parse_iso, required, set_condition
from .schema import obj, prop, rule, wire


class Trigger(StrEnum):
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    PRE_RESTORE = "pre-restore"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"


class BackupPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (BackupPhase.COMPLETED, BackupPhase.FAILED)


DEFAULT_TRIGGER = Trigger.MANUAL
DEFAULT_DELETION_POLICY = DeletionPolicy.DELETE


@dataclass(frozen=True)
class BackupSpec:
    policy: str
    trigger: Trigger = DEFAULT_TRIGGER
    deletion_policy: DeletionPolicy = DEFAULT_DELETION_POLICY
    description: str = ""


def parse_backup(spec: Mapping[str, Any]) -> BackupSpec:
    ref = spec.get("policyRef") or {}
    try:
        trigger = Trigger(spec.get("trigger", DEFAULT_TRIGGER))
        deletion = DeletionPolicy(spec.get("deletionPolicy", DEFAULT_DELETION_POLICY))
    except ValueError as e:
        raise SpecError(str(e)) from None
    return BackupSpec(
        policy=str(required(ref, "name", "spec.policyRef")),
        trigger=trigger,
        deletion_policy=deletion,
        description=str(spec.get("description") or ""),
    )


SPEC_SCHEMA = obj(
    {
        "policyRef": obj({"name": prop("string", minLength=1, maxLength=253)}, required=["name"]),
        "trigger": prop("string", enum=Trigger, default=DEFAULT_TRIGGER.value),
        "description": prop("string", maxLength=1024),
        "deletionPolicy": prop("string", enum=DeletionPolicy, default=DEFAULT_DELETION_POLICY.value),
    },
    required=["policyRef"],
    rules=[rule("self == oldSelf", "Backup spec is immutable; create a new Backup instead")],
)


@dataclass(frozen=True)
class StorageStatus:
    """Where the objects live and how to reach them (used for deletion after the policy is gone)."""

    bucket: str | None = wire()
    dump_key: str | None = wire()
    manifest_key: str | None = wire()
    endpoint: str | None = wire(nullable=True)
    region: str | None = wire()
    force_path_style: bool | None = wire()
    credentials_secret: str | None = wire()
    access_key_id_key: str | None = wire()
    secret_access_key_key: str | None = wire()
    session_token_key: str | None = wire(nullable=True)
    ca_secret: str | None = wire(nullable=True)
    ca_key: str | None = wire(nullable=True)


@dataclass(frozen=True)
class BinlogPosition:
    file: str | None = wire()
    position: int | None = wire(format="int64")
    gtid: str | None = wire()


# The agent's result fields a completed Backup records in its status, as they are.
RESULT_FIELDS = (
    "location",
    "manifestLocation",
    "sizeBytes",
    "storedBytes",
    "sha256",
    "compression",
    "tableCount",
    "databases",
    "serverVersion",
    "binlog",
)


@dataclass(frozen=True)
class BackupStatus(OperationStatus):
    phase: BackupPhase | None = wire(extra={})
    location: str | None = wire()
    manifest_location: str | None = wire()
    size_bytes: int | None = wire(format="int64")
    stored_bytes: int | None = wire(format="int64")
    sha256: str | None = wire()
    compression: str | None = wire()
    table_count: int | None = wire()
    databases: tuple[str, ...] = wire(default=())
    server_version: str | None = wire()
    storage: StorageStatus | None = wire(description=StorageStatus.__doc__)
    binlog: BinlogPosition | None = wire()

    def running(self, *, job_name: str, generation: int, now: dt.datetime) -> Status:
        """Pending -> Running: the lock is held and the Job exists."""
        return {
            "phase": str(BackupPhase.RUNNING),
            "jobName": job_name,
            "startedAt": self.started_at or iso(now),
            "queuePosition": None,
            "reason": None,
            "message": f"backup Job {job_name} is running",
            "observedGeneration": generation,
            "conditions": self._dequeued(generation, now, "database lock held; backup started"),
        }

    def completed(self, *, result: Mapping[str, Any], generation: int, now: dt.datetime) -> Status:
        """Running -> Completed, recording the agent's result (or one recovered from the manifest)."""
        started = parse_iso(self.started_at) if self.started_at else now
        st: Status = {k: result[k] for k in RESULT_FIELDS if result.get(k) is not None}
        st.update(
            {
                "phase": str(BackupPhase.COMPLETED),
                "reason": "Completed",
                "message": f"backup stored at {result.get('location')}",
                "completedAt": iso(now),
                "durationSeconds": round((now - started).total_seconds(), 1),
                "observedGeneration": generation,
                "conditions": set_condition(
                    self._dequeued(generation, now, "finished"),
                    type_=COND_READY,
                    status=True,
                    reason="Completed",
                    message="backup completed and verified by its manifest",
                    generation=generation,
                    now=now,
                ),
            }
        )
        return st


CRD_FRAME = CRD(
    kind="Backup",
    plural=BACKUPS,
    short_names=("mbk",),
    description="One backup run of a BackupPolicy's database.",
    printer_columns=(
        column("Policy", "string", ".spec.policyRef.name"),
        column("Trigger", "string", ".spec.trigger"),
        column("Phase", "string", ".status.phase"),
        column("Size", "integer", ".status.sizeBytes", fmt="int64"),
        column("Stored", "integer", ".status.storedBytes", fmt="int64", priority=1),
        column("Reason", "string", ".status.reason", priority=1),
        column("Age", "date", ".metadata.creationTimestamp"),
    ),
)


def crd() -> dict[str, Any]:
    return CRD_FRAME.render(SPEC_SCHEMA, BackupStatus)
