#!/usr/bin/env python3
"""The local test stack: a real Kubernetes control plane, a node, MariaDB, MinIO, Azurite and fake-gcs-server.

The node is the upstream kubelet and kube-proxy with containerd, runc and a CNI bridge running the
images built by hack/build-image.sh (see hack/realnode.py), in a network namespace of their own,
so several stacks run side by side. Host-side services listen on the stack's `host` address (the
host end of the node's veth), which pods reach.
Everything runs as plain processes on free ports, under one state directory.
`up` reuses a stack that is already running and healthy; `down` stops every process it started.
The stack description (ports, credentials, kubeconfig) is written to `<state>/env.json` and
`<state>/env.sh`; both are mode 0600 because they hold the generated passwords.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import realnode

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
NODE_NAME = "mbo-node"
SERVICE_CIDR = "10.0.0.0/24"

# Order matters: started in this order, stopped in reverse.
COMPONENTS = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
    "mariadb",
    "minio",
    "azurite",
    "fake-gcs",
]


def check_node_mode() -> None:
    """MBO_NODE chose between the retired process kubelet and the real node; only `real` is left."""
    mode = os.environ.get("MBO_NODE", "real")
    if mode != "real":
        raise SystemExit(f"MBO_NODE={mode!r}: the process kubelet is retired; the stack always runs the real node")


def read_env(sd: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((sd / "env.json").read_text()))
    except (OSError, ValueError):
        return None


def log(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


def state_dir() -> Path:
    return Path(os.environ.get("MBO_STACK_DIR", REPO / ".stack")).resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bin_dir() -> Path:
    out = subprocess.run(
        ["bash", str(HACK / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- certificates


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_pki(pki: Path, host: str = "127.0.0.1", node_ip: str = "127.0.0.1") -> None:
    """A throwaway CA and the leaf certificates the control plane and the kubelet need.
    `host` is the address the stack listens on (loopback, or the host end of the real node's
    veth); `node_ip` the one the kubelet serves on (the real node's bridge)."""
    extra = "" if host == "127.0.0.1" else f",IP:{host}"
    node_extra = "" if node_ip == "127.0.0.1" else f",IP:{node_ip}"
    pki.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = pki / "ca.key", pki / "ca.crt"
    if not ca_crt.exists():
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            str(ca_key),
            "-out",
            str(ca_crt),
            "-days",
            "3650",
            "-subj",
            "/CN=mbo-local-ca",
        )
    leaves = {
        # name: (subject, extendedKeyUsage, subjectAltName)
        "apiserver": (
            "/CN=kube-apiserver",
            "serverAuth",
            "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            "DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.0.0.1" + extra,
        ),
        "admin": ("/O=system:masters/CN=mbo-admin", "clientAuth", None),
        "controller-manager": ("/CN=system:kube-controller-manager", "clientAuth", None),
        "scheduler": ("/CN=system:kube-scheduler", "clientAuth", None),
        "kubelet-client": ("/O=system:nodes/CN=system:node:" + NODE_NAME, "clientAuth", None),
        "apiserver-kubelet-client": ("/O=kubelet-api-admins/CN=kube-apiserver-kubelet-client", "clientAuth", None),
        "kubelet-serving": ("/CN=" + NODE_NAME, "serverAuth", "DNS:localhost,IP:127.0.0.1" + node_extra),
        "kube-proxy": ("/CN=system:kube-proxy", "clientAuth", None),
    }
    for name, (subject, eku, san) in leaves.items():
        crt = pki / f"{name}.crt"
        if crt.exists():
            continue
        key, csr, ext = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.ext"
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
        _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", subject)
        lines = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment", f"extendedKeyUsage={eku}"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_crt),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(crt),
            "-days",
            "3650",
            "-extfile",
            str(ext),
        )
    if not (pki / "sa.key").exists():
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pki / "sa.key"))
        _openssl("ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    for p in pki.iterdir():
        if p.suffix == ".key":
            p.chmod(0o600)


def write_kubeconfig(path: Path, *, server: str, pki: Path, user: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "mbo", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(pki / f"{user}.crt"),
                            "client-key": str(pki / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [{"name": "mbo", "context": {"cluster": "mbo", "user": user}}],
                "current-context": "mbo",
            },
            indent=2,
        )
    )
    path.chmod(0o600)


# --------------------------------------------------------------------------- processes


def pid_file(sd: Path, name: str) -> Path:
    return sd / "pids" / f"{name}.pid"


def start(sd: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    (sd / "pids").mkdir(parents=True, exist_ok=True)
    (sd / "logs").mkdir(parents=True, exist_ok=True)
    logf = open(sd / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        cwd=sd,
    )
    logf.close()
    pid_file(sd, name).write_text(str(proc.pid))
    log(f"started {name} (pid {proc.pid})")


def alive(sd: Path, name: str) -> bool:
    pf = pid_file(sd, name)
    if not pf.exists():
        return False
    pid = int(pf.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop(sd: Path, name: str, grace: float = 15.0) -> None:
    pf = pid_file(sd, name)
    if not pf.exists():
        return
    pid = int(pf.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pf.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    if _group_alive(pid):
        log(f"{name} ignored SIGTERM, killing")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pf.unlink(missing_ok=True)
    log(f"stopped {name}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Zombies still count in the group until reaped by init; treat a group of zombies as gone.
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_for(what: str, check: Any, timeout: float, sd: Path | None = None, name: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_err = ""
    while time.monotonic() < deadline:
        try:
            if check():
                log(f"{what} is ready")
                return
        except Exception as e:
            last_err = str(e)
        if sd and name and not alive(sd, name):
            tail = (sd / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"{name} exited while waiting for {what}:\n{tail}")
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}: {last_err}")


def https_get(url: str, pki: Path, user: str = "admin") -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / f"{user}.crt"), str(pki / f"{user}.key"))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def http_ok(url: str, insecure: bool = False) -> bool:
    ctx = ssl._create_unverified_context() if insecure else None
    with urllib.request.urlopen(url, context=ctx, timeout=3) as r:
        return bool(r.status == 200)


# --------------------------------------------------------------------------- components


def start_control_plane(sd: Path, bins: Path, env: dict[str, Any]) -> None:
    pki = sd / "pki"
    p = env["ports"]
    host = env["host"]
    start(
        sd,
        "etcd",
        [
            str(bins / "etcd"),
            "--name=mbo",
            f"--data-dir={sd / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p['etcd']}",
            f"--advertise-client-urls=http://127.0.0.1:{p['etcd']}",
            f"--listen-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
            f"--initial-cluster=mbo=http://127.0.0.1:{p['etcd_peer']}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )
    wait_for("etcd", lambda: http_ok(f"http://127.0.0.1:{p['etcd']}/health"), 60, sd, "etcd")
    start(
        sd,
        "kube-apiserver",
        [
            str(bins / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            f"--bind-address={host}",
            f"--advertise-address={host}",
            f"--secure-port={p['apiserver']}",
            f"--cert-dir={sd / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            # kube-proxy routes the `kubernetes` Service to the apiserver's endpoints.
            "--endpoint-reconciler-type=lease",
            "--profiling=false",
            "--v=1",
        ],
    )
    server = env["apiserver"]
    wait_for(
        "kube-apiserver /readyz",
        lambda: https_get(server + "/readyz", pki)[0] == 200,
        120,
        sd,
        "kube-apiserver",
    )
    for user in ("admin", "controller-manager", "scheduler", "kubelet-client", "kube-proxy"):
        write_kubeconfig(sd / f"{user}.kubeconfig", server=server, pki=pki, user=user)
    kc = sd / "controller-manager.kubeconfig"
    start(
        sd,
        "kube-controller-manager",
        [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['controller_manager']}",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--v=1",
        ],
    )
    ks = sd / "scheduler.kubeconfig"
    start(
        sd,
        "kube-scheduler",
        [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={ks}",
            f"--authentication-kubeconfig={ks}",
            f"--authorization-kubeconfig={ks}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['scheduler']}",
            "--leader-elect=false",
            "--v=1",
        ],
    )
    wait_for(
        "kube-controller-manager",
        lambda: http_ok(f"https://127.0.0.1:{p['controller_manager']}/healthz", insecure=True),
        60,
        sd,
        "kube-controller-manager",
    )
    wait_for(
        "kube-scheduler",
        lambda: http_ok(f"https://127.0.0.1:{p['scheduler']}/healthz", insecure=True),
        60,
        sd,
        "kube-scheduler",
    )


def start_real_node(sd: Path, bins: Path, env: dict[str, Any]) -> None:
    """containerd (with the images imported), then the upstream kubelet and kube-proxy."""
    net = env["network"]
    realnode.setup_cgroups(net)
    cfg = realnode.write_containerd_config(sd, net)
    # containerd (and with it the pods' CNI bridge), the kubelet and kube-proxy live in the
    # node's own network namespace; see hack/realnode.py.
    start(sd, "containerd", realnode.in_netns(net, ["containerd", f"--config={cfg}"]))
    sock = realnode.containerd_socket(sd)
    wait_for(
        "containerd",
        lambda: sock.exists() and realnode.ctr(sd, "version", check=False).returncode == 0,
        60,
        sd,
        "containerd",
    )
    ensure_images(sd, env)
    start(sd, "kubelet", realnode.in_netns(net, realnode.kubelet_argv(sd, bins, env, net)))
    start(sd, "kube-proxy", realnode.in_netns(net, realnode.kube_proxy_argv(sd, bins, env, net)))
    wait_for("node Ready", lambda: node_ready(sd), 120, sd, "kubelet")


def build_images() -> list[tuple[str, str]]:
    out = subprocess.run(["bash", str(HACK / "build-image.sh")], check=True, stdout=subprocess.PIPE, text=True).stdout
    return [(line.split()[0], line.split()[1]) for line in out.strip().splitlines()]


def ensure_images(sd: Path, env: dict[str, Any]) -> None:
    """Builds (or reuses) the images and imports them; records the operator image in env.json,
    whose tag is a hash of its inputs, so a changed operator always gets new pods."""
    images = build_images()
    realnode.import_images(sd, images)
    env["image"] = images[-1][0]
    write_env(sd, env)


def kubectl(sd: Path, *args: str, check: bool = True) -> str:
    env = json.loads((sd / "env.json").read_text())
    return subprocess.run(
        [env["kubectl"], f"--kubeconfig={env['kubeconfig']}", *args],
        check=check,
        capture_output=True,
        text=True,
    ).stdout


def node_ready(sd: Path) -> bool:
    out = kubectl(sd, "get", "node", NODE_NAME, "-o", "json", check=False)
    if not out:
        return False
    node = json.loads(out)
    conds = node["status"].get("conditions", [])
    # The node lifecycle controller taints a new node not-ready until it has seen Ready=True;
    # the node is usable (schedulable) only once that taint is gone again.
    taints = {t["key"] for t in node["spec"].get("taints") or []}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
    if not ready or taints & {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}:
        return False
    # The real kubelet creates its heartbeat Lease a little after reporting Ready; a node without
    # one is not fully up (a session-wide node watch caught the gap).
    return bool(kubectl(sd, "get", "lease", NODE_NAME, "-n", "kube-node-lease", "-o", "name", check=False).strip())


def start_mariadb(sd: Path, env: dict[str, Any]) -> None:
    db = env["mariadb"]
    datadir = sd / "mariadb" / "data"
    fresh = not datadir.exists()
    (sd / "mariadb").mkdir(parents=True, exist_ok=True)
    cnf = sd / "mariadb" / "my.cnf"
    cnf.write_text(
        "\n".join(
            [
                "[mysqld]",
                f"datadir={datadir}",
                f"socket={db['socket']}",
                f"port={db['port']}",
                f"bind-address={','.join(dict.fromkeys(['127.0.0.1', env.get('host', '127.0.0.1')]))}",
                f"pid-file={sd / 'mariadb' / 'mariadbd.pid'}",
                f"log-bin={sd / 'mariadb' / 'binlog' / 'mysql-bin'}",
                "server-id=1",
                "binlog-format=ROW",
                "event-scheduler=ON",
                "innodb-buffer-pool-size=256M",
                "innodb-flush-log-at-trx-commit=2",
                "skip-name-resolve",
                "user=root",
                "",
            ]
        )
    )
    (sd / "mariadb" / "binlog").mkdir(exist_ok=True)
    if fresh:
        subprocess.run(
            [
                "mariadb-install-db",
                f"--defaults-file={cnf}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    start(sd, "mariadb", [mariadbd, f"--defaults-file={cnf}"])

    def ping() -> bool:
        r = subprocess.run(
            ["mariadb-admin", f"--socket={db['socket']}", "-uroot", "ping"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return r.returncode == 0 or _root_ping(db)

    wait_for("mariadb", ping, 60, sd, "mariadb")
    if fresh:
        # Root from loopback, and from the stack's /24: the host end and the pods.
        hosts = ["127.0.0.1", env["network"]["cidr"].rsplit(".", 1)[0] + ".%"]
        sql = f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{db['root_password']}';"
        for h in hosts:
            sql += (
                f"CREATE USER IF NOT EXISTS 'root'@'{h}' IDENTIFIED BY '{db['root_password']}';"
                f"ALTER USER 'root'@'{h}' IDENTIFIED BY '{db['root_password']}';"
                f"GRANT ALL ON *.* TO 'root'@'{h}' WITH GRANT OPTION;"
            )
        sql += "FLUSH PRIVILEGES;"
        subprocess.run(["mariadb", f"--socket={db['socket']}", "-uroot"], input=sql, text=True, check=True)


def _root_ping(db: dict[str, Any]) -> bool:
    r = subprocess.run(
        ["mariadb-admin", f"--socket={db['socket']}", "-uroot", "ping"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MYSQL_PWD": db["root_password"]},
    )
    return r.returncode == 0


MINIO_KMS_KEY_NAME = "mbo-stack-key"
MINIO_KMS_KEY = "bWJvLWxvY2FsLXN0YWNrLXRlc3Qta2V5LTMyYnl0ZXM="  # base64 of 32 bytes; not a secret


def start_minio(sd: Path, bins: Path, env: dict[str, Any]) -> None:
    s3 = env["s3"]
    (sd / "minio").mkdir(parents=True, exist_ok=True)
    start(
        sd,
        "minio",
        [
            str(bins / "minio"),
            "server",
            str(sd / "minio" / "data"),
            "--address",
            f"{env.get('host', '127.0.0.1')}:{s3['port']}",
            "--console-address",
            f"127.0.0.1:{env['ports']['minio_console']}",
            "--quiet",
        ],
        env={
            "MINIO_ROOT_USER": s3["access_key"],
            "MINIO_ROOT_PASSWORD": s3["secret_key"],
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            # A static KMS key (a fixed, local-only test key), so that S3 server-side encryption
            # (SSE-S3 and SSE-KMS with key id MINIO_KMS_KEY_NAME) can be tested against MinIO.
            "MINIO_KMS_SECRET_KEY": f"{MINIO_KMS_KEY_NAME}:{MINIO_KMS_KEY}",
        },
    )
    wait_for("minio", lambda: http_ok(f"{s3['endpoint']}/minio/health/ready"), 60, sd, "minio")


def start_azurite(sd: Path, bins: Path, env: dict[str, Any]) -> None:
    """Azurite's blob service with a generated account (not the public well-known dev key)."""
    az = env["azure"]
    (sd / "azurite").mkdir(parents=True, exist_ok=True)
    start(
        sd,
        "azurite",
        [
            str(bins / "azurite-blob"),
            "--blobHost",
            env.get("host", "127.0.0.1"),
            "--blobPort",
            str(az["port"]),
            "--location",
            str(sd / "azurite"),
            # The Python SDK may speak a newer service version than this Azurite knows.
            "--skipApiVersionCheck",
            "--disableProductStyleUrl",
            "--silent",
        ],
        env={"AZURITE_ACCOUNTS": f"{az['account']}:{az['key']}"},
    )
    wait_for("azurite", lambda: _tcp_open(env.get("host", "127.0.0.1"), az["port"]), 60, sd, "azurite")


def start_fake_gcs(sd: Path, bins: Path, env: dict[str, Any]) -> None:
    gcs = env["gcs"]
    (sd / "fake-gcs").mkdir(parents=True, exist_ok=True)
    host = env.get("host", "127.0.0.1")
    start(
        sd,
        "fake-gcs",
        [
            str(bins / "fake-gcs-server"),
            "-scheme",
            "http",
            "-host",
            host,
            "-port",
            str(gcs["port"]),
            "-backend",
            "filesystem",
            "-filesystem-root",
            str(sd / "fake-gcs"),
            "-external-url",
            gcs["endpoint"],
            "-public-host",
            f"{host}:{gcs['port']}",
            "-log-level",
            "warn",
        ],
    )
    wait_for("fake-gcs-server", lambda: http_ok(f"{gcs['endpoint']}/storage/v1/b"), 60, sd, "fake-gcs")


def _tcp_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=2):
        return True


# --------------------------------------------------------------------------- commands


def new_env(sd: Path, bins: Path) -> dict[str, Any]:
    net = realnode.network_for(sd, realnode.taken_blocks())
    host = net["host_ip"]
    ports = {
        k: free_port()
        for k in (
            "etcd",
            "etcd_peer",
            "apiserver",
            "controller_manager",
            "scheduler",
            "kubelet",
            "mariadb",
            "minio",
            "minio_console",
            "azurite",
            "fake_gcs",
            "kubelet_healthz",
            "kube_proxy_healthz",
            "kube_proxy_metrics",
        )
    }
    s3_port = ports["minio"]
    env: dict[str, Any] = {
        "state_dir": str(sd),
        "bin_dir": str(bins),
        "kubectl": str(bins / "kubectl"),
        "helm": str(bins / "helm"),
        "kubeconfig": str(sd / "admin.kubeconfig"),
        "node_name": NODE_NAME,
        "node": "real",
        # The address the apiserver, MariaDB and MinIO listen on, reachable from pods.
        "host": host,
        "network": net,
        "ports": ports,
        "apiserver": f"https://{host}:{ports['apiserver']}",
        "mariadb": {
            "host": host,
            "port": ports["mariadb"],
            "socket": str(sd / "mariadb" / "mysqld.sock"),
            "root_user": "root",
            "root_password": secrets.token_urlsafe(18),
        },
        "s3": {
            "endpoint": f"http://{host}:{s3_port}",
            "port": s3_port,
            "region": "us-east-1",
            "access_key": "mbo" + secrets.token_hex(6),
            "secret_key": secrets.token_urlsafe(24),
            "server": "minio",
        },
        # Azurite: a generated account name and key; blob URLs are path style, /<account>/<container>.
        "azure": {
            "port": ports["azurite"],
            "account": "mbo" + secrets.token_hex(4),
            "key": base64.b64encode(secrets.token_bytes(64)).decode(),
            "endpoint": "",
        },
        "gcs": {"port": ports["fake_gcs"], "endpoint": f"http://{host}:{ports['fake_gcs']}"},
    }
    env["azure"]["endpoint"] = f"http://{host}:{ports['azurite']}/{env['azure']['account']}"
    return env


def write_env(sd: Path, env: dict[str, Any]) -> None:
    path = sd / "env.json"
    path.write_text(json.dumps(env, indent=2))
    path.chmod(0o600)
    sh = sd / "env.sh"
    sh.write_text(
        "\n".join(
            [
                f"export KUBECONFIG={env['kubeconfig']}",
                f"export PATH={env['bin_dir']}:$PATH",
                f"export MBO_STACK_DIR={sd}",
                "",
            ]
        )
    )
    sh.chmod(0o600)


def healthy(sd: Path) -> bool:
    env = read_env(sd)
    if env is None or env.get("node") != "real":
        return False
    if not all(alive(sd, c) for c in COMPONENTS):
        return False
    try:
        if https_get(env["apiserver"] + "/readyz", sd / "pki")[0] != 200:
            return False
        return node_ready(sd) and http_ok(env["s3"]["endpoint"] + "/minio/health/ready") and _root_ping(env["mariadb"])
    except Exception:
        return False


def cmd_up(_: argparse.Namespace) -> None:
    sd = state_dir()
    check_node_mode()
    if healthy(sd):
        log(f"reusing healthy stack in {sd}")
        env = read_env(sd)
        if env:
            ensure_images(sd, env)
        print(sd / "env.json")
        return
    t0 = time.monotonic()
    cmd_down(argparse.Namespace(), quiet=True)
    bins = bin_dir()
    # Control-plane state is thrown away on every fresh start: a half-dead etcd from an earlier
    # run must never leak objects into this one. MariaDB and MinIO data go with it.
    if sd.exists():
        shutil.rmtree(sd)
    sd.mkdir(parents=True)
    sd.chmod(0o700)
    env = new_env(sd, bins)
    write_env(sd, env)
    make_pki(sd / "pki", env["host"], env["network"]["gateway"])
    realnode.setup_network(sd, env["network"])
    start_control_plane(sd, bins, env)
    start_real_node(sd, bins, env)
    start_mariadb(sd, env)
    start_minio(sd, bins, env)
    start_azurite(sd, bins, env)
    start_fake_gcs(sd, bins, env)
    log(f"stack up in {time.monotonic() - t0:.1f}s; KUBECONFIG={env['kubeconfig']}")
    print(sd / "env.json")


def cmd_down(_: argparse.Namespace, quiet: bool = False) -> None:
    sd = state_dir()
    env = read_env(sd)
    # Extra processes started on top of the stack (the demo's operator) go first.
    known = set(COMPONENTS)
    extras = sorted(p.stem for p in (sd / "pids").glob("*.pid") if p.stem not in known) if sd.exists() else []
    for name in [*extras, *reversed(COMPONENTS)]:
        stop(sd, name)
    if env and env.get("node") == "real":
        # Pods outlive the kubelet and containerd (their shims keep them): kill them, then take
        # away their mounts, this node's cgroups and log links, and its network namespace (with
        # the bridge, the veth pair and every iptables chain in it).
        net = env["network"]
        realnode.kill_pod_processes(net)
        realnode.kill_shims(sd)
        realnode.kill_pod_processes(net)
        realnode.unmount_under(sd)
        realnode.remove_cgroups(net)
        realnode.remove_log_links(sd)
        realnode.remove_shim_sockets()
        realnode.teardown_network(net)
    if not quiet:
        log("stack stopped")


def cmd_env(_: argparse.Namespace) -> None:
    sd = state_dir()
    print((sd / "env.sh").read_text(), end="")


def cmd_status(_: argparse.Namespace) -> None:
    sd = state_dir()
    for c in COMPONENTS:
        print(f"{c:26} {'running' if alive(sd, c) else 'stopped'}")
    print(f"healthy: {healthy(sd)}")


def cmd_stop_db(_: argparse.Namespace) -> None:
    """Fault injection for tests: the database goes down (its data stays)."""
    stop(state_dir(), "mariadb")


def cmd_start_db(_: argparse.Namespace) -> None:
    sd = state_dir()
    if not alive(sd, "mariadb"):
        start_mariadb(sd, json.loads((sd / "env.json").read_text()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("stop-db").set_defaults(fn=cmd_stop_db)
    sub.add_parser("start-db").set_defaults(fn=cmd_start_db)
    sub.add_parser("up").set_defaults(fn=cmd_up)
    sub.add_parser("down").set_defaults(fn=cmd_down)
    sub.add_parser("env").set_defaults(fn=cmd_env)
    sub.add_parser("status").set_defaults(fn=cmd_status)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
