"""Issue 10 items 2 and 3 on the real containerd: nri as the DaemonSet runs it, without the netns
mount, and a pod with several sandboxes.

The driver is the DaemonSet's pod (conftest.py's ``driver``): nri runs in the `dranet` container,
which does not mount the node's netns directory (only the netns sidecar does). The local API
server, the allocator and the kubelet stand-in drive pods through real DRA gRPC and CRI; what a pod
got is read inside its netns.
"""

from __future__ import annotations

import pytest

from dranet.bus import BusClient
from localcluster.demo import links_in
from localcluster.node import DaemonSetCluster as Cluster
from tests.e2e.claims import Nics, assert_home, new_pod, simple_cfg, wait

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

NETNS_DIRS = ("/run/netns", "/var/run/netns")


@pytest.fixture
def cluster(driver: Cluster) -> Cluster:
    return driver


class Nri:
    """The nri service in the pod's `dranet` container, stopped and started under its supervisord."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def stop(self) -> None:
        self.cluster.supervisorctl("stop", "nri")

    def start(self) -> None:
        self.cluster.supervisorctl("start", "nri")
        assert wait(self.synchronized, 30.0), f"nri did not connect to containerd: {self.cluster.logs_dir}"
        # What the service sees, from inside its container: no netns directory with the pods' files.
        assert self.cluster.pod is not None
        look = f"import os; print([d for d in {NETNS_DIRS!r} if os.path.isdir(d) and os.listdir(d)])"
        code, out, err = self.cluster.pod.exec("dranet", ["python3", "-c", look], timeout=30)
        assert (code, out.strip()) == (0, "[]"), out + err

    def synchronized(self) -> bool:
        client = BusClient(self.cluster.runtime_dir, "nri", timeout=1.0)
        try:
            details = client.call("ping").get("details", {})
            return bool(details.get("connected") and details.get("synchronized"))
        except Exception:
            return False
        finally:
            client.close()


@pytest.fixture
def nri(cluster: Cluster) -> Nri:
    return Nri(cluster)


def has_eth1(netns: str) -> bool:
    return "eth1" in links_in(netns)


def test_restart_keeps_attached_pods_and_late_attaches_without_the_netns_mount(
    cluster: Cluster, nri: Nri, nics: Nics
) -> None:
    a, b = nics.take(2)
    assert cluster.net is not None
    before = cluster.net.snapshot()
    pod_a = new_pod(cluster, [("nic", a, simple_cfg(a))])
    pod_b = new_pod(cluster, [("nic", b, simple_cfg(b))])
    run_a = cluster.run_pod(pod_a)  # attached at RunPodSandbox
    run_b = None
    try:
        assert run_a.status is not None and has_eth1(run_a.status.netns)
        nri.stop()
        try:
            run_b = cluster.run_pod(pod_b)  # no plugin: the sandbox starts without its NIC
            assert run_b.status is not None and not has_eth1(run_b.status.netns)
        finally:
            nri.start()  # Synchronize: reconcile
        assert wait(lambda: has_eth1(run_b.status.netns) if run_b and run_b.status else False, 30.0), (
            "no late attach: the pod started while nri was down never got its NIC"
        )
        # the same reconcile released nothing: the pod attached before the restart keeps its NIC
        assert has_eth1(run_a.status.netns), "reconcile released a running pod's NIC"
    finally:
        cluster.remove_pod(pod_a, run_a)
        cluster.remove_pod(pod_b, run_b)
    assert_home(cluster, before, a)
    assert_home(cluster, before, b)


def test_the_old_sandbox_of_a_pod_never_takes_the_nic_of_the_new_one(
    cluster: Cluster, nri: Nri, nics: Nics
) -> None:
    """Attempt 0 runs and stops; attempt 1 (same pod UID) runs; the kubelet's garbage collector
    stops and removes attempt 0 while attempt 1 runs: the NIC stays in attempt 1."""
    (nic,) = nics.take()
    assert cluster.net is not None and cluster.agent is not None
    before = cluster.net.snapshot()
    pod = new_pod(cluster, [("nic", nic, simple_cfg(nic))])
    run = cluster.run_pod(pod)  # attempt 0, with its NIC
    cri = cluster.agent.cri
    old = run.sandbox_id
    try:
        assert run.status is not None and has_eth1(run.status.netns)
        cri.stop_pod_sandbox(old)
        assert_home(cluster, before, nic)
        new = cri.run_pod_sandbox(run.name, uid=run.uid, namespace=run.namespace, attempt=1)
        run.sandbox_id = new
        run.status = cri.status(new)
        assert run.status.netns and has_eth1(run.status.netns)
        cri.stop_pod_sandbox(old)  # the garbage collector: stop, then remove the old sandbox
        cri.remove_pod_sandbox(old)
        eth1 = links_in(run.status.netns).get("eth1")
        assert eth1 is not None, "removing the old sandbox took the NIC out of the running one"
        assert eth1["address"] == before[nic.name]["address"]
    finally:
        cluster.remove_pod(pod, run)
    assert_home(cluster, before, nic)
