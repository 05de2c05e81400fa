"""Recovery from storage against a fake Kubernetes door and a fake bucket: milliseconds, no cluster."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from mysql_backup_operator.api.policy import parse_policy
from mysql_backup_operator.controllers.operation import Context, Settings
from mysql_backup_operator.controllers.sync import SyncController
from mysql_backup_operator.objectstore import Store

from tests.unit.fakes import FakeKube, build_cache

NS = "ns"
SPEC = {
    "database": {"host": "db", "user": "bk", "passwordSecretRef": {"name": "dbpw"}, "databases": ["shop"]},
    "storage": {"s3": {"bucket": "b", "prefix": "p", "credentialsSecretRef": {"name": "s3"}}, "sync": True},
}
NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


class FakeStore:
    """The methods of objectstore.Store that sync uses, over a dict of key -> size or JSON."""

    def __init__(self, objects: dict[str, Any]) -> None:
        self.bucket = "b"
        self.objects = objects
        self.closed = False

    def manifests(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix) and k.endswith("manifest.json"))

    def read_json(self, key: str) -> dict[str, Any] | None:
        v = self.objects.get(key)
        return v if isinstance(v, dict) else None

    def size(self, key: str) -> int | None:
        v = self.objects.get(key)
        return v if isinstance(v, int) else None

    def exists(self, key: str) -> bool:
        return key in self.objects

    # The real check (parse the manifest, every listed object present with its recorded size) over
    # this fake's `size`, so the fake cannot drift from it.
    holds_all_of = Store.holds_all_of

    def close(self) -> None:
        self.closed = True


def manifest(name: str, stored: int = 40) -> dict[str, Any]:
    return {
        "object": f"p/{NS}/pol/{name}-abcd1234/dump.sql.zst",
        "sha256": "1" * 64,
        "storedBytes": stored,
        "sizeBytes": 100,
        "compression": "zstd",
        "databases": ["shop"],
        "backup": {"name": name, "trigger": "scheduled", "uid": "old-uid"},
        "startedAt": "2026-01-01T00:00:00Z",
        "completedAt": "2026-01-01T00:00:30Z",
    }


def setup(objects: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[FakeKube, FakeStore, SyncController]:
    kube = FakeKube()
    pol = kube.add("backuppolicies", NS, {"kind": "BackupPolicy", "metadata": {"name": "pol"}, "spec": SPEC})
    store = FakeStore(objects)
    ctx = Context(kube, Settings(lock_namespace="sys", agent_image="img"), cache=build_cache(kube))  # type: ignore[arg-type]
    monkeypatch.setattr(ctx, "store", lambda namespace, loc: store)
    assert pol
    return kube, store, SyncController(ctx)


def test_a_dump_with_a_valid_manifest_and_no_backup_is_imported_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    m = manifest("nightly")
    kube, store, sync = setup({m["object"]: 40, f"p/{NS}/pol/nightly-abcd1234/manifest.json": m}, monkeypatch)
    policy = parse_policy(name="pol", namespace=NS, spec=SPEC)
    out = sync.run(kube.get("backuppolicies", NS, "pol"), policy, NOW)  # type: ignore[arg-type]
    assert out == {"lastSyncTime": "2026-03-01T00:00:00Z", "lastSyncError": None}
    b = kube.objects[("backups", NS, "nightly")]
    assert b["status"]["phase"] == "Completed" and b["status"]["sha256"] == "1" * 64
    assert b["spec"]["deletionPolicy"] == "Retain" and b["metadata"]["labels"]["mysqlbackup.dev/imported"] == "true"
    assert store.closed
    # A second pass finds it known: nothing is created twice.
    kube.calls.clear()
    sync.run(kube.get("backuppolicies", NS, "pol"), policy, NOW)  # type: ignore[arg-type]
    assert not [c for c in kube.calls if c[0] == "create"]


def test_a_manifest_without_its_complete_dump_is_not_a_backup(monkeypatch: pytest.MonkeyPatch) -> None:
    m = manifest("partial", stored=40)
    kube, _, sync = setup({m["object"]: 39, f"p/{NS}/pol/partial-abcd1234/manifest.json": m}, monkeypatch)
    sync.run(kube.get("backuppolicies", NS, "pol"), parse_policy(name="pol", namespace=NS, spec=SPEC), NOW)  # type: ignore[arg-type]
    assert ("backups", NS, "partial") not in kube.objects


def test_vanished_objects_set_data_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    kube, _, sync = setup({}, monkeypatch)
    kube.add(
        "backups",
        NS,
        {
            "kind": "Backup",
            "metadata": {"name": "gone"},
            "spec": {"policyRef": {"name": "pol"}},
            "status": {"phase": "Completed", "location": "s3://b/p/ns/pol/gone/dump.sql.zst"},
        },
    )
    sync.run(kube.get("backuppolicies", NS, "pol"), parse_policy(name="pol", namespace=NS, spec=SPEC), NOW)  # type: ignore[arg-type]
    conds = kube.objects[("backups", NS, "gone")]["status"]["conditions"]
    assert [(c["type"], c["status"]) for c in conds] == [("DataMissing", "True")]
    assert ("gone", "DataMissing") in {(n, r) for n, r, _ in kube.events}
