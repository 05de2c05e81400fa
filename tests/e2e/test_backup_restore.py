"""Backup and Restore end to end, against the real control plane, MariaDB and MinIO."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import Env, OperatorProcess, s3_client
from tests.stackenv import Stack, eventually, procs, stack_pod_procs

pytestmark = pytest.mark.stack


def test_manual_backup_completes_with_verifiable_result(env: Env) -> None:
    env.policy()
    env.backup("b1", description="first")
    b = env.wait_phase("backups", "b1", ("Completed", "Failed"))
    st = b["status"]
    assert st["phase"] == "Completed", st
    assert st["tableCount"] == 4
    assert st["databases"] == [env.database]
    assert st["sizeBytes"] > st["storedBytes"] > 0
    assert "MariaDB" in st["serverVersion"]
    assert st["binlog"]["file"].startswith("mysql-bin.") and st["binlog"]["position"] > 0
    assert st["jobName"] == "backup-b1"
    assert st["durationSeconds"] >= 0
    # The object and its manifest exist; the stored bytes hash to the reported sha256.
    bucket, key = st["location"][5:].split("/", 1)
    s3 = s3_client(env.stack)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == st["sha256"]
    assert len(body) == st["storedBytes"]
    assert body[:4] == b"\x28\xb5\x2f\xfd"  # zstd by default
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=st["manifestLocation"].split("/", 3)[3])["Body"].read())
    assert manifest["sha256"] == st["sha256"]
    assert manifest["counts"] == {"tables": 4, "views": 1, "routines": 2, "triggers": 1, "events": 1}
    # Printer columns and events.
    out = env.stack.kubectl("get", "backups", "-n", env.namespace).stdout
    assert "POLICY" in out and "TRIGGER" in out and "PHASE" in out and "SIZE" in out and "Completed" in out
    eventually(lambda: {"Started", "Completed"} <= {e.reason for e in env.events("b1")}, timeout=10, what="events")
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == 1


def _objects_of(env: Env) -> dict[str, Any]:
    return {
        "views": env.sql("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1"),
        "routines": env.sql(
            "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() "
            "ORDER BY 1"
        ),
        "triggers": env.sql(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1"
        ),
        "events": env.sql(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() ORDER BY 1"
        ),
    }


def test_round_trip_restore_and_pre_restore_backup(env: Env) -> None:
    env.policy()
    original = env.checksums()
    original_objects = _objects_of(env)
    assert original_objects["views"] and original_objects["events"]
    env.backup("before")
    assert env.wait_phase("backups", "before", ("Completed", "Failed"))["status"]["phase"] == "Completed"

    # Damage: change rows, drop a table and a routine, add a table the backup never had.
    env.sql("UPDATE customers SET city = 'nowhere'")
    env.sql("DELETE FROM orders WHERE id % 2 = 0")
    env.sql("DROP TABLE blobs")
    env.sql("DROP PROCEDURE add_order")
    env.sql("CREATE TABLE intruder (x INT)")
    damaged = env.checksums()

    env.restore("r1", "before")
    r = env.wait_phase("restores", "r1", ("Completed", "Failed"), timeout=240)
    assert r["status"]["phase"] == "Completed", r["status"]
    assert env.checksums() == original
    assert _objects_of(env) == original_objects
    assert [r_ for r_ in env.sql("SELECT double_it(21)")] == [(42,)]
    # utf8mb4 and binary data survived byte for byte (covered by CHECKSUM too; spot-check).
    assert ("🦄 Unicorn Town",) in env.sql("SELECT DISTINCT city FROM customers")

    # The safety backup exists, completed, is labelled, has no owner, and holds the damaged state.
    pre_name = r["status"]["preRestoreBackup"]
    assert pre_name.startswith("pre-restore-r1-")
    pre = env.get("backups", pre_name)
    assert pre["status"]["phase"] == "Completed"
    assert pre["spec"]["trigger"] == "pre-restore"
    assert pre["metadata"]["labels"]["mysqlbackup.dev/restore"] == "r1"
    assert not pre["metadata"].get("ownerReferences")
    eventually(
        lambda: {"PreRestoreBackup", "Completed"} <= {e.reason for e in env.events("r1")}, timeout=10, what="events"
    )

    # Restoring the safety backup brings back exactly the pre-restore (damaged) state.
    env.restore("r2", pre_name)
    r2 = env.wait_phase("restores", "r2", ("Completed", "Failed"), timeout=240)
    assert r2["status"]["phase"] == "Completed", r2["status"]
    assert env.checksums() == damaged


def test_restore_into_a_different_target_database(env: Env) -> None:
    env.policy()
    env.backup("b")
    env.wait_phase("backups", "b", ("Completed",))
    target = env.database + "_copy"
    env.restore("r", "b", target=target)
    r = env.wait_phase("restores", "r", ("Completed", "Failed"), timeout=240)
    assert r["status"]["phase"] == "Completed", r["status"]
    assert env.checksums(target) == env.checksums()
    env.sql(f"DROP DATABASE `{target}`")


def _assume_read_only_role(env: Env) -> dict[str, str]:
    """Temporary MinIO credentials whose session policy allows reading the bucket, never writing."""
    import boto3

    s3 = env.stack.s3
    sts = boto3.client(
        "sts",
        endpoint_url=s3["endpoint"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": [f"arn:aws:s3:::{env.bucket}", f"arn:aws:s3:::{env.bucket}/*"],
            }
        ],
    }
    creds = sts.assume_role(
        RoleArn="arn:minio:iam:::role/read-only",
        RoleSessionName="read-only",
        Policy=json.dumps(policy),
        DurationSeconds=3600,
    )["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
    }


def test_restore_never_runs_when_the_safety_backup_fails(env: Env) -> None:
    env.policy()
    env.backup("good")
    env.wait_phase("backups", "good", ("Completed",))
    env.sql("UPDATE customers SET name = 'changed-after-backup'")
    before = env.checksums()

    # The credentials lose write access to the bucket (reads still work).
    env.secret("s3-credentials", _assume_read_only_role(env))
    env.patch_policy({"storage": {"s3": {"credentialsSecretRef": {"sessionTokenKey": "AWS_SESSION_TOKEN"}}}})

    env.restore("r", "good")
    r = env.wait_phase("restores", "r", ("Completed", "Failed"), timeout=180)
    assert r["status"]["phase"] == "Failed"
    assert r["status"]["reason"] == "PreRestoreBackupFailed"
    pre = env.get("backups", r["status"]["preRestoreBackup"])
    assert pre["status"]["phase"] == "Failed"
    assert pre["status"]["reason"] == "StorageAccessDenied", pre["status"]
    assert not [j for j in env.jobs() if j.metadata.name.startswith("restore-")], "a restore Job was created"
    assert env.checksums() == before
    eventually(
        lambda: any(e.type == "Warning" and e.reason == "PreRestoreBackupFailed" for e in env.events("r")),
        timeout=10,
        what="Warning event",
    )


def test_one_operation_per_database_at_a_time(env: Env) -> None:
    env.policy()
    env.backup("seed")
    env.wait_phase("backups", "seed", ("Completed",))

    alive_overlap: list[tuple[str, str]] = []
    max_alive = 0
    stop = threading.Event()

    # An operation runs from its Job's creation until its agent has exited: the operator moves on
    # then (jobs.agent_succeeded), ~2 s before the kubelet calls the pod Succeeded and the Job
    # controller marks the Job complete, while nothing of the old operation touches the database.
    def watcher() -> None:
        nonlocal max_alive
        while not stop.is_set():
            jobs = env.jobs()  # before the pods: an agent that exited after this listing still shows
            all_pods = env.core.list_namespaced_pod(env.namespace).items
            exited = {
                (p.metadata.labels or {}).get("batch.kubernetes.io/job-name")
                for p in all_pods
                for c in p.status.container_statuses or []
                if c.state.terminated and c.state.terminated.exit_code == 0
            }
            active = [
                j.metadata.name
                for j in jobs
                if not _job_finished(j) and j.metadata.name != "backup-seed" and j.metadata.name not in exited
            ]
            pods = [
                p.metadata.name
                for p in all_pods
                if p.status.phase in ("Pending", "Running")
                and not any(c.state.terminated for c in p.status.container_statuses or [])
            ]
            max_alive = max(max_alive, len(active), len(pods))
            if len(active) > 1 or len(pods) > 1:
                alive_overlap.append((",".join(active), ",".join(pods)))
            time.sleep(0.2)

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    names = [f"q{i}" for i in range(5)]
    for n in names[:3]:
        env.backup(n)
    env.restore("rq", "seed")
    for n in names[3:]:
        env.backup(n)

    # While waiting, queued operations say so, naming who holds the database.
    def saw_queued() -> bool:
        for n in names:
            st = env.get("backups", n).get("status") or {}
            q = next((c for c in st.get("conditions") or [] if c["type"] == "Queued"), None)
            if q and q["status"] == "True" and st.get("reason") in ("DatabaseBusy", "QueuedBehindEarlierOperation"):
                return True
        return False

    eventually(saw_queued, timeout=60, interval=0.2, what="a queued Backup")
    busy = [env.get("backups", n).get("status") or {} for n in names]
    assert any(s.get("reason") == "DatabaseBusy" and "waiting for" in s.get("message", "") for s in busy) or any(
        s.get("reason") == "QueuedBehindEarlierOperation" for s in busy
    )
    for n in names:
        assert env.wait_phase("backups", n, ("Completed", "Failed"), timeout=300)["status"]["phase"] == "Completed"
    assert env.wait_phase("restores", "rq", ("Completed", "Failed"), timeout=300)["status"]["phase"] == "Completed"
    stop.set()
    t.join()
    assert not alive_overlap, f"two operations ran at once: {alive_overlap[:3]}"
    # They ran in creation order.
    started = sorted(names, key=lambda n: env.get("backups", n)["status"]["startedAt"])
    assert started[:3] == names[:3]


def _job_finished(job: client.V1Job) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or [])


def test_operator_killed_mid_backup_resumes_without_duplicates(env: Env, operator: OperatorProcess) -> None:
    env.policy()
    # Make the dump take a while so the kill lands during the Job.
    env.sql("CREATE TABLE filler (id INT PRIMARY KEY AUTO_INCREMENT, pad VARCHAR(255))")
    env.sql("INSERT INTO filler (pad) SELECT REPEAT('x', 255) FROM seq_1_to_200000")
    env.backup("crash")
    eventually(
        lambda: (env.get("backups", "crash").get("status") or {}).get("phase") == "Running",
        timeout=60,
        interval=0.1,
        what="backup running",
    )
    operator.kill()
    time.sleep(3)
    operator.start()
    b = env.wait_phase("backups", "crash", ("Completed", "Failed"), timeout=240)
    assert b["status"]["phase"] == "Completed", b["status"]
    jobs = [j for j in env.jobs() if j.metadata.name.startswith("backup-crash")]
    assert len(jobs) == 1
    pods = env.core.list_namespaced_pod(env.namespace, label_selector="batch.kubernetes.io/job-name=backup-crash")
    assert len(pods.items) == 1


def test_bad_input_is_refused_or_failed_with_a_reason(env: Env, operator: OperatorProcess) -> None:
    # Refused by the apiserver, with a readable message.
    with pytest.raises(client.ApiException) as e:
        env.policy("bad-args", backup={"extraDumpArgs": ["--result-file=/etc/passwd"]})
    assert e.value.status == 422 and "extraDumpArgs only allows" in e.value.body
    with pytest.raises(client.ApiException) as e:
        env.policy("bad-comp", backup={"compression": "rar"})
    assert e.value.status == 422 and "Unsupported value" in e.value.body
    with pytest.raises(client.ApiException) as e:
        env.backup("bad-trigger", trigger="sometimes")
    assert e.value.status == 422
    with pytest.raises(client.ApiException) as e:
        env.restore("bad-target", "x", databases=["a", "b"], target="c")
    assert "target can only be set" in e.value.body
    env.backup("immutable")
    with pytest.raises(client.ApiException) as e:
        env.custom.patch_namespaced_custom_object(
            "mysqlbackup.dev", "v1alpha1", env.namespace, "backups", "immutable", {"spec": {"description": "changed"}}
        )
    assert "immutable" in e.value.body

    # Failed at run time with a reason, a message and a Warning event.
    env.policy()
    env.secret("wrong-password", {"password": "definitely-wrong"})
    env.policy("wrongpw", database={"passwordSecretRef": {"name": "wrong-password"}})
    env.policy("nohost", database={"host": "127.0.0.1", "port": 1})
    env.backup("auth", policy="wrongpw")
    env.backup("unreachable", policy="nohost")
    env.restore("missing", "no-such-backup")
    auth = env.wait_phase("backups", "auth", ("Completed", "Failed"))["status"]
    assert auth["phase"] == "Failed" and auth["reason"] == "AuthenticationFailed", auth
    unreachable = env.wait_phase("backups", "unreachable", ("Completed", "Failed"))["status"]
    assert unreachable["phase"] == "Failed" and unreachable["reason"] == "DatabaseUnavailable", unreachable
    missing = env.wait_phase("restores", "missing", ("Completed", "Failed"))["status"]
    assert missing["phase"] == "Failed" and missing["reason"] == "BackupNotFound"
    for name in ("auth", "unreachable", "missing"):
        eventually(lambda n=name: any(e.type == "Warning" for e in env.events(n)), timeout=10, what=f"{name} event")
    assert "definitely-wrong" not in json.dumps([auth, unreachable])
    assert operator.alive(), "the operator died on bad input"


def _cmdlines() -> list[str]:
    return [p.cmdline.replace(b"\0", b" ").decode(errors="replace") for p in procs.scan()]


def test_password_never_leaks(env: Env, operator: OperatorProcess) -> None:
    password = env.stack.db["root_password"]
    env.policy()
    storage_secrets = env.storage_secrets()  # the S3 secret key, or the Azure/GCS credentials
    env.sql("CREATE TABLE filler (id INT PRIMARY KEY AUTO_INCREMENT, pad VARCHAR(255))")
    env.sql("INSERT INTO filler (pad) SELECT REPEAT('y', 255) FROM seq_1_to_100000")
    seen_dump = False
    leaks: list[str] = []
    stop = threading.Event()

    def scan() -> None:
        nonlocal seen_dump
        while not stop.is_set():
            for cmd in _cmdlines():
                if "mariadb-dump" in cmd or "mysql-backup-agent" in cmd:
                    seen_dump = seen_dump or "mariadb-dump" in cmd
                if password in cmd or any(s in cmd for s in storage_secrets):
                    leaks.append(cmd[:200])
            time.sleep(0.02)

    t = threading.Thread(target=scan, daemon=True)
    t.start()
    env.backup("secret-check")
    b = env.wait_phase("backups", "secret-check", ("Completed", "Failed"))
    env.restore("secret-restore", "secret-check")
    r = env.wait_phase("restores", "secret-restore", ("Completed", "Failed"), timeout=240)
    stop.set()
    t.join()
    assert b["status"]["phase"] == "Completed" and r["status"]["phase"] == "Completed"
    assert seen_dump, "never observed mysqldump running; the scan proved nothing"
    assert not leaks, f"secret in argv: {leaks[:2]}"
    everything = json.dumps([b, r, env.get("backups", r["status"]["preRestoreBackup"])])
    events = " ".join(e.message for e in env.core.list_namespaced_event(env.namespace).items)
    for secret in (password, *storage_secrets):
        assert secret not in everything
        assert secret not in events
        assert secret not in operator.logs()
    # Nor in the agent's own logs, served by the kubelet.
    for pod in env.core.list_namespaced_pod(env.namespace).items:
        logs = env.core.read_namespaced_pod_log(pod.metadata.name, env.namespace)
        assert password not in logs and not any(s in logs for s in storage_secrets)
    assert os.environ.get("MBO_DB_PASSWORD") is None


def test_corrupted_dump_is_detected_before_the_database_is_touched(env: Env) -> None:
    env.policy()
    env.backup("b")
    st = env.wait_phase("backups", "b", ("Completed",))["status"]
    bucket, key = st["location"][5:].split("/", 1)
    s3 = s3_client(env.stack)
    data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    env.sql("UPDATE customers SET name = 'after-backup'")
    before = env.checksums()
    env.restore("r", "b")
    r = env.wait_phase("restores", "r", ("Completed", "Failed"), timeout=240)["status"]
    assert r["phase"] == "Failed" and r["reason"] == "ChecksumMismatch", r
    assert "nothing was restored" in r["message"]
    assert env.checksums() == before


def test_a_stuck_backup_times_out(env: Env) -> None:
    """A dump blocked by a table lock hits activeDeadlineSeconds and fails with reason Timeout."""
    from tests.e2e.conftest import db_connect

    env.policy(jobTemplate={"activeDeadlineSeconds": 30})
    blocker = db_connect(env.stack, env.database)
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLES customers WRITE")
            env.backup("stuck")
            st = env.wait_phase("backups", "stuck", ("Completed", "Failed"), timeout=120)["status"]
    finally:
        blocker.close()
    assert st["phase"] == "Failed" and st["reason"] == "Timeout", st
    assert not [k for k in env.objects() if "/stuck-" in k], "a partial dump became visible"


AGENT_BACKUP = b"mysql-backup-agent\0backup"


def _agent_rss_kib(stack: Stack) -> int | None:
    for p in stack_pod_procs(stack, AGENT_BACKUP):
        with contextlib.suppress(OSError):
            for line in (p.path / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):  # the kernel's own peak-RSS mark: no peak is missed
                    return int(line.split()[1])
    return None


def _peak_agent_rss(env: Env, backup: str) -> tuple[int, dict[str, Any]]:
    peak = 0
    env.backup(backup)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        peak = max(peak, _agent_rss_kib(env.stack) or 0)
        st = env.get("backups", backup).get("status") or {}
        if st.get("phase") in ("Completed", "Failed"):
            return peak, st
        time.sleep(0.05)
    raise AssertionError("backup did not finish")


def test_agent_memory_stays_flat_whatever_the_dump_size(env: Env) -> None:
    """Streaming, measured: a dump four times larger must not raise the agent's peak memory."""
    env.policy(backup={"compression": "zstd"})
    env.sql("CREATE TABLE bulk (id INT PRIMARY KEY, a CHAR(32), b CHAR(32), c CHAR(32), d CHAR(64))")
    fill = "INSERT INTO bulk SELECT seq, MD5(seq), MD5(seq + 1), MD5(seq * 7), SHA2(seq, 256) FROM seq_{}_to_{}"
    env.sql(fill.format(1, 700000))
    small_peak, small = _peak_agent_rss(env, "small")
    env.sql(fill.format(700001, 2800000))
    large_peak, large = _peak_agent_rss(env, "large")
    assert small["phase"] == "Completed" and large["phase"] == "Completed", (small, large)
    assert large["sizeBytes"] > 3.8 * small["sizeBytes"] > 400 * 2**20
    print(
        f"\nagent peak RSS: {small_peak / 1024:.0f} MiB for a {small['sizeBytes'] / 2**20:.0f} MiB dump, "
        f"{large_peak / 1024:.0f} MiB for a {large['sizeBytes'] / 2**20:.0f} MiB dump "
        f"({large['storedBytes'] / 2**20:.0f} MiB stored in {large['durationSeconds']}s)"
    )
    assert small_peak > 0 and large_peak > 0, "agent process never observed"
    # Bounded by the parts in flight and zstd's worker buffers, not by the dump size: ~360 MiB more
    # dump (~150 MiB more stored) may move the peak by allocator noise (tens of MiB), not by the dump.
    added_kib = (large["sizeBytes"] - small["sizeBytes"]) // 1024
    assert large_peak - small_peak < 0.25 * added_kib, (small_peak, large_peak, added_kib)
    assert large_peak < 300 * 1024, large_peak


def _hold_dump(env: Env) -> Any:
    """A write lock on one table: mysqldump blocks on it until the returned connection closes."""
    from tests.e2e.conftest import db_connect

    conn = db_connect(env.stack, env.database)
    conn.cursor().execute("LOCK TABLES customers WRITE")
    return conn


def _agent_pids(env: Env) -> list[int]:
    return [p.pid for p in stack_pod_procs(env.stack, AGENT_BACKUP)]


def test_agent_pod_killed_mid_backup_publishes_nothing(env: Env) -> None:
    env.policy()
    conn = _hold_dump(env)
    try:
        env.backup("killed")
        env.wait_phase("backups", "killed", ("Running",))
        eventually(lambda: _agent_pids(env), timeout=30, what="agent running")
        time.sleep(1)
        (pod,) = env.core.list_namespaced_pod(
            env.namespace, label_selector="batch.kubernetes.io/job-name=backup-killed"
        ).items
        env.core.delete_namespaced_pod(pod.metadata.name, env.namespace)
        st = env.wait_phase("backups", "killed", ("Completed", "Failed"), timeout=120)["status"]
    finally:
        conn.close()
    # The agent aborted on SIGTERM (reason Interrupted in its result), but a deleted pod takes its
    # termination message with it; the Job's own failure is what remains.
    assert st["phase"] == "Failed" and st["reason"] in ("Interrupted", "JobFailed"), st
    assert st["reason"] == "Interrupted" or "deleted or evicted" in st["message"], st
    assert not [k for k in env.objects() if "/killed-" in k], "a partial dump became visible"
    if env.backend == "s3":
        # ...and the agent aborted its multipart upload on SIGTERM instead of leaving parts behind.
        # (Azure's staged blocks and GCS's resumable sessions have no listing; neither is an object.)
        uploads = s3_client(env.stack).list_multipart_uploads(Bucket=env.bucket).get("Uploads", [])
        assert not [u for u in uploads if "/killed-" in u["Key"]], uploads
    # The lock was released: the next backup runs.
    env.backup("after")
    assert env.wait_phase("backups", "after", ("Completed", "Failed"))["status"]["phase"] == "Completed"


def test_result_recovered_from_storage_when_the_job_is_gone(env: Env, operator: OperatorProcess) -> None:
    """Operator down while its Job finished and was cleaned up: the manifest proves completion."""
    env.policy()
    conn = _hold_dump(env)
    try:
        env.backup("orphan")
        env.wait_phase("backups", "orphan", ("Running",))
        operator.stop()
    finally:
        conn.close()
    try:
        eventually(
            lambda: any(
                c.type == "Complete" and c.status == "True"
                for c in env.batch.read_namespaced_job("backup-orphan", env.namespace).status.conditions or []
            ),
            timeout=120,
            what="job complete while the operator is down",
        )
        env.batch.delete_namespaced_job("backup-orphan", env.namespace, propagation_policy="Background")
    finally:
        operator.start()
    st = env.wait_phase("backups", "orphan", ("Completed", "Failed"), timeout=60)["status"]
    assert st["phase"] == "Completed", st
    assert "recovered from its manifest" in st["message"]
    bucket, key = st["location"][5:].split("/", 1)
    body = s3_client(env.stack).get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == st["sha256"]
