#!/usr/bin/env python3
"""Scale benchmark: how light is the operator with P policies x B finished Backups?

`make bench-scale` (not part of `make test`). Steps, all against the real local stack:

1. bring the stack up (hack/stack.py), apply the CRDs, install the operator with Helm exactly as
   the e2e fixture does, but with the chart's production defaults (no test intervals), and scale
   it to zero;
2. create P policies (each naming its own database, so none share a lock) and B finished Backups
   per policy: the CR, then a status patch to Completed with the fields a real run writes. The
   Backups carry the labels and the finalizer the operator would have put on them, so the start-up
   is that of an operator restarted in a long-running cluster;
3. measure the apiserver's background request rate with the operator down (window W), start the
   operator, wait for the warm-up, and measure the same window again: the operator's requests
   are the difference, by verb and resource (the apiserver's own `apiserver_request_total`; the
   counter has no user label, so the baseline subtraction is what attributes requests);
4. RSS (VmRSS) and CPU (utime+stime over the window, % of one core) of the operator process;
5. create N new Backups (each on a different policy) and time create -> Job seen by a watch;
6. kill the operator process, and time its start -> the Job of a Backup created at once.

Prints one JSON document (and a readable summary on stderr).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

from kubernetes import client, watch  # noqa: E402

from tests.e2e.conftest import LOCK_NAMESPACE, RELEASE, InstalledOperator  # noqa: E402
from tests.stackenv import Stack, eventually, start_stack  # noqa: E402

GROUP, VERSION = "mysqlbackup.dev", "v1alpha1"
FINALIZER = f"{GROUP}/delete-data"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def database_key(identity: str) -> str:
    import hashlib

    return hashlib.sha256(identity.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- objects


def policy_body(i: int, stack: Stack) -> dict[str, Any]:
    s3 = stack.s3
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BackupPolicy",
        "metadata": {"name": f"p{i:05d}"},
        "spec": {
            "database": {
                "host": "127.0.0.1",
                "port": stack.db["port"],
                "user": "root",
                "passwordSecretRef": {"name": "db-credentials"},
                "databases": [f"bench_{i:05d}"],
            },
            "storage": {
                "s3": {
                    "bucket": "bench",
                    "prefix": "scale",
                    "endpoint": s3["endpoint"],
                    "region": s3["region"],
                    "forcePathStyle": True,
                    "credentialsSecretRef": {"name": "s3-credentials"},
                }
            },
            "jobTemplate": {"activeDeadlineSeconds": 120, "backoffLimit": 0},
        },
    }


def finished_backup(i: int, j: int, ns: str, stack: Stack) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Backup as a completed run leaves it: labels, finalizer, and a full Completed status."""
    policy = f"p{i:05d}"
    name = f"{policy}-b{j:03d}"
    identity = f"127.0.0.1:{stack.db['port']}/bench_{i:05d}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Backup",
        "metadata": {
            "name": name,
            "finalizers": [FINALIZER],
            "labels": {
                f"{GROUP}/policy": policy,
                f"{GROUP}/trigger": "manual",
                f"{GROUP}/database-key": database_key(identity),
                "app.kubernetes.io/managed-by": "mysql-backup-operator",
            },
        },
        "spec": {"policyRef": {"name": policy}, "deletionPolicy": "Retain"},
    }
    started = f"2026-01-{1 + j % 28:02d}T02:00:00Z"
    done = f"2026-01-{1 + j % 28:02d}T02:00:31Z"
    key = f"scale/{ns}/{policy}/{name}-{uuid.uuid4().hex[:8]}/dump.sql.zst"
    status = {
        "phase": "Completed",
        "reason": "Completed",
        "message": f"backup stored at s3://bench/{key}",
        "jobName": f"backup-{name}",
        "startedAt": started,
        "completedAt": done,
        "durationSeconds": 31.0,
        "observedGeneration": 1,
        "location": f"s3://bench/{key}",
        "manifestLocation": f"s3://bench/{key.rsplit('/', 1)[0]}/manifest.json",
        "sizeBytes": 52_428_800,
        "storedBytes": 9_437_184,
        "sha256": uuid.uuid4().hex * 2,
        "compression": "zstd",
        "tableCount": 12,
        "databases": [f"bench_{i:05d}"],
        "serverVersion": "10.11.6-MariaDB-0+deb12u1",
        "storage": {
            "bucket": "bench",
            "dumpKey": key,
            "manifestKey": f"{key.rsplit('/', 1)[0]}/manifest.json",
            "endpoint": stack.s3["endpoint"],
            "region": stack.s3["region"],
            "forcePathStyle": True,
            "credentialsSecret": "s3-credentials",
            "accessKeyIdKey": "AWS_ACCESS_KEY_ID",
            "secretAccessKeyKey": "AWS_SECRET_ACCESS_KEY",
        },
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Completed",
                "message": "backup completed and verified by its manifest",
                "observedGeneration": 1,
                "lastTransitionTime": done,
            }
        ],
    }
    return body, status


def create_objects(api: Any, stack: Stack, ns: str, policies: int, per_policy: int, workers: int) -> float:
    custom = client.CustomObjectsApi(api)
    t0 = time.monotonic()

    def mk_policy(i: int) -> None:
        with contextlib.suppress(client.ApiException):
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "backuppolicies", policy_body(i, stack))

    def mk_backup(ij: tuple[int, int]) -> None:
        body, status = finished_backup(ij[0], ij[1], ns, stack)
        name = body["metadata"]["name"]
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "backups", body)
        except client.ApiException as e:
            if e.status != 409:
                raise
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "backups", name, {"status": status})

    with cf.ThreadPoolExecutor(workers) as pool:
        list(pool.map(mk_policy, range(policies)))
        log(f"{policies} policies in {time.monotonic() - t0:.1f}s")
        for done, _ in enumerate(pool.map(mk_backup, [(i, j) for i in range(policies) for j in range(per_policy)]), 1):
            if done % 2000 == 0:
                log(f"{done} Backups")
    return time.monotonic() - t0


# ---------------------------------------------------------------------------- measurements

METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def request_counts(api: Any) -> dict[tuple[str, str], float]:
    """apiserver_request_total summed by (verb, resource[/subresource]); non-resource URLs dropped."""
    resp = api.call_api("GET", api.configuration.host + "/metrics")
    resp.read()
    text = resp.data.decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        if not labels.get("resource"):
            continue
        res = labels["resource"] + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        key = (labels.get("verb", ""), res)
        out[key] = out.get(key, 0.0) + float(m["value"])
    return out


def rate(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], secs: float) -> dict[str, float]:
    return {f"{v} {r}": (after.get((v, r), 0.0) - before.get((v, r), 0.0)) / secs for v, r in after}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """RSS now (VmRSS) or the process's peak so far (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_wall(pid: int) -> float:
    """The process's start time as a wall-clock timestamp (from /proc, so it is exact)."""
    start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    btime = next(int(x.split()[1]) for x in Path("/proc/stat").read_text().splitlines() if x.startswith("btime"))
    return btime + start_ticks / CLK_TCK


def window(api: Any, secs: float, pid: int | None) -> dict[str, Any]:
    before = request_counts(api)
    cpu0 = cpu_seconds(pid) if pid else 0.0
    t0 = time.monotonic()
    time.sleep(secs)
    elapsed = time.monotonic() - t0
    after = request_counts(api)
    out: dict[str, Any] = {"seconds": round(elapsed, 1), "rates": rate(before, after, elapsed)}
    if pid:
        out["cpu_percent"] = round(100 * (cpu_seconds(pid) - cpu0) / elapsed, 2)
        out["rss_mib"] = round(rss_mib(pid), 1)
        out["rss_peak_mib"] = round(rss_mib(pid, "VmHWM"), 1)
    return out


class JobWatch:
    """Records when each Job in the namespace is first seen, from a watch (not creationTimestamp,
    which has one-second resolution)."""

    def __init__(self, api: Any, ns: str) -> None:
        self.seen: dict[str, float] = {}
        self.ns = ns
        self.batch = client.BatchV1Api(api)
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(30)

    def _run(self) -> None:
        while not self.stop.is_set():
            w = watch.Watch()
            try:
                rv = self.batch.list_namespaced_job(self.ns).metadata.resource_version
                self.ready.set()
                for ev in w.stream(self.batch.list_namespaced_job, self.ns, resource_version=rv, timeout_seconds=60):
                    name = ev["object"].metadata.name
                    self.seen.setdefault(name, time.time())
                    if self.stop.is_set():
                        break
            except Exception as e:  # reconnect; the bench must not die on a dropped watch
                log(f"job watch: {type(e).__name__}")
                time.sleep(0.5)

    def wait(self, name: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name in self.seen:
                return self.seen[name]
            time.sleep(0.02)
        return None


def new_backup(custom: Any, ns: str, policy: str, name: str) -> float:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Backup",
        "metadata": {"name": name},
        "spec": {"policyRef": {"name": policy}, "deletionPolicy": "Retain"},
    }
    t = time.time()
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "backups", body)
    return t


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, round(p / 100 * (len(xs) - 1))))
    return xs[k]


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--backups-per-policy", type=int, default=10)
    ap.add_argument("--window", type=float, default=60, help="measurement window, seconds")
    ap.add_argument("--warmup", type=float, default=60, help="seconds after start-up before measuring")
    ap.add_argument("--latency-samples", type=int, default=20)
    ap.add_argument("--latency-timeout", type=float, default=60, help="give up on one sample after this long")
    ap.add_argument("--startup-timeout", type=float, default=300, help="give up on the start-up sample after this long")
    ap.add_argument("--workers", type=int, default=16, help="concurrent requests while creating objects")
    ap.add_argument("--namespace", default="bench-scale")
    ap.add_argument("--extra-env", default="[]", help="JSON list of env entries for the operator (knobs)")
    ap.add_argument(
        "--command",
        default="",
        help="JSON list overriding the chart's operator command (e.g. to measure another checkout)",
    )
    ap.add_argument("--label", default="", help="free text recorded in the output (e.g. the git commit)")
    args = ap.parse_args()

    stack, _ = start_stack()
    from kubernetes import config

    cfg = client.Configuration()
    config.load_kube_config(config_file=stack.kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = max(args.workers, 4) + 4
    api = client.ApiClient(cfg)
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    ns = args.namespace

    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for name in ("backuppolicies", "backups", "restores"):
        stack.kubectl("wait", "--for=condition=Established", f"crd/{name}.{GROUP}", "--timeout=60s")
    for n, labels in ((LOCK_NAMESPACE, {"pod-security.kubernetes.io/enforce": "restricted"}), (ns, {})):
        with contextlib.suppress(client.ApiException):
            core.create_namespace({"metadata": {"name": n, "labels": labels}})

    op = InstalledOperator(stack, api)
    # As the e2e fixture installs it, minus the test-only knobs: the chart's defaults are what we measure.
    op.helm(
        "upgrade", "--install", RELEASE, str(REPO / "helm" / "mysql-backup-operator"),
        "--namespace", LOCK_NAMESPACE, "--wait", "--timeout", "180s",
        "--set", "image.repository=local/mysql-backup-operator", "--set", "image.tag=dev",
        "--set", f"metrics.port={op.metrics_port}", "--set", f"health.port={op.health_port}",
        "--set-json", f"extraEnv={args.extra_env}",
        *(["--set-json", f"command={args.command}"] if args.command else []),
        "--set-string", f"podAnnotations.mysqlbackup\\.dev/test-session={uuid.uuid4().hex}",
    )  # fmt: skip
    op.stop()
    log("operator scaled to 0")

    for sname, data in (
        ("db-credentials", {"password": stack.db["root_password"]}),
        (
            "s3-credentials",
            {"AWS_ACCESS_KEY_ID": stack.s3["access_key"], "AWS_SECRET_ACCESS_KEY": stack.s3["secret_key"]},
        ),
    ):
        with contextlib.suppress(client.ApiException):
            core.create_namespaced_secret(ns, {"metadata": {"name": sname}, "stringData": data})

    existing = len(custom.list_namespaced_custom_object(GROUP, VERSION, ns, "backups")["items"])
    want = args.policies * args.backups_per_policy
    create_secs = None
    if existing < want:
        log(f"creating {args.policies} policies x {args.backups_per_policy} finished Backups")
        create_secs = create_objects(api, stack, ns, args.policies, args.backups_per_policy, args.workers)
        log(f"created in {create_secs:.0f}s")
    # Leftovers of an earlier run (new Backups, their Jobs) would not be "finished": remove them.
    for b in custom.list_namespaced_custom_object(GROUP, VERSION, ns, "backups", label_selector="bench-new=true")[
        "items"
    ]:
        with contextlib.suppress(client.ApiException):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, ns, "backups", b["metadata"]["name"], {"metadata": {"finalizers": None}}
            )
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "backups", b["metadata"]["name"])
    client.BatchV1Api(api).delete_collection_namespaced_job(ns, propagation_policy="Background")

    log(f"baseline window ({args.window:.0f}s, operator down)")
    baseline = window(api, args.window, None)

    op.start()
    pid = op._pids()[0]
    log(f"operator running (pid {pid}); warm-up {args.warmup:.0f}s")
    time.sleep(args.warmup)
    log(f"measurement window ({args.window:.0f}s)")
    idle = window(api, args.window, pid)
    operator_rates = {
        k: round(v - baseline["rates"].get(k, 0.0), 3)
        for k, v in idle["rates"].items()
        if abs(v - baseline["rates"].get(k, 0.0)) >= 0.01
    }
    total = round(sum(operator_rates.values()), 2)
    log(f"idle: RSS {idle['rss_mib']} MiB, CPU {idle['cpu_percent']}% of a core, {total} req/s: {operator_rates}")

    jw = JobWatch(api, ns)
    lat: list[float] = []
    run = uuid.uuid4().hex[:5]
    for k in range(args.latency_samples):
        policy = f"p{(k * 7919) % args.policies:05d}"
        name = f"new-{run}-{k:02d}"
        t = new_backup(custom, ns, policy, name)
        with contextlib.suppress(client.ApiException):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, ns, "backups", name, {"metadata": {"labels": {"bench-new": "true"}}}
            )
        seen = jw.wait(f"backup-{name}", args.latency_timeout)
        lat.append(round(seen - t, 3) if seen else float("inf"))
        log(f"sample {k}: {lat[-1]}s")
        time.sleep(0.5)
    log(f"create -> Job: {lat}")

    # Start-up: kill the process, and create a Backup the moment the new process exists.
    for p in op._pids():
        os.kill(p, signal.SIGKILL)
    eventually(lambda: not op._pids(), timeout=30, what="operator process gone")
    new_pid = eventually(lambda: (op._pids() or [None])[0], timeout=120, interval=0.05, what="operator restarted")
    started = start_wall(new_pid)
    name = f"new-{run}-startup"
    new_backup(custom, ns, f"p{(args.latency_samples * 7919) % args.policies:05d}", name)
    with contextlib.suppress(client.ApiException):
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "backups", name, {"metadata": {"labels": {"bench-new": "true"}}}
        )
    seen = jw.wait(f"backup-{name}", args.startup_timeout)
    startup = round(seen - started, 2) if seen else None
    log(f"start-up -> Job: {startup}s")
    rss_after = rss_mib(new_pid) if Path(f"/proc/{new_pid}").exists() else None
    jw.stop.set()

    result = {
        "label": args.label,
        "policies": args.policies,
        "backups": args.policies * args.backups_per_policy,
        "create_seconds": round(create_secs, 1) if create_secs else None,
        "rss_mib": idle["rss_mib"],
        "rss_peak_mib": idle["rss_peak_mib"],
        "rss_mib_after_restart": round(rss_after, 1) if rss_after else None,
        "idle_cpu_percent": idle["cpu_percent"],
        "window_seconds": idle["seconds"],
        "operator_requests_per_second": total,
        "operator_requests_by_verb_resource": dict(sorted(operator_rates.items(), key=lambda kv: -abs(kv[1]))),
        "create_to_job_seconds": {"p50": pct(lat, 50), "p95": pct(lat, 95), "max": max(lat), "samples": lat},
        "startup_to_job_seconds": startup,
    }
    print(json.dumps(result, indent=2))
    log(
        f"RSS {result['rss_mib']} MiB (peak {result['rss_peak_mib']}), "
        f"idle CPU {result['idle_cpu_percent']}% of a core, "
        f"{total} req/s, create->Job p50 {pct(lat, 50)}s p95 {pct(lat, 95)}s, start-up->Job {startup}s"
    )


if __name__ == "__main__":
    main()
