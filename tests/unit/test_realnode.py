"""The real node's generated configuration: the settings this machine needs and the rules that keep
pod traffic on it. The node itself is exercised by tests/e2e with MBO_NODE=real."""

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
    assert a["bridge"] != b["bridge"]
    for net in (a, b):
        assert len(net["bridge"]) <= 15  # IFNAMSIZ - 1
        cidr = ipaddress.ip_network(net["cidr"])
        assert ipaddress.ip_address(net["host_ip"]) in cidr
        assert not cidr.overlaps(ipaddress.ip_network("10.0.0.0/24")), "pod and service ranges overlap"


def test_pod_traffic_cannot_leave_the_machine(tmp_path: Path) -> None:
    net = realnode.network_for(tmp_path)
    rules = realnode._iptables_rules(net)
    # Both directions, dropped in mangle (before kube-proxy's ACCEPTs in filter), unless via the bridge.
    assert {tuple(r[r.index("-t") : r.index("-t") + 2]) for r in rules} == {("-t", "mangle")}
    out = next(r for r in rules if "-s" in r)
    assert out[out.index("-s") + 1] == net["cidr"] and out[out.index("!") + 1 :][:2] == ["-o", net["bridge"]]
    assert all(r[-2:] == ["-j", "DROP"] and r[0] == "FORWARD" for r in rules)
    conf = json.loads((realnode.write_cni_config(tmp_path, net) / "10-mbo.conflist").read_text())
    bridge = conf["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["ipMasq"] is False and bridge["bridge"] == net["bridge"]
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path)), "IP allocations must live in the stack"


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
    assert cfg["address"] == net["host_ip"] and cfg["podLogsDir"].startswith(str(tmp_path))
    assert cfg["imageGCHighThresholdPercent"] == 100, "imported images must never be garbage-collected"


def test_containerd_keeps_its_state_in_the_stack(tmp_path: Path) -> None:
    text = realnode.write_containerd_config(tmp_path, realnode.network_for(tmp_path)).read_text()
    assert f'root = "{tmp_path}/containerd/root"' in text and f'state = "{tmp_path}/containerd/state"' in text
    assert "netns_mounts_under_state_dir = true" in text and "SystemdCgroup = false" in text
    assert f'sandbox_image = "{realnode.PAUSE_IMAGE}"' in text
    assert f'Root = "{tmp_path}/containerd/runc"' in text
