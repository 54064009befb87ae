"""Child interfaces of a shared NIC on a real kernel: macvlan children in several pods, rollback,
crash recovery, the MTU rule; ipvlan where the kernel has it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dranet.services.netns.model import ATTACHING
from dranet.services.netns.testbed import Testbed, ip, ip_json
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusError

pytestmark = pytest.mark.kernel


def share(name: str, address: str, share_id: str, **interface: Any) -> dict[str, Any]:
    config = {"interface": {"name": name, "type": "macvlan", "addresses": [address], **interface}}
    return {
        "device": "sh0",
        "ifname": "tnsh0",
        "config": config,
        "claim_uid": f"c-{share_id}",
        "share_id": share_id,
    }


def host_view(tb: Testbed) -> Any:
    link = tb.link("tnsh0")
    assert link is not None
    return (
        link["mtu"],
        link["address"],
        link["flags"],
        tb.addresses("tnsh0"),
        [x["ifname"] for x in ip_json("link", ns=tb.node)],
    )


def children(ns: str) -> list[dict[str, Any]]:
    return [
        x
        for x in ip_json("-d", "link", ns=ns)
        if x.get("linkinfo", {}).get("info_kind") in ("macvlan", "ipvlan")
    ]


def talk(server_ns: str, address: str, client_ns: str) -> bytes:
    """A TCP exchange from client_ns to address in server_ns (the machine has no ping)."""
    serve = (
        f"import socket; s = socket.create_server(({address!r}, 7777)); print('ready', flush=True); "
        "c, _ = s.accept(); c.sendall(b'hello from the other pod'); c.close()"
    )
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c", serve], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        fetch = (
            f"import socket, sys; c = socket.create_connection(({address!r}, 7777), timeout=5); "
            "sys.stdout.buffer.write(c.recv(64))"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", client_ns, sys.executable, "-c", fetch], capture_output=True, timeout=20
        )
        return out.stdout
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def nic(tb: Testbed) -> Testbed:
    tb.add_nic("tnsh0", addresses=("10.3.0.1/24",), mtu=1500)
    return tb


def test_children_of_one_nic_in_two_pods_talk_and_leave_nothing_behind(
    nic: Testbed, worker: NetnsWorker
) -> None:
    before = host_view(nic)
    pods = [nic.add_netns(), nic.add_netns()]
    a = worker.attach("pod-1", f"/run/netns/{pods[0]}", [share("net1", "10.3.0.11/24", "s1", mtu=1400)])
    b = worker.attach("pod-2", f"/run/netns/{pods[1]}", [share("net1", "10.3.0.12/24", "s2")])
    for pod, att, addr, mtu in ((pods[0], a, "10.3.0.11/24", 1400), (pods[1], b, "10.3.0.12/24", 1500)):
        (child,) = children(pod)
        assert child["ifname"] == "net1" and child["mtu"] == mtu
        assert child["linkinfo"]["info_data"]["mode"] == "bridge"
        assert nic.addresses("net1", ns=pod) == [addr]
        assert att["attachments"][0]["pod_ifname"] == "net1"
        assert att["attachments"][0]["hardware_address"] == child["address"]
    assert a["attachments"][0]["hardware_address"] != b["attachments"][0]["hardware_address"]
    assert host_view(nic) == before  # the parent never left the host, nothing of it changed
    # Children of one parent in bridge mode reach each other through it.
    assert talk(pods[1], "10.3.0.12", pods[0]) == b"hello from the other pod"
    worker.detach("pod-1")
    assert children(pods[0]) == [] and len(children(pods[1])) == 1
    worker.detach("pod-2")
    assert children(pods[1]) == []
    assert host_view(nic) == before
    assert worker.queries.attachments() == {"attachments": []}


def test_the_mtu_is_never_above_the_parents_and_a_share_never_moves_the_nic(
    nic: Testbed, worker: NetnsWorker
) -> None:
    pod = nic.add_netns()
    with pytest.raises(BusError) as err:
        worker.attach("pod-1", f"/run/netns/{pod}", [share("net1", "10.3.0.11/24", "s1", mtu=9000)])
    assert err.value.code == "invalid_config" and "interface.mtu" in err.value.message
    assert "above the MTU 1500 of the shared NIC tnsh0" in err.value.message
    passthrough = share("net1", "10.3.0.11/24", "s1")
    passthrough["config"]["interface"]["type"] = "passthrough"
    with pytest.raises(BusError) as err:
        worker.attach("pod-1", f"/run/netns/{pod}", [passthrough])
    assert "interface.type" in err.value.message
    assert nic.link("tnsh0") is not None and children(pod) == []
    # While pods have children of it, the NIC itself cannot go to a pod.
    worker.attach("pod-1", f"/run/netns/{pod}", [share("net1", "10.3.0.11/24", "s1")])
    with pytest.raises(BusError) as err:
        worker.attach(
            "pod-9", f"/run/netns/{nic.add_netns()}", [{"device": "sh0", "ifname": "tnsh0", "config": {}}]
        )
    assert err.value.code == "conflict"
    worker.detach("pod-1")


def test_a_failed_attach_deletes_the_child(nic: Testbed, tmp_path: Path) -> None:
    def boom(step: str, _device: str) -> None:
        if step == "addresses":
            raise OSError(5, "injected failure")

    w = NetnsWorker(tmp_path, host_netns=nic.node_path, hook=boom)
    w.start(watch_interval=0)
    try:
        pod = nic.add_netns()
        before = host_view(nic)
        with pytest.raises(BusError):
            w.attach("pod-1", f"/run/netns/{pod}", [share("net1", "10.3.0.11/24", "s1")])
        assert children(pod) == [] and host_view(nic) == before
        assert w.queries.attachments() == {"attachments": []}
    finally:
        w.close()


def test_a_crash_in_the_middle_leaves_no_child(nic: Testbed, tmp_path: Path) -> None:
    pod = nic.add_netns()
    w = NetnsWorker(tmp_path, host_netns=nic.node_path)
    w.start(watch_interval=0)
    w.attach("pod-1", f"/run/netns/{pod}", [share("net1", "10.3.0.11/24", "s1")])
    # What the disk and the kernel hold when the worker dies after the create, before the attach
    # is journaled as finished: the entry says attaching, the child exists.
    (entry,) = w.ledger.entries()
    w.ledger.write(entry.with_phase(ATTACHING), durable=True)
    w.ledger.close()
    assert len(children(pod)) == 1
    again = NetnsWorker(tmp_path, host_netns=nic.node_path)
    again.start(watch_interval=0)
    try:
        assert children(pod) == []
        assert again.queries.attachments() == {"attachments": []}
        assert nic.link("tnsh0") is not None
    finally:
        again.close()


def _kernel_has_ipvlan(tb: Testbed) -> bool:
    ok = (
        subprocess.run(
            ["ip", "-n", tb.node, "link", "add", "tnipv0", "link", "tnsh0", "type", "ipvlan", "mode", "l2"],
            capture_output=True,
        ).returncode
        == 0
    )
    ip("link", "del", "tnipv0", ns=tb.node, check=False)
    return ok


def test_ipvlan_child(nic: Testbed, worker: NetnsWorker) -> None:
    if not _kernel_has_ipvlan(nic):
        pytest.skip(
            "this kernel has no ipvlan (CONFIG_IPVLAN): its config and planning are tested in unit tests"
        )
    pod = nic.add_netns()
    d = share("net1", "10.3.0.11/24", "s1")
    d["config"]["interface"].update(type="ipvlan", ipvlan={"mode": "l3", "flag": "private"})
    worker.attach("pod-1", f"/run/netns/{pod}", [d])
    (child,) = children(pod)
    assert child["linkinfo"]["info_kind"] == "ipvlan"
    worker.detach("pod-1")
    assert children(pod) == []
