"""Discovery against the real kernel in test network namespaces (veth, bridge, macvlan)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from dranet.services.discovery.devices import ScanOptions
from dranet.services.discovery.filter import DeviceFilter
from dranet.services.discovery.inventory import Inventory, InventoryConfig
from dranet.services.discovery.model import Device

from dranet.bus import BusClient

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]
DEADLINE = 10.0


def ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[str]:
    """A "node" netns: uplink bridge br-up (default route) with port upl0, a macvlan on the bridge,
    eth-a (free), eth-b (a default route in table 100, which no rule sends the node's traffic to:
    offered); the veth peers live in a "wire" netns."""
    name = f"tdi-{secrets.token_hex(3)}"
    wire = name + "w"
    ip("netns", "add", name)
    ip("netns", "add", wire)
    try:
        for ifname, peer in (("upl0", "p-upl0"), ("eth-a", "p-a"), ("eth-b", "p-b")):
            ip("link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", wire, ns=name)
        ip("link", "add", "br-up", "type", "bridge", ns=name)
        ip("link", "set", "upl0", "master", "br-up", ns=name)
        for ifname in ("br-up", "upl0", "eth-a", "eth-b"):
            ip("link", "set", ifname, "up", ns=name)
        ip("addr", "add", "10.99.0.2/24", "dev", "br-up", ns=name)
        ip("route", "add", "default", "via", "10.99.0.1", "dev", "br-up", ns=name)
        ip("link", "add", "mv0", "link", "br-up", "type", "macvlan", "mode", "bridge", ns=name)
        ip("addr", "add", "10.98.0.2/24", "dev", "eth-b", ns=name)
        ip("route", "add", "default", "via", "10.98.0.1", "dev", "eth-b", "table", "100", ns=name)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "netns", "del", wire], capture_output=True)


@pytest.fixture
def inventory(node: str, tmp_path: Path) -> Iterator[Inventory]:
    (tmp_path / "sys").mkdir()
    cfg = InventoryConfig(
        sysfs_root=tmp_path / "sys",  # the host's sysfs shows the host's netdevs, not the test netns'
        options=ScanOptions(filter=DeviceFilter("true")),
        netns=node,
        coalesce=0.02,
    )
    inv = Inventory(cfg)
    inv.start()
    assert inv.ready.wait(DEADLINE)
    yield inv
    inv.stop()


def by_ifname(inv: Inventory) -> dict[str, Device]:
    return {d.ifname: d for d in inv.devices()[1] if d.ifname}


def wait_until(cond: Callable[[], Any], what: str) -> Any:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_scan_matches_namespace_and_excludes_uplinks(inventory: Inventory) -> None:
    devs = by_ifname(inventory)
    assert set(devs) == {"br-up", "upl0", "eth-a", "eth-b", "mv0"}
    allowed = {n for n, d in devs.items() if d.allocatable}
    # br-up carries the node's default route and upl0 is its port
    assert allowed == {"eth-a", "eth-b", "mv0"}
    a = devs["eth-a"].attributes
    assert a["dra.net/type"] == "veth" and a["dra.net/virtual"] is True and a["dra.net/ifName"] == "eth-a"
    assert devs["eth-a"].name == "eth-a"
    assert devs["mv0"].attributes["dra.net/type"] == "macvlan"
    assert devs["br-up"].attributes["dra.net/ipv4"] == "10.99.0.2/24"


def test_add_rename_readdress_remove_are_reflected(inventory: Inventory, node: str) -> None:
    ip("link", "add", "eth-c", "type", "veth", "peer", "name", "p-c", ns=node)
    wait_until(lambda: "eth-c" in by_ifname(inventory), "eth-c added")
    ip("link", "set", "eth-c", "name", "eth_d", ns=node)
    devs = wait_until(lambda: "eth_d" in by_ifname(inventory) and by_ifname(inventory), "rename")
    assert "eth-c" not in devs
    assert devs["eth_d"].name.startswith("net-")  # not a DNS label: encoded like upstream
    ip("addr", "add", "10.77.0.1/24", "dev", "eth-a", ns=node)
    wait_until(
        lambda: by_ifname(inventory)["eth-a"].attributes.get("dra.net/ipv4") == "10.77.0.1/24", "address"
    )
    ip("link", "del", "eth_d", ns=node)
    wait_until(lambda: "eth_d" not in by_ifname(inventory), "removal")


def test_route_changes_reevaluate_uplinks(inventory: Inventory, node: str) -> None:
    assert by_ifname(inventory)["eth-b"].allocatable
    ip("rule", "add", "table", "100", "priority", "100", ns=node)
    wait_until(lambda: not by_ifname(inventory)["eth-b"].allocatable, "eth-b an uplink through the rule")
    ip("rule", "del", "table", "100", "priority", "100", ns=node)
    ip("route", "del", "default", "table", "100", ns=node)
    wait_until(lambda: by_ifname(inventory)["eth-b"].allocatable, "eth-b no longer an uplink")
    ip("route", "replace", "default", "dev", "eth-a", ns=node)
    wait_until(lambda: not by_ifname(inventory)["eth-a"].allocatable, "eth-a became an uplink")
    assert by_ifname(inventory)["br-up"].allocatable


def test_device_in_a_pod_keeps_its_attributes_across_a_restart(node: str, tmp_path: Path) -> None:
    """eth-a moves into a pod netns (as an attach does): discovery keeps publishing it with its
    attributes, and so does a new discovery started while it is still in the pod (read back from
    the state dir); once it is no longer attached, it goes."""
    (tmp_path / "sys").mkdir()
    attached: set[str] | None = {"eth-a"}

    def start() -> Inventory:
        cfg = InventoryConfig(
            sysfs_root=tmp_path / "sys",
            options=ScanOptions(filter=DeviceFilter("true")),
            netns=node,
            coalesce=0.02,
            kept_path=tmp_path / "state" / "discovery" / "kept-devices.json",
        )
        inv = Inventory(cfg, attached=lambda: None if attached is None else set(attached))
        inv.start()
        assert inv.ready.wait(DEADLINE)
        return inv

    def names(inv: Inventory) -> dict[str, Device]:
        return {d.name: d for d in inv.devices()[1]}

    inv = start()
    before = names(inv)["eth-a"].attributes
    assert before["dra.net/ifName"] == "eth-a"
    pod = node + "p"
    ip("netns", "add", pod)
    try:
        ip("link", "set", "eth-a", "netns", pod, ns=node)
        inv.request_rescan(refresh_attached=True)
        wait_until(lambda: "eth-a" in names(inv) and not names(inv)["eth-a"].ifname, "eth-a kept")
        inv.stop()
        attached = None  # the worker does not answer yet when discovery comes back
        inv = start()
        assert "eth-a" not in names(inv)  # not published while unknown...
        attached = {"eth-a"}
        inv.request_rescan(refresh_attached=True)
        kept = wait_until(lambda: names(inv).get("eth-a"), "eth-a back in the inventory")
        assert kept.attributes == before and kept.ifname == "" and kept.allocatable
        attached = set()
        inv.request_rescan(refresh_attached=True)
        wait_until(lambda: "eth-a" not in names(inv), "eth-a gone once released")
        inv.stop()
        inv = start()
        assert "eth-a" not in names(inv)  # and not read back again
        inv.stop()
    finally:
        subprocess.run(["ip", "netns", "del", pod], capture_output=True)


def test_tcx_names_are_asked_for_when_links_change(node: str, tmp_path: Path) -> None:
    """The worker is asked for tcx programs at the first scan and after a link event (upstream's
    e2e toggles the link after attaching one), not at every address or route event."""
    (tmp_path / "sys").mkdir()
    asked: list[int] = []
    answer = {"eth-a": ["handle_ingress"]}

    def tcx() -> dict[str, list[str]]:
        asked.append(1)
        return answer

    cfg = InventoryConfig(
        sysfs_root=tmp_path / "sys",
        options=ScanOptions(filter=DeviceFilter("true")),
        netns=node,
        coalesce=0.02,
    )
    inv = Inventory(cfg, tcx=tcx)
    inv.start()
    try:
        assert inv.ready.wait(DEADLINE)
        assert by_ifname(inv)["eth-a"].attributes["dra.net/tcxProgramNames"] == "handle_ingress"
        assert len(asked) == 1
        generation = inv.generation
        ip("addr", "add", "10.77.0.1/24", "dev", "eth-a", ns=node)
        wait_until(lambda: inv.generation > generation, "the address rescan")
        assert (
            len(asked) == 1
            and by_ifname(inv)["eth-a"].attributes["dra.net/tcxProgramNames"] == "handle_ingress"
        )
        answer = {}
        ip("link", "set", "eth-a", "down", ns=node)
        ip("link", "set", "eth-a", "up", ns=node)
        wait_until(lambda: "dra.net/tcxProgramNames" not in by_ifname(inv)["eth-a"].attributes, "asked again")
        assert len(asked) == 2
    finally:
        inv.stop()


def test_the_workers_restore_failures_taint_their_devices(node: str, tmp_path: Path) -> None:
    """What the worker reports on `device_health` becomes a taint with its reason, asked again when
    the worker says it changed (the topic wakes a rescan that asks), and goes with the report."""
    (tmp_path / "sys").mkdir()
    report = {"eth-b": "restore-failed"}
    cfg = InventoryConfig(
        sysfs_root=tmp_path / "sys",
        options=ScanOptions(filter=DeviceFilter("true")),
        netns=node,
        coalesce=0.02,
    )
    inv = Inventory(cfg, health=lambda: dict(report))
    inv.start()
    try:
        assert inv.ready.wait(DEADLINE)
        def reasons() -> set[str]:
            return {t["value"] for t in by_ifname(inv)["eth-b"].taints if t["key"] == "dra.net/unhealthy"}

        # eth-b's far end is down too (the fixture): both reasons, one taint each.
        assert reasons() == {"restore-failed", "link-down"}
        assert {t["effect"] for t in by_ifname(inv)["eth-b"].taints} == {"NoSchedule"}
        report.clear()
        inv.request_rescan(refresh_attached=True)  # what the device_health topic triggers
        wait_until(lambda: reasons() == {"link-down"}, "the restore-failed taint gone")
    finally:
        inv.stop()


def test_default_filter_hides_veth(node: str, tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    inv = Inventory(InventoryConfig(sysfs_root=tmp_path / "sys", netns=node))
    inv.start()
    try:
        assert inv.ready.wait(DEADLINE)
        assert {n for n, d in by_ifname(inv).items() if d.allocatable} == {"mv0"}
    finally:
        inv.stop()


@contextmanager
def discovery_service(node: str, tmp_path: Path, *args: str) -> Iterator[tuple[Any, BusClient]]:
    """The discovery service process on the node netns, publishing to a local API server:
    (the API client, a bus client to discovery)."""
    from kubernetes import client, config

    from localcluster.apiserver import LocalAPIServer

    server = LocalAPIServer()
    server.start()
    kc = server.write_kubeconfig(tmp_path / "kubeconfig")
    api = config.new_client_from_config(config_file=str(kc))
    client.CoreV1Api(api).create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
    (tmp_path / "sys").mkdir()
    rundir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dranet.cli",
            "discovery",
            "--runtime-dir",
            str(rundir),
            "--state-dir",
            str(tmp_path / "state"),
            "--node-name",
            node,
            "--kubeconfig",
            str(kc),
            "--sysfs-root",
            str(tmp_path / "sys"),
            "--netns",
            node,
            "--publish-without-plugin",  # no dra and no kubelet here
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "discovery.log", "wb"),
    )
    bus = BusClient(rundir, "discovery", timeout=5)
    try:
        yield api, bus
    finally:
        bus.close()
        proc.terminate()
        proc.wait(10)
        server.stop()


def slices_of(api: Any, node: str) -> list[dict[str, Any]]:
    from kubernetes import client

    raw: Any = client.ResourceV1Api(api).list_resource_slice(
        field_selector=f"spec.nodeName={node}", _preload_content=False
    )
    return list(json.loads(raw.data)["items"])


def test_service_publishes_slices_and_serves_the_bus(node: str, tmp_path: Path) -> None:
    """The discovery service process: slices on the local API server, inventory on the bus."""
    from kubernetes import client

    # --uplink-interfaces: the operator's override: never offered, whatever the routes say.
    with discovery_service(node, tmp_path, "--filter", "true", "--uplink-interfaces", "eth-b") as (api, bus):
        res = client.ResourceV1Api(api)

        def published() -> set[str]:
            return {d["name"] for o in slices_of(api, node) for d in o["spec"]["devices"]}

        wait_until(lambda: published() == {"eth-a", "mv0"}, "slices")
        inv = bus.call("get_inventory")
        names = {d["ifname"]: d for d in inv["devices"]}
        assert names["eth-a"]["allocatable"] and not names["br-up"]["allocatable"]
        ip("link", "add", "eth-e", "type", "veth", "peer", "name", "p-e", "netns", node + "w", ns=node)
        wait_until(lambda: "eth-e" in published(), "a new link in the slices")
        (name,) = [o["metadata"]["name"] for o in slices_of(api, node)]
        res.delete_resource_slice(name)
        wait_until(lambda: published() == {"eth-a", "mv0", "eth-e"}, "the deleted slice back")


def test_a_nic_that_loses_its_link_is_tainted_until_it_comes_back(node: str, tmp_path: Path) -> None:
    """KEP-5055 end to end. eth-a is up, its far end (p-a) is down: no carrier. The slice carries
    a NoSchedule taint dra.net/unhealthy=link-down, and the allocator stand-in gives eth-a only to
    a claim that tolerates it; the test brings the link up (the taint goes) and takes it down again
    (the taint is back, with a new timeAdded)."""
    from localcluster.allocator import AllocationError, allocate, candidates_from_slices

    selector = 'device.driver == "dra.net" && device.attributes["dra.net"].ifName == "eth-a"'
    nic_class = {"metadata": {"name": "nic"}, "spec": {"selectors": [{"cel": {"expression": selector}}]}}

    def claim(*tolerations: dict[str, Any]) -> dict[str, Any]:
        exactly = {"deviceClassName": "nic", **({"tolerations": list(tolerations)} if tolerations else {})}
        return {
            "metadata": {"name": "c", "namespace": "default", "uid": "u"},
            "spec": {"devices": {"requests": [{"name": "nic", "exactly": exactly}]}},
        }

    def eth_a(api: Any) -> dict[str, Any]:
        devices = [d for o in slices_of(api, node) for d in o["spec"]["devices"] if d["name"] == "eth-a"]
        return devices[0] if devices else {}

    def allocated(api: Any, c: dict[str, Any]) -> list[str]:
        candidates = candidates_from_slices(slices_of(api, node), node)
        result = allocate(c, {"nic": nic_class}, candidates, set(), node)
        return [r["device"] for r in result["devices"]["results"]]

    with discovery_service(node, tmp_path, "--filter", "true") as (api, _bus):
        (taint,) = wait_until(lambda: eth_a(api).get("taints"), "the taint in the slice")
        assert {k: taint[k] for k in ("key", "value", "effect")} == {
            "key": "dra.net/unhealthy",
            "value": "link-down",
            "effect": "NoSchedule",
        }
        with pytest.raises(AllocationError):
            allocated(api, claim())
        assert allocated(api, claim({"key": "dra.net/unhealthy", "operator": "Exists"})) == ["eth-a"]
        tolerate_link_down = {"key": "dra.net/unhealthy", "value": "link-down", "effect": "NoSchedule"}
        assert allocated(api, claim(tolerate_link_down)) == ["eth-a"]
        ip("link", "set", "p-a", "up", ns=node + "w")
        wait_until(lambda: eth_a(api) and "taints" not in eth_a(api), "the taint gone with the link back")
        assert allocated(api, claim()) == ["eth-a"]
        time.sleep(1.0)  # timeAdded has a resolution of one second
        ip("link", "set", "p-a", "down", ns=node + "w")
        (again,) = wait_until(lambda: eth_a(api).get("taints"), "the taint back")
        assert again["value"] == "link-down" and again["timeAdded"] > taint["timeAdded"]
