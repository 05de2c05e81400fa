"""The controllers against a fake Kubernetes door (tests/unit/fakes.py): milliseconds, no cluster.

These complement, never replace, the real-stack tests in tests/e2e.
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

from kubernetes.client.rest import ApiException
from mysql_backup_operator.controllers.backup import BACKUP_FINALIZER, BackupController
from mysql_backup_operator.controllers.cache import Cache, admit_listed
from mysql_backup_operator.controllers.operation import Context, Settings
from mysql_backup_operator.controllers.restore import RestoreController
from mysql_backup_operator.controllers.runtime import Runtime, Tuning
from mysql_backup_operator.k8s.kube import TransientError

from tests.unit.fakes import FakeKube, build_cache

NS = "ns"
POLICY_SPEC = {
    "database": {
        "host": "db",
        "port": 3306,
        "user": "bk",
        "passwordSecretRef": {"name": "dbpw"},
        "databases": ["shop"],
    },
    "storage": {"s3": {"bucket": "b", "credentialsSecretRef": {"name": "s3"}}},
}
OK_RESULT = {
    "ok": True,
    "location": "s3://b/k/dump.sql.zst",
    "manifestLocation": "s3://b/k/manifest.json",
    "sizeBytes": 100,
    "storedBytes": 40,
    "sha256": "0" * 64,
    "compression": "zstd",
    "tableCount": 3,
    "databases": ["shop"],
}


def world() -> tuple[FakeKube, list[tuple[str, str, str]]]:
    kube = FakeKube()
    kube.add("backuppolicies", NS, {"kind": "BackupPolicy", "metadata": {"name": "pol"}, "spec": POLICY_SPEC})
    kube.secrets[(NS, "dbpw")] = {"password": "pw-secret"}
    kube.secrets[(NS, "s3")] = {"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk"}
    return kube, []


def context(kube: FakeKube, woken: list[tuple[str, str, str]]) -> Context:
    settings = Settings(lock_namespace="sys", agent_image="img")
    return Context(kube, settings, cache=build_cache(kube), wake=woken.append)  # type: ignore[arg-type]


def reconciler(kube: FakeKube, woken: list[tuple[str, str, str]]) -> BackupController:
    return BackupController(context(kube, woken))


def backup(kube: FakeKube, name: str, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return kube.add(
        "backups",
        NS,
        {
            "kind": "Backup",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"policyRef": {"name": "pol"}},
        },
    )


def test_a_new_backup_gets_labels_finalizer_lock_and_job_in_one_step() -> None:
    kube, woken = world()
    backup(kube, "b1")
    r = reconciler(kube, woken)
    r.reconcile(kube.get("backups", NS, "b1"))  # type: ignore[arg-type]
    b = kube.objects[("backups", NS, "b1")]
    assert b["status"]["phase"] == "Running"
    assert BACKUP_FINALIZER in b["metadata"]["finalizers"]
    assert b["metadata"]["labels"]["mysqlbackup.dev/database-key"]
    assert (NS, "backup-b1") in kube.jobs
    assert len(kube.coordination.leases) == 1
    # Taking the free lock read its queue live: per kind, the unlabelled objects, then this database's.
    lists = [c[1] for c in kube.calls if c[0] == "list"]
    db = b["metadata"]["labels"]["mysqlbackup.dev/database-key"]
    unlabelled, labelled = "!mysqlbackup.dev/database-key", f"mysqlbackup.dev/database-key={db}"
    assert [(p, sel) for p, _, sel in lists] == [
        ("backups", unlabelled),
        ("backups", labelled),
        ("restores", unlabelled),
        ("restores", labelled),
    ]
    # Following the running Job lists nothing.
    kube.calls.clear()
    r.reconcile(kube.get("backups", NS, "b1"))  # type: ignore[arg-type]
    assert not [c for c in kube.calls if c[0] == "list"]


def test_job_completion_completes_the_backup_releases_the_lock_and_wakes_the_next() -> None:
    kube, woken = world()
    backup(kube, "b1", "2026-01-01T00:00:00Z")
    r = reconciler(kube, woken)
    r.reconcile(kube.get("backups", NS, "b1"))  # type: ignore[arg-type]
    backup(kube, "b2", "2026-01-01T00:00:05Z")
    r = reconciler(kube, woken)
    r.reconcile(kube.get("backups", NS, "b2"))  # type: ignore[arg-type]
    b2 = kube.objects[("backups", NS, "b2")]
    assert b2["status"]["reason"] == "DatabaseBusy"
    assert (NS, "backup-b2") not in kube.jobs

    kube.finish_job(NS, "backup-b1", ok=True, result=OK_RESULT)
    r = reconciler(kube, woken)  # the cache now knows b2 waits, as the index would
    r.reconcile(kube.get("backups", NS, "b1"))  # type: ignore[arg-type]
    assert kube.objects[("backups", NS, "b1")]["status"]["phase"] == "Completed"
    assert kube.coordination.leases == {}
    assert ("Backup", NS, "b2") in woken
    r.reconcile(kube.get("backups", NS, "b2"))  # type: ignore[arg-type]
    assert kube.objects[("backups", NS, "b2")]["status"]["phase"] == "Running"


def test_a_succeeded_agent_completes_the_backup_before_the_job_says_so() -> None:
    kube, woken = world()
    backup(kube, "b1")
    r = reconciler(kube, woken)
    r.reconcile(kube.get("backups", NS, "b1"))  # type: ignore[arg-type]
    # A pod that failed (and will be retried by the Job) ends nothing.
    kube.pods[(NS, "backup-b1")] = [
        {
            "metadata": {"name": "backup-b1-a", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {
                "phase": "Failed",
                "containerStatuses": [{"name": "agent", "state": {"terminated": {"exitCode": 1, "message": "{}"}}}],
            },
        }
    ]
    r.reconcile(kube.get("backups", NS, "b1"))  # type: ignore[arg-type]
    assert kube.objects[("backups", NS, "b1")]["status"]["phase"] == "Running"
    kube.agent_pod_succeeded(NS, "backup-b1", result=OK_RESULT)
    assert "status" not in kube.jobs[(NS, "backup-b1")]  # the Job controller has not synced yet
    r.reconcile(kube.get("backups", NS, "b1"))  # type: ignore[arg-type]
    st = kube.objects[("backups", NS, "b1")]["status"]
    assert st["phase"] == "Completed" and st["sha256"] == OK_RESULT["sha256"]
    assert kube.coordination.leases == {}


def test_an_agent_that_exited_0_wakes_its_operation_and_other_pods_do_not() -> None:
    kube, _ = world()
    rt = runtime(kube)

    def pod(operation: str, code: int | None = 0) -> dict[str, Any]:
        term = {"exitCode": code, "message": json.dumps(OK_RESULT)}
        state = {"terminated": term} if code is not None else {"running": {}}
        return {
            "metadata": {"namespace": NS, "annotations": {"mysqlbackup.dev/operation": operation}},
            "status": {"phase": "Running", "containerStatuses": [{"name": "agent", "state": state}]},
        }

    rt.pod_event("DELETED", pod("Restore/r1"))
    rt.pod_event("BOOKMARK", {"metadata": {"resourceVersion": "7"}})
    rt.pod_event("MODIFIED", pod("Restore/r1", code=None))  # still running
    rt.pod_event("MODIFIED", pod("Restore/r1", code=1))  # failed: the Job may retry it
    rt.pod_event("ADDED", pod("Job/x"))
    rt.pod_event("ADDED", {"metadata": {"namespace": NS, "name": "unrelated"}})
    assert len(rt.queue) == 0
    rt.pod_event("MODIFIED", pod("Restore/r1"))
    assert rt.queue.due_in(("Restore", NS, "r1")) is not None


def test_the_agent_pod_watch_resumes_where_it_was_and_backs_off_on_errors() -> None:
    kube, _ = world()
    rt = runtime(kube)
    slept: list[float] = []
    asked: list[str | None] = []

    class Stop(BaseException):
        pass

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > 4:
            raise Stop

    rt._sleep = sleep
    versions = iter(["10", "20"])
    kube.pods_version = lambda namespace, **kw: next(versions)  # type: ignore[attr-defined]
    term = {"exitCode": 0, "message": json.dumps(OK_RESULT)}
    pod = {
        "metadata": {"namespace": NS, "annotations": {"mysqlbackup.dev/operation": "Backup/b1"}},
        "status": {"containerStatuses": [{"name": "agent", "state": {"terminated": term}}]},
    }
    script: list[Any] = [
        [("ADDED", pod, "11")],  # then the server ends the watch at once: no hot loop
        ApiException(status=410),  # too old: a fresh version ("20") from a LIST
        ApiException(status=403, reason="Forbidden"),
        ApiException(status=403, reason="Forbidden"),
        [],
    ]

    def watch_pods(namespace: str | None, *, resource_version: str, **kw: Any) -> Any:
        asked.append(resource_version)
        step = script.pop(0)
        if isinstance(step, BaseException):
            raise step
        yield from step

    kube.watch_pods = watch_pods  # type: ignore[attr-defined]
    with contextlib.suppress(Stop):
        rt._watch_agent_pods(NS)
    assert asked == ["10", "11", "20", "20", "20"]
    assert slept == [1.0, 1.0, 2.0, 4.0, 1.0]
    assert rt.queue.due_in(("Backup", NS, "b1")) is not None


def runtime(kube: FakeKube) -> Runtime:
    return Runtime(context(kube, []), Tuning(policy_coalesce_seconds=0))


def finished(kube: FakeKube, n: int) -> None:
    for i in range(n):
        b = backup(kube, f"old-{i}", f"2026-01-0{1 + i % 9}T00:00:00Z")
        b["metadata"]["finalizers"] = [BACKUP_FINALIZER]
        b["status"] = {"phase": "Completed", "completedAt": b["metadata"]["creationTimestamp"], "storedBytes": 10}


def test_finished_backups_cost_no_api_call() -> None:
    kube, _ = world()
    finished(kube, 10)
    rt = runtime(kube)
    for i in range(10):
        rt.backup_event(None, kube.objects[("backups", NS, f"old-{i}")])
    assert len(rt.queue) == 1  # only the policy, once, for its roll-up
    kube.calls.clear()
    while rt.queue.process_one(timeout=0):
        pass
    # First pass writes the roll-up; a second pass with nothing new makes no call at all.
    assert [c[0] for c in kube.calls] == ["patch_status"]
    status = kube.objects[("backuppolicies", NS, "pol")]["status"]
    assert status["completedCount"] == 10
    kube.calls.clear()
    rt = runtime(kube)
    rt.queue.add(("BackupPolicy", NS, "pol"))
    rt.queue.process_one(timeout=0)
    assert kube.calls == []


def test_a_finished_job_wakes_its_owner() -> None:
    kube, _ = world()
    rt = runtime(kube)
    job = {
        "metadata": {"namespace": NS, "ownerReferences": [{"kind": "Backup", "name": "b1", "controller": True}]},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    rt.job_event("MODIFIED", {**job, "status": {}})
    assert len(rt.queue) == 0  # a running Job is no news
    rt.job_event("MODIFIED", job)
    assert rt.queue.due_in(("Backup", NS, "b1")) is not None


def test_backup_deletion_keeps_the_finalizer_until_storage_says_yes() -> None:
    kube, _ = world()
    b = backup(kube, "gone")
    b["metadata"]["finalizers"] = [BACKUP_FINALIZER]
    b["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    b["spec"]["deletionPolicy"] = "Retain"
    rt = runtime(kube)
    rt.backup_event("MODIFIED", kube.get("backups", NS, "gone"))  # type: ignore[arg-type]
    rt.queue.process_one(timeout=0)
    assert ("backups", NS, "gone") not in kube.objects


def test_cache_moves_a_row_when_its_keys_change_and_forgets_deleted_objects() -> None:
    from mysql_backup_operator.controllers.cache import Cache

    cache = Cache()
    body: dict[str, Any] = {
        "metadata": {"name": "b", "namespace": NS, "uid": "u", "labels": {"mysqlbackup.dev/database-key": "k1"}},
        "spec": {"policyRef": {"name": "p1"}},
    }
    cache.put("Backup", body)
    assert [r.name for r in cache.backups_of_policy(NS, "p1")] == ["b"]
    assert [r.op.name for r in cache.ops_for_database("k1")] == ["b"]
    body["metadata"]["labels"]["mysqlbackup.dev/database-key"] = "k2"
    body["status"] = {"phase": "Completed"}
    cache.put("Backup", body)
    assert cache.ops_for_database("k1") == []
    assert [r.phase for r in cache.backups_of_policy(NS, "p1")] == ["Completed"]
    cache.remove("Backup", body)
    assert cache.backups_of_policy(NS, "p1") == [] and cache.ops_for_database("k2") == []
    assert cache.sizes() == {"backups": 0, "operations": 0, "policies": 0}


def blind(kube: FakeKube, woken: list[tuple[str, str, str]]) -> BackupController:
    """A controller whose (synced) cache has seen none of the objects: the watch is behind."""
    r = reconciler(kube, woken)
    r.ctx.cache = Cache()
    r.ctx.cache.synced.set()
    return r


def test_a_free_lock_waits_for_an_earlier_waiter_the_cache_does_not_know_yet() -> None:
    """The queue-order race: the earlier waiter's watch event has not reached the cache."""
    kube, woken = world()
    backup(kube, "holder", "2026-01-01T00:00:00Z")
    reconciler(kube, woken).reconcile(kube.get("backups", NS, "holder"))  # type: ignore[arg-type]
    older = backup(kube, "older", "2026-01-01T00:00:01Z")
    reconciler(kube, woken).reconcile(kube.get("backups", NS, "older"))  # type: ignore[arg-type]
    assert kube.objects[("backups", NS, "older")]["status"]["reason"] == "DatabaseBusy"
    kube.finish_job(NS, "backup-holder", ok=True, result=OK_RESULT)
    reconciler(kube, woken).reconcile(kube.get("backups", NS, "holder"))  # type: ignore[arg-type]
    assert kube.coordination.leases == {}
    backup(kube, "newer", "2026-01-01T00:00:09Z")
    blind(kube, woken).reconcile(kube.get("backups", NS, "newer"))  # type: ignore[arg-type]
    newer = kube.objects[("backups", NS, "newer")]
    assert newer["status"]["reason"] == "QueuedBehindEarlierOperation" and (NS, "backup-newer") not in kube.jobs
    assert older["metadata"]["name"] in newer["status"]["message"]
    assert kube.coordination.leases == {}


def test_a_free_lock_waits_for_an_earlier_operation_not_reconciled_yet() -> None:
    """Created milliseconds apart and reconciled by parallel workers, the earlier Backup may not
    even carry its database label yet: it is found by its policy."""
    kube, woken = world()
    backup(kube, "q0", "2026-01-01T00:00:00Z")
    backup(kube, "q1", "2026-01-01T00:00:00Z")  # the same second: the name decides
    blind(kube, woken).reconcile(kube.get("backups", NS, "q1"))  # type: ignore[arg-type]
    q1 = kube.objects[("backups", NS, "q1")]
    assert q1["status"]["reason"] == "QueuedBehindEarlierOperation" and "q0" in q1["status"]["message"]
    assert (NS, "backup-q1") not in kube.jobs
    blind(kube, woken).reconcile(kube.get("backups", NS, "q0"))  # type: ignore[arg-type]
    assert kube.objects[("backups", NS, "q0")]["status"]["phase"] == "Running" and (NS, "backup-q0") in kube.jobs


def test_a_queued_operation_reads_its_queue_from_the_cache_not_the_api() -> None:
    kube, woken = world()
    backup(kube, "holder", "2026-01-01T00:00:00Z")
    reconciler(kube, woken).reconcile(kube.get("backups", NS, "holder"))  # type: ignore[arg-type]
    backup(kube, "next", "2026-01-01T00:00:01Z")
    r = reconciler(kube, woken)
    kube.calls.clear()
    for _ in range(3):  # safety-net passes while the holder runs
        r.reconcile(kube.get("backups", NS, "next"))  # type: ignore[arg-type]
    assert kube.objects[("backups", NS, "next")]["status"]["reason"] == "DatabaseBusy"
    assert not [c for c in kube.calls if c[0] == "list"]


def restore(kube: FakeKube, name: str, of: str, created: str) -> dict[str, Any]:
    return kube.add(
        "restores",
        NS,
        {
            "kind": "Restore",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"backupRef": {"name": of}},
        },
    )


def test_operations_that_will_not_take_the_lock_soon_do_not_hold_back_the_queue() -> None:
    """An earlier pre-restore Backup runs under its Restore's lock, and an earlier Restore whose
    Backup is still running waits for that Backup, not for the lock: neither is a waiter (the
    second would deadlock the queue). An earlier Restore of a completed Backup is one."""
    kube, woken = world()
    running = backup(kube, "running", "2026-01-01T00:00:00Z")
    running["status"] = {"phase": "Running"}
    pre = backup(kube, "pre", "2026-01-01T00:00:01Z")
    pre["spec"]["trigger"] = "pre-restore"
    restore(kube, "r-waits", "running", "2026-01-01T00:00:02Z")
    backup(kube, "b", "2026-01-01T00:00:05Z")
    blind(kube, woken).reconcile(kube.get("backups", NS, "b"))  # type: ignore[arg-type]
    assert kube.objects[("backups", NS, "b")]["status"]["phase"] == "Running"
    kube.finish_job(NS, "backup-b", ok=True, result=OK_RESULT)
    blind(kube, woken).reconcile(kube.get("backups", NS, "b"))  # type: ignore[arg-type]
    assert kube.objects[("backups", NS, "b")]["status"]["phase"] == "Completed"

    restore(kube, "r-ready", "b", "2026-01-01T00:00:06Z")
    backup(kube, "c", "2026-01-01T00:00:07Z")
    blind(kube, woken).reconcile(kube.get("backups", NS, "c"))  # type: ignore[arg-type]
    c = kube.objects[("backups", NS, "c")]
    assert c["status"]["reason"] == "QueuedBehindEarlierOperation" and "r-ready" in c["status"]["message"]


# ---------------------------------------------------------------------------- the "synced" gate


def listed(name: str, rv: int, *, phase: str = "Completed", db: str | None = None) -> dict[str, Any]:
    labels = {"mysqlbackup.dev/database-key": db} if db else {}
    return {
        "metadata": {"name": name, "namespace": NS, "uid": f"u-{name}", "resourceVersion": str(rv), "labels": labels},
        "spec": {"policyRef": {"name": "pol"}},
        "status": {"phase": phase},
    }


def test_admit_listed_rules() -> None:
    # Nothing known about the object: the listed row fills the gap.
    assert admit_listed(listed_rv=5, cached_rv=None, deleted_rv=None)
    assert admit_listed(listed_rv=None, cached_rv=None, deleted_rv=None)
    # The watch delivered it: only a strictly newer listed row replaces it.
    assert admit_listed(listed_rv=9, cached_rv=5, deleted_rv=None)
    assert not admit_listed(listed_rv=5, cached_rv=5, deleted_rv=None)
    assert not admit_listed(listed_rv=4, cached_rv=5, deleted_rv=None)
    assert not admit_listed(listed_rv=None, cached_rv=5, deleted_rv=None)
    assert not admit_listed(listed_rv=9, cached_rv=0, deleted_rv=None)  # the watch's row has no usable version
    # Deleted during the listing: never resurrected, unless re-created after the delete.
    assert not admit_listed(listed_rv=5, cached_rv=None, deleted_rv=7)
    assert not admit_listed(listed_rv=7, cached_rv=None, deleted_rv=7)
    assert not admit_listed(listed_rv=None, cached_rv=None, deleted_rv=7)
    assert not admit_listed(listed_rv=9, cached_rv=None, deleted_rv=0)
    assert admit_listed(listed_rv=9, cached_rv=None, deleted_rv=7)
    assert not admit_listed(listed_rv=9, cached_rv=10, deleted_rv=7)  # ... and the watch has it newer still


def test_a_listing_merges_with_concurrent_watch_events_and_never_undoes_them() -> None:
    cache = Cache()
    cache.begin_listing()
    cache.put("Backup", listed("newer-in-watch", 20, phase="Pending", db="k"))  # watch: newer than our LIST
    cache.put("Backup", listed("deleted", 10))
    cache.remove("Backup", listed("deleted", 11))  # watch: deleted during the listing
    cache.put("Backup", listed("older-in-watch", 3, phase="Pending", db="k"))
    taken = cache.merge_listed(
        "Backup",
        [
            listed("newer-in-watch", 15, db="k"),  # older: ignored
            listed("deleted", 10),  # deleted meanwhile: not resurrected
            listed("older-in-watch", 8, db="k"),  # newer than the watch's row: taken
            listed("only-listed", 4),  # the watch has not delivered it yet: taken
        ],
    )
    assert taken == 2
    assert not cache.synced.is_set()
    cache.end_listing()
    assert cache.synced.is_set()
    rows = {r.name: r.phase for r in cache.backups_of_policy(NS, "pol")}
    assert rows == {"newer-in-watch": "Pending", "older-in-watch": "Completed", "only-listed": "Completed"}
    assert [r.op.name for r in cache.ops_for_database("k") if r.waiting] == ["newer-in-watch"]
    # After the listing a DELETE is an ordinary removal; nothing is remembered.
    cache.remove("Backup", listed("only-listed", 30))
    assert "only-listed" not in {r.name for r in cache.backups_of_policy(NS, "pol")}
    assert cache._deleted is None


def test_the_sync_gate_opens_once_every_kind_is_listed_and_merged() -> None:
    """Our own paged LIST per kind; the watch keeps writing between the pages."""
    kube, _ = world()
    finished(kube, 7)
    rt = Runtime(context(kube, []), Tuning(list_chunk_size=3))
    rt.cache = rt.ctx.cache = Cache()  # a fresh start: the watch has delivered nothing yet

    def watch_meanwhile(plural: str, token: str) -> None:
        """Before the second page: old-4 (on it) changes, old-6 (on the third) is deleted; the
        snapshot being listed still has both as they were."""
        if plural != "backups" or token != "3":
            return
        changed = copy.deepcopy(kube.objects[("backups", NS, "old-4")])
        changed["metadata"]["resourceVersion"] = str(int(changed["metadata"]["resourceVersion"]) + 1000)
        changed["metadata"]["annotations"] = {"mysqlbackup.dev/keep": "true"}
        rt.cache.put("Backup", changed)
        gone = copy.deepcopy(kube.objects[("backups", NS, "old-6")])
        gone["metadata"]["resourceVersion"] = str(int(gone["metadata"]["resourceVersion"]) + 1000)
        rt.cache.remove("Backup", gone)

    kube.between_pages = watch_meanwhile
    rt.sync_cache()
    assert rt.cache.synced.is_set()
    rows = {r.name: r for r in rt.cache.backups_of_policy(NS, "pol")}
    assert sorted(rows) == [f"old-{i}" for i in range(6)], "old-6 came back"
    assert rows["old-4"].pinned, "an older listed row overwrote the watch's"
    assert rt.cache.policy(NS, "pol") is not None
    pages = [c[1][0] for c in kube.calls if c[0] == "list_page"]
    assert pages == ["backups", "backups", "backups", "restores", "backuppolicies"]  # 7 Backups, pages of 3


def test_with_watch_namespaces_every_list_stays_inside_them() -> None:
    """With `watchNamespaces` the operator's RBAC has no cluster-wide LIST: a 403 there would
    leave the gate closed and every lock untakeable."""
    kube, woken = world()
    finished(kube, 2)
    kube.add(
        "backups", "elsewhere", {"kind": "Backup", "metadata": {"name": "x"}, "spec": {"policyRef": {"name": "p"}}}
    )
    settings = Settings(lock_namespace="sys", agent_image="img", watch_namespaces=(NS,))
    ctx = Context(kube, settings, cache=Cache(), wake=woken.append)  # type: ignore[arg-type]
    rt = Runtime(ctx, Tuning())
    rt.sync_cache()
    assert {c[1][1] for c in kube.calls if c[0] == "list_page"} == {NS}
    assert len(rt.cache.backups_of_policy(NS, "pol")) == 2 and rt.cache.backups_of_policy("elsewhere", "p") == []
    backup(kube, "b")
    BackupController(ctx).reconcile(kube.get("backups", NS, "b"))  # type: ignore[arg-type]
    assert kube.objects[("backups", NS, "b")]["status"]["phase"] == "Running"
    assert {c[1][1] for c in kube.calls if c[0] == "list"} == {NS}


def test_the_start_up_listing_retries_and_starts_over_when_its_token_expires() -> None:
    kube, _ = world()
    finished(kube, 4)
    rt = Runtime(context(kube, []), Tuning(list_chunk_size=2))
    rt.cache = rt.ctx.cache = Cache()
    slept: list[float] = []
    rt._sleep = slept.append
    failures = [TransientError("apiserver restarting", delay=5), ApiException(status=410)]
    real = kube.list_page

    def flaky(plural: str, **kw: Any) -> tuple[list[dict[str, Any]], str | None]:
        if plural == "backups" and kw["continue_token"] and failures:
            raise failures.pop(0)
        return real(plural, **kw)

    kube.list_page = flaky  # type: ignore[method-assign]
    rt.sync_cache()
    assert slept == [5]
    assert rt.cache.synced.is_set() and len(rt.cache.backups_of_policy(NS, "pol")) == 4


def test_a_partial_restore_takes_a_safety_backup_of_only_what_it_replaces() -> None:
    kube, woken = world()
    src = backup(kube, "src")
    src["status"] = {**OK_RESULT, "phase": "Completed", "completedAt": "2026-01-01T00:01:00Z"}
    kube.add(
        "restores",
        NS,
        {
            "kind": "Restore",
            "metadata": {"name": "r1", "creationTimestamp": "2026-01-01T00:02:00Z", "uid": "u-r1"},
            "spec": {"backupRef": {"name": "src"}, "tables": ["shop.orders", "shop.items"]},
        },
    )
    RestoreController(context(kube, woken)).reconcile(kube.get("restores", NS, "r1"))  # type: ignore[arg-type]
    safety = kube.objects[("restores", NS, "r1")]["status"]["preRestoreBackup"]
    b = kube.objects[("backups", NS, safety)]
    assert b["spec"]["scope"] == {"tables": ["shop.orders", "shop.items"]}
    reconciler(kube, woken).reconcile(kube.get("backups", NS, safety))  # type: ignore[arg-type]
    job = kube.jobs[(NS, f"backup-{safety}")]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    agent = json.loads(env["MBO_AGENT_CONFIG"])
    assert agent["backup"]["scope"] == {"tables": ["shop.orders", "shop.items"]}
    assert agent["backup"]["layout"] == "perTable", "a table-scoped backup lists each table"
