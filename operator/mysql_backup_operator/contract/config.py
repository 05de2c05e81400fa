"""The agent's inputs: non-secret settings from MBO_AGENT_CONFIG, secrets from their own env vars.

Why split that way: the JSON config is visible in the Job spec (and `kubectl describe`), so it
must never hold a secret; passwords and keys arrive through secretKeyRef env vars only.
"""

from __future__ import annotations

import contextlib
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
ENV_AZURE_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ENV_AZURE_ACCOUNT_KEY = "AZURE_STORAGE_KEY"
ENV_AZURE_SAS_TOKEN = "AZURE_STORAGE_SAS_TOKEN"
ENV_GCS_CREDENTIALS = "MBO_GCS_SERVICE_ACCOUNT_JSON"

# backup.layout: one object for the whole dump (the default), or one per table plus a prologue
# and an epilogue (restorable in parallel, and table by table).
LAYOUT_SINGLE = "single"
LAYOUT_PER_TABLE = "perTable"
DEFAULT_RESTORE_PARALLELISM = 4
RESTORE_PARALLELISM_BOUNDS = (2, 8)


def default_restore_parallelism(server_cpus: int | None) -> int:
    """The Restore's streams when spec.parallelism is unset: the database server's CPU count,
    within RESTORE_PARALLELISM_BOUNDS, or DEFAULT_RESTORE_PARALLELISM when the server does not
    tell (MySQL; MariaDB's @@thread_pool_size defaults to its CPU count). A load is bound by the
    server's CPU, not the client's: on a 2-core server 4 streams used 46 s of server CPU where 2
    used 43 s, in the same time or less, and 30 MiB more memory in the pod
    (docs/performance.md, "Results, fourth round"); at least 2, so that one stream's client
    work overlaps another's server work."""
    if not server_cpus or server_cpus < 1:
        return DEFAULT_RESTORE_PARALLELISM
    low, high = RESTORE_PARALLELISM_BOUNDS
    return min(max(server_cpus, low), high)


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
    # Which backend, and the settings only Azure Blob or GCS have (contract.store.Backend).
    backend: str = "s3"
    azure_account_name: str | None = None
    azure_connection_string: str | None = field(default=None, repr=False)
    azure_account_key: str | None = field(default=None, repr=False)
    azure_sas_token: str | None = field(default=None, repr=False)
    gcs_project: str | None = None
    gcs_credentials_json: str | None = field(default=None, repr=False)
    # S3 server-side encryption pass-through (storage.s3.serverSideEncryption).
    sse_mode: str | None = None
    sse_kms_key_id: str | None = None
    sse_customer_key: str | None = field(default=None, repr=False)  # base64 of 32 bytes (SSE-C)

    @property
    def secrets(self) -> list[str | None]:
        return [
            self.secret_access_key,
            self.session_token,
            self.azure_connection_string,
            self.azure_account_key,
            self.azure_sas_token,
            self.gcs_credentials_json,
            self.sse_customer_key,
            *_secret_parts(self.azure_connection_string, self.azure_sas_token, self.gcs_credentials_json),
        ]


def _secret_parts(*values: str | None) -> list[str]:
    """The pieces of composite secrets that an error text could show on their own: a connection
    string's AccountKey and SharedAccessSignature, a SAS token's signature, a key file's private key."""
    out: list[str] = []
    for v in values:
        if not v:
            continue
        if v.lstrip().startswith("{"):
            with contextlib.suppress(ValueError, AttributeError):
                out += [str(json.loads(v).get(k) or "") for k in ("private_key", "private_key_id")]
            continue
        for item in v.replace("&", ";").lstrip("?").split(";"):
            name, _, value = item.partition("=")
            if name.strip() in ("AccountKey", "SharedAccessSignature", "sig"):
                out.append(value)
    return out


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
        return [self.db.password, *self.storage.secrets, *key_lines]

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
            backend=str(s.get("backend") or "s3"),
            azure_account_name=s.get("accountName"),
            azure_connection_string=env.get(ENV_AZURE_CONNECTION_STRING) or None,
            azure_account_key=env.get(ENV_AZURE_ACCOUNT_KEY) or None,
            azure_sas_token=env.get(ENV_AZURE_SAS_TOKEN) or None,
            gcs_project=s.get("project"),
            gcs_credentials_json=env.get(ENV_GCS_CREDENTIALS) or None,
            sse_mode=(s.get("serverSideEncryption") or {}).get("mode"),
            sse_kms_key_id=(s.get("serverSideEncryption") or {}).get("kmsKeyId"),
            sse_customer_key=env.get(ENV_SSE_CUSTOMER_KEY) or None,
        ),
        backup=raw.get("backup") or {},
        restore=raw.get("restore") or {},
        encryption_key=env.get(ENV_ENCRYPTION_KEY) or None,
        archive=raw.get("archive") or {},
    )
