#!/usr/bin/env python3
"""The demo's product part: operator, sample data, policy, backup, damage, restore, results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pymysql
from botocore.config import Config

REPO = Path(__file__).resolve().parent.parent
SD = Path(os.environ.get("MBO_STACK_DIR", REPO / ".stack"))
ENV = json.loads((SD / "env.json").read_text())
NS = "demo"
LOCK_NS = "mysql-backup-system"
DB = "shop"


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    r = subprocess.run(
        [ENV["kubectl"], f"--kubeconfig={ENV['kubeconfig']}", *args], input=input, capture_output=True, text=True
    )
    if check and r.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def show(*args: str) -> None:
    print(f"$ kubectl {' '.join(args)}")
    print(kubectl(*args), flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def image_args() -> list[str]:
    """The node runs the image built from this tree and imported into containerd (never pulled)."""
    repo, tag = ENV["image"].rsplit(":", 1)
    return ["--set", f"image.repository={repo}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never"]


def helm_install() -> None:
    """The operator as users install it, in the shipped image on the real node."""
    ns_body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": LOCK_NS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }
    kubectl("apply", "-f", "-", input=json.dumps(ns_body))
    args = [
        ENV["helm"], f"--kubeconfig={ENV['kubeconfig']}", "upgrade", "--install", "mysql-backup-operator",
        str(REPO / "helm" / "mysql-backup-operator"), "--namespace", LOCK_NS, "--wait", "--timeout", "180s",
        *image_args(),
        "--set", f"metrics.port={free_port()}", "--set", f"health.port={free_port()}",
    ]  # fmt: skip
    print("$ helm upgrade --install mysql-backup-operator helm/mysql-backup-operator -n mysql-backup-system")
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"helm install failed: {r.stderr}")
    print(r.stdout.strip().splitlines()[0] if r.stdout.strip() else "")
    show("get", "deploy,pods", "-n", LOCK_NS)


def plugin(*args: str) -> int:
    print(f"$ kubectl mysqlbackup {' '.join(args)}", flush=True)
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}", "KUBECONFIG": ENV["kubeconfig"]}
    return subprocess.run([ENV["kubectl"], "mysqlbackup", *args], env=env).returncode


def sample_data() -> None:
    db = ENV["mariadb"]
    conn = pymysql.connect(host=db["host"], port=db["port"], user="root", password=db["root_password"], autocommit=True)
    with conn.cursor() as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB}")
        c.execute(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
        c.execute(f"USE {DB}")
        c.execute("CREATE TABLE products (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(80), price DECIMAL(8,2))")
        c.execute("CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, product_id INT, qty INT)")
        c.executemany(
            "INSERT INTO products (name, price) VALUES (%s, %s)", [(f"item-{i}", i * 1.5) for i in range(500)]
        )
        c.execute("INSERT INTO orders (product_id, qty) SELECT seq % 500 + 1, seq % 7 FROM seq_1_to_20000")
    conn.close()


def sql(q: str) -> Any:
    db = ENV["mariadb"]
    conn = pymysql.connect(host=db["host"], port=db["port"], user="root", password=db["root_password"], database=DB)
    with conn.cursor() as c:
        c.execute(q)
        rows = c.fetchall()
    conn.commit()
    conn.close()
    return rows


def main() -> None:
    print("== helm install (CRDs, operator, RBAC, admission policy, metrics)")
    helm_install()
    deadline = time.monotonic() + 120
    while kubectl("get", "namespace", NS, "-o", "jsonpath={.metadata.deletionTimestamp}", check=False).strip():
        if time.monotonic() > deadline:
            sys.exit(f"namespace {NS} is stuck terminating")
        time.sleep(1)  # a previous run's namespace is still being deleted
    kubectl("create", "namespace", NS, check=False)
    kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")

    print("== sample database and bucket")
    sample_data()
    s3 = ENV["s3"]
    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        config=Config(s3={"addressing_style": "path"}),
    )
    if "demo-backups" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="demo-backups")
    for kind in ("restores", "backups"):
        kubectl("delete", kind, "--all", "-n", NS, "--wait=true", check=False)

    secrets = {
        "db-credentials": {"password": ENV["mariadb"]["root_password"]},
        "s3-credentials": {"AWS_ACCESS_KEY_ID": s3["access_key"], "AWS_SECRET_ACCESS_KEY": s3["secret_key"]},
    }
    for name, data in secrets.items():
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "stringData": data}
        kubectl("apply", "-f", "-", input=json.dumps(body))
    policy = {
        "apiVersion": "mysqlbackup.dev/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": {
            "database": {
                "host": ENV["mariadb"]["host"],
                "port": ENV["mariadb"]["port"],
                "user": "root",
                "passwordSecretRef": {"name": "db-credentials"},
                "databases": [DB],
            },
            "storage": {
                "s3": {
                    "bucket": "demo-backups",
                    "prefix": "prod",
                    "endpoint": s3["endpoint"],
                    "forcePathStyle": True,
                    "credentialsSecretRef": {"name": "s3-credentials"},
                }
            },
            "backup": {"compression": "zstd"},
            "schedule": "*/30 * * * *",
            "timeZone": "UTC",
            "retention": {"keepLast": 5, "keepDaily": 7},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(policy))

    print("== manual Backup (BackupPolicy shop also runs every 30 minutes)")
    stamp = time.strftime("%Y%m%d%H%M%S")
    backup = f"shop-manual-{stamp}"
    if plugin("create", "-n", NS, "--policy", "shop", "--name", backup, "--wait", "--timeout", "300") != 0:
        sys.exit("backup failed")
    before = sql("CHECKSUM TABLE products, orders")

    print("== damage the data, then Restore")
    sql("DELETE FROM orders WHERE id % 3 = 0")
    sql("UPDATE products SET price = 0")
    restore = f"shop-restore-{stamp}"
    rc = plugin("restore", "-n", NS, backup, "--name", restore, "--yes", "--wait", "--timeout", "600")
    r = json.loads(kubectl("get", "restore", restore, "-n", NS, "-o", "json"))
    after = sql("CHECKSUM TABLE products, orders")
    print(f"  checksums before backup: {before}")
    print(f"  checksums after restore: {after}  -> {'MATCH' if before == after else 'DIFFERENT'}")

    print("== results")
    plugin("list", "-n", NS)
    print()
    show("get", "backuppolicies,backups,restores", "-n", NS, "-o", "wide")
    show("get", "jobs", "-n", NS)
    print("== dumps in S3")
    for o in client.list_objects_v2(Bucket="demo-backups", Prefix="prod/").get("Contents", []):
        print(f"  s3://demo-backups/{o['Key']}  {o['Size']} bytes")
    print(f"\nThe stack is still running. KUBECONFIG={ENV['kubeconfig']}")
    print(f"  source {SD / 'env.sh'}   # kubectl, helm and KUBECONFIG for this stack")
    print("  make stack-down          # stop everything")
    if rc != 0 or r["status"]["phase"] != "Completed" or before != after:
        sys.exit(1)


if __name__ == "__main__":
    main()
