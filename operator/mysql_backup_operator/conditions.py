"""Status transitions as named, pure functions.

Each returns the status patch for one transition; handlers only send it. Keeping this pure makes
the state machine readable in one place and testable without a cluster.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from .api import COND_QUEUED, COND_READY, BackupPhase, Reason, RestorePhase

Status = dict[str, Any]


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Upserts one condition, keeping lastTransitionTime when the status did not change."""
    out = [dict(c) for c in conditions if c.get("type") != type_]
    old = next((c for c in conditions if c.get("type") == type_), None)
    value = "True" if status else "False"
    changed = old is None or old.get("status") != value
    out.append(
        {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": iso(now) if changed or old is None else old.get("lastTransitionTime", iso(now)),
        }
    )
    return sorted(out, key=lambda c: str(c["type"]))


def queued(
    current: Mapping[str, Any], *, holder: str, position: int, reason: Reason, generation: int, now: dt.datetime
) -> Status | None:
    """Pending with a visible Queued condition; None when nothing visible changed (no patch needed)."""
    message = f"waiting for {holder} to finish" if reason == Reason.DATABASE_BUSY else f"queued behind {holder}"
    old: Mapping[str, Any] = next((c for c in current.get("conditions") or [] if c.get("type") == COND_QUEUED), {})
    if (
        old.get("status") == "True"
        and old.get("message") == message
        and current.get("queuePosition") == position
        and current.get("phase")
    ):
        return None
    return {
        "phase": current.get("phase") or "Pending",
        "queuePosition": position,
        "reason": str(reason),
        "message": message,
        "observedGeneration": generation,
        "conditions": set_condition(
            current.get("conditions") or [],
            type_=COND_QUEUED,
            status=True,
            reason=str(reason),
            message=message,
            generation=generation,
            now=now,
        ),
    }


def _dequeued(current: Mapping[str, Any], generation: int, now: dt.datetime, message: str) -> list[dict[str, Any]]:
    return set_condition(
        current.get("conditions") or [],
        type_=COND_QUEUED,
        status=False,
        reason="LockAcquired",
        message=message,
        generation=generation,
        now=now,
    )


def pending(current: Mapping[str, Any], *, message: str, generation: int) -> Status | None:
    if current.get("phase") == "Pending" and current.get("message") == message:
        return None
    return {"phase": "Pending", "message": message, "observedGeneration": generation}


def backup_running(current: Mapping[str, Any], *, job_name: str, generation: int, now: dt.datetime) -> Status:
    return {
        "phase": str(BackupPhase.RUNNING),
        "jobName": job_name,
        "startedAt": current.get("startedAt") or iso(now),
        "queuePosition": None,
        "reason": None,
        "message": f"backup Job {job_name} is running",
        "observedGeneration": generation,
        "conditions": _dequeued(current, generation, now, "database lock held; backup started"),
    }


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


def backup_completed(
    current: Mapping[str, Any], *, result: Mapping[str, Any], generation: int, now: dt.datetime
) -> Status:
    started = parse_iso(current["startedAt"]) if current.get("startedAt") else now
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
                _dequeued(current, generation, now, "finished"),
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


def failed(
    current: Mapping[str, Any], *, reason: Reason | str, message: str, generation: int, now: dt.datetime
) -> Status:
    """Terminal failure; same shape for Backup and Restore."""
    started = parse_iso(current["startedAt"]) if current.get("startedAt") else None
    st: Status = {
        "phase": "Failed",
        "reason": str(reason),
        "message": message,
        "queuePosition": None,
        "completedAt": iso(now),
        "observedGeneration": generation,
        "conditions": set_condition(
            _dequeued(current, generation, now, "finished"),
            type_=COND_READY,
            status=False,
            reason=str(reason),
            message=message,
            generation=generation,
            now=now,
        ),
    }
    if started:
        st["durationSeconds"] = round((now - started).total_seconds(), 1)
    return st


def restore_backing_up(current: Mapping[str, Any], *, pre_restore: str, generation: int, now: dt.datetime) -> Status:
    return {
        "phase": str(RestorePhase.BACKING_UP),
        "preRestoreBackup": pre_restore,
        "startedAt": current.get("startedAt") or iso(now),
        "queuePosition": None,
        "reason": None,
        "message": f"taking pre-restore safety backup {pre_restore}",
        "observedGeneration": generation,
        "conditions": _dequeued(current, generation, now, "database lock held; safety backup started"),
    }


def restore_restoring(
    current: Mapping[str, Any], *, job_name: str, databases: Sequence[str], generation: int, now: dt.datetime
) -> Status:
    return {
        "phase": str(RestorePhase.RESTORING),
        "jobName": job_name,
        "restoredDatabases": list(databases),
        "message": f"safety backup {current.get('preRestoreBackup')} completed; restore Job {job_name} is running",
        "observedGeneration": generation,
    }


def restore_completed(current: Mapping[str, Any], *, generation: int, now: dt.datetime) -> Status:
    started = parse_iso(current["startedAt"]) if current.get("startedAt") else now
    return {
        "phase": str(RestorePhase.COMPLETED),
        "reason": "Completed",
        "message": "restore completed",
        "completedAt": iso(now),
        "durationSeconds": round((now - started).total_seconds(), 1),
        "observedGeneration": generation,
        "conditions": set_condition(
            current.get("conditions") or [],
            type_=COND_READY,
            status=True,
            reason="Completed",
            message="restore completed",
            generation=generation,
            now=now,
        ),
    }
