"""The claim configuration as typed, immutable values (upstream dranet's opaque parameters).

Instances come from ``parse_network_config``, which validates every field; constructing them
directly skips validation. Field meanings are documented in docs/claim-config.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dranet.config.child import ChildConfig
from dranet.config.errors import ConfigError

# Linux routing table ids with a fixed meaning: unspec, default, main, local.
RT_TABLE_MAIN = 254
RESERVED_TABLES = frozenset({253, 254, 255})
# Route scopes a claim may ask for (rtnetlink RT_SCOPE_UNIVERSE / RT_SCOPE_LINK).
SCOPE_UNIVERSE = 0
SCOPE_LINK = 253


def vrf_default_table(name: str) -> int:
    """The routing table of a VRF whose claim gives none: FNV-32a(name) % 1000 + 1000.

    Deterministic, so pods that name the same VRF get the same table (upstream's rule), and
    always in 1000..1999, clear of the reserved tables.
    """
    h = 0x811C9DC5
    for byte in name.encode("utf-8"):
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h % 1000 + 1000


@dataclass(frozen=True)
class VrfConfig:
    name: str
    table: int


@dataclass(frozen=True)
class InterfaceConfig:
    name: str | None = None  # pod-side name; None keeps the host name
    addresses: tuple[str, ...] = ()  # "10.0.0.2/24", "fd00::2/64"; () inherits the host's
    dhcp: bool = False
    mtu: int | None = None
    hardware_addr: str | None = None  # lower case "aa:bb:cc:dd:ee:ff"
    gso_max_size: int | None = None
    gro_max_size: int | None = None
    gso_ipv4_max_size: int | None = None
    gro_ipv4_max_size: int | None = None
    disable_ebpf_programs: bool = False
    forwarding: bool | None = None  # None leaves the namespace default
    arp_ignore: int | None = None
    arp_announce: int | None = None
    vrf: VrfConfig | None = None
    child: ChildConfig | None = None  # interface.type macvlan/ipvlan: a child of a shared NIC


@dataclass(frozen=True)
class RouteConfig:
    destination: str  # network CIDR, host bits cleared
    gateway: str | None = None
    source: str | None = None
    scope: int = SCOPE_UNIVERSE
    table: int = 0  # 0 = main


@dataclass(frozen=True)
class RuleConfig:
    priority: int | None = None  # None lets the kernel choose
    source: str | None = None  # network CIDR
    destination: str | None = None  # network CIDR
    table: int = 0  # 0 = main


@dataclass(frozen=True)
class NeighborConfig:
    destination: str  # IP address
    hardware_addr: str  # lower case MAC


def _frozen_map(value: Mapping[str, bool]) -> Mapping[str, bool]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class EthtoolConfig:
    features: Mapping[str, bool] = field(default_factory=dict)
    private_flags: Mapping[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only views of private copies: the value stays immutable like the rest of the model.
        object.__setattr__(self, "features", _frozen_map(self.features))
        object.__setattr__(self, "private_flags", _frozen_map(self.private_flags))

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.features.items())), tuple(sorted(self.private_flags.items()))))


@dataclass(frozen=True)
class NetworkConfig:
    profile: str | None = None
    interface: InterfaceConfig = field(default_factory=InterfaceConfig)
    routes: tuple[RouteConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
    neighbors: tuple[NeighborConfig, ...] = ()
    ethtool: EthtoolConfig | None = None


def effective_interface_name(cfg: NetworkConfig, host_ifname: str) -> str:
    """The interface's name inside the pod: the configured name, else the host's own name."""
    if cfg.interface.name:
        return cfg.interface.name
    if not host_ifname:
        raise ConfigError(
            "interface.name",
            "the device has no host interface name and the claim sets none; set interface.name",
        )
    return host_ifname


def route_table(route: RouteConfig, cfg: NetworkConfig) -> int:
    """The table a route really lands in: the VRF's when one is set, 0 meaning main otherwise."""
    if cfg.interface.vrf is not None:
        return cfg.interface.vrf.table
    return route.table or RT_TABLE_MAIN
