"""Which links are the node's uplinks and must never be offered (pure).

An uplink is a link that carries a default route in ANY routing table (upstream looks at the main
table only, so a default route in a policy-routing or VRF table left the NIC allocatable). Then:
- the masters above an uplink (the bridge, bond or VRF it is enslaved to) are uplinks too: taking
  them would take the uplink with them;
- everything enslaved under an uplink or one of those masters (bridge ports, bond slaves, VRF
  members), recursively, is excluded.
Macvlan/ipvlan children of an uplink hang off it by IFLA_LINK, not IFLA_MASTER, and stay
allocatable: moving a macvlan into a pod is how a pod gets a leg on the node's network.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from .model import LinkInfo, RouteInfo

RTN_UNICAST = 1
RT_TABLE_LOCAL = 255


def default_route_oifs(routes: Iterable[RouteInfo]) -> set[int]:
    """Interfaces that carry a unicast default route (IPv4 or IPv6) in any table but `local`."""
    out: set[int] = set()
    for r in routes:
        if r.dst_len == 0 and r.type == RTN_UNICAST and r.table != RT_TABLE_LOCAL:
            out.update(i for i in r.oifs if i)
    return out


def excluded_links(links: Iterable[LinkInfo], routes: Iterable[RouteInfo]) -> set[int]:
    """Indexes of the uplinks, their masters and everything enslaved under any of them."""
    by_index = {link.index: link for link in links}
    children: dict[int, list[int]] = defaultdict(list)
    for link in by_index.values():
        if link.master:
            children[link.master].append(link.index)
    roots: set[int] = set()
    for index in default_route_oifs(routes):
        seen: set[int] = set()
        # Walk up the master chain (port -> bridge -> VRF); `seen` guards against a malformed loop.
        while index in by_index and index not in seen:
            seen.add(index)
            roots.add(index)
            index = by_index[index].master
    excluded: set[int] = set()
    stack = list(roots)
    while stack:
        index = stack.pop()
        if index in excluded:
            continue
        excluded.add(index)
        stack.extend(children.get(index, ()))
    return excluded
