"""Recovery from storage against a fake Kubernetes door and a fake bucket: milliseconds, no cluster."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from mysql_backup_operator.api.policy import parse_policy
from mysql_backup_operator.contract.store_s3 import S3Store
from mysql_backup_operator.controllers.operation import Context, Settings
from mysql_backup_operator.controllers.sync import SyncController
from mysql_backup_operator.objectstore import Location, StorageError, Store

from tests.unit.fakebucket import FakeS3Bucket
from tests.unit.fakes import FakeKube, build_cache

NS = "ns"
SPEC = {
    "database": {"host": "db", "user": "bk", "passwordSecretRef": {"name": "dbpw"}, "databases": ["shop"]},
    "storage": {"s3": {"bucket": "b", "prefix": "p", "credentialsSecretRef": {"name": "s3"}}, "sync": True},
}
NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


class FakeStore(Store):
    """The operator's real Store over the real S3Store, on an in-memory bucket; `objects` maps a
    key to its size (any bytes of that length) or to a JSON document."""

    def __init__(self, objects: dict[str, Any], *, customer_key: bytes | None = None) -> None:
        self.fake = FakeS3Bucket("b")
        for key, v in objects.items():
            if isinstance(v, int):  # data: SSE-C encrypted when the test says so
                self.fake.add(key, b"x" * v, customer_key=customer_key)
            else:  # manifests are never SSE-C (the operator must read them)
                self.fake.add(key, json.dumps(v).encode())
        policy = parse_policy(name="pol", namespace=NS, spec=SPEC)
        over = Store.over(S3Store.from_client(self.fake, "b"), Location.for_policy(policy, "", ""))
        self.__dict__.update(over.__dict__)
        self.closed = False

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


def setup(
    objects: dict[str, Any], monkeypatch: pytest.MonkeyPatch, *, customer_key: bytes | None = None
) -> tuple[FakeKube, FakeStore, SyncController]:
    kube = FakeKube()
    pol = kube.add("backuppolicies", NS, {"kind": "BackupPolicy", "metadata": {"name": "pol"}, "spec": SPEC})
    store = FakeStore(objects, customer_key=customer_key)
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


CUSTOMER_KEY = bytes(range(32))


def test_sse_c_dumps_are_imported_from_the_listing_without_the_customer_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """SSE-C objects cannot be HEAD-ed without the customer key (the operator has none): sizes come
    from the listing, so such a backup is imported, and one request lists the whole policy folder."""
    m = manifest("ssec")
    objects = {m["object"]: 40, f"p/{NS}/pol/ssec-abcd1234/manifest.json": m}
    kube, store, sync = setup(objects, monkeypatch, customer_key=CUSTOMER_KEY)
    with pytest.raises(Exception, match="400"):  # the fake bucket refuses HEAD as S3 does
        store.fake.head_object(Bucket="b", Key=m["object"])
    store.fake.calls.clear()
    out = sync.run(kube.get("backuppolicies", NS, "pol"), parse_policy(name="pol", namespace=NS, spec=SPEC), NOW)  # type: ignore[arg-type]
    assert out["lastSyncError"] is None, out
    assert kube.objects[("backups", NS, "ssec")]["status"]["phase"] == "Completed"
    assert "head" not in store.fake.calls
    assert store.fake.calls.count("list") == 1  # import and DataMissing checks from one listing
    # The next pass checks the imported Backup's objects: present, so no DataMissing.
    sync.run(kube.get("backuppolicies", NS, "pol"), parse_policy(name="pol", namespace=NS, spec=SPEC), NOW)  # type: ignore[arg-type]
    conds = kube.objects[("backups", NS, "ssec")]["status"].get("conditions") or []
    assert not [c for c in conds if c["type"] == "DataMissing" and c["status"] == "True"], conds
    # The dump vanishes: DataMissing, still without a HEAD.
    store.fake.delete_object(Bucket="b", Key=m["object"])
    sync.run(kube.get("backuppolicies", NS, "pol"), parse_policy(name="pol", namespace=NS, spec=SPEC), NOW)  # type: ignore[arg-type]
    conds = kube.objects[("backups", NS, "ssec")]["status"]["conditions"]
    assert ("DataMissing", "True") in [(c["type"], c["status"]) for c in conds]
    assert "head" not in store.fake.calls


def _per_table(name: str, tables: int, stored: int = 10) -> dict[str, Any]:
    from mysql_backup_operator.contract import manifest as mf

    folder = f"p/{NS}/pol/{name}-abcd1234"
    objs = [mf.ManifestObject(f"{folder}/000-prologue.sql.zst", mf.ObjectKind.PROLOGUE, "a" * 64, stored)]
    objs += [
        mf.ManifestObject(f"{folder}/t{i:03d}.sql.zst", mf.ObjectKind.TABLE, f"{i:064x}", stored) for i in range(tables)
    ]
    return mf.Manifest(objects=tuple(objs), compression=mf.Compression("zstd"), backup={"name": name}).to_dict()


def test_a_per_table_backup_is_checked_from_one_listing_and_every_object_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = _per_table("split", 30)
    objects: dict[str, Any] = {o["key"]: 10 for o in m["objects"]}
    objects[f"p/{NS}/pol/split-abcd1234/manifest.json"] = m
    kube, store, sync = setup(objects, monkeypatch, customer_key=CUSTOMER_KEY)
    store.fake.page_size = 7  # several pages: the listing is followed to its end
    sync.run(kube.get("backuppolicies", NS, "pol"), parse_policy(name="pol", namespace=NS, spec=SPEC), NOW)  # type: ignore[arg-type]
    assert kube.objects[("backups", NS, "split")]["status"]["phase"] == "Completed"
    assert "head" not in store.fake.calls and store.fake.calls.count("list") == 5  # 32 keys, pages of 7

    # One table object short (or gone): not a backup.
    m2 = _per_table("short", 3)
    objects = {o["key"]: 10 for o in m2["objects"]} | {f"p/{NS}/pol/short-abcd1234/manifest.json": m2}
    objects[m2["objects"][2]["key"]] = 9
    kube, _, sync = setup(objects, monkeypatch)
    sync.run(kube.get("backuppolicies", NS, "pol"), parse_policy(name="pol", namespace=NS, spec=SPEC), NOW)  # type: ignore[arg-type]
    assert ("backups", NS, "short") not in kube.objects


def test_s3_size_lists_the_exact_key_and_never_heads() -> None:
    fake = FakeS3Bucket("b")
    s3 = S3Store.from_client(fake, "b")
    fake.add("d/dump.sql.zst.json", b"{}")
    assert s3.size("d/dump.sql.zst") is None  # a longer key with the same prefix is not the object
    fake.add("d/dump.sql.zst", b"x" * 5, customer_key=CUSTOMER_KEY)
    assert s3.size("d/dump.sql.zst") == 5
    assert s3.size("d/dump.sql") is None
    assert dict(s3.sizes("d/")) == {"d/dump.sql.zst": 5, "d/dump.sql.zst.json": 2}
    assert "head" not in fake.calls
    assert S3Store.from_client(fake, "other").size("d/dump.sql.zst") is None  # no bucket: no object


def test_the_operator_store_reports_list_failures_without_the_sdk_text() -> None:
    fake = FakeS3Bucket("b")
    policy = parse_policy(name="pol", namespace=NS, spec=SPEC)
    store = Store.over(S3Store.from_client(fake, "b"), Location.for_policy(policy, "", ""))

    def denied(**_: Any) -> Any:
        raise type("ClientError", (Exception,), {"response": {"Error": {"Code": "AccessDenied"}}})("secret text")

    fake.list_objects_v2 = denied  # type: ignore[method-assign]
    with pytest.raises(StorageError) as e:
        store.size("k")
    assert "AccessDenied" in str(e.value) and "secret text" not in str(e.value)
