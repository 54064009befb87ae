"""Pods that claim stand-in NICs of the e2e driver (conftest.py's ``driver``), and what they got.

Every test uses its own stand-in NICs (``nics.take()``), selected by name in the claim, so tests
cannot cross each other's devices; what a pod got is read inside its netns with netlink (`ip -j`).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any

import pytest

from localcluster.claims import Request, by_ifname, resource_claim
from localcluster.demo import Cluster, addresses, links_in
from localcluster.nodeagent import NodeAgentError, PodRun, SandboxError
from localcluster.nodenet import StandInNic

_names = itertools.count()


class Nics:
    """Hands out unused stand-in NICs of the driver's node."""

    def __init__(self, cluster: Cluster) -> None:
        assert cluster.net is not None
        self.free = list(cluster.net.nics)
        self.lock = threading.Lock()

    def take(self, n: int = 1) -> list[StandInNic]:
        with self.lock:
            if len(self.free) < n:
                pytest.fail("the session ran out of stand-in NICs; raise NIC_COUNT in tests/e2e/conftest.py")
            out, self.free = self.free[:n], self.free[n:]
            return out

    def give_back(self, taken: list[StandInNic]) -> None:
        """NICs found home and unchanged (assert_home) after their pods went: reusable."""
        with self.lock:
            self.free.extend(taken)


def claim_body(name: str, per_request: list[tuple[str, StandInNic, dict[str, Any]]]) -> dict[str, Any]:
    """A claim with one request per (request name, NIC, config); each request selects its NIC by name."""
    requests = [Request(r, [by_ifname(nic.name)], config=cfg) for r, nic, cfg in per_request]
    return resource_claim(name, requests)


def unique_name(kind: str) -> str:
    """A name no other test (of this or a parallel session) uses: tlc-<kind>-<n>-<pid>."""
    return f"tlc-{kind}-{next(_names)}-{os.getpid()}"


def new_pod(cluster: Cluster, per_request: list[tuple[str, StandInNic, dict[str, Any]]]) -> dict[str, Any]:
    """A ResourceClaim and a Pod using it, in the API server (not running yet: cluster.run_pod)."""
    claim = unique_name("claim")
    cluster.create("resource.k8s.io/v1", "resourceclaims", claim_body(claim, per_request), "default")
    return cluster.make_pod(unique_name("pod"), {"net": claim})


def claim_of(cluster: Cluster, pod: dict[str, Any]) -> dict[str, Any]:
    name = pod["spec"]["resourceClaims"][0]["resourceClaimName"]
    return dict(cluster.get("resource.k8s.io/v1", "resourceclaims", name, "default"))


def simple_cfg(nic: StandInNic, **iface: Any) -> dict[str, Any]:
    return {"interface": {"name": "eth1", "addresses": [nic.pod_address()], **iface}}


def wait(fn: Any, timeout: float = 15.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def nic_has(links: dict[str, Any], name: str, cidr: str, mac: str) -> bool:
    link = links.get(name)
    return link is not None and cidr in addresses(link) and link["address"] == mac


def has_nic(netns: str, nic: StandInNic, mac: str, name: str = "eth1") -> bool:
    """The pod's netns has nic as `name`: its pod address and its MAC (the same NIC, not another)."""
    return nic_has(links_in(netns), name, nic.pod_address(), mac)


def assert_home(cluster: Cluster, before: dict[str, Any], nic: StandInNic) -> None:
    """The NIC is back on the node as it was in `before` (cluster.net.snapshot())."""
    net = cluster.net
    assert net is not None
    home = wait(lambda: net.snapshot().get(nic.name) == before[nic.name], 15.0)
    assert home, f"{nic.name}: before {before[nic.name]}, after {net.snapshot().get(nic.name)}"


def retry_start(
    cluster: Cluster, pod: dict[str, Any], attempt: int, errors: list[str] | None = None
) -> PodRun | None:
    """A kubelet retry: clear a failed sandbox of the pod, then prepare (idempotent) and run a new
    sandbox, `attempt` (the kubelet's next attempt number: a sandbox of the same name may still be
    on its way out in the runtime). A failure is appended to `errors`, for the test's message."""
    assert cluster.agent is not None and cluster.allocator is not None
    for p in cluster.agent.cri.list_pod_sandboxes():
        if p["uid"] == pod["metadata"]["uid"]:
            cluster.agent.cri.stop_pod_sandbox(p["id"])
            cluster.agent.cri.remove_pod_sandbox(p["id"])
    try:
        claims = cluster.allocator.allocate_pod(pod)
        return cluster.agent.start_pod(pod, claims, attempt)
    except NodeAgentError as exc:
        if errors is not None:
            errors.append(f"attempt {attempt}: {exc}")
        time.sleep(1.0)
        return None


def run_pod_retrying(
    cluster: Cluster, pod: dict[str, Any], attempts: int = 5, claims: list[Any] | None = None
) -> PodRun:
    """cluster.run_pod (or, for a pod already placed, the kubelet's start with its allocated
    `claims`), and the kubelet's retries when the sandbox fails (SandboxError)."""
    try:
        if claims is not None:
            assert cluster.agent is not None
            return cluster.agent.start_pod(pod, claims)
        return cluster.run_pod(pod)
    except SandboxError as exc:
        first = exc
    for attempt in range(1, attempts):
        run = retry_start(cluster, pod, attempt)
        if run is not None:
            return run
    raise first
