"""The product as installed: Helm release, RBAC for users, metrics and the kubectl plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.e2e.conftest import LOCK_NAMESPACE, RELEASE, Env, InstalledOperator
from tests.stackenv import Stack, eventually

pytestmark = pytest.mark.stack


def test_helm_release_runs_the_operator_in_cluster(stack: Stack, operator: InstalledOperator) -> None:
    dep = client.AppsV1Api(operator.api).read_namespaced_deployment(RELEASE, LOCK_NAMESPACE)
    assert dep.status.available_replicas == 1
    (pod,) = [p for p in operator.pods() if p.status.phase == "Running"]
    assert pod.spec.service_account_name == RELEASE
    # The ServiceAccount admission plugin projected a token; the operator used in-cluster config.
    assert any(v.projected for v in pod.spec.volumes)
    # A container reports Running before its Python has logged anything: wait for the line.
    eventually(lambda: "Initial authentication has finished" in operator.logs(), timeout=30, what="operator login")
    helm = subprocess.run(
        [stack.raw["helm"], f"--kubeconfig={stack.kubeconfig}", "status", RELEASE, "-n", LOCK_NAMESPACE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "STATUS: deployed" in helm


def user_api(stack: Stack, api: Any, namespace: str, role: str) -> client.CustomObjectsApi:
    """A ServiceAccount bound to one built-in role (view, edit or admin) in the namespace."""
    core = client.CoreV1Api(api)
    name = f"user-{role}"
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    token = core.create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 600}})
    cfg = client.Configuration()
    config.load_kube_config(config_file=stack.kubeconfig, client_configuration=cfg)
    cfg.cert_file = cfg.key_file = None
    cfg.api_key = {"authorization": "Bearer " + token.status.token}
    return client.CustomObjectsApi(client.ApiClient(cfg))


def test_user_roles_view_edit_admin(stack: Stack, api: Any, env: Env) -> None:
    env.policy()
    env.backup("b")
    env.wait_phase("backups", "b", ("Completed",))
    g, v = "mysqlbackup.dev", "v1alpha1"
    restore = {
        "apiVersion": f"{g}/{v}",
        "kind": "Restore",
        "metadata": {"name": "r"},
        "spec": {"backupRef": {"name": "b"}},
    }
    backup = {
        "apiVersion": f"{g}/{v}",
        "kind": "Backup",
        "metadata": {"name": "x"},
        "spec": {"policyRef": {"name": "pol"}},
    }

    view = user_api(stack, api, env.namespace, "view")
    assert [b["metadata"]["name"] for b in view.list_namespaced_custom_object(g, v, env.namespace, "backups")["items"]]
    for plural, body in (("restores", restore), ("backups", backup)):
        with pytest.raises(client.ApiException) as e:
            view.create_namespaced_custom_object(g, v, env.namespace, plural, body)
        assert e.value.status == 403

    edit = user_api(stack, api, env.namespace, "edit")
    edit.create_namespaced_custom_object(g, v, env.namespace, "backups", backup)
    with pytest.raises(client.ApiException) as e:
        edit.create_namespaced_custom_object(g, v, env.namespace, "restores", restore)
    assert e.value.status == 403, "creating a Restore must be an admin action"

    admin = user_api(stack, api, env.namespace, "admin")
    admin.create_namespaced_custom_object(g, v, env.namespace, "restores", restore)
    assert env.wait_phase("restores", "r", ("Completed", "Failed"), timeout=240)["status"]["phase"] == "Completed"


def scrape(operator: InstalledOperator) -> str:
    with urllib.request.urlopen(operator.url(operator.metrics_port, "/metrics"), timeout=5) as r:
        return str(r.read().decode())


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_are_scraped(env: Env, operator: InstalledOperator) -> None:
    env.policy()
    env.secret("bad-pw", {"password": "wrong"})
    env.policy("broken", database={"passwordSecretRef": {"name": "bad-pw"}})
    env.backup("ok")
    env.backup("bad", policy="broken")
    b = env.wait_phase("backups", "ok", ("Completed",))["status"]
    env.wait_phase("backups", "bad", ("Failed",))
    env.restore("r", "ok")
    env.wait_phase("restores", "r", ("Completed",), timeout=240)
    ns = env.namespace

    def ready() -> str | None:
        text = scrape(operator)
        return text if metric(text, "mysqlbackup_backup_last_success_timestamp_seconds", namespace=ns) else None

    text = eventually(ready, timeout=30, what="policy metrics")
    assert metric(text, "mysqlbackup_backup_stored_bytes", namespace=ns, policy="pol") == b["storedBytes"]
    assert metric(text, "mysqlbackup_backup_dump_bytes", namespace=ns, policy="pol") == b["sizeBytes"]
    assert (metric(text, "mysqlbackup_backup_duration_seconds", namespace=ns, policy="pol") or 0) > 0
    assert (metric(text, "mysqlbackup_backup_age_seconds", namespace=ns, policy="pol") or -1) >= 0
    failures = "mysqlbackup_backup_failures_total"
    assert metric(text, failures, namespace=ns, policy="broken", reason="AuthenticationFailed") == 1
    assert metric(text, "mysqlbackup_restores_total", namespace=ns, result="completed") == 1
    assert "mysqlbackup_queue_length{" in text
    assert metric(text, "mysqlbackup_policy_backups", namespace=ns, policy="pol", phase="Completed") == 2


def plugin(stack: Stack, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`kubectl mysqlbackup ...` exactly as a user runs it: kubectl finds the plugin on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "KUBECONFIG": "/nonexistent"}
    return subprocess.run(
        [stack.kubectl_bin, "mysqlbackup", f"--kubeconfig={stack.kubeconfig}", *args],
        capture_output=True,
        text=True,
        env=env,
        input=input,
    )


def test_kubectl_plugin(stack: Stack, env: Env) -> None:
    env.policy()
    ns = env.namespace
    r = plugin(stack, "create", "-n", ns, "--policy", "pol", "--name", "p1", "--wait")
    assert r.returncode == 0, r.stderr
    assert "Completed" in r.stdout and "Running" in r.stdout
    assert plugin(stack, "create", "-n", ns, "--policy", "pol", "--name", "p2", "--wait").returncode == 0
    env.create(
        "backups",
        {"kind": "Backup", "metadata": {"name": "s1"}, "spec": {"policyRef": {"name": "pol"}, "trigger": "scheduled"}},
    )
    env.wait_phase("backups", "s1", ("Completed",))

    out = plugin(stack, "list", "-n", ns).stdout.splitlines()
    assert out[0].split()[:4] == ["NAME", "POLICY", "TRIGGER", "PHASE"]
    assert [line.split()[0] for line in out[1:]] == ["s1", "p2", "p1"]  # newest first
    page2 = plugin(stack, "list", "-n", ns, "--limit", "2", "--page", "2")
    assert [line.split()[0] for line in page2.stdout.splitlines()[1:]] == ["p1"]
    assert "page 2 of 2" in page2.stderr
    only = json.loads(plugin(stack, "list", "-n", ns, "--trigger", "scheduled", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in only["items"]] == ["s1"]
    assert "LOCATION" in plugin(stack, "list", "-n", ns, "-o", "wide").stdout
    assert plugin(stack, "list", "-n", ns, "--since", "2999-01-01").stdout.strip() == "No backups found."
    assert plugin(stack, "list", "-n", ns, "--policy", "pol", "--phase", "completed").stdout.count("Completed") == 3
    described = plugin(stack, "describe", "-n", ns, "p1").stdout
    assert "sha256:" in described and "Ready=True" in described

    # Restore asks first; without a terminal and --yes it refuses.
    refused = plugin(stack, "restore", "-n", ns, "p1")
    assert refused.returncode == 4 and "--yes" in refused.stderr
    assert "safety backup" in refused.stdout
    done = plugin(stack, "restore", "-n", ns, "p1", "--yes", "--wait", "--name", "rp")
    assert done.returncode == 0, done.stderr
    for phase in ("BackingUp", "Restoring", "Completed"):
        assert phase in done.stdout, done.stdout

    deny = plugin(stack, "delete", "-n", ns, "s1", "--yes")
    assert deny.returncode == 4 and "retention" in deny.stderr
    assert plugin(stack, "delete", "-n", ns, "p2", "--yes").returncode == 0
    missing = plugin(stack, "describe", "-n", ns, "nope")
    assert missing.returncode == 3 and "nope" in missing.stderr
    bad_ctx = plugin(stack, "list", "-n", ns, "--context", "no-such-context")
    assert bad_ctx.returncode == 2 and "kubeconfig" in bad_ctx.stderr
    assert plugin(stack, "list", "-n", ns, "--context", "mbo").returncode == 0
