"""The Restore kind: restores a Backup into its policy's database, after a safety backup.

Spec (`RestoreSpec`, parsed by `parse_restore`, narrowed by `restore_plan`), status
(`RestoreStatus`, with the transitions `backing_up`, `restoring` and `completed` plus the shared
`queued`, `pending` and `failed`), their enums, and the schema `hack/gen-crds.py` renders into
crds/restores.yaml.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from . import COND_READY, RESTORES
from .backup import BackupScope
from .common import (
    CRD,
    DB_NAME,
    DB_NAME_PATTERN,
    SYSTEM_SCHEMAS,
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
from .pitr import RESTORE_SPEC_PROPERTIES as PITR_PROPERTIES
from .pitr import RESTORE_SPEC_RULES as PITR_RULES
from .pitr import PointInTimeStatus, parse_target
from .schema import obj, prop, rule, wire


class RestorePhase(StrEnum):
    PENDING = "Pending"
    BACKING_UP = "BackingUp"
    RESTORING = "Restoring"
    COMPLETED = "Completed"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (RestorePhase.COMPLETED, RestorePhase.FAILED)


MAX_PARALLELISM = 16


@dataclass(frozen=True)
class RestoreSpec:
    backup: str
    databases: tuple[str, ...]
    target: str | None
    tables: tuple[str, ...] = ()  # "database.table"; only with perTable backups
    parallelism: int | None = None
    policy: str = ""  # spec.policyRef: with a point-in-time target, the operator picks the backup
    target_time: str | None = None  # spec.pointInTime.time (RFC 3339)
    target_gtid: str | None = None  # spec.pointInTime.gtid

    @property
    def point_in_time(self) -> bool:
        return bool(self.target_time or self.target_gtid)


def parse_restore(spec: Mapping[str, Any]) -> RestoreSpec:
    ref = spec.get("backupRef") or {}
    databases = tuple(spec.get("databases") or ())
    target = spec.get("target") or None
    for d in (*databases, *([target] if target else [])):
        if not user_database(d):
            raise SpecError(f"invalid database name {d!r}")
    if target and len(databases) > 1:
        raise SpecError("spec.target can only be set when restoring a single database")
    tables = tuple(str(t) for t in spec.get("tables") or ())
    if tables and databases:
        raise SpecError("set either spec.databases or spec.tables, not both")
    for t in tables:
        db, dot, name = t.partition(".")
        if not dot or not DB_NAME.match(db) or not DB_NAME.match(name) or db.lower() in SYSTEM_SCHEMAS:
            raise SpecError(f"invalid table {t!r} (expected database.table)")
    if tables:
        databases = tuple(sorted({t.partition(".")[0] for t in tables}))
        if target and len(databases) > 1:
            raise SpecError("spec.target needs all spec.tables to come from one database")
    parallelism = spec.get("parallelism")
    if parallelism is not None and not 1 <= int(parallelism) <= MAX_PARALLELISM:
        raise SpecError(f"spec.parallelism must be between 1 and {MAX_PARALLELISM}")
    point = parse_target(spec, has_backup=bool(ref.get("name")), selects=bool(target or tables or databases))
    return RestoreSpec(
        policy=point.policy if point else "",
        target_time=point.time if point else None,
        target_gtid=point.gtid if point else None,
        backup=str(ref.get("name") or "") if point else str(required(ref, "name", "spec.backupRef")),
        databases=databases,
        target=target,
        tables=tables,
        parallelism=int(parallelism) if parallelism is not None else None,
    )


def safety_scope(spec: RestoreSpec) -> BackupScope:
    """What a Restore replaces, for its pre-restore safety backup to cover (nothing more).

    Tables (under the target database when there is one) for a table-level restore; the chosen
    databases (or the target) for a database-level one; empty, i.e. the policy's whole backup,
    for a full restore. What the restore reads (the source backup) does not matter here, only
    what it overwrites.
    """
    if spec.tables:
        return BackupScope(
            tables=tuple(f"{spec.target}.{t.partition('.')[2]}" for t in spec.tables) if spec.target else spec.tables
        )
    if spec.target:
        return BackupScope(databases=(spec.target,))
    return BackupScope(databases=spec.databases)


def restore_plan(spec: RestoreSpec, backed_up: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """Which databases a Restore applies, and under what target name, given what the dump holds."""
    chosen = spec.databases or backed_up
    missing = [d for d in chosen if d not in backed_up]
    if missing:
        raise SpecError(f"databases not in the backup: {', '.join(missing)} (it holds {', '.join(backed_up)})")
    if spec.target and len(chosen) != 1:
        raise SpecError(
            f"spec.target needs exactly one database, but the restore selects {len(chosen)}: {', '.join(chosen)}"
        )
    return tuple(chosen), spec.target


def _db_name(**keywords: Any) -> dict[str, Any]:
    return prop("string", **keywords, minLength=1, maxLength=64, pattern=DB_NAME_PATTERN)


SPEC_SCHEMA = obj(
    {
        "backupRef": obj({"name": prop("string", minLength=1, maxLength=253)}, required=["name"]),
        "databases": prop(
            "array",
            description="Restore only these databases from the backup.",
            maxItems=64,
            items=_db_name(),
            list_type="set",
        ),
        "tables": prop(
            "array",
            description=(
                'Restore only these tables ("database.table") of a perTable backup; the rest of the '
                "database, its views, routines and events are left as they are."
            ),
            maxItems=256,
            items=prop("string", minLength=3, maxLength=129, pattern=TABLE_PATTERN),
            list_type="set",
        ),
        "parallelism": prop(
            "integer",
            description=(
                "Concurrent mysql streams loading the tables of a perTable backup (default: the database "
                "server's CPU count as MariaDB reports it, between 2 and 8; 4 when the server does not tell). "
                "Single-object backups always restore as one stream."
            ),
            minimum=1,
            maximum=MAX_PARALLELISM,
        ),
        "target": _db_name(description="Restore the (single) database under this name instead."),
        **PITR_PROPERTIES,
    },
    rules=[
        rule("self == oldSelf", "Restore spec is immutable; create a new Restore instead"),
        *PITR_RULES,
        rule(
            "!has(self.target) || !has(self.databases) || size(self.databases) == 1",
            "target can only be set when restoring a single database",
        ),
        rule("!has(self.tables) || !has(self.databases)", "set either databases or tables, not both"),
    ],
)


@dataclass(frozen=True)
class RestoreStatus(OperationStatus):
    phase: RestorePhase | None = wire()
    pre_restore_backup: str | None = wire()
    restored_databases: tuple[str, ...] = wire(default=())
    point_in_time: PointInTimeStatus | None = wire(
        description="The plan of a point-in-time restore, fixed at its first step."
    )

    def backing_up(self, *, pre_restore: str, generation: int, now: dt.datetime) -> Status:
        """Pending -> BackingUp: the lock is held and the safety Backup is asked for."""
        return {
            "phase": str(RestorePhase.BACKING_UP),
            "preRestoreBackup": pre_restore,
            "startedAt": self.started_at or iso(now),
            "queuePosition": None,
            "reason": None,
            "message": f"taking pre-restore safety backup {pre_restore}",
            "observedGeneration": generation,
            "conditions": self._dequeued(generation, now, "database lock held; safety backup started"),
        }

    def restoring(self, *, job_name: str, databases: Sequence[str], generation: int) -> Status:
        """BackingUp -> Restoring: the safety Backup completed and the restore Job exists."""
        return {
            "phase": str(RestorePhase.RESTORING),
            "jobName": job_name,
            "restoredDatabases": list(databases),
            "message": f"safety backup {self.pre_restore_backup} completed; restore Job {job_name} is running",
            "observedGeneration": generation,
        }

    def completed(self, *, generation: int, now: dt.datetime) -> Status:
        """Restoring -> Completed."""
        started = parse_iso(self.started_at) if self.started_at else now
        return {
            "phase": str(RestorePhase.COMPLETED),
            "reason": "Completed",
            "message": "restore completed",
            "completedAt": iso(now),
            "durationSeconds": round((now - started).total_seconds(), 1),
            "observedGeneration": generation,
            "conditions": set_condition(
                self._wire_conditions(),
                type_=COND_READY,
                status=True,
                reason="Completed",
                message="restore completed",
                generation=generation,
                now=now,
            ),
        }


CRD_FRAME = CRD(
    kind="Restore",
    plural=RESTORES,
    short_names=("mrs",),
    description=(
        "Restores a Backup into its policy's database. A pre-restore safety backup is always taken "
        "first; the restore never starts unless that backup completed."
    ),
    printer_columns=(
        column("Backup", "string", ".spec.backupRef.name"),
        column("Point", "string", ".spec.pointInTime.time", priority=1),
        column("Phase", "string", ".status.phase"),
        column("Safety Backup", "string", ".status.preRestoreBackup"),
        column("Reason", "string", ".status.reason", priority=1),
        column("Age", "date", ".metadata.creationTimestamp"),
    ),
)


def crd() -> dict[str, Any]:
    return CRD_FRAME.render(SPEC_SCHEMA, RestoreStatus)
