"""Deterministic names for everything the operator creates.

The same input always yields the same name, so a restarted operator (or a second replica) that
repeats a step finds "already exists" instead of creating a duplicate.
"""

from __future__ import annotations

import datetime as dt
import hashlib

# The storage key layout lives in contract.keys (shared with the agent); re-exported for callers.
from .contract.keys import dump_key as dump_key
from .contract.keys import manifest_key as manifest_key
from .contract.keys import storage_dir as storage_dir

MAX_LABEL_VALUE = 63


def _short_hash(s: str, n: int = 8) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:n]


def bounded(name: str, limit: int = MAX_LABEL_VALUE) -> str:
    """`name` if it fits, else a prefix plus a hash of the whole name: still unique and stable."""
    if len(name) <= limit:
        return name
    h = _short_hash(name)
    return f"{name[: limit - len(h) - 1].rstrip('-.')}-{h}"


def backup_job_name(backup_name: str) -> str:
    return bounded(f"backup-{backup_name}")


def restore_job_name(restore_name: str) -> str:
    return bounded(f"restore-{restore_name}")


def pre_restore_backup_name(restore_name: str, restore_created: dt.datetime) -> str:
    """Named after the Restore's creation time, not "now", so every retry picks the same name."""
    stamp = restore_created.astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return bounded(f"pre-restore-{restore_name}-{stamp}", 253)


def database_key(identity: str) -> str:
    """A label-safe key naming one database for locking (see DatabaseSpec.identity)."""
    return _short_hash(identity, 16)


def lock_name(db_key: str) -> str:
    return f"mysqlbackup-db-{db_key}"


def s3_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or "/" not in url[5:]:
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, key = url[5:].split("/", 1)
    return bucket, key


def manual_backup_name(policy: str, now: dt.datetime) -> str:
    """`<policy>-manual-<UTC timestamp>`: the name the plugin and the console give a backup taken by
    hand (second resolution: a second click within the same second is "already exists", not a twin)."""
    return bounded(f"{policy}-manual-{now.astimezone(dt.UTC).strftime('%Y%m%d%H%M%S')}", 253)
