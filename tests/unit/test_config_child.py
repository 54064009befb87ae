"""Child interfaces in the claim config: interface.type, interface.macvlan, interface.ipvlan."""

from __future__ import annotations

from typing import Any

import pytest

from dranet.config import (
    ChildConfig,
    ConfigError,
    check_child_mtu,
    network_config_to_dict,
    parse_network_config,
)


@pytest.mark.parametrize(
    ("interface", "child"),
    [
        ({"type": "macvlan"}, ChildConfig("macvlan", "bridge")),
        ({"type": "macvlan", "macvlan": {"mode": "passthru"}}, ChildConfig("macvlan", "passthru")),
        ({"type": "macvlan", "macvlan": {"mode": "source"}}, ChildConfig("macvlan", "source")),
        ({"type": "ipvlan"}, ChildConfig("ipvlan", "l2", "bridge")),  # upstream's defaults
        ({"type": "ipvlan", "ipvlan": {"mode": "l3s", "flag": "vepa"}}, ChildConfig("ipvlan", "l3s", "vepa")),
        ({"type": "passthrough"}, None),
        ({}, None),
    ],
)
def test_types_and_modes_decode_and_round_trip(interface: dict[str, Any], child: ChildConfig | None) -> None:
    cfg = parse_network_config({"interface": {"name": "net1", **interface}})
    assert cfg.interface.child == child
    assert parse_network_config(network_config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("interface", "field"),
    [
        ({"type": "vlan"}, "interface.type"),
        ({"type": "macvlan", "macvlan": {"mode": "l2"}}, "interface.macvlan.mode"),
        ({"type": "ipvlan", "ipvlan": {"mode": "bridge"}}, "interface.ipvlan.mode"),
        ({"type": "ipvlan", "ipvlan": {"flag": "passthru"}}, "interface.ipvlan.flag"),
        ({"type": "ipvlan", "ipvlan": {"mode": "l2", "parent": "eth0"}}, "interface.ipvlan.parent"),
        ({"type": "macvlan", "ipvlan": {"mode": "l2"}}, "interface.ipvlan"),
        ({"macvlan": {"mode": "bridge"}}, "interface.macvlan"),
        ({"type": "ipvlan", "hardwareAddr": "02:00:00:00:00:01"}, "interface.hardwareAddr"),
        ({"type": "macvlan", "dhcp": True}, "interface.dhcp"),
        ({"type": "macvlan", "addressing": "DHCP"}, "interface.dhcp"),
        ({"type": "macvlan", "vrf": {"name": "blue"}}, "interface.vrf"),
        ({"type": "macvlan", "gsoMaxSize": 65536}, "interface.gsoMaxSize"),
        ({"type": "macvlan", "disableEbpfPrograms": True}, "interface.disableEbpfPrograms"),
    ],
)
def test_what_a_child_cannot_take_is_refused_with_the_field(interface: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_network_config({"interface": interface})
    assert err.value.field == field


def test_ethtool_is_refused_on_a_child_and_the_mtu_never_above_the_parent() -> None:
    with pytest.raises(ConfigError) as err:
        parse_network_config({"interface": {"type": "macvlan"}, "ethtool": {"features": {"tso": False}}})
    assert err.value.field == "ethtool"
    check_child_mtu(1500, 1500, "eth1")
    check_child_mtu(None, 1500, "eth1")
    with pytest.raises(ConfigError, match="above the MTU 1500 of the shared NIC eth1") as err:
        check_child_mtu(9000, 1500, "eth1")
    assert err.value.field == "interface.mtu"
