"""A pod netns the runtime deleted before StopPodSandbox (cri-o does, kubernetes-sigs/dranet#137,
#329): the NIC is found wherever the kernel put it and restored, and nothing raises."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker

pytestmark = pytest.mark.kernel

CONFIG = {"interface": {"name": "eth0", "addresses": ["10.31.0.2/24"], "mtu": 1300}}


def host_state(tb: Testbed, name: str) -> tuple:
    link = tb.link(name)
    assert link is not None, f"{name} is not back on the host"
    return (link["mtu"], link["address"], "UP" in link["flags"], tuple(tb.addresses(name)))


def start_worker(tb: Testbed, state: Path) -> NetnsWorker:
    events: list[dict] = []
    w = NetnsWorker(state, host_netns=tb.node_path, publish=lambda _t, b: events.append(b))
    w.events = events  # type: ignore[attr-defined]
    w.start(watch_interval=0)
    return w


@pytest.fixture
def sandbox(tb: Testbed) -> Iterator[tuple[str, subprocess.Popen]]:
    """A pod netns with a process in it (the sandbox's pause process)."""
    pod = tb.add_netns()
    proc = subprocess.Popen(["ip", "netns", "exec", pod, "sleep", "300"])
    try:
        yield pod, proc
    finally:
        proc.kill()
        proc.wait()


def runtime_deletes(tb: Testbed, pod: str, proc: subprocess.Popen) -> None:
    """What cri-o does before StopPodSandbox: the netns file goes and its processes die."""
    tb.del_netns(pod)
    proc.kill()
    proc.wait()
    assert not Path(f"/run/netns/{pod}").exists()


def test_stop_after_the_runtime_deleted_the_netns_restores_the_nic(
    tb: Testbed, tmp_path: Path, sandbox: tuple[str, subprocess.Popen]
) -> None:
    tb.add_nic("tnwd0", addresses=("10.30.0.2/24",), mtu=1450)
    before = host_state(tb, "tnwd0")
    pod, proc = sandbox
    w = start_worker(tb, tmp_path)
    try:
        w.attach("pod-d", f"/run/netns/{pod}", [{"device": "nic-d", "ifname": "tnwd0", "config": CONFIG}])
        assert tb.link("tnwd0") is None
        runtime_deletes(tb, pod, proc)
        # StopPodSandbox names the sandbox by its (now missing) netns path; then unprepare.
        w.detach("pod-d", netns=f"/run/netns/{pod}")
        assert host_state(tb, "tnwd0") == before
        assert w.detach("pod-d") is not None  # unprepare after it: nothing left, nothing raises
        assert w.queries.attachments() == {"attachments": []}
    finally:
        w.close()


def test_netns_destroyed_while_the_worker_was_down(
    tb: Testbed, tmp_path: Path, sandbox: tuple[str, subprocess.Popen]
) -> None:
    """Nobody held the netns, so the kernel destroyed it: a veth dies with it (a physical NIC
    would be pushed back to the node's netns, which this kernel cannot show). The restarted worker
    reconciles without raising, forgets the attachment, and the device name serves again."""
    tb.add_nic("tnwe0", addresses=("10.32.0.2/24",))
    pod, proc = sandbox
    w = start_worker(tb, tmp_path)
    w.attach("pod-e", f"/run/netns/{pod}", [{"device": "nic-e", "ifname": "tnwe0", "config": CONFIG}])
    w.close()  # the worker is down: its fd on the pod netns is closed
    runtime_deletes(tb, pod, proc)
    w = start_worker(tb, tmp_path)
    try:
        assert w.queries.attachments() == {"attachments": []}
        assert tb.link("tnwe0") is None  # the kernel destroyed the veth with its netns
        assert [e["state"] for e in w.events if e.get("device") == "nic-e"] == ["detached"]  # type: ignore[attr-defined]
        tb.add_nic("tnwe0", addresses=("10.32.0.2/24",))
        again = tb.add_netns()
        w.attach("pod-e2", f"/run/netns/{again}", [{"device": "nic-e", "ifname": "tnwe0", "config": CONFIG}])
        w.detach("pod-e2")
        assert tb.addresses("tnwe0") == ["10.32.0.2/24"]
    finally:
        w.close()
