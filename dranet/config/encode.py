"""A decoded configuration back to upstream's camelCase JSON object (unset fields omitted)."""

from __future__ import annotations

from typing import Any

from dranet.config.model import (
    SCOPE_UNIVERSE,
    EthtoolConfig,
    InterfaceConfig,
    NeighborConfig,
    NetworkConfig,
    RouteConfig,
    RuleConfig,
)


def _interface(cfg: InterfaceConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    optional = (
        ("name", cfg.name),
        ("mtu", cfg.mtu),
        ("hardwareAddr", cfg.hardware_addr),
        ("gsoMaxSize", cfg.gso_max_size),
        ("groMaxSize", cfg.gro_max_size),
        ("gsoIPv4MaxSize", cfg.gso_ipv4_max_size),
        ("groIPv4MaxSize", cfg.gro_ipv4_max_size),
        ("forwarding", cfg.forwarding),
        ("arpIgnore", cfg.arp_ignore),
        ("arpAnnounce", cfg.arp_announce),
    )
    if cfg.addresses:
        out["addresses"] = list(cfg.addresses)
    if cfg.dhcp:
        out["dhcp"] = True
    if cfg.disable_ebpf_programs:
        out["disableEbpfPrograms"] = True
    out.update((key, value) for key, value in optional if value is not None)
    if cfg.vrf is not None:
        out["vrf"] = {"name": cfg.vrf.name, "table": cfg.vrf.table}
    if cfg.child is not None:
        out.update(cfg.child.to_dict())
    return out


def _route(route: RouteConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"destination": route.destination}
    if route.gateway is not None:
        out["gateway"] = route.gateway
    if route.source is not None:
        out["source"] = route.source
    if route.scope != SCOPE_UNIVERSE:
        out["scope"] = route.scope
    if route.table:
        out["table"] = route.table
    return out


def _rule(rule: RuleConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.priority is not None:
        out["priority"] = rule.priority
    if rule.source is not None:
        out["source"] = rule.source
    if rule.destination is not None:
        out["destination"] = rule.destination
    if rule.table:
        out["table"] = rule.table
    return out


def _neighbor(neigh: NeighborConfig) -> dict[str, Any]:
    return {"destination": neigh.destination, "hardwareAddr": neigh.hardware_addr}


def _ethtool(cfg: EthtoolConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cfg.features:
        out["features"] = dict(cfg.features)
    if cfg.private_flags:
        out["privateFlags"] = dict(cfg.private_flags)
    return out


def network_config_to_dict(cfg: NetworkConfig) -> dict[str, Any]:
    """Upstream's JSON form of ``cfg``; ``parse_network_config(network_config_to_dict(c)) == c``."""
    out: dict[str, Any] = {}
    if cfg.profile is not None:
        out["profile"] = cfg.profile
    interface = _interface(cfg.interface)
    if interface:
        out["interface"] = interface
    if cfg.routes:
        out["routes"] = [_route(r) for r in cfg.routes]
    if cfg.rules:
        out["rules"] = [_rule(r) for r in cfg.rules]
    if cfg.neighbors:
        out["neighbors"] = [_neighbor(n) for n in cfg.neighbors]
    if cfg.ethtool is not None:
        # Present even when empty: "ethtool": {} decodes to an EthtoolConfig, not to None.
        out["ethtool"] = _ethtool(cfg.ethtool)
    return out
