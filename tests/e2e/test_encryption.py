"""Client-side encryption (backup.encryption, age) and S3 server-side encryption on the real stack:
stored bytes are unreadable without the key, restores decrypt and verify, a wrong or missing key
fails with a clear reason before the database is touched, and SSE-S3/SSE-KMS reach MinIO."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyrage
import pytest
import zstandard
from botocore.config import Config
from botocore.exceptions import ClientError
from kubernetes import client

from tests.e2e import backends
from tests.e2e.conftest import Env, s3_client
from tests.stackenv import eventually

AGE_MAGIC = b"age-encryption.org/v1\n"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What must never appear in an encrypted object: table names, row data, SQL.
PLAINTEXT_MARKERS = (b"customers", b"orders", b"customer-1", b"INSERT INTO", b"CREATE TABLE", "Zürich".encode())


def _new_key() -> Any:
    return pyrage.x25519.Identity.generate()


def _key_id(ident: Any) -> str:
    import hashlib

    return hashlib.sha256(str(ident.to_public()).encode()).hexdigest()[:16]


def _encrypted_policy(env: Env, ident: Any, name: str = "pol", **backup: Any) -> None:
    env.secret("backup-key", {"age.key": f"# test key\n{ident}\n"})
    env.policy(name, backup={"encryption": {"keySecretRef": {"name": "backup-key"}}, **backup})


def _manifest(env: Env, backup: str) -> dict[str, Any]:
    st = env.get("backups", backup)["status"]
    _, key = st["manifestLocation"][5:].split("/", 1)
    return dict(json.loads(s3_client(env.stack).get_object(Bucket=env.bucket, Key=key)["Body"].read()))


def _stored(env: Env, key: str) -> bytes:
    return bytes(s3_client(env.stack).get_object(Bucket=env.bucket, Key=key)["Body"].read())


def _assert_unreadable(data: bytes) -> None:
    assert data.startswith(AGE_MAGIC), data[:40]
    assert not data.startswith(ZSTD_MAGIC)
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompressobj().decompress(data)
    for marker in PLAINTEXT_MARKERS:
        assert marker not in data, marker


def _completed(env: Env, plural: str, name: str, timeout: float = 240) -> dict[str, Any]:
    st = env.wait_phase(plural, name, ("Completed", "Failed"), timeout=timeout)["status"]
    assert st["phase"] == "Completed", st
    return dict(st)


def _watch_argv(secret: str) -> tuple[threading.Event, list[str]]:
    """Scans every process's argv until stopped; collects those that contain `secret`."""
    stop, seen = threading.Event(), []

    def run() -> None:
        while not stop.is_set():
            for p in Path("/proc").iterdir():
                with contextlib.suppress(OSError):
                    if p.name.isdigit() and secret.encode() in (p / "cmdline").read_bytes():
                        seen.append(p.name)
            time.sleep(0.05)

    threading.Thread(target=run, daemon=True).start()
    return stop, seen


def test_encrypted_backup_is_unreadable_and_restores_with_the_key(env: Env, tmp_path: Any) -> None:
    ident = _new_key()
    _encrypted_policy(env, ident)
    original = env.checksums()
    stop, in_argv = _watch_argv(str(ident))
    env.backup("enc")
    st = _completed(env, "backups", "enc")
    assert st["encryption"] == {"format": "age-v1", "keyId": _key_id(ident)}
    manifest = _manifest(env, "enc")
    assert manifest["encryption"] == st["encryption"]
    assert str(ident) not in json.dumps(manifest) and str(ident) not in json.dumps(st)
    (obj,) = manifest["objects"]
    assert obj["key"].endswith("/dump.sql.zst.age") and st["location"].endswith(".age")
    data = _stored(env, obj["key"])
    assert len(data) == obj["storedBytes"]
    _assert_unreadable(data)

    # Anyone with the key decrypts it with the standard tools, without the operator.
    if shutil.which("age"):
        keyfile = tmp_path / "key.txt"
        keyfile.write_text(f"{ident}\n")
        plain = subprocess.run(["age", "-d", "-i", str(keyfile)], input=data, capture_output=True, check=True)
        sql = zstandard.ZstdDecompressor().decompressobj().decompress(plain.stdout)
        assert b"customer-1" in sql and b"-- Dump completed" in sql

    # Damage, restore, compare row by row.
    env.sql("UPDATE customers SET name = 'overwritten'")
    env.sql("DELETE FROM orders WHERE id % 3 = 0")
    damaged = env.checksums()
    env.restore("r1", "enc")
    r = _completed(env, "restores", "r1")
    stop.set()
    assert not in_argv, "the key appeared in a process's argv"
    assert env.checksums() == original
    assert env.sql("SELECT name FROM customers WHERE id = 2") == [("customer-1",)]

    # The safety backup of an encrypted policy is encrypted too, and restores to the damaged state.
    pre = r["preRestoreBackup"]
    pre_st = env.get("backups", pre)["status"]
    assert pre_st["encryption"]["keyId"] == _key_id(ident)
    for o in _manifest(env, pre)["objects"]:
        _assert_unreadable(_stored(env, o["key"]))
    env.restore("r2", pre)
    _completed(env, "restores", "r2")
    assert env.checksums() == damaged


def test_per_table_encrypted_backup_every_object_and_parallel_restore(env: Env) -> None:
    ident = _new_key()
    _encrypted_policy(env, ident, layout="perTable")
    original = env.checksums()
    env.backup("split")
    st = _completed(env, "backups", "split")
    manifest = _manifest(env, "split")
    kinds = {o["kind"] for o in manifest["objects"]}
    assert kinds == {"prologue", "table", "epilogue"}
    stored = env.objects()
    for o in manifest["objects"]:
        assert o["key"].endswith(".sql.zst.age"), o
        assert stored[o["key"]] == o["storedBytes"]
        _assert_unreadable(_stored(env, o["key"]))
    assert st["encryption"]["keyId"] == _key_id(ident)
    env.sql("DROP TABLE blobs")
    env.sql("UPDATE customers SET city = 'x'")
    env.restore("r", "split", parallelism=4)
    _completed(env, "restores", "r")
    assert env.checksums() == original


def test_wrong_key_fails_before_the_database_is_touched(env: Env) -> None:
    right, wrong = _new_key(), _new_key()
    _encrypted_policy(env, right)
    env.backup("enc")
    _completed(env, "backups", "enc")
    env.sql("DELETE FROM orders WHERE id > 100")
    before = env.checksums()
    # The key Secret now holds another key only (a rotation that dropped the old one).
    env.secret("backup-key", {"age.key": f"{wrong}\n"})
    env.restore("r", "enc")
    st = env.wait_phase("restores", "r", ("Completed", "Failed"), timeout=240)["status"]
    assert st["phase"] == "Failed" and st["reason"] == "DecryptionFailed", st
    assert _key_id(right) in st["message"] and "nothing was restored" in st["message"]
    assert str(wrong) not in json.dumps(st) and str(right) not in json.dumps(st)
    assert not st.get("preRestoreBackup"), "the key is checked before any safety backup"
    assert env.checksums() == before

    # Rotation done right: the new key on top, the old one below; the old backup restores again.
    env.secret("backup-key", {"age.key": f"{wrong}\n{right}\n"})
    env.restore("r-rotated", "enc")
    _completed(env, "restores", "r-rotated")
    assert env.checksums() != before  # the rows deleted after the backup are back
    assert env.sql("SELECT COUNT(*) FROM orders") == [(200,)]


def test_missing_key_fails_with_a_reason_and_touches_nothing(env: Env) -> None:
    ident = _new_key()
    _encrypted_policy(env, ident)
    env.backup("enc")
    _completed(env, "backups", "enc")
    env.sql("DELETE FROM orders WHERE id > 50")
    before = env.checksums()

    # The key Secret is gone: refused before the safety backup.
    env.core.delete_namespaced_secret("backup-key", env.namespace)
    env.restore("no-secret", "enc")
    st = env.wait_phase("restores", "no-secret", ("Completed", "Failed"), timeout=120)["status"]
    assert st["phase"] == "Failed" and st["reason"] == "SecretNotFound", st
    assert "backup-key" in st["message"]
    assert env.checksums() == before

    # The policy no longer encrypts (no key at all): the agent refuses the encrypted backup.
    env.patch_policy({"backup": {"encryption": None}})
    env.restore("no-key", "enc")
    st = env.wait_phase("restores", "no-key", ("Completed", "Failed"), timeout=240)["status"]
    assert st["phase"] == "Failed" and st["reason"] == "EncryptionKeyMissing", st
    assert _key_id(ident) in st["message"] and not st.get("preRestoreBackup")
    assert env.checksums() == before


def test_an_invalid_key_fails_the_backup_with_a_reason_and_never_quotes_it(env: Env) -> None:
    garbage = "AGE-SECRET-KEY-1THISISNOTAKEYBUTITISSECRETANYWAY"
    env.secret("backup-key", {"age.key": garbage})
    env.policy(backup={"encryption": {"keySecretRef": {"name": "backup-key"}}})
    env.backup("bad-key")
    st = env.wait_phase("backups", "bad-key", ("Completed", "Failed"))["status"]
    assert st["phase"] == "Failed" and st["reason"] == "EncryptionKeyInvalid", st
    assert "line 1" in st["message"] and garbage not in json.dumps(st)
    assert not [k for k in env.objects() if "/bad-key-" in k], "nothing may be stored"
    assert all(garbage not in (e.message or "") for e in env.events("bad-key"))


def test_sync_imports_encrypted_backups_with_their_key_id(env: Env) -> None:
    ident = _new_key()
    _encrypted_policy(env, ident)
    env.backup("a", deletionPolicy="Retain")
    orig = _completed(env, "backups", "a")
    before = env.checksums()
    env.stack.kubectl("delete", "backup", "a", "-n", env.namespace, "--wait=true")
    eventually(lambda: not env.list("backups"), timeout=60, what="backup a gone")
    env.patch_policy({"storage": {"sync": True, "syncIntervalSeconds": 10}})
    eventually(lambda: env.list("backups"), timeout=60, what="imported backup")
    st = env.wait_phase("backups", "a", ("Completed",), timeout=30)["status"]
    assert st["encryption"] == orig["encryption"] and st["sha256"] == orig["sha256"]
    env.sql("DELETE FROM orders")
    env.restore("from-imported", "a")
    _completed(env, "restores", "from-imported")
    assert env.checksums() == before


def test_server_side_encryption_options(env: Env) -> None:
    # Inconsistent combinations are refused at apply time (CEL).
    for bad, text in (
        ({"mode": "SSE-S3", "kmsKeyId": "k"}, "kmsKeyId is only allowed with mode SSE-KMS"),
        ({"mode": "SSE-C"}, "customerKeySecretRef is required with mode SSE-C"),
        ({"mode": "SSE-KMS", "customerKeySecretRef": {"name": "x"}}, "customerKeySecretRef is required"),
    ):
        spec_s3 = {"serverSideEncryption": bad}
        with pytest.raises(client.ApiException) as e:
            _policy_with_s3(env, "bad-sse", spec_s3)
        assert e.value.status == 422 and text in e.value.body, e.value.body

    # SSE-S3 and SSE-KMS against MinIO's KMS (a static key configured by the stack script).
    original = env.checksums()
    for name, sse, header in (
        ("sse-s3", {"mode": "SSE-S3"}, "AES256"),
        ("sse-kms", {"mode": "SSE-KMS", "kmsKeyId": "mbo-stack-key"}, "aws:kms"),
    ):
        _policy_with_s3(env, name, {"serverSideEncryption": sse})
        env.backup(f"b-{name}", policy=name)
        _completed(env, "backups", f"b-{name}")
        manifest = _manifest(env, f"b-{name}")
        s3 = s3_client(env.stack)
        for key in [o["key"] for o in manifest["objects"]] + [
            env.get("backups", f"b-{name}")["status"]["manifestLocation"][5:].split("/", 1)[1]
        ]:
            head = s3.head_object(Bucket=env.bucket, Key=key)
            assert head.get("ServerSideEncryption") == header, (key, head)
        env.sql("UPDATE customers SET name = 'x'")
        env.restore(f"r-{name}", f"b-{name}")
        _completed(env, "restores", f"r-{name}")
        assert env.checksums() == original


def _policy_with_s3(env: Env, name: str, extra: dict[str, Any]) -> None:
    s3 = env.stack.s3
    env.policy(
        name,
        storage={
            "s3": {
                "bucket": env.bucket,
                "prefix": name,
                "endpoint": s3["endpoint"],
                "region": s3["region"],
                "forcePathStyle": True,
                "credentialsSecretRef": {"name": "s3-credentials"},
                **extra,
            }
        },
    )


@pytest.fixture
def tls_minio(env: Env, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A second MinIO, serving TLS with a throwaway CA, on the stack's host address: MinIO accepts
    SSE-C only over TLS, and the stack's own MinIO serves plain HTTP. Stopped after the test."""
    host = env.stack.raw.get("host") or "127.0.0.1"
    certs = tmp_path / "certs"
    (certs / "CAs").mkdir(parents=True)
    ext = tmp_path / "san.ext"
    ext.write_text(f"subjectAltName=IP:{host},DNS:localhost\n")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=mbo-test-ca",
        "-keyout", str(tmp_path / "ca.key"), "-out", str(tmp_path / "ca.crt"))  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}",
        "-keyout", str(certs / "private.key"), "-out", str(tmp_path / "srv.csr"))  # fmt: skip
    ssl("x509", "-req", "-in", str(tmp_path / "srv.csr"), "-CA", str(tmp_path / "ca.crt"), "-CAkey",
        str(tmp_path / "ca.key"), "-CAcreateserial", "-days", "1", "-extfile", str(ext),
        "-out", str(certs / "public.crt"))  # fmt: skip
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    s3 = env.stack.s3
    log = (tmp_path / "minio.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(env.stack.raw["bin_dir"]) / "minio"), "server", str(tmp_path / "data"), "--address",
         f"{host}:{port}", "--certs-dir", str(certs), "--quiet"],
        env={"PATH": "/usr/bin:/bin", "MINIO_ROOT_USER": s3["access_key"], "MINIO_ROOT_PASSWORD": s3["secret_key"],
             "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"},
        stdout=log, stderr=log,
    )  # fmt: skip
    endpoint = f"https://{host}:{port}"
    try:
        client_ = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=s3["region"],
            aws_access_key_id=s3["access_key"],
            aws_secret_access_key=s3["secret_key"],
            verify=str(tmp_path / "ca.crt"),
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

        def up() -> bool:
            with contextlib.suppress(Exception):
                client_.create_bucket(Bucket=env.bucket)
                return True
            return False

        eventually(up, timeout=60, interval=0.5, what="TLS MinIO up")
        yield {"endpoint": endpoint, "ca": (tmp_path / "ca.crt").read_text(), "client": client_}
    finally:
        proc.terminate()
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()


def _sse_c_policy(env: Env, tls_minio: dict[str, Any], **spec: Any) -> bytes:
    """A policy on the TLS MinIO with SSE-C and client-side encryption at once; the customer key."""
    customer_key = os.urandom(32)
    env.secret("minio-ca", {"ca.crt": tls_minio["ca"]})
    env.secret("backup-sse-c", {"sse-c.key": base64.b64encode(customer_key).decode()})
    ident = _new_key()
    env.secret("backup-key", {"age.key": str(ident)})
    s3 = env.stack.s3
    env.policy(
        storage={
            "s3": {
                "bucket": env.bucket,
                "prefix": "ssec",
                "endpoint": tls_minio["endpoint"],
                "region": s3["region"],
                "forcePathStyle": True,
                "credentialsSecretRef": {"name": "s3-credentials"},
                "caBundleSecretRef": {"name": "minio-ca"},
                "serverSideEncryption": {"mode": "SSE-C", "customerKeySecretRef": {"name": "backup-sse-c"}},
                **spec,
            }
        },
        backup={"encryption": {"keySecretRef": {"name": "backup-key"}}},  # both layers at once
    )
    return customer_key


def test_sse_c_on_a_tls_minio(env: Env, tls_minio: dict[str, Any]) -> None:
    customer_key = _sse_c_policy(env, tls_minio)
    original = env.checksums()
    env.backup("ssec")
    st = _completed(env, "backups", "ssec")
    c = tls_minio["client"]
    data_key = st["location"][5:].split("/", 1)[1]
    manifest_key = st["manifestLocation"][5:].split("/", 1)[1]
    # Without the customer key the data object cannot be read; with it, it is the age ciphertext.
    with pytest.raises(ClientError):
        c.get_object(Bucket=env.bucket, Key=data_key)
    sse = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": customer_key}
    head = c.head_object(Bucket=env.bucket, Key=data_key, **sse)
    assert head["SSECustomerAlgorithm"] == "AES256"
    _assert_unreadable(c.get_object(Bucket=env.bucket, Key=data_key, **sse)["Body"].read())
    # The manifest is readable without it (the operator reads it for sync and recovery).
    assert json.loads(c.get_object(Bucket=env.bucket, Key=manifest_key)["Body"].read())["encryption"]
    env.sql("DELETE FROM orders")
    env.restore("r", "ssec")
    _completed(env, "restores", "r")
    assert env.checksums() == original
    # Deletion needs no customer key: every object of the backup goes.
    env.custom.delete_namespaced_custom_object("mysqlbackup.dev", "v1alpha1", env.namespace, "backups", "ssec")
    eventually(
        lambda: (
            not c.list_objects_v2(Bucket=env.bucket, Prefix="ssec/").get("Contents", [])
            or not any("/ssec-" in o["Key"] for o in c.list_objects_v2(Bucket=env.bucket, Prefix="ssec/")["Contents"])
        ),
        timeout=90,
        what="objects of the deleted backup gone",
    )


def test_sync_imports_sse_c_backups_and_sees_them_vanish(env: Env, tls_minio: dict[str, Any]) -> None:
    """The operator has no SSE-C customer key, and S3 refuses HEAD of an SSE-C object without it:
    recovery from storage and the DataMissing check take sizes from the listing instead."""
    _sse_c_policy(env, tls_minio)
    for n in ("a", "b"):
        env.backup(n, deletionPolicy="Retain")
    originals = {n: _completed(env, "backups", n) for n in ("a", "b")}
    before = env.checksums()
    for n in ("a", "b"):
        env.stack.kubectl("delete", "backup", n, "-n", env.namespace, "--wait=true")
    eventually(lambda: not env.list("backups"), timeout=60, what="backups gone")
    c = tls_minio["client"]
    data_key = originals["b"]["location"][5:].split("/", 1)[1]
    with pytest.raises(ClientError):  # what the operator used to ask, and cannot get an answer to
        c.head_object(Bucket=env.bucket, Key=data_key)
    env.patch_policy({"storage": {"sync": True, "syncIntervalSeconds": 10}})
    eventually(lambda: len(env.list("backups")) == 2, timeout=90, what="both SSE-C backups imported")
    for n in ("a", "b"):
        st = env.wait_phase("backups", n, ("Completed",), timeout=30)["status"]
        for field in ("location", "sha256", "storedBytes", "encryption"):
            assert st[field] == originals[n][field], field
    pol = env.get("backuppolicies", "pol")["status"]
    assert not pol.get("lastSyncError"), pol

    env.sql("DELETE FROM orders")
    env.restore("from-imported", "a")
    _completed(env, "restores", "from-imported")
    assert env.checksums() == before

    # The dump vanishes: DataMissing, found from the listing as well.
    c.delete_object(Bucket=env.bucket, Key=data_key)

    def data_missing() -> bool:
        conds = env.get("backups", "b")["status"].get("conditions") or []
        return any(c["type"] == "DataMissing" and c["status"] == "True" for c in conds)

    eventually(data_missing, timeout=60, interval=1, what="DataMissing condition")
    conds = env.get("backups", "a")["status"].get("conditions") or []
    assert not [c for c in conds if c["type"] == "DataMissing" and c["status"] == "True"]


@pytest.mark.parametrize("env", [backends.AZURE, backends.GCS], indirect=True)
def test_client_side_encryption_on_azure_and_gcs(env: Env) -> None:
    """The stage sits above the storage interface: the same stored format on every backend."""
    ident = _new_key()
    _encrypted_policy(env, ident, layout="perTable")
    original = env.checksums()
    env.backup("enc")
    st = _completed(env, "backups", "enc")
    assert st["encryption"]["keyId"] == _key_id(ident)
    manifest = json.loads(env.read_object(st["manifestLocation"].split("://", 1)[1].split("/", 1)[1]))
    assert manifest["encryption"] == st["encryption"]
    for o in manifest["objects"]:
        assert o["key"].endswith(".age")
        _assert_unreadable(env.read_object(o["key"]))
    env.sql("DELETE FROM orders")
    env.restore("r", "enc")
    _completed(env, "restores", "r")
    assert env.checksums() == original
