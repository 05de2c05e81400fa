"""Helpers the real-stack tests share: start or reuse the local stack, and talk to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# The stack script's helpers (hack/ is a directory of scripts, not a package).
sys.path.insert(0, str(REPO / "hack"))
import procs  # noqa: E402


@dataclass(frozen=True)
class Stack:
    """What `hack/stack.py up` wrote to env.json."""

    raw: dict[str, Any]

    @property
    def kubeconfig(self) -> str:
        return str(self.raw["kubeconfig"])

    @property
    def kubectl_bin(self) -> str:
        return str(self.raw["kubectl"])

    @property
    def state_dir(self) -> Path:
        return Path(self.raw["state_dir"])

    @property
    def image(self) -> str:
        """The image pods run: the operator image built from this tree (hack/build-image.sh),
        imported into the node's containerd."""
        return str(self.raw["image"])

    @property
    def host(self) -> str:
        """The address the apiserver, MariaDB and MinIO listen on, reachable from pods."""
        return str(self.raw.get("host", "127.0.0.1"))

    @property
    def db(self) -> dict[str, Any]:
        return dict(self.raw["mariadb"])

    @property
    def s3(self) -> dict[str, Any]:
        return dict(self.raw["s3"])

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )


def runs_in_stack_pod(stack: Stack, proc: procs.Proc) -> bool:
    """Whether a host process belongs to a pod of this stack: its pods live under the stack's own
    kubelet cgroup root (several stacks may run on one machine)."""
    try:
        root = stack.raw["network"].get("cgroup_root", "")
        return f"{root}/kubepods" in proc.cgroups()
    except OSError:
        return False


def stack_pod_procs(stack: Stack, *words: bytes) -> list[procs.Proc]:
    """The living processes of this stack's pods whose command line holds every word."""
    return list(procs.scan(lambda p: p.has(*words) and runs_in_stack_pod(stack, p)))


def start_stack() -> tuple[Stack, bool]:
    """Brings the stack up (or reuses a healthy one). Returns it and whether we started it."""
    sd = Path(os.environ.get("MBO_STACK_DIR", REPO / ".stack"))
    was_healthy = (
        subprocess.run([sys.executable, str(REPO / "hack" / "stack.py"), "status"], capture_output=True, text=True)
        .stdout.strip()
        .endswith("healthy: True")
    )
    subprocess.run([sys.executable, str(REPO / "hack" / "stack.py"), "up"], check=True, stdout=subprocess.DEVNULL)
    return Stack(json.loads((sd / "env.json").read_text())), not was_healthy


def stop_stack() -> None:
    subprocess.run([sys.executable, str(REPO / "hack" / "stack.py"), "down"], check=False)


def eventually(fn: Callable[[], T | None], *, timeout: float, interval: float = 0.5, what: str = "") -> T:
    """Polls until fn returns something truthy; fails with the last value or error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except AssertionError as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}: last={last!r}")
