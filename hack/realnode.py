"""The real node: containerd + runc + CNI bridge, the upstream kubelet and kube-proxy.

The local stack's only node (hack/stack.py). Several real nodes run side by side on one machine
(one per worktree): everything a node creates is named after the stack's state directory (network
namespace, veth pair, bridge, pod subnet, kubelet cgroup root), lives under that directory
(containerd's root and state, pod network namespaces, pod logs, CNI IP allocations) or inside the
node's own network namespace (the bridge, kube-proxy's and the kubelet's iptables chains), so
`down` takes all of it away and two stacks never share a network, a cgroup or an iptables chain.

Why these settings:
- cgroup v1 and no systemd on this machine: the kubelet uses the cgroupfs driver and
  `failCgroupV1: false` (v1.35 refuses cgroup v1 otherwise), under a cgroup root of its own.
- containerd, the kubelet and kube-proxy run in the node's network namespace: kube-proxy's chains
  (KUBE-SERVICES...) have fixed names, so two kube-proxies in one namespace would overwrite each
  other. A veth pair links that namespace to the machine's; the host end's address is the stack's
  `host`, where the apiserver, MariaDB, MinIO and any other host-side service listen for pods.
- Pod traffic never leaves the machine: the node's namespace has no default route (only the pod
  subnet and the host end of the veth), pods get routes to the stack's /24 and the Service range
  only, the bridge does no masquerading, and the machine's own ip_forward is not touched.
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

import procs

CNI_BIN = Path("/usr/lib/cni")
RUNC = "/usr/sbin/runc"
PAUSE_IMAGE = "localhost/mbo/pause:1"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def network_for(sd: Path, taken: frozenset[str] = frozenset()) -> dict[str, str]:
    """The node's names and addresses, derived from the state directory (stable across restarts),
    skipping /24s in `taken` (another stack's). One /24 per stack, 10.213.N.0/24:
    pods in .0/25 (the bridge, their gateway and the node's address, is .1), the veth pair in
    .252/30 (.253 the host end: the stack's `host`; .254 the node end)."""
    h = hashlib.sha256(str(sd).encode()).hexdigest()
    third = int(h[:4], 16) % 200 + 20
    while f"10.213.{third}.0/24" in taken:
        third = (third - 20 + 1) % 200 + 20
    base = f"10.213.{third}"
    return {
        "netns": f"mbo-{h[:8]}",
        "bridge": f"mbo-{h[:8]}",
        "veth_host": f"mbh-{h[:8]}",
        "veth_node": f"mbn-{h[:8]}",
        "block": f"{base}.0/24",
        "cidr": f"{base}.0/25",
        "gateway": f"{base}.1",
        "host_ip": f"{base}.253",
        "node_link_ip": f"{base}.254",
        "cgroup_root": f"/mbo-{h[:8]}",
    }


def taken_blocks() -> frozenset[str]:
    """The /24s other stacks' nodes route on this machine (the host ends of their veths)."""
    words = _run("ip", "-4", "route", "show", check=False).stdout.split()
    return frozenset(w.split("/")[0].rsplit(".", 1)[0] + ".0/24" for w in words if w.startswith("10.213."))


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


# --------------------------------------------------------------------------- network


def netns_path(net: dict[str, str]) -> str:
    return f"/run/netns/{net['netns']}"


def in_netns(net: dict[str, str], argv: list[str]) -> list[str]:
    """argv run in the node's network namespace. nsenter, not `ip netns exec`: the latter also
    unshares the mount namespace, and the kubelet's volume mounts must be seen by containerd."""
    return ["nsenter", f"--net={netns_path(net)}", "--", *argv]


def setup_network(sd: Path, net: dict[str, str]) -> None:
    """The node's namespace with its bridge, the veth pair to the machine, and the route from the
    machine to the pods; the host end exists before the control plane binds to it."""
    ns = net["netns"]
    if _run("ip", "netns", "add", ns, check=False).returncode != 0 and not Path(netns_path(net)).exists():
        raise SystemExit(f"cannot create network namespace {ns}")
    nsip = ["ip", "-n", ns]
    _run(*nsip, "link", "set", "lo", "up")
    if _run("ip", "link", "show", net["veth_host"], check=False).returncode != 0:
        _run("ip", "link", "add", net["veth_host"], "type", "veth", "peer", "name", net["veth_node"], "netns", ns)
    _run("ip", "addr", "replace", f"{net['host_ip']}/30", "dev", net["veth_host"])
    _run("ip", "link", "set", net["veth_host"], "up")
    _run(*nsip, "addr", "replace", f"{net['node_link_ip']}/30", "dev", net["veth_node"])
    _run(*nsip, "link", "set", net["veth_node"], "up")
    if _run(*nsip, "link", "show", net["bridge"], check=False).returncode != 0:
        _run(*nsip, "link", "add", net["bridge"], "type", "bridge")
    _run(*nsip, "addr", "replace", f"{net['gateway']}/25", "dev", net["bridge"])
    _run(*nsip, "link", "set", net["bridge"], "up")
    # Forwarding inside the node's namespace only (pods <-> the veth); the machine's is untouched.
    _run(*in_netns(net, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
    _run("ip", "route", "replace", net["cidr"], "via", net["node_link_ip"], "dev", net["veth_host"])


def teardown_network(net: dict[str, str]) -> None:
    """Deleting the namespace takes its bridge, the veth pair, the route and every iptables chain
    kube-proxy and the kubelet made with it (once no process is left inside)."""
    if net.get("netns"):
        _run("ip", "netns", "del", net["netns"], check=False)
    if net.get("veth_host"):
        _run("ip", "link", "del", net["veth_host"], check=False)


def write_cni_config(sd: Path, net: dict[str, str]) -> Path:
    conf_dir = sd / "cni" / "net.d"
    conf_dir.mkdir(parents=True, exist_ok=True)
    first_pod_ip = net["block"].rsplit(".", 1)[0] + ".10"
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
                    "ranges": [[{"subnet": net["cidr"], "gateway": net["gateway"], "rangeStart": first_pod_ip}]],
                    # The stack's /24 (pods and the host end of the veth) and the Service range.
                    "routes": [{"dst": net["block"]}, {"dst": "10.0.0.0/24"}],
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
        "address": net["gateway"],
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
        # Pods under this stack's own cgroup root: another stack's kubelet never sees (or kills) them.
        "cgroupRoot": net["cgroup_root"],
        "cgroupsPerQOS": True,
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
        f"--node-ip={net['gateway']}",
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
        "bindAddress": net["gateway"],
        "healthzBindAddress": f"127.0.0.1:{p['kube_proxy_healthz']}",
        "metricsBindAddress": f"127.0.0.1:{p['kube_proxy_metrics']}",
        # Leave the machine's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        # NodePorts only on the bridge address (inside the node's namespace anyway).
        "nodePortAddresses": [f"{net['gateway']}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }
    path = sd / "kube-proxy-config.json"
    path.write_text(json.dumps(cfg, indent=2))
    return [str(bins / "kube-proxy"), f"--config={path}", "--v=1"]


# --------------------------------------------------------------------------- teardown


def remove_shim_sockets() -> None:
    """containerd 1.6 keeps shim sockets in /run/containerd/s whatever its state dir; killed
    shims leave them behind. Only taken away when no containerd runs on the machine at all."""
    if any(procs.scan(lambda p: p.cmdline.split(b"\0")[0].endswith((b"containerd", b"containerd-shim-runc-v2")))):
        return
    s = Path("/run/containerd/s")
    if s.is_dir():
        for f in s.iterdir():
            with contextlib.suppress(OSError):
                f.unlink()


def _cgroup_dirs(net: dict[str, str]) -> list[Path]:
    """The node's cgroup root in every hierarchy (v1 controllers, the named and unified ones)."""
    root = net.get("cgroup_root", "").strip("/")
    if not root:
        return []
    return [hier / root for hier in CGROUP_ROOT.iterdir() if hier.is_dir() and not hier.is_symlink()]


def setup_cgroups(net: dict[str, str]) -> None:
    """The kubelet refuses a cgroup root that does not exist. cpuset needs its cpus and mems
    filled in before any child can hold a task."""
    for d in _cgroup_dirs(net):
        d.mkdir(exist_ok=True)
        if d.parent.name == "cpuset":
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / f).write_text((d.parent / f).read_text())


def kill_pod_processes(net: dict[str, str]) -> None:
    """Every process in this node's pod cgroups (containers and pause), in every hierarchy."""
    for _ in range(3):
        pids: set[int] = set()
        for d in _cgroup_dirs(net):
            if d.is_dir():
                for tasks in d.rglob("cgroup.procs"):
                    with contextlib.suppress(OSError):
                        pids.update(int(x) for x in tasks.read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def kill_shims(sd: Path) -> None:
    """containerd's shims outlive containerd; ours name our socket on their command line."""
    sock = str(containerd_socket(sd)).encode()
    procs.kill(list(procs.scan(lambda p: p.has(b"containerd-shim", sock))))


def remove_cgroups(net: dict[str, str]) -> None:
    for d in _cgroup_dirs(net):
        if not d.is_dir():
            continue
        for sub in sorted((x for x in d.rglob("*") if x.is_dir()), key=lambda x: len(x.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()


CONTAINER_LOG_LINKS = Path("/var/log/containers")


def remove_log_links(sd: Path) -> None:
    """The kubelet links every container's log into /var/log/containers (a fixed path); links into
    this stack (and dangling ones into any stack's pod-logs, left by killed nodes) go."""
    if not CONTAINER_LOG_LINKS.is_dir():
        return
    for link in CONTAINER_LOG_LINKS.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(link)
            if target.startswith(f"{sd}/") or ("/.stack/pod-logs/" in target and not link.exists()):
                link.unlink()


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
