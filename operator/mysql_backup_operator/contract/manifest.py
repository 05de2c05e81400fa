"""The manifest: the JSON document stored next to a backup's objects, written last.

Its presence is what makes a backup complete (a dump without a manifest is never restored or
imported), and it carries the sha256 of every object so a restore can verify all of them before
it touches the database.

Version 1 (agent <= 0.x) described exactly one object with top-level `object` and `sha256`.
Version 2 lists every object under `objects` (key, kind, sha256, sizes) and keeps the v1
top-level fields for the dump object, so an older operator or agent still reads it. Readers
accept both versions; writers write v2.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..api import Compression

MANIFEST_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)


class ManifestError(ValueError):
    """The manifest is unreadable or inconsistent: nothing described by it may be restored."""


class ObjectKind(StrEnum):
    """What one stored object holds. Restore order: prologue, tables (any order), epilogue."""

    DUMP = "dump"  # a whole mysqldump stream (v1, and v2 backups that are not split)
    PROLOGUE = "prologue"  # schema-level statements that must run first (databases, settings)
    TABLE = "table"  # one table's definition and rows
    EPILOGUE = "epilogue"  # what must run last (views, routines, events, closing settings)


@dataclass(frozen=True)
class ManifestObject:
    key: str
    kind: ObjectKind
    sha256: str
    stored_bytes: int | None = None
    size_bytes: int | None = None
    database: str | None = None
    table: str | None = None
    compression_level: int | None = None  # informational: restores never need it

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "key": self.key,
            "kind": str(self.kind),
            "sha256": self.sha256,
            "storedBytes": self.stored_bytes,
            "sizeBytes": self.size_bytes,
        }
        if self.database is not None:
            d["database"] = self.database
        if self.table is not None:
            d["table"] = self.table
        if self.compression_level is not None:
            d["compressionLevel"] = self.compression_level
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> ManifestObject:
        try:
            return ManifestObject(
                key=str(d["key"]),
                kind=ObjectKind(d.get("kind", "dump")),
                sha256=str(d["sha256"]),
                stored_bytes=_opt_int(d.get("storedBytes")),
                size_bytes=_opt_int(d.get("sizeBytes")),
                database=d.get("database"),
                table=d.get("table"),
                compression_level=_opt_int(d.get("compressionLevel")),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise ManifestError(f"manifest object entry is invalid: {e}") from None


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


@dataclass(frozen=True)
class Manifest:
    """A backup as stored. `objects` is never empty; `sha256` is the digest the Backup records."""

    objects: tuple[ManifestObject, ...]
    compression: Compression
    databases: tuple[str, ...] = ()
    size_bytes: int | None = None
    stored_bytes: int | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    server_version: str | None = None
    binlog: Mapping[str, Any] | None = None
    backup: Mapping[str, Any] = field(default_factory=dict)
    agent_version: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    duration_seconds: float | None = None
    version: int = MANIFEST_VERSION
    # Client-side encryption of every object: {"format": "age-v1", "keyId": "<16 hex>"}, or None.
    # Never the key; sha256 and sizes are over the stored (encrypted) bytes.
    encryption: Mapping[str, Any] | None = None

    @property
    def primary(self) -> ManifestObject:
        """The object v1 readers know as `object`: the dump, or the prologue of a split backup."""
        return self.objects[0]

    @property
    def sha256(self) -> str:
        """One digest for the whole backup, as recorded in Backup.status.sha256.

        For a single object it is that object's sha256 (so v1 and v2 single-object backups agree);
        for several it is the sha256 of the sorted "key sha256" lines, which changes if any
        object, or the set of objects, changes.
        """
        if len(self.objects) == 1:
            return self.objects[0].sha256
        return combined_sha256(self.objects)

    def keys(self) -> list[str]:
        return [o.key for o in self.objects]

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifestVersion": self.version,
            "agentVersion": self.agent_version,
            "backup": dict(self.backup),
            # v1 fields, kept so an older reader still finds the dump and its digest.
            "object": self.primary.key,
            "sha256": self.sha256,
            "compression": str(self.compression),
            "sizeBytes": self.size_bytes,
            "storedBytes": self.stored_bytes,
            "objects": [o.to_dict() for o in self.objects],
            "databases": list(self.databases),
            "counts": dict(self.counts),
            "serverVersion": self.server_version,
            "binlog": dict(self.binlog) if self.binlog else None,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
            "durationSeconds": self.duration_seconds,
            **({"encryption": dict(self.encryption)} if self.encryption else {}),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2).encode()


def _encryption(raw: Any) -> Mapping[str, Any] | None:
    if not raw:
        return None
    if not isinstance(raw, Mapping) or not raw.get("format") or not raw.get("keyId"):
        raise ManifestError("the backup manifest's encryption entry needs a format and a keyId")
    return {"format": str(raw["format"]), "keyId": str(raw["keyId"])}


def combined_sha256(objects: Sequence[ManifestObject]) -> str:
    lines = sorted(f"{o.key} {o.sha256}\n" for o in objects)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def parse(data: Mapping[str, Any] | bytes | str) -> Manifest:
    """Reads a v1 or v2 manifest; raises ManifestError for anything a restore must not trust."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError:
            raise ManifestError("the backup manifest is not valid JSON") from None
    if not isinstance(data, Mapping):
        raise ManifestError("the backup manifest is not a JSON object")
    try:
        version = int(data.get("manifestVersion", 1))
    except (TypeError, ValueError):
        raise ManifestError("the backup manifest has an invalid manifestVersion") from None
    if version not in SUPPORTED_VERSIONS:
        raise ManifestError(f"manifest version {version} is newer than this agent understands")
    if "sha256" not in data:
        raise ManifestError("the backup manifest has no sha256")
    try:
        compression = Compression(data.get("compression", "none"))
    except ValueError:
        raise ManifestError(f"unknown compression {data.get('compression')!r}") from None
    if version == 1 or not data.get("objects"):
        if "object" not in data:
            raise ManifestError("the backup manifest names no object")
        objects: tuple[ManifestObject, ...] = (
            ManifestObject(
                key=str(data["object"]),
                kind=ObjectKind.DUMP,
                sha256=str(data["sha256"]),
                stored_bytes=_opt_int(data.get("storedBytes")),
                size_bytes=_opt_int(data.get("sizeBytes")),
            ),
        )
    else:
        raw = data["objects"]
        if not isinstance(raw, list):
            raise ManifestError("the backup manifest's objects is not a list")
        objects = tuple(ManifestObject.from_dict(o) for o in raw)
    m = Manifest(
        objects=objects,
        compression=compression,
        databases=tuple(data.get("databases") or ()),
        size_bytes=_opt_int(data.get("sizeBytes")),
        stored_bytes=_opt_int(data.get("storedBytes")),
        counts=dict(data.get("counts") or {}),
        server_version=data.get("serverVersion"),
        binlog=data.get("binlog") or None,
        backup=dict(data.get("backup") or {}),
        agent_version=data.get("agentVersion"),
        started_at=data.get("startedAt"),
        completed_at=data.get("completedAt"),
        duration_seconds=data.get("durationSeconds"),
        version=version,
        encryption=_encryption(data.get("encryption")),
    )
    if m.sha256 != str(data["sha256"]):
        raise ManifestError("the manifest's sha256 does not match the digest of its objects")
    return m
