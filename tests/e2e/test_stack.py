"""Smoke tests proving the local stack is real: only what the cluster itself did counts as a pass."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.stackenv import Stack, eventually

pytestmark = pytest.mark.stack

RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


IMAGE = ""


@pytest.fixture(autouse=True)
def _image(stack: Stack) -> None:
    """The image of every pod here: the shipped image, built from this tree."""
    global IMAGE
    IMAGE = stack.image


def job_body(
    name: str,
    script: str,
    *,
    backoff: int = 0,
    env: list[dict[str, Any]] | None = None,
    extra_pod: dict[str, Any] | None = None,
    volume_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": IMAGE,
        "command": ["bash", "-c", script],
        "env": env or [],
        "securityContext": RESTRICTED,
        "volumeMounts": volume_mounts or [],
    }
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], **(extra_pod or {})}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff, "template": {"spec": pod_spec}},
    }


def job_condition(batch: client.BatchV1Api, name: str, ns: str) -> str | None:
    job = batch.read_namespaced_job(name, ns)
    for c in job.status.conditions or []:
        if c.type in ("Complete", "Failed") and c.status == "True":
            return str(c.type)
    return None


def job_pods(core: client.CoreV1Api, name: str, ns: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items)


def test_mysqldump_job_completes_with_secret_env(stack: Stack, api: Any, namespace: str) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    db = stack.db
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "db"}, "stringData": {"password": db["root_password"]}},
    )
    # No `$$` here: Kubernetes turns `$$` into `$` in a command, except inside an unresolved
    # `$(...)`, so the two halves would name different files (the real kubelet showed this).
    script = (
        "set -o pipefail; "
        f"mariadb-dump -h {db['host']} -P {db['port']} -u root --all-databases --single-transaction "
        "| wc -c > /tmp/size && printf '{\"bytes\": %s}' $(cat /tmp/size) > /dev/termination-log"
    )
    env = [{"name": "MYSQL_PWD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    batch.create_namespaced_job(namespace, job_body("dump", script, env=env))
    assert eventually(lambda: job_condition(batch, "dump", namespace), timeout=120, what="job done") == "Complete"
    (pod,) = job_pods(core, "dump", namespace)
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 0
    assert json.loads(term.message)["bytes"] > 1000
    # The password came from the Secret, not argv.
    assert db["root_password"] not in json.dumps(api.sanitize_for_serialization(pod.spec))


def test_failing_job_is_failed_after_backoff_limit(api: Any, namespace: str) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, job_body("boom", "echo failing >&2; exit 3", backoff=1))
    assert eventually(lambda: job_condition(batch, "boom", namespace), timeout=150, what="job failed") == "Failed"
    job = batch.read_namespaced_job("boom", namespace)
    reasons = {c.reason for c in job.status.conditions if c.type == "Failed"}
    assert reasons == {"BackoffLimitExceeded"}
    pods = job_pods(core, "boom", namespace)
    assert len(pods) == 2
    for p in pods:
        assert p.status.phase == "Failed"
        assert p.status.container_statuses[0].state.terminated.exit_code == 3


def test_missing_command_fails_the_pod_clearly(api: Any, namespace: str) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    body = job_body("nocmd", "")
    body["spec"]["template"]["spec"]["containers"][0]["command"] = ["definitely-not-a-command-xyz"]
    batch.create_namespaced_job(namespace, body)
    assert eventually(lambda: job_condition(batch, "nocmd", namespace), timeout=90) == "Failed"
    term = job_pods(core, "nocmd", namespace)[0].status.container_statuses[0].state.terminated
    assert term.reason == "StartError"
    assert "executable file not found" in term.message


def test_deleting_a_job_garbage_collects_its_pods(api: Any, namespace: str) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, job_body("sleeper", "trap 'exit 0' TERM; sleep 300 & wait"))
    eventually(
        lambda: any(p.status.phase == "Running" for p in job_pods(core, "sleeper", namespace)),
        timeout=60,
        what="pod running",
    )
    batch.delete_namespaced_job("sleeper", namespace, propagation_policy="Background")
    eventually(lambda: not job_pods(core, "sleeper", namespace) or None, timeout=60, what="pods collected")


def test_pod_features_volumes_env_and_termination_message(stack: Stack, api: Any, namespace: str) -> None:
    """Init containers, emptyDir, secret/configMap volumes, fieldRef, envFrom, SA token and logs."""
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"token": "s3cr3t"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"greeting": "hello"}})
    sa_vol = {
        "name": "sa",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]
        },
    }
    script = (
        "set -e; test -s /var/run/secrets/kubernetes.io/serviceaccount/token; "
        "grep -q BEGIN /var/run/secrets/kubernetes.io/serviceaccount/ca.crt; "
        'echo "main sees $(cat /work/init.txt)"; '
        'printf \'{"secret":"%s","cm":"%s","ns":"%s","pod":"%s","from":"%s","sans":"%s"}\' '
        '"$(cat /etc/s/token)" "$(cat /etc/cm/greeting)" '
        '"$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)" '
        '"$MY_POD" "$CM_greeting" "$(cat /work/init.txt)" > /dev/termination-log'
    )
    body = job_body(
        "features",
        script,
        env=[{"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        volume_mounts=[
            {"name": "work", "mountPath": "/work"},
            {"name": "s", "mountPath": "/etc/s", "readOnly": True},
            {"name": "cm", "mountPath": "/etc/cm"},
            {"name": "sa", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True},
        ],
        extra_pod={
            "volumes": [
                {"name": "work", "emptyDir": {}},
                {"name": "s", "secret": {"secretName": "s"}},
                {"name": "cm", "configMap": {"name": "cm"}},
                sa_vol,
            ],
            "initContainers": [
                {
                    "name": "init",
                    "image": IMAGE,
                    "command": ["sh", "-c", "echo from-init > /work/init.txt"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                    "securityContext": RESTRICTED,
                }
            ],
        },
    )
    body["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}]
    batch.create_namespaced_job(namespace, body)
    assert eventually(lambda: job_condition(batch, "features", namespace), timeout=90) == "Complete"
    (pod,) = job_pods(core, "features", namespace)
    got = json.loads(pod.status.container_statuses[0].state.terminated.message)
    assert got == {
        "secret": "s3cr3t",
        "cm": "hello",
        "ns": namespace,
        "pod": pod.metadata.name,
        "from": "hello",
        "sans": "from-init",
    }
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0
    logs = stack.kubectl("logs", "-n", namespace, pod.metadata.name).stdout
    assert "main sees from-init" in logs


def test_restricted_pod_security_is_enforced(api: Any, namespace: str) -> None:
    """The namespaces tests use really enforce `restricted`: a pod without a hardened context is refused."""
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": "priv"},
                "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"]}]},
            },
        )
    assert e.value.status == 403
    assert "restricted" in e.value.body


def test_user_without_rbac_grants_is_refused(stack: Stack, api: Any, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    tok = core.create_namespaced_service_account_token("nobody", namespace, {"spec": {"expirationSeconds": 600}})
    cfg = client.Configuration()
    config.load_kube_config(config_file=stack.kubeconfig, client_configuration=cfg)
    cfg.cert_file = None
    cfg.key_file = None
    cfg.api_key = {"authorization": "Bearer " + tok.status.token}
    nobody = client.CoreV1Api(client.ApiClient(cfg))
    with pytest.raises(ApiException) as e:
        nobody.list_namespaced_secret(namespace)
    assert e.value.status == 403
    assert "forbidden" in e.value.body.lower()
    # ...while the same identity is authenticated (not 401), proving RBAC, not authn, refused it.
    review = client.AuthorizationV1Api(api).create_subject_access_review(
        {
            "spec": {
                "user": f"system:serviceaccount:{namespace}:nobody",
                "resourceAttributes": {"namespace": namespace, "verb": "list", "resource": "secrets"},
            }
        }
    )
    assert review.status.allowed is False


def test_zz_node_stays_ready_for_two_minutes(stack: Stack, node_watch: dict[str, Any]) -> None:
    """Runs last: the node was sampled during the whole session; wait until 2 minutes are covered."""
    remaining = 125 - (time.monotonic() - node_watch["start"])
    if remaining > 0:
        time.sleep(remaining)
    samples = node_watch["samples"]
    assert samples[-1][0] - samples[0][0] >= 115
    bad = [s for s in samples if s[1] != "True" or s[2]]
    assert not bad, f"node not Ready or tainted at some point: {bad[:3]}"
    assert len(node_watch["renewals"]) >= 8, "lease was not renewed regularly"


def test_graceful_deletion_sends_sigterm_then_sigkill(stack: Stack, api: Any, namespace: str) -> None:
    """SIGTERM first; after the grace period, SIGKILL; then the pod object goes away."""
    core = client.CoreV1Api(api)

    def pod(name: str, script: str) -> None:
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "terminationGracePeriodSeconds": 3,
                    "volumes": [{"name": "out", "emptyDir": {}}],
                    "containers": [
                        {
                            "name": "c",
                            "image": IMAGE,
                            "command": ["bash", "-c", script],
                            "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                            "securityContext": RESTRICTED,
                        }
                    ],
                },
            },
        )

    pod("polite", "trap 'echo got-TERM > /out/signal; exit 0' TERM; echo started > /out/signal; sleep 300 & wait")
    pod("stubborn", "trap '' TERM; echo started > /out/signal; while true; do sleep 0.2; done")
    uids = {}
    for name in ("polite", "stubborn"):
        eventually(lambda n=name: core.read_namespaced_pod(n, namespace).status.phase == "Running", timeout=60)
        uids[name] = core.read_namespaced_pod(name, namespace).metadata.uid
    time.sleep(1)
    # The last status the kubelet reported before the pod object went away (the real kubelet
    # deletes a pod's volumes with it, so the exit codes are what is left to look at).
    final: dict[str, Any] = {}
    watcher = threading.Thread(target=_record_final_statuses, args=(api, namespace, final), daemon=True)
    watcher.start()
    time.sleep(0.5)
    start = time.monotonic()
    for name in ("polite", "stubborn"):
        core.delete_namespaced_pod(name, namespace)

    def gone(name: str) -> bool:
        try:
            core.read_namespaced_pod(name, namespace)
        except ApiException as e:
            return e.status == 404
        return False

    eventually(lambda: gone("polite"), timeout=30, what="polite pod gone")
    polite_time = time.monotonic() - start
    eventually(lambda: gone("stubborn"), timeout=30, what="stubborn pod gone")
    stubborn_time = time.monotonic() - start
    watcher.join(timeout=10)
    # polite's trap is its only way to exit 0; stubborn ignored SIGTERM and died of SIGKILL.
    assert final["polite"].exit_code == 0, final
    assert final["stubborn"].exit_code == 137, final
    assert polite_time < 3, "a pod that exits on SIGTERM must not wait out its grace period"
    assert 3 <= stubborn_time < 15, f"SIGKILL should follow the 3s grace period (took {stubborn_time:.1f}s)"


def _record_final_statuses(api: Any, namespace: str, final: dict[str, Any]) -> None:
    """Keeps each pod's latest terminated container state until both pods are deleted."""
    core = client.CoreV1Api(api)
    deleted: set[str] = set()
    for ev in watch.Watch().stream(core.list_namespaced_pod, namespace, timeout_seconds=40):
        pod = ev["object"]
        for cs in pod.status.container_statuses or []:
            if cs.state.terminated is not None:
                final[pod.metadata.name] = cs.state.terminated
        if ev["type"] == "DELETED":
            deleted.add(pod.metadata.name)
        if {"polite", "stubborn"} <= deleted:
            return
