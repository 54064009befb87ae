"""The uplink rule on real node layouts: what discovery publishes and what the worker attaches agree.

Each layout is built in a test "node" netns (its veth NICs have their peers in a "wire" netns),
then checked two ways: the ResourceSlices discovery publishes to the local API server (inventory
+ slice publisher in this process), and an attach by the netns worker of every interface into a
pod netns, refused (`not_allowed`, "uplink") for the uplinks and done (then undone) for the rest.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dranet.services.discovery.devices import ScanOptions
from dranet.services.discovery.filter import DeviceFilter
from dranet.services.discovery.inventory import Inventory, InventoryConfig
from dranet.services.discovery.publisher import SlicePublisher
from dranet.services.netns.testbed import Testbed, ip
from dranet.services.netns.worker import NetnsWorker
from kubernetes import client, config

from dranet.bus import BusError
from dranet.uplinks import UplinkPolicy
from localcluster.apiserver import LocalAPIServer

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]
DEADLINE = 15.0
DRIVER = "dra.net"


def nic(tb: Testbed, name: str, *addresses: str) -> None:
    tb.add_nic(name, addresses=addresses)


def base(tb: Testbed) -> None:
    """eth-a with the node's IPv4 default route; eth-b and eth-c free unless a layout says."""
    nic(tb, "eth-a", "10.91.0.2/24")
    nic(tb, "eth-b", "10.92.0.2/24", "fd00:92::2/64")
    nic(tb, "eth-c", "10.93.0.2/24", "fd00:93::2/64")
    ip("route", "add", "default", "via", "10.91.0.1", "metric", "100", ns=tb.node)


def metrics(tb: Testbed) -> None:
    base(tb)  # DHCP on every NIC: each gets a default route with its own metric
    ip("route", "add", "default", "via", "10.92.0.1", "metric", "200", ns=tb.node)
    ip("route", "add", "default", "via", "10.93.0.1", "metric", "300", ns=tb.node)


def ipv6(tb: Testbed) -> None:
    base(tb)
    ip("-6", "route", "add", "default", "via", "fd00:92::1", "dev", "eth-b", "metric", "100", ns=tb.node)
    ip("-6", "route", "add", "default", "via", "fd00:93::1", "dev", "eth-c", "metric", "300", ns=tb.node)


def ecmp(tb: Testbed) -> None:
    base(tb)
    ip("route", "del", "default", ns=tb.node)
    ip("route", "add", "default", "nexthop", "via", "10.91.0.1", "nexthop", "via", "10.92.0.1", ns=tb.node)


def point_to_point(tb: Testbed) -> None:
    nic(tb, "eth-a")
    nic(tb, "eth-b")
    ip("addr", "add", "10.94.0.2", "peer", "10.94.0.1", "dev", "eth-a", ns=tb.node)
    ip("route", "add", "default", "dev", "eth-a", ns=tb.node)  # no gateway, like ppp or wireguard
    ip("route", "add", "default", "dev", "eth-b", "metric", "500", ns=tb.node)


def table_without_rule(tb: Testbed) -> None:
    base(tb)  # source-based routing for eth-b: the node's own traffic never reaches table 100
    ip("route", "add", "default", "via", "10.92.0.1", "table", "100", ns=tb.node)
    ip("rule", "add", "from", "10.92.0.2", "table", "100", "priority", "100", ns=tb.node)
    ip("route", "add", "default", "via", "10.93.0.1", "table", "200", ns=tb.node)  # no rule at all


def table_with_rule(tb: Testbed) -> None:
    base(tb)  # every packet of the node looks in table 100 first
    ip("route", "add", "default", "via", "10.92.0.1", "table", "100", ns=tb.node)
    ip("rule", "add", "table", "100", "priority", "100", ns=tb.node)


def apiserver_elsewhere(tb: Testbed) -> None:
    base(tb)  # the control plane sits on eth-b's subnet


def bridge_and_macvlan(tb: Testbed) -> None:
    nic(tb, "upl0")
    nic(tb, "eth-c")
    ip("link", "add", "br-up", "type", "bridge", ns=tb.node)
    ip("link", "set", "upl0", "master", "br-up", ns=tb.node)
    ip("link", "set", "br-up", "up", ns=tb.node)
    ip("addr", "add", "10.95.0.2/24", "dev", "br-up", ns=tb.node)
    ip("route", "add", "default", "via", "10.95.0.1", ns=tb.node)
    ip("link", "add", "mv0", "link", "br-up", "type", "macvlan", "mode", "bridge", ns=tb.node)


def foreign_veth_peer(tb: Testbed) -> None:
    """The uplink eth-a is a veth whose peer, in the wire netns, has ifindex 50; so has eth-b here."""
    pa, pb = f"pa{tb.tag}", f"pb{tb.tag}"
    veth = ("type", "veth", "peer", "name")
    ip("link", "add", pa, "index", "50", *veth, "eth-a", "netns", tb.node, ns=tb.wire)
    ip("link", "add", "eth-b", "index", "50", *veth, pb, "netns", tb.wire, ns=tb.node)
    for ns, name in ((tb.node, "eth-a"), (tb.node, "eth-b"), (tb.wire, pa), (tb.wire, pb)):
        ip("link", "set", name, "up", ns=ns)
    ip("addr", "add", "10.96.0.2/24", "dev", "eth-a", ns=tb.node)
    ip("route", "add", "default", "via", "10.96.0.1", ns=tb.node)


def operator_flag(tb: Testbed) -> None:
    base(tb)


@dataclass
class Layout:
    name: str
    build: Callable[[Testbed], None]
    uplinks: set[str]
    offered: set[str]
    policy: UplinkPolicy = field(default_factory=UplinkPolicy)


LAYOUTS = [
    Layout("higher-metric defaults", metrics, {"eth-a"}, {"eth-b", "eth-c"}),
    Layout("ipv6 defaults", ipv6, {"eth-a", "eth-b"}, {"eth-c"}),
    Layout("ecmp", ecmp, {"eth-a", "eth-b"}, {"eth-c"}),
    Layout("point-to-point", point_to_point, {"eth-a"}, {"eth-b"}),
    Layout("table no rule reaches", table_without_rule, {"eth-a"}, {"eth-b", "eth-c"}),
    Layout("table a rule sends all to", table_with_rule, {"eth-a", "eth-b"}, {"eth-c"}),
    Layout(
        "api server through another nic",
        apiserver_elsewhere,
        {"eth-a", "eth-b"},
        {"eth-c"},
        UplinkPolicy(apiserver=("10.92.0.10",)),
    ),
    Layout("bridge port and macvlan", bridge_and_macvlan, {"br-up", "upl0"}, {"mv0", "eth-c"}),
    Layout("veth peer in another netns", foreign_veth_peer, {"eth-a"}, {"eth-b"}),
    Layout(
        "operator names an uplink",
        operator_flag,
        {"eth-a", "eth-c"},
        {"eth-b"},
        UplinkPolicy(always=("eth-c",)),
    ),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    server = LocalAPIServer()
    server.start()
    try:
        yield server.write_kubeconfig(tmp_path_factory.mktemp("api") / "kubeconfig")
    finally:
        server.stop()


@pytest.fixture(params=LAYOUTS, ids=[lay.name for lay in LAYOUTS])
def layout(request: pytest.FixtureRequest, testbed: Callable[[str], Testbed]) -> tuple[Layout, Testbed]:
    lay: Layout = request.param
    tb = testbed("tup")
    ip("link", "set", "lo", "up", ns=tb.node)
    lay.build(tb)
    return lay, tb


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    """The base layout (base())."""
    bed = testbed("tup")
    base(bed)
    return bed


def wait_until(cond: Callable[[], Any], what: str) -> Any:
    end = time.monotonic() + DEADLINE
    last: Any = None
    while time.monotonic() < end:
        last = cond()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def published(kubeconfig: Path, tb: Testbed, lay: Layout, tmp_path: Path) -> set[str]:
    """Run discovery's inventory and publisher on the layout; the device names in its slices."""
    (tmp_path / "sys").mkdir()
    options = ScanOptions(exclude=("lo",), filter=DeviceFilter("true"), uplink_policy=lay.policy)
    inv = Inventory(InventoryConfig(sysfs_root=tmp_path / "sys", options=options, netns=tb.node))
    pub = SlicePublisher(lambda: config.new_client_from_config(config_file=str(kubeconfig)), tb.node, DRIVER)
    inv._on_change = lambda devices, _gen: pub.set_devices(devices)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    pub.start()
    inv.start()
    try:
        assert inv.ready.wait(DEADLINE)
        assert pub.wait_synced(0, DEADLINE)
        raw: Any = client.ResourceV1Api(api).list_resource_slice(
            field_selector=f"spec.nodeName={tb.node}", _preload_content=False
        )
        return {d["name"] for o in json.loads(raw.data)["items"] for d in o["spec"]["devices"]}
    finally:
        inv.stop()
        pub.stop()


def test_discovery_publishes_all_but_the_uplinks(
    layout: tuple[Layout, Testbed], api: Path, tmp_path: Path
) -> None:
    lay, tb = layout
    assert published(api, tb, lay, tmp_path) == lay.offered


def test_worker_refuses_the_uplinks_and_attaches_the_rest(
    layout: tuple[Layout, Testbed], tmp_path: Path
) -> None:
    lay, tb = layout
    worker = NetnsWorker(tmp_path, host_netns=tb.node_path, uplink_policy=lay.policy)
    worker.start(watch_interval=0)
    pod = tb.add_netns()
    try:
        for ifname in sorted(lay.uplinks | lay.offered):
            request = [{"device": ifname, "ifname": ifname, "config": {}}]
            if ifname in lay.uplinks:
                with pytest.raises(BusError) as err:
                    worker.attach("pod-u", f"/run/netns/{pod}", request)
                assert err.value.code == "not_allowed" and "uplink" in err.value.message, ifname
            else:
                worker.attach("pod-u", f"/run/netns/{pod}", request)
                worker.detach("pod-u", [ifname])
                assert tb.link(ifname) is not None, f"{ifname} came back"
    finally:
        worker.close()


def test_rule_changes_reevaluate_uplinks(tb: Testbed, tmp_path: Path) -> None:
    """A policy rule that sends the node's traffic to another table moves the uplink at once."""
    ip("route", "add", "default", "via", "10.92.0.1", "table", "100", ns=tb.node)
    (tmp_path / "sys").mkdir()
    options = ScanOptions(exclude=("lo",), filter=DeviceFilter("true"))
    inv = Inventory(InventoryConfig(sysfs_root=tmp_path / "sys", options=options, netns=tb.node))
    inv.start()
    try:
        assert inv.ready.wait(DEADLINE)

        def allocatable() -> set[str]:
            return {d.ifname for d in inv.devices()[1] if d.allocatable}

        assert allocatable() == {"eth-b", "eth-c"}
        ip("rule", "add", "table", "100", "priority", "100", ns=tb.node)
        wait_until(lambda: allocatable() == {"eth-c"}, "eth-b excluded once a rule sends traffic there")
        ip("rule", "del", "table", "100", "priority", "100", ns=tb.node)
        wait_until(lambda: allocatable() == {"eth-b", "eth-c"}, "eth-b offered again")
    finally:
        inv.stop()


def test_restore_leaves_alone_a_device_the_node_now_routes_through(
    tb: Testbed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An attach fails before the move; meanwhile the node started routing through the device and
    its address went. The rollback finds it an uplink: it is not re-addressed (nor renamed)."""

    def hook(step: str, device: str) -> None:
        if step == "down":
            ip("route", "add", "default", "dev", "eth-b", "metric", "10", ns=tb.node)
            ip("addr", "del", "fd00:92::2/64", "dev", "eth-b", ns=tb.node)
            raise OSError(errno.EIO, "injected failure")

    worker = NetnsWorker(tmp_path, host_netns=tb.node_path, hook=hook)
    pod = tb.add_netns()
    try:
        with pytest.raises(BusError) as err:
            worker.attach(
                "pod-r", f"/run/netns/{pod}", [{"device": "eth-b", "ifname": "eth-b", "config": {}}]
            )
        assert err.value.code == "kernel_error"
    finally:
        worker.close()
    assert tb.addresses("eth-b") == ["10.92.0.2/24"]
    assert any("is an uplink of the node now" in r.getMessage() for r in caplog.records)
