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
from .common import (
    CRD,
    DB_NAME,
    DB_NAME_PATTERN,
    TABLE_PATTERN,
    OperationStatus,
    SpecError,
    Status,
    column,
    iso,
    parse_iso,
    required,
    set_condition,
    user_database,
)
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
class BackupScope:
    """Part of the server a Backup covers; empty = the policy's databases (or all of them).

    The operator sets it on a partial Restore's safety backup (restore.safety_scope), so that
    backup covers what the restore replaces and nothing more.
    """

    databases: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()  # "database.table"; such a backup is always perTable

    def __bool__(self) -> bool:
        return bool(self.databases or self.tables)

    def to_spec(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in (("databases", self.databases), ("tables", self.tables)) if v}


WHOLE = BackupScope()  # no scope: the policy's databases


@dataclass(frozen=True)
class BackupSpec:
    policy: str
    trigger: Trigger = DEFAULT_TRIGGER
    deletion_policy: DeletionPolicy = DEFAULT_DELETION_POLICY
    description: str = ""
    scope: BackupScope = WHOLE


def parse_scope(raw: Mapping[str, Any]) -> BackupScope:
    databases = tuple(str(d) for d in raw.get("databases") or ())
    tables = tuple(str(t) for t in raw.get("tables") or ())
    if databases and tables:
        raise SpecError("spec.scope: set either databases or tables, not both")
    for d in databases:
        if not user_database(d):
            raise SpecError(f"spec.scope.databases: invalid database name {d!r}")
    for t in tables:
        db, dot, name = t.partition(".")
        if not dot or not user_database(db) or not DB_NAME.match(name):
            raise SpecError(f"spec.scope.tables: invalid table {t!r} (expected database.table)")
    return BackupScope(databases=databases, tables=tables)


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
        scope=parse_scope(spec.get("scope") or {}),
    )


SPEC_SCHEMA = obj(
    {
        "policyRef": obj({"name": prop("string", minLength=1, maxLength=253)}, required=["name"]),
        "trigger": prop("string", enum=Trigger, default=DEFAULT_TRIGGER.value),
        "description": prop("string", maxLength=1024),
        "deletionPolicy": prop("string", enum=DeletionPolicy, default=DEFAULT_DELETION_POLICY.value),
        "scope": obj(
            {
                "databases": prop(
                    "array",
                    maxItems=64,
                    items=prop("string", minLength=1, maxLength=64, pattern=DB_NAME_PATTERN),
                    list_type="set",
                ),
                "tables": prop(
                    "array",
                    maxItems=256,
                    items=prop("string", minLength=3, maxLength=129, pattern=TABLE_PATTERN),
                    list_type="set",
                ),
            },
            description=(
                'Back up only part of the server: these databases, or these tables ("database.table", always '
                "with the perTable layout). The operator sets it on the pre-restore safety backup of a partial "
                "Restore, so that backup covers what the restore replaces. Databases or tables that do not "
                "exist (yet) are skipped."
            ),
            rules=[rule("!has(self.tables) || !has(self.databases)", "set either databases or tables, not both")],
        ),
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
    # Azure Blob and GCS (docs/design-storage-backends.md); absent `backend` means s3, as
    # in statuses written before those backends. Names of Secret keys only, never values.
    backend: str | None = wire(extra={"enum": ["s3", "azureBlob", "gcs"]})
    connection_string_key: str | None = wire(nullable=True)
    account_key_key: str | None = wire(nullable=True)
    sas_token_key: str | None = wire(nullable=True)
    service_account_key: str | None = wire(nullable=True)
    account_name: str | None = wire(nullable=True)
    project: str | None = wire(nullable=True)


@dataclass(frozen=True)
class BinlogPosition:
    file: str | None = wire()
    position: int | None = wire(format="int64")
    gtid: str | None = wire()


@dataclass(frozen=True)
class EncryptionStatus:
    """Set when the backup's objects are encrypted client-side (never the key)."""

    format: str | None = wire()
    key_id: str | None = wire()


# The agent's result fields a completed Backup records in its status, as they are.
RESULT_FIELDS = (
    "location",
    "encryption",
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
    encryption: EncryptionStatus | None = wire(description=EncryptionStatus.__doc__)

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
        column("Key", "string", ".status.encryption.keyId", priority=1),
        column("Age", "date", ".metadata.creationTimestamp"),
    ),
)


def crd() -> dict[str, Any]:
    return CRD_FRAME.render(SPEC_SCHEMA, BackupStatus)
