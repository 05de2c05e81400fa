"""The agent's inputs: non-secret settings from MBO_AGENT_CONFIG, secrets from their own env vars.

Why split that way: the JSON config is visible in the Job spec (and `kubectl describe`), so it
must never hold a secret; passwords and keys arrive through secretKeyRef env vars only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api import Compression

# Environment variable names: the operator's Job renderer writes them, the agent reads them.
ENV_CONFIG = "MBO_AGENT_CONFIG"
ENV_DB_PASSWORD = "MBO_DB_PASSWORD"
ENV_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_SESSION_TOKEN = "AWS_SESSION_TOKEN"
# The client-side encryption key Secret's content (an age identity file), when the policy has one.
ENV_ENCRYPTION_KEY = "MBO_ENCRYPTION_KEY"
# backup.encryption in the agent config: the format the agent writes (only age v1 so far).
ENCRYPTION_FORMAT = "age-v1"
# S3 SSE-C: the customer key (base64 of 32 bytes) from its Secret.
ENV_SSE_CUSTOMER_KEY = "MBO_SSE_CUSTOMER_KEY"

# backup.layout: one object for the whole dump (the default), or one per table plus a prologue
# and an epilogue (restorable in parallel, and table by table).
LAYOUT_SINGLE = "single"
LAYOUT_PER_TABLE = "perTable"
DEFAULT_RESTORE_PARALLELISM = 4


@dataclass(frozen=True)
class DbConfig:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    databases: tuple[str, ...]
    tls_enabled: bool
    tls_ca_file: str | None


@dataclass(frozen=True)
class StorageConfig:
    bucket: str
    dump_key: str
    manifest_key: str
    endpoint: str | None
    region: str
    force_path_style: bool
    ca_file: str | None
    access_key_id: str | None = field(repr=False)
    secret_access_key: str | None = field(repr=False)
    session_token: str | None = field(repr=False)
    # S3 server-side encryption pass-through (storage.s3.serverSideEncryption).
    sse_mode: str | None = None
    sse_kms_key_id: str | None = None
    sse_customer_key: str | None = field(default=None, repr=False)  # base64 of 32 bytes (SSE-C)


@dataclass(frozen=True)
class AgentConfig:
    db: DbConfig
    storage: StorageConfig
    backup: Mapping[str, Any]
    restore: Mapping[str, Any]
    encryption_key: str | None = field(default=None, repr=False)
    archive: Mapping[str, Any] = field(default_factory=dict)  # the binlog archiver's settings

    @property
    def secrets(self) -> list[str | None]:
        # Each line of the key file too: a message could quote one identity of several.
        key_lines = [ln.strip() for ln in (self.encryption_key or "").splitlines() if ln.strip()]
        return [
            self.db.password,
            self.storage.secret_access_key,
            self.storage.session_token,
            self.storage.sse_customer_key,
            *key_lines,
        ]

    @property
    def encrypted(self) -> bool:
        """Whether backups are to be encrypted (the operator sets backup.encryption)."""
        return bool(self.backup.get("encryption"))

    @property
    def compression(self) -> Compression:
        return Compression(self.backup.get("compression", "zstd"))


def load(environ: Mapping[str, str] | None = None) -> AgentConfig:
    env = os.environ if environ is None else environ
    raw = json.loads(env.get(ENV_CONFIG) or "{}")
    d, s = raw.get("database") or {}, raw.get("storage") or {}
    tls = d.get("tls") or {}
    return AgentConfig(
        db=DbConfig(
            host=str(d.get("host", "")),
            port=int(d.get("port", 3306)),
            user=str(d.get("user", "")),
            password=env.get(ENV_DB_PASSWORD, ""),
            databases=tuple(d.get("databases") or ()),
            tls_enabled=bool(tls.get("enabled")),
            tls_ca_file=tls.get("caFile"),
        ),
        storage=StorageConfig(
            bucket=str(s.get("bucket", "")),
            dump_key=str(s.get("dumpKey", "")),
            manifest_key=str(s.get("manifestKey", "")),
            endpoint=s.get("endpoint"),
            region=str(s.get("region") or "us-east-1"),
            force_path_style=bool(s.get("forcePathStyle")),
            ca_file=s.get("caFile"),
            access_key_id=env.get(ENV_ACCESS_KEY_ID),
            secret_access_key=env.get(ENV_SECRET_ACCESS_KEY),
            session_token=env.get(ENV_SESSION_TOKEN) or None,
            sse_mode=(s.get("serverSideEncryption") or {}).get("mode"),
            sse_kms_key_id=(s.get("serverSideEncryption") or {}).get("kmsKeyId"),
            sse_customer_key=env.get(ENV_SSE_CUSTOMER_KEY) or None,
        ),
        backup=raw.get("backup") or {},
        restore=raw.get("restore") or {},
        encryption_key=env.get(ENV_ENCRYPTION_KEY) or None,
        archive=raw.get("archive") or {},
    )
