"""The DRAResourceHealth stream follows a real link: a veth whose peer goes down loses carrier.

A "node" netns stands in for the host (dra's --host-netns); the veth's far end is in a "wire" netns.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from dra_kubelet import NODE, Harness, device
from dranet.services.dra.health import link_health

from dranet._generated import dra_health_v1alpha1_pb2 as hpb

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """(node netns path, wire netns name) with tdrv0 (node side, up) <-> tdrv1 (wire side, up)."""
    sfx = secrets.token_hex(3)
    node, wire = f"tdr-node-{sfx}", f"tdr-wire-{sfx}"
    ip("netns", "add", node)
    ip("netns", "add", wire)
    try:
        ip("-n", node, "link", "add", "tdrv0", "type", "veth", "peer", "name", "tdrv1", "netns", wire)
        ip("-n", node, "link", "set", "tdrv0", "up")
        ip("-n", wire, "link", "set", "tdrv1", "up")
        yield f"/run/netns/{node}", wire
    finally:
        subprocess.run(["ip", "netns", "del", node], check=False)
        subprocess.run(["ip", "netns", "del", wire], check=False)


def test_link_health_probe(veth: tuple[str, str]) -> None:
    node, wire = veth
    assert link_health("tdrv0", node)[0] == hpb.HEALTHY
    ip("-n", wire, "link", "set", "tdrv1", "down")
    status, message = link_health("tdrv0", node)
    assert status == hpb.UNHEALTHY and "carrier" in message
    assert link_health("nosuchlink", node)[0] == hpb.UNKNOWN
    ip("-n", node.rsplit("/", 1)[1], "link", "set", "tdrv0", "down")
    status, message = link_health("tdrv0", node)
    assert status == hpb.UNHEALTHY and "down" in message


def next_health(stream: Any) -> dict[str, int]:
    msg = next(stream)
    return {h.device.device_name: h.health for h in msg.devices}


def test_health_stream_reports_carrier_loss(veth: tuple[str, str]) -> None:
    node, wire = veth
    h = Harness(inventory=[device("tdrv0")], host_netns=node)
    h.start_dra()
    try:
        ch, stream = h.kubelet.watch_health(h.endpoint)
        with ch:
            assert next_health(stream) == {}  # nothing prepared yet: an empty, complete list
            claim = h.cluster.create_claim(devices=["tdrv0"])
            assert h.kubelet.prepare(h.endpoint, [claim])[claim[1]][1] == ""
            assert next_health(stream) == {"tdrv0": hpb.HEALTHY}
            ip("-n", wire, "link", "set", "tdrv1", "down")
            msg = next(stream)
            (dev,) = msg.devices
            assert (dev.device.pool_name, dev.device.device_name, dev.health) == (
                NODE,
                "tdrv0",
                hpb.UNHEALTHY,
            )
            assert "carrier" in dev.message and dev.last_updated_time > 0
            ip("-n", wire, "link", "set", "tdrv1", "up")
            assert next_health(stream) == {"tdrv0": hpb.HEALTHY}
            assert h.kubelet.unprepare(h.endpoint, [claim]) == {claim[1]: ""}
            assert next_health(stream) == {}
            stream.cancel()
    finally:
        h.close()


def test_attached_device_is_watched_in_the_pod_netns(veth: tuple[str, str]) -> None:
    node, wire = veth
    h = Harness(inventory=[device("tdrv0", "hostname0")])  # host name differs from the pod-side name
    h.start_dra()
    try:
        claim = h.cluster.create_claim(devices=["tdrv0"], pods=["pod-h"])
        assert h.kubelet.prepare(h.endpoint, [claim])[claim[1]][1] == ""
        ch, stream = h.kubelet.watch_health(h.endpoint)
        with ch:
            assert next_health(stream) == {"tdrv0": hpb.UNKNOWN}  # no such link on the host
            # the worker reports it attached: the link is now tdrv0 inside the "pod" netns
            h.neighbours.attached(
                pod_uid="pod-h", device="tdrv0", state="attached", pod_ifname="tdrv0", netns=node
            )
            assert next_health(stream) == {"tdrv0": hpb.HEALTHY}
            ip("-n", wire, "link", "set", "tdrv1", "down")
            assert next_health(stream) == {"tdrv0": hpb.UNHEALTHY}
            h.neighbours.attached(pod_uid="pod-h", device="tdrv0", state="attached", pod_ifname="tdrv0")
            msg = next(stream)
            assert msg.devices[0].health == hpb.UNKNOWN and "no netns" in msg.devices[0].message
            stream.cancel()
    finally:
        h.close()
