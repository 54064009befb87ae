"""Upstream's e2e (kubernetes-sigs/dranet tests/e2e.bats) on this kernel, through the netns worker.

Each test sets the node up as upstream's does (veth pairs stand in for its dummy interfaces: this
kernel has no dummy), attaches the device with the claim configuration of upstream's manifest
(tests/upstream_claims/) and checks in the pod and on the host what upstream asserts. VRF is left
out: this kernel has none. The eBPF ones are in test_netns_ebpf.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from bpfprogs import in_netns
from dranet.services.netns.testbed import Testbed, ip, ip_json
from dranet.services.netns.worker import NetnsWorker
from test_netns_restore import pod_features

pytestmark = pytest.mark.kernel

CLAIMS = Path(__file__).parent.parent / "upstream_claims"


def claim(name: str) -> dict[str, Any]:
    return dict(json.loads((CLAIMS / f"{name}.json").read_text()))


def attach(
    w: NetnsWorker, pod_uid: str, ns: str, *devices: tuple[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    body = [{"device": f"dev-{ifname}", "ifname": ifname, "config": cfg} for ifname, cfg in devices]
    return list(w.attach(pod_uid, f"/run/netns/{ns}", body)["attachments"])


def in_pod(ns: str, *cmd: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True, text=True
    ).stdout


def test_static_ip_claim(tb: Testbed, worker: NetnsWorker) -> None:
    """ "dummy interface with IP addresses ResourceClaim" (and its normalized-name twin)."""
    for host_name in ("dummy0", "mlx5_6"):
        tb.add_nic(host_name)
        pod = tb.add_netns()
        (att,) = attach(worker, f"pod-{host_name}", pod, (host_name, claim("resourceclaim")))
        assert "169.254.169.13" in ip("addr", "show", "eth99", ns=pod)
        assert any("169.254.169.13" in a for a in att["ips"])  # what networkData.ips reports
        worker.detach(f"pod-{host_name}")


def test_arp_claim(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("dummy0")
    pod = tb.add_netns()
    attach(worker, "pod-arp", pod, ("dummy0", claim("resourceclaim_arp")))
    assert in_pod(pod, "cat", "/proc/sys/net/ipv4/conf/dranet-arp/arp_ignore").strip() == "1"
    assert in_pod(pod, "cat", "/proc/sys/net/ipv4/conf/dranet-arp/arp_announce").strip() == "2"


def test_claim_template_inherits_the_host_address(tb: Testbed, worker: NetnsWorker) -> None:
    """ "... ResourceClaimTemplate", "2 dummy interfaces ..." and "reapply pod ..." (no config)."""
    tb.add_nic("dummy0", addresses=("169.254.169.13/32",))
    tb.add_nic("dummy1", addresses=("169.254.169.14/32",))
    pod = tb.add_netns()
    atts = attach(worker, "pod-t", pod, ("dummy0", claim("no_config")), ("dummy1", claim("no_config")))
    assert "169.254.169.13" in ip("addr", "show", "dummy0", ns=pod)
    assert "169.254.169.14" in ip("addr", "show", "dummy1", ns=pod)
    assert [a["ips"] for a in atts] == [["169.254.169.13/32"], ["169.254.169.14/32"]]
    worker.detach("pod-t")
    pod2 = tb.add_netns()  # the deployment applied again: the device is claimed again
    attach(worker, "pod-t2", pod2, ("dummy0", claim("no_config")))
    assert "169.254.169.13" in ip("addr", "show", "dummy0", ns=pod2)


def test_route_claim(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("dummy0")
    pod = tb.add_netns()
    (att,) = attach(worker, "pod-r", pod, ("dummy0", claim("resourceclaim_route")))
    assert "169.254.169.13" in ip("addr", "show", "eth99", ns=pod)
    assert "169.254.169.0/24 via 169.254.169.1" in ip("route", "show", ns=pod)
    assert any("169.254.169.1" in a for a in att["ips"])


def test_advanced_claim(tb: Testbed, worker: NetnsWorker) -> None:
    """mtu, MAC and `ethtool -k` shows tcp-segmentation-offload, generic-receive-offload and
    large-receive-offload off: every tx-tcp*-segmentation off (the legacy name reads off only
    then), rx-gro off, rx-lro off (fixed off on veth: accepted as it is)."""
    tb.add_nic("dummy0")
    pod = tb.add_netns()
    attach(worker, "pod-adv", pod, ("dummy0", claim("resourceclaim_advanced")))
    shown = ip("addr", "show", "dranet0", ns=pod)
    assert "169.254.169.14/24" in shown and "mtu 4321" in shown and "00:11:22:33:44:55" in shown
    feats = pod_features(pod, "dranet0")
    tso = [n for n in feats if n.startswith("tx-tcp") and n.endswith("-segmentation")]
    assert "tx-tcp-accecn-segmentation" in tso
    assert not any(feats[n] for n in tso) and not feats["rx-gro"] and not feats["rx-lro"]


def test_bigtcp_claim(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("dummy0")
    pod = tb.add_netns()
    attach(worker, "pod-big", pod, ("dummy0", claim("resourceclaim_bigtcp")))
    link = ip_json("-d", "link", "show", "dranet1", ns=pod)[0]
    assert (link["mtu"], link["gso_max_size"], link["gro_max_size"]) == (8896, 65536, 65536)
    assert (link.get("gso_ipv4_max_size", 65536), link.get("gro_ipv4_max_size", 65536)) == (65536, 65536)
    feats = pod_features(pod, "dranet1")
    tso = [n for n in feats if n.startswith("tx-tcp") and n.endswith("-segmentation")]
    assert all(feats[n] for n in tso) and feats["rx-gro"] and not feats["rx-lro"]


def test_permanent_neighbors_are_copied(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("dummy-neigh", addresses=("169.254.169.15/32",))
    ip(
        "neigh",
        "add",
        "192.168.1.1",
        "lladdr",
        "00:11:22:33:44:55",
        "dev",
        "dummy-neigh",
        "nud",
        "permanent",
        ns=tb.node,
    )
    ip(
        "-6",
        "neigh",
        "add",
        "2001:db8::1",
        "lladdr",
        "00:aa:bb:cc:dd:ee",
        "dev",
        "dummy-neigh",
        "nud",
        "permanent",
        ns=tb.node,
    )
    pod = tb.add_netns()
    attach(worker, "pod-n", pod, ("dummy-neigh", claim("resourceclaim")))
    shown = ip("neigh", "show", ns=pod)
    assert "192.168.1.1 dev eth99 lladdr 00:11:22:33:44:55 PERMANENT" in shown
    assert "2001:db8::1 dev eth99 lladdr 00:aa:bb:cc:dd:ee PERMANENT" in shown


def test_routes_and_rules_of_another_table_are_copied(tb: Testbed, worker: NetnsWorker) -> None:
    """With the claim's own addresses, as upstream's test runs it (resourceclaim.yaml)."""
    tb.add_nic("dummy-rules", addresses=("169.254.169.13/24",))
    ip(
        "route",
        "add",
        "10.10.10.0/24",
        "via",
        "169.254.169.1",
        "dev",
        "dummy-rules",
        "table",
        "100",
        ns=tb.node,
    )
    ip("rule", "add", "from", "10.20.30.0/24", "table", "100", "priority", "500", ns=tb.node)
    pod = tb.add_netns()
    attach(worker, "pod-rr", pod, ("dummy-rules", claim("resourceclaim")))
    assert "10.10.10.0/24 via 169.254.169.1 dev eth99" in ip("route", "show", "table", "100", ns=pod)
    assert any(
        r.get("priority") == 500 and r.get("src") == "10.20.30.0" and r.get("table") == "100"
        for r in ip_json("rule", "show", ns=pod)
    )


def test_ipv6_subnet_route_is_the_kernels(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("dummy-ipv6", addresses=("fd36::3:0:e:0:0/96",))
    pod = tb.add_netns()
    attach(worker, "pod-6", pod, ("dummy-ipv6", claim("no_config")))
    shown = ip("-6", "route", "show", ns=pod)
    assert "fd36::3:0:e:0:0/96 dev dummy-ipv6 proto kernel metric 256" in shown
    assert "fd36::3:0:e:0:0/96 dev dummy-ipv6 metric 1024" not in shown


def test_pbr(tb: Testbed, worker: NetnsWorker) -> None:
    """Pod 1 reaches pod 2 through the router pod, by policy routing (table 100)."""
    for pod_end, rtr_end in (("pbr-test-pod-1", "pbr-rtr-1"), ("pbr-test-pod-2", "pbr-rtr-2")):
        ip("link", "add", pod_end, "type", "veth", "peer", "name", rtr_end, ns=tb.node)
        ip("link", "set", pod_end, "up", ns=tb.node)
        ip("link", "set", rtr_end, "up", ns=tb.node)
    pod1, pod2, router = tb.add_netns(), tb.add_netns(), tb.add_netns()
    attach(worker, "pod-pbr-1", pod1, ("pbr-test-pod-1", claim("resourceclaim_pbr_1")))
    attach(worker, "pod-pbr-2", pod2, ("pbr-test-pod-2", claim("resourceclaim_pbr_2")))
    attach(
        worker,
        "pod-pbr-router",
        router,
        ("pbr-rtr-1", claim("resourceclaim_pbr_router_1")),
        ("pbr-rtr-2", claim("resourceclaim_pbr_router_2")),
    )
    # Upstream pings; there is no ping here: a TCP connection takes the same path both ways (pod 2
    # answers through its own table 100), like agnhost's netexec on 8080.
    server = in_netns(pod2, lambda: socket.create_server(("192.168.200.10", 8080)))
    try:
        client = in_netns(pod1, lambda: socket.create_connection(("192.168.200.10", 8080), timeout=5))
        conn, (peer, _port) = server.accept()
        assert peer == "192.168.100.10"
        conn.close()
        client.close()
    finally:
        server.close()
