"""Checks on a decoded configuration that need context: on-link gateways, RDMA-only devices."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from dranet.config.errors import ConfigError
from dranet.config.model import RT_TABLE_MAIN, SCOPE_LINK, SCOPE_UNIVERSE, NetworkConfig, route_table


def check_routes_reachable(cfg: NetworkConfig, addresses: Sequence[str]) -> None:
    """Every universe-scope route's gateway must be on-link, or the kernel refuses the route.

    On-link means inside the subnet of one of ``addresses`` (the configured addresses, or the
    host's when the claim gives none), or inside the destination of a link-scope route of the
    same table or of main in this configuration (e.g. a /32 address plus a link route to its
    gateway): the kernel looks the gateway up in the route's table, then through the rules.
    IPv6 link-local gateways are always on-link. With no addresses there is nothing to check
    (DHCP, or an interface without addresses yet).
    """
    if not addresses:
        return
    subnets = []
    own = set()
    for i, text in enumerate(addresses):
        try:
            iface = ipaddress.ip_interface(text)
        except ValueError:
            raise ConfigError(
                f"interface.addresses[{i}]", f"{text!r} is not an address in CIDR form"
            ) from None
        subnets.append(iface.network)
        own.add(iface.ip)
    for i, route in enumerate(cfg.routes):
        if route.scope != SCOPE_UNIVERSE or route.gateway is None:
            continue
        gw = ipaddress.ip_address(route.gateway)
        if gw in own:
            raise ConfigError(f"routes[{i}].gateway", f"{gw} is this interface's own address, not a next hop")
        if gw.version == 6 and gw.is_link_local:
            continue
        if any(gw.version == net.version and gw in net for net in subnets):
            continue
        table = route_table(route, cfg)
        if any(
            other.scope == SCOPE_LINK
            and route_table(other, cfg) in (table, RT_TABLE_MAIN)
            and gw in ipaddress.ip_network(other.destination)
            for other in cfg.routes
        ):
            continue
        raise ConfigError(
            f"routes[{i}].gateway",
            f"{gw} is not on-link: it is in none of the interface's subnets "
            f"({', '.join(map(str, subnets))}); "
            "fix the gateway or addresses, or add a scope 253 (link) route that covers it",
        )


def validate_rdma_only(cfg: NetworkConfig) -> None:
    """Reject what cannot apply to an RDMA-only (e.g. InfiniBand without IPoIB) device.

    Such a device has no network interface, so only ``profile`` may be set. Upstream silently
    ignores ``vrf`` and ``forwarding``; we reject them too, since the user would expect an effect.
    """
    iface = cfg.interface
    netdev_fields = (
        ("name", iface.name is not None),
        ("addresses", bool(iface.addresses)),
        ("dhcp", iface.dhcp),
        ("mtu", iface.mtu is not None),
        ("hardwareAddr", iface.hardware_addr is not None),
        ("gsoMaxSize", iface.gso_max_size is not None),
        ("groMaxSize", iface.gro_max_size is not None),
        ("gsoIPv4MaxSize", iface.gso_ipv4_max_size is not None),
        ("groIPv4MaxSize", iface.gro_ipv4_max_size is not None),
        ("disableEbpfPrograms", iface.disable_ebpf_programs),
        ("forwarding", iface.forwarding is not None),
        ("arpIgnore", iface.arp_ignore is not None),
        ("arpAnnounce", iface.arp_announce is not None),
        ("vrf", iface.vrf is not None),
    )
    reason = "not supported for an RDMA-only device: it has no network interface; remove it"
    for name, is_set in netdev_fields:
        if is_set:
            raise ConfigError(f"interface.{name}", reason)
    for name, present in (
        ("routes", bool(cfg.routes)),
        ("rules", bool(cfg.rules)),
        ("neighbors", bool(cfg.neighbors)),
        ("ethtool", cfg.ethtool is not None),
    ):
        if present:
            raise ConfigError(name, reason)


def check_supported(cfg: NetworkConfig, *, dhcp: bool = False) -> None:
    """Refuse the upstream fields this driver accepts in the schema but does not act on, so a
    claim asking for them fails at prepare with the reason instead of running without them.

    dhcp: the caller takes the lease (dra at prepare); the netns worker only ever gets the
    lease's static result, so it refuses ``dhcp`` itself."""
    if cfg.interface.dhcp and not dhcp:
        raise ConfigError(
            "interface.dhcp",
            "DHCP is not supported by this driver yet; give interface.addresses instead",
        )
    if cfg.interface.dhcp and cfg.interface.hardware_addr is not None:
        raise ConfigError(
            "interface.hardwareAddr",
            "cannot be set with dhcp: the lease is taken before the move with the interface's own "
            "MAC and the server would not know the new one; remove one of them",
        )
