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
from dra_kubelet import NODE, Harness, device, opaque, service_args
from dranet.services.dra.health import link_health
from dranet.services.netns.grants import Grants
from dranet.services.netns.main import handlers
from dranet.services.netns.worker import NetnsWorker

from dranet._generated import dra_health_v1alpha1_pb2 as hpb
from dranet.bus import BusClient
from dranet.service import ServiceHost

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


def until(stream: Any, pred: Any, limit: int = 20) -> Any:
    """The first health message whose only device satisfies pred (messages come on changes)."""
    for _ in range(limit):
        msg = next(stream)
        if len(msg.devices) == 1 and pred(msg.devices[0]):
            return msg.devices[0]
    raise AssertionError("the health stream never reached the expected state")


def test_attached_device_health_comes_from_the_netns_worker(veth: tuple[str, str], tmp_path: Path) -> None:
    """As in production, dra cannot enter the pod netns: the real netns worker reads the link there
    (its `list` result) and a carrier loss inside the pod turns the device UNHEALTHY, then HEALTHY."""
    node, wire = veth
    pod_ns = f"tdr-pod-{secrets.token_hex(3)}"
    ip("netns", "add", pod_ns)
    h = Harness(inventory=[device("tdrv0")], host_netns=node)
    # the real worker replaces the stand-in, with node as its "host" netns
    h.neighbours.netns.close()
    svc = ServiceHost("netns", service_args(h.root), drop_caps=False, install_signals=False)
    h.neighbours.netns = svc
    worker = NetnsWorker(tmp_path / "state", host_netns=node, publish=svc.publish, grants=Grants(None))
    worker.start(watch_interval=0)
    svc.serve(handlers(worker), health=worker.health, snapshots={"attachments": worker.queries.attachments})
    netns = BusClient(h.root / "run", "netns", timeout=10)
    try:
        dra = h.start_dra()
        real_probe = dra.health._probe

        def capless(ifname: str, ns: str | None) -> tuple[int, str]:  # dra holds no capability
            if ns is not None and ns != node:
                return hpb.UNKNOWN, "cannot read link: Operation not permitted"
            return real_probe(ifname, ns)

        dra.health._probe = capless
        claim = h.cluster.create_claim(
            devices=["tdrv0"], pods=["pod-k"], configs=[opaque({"interface": {"name": "net1"}})]
        )
        assert h.kubelet.prepare(h.endpoint, [claim])[claim[1]][1] == ""
        ch, stream = h.kubelet.watch_health(h.endpoint)
        with ch:
            assert next_health(stream) == {"tdrv0": hpb.HEALTHY}  # on the node, before attach
            (prepared,) = h.bus("pod_devices", {"pod_uid": "pod-k"})["devices"]
            netns.call(  # as nri forwards it; the worker checks it against dra's grant
                "attach",
                {
                    "pod_uid": "pod-k",
                    "netns": f"/run/netns/{pod_ns}",
                    "devices": [
                        {
                            "device": "tdrv0",
                            "ifname": "tdrv0",
                            "config": prepared["config"],
                            "claim_uid": claim[1],
                        }
                    ],
                },
            )
            dev = until(stream, lambda d: "in the pod" in d.message)
            assert dev.health == hpb.HEALTHY and "net1" in dev.message
            (att,) = netns.call("list")["attachments"]
            assert (att["admin_up"], att["oper_up"], att["carrier"]) == (True, True, True)

            ip("-n", wire, "link", "set", "tdrv1", "down")
            dev = until(stream, lambda d: d.health != hpb.HEALTHY)
            assert dev.health == hpb.UNHEALTHY and "carrier" in dev.message, dev.message
            (att,) = netns.call("list")["attachments"]
            assert att["carrier"] is False and att["oper_up"] is False

            ip("-n", wire, "link", "set", "tdrv1", "up")
            dev = until(stream, lambda d: d.health != hpb.UNHEALTHY)
            assert dev.health == hpb.HEALTHY and "net1" in dev.message

            ip("-n", pod_ns, "link", "set", "net1", "down")
            dev = until(stream, lambda d: d.health != hpb.HEALTHY)
            assert dev.health == hpb.UNHEALTHY and "administratively down" in dev.message
            stream.cancel()
        assert netns.call("detach", {"pod_uid": "pod-k"}) == {"released": ["tdrv0"]}
        assert h.kubelet.unprepare(h.endpoint, [claim]) == {claim[1]: ""}
    finally:
        netns.close()
        h.close()
        worker.close()
        subprocess.run(["ip", "netns", "del", pod_ns], check=False)
