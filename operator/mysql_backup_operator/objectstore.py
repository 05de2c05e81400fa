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
from dataclasses import dataclass
from typing import Any

from .api.policy import PolicySpec
from .contract import manifest as mf
from .contract import result as res
from .contract.config import StorageConfig
from .contract.keys import directory_of, is_manifest
from .contract.s3 import client as s3_client


class StorageError(Exception):
    """Object storage failed; `missing` tells "not there" apart from "could not ask"."""

    def __init__(self, message: str, *, missing: bool = False, no_credentials: bool = False) -> None:
        super().__init__(message)
        self.missing = missing
        self.no_credentials = no_credentials


@dataclass(frozen=True)
class Location:
    """Everything needed to reach one Backup's objects, as stored in `status.storage`."""

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

    def to_status(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "dumpKey": self.dump_key,
            "manifestKey": self.manifest_key,
            "endpoint": self.endpoint,
            "region": self.region,
            "forcePathStyle": self.force_path_style,
            "credentialsSecret": self.secret,
            "accessKeyIdKey": self.access_key_id_key,
            "secretAccessKeyKey": self.secret_access_key_key,
            "sessionTokenKey": self.session_token_key,
            "caSecret": self.ca_secret,
            "caKey": self.ca_key,
        }

    @staticmethod
    def from_status(d: Mapping[str, Any]) -> Location:
        return Location(
            bucket=d["bucket"],
            dump_key=d["dumpKey"],
            manifest_key=d["manifestKey"],
            endpoint=d.get("endpoint"),
            region=d.get("region") or "us-east-1",
            force_path_style=bool(d.get("forcePathStyle")),
            secret=d["credentialsSecret"],
            access_key_id_key=d.get("accessKeyIdKey") or "AWS_ACCESS_KEY_ID",
            secret_access_key_key=d.get("secretAccessKeyKey") or "AWS_SECRET_ACCESS_KEY",
            session_token_key=d.get("sessionTokenKey"),
            ca_secret=d.get("caSecret"),
            ca_key=d.get("caKey"),
        )

    @staticmethod
    def for_policy(policy: PolicySpec, dump_key: str, manifest_key: str) -> Location:
        s3 = policy.s3
        return Location(
            bucket=s3.bucket,
            dump_key=dump_key,
            manifest_key=manifest_key,
            endpoint=s3.endpoint,
            region=s3.region,
            force_path_style=s3.force_path_style,
            secret=s3.credentials_secret,
            access_key_id_key=s3.access_key_id_key,
            secret_access_key_key=s3.secret_access_key_key,
            session_token_key=s3.session_token_key,
            ca_secret=s3.ca_bundle.name if s3.ca_bundle else None,
            ca_key=s3.ca_bundle.key if s3.ca_bundle else None,
        )


def result_from_manifest(bucket: str, manifest_key: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A Backup's result fields, as the agent would have reported them, read back from its manifest (v1 or v2)."""
    return res.result_from_manifest(bucket, manifest_key, mf.parse(manifest))


def manifest_keys(manifest: Mapping[str, Any]) -> list[str]:
    """Every object a manifest (v1 or v2) describes; an unreadable one yields its v1 `object` if any."""
    try:
        return mf.parse(manifest).keys()
    except mf.ManifestError:
        return [str(manifest["object"])] if manifest.get("object") else []


def _error(e: Exception, what: str) -> StorageError:
    response = getattr(e, "response", None)
    code = ""
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    missing = code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket")
    return StorageError(f"{what}: {code or type(e).__name__}", missing=missing)


class Store:
    """A boto3 client for one bucket, built from a Location and the credentials Secret's values."""

    def __init__(self, loc: Location, secret: Mapping[str, str], ca_pem: str | None = None) -> None:
        self.bucket = loc.bucket
        self._ca_file: str | None = None
        if ca_pem:
            fd, self._ca_file = tempfile.mkstemp(prefix="mbo-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as f:
                f.write(ca_pem)
        try:
            cfg = StorageConfig(
                bucket=loc.bucket,
                dump_key=loc.dump_key,
                manifest_key=loc.manifest_key,
                endpoint=loc.endpoint,
                region=loc.region,
                force_path_style=loc.force_path_style,
                ca_file=self._ca_file,
                access_key_id=secret[loc.access_key_id_key],
                secret_access_key=secret[loc.secret_access_key_key],
                session_token=secret.get(loc.session_token_key) if loc.session_token_key else None,
            )
        except KeyError as e:
            raise StorageError(f"credentials Secret {loc.secret} has no key {e}") from None
        self.s3 = s3_client(cfg)

    def close(self) -> None:
        if self._ca_file:
            os.unlink(self._ca_file)

    def delete(self, key: str) -> None:
        """Deleting a missing key is success (S3 semantics), so a retried deletion is idempotent."""
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            err = _error(e, f"delete s3://{self.bucket}/{key}")
            if not err.missing:
                raise err from None

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
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for o in page.get("Contents", []):
                    yield o["Key"]
        except Exception as e:
            raise _error(e, f"list s3://{self.bucket}/{prefix}") from None

    def holds_all_of(self, manifest: Mapping[str, Any]) -> bool:
        """Every object the manifest (v1 or v2) lists is there with its recorded size: only then
        is it a backup (a manifest whose data is partly gone must not be imported or trusted)."""
        try:
            parsed = mf.parse(manifest)
        except mf.ManifestError:
            return False
        return all(self.size(o.key) == o.stored_bytes for o in parsed.objects)

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        try:
            return int(self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except Exception as e:
            err = _error(e, f"head s3://{self.bucket}/{key}")
            if err.missing or "404" in str(e):
                return None
            raise err from None

    def manifests(self, prefix: str) -> Iterator[str]:
        return (k for k in self.list(prefix) if is_manifest(k))

    def read_json(self, key: str) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as e:
            raise _error(e, f"get s3://{self.bucket}/{key}") from None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
