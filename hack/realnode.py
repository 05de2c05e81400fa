"""The real node: containerd + runc + CNI bridge, the upstream kubelet and kube-proxy.

Used by hack/stack.py when MBO_NODE=real. Everything it creates is named after the stack's state
directory (bridge, pod subnet, iptables comments), lives under that directory (containerd's root
and state, network namespaces, pod logs, CNI IP allocations) or is listed in it, so `down` can take
all of it away again and two worktrees never share a network.

Why these settings:
- cgroup v1 and no systemd on this machine: the kubelet uses the cgroupfs driver and
  `failCgroupV1: false` (v1.35 refuses cgroup v1 otherwise).
- Pods must reach the apiserver, MariaDB and MinIO, and nothing else: those listen on the bridge's
  host address; the CNI bridge does no masquerading, and an iptables rule drops forwarded traffic
  from the pod subnet to any interface but the bridge, so no pod packet can leave the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

CNI_BIN = Path("/usr/lib/cni")
RUNC = "/usr/sbin/runc"
PAUSE_IMAGE = "localhost/mbo/pause:1"
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"


def network_for(sd: Path) -> dict[str, str]:
    """A bridge name and /24 derived from the state directory, stable across restarts."""
    h = hashlib.sha256(str(sd).encode()).hexdigest()
    third = int(h[:4], 16) % 200 + 20
    return {
        "bridge": f"mbo-{h[:8]}",
        "cidr": f"10.213.{third}.0/24",
        "host_ip": f"10.213.{third}.1",
        "comment": f"mbo-stack:{h[:8]}",
    }


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


# --------------------------------------------------------------------------- network


def _iptables_rules(net: dict[str, str]) -> list[list[str]]:
    # In mangle, not filter: kube-proxy puts its own ACCEPTing chains at the top of filter/FORWARD,
    # and mangle/FORWARD is evaluated before any of them.
    c = ["-t", "mangle", "-m", "comment", "--comment", net["comment"]]
    return [
        # Pod traffic may go to the bridge (other pods) and to the host itself (INPUT), never out.
        ["FORWARD", "-s", net["cidr"], "!", "-o", net["bridge"], *c, "-j", "DROP"],
        ["FORWARD", "-d", net["cidr"], "!", "-i", net["bridge"], *c, "-j", "DROP"],
    ]


def refuse_second_node() -> None:
    """One real node per machine: pod cgroups (/kubepods), kube-proxy's iptables chains and the
    Service range are machine-wide, so a second kubelet would fight the first (and `down` would
    kill its pods). Called after our own `down`, so any kubelet left is someone else's."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (p / "comm").read_text().strip() in ("kubelet", "kube-proxy"):
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                raise SystemExit(f"another real node runs on this machine (pid {p.name}: {cmd[:160]}); stop it first")


def setup_network(sd: Path, net: dict[str, str]) -> None:
    """The bridge with the host address (so the control plane can bind to it before any pod
    exists) and the drop rules; the original ip_forward is kept to restore it on `down`."""
    fwd = Path("/proc/sys/net/ipv4/ip_forward")
    (sd / "ip_forward.orig").write_text(fwd.read_text().strip())
    if _run("ip", "link", "show", net["bridge"], check=False).returncode != 0:
        _run("ip", "link", "add", net["bridge"], "type", "bridge")
    _run("ip", "addr", "replace", f"{net['host_ip']}/24", "dev", net["bridge"])
    _run("ip", "link", "set", net["bridge"], "up")
    for rule in _iptables_rules(net):
        if _run("iptables", "-C", *rule, check=False).returncode != 0:
            _run("iptables", "-I", *rule)


def teardown_network(sd: Path, net: dict[str, str]) -> None:
    for rule in _iptables_rules(net):
        while _run("iptables", "-D", *rule, check=False).returncode == 0:
            pass
    _run("ip", "link", "del", net["bridge"], check=False)
    orig = sd / "ip_forward.orig"
    if orig.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(orig.read_text().strip() + "\n")


def write_cni_config(sd: Path, net: dict[str, str]) -> Path:
    conf_dir = sd / "cni" / "net.d"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": "1.0.0",
        "name": "mbo",
        "plugins": [
            {
                "type": "bridge",
                "bridge": net["bridge"],
                "isGateway": True,
                # No masquerading: pod traffic is never meant to leave the machine.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": net["cidr"], "rangeStart": net["cidr"].rsplit(".", 1)[0] + ".10"}]],
                    "routes": [{"dst": net["cidr"]}, {"dst": "10.0.0.0/24"}],
                    "dataDir": str(sd / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (conf_dir / "10-mbo.conflist").write_text(json.dumps(conf, indent=2))
    return conf_dir


# --------------------------------------------------------------------------- containerd


def containerd_socket(sd: Path) -> Path:
    return sd / "containerd" / "containerd.sock"


def write_containerd_config(sd: Path, net: dict[str, str]) -> Path:
    conf_dir = write_cni_config(sd, net)
    root = sd / "containerd"
    root.mkdir(parents=True, exist_ok=True)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    text = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{containerd_socket(sd)}"

[ttrpc]
  address = "{root / "containerd.sock.ttrpc"}"

[debug]
  level = "warn"

[metrics]
  address = ""

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Network namespaces under our own state directory, so `down` finds and unmounts them.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  # This machine's root lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below
  # containerd's own (the pause container asks for -998), so clamp instead of failing.
  restrict_oom_score_adj = true
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{RUNC}"
  Root = "{root / "runc"}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{conf_dir}"
  max_conf_num = 1

[{cri}.registry]
  config_path = ""
"""
    path = root / "config.toml"
    path.write_text(text)
    return path


def ctr(sd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("ctr", f"--address={containerd_socket(sd)}", "--namespace=k8s.io", *args, check=check)


def import_images(sd: Path, images: list[tuple[str, str]]) -> None:
    """Imports OCI archives under their names; the kubelet never pulls (no registry here)."""
    have = set(ctr(sd, "images", "list", "--quiet").stdout.split())
    for name, archive in images:
        if name in have:
            continue
        # --all-platforms: the archive holds one platform; without it ctr wants a match by name.
        ctr(sd, "images", "import", "--all-platforms", "--no-unpack", archive)
        if name not in set(ctr(sd, "images", "list", "--quiet").stdout.split()):
            raise SystemExit(f"importing {archive} did not create image {name}")


# --------------------------------------------------------------------------- kubelet / kube-proxy


def write_kubelet_config(sd: Path, env: dict[str, Any], net: dict[str, str]) -> Path:
    pki = sd / "pki"
    p = env["ports"]
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": net["host_ip"],
        "port": p["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": p["kubelet_healthz"],
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        # Only holders of a certificate from the stack's CA reach the kubelet's API at all.
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{containerd_socket(sd)}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "podLogsDir": str(sd / "pod-logs"),
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        # Images are imported, never pulled: image GC must not delete them under disk pressure.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "nodeStatusUpdateFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "localStorageCapacityIsolation": True,
        "shutdownGracePeriod": "0s",
        "containerLogMaxSize": "50Mi",
    }
    path = sd / "kubelet-config.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def kubelet_argv(sd: Path, bins: Path, env: dict[str, Any], net: dict[str, str]) -> list[str]:
    return [
        str(bins / "kubelet"),
        f"--config={write_kubelet_config(sd, env, net)}",
        f"--kubeconfig={sd / 'kubelet-client.kubeconfig'}",
        f"--root-dir={sd / 'kubelet'}",
        f"--hostname-override={env['node_name']}",
        f"--node-ip={net['host_ip']}",
        "--v=1",
    ]


def kube_proxy_argv(sd: Path, bins: Path, env: dict[str, Any], net: dict[str, str]) -> list[str]:
    p = env["ports"]
    cfg = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(sd / "kube-proxy.kubeconfig")},
        "hostnameOverride": env["node_name"],
        "mode": "iptables",
        "clusterCIDR": net["cidr"],
        "bindAddress": net["host_ip"],
        "healthzBindAddress": f"127.0.0.1:{p['kube_proxy_healthz']}",
        "metricsBindAddress": f"127.0.0.1:{p['kube_proxy_metrics']}",
        # Leave the machine's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        # NodePorts only on the bridge address, never on the machine's real interfaces.
        "nodePortAddresses": [f"{net['host_ip']}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }
    path = sd / "kube-proxy-config.json"
    path.write_text(json.dumps(cfg, indent=2))
    return [str(bins / "kube-proxy"), f"--config={path}", "--v=1"]


def kube_proxy_cleanup(bins: Path) -> None:
    """Removes the KUBE-* iptables chains kube-proxy installed."""
    if (bins / "kube-proxy").exists():
        _run(str(bins / "kube-proxy"), "--cleanup", check=False)


# --------------------------------------------------------------------------- teardown

# The chains the kubelet itself adds (kube-proxy --cleanup removes kube-proxy's).
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


def kubelet_iptables_cleanup() -> None:
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = _run(tool, "-t", table, "-S", check=False).stdout.splitlines()
            for rule in rules:
                parts = rule.split()
                if parts[:1] == ["-A"] and any(f"-j {c}" in rule for c in KUBELET_CHAINS):
                    _run(tool, "-t", table, "-D", *parts[1:], check=False)
            for chain in KUBELET_CHAINS:
                _run(tool, "-t", table, "-F", chain, check=False)
                _run(tool, "-t", table, "-X", chain, check=False)


def remove_shim_sockets() -> None:
    """containerd 1.6 keeps shim sockets in /run/containerd/s whatever its state dir; killed
    shims leave them behind. Only taken away when no other containerd runs on the machine."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (p / "comm").read_text().strip() in ("containerd", "containerd-shim-runc-v2"):
                return
    s = Path("/run/containerd/s")
    if s.is_dir():
        for f in s.iterdir():
            with contextlib.suppress(OSError):
                f.unlink()


def _kubepods_cgroups() -> list[Path]:
    out = []
    for hier in CGROUP_ROOT.iterdir():
        d = hier / KUBEPODS
        if d.is_dir():
            out.append(d)
    return out


def kill_pod_processes() -> None:
    """Every process in the kubelet's pod cgroups (containers and pause), in every hierarchy."""
    for _ in range(3):
        pids: set[int] = set()
        for d in _kubepods_cgroups():
            for procs in d.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(x) for x in procs.read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def kill_shims(sd: Path) -> None:
    """containerd's shims outlive containerd; ours name our socket on their command line."""
    sock = str(containerd_socket(sd)).encode()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmd and sock in cmd:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(p.name), signal.SIGKILL)


def remove_cgroups() -> None:
    for d in _kubepods_cgroups():
        for sub in sorted((x for x in d.rglob("*") if x.is_dir()), key=lambda x: len(x.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()


def unmount_under(root: Path) -> None:
    """Unmounts everything mounted below root (volumes, rootfs, netns), deepest first."""
    prefix = str(root) + "/"
    for _ in range(3):
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp.startswith(prefix):
                mounts.append(mp)
        if not mounts:
            return
        for mp in sorted(set(mounts), key=len, reverse=True):
            if _run("umount", mp, check=False).returncode != 0:
                _run("umount", "-l", mp, check=False)
