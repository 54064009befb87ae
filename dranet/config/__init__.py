"""The claim configuration model: decode, validate, merge (pure: no I/O)."""

from dranet.config.checks import check_routes_reachable, check_supported, validate_rdma_only
from dranet.config.child import IPVLAN, MACVLAN, ChildConfig, check_child_mtu
from dranet.config.decode import parse_network_config
from dranet.config.encode import network_config_to_dict
from dranet.config.errors import ConfigError
from dranet.config.ethtool import FeatureTable, check_ethtool, check_private_flags, resolve_features
from dranet.config.merge import merge_configs
from dranet.config.model import (
    EthtoolConfig,
    InterfaceConfig,
    NeighborConfig,
    NetworkConfig,
    RouteConfig,
    RuleConfig,
    VrfConfig,
    effective_interface_name,
    vrf_default_table,
)
from dranet.config.values import json_type

__all__ = [
    "IPVLAN",
    "MACVLAN",
    "ChildConfig",
    "ConfigError",
    "EthtoolConfig",
    "FeatureTable",
    "InterfaceConfig",
    "NeighborConfig",
    "NetworkConfig",
    "RouteConfig",
    "RuleConfig",
    "VrfConfig",
    "check_child_mtu",
    "check_ethtool",
    "check_private_flags",
    "check_routes_reachable",
    "check_supported",
    "effective_interface_name",
    "json_type",
    "merge_configs",
    "network_config_to_dict",
    "parse_network_config",
    "resolve_features",
    "validate_rdma_only",
    "vrf_default_table",
]
