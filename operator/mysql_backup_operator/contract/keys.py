"""Where a backup's objects live in the bucket: the one place that knows the key layout.

    <prefix>/<namespace>/<policy>/<backup>-<uid8>/manifest.json
    <prefix>/<namespace>/<policy>/<backup>-<uid8>/dump.sql.zst        (the dump, v1 and v2)

Keys are deterministic (the same Backup always maps to the same folder) so that a repeated step
overwrites or finds its own object instead of creating a second one, and the uid part keeps a
re-created Backup of the same name apart from the old one's data. Everything of one backup sits
under one folder, so deleting or importing a backup is a prefix operation.
"""

from __future__ import annotations

import re

from ..api import Compression

MANIFEST_NAME = "manifest.json"
# Appended to every object key of an encrypted backup (dump.sql.zst.age): `age -d` first, then zstd.
ENCRYPTED_SUFFIX = ".age"


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


def _slug(name: str, limit: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:limit] or "_"


def part_key(
    directory: str, compression: Compression, *, kind: str, index: int = 0, database: str = "", table: str = ""
) -> str:
    """Keys of a per-table (v2) backup's objects, all inside the backup's folder:

        <dir>/0-prologue.sql.zst, <dir>/1-tables/00001-<db>.<table>.sql.zst, <dir>/2-epilogue.sql.zst

    The index keeps keys unique and in dump order whatever the names; the names are only for
    people browsing the bucket (sanitised; the manifest has the real ones).
    """
    ext = compression.extension
    if kind == "table":
        return f"{directory}/1-tables/{index:05d}-{_slug(database)}.{_slug(table)}{ext}"
    return f"{directory}/{'0' if kind == 'prologue' else '2'}-{kind}{ext}"
