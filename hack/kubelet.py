#!/usr/bin/env python3
"""A process kubelet: a real Node whose pods run as local processes.

It exists so that Jobs created by the real Job controller really execute on a machine with no
container runtime. It registers a Node, keeps its Lease and Ready condition fresh, and runs the
containers of every pod bound to it as processes, each in a private mount namespace where the
pod's volumes are bind-mounted at their mountPaths. The image is never pulled: a container's
command and args run from PATH.

Deliberate gaps (documented in docs/local-stack.md): no image filesystem, no network namespace
(every pod shares the host's loopback), no cgroup limits, and runAsUser is recorded, not applied.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.server
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

LOG = logging.getLogger("kubelet")
KUBE_VERSION = os.environ.get("MBO_KUBE_VERSION", "v1.35.4")
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
MAX_TERMINATION_MESSAGE = 4096
# Where a container's mount namespace stages its volume sources (a tmpfs private to it).
STAGE_DIR = "/var/lib/mbo-kubelet-stage"
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ts(t: dt.datetime | None = None) -> str:
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as written, `$$` escapes."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return VAR_REF.sub(repl, s)


class PodConfigError(Exception):
    """A pod cannot start yet (missing Secret, ConfigMap...): retried, like the real kubelet."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class ContainerRun:
    name: str
    spec: dict[str, Any]
    restart_count: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False


class PodWorker(threading.Thread):
    """Drives one pod from scheduled to finished; owns its processes."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.k = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = kubelet.root / "pods" / self.uid
        self.stop_event = threading.Event()
        self.grace: float = 30.0
        self.lock = threading.Lock()
        self.init_runs = [ContainerRun(c["name"], c) for c in pod["spec"].get("initContainers") or []]
        self.runs = [ContainerRun(c["name"], c) for c in pod["spec"]["containers"]]
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time = ts()
        self.initialized = not self.init_runs
        self.volumes: dict[str, Path] = {}
        self.done = False

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self, grace: float) -> None:
        self.grace = max(0.0, grace)
        self.stop_event.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            LOG.exception("pod %s/%s: worker crashed", self.ns, self.name)
            self.phase, self.reason, self.message = "Failed", "KubeletError", "process kubelet error"
            self._kill_all(0)
            self._push_status()
        finally:
            self.done = True
            if self.stop_event.is_set():
                self._finalize_deletion()

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._push_status()
        deadline = self._active_deadline()
        while not self.stop_event.is_set():
            try:
                self._setup_volumes()
                break
            except PodConfigError as e:
                self.k.event(self.pod, "Warning", "FailedMount", e.message)
                for r in self.init_runs + self.runs:
                    r.state = {"waiting": {"reason": "ContainerCreating", "message": e.message}}
                self._push_status()
                self.stop_event.wait(3)
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for run in self.init_runs:
            while not self.stop_event.is_set():
                code = self._run_to_completion(run, deadline)
                if code == 0:
                    break
                if policy == "Never" or code is None:
                    self._finish_failed("Init container failed" if code is not None else None)
                    return
                self._backoff(run)
            if self.stop_event.is_set():
                return
        self.initialized = True
        if self.stop_event.is_set():
            return
        for run in self.runs:
            self._start(run)
        self.phase = "Running"
        self._push_status()
        self._supervise(policy, deadline)

    def _active_deadline(self) -> float | None:
        ads = self.pod["spec"].get("activeDeadlineSeconds")
        return time.monotonic() + float(ads) if ads else None

    def _supervise(self, policy: str, deadline: float | None) -> None:
        while True:
            if self.stop_event.is_set():
                return
            if deadline and time.monotonic() > deadline:
                self._kill_all(self.grace)
                self.phase, self.reason = "Failed", "DeadlineExceeded"
                self.message = "Pod was active on the node longer than the specified deadline"
                self._push_status()
                return
            changed = False
            for run in self.runs:
                if run.proc is not None and run.proc.poll() is not None:
                    self._record_exit(run)
                    changed = True
                    code = run.state["terminated"]["exitCode"]
                    if policy == "Always" or (policy == "OnFailure" and code != 0):
                        self._push_status()
                        self._backoff(run)
                        if self.stop_event.is_set():
                            return
                        self._start(run)
            if changed:
                self._push_status()
            if all(r.proc is None and "terminated" in r.state for r in self.runs):
                codes = [r.state["terminated"]["exitCode"] for r in self.runs]
                self.phase = "Succeeded" if all(c == 0 for c in codes) else "Failed"
                self._push_status()
                return
            self.stop_event.wait(0.3)

    def _backoff(self, run: ContainerRun) -> None:
        delay = min(10 * (2 ** max(0, run.restart_count - 1)), 300)
        run.restart_count += 1
        run.last_state = dict(run.state)
        run.state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {delay}s restarting"}}
        self._push_status()
        self.stop_event.wait(delay)

    def _finish_failed(self, message: str | None) -> None:
        self.phase = "Failed"
        self.message = message
        for r in self.runs:
            r.state = {"waiting": {"reason": "PodInitializing"}}
        self._push_status()

    def _run_to_completion(self, run: ContainerRun, deadline: float | None) -> int | None:
        self._start(run)
        self._push_status()
        while run.proc is not None and run.proc.poll() is None:
            if self.stop_event.is_set():
                return None
            if deadline and time.monotonic() > deadline:
                self._kill_all(self.grace)
                return None
            time.sleep(0.2)
        if run.proc is not None:
            self._record_exit(run)
        self._push_status()
        term = run.state.get("terminated", {})
        return int(term.get("exitCode", 1))

    # ------------------------------------------------------------------ volumes and env

    def _setup_volumes(self) -> None:
        vdir = self.dir / "volumes"
        vdir.mkdir(exist_ok=True)
        for vol in self.pod["spec"].get("volumes") or []:
            name = vol["name"]
            target = vdir / name
            if "hostPath" in vol:
                self.volumes[name] = Path(vol["hostPath"]["path"])
                continue
            if name in self.volumes:
                continue
            target.mkdir(exist_ok=True)
            if "emptyDir" in vol:
                target.chmod(0o777)
            elif "secret" in vol:
                src = vol["secret"]
                data = self._secret_data(src["secretName"], optional=bool(src.get("optional")))
                self._write_items(target, data, src.get("items"), src.get("defaultMode", 0o644))
            elif "configMap" in vol:
                src = vol["configMap"]
                data = self._configmap_data(src["name"], optional=bool(src.get("optional")))
                self._write_items(target, data, src.get("items"), src.get("defaultMode", 0o644))
            elif "projected" in vol:
                self._projected(target, vol["projected"])
            elif "downwardAPI" in vol:
                for item in vol["downwardAPI"].get("items") or []:
                    self._write_file(target / item["path"], self._field(item["fieldRef"]["fieldPath"]).encode(), 0o644)
            else:
                raise PodConfigError("UnsupportedVolume", f"volume {name!r}: type not supported by process kubelet")
            self.volumes[name] = target

    def _projected(self, target: Path, proj: dict[str, Any]) -> None:
        mode = proj.get("defaultMode", 0o644)
        for src in proj.get("sources") or []:
            if "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                token = self.k.token_for(self.pod, sat.get("expirationSeconds", 3607), sat.get("audience"))
                self._write_file(target / sat["path"], token.encode(), mode)
            elif "configMap" in src:
                s = src["configMap"]
                self._write_items(
                    target, self._configmap_data(s["name"], bool(s.get("optional"))), s.get("items"), mode
                )
            elif "secret" in src:
                s = src["secret"]
                self._write_items(target, self._secret_data(s["name"], bool(s.get("optional"))), s.get("items"), mode)
            elif "downwardAPI" in src:
                for item in src["downwardAPI"].get("items") or []:
                    self._write_file(target / item["path"], self._field(item["fieldRef"]["fieldPath"]).encode(), mode)

    def _write_items(self, target: Path, data: dict[str, bytes], items: list[dict[str, Any]] | None, mode: int) -> None:
        if items:
            for it in items:
                if it["key"] not in data:
                    raise PodConfigError("FailedMount", f"key {it['key']!r} not found")
                self._write_file(target / it["path"], data[it["key"]], it.get("mode", mode))
        else:
            for k, v in data.items():
                self._write_file(target / k, v, mode)

    @staticmethod
    def _write_file(path: Path, data: bytes, mode: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(path)

    def _secret_data(self, name: str, optional: bool) -> dict[str, bytes]:
        try:
            s = self.k.core.read_namespaced_secret(name, self.ns)
        except ApiException as e:
            if e.status == 404 and optional:
                return {}
            raise PodConfigError("FailedMount", f'secret "{name}" not found') from None
        return {k: base64.b64decode(v) for k, v in (s.data or {}).items()}

    def _configmap_data(self, name: str, optional: bool) -> dict[str, bytes]:
        try:
            cm = self.k.core.read_namespaced_config_map(name, self.ns)
        except ApiException as e:
            if e.status == 404 and optional:
                return {}
            raise PodConfigError("FailedMount", f'configmap "{name}" not found') from None
        out = {k: v.encode() for k, v in (cm.data or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return out

    def _field(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        if path in ("metadata.labels", "metadata.annotations"):
            d = meta.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
        raise PodConfigError("CreateContainerConfigError", f"unsupported fieldPath {path}")

    def _env(self, c: dict[str, Any]) -> dict[str, str]:
        api_port = str(self.k.apiserver_port)
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOSTNAME": self.name,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": api_port,
            "KUBERNETES_SERVICE_PORT_HTTPS": api_port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{api_port}",
        }
        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            if "secretRef" in ef:
                ref = ef["secretRef"]
                data = self._secret_data(ref["name"], bool(ref.get("optional")))
            else:
                ref = ef["configMapRef"]
                data = self._configmap_data(ref["name"], bool(ref.get("optional")))
            for k, v in data.items():
                env[prefix + k] = v.decode(errors="replace")
        for e in c.get("env") or []:
            name = e["name"]
            if "value" in e:
                env[name] = expand(e.get("value") or "", env)
                continue
            vf = e.get("valueFrom") or {}
            if "secretKeyRef" in vf:
                ref = vf["secretKeyRef"]
                try:
                    data = self._secret_data(ref["name"], bool(ref.get("optional")))
                except PodConfigError:
                    raise PodConfigError("CreateContainerConfigError", f'secret "{ref["name"]}" not found') from None
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise PodConfigError(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in Secret {self.ns}/{ref['name']}",
                    )
                env[name] = data[ref["key"]].decode(errors="replace")
            elif "configMapKeyRef" in vf:
                ref = vf["configMapKeyRef"]
                data = self._configmap_data(ref["name"], bool(ref.get("optional")))
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise PodConfigError(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in ConfigMap {self.ns}/{ref['name']}",
                    )
                env[name] = data[ref["key"]].decode(errors="replace")
            elif "fieldRef" in vf:
                env[name] = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                env[name] = "0"
        return env

    # ------------------------------------------------------------------ processes

    def _start(self, run: ContainerRun) -> None:
        c = run.spec
        cdir = self.dir / "containers" / run.name
        cdir.mkdir(parents=True, exist_ok=True)
        term_file = cdir / f"termination-log.{run.restart_count}"
        term_file.write_bytes(b"")
        term_file.chmod(0o666)
        try:
            env = self._env(c)
        except PodConfigError as e:
            run.state = {"waiting": {"reason": e.reason, "message": e.message}}
            run.proc = None
            self._push_status()
            # Real kubelet retries until the reference resolves or the pod is deleted.
            while not self.stop_event.wait(3):
                try:
                    env = self._env(c)
                    break
                except PodConfigError as e2:
                    run.state = {"waiting": {"reason": e2.reason, "message": e2.message}}
            else:
                return
        argv = [expand(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
        if not c.get("command"):
            return self._start_error(run, "container has no command: the process kubelet cannot read image entrypoints")
        exe = shutil.which(argv[0], path=env.get("PATH")) if "/" not in argv[0] else argv[0]
        if not exe or not os.access(exe, os.X_OK):
            return self._start_error(
                run,
                f'exec: "{argv[0]}": executable file not found in $PATH',
            )
        mounts: list[tuple[Path, str, bool]] = []
        for vm in c.get("volumeMounts") or []:
            src = self.volumes.get(vm["name"])
            if src is None:
                return self._start_error(run, f"volume {vm['name']!r} not found")
            if vm.get("subPath"):
                src = src / vm["subPath"]
            mounts.append((src, vm["mountPath"], bool(vm.get("readOnly"))))
        tpath = c.get("terminationMessagePath") or "/dev/termination-log"
        mounts.append((term_file, tpath, False))
        # Two phases, so that no mount can hide the source of another (a volume mounted at /work
        # would otherwise hide this kubelet's own state dir under /work): first bind every
        # source into a private tmpfs, then bind those into place, parents before children.
        stage = STAGE_DIR
        script = ["set -e", f"mkdir -p {stage}", f"mount -t tmpfs -o size=1m,mode=700 mbo-stage {stage}"]
        for i, (src, _, _) in enumerate(mounts):
            if src.is_dir():
                script.append(f"mkdir {stage}/{i}")
            else:
                script.append(f": > {stage}/{i}")
            script.append(f"mount --bind {shlex.quote(str(src))} {stage}/{i}")
        order = sorted(range(len(mounts)), key=lambda i: mounts[i][1].rstrip("/").count("/"))
        for i in order:
            src, dst, ro = mounts[i]
            q_dst = shlex.quote(dst)
            if src.is_dir():
                script.append(f"mkdir -p {q_dst}")
            else:
                script.append(f'mkdir -p "$(dirname {q_dst})"; [ -e {q_dst} ] || : > {q_dst}')
            script.append(f"mount --bind {stage}/{i} {q_dst}")
            if ro:
                script.append(f"mount -o remount,bind,ro {q_dst}")
        script.append('exec "$@"')
        wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            "\n".join(script),
            "sh",
            exe,
            *argv[1:],
        ]
        logf = open(cdir / f"{run.restart_count}.log", "ab")  # noqa: SIM115 - handed to the child
        cwd = c.get("workingDir") or "/"
        try:
            run.proc = subprocess.Popen(
                wrapper,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd if os.path.isdir(cwd) else "/",
                start_new_session=True,
            )
        finally:
            logf.close()
        run.started_at = ts()
        run.state = {"running": {"startedAt": run.started_at}}
        run.ready = True
        LOG.info("pod %s/%s: started container %s (pid %d)", self.ns, self.name, run.name, run.proc.pid)

    def _start_error(self, run: ContainerRun, message: str) -> None:
        run.proc = None
        t = ts()
        run.state = {
            "terminated": {
                "exitCode": 128,
                "reason": "StartError",
                "message": message,
                "startedAt": t,
                "finishedAt": t,
            }
        }
        self.k.event(self.pod, "Warning", "Failed", f"Error: {message}")

    def _record_exit(self, run: ContainerRun) -> None:
        assert run.proc is not None
        code = run.proc.returncode
        if code < 0:  # killed by a signal: report it the way container runtimes do
            code = 128 - code
        cdir = self.dir / "containers" / run.name
        msg = (cdir / f"termination-log.{run.restart_count}").read_bytes()[:MAX_TERMINATION_MESSAGE]
        if not msg.strip() and code != 0 and run.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            logtext = (cdir / f"{run.restart_count}.log").read_bytes()
            lines = logtext.splitlines()[-80:]
            msg = b"\n".join(lines)[-2048:]
        term: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": run.started_at or ts(),
            "finishedAt": ts(),
        }
        if msg:
            term["message"] = msg.decode(errors="replace")
        run.state = {"terminated": term}
        run.proc = None
        run.ready = False
        LOG.info("pod %s/%s: container %s exited %d", self.ns, self.name, run.name, code)

    def _kill_all(self, grace: float) -> None:
        procs = [r for r in self.init_runs + self.runs if r.proc is not None and r.proc.poll() is None]
        for r in procs:
            assert r.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(r.proc and r.proc.poll() is None for r in procs):
            time.sleep(0.1)
        for r in procs:
            assert r.proc is not None
            if r.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(r.proc.pid, signal.SIGKILL)
                r.proc.wait()
            self._record_exit(r)

    def _finalize_deletion(self) -> None:
        """Graceful deletion, as the kubelet does it: stop processes, report, then delete for good."""
        self._kill_all(self.grace)
        if self.phase not in ("Succeeded", "Failed"):
            codes = [r.state.get("terminated", {}).get("exitCode", 137) for r in self.runs]
            policy = self.pod["spec"].get("restartPolicy", "Always")
            ok = all(c == 0 for c in codes) and policy != "Always"
            self.phase = "Succeeded" if ok else "Failed"
        self._push_status()
        with contextlib.suppress(ApiException):
            self.k.core.delete_namespaced_pod(
                self.name,
                self.ns,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid)),
            )

    # ------------------------------------------------------------------ status

    def _container_status(self, run: ContainerRun) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": run.name,
            "image": run.spec.get("image", ""),
            "imageID": "process://" + run.spec.get("image", ""),
            "containerID": f"process://{self.uid}/{run.name}/{run.restart_count}",
            "restartCount": run.restart_count,
            "ready": run.ready and "running" in run.state,
            "started": "running" in run.state,
            "state": run.state,
        }
        if run.last_state:
            st["lastState"] = run.last_state
        return st

    def _push_status(self) -> None:
        with self.lock:
            all_ready = all(r.ready and "running" in r.state for r in self.runs)
            terminal = self.phase in ("Succeeded", "Failed")
            t = ts()

            def cond(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
                c: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": t}
                if reason and not ok:
                    c["reason"] = reason
                return c

            status: dict[str, Any] = {
                "phase": self.phase,
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": self.start_time,
                "conditions": [
                    cond("PodReadyToStartContainers", not terminal),
                    cond("Initialized", self.initialized, "ContainersNotInitialized"),
                    cond("ContainersReady", all_ready and not terminal, "ContainersNotReady"),
                    cond("Ready", all_ready and not terminal, "ContainersNotReady"),
                ],
                "containerStatuses": [self._container_status(r) for r in self.runs],
            }
            if self.init_runs:
                status["initContainerStatuses"] = [self._container_status(r) for r in self.init_runs]
            if self.reason:
                status["reason"] = self.reason
            if self.message:
                status["message"] = self.message
            try:
                self.k.core.patch_namespaced_pod_status(self.name, self.ns, {"status": status})
            except ApiException as e:
                if e.status != 404:
                    LOG.warning("pod %s/%s: status update failed: %s", self.ns, self.name, e.reason)


class Kubelet:
    def __init__(self, args: argparse.Namespace) -> None:
        config.load_kube_config(config_file=args.kubeconfig)
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.coord = client.CoordinationV1Api(self.api)
        self.node = args.node_name
        self.root = Path(args.root_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = args.port
        self.apiserver_port = args.apiserver_port
        self.args = args
        self.workers: dict[str, PodWorker] = {}
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ node

    def node_status(self) -> dict[str, Any]:
        t = ts()
        mem_kib = 0
        with contextlib.suppress(OSError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
        cap = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "110", "ephemeral-storage": "100Gi"}

        def cond(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": t,
                "lastTransitionTime": self._transition.get(kind, t),
            }

        for kind in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
            self._transition.setdefault(kind, t)
        return {
            "capacity": cap,
            "allocatable": cap,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "architecture": "amd64" if platform.machine() == "x86_64" else platform.machine(),
                "bootID": "",
                "containerRuntimeVersion": "process://0.1.0",
                "kernelVersion": platform.release(),
                "kubeProxyVersion": "",
                "kubeletVersion": KUBE_VERSION,
                "machineID": "",
                "operatingSystem": "linux",
                "osImage": "process-kubelet",
                "systemUUID": "",
            },
        }

    def register(self) -> None:
        self._transition: dict[str, str] = {}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "process",
                },
            },
            "spec": {},
        }
        try:
            self.core.create_node(body)
            LOG.info("registered node %s", self.node)
        except ApiException as e:
            if e.status != 409:
                raise
        self.core.patch_node_status(self.node, {"status": self.node_status()})

    def heartbeat_loop(self) -> None:
        lease_ns = "kube-node-lease"
        while not self.stopping.is_set():
            try:
                self.renew_lease(lease_ns)
                self.core.patch_node_status(self.node, {"status": self.node_status()})
            except Exception as e:
                LOG.warning("heartbeat failed: %s", e)
            self.stopping.wait(HEARTBEAT_SECONDS)

    def renew_lease(self, ns: str) -> None:
        t = now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            lease = self.coord.read_namespaced_lease(self.node, ns)
            lease.spec.renew_time = t
            lease.spec.holder_identity = self.node
            lease.spec.lease_duration_seconds = LEASE_SECONDS
            self.coord.replace_namespaced_lease(self.node, ns, lease)
        except ApiException as e:
            if e.status != 404:
                raise
            node = self.core.read_node(self.node)
            self.coord.create_namespaced_lease(
                ns,
                {
                    "metadata": {
                        "name": self.node,
                        "ownerReferences": [
                            {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": node.metadata.uid}
                        ],
                    },
                    "spec": {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": t},
                },
            )

    # ------------------------------------------------------------------ helpers for pods

    def token_for(self, pod: dict[str, Any], expiration: int, audience: str | None) -> str:
        sa = pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {
            "expirationSeconds": max(600, int(expiration)),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        try:
            tr = self.core.create_namespaced_service_account_token(sa, pod["metadata"]["namespace"], {"spec": spec})
        except ApiException as e:
            raise PodConfigError("FailedMount", f"cannot get token for serviceaccount {sa}: {e.reason}") from None
        return str(tr.status.token)

    def event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(Exception):
            self.core.create_namespaced_event(
                meta["namespace"],
                {
                    "metadata": {"generateName": meta["name"] + "."},
                    "involvedObject": {
                        "kind": "Pod",
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta["uid"],
                        "apiVersion": "v1",
                    },
                    "reason": reason,
                    "message": message,
                    "type": kind,
                    "source": {"component": "kubelet", "host": self.node},
                    "firstTimestamp": ts(),
                    "lastTimestamp": ts(),
                    "count": 1,
                    "reportingComponent": "kubelet",
                    "reportingInstance": self.node,
                },
            )

    # ------------------------------------------------------------------ pods

    def handle(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        phase = (pod.get("status") or {}).get("phase")
        deleting = meta.get("deletionTimestamp") is not None
        worker = self.workers.get(uid)
        if worker is None:
            if phase in ("Succeeded", "Failed"):
                if deleting:
                    with contextlib.suppress(ApiException):
                        self.core.delete_namespaced_pod(
                            meta["name"],
                            meta["namespace"],
                            body=client.V1DeleteOptions(
                                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
                            ),
                        )
                return
            if phase == "Running" and not deleting:
                # Started by an earlier kubelet process whose children are gone: report it honestly.
                self._orphaned(pod)
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            if deleting:
                worker.request_stop(float(meta.get("deletionGracePeriodSeconds") or 0))
            worker.start()
            return
        worker.pod = pod
        if deleting and not worker.stop_event.is_set():
            grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            LOG.info("pod %s/%s: deletion requested, grace %.0fs", meta["namespace"], meta["name"], grace)
            worker.request_stop(grace)
            if worker.done:
                threading.Thread(target=worker._finalize_deletion, daemon=True).start()

    def _orphaned(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        t = ts()
        statuses = []
        for c in pod["spec"]["containers"]:
            statuses.append(
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "Error",
                            "message": "process kubelet restarted",
                            "finishedAt": t,
                        }
                    },
                }
            )
        with contextlib.suppress(ApiException):
            self.core.patch_namespaced_pod_status(
                meta["name"],
                meta["namespace"],
                {
                    "status": {
                        "phase": "Failed",
                        "reason": "NodeRestart",
                        "message": "process kubelet restarted; containers lost",
                        "containerStatuses": statuses,
                    }
                },
            )

    def pod_loop(self) -> None:
        selector = f"spec.nodeName={self.node}"
        while not self.stopping.is_set():
            try:
                lst = self.api.sanitize_for_serialization(
                    self.core.list_pod_for_all_namespaces(field_selector=selector)
                )
                for pod in lst["items"]:
                    self.handle(pod)
                rv = lst["metadata"]["resourceVersion"]
                w = watch.Watch()
                for ev in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=rv,
                    timeout_seconds=120,
                    _preload_content=True,
                ):
                    if self.stopping.is_set():
                        w.stop()
                        break
                    obj = self.api.sanitize_for_serialization(ev["object"])
                    if ev["type"] == "DELETED":
                        worker = self.workers.pop(obj["metadata"]["uid"], None)
                        if worker and not worker.done:
                            worker.request_stop(0)
                        continue
                    self.handle(obj)
                self._gc_workers()
            except ApiException as e:
                if e.status != 410:
                    LOG.warning("pod watch error: %s", e.reason)
                    time.sleep(1)
            except Exception as e:
                LOG.warning("pod watch error: %s", e)
                time.sleep(1)

    def _gc_workers(self) -> None:
        for uid, w in list(self.workers.items()):
            if w.done and not w.is_alive() and w.stop_event.is_set():
                self.workers.pop(uid, None)

    # ------------------------------------------------------------------ logs endpoint

    def serve(self) -> None:
        kubelet = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *a: Any) -> None:
                LOG.debug(fmt, *a)

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if url.path in ("/healthz", "/readyz"):
                    return self._send(200, b"ok")
                if len(parts) == 4 and parts[0] == "containerLogs":
                    _, ns, name, container = parts
                    q = urllib.parse.parse_qs(url.query)
                    for w in list(kubelet.workers.values()):
                        if w.ns == ns and w.name == name:
                            cdir = w.dir / "containers" / container
                            runs = [r for r in w.runs + w.init_runs if r.name == container]
                            if not runs:
                                return self._send(404, b"container not found")
                            n = runs[0].restart_count
                            if q.get("previous") == ["true"]:
                                n -= 1
                            f = cdir / f"{n}.log"
                            data = f.read_bytes() if f.exists() else b""
                            if "tailLines" in q:
                                data = b"\n".join(data.splitlines()[-int(q["tailLines"][0]) :]) + b"\n"
                            return self._send(200, data)
                    return self._send(404, b"pod not found on this node")
                return self._send(404, b"not found")

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.args.tls_cert, self.args.tls_key)
        ctx.load_verify_locations(self.args.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True, name="kubelet-server").start()

    # ------------------------------------------------------------------ main

    def shutdown(self, *_: Any) -> None:
        LOG.info("shutting down: stopping all containers")
        self.stopping.set()
        for w in list(self.workers.values()):
            w._kill_all(2)
        sys.exit(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--node-name", default=socket.gethostname())
    ap.add_argument("--root-dir", required=True)
    ap.add_argument("--port", type=int, default=10250)
    ap.add_argument("--apiserver-port", type=int, required=True)
    ap.add_argument("--tls-cert", required=True)
    ap.add_argument("--tls-key", required=True)
    ap.add_argument("--client-ca", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    k = Kubelet(args)
    signal.signal(signal.SIGTERM, k.shutdown)
    signal.signal(signal.SIGINT, k.shutdown)
    k.register()
    k.serve()
    threading.Thread(target=k.heartbeat_loop, daemon=True, name="heartbeat").start()
    k.pod_loop()


if __name__ == "__main__":
    main()
