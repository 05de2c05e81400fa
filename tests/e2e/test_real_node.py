"""What only a real node can prove: the shipped image, its security context, kernel-enforced memory
limits, liveness probes and a second operator replica (the retired process kubelet ran host
binaries as root, with no images, cgroup limits or probes)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import LOCK_NAMESPACE, RELEASE, Env, InstalledOperator, db_connect
from tests.stackenv import Stack, eventually

pytestmark = pytest.mark.stack


RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

SMOKE = r"""
set -u
ok() { command -v "$1" >/dev/null && echo true || echo false; }
w() { (echo x > "$1") 2>/dev/null && echo true || echo false; }
# The operator has no --help (it would start watching): load every entry point instead.
python3 -c 'from importlib.metadata import entry_points as e
names = ("mysql-backup-operator", "mysql-backup-agent", "kubectl-mysqlbackup")
assert len([x.load() for x in e(group="console_scripts") if x.name in names]) == 3'
op_rc=$?
mysql-backup-agent version >/dev/null 2>&1; agent_rc=$?
kubectl-mysqlbackup --help >/dev/null 2>&1; plugin_rc=$?
printf '{"uid":%s,"gid":%s,"caps":"%s","operator":%s,"agent":%s,"plugin":%s,"dump":%s,"zstd":%s,' \
  "$(id -u)" "$(id -g)" "$(grep CapEff /proc/self/status | cut -f2)" \
  "$(ok mysql-backup-operator)" "$(ok mysql-backup-agent)" "$(ok kubectl-mysqlbackup)" \
  "$(ok mariadb-dump)" "$(ok zstd)" > /scratch/out
printf '"rc":[%s,%s,%s],"w_root":%s,"w_etc":%s,"w_tmp":%s,"w_opt":%s,"w_scratch":%s}' \
  "$op_rc" "$agent_rc" "$plugin_rc" "$(w /x)" "$(w /etc/x)" "$(w /tmp/x)" "$(w /opt/mbo/x)" \
  "$(w /scratch/x)" >> /scratch/out
cat /scratch/out > /dev/termination-log
"""


def test_image_smoke_entry_points_non_root_read_only(stack: Stack, api: Any, namespace: str) -> None:
    """The shipped image under the chart's security context: its entry points and client tools
    are there, it runs as 65532 with no capabilities, and it can write only to its volume."""
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "smoke"},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}],
                "containers": [
                    {
                        "name": "c",
                        "image": stack.image,
                        "imagePullPolicy": "Never",
                        "command": ["bash", "-c", SMOKE],
                        "securityContext": RESTRICTED,
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                    }
                ],
            },
        },
    )

    def done() -> Any:
        st = core.read_namespaced_pod("smoke", namespace).status
        cs = (st.container_statuses or [None])[0]
        return cs.state.terminated if cs is not None and cs.state.terminated else None

    term = eventually(done, timeout=90, what="smoke pod finished")
    assert term.exit_code == 0, term
    got = json.loads(term.message)
    assert (got["uid"], got["gid"]) == (65532, 65532)
    assert int(got["caps"], 16) == 0, "capabilities were not dropped"
    assert got["operator"] and got["agent"] and got["plugin"] and got["dump"] and got["zstd"], got
    assert got["rc"] == [0, 0, 0], f"an entry point failed to load or run: {got}"
    assert not (got["w_root"] or got["w_etc"] or got["w_tmp"] or got["w_opt"]), f"wrote outside its volume: {got}"
    assert got["w_scratch"], got


def test_operator_pod_runs_the_image_restricted(stack: Stack, operator: InstalledOperator) -> None:
    """The operator container as the kernel sees it: uid 65532, no capabilities, read-only root,
    and the memory limit from the chart in its cgroup."""
    (pid,) = operator._pids()
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[:2] == ["65532", "65532"]
    assert int(fields["CapEff"].strip(), 16) == 0
    assert int(fields["CapBnd"].strip(), 16) == 0
    mounts = Path(f"/proc/{pid}/mounts").read_text().splitlines()
    root = next(m.split() for m in mounts if m.split()[1] == "/")
    assert "ro" in root[3].split(","), root
    assert _memory_limit(pid) == 512 * 1024 * 1024


def _memory_cgroup(pid: int) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    raise AssertionError(f"no memory cgroup for {pid}")


def _memory_limit(pid: int) -> int:
    return int((_memory_cgroup(pid) / "memory.limit_in_bytes").read_text())


def test_liveness_probe_restarts_a_hung_operator(stack: Stack, operator: InstalledOperator) -> None:
    """SIGSTOP the operator: its liveness endpoint stops answering, and the kubelet (not we)
    restarts the container after the chart's failureThreshold."""
    pod = eventually(operator._running, timeout=60, what="operator running")
    before = pod.status.container_statuses[0].restart_count
    for pid in operator._pids():
        os.kill(pid, signal.SIGSTOP)

    def restarted() -> bool:
        p = operator.core.read_namespaced_pod(pod.metadata.name, LOCK_NAMESPACE)
        return bool(p.status.container_statuses[0].restart_count > before)

    # How long the kubelet may take, from the pod's own spec: failureThreshold probes periodSeconds
    # apart, each up to timeoutSeconds; then SIGTERM, which a stopped process never acts on, so
    # the whole terminationGracePeriodSeconds; then the restart, delayed by the kubelet's crash
    # back-off if the container restarted before (10 s doubling, capped at 300 s); and start-up.
    spec = pod.spec.containers[0].liveness_probe
    detect = spec.period_seconds * spec.failure_threshold + spec.timeout_seconds
    backoff = min(300, 10 * 2 ** (before - 1)) if before else 0
    bound = detect + pod.spec.termination_grace_period_seconds + backoff + 60
    eventually(restarted, timeout=bound, interval=2, what=f"kubelet restarted the hung operator within {bound}s")

    # The kubelet says why it restarted the container: "Unhealthy: Liveness probe failed" per
    # failed probe, then "Killing: ... failed liveness probe, will be restarted". Its event
    # recorder throttles events per object (a burst of 25, then one per 5 minutes), and the
    # suite's earlier kills spend that budget on this same pod's Created/Started events, so
    # either event is accepted; both come from the probe, not from us. Events are posted
    # asynchronously, hence the wait.
    def probe_events() -> list[tuple[str, str]]:
        events = operator.core.list_namespaced_event(
            LOCK_NAMESPACE, field_selector=f"involvedObject.uid={pod.metadata.uid}"
        ).items
        return [
            (e.reason, e.message or "")
            for e in events
            if (e.reason == "Unhealthy" and "Liveness probe failed" in (e.message or ""))
            or (e.reason == "Killing" and "failed liveness probe" in (e.message or ""))
        ]

    eventually(probe_events, timeout=30, interval=1, what="the kubelet's liveness-probe event")
    operator.wait_ready()


def test_backup_at_default_memory_limit_completes_a_large_dump(env: Env) -> None:
    """A 1.6 GB dump through an agent held to the documented 512 MiB limit by the kernel (the
    Job's memory cgroup), uploaded as ~1.2 GB of zstd."""
    env.policy(
        jobTemplate={
            "activeDeadlineSeconds": 900,
            "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        },
        backup={"compression": "zstd"},
    )
    # ~1.6 GB of row data the server generates in seconds: 1,536 rows of 1 MiB, each one of 16
    # random (base64) blobs, so repeats are 16 MiB apart, beyond zstd's window: the dump stays
    # large after compression and the upload path is exercised for real.
    conn = db_connect(env.stack, env.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION group_concat_max_len = 4194304")
            cur.execute("CREATE TABLE seed (id INT PRIMARY KEY, body LONGTEXT) ENGINE=InnoDB")
            for i in range(16):
                cur.execute(
                    "INSERT INTO seed SELECT %s, GROUP_CONCAT(TO_BASE64(RANDOM_BYTES(1024)) SEPARATOR '') "
                    "FROM seq_1_to_768",
                    (i,),
                )
            cur.execute("CREATE TABLE big (id INT PRIMARY KEY, body LONGTEXT) ENGINE=InnoDB")
            for lo in range(1, 1537, 256):
                cur.execute(
                    f"INSERT INTO big SELECT seq, (SELECT body FROM seed WHERE id = seq % 16) "
                    f"FROM seq_{lo}_to_{lo + 255}"
                )
            cur.execute("DROP TABLE seed")
    finally:
        conn.close()
    t0 = time.monotonic()
    env.backup("large")
    peak = 0
    limit = 0
    while time.monotonic() - t0 < 900:
        for p in _agent_pids_in(env):
            cg = _memory_cgroup(p)
            limit = int((cg / "memory.limit_in_bytes").read_text())
            peak = max(peak, int((cg / "memory.max_usage_in_bytes").read_text()))
        st = env.get("backups", "large").get("status") or {}
        if st.get("phase") in ("Completed", "Failed"):
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    assert st.get("phase") == "Completed", st
    print(
        f"large dump: {st['sizeBytes'] / 1e9:.2f} GB ({st['storedBytes'] / 1e6:.0f} MB stored) in {elapsed:.0f}s; "
        f"agent cgroup peak {peak / 2**20:.0f} MiB of {limit / 2**20:.0f} MiB"
    )
    assert st["sizeBytes"] >= 1_500_000_000, st
    assert st["storedBytes"] >= 1_000_000_000, "the dump compressed away; the upload path was not exercised"
    assert limit == 512 * 2**20, "the Job's memory limit was not applied by the kernel"
    assert 0 < peak <= limit
    env.sql("DROP TABLE big")


def _agent_pids_in(env: Env) -> list[int]:
    from tests.e2e.test_backup_restore import _agent_pids

    return _agent_pids(env)


def _peers(operator: InstalledOperator) -> dict[str, dict[str, Any]]:
    """kopf's peering record: live peer id -> {priority, lastseen, lifetime}."""
    obj = client.CustomObjectsApi(operator.api).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", RELEASE
    )
    return dict(obj.get("status") or {})


def _paused(log: str) -> bool:
    """kopf starts a replica of a named (mandatory) peering paused and logs only the changes:
    paused unless its last pause/resume line is a resume."""
    resume = log.rfind("Resuming operations")
    pause = max(log.rfind("Pausing operations"), log.rfind("Pausing all operators"))
    return resume == -1 or resume < pause


def test_two_replicas_one_acts_and_hands_over(env: Env, operator: InstalledOperator) -> None:
    """Chart `replicas: 2`: kopf peering lets exactly one replica act; deleting the active one
    mid-backup hands over to the other, and the backup runs once (one Job, one pod)."""
    try:
        operator.install("--set", "replicas=2")
        eventually(
            lambda: (
                len([p for p in operator.pods() if p.status.phase == "Running"]) == 2 and len(_peers(operator)) == 2
            ),
            timeout=120,
            what="two replicas registered as peers",
        )
        peers = _peers(operator)
        active_id = max(peers, key=lambda k: peers[k]["priority"])
        assert len({v["priority"] for v in peers.values()}) == 2, f"equal priorities pause every peer: {peers}"
        pods = {p.metadata.name for p in operator.pods() if p.status.phase == "Running"}
        (active,) = [p for p in pods if p in active_id]
        (standby,) = pods - {active}
        # A replica of a named peering starts paused; the active one logs that it resumes.
        try:
            eventually(
                lambda: not _paused(operator.logs(active)) and _paused(operator.logs(standby)),
                timeout=120,
                what="the active replica resumed and the standby stays paused",
            )
        except AssertionError as e:
            tail = operator.logs(standby)[-3000:]
            raise AssertionError(f"{e}; peers={_peers(operator)}; standby log tail:\n{tail}") from None

        env.policy()
        from tests.e2e.test_backup_restore import _hold_dump

        conn = _hold_dump(env)  # the dump waits on a table lock until we let go
        try:
            env.backup("handover")
            env.wait_phase("backups", "handover", ("Running",), timeout=120)
            operator.core.delete_namespaced_pod(active, LOCK_NAMESPACE)
            eventually(lambda: not any(active in k for k in _peers(operator)), timeout=90, what="active peer gone")
        finally:
            conn.close()
        st = env.wait_phase("backups", "handover", ("Completed", "Failed"), timeout=240)["status"]
        assert st["phase"] == "Completed", st
        jobs = [j for j in env.jobs() if j.metadata.name.startswith("backup-handover")]
        assert len(jobs) == 1, [j.metadata.name for j in jobs]
        pods_run = env.core.list_namespaced_pod(
            env.namespace, label_selector="batch.kubernetes.io/job-name=" + jobs[0].metadata.name
        ).items
        assert len(pods_run) == 1
        assert len([k for k in env.objects() if "/handover-" in k and k.endswith(".sql.zst")]) <= 1
    finally:
        operator.install()
