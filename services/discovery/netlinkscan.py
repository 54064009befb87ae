"""Links, addresses, routes and uplinks of a network namespace -> plain records (read-only)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dranet.netlink.rtnl import RawLink, RawRoute, RtnlSocket
from dranet.uplinks import RouteFacts, Uplink, UplinkPolicy, node_uplinks

from .model import Address, LinkInfo

IFF_UP = 0x1  # include/uapi/linux/if.h

# ARPHRD_* values worth a word (include/uapi/linux/if_arp.h); others are published as "arphrd-<n>".
ARPHRD_NAMES = {
    1: "ether",
    32: "infiniband",
    280: "can",
    519: "rawip",
    768: "ipip",
    769: "tunnel6",
    772: "loopback",
    776: "sit",
    778: "gre",
    823: "ip6gre",
    65534: "none",
}


@dataclass
class NetSnapshot:
    links: list[LinkInfo] = field(default_factory=list)
    routes: list[RouteFacts] = field(default_factory=list)
    uplinks: dict[int, Uplink] = field(default_factory=dict)  # by ifindex


def to_link(
    raw: RawLink,
    addresses: tuple[Address, ...] = (),
    tc_filters: tuple[str, ...] = (),
    tcx_programs: tuple[str, ...] = (),
) -> LinkInfo:
    return LinkInfo(
        index=raw.index,
        name=raw.name,
        kind=raw.kind,
        mac=raw.mac,
        mtu=raw.mtu,
        operstate=raw.operstate,
        admin_up=bool(raw.flags & IFF_UP),
        carrier=raw.carrier,
        link_type=ARPHRD_NAMES.get(raw.ifi_type, f"arphrd-{raw.ifi_type}"),
        master=raw.master,
        parent=raw.link,
        alias=raw.alias,
        parent_bus=raw.parent_bus,
        parent_dev=raw.parent_dev,
        addresses=addresses,
        tc_filters=tc_filters,
        tcx_programs=tcx_programs,
    )


def to_route(raw: RawRoute) -> RouteFacts:
    return RouteFacts(raw.family, raw.table, raw.dst_len, raw.oifs, raw.priority or 0, raw.type)


def scan(
    sock: RtnlSocket,
    policy: UplinkPolicy | None = None,
    tcx: Mapping[str, Sequence[str]] | None = None,
) -> NetSnapshot:
    """One dump of links, addresses and routes (every table), and the uplinks they make; the names
    of the tc bpf filters of the links that have a clsact qdisc (one qdisc dump, then two filter
    dumps per such link). tcx: the tcx program names by interface, as the netns worker reads them."""
    by_link: dict[int, list[Address]] = defaultdict(list)
    for a in sock.addresses():
        by_link[a.index].append(Address(a.family, f"{a.address}/{a.prefixlen}", a.scope))
    filters = {index: tuple(f.name for f in sock.bpf_filters(index)) for index in sock.clsact_links()}
    tcx = tcx or {}
    links = [
        to_link(
            raw,
            tuple(by_link.get(raw.index, ())),
            filters.get(raw.index, ()),
            tuple(tcx.get(raw.name, ())),
        )
        for raw in sock.links()
    ]
    routes = [to_route(r) for r in sock.routes()]

    def lookup(family: int, destination: str) -> RouteFacts | None:
        found = sock.lookup(family, destination)
        return to_route(found) if found is not None else None

    uplinks = node_uplinks(links, routes, lookup, policy or UplinkPolicy())
    return NetSnapshot(links=links, routes=routes, uplinks=uplinks)
