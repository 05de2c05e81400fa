"""The real node's generated configuration: the settings this machine needs and the rules that keep
pod traffic on it. The node itself is exercised by every test under tests/e2e."""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from tests.stackenv import REPO

sys.path.insert(0, str(REPO / "hack"))
import realnode


def test_network_is_stable_per_state_dir_and_fits_linux_limits(tmp_path: Path) -> None:
    a, b = realnode.network_for(tmp_path / "a"), realnode.network_for(tmp_path / "b")
    assert realnode.network_for(tmp_path / "a") == a
    assert a["netns"] != b["netns"] and a["veth_host"] != b["veth_host"] and a["cgroup_root"] != b["cgroup_root"]
    for net in (a, b):
        for name in ("bridge", "veth_host", "veth_node"):
            assert len(net[name]) <= 15  # IFNAMSIZ - 1
        block, pods = ipaddress.ip_network(net["block"]), ipaddress.ip_network(net["cidr"])
        assert pods.subnet_of(block)
        assert ipaddress.ip_address(net["gateway"]) in pods
        # The host end is in the stack's /24 (pods have a route to it) but not in the pod range.
        host = ipaddress.ip_address(net["host_ip"])
        assert host in block and host not in pods
        assert not block.overlaps(ipaddress.ip_network("10.0.0.0/24")), "pod and service ranges overlap"


def test_a_second_stack_gets_a_free_block(tmp_path: Path) -> None:
    a = realnode.network_for(tmp_path / "a")
    b = realnode.network_for(tmp_path / "a", taken=frozenset({a["block"]}))
    assert b["block"] != a["block"] and b["netns"] == a["netns"]


def test_pod_traffic_cannot_leave_the_machine(tmp_path: Path) -> None:
    """Pods route only to their stack's /24 and the Service range, with no masquerading; the
    node's namespace itself has routes to its bridge and its veth only (no default route)."""
    net = realnode.network_for(tmp_path)
    conf = json.loads((realnode.write_cni_config(tmp_path, net) / "10-mbo.conflist").read_text())
    bridge = conf["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["ipMasq"] is False and bridge["bridge"] == net["bridge"]
    assert [r["dst"] for r in bridge["ipam"]["routes"]] == [net["block"], "10.0.0.0/24"]
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path)), "IP allocations must live in the stack"


def test_node_processes_enter_only_the_network_namespace() -> None:
    net = realnode.network_for(Path("/x"))
    argv = realnode.in_netns(net, ["kubelet", "--v=1"])
    # `ip netns exec` would also unshare the mount namespace and hide the kubelet's volume mounts.
    assert argv[:2] == ["nsenter", f"--net=/run/netns/{net['netns']}"] and argv[-2:] == ["kubelet", "--v=1"]


def _env(tmp_path: Path) -> dict[str, Any]:
    ports = {
        k: 1000 + i for i, k in enumerate(["kubelet", "kubelet_healthz", "kube_proxy_healthz", "kube_proxy_metrics"])
    }
    return {"ports": ports, "node_name": "mbo-node"}


def test_kubelet_config_for_cgroup_v1_without_systemd(tmp_path: Path) -> None:
    net = realnode.network_for(tmp_path)
    cfg = json.loads(realnode.write_kubelet_config(tmp_path, _env(tmp_path), net).read_text())
    assert cfg["cgroupDriver"] == "cgroupfs" and cfg["failCgroupV1"] is False
    assert cfg["authentication"]["anonymous"]["enabled"] is False and cfg["readOnlyPort"] == 0
    assert cfg["address"] == net["gateway"] and cfg["podLogsDir"].startswith(str(tmp_path))
    assert cfg["cgroupRoot"] == net["cgroup_root"] and cfg["cgroupsPerQOS"] is True
    assert cfg["imageGCHighThresholdPercent"] == 100, "imported images must never be garbage-collected"


def test_containerd_keeps_its_state_in_the_stack(tmp_path: Path) -> None:
    text = realnode.write_containerd_config(tmp_path, realnode.network_for(tmp_path)).read_text()
    assert f'root = "{tmp_path}/containerd/root"' in text and f'state = "{tmp_path}/containerd/state"' in text
    assert "netns_mounts_under_state_dir = true" in text and "SystemdCgroup = false" in text
    assert f'sandbox_image = "{realnode.PAUSE_IMAGE}"' in text
    assert f'Root = "{tmp_path}/containerd/runc"' in text
