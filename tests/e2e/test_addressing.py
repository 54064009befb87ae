"""Addresses a claim does not write (issue 16), end to end on the real containerd, on the shared
driver (the DaemonSet's pod, conftest.py): DHCP by the image's dhclient (the manifest's --dhcp)
from a real dnsmasq serving a stand-in NIC's far end, and 20 pods of one ResourceClaimTemplate
getting their addresses from the example IPAM provider over the webhook protocol, the pool whole
again after they stop."""

from __future__ import annotations

import ipaddress
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from localcluster.claims import Request, by_ifname, claim_spec, resource_claim
from localcluster.demo import Cluster, addresses, links_in, routes_in
from localcluster.node import DaemonSetCluster
from localcluster.nodeagent import NodeAgentError
from localcluster.nodenet import StandInNic, link_info
from tests.dnsmasq import Dnsmasq
from tests.e2e.claims import Nics, assert_home, run_pod_retrying
from tests.e2e.conftest import IPAM_POOL

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

PODS = 20


def dhcp_pod(cluster: Cluster, nic: StandInNic, tag: str) -> dict[str, Any]:
    name = f"tla-dhcp-{tag}-{os.getpid()}"
    cfg = {"interface": {"name": "net1", "dhcp": True}}
    claim = resource_claim(name, [Request("nic", [by_ifname(nic.name)])], config=cfg)
    cluster.create("resource.k8s.io/v1", "resourceclaims", claim, "default")
    return cluster.make_pod(name, {"net": name})


def test_dhcp_lease_applied_renewed_and_released(
    driver: DaemonSetCluster, nics: Nics, tmp_path: Path
) -> None:
    cluster = driver
    assert cluster.net is not None
    (nic,) = nics.take()
    before = cluster.net.snapshot()[nic.name]
    net = ipaddress.ip_network(nic.subnet)
    pool = (str(net.network_address + 50), str(net.network_address + 60))
    server = Dnsmasq(
        cluster.net.wire_netns,
        nic.peer,
        tmp_path,
        server=f"{nic.wire_ip}/24",
        add_address=False,
        pool=pool,
        mtu=1400,
        classless=f"10.98.0.0/16,{nic.wire_ip}",
    )
    try:
        lease_applied_renewed_and_released(cluster, nic, server, pool, before)
    finally:
        server.stop()


def lease_applied_renewed_and_released(
    cluster: Cluster, nic: StandInNic, server: Dnsmasq, pool: tuple[str, str], before: dict[str, Any]
) -> None:
    assert cluster.net is not None
    pod = dhcp_pod(cluster, nic, "a")
    run = None
    try:
        run = run_pod_retrying(cluster, pod)
        assert run.status is not None
        net1 = links_in(run.status.netns)["net1"]
        (address,) = [a for a in addresses(net1) if "." in a]
        ip = address.split("/")[0]
        assert pool[0] <= ip <= pool[1] and address.endswith("/24")  # same-length dotted quads
        assert net1["mtu"] == 1400 and "UP" in net1["flags"]
        assert any(
            r.get("dst") == "10.98.0.0/16" and r.get("gateway") == nic.wire_ip
            for r in routes_in(run.status.netns)
        )
        first = server.leases()[ip]
        deadline = time.monotonic() + 20
        while server.leases().get(ip, 0) <= first and time.monotonic() < deadline:
            time.sleep(0.3)
        assert server.leases().get(ip, 0) > first, "the lease was not renewed while the pod ran"
    finally:
        cluster.remove_pod(pod, run)
    assert server.leases_after_release() == {}, "the lease is still held at the server after unprepare"
    after = cluster.net.snapshot()[nic.name]
    assert after == before, (before, after)


def test_dhcp_without_a_server_fails_at_prepare_and_leaves_nothing(
    driver: DaemonSetCluster, nics: Nics
) -> None:
    cluster = driver
    assert cluster.net is not None
    (nic,) = nics.take()
    before = cluster.net.snapshot()[nic.name]
    pod = dhcp_pod(cluster, nic, "b")
    with pytest.raises(NodeAgentError, match="no DHCP server answered"):
        cluster.run_pod(pod)
    cluster.remove_pod(pod, None)
    assert cluster.net.snapshot()[nic.name] == before
    assert link_info(nic.name, cluster.net.node_netns) is not None
    nics.give_back([nic])


def test_twenty_pods_of_one_template_get_distinct_addresses_from_the_ipam_provider(
    driver: DaemonSetCluster, nics: Nics
) -> None:
    ipam = driver.ipam
    assert ipam is not None and driver.net is not None
    taken = nics.take(PODS)
    before = driver.net.snapshot()
    names = ", ".join(f'"{n.name}"' for n in taken)
    cel = f'device.attributes["dra.net"].ifName in [{names}]'
    cfg = {"profile": "ipam", "interface": {"name": "net1"}}
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": f"tla-ipam-{os.getpid()}", "namespace": "default"},
        "spec": {"spec": claim_spec([Request("nic", [cel])], config=cfg)},
    }
    driver.create("resource.k8s.io/v1", "resourceclaimtemplates", template, "default")
    pods = []
    for i in range(PODS):
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"tla-ipam-{i}-{os.getpid()}", "namespace": "default"},
            "spec": {
                "nodeName": driver.node_name,
                "containers": [
                    {
                        "name": "main",
                        "image": "localhost/dranet/pause:1.0",
                        "resources": {"claims": [{"name": "net"}]},
                    }
                ],
                "resourceClaims": [
                    {"name": "net", "resourceClaimTemplateName": template["metadata"]["name"]}
                ],
            },
        }
        pods.append(dict(driver.create("v1", "pods", body, "default")))
    # the scheduler places one pod at a time; the kubelet then starts them, a few at a time, and
    # retries a sandbox that failed (the runtime's NRI budget on a loaded machine)
    assert driver.allocator is not None
    placed = [(pod, driver.allocator.allocate_pod(pod)) for pod in pods]
    runs: list[Any] = [None] * PODS
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [
                pool.submit(lambda pc: run_pod_retrying(driver, pc[0], claims=pc[1]), pc) for pc in placed
            ]
        errors = [f.exception() for f in futures if f.exception() is not None]
        runs = [None if f.exception() else f.result() for f in futures]
        assert not errors, errors[0]
        got = set()
        for run in runs:
            assert run.status is not None
            (address,) = [a for a in addresses(links_in(run.status.netns)["net1"]) if "." in a]
            assert ipaddress.ip_interface(address).network == ipaddress.ip_network(IPAM_POOL)
            got.add(address)
        assert len(got) == PODS, got
        state = ipam.pool()
        assert state["free"] == state["size"] - PODS, state
    finally:
        with ThreadPoolExecutor(max_workers=10) as pool:
            list(pool.map(lambda pr: driver.remove_pod(*pr), zip(pods, runs, strict=True)))
    state = ipam.pool()
    assert state["free"] == state["size"] and state["held"] == {}, state
    for nic in taken:
        assert_home(driver, before, nic)
    nics.give_back(taken)  # back home and unchanged: reusable
