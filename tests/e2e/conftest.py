"""Fixtures for the operator's end-to-end tests: CRDs, a running operator, a database and a bucket."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pymysql
import pytest
from botocore.config import Config
from kubernetes import client

from tests.e2e import backends
from tests.stackenv import REPO, Stack, eventually, procs, stack_pod_procs

GROUP, VERSION = "mysqlbackup.dev", "v1alpha1"
LOCK_NAMESPACE = "mysql-backup-system"


def s3_client(stack: Stack, **creds: str) -> Any:
    s3 = stack.s3
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint"],
        region_name=s3["region"],
        aws_access_key_id=creds.get("access_key", s3["access_key"]),
        aws_secret_access_key=creds.get("secret_key", s3["secret_key"]),
        aws_session_token=creds.get("session_token"),
        config=Config(s3={"addressing_style": "path"}),
    )


def db_connect(stack: Stack, database: str | None = None) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    db = stack.db
    return pymysql.connect(
        host=db["host"],
        port=db["port"],
        user="root",
        password=db["root_password"],
        database=database,
        autocommit=True,
        charset="utf8mb4",
    )


@pytest.fixture(scope="session")
def crds(stack: Stack) -> None:
    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for name in ("backuppolicies", "backups", "restores"):
        stack.kubectl("wait", "--for=condition=Established", f"crd/{name}.{GROUP}", "--timeout=60s")


RELEASE = "mysql-backup-operator"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class InstalledOperator:
    """The operator as users run it: `helm install`ed, its pod run by the node (on the real node:
    the shipped image, the chart's security context) with the chart's ServiceAccount token and
    in-cluster configuration. Any missing RBAC verb fails tests."""

    stack: Stack
    api: Any
    metrics_port: int = field(default_factory=_free_port)
    health_port: int = field(default_factory=_free_port)
    baseline_restarts: int = 0

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.stack.raw["helm"], f"--kubeconfig={self.stack.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=True,
        )

    def install(self, *extra: str) -> None:
        """`helm upgrade --install` with the test settings; `extra` are more helm arguments."""
        # The operator is event-driven; only its safety net (re-checking unfinished objects) is
        # shortened for the tests, from 30 s to 10 s.
        extra_env = [{"name": "MBO_RESYNC_SECONDS", "value": "10"}]
        # The image built from this tree and imported into containerd; never pulled.
        repo, tag = self.stack.image.rsplit(":", 1)
        image = ["--set", f"image.repository={repo}", "--set", f"image.tag={tag}"]
        image += ["--set", "image.pullPolicy=Never"]
        self.helm(
            "upgrade", "--install", RELEASE, str(REPO / "helm" / "mysql-backup-operator"),
            "--namespace", LOCK_NAMESPACE, "--wait", "--timeout", "180s",
            *image,
            "--set", f"metrics.port={self.metrics_port}", "--set", f"health.port={self.health_port}",
            "--set-json", f"extraEnv={json.dumps(extra_env)}",
            # A new pod per test session, so a reused stack never runs yesterday's operator code.
            "--set-string", f"podAnnotations.mysqlbackup\\.dev/test-session={uuid.uuid4().hex}",
            *extra,
        )  # fmt: skip
        self.wait_ready()

    def pods(self) -> list[client.V1Pod]:
        selector = f"app.kubernetes.io/instance={RELEASE}"
        return list(self.core.list_namespaced_pod(LOCK_NAMESPACE, label_selector=selector).items)

    def _running(self) -> client.V1Pod | None:
        for p in self.pods():
            if p.metadata.deletion_timestamp is None and p.status.phase == "Running":
                cs = (p.status.container_statuses or [None])[0]
                if cs is not None and cs.state.running is not None:
                    return p
        return None

    def wait_ready(self, timeout: float = 120) -> None:
        pod = eventually(self._running, timeout=timeout, what="operator pod running")
        self.baseline_restarts = pod.status.container_statuses[0].restart_count

    def _procs(self) -> list[procs.Proc]:
        """The operator's processes as the host sees them (container processes included)."""
        return stack_pod_procs(self.stack, b"mysql-backup-operator", b"python")

    def _pids(self) -> list[int]:
        return [p.pid for p in self._procs()]

    def kill(self) -> None:
        """SIGKILL the operator process inside its pod, as a crash would; the kubelet restarts it.
        Waits for the killed processes themselves to die: the kubelet may already have started
        their replacement (same command line) by then, on a first failure it does not back off."""
        killed = self._procs()
        assert killed, "operator process not found"
        procs.kill(killed)
        eventually(lambda: not [p for p in killed if procs.alive(p)], timeout=10, what=f"killed operator {killed} dead")

    def stop(self) -> None:
        """Scale to zero: the operator stays down for as long as the caller likes."""
        self.scale(0)
        eventually(lambda: not self.pods(), timeout=60, what="operator pod gone")

    def start(self) -> None:
        if not self.pods():
            self.scale(1)
        eventually(lambda: self._pids() and self._running(), timeout=120, what="operator running again")
        self.wait_ready()

    def scale(self, n: int) -> None:
        self.stack.kubectl("scale", "deployment", RELEASE, "-n", LOCK_NAMESPACE, f"--replicas={n}")

    def alive(self) -> bool:
        pod = self._running()
        return pod is not None and pod.status.container_statuses[0].restart_count == self.baseline_restarts

    def logs(self, pod: str = "*") -> str:
        """Every line any operator container wrote, across restarts and pods (or one pod's)."""
        files = (self.stack.state_dir / "pod-logs").glob(f"{LOCK_NAMESPACE}_{pod}_*/operator/*.log")
        return "".join(f.read_text(errors="replace") for f in sorted(files))

    def url(self, port: int, path: str) -> str:
        """An HTTP endpoint of the running operator pod, as the host reaches it."""
        pod = eventually(self._running, timeout=60, what="operator pod running")
        return f"http://{pod.status.pod_ip}:{port}{path}"


OperatorProcess = InstalledOperator


@pytest.fixture(scope="session")
def operator(stack: Stack, api: Any, crds: None) -> InstalledOperator:
    core = client.CoreV1Api(api)
    with contextlib.suppress(client.ApiException):
        core.create_namespace(
            {"metadata": {"name": LOCK_NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
        )
    op = InstalledOperator(stack, api)
    op.install()
    return op


@dataclass
class Env:
    """Everything one test needs: its namespace, a database with data, a bucket and a policy."""

    stack: Stack
    api: Any
    namespace: str
    database: str
    bucket: str
    backend: str = "s3"  # or backends.AZURE / backends.GCS (the `env` fixture's indirect param)
    credentials: str = ""  # the backend's credential mode (backends.AZURE_MODES, GCS_MODES)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", **body}
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body))

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name))

    def list(self, plural: str, selector: str = "") -> list[dict[str, Any]]:
        res = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, label_selector=selector)
        return list(res["items"])

    def secret(self, name: str, data: dict[str, str]) -> None:
        body = {"metadata": {"name": name}, "stringData": data}
        try:
            self.core.create_namespaced_secret(self.namespace, body)
        except client.ApiException as e:
            if e.status != 409:
                raise
            self.core.replace_namespaced_secret(name, self.namespace, body)

    def policy(self, name: str = "pol", *, database: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
        s3 = self.stack.s3
        self.secret("db-credentials", {"password": self.stack.db["root_password"]})
        if "s3-credentials" not in {s.metadata.name for s in self.core.list_namespaced_secret(self.namespace).items}:
            self.secret(
                "s3-credentials", {"AWS_ACCESS_KEY_ID": s3["access_key"], "AWS_SECRET_ACCESS_KEY": s3["secret_key"]}
            )
        body_spec: dict[str, Any] = {
            "database": {
                "host": self.stack.db["host"],
                "port": self.stack.db["port"],
                "user": "root",
                "passwordSecretRef": {"name": "db-credentials"},
                "databases": [self.database],
                **(database or {}),
            },
            "storage": {
                "s3": {
                    "bucket": self.bucket,
                    "prefix": "backups",
                    "endpoint": s3["endpoint"],
                    "region": s3["region"],
                    "forcePathStyle": True,
                    "credentialsSecretRef": {"name": "s3-credentials"},
                }
            }
            if self.backend == "s3"
            else backends.storage_spec(self.stack, self.backend, self.credentials, self.bucket, self.secret),
            "jobTemplate": {"activeDeadlineSeconds": 300},
            **spec,
        }
        return self.create("backuppolicies", {"kind": "BackupPolicy", "metadata": {"name": name}, "spec": body_spec})

    def patch_policy(self, spec: dict[str, Any], name: str = "pol") -> None:
        """A merge patch of the policy's spec, not get + replace: the operator writes the
        policy's status meanwhile, so a replace would meet 409 Conflict."""
        self.custom.patch_namespaced_custom_object(
            "mysqlbackup.dev", "v1alpha1", self.namespace, "backuppolicies", name, {"spec": spec}
        )

    def backup(self, name: str, policy: str = "pol", **spec: Any) -> dict[str, Any]:
        return self.create(
            "backups", {"kind": "Backup", "metadata": {"name": name}, "spec": {"policyRef": {"name": policy}, **spec}}
        )

    def restore(self, name: str, backup: str, **spec: Any) -> dict[str, Any]:
        return self.create(
            "restores", {"kind": "Restore", "metadata": {"name": name}, "spec": {"backupRef": {"name": backup}, **spec}}
        )

    def wait_phase(self, plural: str, name: str, phases: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get(plural, name)
            return obj if (obj.get("status") or {}).get("phase") in phases else None

        try:
            return eventually(check, timeout=timeout, interval=0.5, what=f"{plural}/{name} in {phases}")
        except AssertionError:
            print(json.dumps(self.get(plural, name).get("status"), indent=2))
            raise

    def jobs(self) -> list[client.V1Job]:
        return list(self.batch.list_namespaced_job(self.namespace).items)

    def events(self, name: str) -> list[client.CoreV1Event]:
        return [
            e
            for e in self.core.list_namespaced_event(self.namespace).items
            if e.involved_object.name == name and e.source.component == "mysql-backup-operator"
        ]

    def sql(self, query: str, database: str | None = None) -> list[tuple[Any, ...]]:
        conn = db_connect(self.stack, database or self.database)
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                return list(cur.fetchall())
        finally:
            conn.close()

    def checksums(self, database: str | None = None) -> dict[str, int]:
        db = database or self.database
        tables = [r[0] for r in self.sql("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'", db)]
        out = {}
        for t in tables:
            (row,) = self.sql(f"CHECKSUM TABLE `{t}` EXTENDED", db)
            out[t] = int(row[1])
        return out

    def objects(self, prefix: str = "") -> dict[str, int]:
        if self.backend != "s3":
            return backends.objects(self.stack, self.backend, self.bucket, prefix)
        s3 = s3_client(self.stack)
        res = s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"]: o["Size"] for o in res.get("Contents", [])}

    def storage_secrets(self) -> list[str]:
        """The storage credentials a leak check looks for (call after `policy()`)."""
        if self.backend == "s3":
            return [self.stack.s3["secret_key"]]
        return backends.secret_values(self)

    def read_object(self, key: str) -> bytes:
        if self.backend != "s3":
            return backends.read(self.stack, self.backend, self.bucket, key)
        return bytes(s3_client(self.stack).get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def write_object(self, key: str, data: bytes) -> None:
        if self.backend != "s3":
            return backends.write(self.stack, self.backend, self.bucket, key, data)
        s3_client(self.stack).put_object(Bucket=self.bucket, Key=key, Body=data)

    def delete_object(self, key: str) -> None:
        if self.backend != "s3":
            return backends.delete(self.stack, self.backend, self.bucket, key)
        s3_client(self.stack).delete_object(Bucket=self.bucket, Key=key)


SAMPLE_SCHEMA = [
    """CREATE TABLE customers (
        id INT PRIMARY KEY AUTO_INCREMENT,
        name VARCHAR(100) NOT NULL,
        city VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
        note TEXT
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE orders (
        id INT PRIMARY KEY AUTO_INCREMENT,
        customer_id INT NOT NULL,
        amount DECIMAL(10,2) NOT NULL,
        created DATETIME NOT NULL DEFAULT '2026-01-01 00:00:00',
        FOREIGN KEY (customer_id) REFERENCES customers(id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE blobs (id INT PRIMARY KEY, payload LONGBLOB, digest BINARY(32)) ENGINE=InnoDB""",
    """CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, msg VARCHAR(200)) ENGINE=InnoDB""",
    """CREATE VIEW big_spenders AS
        SELECT c.name, SUM(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id
        GROUP BY c.name HAVING SUM(o.amount) > 100""",
    """CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW
        INSERT INTO audit (msg) VALUES (CONCAT('order ', NEW.id))""",
    """CREATE PROCEDURE add_order(IN cid INT, IN amt DECIMAL(10,2))
        BEGIN INSERT INTO orders (customer_id, amount) VALUES (cid, amt); END""",
    """CREATE FUNCTION double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2""",
    """CREATE EVENT nightly_cleanup ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
        DO DELETE FROM audit WHERE id < 0""",
]


NOTE = "line1\nline2 'quoted' \"dq\" \\ back"


def load_sample_data(stack: Stack, database: str, *, rows: int = 200) -> None:
    conn = db_connect(stack)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
            cur.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
            cur.execute(f"USE `{database}`")
            for stmt in SAMPLE_SCHEMA:
                cur.execute(stmt)
            cities = ["Zürich", "東京", "São Paulo", "Kraków", "🦄 Unicorn Town", "Reykjavík"]
            cur.executemany(
                "INSERT INTO customers (name, city, note) VALUES (%s, %s, %s)",
                [(f"customer-{i}", cities[i % len(cities)], NOTE * (i % 3)) for i in range(rows)],
            )
            for i in range(rows):
                cur.execute("CALL add_order(%s, %s)", (i % rows + 1, (i * 37) % 500 + 0.5))
            payloads = [(i, os.urandom(64 + i * 13), os.urandom(32)) for i in range(50)]
            payloads.append((999, bytes(range(256)) * 4, b"\x00" * 32))
            cur.executemany("INSERT INTO blobs VALUES (%s, %s, %s)", payloads)
    finally:
        conn.close()


@pytest.fixture
def env(
    request: pytest.FixtureRequest, stack: Stack, api: Any, namespace: str, operator: OperatorProcess
) -> Iterator[Env]:
    """A namespace, a database with data and an empty bucket. S3 unless the test parametrizes it
    indirectly with "azureBlob[:mode]" or "gcs[:mode]" (see tests/e2e/backends.py)."""
    database = "shop_" + namespace.replace("-", "_")
    bucket = "bk-" + namespace
    backend, mode = backends.split(getattr(request, "param", "s3"))
    if backend == "s3":
        s3_client(stack).create_bucket(Bucket=bucket)
    else:
        backends.create_bucket(stack, backend, bucket)
    load_sample_data(stack, database)
    # Every test starts from a running operator and counts restarts from here, so a test that
    # failed while the operator was down never fails the next one.
    operator.wait_ready()
    yield Env(
        stack=stack, api=api, namespace=namespace, database=database, bucket=bucket, backend=backend, credentials=mode
    )
    if not os.environ.get("MBO_KEEP_NAMESPACES"):
        with contextlib.suppress(Exception):
            db_connect(stack).cursor().execute(f"DROP DATABASE IF EXISTS `{database}`")


def wait_until(fn: Any, timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    return None
