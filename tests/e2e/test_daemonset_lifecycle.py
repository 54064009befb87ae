"""What only the shipped shape can show: the driver as the DaemonSet's pod (test_daemonset_pod.py's
cluster) living through the node's events while pods with claimed NICs run. The runtime restarts;
the nri service restarts alone, then the whole `dranet` container; the netns sidecar is killed; the
driver pod is replaced by one from a new image tag (an upgrade); the API server or containerd go
away while liveness is probed. Each time: no attached NIC is released, late attach works, new pods
get NICs once the driver is ready, and liveness restarts nothing.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dranet.bus import BusClient
from localcluster.daemonpod import DaemonPod, ProbeState
from localcluster.demo import PodRun, links_in
from localcluster.node import IMAGE, ApiFront, DaemonSetCluster, tag_image
from localcluster.nodenet import StandInNic
from tests.e2e.claims import assert_home, has_nic
from tests.e2e.test_daemonset_pod import claimed_pod, cluster, service_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
__all__ = ["cluster"]  # the session's driver (tests/e2e/conftest.py), as test_daemonset_pod names it

SUPERVISORCTL = ["supervisorctl", "-c", "/run/dranet/supervisord.conf"]


def wait(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            assert v, f"{what} within {timeout:.0f}s"
            return v
        time.sleep(0.2)


def run_dir(cluster: DaemonSetCluster) -> str:
    assert cluster.pod is not None
    return next(v.host_path for v in cluster.pod.plan.volumes if v.name == "run")


def nri_connected(cluster: DaemonSetCluster) -> bool:
    client = BusClient(run_dir(cluster), "nri", timeout=1.0)
    try:
        return bool(client.call("ping").get("details", {}).get("connected"))
    except Exception:
        return False
    finally:
        client.close()


@contextmanager
def attached(cluster: DaemonSetCluster, nic: StandInNic, name: str) -> Iterator[PodRun]:
    """A pod with nic claimed, running with it attached; removed after, the NIC checked home."""
    assert cluster.net is not None
    before = cluster.net.snapshot()
    pod = claimed_pod(cluster, nic)
    run = cluster.run_pod(pod)
    try:
        assert run.status is not None
        assert has_nic(run.status.netns, nic, before[nic.name]["address"]), driver_logs(cluster)
        yield run
    finally:
        cluster.remove_pod(pod, run)
    assert_home(cluster, before, nic)


def driver_logs(cluster: DaemonSetCluster) -> str:
    """The driver containers' log tails and containerd's NRI lines, for a failure's message."""
    assert cluster.pod is not None and cluster.containerd is not None
    tails = cluster.pod.log_tails(40)
    ctrd = cluster.containerd.log_path.read_text(errors="replace").splitlines()
    tails["containerd"] = [line for line in ctrd if "level=info" not in line][-20:]
    return "\n".join(f"--- {name}\n" + "\n".join(lines) for name, lines in tails.items())


def keeps_nic(cluster: DaemonSetCluster, run: PodRun, nic: StandInNic) -> bool:
    assert cluster.net is not None and run.status is not None
    return has_nic(run.status.netns, nic, nic_mac(cluster, nic))


_macs: dict[str, str] = {}


def nic_mac(cluster: DaemonSetCluster, nic: StandInNic) -> str:
    """The NIC's MAC as it was at home (the stand-in NICs keep theirs in the pod)."""
    assert cluster.net is not None
    if nic.name not in _macs:
        _macs[nic.name] = cluster.net.snapshot()[nic.name]["address"]
    return _macs[nic.name]


def supervisorctl(cluster: DaemonSetCluster, *args: str) -> str:
    assert cluster.pod is not None
    code, out, err = cluster.pod.exec("dranet", [*SUPERVISORCTL, *args], timeout=60)
    assert code == 0, f"supervisorctl {args}: {code} {out} {err}"
    return out


def restarts(pod: DaemonPod) -> dict[str, list[str]]:
    return {name: list(rc.restarts) for name, rc in pod.containers.items()}


@pytest.fixture(autouse=True)
def _driver_ready(cluster: DaemonSetCluster) -> Iterator[None]:
    """Every test starts and ends with the driver pod ready and nri connected to the runtime."""
    for nic in cluster.net.nics if cluster.net else []:
        nic_mac(cluster, nic)
    assert cluster.pod is not None
    cluster.pod.wait_ready(120)
    wait(lambda: nri_connected(cluster), 60, "nri connected")
    yield
    assert cluster.pod is not None
    cluster.pod.wait_ready(120)


def test_containerd_restart_claimed_pods_keep_their_nics(cluster: DaemonSetCluster) -> None:
    assert cluster.net is not None and cluster.containerd is not None and cluster.pod is not None
    nic_a, nic_b = cluster.net.nics[0], cluster.net.nics[1]
    before = restarts(cluster.pod)
    with attached(cluster, nic_a, "tdl-ctrd-a") as a:
        cluster.containerd.restart()
        assert keeps_nic(cluster, a, nic_a)
        wait(lambda: nri_connected(cluster), 60, "nri reconnected to the restarted containerd")
        with attached(cluster, nic_b, "tdl-ctrd-b"):  # the next pod gets its NIC
            assert keeps_nic(cluster, a, nic_a)
    assert restarts(cluster.pod) == before  # the driver's containers outlived the runtime's restart


def test_nri_restart_alone_late_attach_and_nothing_released(cluster: DaemonSetCluster) -> None:
    assert cluster.net is not None
    nic_a, nic_b = cluster.net.nics[0], cluster.net.nics[1]
    with attached(cluster, nic_a, "tdl-nri-a") as a:
        supervisorctl(cluster, "stop", "nri")
        try:
            pod_b = claimed_pod(cluster, nic_b)
            run_b = cluster.run_pod(pod_b)  # no plugin connected: the sandbox starts without its NIC
            assert run_b.status is not None and "eth1" not in links_in(run_b.status.netns)
        finally:
            supervisorctl(cluster, "start", "nri")
        try:
            wait(lambda: keeps_nic(cluster, run_b, nic_b), 30, "late attach after nri restarted")
            assert keeps_nic(cluster, a, nic_a)
        finally:
            cluster.remove_pod(pod_b, run_b)


def test_dranet_container_restart_late_attach_and_nothing_released(cluster: DaemonSetCluster) -> None:
    """The kubelet restarts the whole `dranet` container (discovery, dra, nri): a sandbox that
    started while nri was down gets its NIC from the new container's nri; an attached pod keeps
    its NIC; the sidecar is not touched."""
    assert cluster.net is not None and cluster.pod is not None
    nic_a, nic_b = cluster.net.nics[0], cluster.net.nics[1]
    netns_restarts = list(cluster.pod.containers["netns"].restarts)
    with attached(cluster, nic_a, "tdl-main-a") as a:
        supervisorctl(cluster, "stop", "nri")
        pod_b = claimed_pod(cluster, nic_b)
        run_b = cluster.run_pod(pod_b)
        try:
            assert run_b.status is not None and "eth1" not in links_in(run_b.status.netns)
            cluster.pod.restart("dranet", "the test restarts the container")
            cluster.pod.wait_ready(120)
            wait(lambda: keeps_nic(cluster, run_b, nic_b), 30, "late attach by the new container's nri")
            assert keeps_nic(cluster, a, nic_a)
        finally:
            cluster.remove_pod(pod_b, run_b)
    assert cluster.pod.containers["netns"].restarts == netns_restarts


def test_killed_sidecar_comes_back_and_nics_stay(cluster: DaemonSetCluster) -> None:
    assert cluster.net is not None and cluster.pod is not None
    nic_a, nic_b = cluster.net.nics[0], cluster.net.nics[1]
    rc = cluster.pod.containers["netns"]
    with attached(cluster, nic_a, "tdl-kill-a") as a:
        n = len(rc.restarts)
        worker = [pid for cmd, pid in cluster.pod.host_pids().items() if service_of(cmd) == "netns"]
        assert len(worker) == 1, worker
        os.kill(worker[0], signal.SIGKILL)
        wait(lambda: len(rc.restarts) > n, 90, "the prober restarts the exited sidecar")
        assert rc.restarts[-1].startswith("exited with 137")
        cluster.pod.wait_ready(120)
        assert keeps_nic(cluster, a, nic_a)
        with attached(cluster, nic_b, "tdl-kill-b"):  # the new worker attaches, and detaches below
            assert keeps_nic(cluster, a, nic_a)


@contextmanager
def fast_liveness(pod: DaemonPod) -> Iterator[None]:
    """The manifest's liveness probes, probed every second with threshold 2 (the manifest's 30 s
    x 4 would make the test wait minutes); the manifest's probes come back after."""
    for rc in pod.containers.values():
        p = rc.plan.probes["livenessProbe"]
        rc.probes["livenessProbe"] = ProbeState(
            dataclasses.replace(p, period=1, failure_threshold=2), time.monotonic()
        )
    try:
        yield
    finally:
        for rc in pod.containers.values():
            rc.probes["livenessProbe"] = ProbeState(rc.plan.probes["livenessProbe"], time.monotonic())


def liveness_runs(pod: DaemonPod) -> int:
    return sum(rc.probes["livenessProbe"].successes for rc in pod.containers.values())


def test_liveness_holds_while_the_api_server_is_down(cluster: DaemonSetCluster) -> None:
    assert cluster.pod is not None and cluster.front is not None
    before = restarts(cluster.pod)
    with fast_liveness(cluster.pod):
        cluster.front.stop()  # the API server is unreachable from the node
        try:
            time.sleep(8)
            wait(lambda: liveness_runs(cluster.pod) >= 6, 30, "liveness probed while the API was down")
        finally:
            assert cluster.pki is not None
            cluster.front = ApiFront(cluster.node_netns, cluster.front.upstream, cluster.pki)
            cluster.front.start()
        assert restarts(cluster.pod) == before


def test_liveness_holds_while_containerd_is_down(cluster: DaemonSetCluster) -> None:
    """The runtime down says nothing about the driver: its liveness probe (an HTTP GET of the pod's
    endpoint, /healthz) keeps passing and nothing is counted as a failure or restarted."""
    pod = cluster.pod
    assert pod is not None and cluster.containerd is not None
    before = restarts(pod)
    counted = 0
    with fast_liveness(pod):
        cluster.containerd.kill()
        try:
            end = time.monotonic() + 8
            while time.monotonic() < end:
                counted = max(
                    counted, *(rc.probes["livenessProbe"].failures for rc in pod.containers.values())
                )
                time.sleep(0.2)
        finally:
            cluster.containerd.up()
        wait(lambda: liveness_runs(pod) >= 4, 30, "liveness probed after containerd came back")
    assert counted == 0, "a probe that could not run was counted as a failure"
    assert restarts(pod) == before


def test_upgrade_to_a_new_image_tag_loses_nothing(cluster: DaemonSetCluster) -> None:
    """The DaemonSet's rolling update on one node (maxSurge 0): the old pod goes (grace period),
    then the pod from the new template (a new image tag) comes; claimed pods run throughout."""
    assert cluster.net is not None and cluster.pod is not None and cluster.containerd is not None
    nic_a, nic_b = cluster.net.nics[0], cluster.net.nics[1]
    new_tag = "localhost/dranet:upgrade-test"
    tag_image(cluster.containerd, IMAGE, new_tag)  # same content: what is tested is the handover
    with attached(cluster, nic_a, "tdl-upg-a") as a:
        old_uid = cluster.pod.plan.sandbox.metadata.uid
        cluster.roll(new_tag)
        assert cluster.pod.plan.sandbox.metadata.uid != old_uid
        images = {c.name: c.config.image.image for c in cluster.pod.plan.containers}
        assert set(images.values()) == {new_tag}, images
        assert keeps_nic(cluster, a, nic_a)
        with attached(cluster, nic_b, "tdl-upg-b"):  # attached by the new pod's services
            assert keeps_nic(cluster, a, nic_a)
    # tdl-upg-a's NIC went home through the new pod's worker (attached() checks it). Last in the
    # module: the driver pod is a new one after it (no restarts, no prober errors of the tests above)
