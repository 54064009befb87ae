"""The whole path end to end, with the driver as it ships: the DaemonSet's pod on the real containerd
with NRI (conftest.py's ``driver``), the local API server, the local allocator and the kubelet
stand-in (real DRA gRPC, real CRI).

Pods are created through CRI; what the pod got is read inside its netns with netlink (`ip -j`).
Every test uses its own stand-in NICs (macvlans in the node netns, far ends in a private wire
netns), selected by name in the claim, so tests cannot cross each other's devices.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from localcluster.demo import addresses, links_in, routes_in
from localcluster.node import DaemonSetCluster as Cluster
from localcluster.nodeagent import ContainerError, NodeAgentError, PodRun, SandboxError
from localcluster.nodenet import StandInNic, link_info
from tests.e2e.claims import (
    Nics,
    assert_home,
    claim_of,
    new_pod,
    nic_has,
    retry_start,
    run_pod_retrying,
    simple_cfg,
    unique_name,
    wait,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def cluster(driver: Cluster) -> Cluster:
    return driver


def cleanup(cluster: Cluster, pod: dict[str, Any], run: PodRun | None) -> None:
    cluster.remove_pod(pod, run)


# ------------------------------------------------------------------ attach


def test_one_interface_with_addresses_routes_and_mtu(cluster: Cluster, nics: Nics) -> None:
    (nic,) = nics.take()
    assert cluster.net is not None
    before = cluster.net.snapshot()
    cfg = simple_cfg(nic, mtu=1400)
    cfg["routes"] = [{"destination": "10.240.0.0/16", "gateway": nic.wire_ip}]
    pod = new_pod(cluster, [("nic", nic, cfg)])
    run = cluster.run_pod(pod)
    try:
        assert run.status is not None and run.status.netns
        eth1 = links_in(run.status.netns)["eth1"]
        assert nic.pod_address() in addresses(eth1)
        assert eth1["mtu"] == 1400
        assert eth1["address"] == before[nic.name]["address"]  # the same NIC, not another one
        assert "UP" in eth1["flags"]
        assert any(
            r.get("dst") == "10.240.0.0/16" and r.get("gateway") == nic.wire_ip
            for r in routes_in(run.status.netns)
        )
        assert link_info(nic.name, cluster.node_netns) is None  # gone from the node
        status = wait(lambda: (claim_of(cluster, pod).get("status") or {}).get("devices"))
        ready = [c for c in status[0]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
        assert status[0]["networkData"]["interfaceName"] == "eth1"
    finally:
        cleanup(cluster, pod, run)
    # the pod stopped: the interface is back in the node netns as it was before
    assert_home(cluster, before, nic)


def test_two_interfaces_in_one_pod(cluster: Cluster, nics: Nics) -> None:
    a, b = nics.take(2)
    assert cluster.net is not None
    before = cluster.net.snapshot()
    pod = new_pod(
        cluster,
        [
            ("a", a, {"interface": {"name": "net-a", "addresses": [a.pod_address()]}}),
            ("b", b, {"interface": {"name": "net-b", "addresses": [b.pod_address()], "mtu": 1300}}),
        ],
    )
    run = cluster.run_pod(pod)
    try:
        assert run.status is not None
        links = links_in(run.status.netns)
        assert nic_has(links, "net-a", a.pod_address(), before[a.name]["address"])
        assert nic_has(links, "net-b", b.pod_address(), before[b.name]["address"])
        assert links["net-b"]["mtu"] == 1300
    finally:
        cleanup(cluster, pod, run)
    assert_home(cluster, before, a)
    assert_home(cluster, before, b)


def test_ipv6_addresses_and_routes(cluster: Cluster, nics: Nics) -> None:
    (nic,) = nics.take()
    assert cluster.net is not None
    before = cluster.net.snapshot()
    cfg = {
        "interface": {"name": "eth1", "addresses": [nic.pod_address6()]},
        "routes": [{"destination": "fd00:99::/64", "gateway": nic.wire_ip6}],
    }
    pod = new_pod(cluster, [("nic", nic, cfg)])
    run = cluster.run_pod(pod)
    try:
        assert run.status is not None
        eth1 = links_in(run.status.netns)["eth1"]
        assert nic.pod_address6() in addresses(eth1)
        assert any(r.get("dst") == "fd00:99::/64" for r in routes_in(run.status.netns, "-6"))
    finally:
        cleanup(cluster, pod, run)
    assert_home(cluster, before, nic)


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"interface": {"mtu": 20}}, r"interface\.mtu"),
        # checked against the device's features, which dra asks the netns worker for (rx-fcs is
        # fixed off on the stand-in NICs, macvlans, as on veths)
        (
            {"ethtool": {"features": {"rx-fcs": True}}},
            r"ethtool\.features\.rx-fcs: rx-fcs cannot be changed",
        ),
    ],
)
def test_invalid_config_fails_at_prepare_naming_the_field(
    cluster: Cluster, nics: Nics, extra: dict[str, Any], field: str
) -> None:
    (nic,) = nics.take()
    assert cluster.net is not None
    before = cluster.net.snapshot()
    cfg = simple_cfg(nic)
    cfg = {**cfg, **extra, "interface": {**cfg["interface"], **extra.get("interface", {})}}
    pod = new_pod(cluster, [("nic", nic, cfg)])
    with pytest.raises(NodeAgentError, match=field):
        cluster.run_pod(pod)
    cluster.remove_pod(pod, None)
    assert_home(cluster, before, nic)


def test_config_the_kernel_refuses_fails_the_sandbox_and_leaves_nothing_attached(
    cluster: Cluster, nics: Nics
) -> None:
    """A pod-side name that clashes with the CNI's eth0 passes validation but the pod netns refuses it."""
    (nic,) = nics.take()
    assert cluster.net is not None and cluster.agent is not None
    before = cluster.net.snapshot()
    pod = new_pod(cluster, [("nic", nic, {"interface": {"name": "eth0", "addresses": [nic.pod_address()]}})])
    with pytest.raises(SandboxError) as err:
        cluster.run_pod(pod)
    assert "eth0" in str(err.value) or "interface.name" in str(err.value), str(err.value)
    assert not [
        p
        for p in cluster.agent.cri.list_pod_sandboxes()
        if p["uid"] == pod["metadata"]["uid"] and p["state"] == "SANDBOX_READY"
    ]
    assert_home(cluster, before, nic)  # nothing left attached
    # `kubectl describe pod` shows why: a Warning Event on the pod with the kernel's reason
    uid = pod["metadata"]["uid"]

    def warnings() -> list[dict[str, Any]]:
        return [
            e
            for e in cluster.list_objects("v1", "events", "default")
            if e["involvedObject"].get("uid") == uid and e["reason"] == "NetworkDeviceAttachFailed"
        ]

    events = wait(warnings, 15.0)
    assert events and events[0]["type"] == "Warning", events
    assert events[0]["involvedObject"]["kind"] == "Pod"
    assert events[0]["involvedObject"]["name"] == pod["metadata"]["name"]
    assert "eth0" in events[0]["message"] or "interface.name" in events[0]["message"], events[0]
    cluster.remove_pod(pod, err.value.run)  # the kubelet gives up on the pod: unprepare
    assert_home(cluster, before, nic)


# ------------------------------------------------------------------ scale


def test_twenty_pods_concurrently_none_crossed(cluster: Cluster, nics: Nics) -> None:
    taken = nics.take(20)
    assert cluster.net is not None
    before = cluster.net.snapshot()
    pods = [new_pod(cluster, [("nic", nic, simple_cfg(nic))]) for nic in taken]
    # On a loaded machine an attach may miss the runtime's request budget (2 s, containerd's
    # default): that sandbox fails and the kubelet retries it. What counts is where the NICs end.
    with ThreadPoolExecutor(max_workers=20) as pool:
        runs = list(pool.map(lambda pod: run_pod_retrying(cluster, pod), pods))
    try:
        for nic, run in zip(taken, runs, strict=True):
            assert run.status is not None
            links = links_in(run.status.netns)
            assert nic_has(links, "eth1", nic.pod_address(), before[nic.name]["address"]), (nic.name, links)
            assert [n for n in links if n not in ("lo", "eth0", "eth1")] == []
    finally:
        with ThreadPoolExecutor(max_workers=20) as pool:
            list(pool.map(lambda pr: cleanup(cluster, *pr), zip(pods, runs, strict=True)))
    for nic in taken:
        assert_home(cluster, before, nic)
    nics.give_back(taken)  # back home and unchanged: reusable


# ------------------------------------------------------------------ restarts


def test_late_attach_after_nri_comes_back(cluster: Cluster, nics: Nics) -> None:
    (nic,) = nics.take()
    assert cluster.net is not None
    before = cluster.net.snapshot()
    pod = new_pod(cluster, [("nic", nic, simple_cfg(nic))])
    cluster.supervisorctl("stop", "nri")
    try:
        run = cluster.run_pod(pod)  # the runtime has no plugin: the sandbox starts without the NIC
        assert run.status is not None
        assert "eth1" not in links_in(run.status.netns)
    finally:
        cluster.supervisorctl("start", "nri")
    try:
        assert wait(lambda: "eth1" in links_in(run.status.netns) if run.status else False, 20.0)
        entry = wait(lambda: (claim_of(cluster, pod).get("status") or {}).get("devices"), 15.0)
        ready = [c for c in entry[0]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True" and ready[0]["lastTransitionTime"]
    finally:
        cleanup(cluster, pod, run)
    assert_home(cluster, before, nic)


# ------------------------------------------------------------------ fail closed without NRI (CDI hook)


def running(cluster: Cluster, run: PodRun) -> list[str]:
    assert cluster.agent is not None
    return [
        c["name"]
        for c in cluster.agent.cri.list_containers(run.sandbox_id)
        if c["state"] == "CONTAINER_RUNNING"
    ]


def test_claimed_pod_container_waits_for_its_nic_while_nri_is_down(cluster: Cluster, nics: Nics) -> None:
    (nic,) = nics.take()
    assert cluster.net is not None and cluster.agent is not None
    before = cluster.net.snapshot()
    pod = new_pod(cluster, [("nic", nic, simple_cfg(nic))])
    run: PodRun | None = None
    cluster.supervisorctl("stop", "nri")
    try:
        run = cluster.run_pod(pod)  # no plugin connected: containerd starts the sandbox without the NIC
        assert run.status is not None and "eth1" not in links_in(run.status.netns)
        with pytest.raises(ContainerError) as refused:  # one attempt: the hook waits, then refuses
            cluster.agent.start_containers(run, pod, timeout=1.0)
        assert "not attached in the container's network namespace" in str(refused.value)
        assert f"claim {claim_of(cluster, pod)['metadata']['uid']}" in str(refused.value)
        assert running(cluster, run) == []
    finally:
        cluster.supervisorctl("start", "nri")
    try:
        # nri's Synchronize attaches the NIC to the running sandbox; the kubelet's retry then starts
        cluster.agent.start_containers(run, pod, timeout=60.0)
        assert running(cluster, run) == ["main"]
        assert run.status is not None
        assert nic_has(links_in(run.status.netns), "eth1", nic.pod_address(), before[nic.name]["address"])
    finally:
        cleanup(cluster, pod, run)
    assert_home(cluster, before, nic)


def test_pod_without_a_claim_starts_while_nri_is_down(cluster: Cluster) -> None:
    assert cluster.agent is not None
    pod = cluster.make_pod(unique_name("pod"), {})
    run: PodRun | None = None
    cluster.supervisorctl("stop", "nri")
    try:
        run = cluster.run_pod(pod)
        cluster.agent.start_containers(run, pod, timeout=30.0)
        assert running(cluster, run) == ["main"] and run.attempts == {"main": 1}  # first try, no hook
    finally:
        cluster.supervisorctl("start", "nri")
        cleanup(cluster, pod, run)


@pytest.mark.parametrize("service", ["netns", "dra", "discovery"])
def test_kill_a_service_in_the_middle_of_a_pod_start(cluster: Cluster, nics: Nics, service: str) -> None:
    (nic,) = nics.take()
    assert cluster.net is not None
    before = cluster.net.snapshot()
    pod = new_pod(cluster, [("nic", nic, simple_cfg(nic))])
    result: dict[str, Any] = {}

    def start() -> None:
        try:
            result["run"] = cluster.run_pod(pod)
        except Exception as exc:
            result["error"] = exc

    t = threading.Thread(target=start)
    t.start()
    time.sleep(random.uniform(0.02, 0.25))
    # supervisord restarts dra and discovery; the kubelet (prober) the netns container
    pid = cluster.service_pid(service)
    if service == "netns":
        stop_outside_the_move(cluster, pid, nic, result)
    os.kill(pid, signal.SIGKILL)
    t.join(120)
    cluster.wait_services()
    run: PodRun | None = result.get("run")
    attempts, errors = 0, [f"first: {result.get('error')}"]
    give_up = time.monotonic() + 90
    while run is None and time.monotonic() < give_up:  # the kubelet retries a failed start
        attempts += 1
        run = retry_start(cluster, pod, attempts, errors)
    try:
        assert run is not None and run.status is not None, "\n".join(errors)
        links = wait(
            lambda: links_in(run.status.netns) if "eth1" in links_in(run.status.netns) else None, 20.0
        )
        assert links and nic_has(links, "eth1", nic.pod_address(), before[nic.name]["address"]), links
    finally:
        cleanup(cluster, pod, run)
    assert_home(cluster, before, nic)


def stop_outside_the_move(cluster: Cluster, pid: int, nic: StandInNic, result: dict[str, Any]) -> None:
    """Stop the worker (SIGSTOP) where a kill loses no NIC the way a node would: before the move
    (the NIC on the node) or once RunPodSandbox has returned. In between, the NIC is in the
    sandbox's netns and the sandbox fails without the worker's reply; containerd then deletes that
    netns, and the kernel deletes a veth with it (both ends), where a physical NIC would come back to
    the node's root netns. The stand-in NICs are veths, so that window cannot be shown here."""
    assert cluster.net is not None
    give_up = time.monotonic() + 30
    while True:
        os.kill(pid, signal.SIGSTOP)
        if result or link_info(nic.name, cluster.net.node_netns) is not None or time.monotonic() > give_up:
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.002)


def test_containerd_restart_plugin_reconnects_and_next_pod_works(cluster: Cluster, nics: Nics) -> None:
    from dranet.bus import BusClient

    assert cluster.containerd is not None
    cluster.containerd.restart()
    client = BusClient(cluster.runtime_dir, "nri", timeout=2.0)
    try:

        def connected() -> bool:
            try:
                return bool(client.call("ping").get("details", {}).get("connected"))
            except Exception:
                return False

        assert wait(connected, 30.0), "the nri service did not reconnect to the restarted containerd"
    finally:
        client.close()
    (nic,) = nics.take()
    assert cluster.net is not None
    before = cluster.net.snapshot()
    pod = new_pod(cluster, [("nic", nic, simple_cfg(nic))])
    run = cluster.run_pod(pod)
    try:
        assert run.status is not None
        assert nic_has(links_in(run.status.netns), "eth1", nic.pod_address(), before[nic.name]["address"])
    finally:
        cleanup(cluster, pod, run)
    assert_home(cluster, before, nic)
