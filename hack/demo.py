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


def ensure_operator() -> None:
    pidf = SD / "pids" / "operator.pid"
    if pidf.exists():
        try:
            os.kill(int(pidf.read_text()), 0)
            return
        except ProcessLookupError:
            pass
    log = open(SD / "logs" / "operator.log", "ab")  # noqa: SIM115 - owned by the child
    p = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "mysql-backup-operator")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": ENV["kubeconfig"], "MBO_LOCK_NAMESPACE": LOCK_NS},
        start_new_session=True,
    )
    pidf.write_text(str(p.pid))
    print(f"operator started (pid {p.pid}, log {SD / 'logs' / 'operator.log'})")


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


def wait_phase(kind: str, name: str, phases: tuple[str, ...], timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        obj = json.loads(kubectl("get", kind, name, "-n", NS, "-o", "json"))
        phase = (obj.get("status") or {}).get("phase", "")
        if phase != last:
            print(f"  {kind}/{name}: {phase or '(new)'}  {obj.get('status', {}).get('message', '')}", flush=True)
            last = phase
        if phase in phases:
            return dict(obj)
        time.sleep(1)
    sys.exit(f"{kind}/{name} did not reach {phases} in {timeout}s")


def main() -> None:
    print("== CRDs and operator")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("backuppolicies", "backups", "restores"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}.mysqlbackup.dev", "--timeout=60s")
    for ns in (NS, LOCK_NS):
        kubectl("create", "namespace", ns, check=False)
    kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    ensure_operator()

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
                "host": "127.0.0.1",
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
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(policy))

    print("== manual Backup")
    stamp = time.strftime("%Y%m%d%H%M%S")
    backup = f"shop-manual-{stamp}"
    kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "mysqlbackup.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": backup, "namespace": NS},
        "spec": {"policyRef": {"name": "shop"}, "description": "demo backup"},
    }))  # fmt: skip
    b = wait_phase("backup", backup, ("Completed", "Failed"))
    if b["status"]["phase"] != "Completed":
        sys.exit(f"backup failed: {b['status']}")
    before = sql("CHECKSUM TABLE products, orders")

    print("== damage the data, then Restore")
    sql("DELETE FROM orders WHERE id % 3 = 0")
    sql("UPDATE products SET price = 0")
    restore = f"shop-restore-{stamp}"
    kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "mysqlbackup.dev/v1alpha1", "kind": "Restore",
        "metadata": {"name": restore, "namespace": NS},
        "spec": {"backupRef": {"name": backup}},
    }))  # fmt: skip
    r = wait_phase("restore", restore, ("Completed", "Failed"))
    after = sql("CHECKSUM TABLE products, orders")
    print(f"  checksums before backup: {before}")
    print(f"  checksums after restore: {after}  -> {'MATCH' if before == after else 'DIFFERENT'}")

    print("== results")
    show("get", "backuppolicies,backups,restores", "-n", NS, "-o", "wide")
    show("get", "jobs", "-n", NS)
    print("== dumps in S3")
    for o in client.list_objects_v2(Bucket="demo-backups", Prefix="prod/").get("Contents", []):
        print(f"  s3://demo-backups/{o['Key']}  {o['Size']} bytes")
    print(f"\nThe stack is still running. KUBECONFIG={ENV['kubeconfig']}")
    print(f"  source {SD / 'env.sh'}   # kubectl, helm and KUBECONFIG for this stack")
    print("  make stack-down          # stop everything")
    if r["status"]["phase"] != "Completed" or before != after:
        sys.exit(1)


if __name__ == "__main__":
    main()
