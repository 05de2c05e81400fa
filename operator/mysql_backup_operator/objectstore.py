"""The operator's own, small use of object storage: delete a Backup's objects, and list/read
manifests for recovery from storage. The data path (dump and restore) stays in the agent.

Where a Backup's objects live is recorded in its status (`status.storage`) when its Job starts,
so deleting it works even after its BackupPolicy is gone.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .api.policy import PolicySpec
from .backends import Target
from .contract import config as cc
from .contract import manifest as mf
from .contract import result as res
from .contract.config import StorageConfig
from .contract.keys import directory_of, is_manifest
from .contract.store import SCHEMES, Backend, ObjectStore, describe, missing, object_url, open_store

# Azure/GCS credentials in status.storage: which key of the Secret feeds which agent env var.
STATUS_KEYS = {
    cc.ENV_AZURE_CONNECTION_STRING: "connectionStringKey",
    cc.ENV_AZURE_ACCOUNT_KEY: "accountKeyKey",
    cc.ENV_AZURE_SAS_TOKEN: "sasTokenKey",
    cc.ENV_GCS_CREDENTIALS: "serviceAccountKey",
}


class StorageError(Exception):
    """Object storage failed; `missing` tells "not there" apart from "could not ask"."""

    def __init__(self, message: str, *, missing: bool = False, no_credentials: bool = False) -> None:
        super().__init__(message)
        self.missing = missing
        self.no_credentials = no_credentials


@dataclass(frozen=True)
class Location:
    """Everything needed to reach one Backup's objects, as stored in `status.storage`.

    The S3 fields keep their names from before Azure and GCS, so statuses written by an older
    operator still read; the other backends add `backend`, the names of their keys in the
    credentials Secret (`connectionStringKey`, `accountKeyKey`, `sasTokenKey`, `serviceAccountKey`)
    and their own settings.
    """

    bucket: str
    dump_key: str
    manifest_key: str
    endpoint: str | None
    region: str
    force_path_style: bool
    secret: str
    access_key_id_key: str
    secret_access_key_key: str
    session_token_key: str | None
    ca_secret: str | None = None
    ca_key: str | None = None
    backend: Backend = Backend.S3
    credential_keys: Mapping[str, str] = field(default_factory=dict)  # agent env var -> key in the Secret
    account_name: str | None = None
    project: str | None = None

    def url(self, key: str) -> str:
        return object_url(self.backend, self.bucket, key)

    def to_status(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "bucket": self.bucket,
            "dumpKey": self.dump_key,
            "manifestKey": self.manifest_key,
            "endpoint": self.endpoint,
            "credentialsSecret": self.secret,
        }
        if self.backend == Backend.S3:
            d |= {
                "region": self.region,
                "forcePathStyle": self.force_path_style,
                "accessKeyIdKey": self.access_key_id_key,
                "secretAccessKeyKey": self.secret_access_key_key,
                "sessionTokenKey": self.session_token_key,
                "caSecret": self.ca_secret,
                "caKey": self.ca_key,
            }
        else:
            d |= {
                "backend": str(self.backend),
                **{STATUS_KEYS[env]: key for env, key in self.credential_keys.items()},
                "accountName": self.account_name,
                "project": self.project,
            }
        return d

    @staticmethod
    def from_status(d: Mapping[str, Any]) -> Location:
        return Location(
            bucket=d["bucket"],
            dump_key=d["dumpKey"],
            manifest_key=d["manifestKey"],
            endpoint=d.get("endpoint"),
            region=d.get("region") or "us-east-1",
            force_path_style=bool(d.get("forcePathStyle")),
            secret=d.get("credentialsSecret") or "",
            access_key_id_key=d.get("accessKeyIdKey") or "AWS_ACCESS_KEY_ID",
            secret_access_key_key=d.get("secretAccessKeyKey") or "AWS_SECRET_ACCESS_KEY",
            session_token_key=d.get("sessionTokenKey"),
            ca_secret=d.get("caSecret"),
            ca_key=d.get("caKey"),
            backend=Backend(d.get("backend") or "s3"),
            credential_keys={env: d[name] for env, name in STATUS_KEYS.items() if d.get(name)},
            account_name=d.get("accountName"),
            project=d.get("project"),
        )

    @staticmethod
    def for_policy(policy: PolicySpec, dump_key: str, manifest_key: str) -> Location:
        t = Target.of(policy)
        keys = {e.env: e.key for e in t.secret_env}
        return Location(
            bucket=t.bucket,
            dump_key=dump_key,
            manifest_key=manifest_key,
            endpoint=t.endpoint,
            region=str(t.settings.get("region") or "us-east-1"),
            force_path_style=bool(t.settings.get("forcePathStyle")),
            secret=t.secret or "",
            access_key_id_key=keys.get(cc.ENV_ACCESS_KEY_ID, "AWS_ACCESS_KEY_ID"),
            secret_access_key_key=keys.get(cc.ENV_SECRET_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY"),
            session_token_key=keys.get(cc.ENV_SESSION_TOKEN),
            ca_secret=t.ca.name if t.ca else None,
            ca_key=t.ca.key if t.ca else None,
            backend=t.backend,
            credential_keys={} if t.backend == Backend.S3 else keys,
            account_name=t.settings.get("accountName"),
            project=t.settings.get("project"),
        )

    def config(self, secret: Mapping[str, str], ca_file: str | None) -> StorageConfig:
        """The StorageConfig the agent would build, from the credentials Secret's values."""
        if self.backend == Backend.S3:
            values = {
                cc.ENV_ACCESS_KEY_ID: secret[self.access_key_id_key],
                cc.ENV_SECRET_ACCESS_KEY: secret[self.secret_access_key_key],
            }
            if self.session_token_key:
                values[cc.ENV_SESSION_TOKEN] = secret.get(self.session_token_key) or ""
        else:
            values = {env: secret[key] for env, key in self.credential_keys.items()}
        raw = {
            "storage": {
                "backend": str(self.backend),
                "bucket": self.bucket,
                "dumpKey": self.dump_key,
                "manifestKey": self.manifest_key,
                "endpoint": self.endpoint,
                "region": self.region,
                "forcePathStyle": self.force_path_style,
                "caFile": ca_file,
                "accountName": self.account_name,
                "project": self.project,
            }
        }
        return cc.load({cc.ENV_CONFIG: json.dumps(raw), **values}).storage


def result_from_manifest(
    bucket: str, manifest_key: str, manifest: Mapping[str, Any], *, backend: Backend = Backend.S3
) -> dict[str, Any]:
    """A Backup's result fields, as the agent would have reported them, read back from its manifest (v1 or v2)."""
    return res.result_from_manifest(bucket, manifest_key, mf.parse(manifest), scheme=SCHEMES[backend])


def manifest_keys(manifest: Mapping[str, Any]) -> list[str]:
    """Every object a manifest (v1 or v2) describes; an unreadable one yields its v1 `object` if any."""
    try:
        return mf.parse(manifest).keys()
    except mf.ManifestError:
        return [str(manifest["object"])] if manifest.get("object") else []


def holds_all_of(manifest: Mapping[str, Any], listed: Mapping[str, int]) -> bool:
    """Pure: every object the manifest (v1 or v2) lists is in `listed` (key -> size, a listing)
    with its recorded size. An unreadable manifest holds nothing."""
    try:
        parsed = mf.parse(manifest)
    except mf.ManifestError:
        return False
    return all(listed.get(o.key) == o.stored_bytes for o in parsed.objects)


def _error(e: Exception, what: str) -> StorageError:
    """Only the error code and type: an SDK's full text can carry a URL with a SAS token in it."""
    return StorageError(f"{what}: {describe(e)}", missing=missing(e))


class Store:
    """The operator's view of one bucket/container, on any backend, built from a Location and the
    credentials Secret's values. Every failure is a StorageError with a secret-free message."""

    def __init__(self, loc: Location, secret: Mapping[str, str], ca_pem: str | None = None) -> None:
        self.bucket = loc.bucket
        self.location = loc
        self._ca_file: str | None = None
        if ca_pem:
            fd, self._ca_file = tempfile.mkstemp(prefix="mbo-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as f:
                f.write(ca_pem)
        try:
            cfg = loc.config(secret, self._ca_file)
        except KeyError as e:
            self.close()
            raise StorageError(f"credentials Secret {loc.secret} has no key {e}") from None
        try:
            self.objects: ObjectStore = open_store(cfg)
        except Exception as e:
            self.close()
            raise StorageError(f"cannot open {loc.url('')}: {describe(e)}") from None

    @classmethod
    def over(cls, objects: ObjectStore, loc: Location) -> Store:
        """A Store over an ObjectStore that is already open (a test's in-memory bucket)."""
        store = cls.__new__(cls)
        store.bucket, store.location, store._ca_file, store.objects = objects.bucket, loc, None, objects
        return store

    def close(self) -> None:
        if self._ca_file:
            os.unlink(self._ca_file)
            self._ca_file = None
        objects = getattr(self, "objects", None)
        if objects is not None:
            objects.close()

    def url(self, key: str) -> str:
        return self.location.url(key)

    def delete(self, key: str) -> None:
        """Deleting a missing key is success, so a retried deletion is idempotent."""
        try:
            self.objects.delete(key)
        except Exception as e:
            raise _error(e, f"delete {self.url(key)}") from None

    def delete_backup(self, *, manifest_key: str, dump_key: str) -> list[str]:
        """Deletes one backup: its manifest first (so nothing half-deleted looks complete), then
        every object in its folder (a v2 backup has several), then the dump key itself in case it
        lives elsewhere. Idempotent: a retry after a crash finishes the job."""
        self.delete(manifest_key)
        folder = directory_of(manifest_key)
        keys = list(self.list(folder + "/")) if folder else []
        for key in keys:
            self.delete(key)
        if dump_key not in keys:
            self.delete(dump_key)
        return keys

    def list(self, prefix: str) -> Iterator[str]:
        try:
            yield from self.objects.list(prefix)
        except Exception as e:
            raise _error(e, f"list {self.url(prefix)}") from None

    def holds_all_of(self, manifest: Mapping[str, Any]) -> bool:
        """Every object the manifest (v1 or v2) lists is there with its recorded size: only then
        is it a backup (a manifest whose data is partly gone must not be imported or trusted).

        The sizes come from one listing per folder, never a HEAD per object: S3 refuses HEAD of an
        SSE-C object without the customer key (the operator has none), and a per-table backup has
        hundreds of objects."""
        try:
            folders = {directory_of(o.key) for o in mf.parse(manifest).objects}
        except mf.ManifestError:
            return False
        listed: dict[str, int] = {}
        for folder in sorted(folders):
            listed |= self.sizes(folder + "/" if folder else "")
        return holds_all_of(manifest, listed)

    def sizes(self, prefix: str) -> dict[str, int]:
        """key -> size of every object under `prefix`, from the listing."""
        try:
            return dict(self.objects.sizes(prefix))
        except Exception as e:
            raise _error(e, f"list {self.url(prefix)}") from None

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        """From a listing of the key (see ObjectStore.size: no HEAD, so SSE-C objects count)."""
        try:
            return self.objects.size(key)
        except Exception as e:
            raise _error(e, f"list {self.url(key)}") from None

    def manifests(self, prefix: str) -> Iterator[str]:
        return (k for k in self.list(prefix) if is_manifest(k))

    def put(self, key: str, data: bytes) -> None:
        try:
            self.objects.put(key, data, content_type="application/json")
        except Exception as e:
            raise _error(e, f"put {self.url(key)}") from None

    def read_json(self, key: str) -> dict[str, Any] | None:
        try:
            body = self.objects.get(key)
        except Exception as e:
            raise _error(e, f"get {self.url(key)}") from None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
