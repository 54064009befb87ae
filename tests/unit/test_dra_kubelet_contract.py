"""The dra service against the rules the real kubelet enforces (kubelet-contract in docs/dra-plugin.md),
played by the kubelet stand-in (dranet.localcluster.nodeagent) with its timeouts shortened."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from dra_kubelet import NODE, Harness, device, wait_for

from dranet._generated import dra_health_v1alpha1_pb2 as hpb
from dranet.localcluster.nodeagent import HEALTHY, UNKNOWN, DeviceHealthCache, NodeAgent


def health_message(*devices: tuple[str, int, int]) -> hpb.NodeWatchResourcesResponse:
    return hpb.NodeWatchResourcesResponse(
        devices=[
            hpb.DeviceHealth(
                device=hpb.DeviceIdentifier(pool_name=NODE, device_name=name),
                health=health,  # type: ignore[arg-type]
                health_check_timeout_seconds=timeout,
            )
            for name, health, timeout in devices
        ]
    )


def test_the_stand_in_expires_health_like_the_kubelet() -> None:
    cache = DeviceHealthCache(default_timeout=30)
    cache.record(health_message(("a", hpb.HEALTHY, 0), ("b", hpb.HEALTHY, 60)), now=100.0)
    assert cache.get(NODE, "a", now=129.0)[0] == HEALTHY
    assert cache.get(NODE, "a", now=131.0)[0] == UNKNOWN  # the default timeout
    assert cache.get(NODE, "b", now=159.0)[0] == HEALTHY  # its own timeout
    cache.record(health_message(("a", hpb.HEALTHY, 0)), now=150.0)  # b missing from a later report
    assert cache.get(NODE, "a", now=170.0)[0] == HEALTHY
    assert cache.get(NODE, "b", now=161.0)[0] == UNKNOWN
    assert cache.get(NODE, "never", now=100.0)[0] == UNKNOWN


@pytest.fixture
def agent_and_harness() -> Iterator[tuple[NodeAgent, Harness]]:
    # "lo" is up with carrier in any netns: a device that stays healthy (read, never changed).
    # dra promises health for 1 s at a time; the stand-in's own default is shorter still, so a
    # device reads Healthy only if dra re-sends and says how long a report holds.
    h = Harness(inventory=[device("lo")], health_timeout=1.0)
    h.start_dra()
    agent = NodeAgent(h.root / "reg", str(h.root / "no-cri.sock"), health_timeout=0.3)
    try:
        yield agent, h
    finally:
        agent.close()
        h.close()


def test_a_healthy_device_never_reads_unknown(agent_and_harness: tuple[NodeAgent, Harness]) -> None:
    agent, h = agent_and_harness
    agent.register(timeout=10)
    agent.watch_health()
    claim = h.cluster.create_claim(devices=["lo"])
    assert h.kubelet.prepare(h.endpoint, [claim])[claim[1]][1] == ""
    wait_for(lambda: agent.device_health(NODE, "lo")[0] == HEALTHY, what="lo healthy")
    seen = set()
    end = time.monotonic() + 3.0  # three times dra's timeout, ten times the stand-in's default
    while time.monotonic() < end:
        seen.add(agent.device_health(NODE, "lo"))
        time.sleep(0.05)
    assert {health for health, _ in seen} == {HEALTHY}, seen


def test_ready_only_once_the_kubelet_registered_it() -> None:
    h = Harness()
    dra = h.start_dra()
    try:
        ping = h.bus("ping")
        assert ping["healthy"] is True and ping["ready"] is False
        assert "not registered with the kubelet" in ping["details"]["not_ready"]
        stub, ch = h.kubelet.registration(dra.registration_path)
        with ch:
            stub.NotifyRegistrationStatus(
                h.kubelet.reg_pb.RegistrationStatus(plugin_registered=True), timeout=5
            )
        ping = h.bus("ping")
        assert ping["healthy"] is True and ping["ready"] is True and "not_ready" not in ping["details"]
    finally:
        h.close()
