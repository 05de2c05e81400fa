"""The agent's one output: a JSON object in its termination message, copied by the operator into status.

The field names are the ones the operator has always read (`location`, `sha256`, `sizeBytes`...);
new fields are only ever added, so an operator and an agent one version apart still agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .manifest import Manifest

MAX_RESULT = 4000  # the termination message is capped at 4096 bytes by Kubernetes


@dataclass(frozen=True)
class BackupResult:
    bucket: str
    manifest_key: str
    manifest: Manifest
    scheme: str = "s3"  # contract.store.Backend.scheme: s3, azblob or gs

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        binlog = {k: v for k, v in (m.binlog or {}).items() if v is not None} or None
        return {
            "ok": True,
            "operation": "backup",
            "location": f"{self.scheme}://{self.bucket}/{m.primary.key}",
            "manifestLocation": f"{self.scheme}://{self.bucket}/{self.manifest_key}",
            "manifestVersion": m.version,
            "objectCount": len(m.objects),
            "sizeBytes": m.size_bytes,
            "storedBytes": m.stored_bytes,
            "sha256": m.sha256,
            "compression": str(m.compression),
            "tableCount": m.counts.get("tables"),
            "databases": list(m.databases),
            "serverVersion": m.server_version,
            "binlog": binlog,
            "startedAt": m.started_at,
            "completedAt": m.completed_at,
            "durationSeconds": m.duration_seconds,
            "encryption": dict(m.encryption) if m.encryption else None,
        }


def result_from_manifest(bucket: str, manifest_key: str, manifest: Manifest, *, scheme: str = "s3") -> dict[str, Any]:
    """A Backup's result fields, as the agent would have reported them, read back from its manifest.

    Used when the Job (and its termination message) is gone, and when importing from storage.
    """
    d = BackupResult(bucket=bucket, manifest_key=manifest_key, manifest=manifest, scheme=scheme).to_dict()
    for k in ("ok", "operation", "startedAt", "completedAt", "durationSeconds"):
        d.pop(k)
    return d


@dataclass(frozen=True)
class RestoreResult:
    databases: tuple[str, ...]
    source_databases: tuple[str, ...]
    stored_bytes: int
    applied_bytes: int
    sha256: str
    started_at: str
    completed_at: str
    duration_seconds: float
    objects_restored: int = 1
    parallelism: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "operation": "restore",
            "databases": list(self.databases),
            "sourceDatabases": list(self.source_databases),
            "storedBytes": self.stored_bytes,
            "appliedBytes": self.applied_bytes,
            "sha256": self.sha256,
            "objectsRestored": self.objects_restored,
            "parallelism": self.parallelism,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
            "durationSeconds": self.duration_seconds,
        }


@dataclass(frozen=True)
class Failure:
    operation: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": False, "operation": self.operation, "reason": self.reason, "message": self.message}


def encode(result: Mapping[str, Any]) -> str:
    """Compact JSON that fits the termination message: a long message is cut from its start."""
    text = json.dumps(result, separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_RESULT and "message" in result:
        over = len(text) - MAX_RESULT + 20
        result = {**result, "message": "..." + str(result["message"])[over:]}
        text = json.dumps(result, separators=(",", ":"), sort_keys=True)
    return text


def decode(text: str) -> dict[str, Any] | None:
    """The operator's side: a result dict, or None when the message is not one of ours."""
    try:
        d = json.loads(text)
    except ValueError:
        return None
    return d if isinstance(d, dict) and "ok" in d else None
