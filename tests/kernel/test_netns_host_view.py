"""The worker's cheap host reads on the attach path give what the full dumps give.

An attach reads the node's link graph as briefs (parse_link_brief), and routes only through the
asked links (a dump the kernel filters by RTA_OIF) or only default routes (filtered by header).
Each is checked here against the full dump it replaces, on a node netns with a bridge and its
port, a macvlan, alternative names, veths whose peers are elsewhere, routes in several tables,
IPv6 and a multipath route.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dranet.services.netns.netlink import Rtnl
from dranet.services.netns.plan import plan
from dranet.services.netns.testbed import Testbed, ip, ip_json
from dranet.services.netns.worker import NetnsWorker

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for netns")]


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Testbed, Rtnl]]:
    tb = Testbed("thv")
    fd = -1
    try:
        tb.add_nic("thv-a", addresses=("10.71.0.2/24", "fd00:71::2/64"))
        tb.add_nic("thv-b", addresses=("10.72.0.2/24",))
        tb.add_nic("thv-c", addresses=("10.73.0.2/24",))
        ip("link", "property", "add", "dev", "thv-c", "altname", "thv-c-alt", ns=tb.node)
        tb.add_macvlan("thv-mv", "thv-br")  # a macvlan on a bridge: its lower device is local
        ip("link", "set", "thv-b", "master", "thv-br", ns=tb.node)  # a bridge port
        ip("route", "add", "default", "via", "10.71.0.1", ns=tb.node)
        ip("route", "add", "10.80.0.0/16", "via", "10.72.0.1", "table", "100", ns=tb.node)
        ip("-6", "route", "add", "default", "via", "fd00:71::1", "dev", "thv-a", ns=tb.node)
        ip(
            "route",
            "add",
            "10.81.0.0/16",
            "nexthop",
            "via",
            "10.71.0.1",
            "nexthop",
            "via",
            "10.73.0.1",
            ns=tb.node,
        )
        for dst, mac, dev in (
            ("10.71.0.9", "02:00:00:00:71:09", "thv-a"),
            ("fd00:71::9", "02:00:00:00:71:0a", "thv-a"),
            ("10.73.0.9", "02:00:00:00:73:09", "thv-c"),
        ):
            ip("neigh", "add", dst, "lladdr", mac, "dev", dev, "nud", "permanent", ns=tb.node)
        ip(
            "neigh",
            "add",
            "10.71.0.8",
            "lladdr",
            "02:00:00:00:71:08",
            "dev",
            "thv-a",
            "nud",
            "stale",
            ns=tb.node,
        )
        fd = os.open(tb.node_path, os.O_RDONLY)
        with Rtnl.open(fd) as rtnl:
            yield tb, rtnl
    finally:
        if fd >= 0:
            os.close(fd)
        tb.close()


def test_link_briefs_are_the_full_parse_of_the_same_fields(node: tuple[Testbed, Rtnl]) -> None:
    _, rtnl = node
    full = {(lk.index, lk.name, lk.master, lk.parent, lk.alt_names) for lk in rtnl.links()}
    briefs = {(b.index, b.name, b.master, b.parent, b.alt_names) for b in rtnl.link_briefs()}
    assert briefs == full
    by_name = {b.name: b for b in rtnl.link_briefs()}
    # The cases the uplink rule depends on are really in this node.
    assert by_name["thv-b"].master == by_name["thv-br"].index
    assert by_name["thv-mv"].parent == by_name["thv-br"].index
    assert by_name["thv-a"].parent == 0  # its peer is in the wire netns (IFLA_LINK_NETNSID)
    assert by_name["thv-c"].alt_names == ("thv-c-alt",)


def test_route_dumps_filtered_by_link_or_to_defaults_are_the_full_dump_filtered(
    node: tuple[Testbed, Rtnl],
) -> None:
    _, rtnl = node
    every = rtnl.routes()
    for link in rtnl.links():
        want = [r for r in every if r.oif == link.index or link.index in r.multipath_oifs]
        assert rtnl.routes(oif=link.index) == want, link.name
    assert any(r.table == 100 for r in every) and any(r.multipath_oifs for r in every)
    assert rtnl.routes(oif=99999) == []  # a link that is gone has no routes (not an error)
    defaults = [r for r in every if r.destination.endswith("/0")]
    assert rtnl.routes(defaults=True) == defaults and len(defaults) == 2


def test_attach_plans_from_the_briefs(node: tuple[Testbed, Rtnl], tmp_path: Path) -> None:
    """By alternative name; the uplink and its routes as before; the bridge port's master known."""
    tb, _ = node
    worker = NetnsWorker(tmp_path, host_netns=tb.node_path)
    worker.start(watch_interval=0)
    pod = tb.add_netns()
    try:
        view = worker.queries.host_view([{"ifname": "thv-c-alt"}, {"ifname": "thv-a"}, {"ifname": "nope"}])
        assert sorted(view.by_name) == ["thv-a", "thv-c", "thv-c-alt"]
        assert view.by_name["thv-a"].index in view.uplinks  # the default route goes through it
        assert {r.destination for r in view.routes} >= {"10.73.0.0/24", "10.71.0.0/24", "0.0.0.0/0"}
        config = {"interface": {"name": "net0"}}
        worker.attach(
            "pod-hv", f"/run/netns/{pod}", [{"device": "c", "ifname": "thv-c-alt", "config": config}]
        )
        assert tb.link("net0", ns=pod) is not None
        worker.detach("pod-hv", [])
        assert tb.link("thv-c") is not None
        port = [{"device": "b", "ifname": "thv-b", "config": {}}]
        (p,) = plan(port, worker.queries.host_view(port), None, lambda *_: None, worker.hostns.rtnl.addresses)
        assert p.master_name == "thv-br"
    finally:
        worker.close()
        tb.del_netns(pod)


def test_neighbors_of_a_link_are_what_ip_shows(node: tuple[Testbed, Rtnl]) -> None:
    """The fast reader's neighbour dump: that link's entries only, both families, state kept."""
    tb, rtnl = node
    for name in ("thv-a", "thv-c", "thv-b"):
        index = next(b.index for b in rtnl.link_briefs() if b.name == name)
        dump = ip_json("neigh", "show", "dev", name, "nud", "all", ns=tb.node)
        shown = [n for n in dump if _unicast(n["dst"])]
        want = {(n["dst"], n["lladdr"]) for n in shown if n.get("lladdr")}
        got = [n for n in rtnl.neighbors(index) if _unicast(n.destination)]
        assert {(n.destination, n.mac) for n in got} == want, name
        permanent = {n.destination for n in got if n.state & 0x80}
        assert permanent == {n["dst"] for n in shown if "PERMANENT" in n.get("state", [])}, name
    a = next(b.index for b in rtnl.link_briefs() if b.name == "thv-a")
    assert {n.destination for n in rtnl.neighbors(a)} >= {"10.71.0.9", "fd00:71::9", "10.71.0.8"}


def _unicast(address: str) -> bool:
    """The kernel adds multicast entries (IPv6 MLD, e.g. ff02::16) on its own whenever a link
    joins a group, so two dumps taken a moment apart may differ in them: compare unicast only."""
    return not ipaddress.ip_address(address).is_multicast
