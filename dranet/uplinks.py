"""The node's uplinks: the links no pod may take. One rule, for discovery and the netns worker (pure).

An uplink is an interface the kernel uses for the node's own traffic:
1. the interface(s) the kernel's route lookup picks, from the host netns with the policy rules
   applied, for the default destination of each family (every nexthop of a multipath route);
2. the interface(s) the same lookup picks for the API server's endpoint;
3. the interface(s) of the main table's lowest-metric default route of each family, which is
   upstream dranet's rule: where the two rules differ, this one only ever keeps more for the node;
4. the interfaces the operator names (`--uplink-interfaces`, fnmatch patterns).
Then, from each of those, upwards: its master (bridge, bond, VRF) and its local lower device
(IFLA_LINK of a vlan or macvlan; a veth's peer when the peer is in the same netns), since taking
either takes the uplink with it; and downwards: everything enslaved under any of them.
Macvlan children of an uplink hang off it by IFLA_LINK, not IFLA_MASTER, and stay allowed.

A higher-metric default in the main table, or a default in a table that no rule sends the node's
own traffic to (source-based routing for a secondary NIC), does not make an uplink.

The lookups are I/O: the caller passes a function that asks the kernel (RTM_GETROUTE with
RTM_F_FIB_MATCH, which sends nothing and answers with the matched route, all its nexthops).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

RTN_UNICAST = 1
RT_TABLE_MAIN = 254

# Why a link is an uplink: the `reason` label of dranet_discovery_uplinks and the word in the logs.
DEFAULT_ROUTE = "default_route"  # the lookup for the default destination goes out through it
APISERVER = "apiserver"  # the lookup for the API server's endpoint goes out through it
MAIN_DEFAULT = "main_table_default"  # upstream's rule: lowest-metric default of the main table
OPERATOR = "operator"  # named by --uplink-interfaces
MASTER = "master"  # the bridge/bond/VRF an uplink is enslaved to
LOWER = "lower_device"  # the device an uplink vlan/macvlan/veth is built on
PORT = "port"  # enslaved under an uplink
REASONS = (DEFAULT_ROUTE, APISERVER, MAIN_DEFAULT, OPERATOR, MASTER, LOWER, PORT)

# Destinations that stand for "anywhere": documentation prefixes (RFC 5737, RFC 9637, RFC 3849),
# which no real network routes specifically. The first whose lookup matches a default route
# (prefix length 0) decides; one covered by a more specific route is skipped for the next.
DEFAULT_PROBES: Mapping[int, tuple[str, ...]] = {  # family -> destinations
    socket.AF_INET: ("203.0.113.1", "198.51.100.1", "192.0.2.1"),
    socket.AF_INET6: ("3fff::1", "2001:db8:ffff:ffff::1"),
}


class LinkFacts(Protocol):
    """What the rule reads of a link (discovery's LinkInfo and the worker's Link both have it)."""

    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def master(self) -> int: ...  # IFLA_MASTER, 0 = none
    @property
    def parent(self) -> int: ...  # IFLA_LINK when it names a link of this netns, else 0


@dataclass(frozen=True)
class RouteFacts:
    """A route as the rule reads it: from a dump, or the kernel's answer to a lookup."""

    family: int
    table: int
    dst_len: int
    oifs: tuple[int, ...]  # RTA_OIF, or every nexthop of a multipath route
    metric: int = 0  # RTA_PRIORITY
    type: int = RTN_UNICAST


@dataclass(frozen=True)
class Uplink:
    index: int
    name: str
    reason: str  # one of REASONS
    detail: str  # for people: which lookup, route or uplink made it one


@dataclass(frozen=True)
class UplinkPolicy:
    """The rule's inputs besides the kernel's state: the API server and the operator's additions."""

    apiserver: tuple[str, ...] = ()  # IP addresses of the API server's endpoint
    always: tuple[str, ...] = ()  # fnmatch patterns of interface names that are always uplinks


Lookup = Callable[[int, str], RouteFacts | None]  # (family, destination) -> matched route or None


def endpoint_host(endpoint: str) -> str:
    """The host part of an API server endpoint: a URL ("https://10.0.0.1:6443"), "host:port",
    "[v6]:port", a bare IPv6 address or a host name."""
    text = endpoint.strip()
    if not text:
        return ""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    return urlsplit(text if "//" in text else f"//{text}").hostname or ""


def _fam(family: int) -> str:
    names: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
    return names.get(family, f"family {family}")


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _unicast(route: RouteFacts | None) -> tuple[int, ...]:
    if route is None or route.type != RTN_UNICAST:
        return ()
    return tuple(i for i in route.oifs if i)


def main_table_defaults(routes: Iterable[RouteFacts]) -> dict[int, tuple[int, ...]]:
    """Upstream's rule: per family, the interfaces of the main table's lowest-metric default routes."""
    best: dict[int, int] = {}
    oifs: dict[int, list[int]] = defaultdict(list)
    for r in routes:
        if r.table != RT_TABLE_MAIN or r.dst_len != 0 or not _unicast(r):
            continue
        if r.family not in best or r.metric < best[r.family]:
            best[r.family] = r.metric
            oifs[r.family] = []
        if r.metric == best[r.family]:
            oifs[r.family].extend(_unicast(r))
    return {family: tuple(v) for family, v in oifs.items()}


def _seeds(routes: Iterable[RouteFacts], lookup: Lookup, policy: UplinkPolicy) -> list[tuple[int, str, str]]:
    """(ifindex, reason, detail) of the links the kernel uses directly."""
    out: list[tuple[int, str, str]] = []
    for family, probes in DEFAULT_PROBES.items():
        for probe in probes:
            route = lookup(family, probe)
            if route is not None and route.dst_len == 0:
                detail = f"the node's {_fam(family)} default route (table {route.table}) uses it"
                out.extend((i, DEFAULT_ROUTE, detail) for i in _unicast(route))
                break
    for address in policy.apiserver:
        detail = f"the node reaches the API server {address} through it"
        out.extend((i, APISERVER, detail) for i in _unicast(lookup(_family(address), address)))
    for family, oifs in main_table_defaults(routes).items():
        detail = f"it has the main table's lowest-metric {_fam(family)} default route"
        out.extend((i, MAIN_DEFAULT, detail) for i in oifs)
    return out


def node_uplinks(
    links: Sequence[LinkFacts], routes: Iterable[RouteFacts], lookup: Lookup, policy: UplinkPolicy
) -> dict[int, Uplink]:
    """Every uplink of the node by ifindex, with the first reason found for it."""
    by_index = {link.index: link for link in links}
    found: dict[int, Uplink] = {}

    def mark(index: int, reason: str, detail: str) -> bool:
        link = by_index.get(index)
        if link is None or index in found:
            return False
        found[index] = Uplink(index, link.name, reason, detail)
        return True

    seeds = _seeds(routes, lookup, policy)
    for link in links:
        if any(fnmatch.fnmatchcase(link.name, p) for p in policy.always):
            seeds.append((link.index, OPERATOR, "named by --uplink-interfaces"))
    stack = [i for i, reason, detail in seeds if mark(i, reason, detail)]
    # Upwards: a master or a local lower device carries the uplink's traffic too.
    while stack:
        link = by_index[stack.pop()]
        if mark(link.master, MASTER, f"{link.name} is enslaved to it"):
            stack.append(link.master)
        if mark(link.parent, LOWER, f"{link.name} is built on it"):
            stack.append(link.parent)
    # Downwards: everything enslaved under an uplink, recursively.
    ports: dict[int, list[int]] = defaultdict(list)
    for link in links:
        if link.master:
            ports[link.master].append(link.index)
    stack = list(found)
    while stack:
        up = found[stack.pop()]
        for index in ports.get(up.index, ()):
            if mark(index, PORT, f"it is enslaved to the uplink {up.name}"):
                stack.append(index)
    return found
