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


def _namespace_diagnostics(api: Any, namespace: str) -> str:
    """The events and agent pod logs of a failed test's namespace. The namespace, and with it the
    logs, is deleted right after the test, so this is the only chance to keep them."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    lines: list[str] = []
    try:
        for ev in core.list_namespaced_event(namespace).items:
            obj = ev.involved_object
            lines.append(f"event {ev.type} {obj.kind}/{obj.name} {ev.reason}: {ev.message}")
        for pod in core.list_namespaced_pod(namespace).items:
            for c in pod.spec.containers:
                lines.append(f"----- pod {pod.metadata.name} container {c.name} ({pod.status.phase})")
                try:
                    lines.append(core.read_namespaced_pod_log(pod.metadata.name, namespace, container=c.name))
                except client.ApiException as e:  # a pod that never started has no log
                    lines.append(f"(no log: {e.status} {e.reason})")
    except Exception as e:
        lines.append(f"(diagnostics unavailable: {type(e).__name__}: {e})")
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed real-stack test shows its namespace's events and pod logs under its failure."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    if report.when == "call" and report.failed and "namespace" in funcargs and "api" in funcargs:
        report.sections.append(
            ("namespace events and pod logs", _namespace_diagnostics(funcargs["api"], funcargs["namespace"]))
        )
    return report


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
