import socket

from dranet.services.discovery.model import LinkInfo, RouteInfo
from dranet.services.discovery.uplinks import default_route_oifs, excluded_links

V4, V6 = socket.AF_INET, socket.AF_INET6


def link(index: int, name: str, master: int = 0, parent: int = 0, kind: str = "") -> LinkInfo:
    return LinkInfo(index=index, name=name, master=master, parent=parent, kind=kind)


def default(oif: int, table: int = 254, family: int = V4) -> RouteInfo:
    return RouteInfo(table=table, family=family, dst_len=0, oifs=(oif,))


def test_main_table_default_route() -> None:
    links = [link(1, "lo"), link(2, "eth0"), link(3, "eth1")]
    assert excluded_links(links, [default(2), RouteInfo(254, V4, 24, (3,))]) == {2}


def test_non_main_table_and_ipv6() -> None:
    links = [link(2, "eth0"), link(3, "eth1"), link(4, "eth2")]
    routes = [default(3, table=100), default(4, table=254, family=V6)]
    assert excluded_links(links, routes) == {3, 4}


def test_local_table_and_non_unicast_ignored() -> None:
    links = [link(2, "eth0")]
    assert default_route_oifs([default(2, table=255)]) == set()
    assert default_route_oifs([RouteInfo(254, V4, 0, (2,), type=7)]) == set()  # unreachable
    assert excluded_links(links, []) == set()


def test_multipath_all_nexthops() -> None:
    links = [link(2, "eth0"), link(3, "eth1")]
    assert excluded_links(links, [RouteInfo(254, V4, 0, (2, 3))]) == {2, 3}


def test_bridge_uplink_excludes_its_ports_recursively() -> None:
    # br0 carries the default route; eth0 and bond0 are its ports; eth1/eth2 are bond slaves.
    links = [
        link(2, "eth0", master=10),
        link(10, "br0", kind="bridge"),
        link(11, "bond0", master=10, kind="bond"),
        link(3, "eth1", master=11),
        link(4, "eth2", master=11),
        link(5, "eth3"),
    ]
    assert excluded_links(links, [default(10)]) == {2, 10, 11, 3, 4}


def test_default_route_on_a_slave_excludes_its_master_and_siblings() -> None:
    # VRF: eth1 is a member of vrf-blue and carries the VRF table's default route.
    links = [
        link(20, "vrf-blue", kind="vrf"),
        link(3, "eth1", master=20),
        link(4, "eth2", master=20),
        link(5, "eth3"),
    ]
    assert excluded_links(links, [default(3, table=1001)]) == {20, 3, 4}


def test_macvlan_children_of_the_uplink_stay_allowed() -> None:
    links = [link(2, "eth0"), link(7, "macvlan0", parent=2, kind="macvlan")]
    assert excluded_links(links, [default(2)]) == {2}


def test_master_loop_does_not_hang() -> None:
    links = [link(2, "a", master=3), link(3, "b", master=2)]
    assert excluded_links(links, [default(2)]) == {2, 3}


def test_route_to_unknown_link() -> None:
    assert excluded_links([link(2, "eth0")], [default(99)]) == set()
