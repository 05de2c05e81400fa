"""Azure Blob Storage (Azurite) and Google Cloud Storage (fake-gcs-server) on the real stack.

Two layers:
- the ObjectStore implementations against the emulators, in every credential mode: streaming
  upload over several parts, abort leaves nothing, small put/get, list, head, idempotent delete,
  error classification;
- the operator, unchanged S3 test bodies run on the other backends (imported, not copied):
  backup + restore with its safety backup, deletion through the finalizer, recovery from storage
  (sync) with DataMissing, and the per-table layout. Each runs in a different credential mode, so
  every mode also goes through a real Job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from mysql_backup_operator.contract import config as cc
from mysql_backup_operator.contract.store import ErrorKind, ObjectStore, classify, open_store

from tests.e2e import backends
from tests.e2e import test_backup_restore as backup_restore
from tests.e2e import test_per_table as per_table
from tests.e2e import test_schedule_retention as retention
from tests.e2e.conftest import Env, OperatorProcess
from tests.stackenv import Stack

MiB = 1024 * 1024
MODES = [f"{backends.AZURE}:{m}" for m in backends.AZURE_MODES] + [f"{backends.GCS}:{m}" for m in backends.GCS_MODES]


def _agent_config(stack: Stack, param: str, bucket: str) -> cc.StorageConfig:
    """The StorageConfig an agent would load for a policy built by backends.storage_spec."""
    backend, mode = backends.split(param)
    secrets: dict[str, dict[str, str]] = {}
    spec = backends.storage_spec(stack, backend, mode, bucket, lambda name, data: secrets.__setitem__(name, data))
    body = spec[backend]
    env: dict[str, str] = {}
    ref = body.get("credentialsSecretRef") or {}
    if backend == backends.AZURE:
        for field, var in (
            ("connectionStringKey", cc.ENV_AZURE_CONNECTION_STRING),
            ("accountKeyKey", cc.ENV_AZURE_ACCOUNT_KEY),
            ("sasTokenKey", cc.ENV_AZURE_SAS_TOKEN),
        ):
            if field in ref:
                env[var] = secrets[ref["name"]][ref[field]]
    elif ref:
        env[cc.ENV_GCS_CREDENTIALS] = secrets[ref["name"]]["service-account.json"]
    raw = {
        "backend": backend,
        "bucket": bucket,
        "endpoint": body.get("serviceURL") or body.get("endpoint"),
        "accountName": body.get("accountName"),
        "project": body.get("project"),
    }
    return cc.load({cc.ENV_CONFIG: json.dumps({"storage": raw}), **env}).storage


@pytest.fixture(params=MODES)
def store(request: pytest.FixtureRequest, stack: Stack) -> Iterator[tuple[str, ObjectStore]]:
    backend, mode = backends.split(request.param)
    bucket = f"st-{mode.lower()[:8]}-{os.urandom(3).hex()}"
    backends.create_bucket(stack, backend, bucket)
    s = open_store(_agent_config(stack, request.param, bucket))
    yield request.param, s
    s.close()


def test_streaming_upload_over_several_parts_and_streaming_read(store: tuple[str, ObjectStore]) -> None:
    _, s = store
    data = os.urandom(MiB) * 17 + b"tail"  # three parts of 8 MiB (the last one short)
    w = s.writer("dir/dump.sql.zst", metadata={"mysqlbackup-backup": "b1"})
    for i in range(0, len(data), 300_000):
        w.write(data[i : i + 300_000])
    assert s.size("dir/dump.sql.zst") is None, "visible before complete()"
    w.complete()
    assert w.bytes_written == len(data) and s.size("dir/dump.sql.zst") == len(data)
    sha = hashlib.sha256()
    for chunk in s.iter("dir/dump.sql.zst", chunk=MiB):
        assert len(chunk) <= 4 * MiB, "reads are bounded"
        sha.update(chunk)
    assert sha.hexdigest() == hashlib.sha256(data).hexdigest()


def test_exact_part_boundary_and_empty_objects(store: tuple[str, ObjectStore]) -> None:
    _, s = store
    for key, data in (("exact", os.urandom(8 * MiB)), ("empty", b"")):
        w = s.writer(key)
        w.write(data)
        w.complete()
        assert s.size(key) == len(data) and b"".join(s.iter(key)) == data


def test_an_aborted_upload_leaves_no_object(store: tuple[str, ObjectStore]) -> None:
    _, s = store
    w = s.writer("dir/aborted.sql.zst")
    w.write(os.urandom(MiB) * 9)  # one part already uploaded
    w.abort()
    assert s.size("dir/aborted.sql.zst") is None
    assert list(s.list("dir/")) == []


def test_small_objects_list_head_and_idempotent_delete(store: tuple[str, ObjectStore]) -> None:
    _, s = store
    s.put("p/ns/pol/b-1/manifest.json", b'{"a": 1}', content_type="application/json")
    s.put("p/ns/pol/b-2/manifest.json", b"{}")
    s.put("p/other", b"x")
    assert s.get("p/ns/pol/b-1/manifest.json") == b'{"a": 1}'
    assert sorted(s.list("p/ns/pol/")) == ["p/ns/pol/b-1/manifest.json", "p/ns/pol/b-2/manifest.json"]
    assert s.size("p/other") == 1 and s.size("p/nothing") is None
    s.delete("p/other")
    s.delete("p/other")  # a retried deletion is success
    assert s.size("p/other") is None
    with pytest.raises(Exception) as e:
        s.get("p/nothing")
    assert classify(e.value) == ErrorKind.MISSING


def test_wrong_azure_credentials_are_access_denied(stack: Stack) -> None:
    bucket = "denied-" + os.urandom(3).hex()
    backends.create_bucket(stack, backends.AZURE, bucket)
    good = _agent_config(stack, f"{backends.AZURE}:accountKey", bucket)
    wrong = cc.StorageConfig(**{**good.__dict__, "azure_account_key": "d3Jvbmc=" * 11})
    s = open_store(wrong)
    with pytest.raises(Exception) as e:
        s.put("x", b"x")
    assert classify(e.value) == ErrorKind.DENIED
    assert wrong.azure_account_key not in str(cc.StorageConfig.__repr__(wrong))


# ------------------------------------------------------------------------- the operator on each backend
# The S3 test bodies, run unchanged with `env` on another backend (indirect parametrization of the
# conftest fixture). Each test picks different credential modes so all of them reach a real Job.


@pytest.mark.parametrize("env", [f"{backends.AZURE}:connectionString", f"{backends.GCS}:serviceAccount"], indirect=True)
def test_round_trip_restore_and_pre_restore_backup(env: Env) -> None:
    backup_restore.test_round_trip_restore_and_pre_restore_backup(env)
    loc = env.get("backups", "before")["status"]["location"]
    assert loc.startswith({"azureBlob": "azblob://", "gcs": "gs://"}[env.backend] + env.bucket + "/")


@pytest.mark.parametrize("env", [f"{backends.AZURE}:accountKey", f"{backends.GCS}:anonymous"], indirect=True)
def test_deletion_removes_the_objects_and_retain_keeps_them(env: Env, stack: Any) -> None:
    retention.test_deletion_policy_and_the_admission_policy(env, stack)


@pytest.mark.parametrize("env", [f"{backends.AZURE}:sas", f"{backends.GCS}:serviceAccount"], indirect=True)
def test_recovery_from_storage_and_data_missing(env: Env) -> None:
    retention.test_recovery_from_storage_and_data_missing(env)


@pytest.mark.parametrize("env", [backends.AZURE, backends.GCS], indirect=True)
def test_agent_pod_killed_mid_backup_publishes_nothing(env: Env) -> None:
    backup_restore.test_agent_pod_killed_mid_backup_publishes_nothing(env)


@pytest.mark.parametrize("env", [backends.AZURE, backends.GCS], indirect=True)
def test_agent_memory_stays_flat_whatever_the_dump_size(env: Env) -> None:
    backup_restore.test_agent_memory_stays_flat_whatever_the_dump_size(env)


@pytest.mark.parametrize("env", [f"{backends.AZURE}:connectionString", f"{backends.GCS}:serviceAccount"], indirect=True)
def test_credentials_never_leak(env: Env, operator: OperatorProcess) -> None:
    backup_restore.test_password_never_leaks(env, operator)


@pytest.mark.parametrize("env", [backends.AZURE, backends.GCS], indirect=True)
def test_per_table_layout(env: Env) -> None:
    try:
        per_table.test_per_table_backup_and_parallel_restore_of_awkward_data(env)
    finally:
        with contextlib.suppress(Exception):
            env.sql(f"DROP DATABASE IF EXISTS `{per_table._other(env)}`")


@pytest.mark.parametrize("env", [f"{backends.AZURE}:accountKey"], indirect=True)
def test_backend_choice_is_checked_at_apply_time_and_bad_credentials_fail_with_a_reason(env: Env) -> None:
    from kubernetes import client

    azure = backends.storage_spec(env.stack, env.backend, "accountKey", env.bucket, env.secret)[backends.AZURE]
    s3 = {"bucket": env.bucket, "credentialsSecretRef": {"name": "s3-credentials"}}
    refused = {
        "two-backends": ({"s3": s3, backends.AZURE: azure}, "exactly one backend"),
        "no-backend": ({"sync": True}, "exactly one backend"),
        "two-keys": (
            {
                backends.AZURE: {
                    **azure,
                    "credentialsSecretRef": {"name": "x", "accountKeyKey": "a", "sasTokenKey": "s"},
                }
            },
            "exactly one of connectionStringKey, accountKeyKey, sasTokenKey",
        ),
        "no-url": ({backends.AZURE: {k: v for k, v in azure.items() if k != "serviceURL"}}, "serviceURL is required"),
    }
    for name, (storage, message) in refused.items():
        with pytest.raises(client.ApiException) as e:
            env.policy(name, storage=storage)
        assert e.value.status == 422 and message in e.value.body, (name, e.value.body)

    # A wrong account key: the backup fails with StorageAccessDenied, and the key is nowhere in status.
    wrong = "d3Jvbmc=" * 11
    env.secret("azure-wrong", {"accountKey": wrong})
    env.policy(
        "wrongkey",
        storage={
            backends.AZURE: {**azure, "credentialsSecretRef": {"name": "azure-wrong", "accountKeyKey": "accountKey"}}
        },
    )
    env.backup("denied", policy="wrongkey")
    st = env.wait_phase("backups", "denied", ("Completed", "Failed"))["status"]
    assert st["phase"] == "Failed" and st["reason"] == "StorageAccessDenied", st
    assert wrong not in json.dumps(st) and env.stack.raw["azure"]["key"] not in json.dumps(st)
    assert not env.objects(), "a failed backup left objects behind"
