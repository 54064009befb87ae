"""The worker and a pod's several sandboxes, on a real kernel: a detach names one sandbox (pod UID
and netns) and touches no other; `netns_alive` says which netns paths are alive, by identity."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker

pytestmark = pytest.mark.kernel


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    return testbed("tsb")


@pytest.fixture
def worker(tb: Testbed, tmp_path: Path) -> Iterator[NetnsWorker]:
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    w.start(watch_interval=0)
    try:
        yield w
    finally:
        w.close()


def nic(device: str, ifname: str) -> list[dict[str, object]]:
    return [{"device": device, "ifname": ifname, "config": {"interface": {"name": "eth1"}}}]


def where(worker: NetnsWorker, device: str) -> str | None:
    for a in worker.queries.attachments()["attachments"]:
        if a["device"] == device:
            return str(a["netns"])
    return None


def test_detach_of_the_old_sandbox_leaves_the_new_one(tb: Testbed, worker: NetnsWorker) -> None:
    """Attempt 0 attached and was stopped (its netns deleted); attempt 1 has the NIC now. The old
    sandbox's stop, remove or detach retry arrives again: the NIC stays in attempt 1."""
    tb.add_nic("tsba0", addresses=("10.31.0.2/24",))
    old, new = tb.add_netns(), tb.add_netns()
    old_path, new_path = f"/run/netns/{old}", f"/run/netns/{new}"
    worker.attach("pod-a", old_path, nic("nic-a", "tsba0"))
    assert worker.detach("pod-a", netns=old_path) == {"released": ["nic-a"]}
    tb.del_netns(old)
    worker.attach("pod-a", new_path, nic("nic-a", "tsba0"))
    for path in (old_path, f"/var/run/netns/{old}"):  # the same gone path, spelled two ways
        assert worker.detach("pod-a", netns=path) == {"released": []}
        assert worker.detach("pod-a", ["nic-a"], netns=path) == {"released": []}
    assert where(worker, "nic-a") == new_path
    assert tb.link("eth1", ns=new) is not None and tb.link("tsba0") is None
    assert worker.detach("pod-a", netns=new_path) == {"released": ["nic-a"]}
    assert tb.link("tsba0") is not None


def test_detach_names_one_live_sandbox_of_the_pod(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tsbb0", addresses=("10.32.0.2/24",))
    tb.add_nic("tsbc0", addresses=("10.33.0.2/24",))
    first, second = tb.add_netns(), tb.add_netns()
    worker.attach("pod-b", f"/run/netns/{first}", nic("nic-b", "tsbb0"))
    worker.attach("pod-b", f"/run/netns/{second}", nic("nic-c", "tsbc0"))
    assert worker.detach("pod-b", netns=f"/run/netns/{first}") == {"released": ["nic-b"]}
    assert where(worker, "nic-c") == f"/run/netns/{second}"
    assert worker.detach("pod-b") == {"released": ["nic-c"]}  # no netns: every sandbox of the pod


def test_netns_alive_by_identity(tb: Testbed, worker: NetnsWorker, tmp_path: Path) -> None:
    tb.add_nic("tsbd0", addresses=("10.34.0.2/24",))
    pod, other = tb.add_netns(), tb.add_netns()
    path = f"/run/netns/{pod}"
    worker.attach("pod-d", path, nic("nic-d", "tsbd0"))
    (listed,) = worker.queries.attachments()["attachments"]
    st = os.stat(path)
    assert listed["netns"] == path and listed["netns_id"] == f"{st.st_dev}:{st.st_ino}"
    not_netns = tmp_path / "plain-file"
    not_netns.write_text("")
    alive = worker.queries.alive_netns(
        [
            path,
            f"/var/run/netns/{pod}",
            f"/run/netns/{other}",
            "/run/netns/tsb-never-existed",
            str(not_netns),  # outside the netns roots
            tb.node_path,  # the node's own netns is never a pod's
            "relative/path",
        ]
    )["alive"]
    assert {a["netns"]: a["id"] for a in alive} == {
        path: listed["netns_id"],
        f"/var/run/netns/{pod}": listed["netns_id"],
        f"/run/netns/{other}": alive[2]["id"],
    }
    assert alive[2]["id"] != listed["netns_id"]
    worker.detach("pod-d", netns=path)
