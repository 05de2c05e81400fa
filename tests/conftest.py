"""Shared fixtures. Only tests that ask for `stack` (the tests/e2e ones) start the real stack."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stackenv import Stack, start_stack, stop_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    s, started = start_stack()
    yield s
    if started and not os.environ.get("MBO_KEEP_STACK"):
        stop_stack()


@pytest.fixture(scope="session")
def api(stack: Stack) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=stack.kubeconfig, client_configuration=cfg)
    return client.ApiClient(cfg)


@pytest.fixture(scope="session")
def node_watch(stack: Stack, api: Any) -> Iterator[dict[str, Any]]:
    """Samples the node's Ready condition, taints and Lease for the whole session."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    coord = client.CoordinationV1Api(api)
    rec: dict[str, Any] = {"start": time.monotonic(), "samples": [], "renewals": set()}
    stop = threading.Event()
    node_name = stack.raw["node_name"]

    def loop() -> None:
        while not stop.is_set():
            try:
                node = core.read_node(node_name)
                ready = next(c.status for c in node.status.conditions if c.type == "Ready")
                taints = [t.key for t in node.spec.taints or []]
                lease = coord.read_namespaced_lease(node_name, "kube-node-lease")
                rec["samples"].append((time.monotonic(), ready, taints))
                rec["renewals"].add(lease.spec.renew_time)
            except Exception as e:
                rec["samples"].append((time.monotonic(), f"error: {e}", []))
            stop.wait(5)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield rec
    stop.set()


@pytest.fixture
def namespace(stack: Stack, api: Any, node_watch: dict[str, Any]) -> Iterator[str]:
    """A fresh namespace per test, enforcing the restricted Pod Security Standard."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    name = "t-" + uuid.uuid4().hex[:8]
    core.create_namespace(
        {
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "mysqlbackup.dev/test": "true",
                },
            }
        }
    )
    # Pods need the namespace's default ServiceAccount, created by the controller-manager.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except client.ApiException:
            time.sleep(0.2)
    yield name
    if not os.environ.get("MBO_KEEP_NAMESPACES"):
        core.delete_namespace(name, propagation_policy="Background")
