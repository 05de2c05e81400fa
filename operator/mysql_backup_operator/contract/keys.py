"""Where a backup's objects live in the bucket: the one place that knows the key layout.

    <prefix>/<namespace>/<policy>/<backup>-<uid8>/manifest.json
    <prefix>/<namespace>/<policy>/<backup>-<uid8>/dump.sql.zst        (the dump, v1 and v2)

Keys are deterministic (the same Backup always maps to the same folder) so that a repeated step
overwrites or finds its own object instead of creating a second one, and the uid part keeps a
re-created Backup of the same name apart from the old one's data. Everything of one backup sits
under one folder, so deleting or importing a backup is a prefix operation.
"""

from __future__ import annotations

from ..api import Compression

MANIFEST_NAME = "manifest.json"


def storage_dir(*, prefix: str, namespace: str, policy: str, backup: str, uid: str) -> str:
    """The folder of one backup. The uid part keeps a re-created Backup of the same name apart."""
    parts = [p for p in (prefix.strip("/"), namespace, policy, f"{backup}-{uid[:8]}") if p]
    return "/".join(parts)


def dump_key(directory: str, compression: Compression) -> str:
    return f"{directory}/dump{compression.extension}"


def manifest_key(directory: str) -> str:
    return f"{directory}/{MANIFEST_NAME}"


def directory_of(key: str) -> str:
    """The backup folder holding `key` (a manifest's or a dump's)."""
    return key.rsplit("/", 1)[0] if "/" in key else ""


def is_manifest(key: str) -> bool:
    return key.endswith("/" + MANIFEST_NAME)
