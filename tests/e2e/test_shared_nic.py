"""One NIC shared by 10 pods (issue 20 item 1, KEP-5075), on the shipped driver (the e2e session's
DaemonSet pod on the real containerd): the test marks a NIC shared by its alias (the driver's
discovery runs with --shared-filter on that alias, --shared-interfaces 10), the allocator stand-in
gives each pod's claim a share, each pod gets its own macvlan child with its own address, MAC and
claim status entry, two of them talk through the NIC, an 11th claim stays unallocated, and after
release no child is left and the NIC is as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
from dranet.services.netns.netlink import Rtnl

from localcluster.allocator import AllocationError
from localcluster.claims import Request, by_ifname, resource_claim
from localcluster.demo import addresses, links_in
from localcluster.node import DaemonSetCluster
from localcluster.nodenet import StandInNic, ip
from tests.e2e.claims import Nics
from tests.e2e.conftest import SHARED_ALIAS, SHARED_INTERFACES

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

PODS = SHARED_INTERFACES


def share_claim(name: str, nic: StandInNic, address: str) -> dict[str, Any]:
    """A claim for a share of nic (a device that allows multiple allocations), as net1 with address."""
    sel = f"device.allowMultipleAllocations && {by_ifname(nic.name)}"
    cfg = {"interface": {"name": "net1", "addresses": [address]}}
    return resource_claim(name, [Request("nic", [sel], config=cfg)])


def wait(fn: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def shared_in_slices(driver: DaemonSetCluster, ifname: str) -> bool | None:
    """Whether the published device of ifname allows multiple allocations (None: not published)."""
    for s in driver.our_slices():
        for dev in s["spec"].get("devices") or []:
            name = ((dev.get("attributes") or {}).get("dra.net/ifName") or {}).get("string")
            if name == ifname:
                return bool(dev.get("allowMultipleAllocations"))
    return None


def links_of(fd: int) -> list[str]:
    """The link names in the netns of this open nsfs fd (alive while we hold it)."""
    with Rtnl.open(fd) as nl:
        return sorted(link.name for link in nl.links())


def talk(netns_server: str, address: str, netns_client: str) -> bytes:
    """A TCP exchange between two pods' netns (nsenter; the machine has no ping)."""
    serve = (
        f"import socket; s = socket.create_server(({address!r}, 7777)); print('ready', flush=True); "
        "c, _ = s.accept(); c.sendall(b'hello through the shared NIC'); c.close()"
    )
    server = subprocess.Popen(
        ["nsenter", f"--net={netns_server}", sys.executable, "-c", serve], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        fetch = (
            f"import socket, sys; c = socket.create_connection(({address!r}, 7777), timeout=5); "
            "sys.stdout.buffer.write(c.recv(64))"
        )
        return subprocess.run(
            ["nsenter", f"--net={netns_client}", sys.executable, "-c", fetch], capture_output=True, timeout=20
        ).stdout
    finally:
        server.kill()
        server.wait()


def test_ten_pods_share_one_nic(driver: DaemonSetCluster, nics: Nics) -> None:
    assert driver.net is not None
    (nic,) = nics.take()
    before = driver.net.snapshot()
    ip("link", "set", nic.name, "alias", SHARED_ALIAS, netns=driver.node_netns)
    started: list[tuple[dict[str, Any], Any]] = []
    try:
        assert wait(lambda: shared_in_slices(driver, nic.name), 30), "the NIC was not published shared"
        for k in range(PODS):
            name = f"tsn-claim-{k}-{os.getpid()}"
            driver.create(
                "resource.k8s.io/v1",
                "resourceclaims",
                share_claim(name, nic, nic.pod_address(10 + k)),
                "default",
            )
            pod = driver.make_pod(f"tsn-pod-{k}-{os.getpid()}", {"net": name})
            started.append((pod, None))
            started[-1] = (pod, driver.run_pod(pod))
        macs = set()
        for k, (pod, run) in enumerate(started):
            net1 = links_in(run.status.netns)["net1"]
            assert addresses(net1) == {nic.pod_address(10 + k)}
            macs.add(net1["address"])
            name = pod["spec"]["resourceClaims"][0]["resourceClaimName"]
            claim = driver.get("resource.k8s.io/v1", "resourceclaims", name, "default")
            (result,) = claim["status"]["allocation"]["devices"]["results"]
            assert result["consumedCapacity"] == {"dra.net/interfaces": "1"}

            def status(name: str = name) -> Any:
                got = driver.get("resource.k8s.io/v1", "resourceclaims", name, "default")
                return (got.get("status") or {}).get("devices")

            (entry,) = wait(status)
            assert entry["shareID"] == result["shareID"]  # each share's own entry: its child
            assert entry["networkData"]["interfaceName"] == "net1"
            assert entry["networkData"]["ips"] == [nic.pod_address(10 + k)]
            assert entry["networkData"]["hardwareAddress"] == net1["address"]
        assert len(macs) == PODS  # a MAC of its own each
        # Two pods reach each other through the NIC (macvlan bridge mode).
        first, last = started[0][1].status.netns, started[-1][1].status.netns
        assert (
            talk(last, nic.pod_address(10 + PODS - 1).split("/")[0], first) == b"hello through the shared NIC"
        )
        # An 11th claim on the NIC is beyond its capacity: it stays unallocated.
        extra = f"tsn-claim-x-{os.getpid()}"
        driver.create(
            "resource.k8s.io/v1", "resourceclaims", share_claim(extra, nic, nic.pod_address(30)), "default"
        )
        pod = driver.make_pod(f"tsn-pod-x-{os.getpid()}", {"net": extra})
        assert driver.allocator is not None
        with pytest.raises(AllocationError, match="capacity"):
            driver.allocator.allocate_pod(pod)
        assert not (
            driver.get("resource.k8s.io/v1", "resourceclaims", extra, "default").get("status") or {}
        ).get("allocation")
        driver.delete("v1", "pods", pod["metadata"]["name"], "default")
        driver.delete("resource.k8s.io/v1", "resourceclaims", extra, "default")
    finally:
        # Held open, each pod's netns outlives the runtime's teardown: what is left in it after
        # the release is what the driver left.
        held = [os.open(run.status.netns, os.O_RDONLY) for _pod, run in started if run and run.status]
        try:
            for pod, run in started:
                driver.remove_pod(pod, run)
            assert [n for fd in held for n in links_of(fd) if n == "net1"] == []  # no child left
        finally:
            for fd in held:
                os.close(fd)
            ip("link", "set", nic.name, "alias", "", netns=driver.node_netns)
    assert wait(lambda: shared_in_slices(driver, nic.name) is False, 30)
    assert driver.net.snapshot()[nic.name] == before[nic.name]  # the NIC never left the node
    nics.give_back([nic])
