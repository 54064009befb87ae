"""One NIC shared by 10 pods (issue 20 item 1, KEP-5075) on the real containerd: discovery shares it
(--shared-filter, 10 interfaces), the allocator stand-in gives each pod's claim a share, each pod
gets its own macvlan child with its own address and MAC, two of them talk through the NIC, an
11th claim stays unallocated, each claim's status names its child, and after release no child is
left and the NIC is as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dranet.services.netns.netlink import Rtnl

from dranet.localcluster.allocator import AllocationError
from dranet.localcluster.demo import Cluster, addresses, links_in
from dranet.localcluster.nodenet import StandInNic

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

PODS = 10


@pytest.fixture(scope="module")
def cluster(containerd: Any) -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="tsn-e2e-", dir="/tmp"))
    prefix = f"tsn{workdir.name[-4:].lower()}"
    share = f'attributes["dra.net/ifName"].StringValue == "{prefix}0"'
    c = Cluster(
        workdir,
        nic_count=1,
        prefix=prefix,
        containerd=containerd,
        log=lambda s: None,
        extra_args={"discovery": ["--shared-filter", share, "--shared-interfaces", str(PODS)]},
    )
    c.start()
    c.wait_slices()
    c.create(
        "resource.k8s.io/v1",
        "deviceclasses",
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": "dranet"},
            "spec": {"selectors": [{"cel": {"expression": 'device.driver == "dra.net"'}}]},
        },
    )
    try:
        yield c
    finally:
        errors = c.stop()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
        assert not errors, errors


def share_claim(name: str, nic: StandInNic, address: str) -> dict[str, Any]:
    sel = f'device.allowMultipleAllocations && device.attributes["dra.net"].ifName == "{nic.name}"'
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "nic",
                        "exactly": {"deviceClassName": "dranet", "selectors": [{"cel": {"expression": sel}}]},
                    }
                ],
                "config": [
                    {
                        "requests": ["nic"],
                        "opaque": {
                            "driver": "dra.net",
                            "parameters": {"interface": {"name": "net1", "addresses": [address]}},
                        },
                    }
                ],
            }
        },
    }


def links_of(fd: int) -> list[str]:
    """The link names in the netns of this open nsfs fd (alive while we hold it)."""
    with Rtnl.open(fd) as nl:
        return sorted(link.name for link in nl.links())


def wait(fn: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


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


def test_ten_pods_share_one_nic(cluster: Cluster) -> None:
    assert cluster.net is not None
    nic = cluster.net.nics[0]
    before = cluster.net.snapshot()
    started: list[tuple[dict[str, Any], Any]] = []
    try:
        for k in range(PODS):
            cluster.create(
                "resource.k8s.io/v1",
                "resourceclaims",
                share_claim(f"tsn-claim-{k}", nic, nic.pod_address(10 + k)),
                "default",
            )
            pod = cluster.make_pod(f"tsn-pod-{k}", {"net": f"tsn-claim-{k}"})
            started.append((pod, None))
            started[-1] = (pod, cluster.run_pod(pod))
        seen = set()
        for k, (_pod, run) in enumerate(started):
            net1 = links_in(run.status.netns)["net1"]
            assert addresses(net1) == {nic.pod_address(10 + k)}
            seen.add(net1["address"])
            name = f"tsn-claim-{k}"
            claim = cluster.get("resource.k8s.io/v1", "resourceclaims", name, "default")
            (result,) = claim["status"]["allocation"]["devices"]["results"]
            assert result["device"] and result["consumedCapacity"] == {"dra.net/interfaces": "1"}

            def status(name: str = name) -> Any:
                got = cluster.get("resource.k8s.io/v1", "resourceclaims", name, "default")
                return (got.get("status") or {}).get("devices")

            (entry,) = wait(status)
            assert entry["shareID"] == result["shareID"]  # each share's own entry: its child
            assert entry["networkData"]["interfaceName"] == "net1"
            assert entry["networkData"]["ips"] == [nic.pod_address(10 + k)]
            assert entry["networkData"]["hardwareAddress"] == net1["address"]
        assert len(seen) == PODS  # a MAC of its own each
        assert cluster.net.snapshot()[nic.name] == before[nic.name]  # the NIC never left the node
        # Two pods reach each other through the NIC (macvlan bridge mode).
        first, last = started[0][1].status.netns, started[-1][1].status.netns
        assert (
            talk(last, nic.pod_address(10 + PODS - 1).split("/")[0], first) == b"hello through the shared NIC"
        )
        # An 11th claim on the NIC is beyond its capacity: it stays unallocated.
        cluster.create(
            "resource.k8s.io/v1",
            "resourceclaims",
            share_claim("tsn-claim-x", nic, nic.pod_address(30)),
            "default",
        )
        extra = cluster.make_pod("tsn-pod-x", {"net": "tsn-claim-x"})
        assert cluster.allocator is not None
        with pytest.raises(AllocationError, match="capacity"):
            cluster.allocator.allocate_pod(extra)
        claim = cluster.get("resource.k8s.io/v1", "resourceclaims", "tsn-claim-x", "default")
        assert not (claim.get("status") or {}).get("allocation")
        cluster.delete("v1", "pods", "tsn-pod-x", "default")
    finally:
        # Held open, each pod's netns outlives the runtime's teardown: what is left in it after
        # the release is what the driver left.
        held = [os.open(run.status.netns, os.O_RDONLY) for _pod, run in started if run and run.status]
        try:
            for pod, run in started:
                cluster.remove_pod(pod, run)
            assert [n for fd in held for n in links_of(fd) if n == "net1"] == []  # no child left
        finally:
            for fd in held:
                os.close(fd)
    assert cluster.net.snapshot()[nic.name] == before[nic.name]
