"""Issue 10 items 2 and 3 on the real containerd: nri as the DaemonSet runs it, without the netns
mount, and a pod with several sandboxes.

netns, discovery and dra run under supervisord; nri runs in a mount namespace of its own where
/run/netns (and /var/run/netns) is an empty tmpfs, as in the shipped DaemonSet, whose nri container
does not mount the node's netns directory. The local API server, the allocator and the kubelet
stand-in drive pods through real DRA gRPC and CRI; what a pod got is read inside its netns.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_full_path import Nics, assert_home, new_pod, simple_cfg, wait

from dranet.bus import BusClient
from localcluster.demo import DRIVER, Cluster, links_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

NETNS_DIRS = ("/run/netns", "/var/run/netns")


def hidden_dirs() -> list[str]:
    """/var/run is usually a symlink to /run: hide each real directory once."""
    return sorted({os.path.realpath(d) for d in NETNS_DIRS})


class HiddenNetnsNri:
    """The nri service in its own mount namespace, with the netns directories hidden under tmpfs."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cluster.logs_dir / "nri-hidden-netns.log"

    def start(self) -> None:
        c = self.cluster
        assert c.containerd is not None
        dirs = hidden_dirs()
        hide = " && ".join(f"mount -t tmpfs -o size=64k dranet-hide {shlex.quote(d)}" for d in dirs)
        argv = [
            sys.executable,
            "-m",
            "dranet",
            "nri",
            f"--runtime-dir={c.runtime_dir}",
            f"--state-dir={c.state_dir}",
            f"--node-name={c.node_name}",
            f"--driver-name={DRIVER}",
            f"--nri-socket={c.containerd.nri_socket}",
        ]
        script = f"{hide} && exec {shlex.join(argv)}"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert wait(self.synchronized, 30.0), f"nri did not connect to containerd; see {self.log}"
        # What the service itself sees: its netns directory is empty, whatever the node has.
        for d in dirs:
            assert os.listdir(f"/proc/{self.proc.pid}/root{d}") == [], d

    def synchronized(self) -> bool:
        client = BusClient(self.cluster.runtime_dir, "nri", timeout=1.0)
        try:
            details = client.call("ping").get("details", {})
            return bool(details.get("connected") and details.get("synchronized"))
        except Exception:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # our own process group only
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(containerd: Any) -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="tlc-sbx-", dir="/tmp"))
    c = Cluster(
        workdir,
        nic_count=4,
        containerd=containerd,
        log=lambda s: None,
        services=("netns", "discovery", "dra"),
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


@pytest.fixture(scope="module")
def nri(cluster: Cluster) -> Iterator[HiddenNetnsNri]:
    n = HiddenNetnsNri(cluster)
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture(scope="module")
def nics(cluster: Cluster) -> Nics:
    return Nics(cluster)


def has_eth1(netns: str) -> bool:
    return "eth1" in links_in(netns)


def test_restart_keeps_attached_pods_and_late_attaches_without_the_netns_mount(
    cluster: Cluster, nri: HiddenNetnsNri, nics: Nics
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
    cluster: Cluster, nri: HiddenNetnsNri, nics: Nics
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
