"""A policy's storage backend, seen the same way whichever it is (S3, Azure Blob, GCS).

The operator needs four things from `spec.storage`: where a backup goes (bucket and prefix),
what non-secret settings the agent gets in MBO_AGENT_CONFIG, which Secret keys become which
environment variables (secretKeyRef only, never argv), and the Location recorded in a Backup's
status so that its objects can be deleted even after the policy is gone. `Target.of(policy)`
answers all four; everything backend-specific on the operator side lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .api.policy import PolicySpec, SecretKeyRef
from .contract import config as cc
from .contract.store import Backend, object_url

CA_MOUNT = "/etc/mysql-backup/ca"


@dataclass(frozen=True)
class SecretEnv:
    """One environment variable of the agent, filled from one key of one Secret."""

    env: str
    secret: str
    key: str


@dataclass(frozen=True)
class Target:
    backend: Backend
    bucket: str
    prefix: str
    endpoint: str | None
    secret: str | None  # the credentials Secret; None = workload identity
    secret_env: tuple[SecretEnv, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)  # non-secret, backend-specific
    ca: SecretKeyRef | None = None

    @staticmethod
    def of(policy: PolicySpec) -> Target:
        if policy.azure_blob is not None:
            az = policy.azure_blob
            keys = [
                (cc.ENV_AZURE_CONNECTION_STRING, az.connection_string_key),
                (cc.ENV_AZURE_ACCOUNT_KEY, az.account_key_key),
                (cc.ENV_AZURE_SAS_TOKEN, az.sas_token_key),
            ]
            where = (Backend.AZURE_BLOB, az.container, az.prefix, az.service_url)
            return _target(where, az.credentials_secret, keys, {"accountName": az.account_name})
        if policy.gcs is not None:
            g = policy.gcs
            where = (Backend.GCS, g.bucket, g.prefix, g.endpoint)
            return _target(
                where, g.credentials_secret, [(cc.ENV_GCS_CREDENTIALS, g.service_account_key)], {"project": g.project}
            )
        s3 = policy.s3
        assert s3 is not None, "parse_policy guarantees exactly one backend"
        keys = [
            (cc.ENV_ACCESS_KEY_ID, s3.access_key_id_key),
            (cc.ENV_SECRET_ACCESS_KEY, s3.secret_access_key_key),
            (cc.ENV_SESSION_TOKEN, s3.session_token_key),
        ]
        settings = {"region": s3.region, "forcePathStyle": s3.force_path_style}
        return _target(
            (Backend.S3, s3.bucket, s3.prefix, s3.endpoint), s3.credentials_secret, keys, settings, s3.ca_bundle
        )

    def url(self, key: str) -> str:
        return object_url(self.backend, self.bucket, key)

    def agent_config(self) -> dict[str, Any]:
        """The non-secret `storage` part of MBO_AGENT_CONFIG (contract.config.load reads it)."""
        cfg: dict[str, Any] = {"bucket": self.bucket, "endpoint": self.endpoint, **self.settings}
        if self.backend != Backend.S3:
            cfg["backend"] = str(self.backend)
        else:
            cfg["caFile"] = f"{CA_MOUNT}/s3/{self.ca.key}" if self.ca else None
        return cfg


def _target(
    where: tuple[Backend, str, str, str | None],
    secret: str | None,
    keys: list[tuple[str, str | None]],
    settings: Mapping[str, Any],
    ca: SecretKeyRef | None = None,
) -> Target:
    """`where` is (backend, bucket, prefix, endpoint); `keys` pairs agent env vars with Secret keys
    (None: that credential is not used). No Secret at all means the pod's workload identity."""
    backend, bucket, prefix, endpoint = where
    env = tuple(SecretEnv(name, secret, key) for name, key in keys if key and secret)
    return Target(backend, bucket, prefix, endpoint, secret, env, settings, ca)
