"""Client-side encryption (agent/crypto.py) and its hooks: round trips through the real age format
(pyrage), failure reasons, interoperability with the standard `age` tool, and the S3 SSE parameters."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
from typing import Any

import pyrage
import pytest
import zstandard
from mysql_backup_operator import jobs
from mysql_backup_operator.agent import crypto
from mysql_backup_operator.agent.errors import AgentError
from mysql_backup_operator.agent.pipeline import compress_stream
from mysql_backup_operator.agent.storage import MultipartWriter, iter_object
from mysql_backup_operator.api import Compression, Reason
from mysql_backup_operator.api.common import SpecError
from mysql_backup_operator.api.policy import parse_policy
from mysql_backup_operator.contract import manifest as mf
from mysql_backup_operator.contract.config import StorageConfig, load
from mysql_backup_operator.contract.s3 import sse_params

IDENT = pyrage.x25519.Identity.generate()
OTHER = pyrage.x25519.Identity.generate()
KEY_TEXT = f"# created: today\n{IDENT}\n"


def encrypt(data: bytes, recipient: Any = None, pieces: int = 7) -> bytes:
    out = bytearray()
    enc = crypto.Encryptor(recipient or IDENT.to_public(), out.extend)
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        enc.write(data[i : i + step])
    enc.close()
    return bytes(out)


def chunks(data: bytes, size: int = 100_000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 1_000_003])
def test_round_trip_any_size(size: int) -> None:
    data = os.urandom(size)
    ct = encrypt(data)
    assert ct.startswith(crypto.MAGIC)
    assert b"".join(crypto.decrypt_chunks(chunks(ct), IDENT)) == data


def test_truncated_and_modified_objects_fail_authentication() -> None:
    data = os.urandom(300_000)
    ct = encrypt(data)
    for bad in (ct[:-1], ct[: len(ct) // 2], ct[:400] + bytes([ct[400] ^ 1]) + ct[401:]):
        with pytest.raises(AgentError) as e:
            crypto.verify(chunks(bad), IDENT, what="obj")
        assert e.value.reason == Reason.DECRYPTION_FAILED
        assert e.value.permanent


def test_a_storage_error_of_the_source_propagates_unchanged() -> None:
    class Boom(Exception):
        pass

    def source() -> Any:
        yield encrypt(b"x" * 10)[:30]
        raise Boom("connection reset")

    with pytest.raises(Boom):
        list(crypto.decrypt_chunks(source(), IDENT))


def test_a_sink_error_reaches_the_writer_as_itself() -> None:
    class Boom(Exception):
        pass

    def sink(_: bytes) -> None:
        raise Boom("s3 down")

    enc = crypto.Encryptor(IDENT.to_public(), sink)
    with pytest.raises(Boom):
        for _ in range(200):
            enc.write(b"y" * 65536)
        enc.close()


def test_keyring_first_key_encrypts_every_identity_decrypts() -> None:
    ring = crypto.parse_keyring(f"{OTHER}\n\n# old key below\n{IDENT}\n")
    assert str(ring.recipient) == str(OTHER.to_public())
    assert ring.current_key_id == crypto.key_id(str(OTHER.to_public()))
    old_id = crypto.key_id(str(IDENT.to_public()))
    assert ring.identity_for(old_id) is not None
    _, entry = crypto.recipient_for(str(OTHER))
    assert entry == {"format": "age-v1", "keyId": ring.current_key_id}
    assert len(entry["keyId"]) == 16


def test_restore_key_selection_reasons() -> None:
    entry = {"format": "age-v1", "keyId": crypto.key_id(str(IDENT.to_public()))}
    assert crypto.identity_for(None, None) is None
    assert crypto.identity_for(entry, KEY_TEXT) is not None
    with pytest.raises(AgentError) as e:
        crypto.identity_for(entry, None)
    assert e.value.reason == Reason.ENCRYPTION_KEY_MISSING
    with pytest.raises(AgentError) as e:
        crypto.identity_for(entry, str(OTHER))
    assert e.value.reason == Reason.DECRYPTION_FAILED
    assert entry["keyId"] in e.value.message and str(OTHER) not in e.value.message
    with pytest.raises(AgentError) as e:
        crypto.identity_for(entry, str(IDENT.to_public()))  # a public key cannot decrypt
    assert e.value.reason == Reason.ENCRYPTION_KEY_MISSING
    with pytest.raises(AgentError) as e:
        crypto.identity_for({"format": "aes-gcm", "keyId": "x"}, KEY_TEXT)
    assert e.value.reason == Reason.DECRYPTION_FAILED


def test_invalid_key_text_is_never_quoted() -> None:
    secret = "AGE-SECRET-KEY-1NOTREALLYAKEYBUTSECRET"
    for text in (secret, "hunter2", ""):
        with pytest.raises(AgentError) as e:
            crypto.recipient_for(text)
        assert e.value.reason in (Reason.ENCRYPTION_KEY_INVALID, Reason.ENCRYPTION_KEY_MISSING)
        assert not text or text not in e.value.message


def test_compress_stream_hashes_the_stored_encrypted_bytes() -> None:
    raw = b"INSERT INTO t VALUES (1,'secret row');\n" * 50_000
    stored = bytearray()
    stats = compress_stream(
        io.BytesIO(raw), kind=Compression.ZSTD, level=3, sink=stored.extend, recipient=IDENT.to_public()
    )
    assert stats.raw_bytes == len(raw)
    assert stats.stored_bytes == len(stored)
    assert stats.sha256 == hashlib.sha256(stored).hexdigest()
    assert stored.startswith(crypto.MAGIC) and b"secret row" not in stored
    compressed = b"".join(crypto.decrypt_chunks(chunks(bytes(stored)), IDENT))
    assert zstandard.ZstdDecompressor().decompressobj().decompress(compressed) == raw


@pytest.mark.skipif(shutil.which("age") is None, reason="the age CLI is installed by hack/install-deps.sh")
def test_the_standard_age_tool_decrypts_our_objects_and_we_decrypt_its(tmp_path: Any) -> None:
    keyfile = tmp_path / "key.txt"
    keyfile.write_text(KEY_TEXT)
    data = os.urandom(200_000)
    ours = encrypt(data)
    out = subprocess.run(["age", "-d", "-i", str(keyfile)], input=ours, capture_output=True, check=True)
    assert out.stdout == data
    theirs = subprocess.run(["age", "-r", str(IDENT.to_public())], input=data, capture_output=True, check=True).stdout
    assert b"".join(crypto.decrypt_chunks(chunks(theirs), IDENT)) == data


def test_manifest_records_encryption_and_never_a_key() -> None:
    o = mf.ManifestObject(key="d/dump.sql.zst.age", kind=mf.ObjectKind.DUMP, sha256="a" * 64, stored_bytes=5)
    m = mf.Manifest(objects=(o,), compression=Compression.ZSTD, encryption={"format": "age-v1", "keyId": "0" * 16})
    parsed = mf.parse(m.to_json())
    assert parsed.encryption == {"format": "age-v1", "keyId": "0" * 16}
    assert mf.parse(mf.Manifest(objects=(o,), compression=Compression.ZSTD).to_json()).encryption is None
    bad = json.loads(m.to_json())
    bad["encryption"] = {"format": "age-v1"}
    with pytest.raises(mf.ManifestError):
        mf.parse(json.dumps(bad))


def test_agent_config_scrubs_every_key_line() -> None:
    cfg = load({"MBO_AGENT_CONFIG": json.dumps({"backup": {"encryption": "age-v1"}}), "MBO_ENCRYPTION_KEY": KEY_TEXT})
    assert cfg.encrypted
    assert str(IDENT) in cfg.secrets
    assert "MBO_ENCRYPTION_KEY" not in repr(cfg) and str(IDENT) not in repr(cfg)


# ----------------------------------------------------------------------------- operator side

SPEC: dict[str, Any] = {
    "database": {"host": "db", "user": "bk", "passwordSecretRef": {"name": "dbpw"}},
    "storage": {"s3": {"bucket": "b", "credentialsSecretRef": {"name": "s3"}}},
    "backup": {"encryption": {"keySecretRef": {"name": "backup-key"}}, "layout": "perTable"},
}


def test_encrypted_policy_job_gets_the_key_only_through_a_secret_key_ref() -> None:
    policy = parse_policy(name="pol", namespace="ns", spec=SPEC)
    job = jobs.render_backup_job(
        backup_name="b1", backup_uid="uid-1234-5678", namespace="ns", trigger="manual", policy=policy, db_key="k"
    )
    c = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["MBO_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "backup-key", "key": "age.key"}
    cfg = json.loads(env["MBO_AGENT_CONFIG"]["value"])
    assert cfg["backup"]["encryption"] == "age-v1"
    assert cfg["storage"]["dumpKey"].endswith("/dump.sql.zst.age")
    restore = jobs.render_restore_job(
        restore_name="r",
        restore_uid="u",
        namespace="ns",
        policy=policy,
        location="s3://b/k",
        manifest_location="s3://b/m",
        sha256="0",
        databases=["d"],
        target=None,
        db_key="k",
    )
    renv = {e["name"] for e in restore["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MBO_ENCRYPTION_KEY" in renv


def test_sse_spec_rules_match_the_crd() -> None:
    def policy(sse: dict[str, Any]) -> Any:
        spec = json.loads(json.dumps(SPEC))
        spec["storage"]["s3"]["serverSideEncryption"] = sse
        return parse_policy(name="p", namespace="ns", spec=spec)

    assert policy({"mode": "SSE-S3"}).s3.sse_mode == "SSE-S3"
    assert policy({"mode": "SSE-KMS", "kmsKeyId": "k1"}).s3.sse_kms_key_id == "k1"
    p = policy({"mode": "SSE-C", "customerKeySecretRef": {"name": "ssec"}})
    assert p.s3.sse_customer_key is not None and p.s3.sse_customer_key.key == "sse-c.key"
    for bad in (
        {"mode": "SSE-S3", "kmsKeyId": "k"},
        {"mode": "SSE-C"},
        {"mode": "SSE-KMS", "customerKeySecretRef": {"name": "x"}},
        {"mode": "AES"},
    ):
        with pytest.raises(SpecError):
            policy(bad)
    env = {
        e["name"]: e
        for e in jobs.render_backup_job(
            backup_name="b", backup_uid="u" * 8, namespace="ns", trigger="manual", policy=p, db_key="k"
        )["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MBO_SSE_CUSTOMER_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "ssec", "key": "sse-c.key"}
    assert json.loads(env["MBO_AGENT_CONFIG"]["value"])["storage"]["serverSideEncryption"]["mode"] == "SSE-C"


def storage_cfg(**kw: Any) -> StorageConfig:
    base: dict[str, Any] = dict(
        bucket="b",
        dump_key="k",
        manifest_key="m",
        endpoint=None,
        region="us-east-1",
        force_path_style=True,
        ca_file=None,
        access_key_id=None,
        secret_access_key=None,
        session_token=None,
    )
    return StorageConfig(**{**base, **kw})


def test_sse_request_parameters() -> None:
    assert sse_params(storage_cfg()).create == {}
    s3 = sse_params(storage_cfg(sse_mode="SSE-S3"))
    assert s3.create == s3.manifest == {"ServerSideEncryption": "AES256"} and not s3.part and not s3.read
    kms = sse_params(storage_cfg(sse_mode="SSE-KMS", sse_kms_key_id="arn:k"))
    assert kms.create == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:k"}
    key = os.urandom(32)
    c = sse_params(storage_cfg(sse_mode="SSE-C", sse_customer_key=base64.b64encode(key).decode()))
    assert c.create == c.part == c.read == {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    assert c.manifest == {}  # the operator reads manifests without the customer key
    assert "SSECustomerKey" not in repr(c)
    with pytest.raises(ValueError) as e:
        sse_params(storage_cfg(sse_mode="SSE-C", sse_customer_key="c2hvcnQ="))
    assert "c2hvcnQ" not in str(e.value)


class RecordingS3:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.body = b""

    def create_multipart_upload(self, **kw: Any) -> dict[str, str]:
        self.calls.append(("create", kw))
        return {"UploadId": "u"}

    def upload_part(self, **kw: Any) -> dict[str, str]:
        self.calls.append(("part", {k: v for k, v in kw.items() if k != "Body"}))
        self.body += bytes(kw["Body"])
        return {"ETag": "e"}

    def complete_multipart_upload(self, **kw: Any) -> None:
        self.calls.append(("complete", kw))

    def get_object(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("get", kw))
        return {"Body": io.BytesIO(self.body)}


def test_sse_c_key_goes_with_every_upload_part_and_download() -> None:
    sse = sse_params(storage_cfg(sse_mode="SSE-C", sse_customer_key=base64.b64encode(b"k" * 32).decode()))
    s3 = RecordingS3()
    w = MultipartWriter(s3, "b", "k", part_size=5, sse=sse)
    w.write(b"0123456789ab")
    w.complete()
    assert b"".join(iter_object(s3, "b", "k", sse=sse)) == b"0123456789ab"
    for name, kw in s3.calls:
        if name != "complete":
            assert kw["SSECustomerKey"] == b"k" * 32, name


# ----------------------------------------------------------------------------- operator pre-check


def test_restore_key_problem_is_pure_and_never_quotes_keys() -> None:
    from mysql_backup_operator.contract.encryption import restore_key_problem

    entry = {"format": "age-v1", "keyId": crypto.key_id(str(IDENT.to_public()))}
    assert restore_key_problem(encryption=None, key_text=None) is None
    assert restore_key_problem(encryption=entry, key_text=f"{OTHER}\n{IDENT}") is None
    reason, msg = restore_key_problem(encryption=entry, key_text=str(OTHER)) or ("", "")
    assert reason == Reason.DECRYPTION_FAILED and str(OTHER) not in msg
    assert (restore_key_problem(encryption=entry, key_text="") or ("",))[0] == Reason.ENCRYPTION_KEY_MISSING


def test_the_operator_fails_a_restore_with_a_wrong_key_before_any_safety_backup() -> None:
    from mysql_backup_operator.controllers.restore import RestoreController

    from tests.unit.test_controllers import NS, POLICY_SPEC, context, world

    kube, woken = world()
    kube.objects[("backuppolicies", NS, "pol")]["spec"] = {
        **POLICY_SPEC,
        "backup": {"encryption": {"keySecretRef": {"name": "backup-key"}}},
    }
    kube.secrets[(NS, "backup-key")] = {"age.key": str(OTHER)}
    b = kube.add(
        "backups",
        NS,
        {"kind": "Backup", "metadata": {"name": "enc", "creationTimestamp": "2026-01-01T00:00:00Z"}},
    )
    b["spec"] = {"policyRef": {"name": "pol"}}
    b["status"] = {
        "phase": "Completed",
        "location": "s3://b/k/dump.sql.zst.age",
        "manifestLocation": "s3://b/k/manifest.json",
        "sha256": "0" * 64,
        "databases": ["shop"],
        "encryption": {"format": "age-v1", "keyId": crypto.key_id(str(IDENT.to_public()))},
    }
    kube.add(
        "restores",
        NS,
        {
            "kind": "Restore",
            "metadata": {"name": "r", "creationTimestamp": "2026-01-01T00:01:00Z"},
            "spec": {"backupRef": {"name": "enc"}},
        },
    )
    RestoreController(context(kube, woken)).reconcile(kube.get("restores", NS, "r"))  # type: ignore[arg-type]
    st = kube.objects[("restores", NS, "r")]["status"]
    assert st["phase"] == "Failed" and st["reason"] == "DecryptionFailed", st
    assert str(OTHER) not in json.dumps(st)
    assert [k for k in kube.objects if k[0] == "backups"] == [("backups", NS, "enc")]  # no safety backup
    assert kube.coordination.leases == {}
    assert not kube.jobs


def test_an_aborted_stream_never_gets_a_valid_end() -> None:
    out = bytearray()
    enc = crypto.Encryptor(IDENT.to_public(), out.extend)
    enc.write(os.urandom(200_000))
    enc.abort()
    enc.thread.join(timeout=10)
    assert not enc.thread.is_alive()
    with pytest.raises(AgentError) as e:
        crypto.verify(chunks(bytes(out)), IDENT, what="aborted")
    assert e.value.reason == Reason.DECRYPTION_FAILED


class BodyS3:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def get_object(self, **_: Any) -> dict[str, Any]:
        return {"Body": io.BytesIO(self.data)}


def test_restore_verification_pass_reasons() -> None:
    from mysql_backup_operator.agent.cli import _verify_key as verify_key
    from mysql_backup_operator.contract.store_s3 import S3Store

    def _verify_key(s3: Any, bucket: str, o: mf.ManifestObject, *, identity: Any) -> None:
        verify_key(S3Store.from_client(s3, bucket), o, identity=identity)

    good = encrypt(zstandard.ZstdCompressor().compress(os.urandom(100_000)))
    at = len(good) - 20  # inside the last chunk's payload
    bad = good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :]

    def obj(data: bytes) -> mf.ManifestObject:
        return mf.ManifestObject(
            key="k", kind=mf.ObjectKind.TABLE, sha256=hashlib.sha256(data).hexdigest(), stored_bytes=len(data)
        )

    _verify_key(BodyS3(good), "b", obj(good), identity=IDENT)  # intact: passes
    with pytest.raises(AgentError) as e:  # changed in storage: the digest says so first
        _verify_key(BodyS3(bad), "b", obj(good), identity=IDENT)
    assert e.value.reason == Reason.CHECKSUM_MISMATCH
    with pytest.raises(AgentError) as e:  # changed, manifest forged to match: authentication fails
        _verify_key(BodyS3(bad), "b", obj(bad), identity=IDENT)
    assert e.value.reason == Reason.DECRYPTION_FAILED
    with pytest.raises(AgentError) as e:  # intact, wrong key
        _verify_key(BodyS3(good), "b", obj(good), identity=OTHER)
    assert e.value.reason == Reason.DECRYPTION_FAILED


def test_a_failing_dump_stream_stops_the_encryption_stage_without_hanging() -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.n = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            self.n += 1
            if self.n > 3:
                raise OSError("dump connection lost")
            b[: len(b)] = os.urandom(len(b))
            return len(b)

    stored = bytearray()
    with pytest.raises(OSError, match="dump connection lost"):
        compress_stream(
            io.BufferedReader(Broken()), kind=Compression.GZIP, level=1, sink=stored.extend, recipient=IDENT.to_public()
        )
    with pytest.raises(AgentError):  # what was stored never authenticates as a complete object
        crypto.verify(chunks(bytes(stored)), IDENT, what="partial")


def test_the_s3_store_sends_sse_c_with_data_objects_only() -> None:
    from mysql_backup_operator.contract.store_s3 import S3Store

    key = b"q" * 32
    store = S3Store(storage_cfg(sse_mode="SSE-C", sse_customer_key=base64.b64encode(key).decode()))
    rec = RecordingS3()
    rec.put_object = lambda **kw: rec.calls.append(("put", kw))  # type: ignore[attr-defined]
    store.s3 = rec
    w = store.writer("d/dump.sql.zst.age")
    w.write(b"data")
    w.complete()
    assert b"".join(store.iter("d/dump.sql.zst.age")) == b"data"
    store.put("d/manifest.json", b"{}")
    by = {name: kw for name, kw in rec.calls}
    assert by["create"]["SSECustomerKey"] == key and by["part"]["SSECustomerKey"] == key
    assert by["get"]["SSECustomerKey"] == key
    assert "SSECustomerKey" not in by["put"]  # the manifest stays readable without the customer key
