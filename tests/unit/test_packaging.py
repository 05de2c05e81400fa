"""Derived files stay in sync with their sources: chart CRDs, rendered manifests, API docs."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def helm() -> str:
    out = subprocess.run(["bash", str(REPO / "hack" / "build-binaries.sh")], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] + "/helm"


def test_chart_crds_are_identical_to_top_level_crds() -> None:
    top = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (REPO / "helm/mysql-backup-operator/crds").glob("*.yaml"))
    assert top == chart
    for name in top:
        assert filecmp.cmp(REPO / "crds" / name, REPO / "helm/mysql-backup-operator/crds" / name, shallow=False), name


# No public image exists, so the chart requires one; these tests render it with a registry's name.
IMAGE = ("--set", "image.repository=registry.example.com/mysql-backup-operator")


def test_chart_requires_an_image_it_does_not_promise() -> None:
    """The chart's default must not point at an image nobody published: it asks for one."""
    r = subprocess.run(
        [helm(), "template", "x", str(REPO / "helm/mysql-backup-operator"), "--kube-version", "1.35.4"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "image.repository is required" in r.stderr, r.stderr


def test_rendered_manifests_are_current(tmp_path: Path) -> None:
    rendered = subprocess.run(
        [
            helm(), "template", "mysql-backup-operator", str(REPO / "helm/mysql-backup-operator"),
            "--namespace", "mysql-backup-system", "--include-crds", "--kube-version", "1.35.4",
            "--set", "image.repository=REGISTRY/mysql-backup-operator",
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    current = (REPO / "manifests/install.yaml").read_text()
    assert rendered.strip() in current, "manifests/install.yaml is stale: run hack/render-manifests.sh"


def test_helm_lint_and_schema_rejects_bad_values() -> None:
    chart = str(REPO / "helm/mysql-backup-operator")
    lint = subprocess.run([helm(), "lint", chart, *IMAGE], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for bad in (["--set", "replicas=-1"], ["--set", "logLevel=LOUD"], ["--set", "metrics.port=0"], ["--set", "nope=1"]):
        r = subprocess.run(
            [helm(), "template", "x", chart, "--kube-version", "1.35.4", *IMAGE, *bad], capture_output=True, text=True
        )
        assert r.returncode != 0 and "values don't meet the specifications of the schema" in r.stderr, bad


def test_chart_options_render() -> None:
    chart = str(REPO / "helm/mysql-backup-operator")
    out = subprocess.run(
        [
            helm(), "template", "x", chart, "--kube-version", "1.35.4", "--namespace", "ops", *IMAGE,
            "--set", "replicas=2", "--set", "watchNamespaces={team-a,team-b}",
            "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Role") == 3 and "ServiceMonitor" in kinds and "ClusterKopfPeering" in kinds
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"BackupTooOld", "BackupFailing"}
    dep = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MBO_PEERING"] == "x-mysql-backup-operator" and env["MBO_WATCH_NAMESPACES"] == "team-a,team-b"
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-cluster"))
    assert not any("secrets" in r.get("resources", []) for r in cluster_role["rules"]), "namespaced mode leaks secrets"


def test_api_reference_is_generated_from_the_crds() -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "hack" / "gen-api-docs.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_image_is_non_root_with_client_tools() -> None:
    """No container engine here to build it; check what the Dockerfile promises."""
    text = (REPO / "Dockerfile").read_text()
    assert "USER 65532:65532" in text
    assert "mariadb-client" in text
    assert "mysql-backup-operator" in text


def test_an_older_operator_process_wins_the_peering() -> None:
    """A later replica must stand by rather than pause the active one (see main.peering_priority)."""
    from mysql_backup_operator.main import peering_priority

    first, later = 1_795_000_000.0, 1_795_000_000.002
    assert all(peering_priority(first) > peering_priority(later) for _ in range(50))
    assert peering_priority(later) > 0
