"""A DHCPv4 lease and how it becomes part of a claim's configuration (pure: no I/O).

The netns worker takes the lease at prepare (upstream's timing: in the host netns, before the
move) and dra writes what it gives into the device's configuration, so the attach applies it like
any static configuration. Merge rule: the lease's address is the interface's address (``dhcp``
and ``addresses`` are exclusive); its routes are added after the claim's own routes, except a
destination (in the same table) the claim already routes; its MTU applies when the claim sets none.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from dranet.config.errors import ConfigError


@dataclass(frozen=True)
class LeaseRoute:
    destination: str  # CIDR
    gateway: str | None  # None: on-link (RFC 3442 router 0.0.0.0)


@dataclass(frozen=True)
class Lease:
    address: str  # "10.0.0.5/24"
    server: str  # the server identifier (option 54)
    lease_time: int  # seconds (option 51)
    renewal_time: int  # T1 seconds (option 58; lease_time / 2 when absent)
    routes: tuple[LeaseRoute, ...] = ()
    mtu: int | None = None  # option 26
    obtained_at: float = 0.0  # unix time the server acknowledged it
    extra: Mapping[str, str] = field(default_factory=dict)  # routers, broadcast, ... as given

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["routes"] = [asdict(r) for r in self.routes]
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Lease:
        return cls(
            address=str(d["address"]),
            server=str(d.get("server", "")),
            lease_time=int(d.get("lease_time", 0)),
            renewal_time=int(d.get("renewal_time", 0)),
            routes=tuple(
                LeaseRoute(str(r["destination"]), None if r.get("gateway") is None else str(r["gateway"]))
                for r in d.get("routes") or ()
            ),
            mtu=None if d.get("mtu") is None else int(d["mtu"]),
            obtained_at=float(d.get("obtained_at", 0.0)),
            extra={str(k): str(v) for k, v in (d.get("extra") or {}).items()},
        )


def classless_routes(text: str) -> tuple[LeaseRoute, ...]:
    """RFC 3442 option 121 as dhclient prints it: bytes in decimal, space or comma separated
    (width, the significant destination octets, then the 4 router octets, repeated)."""
    raw = [int(b) for b in text.replace(",", " ").split()]
    out: list[LeaseRoute] = []
    i = 0
    while i < len(raw):
        width = raw[i]
        if width > 32:
            raise ValueError(f"classless route width {width} is over 32")
        significant = (width + 7) // 8
        end = i + 1 + significant + 4
        if end > len(raw) or any(not 0 <= b <= 255 for b in raw[i + 1 : end]):
            raise ValueError("classless static routes are truncated or not bytes")
        dest = bytes(raw[i + 1 : i + 1 + significant]) + bytes(4 - significant)
        router = ipaddress.IPv4Address(bytes(raw[i + 1 + significant : end]))
        net = ipaddress.IPv4Network((dest, width), strict=False)
        out.append(LeaseRoute(str(net), None if int(router) == 0 else str(router)))
        i = end
    return tuple(out)


def lease_routes(classless: str, routers: str) -> tuple[LeaseRoute, ...]:
    """The routes a lease gives: option 121 when present (RFC 3442: the router option is then
    ignored), else a default route via the first router (option 3)."""
    if classless.strip():
        return classless_routes(classless)
    first = routers.split()[0] if routers.strip() else ""
    return (LeaseRoute("0.0.0.0/0", first),) if first else ()


def apply_lease(config: Mapping[str, Any], lease: Lease) -> dict[str, Any]:
    """The device's configuration (upstream JSON, validated) with the lease written into it.

    ``dhcp`` is dropped (the worker applies a static configuration) and ``addresses`` set."""
    out = copy.deepcopy(dict(config))
    iface = dict(out.get("interface") or {})
    if iface.get("addresses"):
        raise ConfigError("interface.dhcp", "dhcp and addresses are mutually exclusive; set one of them")
    iface.pop("dhcp", None)
    iface["addresses"] = [lease.address]
    if lease.mtu is not None and "mtu" not in iface:
        iface["mtu"] = lease.mtu
    out["interface"] = iface
    routes = list(out.get("routes") or [])
    taken = {(ipaddress.ip_network(r["destination"]), int(r.get("table") or 0)) for r in routes}
    for r in lease.routes:
        if (ipaddress.ip_network(r.destination), 0) in taken:
            continue  # the claim routes this destination itself: its route wins
        routes.append(
            {"destination": r.destination, "gateway": r.gateway}
            if r.gateway
            else {"destination": r.destination, "scope": 253}
        )
    if routes:
        out["routes"] = routes
    return out
