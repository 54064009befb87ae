"""Strict decoding of the claim configuration JSON (upstream dranet's camelCase schema).

Every field is checked for its JSON type and its legal values; unknown fields are errors. The
first problem found raises ConfigError naming the field path; fields are checked in document
order (profile, interface, routes, rules, neighbors, ethtool), then the cross-field rules.
A JSON ``null`` for an optional field means "not set", as in upstream's Go decoder.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from typing import Any

from dranet.config import values as v
from dranet.config.checks import check_routes_reachable
from dranet.config.child import check_child_fields, decode_child
from dranet.config.errors import ConfigError
from dranet.config.model import (
    RESERVED_TABLES,
    SCOPE_LINK,
    SCOPE_UNIVERSE,
    EthtoolConfig,
    InterfaceConfig,
    NeighborConfig,
    NetworkConfig,
    RouteConfig,
    RuleConfig,
    VrfConfig,
    route_table,
    vrf_default_table,
)

GSO_GRO_MAX = 524280  # the kernel's GSO_MAX_SIZE since BIG TCP (512 KiB - 8)
MTU_MIN, MTU_MAX, IPV6_MTU_MIN = 68, 65535, 1280
RULE_PRIORITY_MAX = 32767
ARP_IGNORE_VALUES = (0, 1, 2, 3, 8)

# The schema nests four deep (ethtool.features.<name>: true); far deeper is hostile, and would
# exhaust the stack of the recursive steps (JSON parsing, merging).
MAX_DEPTH = 32
_TOO_DEEP = f"the configuration is nested more than {MAX_DEPTH} levels deep; no field needs that"

TOP_FIELDS = ("profile", "interface", "routes", "rules", "neighbors", "ethtool")
INTERFACE_FIELDS = (
    "name",
    "addresses",
    "addressing",
    "dhcp",
    "mtu",
    "hardwareAddr",
    "gsoMaxSize",
    "groMaxSize",
    "gsoIPv4MaxSize",
    "groIPv4MaxSize",
    "disableEbpfPrograms",
    "forwarding",
    "arpIgnore",
    "arpAnnounce",
    "vrf",
    "type",
    "macvlan",
    "ipvlan",
)
VRF_FIELDS = ("name", "table")
ROUTE_FIELDS = ("destination", "gateway", "source", "scope", "table")
RULE_FIELDS = ("priority", "source", "destination", "table")
NEIGHBOR_FIELDS = ("destination", "hardwareAddr")
ETHTOOL_FIELDS = ("features", "privateFlags")

# interface.addressing (upstream's modes, spelled as upstream spells them).
ADDRESSING_STATIC, ADDRESSING_DHCP, ADDRESSING_UNNUMBERED = "Static", "DHCP", "Unnumbered"
ADDRESSING_MODES = (ADDRESSING_STATIC, ADDRESSING_DHCP)

# Fields a user may know from upstream (newer releases or its docs) that this driver refuses,
# with what to do instead; keyed by (object path without indices, field).
_KNOWN_UNSUPPORTED = {
    ("", "subInterface"): (
        "not supported in this form (upstream's first sub-interface schema); "
        "use interface.type ipvlan with interface.ipvlan"
    ),
    ("neighbors", "ipAddress"): "use 'destination' (upstream's documentation shows 'ipAddress' by mistake)",
}


def load_json(data: str | bytes) -> Any:
    """Decode JSON text; duplicate keys and NaN/Infinity are errors (the strict upstream decoder's rules)."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError("", f"configuration is not UTF-8 text: {exc}") from None

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                # The decoder does not know where it is in the document, so name the key instead.
                raise ConfigError("", f"the key {key!r} appears twice in one JSON object; keep one")
            obj[key] = value
        return obj

    def constant(name: str) -> Any:
        raise ConfigError("", f"{name} is not valid JSON")

    try:
        return json.loads(data, object_pairs_hook=pairs, parse_constant=constant)
    except ConfigError:
        raise
    except json.JSONDecodeError as exc:
        raise ConfigError("", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ConfigError("", _TOO_DEEP) from None
    except ValueError:  # an integer literal past Python's digit limit for text conversion
        raise ConfigError(
            "", "a number in the configuration is too large; no field takes one that big"
        ) from None


def check_nesting(value: Any) -> None:
    """Refuse a document nested deeper than MAX_DEPTH, before anything walks it recursively."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            raise ConfigError("", _TOO_DEEP)
        stack.extend((child, depth + 1) for child in children)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _object(value: Any, path: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """A JSON object whose keys are all in ``allowed``; null values are dropped (unset)."""
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"must be an object, got {v.json_type(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(path, f"keys must be strings, got {v.show(key)}")
        if key not in allowed:
            generic = "".join(ch for ch in path if not ch.isdigit()).replace("[]", "")
            hint = _KNOWN_UNSUPPORTED.get((generic, key))
            if hint is None:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                hint += "allowed: " + ", ".join(allowed)
            raise ConfigError(_join(path, key), f"unknown field; {hint}")
    return {key: val for key, val in value.items() if val is not None}


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ConfigError(path, f"must be an array, got {v.json_type(value)}")
    return list(value)


def _opt(obj: Mapping[str, Any], key: str, path: str, conv: Callable[[Any, str], Any]) -> Any:
    return conv(obj[key], _join(path, key)) if key in obj else None


def _size(value: Any, path: str) -> int:
    return v.want_int(value, path, 1, GSO_GRO_MAX)


def _decode_vrf(raw: Any, path: str) -> VrfConfig:
    obj = _object(raw, path, VRF_FIELDS)
    if not obj.get("name"):
        if "name" in obj:
            v.want_str(obj["name"], _join(path, "name"))
        raise ConfigError(_join(path, "name"), "is required: the name of the VRF device to enslave to")
    name = v.ifname(obj["name"], _join(path, "name"))
    if "table" in obj:
        table = v.want_int(obj["table"], _join(path, "table"), 1, v.UINT32_MAX)
        if table in RESERVED_TABLES:
            raise ConfigError(
                _join(path, "table"),
                f"{table} is a reserved routing table (253 default, 254 main, 255 local)",
            )
    else:
        table = vrf_default_table(name)
    return VrfConfig(name=name, table=table)


def _decode_interface(raw: Any, path: str) -> InterfaceConfig:
    obj = _object(raw, path, INTERFACE_FIELDS)
    # An empty name means "keep the host's name", as upstream treats it.
    given = _nonempty_str(obj, "name", path)
    name = v.ifname(given, _join(path, "name")) if given is not None else None

    addresses: list[str] = []
    if "addresses" in obj:
        seen: dict[Any, int] = {}
        for i, item in enumerate(_list(obj["addresses"], _join(path, "addresses"))):
            where = f"{_join(path, 'addresses')}[{i}]"
            iface = v.interface_cidr(item, where)
            if iface.ip in seen:
                raise ConfigError(where, f"{iface.ip} is already given in addresses[{seen[iface.ip]}]")
            seen[iface.ip] = i
            addresses.append(str(iface))

    dhcp, field = _decode_addressing(obj, path)
    if dhcp and addresses:
        what = "dhcp" if field == "dhcp" else "addressing 'DHCP'"
        raise ConfigError(_join(path, field), f"{what} and addresses are mutually exclusive; set one of them")

    mtu = _opt(obj, "mtu", path, lambda x, p: v.want_int(x, p, MTU_MIN, MTU_MAX))
    if mtu is not None and mtu < IPV6_MTU_MIN and any(":" in a for a in addresses):
        raise ConfigError(
            _join(path, "mtu"), f"{mtu} is below {IPV6_MTU_MIN}, the minimum for the IPv6 addresses given"
        )

    arp_ignore = _opt(obj, "arpIgnore", path, lambda x, p: v.want_int(x, p, 0, 8))
    if arp_ignore is not None and arp_ignore not in ARP_IGNORE_VALUES:
        raise ConfigError(_join(path, "arpIgnore"), f"must be one of 0, 1, 2, 3 or 8, got {arp_ignore}")

    vrf = _decode_vrf(obj["vrf"], _join(path, "vrf")) if "vrf" in obj else None
    if vrf is not None and name is not None and vrf.name == name:
        raise ConfigError(_join(path, "vrf.name"), f"{vrf.name!r} is also the interface's name; pick another")

    child = decode_child(obj, path)
    if child is not None:
        present = {k: obj.get(k) not in (None, False) for k in obj}
        check_child_fields(child, {**present, "dhcp": dhcp}, has_ethtool=False)
    return InterfaceConfig(
        name=name,
        addresses=tuple(addresses),
        dhcp=dhcp,
        mtu=mtu,
        hardware_addr=_opt(obj, "hardwareAddr", path, v.mac),
        gso_max_size=_opt(obj, "gsoMaxSize", path, _size),
        gro_max_size=_opt(obj, "groMaxSize", path, _size),
        gso_ipv4_max_size=_opt(obj, "gsoIPv4MaxSize", path, _size),
        gro_ipv4_max_size=_opt(obj, "groIPv4MaxSize", path, _size),
        disable_ebpf_programs=bool(_opt(obj, "disableEbpfPrograms", path, v.want_bool)),
        forwarding=_opt(obj, "forwarding", path, v.want_bool),
        arp_ignore=arp_ignore,
        arp_announce=_opt(obj, "arpAnnounce", path, lambda x, p: v.want_int(x, p, 0, 2)),
        vrf=vrf,
        child=child,
    )


def _decode_addressing(obj: Mapping[str, Any], path: str) -> tuple[bool, str]:
    """Upstream's ``addressing`` (kubernetes-sigs/dranet#241) and its deprecated ``dhcp`` boolean:
    whether the interface takes DHCP, and the field that said so (for the error messages)."""
    dhcp = _opt(obj, "dhcp", path, v.want_bool)
    if "addressing" not in obj:
        return bool(dhcp), "dhcp"
    where = _join(path, "addressing")
    mode = v.want_str(obj["addressing"], where)
    if not mode:  # upstream: empty is the default, Static
        return bool(dhcp), "dhcp"
    if dhcp is not None:
        raise ConfigError(
            _join(path, "dhcp"),
            f"is deprecated and cannot go with addressing ({mode!r}) in one configuration; remove dhcp",
        )
    if mode == ADDRESSING_UNNUMBERED:
        raise ConfigError(
            where,
            "'Unnumbered' is only for a sub-interface created on the NIC, and this claim moves the "
            "NIC itself into the pod; use 'Static' (interface.addresses, or the host's addresses "
            "when none are given) or 'DHCP'",
        )
    if mode not in ADDRESSING_MODES:
        close = [m for m in ADDRESSING_MODES if m.lower() == mode.lower()]
        close = close or difflib.get_close_matches(mode, ADDRESSING_MODES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(where, f"{mode!r} is not an addressing mode; {hint}use one of: Static, DHCP")
    return mode == ADDRESSING_DHCP, "addressing"


def _same_family(addr: v.IPAddress, dest: v.IPNetwork, path: str, what: str) -> None:
    if addr.version != dest.version:
        raise ConfigError(
            path, f"{what} {addr} is IPv{addr.version} but destination {dest} is IPv{dest.version}"
        )


def _nonempty_str(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """An optional string field where "" means unset (upstream's omitempty strings)."""
    if key not in obj:
        return None
    text = v.want_str(obj[key], _join(path, key))
    return text or None


def _decode_route(raw: Any, path: str) -> RouteConfig:
    obj = _object(raw, path, ROUTE_FIELDS)
    dest_text = _nonempty_str(obj, "destination", path)
    if dest_text is None:
        raise ConfigError(
            _join(path, "destination"), "is required: a CIDR such as 10.0.0.0/8 (host: /32 or /128)"
        )
    dest = v.network_cidr(dest_text, _join(path, "destination"))

    scope = SCOPE_UNIVERSE
    if "scope" in obj:
        scope = v.want_int(obj["scope"], _join(path, "scope"), 0, 255)
        if scope not in (SCOPE_UNIVERSE, SCOPE_LINK):
            raise ConfigError(
                _join(path, "scope"), f"{scope} is not allowed; use 0 (universe, via a gateway) or 253 (link)"
            )

    gateway = _nonempty_str(obj, "gateway", path)
    if gateway is not None:
        gw = v.ip(gateway, _join(path, "gateway"))
        _same_family(gw, dest, _join(path, "gateway"), "gateway")
        if gw.is_unspecified or gw.is_multicast or gw.is_loopback:
            raise ConfigError(
                _join(path, "gateway"), f"{gw} cannot be a gateway (unspecified, multicast or loopback)"
            )
        if scope == SCOPE_LINK:
            # The kernel refuses a gateway on a link-scope route ("Nexthop has invalid scope").
            raise ConfigError(
                _join(path, "gateway"),
                "a link-scope (253) route is directly connected; drop the gateway or use scope 0",
            )
        gateway = str(gw)
    elif scope == SCOPE_UNIVERSE:
        raise ConfigError(
            _join(path, "gateway"), "is required for a universe-scope route; give one or set scope 253 (link)"
        )

    source = _nonempty_str(obj, "source", path)
    if source is not None:
        src = v.ip(source, _join(path, "source"))
        _same_family(src, dest, _join(path, "source"), "source")
        if src.is_unspecified or src.is_multicast:
            raise ConfigError(_join(path, "source"), f"{src} cannot be a source address")
        source = str(src)

    table = _opt(obj, "table", path, lambda x, p: v.want_int(x, p, 0, v.UINT32_MAX)) or 0
    return RouteConfig(destination=str(dest), gateway=gateway, source=source, scope=scope, table=table)


def _decode_rule(raw: Any, path: str) -> RuleConfig:
    obj = _object(raw, path, RULE_FIELDS)
    priority = _opt(obj, "priority", path, lambda x, p: v.want_int(x, p, 0, RULE_PRIORITY_MAX))
    src_text = _nonempty_str(obj, "source", path)
    dst_text = _nonempty_str(obj, "destination", path)
    src = v.network_cidr(src_text, _join(path, "source")) if src_text is not None else None
    dst = v.network_cidr(dst_text, _join(path, "destination")) if dst_text is not None else None
    if src is not None and dst is not None and src.version != dst.version:
        raise ConfigError(
            _join(path, "destination"), f"{dst} is IPv{dst.version} but source {src} is IPv{src.version}"
        )
    table = _opt(obj, "table", path, lambda x, p: v.want_int(x, p, 0, v.UINT32_MAX)) or 0
    return RuleConfig(
        priority=priority,
        source=str(src) if src is not None else None,
        destination=str(dst) if dst is not None else None,
        table=table,
    )


def _decode_neighbor(raw: Any, path: str) -> NeighborConfig:
    obj = _object(raw, path, NEIGHBOR_FIELDS)
    if "destination" not in obj:
        raise ConfigError(_join(path, "destination"), "is required: the neighbour's IP address")
    dest = v.ip(obj["destination"], _join(path, "destination"))
    if dest.is_unspecified or dest.is_multicast or dest.is_loopback:
        raise ConfigError(
            _join(path, "destination"), f"{dest} cannot be a neighbour (unspecified, multicast or loopback)"
        )
    if "hardwareAddr" not in obj:
        raise ConfigError(_join(path, "hardwareAddr"), "is required: the neighbour's MAC address")
    # Multicast MACs are legal here (e.g. load balancers answering ARP with a group address).
    hw = v.mac(obj["hardwareAddr"], _join(path, "hardwareAddr"), allow_multicast=True)
    return NeighborConfig(destination=str(dest), hardware_addr=hw)


def _flag_map(raw: Any, path: str) -> dict[str, bool]:
    obj = raw if isinstance(raw, Mapping) else None
    if obj is None:
        raise ConfigError(path, f"must be an object of name: true/false, got {v.json_type(raw)}")
    out: dict[str, bool] = {}
    for key, value in obj.items():
        name = v.ethtool_name(key, path)
        out[name] = v.want_bool(value, _join(path, name))
    return out


def _decode_ethtool(raw: Any, path: str) -> EthtoolConfig:
    obj = _object(raw, path, ETHTOOL_FIELDS)
    features = _flag_map(obj["features"], _join(path, "features")) if "features" in obj else {}
    flags = _flag_map(obj["privateFlags"], _join(path, "privateFlags")) if "privateFlags" in obj else {}
    return EthtoolConfig(features=features, private_flags=flags)


def _items(obj: Mapping[str, Any], key: str, decode: Callable[[Any, str], Any]) -> tuple[Any, ...]:
    if key not in obj:
        return ()
    return tuple(decode(item, f"{key}[{i}]") for i, item in enumerate(_list(obj[key], key)))


def _check_cross_fields(cfg: NetworkConfig) -> None:
    vrf = cfg.interface.vrf
    if vrf is not None and cfg.rules:
        raise ConfigError(
            "rules",
            f"not supported with interface.vrf: the VRF already steers its traffic to table {vrf.table}; "
            "remove the rules or the vrf",
        )
    routes_seen: dict[tuple[str, int], int] = {}
    for i, route in enumerate(cfg.routes):
        if vrf is not None and route.table not in (0, vrf.table):
            raise ConfigError(
                f"routes[{i}].table",
                f"with interface.vrf every route goes to the VRF's table {vrf.table}; "
                "omit table or set it to that",
            )
        key = (route.destination, route_table(route, cfg))
        if key in routes_seen:
            raise ConfigError(
                f"routes[{i}].destination",
                f"{route.destination} is already routed in the same table by routes[{routes_seen[key]}]",
            )
        routes_seen[key] = i
    rules_seen: dict[RuleConfig, int] = {}
    for i, rule in enumerate(cfg.rules):
        if rule in rules_seen:
            raise ConfigError(f"rules[{i}]", f"is the same rule as rules[{rules_seen[rule]}]")
        rules_seen[rule] = i
    neigh_seen: dict[str, int] = {}
    for i, neigh in enumerate(cfg.neighbors):
        if neigh.destination in neigh_seen:
            raise ConfigError(
                f"neighbors[{i}].destination",
                f"{neigh.destination} is already given in neighbors[{neigh_seen[neigh.destination]}]",
            )
        neigh_seen[neigh.destination] = i
    if cfg.interface.addresses:
        check_routes_reachable(cfg, cfg.interface.addresses)


def parse_network_config(data: Mapping[str, Any] | str | bytes) -> NetworkConfig:
    """Decode and validate one claim configuration (JSON text/bytes or an already decoded object).

    Empty text means no configuration (all defaults), as upstream treats an empty parameters blob.
    Raises ConfigError for the first problem found.
    """
    if isinstance(data, str | bytes | bytearray):
        if not data.strip():
            return NetworkConfig()
        raw = load_json(data)
    else:
        raw = data
    check_nesting(raw)
    if not isinstance(raw, Mapping):
        raise ConfigError("", f"the configuration must be a JSON object, got {v.json_type(raw)}")
    obj = _object(raw, "", TOP_FIELDS)
    profile = _nonempty_str(obj, "profile", "")
    if profile is not None and not profile.isprintable():
        raise ConfigError("profile", "must be printable text")
    interface = _decode_interface(obj["interface"], "interface") if "interface" in obj else InterfaceConfig()
    cfg = NetworkConfig(
        profile=profile,
        interface=interface,
        routes=_items(obj, "routes", _decode_route),
        rules=_items(obj, "rules", _decode_rule),
        neighbors=_items(obj, "neighbors", _decode_neighbor),
        ethtool=_decode_ethtool(obj["ethtool"], "ethtool") if "ethtool" in obj else None,
    )
    if cfg.interface.child is not None and cfg.ethtool is not None:
        check_child_fields(cfg.interface.child, {}, has_ethtool=True)
    _check_cross_fields(cfg)
    return cfg
