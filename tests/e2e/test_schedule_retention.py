"""Schedules, retention, deletion and recovery from storage, against the real stack."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import Env, OperatorProcess
from tests.stackenv import REPO, eventually

pytestmark = pytest.mark.stack


def scheduled(env: Env, policy: str = "pol") -> list[dict[str, Any]]:
    return [b for b in env.list("backups", f"mysqlbackup.dev/policy={policy}") if b["spec"]["trigger"] == "scheduled"]


def run_scheduled(env: Env, name: str) -> dict[str, Any]:
    """A run as the scheduler creates it (same spec and labels), to exercise retention quickly."""
    env.create(
        "backups",
        {
            "kind": "Backup",
            "metadata": {"name": name, "labels": {"mysqlbackup.dev/policy": "pol"}},
            "spec": {"policyRef": {"name": "pol"}, "trigger": "scheduled"},
        },
    )
    return env.wait_phase("backups", name, ("Completed", "Failed"), timeout=180)


def names(objs: list[dict[str, Any]]) -> set[str]:
    return {o["metadata"]["name"] for o in objs}


def wait_gone(env: Env, name: str, timeout: float = 60) -> None:
    def gone() -> bool:
        try:
            env.get("backups", name)
        except client.ApiException as e:
            return e.status == 404
        return False

    eventually(gone, timeout=timeout, what=f"backup {name} deleted")


def dump_key(b: dict[str, Any]) -> str:
    return str(b["status"]["location"].split("/", 3)[3])


def test_schedule_deterministic_names_and_single_catch_up(env: Env, operator: OperatorProcess) -> None:
    env.policy(schedule="* * * * *", startingDeadlineSeconds=600, retention={"keepLast": 10})
    first = eventually(lambda: scheduled(env), timeout=90, interval=1, what="first scheduled Backup")
    (b,) = first
    name = b["metadata"]["name"]
    assert re.fullmatch(r"pol-\d{12}", name), name
    due = dt.datetime.strptime(name[4:], "%Y%m%d%H%M").replace(tzinfo=dt.UTC)
    assert b["metadata"]["annotations"]["mysqlbackup.dev/scheduled-for"] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
    # The policy records the run in the same pass, right after creating it.
    pol = eventually(
        lambda: (
            (env.get("backuppolicies", "pol").get("status") or {}).get("lastScheduleTime")
            and env.get("backuppolicies", "pol")["status"]
        ),
        timeout=20,
        what="lastScheduleTime",
    )
    assert pol["lastScheduleTime"] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert pol["nextScheduleTime"] > pol["lastScheduleTime"]
    env.wait_phase("backups", name, ("Completed",))

    def overdue_status() -> str | None:
        conds = env.get("backuppolicies", "pol").get("status", {}).get("conditions") or []
        return next((c["status"] for c in conds if c["type"] == "BackupOverdue"), None)

    assert eventually(lambda: overdue_status() == "False", timeout=20, what="BackupOverdue=False")

    # Stop the operator a few seconds before the next due time; restart after two more have passed.
    now = dt.datetime.now(dt.UTC)
    next_due = (now + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (next_due - now).total_seconds() < 20:
        next_due += dt.timedelta(minutes=1)
    time.sleep(max(0.0, (next_due - now).total_seconds() - 15))
    before = names(scheduled(env))
    operator.stop()
    assert dt.datetime.now(dt.UTC) < next_due, "the operator stopped too late for this test"
    missed = [next_due, next_due + dt.timedelta(minutes=1)]
    time.sleep((missed[-1] - dt.datetime.now(dt.UTC)).total_seconds() + 5)
    operator.start()
    eventually(lambda: len(scheduled(env)) > len(before), timeout=60, interval=1, what="catch-up run")
    time.sleep(8)  # give a duplicate every chance to appear
    new = names(scheduled(env)) - before
    assert new == {f"pol-{missed[-1].strftime('%Y%m%d%H%M')}"}, new
    events = [e.reason for e in env.events("pol")]
    assert "Scheduled" in events


def test_keep_last_prunes_only_scheduled_backups_and_their_objects(env: Env) -> None:
    env.policy(retention={"keepLast": 3})
    env.backup("manual-1")
    env.wait_phase("backups", "manual-1", ("Completed",))
    env.restore("r", "manual-1")
    pre = env.wait_phase("restores", "r", ("Completed",), timeout=240)["status"]["preRestoreBackup"]
    runs = [f"pol-20260101{i:04d}" for i in range(5)]
    for n in runs:
        assert run_scheduled(env, n)["status"]["phase"] == "Completed"
    for n in runs[:2]:
        wait_gone(env, n)
    remaining = names(env.list("backups"))
    assert remaining == {*runs[2:], "manual-1", pre}
    # Exactly the remaining backups' objects are in the bucket.
    keys = set(env.objects())
    expected = set()
    for b in env.list("backups"):
        expected |= {dump_key(b), b["status"]["manifestLocation"].split("/", 3)[3]}
    assert keys == expected

    def pruned() -> bool:
        pol = env.get("backuppolicies", "pol").get("status") or {}
        return pol.get("prunedCount") == 2 and pol.get("lastPrunedAfter") == runs[-1]

    eventually(pruned, timeout=20, what="prune recorded in policy status")
    eventually(lambda: any(e.reason == "Pruned" for e in env.events("pol")), timeout=10, what="Pruned event")


@pytest.fixture
def database_outage(env: Env) -> Iterator[None]:
    yield
    subprocess.run([sys.executable, str(REPO / "hack" / "stack.py"), "start-db"], check=True)


def test_nothing_is_pruned_while_backups_fail(env: Env, database_outage: None) -> None:
    env.policy(retention={"keepLast": 1, "keepFailed": 5})
    good = [run_scheduled(env, f"pol-2026010100{i:02d}") for i in range(2)]
    # keepLast 1: the second success prunes the first.
    wait_gone(env, "pol-202601010000")
    survivor = good[1]
    objects_before = set(env.objects())

    subprocess.run([sys.executable, str(REPO / "hack" / "stack.py"), "stop-db"], check=True)
    for i in range(2, 4):
        st = run_scheduled(env, f"pol-2026010100{i:02d}")["status"]
        assert st["phase"] == "Failed" and st["reason"] == "DatabaseUnavailable", st
    time.sleep(6)  # several policy passes
    assert names(scheduled(env)) == {"pol-202601010001", "pol-202601010002", "pol-202601010003"}
    assert set(env.objects()) == objects_before
    assert env.get("backups", survivor["metadata"]["name"])["status"]["phase"] == "Completed"
    pol = env.get("backuppolicies", "pol")["status"]
    assert pol["lastPrunedAfter"] == "pol-202601010001"
    assert pol["lastFailedBackup"] == "pol-202601010003" and pol["lastFailureReason"] == "DatabaseUnavailable"

    subprocess.run([sys.executable, str(REPO / "hack" / "stack.py"), "start-db"], check=True)
    assert run_scheduled(env, "pol-202601010004")["status"]["phase"] == "Completed"
    wait_gone(env, "pol-202601010001")
    assert names(scheduled(env)) == {"pol-202601010002", "pol-202601010003", "pol-202601010004"}


def test_deletion_policy_and_the_admission_policy(env: Env, stack: Any) -> None:
    env.policy()
    env.backup("del")
    env.backup("keep", deletionPolicy="Retain")
    d = env.wait_phase("backups", "del", ("Completed",))
    k = env.wait_phase("backups", "keep", ("Completed",))
    assert d["metadata"]["finalizers"] == ["mysqlbackup.dev/delete-data"]
    assert dump_key(d) in env.objects() and dump_key(k) in env.objects()

    assert env.stack.kubectl("delete", "backup", "del", "-n", env.namespace, "--wait=true").returncode == 0
    wait_gone(env, "del")
    assert not [key for key in env.objects() if key.startswith(dump_key(d).rsplit("/", 1)[0])]
    env.stack.kubectl("delete", "backup", "keep", "-n", env.namespace, "--wait=true")
    wait_gone(env, "keep")
    assert dump_key(k) in env.objects()

    # A user's delete of a scheduled Backup is refused by the ValidatingAdmissionPolicy...
    run_scheduled(env, "pol-202601010000")
    r = env.stack.kubectl("delete", "backup", "pol-202601010000", "-n", env.namespace, check=False)
    assert r.returncode != 0
    assert "managed by its" in r.stderr and "retention" in r.stderr, r.stderr
    assert env.get("backups", "pol-202601010000")
    # ...unless deliberately annotated; the operator's own prune is covered by the keepLast test.
    env.stack.kubectl(
        "annotate", "backup", "pol-202601010000", "-n", env.namespace, "mysqlbackup.dev/allow-delete=true"
    )
    assert env.stack.kubectl("delete", "backup", "pol-202601010000", "-n", env.namespace, check=False).returncode == 0


def test_recovery_from_storage_and_data_missing(env: Env) -> None:
    env.policy()
    originals = {}
    for n in ("a", "b"):
        env.backup(n, deletionPolicy="Retain")
        originals[n] = env.wait_phase("backups", n, ("Completed",))["status"]
    before = env.checksums()
    old_jobs = {j.metadata.uid for j in env.jobs()}
    for n in ("a", "b"):
        env.stack.kubectl("delete", "backup", n, "-n", env.namespace, "--wait=true")
        wait_gone(env, n)
    assert not env.list("backups")

    env.patch_policy({"storage": {"sync": True, "syncIntervalSeconds": 10}})
    eventually(lambda: len(env.list("backups")) == 2, timeout=60, what="imported backups")
    for n in ("a", "b"):
        b = env.wait_phase("backups", n, ("Completed",), timeout=30)
        st, orig = b["status"], originals[n]
        for field in ("location", "sha256", "sizeBytes", "storedBytes", "tableCount", "databases", "serverVersion"):
            assert st[field] == orig[field], field
        assert b["metadata"]["labels"]["mysqlbackup.dev/imported"] == "true"
        assert b["spec"]["deletionPolicy"] == "Retain"
    # Imported backups are complete as they are: no new backup Job ran for them.
    assert {j.metadata.uid for j in env.jobs()} <= old_jobs

    env.sql("DELETE FROM orders")
    env.restore("from-imported", "a")
    r = env.wait_phase("restores", "from-imported", ("Completed", "Failed"), timeout=240)
    assert r["status"]["phase"] == "Completed", r["status"]
    assert env.checksums() == before

    # Objects vanish from storage: the Backup says so, and no Restore of it is attempted.
    env.delete_object(dump_key(env.get("backups", "b")))

    def data_missing() -> bool:
        conds = env.get("backups", "b")["status"].get("conditions") or []
        return any(c["type"] == "DataMissing" and c["status"] == "True" for c in conds)

    eventually(data_missing, timeout=60, interval=1, what="DataMissing condition")
    env.restore("from-missing", "b")
    r2 = env.wait_phase("restores", "from-missing", ("Completed", "Failed"))
    assert r2["status"]["reason"] == "DataMissing"
    assert not [j for j in env.jobs() if j.metadata.name == "restore-from-missing"]
    assert "preRestoreBackup" not in r2["status"]


def test_invalid_schedule_zone_and_retention_are_refused(env: Env) -> None:
    cases = [
        ({"schedule": "61 * * * *"}, "schedule must be a 5-field cron expression"),
        ({"schedule": "every day"}, "schedule must be a 5-field cron expression"),
        ({"schedule": "@daily", "timeZone": "Mars/Olympus"}, "timeZone must be an IANA time zone"),
        ({"retention": {"keepLast": -1}}, "keepLast in body should be greater than or equal to 0"),
        ({"retention": {"keepDaily": -3}}, "keepDaily in body should be greater than or equal to 0"),
        ({"retention": {"maxAge": "forever"}}, "maxAge in body should match"),
    ]
    for i, (spec, message) in enumerate(cases):
        with pytest.raises(client.ApiException) as e:
            env.policy(f"bad-{i}", **spec)
        assert e.value.status == 422
        assert message in e.value.body, (spec, e.value.body)
    ok = env.policy("good", schedule="0 3 * * 1-5", timeZone="Europe/Berlin", retention={"keepDaily": 7})
    assert ok["spec"]["timeZone"] == "Europe/Berlin"


def test_storage_errors_keep_the_finalizer_until_data_is_deleted(env: Env) -> None:
    env.policy()
    env.backup("held")
    st = env.wait_phase("backups", "held", ("Completed",))["status"]
    good = {k: v for k, v in env.stack.s3.items() if k in ("access_key", "secret_key")}
    env.secret("s3-credentials", {"AWS_ACCESS_KEY_ID": good["access_key"], "AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    env.stack.kubectl("delete", "backup", "held", "-n", env.namespace, "--wait=false")

    def pending_event() -> bool:
        return any(e.reason == "DeletionPending" for e in env.events("held"))

    eventually(pending_event, timeout=60, interval=1, what="DeletionPending event")
    held = env.get("backups", "held")
    assert held["metadata"]["deletionTimestamp"] and "mysqlbackup.dev/delete-data" in held["metadata"]["finalizers"]
    assert dump_key({"status": st}) in env.objects()

    env.secret("s3-credentials", {"AWS_ACCESS_KEY_ID": good["access_key"], "AWS_SECRET_ACCESS_KEY": good["secret_key"]})
    wait_gone(env, "held", timeout=120)
    assert not [k for k in env.objects() if k.startswith(dump_key({"status": st}).rsplit("/", 1)[0])]
