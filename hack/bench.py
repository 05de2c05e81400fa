#!/usr/bin/env python3
"""`make bench`: the data path measured against hand-made references, in one run on the local stack.

Rows (all on the same data set, one after the other, so they share the machine's state):

  dump       mariadb-dump (the agent's flags) > /dev/null            the floor
  reference  mariadb-dump | zstd -3 -T0 | boto3 upload_fileobj      what a careful human would script
  ref. pod   the same pipeline in a pod of our image on the node      where the agent runs (its network)
  backup     a Backup CR, create -> Completed (operator + agent)    target >= 0.95x reference throughput
  zstd|mysql the stored dump, zstd -dc | mariadb, one stream        the restore reference
  restore    a Restore CR, the restore part only (after its pre-restore backup)
                                                                    target >= 1.5x the reference

For the Backup and Restore CRs it samples the agent pod's memory: the sum of the resident set of
every process of the pod (the agent and its mariadb-dump/mariadb/zstd children) every 50 ms, and
reports the highest sum seen. Targets: <= 128 MiB for both. Not part of `make test`: figures, not
assertions, and they belong in docs/performance.md ("Data path").

    .venv/bin/python hack/bench.py              # 4 tables x 2,000,000 rows, ~1.6 GB dump
    .venv/bin/python hack/bench.py --small      # 4 x 125,000 rows, ~100 MB, for quick iterations
    .venv/bin/python hack/bench.py --rows 500000 --skip restore
    .venv/bin/python hack/bench.py --small --encrypt   # backup.encryption on (age); no zstd|mysql row
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

# The agent's own mariadb-dump flags, so the references dump the same bytes as the Backup CR.
from mysql_backup_operator.agent.sqlstream import DUMP_FLAGS, PER_TABLE_DUMP_FLAGS  # noqa: E402

BENCH_DB = "bench"
TARGET_BACKUP_RATIO = 0.95
TARGET_RESTORE_SPEEDUP = 1.5
TARGET_PEAK_MIB = 128
AGENT_MARK = b"mysql-backup-agent"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- pod memory


def _ppid(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        if ppid := _ppid(int(p.name)):
            kids.setdefault(ppid, []).append(int(p.name))
    return kids


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return "?"


def _container_procs(pid: int) -> Path | None:
    """The `cgroup.procs` file of the cgroup holding `pid` (its container's, on a real node), or
    None where there is none of its own (a process kubelet): v1's pids controller or v2."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            hid, controllers, path = line.split(":", 2)
            if path in ("", "/"):
                continue
            rel = path.lstrip("/")
            if "pids" in controllers.split(","):
                candidates = [Path("/sys/fs/cgroup/pids") / rel]
            elif hid == "0":
                candidates = [Path("/sys/fs/cgroup") / rel, Path("/sys/fs/cgroup/unified") / rel]
            else:
                continue
            for c in candidates:
                if (c / "cgroup.procs").is_file():
                    return c / "cgroup.procs"
    return None


def _agent_roots(marker: bytes) -> list[int]:
    """Agent processes whose MBO_AGENT_CONFIG names our Backup/Restore (works for any kubelet)."""
    roots = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if AGENT_MARK in (p / "cmdline").read_bytes() and marker in (p / "environ").read_bytes():
                roots.append(int(p.name))
    kids = _children()
    return [r for r in roots if not any(r in kids.get(o, []) for o in roots)]


@dataclass
class PodMemory:
    """Samples the sum of RSS over an agent pod's process tree until stopped; keeps the peak.
    Forked children that have not yet run exec are not counted (see `_tree`)."""

    marker: bytes
    interval: float = 0.05
    peak_kib: int = 0
    peak_processes: int = 0
    samples: int = 0
    peak_by_process: dict[str, int] = field(default_factory=dict)  # MiB per process at the peak
    _execd: set[int] = field(default_factory=set)  # pids seen past their exec (or never forked)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _tree(self, roots: list[int]) -> list[int]:
        """The pod's processes, less any child caught between fork and exec: it still has its
        parent's command line and shares its parent's pages, so its RSS would count the agent
        twice (one run reported 166 MiB as two 78 MiB agents, at a zstd start)."""
        kids = _children()
        out, todo = [], list(roots)
        while todo:
            pid = todo.pop()
            out.append(pid)
            cmd = _cmdline(pid)
            todo.extend(k for k in kids.get(pid, []) if _cmdline(k) != cmd)
        return out

    def _run(self) -> None:
        roots: list[int] = []
        procs: Path | None = None
        while not self._stop.is_set():
            if not (roots and Path(f"/proc/{roots[0]}").exists()):
                roots, procs = _agent_roots(self.marker), None
                if roots:
                    procs = _container_procs(roots[0])
            if roots:
                pids = self._members(procs) if procs else self._tree(roots)
                rss = {p: _rss_kib(p) for p in pids}
                total = sum(rss.values())
                self.samples += 1
                if total > self.peak_kib:
                    self.peak_kib, self.peak_processes = total, len(pids)
                    self.peak_by_process = {f"{_comm(p)}[{p}]": kib // 1024 for p, kib in rss.items()}
            self._stop.wait(self.interval)

    def _members(self, procs: Path) -> list[int]:
        """The container's processes from its cgroup, less any child between fork and exec (as in
        `_tree`). Reading one cgroup file and a few per-process ones, not every process's `stat`
        on the machine, keeps the sampler's own CPU (it shares the two cores with what it
        measures) near nothing: the whole-/proc walk cost ~3 % of a core at 20 samples/s."""
        try:
            pids = [int(x) for x in procs.read_text().split()]
        except (OSError, ValueError):
            return []
        out = []
        for pid in pids:
            if pid not in self._execd:
                cmd = _cmdline(pid)
                if cmd and cmd == _cmdline(_ppid(pid)):
                    continue
                self._execd.add(pid)
            out.append(pid)
        return out

    def __enter__(self) -> PodMemory:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


# ----------------------------------------------------------------------------- set-up


@dataclass
class Bench:
    stack: Any
    env: Any  # tests.e2e.conftest.Env
    rows: int
    tables: int
    layout: str = "perTable"
    parallelism: int | None = None
    encrypted: bool = False
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def dump_flags(self) -> list[str]:
        return [*DUMP_FLAGS, *(PER_TABLE_DUMP_FLAGS if self.layout == "perTable" else ())]

    @property
    def db(self) -> dict[str, Any]:
        return dict(self.stack.db)

    @contextlib.contextmanager
    def defaults_file(self) -> Iterator[str]:
        fd, path = tempfile.mkstemp(prefix="bench-", suffix=".cnf")
        with os.fdopen(fd, "w") as f:
            f.write(
                f'[client]\nuser=root\npassword="{self.db["root_password"]}"\n'
                f"host={self.db['host']}\nport={self.db['port']}\n"
            )
        try:
            yield path
        finally:
            os.unlink(path)

    def sql(self, query: str, database: str | None = None) -> list[tuple[Any, ...]]:
        return list(self.env.sql(query, database or BENCH_DB))

    def purge_binlogs(self) -> None:
        from tests.e2e.conftest import db_connect

        conn = db_connect(self.stack)
        try:
            with conn.cursor() as cur:
                cur.execute("PURGE BINARY LOGS BEFORE NOW()")
        finally:
            conn.close()
        log("purged the server's binary logs (the restores' ROW events)")

    def generate(self) -> None:
        """4 tables of ~200-byte rows, like the issue's data set, generated inside the server."""
        from tests.e2e.conftest import db_connect

        t0 = time.monotonic()
        conn = db_connect(self.stack)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{BENCH_DB}`")
                cur.execute(f"CREATE DATABASE `{BENCH_DB}` CHARACTER SET utf8mb4")
                cur.execute(f"USE `{BENCH_DB}`")
                cur.execute("SET SESSION unique_checks=0, foreign_key_checks=0")
                for i in range(1, self.tables + 1):
                    cur.execute(
                        f"CREATE TABLE t{i} (id INT PRIMARY KEY, a CHAR(32), b CHAR(32), c CHAR(32), d CHAR(64))"
                    )
                step = 500_000
                for lo in range(1, self.rows + 1, step):
                    hi = min(self.rows, lo + step - 1)
                    cur.execute(
                        "INSERT INTO t1 SELECT seq, MD5(seq), MD5(seq + 1), MD5(seq * 7), SHA2(seq, 256) "
                        f"FROM seq_{lo}_to_{hi}"
                    )
                for i in range(2, self.tables + 1):
                    # Different bytes per table (so nothing compresses across tables): shifted ids.
                    cur.execute(
                        f"INSERT INTO t{i} SELECT id, MD5(id + {i * 7919}), a, b, d FROM t1"
                        if i % 2 == 0
                        else f"INSERT INTO t{i} SELECT id, c, MD5(id * {i}), a, SHA2(id + {i}, 256) FROM t1"
                    )
        finally:
            conn.close()
        log(f"generated {self.tables} x {self.rows:,} rows in {time.monotonic() - t0:.1f}s")

    # ------------------------------------------------------------------------- rows

    def run_dump(self) -> None:
        with self.defaults_file() as cnf:
            argv = ["mariadb-dump", f"--defaults-extra-file={cnf}", *self.dump_flags, "--databases", BENCH_DB]
            t0 = time.monotonic()
            # wc -c counts the bytes at pipe speed; the dump itself is what is timed.
            counter = subprocess.Popen(["wc", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert counter.stdin is not None
            dump = subprocess.Popen(argv, stdout=counter.stdin)
            counter.stdin.close()
            rc = dump.wait()
            assert counter.stdout is not None
            out = counter.stdout.read()
            counter.wait()
            elapsed = time.monotonic() - t0
        if rc != 0:
            raise SystemExit(f"mariadb-dump exited {rc}")
        self.results["dump"] = {"seconds": elapsed, "bytes": int(out.split()[0])}
        log(f"dump > /dev/null: {elapsed:.1f}s, {int(out.split()[0]) / 1e6:.0f} MB")

    def run_reference(self) -> None:
        from boto3.s3.transfer import TransferConfig

        from tests.e2e.conftest import s3_client

        s3 = s3_client(self.stack)
        key = f"reference/{uuid.uuid4().hex[:8]}.sql.zst"
        with self.defaults_file() as cnf:
            argv = ["mariadb-dump", f"--defaults-extra-file={cnf}", *self.dump_flags, "--databases", BENCH_DB]
            t0 = time.monotonic()
            dump = subprocess.Popen(argv, stdout=subprocess.PIPE)
            assert dump.stdout is not None
            zstd = subprocess.Popen(["zstd", "-3", "-T0", "-q", "-c"], stdin=dump.stdout, stdout=subprocess.PIPE)
            dump.stdout.close()
            assert zstd.stdout is not None
            s3.upload_fileobj(zstd.stdout, self.env.bucket, key, Config=TransferConfig())
            rcs = (dump.wait(), zstd.wait())
            elapsed = time.monotonic() - t0
        if rcs != (0, 0):
            raise SystemExit(f"reference pipeline exit codes {rcs}")
        stored = int(s3.head_object(Bucket=self.env.bucket, Key=key)["ContentLength"])
        s3.delete_object(Bucket=self.env.bucket, Key=key)
        self.results["reference"] = {"seconds": elapsed, "stored": stored}
        log(f"reference dump|zstd|upload: {elapsed:.1f}s, {stored / 1e6:.0f} MB stored")

    def run_reference_in_pod(self, index: int = 0) -> None:
        """The same hand-made pipeline, run in a pod of our image on the node: where the agent runs.

        On the real node a pod reaches MariaDB and MinIO through its own network namespace (veth,
        bridge, kube-proxy's NAT), which the host's reference does not pay; this row measures the
        pipeline in the agent's place. Two figures: its own elapsed time (printed by the pipeline)
        and pod create -> container terminated (what the Backup CR's row also includes)."""
        from kubernetes import client

        name = f"bench-reference-{index}"
        db, s3 = self.db, self.stack.s3
        script = "\n".join(
            [
                "import subprocess, sys, time, boto3",
                "from boto3.s3.transfer import TransferConfig",
                "from botocore.config import Config",
                "import os",
                "cnf = '/tmp/ref.cnf'",
                "open(cnf, 'w').write('[client]\\nuser=root\\npassword=\"%s\"\\nhost=%s\\nport=%s\\n' % (",
                "    os.environ['PW'], os.environ['DBHOST'], os.environ['DBPORT']))",
                "s3 = boto3.client('s3', endpoint_url=os.environ['S3'], region_name=os.environ['REGION'],",
                "    aws_access_key_id=os.environ['AK'], aws_secret_access_key=os.environ['SK'],",
                "    config=Config(s3={'addressing_style': 'path'}))",
                "t0 = time.monotonic()",
                "d = subprocess.Popen(['mariadb-dump', '--defaults-extra-file=' + cnf, *sys.argv[1:]],",
                "    stdout=subprocess.PIPE)",
                "z = subprocess.Popen(['zstd', '-3', '-T0', '-q', '-c'], stdin=d.stdout, stdout=subprocess.PIPE)",
                "d.stdout.close()",
                "s3.upload_fileobj(z.stdout, os.environ['BUCKET'], os.environ['KEY'], Config=TransferConfig())",
                "rcs = (d.wait(), z.wait())",
                "print('ELAPSED %.3f %s' % (time.monotonic() - t0, rcs), flush=True)",
                "sys.exit(1 if any(rcs) else 0)",
            ]
        )
        endpoint = str(s3["endpoint"]).replace("127.0.0.1", self.stack.host).replace("localhost", self.stack.host)
        secret = {
            "PW": db["root_password"],
            "DBHOST": self.stack.host if db["host"] in ("127.0.0.1", "localhost") else db["host"],
            "DBPORT": str(db["port"]),
            "S3": endpoint,
            "REGION": s3["region"],
            "AK": s3["access_key"],
            "SK": s3["secret_key"],
        }
        # Credentials through a Secret, as the agent's own pods get them: never in the pod spec.
        self.env.secret("bench-reference", secret)
        env = {
            "BUCKET": self.env.bucket,
            "KEY": f"reference-pod/{uuid.uuid4().hex[:8]}.sql.zst",
            "HOME": "/tmp",
        }
        restricted = {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "reference",
                        "image": self.stack.image,
                        "imagePullPolicy": "Never",
                        "command": ["python3", "-c", script, *self.dump_flags, "--databases", BENCH_DB],
                        "env": [{"name": k, "value": v} for k, v in env.items()],
                        "envFrom": [{"secretRef": {"name": "bench-reference"}}],
                        "securityContext": restricted,
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        }
        core = self.env.core
        t0 = time.monotonic()
        core.create_namespaced_pod(self.env.namespace, pod)
        deadline = t0 + 3600
        terminated = None
        while time.monotonic() < deadline:
            st = core.read_namespaced_pod(name, self.env.namespace).status
            term = next((c.state.terminated for c in st.container_statuses or [] if c.state.terminated), None)
            if term is not None:
                terminated = term
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        if terminated is None or terminated.exit_code != 0:
            raise SystemExit(f"reference pod {name} did not succeed: {terminated}")
        logs = str(core.read_namespaced_pod_log(name, self.env.namespace))
        inner = float(next(ln.split()[1] for ln in logs.splitlines() if ln.startswith("ELAPSED")))
        with contextlib.suppress(client.ApiException):
            core.delete_namespaced_pod(name, self.env.namespace, grace_period_seconds=0)
        while time.monotonic() < deadline:  # its teardown is not the next row's
            try:
                core.read_namespaced_pod(name, self.env.namespace)
            except client.ApiException:
                break
            time.sleep(0.2)
        self.results["referencePod"] = {"seconds": elapsed, "inner": inner}
        log(f"reference in a pod: {inner:.1f}s in the pod, {elapsed:.1f}s pod create -> terminated")

    def _wait(self, plural: str, name: str, until: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Waits on a watch of the one object rather than polling it: the end is seen when it
        happens (a 0.2 s poll added 0.1 s on average to each row), and the bench's own requests,
        which the hand-made references do not pay, stay off the two cores they share."""
        from kubernetes import watch
        from kubernetes.client import ApiException

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.env.get(plural, name)
            st = obj.get("status") or {}
            if until(st):
                return dict(st)
            w = watch.Watch()
            try:
                for ev in w.stream(
                    self.env.custom.list_namespaced_custom_object,
                    "mysqlbackup.dev",
                    "v1alpha1",
                    self.env.namespace,
                    plural,
                    field_selector=f"metadata.name={name}",
                    resource_version=obj["metadata"]["resourceVersion"],
                    timeout_seconds=max(1, min(300, int(deadline - time.monotonic()))),
                ):
                    st = ev["object"].get("status") or {}
                    if until(st):
                        return dict(st)
            except ApiException as e:  # 410 Gone: the next round starts from a fresh read
                if e.status != 410:
                    raise
            finally:
                w.stop()
        raise SystemExit(f"{plural}/{name} did not finish in {timeout}s")

    def run_backup(self, name: str = "bench-backup") -> None:
        marker = f'"name":"{name}"'.encode()
        with PodMemory(marker) as mem:
            t0, created = time.monotonic(), datetime.datetime.now()
            self.env.backup(name)
            st = self._wait("backups", name, lambda s: s.get("phase") in ("Completed", "Failed"), 3600)
            elapsed = time.monotonic() - t0
        if st["phase"] != "Completed":
            raise SystemExit(f"Backup failed: {st.get('reason')}: {st.get('message')}")
        agent_log = self.agent_log(str(st.get("jobName") or ""))
        self.results["backup"] = {
            "seconds": elapsed,
            "agentSeconds": agent_seconds(agent_log, "backup"),
            "statusSeconds": st.get("durationSeconds"),
            "stored": st.get("storedBytes"),
            "bytes": st.get("sizeBytes"),
            "peakMiB": mem.peak_mib,
            "processes": mem.peak_processes,
            "samples": mem.samples,
            "agentLog": agent_log,
        }
        log(f"Backup CR: created {created:%H:%M:%S.%f}"[:-3] + f", seen Completed {elapsed:.2f}s later")
        log(f"Backup CR: {elapsed:.1f}s, peak {mem.peak_mib:.0f} MiB: {mem.peak_by_process}")

    def agent_log(self, job_name: str) -> list[str]:
        """The agent's own log lines (its phase timings: metadata, stream, upload completion),
        read before the namespace goes; printed so a slow row can be told apart by phase."""
        lines: list[str] = []
        with contextlib.suppress(Exception):
            pods = self.env.core.list_namespaced_pod(
                self.env.namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
            ).items
            for p in pods:
                text = self.env.core.read_namespaced_pod_log(p.metadata.name, self.env.namespace, container="agent")
                lines += [ln for ln in str(text).splitlines() if " INFO " in ln or " ERROR " in ln]
        for ln in lines:
            log(f"  agent: {ln}")
        return lines

    def run_zstd_mysql(self, backup: str = "bench-backup") -> None:
        from tests.e2e.conftest import s3_client

        st = self.env.get("backups", backup)["status"]
        s3 = s3_client(self.stack)
        manifest = json.loads(s3.get_object(Bucket=self.env.bucket, Key=st["storage"]["manifestKey"])["Body"].read())
        # A perTable backup's objects, in order, are zstd frames that decompress to a complete,
        # sequential dump: the fair single-stream reference for its parallel restore.
        keys = [o["key"] for o in manifest.get("objects") or [{"key": manifest["object"]}]]
        with self.defaults_file() as cnf:
            t0 = time.monotonic()
            zstd = subprocess.Popen(["zstd", "-dc", "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert zstd.stdin is not None
            mysql = subprocess.Popen(
                ["mariadb", f"--defaults-extra-file={cnf}", "--binary-mode", "--max-allowed-packet=1G"],
                stdin=zstd.stdout,
            )
            assert zstd.stdout is not None
            zstd.stdout.close()
            for key in keys:
                body = s3.get_object(Bucket=self.env.bucket, Key=key)["Body"]
                for chunk in iter(lambda: body.read(1 << 20), b""):  # noqa: B023 - used at once
                    zstd.stdin.write(chunk)
            zstd.stdin.close()
            rcs = (zstd.wait(), mysql.wait())
            elapsed = time.monotonic() - t0
        if rcs != (0, 0):
            raise SystemExit(f"zstd -dc | mariadb exit codes {rcs}")
        self.results["zstd|mysql"] = {"seconds": elapsed}
        log(f"zstd -dc | mariadb: {elapsed:.1f}s")

    def run_restore(self, backup: str = "bench-backup", name: str = "bench-restore") -> None:
        marker = f'"name":"{name}"'.encode()
        self.env.restore(name, backup, **({"parallelism": self.parallelism} if self.parallelism else {}))
        self._wait("restores", name, lambda s: s.get("phase") in ("Restoring", "Completed", "Failed"), 3600)
        with PodMemory(marker) as mem:
            t0 = time.monotonic()
            st = self._wait("restores", name, lambda s: s.get("phase") in ("Completed", "Failed"), 3600)
            elapsed = time.monotonic() - t0
        if st["phase"] != "Completed":
            raise SystemExit(f"Restore failed: {st.get('reason')}: {st.get('message')}")
        agent_log = self.agent_log(str(st.get("jobName") or ""))
        self.results["restore"] = {
            "seconds": elapsed,
            "agentSeconds": agent_seconds(agent_log, "restore"),
            "streams": next((m.group(1) for m in map(STREAMS.search, agent_log) if m), None),
            "peakMiB": mem.peak_mib,
            "processes": mem.peak_processes,
            "agentLog": agent_log,
        }
        log(f"Restore CR (restore part): {elapsed:.1f}s, peak {mem.peak_mib:.0f} MiB: {mem.peak_by_process}")

    # ------------------------------------------------------------------------- report

    def table(self) -> str:
        r = self.results
        rows: list[tuple[str, str, str, str, str]] = []
        raw = r.get("dump", {}).get("bytes") or r.get("backup", {}).get("bytes") or 0

        def mbps(sec: float | None) -> str:
            return f"{raw / sec / 1e6:.0f} MB/s" if raw and sec else ""

        ref = r.get("reference", {}).get("seconds")
        single = r.get("zstd|mysql", {}).get("seconds")
        if "dump" in r:
            rows.append(("mariadb-dump > /dev/null", f"{r['dump']['seconds']:.1f}", mbps(r["dump"]["seconds"]), "", ""))
        if ref:
            rows.append(
                (
                    labelled("reference dump|zstd -3 -T0|boto3", r["reference"]),
                    f"{ref:.1f}",
                    mbps(ref),
                    "",
                    "1.00x (by definition)",
                )
            )
        pod_ref = r.get("referencePod", {})
        if pod_ref:
            label = labelled("reference, in a pod on the node", pod_ref)
            rows.append(("  " + label, f"{pod_ref['inner']:.1f}", mbps(pod_ref["inner"]), "", "pipeline's own time"))
            rows.append(("    pod create -> terminated", f"{pod_ref['seconds']:.1f}", mbps(pod_ref["seconds"]), "", ""))
        if "backup" in r:
            b = r["backup"]
            ratio = f"{ref / b['seconds']:.2f}x (target >= {TARGET_BACKUP_RATIO})" if ref else ""
            mem = f"{b['peakMiB']:.0f} MiB / {b['processes']} procs (target <= {TARGET_PEAK_MIB})"
            rows.append(
                (labelled("Backup CR create -> Completed", b), f"{b['seconds']:.1f}", mbps(b["seconds"]), mem, ratio)
            )
            if pod_ref:
                rows.append(
                    (
                        "  vs the reference in a pod",
                        "",
                        "",
                        "",
                        f"{pod_ref['seconds'] / b['seconds']:.2f}x (create -> end, both)",
                    )
                )
            if b.get("agentSeconds"):
                inner = f"{ref / b['agentSeconds']:.2f}x" if ref else ""
                if pod_ref:
                    inner += f", {pod_ref['inner'] / b['agentSeconds']:.2f}x vs in-pod pipeline"
                rows.append(("  the agent's own time (its log)", f"{b['agentSeconds']:.1f}", "", "", inner))
            if r.get("reference", {}).get("stored") and b.get("stored"):
                rows.append(
                    (
                        "  stored bytes vs reference",
                        "",
                        f"{b['stored'] / 1e6:.0f} MB",
                        "",
                        f"{b['stored'] / r['reference']['stored']:.3f}x (target <= 1.0)",
                    )
                )
        if single:
            rows.append(
                (
                    labelled("zstd -dc | mariadb (1 stream)", r["zstd|mysql"]),
                    f"{single:.1f}",
                    mbps(single),
                    "",
                    "1.00x (by definition)",
                )
            )
        if "restore" in r:
            x = r["restore"]
            speed = f"{single / x['seconds']:.2f}x (target >= {TARGET_RESTORE_SPEEDUP})" if single else ""
            mem = f"{x['peakMiB']:.0f} MiB / {x['processes']} procs (target <= {TARGET_PEAK_MIB})"
            rows.append(
                (labelled("Restore CR, restore part", x), f"{x['seconds']:.1f}", mbps(x["seconds"]), mem, speed)
            )
            if x.get("agentSeconds"):
                inner = f"{single / x['agentSeconds']:.2f}x" if single else ""
                rows.append(("  the agent's own time (its log)", f"{x['agentSeconds']:.1f}", "", "", inner))
        head = ("step", "seconds", "throughput", "pod peak memory", "vs reference")
        widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(5)]
        lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows]]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        size = f"{self.tables} tables x {self.rows:,} rows, dump {raw / 1e6:.0f} MB" if raw else ""
        streams = self.parallelism or (self.results.get("restore") or {}).get("streams") or "default"
        size += f", layout {self.layout}, restore streams {streams}"
        size += ", encrypted (age)" if self.encrypted else ""
        return f"\n{size}\n" + "\n".join(lines)


def labelled(name: str, result: dict[str, Any]) -> str:
    """A row's name, saying when its figure is the median of several runs."""
    runs = result.get("runs") or []
    return f"{name} (median of {len(runs)})" if len(runs) > 1 else name


STREAMS = re.compile(r"(\d+) streams\)")
AGENT_DONE = re.compile(r"INFO (backup|restore) completed in ([\d.]+)s")


def agent_seconds(agent_log: list[str], op: str) -> float | None:
    """The agent's own time, from its last log line ("backup completed in 15.9s"): the Backup's
    status.durationSeconds is the operator's, from the Job's start to the exit's report, and a
    Restore's counts its safety backup too, so neither is the agent's."""
    for ln in agent_log:
        m = AGENT_DONE.search(ln)
        if m and m.group(1) == op:
            return float(m.group(2))
    return None


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time (the lower middle one for an even count)."""
    return dict(sorted(runs, key=lambda r: float(r["seconds"]))[(len(runs) - 1) // 2])


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run, every run's time, and for CR rows the highest pod peak of all runs."""
    out = {**median(runs), "runs": [r["seconds"] for r in runs]}
    if "peakMiB" in runs[0]:
        peak = max(runs, key=lambda r: float(r["peakMiB"]))
        out |= {"peakMiB": peak["peakMiB"], "processes": peak["processes"]}
    return out


def alternate(bench: Bench, steps: list[tuple[str, str, Callable[[int], None]]], *, rounds: int) -> None:
    """Runs the steps one after the other, `rounds` times, and keeps each one's summary()."""
    runs: dict[str, list[dict[str, Any]]] = {key: [] for _, key, _ in steps}
    for i in range(rounds):
        for _, key, run in steps:
            quiesce()
            run(i)
            runs[key].append(bench.results[key])
    for key, results in runs.items():
        if results:
            bench.results[key] = summary(results)


def _cpu_times() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of all CPUs since boot."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return f[3] + f[4], sum(f)


def quiesce(*, idle: float = 0.85, window: float = 0.5, timeout: float = 15.0) -> None:
    """Waits for a `window` in which the machine's CPUs were at least `idle` idle (or `timeout`).
    A row used to start while the previous one's leftovers still ran: the kubelet tearing down the
    reference pod, MinIO, the operator's follow-up of a finished Backup. Every row, references
    included, now starts on an idle machine."""
    deadline = time.monotonic() + timeout
    before = _cpu_times()
    while time.monotonic() < deadline:
        time.sleep(window)
        now = _cpu_times()
        if now[1] > before[1] and (now[0] - before[0]) / (now[1] - before[1]) >= idle:
            return
        before = now
    log(f"the machine did not go {idle:.0%} idle within {timeout:.0f}s; measuring anyway")


def settle_operator(operator: Any, *, quiet: float = 3.0, timeout: float = 120) -> None:
    """Waits until the operator pod `install` just started is the only one (the previous one has
    gone) and has been running for `quiet` seconds. Each bench run starts a new operator pod, and
    the first Backup used to be created while the old pod was still stopping and the new one still
    starting: their CPU and the operator's start-up landed in the first backup's row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = operator.pods()
        if len(pods) == 1 and (cs := (pods[0].status.container_statuses or [None])[0]) and cs.state.running:
            started = cs.state.running.started_at.timestamp()
            if time.time() - started >= quiet:
                return
        time.sleep(0.5)
    log("the operator did not settle; measuring anyway")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000, help="rows per table (default 2,000,000)")
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--small", action="store_true", help="4 x 125,000 rows (~100 MB dump) for quick iterations")
    ap.add_argument("--reuse-data", action="store_true", help="keep an existing `bench` database of the right size")
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["dump", "reference", "reference-pod", "backup", "zstd-mysql", "restore"],
    )
    ap.add_argument("--layout", choices=["single", "perTable"], default="perTable", help="the policy's backup.layout")
    ap.add_argument("--parallelism", type=int, help="the Restore's spec.parallelism (default: the server's CPUs, 2..8)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="alternate reference and Backup CR, then zstd|mysql and Restore CR, N times (medians)",
    )
    ap.add_argument("--json", help="also write the raw figures to this file")
    ap.add_argument("--encrypt", action="store_true", help="policy with backup.encryption (a fresh age key)")
    ap.add_argument(
        "--compression-level",
        type=int,
        help="the policy's backup.compressionLevel (default: unset, the agent chooses per object)",
    )
    args = ap.parse_args()
    rows = 125_000 if args.small else args.rows

    from kubernetes import client, config

    from tests.e2e.conftest import LOCK_NAMESPACE, Env, InstalledOperator, s3_client
    from tests.stackenv import start_stack

    stack, _ = start_stack()
    cfg = client.Configuration()
    config.load_kube_config(config_file=stack.kubeconfig, client_configuration=cfg)
    api = client.ApiClient(cfg)
    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    core = client.CoreV1Api(api)
    for ns in (LOCK_NAMESPACE,):
        with contextlib.suppress(client.ApiException):
            core.create_namespace(
                {"metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
            )
    operator = InstalledOperator(stack, api)
    operator.install()
    settle_operator(operator)
    namespace = "bench-" + uuid.uuid4().hex[:6]
    core.create_namespace(
        {"metadata": {"name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", namespace)
            break
        except client.ApiException:
            time.sleep(0.2)
    bucket = "bk-" + namespace
    s3_client(stack).create_bucket(Bucket=bucket)
    env = Env(stack=stack, api=api, namespace=namespace, database=BENCH_DB, bucket=bucket)
    bench = Bench(
        stack=stack,
        env=env,
        rows=rows,
        tables=args.tables,
        layout=args.layout,
        parallelism=args.parallelism,
        encrypted=args.encrypt,
    )
    try:
        have: list[int] = []
        if args.reuse_data:
            # Every table: an interrupted single-stream restore leaves the first ones whole.
            with contextlib.suppress(Exception):
                have = [int(bench.sql(f"SELECT COUNT(*) FROM t{i}")[0][0]) for i in range(1, args.tables + 1)]
        if have != [rows] * args.tables:
            bench.generate()
        encryption: dict[str, Any] = {}
        if args.encrypt:
            import pyrage

            env.secret("bench-key", {"age.key": str(pyrage.x25519.Identity.generate())})
            encryption = {"encryption": {"keySecretRef": {"name": "bench-key"}}}
            # The hand-made restore reference reads plain zstd objects; an encrypted run has none.
            args.skip.append("zstd-mysql")
        env.policy(
            database={"databases": [BENCH_DB]},
            backup={
                "compression": "zstd",
                "layout": args.layout,
                **encryption,
                **({"compressionLevel": args.compression_level} if args.compression_level else {}),
            },
            jobTemplate={"activeDeadlineSeconds": 3600},
        )
        if "dump" not in args.skip:
            bench.run_dump()
        # On a shared machine the load drifts: each reference alternates with the CR it is the
        # yardstick for, and the medians are reported.
        backup_side: list[tuple[str, str, Callable[[int], None]]] = [
            ("reference", "reference", lambda i: bench.run_reference()),
            ("reference-pod", "referencePod", bench.run_reference_in_pod),
            ("backup", "backup", lambda i: bench.run_backup("bench-backup" if i == 0 else f"bench-backup-{i + 1}")),
        ]
        restore_side: list[tuple[str, str, Callable[[int], None]]] = [
            ("zstd-mysql", "zstd|mysql", lambda i: bench.run_zstd_mysql()),
            (
                "restore",
                "restore",
                lambda i: bench.run_restore(name=f"bench-restore-{i + 1}" if i else "bench-restore"),
            ),
        ]
        for steps in (backup_side, restore_side):
            alternate(bench, [s for s in steps if s[0] not in args.skip], rounds=args.repeat)
    finally:
        # Backups first, while their credentials Secret still exists, so their objects are deleted.
        with contextlib.suppress(Exception):
            for b in env.list("backups"):
                env.custom.delete_namespaced_custom_object(
                    "mysqlbackup.dev", "v1alpha1", namespace, "backups", b["metadata"]["name"]
                )
            deadline = time.monotonic() + 120
            while env.list("backups") and time.monotonic() < deadline:
                time.sleep(1)
        with contextlib.suppress(Exception):
            core.delete_namespace(namespace, propagation_policy="Background")
        # Every restore here writes a ROW binlog of the whole data set (~2 GB): a few runs filled
        # a 250 GB disk's free space and the node went into DiskPressure. Nothing reads them.
        with contextlib.suppress(Exception):
            bench.purge_binlogs()
    print(bench.table())
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "tables": args.tables, **bench.results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
