"""The operator/agent contract: manifests v1 and v2, results, key layout, and the import boundary."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from mysql_backup_operator.api import Compression
from mysql_backup_operator.contract import keys, result
from mysql_backup_operator.contract import manifest as mf
from mysql_backup_operator.objectstore import manifest_keys, result_from_manifest

PKG = Path(__file__).resolve().parents[2] / "operator" / "mysql_backup_operator"

V1 = {
    "manifestVersion": 1,
    "agentVersion": "0.1.0",
    "backup": {"name": "b1", "uid": "u"},
    "object": "p/ns/pol/b1-12345678/dump.sql.zst",
    "compression": "zstd",
    "sha256": "ab" * 32,
    "sizeBytes": 100,
    "storedBytes": 40,
    "databases": ["app"],
    "counts": {"tables": 3},
    "serverVersion": "10.11.6-MariaDB",
    "binlog": {"file": "mysql-bin.000001", "position": 4, "gtid": None},
    "startedAt": "2026-01-01T00:00:00Z",
    "completedAt": "2026-01-01T00:00:05Z",
    "durationSeconds": 5.0,
}


def test_v1_manifest_reads_as_one_dump_object() -> None:
    m = mf.parse(json.dumps(V1))
    assert m.version == 1
    assert [(o.key, o.kind, o.sha256) for o in m.objects] == [(V1["object"], mf.ObjectKind.DUMP, V1["sha256"])]
    assert m.sha256 == V1["sha256"] and m.compression == Compression.ZSTD and m.databases == ("app",)


def test_v2_round_trip_keeps_the_v1_fields_for_old_readers() -> None:
    m = mf.parse(V1)
    d = json.loads(mf.Manifest(**{**m.__dict__, "version": 2}).to_json())
    assert d["manifestVersion"] == 2
    for k in ("object", "sha256", "compression", "sizeBytes", "storedBytes", "databases", "startedAt"):
        assert d[k] == V1[k], k
    assert d["objects"] == [
        {"key": V1["object"], "kind": "dump", "sha256": V1["sha256"], "storedBytes": 40, "sizeBytes": 100}
    ]
    assert mf.parse(d) == mf.Manifest(**{**m.__dict__, "version": 2})


def test_several_objects_get_one_digest_that_changes_with_any_of_them() -> None:
    objs = (
        mf.ManifestObject(key="d/prologue.sql.zst", kind=mf.ObjectKind.PROLOGUE, sha256="1" * 64),
        mf.ManifestObject(key="d/t.sql.zst", kind=mf.ObjectKind.TABLE, sha256="2" * 64, database="a", table="t"),
    )
    m = mf.Manifest(objects=objs, compression=Compression.ZSTD)
    assert len(m.sha256) == 64 and m.sha256 not in ("1" * 64, "2" * 64)
    assert mf.parse(m.to_dict()) == m
    other = mf.Manifest(
        objects=(objs[0], mf.ManifestObject(**{**objs[1].__dict__, "sha256": "3" * 64})), compression=m.compression
    )
    assert other.sha256 != m.sha256
    assert mf.Manifest(objects=objs[::-1], compression=m.compression).sha256 == m.sha256


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (b"not json", "not valid JSON"),
        ([], "not a JSON object"),
        ({**V1, "manifestVersion": 99}, "newer"),
        ({k: v for k, v in V1.items() if k != "sha256"}, "no sha256"),
        ({k: v for k, v in V1.items() if k != "object"}, "names no object"),
        ({**V1, "compression": "lz4"}, "unknown compression"),
        ({**V1, "manifestVersion": 2, "objects": [{"key": "k", "sha256": "1" * 64}]}, "does not match"),
        ({**V1, "manifestVersion": 2, "objects": [{"key": "k"}]}, "invalid"),
    ],
)
def test_untrustworthy_manifests_are_refused(doc: object, needle: str) -> None:
    with pytest.raises(mf.ManifestError, match=needle):
        mf.parse(doc if isinstance(doc, bytes) else json.dumps(doc))


def test_result_from_manifest_matches_what_the_agent_reported() -> None:
    m = mf.parse(V1)
    full = result.BackupResult(bucket="bk", manifest_key="p/ns/pol/b1-12345678/manifest.json", manifest=m).to_dict()
    recovered = result_from_manifest("bk", "p/ns/pol/b1-12345678/manifest.json", V1)
    assert {k: v for k, v in full.items() if k in recovered} == recovered
    assert recovered["location"] == "s3://bk/" + V1["object"]
    assert recovered["binlog"] == {"file": "mysql-bin.000001", "position": 4}
    assert recovered["tableCount"] == 3
    assert manifest_keys(V1) == [V1["object"]]


def test_long_failure_messages_are_cut_to_fit_the_termination_message() -> None:
    f = result.Failure(operation="backup", reason="DumpFailed", message="x" * 10000 + "END").to_dict()
    text = result.encode(f)
    assert len(text) <= result.MAX_RESULT and "END" in text
    assert result.decode(text) is not None and result.decode("garbage") is None


def test_key_layout() -> None:
    d = keys.storage_dir(prefix="/p/", namespace="ns", policy="pol", backup="b1", uid="12345678-aaaa")
    assert keys.manifest_key(d) == "p/ns/pol/b1-12345678/manifest.json"
    assert keys.directory_of(keys.manifest_key(d)) == d
    assert keys.is_manifest(keys.manifest_key(d)) and not keys.is_manifest(keys.dump_key(d, Compression.ZSTD))


def test_the_operator_never_imports_the_agent() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        if "agent" in path.relative_to(PKG).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and "agent" in node.module.split("."):
                offenders.append(f"{path.relative_to(PKG)}: from {'.' * node.level}{node.module}")
    assert not offenders, offenders
