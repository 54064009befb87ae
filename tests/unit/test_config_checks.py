"""Context checks (on-link gateways, RDMA-only devices), naming, defaults and the model's values."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from dranet.config import (
    ConfigError,
    EthtoolConfig,
    InterfaceConfig,
    NetworkConfig,
    RouteConfig,
    VrfConfig,
    check_routes_reachable,
    effective_interface_name,
    parse_network_config,
    validate_rdma_only,
    vrf_default_table,
)


def routes(*items: dict[str, Any], **interface: Any) -> NetworkConfig:
    return parse_network_config(
        {"interface": interface, "routes": list(items)} if interface else {"routes": list(items)}
    )


# (routes, addresses given to the check, the failing route index or None)
REACHABILITY: list[tuple[list[dict[str, Any]], list[str], int | None]] = [
    ([{"destination": "0.0.0.0/0", "gateway": "10.0.0.1"}], ["10.0.0.2/24"], None),
    ([{"destination": "0.0.0.0/0", "gateway": "10.0.0.254"}], ["10.0.0.2/24"], None),
    ([{"destination": "0.0.0.0/0", "gateway": "10.0.1.1"}], ["10.0.0.2/24"], 0),
    ([{"destination": "0.0.0.0/0", "gateway": "10.0.0.2"}], ["10.0.0.2/24"], 0),  # own address
    ([{"destination": "0.0.0.0/0", "gateway": "10.0.1.1"}], ["10.0.0.2/24", "10.0.1.5/24"], None),
    # /32 address with a link route to the gateway (the cloud pattern), in main or in the same table
    (
        [{"destination": "10.0.0.1/32", "scope": 253}, {"destination": "0.0.0.0/0", "gateway": "10.0.0.1"}],
        ["10.0.0.2/32"],
        None,
    ),
    (
        [
            {"destination": "0.0.0.0/0", "gateway": "10.0.0.1", "table": 7},
            {"destination": "10.0.0.0/30", "scope": 253},
        ],
        ["10.0.0.2/32"],
        None,
    ),
    (
        [
            {"destination": "10.0.0.0/30", "scope": 253, "table": 7},
            {"destination": "0.0.0.0/0", "gateway": "10.0.0.1", "table": 7},
        ],
        ["10.0.0.2/32"],
        None,
    ),
    (
        [
            {"destination": "10.0.0.0/30", "scope": 253, "table": 8},
            {"destination": "0.0.0.0/0", "gateway": "10.0.0.1", "table": 7},
        ],
        ["10.0.0.2/32"],
        1,
    ),
    ([{"destination": "0.0.0.0/0", "gateway": "10.0.0.1"}], ["10.0.0.2/32"], 0),
    # IPv6: subnet, link-local (always on-link), off-link
    ([{"destination": "::/0", "gateway": "fd00::1"}], ["fd00::2/64"], None),
    ([{"destination": "::/0", "gateway": "fe80::1"}], ["fd00::2/64"], None),
    ([{"destination": "::/0", "gateway": "fd01::1"}], ["fd00::2/64"], 0),
    # family of the address does not match: an IPv4 subnet never makes an IPv6 gateway on-link
    ([{"destination": "::/0", "gateway": "fd00::1"}], ["10.0.0.2/24"], 0),
    # the second route is the bad one
    (
        [
            {"destination": "10.1.0.0/16", "gateway": "10.0.0.1"},
            {"destination": "10.2.0.0/16", "gateway": "10.9.0.1"},
        ],
        ["10.0.0.2/24"],
        1,
    ),
    # link-scope routes have no gateway to check; no addresses: nothing to check
    ([{"destination": "10.5.0.0/16", "scope": 253}], ["10.0.0.2/24"], None),
    ([{"destination": "0.0.0.0/0", "gateway": "10.0.1.1"}], [], None),
]


@pytest.mark.parametrize(("items", "addresses", "bad"), REACHABILITY)
def test_check_routes_reachable(items: list[dict[str, Any]], addresses: list[str], bad: int | None) -> None:
    cfg = parse_network_config({"routes": items})
    if bad is None:
        check_routes_reachable(cfg, addresses)
        if addresses:
            # parse applies the same check when the claim itself gives the addresses.
            parse_network_config({"interface": {"addresses": addresses}, "routes": items})
        return
    with pytest.raises(ConfigError) as info:
        check_routes_reachable(cfg, addresses)
    assert info.value.field == f"routes[{bad}].gateway"
    with pytest.raises(ConfigError) as again:
        parse_network_config({"interface": {"addresses": addresses}, "routes": items})
    assert again.value.field == f"routes[{bad}].gateway"


def test_unreachable_reason_names_the_subnets() -> None:
    cfg = parse_network_config({"routes": [{"destination": "0.0.0.0/0", "gateway": "192.0.2.1"}]})
    with pytest.raises(ConfigError) as info:
        check_routes_reachable(cfg, ["10.0.0.2/24", "fd00::2/64"])
    assert "10.0.0.0/24, fd00::/64" in info.value.reason
    assert "scope 253" in info.value.reason


def test_check_routes_reachable_rejects_bad_host_addresses() -> None:
    cfg = parse_network_config({"routes": [{"destination": "0.0.0.0/0", "gateway": "192.0.2.1"}]})
    with pytest.raises(ConfigError) as info:
        check_routes_reachable(cfg, ["10.0.0.2/24", "nonsense"])
    assert info.value.field == "interface.addresses[1]"


def test_routes_without_addresses_are_not_checked_by_parse() -> None:
    # The host's addresses are only known at attach time; the worker checks then.
    cfg = parse_network_config({"routes": [{"destination": "0.0.0.0/0", "gateway": "192.0.2.1"}]})
    assert cfg.routes[0].gateway == "192.0.2.1"
    parse_network_config(
        {"interface": {"dhcp": True}, "routes": [{"destination": "0.0.0.0/0", "gateway": "192.0.2.1"}]}
    )


RDMA_REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"interface": {"name": "ib0"}}, "interface.name"),
    ({"interface": {"addresses": ["10.0.0.2/24"]}}, "interface.addresses"),
    ({"interface": {"dhcp": True}}, "interface.dhcp"),
    ({"interface": {"mtu": 2044}}, "interface.mtu"),
    ({"interface": {"hardwareAddr": "02:00:00:00:00:01"}}, "interface.hardwareAddr"),
    ({"interface": {"gsoMaxSize": 65536}}, "interface.gsoMaxSize"),
    ({"interface": {"groMaxSize": 65536}}, "interface.groMaxSize"),
    ({"interface": {"gsoIPv4MaxSize": 65536}}, "interface.gsoIPv4MaxSize"),
    ({"interface": {"groIPv4MaxSize": 65536}}, "interface.groIPv4MaxSize"),
    ({"interface": {"disableEbpfPrograms": True}}, "interface.disableEbpfPrograms"),
    ({"interface": {"forwarding": False}}, "interface.forwarding"),
    ({"interface": {"arpIgnore": 1}}, "interface.arpIgnore"),
    ({"interface": {"arpAnnounce": 2}}, "interface.arpAnnounce"),
    ({"interface": {"vrf": {"name": "blue"}}}, "interface.vrf"),
    ({"routes": [{"destination": "10.0.0.0/8", "scope": 253}]}, "routes"),
    ({"rules": [{"table": 100}]}, "rules"),
    ({"neighbors": [{"destination": "10.0.0.9", "hardwareAddr": "02:00:00:00:00:09"}]}, "neighbors"),
    ({"ethtool": {}}, "ethtool"),
]


@pytest.mark.parametrize(("doc", "field"), RDMA_REFUSED)
def test_rdma_only_refuses_netdev_fields(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_rdma_only(parse_network_config(doc))
    assert info.value.field == field
    assert "RDMA-only" in info.value.reason


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"profile": "rdma-profile"},
        {"interface": {}},
        {"interface": {"dhcp": False, "disableEbpfPrograms": False}},
    ],
)
def test_rdma_only_allows_profile_and_defaults(doc: dict[str, Any]) -> None:
    validate_rdma_only(parse_network_config(doc))


@pytest.mark.parametrize(
    ("doc", "host", "expected"),
    [
        ({}, "enp1s0", "enp1s0"),
        ({"interface": {"name": "eth9"}}, "enp1s0", "eth9"),
        ({"interface": {"name": ""}}, "enp1s0", "enp1s0"),
        ({"interface": {"name": "eth9"}}, "", "eth9"),
    ],
)
def test_effective_interface_name(doc: dict[str, Any], host: str, expected: str) -> None:
    assert effective_interface_name(parse_network_config(doc), host) == expected


def test_effective_interface_name_needs_a_name() -> None:
    with pytest.raises(ConfigError) as info:
        effective_interface_name(NetworkConfig(), "")
    assert info.value.field == "interface.name"


@pytest.mark.parametrize(
    ("name", "table"),
    # FNV-32a reference values computed by hand from the algorithm's definition.
    [("a", 0xE40C292C % 1000 + 1000), ("", 0x811C9DC5 % 1000 + 1000)],
)
def test_vrf_default_table_is_fnv32a(name: str, table: int) -> None:
    assert vrf_default_table(name) == table


@pytest.mark.parametrize("name", ["blue", "red", "test-vrf", "vrf-0", "x" * 15])
def test_vrf_default_table_range(name: str) -> None:
    table = vrf_default_table(name)
    assert 1000 <= table <= 1999
    assert parse_network_config({"interface": {"vrf": {"name": name}}}).interface.vrf == VrfConfig(
        name, table
    )


def test_config_error_shape_and_pickle() -> None:
    err = ConfigError("routes[1].gateway", "is required")
    assert isinstance(err, ValueError)
    assert str(err) == "routes[1].gateway: is required"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.field, copy.reason, str(copy)) == (err.field, err.reason, str(err))


def test_model_is_immutable_and_hashable() -> None:
    cfg = parse_network_config(
        {
            "interface": {"name": "eth1", "addresses": ["10.0.0.2/24"]},
            "routes": [{"destination": "0.0.0.0/0", "gateway": "10.0.0.1"}],
            "ethtool": {"features": {"tso": False}},
        }
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.interface = InterfaceConfig()  # type: ignore[misc]
    assert cfg.ethtool is not None
    with pytest.raises(TypeError):
        cfg.ethtool.features["tso"] = True  # type: ignore[index]
    assert hash(cfg) == hash(parse_network_config(cfg_dict(cfg)))
    assert {cfg: 1}[cfg] == 1


def cfg_dict(cfg: NetworkConfig) -> dict[str, Any]:
    from dranet.config import network_config_to_dict

    return network_config_to_dict(cfg)


def test_ethtool_copies_its_input() -> None:
    features = {"tso": True}
    cfg = EthtoolConfig(features=features)
    features["tso"] = False
    assert cfg.features == {"tso": True}
    assert cfg == EthtoolConfig(features={"tso": True}, private_flags={})


def test_defaults() -> None:
    cfg = NetworkConfig()
    assert cfg.interface == InterfaceConfig()
    assert (cfg.routes, cfg.rules, cfg.neighbors, cfg.ethtool, cfg.profile) == ((), (), (), None, None)
    assert RouteConfig("10.0.0.0/8").scope == 0 and RouteConfig("10.0.0.0/8").table == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"interface": {"dhcp": True}}, "interface.dhcp"),
    ],
)
def test_fields_not_acted_on_yet_are_refused(params: dict[str, Any], field: str) -> None:
    from dranet.config import check_supported

    with pytest.raises(ConfigError) as err:
        check_supported(parse_network_config(params))
    assert err.value.field == field and "not supported" in err.value.reason
    check_supported(parse_network_config({"interface": {"mtu": 1500}}))
    check_supported(parse_network_config({"interface": {"disableEbpfPrograms": True}}))  # acted on now
